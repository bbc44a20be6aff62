import Testing
@testable import CorridorPolicy

/// One bad object placed after two good documents, so document numbers and lines are not trivially 1.
struct BadConfig: Sendable, CustomTestStringConvertible {
    /// Two valid documents of 4 lines each, then `---`: the case's first line is line 11, its first document is document 3.
    static let prefix = """
    apiVersion: corridor.dev/v1alpha1
    kind: GatewayConfig
    metadata: {name: gw}
    spec: {unknownSources: Deny}
    ---
    apiVersion: corridor.dev/v1alpha1
    kind: ExternalService
    metadata: {name: base}
    spec: {hosts: [base.test], ports: [{number: 443, protocol: TLS}]}
    ---

    """
    /// The same two documents with a Workload in place of the GatewayConfig, for cases that bring their own.
    static let prefixWithoutGateway = """
    apiVersion: corridor.dev/v1alpha1
    kind: Workload
    metadata: {name: base, namespace: base}
    spec: {addresses: [192.0.2.1/32]}
    ---
    apiVersion: corridor.dev/v1alpha1
    kind: ExternalService
    metadata: {name: base}
    spec: {hosts: [base.test], ports: [{number: 443, protocol: TLS}]}
    ---

    """
    static let prefixLines = 10
    static let prefixDocuments = 2

    let name: String
    let yaml: String
    /// Expected location, relative to the case text: its document (1-based) and line (1-based).
    var document = 1
    var gatewayInPrefix = true
    let object: String?
    let field: String?
    let line: Int
    let reason: String
    var testDescription: String { name }
}

private let header = "apiVersion: corridor.dev/v1alpha1\n"
private let serviceSpec = "spec: {hosts: [a.test], ports: [{number: 443, protocol: TLS}]}\n"

private func servicePorts(_ port: String) -> String {
    header + "kind: ExternalService\nmetadata: {name: svc}\nspec:\n  hosts: [a.test]\n  ports:\n  - \(port)\n"
}

private func serviceHost(_ host: String) -> String {
    header + "kind: ExternalService\nmetadata: {name: svc}\nspec:\n  hosts: [\"\(host)\"]\n  ports: [{number: 443, protocol: TLS}]\n"
}

private func workloadAddress(_ address: String) -> String {
    header + "kind: Workload\nmetadata: {name: vm, namespace: ops}\nspec:\n  addresses:\n  - \(address)\n"
}

@Suite("ConfigLoader: errors")
struct ConfigLoaderErrorTests {
    static let cases: [BadConfig] = [
        BadConfig(name: "wrong apiVersion", yaml: "apiVersion: corridor.dev/v1\nkind: ExternalService\nmetadata: {name: svc}\n" + serviceSpec,
                  object: "ExternalService/svc", field: "apiVersion", line: 1, reason: "must be corridor.dev/v1alpha1"),
        BadConfig(name: "unknown kind", yaml: header + "kind: ExternalServce\nmetadata: {name: svc}\n" + serviceSpec,
                  object: "ExternalServce/svc", field: "kind", line: 2, reason: "must be one of"),
        BadConfig(name: "unknown field podSelecter (flow)",
                  yaml: header + "kind: EgressPolicy\nmetadata: {name: p, namespace: payments}\nspec:\n  podSelecter: {matchLabels: {app: x}}\n  egress: [{to: [{externalService: base}]}]\n",
                  object: "EgressPolicy/payments/p", field: "spec.podSelecter", line: 5, reason: "unknown field"),
        BadConfig(name: "unknown field podSelecter (block)",
                  yaml: header + "kind: EgressPolicy\nmetadata: {name: p, namespace: payments}\nspec:\n  egress: [{to: [{externalService: base}]}]\n  podSelecter:\n    matchLabels: {app: x}\n",
                  object: "EgressPolicy/payments/p", field: "spec.podSelecter", line: 6, reason: "unknown field"),
        BadConfig(name: "unknown top-level field", yaml: header + "kind: ExternalService\nmetadata: {name: svc}\n" + serviceSpec + "extra: 1\n",
                  object: "ExternalService/svc", field: "extra", line: 5, reason: "unknown field"),
        BadConfig(name: "missing metadata.name", yaml: header + "kind: EgressPolicy\nmetadata: {namespace: payments}\nspec: {egress: [{to: [{externalService: base}]}]}\n",
                  object: "EgressPolicy", field: "metadata.name", line: 3, reason: "is required"),
        BadConfig(name: "namespace on a cluster-scoped kind", yaml: header + "kind: ExternalService\nmetadata:\n  name: svc\n  namespace: payments\n" + serviceSpec,
                  object: "ExternalService/svc", field: "metadata.namespace", line: 5, reason: "cluster-scoped"),
        BadConfig(name: "host '*.'", yaml: serviceHost("*."), object: "ExternalService/svc", field: "spec.hosts[0]", line: 5, reason: "not a valid host name"),
        BadConfig(name: "host 'a*.b'", yaml: serviceHost("a*.b"), object: "ExternalService/svc", field: "spec.hosts[0]", line: 5, reason: "wildcard"),
        BadConfig(name: "host '1.2.3.4'", yaml: serviceHost("1.2.3.4"), object: "ExternalService/svc", field: "spec.hosts[0]", line: 5, reason: "IP address"),
        BadConfig(name: "port 0", yaml: servicePorts("{number: 0, protocol: TLS}"), object: "ExternalService/svc",
                  field: "spec.ports[0].number", line: 7, reason: "between 1 and 65535"),
        BadConfig(name: "port 70000", yaml: servicePorts("{number: 70000, protocol: TLS}"), object: "ExternalService/svc",
                  field: "spec.ports[0].number", line: 7, reason: "between 1 and 65535"),
        BadConfig(name: "unknown protocol", yaml: servicePorts("{number: 443, protocol: UDP}"), object: "ExternalService/svc",
                  field: "spec.ports[0].protocol", line: 7, reason: "TLS, TCP"),
        BadConfig(name: "protocol HTTP without origination", yaml: servicePorts("{number: 80, protocol: HTTP}"), object: "ExternalService/svc",
                  field: "spec.ports[0].originateTLS", line: 7, reason: "needs originateTLS"),
        BadConfig(name: "bad CIDR", yaml: workloadAddress("10.0.0.300/24"), object: "Workload/ops/vm", field: "spec.addresses[0]", line: 6,
                  reason: "not an IP address or CIDR"),
        BadConfig(name: "host bits set", yaml: workloadAddress("10.0.0.1/24"), object: "Workload/ops/vm", field: "spec.addresses[0]", line: 6,
                  reason: "bits set"),
        BadConfig(name: "bad duration", yaml: header + "kind: GatewayConfig\nmetadata: {name: second}\nspec:\n  limits:\n    idleTimeout: 1d\n",
                  gatewayInPrefix: false, object: "GatewayConfig/second", field: "spec.limits.idleTimeout", line: 6, reason: "duration"),
        BadConfig(name: "unknown liveConnections", yaml: header + "kind: GatewayConfig\nmetadata: {name: second}\nspec:\n  reload:\n    liveConnections: Revoke\n",
                  gatewayInPrefix: false, object: "GatewayConfig/second", field: "spec.reload.liveConnections", line: 6, reason: "Keep"),
        BadConfig(name: "per-source limit of zero", yaml: header + "kind: GatewayConfig\nmetadata: {name: second}\nspec:\n  limits:\n    maxConnectionsPerSource: 0\n",
                  gatewayInPrefix: false, object: "GatewayConfig/second", field: "spec.limits.maxConnectionsPerSource", line: 6, reason: "between 1"),
        BadConfig(name: "unknown onWriteFailure", yaml: header + "kind: GatewayConfig\nmetadata: {name: second}\nspec:\n  logging:\n    accessLog: {onWriteFailure: Ignore}\n",
                  gatewayInPrefix: false, object: "GatewayConfig/second", field: "spec.logging.accessLog.onWriteFailure", line: 6, reason: "Deny"),
        BadConfig(name: "two listeners on one port", yaml: header + "kind: GatewayConfig\nmetadata: {name: second}\nspec:\n  listeners:\n    tls: 127.0.0.1:15443\n    connect: 127.0.0.1:15443\n",
                  gatewayInPrefix: false, object: "GatewayConfig/second", field: "spec.listeners.connect", line: 7,
                  reason: "127.0.0.1:15443 takes the port of the tls listener (127.0.0.1:15443)"),
        BadConfig(name: "a listener on every address takes the port from one on loopback",
                  yaml: header + "kind: GatewayConfig\nmetadata: {name: second}\nspec:\n  listeners:\n    tls: 127.0.0.1:15443\n    admin: 0.0.0.0:15443\n",
                  gatewayInPrefix: false, object: "GatewayConfig/second", field: "spec.listeners.admin", line: 7,
                  reason: "takes the port of the tls listener"),
        BadConfig(name: "one static name in two spellings",
                  yaml: header + "kind: GatewayConfig\nmetadata: {name: second}\nspec:\n  resolver:\n    static:\n      API.A.TEST: [192.0.2.1]\n      api.a.test: [192.0.2.2]\n",
                  gatewayInPrefix: false, object: "GatewayConfig/second", field: "spec.resolver.static.api.a.test", line: 8,
                  reason: "'api.a.test' is the same name as 'API.A.TEST', listed already (names ignore case)"),
        BadConfig(name: "second GatewayConfig", yaml: header + "kind: GatewayConfig\nmetadata: {name: second}\nspec: {}\n",
                  object: "GatewayConfig/second", field: "kind", line: 2, reason: "only one GatewayConfig"),
        BadConfig(name: "EgressPolicy naming a missing ExternalService",
                  yaml: header + "kind: EgressPolicy\nmetadata: {name: p, namespace: payments}\nspec:\n  egress:\n  - to: [{externalService: base}, {externalService: missing}]\n",
                  object: "EgressPolicy/payments/p", field: "spec.egress[0].to[1].externalService", line: 6, reason: "no ExternalService named 'missing'"),
        BadConfig(name: "duplicate ExternalService name", yaml: header + "kind: ExternalService\nmetadata:\n  name: base\n" + serviceSpec,
                  object: "ExternalService/base", field: "metadata.name", line: 4, reason: "same name"),
        BadConfig(name: "duplicate EgressPolicy name",
                  yaml: header + "kind: EgressPolicy\nmetadata: {name: p, namespace: a}\nspec: {egress: [{to: [{externalService: base}]}]}\n---\n"
                      + header + "kind: EgressPolicy\nmetadata: {name: p, namespace: a}\nspec: {egress: [{to: [{externalService: base}]}]}\n",
                  document: 2, object: "EgressPolicy/a/p", field: "metadata.name", line: 8, reason: "same namespace and name"),
        BadConfig(name: "two Workloads claiming one CIDR",
                  yaml: header + "kind: Workload\nmetadata: {name: w1, namespace: a}\nspec: {addresses: [10.0.0.0/24]}\n---\n"
                      + header + "kind: Workload\nmetadata: {name: w2, namespace: b}\nspec:\n  addresses:\n  - 10.0.1.0/24\n  - 10.0.0.0/24\n",
                  document: 2, object: "Workload/b/w2", field: "spec.addresses[1]", line: 12, reason: "already claimed by Workload a/w1"),
        BadConfig(name: "rule port the service does not have",
                  yaml: header + "kind: EgressPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  egress:\n  - to: [{externalService: base}]\n    ports: [8443]\n",
                  object: "EgressPolicy/a/p", field: "spec.egress[0].ports", line: 7, reason: "no port 8443"),
        BadConfig(name: "In without values",
                  yaml: header + "kind: EgressPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  podSelector:\n    matchExpressions:\n    - {key: app, operator: In}\n  egress: [{to: [{externalService: base}]}]\n",
                  object: "EgressPolicy/a/p", field: "spec.podSelector.matchExpressions[0].values", line: 7, reason: "non-empty"),
        BadConfig(name: "label value with a space", yaml: header + "kind: Workload\nmetadata: {name: vm, namespace: a}\nspec:\n  addresses: [10.0.0.0/24]\n  labels: {app: \"two words\"}\n",
                  object: "Workload/a/vm", field: "spec.labels.app", line: 6, reason: "alphanumeric"),
        BadConfig(name: "upper-case object name", yaml: header + "kind: ExternalService\nmetadata: {name: Svc}\n" + serviceSpec,
                  object: "ExternalService/Svc", field: "metadata.name", line: 3, reason: "RFC 1123"),
        BadConfig(name: "ports given as a mapping", yaml: header + "kind: ExternalService\nmetadata: {name: svc}\nspec:\n  hosts: [a.test]\n  ports: {number: 443}\n",
                  object: "ExternalService/svc", field: "spec.ports", line: 6, reason: "must be a list"),
    ]

    @Test("each error names file, document, object, field, line and reason", arguments: cases)
    func located(_ bad: BadConfig) throws {
        let errors = loadErrors((bad.gatewayInPrefix ? BadConfig.prefix : BadConfig.prefixWithoutGateway) + bad.yaml, file: "bad.yaml")
        try #require(errors.count == 1, "exactly one error expected, got:\n\(errors.map(\.description).joined(separator: "\n"))")
        let error = errors[0]
        #expect(error.file == "bad.yaml")
        #expect(error.document == BadConfig.prefixDocuments + bad.document)
        #expect(error.object == bad.object)
        #expect(error.field == bad.field)
        #expect(error.line == BadConfig.prefixLines + bad.line)
        #expect(error.reason.contains(bad.reason), "reason: \(error.reason)")
        #expect(error.description.hasPrefix("bad.yaml:\(BadConfig.prefixLines + bad.line): document \(BadConfig.prefixDocuments + bad.document)"))
    }

    @Test("an HTTP port without originateTLS or allowPlaintext is refused: nothing leaves in clear text by default")
    func httpMessage() throws {
        let errors = loadErrors(BadConfig.prefix + servicePorts("{number: 80, protocol: HTTP}"))
        let reason = try #require(errors.first?.reason)
        #expect(reason.contains("originateTLS"))
        #expect(reason.contains("allowPlaintext: true"))
        #expect(errors.first?.field == "spec.ports[0].originateTLS")
    }

    @Test("originateTLS is checked field by field", arguments: [
        Named("both and neither", ("{number: 80, protocol: HTTP, allowPlaintext: true, originateTLS: {port: 443}}", "exclude each other")),
        Named("no port", ("{number: 80, protocol: HTTP, originateTLS: {caBundleFile: /x.pem}}", "is required")),
        Named("key without certificate", ("{number: 80, protocol: HTTP, originateTLS: {port: 443, clientKeyFile: /k.pem}}", "go together")),
        Named("inline bundle that is not PEM", ("{number: 80, protocol: HTTP, originateTLS: {port: 443, caBundle: hello}}", "PEM")),
        Named("bad SNI", ("{number: 80, protocol: HTTP, originateTLS: {port: 443, sni: 1.2.3.4}}", "not a host name")),
        Named("bad version", ("{number: 80, protocol: HTTP, originateTLS: {port: 443, minVersion: TLSv1.1}}", "TLSv1.2, TLSv1.3")),
        Named("on a TLS port", ("{number: 443, protocol: TLS, originateTLS: {port: 443}}", "protocol HTTP only")),
    ])
    func originateTLSFields(_ example: Named<(String, String)>) {
        let errors = loadErrors(BadConfig.prefix + servicePorts(example.value.0))
        #expect(errors.contains { $0.reason.contains(example.value.1) }, "\(errors)")
    }

    @Test("invalid YAML is an error, not a crash", arguments: [
        Named("unclosed flow sequence", "apiVersion: corridor.dev/v1alpha1\nkind: [ExternalService\n"),
        Named("bad indentation", "apiVersion: x\n  kind: y\n kind: z\n"),
        Named("tab indentation", "spec:\n\thosts: [a]\n"),
        Named("unterminated quote", "metadata: {name: \"abc}\n"),
        Named("undefined alias", "spec: *nothing\n"),
        Named("duplicate key", "apiVersion: corridor.dev/v1alpha1\nkind: ExternalService\nkind: Workload\n"),
    ])
    func invalidYAML(_ example: Named<String>) {
        let errors = loadErrors(example.value, file: "broken.yaml")
        #expect(errors.count == 1)
        #expect(errors.first?.file == "broken.yaml")
        #expect(errors.first?.reason.contains("YAML") == true)
        #expect(errors.first?.line != nil, "the line of the syntax error is reported")
    }

    /// A syntax error in a later document is placed in the file, not in its document, and never
    /// past the file's last line (found by a README walkthrough: line 64 of 63, and the parser's
    /// own "line 17" counted from the document's start in the reason).
    @Test func aSyntaxErrorInALaterDocumentIsPlacedInTheFile() {
        let yaml = "apiVersion: corridor.dev/v1alpha1\nkind: Workload\nmetadata: {name: a, namespace: b}\nspec: {addresses: [10.0.0.1]}\n"
            + "---\napiVersion: corridor.dev/v1alpha1\nkind: Workload\nspec: {a: [\n"
        let errors = loadErrors(yaml, file: "two.yaml")
        #expect(errors.count == 1)
        #expect(errors.first?.line == 8 && errors.first?.document == 2, "\(errors)")
        #expect(errors.first?.reason == "not valid YAML: while parsing a flow node: did not find expected node content", "\(errors)")
    }

    @Test("a document that is not a mapping is rejected", arguments: ["- a\n- b\n", "just a string\n", "42\n"])
    func notAMapping(_ yaml: String) {
        let errors = loadErrors(yaml)
        #expect(errors.count == 1)
        #expect(errors.first?.document == 1)
        #expect(errors.first?.reason.contains("mapping") == true)
    }

    @Test("several errors are reported together, in file order")
    func several() {
        let yaml = BadConfig.prefix
            + serviceHost("a*.b") + "---\n"
            + workloadAddress("10.0.0.1/24") + "---\n"
            + header + "kind: EgressPolicy\nmetadata: {name: p, namespace: a}\nspec: {egress: [{to: [{externalService: nope}]}]}\n"
        let errors = loadErrors(yaml)
        #expect(errors.map(\.document) == [3, 4, 5])
        #expect(errors.map(\.field) == ["spec.hosts[0]", "spec.addresses[0]", "spec.egress[0].to[0].externalService"])
        #expect(errors.allSatisfy { $0.line != nil })
        let all = ConfigErrors(errors: errors).description
        #expect(all.split(separator: "\n").count == 3)
    }

    @Test("a bad object does not hide the cross-checks of the others")
    func badObjectAndCrossCheck() {
        let yaml = BadConfig.prefix + serviceHost("a*.b") + "---\n"
            + header + "kind: ExternalService\nmetadata: {name: base}\n" + serviceSpec
        let errors = loadErrors(yaml)
        #expect(errors.count == 2)
        #expect(errors.map(\.object) == ["ExternalService/svc", "ExternalService/base"])
    }

    @Test("the description reads file:line: document N (object): field: reason")
    func description() {
        let error = ConfigError(file: "c.yaml", document: 2, object: "ExternalService/x", field: "spec.ports[0].number", line: 9,
                                reason: "must be between 1 and 65535, got 0")
        #expect(error.description == "c.yaml:9: document 2 (ExternalService/x): spec.ports[0].number: must be between 1 and 65535, got 0")
        #expect(ConfigError(file: "c.yaml", reason: "not valid YAML").description == "c.yaml: not valid YAML")
    }
}

@Test("listeners that bind together on Linux are no collision; those that cannot are", arguments: [
    ("0.0.0.0", "::1", false), ("0.0.0.0", "127.0.0.1", true), ("::", "127.0.0.1", true), ("::", "0.0.0.0", true),
    ("::1", "0:0:0:0:0:0:0:1", true), ("127.0.0.1", "::ffff:127.0.0.1", true), ("127.0.0.1", "127.0.0.2", false),
    ("::1", "::2", false),
])
func listenerCollisions(_ a: String, _ b: String, _ collide: Bool) {
    #expect(GatewayConfigReader.bindTogetherFails(a, b) == collide, "\(a) \(b)")
    #expect(GatewayConfigReader.bindTogetherFails(b, a) == collide, "\(b) \(a)")
}
