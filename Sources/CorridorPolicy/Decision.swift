/// What the gateway decided about one connection, and why. A denial is a value, not an error.
public struct Decision: Sendable, Equatable {
    public enum Verdict: String, Sendable, Equatable {
        case allow
        case deny
        /// Would be denied, let through because an EgressPolicy in `Audit` mode selects the source,
        /// or the whole gateway is in `Audit` mode.
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
    /// Why, in words (rendered from `why` when read: the hot path only stores the parts).
    public var reason: String {
        get { why.text }
        set { why = .text(newValue) }
    }
    /// Why, as parts.
    public var why: Reason
    /// Extra ranges the resolved addresses may fall in (the service's `addresses`).
    public var serviceAddresses: [CIDR] = []
    /// The service port that matched (its protocol and, for HTTP, how to reach the service).
    public var servicePort: ExternalService.Port?

    public var lets: Bool { verdict != .deny }

    public init(verdict: Verdict, host: String?, port: Int?, externalService: String?, egressPolicy: String?, reason: String,
                serviceAddresses: [CIDR] = [], servicePort: ExternalService.Port? = nil) {
        self.init(verdict: verdict, host: host, port: port, externalService: externalService, egressPolicy: egressPolicy,
                  why: .text(reason), serviceAddresses: serviceAddresses, servicePort: servicePort)
    }

    public init(verdict: Verdict, host: String?, port: Int?, externalService: String?, egressPolicy: String?, why: Reason,
                serviceAddresses: [CIDR] = [], servicePort: ExternalService.Port? = nil) {
        self.verdict = verdict
        self.host = host
        self.port = port
        self.externalService = externalService
        self.egressPolicy = egressPolicy
        self.why = why
        self.serviceAddresses = serviceAddresses
        self.servicePort = servicePort
    }

    public static func deny(_ reason: String, host: String? = nil, port: Int? = nil, service: String? = nil) -> Decision {
        Decision(verdict: .deny, host: host, port: port, externalService: service, egressPolicy: nil, reason: reason)
    }

    public static func deny(_ why: Reason, host: String? = nil, port: Int? = nil, service: String? = nil) -> Decision {
        Decision(verdict: .deny, host: host, port: port, externalService: service, egressPolicy: nil, why: why)
    }

    /// The reason as the parts the engine had at hand; rendered into words only when logged.
    /// Two reasons are equal when they read the same. Only `audited` is boxed, so building the
    /// usual reason allocates nothing.
    public enum Reason: Sendable, Equatable, CustomStringConvertible {
        case text(String)
        /// `ExternalService S is open to all workloads (about)`
        case openToAll(service: String, about: String?)
        /// `EgressPolicy P grants ExternalService S (about)`
        case granted(policy: String, service: String, about: String?)
        /// `ExternalService S (about) is not granted to ns/sa:account`
        case notGranted(service: String, about: String?, namespace: String, serviceAccount: String)
        /// `ExternalService S (about) is not granted to unknown source A`
        case notGrantedToUnknown(service: String, about: String?, source: String)
        /// `no ExternalService matches H`
        case noService(host: String)
        /// `ExternalService S has no TLS port N` (or HTTP), or, with no port asked for and several
        /// TLS ports, `... has several TLS ports and none is P (spec.tls.upstreamPort)`.
        case noPort(service: String, kind: DestinationFacts.Kind, port: Int?, preferred: Int)
        /// The ClientHello carries ECH and the matched service does not allow it.
        case echRefused(service: String, host: String)
        /// `source A is not a known workload`
        case unknownSource(address: String)
        /// `no ExternalService serves TCP A port N`
        case noTCPService(address: IPAddress, port: Int)
        /// `would be denied (R); EgressPolicy P is in Audit mode`
        indirect case audited(Reason, policy: String)
        /// `would be denied (R); the gateway is in Audit mode (spec.mode)`
        indirect case auditedByGateway(Reason)

        public var text: String {
            func about(_ text: String?) -> String { text.map { " (\($0))" } ?? "" }
            switch self {
            case .text(let text): return text
            case .openToAll(let service, let target): return "ExternalService \(service) is open to all workloads\(about(target))"
            case .granted(let policy, let service, let target): return "EgressPolicy \(policy) grants ExternalService \(service)\(about(target))"
            case .notGranted(let service, let target, let namespace, let account):
                return "ExternalService \(service)\(about(target)) is not granted to \(namespace)/sa:\(account)"
            case .notGrantedToUnknown(let service, let target, let source):
                return "ExternalService \(service)\(about(target)) is not granted to unknown source \(source)"
            case .noService(let host): return "no ExternalService matches \(host)"
            case .noPort(let service, let kind, let port, let preferred):
                let what = port.map { "no \(kind == .http ? "HTTP" : "TLS") port \($0)" } ?? "several TLS ports and none is \(preferred) (spec.tls.upstreamPort)"
                return "ExternalService \(service) has \(what)"
            case .echRefused(let service, let host):
                return "the ClientHello carries Encrypted Client Hello, so SNI \(host) may not be the real destination (ExternalService \(service) does not allow ECH: spec.tls.ech)"
            case .unknownSource(let address): return "source \(address) is not a known workload"
            case .noTCPService(let address, let port): return "no ExternalService serves TCP \(address) port \(port)"
            case .audited(let base, let policy): return "would be denied (\(base.text)); EgressPolicy \(policy) is in Audit mode"
            case .auditedByGateway(let base): return "would be denied (\(base.text)); the gateway is in Audit mode (spec.mode)"
            }
        }

        public var description: String { text }

        public static func == (lhs: Reason, rhs: Reason) -> Bool { lhs.text == rhs.text }
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
