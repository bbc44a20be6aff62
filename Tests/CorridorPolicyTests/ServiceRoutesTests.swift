import Testing
@testable import CorridorPolicy

/// The per-service data the engine reads (ServiceRoutes): the decision carries the port exactly as
/// configured, whichever of a service's ports and grants it came from.
@Suite("DecisionEngine: compiled service routes")
struct ServiceRoutesTests {
    static let origination = ExternalService.OriginateTLS(port: 8443, sni: "api.vendor.test", minVersion: .tls13)

    static let snapshot = CorridorPolicyTests.snapshot(
        services: [
            ExternalService(metadata: ObjectMeta(name: "plain"), hosts: [pattern("plain.test")], ports: [.init(number: 443)]),
            ExternalService(metadata: ObjectMeta(name: "named"), hosts: [pattern("named.test")],
                            ports: [.init(number: 443, name: "https"), .init(number: 8443, name: "alt")]),
            ExternalService(metadata: ObjectMeta(name: "http"), hosts: [pattern("http.test")],
                            ports: [.init(number: 80, protocol: .http, name: "web", originateTLS: origination)]),
            ExternalService(metadata: ObjectMeta(name: "portless"), hosts: [pattern("portless.test")], ports: []),
            ExternalService(metadata: ObjectMeta(name: "multi"), hosts: [pattern("multi.test")],
                            ports: [.init(number: 443), .init(number: 5432, protocol: .tcp), .init(number: 9443)]),
        ],
        policies: [
            policy("p443", namespace: "payments", grants: ["plain", "named", "http", "portless", "multi"], ports: [443]),
            policy("p9443", namespace: "payments", grants: ["multi"], ports: [9443]),
            policy("p80", namespace: "payments", grants: ["http"], ports: [80]),
        ])

    func decideHTTP(_ host: String) -> Decision {
        DecisionEngine.decide(source: checkoutPod, sourceAddress: "10.9.9.9", facts: DestinationFacts(connectHost: host, kind: .http),
                              snapshot: Self.snapshot)
    }

    @Test("a port with only a number and a protocol is carried as configured")
    func plainPort() {
        let decision = decide(Self.snapshot, from: checkoutPod, sni: "plain.test")
        #expect(decision.verdict == .allow)
        #expect(decision.servicePort == ExternalService.Port(number: 443))
    }

    @Test("a named first port and a named second port keep their names")
    func namedPorts() {
        let first = decide(Self.snapshot, from: checkoutPod, sni: "named.test", port: 443)
        #expect(first.verdict == .allow && first.servicePort == ExternalService.Port(number: 443, name: "https"))
        let second = decide(Self.snapshot, from: checkoutPod, sni: "named.test", port: 8443)
        #expect(second.verdict == .deny, "p443 covers 443 only")
        #expect(second.servicePort == ExternalService.Port(number: 8443, name: "alt"))
    }

    @Test("an HTTP port keeps its TLS origination")
    func originatedPort() {
        let decision = decideHTTP("http.test")
        #expect(decision.verdict == .allow)
        #expect(decision.egressPolicy == "payments/p80", "the first grant (p443) does not cover port 80; the second does")
        #expect(decision.servicePort == ExternalService.Port(number: 80, protocol: .http, name: "web", originateTLS: Self.origination))
    }

    @Test("a service without ports is refused for want of a port, never judged on a placeholder")
    func portless() {
        let decision = decide(Self.snapshot, from: checkoutPod, sni: "portless.test", port: 443)
        #expect(decision.verdict == .deny)
        #expect(decision.servicePort == nil)
        #expect(decision.reason == "ExternalService portless has no TLS port 443")
    }

    @Test("the third port of a service, granted by its second grant")
    func laterPortAndGrant() {
        let decision = decide(Self.snapshot, from: checkoutPod, sni: "multi.test", port: 9443)
        #expect(decision.verdict == .allow)
        #expect(decision.egressPolicy == "payments/p9443")
        #expect(decision.servicePort == ExternalService.Port(number: 9443))
        #expect(decide(Self.snapshot, from: checkoutPod, sni: "multi.test", port: 5432).verdict == .deny, "5432 is TCP, not TLS")
    }
}
