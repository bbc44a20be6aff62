import NIOCore

/// A fatal TLS alert record, sent to a client whose ClientHello is refused so that it sees a
/// clear TLS-level error instead of a bare reset (RFC 8446 section 6).
///
///     struct { AlertLevel level; AlertDescription description; } Alert;   // in a record of type 21
public enum TLSAlert: UInt8, Sendable {
    case handshakeFailure = 40
    case illegalParameter = 47
    case accessDenied = 49
    case decodeError = 50
    case protocolVersion = 70
    case internalError = 80
    case unrecognizedName = 112

    /// The record bytes: content type 21 (alert), legacy version 3.3, length 2, level fatal (2), description.
    public var recordBytes: [UInt8] { [21, 3, 3, 0, 2, 2, rawValue] }

    public func record(allocator: ByteBufferAllocator) -> ByteBuffer {
        allocator.buffer(bytes: recordBytes)
    }
}
