import CorridorPolicy

/// The human summary `corridor check` prints for a valid file.
public enum CheckSummary {
    static func describe(_ port: ExternalService.Port) -> String {
        if let originate = port.originateTLS { return "\(port.number)/HTTP->TLS:\(originate.port)" }
        return "\(port.number)/\(port.protocol.rawValue)"
    }

    public static func render(_ snapshot: PolicySnapshot, file: String) -> String {
        let source = snapshot.source
        let gateway = source.gateway
        var lines = ["\(file): OK"]
        let listeners = [("tls", gateway.listeners.tls), ("connect", gateway.listeners.connect), ("http", gateway.listeners.http),
                         ("admin", gateway.listeners.admin)]
            .compactMap { name, address in address.map { "\(name) \($0)" } }
        lines.append("listeners: " + (listeners.isEmpty ? "none" : listeners.joined(separator: ", "))
            + (gateway.listeners.tls == nil ? "" : "; tls data plane: \(gateway.tls.dataPlane.rawValue)")
            + (gateway.listeners.connect == nil ? "" : "; connect data plane: \(gateway.connect.dataPlane.rawValue)"))
        lines.append("mode: \(gateway.mode.rawValue); unknown sources: \(gateway.unknownSources.rawValue); ECH: \(gateway.tls.allowECH ? "allowed" : "denied"); "
            + "private destinations allowed: \(gateway.allowPrivate.isEmpty ? "none" : gateway.allowPrivate.map(\.description).joined(separator: ", "))")
        lines.append("\(source.externalServices.count) ExternalService(s), \(snapshot.hostPatternCount) host pattern(s):")
        for service in source.externalServices {
            lines.append("  \(service.name): \(service.hosts.map(\.description).joined(separator: ", ")) "
                + "ports \(service.ports.map(Self.describe).joined(separator: ",")) access \(service.access.rawValue)")
        }
        lines.append("\(source.egressPolicies.count) EgressPolicy(ies):")
        for policy in source.egressPolicies {
            let accounts = policy.serviceAccounts.isEmpty ? "" : " serviceAccounts \(policy.serviceAccounts.joined(separator: ","))"
            lines.append("  \(policy.metadata.qualifiedName) [\(policy.mode.rawValue)]: pods \(policy.podSelector.summary)\(accounts) -> "
                + policy.egress.flatMap(\.externalServices).joined(separator: ", "))
        }
        lines.append("\(source.workloads.count) Workload(s):")
        for workload in source.workloads {
            lines.append("  \(workload.metadata.qualifiedName): \(workload.addresses.map(\.description).joined(separator: ", ")) sa:\(workload.serviceAccount)")
        }
        if gateway.mode == .audit {
            lines.append("warning: \(GatewayModeText.auditWarning)")
        }
        if let warning = gateway.kubernetes.stalenessWarning { lines.append("warning: \(warning)") }
        if gateway.listeners.admin == nil {
            // spec.listeners, once given, lists every listener: none is added by default.
            lines.append("warning: no admin listener (spec.listeners.admin): no /metrics, /healthz, /readyz or console")
        }
        for risk in AddressGuard.sensitiveExceptions(allowPrivate: gateway.allowPrivate, services: source.externalServices) {
            lines.append("warning: \(risk)")
        }
        for service in source.externalServices where service.ech == .allow {
            lines.append("warning: ExternalService \(service.name) lets Encrypted Client Hello through (spec.tls.ech: Allow): safe only if it is not on a shared ECH front")
        }
        for service in source.externalServices {
            for port in service.ports where port.allowPlaintext {
                lines.append("warning: ExternalService \(service.name) port \(port.number) sends plain-text HTTP upstream (allowPlaintext: true)")
            }
        }
        for service in source.externalServices where service.access == .all {
            lines.append("note: ExternalService \(service.name) is open to every workload (access: All)")
        }
        return lines.joined(separator: "\n")
    }
}
