/// Decision = f(source identity, destination facts, policy snapshot). Pure: no I/O, no clock.
/// Every early exit is a deny; the reason names what was missing.
public enum DecisionEngine {
    public static func decide(source: SourceIdentity?, sourceAddress: @autoclosure () -> String, facts: DestinationFacts, snapshot: PolicySnapshot) -> Decision {
        let gateway = snapshot.gateway
        if snapshot.source.awaitingSync { return .deny(awaitingSyncReason, host: facts.connectHost ?? facts.serverName, port: facts.port) }
        guard let host = facts.connectHost ?? facts.serverName else {
            return .deny("no destination host name (no SNI, no CONNECT host)", port: facts.port)
        }
        if let sni = facts.serverName, let connectHost = facts.connectHost, sni != connectHost {
            return .deny("SNI \(sni) does not match CONNECT host \(connectHost)", host: connectHost, port: facts.port)
        }
        if facts.hasECH && !gateway.tls.allowECH {
            return .deny("the ClientHello carries Encrypted Client Hello, so SNI \(host) may not be the real destination", host: host, port: facts.port)
        }
        guard let identity = identity(of: source, gateway: gateway) else {
            return .deny("source \(sourceAddress()) is not a known workload", host: host, port: facts.port)
        }

        // The most specific match wins: a broader wildcard never overrides a more specific name.
        let candidates = snapshot.hostIndex.lookupMostSpecific(host)
        guard !candidates.isEmpty else {
            return auditOrDeny(identity, known: source != nil, snapshot: snapshot,
                               deny: .deny(.noService(host: host), host: host, port: facts.port ?? gateway.tls.upstreamPort))
        }

        // Among the services registering that most specific pattern, those that serve the port.
        var firstRefusal: Decision?
        for serviceIndex in candidates {
            let service = snapshot.services[serviceIndex]
            guard let servicePort = choosePort(service, requested: facts.port, preferred: gateway.tls.upstreamPort, kind: facts.kind) else {
                let kind = facts.kind == .http ? "HTTP" : "TLS"
                let what = facts.port.map { "no \(kind) port \($0)" } ?? "several TLS ports and none is \(gateway.tls.upstreamPort) (spec.tls.upstreamPort)"
                firstRefusal = firstRefusal ?? .deny("ExternalService \(service.name) has \(what)", host: host, port: facts.port, service: service.name)
                continue
            }
            let decision = judge(service, index: serviceIndex, port: servicePort, host: host, target: nil, identity: identity, known: source != nil,
                                 sourceAddress: sourceAddress, snapshot: snapshot)
            if decision.verdict == .allow { return decision }
            firstRefusal = firstRefusal ?? decision
        }
        return auditOrDeny(identity, known: source != nil, snapshot: snapshot, deny: firstRefusal!)
    }

    /// A redirected connection judged by where it was going: the ExternalServices with a TCP port
    /// `port` whose `addresses` contain `destination`. Returns nil when no TCP service covers that
    /// address and port and the port is also a TLS port of some service (the connection is then
    /// judged as TLS, by its SNI); a TCP-only port at an address no service lists is denied at once.
    public static func decideTCP(source: SourceIdentity?, sourceAddress: @autoclosure () -> String, destination: IPAddress, port: Int,
                                 snapshot: PolicySnapshot) -> Decision? {
        if snapshot.source.awaitingSync { return .deny(awaitingSyncReason, port: port) }
        guard let candidates = snapshot.tcpServices[port] else { return nil }
        let matching = candidates.filter { index in snapshot.services[index].addresses.contains { $0.contains(destination) } }
        let target = "\(destination) port \(port)"
        if matching.isEmpty {
            if snapshot.tlsPorts.contains(port) { return nil }
            return .deny("no ExternalService serves TCP \(target)", port: port)
        }
        guard let identity = identity(of: source, gateway: snapshot.gateway) else {
            return .deny("source \(sourceAddress()) is not a known workload", port: port)
        }
        var refusal: Decision?
        for index in matching {
            let service = snapshot.services[index]
            guard let servicePort = service.ports.first(where: { $0.protocol == .tcp && $0.number == port }) else { continue }
            let decision = judge(service, index: index, port: servicePort, host: nil, target: "TCP \(target)", identity: identity, known: source != nil,
                                 sourceAddress: sourceAddress, snapshot: snapshot)
            if decision.verdict == .allow { return decision }
            refusal = refusal ?? decision
        }
        return auditOrDeny(identity, known: source != nil, snapshot: snapshot, deny: refusal ?? .deny("no ExternalService serves TCP \(target)", port: port))
    }

    static let awaitingSyncReason = "the policy has not been synced from the Kubernetes API yet (every connection is denied until it is)"

    /// The identity a source is judged as: itself, or for an unknown source an empty identity
    /// (namespace "", no labels) where `unknownSources: Allow`; nil means deny.
    static func identity(of source: SourceIdentity?, gateway: GatewayConfig) -> SourceIdentity? {
        if let source { return source }
        return gateway.unknownSources == .allow ? SourceIdentity(namespace: "", workload: "", serviceAccount: "", labels: [:]) : nil
    }

    /// Whether `service`, on `port`, is open to this source: by `access: All` or a grant of an
    /// Enforce or Audit EgressPolicy that selects it. Returns the allow, or the refusal to report.
    /// `target` (e.g. "TCP 10.0.0.5 port 5432") is named in the reason when the connection had no host.
    static func judge(_ service: ExternalService, index serviceIndex: Int, port: ExternalService.Port, host: String?, target: String?,
                      identity: SourceIdentity, known: Bool, sourceAddress: () -> String, snapshot: PolicySnapshot) -> Decision {
        if service.access == .all {
            return Decision(verdict: .allow, host: host, port: port.number, externalService: service.name, egressPolicy: nil,
                            why: .openToAll(service: service.name, about: target),
                            serviceAddresses: service.addresses, servicePort: port)
        }
        if known {
            for grant in snapshot.serviceGrants[serviceIndex] {
                let policy = snapshot.source.egressPolicies[grant.policy]
                let rule = policy.egress[grant.rule]
                guard policy.selects(identity), rule.ports.isEmpty || rule.ports.contains(port.number) else { continue }
                let name = snapshot.policyNames[grant.policy]
                return Decision(verdict: .allow, host: host, port: port.number, externalService: service.name, egressPolicy: name,
                                why: .granted(policy: name, service: service.name, about: target),
                                serviceAddresses: service.addresses, servicePort: port)
            }
        }
        let why: Decision.Reason = known
            ? .notGranted(service: service.name, about: target, namespace: identity.namespace, serviceAccount: identity.serviceAccount)
            : .notGrantedToUnknown(service: service.name, about: target, source: sourceAddress())
        return Decision(verdict: .deny, host: host, port: port.number, externalService: service.name, egressPolicy: nil,
                        why: why, serviceAddresses: service.addresses, servicePort: port)
    }

    /// The port a connection to `service` uses: the requested one if the service serves it with
    /// TLS; with none requested, the service's only TLS port or else the preferred one.
    static func choosePort(_ service: ExternalService, requested: Int?, preferred: Int, kind: DestinationFacts.Kind = .tls) -> ExternalService.Port? {
        let wanted: ExternalService.PortProtocol = kind == .http ? .http : .tls
        if let requested { return service.ports.first { $0.protocol == wanted && $0.number == requested } }
        if kind == .http { return service.ports.first { $0.protocol == wanted && $0.number == 80 } }
        var only: ExternalService.Port?, count = 0
        for port in service.ports where port.protocol == wanted {
            if port.number == preferred { return port }
            only = port
            count += 1
        }
        return count == 1 ? only : nil
    }

    /// A would-be denial becomes `audit` when an Audit-mode EgressPolicy selects the source.
    static func auditOrDeny(_ identity: SourceIdentity, known: Bool, snapshot: PolicySnapshot, deny: Decision) -> Decision {
        guard known, let policies = snapshot.auditPolicies[identity.namespace] else { return deny }
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
        return deny
    }
}
