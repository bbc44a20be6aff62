import Testing
@testable import CorridorPolicy

/// Hints: every refusal the engine can make gets one, and applying its changes to the policy it
/// was made for makes the same engine allow the connection. A property test over generated
/// policies, sources and destinations; the changed policy also renders to YAML the loader accepts.
@Suite("PolicyHint")
struct PolicyHintTests {
    /// A small deterministic generator (SplitMix64).
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func int(_ n: Int) -> Int { Int(next() % UInt64(n)) }
        mutating func bool() -> Bool { int(2) == 0 }
        mutating func pick<T>(_ items: [T]) -> T { items[int(items.count)] }
        mutating func subset<T>(_ items: [T]) -> [T] { items.filter { _ in bool() } }
    }

    static let hosts = ["a.test", "b.test", "api.c.test", "*.c.test", "x.d.test"]
    static let identities: [SourceIdentity?] = [
        identity("a", sa: "sa1", labels: ["app": "web"]), identity("a", sa: "sa2", labels: ["app": "api"]),
        identity("b", sa: "sa1", labels: ["app.kubernetes.io/name": "web"]), identity("b", sa: "sa3"), nil,
    ]

    static func generate(_ r: inout Random) -> PolicySource {
        var source = PolicySource()
        source.gateway.mode = r.bool() ? .enforce : .audit
        source.gateway.unknownSources = r.bool() ? .deny : .allow
        source.gateway.tls.allowECH = r.int(4) == 0
        for n in 0..<r.int(5) {
            var ports: [ExternalService.Port] = []
            for candidate in [ExternalService.Port(number: 443), .init(number: 8443),
                              .init(number: 80, protocol: .http, originateTLS: .init(port: 443)), .init(number: 5432, protocol: .tcp)] where r.bool() {
                ports.append(candidate)
            }
            if ports.isEmpty { ports = [.init(number: 443)] }
            let tcp = ports.contains { $0.protocol == .tcp }
            let named = ports.contains { $0.protocol != .tcp }
            let hosts = named ? Array(Set([r.pick(hosts), r.pick(hosts)])).sorted().map { try! HostPattern(parsing: $0) } : []
            source.externalServices.append(ExternalService(
                metadata: ObjectMeta(name: "s\(n)"), hosts: hosts, addresses: tcp ? [cidr("10.0.0.0/24")] : [], ports: ports,
                access: r.int(4) == 0 ? .all : .restricted, ech: r.pick([nil, .allow, .deny])))
        }
        let names = source.externalServices.map(\.name)
        for n in 0..<r.int(5) where !names.isEmpty {
            let selector = r.pick([LabelSelector.everything, LabelSelector(matchLabels: ["app": "web"]), LabelSelector(matchLabels: ["app": "api"])])
            let picked = r.subset(names)
            let grants = picked.isEmpty ? [names[0]] : picked
            // A rule may be limited to 443 where every service it names has that port (as the loader requires).
            let all443 = grants.allSatisfy { name in source.externalServices.first { $0.name == name }!.ports.contains { $0.number == 443 } }
            source.egressPolicies.append(EgressPolicy(
                metadata: ObjectMeta(name: "p\(n)", namespace: r.pick(["a", "b"])), podSelector: selector,
                serviceAccounts: r.int(3) == 0 ? [r.pick(["sa1", "sa2"])] : [],
                egress: [EgressPolicy.Rule(externalServices: grants, ports: all443 && r.int(3) == 0 ? [443] : [])],
                mode: r.int(4) == 0 ? .audit : .enforce))
        }
        return source
    }

    static func destination(_ r: inout Random) -> PolicyHint.Destination {
        if r.int(6) == 0 { return .tcp(address: IPAddress(parsing: r.pick(["10.0.0.5", "10.0.1.5"]))!, port: 5432) }
        let host = r.pick(["a.test", "b.test", "api.c.test", "web.c.test", "x.d.test", "new.test"])
        let kind: DestinationFacts.Kind = r.int(4) == 0 ? .http : .tls
        let port: Int? = kind == .http ? r.pick([nil, 80, 8080]) : r.pick([nil, 443, 8443, 9443])
        let connect = r.int(3) == 0 ? (r.int(8) == 0 ? "other.test" : host) : nil
        return .name(DestinationFacts(serverName: kind == .http ? nil : host, connectHost: kind == .http ? host : connect, port: port,
                                      hasECH: kind == .tls && r.int(4) == 0, kind: kind))
    }

    static func decide(_ snapshot: PolicySnapshot, _ destination: PolicyHint.Destination, _ who: SourceIdentity?, _ address: IPAddress) -> Decision? {
        switch destination {
        case .name(let facts):
            return DecisionEngine.decide(source: who, sourceAddress: address.description, facts: facts, snapshot: snapshot)
        case .tcp(let ip, let port):
            return DecisionEngine.decideTCP(source: who, sourceAddress: address.description, destination: ip, port: port, snapshot: snapshot)
        }
    }

    /// Workloads so that known identities are claimed in the inventory as the data plane would see them.
    static func inventory(_ source: inout PolicySource) {
        for (n, who) in identities.enumerated() {
            guard let who else { continue }
            source.workloads.append(Workload(metadata: ObjectMeta(name: who.workload == "w" ? "w\(n)" : who.workload, namespace: who.namespace),
                                             addresses: [cidr("192.0.2.\(n + 1)/32")], serviceAccount: who.serviceAccount, labels: who.labels))
        }
    }

    @Test("applying the hint of every refusal makes the engine allow it", arguments: [1, 2, 3])
    func hintsAllow(seed: UInt64) throws {
        var r = Random(state: seed)
        var reasons: [String: Int] = [:]
        var withChanges = 0
        for _ in 0..<1500 {
            var source = Self.generate(&r)
            Self.inventory(&source)
            let snapshot = PolicySnapshot(source: source, generation: 1)
            let pick = r.int(Self.identities.count)
            let address = IPAddress(parsing: Self.identities[pick] == nil ? "198.51.100.7" : "192.0.2.\(pick + 1)")!
            let who = snapshot.inventory.identity(of: address)
            let destination = Self.destination(&r)
            guard let decision = Self.decide(snapshot, destination, who, address), decision.verdict != .allow else { continue }
            let hint = try #require(PolicyHint.make(for: decision, to: destination, identity: who, address: address, snapshot: snapshot),
                                    "no hint for \(decision.reason)")
            #expect(!hint.text.isEmpty)
            let kind: String
            switch decision.why.unaudited {
            case .noService: kind = "noService"
            case .notGranted: kind = "notGranted"
            case .notGrantedToUnknown: kind = "notGrantedToUnknown"
            case .noPort: kind = "noPort"
            case .echRefused: kind = "echRefused"
            case .unknownSource: kind = "unknownSource"
            case .noTCPService: kind = "noTCPService"
            case .text(let text): kind = "text: \(text.prefix(20))"
            default: kind = "other"
            }
            reasons[kind, default: 0] += 1
            guard !hint.changes.isEmpty else {
                // Only refusals no policy change can lift go without a change.
                let reason = decision.why.unaudited.text
                #expect(reason.hasPrefix("SNI ") || reason.hasPrefix("no destination host name") || hint.text.contains("already uses port"),
                        "no change for \(reason): \(hint.text)")
                continue
            }
            withChanges += 1
            var changed = source
            for change in hint.changes { change.apply(to: &changed) }
            // The grant reaches no workload outside the source's group (found in review: extending
            // a policy that selected the whole namespace granted every workload what one used).
            if let who {
                var servicesOnly = source
                for change in hint.changes {
                    switch change {
                    case .addPolicy, .updatePolicy: break
                    default: change.apply(to: &servicesOnly)
                    }
                }
                let before = PolicySnapshot(source: servicesOnly, generation: 2)
                let after = PolicySnapshot(source: changed, generation: 2)
                for (n, other) in Self.identities.enumerated() {
                    guard let other, !Self.sameGroup(who, other) else { continue }
                    let otherAddress = IPAddress(parsing: "192.0.2.\(n + 1)")!
                    let was = Self.decide(before, destination, before.inventory.identity(of: otherAddress), otherAddress)?.verdict
                    let now = Self.decide(after, destination, after.inventory.identity(of: otherAddress), otherAddress)?.verdict
                    #expect(was == .allow || now != .allow, "\(hint.text)\ngranted \(other) too, which is not in \(who)'s group")
                }
            }
            let after = PolicySnapshot(source: changed, generation: 2)
            let again = Self.decide(after, destination, after.inventory.identity(of: address), address)
            #expect(again?.verdict == .allow, "\(decision.reason)\nhint: \(hint.text)\nafter: \(again?.reason ?? "nil")")
            // What explain would print passes the loader, and loads to a policy that allows it too.
            if withChanges % 10 == 0 {
                let yaml = ResourceYAML.file(changed.externalServices.map { ResourceYAML.render($0) }
                                             + changed.egressPolicies.map { ResourceYAML.render($0) } + changed.workloads.map { ResourceYAML.render($0) })
                var loaded = try ConfigLoader.load(yaml: yaml, file: "hint.yaml")
                loaded.gateway = changed.gateway
                #expect(loaded.externalServices == changed.externalServices)
                #expect(loaded.egressPolicies.map(\.metadata.qualifiedName) == changed.egressPolicies.map(\.metadata.qualifiedName))
                let reloaded = PolicySnapshot(source: loaded, generation: 3)
                #expect(Self.decide(reloaded, destination, reloaded.inventory.identity(of: address), address)?.verdict == .allow)
            }
        }
        // Every kind of refusal was met.
        for kind in ["noService", "notGranted", "notGrantedToUnknown", "noPort", "echRefused", "unknownSource", "noTCPService"] {
            #expect((reasons[kind] ?? 0) > 0, "\(kind) never came up: \(reasons)")
        }
        #expect(withChanges > 300, "\(withChanges)")
    }

    /// Whether `other` is in the group a grant for `who` is for: the same namespace and the same
    /// most stable label, or, without one, the same service account and none of those labels.
    static func sameGroup(_ who: SourceIdentity, _ other: SourceIdentity) -> Bool {
        guard who.namespace == other.namespace else { return false }
        if let key = ["app.kubernetes.io/name", "app"].first(where: { who.labels[$0] != nil }) { return other.labels[key] == who.labels[key] }
        return other.serviceAccount == who.serviceAccount && other.labels["app.kubernetes.io/name"] == nil && other.labels["app"] == nil
    }

    @Test("a grant goes to the workload's group, never to a policy selecting others too")
    func grantsStayInTheGroup() {
        let stripe = ExternalService(metadata: ObjectMeta(name: "stripe"), hosts: [.exact("api.stripe.com")], ports: [.init(number: 443)])
        let everyone = policy("telemetry", namespace: "payments", selector: .everything, grants: [])
        let snap = snapshot(services: [stripe], policies: [everyone])
        let facts = DestinationFacts(serverName: "api.stripe.com", port: 443)
        let decision = DecisionEngine.decide(source: checkoutPod, sourceAddress: "10.0.0.1", facts: facts, snapshot: snap)
        let hint = PolicyHint.make(for: decision, to: .name(facts), identity: checkoutPod, address: nil, snapshot: snap)
        #expect(hint?.text.hasPrefix("grant it: add EgressPolicy payments/checkout-egress selecting app=checkout") ?? false, "\(hint?.text ?? "")")
        #expect(hint?.text.contains("payments/telemetry selects this workload but others too") ?? false, "\(hint?.text ?? "")")
        // A workload without an app label: the pods of its service account without one.
        let cron = SourceIdentity(namespace: "payments", workload: "cron", serviceAccount: "shared", labels: [:])
        let other = SourceIdentity(namespace: "payments", workload: "batch", serviceAccount: "shared", labels: ["app": "batch"])
        let cronDecision = DecisionEngine.decide(source: cron, sourceAddress: "10.0.0.2", facts: facts, snapshot: snap)
        let cronHint = PolicyHint.make(for: cronDecision, to: .name(facts), identity: cron, address: nil, snapshot: snap)
        var changed = snap.source
        for change in cronHint?.changes ?? [] { change.apply(to: &changed) }
        let after = PolicySnapshot(source: changed, generation: 2)
        #expect(DecisionEngine.decide(source: cron, sourceAddress: "10.0.0.2", facts: facts, snapshot: after).verdict == .allow)
        #expect(DecisionEngine.decide(source: other, sourceAddress: "10.0.0.3", facts: facts, snapshot: after).verdict != .allow)
    }

    @Test("the hint names the change in words a person can act on")
    func wording() {
        let stripe = ExternalService(metadata: ObjectMeta(name: "stripe"), hosts: [.exact("api.stripe.com")], ports: [.init(number: 443)])
        let web = policy("web", namespace: "payments", selector: LabelSelector(matchLabels: ["app": "web"]), grants: ["stripe"])
        let snap = snapshot(services: [stripe], policies: [web])
        func hint(_ sni: String, port: Int? = nil, ech: Bool = false) -> String {
            let facts = DestinationFacts(serverName: sni, port: port, hasECH: ech)
            let decision = DecisionEngine.decide(source: checkoutPod, sourceAddress: "10.0.0.1", facts: facts, snapshot: snap)
            return PolicyHint.make(for: decision, to: .name(facts), identity: checkoutPod, address: nil, snapshot: snap)?.text ?? ""
        }
        #expect(hint("api.other.com") == "register ExternalService api-other-com for api.other.com port 443/TLS; then grant it: add EgressPolicy "
                + "payments/checkout-egress selecting app=checkout with ExternalService api-other-com port 443 (no EgressPolicy in payments "
                + "selects this workload: payments/web selects app=web)")
        #expect(hint("api.stripe.com").hasPrefix("grant it: add EgressPolicy payments/checkout-egress"))
        #expect(hint("api.stripe.com", port: 8443).hasPrefix("add port 8443/TLS to ExternalService stripe; then grant it"))
        #expect(hint("api.stripe.com", ech: true).hasPrefix("set spec.tls.ech: Allow on ExternalService stripe"))
        // A plain-HTTP port more, for a service that originates TLS to port 8443 already: the same way.
        let billing = ExternalService(metadata: ObjectMeta(name: "billing"), hosts: [.exact("billing.test")],
                                      ports: [.init(number: 80, protocol: .http, originateTLS: .init(port: 8443))])
        let withBilling = snapshot(services: [stripe, billing], policies: [web])
        let http = DestinationFacts(connectHost: "billing.test", port: 8080, kind: .http)
        let refused = DecisionEngine.decide(source: checkoutPod, sourceAddress: "10.0.0.1", facts: http, snapshot: withBilling)
        let text = PolicyHint.make(for: refused, to: .name(http), identity: checkoutPod, address: nil, snapshot: withBilling)?.text ?? ""
        #expect(text.hasPrefix("add port 8080/HTTP (TLS origination to port 8443) to ExternalService billing"), "\(text)")
        let mismatch = DecisionEngine.decide(source: checkoutPod, sourceAddress: "10.0.0.1",
                                             facts: DestinationFacts(serverName: "a.test", connectHost: "b.test"), snapshot: snap)
        #expect(PolicyHint.make(for: mismatch, to: .name(DestinationFacts(serverName: "a.test", connectHost: "b.test")), identity: checkoutPod,
                                address: nil, snapshot: snap)?.changes == [])
    }
}
