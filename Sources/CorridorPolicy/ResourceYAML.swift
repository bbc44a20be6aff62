/// Renders resources as YAML documents that `corridor check` (and the CRDs) accept and that load
/// back to equal values: what `corridor explain` proposes and `corridor learn` writes. Every
/// string is double-quoted, so no value can be read back as a number, a boolean or null.
public enum ResourceYAML {
    /// One document (without the `---` separator). `comments` go above it as `#` lines;
    /// `annotations` into its metadata.
    public static func render(_ service: ExternalService, comments: [String] = [], annotations: [String: String] = [:]) -> String {
        var lines = header(kind: "ExternalService", meta: service.metadata, comments: comments, annotations: annotations)
        lines.append("spec:")
        if !service.hosts.isEmpty { lines.append("  hosts: \(list(service.hosts.map(\.description)))") }
        if !service.addresses.isEmpty { lines.append("  addresses: \(list(service.addresses.map(\.description)))") }
        lines.append("  ports:")
        for port in service.ports {
            var fields = ["number: \(port.number)", "protocol: \(port.protocol.rawValue)"]
            if let name = port.name { fields.append("name: \(quote(name))") }
            if let originate = port.originateTLS { fields.append("originateTLS: \(render(originate))") }
            if port.allowPlaintext { fields.append("allowPlaintext: true") }
            lines.append("    - {\(fields.joined(separator: ", "))}")
        }
        if service.access != .restricted { lines.append("  access: \(service.access.rawValue)") }
        if let ech = service.ech { lines.append("  tls: {ech: \(ech.rawValue)}") }
        return lines.joined(separator: "\n")
    }

    public static func render(_ policy: EgressPolicy, comments: [String] = [], annotations: [String: String] = [:]) -> String {
        var meta = policy.metadata
        meta.namespace = policy.namespace
        var lines = header(kind: "EgressPolicy", meta: meta, comments: comments, annotations: annotations)
        lines.append("spec:")
        if policy.mode != .enforce { lines.append("  mode: \(policy.mode.rawValue)") }
        if !policy.podSelector.isEmpty {
            lines.append("  podSelector:")
            if !policy.podSelector.matchLabels.isEmpty { lines.append("    matchLabels: \(map(policy.podSelector.matchLabels))") }
            if !policy.podSelector.matchExpressions.isEmpty {
                lines.append("    matchExpressions:")
                for requirement in policy.podSelector.matchExpressions {
                    var fields = ["key: \(quote(requirement.key))", "operator: \(requirement.operator.rawValue)"]
                    if !requirement.values.isEmpty { fields.append("values: \(list(requirement.values))") }
                    lines.append("      - {\(fields.joined(separator: ", "))}")
                }
            }
        }
        if !policy.serviceAccounts.isEmpty { lines.append("  serviceAccounts: \(list(policy.serviceAccounts))") }
        lines.append("  egress:")
        for rule in policy.egress {
            lines.append("    - to: [\(rule.externalServices.map { "{externalService: \(quote($0))}" }.joined(separator: ", "))]")
            if !rule.ports.isEmpty { lines.append("      ports: [\(rule.ports.map(String.init).joined(separator: ", "))]") }
        }
        return lines.joined(separator: "\n")
    }

    public static func render(_ workload: Workload, comments: [String] = [], annotations: [String: String] = [:]) -> String {
        var meta = workload.metadata
        meta.namespace = meta.namespace ?? "default"
        var lines = header(kind: "Workload", meta: meta, comments: comments, annotations: annotations)
        lines.append("spec:")
        lines.append("  addresses: \(list(workload.addresses.map(\.description)))")
        lines.append("  serviceAccount: \(quote(workload.serviceAccount))")
        if !workload.labels.isEmpty { lines.append("  labels: \(map(workload.labels))") }
        return lines.joined(separator: "\n")
    }

    /// Documents joined into one multi-document file.
    public static func file(_ documents: [String]) -> String {
        documents.joined(separator: "\n---\n") + "\n"
    }

    private static func header(kind: String, meta: ObjectMeta, comments: [String], annotations: [String: String]) -> [String] {
        var lines = comments.flatMap { $0.split(separator: "\n", omittingEmptySubsequences: false).map { "# \($0)" } }
        lines += ["apiVersion: \(APIGroup.apiVersion)", "kind: \(kind)", "metadata:", "  name: \(quote(meta.name))"]
        if let namespace = meta.namespace { lines.append("  namespace: \(quote(namespace))") }
        if !meta.labels.isEmpty { lines.append("  labels: \(map(meta.labels))") }
        if !annotations.isEmpty { lines.append("  annotations: \(map(annotations))") }
        return lines
    }

    private static func render(_ originate: ExternalService.OriginateTLS) -> String {
        var fields = ["port: \(originate.port)"]
        switch originate.caBundle {
        case .file(let path): fields.append("caBundleFile: \(quote(path))")
        case .inline(let pem): fields.append("caBundle: \(quote(pem))")
        case .none: break
        }
        if let file = originate.clientCertificateFile { fields.append("clientCertificateFile: \(quote(file))") }
        if let file = originate.clientKeyFile { fields.append("clientKeyFile: \(quote(file))") }
        if let sni = originate.sni { fields.append("sni: \(quote(sni))") }
        if originate.minVersion != .tls12 { fields.append("minVersion: \(originate.minVersion.rawValue)") }
        return "{\(fields.joined(separator: ", "))}"
    }

    private static func list(_ values: [String]) -> String { "[\(values.map(quote).joined(separator: ", "))]" }

    private static func map(_ values: [String: String]) -> String {
        "{\(values.sorted { $0.key < $1.key }.map { "\(quote($0.key)): \(quote($0.value))" }.joined(separator: ", "))}"
    }

    /// A name as a YAML scalar (quoted).
    public static func quoteName(_ name: String) -> String { quote(name) }

    /// A YAML double-quoted scalar: JSON's escapes, which YAML's double-quoted style reads the same.
    static func quote(_ text: String) -> String { JSONObjectText.quote(text) }
}

