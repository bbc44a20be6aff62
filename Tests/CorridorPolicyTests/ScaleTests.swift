import Testing
@testable import CorridorPolicy

/// 100,000 host patterns: lookups must still return the right service (correctness only, no timing).
@Suite("Decisions at 100,000 hosts")
struct ScaleTests {
    static let serviceCount = 1_000
    static let hostsPerService = 100  // 50 exact names and 50 wildcards each

    static func exactHost(_ service: Int, _ i: Int) -> String { "h\(i).svc\(service).example.test" }
    static func wildcardSuffix(_ service: Int, _ i: Int) -> String { "w\(i).svc\(service).example.test" }
    static func name(_ service: Int) -> String { "svc-\(service)" }
    static func isGranted(_ service: Int) -> Bool { service % 3 != 0 }

    static let snapshot: PolicySnapshot = {
        var services: [ExternalService] = []
        services.reserveCapacity(serviceCount)
        for s in 0..<serviceCount {
            var hosts: [String] = []
            for i in 0..<(hostsPerService / 2) {
                hosts.append(exactHost(s, i))
                hosts.append("*." + wildcardSuffix(s, i))
            }
            services.append(service(name(s), hosts: hosts))
        }
        let granted = (0..<serviceCount).filter(isGranted).map(name)
        let grant = policy("bulk", namespace: "payments", selector: LabelSelector(matchLabels: ["app": "checkout"]), grants: granted)
        return CorridorPolicyTests.snapshot(services: services, policies: [grant])
    }()

    @Test("the snapshot holds 100,000 patterns")
    func counts() {
        #expect(Self.snapshot.hostPatternCount == 100_000)
        #expect(Self.snapshot.serviceCount == Self.serviceCount)
    }

    @Test("every exact and every wildcard host decides for its own service")
    func everyHost() {
        var wrong: [String] = []
        var allowed = 0
        var denied = 0
        for s in 0..<Self.serviceCount {
            for i in 0..<(Self.hostsPerService / 2) {
                for host in [Self.exactHost(s, i), "x\(i)." + Self.wildcardSuffix(s, i)] {
                    let decision = decide(Self.snapshot, from: checkoutPod, sni: host)
                    let expected: Decision.Verdict = Self.isGranted(s) ? .allow : .deny
                    if decision.verdict != expected || decision.externalService != Self.name(s) || decision.host != host {
                        wrong.append("\(host): \(decision.verdict) \(decision.externalService ?? "-") \(decision.reason)")
                    }
                    if decision.verdict == .allow { allowed += 1 } else { denied += 1 }
                }
            }
        }
        #expect(wrong.isEmpty, "\(wrong.count) wrong, first: \(wrong.prefix(3))")
        #expect(allowed + denied == 100_000)
        #expect(allowed > 0 && denied > 0)
    }

    @Test("near misses among 100,000 patterns match nothing")
    func nearMisses() {
        var wrong: [String] = []
        for s in stride(from: 0, to: Self.serviceCount, by: 7) {
            for i in stride(from: 0, to: Self.hostsPerService / 2, by: 5) {
                let misses = [
                    Self.wildcardSuffix(s, i),                         // the wildcard's own suffix
                    "a." + Self.exactHost(s, i),                       // below an exact name
                    Self.exactHost(s, i) + ".evil.test",               // exact name as a prefix
                    "evil" + Self.wildcardSuffix(s, i),                // glued look-alike
                    "h\(i).svc\(s + Self.serviceCount).example.test",  // a service that does not exist
                ]
                for host in misses {
                    let decision = decide(Self.snapshot, from: checkoutPod, sni: host)
                    if decision.verdict != .deny || decision.reason != "no ExternalService matches \(host)" {
                        wrong.append("\(host): \(decision.verdict) \(decision.reason)")
                    }
                }
            }
        }
        #expect(wrong.isEmpty, "\(wrong.count) wrong, first: \(wrong.prefix(3))")
    }

    @Test("sources the policy does not select are denied at scale too")
    func otherSources() {
        for s in stride(from: 1, to: Self.serviceCount, by: 97) where Self.isGranted(s) {
            #expect(decide(Self.snapshot, from: shopPod, sni: Self.exactHost(s, 0)).verdict == .deny)
            #expect(decide(Self.snapshot, from: nil, sni: Self.exactHost(s, 0)).verdict == .deny)
        }
    }
}
