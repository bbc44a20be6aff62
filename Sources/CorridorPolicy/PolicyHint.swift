/// How to allow a refused (or audited) connection: the smallest change in resource terms, as
/// text for the access record and the 403 body, and as ``PolicyChange``s that `corridor explain`
/// prints as YAML. Pure, and cheap enough for the data path: it reads the compiled host tables and
/// the EgressPolicies of one namespace, and builds no snapshot.
///
/// The plan follows the engine's own order: the source must be a known workload; a service must
/// register the name (the most specific pattern's, as the engine matches) on the port and protocol
/// asked for, and allow ECH if the ClientHello carries it; the workload must be granted that
/// service on that port (by an EgressPolicy that selects it, or a new one). Refusals that no policy
/// change can lift (an SNI that is not the CONNECT host, no name at all, an unsynced policy) get a
/// sentence and no change.
public struct PolicyHint: Sendable, Equatable {
    /// Where the refused connection was going.
    public enum Destination: Sendable, Equatable {
        /// Judged by name (TLS SNI, CONNECT host, HTTP Host).
        case name(DestinationFacts)
        /// A redirected plain-TCP connection, judged by the address and port dialled.
        case tcp(address: IPAddress, port: Int)
    }

    public var text: String
    /// Empty when no policy change allows the connection.
    public var changes: [PolicyChange]

    public init(text: String, changes: [PolicyChange] = []) {
        self.text = text
        self.changes = changes
    }

    /// The hint for `decision` (nil when it allowed the connection). `identity`: the source's
    /// identity, nil for an unknown source at `address`.
    public static func make(for decision: Decision, to destination: Destination, identity: SourceIdentity?, address: IPAddress?,
                            snapshot: PolicySnapshot) -> PolicyHint? {
        guard decision.verdict != .allow else { return nil }
        if let withheld = snapshot.source.withheld { return PolicyHint(text: withheld.hint) }
        if case .text(let reason) = decision.why.unaudited {
            if reason.hasPrefix("SNI ") {
                return PolicyHint(text: "the client must send the CONNECT host as its SNI; no policy change allows a mismatch")
            }
            if reason.hasPrefix("no destination host name") {
                return PolicyHint(text: "the client must name its destination (SNI, CONNECT host or Host header); connections without a name are never allowed")
            }
        }
        var planner = Planner(snapshot: snapshot)
        return planner.plan(destination, identity: identity, address: address)
    }

    /// What the change does, one clause per step.
    private struct Planner {
        let snapshot: PolicySnapshot
        var changes: [PolicyChange] = []
        var clauses: [String] = []

        init(snapshot: PolicySnapshot) {
            self.snapshot = snapshot
        }

        var gateway: GatewayConfig { snapshot.gateway }

        mutating func plan(_ destination: Destination, identity: SourceIdentity?, address: IPAddress?) -> PolicyHint? {
            guard let who = knownSource(identity, address: address) else {
                return PolicyHint(text: "the source's address is unknown; no policy change can name it")
            }
            let target: (service: ExternalService, port: Int)?
            switch destination {
            case .name(let facts): target = service(for: facts)
            case .tcp(let address, let port): target = tcpService(address: address, port: port)
            }
            guard let target else {
                return PolicyHint(text: clauses.joined(separator: "; "))
            }
            grant(target.service, port: target.port, to: who)
            return PolicyHint(text: clauses.joined(separator: "; then "), changes: changes)
        }

        /// The identity to grant: the source's, or a Workload to add for an unknown address.
        mutating func knownSource(_ identity: SourceIdentity?, address: IPAddress?) -> SourceIdentity? {
            if let identity { return identity }
            guard let address else { return nil }
            let ip = address.unmapped
            let name = uniqueName("source-\(Self.slug(ip.description))", taken: Set(snapshot.source.workloads.map(\.metadata.name)))
            let workload = Workload(metadata: ObjectMeta(name: name, namespace: "default"),
                                    addresses: [CIDR(address: ip, prefixLength: ip.isIPv4 ? 32 : 128)], serviceAccount: "default")
            changes.append(.addWorkload(workload))
            clauses.append("source \(ip) is not a known workload: add Workload default/\(name) claiming \(ip) (file mode; in a cluster, "
                + "check that the pod is Running with an IP of its own, not hostNetwork)")
            return workload.identity
        }

        /// The service that is to carry the connection, and its port number, after any change it needs.
        mutating func service(for facts: DestinationFacts) -> (service: ExternalService, port: Int)? {
            guard let host = facts.connectHost ?? facts.serverName else { return nil }
            let preferred = gateway.tls.upstreamPort
            let wantedPort = facts.port ?? (facts.kind == .http ? 80 : preferred)
            let routes = snapshot.routes
            guard let candidates = routes.candidates(host) else {
                // Nothing registers the name: a new service for exactly this name and port.
                let name = uniqueName(Self.slug(host), taken: Set(snapshot.source.externalServices.map(\.name)))
                let port = facts.kind == .http
                    ? ExternalService.Port(number: wantedPort, protocol: .http, originateTLS: ExternalService.OriginateTLS(port: 443))
                    : ExternalService.Port(number: wantedPort, protocol: .tls)
                var service = ExternalService(metadata: ObjectMeta(name: name), hosts: [.exact(host)], ports: [port])
                var what = "register ExternalService \(name) for \(host) port \(Self.describe(port))"
                if facts.hasECH && !gateway.tls.allowECH {
                    service.ech = .allow
                    what += " with spec.tls.ech: Allow (only if \(host) is not on a shared ECH front)"
                }
                changes.append(.addService(service))
                clauses.append(what)
                return (service, wantedPort)
            }
            // The engine takes the first of the most specific pattern's services that serves the port.
            for position in 0..<routes.count(candidates) {
                let index = routes.service(candidates, position)
                guard let ordinal = routes.choosePort(index, requested: facts.port, preferred: preferred, kind: facts.kind) else { continue }
                var service = snapshot.source.externalServices[index]
                if facts.hasECH && !DecisionEngine.echAllowed(index, snapshot: snapshot) {
                    service.ech = .allow
                    changes.append(.updateService(service))
                    clauses.append("set spec.tls.ech: Allow on ExternalService \(service.name) (only if it is not on a shared ECH front: "
                        + "there the outer SNI proves nothing)")
                }
                return (service, routes.port(index, ordinal).number)
            }
            // The name is registered, not on this port: the port goes to the first of those services.
            var service = snapshot.source.externalServices[routes.service(candidates, 0)]
            guard !service.ports.contains(where: { $0.number == wantedPort }) else {
                clauses.append("ExternalService \(service.name) already uses port \(wantedPort) with another protocol; "
                    + "register \(host) port \(wantedPort) in a service of its own")
                return nil
            }
            // A service that already originates TLS for another HTTP port reaches its upstream the
            // same way for this one (its port, trust and SNI).
            let originate = service.ports.lazy.compactMap(\.originateTLS).first ?? ExternalService.OriginateTLS(port: 443)
            let port = facts.kind == .http
                ? ExternalService.Port(number: wantedPort, protocol: .http, originateTLS: originate)
                : ExternalService.Port(number: wantedPort, protocol: .tls)
            service.ports.append(port)
            var what = "add port \(Self.describe(port)) to ExternalService \(service.name)"
            if facts.hasECH && (service.ech.map { $0 == .deny } ?? !gateway.tls.allowECH) {
                service.ech = .allow
                what += " and set its spec.tls.ech: Allow (only if it is not on a shared ECH front)"
            }
            changes.append(.updateService(service))
            clauses.append(what)
            return (service, wantedPort)
        }

        /// The TCP service listing `address` on `port`, or a new one for exactly that address.
        mutating func tcpService(address: IPAddress, port: Int) -> (service: ExternalService, port: Int)? {
            let ip = address.unmapped
            if let service = snapshot.source.externalServices.first(where: { service in
                service.ports.contains { $0.protocol == .tcp && $0.number == port } && service.addresses.contains { $0.contains(ip) }
            }) {
                return (service, port)
            }
            let name = uniqueName("tcp-\(Self.slug(ip.description))-\(port)", taken: Set(snapshot.source.externalServices.map(\.name)))
            let service = ExternalService(metadata: ObjectMeta(name: name), hosts: [],
                                          addresses: [CIDR(address: ip, prefixLength: ip.isIPv4 ? 32 : 128)],
                                          ports: [ExternalService.Port(number: port, protocol: .tcp)])
            changes.append(.addService(service))
            clauses.append("register ExternalService \(name) for TCP \(ip) port \(port)")
            return (service, port)
        }

        /// Grants `service` on `port` to `who`, unless it is open to all or granted already: in a
        /// policy of the workload's namespace that selects no more than the workload's group (the
        /// pods sharing its most stable label, or, without one, those of its service account that
        /// carry none), or in a new one for that group. A policy that selects the workload but
        /// others too is never extended: the grant would reach workloads that never asked for it.
        mutating func grant(_ service: ExternalService, port: Int, to who: SourceIdentity) {
            if service.access == .all { return }
            let inNamespace = snapshot.source.egressPolicies.filter { $0.namespace == who.namespace }
            let selecting = inNamespace.filter { $0.selects(who) }
            let granted = selecting.contains { policy in
                policy.egress.contains { $0.externalServices.contains(service.name) && ($0.ports.isEmpty || $0.ports.contains(port)) }
            }
            if granted { return }
            let group = Self.group(of: who)
            if var policy = selecting.first(where: { Self.selectsWithin($0, group) }) {
                policy.egress.append(EgressPolicy.Rule(externalServices: [service.name], ports: [port]))
                changes.append(.updatePolicy(policy))
                clauses.append("grant it: add ExternalService \(service.name) port \(port) to EgressPolicy \(policy.metadata.qualifiedName), "
                    + "which selects this workload")
                return
            }
            let base = Self.slug(group.selector.matchLabels.values.first ?? who.serviceAccount)
            let name = uniqueName("\(base.isEmpty ? "workload" : base)-egress", taken: Set(inNamespace.map(\.metadata.name)))
            let policy = EgressPolicy(metadata: ObjectMeta(name: name, namespace: who.namespace), podSelector: group.selector,
                                      serviceAccounts: group.accounts, egress: [EgressPolicy.Rule(externalServices: [service.name], ports: [port])])
            changes.append(.addPolicy(policy))
            var clause = "grant it: add EgressPolicy \(who.namespace)/\(name) selecting \(group.by) with ExternalService \(service.name) port \(port)"
            if !selecting.isEmpty {
                let broader = selecting.prefix(5).map(\.metadata.qualifiedName).joined(separator: ", ")
                clause += " (\(broader) \(selecting.count == 1 ? "selects" : "select") this workload but others too, which the grant would reach"
                    + (selecting.count > 5 ? "; and \(selecting.count - 5) more" : "") + ")"
            } else if !inNamespace.isEmpty {
                let why = inNamespace.prefix(5).map { policy -> String in
                    var part = "\(policy.metadata.qualifiedName) selects \(policy.podSelector.summary)"
                    if !policy.serviceAccounts.isEmpty { part += " with service accounts \(policy.serviceAccounts.joined(separator: ","))" }
                    return part
                }
                clause += " (no EgressPolicy in \(who.namespace) selects this workload: " + why.joined(separator: "; ")
                    + (inNamespace.count > 5 ? "; and \(inNamespace.count - 5) more" : "") + ")"
            }
            clauses.append(clause)
        }

        /// The labels that name a workload's group, most stable first.
        static let groupLabelKeys = ["app.kubernetes.io/name", "app"]

        /// The pods a grant for `who` is for: those sharing its most stable label, or, without
        /// one, the pods of its service account that carry none of those labels.
        static func group(of who: SourceIdentity) -> (selector: LabelSelector, accounts: [String], by: String) {
            if let key = groupLabelKeys.first(where: { who.labels[$0] != nil }), let value = who.labels[key] {
                return (LabelSelector(matchLabels: [key: value]), [], "\(key)=\(value)")
            }
            let unlabelled = LabelSelector(matchExpressions: groupLabelKeys.map { LabelSelector.Requirement(key: $0, operator: .doesNotExist) })
            return (unlabelled, [who.serviceAccount], "service account \(who.serviceAccount) (pods without \(groupLabelKeys.joined(separator: " or ")) labels)")
        }

        /// Whether every pod `policy` selects is in `group`: the group's labels and expressions
        /// are among the policy's, and where the group names service accounts, the policy names
        /// only some of those.
        static func selectsWithin(_ policy: EgressPolicy, _ group: (selector: LabelSelector, accounts: [String], by: String)) -> Bool {
            let selector = policy.podSelector
            guard group.selector.matchLabels.allSatisfy({ selector.matchLabels[$0.key] == $0.value }),
                  group.selector.matchExpressions.allSatisfy({ selector.matchExpressions.contains($0) }) else { return false }
            guard !group.accounts.isEmpty else { return true }
            return !policy.serviceAccounts.isEmpty && Set(policy.serviceAccounts).isSubset(of: group.accounts)
        }

        func uniqueName(_ base: String, taken: Set<String>) -> String {
            let taken = taken.union(changes.compactMap { change -> String? in
                switch change {
                case .addService(let s): return s.name
                case .addPolicy(let p): return p.metadata.name
                case .addWorkload(let w): return w.metadata.name
                default: return nil
                }
            })
            let stem = base.isEmpty ? "x" : base
            if !taken.contains(stem) { return stem }
            for n in 2... {
                let candidate = "\(String(stem.prefix(58)).trimmingTrailingHyphens())-\(n)"
                if !taken.contains(candidate) { return candidate }
            }
            return stem
        }

        /// A lower-case RFC 1123 name made from `text` (dots and other characters become '-').
        static func slug(_ text: String) -> String {
            var out = ""
            for scalar in text.lowercased().unicodeScalars {
                let c = Character(scalar)
                if c.isASCII && (c.isLetter || c.isNumber) { out.append(c) } else if !out.hasSuffix("-") { out.append("-") }
            }
            while out.hasPrefix("-") { out.removeFirst() }
            return String(out.prefix(63)).trimmingTrailingHyphens()
        }

        static func describe(_ port: ExternalService.Port) -> String {
            if let originate = port.originateTLS { return "\(port.number)/HTTP (TLS origination to port \(originate.port))" }
            return "\(port.number)/\(port.protocol.rawValue)"
        }
    }
}

extension Decision.Reason {
    /// The refusal behind an audit (the reason itself otherwise).
    public var unaudited: Decision.Reason {
        switch self {
        case .audited(let base, _), .auditedByGateway(let base): return base.unaudited
        default: return self
        }
    }
}

extension String {
    fileprivate func trimmingTrailingHyphens() -> String {
        var out = self
        while out.hasSuffix("-") { out.removeLast() }
        return out
    }
}
