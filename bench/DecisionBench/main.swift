// Decision engine benchmark: cost per decision at 10, 1,000 and 100,000 registered hosts.
//
//   swift run -c release corridor-decision-bench [hosts...]
//
// Each ExternalService registers one exact name and one wildcard; one EgressPolicy per 100
// services grants them to a workload. Lookups mix exact hits, wildcard hits, and misses, drawn
// from a fixed pseudo-random sequence so every size does the same kind of work.
import CorridorPolicy
import Foundation

struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func makeSnapshot(hosts: Int) -> PolicySnapshot {
    var source = PolicySource()
    let services = max(1, hosts / 2)
    for i in 0..<services {
        source.externalServices.append(ExternalService(
            metadata: ObjectMeta(name: "svc-\(i)"),
            hosts: [.exact("api-\(i).vendor-\(i % 97).example"), .wildcard(suffix: "cdn-\(i).vendor-\(i % 89).example")],
            ports: [.init(number: 443)]))
    }
    for p in stride(from: 0, to: services, by: 100) {
        source.egressPolicies.append(EgressPolicy(
            metadata: ObjectMeta(name: "grant-\(p)", namespace: "payments"),
            podSelector: LabelSelector(matchLabels: ["app": "checkout"]),
            egress: [.init(externalServices: (p..<min(services, p + 100)).map { "svc-\($0)" })]))
    }
    source.workloads = [Workload(metadata: ObjectMeta(name: "checkout", namespace: "payments"),
                                 addresses: [try! CIDR(parsing: "10.0.0.0/24")], serviceAccount: "checkout", labels: ["app": "checkout"])]
    return PolicySnapshot(source: source, generation: 1)
}

let identity = SourceIdentity(namespace: "payments", workload: "checkout", serviceAccount: "checkout", labels: ["app": "checkout"])
let lookups = 1_000_000
print("| registered hosts | ns per decision, 4096 names spread over the registry | ns per decision, 16 hot names | allowed | denied | snapshot build, ms |")
print("|---|---|---|---|---|---|")
// Sizes may be given as arguments (e.g. `corridor-decision-bench 100000` to profile one size).
let sizes = CommandLine.arguments.dropFirst().compactMap { Int($0) }
for hosts in sizes.isEmpty ? [10, 1_000, 100_000] : sizes {
    let buildStart = ContinuousClock.now
    let snapshot = makeSnapshot(hosts: hosts)
    let build = ContinuousClock.now - buildStart
    let buildMs = Double(build.components.seconds) * 1e3 + Double(build.components.attoseconds) / 1e15
    let services = max(1, hosts / 2)
    var rng = SplitMix(state: 42)
    // Pre-normalised names, as the data plane hands them to the engine.
    let names: [String] = (0..<4096).map { _ in
        let i = Int(rng.next() % UInt64(services))
        switch rng.next() % 3 {
        case 0: return "api-\(i).vendor-\(i % 97).example"
        case 1: return "img.eu.cdn-\(i).vendor-\(i % 89).example"
        default: return "unknown-\(i).evil.example"
        }
    }
    var allowed = 0, denied = 0
    // mask 4095: the working set is spread over the whole registry (cache misses grow with it);
    // mask 15: the same 16 names again and again (the algorithmic cost alone).
    func measure(mask: Int) -> Double {
        var samples: [Double] = []
        for _ in 0..<5 {
            allowed = 0; denied = 0
            let start = ContinuousClock.now
            for n in 0..<lookups {
                let decision = DecisionEngine.decide(source: identity, sourceAddress: "10.0.0.1",
                                                     facts: DestinationFacts(serverName: names[n & mask]), snapshot: snapshot)
                if decision.verdict == .allow { allowed += 1 } else { denied += 1 }
            }
            let elapsed = ContinuousClock.now - start
            let ns = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
            samples.append(ns / Double(lookups))
        }
        return samples.sorted()[2]
    }
    let hot = measure(mask: 15)
    let spread = measure(mask: 4095)
    print("| \(hosts) | \(String(format: "%.0f", spread)) | \(String(format: "%.0f", hot)) | \(allowed) | \(denied) | \(String(format: "%.0f", buildMs)) |")
}
