import Testing
@testable import CorridorPolicy

struct PortCase: Sendable, CustomTestStringConvertible {
    let name: String
    let servicePorts: [Int]
    let requested: Int?
    var upstreamPort = 443
    /// The chosen port, or nil for a denial.
    let expected: Int?
    var testDescription: String { name }
}

@Suite("DecisionEngine: ports")
struct DecisionPortTests {
    @Test("the upstream port is chosen from the service's TLS ports", arguments: [
        PortCase(name: "one port, none requested", servicePorts: [443], requested: nil, expected: 443),
        PortCase(name: "one non-default port, none requested", servicePorts: [8443], requested: nil, expected: 8443),
        PortCase(name: "requested port served", servicePorts: [443], requested: 443, expected: 443),
        PortCase(name: "requested port not served", servicePorts: [443], requested: 8443, expected: nil),
        PortCase(name: "requested one of several", servicePorts: [443, 8443], requested: 8443, expected: 8443),
        PortCase(name: "several, none requested, upstreamPort among them", servicePorts: [8443, 443], requested: nil, expected: 443),
        PortCase(name: "several, none requested, configured upstreamPort", servicePorts: [443, 8443], requested: nil,
                 upstreamPort: 8443, expected: 8443),
        PortCase(name: "several, none requested, upstreamPort not among them", servicePorts: [8443, 9443], requested: nil, expected: nil),
        PortCase(name: "one port ignores upstreamPort", servicePorts: [9443], requested: nil, upstreamPort: 8443, expected: 9443),
    ])
    func portSelection(_ example: PortCase) {
        let api = service("api", hosts: ["api.test"], ports: example.servicePorts)
        let snap = snapshot(services: [api], policies: [policy("p", namespace: "payments", grants: ["api"])]) {
            $0.tls.upstreamPort = example.upstreamPort
        }
        let decision = decide(snap, from: checkoutPod, sni: "api.test", port: example.requested)
        if let expected = example.expected {
            #expect(decision.verdict == .allow)
            #expect(decision.port == expected)
        } else {
            #expect(decision.verdict == .deny)
            #expect(decision.externalService == "api")
            if let requested = example.requested {
                #expect(decision.reason == "ExternalService api has no TLS port \(requested)")
            } else {
                #expect(decision.reason.contains("several TLS ports"))
                #expect(decision.reason.contains("\(example.upstreamPort)"))
            }
        }
    }

    @Test("rule ports limit a grant to those ports")
    func rulePorts() {
        let api = service("api", hosts: ["api.test"], ports: [443, 8443])
        let limited = policy("limited", namespace: "payments", grants: ["api"], ports: [443])
        let snap = snapshot(services: [api], policies: [limited])
        #expect(decide(snap, from: checkoutPod, sni: "api.test", port: 443).verdict == .allow)
        #expect(decide(snap, from: checkoutPod, sni: "api.test").port == 443)
        let other = decide(snap, from: checkoutPod, sni: "api.test", port: 8443)
        #expect(other.verdict == .deny)
        #expect(other.reason == "ExternalService api is not granted to payments/sa:checkout")
    }

    @Test("a second rule can grant the port the first one leaves out")
    func rulesAddUp() {
        let api = service("api", hosts: ["api.test"], ports: [443, 8443])
        let p = EgressPolicy(metadata: ObjectMeta(name: "p", namespace: "payments"), egress: [
            .init(externalServices: ["api"], ports: [443]), .init(externalServices: ["api"], ports: [8443]),
        ])
        let snap = snapshot(services: [api], policies: [p])
        #expect(decide(snap, from: checkoutPod, sni: "api.test", port: 8443).verdict == .allow)
        #expect(decide(snap, from: checkoutPod, sni: "api.test", port: 443).verdict == .allow)
    }

    @Test("an unregistered host reports the port that would have been used")
    func unregisteredPort() {
        let snap = snapshot(services: []) { $0.tls.upstreamPort = 8443 }
        #expect(decide(snap, from: checkoutPod, sni: "evil.test").port == 8443)
        #expect(decide(snap, from: checkoutPod, sni: "evil.test", port: 9443).port == 9443)
    }
}

@Suite("DecisionEngine: Audit mode")
struct DecisionAuditTests {
    static let stripe = service("stripe", hosts: ["api.stripe.com"])
    static let github = service("github", hosts: ["github.com"], ports: [443])
    static let rollout = policy("rollout", namespace: "payments", selector: LabelSelector(matchLabels: ["app": "checkout"]),
                                grants: ["github"], mode: .audit)
    static let enforced = policy("enforced", namespace: "payments", selector: LabelSelector(matchLabels: ["app": "checkout"]),
                                 grants: ["stripe"])

    static func snap(_ configure: (inout GatewayConfig) -> Void = { _ in }) -> PolicySnapshot {
        snapshot(services: [stripe, github], policies: [enforced, rollout], configure: configure)
    }

    @Test("would-be denials of selected sources become audit, naming the policy", arguments: [
        Named<(String, Int?, String)>("unregistered host", ("evil.test", nil, "no ExternalService matches evil.test")),
        Named("granted service on a port it does not serve", ("api.stripe.com", Int?(8443), "no TLS port 8443")),
        Named("audited grant on a port it does not serve", ("github.com", Int?(8443), "no TLS port 8443")),
    ])
    func audited(_ example: Named<(String, Int?, String)>) {
        let (host, port, inner) = example.value
        let decision = decide(Self.snap(), from: checkoutPod, sni: host, port: port)
        #expect(decision.verdict == .audit)
        #expect(decision.lets)
        #expect(decision.egressPolicy == "payments/rollout")
        #expect(decision.reason.contains(inner))
        #expect(decision.reason.contains("Audit"))
    }

    @Test("a service not granted to a selected source is audited")
    func auditNotGranted() {
        let other = service("other", hosts: ["other.test"])
        let snap = snapshot(services: [other, Self.github], policies: [Self.rollout])
        let decision = decide(snap, from: checkoutPod, sni: "other.test")
        #expect(decision.verdict == .audit)
        #expect(decision.externalService == "other")
        #expect(decision.reason.contains("ExternalService other is not granted to payments/sa:checkout"))
    }

    @Test("an audited connection always has a port to dial, even when the service had none to offer")
    func auditedDecisionHasAPort() {
        let multi = service("multi", hosts: ["multi.test"], ports: [8443, 9443])
        let snap = snapshot(services: [multi], policies: [Self.rollout])
        let decision = decide(snap, from: checkoutPod, sni: "multi.test")
        #expect(decision.verdict == .audit)
        #expect(decision.port == 443)
    }

    @Test("grants still allow; Audit does not downgrade an allow")
    func allowStaysAllow() {
        let decision = decide(Self.snap(), from: checkoutPod, sni: "api.stripe.com")
        #expect(decision.verdict == .allow)
        #expect(decision.egressPolicy == "payments/enforced")
    }

    @Test("Audit never affects sources the policy does not select", arguments: [
        Named("same namespace, other labels", workerPod),
        Named("other namespace, same labels", shopPod),
    ])
    func notSelected(_ source: Named<SourceIdentity>) {
        let decision = decide(Self.snap(), from: source.value, sni: "evil.test")
        #expect(decision.verdict == .deny)
        #expect(decision.egressPolicy == nil)
        #expect(decision.reason == "no ExternalService matches evil.test")
    }

    @Test("Audit never lets unknown sources through")
    func unknownSource() {
        #expect(decide(Self.snap(), from: nil, sni: "evil.test").verdict == .deny)
        let allowUnknown = Self.snap { $0.unknownSources = .allow }
        #expect(decide(allowUnknown, from: nil, sni: "evil.test").verdict == .deny)
        #expect(decide(allowUnknown, from: nil, sni: "api.stripe.com").verdict == .deny)
    }

    @Test("Audit does not override the checks made before any policy: SNI mismatch, no host")
    func earlyChecks() {
        // ECH is a per-service policy setting (spec.tls.ech): audited like any other refusal.
        #expect(decide(Self.snap(), from: checkoutPod, sni: "evil.test", ech: true).verdict == .audit)
        #expect(decide(Self.snap(), from: checkoutPod, sni: "evil.test", connect: "github.com").verdict == .deny)
        #expect(decide(Self.snap(), from: checkoutPod).verdict == .deny)
    }

    @Test("an Enforce policy selecting the source leaves a denial a denial")
    func enforceOnly() {
        let snap = snapshot(services: [Self.stripe, Self.github], policies: [Self.enforced])
        #expect(decide(snap, from: checkoutPod, sni: "evil.test").verdict == .deny)
        #expect(decide(snap, from: checkoutPod, sni: "github.com").verdict == .deny)
    }
}
