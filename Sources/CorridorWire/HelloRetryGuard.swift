import NIOCore

/// Keeps a relayed TLS connection to the ClientHello it was judged on, across a
/// HelloRetryRequest (RFC 8446 section 4.1.4).
///
/// A TLS 1.3 server that cannot use the client's key shares answers the first ClientHello with a
/// HelloRetryRequest, and the client sends a second ClientHello. The gateway decides on the first
/// one; without this guard a client could name an allowed server in it, provoke the retry (an
/// empty key_share does), and name another server in the second, which a front serving several
/// names would then serve. The RFC requires the second hello to repeat the first, except for key
/// shares, early data, the cookie, PSKs and padding: this guard holds it to the same server name,
/// ALPN list and ECH use, the facts the decision rests on.
///
/// The relay shows it both directions' bytes, from the byte after the first ClientHello's records
/// (``client(_:)``) and from the server's first byte (``server(_:)``), before sending them on. It
/// walks the TLS record layer of each:
/// - Before the server's ServerHello, the client may send change_cipher_spec, alerts and early
///   data, but no handshake record: nothing may follow a ClientHello until the server has
///   answered it.
/// - The server's first ServerHello decides (its handshake messages are walked one by one, and
///   one of another type, which no conforming server sends first, is skipped): one whose random
///   is the HelloRetryRequest value arms the check of the second ClientHello; any other ends the
///   guard, as do bytes that are not TLS records.
/// - After a HelloRetryRequest, the client's next handshake records must carry a ClientHello that
///   ``ClientHelloParser`` accepts, within `maxHelloBytes`, and that agrees with the first; then
///   the guard ends.
///
/// Its state is fixed-size, except the second ClientHello's records, which it holds (at most
/// `maxHelloBytes`) until they are whole.
public struct HelloRetryGuard: Sendable {
    /// What the relay does with the bytes just shown.
    public enum Verdict: Sendable, Equatable {
        /// Send them on and keep showing both directions' bytes.
        case inspecting
        /// Send them on; the guard has nothing more to check.
        case passed
        /// Do not send them: the client broke the rule this names. The connection must end.
        case refused(ClientHelloRejection, detail: String?)
    }

    /// The `random` of a ServerHello that is a HelloRetryRequest: SHA-256("HelloRetryRequest").
    static let retryRandom: [UInt8] = [
        0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
        0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
    ]
    /// msg_type (1), length (3), legacy_version (2), random (32): what tells a HelloRetryRequest.
    static let serverHelloPrefix = 38
    static let handshakeHeader = 4
    static let handshakeServerHello: UInt8 = 2

    private enum Phase {
        /// The server has not sent its first handshake message yet.
        case awaitingServer
        /// The server asked for a retry; the client's next handshake message is not there yet.
        case retried
        /// The second ClientHello's records, from the first one's header, until they are whole.
        case checkingSecondHello(ClientHelloParser, ByteBuffer)
        case passed
        case refused(ClientHelloRejection, detail: String?)
    }

    /// Where a walk over one direction's records stands.
    private struct RecordCursor {
        /// The header of the record being read, while it is incomplete (fewer than five bytes).
        var header: [UInt8] = []
        /// Payload bytes of the current record still to come (0: a header is next).
        var remaining = 0
        /// The content type of the record whose payload is being read.
        var contentType: UInt8 = 0
    }

    private let first: ClientHelloInfo
    private let maxHelloBytes: Int
    private var phase = Phase.awaitingServer
    private var clientCursor = RecordCursor()
    private var serverCursor = RecordCursor()
    /// The first bytes of the server's current handshake message (up to ``serverHelloPrefix``).
    private var serverHello: [UInt8] = []
    /// Bytes still to skip of a server handshake message that is not a ServerHello.
    private var serverSkip = 0

    /// A guard for a connection judged on `first`; a second ClientHello may take `maxHelloBytes`.
    public init(first: ClientHelloInfo, maxHelloBytes: Int) {
        self.first = first
        self.maxHelloBytes = maxHelloBytes
    }

    /// The verdict as it stands.
    public var verdict: Verdict {
        switch phase {
        case .awaitingServer, .retried, .checkingSecondHello: return .inspecting
        case .passed: return .passed
        case .refused(let rejection, let detail): return .refused(rejection, detail: detail)
        }
    }

    // MARK: the client's bytes

    /// Bytes from the client, after the first ClientHello's records, in order.
    public mutating func client(_ bytes: UnsafeRawBufferPointer) -> Verdict {
        var index = 0
        while index < bytes.count {
            switch phase {
            case .passed, .refused:
                return verdict
            case .checkingSecondHello(var parser, var records):
                phase = .passed  // no copy of `records` while it grows
                let take = min(bytes.count - index, maxHelloBytes - records.readableBytes)
                records.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[index..<(index + take)]))
                index = bytes.count
                phase = checkSecondHello(parser.parse(records), parser: parser, records: records)
                if case .checkingSecondHello = phase, records.readableBytes >= maxHelloBytes {
                    // Never sent on unread: a hello the parser still waits for past the limit is too large.
                    phase = .refused(.helloTooLarge, detail: "in the ClientHello after a HelloRetryRequest: more than \(maxHelloBytes) record bytes")
                }
            case .awaitingServer, .retried:
                if clientCursor.remaining > 0 {
                    let skip = min(clientCursor.remaining, bytes.count - index)
                    clientCursor.remaining -= skip
                    index += skip
                    continue
                }
                let take = min(5 - clientCursor.header.count, bytes.count - index)
                clientCursor.header += bytes[index..<(index + take)]
                index += take
                guard clientCursor.header.count == 5 else { continue }
                let header = clientCursor.header
                clientCursor.header = []
                guard header[0] == ClientHelloParser.contentTypeHandshake else {
                    // change_cipher_spec, alert, early data: the server decides what they mean.
                    clientCursor.remaining = Int(header[3]) << 8 | Int(header[4])
                    continue
                }
                guard case .retried = phase else {
                    phase = .refused(.handshakeBeforeServerHello, detail: nil)
                    continue
                }
                // The second ClientHello starts here: the parser reads its records whole.
                var records = ByteBuffer()
                records.writeBytes(header)
                phase = .checkingSecondHello(ClientHelloParser(maxHelloBytes: maxHelloBytes), records)
                if index == bytes.count { phase = checkSecondHello(records: records) }
            }
        }
        return verdict
    }

    private func checkSecondHello(records: ByteBuffer) -> Phase {
        var parser = ClientHelloParser(maxHelloBytes: maxHelloBytes)
        return checkSecondHello(parser.parse(records), parser: parser, records: records)
    }

    private func checkSecondHello(_ outcome: ClientHelloParser.Outcome, parser: ClientHelloParser, records: ByteBuffer) -> Phase {
        switch outcome {
        case .needMoreData:
            return .checkingSecondHello(parser, records)
        case .rejected(let rejection, let detail):
            return .refused(rejection, detail: "in the ClientHello after a HelloRetryRequest" + (detail.map { ": \($0)" } ?? ""))
        case .complete(let second):
            if second.serverName != first.serverName {
                return .refused(.retryHelloChanged, detail: "server_name \(first.serverName), then \(second.serverName)")
            }
            if second.alpn != first.alpn {
                return .refused(.retryHelloChanged, detail: "ALPN \(first.alpn), then \(second.alpn)")
            }
            if second.hasECH != first.hasECH {
                return .refused(.retryHelloChanged, detail: second.hasECH ? "encrypted_client_hello added" : "encrypted_client_hello dropped")
            }
            return .passed
        }
    }

    // MARK: the server's bytes

    /// Bytes from the server, from its first, in order. Never refused: the server is the one the
    /// connection was allowed to reach.
    public mutating func server(_ bytes: UnsafeRawBufferPointer) -> Verdict {
        var index = 0
        while index < bytes.count, case .awaitingServer = phase {
            if serverCursor.remaining > 0 {
                let take = min(serverCursor.remaining, bytes.count - index)
                if serverCursor.contentType == ClientHelloParser.contentTypeHandshake {
                    serverHandshake(UnsafeRawBufferPointer(rebasing: bytes[index..<(index + take)]))
                }
                serverCursor.remaining -= take
                index += take
                continue
            }
            let take = min(5 - serverCursor.header.count, bytes.count - index)
            serverCursor.header += bytes[index..<(index + take)]
            index += take
            let header = serverCursor.header
            guard (20...24).contains(header[0]), header.count < 2 || header[1] == 3 else {
                // Not a TLS record: there is no handshake for a second ClientHello to continue.
                phase = .passed
                break
            }
            guard header.count == 5 else { continue }
            serverCursor.header = []
            serverCursor.contentType = header[0]
            serverCursor.remaining = Int(header[3]) << 8 | Int(header[4])
        }
        return verdict
    }

    /// Handshake bytes from the server, message by message: a message that is not a ServerHello
    /// (which a conforming server never sends first) is skipped, and the guard stays; the first
    /// ServerHello's random decides.
    private mutating func serverHandshake(_ bytes: UnsafeRawBufferPointer) {
        var index = 0
        while index < bytes.count, case .awaitingServer = phase {
            if serverSkip > 0 {
                let skip = min(serverSkip, bytes.count - index)
                serverSkip -= skip
                index += skip
                continue
            }
            let wanted = serverHello.count < Self.handshakeHeader ? Self.handshakeHeader : Self.serverHelloPrefix
            let take = min(wanted - serverHello.count, bytes.count - index)
            serverHello += bytes[index..<(index + take)]
            index += take
            if serverHello.count == Self.handshakeHeader {
                let length = Int(serverHello[1]) << 16 | Int(serverHello[2]) << 8 | Int(serverHello[3])
                if serverHello[0] != Self.handshakeServerHello || length < Self.serverHelloPrefix - Self.handshakeHeader {
                    serverSkip = length
                    serverHello = []
                }
            } else if serverHello.count == Self.serverHelloPrefix {
                phase = serverHello[6..<Self.serverHelloPrefix].elementsEqual(Self.retryRandom) ? .retried : .passed
            }
        }
    }
}
