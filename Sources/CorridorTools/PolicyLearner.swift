import CorridorPolicy

/// `corridor learn`: turns what workloads were seen to do (access records, ideally written under
/// `spec.mode: Audit`) into a least-privilege policy proposal: ExternalServices for the exact
/// names and ports used (TCP services by address), and one EgressPolicy per workload group
/// (namespace plus its most stable label, `app.kubernetes.io/name` or `app`, else its service
/// account) granting what the group used, each object annotated with its evidence.
///
/// Each distinct (workload group, destination) is planned with the gateway's own engine: if the
/// policy so far refuses it, the ``PolicyHint`` that would allow it is applied, and the engine
/// must then allow it. So the proposal allows every connection learned from, by construction,
/// and with `--merge` it only adds what the existing policy lacks. Never learned: denials, what a
/// destination guard refused, names that did not resolve, and unknown sources (reported as things
/// to fix).
public struct PolicyLearner {
    public struct Options: Sendable {
        public var since: String?
        public var until: String?
        public var namespace: String?
        /// Collapse this many or more sibling names under their parent into `*.parent`.
        public var wildcardThreshold: Int?
        public var publicSuffixes: PublicSuffixList

        public init(since: String? = nil, until: String? = nil, namespace: String? = nil, wildcardThreshold: Int? = nil,
                    publicSuffixes: PublicSuffixList) {
            self.since = since
            self.until = until
            self.namespace = namespace
            self.wildcardThreshold = wildcardThreshold
            self.publicSuffixes = publicSuffixes
        }
    }

    /// Where a learned connection went.
    enum Destination: Hashable, Comparable {
        case name(host: String, port: Int, http: Bool, ech: Bool)
        case tcp(address: String, port: Int)

        static func < (lhs: Destination, rhs: Destination) -> Bool { "\(lhs)" < "\(rhs)" }
    }

    /// A workload as policy sees it (the pod name does not matter).
    struct Source: Hashable, Comparable {
        var namespace: String
        var serviceAccount: String
        var labels: [String: String]

        var identity: SourceIdentity { SourceIdentity(namespace: namespace, workload: "", serviceAccount: serviceAccount, labels: labels) }
        var key: String { "\(namespace)|\(serviceAccount)|\(labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","))" }

        static func < (lhs: Source, rhs: Source) -> Bool { lhs.key < rhs.key }
    }

    struct Evidence {
        var connections = 0
        var first = ""
        var last = ""

        mutating func add(_ time: String, count: Int = 1) {
            connections += count
            if first.isEmpty || time < first { first = time }
            if time > last { last = time }
        }

        mutating func merge(_ other: Evidence) {
            connections += other.connections
            if first.isEmpty || (!other.first.isEmpty && other.first < first) { first = other.first }
            if other.last > last { last = other.last }
        }

        var text: String { "\(connections) connection\(connections == 1 ? "" : "s"), first \(first), last \(last)" }
    }

    public let options: Options
    private let since: String?
    private let until: String?
    private var observed: [Source: [Destination: Evidence]] = [:]
    private(set) var records = 0
    private(set) var learned = 0
    private var period = Evidence()
    private var denied = 0
    /// Connections the policy refused but let through under Audit mode.
    private var audited = 0
    private var guarded = 0
    /// Connections whose name did not resolve, per name: a grant would allow nothing that works,
    /// and the names are often typos or generated ones.
    private var unresolved: [String: Int] = [:]
    private var unknownSources: [String: Int] = [:]
    private var unusable = 0
    private var interim = 0

    public init(options: Options) throws(AccessLogReader.Failure) {
        self.options = options
        (since, until) = try AccessLogEntry.period(since: options.since, until: options.until)
    }

    /// Guard refusals: not policy, never learned.
    static let guardCauses: Set<String> = ["destination_blocked", "invalid_client_hello", "invalid_connect_request"]
    /// The close cause of a connection whose name did not resolve.
    static let resolveFailed = "resolve_failed"

    /// Takes one access-log line.
    public mutating func add(line: Substring) {
        guard !line.allSatisfy(\.isWhitespace) else { return }
        let parsed = AccessLogEntry.parse(line)
        if case .failure(.interim) = parsed {
            interim += 1
            return
        }
        records += 1
        guard case .success(let entry) = parsed else {
            unusable += 1
            return
        }
        if let since, entry.time < since { return }
        if let until, entry.time >= until { return }
        if let namespace = options.namespace, entry.identity?.namespace != namespace { return }
        if entry.decision == .audit { audited += 1 }
        if entry.decision == .deny {
            if Self.guardCauses.contains(entry.closeCause) { guarded += 1 } else { denied += 1 }
            return
        }
        if Self.guardCauses.contains(entry.closeCause) {
            guarded += 1
            return
        }
        if entry.closeCause == Self.resolveFailed {
            unresolved[entry.connectHost ?? entry.sni ?? entry.host ?? "?", default: 0] += 1
            return
        }
        guard let identity = entry.identity else {
            unknownSources[entry.sourceAddress, default: 0] += 1
            return
        }
        guard let destination = Self.destination(of: entry) else {
            unusable += 1
            return
        }
        let source = Source(namespace: identity.namespace, serviceAccount: identity.serviceAccount, labels: identity.labels)
        observed[source, default: [:]][destination, default: Evidence()].add(entry.time)
        period.add(entry.time)
        learned += 1
    }

    static func destination(of entry: AccessLogEntry) -> Destination? {
        // A plain-HTTP request: on the http listener, or absolute-form on the connect listener
        // (an http_proxy client); its record has a Host and neither an SNI nor a CONNECT host.
        if let host = entry.host, entry.sni == nil, entry.connectHost == nil {
            return .name(host: host, port: entry.port ?? 80, http: true, ech: false)
        }
        if let host = entry.connectHost ?? entry.sni, let port = entry.port {
            return .name(host: host, port: port, http: false, ech: entry.ech)
        }
        if let original = entry.originalDestination, let colon = original.lastIndex(of: ":"), let port = Int(original[original.index(after: colon)...]) {
            var address = String(original[..<colon])
            if address.hasPrefix("[") && address.hasSuffix("]") { address = String(address.dropFirst().dropLast()) }
            guard IPAddress(parsing: address) != nil else { return nil }
            return .tcp(address: address, port: port)
        }
        return nil
    }

    /// The 20 keys seen most (ties by name) with their counts, `", ..."` after them if there are more.
    static func mostSeen(_ counts: [String: Int]) -> String {
        let top = counts.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }.prefix(20)
        return top.map { "\($0.key) (\($0.value))" }.joined(separator: ", ") + (counts.count > 20 ? ", ..." : "")
    }

    /// What could not be learned, as lines for standard error.
    public var notes: [String] {
        var lines = ["corridor learn: \(records) records read, \(learned) learned from, \(observed.values.reduce(0) { $0 + $1.count }) distinct (workload, destination) pairs"]
        if denied > 0 {
            // A gateway in Audit mode lets through everything the policy would refuse: what it
            // still denied is a guard's refusal (an SNI that is not the CONNECT host, say).
            lines.append(audited > 0
                ? "not learned: \(denied) denied connections, refused in Audit mode too (an SNI that is not the CONNECT host, no name at all): no policy allows those"
                : "not learned: \(denied) denied connections (run the gateway with spec.mode: Audit to learn what the policy refuses)")
        }
        if guarded > 0 { lines.append("not learned: \(guarded) connections a destination guard refused (blocked ranges, malformed hellos): no policy allows those") }
        if !unresolved.isEmpty {
            lines.append("not learned: \(unresolved.values.reduce(0, +)) connections to \(unresolved.count) name(s) that did not resolve (typos, retired "
                + "or generated names; a grant would allow nothing that works): " + Self.mostSeen(unresolved))
        }
        if !unknownSources.isEmpty {
            lines.append("not learned: \(unknownSources.values.reduce(0, +)) connections from \(unknownSources.count) unknown source(s); add a Workload for each "
                + "(file mode) or check the pod inventory (Running pods with IPs of their own): " + Self.mostSeen(unknownSources))
        }
        if unusable > 0 { lines.append("skipped: \(unusable) lines that are not access records or name no destination") }
        if interim > 0 { lines.append("skipped: \(interim) interim records (each connection is learned from its close record)") }
        return lines
    }

    /// The proposal: YAML documents to add to `base` (an existing policy with `--merge`, else an
    /// empty one), and lines about what could not be proposed.
    public func propose(base: PolicySource) -> (yaml: String, problems: [String]) {
        var working = base
        working.gateway.mode = .enforce
        var problems: [String] = []
        let pairs = observed.sorted { $0.key < $1.key }.flatMap { source, destinations in
            destinations.sorted { $0.key < $1.key }.map { (source: source, destination: $0.key, evidence: $0.value) }
        }
        if let threshold = options.wildcardThreshold {
            addWildcards(threshold: threshold, pairs: pairs.map(\.destination), to: &working)
        }
        var snapshot = PolicySnapshot(source: working, generation: 1)
        for pair in pairs {
            let decision = Self.decide(pair.destination, for: pair.source.identity, snapshot: snapshot)
            if decision.verdict == .allow { continue }
            guard let hint = PolicyHint.make(for: decision, to: Self.hintDestination(pair.destination), identity: pair.source.identity,
                                             address: nil, snapshot: snapshot),
                  !hint.changes.isEmpty else {
                problems.append("cannot propose \(Self.describe(pair.destination)) for \(pair.source.identity.summary): \(decision.reason)")
                continue
            }
            for change in hint.changes { change.apply(to: &working) }
            snapshot = PolicySnapshot(source: working, generation: snapshot.generation + 1)
            let again = Self.decide(pair.destination, for: pair.source.identity, snapshot: snapshot)
            if again.verdict != .allow {
                problems.append("the proposal does not allow \(Self.describe(pair.destination)) for \(pair.source.identity.summary): \(again.reason)")
            }
        }
        // Evidence, by the object that now decides each pair.
        var byService: [String: Evidence] = [:]
        var byPolicy: [String: Evidence] = [:]
        var hostsByService: [String: Set<String>] = [:]
        for pair in pairs {
            let decision = Self.decide(pair.destination, for: pair.source.identity, snapshot: snapshot)
            if let service = decision.externalService {
                byService[service, default: Evidence()].merge(pair.evidence)
                if case .name(let host, _, _, _) = pair.destination { hostsByService[service, default: []].insert(host) }
            }
            if let policy = decision.egressPolicy { byPolicy[policy, default: Evidence()].merge(pair.evidence) }
        }
        var documents: [String] = []
        let header = ["Proposed by corridor learn from \(learned) connections, \(period.first) to \(period.last).",
                      "Review before applying: every grant below was used; nothing else is. Wildcards: "
                        + (options.wildcardThreshold.map { "\($0) or more sibling names collapsed, never under a public suffix (\(options.publicSuffixes.origin))" } ?? "none (--wildcard-threshold)")]
        let baseServices = Dictionary(base.externalServices.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for service in working.externalServices where baseServices[service.name] != service {
            var comments = documents.isEmpty ? header : []
            let isNew = baseServices[service.name] == nil
            comments.append(isNew ? "new ExternalService" : "changed ExternalService (the whole object as it would be)")
            if let hosts = hostsByService[service.name], service.hosts.contains(where: { if case .wildcard = $0 { return true } else { return false } }) {
                comments.append("names seen: " + hosts.sorted().joined(separator: ", "))
            }
            if service.ech == .allow && baseServices[service.name]?.ech != .allow {
                comments.append("ech: Allow because the clients sent Encrypted Client Hello (Chromium-family clients always do); keep it only if "
                    + "the service is not on a shared ECH front")
            }
            documents.append(ResourceYAML.render(service, comments: comments, annotations: Self.annotations(byService[service.name])))
        }
        let basePolicies = Dictionary(base.egressPolicies.map { ($0.metadata.qualifiedName, $0) }, uniquingKeysWith: { first, _ in first })
        for var policy in working.egressPolicies where basePolicies[policy.metadata.qualifiedName] != policy {
            let kept = basePolicies[policy.metadata.qualifiedName]?.egress.count ?? 0
            policy.egress = Array(policy.egress.prefix(kept)) + Self.compact(Array(policy.egress.dropFirst(kept)))
            var comments = documents.isEmpty ? header : []
            comments.append(kept == 0 && basePolicies[policy.metadata.qualifiedName] == nil ? "new EgressPolicy" : "changed EgressPolicy (the whole object as it would be)")
            documents.append(ResourceYAML.render(policy, comments: comments, annotations: Self.annotations(byPolicy[policy.metadata.qualifiedName])))
        }
        if documents.isEmpty {
            let why = learned == 0 ? "no connection to learn from (standard error says why)" : "\(learned) connections learned from, all already allowed"
            return ("# corridor learn: nothing to propose (\(why))\n", problems)
        }
        return (ResourceYAML.file(documents), problems)
    }

    /// Rules with the same ports become one rule naming all their services.
    static func compact(_ rules: [EgressPolicy.Rule]) -> [EgressPolicy.Rule] {
        var out: [EgressPolicy.Rule] = []
        for rule in rules {
            if let index = out.firstIndex(where: { $0.ports == rule.ports }) {
                for service in rule.externalServices where !out[index].externalServices.contains(service) { out[index].externalServices.append(service) }
            } else {
                out.append(rule)
            }
        }
        return out
    }

    static func annotations(_ evidence: Evidence?) -> [String: String] {
        guard let evidence else { return [:] }
        return ["corridor.dev/learned": evidence.text]
    }

    /// Registers `*.parent` services where `threshold` or more sibling names were seen under a
    /// parent that no service registers yet and that is not a public suffix or multi-tenant parent.
    private func addWildcards(threshold: Int, pairs: [Destination], to working: inout PolicySource) {
        let snapshot = PolicySnapshot(source: working, generation: 1)
        var siblings: [String: Set<String>] = [:]
        /// Port number -> whether it is plain HTTP (TLS wins when both were seen on one number).
        var ports: [String: [Int: Bool]] = [:]
        var ech: Set<String> = []
        for case .name(let host, let port, let http, let hasECH) in pairs where snapshot.routes(matching: host) == false {
            guard let dot = host.firstIndex(of: ".") else { continue }
            let parent = String(host[host.index(after: dot)...])
            guard parent.contains("."), !options.publicSuffixes.isPublic(parent) else { continue }
            siblings[parent, default: []].insert(host)
            let seen = ports[parent, default: [:]][port]
            ports[parent, default: [:]][port] = (seen ?? true) && http
            if hasECH { ech.insert(parent) }
        }
        var taken = Set(working.externalServices.map(\.name))
        for (parent, names) in siblings.sorted(by: { $0.key < $1.key }) where names.count >= threshold {
            let numbers = ports[parent, default: [:]]
            let servicePorts: [ExternalService.Port] = numbers.keys.sorted().map { number in
                numbers[number] == true
                    ? ExternalService.Port(number: number, protocol: .http, originateTLS: ExternalService.OriginateTLS(port: 443))
                    : ExternalService.Port(number: number, protocol: .tls)
            }
            var name = "wildcard-" + parent.replacingOccurrences(of: ".", with: "-")
            name = String(name.prefix(63))
            while name.hasSuffix("-") { name.removeLast() }
            var candidate = name
            var n = 2
            while taken.contains(candidate) {
                candidate = "\(name.prefix(58))-\(n)"
                n += 1
            }
            taken.insert(candidate)
            guard let pattern = try? HostPattern(parsing: "*.\(parent)") else { continue }
            working.externalServices.append(ExternalService(metadata: ObjectMeta(name: candidate), hosts: [pattern],
                                                            ports: servicePorts,
                                                            ech: ech.contains(parent) ? .allow : nil))
        }
    }

    static func decide(_ destination: Destination, for identity: SourceIdentity, snapshot: PolicySnapshot) -> Decision {
        switch destination {
        case .name(let host, let port, let http, let ech):
            let facts = http ? DestinationFacts(connectHost: host, port: port, kind: .http) : DestinationFacts(serverName: host, port: port, hasECH: ech)
            return DecisionEngine.decide(source: identity, sourceAddress: "learned", facts: facts, snapshot: snapshot)
        case .tcp(let address, let port):
            let ip = IPAddress(parsing: address)!
            return DecisionEngine.decideTCP(source: identity, sourceAddress: "learned", destination: ip, port: port, snapshot: snapshot)
                ?? .deny("no ExternalService serves TCP \(address) port \(port): read as TLS, judged by SNI", port: port)
        }
    }

    static func hintDestination(_ destination: Destination) -> PolicyHint.Destination {
        switch destination {
        case .name(let host, let port, let http, let ech):
            return .name(http ? DestinationFacts(connectHost: host, port: port, kind: .http) : DestinationFacts(serverName: host, port: port, hasECH: ech))
        case .tcp(let address, let port):
            return .tcp(address: IPAddress(parsing: address)!, port: port)
        }
    }

    static func describe(_ destination: Destination) -> String {
        switch destination {
        case .name(let host, let port, let http, _): return "\(host) port \(port)\(http ? " (plain HTTP)" : "")"
        case .tcp(let address, let port): return "TCP \(address) port \(port)"
        }
    }
}

extension PolicySnapshot {
    /// Whether some ExternalService's host pattern matches `host`.
    func routes(matching host: String) -> Bool {
        source.externalServices.contains { service in service.hosts.contains { $0.matches(host) } }
    }
}
