import Testing
@testable import CorridorPolicy

@Suite("ConfigLoader: valid files")
struct ConfigLoaderTests {
    static let full = """
    apiVersion: corridor.dev/v1alpha1
    kind: GatewayConfig
    metadata:
      name: edge
      labels: {team: platform}
    spec:
      listeners: {tls: "0.0.0.0:443", connect: "[::1]:3128"}
      tls: {upstreamPort: 8443, allowECH: true, maxClientHelloBytes: 16384}
      resolver:
        system: false
        static: {db.corp.test: [10.1.2.3, "fd00::3"]}
      destinations:
        allowPrivate: [10.1.0.0/16]
        block: [93.184.216.0/24]
      unknownSources: Allow
      limits: {maxConnections: 500, maxConnectionsPerSource: 50, handshakeTimeout: 500ms, connectTimeout: 2s, idleTimeout: 1m30s, drainTimeout: 1h, maxConnectHeadBytes: 4096}
      reload: {liveConnections: Recheck}
      flows: {maxEntries: 2000}
      signals:
        newDestination: {enabled: false}
        denyBurst: {threshold: 5, window: 30s}
        generatedName: {minLength: 20, minEntropy: "3.8"}
        uploadHeavy: {enabled: false, minMiB: 50, ratio: 20}
      logging: {accessLog: {file: /var/log/corridor.log, interimInterval: 0s, onWriteFailure: Continue}}
    ---
    # an empty document is skipped
    ---
    apiVersion: corridor.dev/v1alpha1
    kind: ExternalService
    metadata: {name: stripe}
    spec:
      hosts: [API.Stripe.com., "*.stripe.com"]
      addresses: [10.1.0.0/24]
      ports:
      - {number: 443, protocol: TLS, name: https}
      - {number: 8443, protocol: TLS}
      access: All
    ---
    apiVersion: corridor.dev/v1alpha1
    kind: EgressPolicy
    metadata: {name: rollout}
    spec:
      podSelector:
        matchLabels: {app: checkout}
        matchExpressions:
        - {key: tier, operator: In, values: [web, api]}
        - {key: canary, operator: DoesNotExist}
      serviceAccounts: [checkout]
      mode: Audit
      egress:
      - to: [{externalService: stripe}]
        ports: [443]
    ---
    apiVersion: corridor.dev/v1alpha1
    kind: Workload
    metadata: {name: vm}
    spec:
      addresses: ["fd00:1::/64", 192.0.2.10]
    status: {anything: ignored}
    """

    @Test("every field of every kind is read")
    func fullFile() throws {
        let source = try #require(loadValid(Self.full))
        let gateway = source.gateway
        #expect(gateway.name == "edge")
        #expect(gateway.listeners.tls == .init(host: "0.0.0.0", port: 443))
        #expect(gateway.listeners.connect == .init(host: "::1", port: 3128))
        #expect(gateway.listeners.admin == nil)
        #expect(gateway.tls.upstreamPort == 8443)
        #expect(gateway.tls.allowECH)
        #expect(gateway.tls.maxClientHelloBytes == 16384)
        #expect(!gateway.systemResolver)
        #expect(gateway.staticHosts.map(\.0) == [pattern("db.corp.test")])
        #expect(gateway.staticHosts.map(\.1) == [[ip("10.1.2.3"), ip("fd00::3")]])
        #expect(gateway.allowPrivate == [cidr("10.1.0.0/16")])
        #expect(gateway.extraBlocked == [cidr("93.184.216.0/24")])
        #expect(gateway.unknownSources == .allow)
        #expect(gateway.limits.maxConnections == 500)
        #expect(gateway.limits.maxConnectionsPerSource == 50)
        #expect(gateway.logging.onWriteFailure == .continue)
        #expect(gateway.limits.handshakeTimeout == .milliseconds(500))
        #expect(gateway.limits.connectTimeout == .seconds(2))
        #expect(gateway.limits.idleTimeout == .seconds(90))
        #expect(gateway.limits.drainTimeout == .seconds(3600))
        #expect(gateway.limits.maxConnectHeadBytes == 4096)
        #expect(gateway.reload.liveConnections == .recheck)
        #expect(gateway.flows.maxEntries == 2000)
        #expect(!gateway.signals.newDestination && gateway.signals.denyBurst)
        #expect(gateway.signals.denyBurstThreshold == 5 && gateway.signals.denyBurstWindow == .seconds(30))
        #expect(gateway.signals.generatedNameMinLength == 20 && gateway.signals.generatedNameMinEntropy == 3.8)
        #expect(!gateway.signals.uploadHeavy && gateway.signals.uploadHeavyMiB == 50 && gateway.signals.uploadHeavyRatio == 20)
        #expect(gateway.logging.interimInterval == .zero)
        #expect(gateway.logging.accessLogFile == "/var/log/corridor.log")

        let stripe = try #require(source.externalServices.first)
        #expect(source.externalServices.count == 1)
        #expect(stripe.hosts == [.exact("api.stripe.com"), .wildcard(suffix: "stripe.com")])
        #expect(stripe.addresses == [cidr("10.1.0.0/24")])
        #expect(stripe.ports == [.init(number: 443, protocol: .tls, name: "https"), .init(number: 8443, protocol: .tls)])
        #expect(stripe.access == .all)

        let rollout = try #require(source.egressPolicies.first)
        #expect(rollout.metadata.namespace == "default", "a namespaced kind without namespace is in default")
        #expect(rollout.mode == .audit)
        #expect(rollout.serviceAccounts == ["checkout"])
        #expect(rollout.podSelector == LabelSelector(matchLabels: ["app": "checkout"], matchExpressions: [
            .init(key: "tier", operator: .in, values: ["web", "api"]), .init(key: "canary", operator: .doesNotExist),
        ]))
        #expect(rollout.egress == [.init(externalServices: ["stripe"], ports: [443])])

        let vm = try #require(source.workloads.first)
        #expect(vm.metadata.namespace == "default")
        #expect(vm.serviceAccount == "default")
        #expect(vm.addresses == [cidr("fd00:1::/64"), cidr("192.0.2.10/32")])
    }

    @Test("an empty file gives the defaults")
    func empty() throws {
        let source = try #require(loadValid(""))
        #expect(source == PolicySource())
        let comments = try #require(loadValid("# nothing here\n---\n---\n"))
        #expect(comments == PolicySource())
    }

    @Test("defaults apply to fields left out, and `key:` with no value counts as absent")
    func defaults() throws {
        let yaml = """
        apiVersion: corridor.dev/v1alpha1
        kind: ExternalService
        metadata: {name: s}
        spec:
          hosts: [s.test]
          ports: [{number: 443, protocol: TLS}]
          access:
          addresses: ~
        ---
        apiVersion: corridor.dev/v1alpha1
        kind: EgressPolicy
        metadata: {name: p, namespace: team}
        spec:
          egress: [{to: [{externalService: s}]}]
        """
        let source = try #require(loadValid(yaml))
        #expect(source.externalServices.first?.access == .restricted)
        #expect(source.externalServices.first?.addresses == [])
        let p = try #require(source.egressPolicies.first)
        #expect(p.podSelector == .everything)
        #expect(p.serviceAccounts.isEmpty)
        #expect(p.mode == .enforce)
        #expect(p.egress.first?.ports == [])
        #expect(source.gateway == GatewayConfig())
        #expect(source.gateway.reload.liveConnections == .keep)
        #expect(source.gateway.limits.maxConnectionsPerSource == nil)
        #expect(source.gateway.logging.onWriteFailure == .deny, "a gateway that cannot record refuses by default")
    }

    @Test("the same name may be reused across kinds and namespaces")
    func namesPerKindAndNamespace() throws {
        let yaml = """
        apiVersion: corridor.dev/v1alpha1
        kind: ExternalService
        metadata: {name: shared}
        spec: {hosts: [a.test], ports: [{number: 443, protocol: TLS}]}
        ---
        apiVersion: corridor.dev/v1alpha1
        kind: EgressPolicy
        metadata: {name: shared, namespace: one}
        spec: {egress: [{to: [{externalService: shared}]}]}
        ---
        apiVersion: corridor.dev/v1alpha1
        kind: EgressPolicy
        metadata: {name: shared, namespace: two}
        spec: {egress: [{to: [{externalService: shared}]}]}
        ---
        apiVersion: corridor.dev/v1alpha1
        kind: Workload
        metadata: {name: shared, namespace: one}
        spec: {addresses: [10.0.0.0/24]}
        ---
        apiVersion: corridor.dev/v1alpha1
        kind: Workload
        metadata: {name: shared, namespace: two}
        spec: {addresses: [10.0.0.5/32]}
        """
        let source = try #require(loadValid(yaml))
        #expect(source.egressPolicies.map(\.metadata.qualifiedName) == ["one/shared", "two/shared"])
        #expect(source.workloads.count == 2)
    }

    @Test("a loaded file decides like one built in code")
    func loadedDecides() throws {
        let source = try #require(loadValid(Self.full))
        let snap = PolicySnapshot(source: source, generation: 7)
        #expect(snap.generation == 7)
        // access: All, so any source; Audit mode does not matter for an allow.
        let decision = decide(snap, from: nil, sni: "api.stripe.com")
        #expect(decision.verdict == .allow)
        #expect(decision.port == 8443, "two TLS ports, tls.upstreamPort 8443")
        #expect(snap.addressGuard.check(ip("93.184.216.34")) != .allowed)
        #expect(snap.addressGuard.check(ip("10.1.9.9")) == .allowed)
    }
}
