import Testing
@testable import CorridorPolicy

/// The quickstart from the README: it must load exactly as written.
let quickstartYAML = """
apiVersion: corridor.dev/v1alpha1
kind: GatewayConfig
metadata: {name: local}
spec:
  listeners:
    tls: 127.0.0.1:15443        # TLS passthrough, SNI decides
    connect: 127.0.0.1:13128    # explicit HTTP CONNECT proxy
    admin: 127.0.0.1:15000      # /metrics /healthz /readyz
  resolver:
    static:                      # overrides the system resolver (tests, air-gapped)
      api.allowed.test: [127.0.0.1]
      "*.wild.allowed.test": [127.0.0.1]
  destinations:
    allowPrivate: [127.0.0.0/8]  # loopback is blocked unless listed here
  unknownSources: Deny
---
apiVersion: corridor.dev/v1alpha1
kind: Workload
metadata: {name: checkout, namespace: payments}
spec: {addresses: [127.0.0.1/32], serviceAccount: checkout, labels: {app: checkout}}
---
apiVersion: corridor.dev/v1alpha1
kind: ExternalService
metadata: {name: allowed-api}
spec:
  hosts: [api.allowed.test, "*.wild.allowed.test"]
  ports: [{number: 443, protocol: TLS}]
---
apiVersion: corridor.dev/v1alpha1
kind: EgressPolicy
metadata: {name: checkout-egress, namespace: payments}
spec:
  podSelector: {matchLabels: {app: checkout}}
  egress: [{to: [{externalService: allowed-api}]}]
"""

/// A table case with a readable name in the test report.
struct Named<Value: Sendable>: Sendable, CustomTestStringConvertible {
    let name: String
    let value: Value
    init(_ name: String, _ value: Value) {
        self.name = name
        self.value = value
    }
    var testDescription: String { name }
}

func ip(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> IPAddress {
    guard let address = IPAddress(parsing: text) else {
        Issue.record("test setup: '\(text)' is not an IP address", sourceLocation: sourceLocation)
        return .v4(0)
    }
    return address
}

func cidr(_ text: String) -> CIDR { try! CIDR(parsing: text) }

func pattern(_ text: String) -> HostPattern { try! HostPattern(parsing: text) }

func service(_ name: String, hosts: [String], ports: [Int] = [443], access: ExternalService.Access = .restricted,
             addresses: [String] = []) -> ExternalService {
    ExternalService(metadata: ObjectMeta(name: name), hosts: hosts.map(pattern),
                    addresses: addresses.map(cidr), ports: ports.map { .init(number: $0) }, access: access)
}

func policy(_ name: String, namespace: String, selector: LabelSelector = .everything, serviceAccounts: [String] = [],
            grants: [String], ports: [Int] = [], mode: EgressPolicy.Mode = .enforce) -> EgressPolicy {
    EgressPolicy(metadata: ObjectMeta(name: name, namespace: namespace), podSelector: selector,
                 serviceAccounts: serviceAccounts, egress: [.init(externalServices: grants, ports: ports)], mode: mode)
}

func snapshot(services: [ExternalService], policies: [EgressPolicy] = [], workloads: [Workload] = [],
              configure: (inout GatewayConfig) -> Void = { _ in }) -> PolicySnapshot {
    var source = PolicySource()
    source.externalServices = services
    source.egressPolicies = policies
    source.workloads = workloads
    configure(&source.gateway)
    return PolicySnapshot(source: source, generation: 1)
}

func identity(_ namespace: String, sa: String, labels: [String: String] = [:], workload: String = "w") -> SourceIdentity {
    SourceIdentity(namespace: namespace, workload: workload, serviceAccount: sa, labels: labels)
}

let checkoutPod = identity("payments", sa: "checkout", labels: ["app": "checkout"], workload: "checkout")
let workerPod = identity("payments", sa: "worker", labels: ["app": "worker"], workload: "worker")
let shopPod = identity("shop", sa: "checkout", labels: ["app": "checkout"], workload: "checkout")

func decide(_ snapshot: PolicySnapshot, from source: SourceIdentity?, sni: String? = nil, connect: String? = nil,
            port: Int? = nil, ech: Bool = false, address: String = "10.9.9.9") -> Decision {
    DecisionEngine.decide(source: source, sourceAddress: address,
                          facts: DestinationFacts(serverName: sni, connectHost: connect, port: port, hasECH: ech),
                          snapshot: snapshot)
}

/// Loads YAML that must be valid; records the errors otherwise.
func loadValid(_ yaml: String, file: String = "test.yaml", sourceLocation: SourceLocation = #_sourceLocation) -> PolicySource? {
    do {
        return try ConfigLoader.load(yaml: yaml, file: file)
    } catch {
        Issue.record("expected \(file) to load, got:\n\(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// Loads YAML that must be rejected and returns every error.
func loadErrors(_ yaml: String, file: String = "test.yaml", sourceLocation: SourceLocation = #_sourceLocation) -> [ConfigError] {
    do {
        _ = try ConfigLoader.load(yaml: yaml, file: file)
        Issue.record("expected \(file) to be rejected", sourceLocation: sourceLocation)
        return []
    } catch {
        #expect(!error.errors.isEmpty, "ConfigErrors must list at least one error", sourceLocation: sourceLocation)
        return error.errors
    }
}
