import Testing
@testable import CorridorPolicy

/// TCP services declared by address: judged by a redirected connection's original destination.
@Suite("DecisionEngine: TCP services by address")
struct DecisionTCPTests {
    static let db = ExternalService(metadata: ObjectMeta(name: "db"), hosts: [], addresses: [cidr("10.20.0.0/24")],
                                    ports: [.init(number: 5432, protocol: .tcp)])
    static let api = service("api", hosts: ["api.test"], ports: [443])
    static let grant = policy("db-access", namespace: "payments", selector: LabelSelector(matchLabels: ["app": "checkout"]), grants: ["db"])

    static func snap() -> PolicySnapshot { snapshot(services: [db, api], policies: [grant]) }

    func decideTCP(_ snapshot: PolicySnapshot, from source: SourceIdentity?, to address: String, port: Int) -> Decision? {
        DecisionEngine.decideTCP(source: source, sourceAddress: "10.9.9.9", destination: ip(address), port: port, snapshot: snapshot)
    }

    @Test func grantedSourceReachesAnAddressInTheRange() throws {
        let decision = try #require(decideTCP(Self.snap(), from: checkoutPod, to: "10.20.0.7", port: 5432))
        #expect(decision.verdict == .allow)
        #expect(decision.externalService == "db")
        #expect(decision.egressPolicy == "payments/db-access")
        #expect(decision.reason == "EgressPolicy payments/db-access grants ExternalService db (TCP 10.20.0.7 port 5432)")
        #expect(decision.serviceAddresses == [cidr("10.20.0.0/24")])
    }

    @Test func otherSourcesAreRefusedWithTheReason() throws {
        let decision = try #require(decideTCP(Self.snap(), from: workerPod, to: "10.20.0.7", port: 5432))
        #expect(decision.verdict == .deny)
        #expect(decision.reason == "ExternalService db (TCP 10.20.0.7 port 5432) is not granted to payments/sa:worker")
        let unknown = try #require(decideTCP(Self.snap(), from: nil, to: "10.20.0.7", port: 5432))
        #expect(unknown.verdict == .deny)
        #expect(unknown.reason.contains("not a known workload"))
    }

    @Test func anAddressOutsideTheRangeOnATCPOnlyPortIsRefused() throws {
        let decision = try #require(decideTCP(Self.snap(), from: checkoutPod, to: "10.20.1.7", port: 5432))
        #expect(decision.verdict == .deny)
        #expect(decision.reason == "no ExternalService serves TCP 10.20.1.7 port 5432")
    }

    @Test func portsWithoutTCPServicesAndSharedTLSPortsFallThroughToSNI() {
        #expect(decideTCP(Self.snap(), from: checkoutPod, to: "10.20.0.7", port: 443) == nil)
        let shared = ExternalService(metadata: ObjectMeta(name: "legacy443"), hosts: [], addresses: [cidr("10.30.0.0/24")],
                                     ports: [.init(number: 443, protocol: .tcp)])
        let snap = snapshot(services: [shared, Self.api])
        #expect(decideTCP(snap, from: checkoutPod, to: "10.99.0.1", port: 443) == nil, "443 is a TLS port too: judge by SNI")
        #expect(decideTCP(snap, from: checkoutPod, to: "10.30.0.1", port: 443)?.verdict == .deny, "in range: the TCP service decides")
    }

    @Test func auditModeAuditsTCPToo() throws {
        let audit = policy("rollout", namespace: "payments", grants: ["api"], mode: .audit)
        let decision = try #require(decideTCP(snapshot(services: [Self.db, Self.api], policies: [audit]), from: workerPod, to: "10.20.0.7", port: 5432))
        #expect(decision.verdict == .audit)
    }

    @Test("TCP ports need addresses; TLS ports need hosts", arguments: [
        Named("TCP without addresses", ("hosts: [db.test]\n  ports: [{number: 5432, protocol: TCP}]", "TCP ports need addresses")),
        Named("TLS without hosts", ("addresses: [10.0.0.0/8]\n  ports: [{number: 443, protocol: TLS}]", "TLS and HTTP ports need at least one host")),
        Named("neither", ("ports: [{number: 443, protocol: TLS}]", "TLS and HTTP ports need at least one host")),
    ])
    func validation(_ example: Named<(String, String)>) {
        let yaml = """
        apiVersion: corridor.dev/v1alpha1
        kind: ExternalService
        metadata: {name: svc}
        spec:
          \(example.value.0)
        """
        let errors = loadErrors(yaml)
        #expect(errors.contains { $0.reason.contains(example.value.1) }, "\(errors)")
    }

    @Test func aTCPServiceByAddressLoads() throws {
        let yaml = """
        apiVersion: corridor.dev/v1alpha1
        kind: ExternalService
        metadata: {name: db}
        spec: {addresses: [10.20.0.0/24], ports: [{number: 5432, protocol: TCP}]}
        """
        let source = try #require(loadValid(yaml))
        #expect(source.externalServices.first?.ports.first?.protocol == .tcp)
    }
}
