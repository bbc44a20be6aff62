import CorridorPolicy

/// Why a new connection was refused the moment it was accepted, before it was read: the gateway
/// is full, its source holds too many, or its record could not be written.
public enum AdmissionRefusal: Error, Sendable, Equatable {
    /// `spec.limits.maxConnections` connections are open.
    case connectionLimit(Int)
    /// The source already holds `spec.limits.maxConnectionsPerSource` connections.
    case sourceConnectionLimit(Int)
    /// Access records cannot be written (why) and `spec.logging.accessLog.onWriteFailure` is Deny.
    case accessLogUnwritable(String)

    var cause: CloseCause {
        switch self {
        case .connectionLimit: return .connectionLimit
        case .sourceConnectionLimit: return .sourceConnectionLimit
        case .accessLogUnwritable: return .accessLogUnwritable
        }
    }

    /// The sentence in the record.
    var reason: String {
        switch self {
        case .connectionLimit(let limit):
            return "the gateway already has \(limit) open connections (spec.limits.maxConnections)"
        case .sourceConnectionLimit(let limit):
            return "this source already has \(limit) open connections (spec.limits.maxConnectionsPerSource)"
        case .accessLogUnwritable(let failure):
            return "\(failure); connections are refused while they cannot be recorded (spec.logging.accessLog.onWriteFailure: Deny)"
        }
    }
}
