/// Decision = f(source identity, destination facts, policy snapshot). Pure: no I/O, no clock.
/// Every early exit is a deny; the reason names what was missing.
public enum DecisionEngine {
    public static func decide(source: SourceIdentity?, sourceAddress: @autoclosure () -> String, facts: DestinationFacts, snapshot: PolicySnapshot) -> Decision {
        if let withheld = snapshot.source.withheld { return .deny(withheld.reason, host: facts.connectHost ?? facts.serverName, port: facts.port) }
        guard let host = facts.connectHost ?? facts.serverName else {
            return .deny("no destination host name (no SNI, no CONNECT host)", port: facts.port)
        }
        if let sni = facts.serverName, let connectHost = facts.connectHost, sni != connectHost {
            return .deny("SNI \(sni) does not match CONNECT host \(connectHost)", host: connectHost, port: facts.port)
        }
        // The source is passed on as it is (not copied into a new identity) when it is known.
        if let source {
            return decide(host: host, facts: facts, identity: source, known: true, sourceAddress: sourceAddress, snapshot: snapshot)
        }
        guard let identity = identity(of: nil, gateway: snapshot.gateway) else {
            let refusal = Decision.deny(.unknownSource(address: sourceAddress()), host: host, port: facts.port)
            guard snapshot.gateway.mode == .audit else { return refusal }
            // Audited: judged as a source with no identity, so the record names the service (and
            // the port) the connection reaches; the reason stays the unknown source.
            var audited = decide(host: host, facts: facts, identity: anonymous, known: false, sourceAddress: sourceAddress, snapshot: snapshot)
            audited.verdict = .audit
            audited.egressPolicy = nil
            audited.why = .auditedByGateway(refusal.why)
            return audited
        }
        return decide(host: host, facts: facts, identity: identity, known: false, sourceAddress: sourceAddress, snapshot: snapshot)
    }

    /// `decide` once the host and the identity to judge are settled.
    private static func decide(host: String, facts: DestinationFacts, identity: SourceIdentity, known: Bool, sourceAddress: () -> String,
                               snapshot: PolicySnapshot) -> Decision {
        let upstreamPort = snapshot.gateway.tls.upstreamPort
        // The most specific match wins: a broader wildcard never overrides a more specific name.
        guard let candidates = snapshot.routes.candidates(host) else {
            return auditOrDeny(identity, known: known, snapshot: snapshot,
                               deny: .deny(.noService(host: host), host: host, port: facts.port ?? upstreamPort))
        }

        // Among the services registering that most specific pattern, those that serve the port.
        var firstRefusal: Decision?
        for position in 0..<snapshot.routes.count(candidates) {
            let serviceIndex = snapshot.routes.service(candidates, position)
            guard let port = snapshot.routes.choosePort(serviceIndex, requested: facts.port, preferred: upstreamPort, kind: facts.kind) else {
                let name = snapshot.routes.routes[serviceIndex].name
                firstRefusal = firstRefusal ?? .deny(.noPort(service: name, kind: facts.kind, port: facts.port, preferred: upstreamPort),
                                                     host: host, port: facts.port, service: name)
                continue
            }
            if facts.hasECH && !echAllowed(serviceIndex, snapshot: snapshot) {
                let name = snapshot.routes.routes[serviceIndex].name
                firstRefusal = firstRefusal ?? .deny(.echRefused(service: name, host: host), host: host, port: facts.port, service: name)
                continue
            }
            let decision = judge(serviceIndex, port: port, host: host, target: nil, identity: identity, known: known,
                                 sourceAddress: sourceAddress, snapshot: snapshot)
            if decision.verdict == .allow { return decision }
            if firstRefusal == nil { firstRefusal = decision }  // moved, not copied (`??` would copy)
        }
        return auditOrDeny(identity, known: known, snapshot: snapshot, deny: firstRefusal!)
    }

    /// A redirected connection judged by where it was going: the ExternalServices with a TCP port
    /// `port` whose `addresses` contain `destination`. Returns nil when no TCP service uses the
    /// port, or none covers that address and the port is also a TLS port of some service (the
    /// connection is then read as TLS and judged by its SNI); a TCP-only port at an address no
    /// service lists is denied at once.
    public static func decideTCP(source: SourceIdentity?, sourceAddress: @autoclosure () -> String, destination: IPAddress, port: Int,
                                 snapshot: PolicySnapshot) -> Decision? {
        if let withheld = snapshot.source.withheld { return .deny(withheld.reason, port: port) }
        guard let candidates = snapshot.tcpServices[port] else { return nil }
        let matching = candidates.filter { index in snapshot.routes.routes[index].addresses.contains { $0.contains(destination) } }
        let target = "\(destination) port \(port)"
        if matching.isEmpty {
            if snapshot.tlsPorts.contains(port) { return nil }
            return auditedByGateway(.deny(.noTCPService(address: destination, port: port), port: port), snapshot: snapshot)
        }
        guard let identity = identity(of: source, gateway: snapshot.gateway) else {
            return auditedByGateway(.deny(.unknownSource(address: sourceAddress()), port: port), snapshot: snapshot)
        }
        var refusal: Decision?
        let routes = snapshot.routes
        for index in matching {
            guard let servicePort = routes.tcpPort(index, port) else { continue }
            let decision = judge(index, port: servicePort, host: nil, target: "TCP \(target)", identity: identity, known: source != nil,
                                 sourceAddress: sourceAddress, snapshot: snapshot)
            if decision.verdict == .allow { return decision }
            refusal = refusal ?? decision
        }
        return auditOrDeny(identity, known: source != nil, snapshot: snapshot, deny: refusal ?? .deny(.noTCPService(address: destination, port: port), port: port))
    }

    /// Whether a ClientHello with ECH may reach service `serviceIndex`: its `spec.tls.ech`, else
    /// the gateway's `spec.tls.allowECH`.
    static func echAllowed(_ serviceIndex: Int, snapshot: PolicySnapshot) -> Bool {
        snapshot.routes.routes[serviceIndex].ech.map { $0 == .allow } ?? snapshot.gateway.tls.allowECH
    }

    /// The identity a source is judged as: itself, or for an unknown source an empty identity
    /// (namespace "", no labels) where `unknownSources: Allow`; nil means deny.
    static func identity(of source: SourceIdentity?, gateway: GatewayConfig) -> SourceIdentity? {
        if let source { return source }
        return gateway.unknownSources == .allow ? anonymous : nil
    }

    /// The identity an unknown source is judged as: no namespace, no labels.
    static let anonymous = SourceIdentity(namespace: "", workload: "", serviceAccount: "", labels: [:])

    /// Whether service `serviceIndex`, on its port number `portOrdinal` (in configuration order), is
    /// open to this source: by `access: All` or a grant of an Enforce or Audit EgressPolicy that
    /// selects it. Returns the allow, or the refusal to report. `target` (e.g. "TCP 10.0.0.5 port
    /// 5432") is named in the reason when the connection had no host.
    static func judge(_ serviceIndex: Int, port portOrdinal: Int, host: String?, target: String?,
                      identity: SourceIdentity, known: Bool, sourceAddress: () -> String, snapshot: PolicySnapshot) -> Decision {
        // Fields are read from the snapshot where they are, not from a copy of the whole route.
        let port = snapshot.routes.port(serviceIndex, portOrdinal)
        if snapshot.routes.routes[serviceIndex].access == .all {
            let name = snapshot.routes.routes[serviceIndex].name
            return Decision(verdict: .allow, host: host, port: port.number, externalService: name, egressPolicy: nil,
                            why: .openToAll(service: name, about: target),
                            serviceAddresses: snapshot.routes.routes[serviceIndex].addresses, servicePort: port)
        }
        if known {
            for ordinal in 0..<snapshot.routes.grantCount(serviceIndex) {
                guard let policy = snapshot.routes.grantedPolicy(serviceIndex, ordinal, port: port.number),
                      snapshot.source.egressPolicies[policy].selects(identity) else { continue }
                let name = snapshot.policyNames[policy]
                let service = snapshot.routes.routes[serviceIndex].name
                return Decision(verdict: .allow, host: host, port: port.number, externalService: service, egressPolicy: name,
                                why: .granted(policy: name, service: service, about: target),
                                serviceAddresses: snapshot.routes.routes[serviceIndex].addresses, servicePort: port)
            }
        }
        let service = snapshot.routes.routes[serviceIndex].name
        let why: Decision.Reason = known
            ? .notGranted(service: service, about: target, namespace: identity.namespace, serviceAccount: identity.serviceAccount)
            : .notGrantedToUnknown(service: service, about: target, source: sourceAddress())
        return Decision(verdict: .deny, host: host, port: port.number, externalService: service, egressPolicy: nil,
                        why: why, serviceAddresses: snapshot.routes.routes[serviceIndex].addresses, servicePort: port)
    }

    /// A would-be denial becomes `audit` when an Audit-mode EgressPolicy selects the source, or
    /// when the gateway is in Audit mode.
    static func auditOrDeny(_ identity: SourceIdentity, known: Bool, snapshot: PolicySnapshot, deny: Decision) -> Decision {
        guard known, !snapshot.auditPolicies.isEmpty, let policies = snapshot.auditPolicies[identity.namespace] else {
            return auditedByGateway(deny, snapshot: snapshot)
        }
        for index in policies {
            let policy = snapshot.source.egressPolicies[index]
            guard policy.selects(identity) else { continue }
            var decision = deny
            decision.verdict = .audit
            decision.port = decision.port ?? snapshot.gateway.tls.upstreamPort
            decision.egressPolicy = snapshot.policyNames[index]
            decision.why = .audited(deny.why, policy: snapshot.policyNames[index])
            return decision
        }
        return auditedByGateway(deny, snapshot: snapshot)
    }

    /// A policy denial becomes `audit` when the gateway is in Audit mode (`spec.mode`).
    static func auditedByGateway(_ deny: Decision, snapshot: PolicySnapshot) -> Decision {
        guard snapshot.gateway.mode == .audit else { return deny }
        var decision = deny
        decision.verdict = .audit
        decision.port = decision.port ?? snapshot.gateway.tls.upstreamPort
        decision.why = .auditedByGateway(deny.why)
        return decision
    }
}
