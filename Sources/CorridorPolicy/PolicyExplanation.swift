/// The answer to "may this source reach this destination, and by which rule?", computed by the
/// same `DecisionEngine` call the data plane makes, with what led to it: the services whose
/// patterns match and which one the engine considered, every EgressPolicy of the source's namespace
/// and why it does or does not select the source, and, for a refusal, the change that would allow
/// it (``PolicyHint``). What `corridor explain` prints and the admin API's `/explain` returns.
public struct PolicyExplanation: Sendable {
    /// How the connection reaches the gateway.
    public enum Via: String, Sendable, CaseIterable {
        /// TLS on the tls listener (or redirected to it): the SNI decides.
        case tls
        /// The CONNECT listener: `CONNECT host:port`, then a ClientHello naming the same host.
        case connect
        /// Plain HTTP on the http listener: the Host decides, TLS is originated.
        case http
        /// A redirected plain-TCP connection: the address and port dialled decide.
        case tcp
    }

    /// Who asks.
    public enum Source: Sendable, Equatable {
        /// An identity given as such (namespace, service account, labels).
        case identity(SourceIdentity)
        /// A source address, looked up in the inventory (Workloads; pods in Kubernetes mode).
        case address(IPAddress)
        /// A workload (a pod, in Kubernetes mode) by namespace and name.
        case workload(namespace: String, name: String)
    }

    public struct Query: Sendable, Equatable {
        public var source: Source
        public var host: String
        public var port: Int?
        public var via: Via
        public var ech: Bool

        public init(source: Source, host: String, port: Int?, via: Via, ech: Bool = false) {
            self.source = source
            self.host = host
            self.port = port
            self.via = via
            self.ech = ech
        }

        /// The parameters of a query, as each way of asking spells them.
        public enum Parameter: Sendable {
            case namespace, serviceAccount, label, sourceIP, pod, to, via, ech
        }

        /// How a way of asking spells the parameters: the command line's flags, the admin API's
        /// query parameters, a policy test case's fields.
        public enum Spelling: Sendable {
            case commandLine, adminQuery, testCase

            public func callAsFunction(_ parameter: Parameter) -> String {
                switch (self, parameter) {
                case (.commandLine, .namespace): return "--namespace"
                case (.commandLine, .serviceAccount): return "--service-account"
                case (.commandLine, .label): return "--label"
                case (.commandLine, .sourceIP): return "--source-ip"
                case (.commandLine, .pod): return "--pod"
                case (.commandLine, .to): return "--to"
                case (.commandLine, .via): return "--via"
                case (.commandLine, .ech): return "--ech"
                case (.adminQuery, .namespace): return "namespace"
                case (.adminQuery, .serviceAccount): return "serviceAccount"
                case (.adminQuery, .label): return "label"
                case (.adminQuery, .sourceIP): return "sourceIP"
                case (.adminQuery, .pod): return "pod"
                case (.adminQuery, .to): return "to"
                case (.adminQuery, .via): return "via"
                case (.adminQuery, .ech): return "ech"
                case (.testCase, .namespace): return "source.namespace"
                case (.testCase, .serviceAccount): return "source.serviceAccount"
                case (.testCase, .label): return "source.labels"
                case (.testCase, .sourceIP): return "source.ip"
                case (.testCase, .pod): return "source.pod"
                case (.testCase, .to): return "to"
                case (.testCase, .via): return "via"
                case (.testCase, .ech): return "ech"
                }
            }
        }

        /// A query from the words of the command line, the admin API's parameters or a test
        /// case's fields; throws a sentence naming the parameter that is wrong, as `spelling`
        /// spells it.
        public static func parse(namespace: String?, serviceAccount: String?, labels: [String], sourceIP: String?, pod: String?,
                                 to: String?, via: String?, ech: Bool, spelling n: Spelling = .commandLine) throws(QueryError) -> Query {
            let given = [namespace != nil, sourceIP != nil, pod != nil].filter { $0 }.count
            guard given == 1 else {
                throw QueryError("give exactly one source: \(n(.namespace)) (with \(n(.serviceAccount)), \(n(.label))), \(n(.sourceIP)) or \(n(.pod))")
            }
            let source: Source
            if let namespace {
                guard ConfigLoader.dnsLabelProblem(namespace, maxLength: 63, allowDots: false) == nil else { throw QueryError("\(n(.namespace)): '\(namespace)' is not a namespace name") }
                var parsed: [String: String] = [:]
                for label in labels {
                    let parts = label.split(separator: "=", maxSplits: 1).map(String.init)
                    guard parts.count == 2, !parts[0].isEmpty else { throw QueryError("\(n(.label)): '\(label)' is not key=value") }
                    parsed[parts[0]] = parts[1]
                }
                source = .identity(SourceIdentity(namespace: namespace, workload: "", serviceAccount: serviceAccount ?? "default", labels: parsed))
            } else if let sourceIP {
                guard serviceAccount == nil, labels.isEmpty else { throw QueryError("\(n(.serviceAccount)) and \(n(.label)) go with \(n(.namespace)), not \(n(.sourceIP))") }
                guard let ip = IPAddress(parsing: sourceIP) else { throw QueryError("\(n(.sourceIP)): '\(sourceIP)' is not an IP address") }
                source = .address(ip)
            } else {
                guard serviceAccount == nil, labels.isEmpty else { throw QueryError("\(n(.serviceAccount)) and \(n(.label)) go with \(n(.namespace)), not \(n(.pod))") }
                let parts = (pod ?? "").split(separator: "/").map(String.init)
                guard parts.count == 2 else { throw QueryError("\(n(.pod)): '\(pod ?? "")' is not NAMESPACE/NAME") }
                source = .workload(namespace: parts[0], name: parts[1])
            }
            guard let to, !to.isEmpty else { throw QueryError("\(n(.to)) HOST[:PORT] is required") }
            var host = to
            var port: Int?
            if let colon = to.lastIndex(of: ":"), !to.hasSuffix("]"), to.filter({ $0 == ":" }).count == 1 {
                let text = to[to.index(after: colon)...]
                guard let number = Int(text), (1...65535).contains(number) else { throw QueryError("\(n(.to)): '\(to)' has no valid port") }
                port = number
                host = String(to[..<colon])
            } else if to.hasPrefix("["), let close = to.firstIndex(of: "]") {
                host = String(to[to.index(after: to.startIndex)..<close])
                let rest = to[to.index(after: close)...]
                if rest.hasPrefix(":") {
                    guard let number = Int(rest.dropFirst()), (1...65535).contains(number) else { throw QueryError("\(n(.to)): '\(to)' has no valid port") }
                    port = number
                }
            }
            guard let mode = Via(rawValue: via ?? "tls") else { throw QueryError("\(n(.via)): '\(via ?? "")' is not one of tls, connect, http, tcp") }
            if mode == .tcp {
                guard IPAddress(parsing: host) != nil else { throw QueryError("\(n(.to)): with \(n(.via)) tcp the destination is an IP address, got '\(host)'") }
                guard port != nil else { throw QueryError("\(n(.to)): with \(n(.via)) tcp a port is required (ADDRESS:PORT)") }
            } else {
                switch HostName.normalize(host) {
                case .success(let name): host = name
                case .failure(let problem): throw QueryError("\(n(.to)): '\(host)' is not a host name: \(problem.explanation)")
                }
            }
            if ech && mode != .tls && mode != .connect { throw QueryError("\(n(.ech)) applies to \(n(.via)) tls or connect") }
            return Query(source: source, host: host, port: port, via: mode, ech: ech)
        }
    }

    public struct QueryError: Error, Sendable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// A service whose host pattern matches the name.
    public struct ServiceMatch: Sendable, Equatable {
        public var service: String
        public var pattern: String
        /// Among the most specific pattern's services: the only ones the engine looks at.
        public var considered: Bool
        public var why: String
    }

    /// An EgressPolicy of the source's namespace.
    public struct PolicyStatus: Sendable, Equatable {
        public var name: String
        public var mode: EgressPolicy.Mode
        public var selects: Bool
        public var why: String
        /// `service` or `service (ports 443, 8443)`, per rule.
        public var grants: [String]
    }

    public var query: Query
    public var decision: Decision
    /// The identity judged; nil for an unknown source.
    public var identity: SourceIdentity?
    public var source: String
    public var destination: String
    public var matches: [ServiceMatch]
    public var policies: [PolicyStatus]
    public var hint: PolicyHint?
    public var generation: Int
    public var mode: GatewayConfig.Mode

    /// 0 allowed, 1 denied or let through only by audit.
    public var exitCode: Int32 { decision.verdict == .allow ? 0 : 1 }

    public static func make(_ query: Query, snapshot: PolicySnapshot) throws(QueryError) -> PolicyExplanation {
        let identity: SourceIdentity?
        let address: IPAddress
        let sourceText: String
        switch query.source {
        case .identity(let given):
            identity = given
            address = IPAddress(parsing: "192.0.2.1")!  // not looked up: the identity is given
            sourceText = "\(given.namespace) (service account \(given.serviceAccount)\(given.labels.isEmpty ? "" : ", labels \(Self.labels(given.labels))"))"
        case .address(let ip):
            identity = snapshot.inventory.identity(of: ip)
            address = ip
            sourceText = identity.map { "\(ip): \(Self.describe($0))" } ?? "\(ip): unknown source (no Workload or pod claims it; spec.unknownSources: \(snapshot.gateway.unknownSources.rawValue))"
        case .workload(let namespace, let name):
            guard let workload = snapshot.source.workloads.first(where: { ($0.metadata.namespace ?? "default") == namespace && $0.metadata.name == name }) else {
                throw QueryError("--pod: no pod or Workload \(namespace)/\(name) is known to the gateway")
            }
            identity = workload.identity
            address = workload.addresses.first?.address ?? IPAddress(parsing: "192.0.2.1")!
            sourceText = Self.describe(workload.identity)
        }
        let sourceAddress = address.description
        let decision: Decision
        let destination: PolicyHint.Destination
        var destinationText: String
        switch query.via {
        case .tcp:
            let ip = IPAddress(parsing: query.host)!.unmapped
            let port = query.port!
            destination = .tcp(address: ip, port: port)
            destinationText = "TCP \(ip) port \(port) (a redirected connection)"
            decision = DecisionEngine.decideTCP(source: identity, sourceAddress: sourceAddress, destination: ip, port: port, snapshot: snapshot)
                ?? .deny("no ExternalService serves TCP \(ip) port \(port): a connection redirected there is read as TLS and judged by its SNI (--via tls)",
                         port: port)
        case .tls, .connect, .http:
            let facts: DestinationFacts
            switch query.via {
            case .connect:
                facts = DestinationFacts(serverName: query.host, connectHost: query.host, port: query.port ?? 443, hasECH: query.ech)
                destinationText = "CONNECT \(query.host):\(query.port ?? 443), SNI \(query.host)"
            case .http:
                facts = DestinationFacts(connectHost: query.host, port: query.port ?? 80, kind: .http)
                destinationText = "plain HTTP to \(query.host):\(query.port ?? 80)"
            default:
                facts = DestinationFacts(serverName: query.host, port: query.port, hasECH: query.ech)
                destinationText = query.port.map { "SNI \(query.host), port \($0) (a redirected connection)" }
                    ?? "SNI \(query.host) on the tls listener (port: the service's, or spec.tls.upstreamPort \(snapshot.gateway.tls.upstreamPort))"
            }
            if query.ech { destinationText += ", with Encrypted Client Hello" }
            destination = .name(facts)
            decision = DecisionEngine.decide(source: identity, sourceAddress: sourceAddress, facts: facts, snapshot: snapshot)
        }
        let matches = query.via == .tcp ? tcpMatches(query, snapshot: snapshot) : nameMatches(query.host, snapshot: snapshot)
        var policies: [PolicyStatus] = []
        if let identity {
            for policy in snapshot.source.egressPolicies where policy.namespace == identity.namespace {
                policies.append(status(of: policy, for: identity))
            }
        }
        let hint = PolicyHint.make(for: decision, to: destination, identity: identity, address: identity == nil ? address : nil, snapshot: snapshot)
        return PolicyExplanation(query: query, decision: decision, identity: identity, source: sourceText, destination: destinationText,
                                 matches: matches, policies: policies, hint: hint, generation: snapshot.generation, mode: snapshot.gateway.mode)
    }

    /// Every (service, pattern) that matches `host`, most specific first, and whether the engine
    /// considered it (only the most specific pattern's services are).
    static func nameMatches(_ host: String, snapshot: PolicySnapshot) -> [ServiceMatch] {
        var found: [(service: ExternalService, index: Int, pattern: HostPattern)] = []
        for (index, service) in snapshot.source.externalServices.enumerated() {
            for pattern in service.hosts where pattern.matches(host) { found.append((service, index, pattern)) }
        }
        func rank(_ pattern: HostPattern) -> Int {
            switch pattern {
            case .exact: return Int.max
            case .wildcard(let suffix): return suffix.utf8.count
            }
        }
        found.sort { rank($0.pattern) > rank($1.pattern) }
        var considered = Set<Int>()
        if let candidates = snapshot.routes.candidates(host) {
            for position in 0..<snapshot.routes.count(candidates) { considered.insert(snapshot.routes.service(candidates, position)) }
        }
        let winner = found.first?.pattern
        return found.map { match in
            let taken = considered.contains(match.index) && match.pattern == winner
            let why: String
            if taken {
                if case .exact = match.pattern { why = "the exact name: the most specific pattern" } else { why = "the most specific pattern that matches" }
            } else {
                why = "less specific than \(winner?.description ?? "?"), which decides"
            }
            return ServiceMatch(service: match.service.name, pattern: match.pattern.description, considered: taken, why: why)
        }
    }

    static func tcpMatches(_ query: Query, snapshot: PolicySnapshot) -> [ServiceMatch] {
        guard let ip = IPAddress(parsing: query.host)?.unmapped, let port = query.port else { return [] }
        return snapshot.source.externalServices.compactMap { service in
            guard let range = service.addresses.first(where: { $0.contains(ip) }) else { return nil }
            let serves = service.ports.contains { $0.protocol == .tcp && $0.number == port }
            return ServiceMatch(service: service.name, pattern: range.description, considered: serves,
                                why: serves ? "lists \(range) with TCP port \(port)" : "lists \(range), but has no TCP port \(port)")
        }
    }

    static func status(of policy: EgressPolicy, for identity: SourceIdentity) -> PolicyStatus {
        let why: String
        if !policy.serviceAccounts.isEmpty && !policy.serviceAccounts.contains(identity.serviceAccount) {
            why = "requires service account \(policy.serviceAccounts.joined(separator: " or ")); the source's is \(identity.serviceAccount)"
        } else if !policy.podSelector.matches(identity.labels) {
            why = "podSelector \(policy.podSelector.summary) does not match labels \(identity.labels.isEmpty ? "(none)" : labels(identity.labels))"
        } else {
            why = "selects the source (podSelector \(policy.podSelector.summary)"
                + (policy.serviceAccounts.isEmpty ? ")" : ", service account \(identity.serviceAccount))")
        }
        let grants = policy.egress.flatMap { rule in
            rule.externalServices.map { rule.ports.isEmpty ? $0 : "\($0) (ports \(rule.ports.map(String.init).joined(separator: ", ")))" }
        }
        return PolicyStatus(name: policy.metadata.qualifiedName, mode: policy.mode, selects: policy.selects(identity), why: why, grants: grants)
    }

    static func labels(_ labels: [String: String]) -> String {
        labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }

    static func describe(_ identity: SourceIdentity) -> String {
        "\(identity.namespace)/\(identity.workload) (service account \(identity.serviceAccount)\(identity.labels.isEmpty ? "" : ", labels \(labels(identity.labels))"))"
    }

    // MARK: output

    /// For a person.
    public var text: String {
        var lines: [String] = []
        lines.append("verdict: \(decision.verdict.rawValue)" + (mode == .audit ? " (the gateway is in Audit mode)" : ""))
        lines.append("reason: \(decision.reason)")
        if let service = decision.externalService { lines.append("external service: \(service)") }
        if let policy = decision.egressPolicy { lines.append("egress policy: \(policy)") }
        lines.append("source: \(source)")
        lines.append("destination: \(destination)")
        if matches.isEmpty {
            lines.append(query.via == .tcp ? "services listing the address: none" : "services matching \(query.host): none")
        } else {
            lines.append(query.via == .tcp ? "services listing the address:" : "services matching \(query.host):")
            for match in matches { lines.append("  \(match.considered ? "*" : "-") \(match.service) (\(match.pattern)): \(match.why)") }
        }
        if let identity {
            if policies.isEmpty {
                lines.append("EgressPolicies in \(identity.namespace): none")
            } else {
                lines.append("EgressPolicies in \(identity.namespace):")
                for policy in policies {
                    let mode = policy.mode == .audit ? " [Audit]" : ""
                    lines.append("  \(policy.selects ? "*" : "-") \(policy.name)\(mode): \(policy.why); grants \(policy.grants.isEmpty ? "nothing" : policy.grants.joined(separator: ", "))")
                }
            }
        }
        if let hint {
            lines.append("to allow it: \(hint.text)")
            if !hint.changes.isEmpty {
                lines.append("")
                lines.append("# The objects that would allow it (apply, or merge into your policy; `corridor check` accepts them):")
                lines.append(ResourceYAML.file(hint.changes.map { change in
                    "# \(change.isNew ? "new" : "changed"): \(change.object)\n" + change.yaml
                }).trimmingTrailingNewlines())
            }
        }
        return lines.joined(separator: "\n")
    }

    /// For scripts: one JSON object (with `text` as printed for a person).
    public var json: String {
        var object = JSONObjectText()
        object.string("verdict", decision.verdict.rawValue)
        object.string("reason", decision.reason)
        object.optional("externalService", decision.externalService)
        object.optional("egressPolicy", decision.egressPolicy)
        object.number("port", decision.port)
        object.string("mode", mode.rawValue)
        object.number("policyGeneration", generation)
        object.number("exitCode", Int(exitCode))
        object.string("source", source)
        if let identity {
            var who = JSONObjectText()
            who.string("namespace", identity.namespace)
            who.string("workload", identity.workload)
            who.string("serviceAccount", identity.serviceAccount)
            var labels = JSONObjectText()
            for (key, value) in identity.labels.sorted(by: { $0.key < $1.key }) { labels.string(key, value) }
            who.raw("labels", labels.text)
            object.raw("identity", who.text)
        }
        object.string("destination", destination)
        object.raw("matches", "[" + matches.map { match in
            var m = JSONObjectText()
            m.string("externalService", match.service)
            m.string("pattern", match.pattern)
            m.bool("considered", match.considered)
            m.string("why", match.why)
            return m.text
        }.joined(separator: ",") + "]")
        object.raw("egressPolicies", "[" + policies.map { policy in
            var p = JSONObjectText()
            p.string("name", policy.name)
            p.string("mode", policy.mode.rawValue)
            p.bool("selects", policy.selects)
            p.string("why", policy.why)
            p.raw("grants", "[" + policy.grants.map(JSONObjectText.quote).joined(separator: ",") + "]")
            return p.text
        }.joined(separator: ",") + "]")
        if let hint {
            var h = JSONObjectText()
            h.string("text", hint.text)
            h.string("yaml", ResourceYAML.file(hint.changes.map(\.yaml)))
            h.raw("objects", "[" + hint.changes.map { JSONObjectText.quote("\($0.isNew ? "new" : "changed") \($0.object)") }.joined(separator: ",") + "]")
            object.raw("hint", h.text)
        }
        object.string("text", text)
        return object.text
    }
}

/// A JSON object written as text, keys in the order given (no Foundation in this target).
struct JSONObjectText {
    private var parts: [String] = []

    mutating func string(_ key: String, _ value: String) { parts.append("\(Self.quote(key)):\(Self.quote(value))") }
    mutating func optional(_ key: String, _ value: String?) { if let value { string(key, value) } }
    mutating func number(_ key: String, _ value: Int?) { if let value { parts.append("\(Self.quote(key)):\(value)") } }
    mutating func bool(_ key: String, _ value: Bool) { parts.append("\(Self.quote(key)):\(value)") }
    mutating func raw(_ key: String, _ json: String) { parts.append("\(Self.quote(key)):\(json)") }

    var text: String { "{" + parts.joined(separator: ",") + "}" }

    /// A double-quoted string that reads the same as JSON and as YAML (ResourceYAML uses it too):
    /// control characters, DEL, the C1 controls and the two non-characters YAML refuses raw are
    /// escaped as `\uXXXX`; everything else is written as it is.
    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value) || scalar.value == 0xfffe || scalar.value == 0xffff {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

extension String {
    fileprivate func trimmingTrailingNewlines() -> String {
        var out = self
        while out.hasSuffix("\n") { out.removeLast() }
        return out
    }
}
