import Testing
@testable import CorridorPolicy

@Suite("DecisionEngine: grants, sources and hosts")
struct DecisionEngineTests {
    static let stripe = service("stripe", hosts: ["api.stripe.com", "*.stripe.com"])
    static let github = service("github", hosts: ["github.com"])
    static let status = service("status", hosts: ["status.example.test"], access: .all)
    static let grantCheckout = policy("checkout-egress", namespace: "payments",
                                      selector: LabelSelector(matchLabels: ["app": "checkout"]), grants: ["stripe"])

    static func standard(_ configure: (inout GatewayConfig) -> Void = { _ in }) -> PolicySnapshot {
        snapshot(services: [stripe, github, status], policies: [grantCheckout], configure: configure)
    }

    @Test("a granted service is allowed and names the policy and service")
    func granted() {
        let decision = decide(Self.standard(), from: checkoutPod, sni: "api.stripe.com")
        #expect(decision.verdict == .allow)
        #expect(decision.lets)
        #expect(decision.host == "api.stripe.com")
        #expect(decision.port == 443)
        #expect(decision.externalService == "stripe")
        #expect(decision.egressPolicy == "payments/checkout-egress")
        #expect(decision.reason.contains("payments/checkout-egress"))
    }

    @Test("a service not granted is denied, naming service and source")
    func notGranted() {
        let decision = decide(Self.standard(), from: workerPod, sni: "api.stripe.com")
        #expect(decision.verdict == .deny)
        #expect(!decision.lets)
        #expect(decision.reason == "ExternalService stripe is not granted to payments/sa:worker")
        #expect(decision.externalService == "stripe")
        #expect(decision.egressPolicy == nil)
    }

    @Test("an unregistered host is denied with the host named", arguments: ["evil.test", "stripe.com.evil.test", "evilstripe.com", "stripe.com"])
    func unregistered(_ host: String) {
        let decision = decide(Self.standard(), from: checkoutPod, sni: host)
        #expect(decision.verdict == .deny)
        #expect(decision.reason == "no ExternalService matches \(host)")
        #expect(decision.externalService == nil)
    }

    @Test("a policy never grants to a source in another namespace")
    func otherNamespace() {
        let decision = decide(Self.standard(), from: shopPod, sni: "api.stripe.com")
        #expect(decision.verdict == .deny)
        #expect(decision.reason == "ExternalService stripe is not granted to shop/sa:checkout")
    }

    @Test("access All opens a service to every known source", arguments: [
        Named("granted elsewhere", checkoutPod), Named("worker", workerPod), Named("other namespace", shopPod),
    ])
    func accessAll(_ source: Named<SourceIdentity>) {
        let decision = decide(Self.standard(), from: source.value, sni: "status.example.test")
        #expect(decision.verdict == .allow)
        #expect(decision.externalService == "status")
        #expect(decision.egressPolicy == nil)
    }

    @Test("serviceAccounts in a policy restrict the grant")
    func serviceAccountGrant() {
        let byAccount = policy("by-account", namespace: "payments", serviceAccounts: ["worker"], grants: ["github"])
        let snap = snapshot(services: [Self.github], policies: [byAccount])
        #expect(decide(snap, from: workerPod, sni: "github.com").verdict == .allow)
        #expect(decide(snap, from: checkoutPod, sni: "github.com").verdict == .deny)
        #expect(decide(snap, from: identity("ops", sa: "worker"), sni: "github.com").verdict == .deny)
    }

    @Test("an empty pod selector grants every workload of the namespace")
    func emptySelectorGrant() {
        let all = policy("all", namespace: "payments", grants: ["github"])
        let snap = snapshot(services: [Self.github], policies: [all])
        #expect(decide(snap, from: workerPod, sni: "github.com").verdict == .allow)
        #expect(decide(snap, from: checkoutPod, sni: "github.com").verdict == .allow)
        #expect(decide(snap, from: shopPod, sni: "github.com").verdict == .deny)
    }

    @Test("matchExpressions take part in grants")
    func expressionGrant() {
        let selector = LabelSelector(matchExpressions: [.init(key: "app", operator: .in, values: ["checkout", "refunds"]),
                                                        .init(key: "canary", operator: .doesNotExist)])
        let snap = snapshot(services: [Self.github], policies: [policy("p", namespace: "payments", selector: selector, grants: ["github"])])
        #expect(decide(snap, from: checkoutPod, sni: "github.com").verdict == .allow)
        #expect(decide(snap, from: identity("payments", sa: "x", labels: ["app": "checkout", "canary": "1"]), sni: "github.com").verdict == .deny)
        #expect(decide(snap, from: workerPod, sni: "github.com").verdict == .deny)
    }

    // MARK: Sources

    @Test("an unknown source is denied by default, naming its address")
    func unknownDenied() {
        for host in ["api.stripe.com", "status.example.test", "evil.test"] {
            let decision = decide(Self.standard(), from: nil, sni: host, address: "10.9.9.9")
            #expect(decision.verdict == .deny)
            #expect(decision.reason.contains("10.9.9.9"))
            #expect(decision.reason.contains("not a known workload"))
        }
    }

    @Test("with unknownSources Allow, an unknown source reaches only access-All services")
    func unknownAllowed() {
        let snap = Self.standard { $0.unknownSources = .allow }
        let open = decide(snap, from: nil, sni: "status.example.test", address: "10.9.9.9")
        #expect(open.verdict == .allow)
        #expect(open.externalService == "status")
        let restricted = decide(snap, from: nil, sni: "api.stripe.com", address: "10.9.9.9")
        #expect(restricted.verdict == .deny)
        #expect(restricted.reason == "ExternalService stripe is not granted to unknown source 10.9.9.9")
        let unregistered = decide(snap, from: nil, sni: "evil.test", address: "10.9.9.9")
        #expect(unregistered.verdict == .deny)
        #expect(unregistered.reason == "no ExternalService matches evil.test")
    }

    @Test("an unknown source is never granted by a policy in the default namespace with an empty selector")
    func unknownNotInDefault() {
        let everyone = policy("everyone", namespace: "default", grants: ["github"])
        let snap = snapshot(services: [Self.github], policies: [everyone]) { $0.unknownSources = .allow }
        #expect(decide(snap, from: nil, sni: "github.com").verdict == .deny)
        #expect(decide(snap, from: identity("default", sa: "default"), sni: "github.com").verdict == .allow)
    }

    // MARK: Facts

    @Test("no host at all is denied")
    func noHost() {
        let decision = decide(Self.standard(), from: checkoutPod, port: 443)
        #expect(decision.verdict == .deny)
        #expect(decision.host == nil)
        #expect(decision.reason.contains("no destination host"))
    }

    @Test("an SNI that differs from the CONNECT host is denied")
    func sniMismatch() {
        let decision = decide(Self.standard(), from: checkoutPod, sni: "evil.test", connect: "api.stripe.com", port: 443)
        #expect(decision.verdict == .deny)
        #expect(decision.reason.contains("evil.test") && decision.reason.contains("api.stripe.com"))
        let same = decide(Self.standard(), from: checkoutPod, sni: "api.stripe.com", connect: "api.stripe.com", port: 443)
        #expect(same.verdict == .allow)
    }

    @Test("a CONNECT host alone (no SNI yet) is decided on")
    func connectOnly() {
        #expect(decide(Self.standard(), from: checkoutPod, connect: "api.stripe.com", port: 443).verdict == .allow)
        #expect(decide(Self.standard(), from: workerPod, connect: "api.stripe.com", port: 443).verdict == .deny)
    }

    @Test("Encrypted Client Hello is denied unless tls.allowECH")
    func ech() {
        let denied = decide(Self.standard(), from: checkoutPod, sni: "api.stripe.com", ech: true)
        #expect(denied.verdict == .deny)
        #expect(denied.reason.contains("Encrypted Client Hello"))
        let allowed = decide(Self.standard { $0.tls.allowECH = true }, from: checkoutPod, sni: "api.stripe.com", ech: true)
        #expect(allowed.verdict == .allow)
        let stillNotGranted = decide(Self.standard { $0.tls.allowECH = true }, from: workerPod, sni: "api.stripe.com", ech: true)
        #expect(stillNotGranted.verdict == .deny)
    }

    // MARK: Specificity

    @Test("when several services match, the most specific one is named")
    func specificityNaming() {
        let exact = service("exact", hosts: ["api.corp.test"])
        let deep = service("deep", hosts: ["*.eu.corp.test"])
        let broad = service("broad", hosts: ["*.corp.test"])
        let everyone = policy("all", namespace: "payments", grants: ["broad", "deep", "exact"])
        let snap = snapshot(services: [broad, deep, exact], policies: [everyone])
        #expect(decide(snap, from: checkoutPod, sni: "api.corp.test").externalService == "exact")
        #expect(decide(snap, from: checkoutPod, sni: "x.eu.corp.test").externalService == "deep")
        #expect(decide(snap, from: checkoutPod, sni: "x.us.corp.test").externalService == "broad")
    }

    @Test("a more specific restricted service is not bypassed by a broader grant", arguments: [
        Named("exact restricted under an open wildcard", ("admin.corp.test", "admin")),
        Named("deeper wildcard under an open wildcard", ("x.internal.corp.test", "internal")),
    ])
    func specificityWins(_ example: Named<(String, String)>) {
        let (host, specific) = example.value
        let broad = service("broad", hosts: ["*.corp.test"], access: .all)
        let admin = service("admin", hosts: ["admin.corp.test"])
        let internalService = service("internal", hosts: ["*.internal.corp.test"])
        let admins = policy("admins", namespace: "ops", grants: ["admin", "internal"])
        let snap = snapshot(services: [broad, admin, internalService], policies: [admins])
        let denied = decide(snap, from: checkoutPod, sni: host)
        #expect(denied.verdict == .deny)
        #expect(denied.externalService == specific)
        let granted = decide(snap, from: identity("ops", sa: "admin"), sni: host)
        #expect(granted.verdict == .allow)
        #expect(granted.externalService == specific)
        #expect(decide(snap, from: checkoutPod, sni: "www.corp.test").verdict == .allow, "the broad service still serves other names")
    }

    @Test("two services registering the same name both count")
    func samePattern() {
        let a = service("a", hosts: ["shared.test"])
        let b = service("b", hosts: ["shared.test"])
        let snap = snapshot(services: [a, b], policies: [policy("p", namespace: "payments", grants: ["b"])])
        let decision = decide(snap, from: checkoutPod, sni: "shared.test")
        #expect(decision.verdict == .allow)
        #expect(decision.externalService == "b")
    }

    @Test("an allow carries the service's own addresses for the address guard")
    func serviceAddresses() {
        let onPrem = service("onprem", hosts: ["ledger.corp.test"], addresses: ["10.20.0.0/16"])
        let snap = snapshot(services: [onPrem], policies: [policy("p", namespace: "payments", grants: ["onprem"])])
        let decision = decide(snap, from: checkoutPod, sni: "ledger.corp.test")
        #expect(decision.verdict == .allow)
        #expect(decision.serviceAddresses == [cidr("10.20.0.0/16")])
        #expect(snap.addressGuard.check(ip("10.20.3.4"), serviceAddresses: decision.serviceAddresses) == .allowed)
        #expect(snap.addressGuard.check(ip("10.20.3.4")) != .allowed)
    }
}
