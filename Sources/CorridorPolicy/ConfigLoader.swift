import Yams

/// Everything a config source declared, validated object by object.
public struct PolicySource: Sendable, Equatable {
    public var gateway = GatewayConfig()
    public var externalServices: [ExternalService] = []
    public var egressPolicies: [EgressPolicy] = []
    public var workloads: [Workload] = []
    /// Kubernetes mode before the first full sync, or with the API out of reach for longer than
    /// `spec.kubernetes.maxStaleness`: every connection is denied, and says why.
    public var withheld: PolicyWithheld?

    public init() {}
}

/// What a loader remembers between loads of one file: each document's text and what it parsed
/// to. Used by one load at a time (the gateway serializes reloads).
public final class ConfigCache: @unchecked Sendable {
    var documents: [String: ConfigLoader.ParsedDocument] = [:]

    public init() {}

    /// Documents remembered from the last load.
    public var count: Int { documents.count }
}

/// Reads the multi-document YAML config file: `GatewayConfig`, `ExternalService`, `EgressPolicy`, `Workload`.
public enum ConfigLoader {
    /// Parses and validates YAML text. Throws ``ConfigErrors`` listing every problem found.
    /// `crossCheck: false` validates each object on its own (names unique, references resolve and
    /// the inventory unambiguous are then the caller's job, as for objects read from the API).
    /// With a `cache`, documents whose text did not change since the last load through it are not
    /// parsed again (a reload of a 10,000-service file that changed one object parses one object).
    public static func load(yaml text: String, file: String, crossCheck checkAcross: Bool = true,
                            cache: ConfigCache? = nil) throws(ConfigErrors) -> PolicySource {
        var source = PolicySource()
        var errors: [ConfigError] = []
        var sawGateway = false
        var locations = ObjectLocations()
        var parsedNow: [String: ParsedDocument] = [:]
        var number = 0

        func take(_ parsed: ParsedDocument, lineOffset: Int) {
            number += 1
            func located(_ error: ConfigError) -> ConfigError {
                var error = error
                error.document = number
                error.line = error.line.map { $0 + lineOffset }
                return error
            }
            if parsed.kind == "GatewayConfig" && sawGateway {
                errors.append(located(ConfigError(file: file, object: parsed.label, field: "kind", line: parsed.kindLine,
                                                  reason: "only one GatewayConfig may be given")))
                return
            }
            errors += parsed.errors.map(located)
            guard let node = parsed.node else { return }
            switch parsed.object {
            case .none: break
            case .gateway(let gateway):
                sawGateway = true
                source.gateway = gateway
            case .service(let service):
                source.externalServices.append(service)
                locations.externalServices.append((number, node, lineOffset))
            case .policy(let policy):
                source.egressPolicies.append(policy)
                locations.egressPolicies.append((number, node, lineOffset))
            case .workload(let workload):
                source.workloads.append(workload)
                locations.workloads.append((number, node, lineOffset))
            }
        }

        if let pieces = splitDocuments(text) {
            let previous = cache?.documents ?? [:]
            for piece in pieces {
                let parsed: ParsedDocument
                if let cached = parsedNow[piece.text] ?? previous[piece.text] {
                    parsed = cached
                } else {
                    let node: Node?
                    do {
                        // No implicit tag resolution: every plain scalar stays a string and the reader
                        // interprets it per field (ints, bools, null), which spares a regular expression
                        // per scalar (most of the load time of a 10,000-service file).
                        node = try Yams.compose(yaml: piece.text, .basic)
                    } catch {
                        // The document it would have been (documents before it that parsed counted),
                        // and the file's line (the end of input is the file's last line).
                        let lastLine = max(1, text.utf8.reduce(0) { $0 + ($1 == 0x0a ? 1 : 0) })
                        throw ConfigErrors(errors: [ConfigError(file: file, document: number + 1,
                                                                line: yamlLine(error).map { min($0 + piece.firstLine, lastLine) },
                                                                reason: "not valid YAML: \(yamlMessage(error))")])
                    }
                    parsed = node.map { parseDocument($0, file: file) } ?? ParsedDocument(isDocument: piece.explicit)
                }
                parsedNow[piece.text] = parsed
                if parsed.isDocument { take(parsed, lineOffset: piece.firstLine) }
            }
            cache?.documents = parsedNow
        } else {
            // Directives or `...` markers: the stream is parsed whole (and not cached).
            var documents: [Node] = []
            do {
                let sequence = try Yams.compose_all(yaml: text, .basic)
                var iterator = sequence.makeIterator()
                while let node = iterator.next() { documents.append(node) }
                if let error = iterator.error { throw error }
            } catch {
                throw ConfigErrors(errors: [ConfigError(file: file, line: yamlLine(error), reason: "not valid YAML: \(yamlMessage(error))")])
            }
            for node in documents { take(parseDocument(node, file: file), lineOffset: 0) }
        }
        if checkAcross { errors += crossCheck(source, file: file, locations: locations) }
        if !errors.isEmpty { throw ConfigErrors(errors: errors) }
        return source
    }

    /// One document, validated on its own: its object, or its error (lines relative to the
    /// document's text, no document number: the caller places it in the file).
    struct ParsedDocument {
        enum Object {
            case none
            case gateway(GatewayConfig)
            case service(ExternalService)
            case policy(EgressPolicy)
            case workload(Workload)
        }

        /// False for text that holds no document (comments before the first `---`).
        var isDocument = true
        var object = Object.none
        var node: Node?
        var kind: String?
        var kindLine: Int?
        var label: String?
        var errors: [ConfigError] = []
    }

    static func parseDocument(_ node: Node, file: String) -> ParsedDocument {
        var parsed = ParsedDocument(node: node)
        var reader = YAMLReader(file: file, document: 0)
        do throws(ConfigError) {
            if case .scalar(let scalar) = node, scalar.string.isEmpty { return parsed }  // an empty document between `---`
            let root = try YAMLReader.Fields(reader: reader, path: "", node: node)
            // Name the object in every error, including those found before its metadata is validated.
            reader.object = objectLabel(node)
            parsed.label = reader.object
            root.reader = reader
            let apiVersion = try root.requiredString("apiVersion")
            let kind = try root.requiredString("kind")
            guard apiVersion == APIGroup.apiVersion else {
                throw reader.error("apiVersion", root.node("apiVersion"), "must be \(APIGroup.apiVersion), got '\(apiVersion)'")
            }
            guard knownKinds.contains(kind) else {
                throw reader.error("kind", root.node("kind"), "must be one of \(knownKinds.joined(separator: ", ")), got '\(kind)'")
            }
            parsed.kind = kind
            parsed.kindLine = root.node("kind")?.mark?.line
            guard let metaFields = try root.fields("metadata") else { throw reader.error("metadata", node, "is required") }
            let namespaced = kind == "EgressPolicy" || kind == "Workload"
            let meta = try objectMeta(metaFields, namespaced: namespaced, reader: reader)
            reader.object = "\(kind)/\(meta.qualifiedName)"
            parsed.label = reader.object
            root.reader = reader
            var spec = try root.fields("spec")
            if spec == nil { spec = try YAMLReader.Fields(reader: reader, path: "spec", node: .mapping([:])) }
            guard let spec else { return parsed }
            _ = root.node("status")  // written by the gateway in a cluster; ignored in a file
            try root.finish()
            switch kind {
            case "GatewayConfig": parsed.object = .gateway(try GatewayConfigReader.read(spec, name: meta.name))
            case "ExternalService": parsed.object = .service(try readExternalService(spec, meta: meta))
            case "EgressPolicy": parsed.object = .policy(try readEgressPolicy(spec, meta: meta))
            case "Workload": parsed.object = .workload(try readWorkload(spec, meta: meta))
            default:
                throw reader.error("kind", root.node("kind"), "must be one of GatewayConfig, ExternalService, EgressPolicy, Workload, got '\(kind)'")
            }
            try spec.finish()
        } catch {
            parsed.object = .none
            parsed.errors.append(error)
        }
        return parsed
    }

    /// The stream's documents as text, split at `---` lines (which YAML forbids inside any
    /// scalar, so this is where the parser splits too), each with the line it starts on. Nil when
    /// the text has directives (`%`) or `...` end markers: those streams are parsed whole.
    static func splitDocuments(_ text: String) -> [(text: String, firstLine: Int, explicit: Bool)]? {
        var pieces: [(text: String, firstLine: Int, explicit: Bool)] = []
        let bytes = Array(text.utf8)
        var pieceStart = 0, pieceLine = 0, explicit = false
        var lineStart = 0, line = 0
        func isMarker(_ at: Int, _ c: UInt8) -> Bool {
            guard at + 2 < bytes.count, bytes[at] == c, bytes[at + 1] == c, bytes[at + 2] == c else { return false }
            let next = at + 3 < bytes.count ? bytes[at + 3] : 0x0a
            return next == 0x0a || next == 0x0d || next == 0x20 || next == 0x09
        }
        func close(at end: Int) {
            if end > pieceStart || explicit {
                pieces.append((String(decoding: bytes[pieceStart..<end], as: UTF8.self), pieceLine, explicit))
            }
        }
        while lineStart < bytes.count {
            if bytes[lineStart] == UInt8(ascii: "%") || isMarker(lineStart, UInt8(ascii: ".")) { return nil }
            if isMarker(lineStart, UInt8(ascii: "-")) {
                close(at: lineStart)
                pieceStart = lineStart
                pieceLine = line
                explicit = true
            }
            var next = lineStart
            while next < bytes.count && bytes[next] != 0x0a { next += 1 }
            lineStart = next + 1
            line += 1
        }
        close(at: bytes.count)
        return pieces
    }

    /// What the YAML parser found wrong, without its own positions (counted from the document's
    /// start, not the file's: the error's line says where).
    private static func yamlMessage(_ error: any Error) -> String {
        switch error as? YamlError {
        case .scanner(let context, let problem, _, _), .parser(let context, let problem, _, _), .composer(let context, let problem, _, _):
            return [context?.text, problem].compactMap { $0 }.joined(separator: ": ")
        default:
            return "\(error)".split(separator: "\n").prefix(3).joined(separator: " ")
        }
    }

    private static func yamlLine(_ error: any Error) -> Int? {
        switch error as? YamlError {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): return mark.line
        case .duplicatedKeysInMapping(_, let context): return context.mark.line
        default: return nil
        }
    }

    static let knownKinds = ["GatewayConfig", "ExternalService", "EgressPolicy", "Workload"]

    /// `Kind/name` or `Kind/namespace/name` read from the raw node, for errors raised before validation.
    static func objectLabel(_ node: Node) -> String? {
        func value(_ key: String, in node: Node?) -> Node? {
            node?.mapping?.first(where: { $0.key.scalar?.string == key })?.value
        }
        guard let kind = value("kind", in: node)?.scalar?.string else { return nil }
        let metadata = value("metadata", in: node)
        guard let name = value("name", in: metadata)?.scalar?.string else { return kind }
        guard kind == "EgressPolicy" || kind == "Workload" else { return "\(kind)/\(name)" }
        return "\(kind)/\(value("namespace", in: metadata)?.scalar?.string ?? "default")/\(name)"
    }

    static func objectMeta(_ fields: YAMLReader.Fields, namespaced: Bool, reader: YAMLReader) throws(ConfigError) -> ObjectMeta {
        let name = try fields.requiredString("name")
        if let problem = dnsLabelProblem(name, maxLength: 253, allowDots: true) {
            throw reader.error("metadata.name", fields.node("name"), problem)
        }
        var namespace = try fields.string("namespace")
        if let ns = namespace, let problem = dnsLabelProblem(ns, maxLength: 63, allowDots: false) {
            throw reader.error("metadata.namespace", fields.node("namespace"), problem)
        }
        if namespaced { namespace = namespace ?? "default" } else if namespace != nil {
            throw reader.error("metadata.namespace", fields.node("namespace"), "this kind is cluster-scoped and takes no namespace")
        }
        let labels = try fields.stringMap("labels")
        for (key, value) in labels {
            if let problem = LabelSyntax.keyProblem(key) ?? LabelSyntax.valueProblem(value) {
                throw reader.error("metadata.labels.\(key)", fields.node("labels"), problem)
            }
        }
        _ = fields.node("annotations"); _ = fields.node("uid"); _ = fields.node("resourceVersion")
        _ = fields.node("generation"); _ = fields.node("creationTimestamp")
        try fields.finish()
        return ObjectMeta(name: name, namespace: namespace, labels: labels)
    }

    /// RFC 1123 label (or subdomain, with dots): lower-case alphanumerics and '-'.
    /// Why a Workload with this identity would be refused (the same checks as for one in a file),
    /// or nil: for identities made from objects that were not read from a file (pods).
    public static func workloadIdentityProblem(name: String, namespace: String, serviceAccount: String, labels: [String: String]) -> String? {
        if let problem = dnsLabelProblem(name, maxLength: 253, allowDots: true) { return "metadata.name: \(problem)" }
        if let problem = dnsLabelProblem(namespace, maxLength: 63, allowDots: false) { return "metadata.namespace: \(problem)" }
        if let problem = dnsLabelProblem(serviceAccount, maxLength: 253, allowDots: true) { return "serviceAccount: \(problem)" }
        for (key, value) in labels {
            if let problem = LabelSyntax.keyProblem(key) ?? LabelSyntax.valueProblem(value) { return "labels.\(key): \(problem)" }
        }
        return nil
    }

    public static func dnsLabelProblem(_ name: String, maxLength: Int, allowDots: Bool) -> String? {
        let ok = !name.isEmpty && name.utf8.count <= maxLength
            && name.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d || (allowDots && $0 == 0x2e) }
            && name.first != "-" && name.last != "-" && name.first != "." && name.last != "." && !name.contains("..")
        return ok ? nil : "must be a lower-case RFC 1123 name (a-z, 0-9, '-'\(allowDots ? ", '.'" : ""), at most \(maxLength) characters), got '\(name)'"
    }

    static func readExternalService(_ spec: YAMLReader.Fields, meta: ObjectMeta) throws(ConfigError) -> ExternalService {
        let reader = spec.reader
        var hosts: [HostPattern] = []
        for (path, node) in try spec.list("hosts") {
            let text = try reader.string(node, path)
            do { hosts.append(try HostPattern(parsing: text)) } catch {
                switch error {
                case .invalidName(_, let problem): throw reader.error(path, node, "'\(text)' is not a valid host name: \(problem.explanation)")
                case .misplacedWildcard: throw reader.error(path, node, "'\(text)': a wildcard must be the whole first label, as in *.example.com")
                }
            }
        }
        var addresses: [CIDR] = []
        for (path, node) in try spec.list("addresses") {
            addresses.append(try cidr(try reader.string(node, path), path: path, node: node, reader: reader))
        }
        var ports: [ExternalService.Port] = []
        for (path, node) in try spec.list("ports") {
            let port = try YAMLReader.Fields(reader: reader, path: path, node: node)
            guard let number = try port.int("number", in: 1...65535) else { throw reader.error("\(path).number", node, "is required") }
            guard let proto = try port.enumeration("protocol", ExternalService.PortProtocol.self) else {
                throw reader.error("\(path).protocol", node, "is required (TLS, HTTP or TCP)")
            }
            let name = try port.string("name")
            let originate = try port.fields("originateTLS").map { fields throws(ConfigError) in try readOriginateTLS(fields) }
            let allowPlaintext = try port.bool("allowPlaintext") ?? false
            try port.finish()
            if ports.contains(where: { $0.number == number }) { throw reader.error("\(path).number", node, "port \(number) is listed twice") }
            if proto == .http {
                if originate == nil && !allowPlaintext {
                    throw reader.error("\(path).originateTLS", node,
                                       "an HTTP port needs originateTLS (the gateway speaks TLS to the service); plain text leaves only with allowPlaintext: true")
                }
                if originate != nil && allowPlaintext {
                    throw reader.error("\(path).allowPlaintext", node, "originateTLS and allowPlaintext exclude each other")
                }
            } else if originate != nil || allowPlaintext {
                throw reader.error("\(path).protocol", node, "originateTLS and allowPlaintext apply to protocol HTTP only")
            }
            ports.append(.init(number: number, protocol: proto, name: name, originateTLS: originate, allowPlaintext: allowPlaintext))
        }
        if ports.isEmpty { throw reader.error("spec.ports", spec.node, "at least one port is required") }
        let hasTLS = ports.contains { $0.protocol == .tls || $0.protocol == .http }, hasTCP = ports.contains { $0.protocol == .tcp }
        if hasTLS && hosts.isEmpty {
            throw reader.error("spec.hosts", spec.node, "TLS and HTTP ports need at least one host: the SNI or Host is checked against it")
        }
        if hasTCP && addresses.isEmpty {
            throw reader.error("spec.addresses", spec.node, "TCP ports need addresses: a TCP connection carries no name, so only listed addresses may be reached")
        }
        if hosts.isEmpty && addresses.isEmpty {
            throw reader.error("spec.hosts", spec.node, "at least one host (or, for TCP ports, addresses) is required")
        }
        let access = try spec.enumeration("access", ExternalService.Access.self) ?? .restricted
        var ech: ExternalService.ECH?
        if let tls = try spec.fields("tls") {
            ech = try tls.enumeration("ech", ExternalService.ECH.self)
            try tls.finish()
        }
        return ExternalService(metadata: meta, hosts: hosts, addresses: addresses, ports: ports, access: access, ech: ech)
    }

    static func readOriginateTLS(_ fields: YAMLReader.Fields) throws(ConfigError) -> ExternalService.OriginateTLS {
        let reader = fields.reader
        guard let port = try fields.int("port", in: 1...65535) else { throw reader.error(fields.child("port"), fields.node, "is required") }
        let file = try fields.string("caBundleFile"), inline = try fields.string("caBundle")
        if file != nil && inline != nil { throw reader.error(fields.child("caBundle"), fields.node, "give caBundleFile or caBundle, not both") }
        if let inline, !inline.contains("-----BEGIN CERTIFICATE-----") {
            throw reader.error(fields.child("caBundle"), fields.node("caBundle"), "must hold PEM certificates (-----BEGIN CERTIFICATE-----)")
        }
        let certificate = try fields.string("clientCertificateFile"), key = try fields.string("clientKeyFile")
        if (certificate == nil) != (key == nil) {
            throw reader.error(fields.child(certificate == nil ? "clientCertificateFile" : "clientKeyFile"), fields.node,
                               "clientCertificateFile and clientKeyFile go together")
        }
        var sni: String?
        if let text = try fields.string("sni") {
            switch HostName.normalize(text) {
            case .success(let name): sni = name
            case .failure(let problem): throw reader.error(fields.child("sni"), fields.node("sni"), "'\(text)' is not a host name: \(problem.explanation)")
            }
        }
        let minVersion = try fields.enumeration("minVersion", ExternalService.OriginateTLS.MinimumVersion.self) ?? .tls12
        try fields.finish()
        return .init(port: port, caBundle: file.map { .file($0) } ?? inline.map { .inline($0) },
                     clientCertificateFile: certificate, clientKeyFile: key, sni: sni, minVersion: minVersion)
    }

    static func readEgressPolicy(_ spec: YAMLReader.Fields, meta: ObjectMeta) throws(ConfigError) -> EgressPolicy {
        let reader = spec.reader
        let selector = try spec.fields("podSelector").map { fields throws(ConfigError) in try labelSelector(fields) } ?? .everything
        let serviceAccounts = try spec.stringList("serviceAccounts")
        for (index, account) in serviceAccounts.enumerated() where dnsLabelProblem(account, maxLength: 253, allowDots: true) != nil {
            throw reader.error("spec.serviceAccounts[\(index)]", spec.node, dnsLabelProblem(account, maxLength: 253, allowDots: true)!)
        }
        var rules: [EgressPolicy.Rule] = []
        for (path, node) in try spec.list("egress") {
            let rule = try YAMLReader.Fields(reader: reader, path: path, node: node)
            var names: [String] = []
            for (targetPath, targetNode) in try rule.list("to") {
                let target = try YAMLReader.Fields(reader: reader, path: targetPath, node: targetNode)
                guard let name = try target.string("externalService") else {
                    throw reader.error("\(targetPath).externalService", targetNode, "is required")
                }
                // The name of an ExternalService, so a name such an object can have: anything else
                // could only ever grant nothing, and would reach logs and conditions as written.
                if let problem = dnsLabelProblem(name, maxLength: 253, allowDots: true) {
                    throw reader.error("\(targetPath).externalService", targetNode, problem)
                }
                try target.finish()
                names.append(name)
            }
            if names.isEmpty { throw reader.error("\(path).to", node, "at least one externalService is required") }
            var ports: [Int] = []
            for (portPath, portNode) in try rule.list("ports") {
                guard let text = portNode.scalar?.string, let number = Int(text), (1...65535).contains(number) else {
                    throw reader.error(portPath, portNode, "must be a port number 1-65535")
                }
                ports.append(number)
            }
            try rule.finish()
            rules.append(.init(externalServices: names, ports: ports))
        }
        if rules.isEmpty { throw reader.error("spec.egress", spec.node, "at least one egress rule is required") }
        let mode = try spec.enumeration("mode", EgressPolicy.Mode.self) ?? .enforce
        return EgressPolicy(metadata: meta, podSelector: selector, serviceAccounts: serviceAccounts, egress: rules, mode: mode)
    }

    static func labelSelector(_ fields: YAMLReader.Fields) throws(ConfigError) -> LabelSelector {
        let reader = fields.reader
        let matchLabels = try fields.stringMap("matchLabels")
        for (key, value) in matchLabels {
            if let problem = LabelSyntax.keyProblem(key) ?? LabelSyntax.valueProblem(value) {
                throw reader.error("\(fields.path).matchLabels.\(key)", fields.node, problem)
            }
        }
        var expressions: [LabelSelector.Requirement] = []
        for (path, node) in try fields.list("matchExpressions") {
            let expression = try YAMLReader.Fields(reader: reader, path: path, node: node)
            let key = try expression.requiredString("key")
            if let problem = LabelSyntax.keyProblem(key) { throw reader.error("\(path).key", node, problem) }
            guard let op = try expression.enumeration("operator", LabelSelector.Operator.self) else {
                throw reader.error("\(path).operator", node, "is required (In, NotIn, Exists, DoesNotExist)")
            }
            let values = try expression.stringList("values")
            let needsValues = op == .in || op == .notIn
            if needsValues && values.isEmpty {
                throw reader.error("\(path).values", node, "must be non-empty for operator \(op.rawValue)")
            }
            if !needsValues && !values.isEmpty {
                throw reader.error("\(path).values", node, "must be empty for operator \(op.rawValue)")
            }
            try expression.finish()
            expressions.append(.init(key: key, operator: op, values: values))
        }
        try fields.finish()
        return LabelSelector(matchLabels: matchLabels, matchExpressions: expressions)
    }

    static func readWorkload(_ spec: YAMLReader.Fields, meta: ObjectMeta) throws(ConfigError) -> Workload {
        let reader = spec.reader
        var addresses: [CIDR] = []
        for (path, node) in try spec.list("addresses") {
            // `::ffff:10.0.0.5` is the IPv4 source it names: kept as `10.0.0.5`, as sources are
            // looked up, so that it matches, and claims what the IPv4 form would.
            addresses.append(try cidr(try reader.string(node, path), path: path, node: node, reader: reader).unmapped)
        }
        if addresses.isEmpty { throw reader.error("spec.addresses", spec.node, "at least one address or CIDR is required") }
        let serviceAccount = try spec.string("serviceAccount") ?? "default"
        if let problem = dnsLabelProblem(serviceAccount, maxLength: 253, allowDots: true) {
            throw reader.error("spec.serviceAccount", spec.node("serviceAccount"), problem)
        }
        let labels = try spec.stringMap("labels")
        for (key, value) in labels {
            if let problem = LabelSyntax.keyProblem(key) ?? LabelSyntax.valueProblem(value) {
                throw reader.error("spec.labels.\(key)", spec.node("labels"), problem)
            }
        }
        return Workload(metadata: meta, addresses: addresses, serviceAccount: serviceAccount, labels: labels)
    }

    static func cidr(_ text: String, path: String, node: Node?, reader: YAMLReader) throws(ConfigError) -> CIDR {
        do { return try CIDR(parsing: text) } catch {
            switch error {
            case .notAnAddress: throw reader.error(path, node, "'\(text)' is not an IP address or CIDR")
            case .badPrefix: throw reader.error(path, node, "'\(text)' has an invalid prefix length")
            case .hostBitsSet: throw reader.error(path, node, "'\(text)' has bits set beyond its prefix length")
            }
        }
    }

    /// Where each loaded object came from (document number and its root node), parallel to the
    /// arrays of ``PolicySource``, so cross-object errors can name document, field and line.
    struct ObjectLocations {
        var externalServices: [(document: Int, node: Node, lineOffset: Int)] = []
        var egressPolicies: [(document: Int, node: Node, lineOffset: Int)] = []
        var workloads: [(document: Int, node: Node, lineOffset: Int)] = []
    }

    /// The line of the node at a field path such as `spec.egress[0].to[1].externalService`
    /// (the key's line for a mapping field).
    static func line(of path: String, in root: Node?) -> Int? {
        var node = root
        var markNode = root
        for component in path.split(separator: ".") {
            let parts = component.split(separator: "[")
            guard let key = parts.first,
                  let pair = node?.mapping?.first(where: { $0.key.scalar?.string == String(key) }) else { return markNode?.mark?.line }
            node = pair.value
            markNode = pair.key
            for index in parts.dropFirst() {
                guard let i = Int(index.dropLast()), let sequence = node?.sequence, sequence.indices.contains(i) else {
                    return markNode?.mark?.line
                }
                node = sequence[i]
                markNode = node
            }
        }
        return markNode?.mark?.line
    }

    /// Checks between objects: unique names, references that resolve, unambiguous inventory.
    static func crossCheck(_ source: PolicySource, file: String, locations: ObjectLocations = ObjectLocations()) -> [ConfigError] {
        var errors: [ConfigError] = []
        func located(_ list: [(document: Int, node: Node, lineOffset: Int)], _ index: Int, object: String, field: String, reason: String) -> ConfigError {
            let location = list.indices.contains(index) ? list[index] : nil
            return ConfigError(file: file, document: location?.document, object: object, field: field,
                               line: line(of: field, in: location?.node).map { $0 + (location?.lineOffset ?? 0) }, reason: reason)
        }
        var services: [String: ExternalService] = [:]
        for (serviceIndex, service) in source.externalServices.enumerated() {
            if services[service.name] != nil {
                errors.append(located(locations.externalServices, serviceIndex, object: "ExternalService/\(service.name)",
                                      field: "metadata.name", reason: "another ExternalService has the same name"))
            }
            services[service.name] = service
        }
        var policyNames = Set<String>()
        for (policyIndex, policy) in source.egressPolicies.enumerated() {
            let object = "EgressPolicy/\(policy.metadata.qualifiedName)"
            if !policyNames.insert(policy.metadata.qualifiedName).inserted {
                errors.append(located(locations.egressPolicies, policyIndex, object: object, field: "metadata.name",
                                      reason: "another EgressPolicy has the same namespace and name"))
            }
            for (ruleIndex, rule) in policy.egress.enumerated() {
                for (targetIndex, name) in rule.externalServices.enumerated() {
                    guard let service = services[name] else {
                        errors.append(located(locations.egressPolicies, policyIndex, object: object,
                                              field: "spec.egress[\(ruleIndex)].to[\(targetIndex)].externalService",
                                              reason: "no ExternalService named '\(name)'"))
                        continue
                    }
                    for port in rule.ports where !service.ports.contains(where: { $0.number == port }) {
                        errors.append(located(locations.egressPolicies, policyIndex, object: object, field: "spec.egress[\(ruleIndex)].ports",
                                              reason: "ExternalService '\(name)' has no port \(port)"))
                    }
                }
            }
        }
        var workloadNames = Set<String>()
        var claimed: [CIDR: String] = [:]
        for (workloadIndex, workload) in source.workloads.enumerated() {
            let object = "Workload/\(workload.metadata.qualifiedName)"
            if !workloadNames.insert(workload.metadata.qualifiedName).inserted {
                errors.append(located(locations.workloads, workloadIndex, object: object, field: "metadata.name",
                                      reason: "another Workload has the same namespace and name"))
            }
            for (addressIndex, address) in workload.addresses.enumerated() {
                if let other = claimed[address] {
                    errors.append(located(locations.workloads, workloadIndex, object: object, field: "spec.addresses[\(addressIndex)]",
                                          reason: "\(address) is already claimed by Workload \(other): a source must have one identity"))
                }
                claimed[address] = workload.metadata.qualifiedName
            }
        }
        return errors
    }
}
