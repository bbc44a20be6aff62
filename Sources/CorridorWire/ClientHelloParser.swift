import CorridorPolicy
import NIOCore

/// What Corridor learns from a TLS ClientHello without terminating TLS.
public struct ClientHelloInfo: Sendable, Equatable {
    /// The server_name (SNI) host name, normalised by ``HostName/normalize(bytes:)``.
    public var serverName: String
    /// The ALPN protocol names in the client's order; `[]` if the extension is absent.
    public var alpn: [String]
    /// The versions from supported_versions (0x002b) without GREASE values, or `[legacyVersion]`
    /// when the extension is absent.
    public var supportedVersions: [UInt16]
    /// The ClientHello's legacy_version field (0x0303 for TLS 1.2 and 1.3 clients).
    public var legacyVersion: UInt16
    /// True if the encrypted_client_hello extension (0xfe0d) is present, or the code point of an
    /// earlier draft of it or of ESNI (the real server name is hidden either way).
    public var hasECH: Bool
    /// Bytes of the TLS records that carried the ClientHello, record headers included.
    public var helloBytes: Int

    /// Creates a value; the parser is the usual source of these.
    public init(
        serverName: String, alpn: [String], supportedVersions: [UInt16],
        legacyVersion: UInt16, hasECH: Bool, helloBytes: Int
    ) {
        self.serverName = serverName
        self.alpn = alpn
        self.supportedVersions = supportedVersions
        self.legacyVersion = legacyVersion
        self.hasECH = hasECH
        self.helloBytes = helloBytes
    }
}

/// Why the first bytes of a connection are not an acceptable TLS ClientHello.
/// The raw value is a stable snake_case metric label.
public enum ClientHelloRejection: String, Sendable, Error, Equatable, CaseIterable {
    case notTLS = "not_tls"
    case sslv2 = "sslv2"
    case notHandshakeRecord = "not_handshake_record"
    case notClientHello = "not_client_hello"
    case recordTooLarge = "record_too_large"
    case helloTooLarge = "hello_too_large"
    case malformed = "malformed"
    case duplicateExtension = "duplicate_extension"
    case noSNI = "no_sni"
    case emptyServerNameList = "empty_server_name_list"
    case multipleServerNames = "multiple_server_names"
    case unsupportedNameType = "unsupported_name_type"
    case invalidServerName = "invalid_server_name"
    case trailingBytesInHello = "trailing_bytes_in_hello"
    case handshakeAfterHello = "handshake_after_hello"
    case handshakeBeforeServerHello = "handshake_before_server_hello"
    case retryHelloChanged = "retry_hello_changed"

    /// One human sentence describing the problem.
    public var explanation: String {
        switch self {
        case .notTLS: return "the connection did not start with a TLS record"
        case .sslv2: return "the client sent an SSLv2-format hello, which is not supported"
        case .notHandshakeRecord: return "a TLS record other than a handshake record arrived before the ClientHello was complete"
        case .notClientHello: return "the first TLS handshake message is not a ClientHello"
        case .recordTooLarge: return "a TLS record is longer than 2^14 bytes"
        case .helloTooLarge: return "the ClientHello is larger than the configured limit"
        case .malformed: return "the ClientHello has inconsistent or invalid lengths"
        case .duplicateExtension: return "the ClientHello has the same extension more than once"
        case .noSNI: return "the ClientHello has no server_name (SNI) extension"
        case .emptyServerNameList: return "the ClientHello's server_name extension has an empty name list"
        case .multipleServerNames: return "the ClientHello's server_name extension has more than one name"
        case .unsupportedNameType: return "the ClientHello's server_name entry is not of type host_name"
        case .invalidServerName: return "the ClientHello's server_name is not a valid host name"
        case .trailingBytesInHello: return "the ClientHello has bytes after its extensions block"
        case .handshakeAfterHello: return "the ClientHello's records carry another handshake message after it"
        case .handshakeBeforeServerHello: return "the client sent another handshake message before the server answered its ClientHello"
        case .retryHelloChanged: return "the ClientHello sent after a HelloRetryRequest differs from the first in what the decision rests on"
        }
    }
}

/// An internal failure carrying the rejection and an optional detail for logs.
struct ClientHelloFailure: Error, Equatable {
    var reason: ClientHelloRejection
    var detail: String?

    init(_ reason: ClientHelloRejection, _ detail: String? = nil) {
        self.reason = reason
        self.detail = detail
    }
}

/// Incremental parser for the TLS ClientHello at the start of a connection (RFC 8446, 5246, 6066,
/// 7301, ECH draft). It only inspects; the caller relays the bytes unchanged.
///
/// The parser keeps only fixed-size state: how many bytes of complete records it has consumed, how
/// many handshake bytes their payloads hold and the first four of them (the handshake header). Each
/// call looks only at bytes past the last complete record; once the records hold the whole
/// ClientHello, their payloads are gathered in one pass. Feeding it a buffer that grows one byte at a
/// time therefore costs linear time in total, and copying the parser (for example in and out of an
/// enum state) never copies a growing buffer. Every declared length is checked against its parent
/// and every inner layer is parsed from a slice of exactly its declared length.
public struct ClientHelloParser: Sendable {
    /// The result of a ``parse(_:)`` call.
    public enum Outcome: Sendable, Equatable {
        /// The bytes so far are a valid prefix of a ClientHello; call again with more.
        case needMoreData
        /// The ClientHello is complete and acceptable.
        case complete(ClientHelloInfo)
        /// The bytes are not an acceptable ClientHello; `detail` says more for logs.
        case rejected(ClientHelloRejection, detail: String?)
    }

    static let recordHeaderLength = 5
    static let maxRecordLength = 1 << 14
    static let contentTypeHandshake: UInt8 = 22
    static let handshakeTypeClientHello: UInt8 = 1

    /// The most record bytes (headers included) a ClientHello may take.
    public let maxHelloBytes: Int
    /// Bytes of complete records consumed so far, from the caller's readerIndex.
    private var consumed = 0
    /// Handshake bytes carried by the complete records consumed so far.
    private var handshakeBytes = 0
    /// The first (up to) four handshake bytes: msg_type and uint24 length.
    private var handshakeHeader: [UInt8] = []
    /// The first outcome other than needMoreData; later calls return it again.
    private var finished: Outcome?

    /// Creates a parser that rejects a ClientHello whose records take more than `maxHelloBytes`.
    public init(maxHelloBytes: Int = 65536) {
        self.maxHelloBytes = maxHelloBytes
    }

    /// `buffer` holds ALL bytes received from the client so far (readerIndex at the first byte).
    /// Call again each time more bytes arrive, with the grown buffer. `buffer` is not modified.
    /// Bytes after the ClientHello's records are ignored. Once the outcome is not `.needMoreData`, every
    /// later call returns the same outcome.
    public mutating func parse(_ buffer: ByteBuffer) -> Outcome {
        if let finished { return finished }
        let outcome: Outcome
        do {
            if let info = try self.parseRecords(buffer) {
                outcome = .complete(info)
            } else {
                return .needMoreData
            }
        } catch {
            outcome = .rejected(error.reason, detail: error.detail)
        }
        self.finished = outcome
        return outcome
    }

    /// The record layer (RFC 8446 section 5.1):
    ///
    ///     struct {
    ///         ContentType type;                     /* 22 = handshake */
    ///         ProtocolVersion legacy_record_version; /* major byte 3 */
    ///         uint16 length;                        /* 1..2^14 */
    ///         opaque fragment[TLSPlaintext.length];
    ///     } TLSPlaintext;
    ///
    /// Consumes every complete record, counting its payload as handshake bytes, until the ClientHello
    /// is complete. Returns nil when more bytes are needed.
    private mutating func parseRecords(_ buffer: ByteBuffer) throws(ClientHelloFailure) -> ClientHelloInfo? {
        while true {
            if self.consumed > 0, self.consumed + Self.recordHeaderLength + 1 > self.maxHelloBytes {
                // The hello is not complete, and no further record fits within the limit: a
                // caller that keeps only `maxHelloBytes` would otherwise wait for a header forever.
                throw ClientHelloFailure(.helloTooLarge, "\(self.consumed) record bytes and the ClientHello not complete, limit \(self.maxHelloBytes)")
            }
            let available = buffer.readableBytes - self.consumed
            guard available > 0 else { return nil }
            let start = buffer.readerIndex + self.consumed
            if self.consumed == 0, !(try Self.classifyFirstBytes(buffer, at: start, available: available)) {
                return nil
            }
            guard let length = try self.recordHeader(buffer, at: start, available: available) else {
                return nil
            }
            let payloadStart = start + Self.recordHeaderLength
            guard available >= Self.recordHeaderLength + length,
                let payload = buffer.getSlice(at: payloadStart, length: length)
            else {
                // Partial record: look at what we have of the handshake header to fail early.
                let partial = min(max(available - Self.recordHeaderLength, 0), 4)
                try self.checkHandshakeHeader(peeking: buffer.getBytes(at: payloadStart, length: partial) ?? [])
                return nil
            }
            if self.handshakeHeader.count < 4 {
                self.handshakeHeader += payload.getBytes(at: payload.readerIndex, length: min(length, 4 - self.handshakeHeader.count)) ?? []
            }
            self.handshakeBytes += length
            self.consumed += Self.recordHeaderLength + length
            if let info = try self.parseHandshake(buffer) { return info }
        }
    }

    /// Classifies the first bytes of the connection before trusting them as a record header.
    /// Returns false when more bytes are needed to decide.
    private static func classifyFirstBytes(
        _ buffer: ByteBuffer, at start: Int, available: Int
    ) throws(ClientHelloFailure) -> Bool {
        guard let first = buffer.getInteger(at: start, as: UInt8.self) else { return false }
        switch first {
        case contentTypeHandshake:
            return true
        case 0x80...:
            // SSLv2 two-byte header: msg_length with the high bit set, then msg_type 1 (CLIENT-HELLO).
            guard available >= 3, let type = buffer.getInteger(at: start + 2, as: UInt8.self) else { return false }
            if type == 1 { throw ClientHelloFailure(.sslv2) }
            throw ClientHelloFailure(.notTLS, "first byte 0x\(String(first, radix: 16)) is not a TLS content type")
        case 20, 21, 23, 24:
            // Another TLS content type (change_cipher_spec, alert, application_data, heartbeat).
            guard available >= 2, let major = buffer.getInteger(at: start + 1, as: UInt8.self) else { return false }
            if major == 3 { throw ClientHelloFailure(.notHandshakeRecord, "record content type \(first)") }
            throw ClientHelloFailure(.notTLS, "record version major byte \(major)")
        default:
            throw ClientHelloFailure(.notTLS, "first byte 0x\(String(first, radix: 16)) is not a TLS content type")
        }
    }

    /// Checks as much of a record header as has arrived. Returns the record length once all five
    /// bytes are there, nil before.
    private func recordHeader(_ buffer: ByteBuffer, at start: Int, available: Int) throws(ClientHelloFailure) -> Int? {
        guard let type = buffer.getInteger(at: start, as: UInt8.self) else { return nil }
        guard type == Self.contentTypeHandshake else {
            throw ClientHelloFailure(.notHandshakeRecord, "record content type \(type) before the ClientHello was complete")
        }
        guard available >= 2, let major = buffer.getInteger(at: start + 1, as: UInt8.self) else { return nil }
        guard major == 3 else {
            throw ClientHelloFailure(self.consumed == 0 ? .notTLS : .malformed, "record version major byte \(major)")
        }
        guard available >= Self.recordHeaderLength,
            let length16 = buffer.getInteger(at: start + 3, as: UInt16.self)
        else { return nil }
        let length = Int(length16)
        if length == 0 { throw ClientHelloFailure(.malformed, "empty handshake record") }
        if length > Self.maxRecordLength {
            throw ClientHelloFailure(.recordTooLarge, "record length \(length)")
        }
        if self.consumed + Self.recordHeaderLength + length > self.maxHelloBytes {
            throw ClientHelloFailure(
                .helloTooLarge,
                "records would take \(self.consumed + Self.recordHeaderLength + length) bytes, limit \(self.maxHelloBytes)")
        }
        return length
    }

    /// Checks the handshake header from the complete records' first bytes plus up to four `peeked` bytes of a
    /// record still arriving (RFC 8446 section 4):
    ///
    ///     struct {
    ///         HandshakeType msg_type;    /* 1 = client_hello */
    ///         uint24 length;             /* remaining bytes in message */
    ///         ClientHello body;
    ///     } Handshake;
    ///
    /// Returns the declared body length once four header bytes are known.
    @discardableResult
    private func checkHandshakeHeader(peeking peeked: [UInt8]) throws(ClientHelloFailure) -> Int? {
        let header = self.handshakeHeader + peeked.prefix(4 - self.handshakeHeader.count)
        guard let type = header.first else { return nil }
        guard type == Self.handshakeTypeClientHello else {
            throw ClientHelloFailure(.notClientHello, "handshake message type \(type)")
        }
        guard header.count == 4 else { return nil }
        let length = Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        // The fewest record bytes that can carry 4 + length handshake bytes.
        let handshakeBytes = 4 + length
        let records = (handshakeBytes + Self.maxRecordLength - 1) / Self.maxRecordLength
        let minimumRecordBytes = handshakeBytes + records * Self.recordHeaderLength
        if minimumRecordBytes > self.maxHelloBytes {
            throw ClientHelloFailure(.helloTooLarge, "ClientHello length \(length), limit \(self.maxHelloBytes) record bytes")
        }
        return length
    }

    /// Once the complete records hold the whole ClientHello, gathers its bytes from their payloads
    /// (walking the record headers again, once) and parses the body from a slice of exactly its
    /// declared length. Handshake bytes after it (a coalesced next message) are refused: no
    /// message may follow a ClientHello before the server answers it, and a server could read
    /// one as a second ClientHello (see ``HelloRetryGuard``).
    private func parseHandshake(_ buffer: ByteBuffer) throws(ClientHelloFailure) -> ClientHelloInfo? {
        guard let length = try self.checkHandshakeHeader(peeking: []), self.handshakeBytes >= 4 + length else {
            return nil
        }
        if self.handshakeBytes > 4 + length {
            throw ClientHelloFailure(.handshakeAfterHello, "\(self.handshakeBytes - 4 - length) handshake bytes after the ClientHello")
        }
        var handshake = ByteBuffer()
        var offset = buffer.readerIndex
        while handshake.readableBytes < 4 + length, offset < buffer.readerIndex + self.consumed {
            guard let recordLength = buffer.getInteger(at: offset + 3, as: UInt16.self),
                let payload = buffer.getSlice(at: offset + Self.recordHeaderLength, length: Int(recordLength))
            else { throw ClientHelloFailure(.malformed, "the records changed between calls") }
            if handshake.readableBytes == 0, Int(recordLength) >= 4 + length {
                handshake = payload  // the usual case, one record: no copy
            } else {
                handshake.writeImmutableBuffer(payload)
            }
            offset += Self.recordHeaderLength + Int(recordLength)
        }
        guard let body = handshake.getSlice(at: handshake.readerIndex + 4, length: length) else {
            throw ClientHelloFailure(.malformed, "the records changed between calls")
        }
        return try Self.parseClientHello(body, helloBytes: self.consumed)
    }
}
