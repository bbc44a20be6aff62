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
    public static let retryRandom: [UInt8] = [
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

    /// Where a walk over one direction's records stands. Fixed-size: it allocates nothing.
    private struct RecordCursor {
        /// The header bytes read so far of a header not yet complete, the first in the high byte.
        var header: UInt64 = 0
        var headerCount = 0
        /// Payload bytes of the current record still to come (0: a header is next).
        var remaining = 0
        /// The content type of the record whose payload is being read.
        var contentType: UInt8 = 0

        /// The `n`th byte (0-based) of the header read so far.
        func headerByte(_ n: Int) -> UInt8 { UInt8(truncatingIfNeeded: header >> (8 * UInt64(headerCount - 1 - n))) }

        /// Takes header bytes from `bytes[index...]` until the header is whole; returns how many.
        mutating func takeHeader(_ bytes: UnsafeRawBufferPointer, at index: Int) -> Int {
            let take = min(5 - headerCount, bytes.count - index)
            for offset in 0..<take { header = header << 8 | UInt64(bytes[index + offset]) }
            headerCount += take
            return take
        }

        /// The header is whole: start its payload, and make room for the next header.
        mutating func startPayload() {
            contentType = headerByte(0)
            remaining = Int(headerByte(3)) << 8 | Int(headerByte(4))
            header = 0
            headerCount = 0
        }
    }

    private let first: ClientHelloInfo
    private let maxHelloBytes: Int
    private var phase = Phase.awaitingServer
    private var clientCursor = RecordCursor()
    private var serverCursor = RecordCursor()
    /// How many bytes of the server's current handshake message have been read (up to
    /// ``serverHelloPrefix``), its type and length (from its header), and whether the random
    /// read so far is the HelloRetryRequest's.
    private var serverRead = 0
    private var serverType: UInt8 = 0
    private var serverLength = 0
    private var serverRandomIsRetry = true
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
                index += clientCursor.takeHeader(bytes, at: index)
                guard clientCursor.headerCount == 5 else { continue }
                guard clientCursor.headerByte(0) == ClientHelloParser.contentTypeHandshake else {
                    // change_cipher_spec, alert, early data: the server decides what they mean.
                    clientCursor.startPayload()
                    continue
                }
                guard case .retried = phase else {
                    phase = .refused(.handshakeBeforeServerHello, detail: nil)
                    continue
                }
                // The second ClientHello starts here: the parser reads its records whole, from this
                // header (which it may refuse already) and what follows.
                var records = ByteBuffer()
                for n in 0..<5 { records.writeInteger(clientCursor.headerByte(n)) }
                clientCursor.header = 0
                clientCursor.headerCount = 0
                var parser = ClientHelloParser(maxHelloBytes: maxHelloBytes)
                phase = checkSecondHello(parser.parse(records), parser: parser, records: records)
            }
        }
        return verdict
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
            index += serverCursor.takeHeader(bytes, at: index)
            guard (20...24).contains(serverCursor.headerByte(0)), serverCursor.headerCount < 2 || serverCursor.headerByte(1) == 3 else {
                // Not a TLS record: there is no handshake for a second ClientHello to continue.
                phase = .passed
                break
            }
            guard serverCursor.headerCount == 5 else { continue }
            serverCursor.startPayload()
        }
        return verdict
    }

    /// Handshake bytes from the server, message by message: a message that is not a ServerHello
    /// (which a conforming server never sends first) is skipped, and the guard stays; the first
    /// ServerHello's random decides.
    private mutating func serverHandshake(_ bytes: UnsafeRawBufferPointer) {
        // A byte at a time: at most 38 of them decide, and the rest are skipped in one step.
        var index = 0
        while index < bytes.count, case .awaitingServer = phase {
            if serverSkip > 0 {
                let skip = min(serverSkip, bytes.count - index)
                serverSkip -= skip
                index += skip
                continue
            }
            let byte = bytes[index]
            index += 1
            switch serverRead {
            case 0: serverType = byte
            case 1...3: serverLength = serverLength << 8 | Int(byte)
            case 4, 5: break  // legacy_version
            default: if byte != Self.retryRandom[serverRead - 6] { serverRandomIsRetry = false }
            }
            serverRead += 1
            if serverRead == Self.handshakeHeader,
               serverType != Self.handshakeServerHello || serverLength < Self.serverHelloPrefix - Self.handshakeHeader {
                serverSkip = serverLength
                serverRead = 0
                serverLength = 0
            } else if serverRead == Self.serverHelloPrefix {
                phase = serverRandomIsRetry ? .retried : .passed
            }
        }
    }
}
