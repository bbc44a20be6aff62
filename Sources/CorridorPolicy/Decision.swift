/// What the gateway decided about one connection, and why. A denial is a value, not an error.
public struct Decision: Sendable, Equatable {
    public enum Verdict: String, Sendable, Equatable {
        case allow
        case deny
        /// Would be denied, let through because an EgressPolicy in `Audit` mode selects the source.
        case audit
    }

    public var verdict: Verdict
    /// The host the connection is for (normalised SNI or CONNECT host), if one was named.
    public var host: String?
    /// The upstream port chosen.
    public var port: Int?
    public var externalService: String?
    /// `namespace/name` of the EgressPolicy that granted (or audited) it.
    public var egressPolicy: String?
    public var reason: String
    /// Extra ranges the resolved addresses may fall in (the service's `addresses`).
    public var serviceAddresses: [CIDR] = []
    /// The service port that matched (its protocol and, for HTTP, how to reach the service).
    public var servicePort: ExternalService.Port?

    public var lets: Bool { verdict != .deny }

    public static func deny(_ reason: String, host: String? = nil, port: Int? = nil, service: String? = nil) -> Decision {
        Decision(verdict: .deny, host: host, port: port, externalService: service, egressPolicy: nil, reason: reason)
    }
}

/// The facts about a connection's destination that the data plane gathered before deciding.
public struct DestinationFacts: Sendable, Equatable {
    /// Normalised SNI from the ClientHello.
    public var serverName: String?
    /// Normalised host from `CONNECT host:port`.
    public var connectHost: String?
    /// The port asked for (CONNECT port, or the original destination port of a redirected
    /// connection); nil when the tls listener is reached directly and the service's port applies.
    public var port: Int?
    public var hasECH = false
    /// What the client speaks: TLS (judged by SNI) or plain HTTP (judged by Host, for TLS origination).
    public var kind: Kind

    public enum Kind: Sendable, Equatable {
        case tls
        case http
    }

    public init(serverName: String? = nil, connectHost: String? = nil, port: Int? = nil, hasECH: Bool = false, kind: Kind = .tls) {
        self.serverName = serverName
        self.connectHost = connectHost
        self.port = port
        self.hasECH = hasECH
        self.kind = kind
    }
}
