import Testing
@testable import CorridorPolicy

@Suite("Quickstart, end to end")
struct QuickstartTests {
    static func load() -> PolicySnapshot? {
        guard let source = loadValid(quickstartYAML, file: "quickstart.yaml") else { return nil }
        return PolicySnapshot(source: source, generation: 1)
    }

    /// Decides as the data plane does: source address -> identity, then the engine.
    static func decideFrom(_ address: String, sni: String, in snapshot: PolicySnapshot) -> Decision {
        let source = snapshot.inventory.identity(of: ip(address))
        return decide(snapshot, from: source, sni: sni, address: address)
    }

    @Test("the quickstart loads as written")
    func loads() throws {
        let source = try #require(loadValid(quickstartYAML, file: "quickstart.yaml"))
        #expect(source.gateway.name == "local")
        #expect(source.gateway.listeners.tls?.description == "127.0.0.1:15443")
        #expect(source.gateway.listeners.connect?.description == "127.0.0.1:13128")
        #expect(source.gateway.listeners.admin?.description == "127.0.0.1:15000")
        #expect(source.gateway.staticHosts.map(\.0) == [pattern("api.allowed.test"), pattern("*.wild.allowed.test")])
        #expect(source.gateway.staticHosts.map(\.1) == [[ip("127.0.0.1")], [ip("127.0.0.1")]])
        #expect(source.gateway.allowPrivate == [cidr("127.0.0.0/8")])
        #expect(source.gateway.unknownSources == .deny)
        #expect(source.workloads == [Workload(metadata: ObjectMeta(name: "checkout", namespace: "payments"),
                                              addresses: [cidr("127.0.0.1/32")], serviceAccount: "checkout",
                                              labels: ["app": "checkout"])])
        #expect(source.externalServices == [ExternalService(metadata: ObjectMeta(name: "allowed-api"),
                                                            hosts: [pattern("api.allowed.test"), pattern("*.wild.allowed.test")],
                                                            ports: [.init(number: 443, protocol: .tls)])])
        #expect(source.egressPolicies == [EgressPolicy(metadata: ObjectMeta(name: "checkout-egress", namespace: "payments"),
                                                        podSelector: LabelSelector(matchLabels: ["app": "checkout"]),
                                                        egress: [.init(externalServices: ["allowed-api"])])])
    }

    @Test("the quickstart decides as documented", arguments: [
        Named("exact host", ("127.0.0.1", "api.allowed.test", Decision.Verdict.allow)),
        Named("wildcard host", ("127.0.0.1", "x.wild.allowed.test", .allow)),
        Named("deep wildcard host", ("127.0.0.1", "a.b.wild.allowed.test", .allow)),
        Named("wildcard suffix itself", ("127.0.0.1", "wild.allowed.test", .deny)),
        Named("unregistered host", ("127.0.0.1", "evil.test", .deny)),
        Named("unknown source", ("10.9.9.9", "api.allowed.test", .deny)),
    ])
    func decisions(_ example: Named<(String, String, Decision.Verdict)>) throws {
        let snapshot = try #require(Self.load())
        let (address, host, verdict) = example.value
        #expect(Self.decideFrom(address, sni: host, in: snapshot).verdict == verdict)
    }

    @Test("the allow names policy, service and port 443")
    func allowDetails() throws {
        let snapshot = try #require(Self.load())
        let decision = Self.decideFrom("127.0.0.1", sni: "api.allowed.test", in: snapshot)
        #expect(decision.verdict == .allow)
        #expect(decision.egressPolicy == "payments/checkout-egress")
        #expect(decision.externalService == "allowed-api")
        #expect(decision.port == 443)
    }

    @Test("the denials say why")
    func denialReasons() throws {
        let snapshot = try #require(Self.load())
        #expect(Self.decideFrom("127.0.0.1", sni: "evil.test", in: snapshot).reason == "no ExternalService matches evil.test")
        #expect(Self.decideFrom("127.0.0.1", sni: "wild.allowed.test", in: snapshot).reason == "no ExternalService matches wild.allowed.test")
        let unknown = Self.decideFrom("10.9.9.9", sni: "api.allowed.test", in: snapshot)
        #expect(unknown.reason.contains("10.9.9.9"))
        #expect(unknown.egressPolicy == nil)
    }

    @Test("the static resolver and the address guard let the quickstart reach loopback only")
    func resolverAndGuard() throws {
        let snapshot = try #require(Self.load())
        #expect(snapshot.staticAddresses(for: "api.allowed.test") == [ip("127.0.0.1")])
        #expect(snapshot.staticAddresses(for: "x.wild.allowed.test") == [ip("127.0.0.1")])
        #expect(snapshot.staticAddresses(for: "wild.allowed.test") == nil)
        #expect(snapshot.addressGuard.check(ip("127.0.0.1")) == .allowed)
        #expect(snapshot.addressGuard.check(ip("10.0.0.1")) != .allowed)
        #expect(snapshot.addressGuard.check(ip("169.254.169.254")) != .allowed)
        #expect(snapshot.serviceCount == 1)
        #expect(snapshot.hostPatternCount == 2)
    }

    @Test("through the CONNECT listener the quickstart decides the same, on port 443 only")
    func connect() throws {
        let snapshot = try #require(Self.load())
        let source = snapshot.inventory.identity(of: ip("127.0.0.1"))
        #expect(decide(snapshot, from: source, connect: "api.allowed.test", port: 443).verdict == .allow)
        #expect(decide(snapshot, from: source, sni: "api.allowed.test", connect: "api.allowed.test", port: 443).verdict == .allow)
        #expect(decide(snapshot, from: source, connect: "api.allowed.test", port: 8443).verdict == .deny)
        #expect(decide(snapshot, from: source, sni: "evil.test", connect: "api.allowed.test", port: 443).verdict == .deny)
    }
}
