/// The keys of the access record, one constant each, so every record and every test spells them the same way.
public enum LogKey {
    public static let time = "time"
    public static let connectionID = "id"
    public static let listener = "listener"
    public static let source = "src"
    public static let identity = "identity"
    public static let namespace = "namespace"
    public static let workload = "workload"
    public static let serviceAccount = "serviceAccount"
    public static let labels = "labels"
    public static let sni = "sni"
    public static let connectHost = "connectHost"
    public static let alpn = "alpn"
    public static let tlsVersions = "tlsVersions"
    public static let ech = "ech"
    public static let port = "port"
    public static let method = "method"
    public static let host = "host"
    public static let path = "path"
    public static let status = "status"
    public static let resolved = "resolved"
    public static let originalDestination = "originalDst"
    public static let addressMismatch = "addressMismatch"
    public static let decision = "decision"
    public static let externalService = "externalService"
    public static let egressPolicy = "egressPolicy"
    public static let reason = "reason"
    public static let hint = "hint"
    public static let bytesUp = "bytesUp"
    public static let bytesDown = "bytesDown"
    public static let durationMs = "durationMs"
    public static let closeCause = "closeCause"
    public static let policyGeneration = "policyGeneration"
    public static let signals = "signals"
    /// `open` (the live stream only), `interim`, or `close` (the one final record per connection).
    public static let event = "event"
}

/// Why a connection ended: a stable value for the access record and metrics.
public enum CloseCause: String, Sendable, CaseIterable {
    case completed = "completed"
    case denied = "denied"
    case clientClosedEarly = "client_closed_before_hello"
    case clientClosedWhileConnecting = "client_closed_while_connecting"
    case handshakeTimeout = "handshake_timeout"
    case invalidClientHello = "invalid_client_hello"
    case invalidConnectRequest = "invalid_connect_request"
    case resolveFailed = "resolve_failed"
    case destinationBlocked = "destination_blocked"
    case connectFailed = "connect_failed"
    case connectTimeout = "connect_timeout"
    case upstreamTimeout = "upstream_timeout"
    case idleTimeout = "idle_timeout"
    case connectionLimit = "connection_limit"
    case sourceConnectionLimit = "source_connection_limit"
    /// Refused because its record could not be written (`onWriteFailure: Deny`).
    case accessLogUnwritable = "access_log_unwritable"
    case clientError = "client_error"
    case upstreamError = "upstream_error"
    case shutdown = "shutdown"
    /// A policy change denies what the connection was opened for (`spec.reload.liveConnections: Recheck`).
    case policyRevoked = "policy_revoked"
    /// The gateway could not carry on with the connection for a reason of its own (a plain-HTTP
    /// connection that could not be handed to the HTTP path); its operational log says why.
    case internalError = "internal_error"

    /// What would let a connection that ended this way through, for its record when the policy
    /// engine gave no hint (the ending was not a policy decision).
    var denialHint: String? {
        switch self {
        case .denied, .completed, .resolveFailed, .connectFailed, .connectTimeout, .upstreamTimeout, .idleTimeout, .clientError,
             .upstreamError, .shutdown, .clientClosedWhileConnecting, .destinationBlocked:
            return nil
        case .clientClosedEarly, .handshakeTimeout:
            return "the client must send a complete ClientHello (or CONNECT request, or HTTP request head) within spec.limits.handshakeTimeout"
        case .invalidClientHello:
            return "the connection must start with a valid TLS ClientHello that names its host (SNI, not an IP address); no policy change allows this"
        case .invalidConnectRequest:
            return "send CONNECT host:port with a host name; no policy change allows this"
        case .connectionLimit:
            return "raise spec.limits.maxConnections, or find what holds the connections open"
        case .sourceConnectionLimit:
            return "raise spec.limits.maxConnectionsPerSource, or find what in this workload holds the connections open"
        case .accessLogUnwritable:
            return "free space for the access log (or fix what fails its writes); no policy change allows this"
        case .policyRevoked:
            return nil
        case .internalError:
            return "a failure of the gateway, not a policy decision: its operational log says why; retry the request"
        }
    }
}
