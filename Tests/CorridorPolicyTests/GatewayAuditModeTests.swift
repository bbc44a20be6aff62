import Testing
@testable import CorridorPolicy

/// `GatewayConfig spec.mode: Audit`: every connection policy would refuse is let through as
/// `audit`, with the reason it would have been refused; the checks that are not policy still refuse.
@Suite("DecisionEngine: gateway-wide Audit mode")
struct GatewayAuditModeTests {
    static let stripe = ExternalService(metadata: ObjectMeta(name: "stripe"), hosts: [.exact("api.stripe.com")], ports: [.init(number: 443)])
    static let db = ExternalService(metadata: ObjectMeta(name: "db"), hosts: [], addresses: [cidr("10.1.0.0/24")],
                                    ports: [.init(number: 5432, protocol: .tcp)])
    static let granted = policy("checkout", namespace: "payments", grants: ["stripe", "db"])

    static func snap(_ mode: GatewayConfig.Mode, services: [ExternalService] = [stripe, db], policies: [EgressPolicy] = [],
                     configure: (inout GatewayConfig) -> Void = { _ in }) -> PolicySnapshot {
        snapshot(services: services, policies: policies) {
            $0.mode = mode
            configure(&$0)
        }
    }

    @Test("every policy refusal becomes audit, with the reason it would have been refused")
    func policyRefusals() {
        let audit = Self.snap(.audit)
        let unregistered = decide(audit, from: checkoutPod, sni: "evil.test")
        #expect(unregistered.verdict == .audit)
        #expect(unregistered.reason == "would be denied (no ExternalService matches evil.test); the gateway is in Audit mode (spec.mode)")
        #expect(unregistered.host == "evil.test" && unregistered.port == 443)
        let notGranted = decide(audit, from: checkoutPod, sni: "api.stripe.com")
        #expect(notGranted.verdict == .audit && notGranted.externalService == "stripe")
        #expect(notGranted.reason.contains("is not granted to payments/sa:checkout"))
        let wrongPort = decide(audit, from: checkoutPod, sni: "api.stripe.com", port: 8443)
        #expect(wrongPort.verdict == .audit && wrongPort.port == 8443, "\(wrongPort)")
        // Unknown sources too, by name and by TCP address.
        let unknown = decide(audit, from: nil, sni: "api.stripe.com")
        #expect(unknown.verdict == .audit && unknown.reason.contains("source 10.9.9.9 is not a known workload"), "\(unknown)")
        #expect(unknown.externalService == "stripe" && unknown.port == 443 && unknown.egressPolicy == nil, "the service it reaches is named")
        let tcp = DecisionEngine.decideTCP(source: nil, sourceAddress: "10.9.9.9", destination: IPAddress(parsing: "10.1.0.7")!, port: 5432, snapshot: audit)
        #expect(tcp?.verdict == .audit)
        let tcpUnlisted = DecisionEngine.decideTCP(source: checkoutPod, sourceAddress: "10.9.9.9", destination: IPAddress(parsing: "10.7.0.7")!,
                                                   port: 5432, snapshot: audit)
        #expect(tcpUnlisted?.verdict == .audit && tcpUnlisted?.reason.contains("no ExternalService serves TCP 10.7.0.7 port 5432") == true)
        // ECH to a service that does not allow it.
        #expect(decide(audit, from: checkoutPod, sni: "api.stripe.com", ech: true).verdict == .audit)
    }

    @Test("what is not policy still refuses: SNI/CONNECT mismatch, no name, an unsynced policy")
    func guards() {
        let audit = Self.snap(.audit)
        #expect(decide(audit, from: checkoutPod, sni: "evil.test", connect: "api.stripe.com").verdict == .deny)
        #expect(decide(audit, from: checkoutPod).verdict == .deny)
        var source = audit.source
        source.withheld = .awaitingSync
        #expect(decide(PolicySnapshot(source: source, generation: 2), from: checkoutPod, sni: "api.stripe.com").verdict == .deny)
    }

    @Test("Enforce (the default) and allowed connections are unchanged")
    func unchanged() {
        #expect(GatewayConfig().mode == .enforce)
        #expect(decide(Self.snap(.enforce), from: checkoutPod, sni: "evil.test").verdict == .deny)
        let both = Self.snap(.audit, policies: [Self.granted])
        let allowed = decide(both, from: checkoutPod, sni: "api.stripe.com")
        #expect(allowed.verdict == .allow && allowed.egressPolicy == "payments/checkout")
        // An Audit-mode EgressPolicy that selects the source names itself, not the gateway.
        let perPolicy = Self.snap(.audit, policies: [policy("watch", namespace: "payments", grants: ["db"], mode: .audit)])
        #expect(decide(perPolicy, from: checkoutPod, sni: "evil.test").egressPolicy == "payments/watch")
    }

    @Test("per-service ECH: spec.tls.ech overrides the gateway's allowECH either way")
    func ech() {
        var allowing = Self.stripe
        allowing.ech = .allow
        let granted = policy("checkout", namespace: "payments", grants: ["stripe"])
        let byService = snapshot(services: [allowing], policies: [granted])
        #expect(decide(byService, from: checkoutPod, sni: "api.stripe.com", ech: true).verdict == .allow)
        let byDefault = snapshot(services: [Self.stripe], policies: [granted])
        let denied = decide(byDefault, from: checkoutPod, sni: "api.stripe.com", ech: true)
        #expect(denied.verdict == .deny && denied.reason.contains("spec.tls.ech"), "\(denied)")
        var refusing = Self.stripe
        refusing.ech = .deny
        let gatewayAllows = snapshot(services: [refusing], policies: [granted]) { $0.tls.allowECH = true }
        #expect(decide(gatewayAllows, from: checkoutPod, sni: "api.stripe.com", ech: true).verdict == .deny)
        #expect(decide(snapshot(services: [Self.stripe], policies: [granted]) { $0.tls.allowECH = true },
                       from: checkoutPod, sni: "api.stripe.com", ech: true).verdict == .allow)
    }

    @Test("spec.mode and spec.tls.ech are read from YAML, and bad values name the field")
    func loading() {
        let yaml = """
        apiVersion: corridor.dev/v1alpha1
        kind: GatewayConfig
        metadata: {name: gw}
        spec: {mode: Audit}
        ---
        apiVersion: corridor.dev/v1alpha1
        kind: ExternalService
        metadata: {name: s}
        spec: {hosts: [a.test], ports: [{number: 443, protocol: TLS}], tls: {ech: Allow}}
        """
        let source = loadValid(yaml)
        #expect(source?.gateway.mode == .audit)
        #expect(source?.externalServices.first?.ech == .allow)
        let bad = loadErrors(yaml.replacingOccurrences(of: "mode: Audit", with: "mode: Report"))
        #expect(bad.first?.field == "spec.mode")
        let badECH = loadErrors(yaml.replacingOccurrences(of: "ech: Allow", with: "ech: Maybe"))
        #expect(badECH.first?.field == "spec.tls.ech")
    }
}
