import CorridorWire
import NIOCore
import Testing

private let retryRandom = HelloRetryGuard.retryRandom

/// A ServerHello handshake message with `random` (legacy_version, session id echo, suite,
/// compression, supported_versions).
private func serverHello(random: [UInt8]) -> [UInt8] {
    let body: [UInt8] = [3, 3] + random + [0] + [0x13, 0x01] + [0] + u16(6) + tlsExtension(0x002b, [3, 4])
    return [2] + u24(body.count) + body
}

private let retryRequest = frame(serverHello(random: retryRandom), recordSize: 16384, version: [3, 3])
private let plainServerHello = frame(serverHello(random: [UInt8](repeating: 0x11, count: 32)), recordSize: 16384, version: [3, 3])
private let changeCipherSpec: [UInt8] = [20, 3, 3, 0, 1, 1]
private let earlyData: [UInt8] = [23, 3, 3, 0, 4, 9, 9, 9, 9]

private func guardFor(_ hello: HelloBuilder = HelloBuilder(), maxHelloBytes: Int = 65536) throws -> HelloRetryGuard {
    let first = try #require(parseHello(hello.records()).info)
    return HelloRetryGuard(first: first, maxHelloBytes: maxHelloBytes)
}

extension HelloRetryGuard {
    /// Shows `bytes` in one piece, or one byte at a time (`drip`); returns the last verdict.
    mutating func client(_ bytes: [UInt8], drip: Bool = false) -> Verdict {
        show(bytes, drip: drip) { guardState, piece in piece.withUnsafeBytes { guardState.client($0) } }
    }

    mutating func server(_ bytes: [UInt8], drip: Bool = false) -> Verdict {
        show(bytes, drip: drip) { guardState, piece in piece.withUnsafeBytes { guardState.server($0) } }
    }

    private mutating func show(_ bytes: [UInt8], drip: Bool, _ feed: (inout HelloRetryGuard, [UInt8]) -> Verdict) -> Verdict {
        guard drip else { return feed(&self, bytes) }
        var verdict = self.verdict
        for byte in bytes { verdict = feed(&self, [byte]) }
        return verdict
    }
}

private extension HelloRetryGuard.Verdict {
    var rejection: ClientHelloRejection? {
        if case .refused(let rejection, _) = self { return rejection }
        return nil
    }
}

@Suite(.timeLimit(.minutes(1)))
struct HelloRetryGuardTests {
    @Test(arguments: [false, true])
    func anOrdinaryServerHelloEndsTheGuard(drip: Bool) throws {
        var retryGuard = try guardFor()
        #expect(retryGuard.server(plainServerHello, drip: drip) == .passed)
        // Past the ServerHello the client's handshake records (a TLS 1.2 key exchange) are its own.
        #expect(retryGuard.client(HelloBuilder(serverName: "other.test").records()) == .passed)
    }

    @Test(arguments: [false, true])
    func theSameSecondHelloPasses(drip: Bool) throws {
        var retryGuard = try guardFor()
        #expect(retryGuard.server(retryRequest + changeCipherSpec, drip: drip) == .inspecting)
        // Middlebox-compatibility change_cipher_spec, then the second hello in small records.
        let second = HelloBuilder { $0.random = [UInt8](repeating: 0x77, count: 32) }
        #expect(retryGuard.client(changeCipherSpec + second.records(recordSize: 50), drip: drip) == .passed)
        #expect(retryGuard.client(earlyData) == .passed)
    }

    @Test(arguments: [false, true])
    func anotherServerNameAfterTheRetryIsRefused(drip: Bool) throws {
        var retryGuard = try guardFor()
        #expect(retryGuard.server(retryRequest, drip: drip) == .inspecting)
        let verdict = retryGuard.client(changeCipherSpec + HelloBuilder(serverName: "blocked.test").records(recordSize: 100), drip: drip)
        #expect(verdict == .refused(.retryHelloChanged, detail: "server_name api.allowed.test, then blocked.test"))
        // It stays refused.
        #expect(retryGuard.client(earlyData) == verdict)
    }

    @Test func otherChangesTheDecisionRestsOnAreRefused() throws {
        let changes: [(String, (inout HelloBuilder) -> Void)] = [
            ("ALPN", { $0.extensions[1] = tlsExtension(0x0010, alpnData(["http/1.1"])) }),
            ("ECH added", { $0.extensions.append(tlsExtension(0xfe0d, [0, 0, 1, 0, 1, 0x42, 0, 0])) }),
        ]
        for (what, change) in changes {
            var retryGuard = try guardFor()
            _ = retryGuard.server(retryRequest)
            #expect(retryGuard.client(HelloBuilder(configure: change).records()).rejection == .retryHelloChanged, "\(what)")
        }
    }

    @Test func aSecondHelloTheParserRefusesIsRefused() throws {
        var retryGuard = try guardFor()
        _ = retryGuard.server(retryRequest)
        let noSNI = HelloBuilder { $0.extensions.removeFirst() }
        let verdict = retryGuard.client(noSNI.records())
        #expect(verdict.rejection == .noSNI)
        if case .refused(_, let detail) = verdict { #expect(detail?.hasPrefix("in the ClientHello after a HelloRetryRequest") == true) }
    }

    /// A 560-byte hello fits a 600-byte limit in one record, but not in small ones: records of 14
    /// payload bytes (19 on the wire) leave a next header visible at the limit; of 10 (15) they
    /// end exactly at it, and of 8 or 18 two bytes short of it, where no next header fits. Each is
    /// refused, never left waiting (and sent on unread).
    @Test(arguments: [14, 10, 8, 18])
    func anOversizedSecondHelloIsRefusedWithinTheLimit(recordSize: Int) throws {
        let base = HelloBuilder().handshake.count
        let padded = HelloBuilder { $0.extensions.append(tlsExtension(0x0015, [UInt8](repeating: 0, count: 560 - base - 4))) }
        #expect(padded.handshake.count == 560)
        for drip in [false, true] {
            var retryGuard = try guardFor(maxHelloBytes: 600)
            _ = retryGuard.server(retryRequest)
            #expect(retryGuard.client(padded.records(recordSize: recordSize), drip: drip).rejection == .helloTooLarge, "drip \(drip)")
        }
    }

    @Test func aMessageBeforeTheServerHelloIsSkippedNotTakenForTheAnswer() throws {
        var retryGuard = try guardFor()
        // A HelloRequest (type 0, empty), then the retry request, in one record.
        let message = [0, 0, 0, 0] + serverHello(random: retryRandom)
        #expect(retryGuard.server(frame(message, recordSize: 16384, version: [3, 3])) == .inspecting)
        #expect(retryGuard.client(HelloBuilder(serverName: "blocked.test").records()).rejection == .retryHelloChanged)
    }

    @Test(arguments: [false, true])
    func aHandshakeRecordBeforeTheServerAnswersIsRefused(drip: Bool) throws {
        var retryGuard = try guardFor()
        // change_cipher_spec and early data may follow the first hello at once; a second hello may not.
        #expect(retryGuard.client(changeCipherSpec + earlyData, drip: drip) == .inspecting)
        let verdict = retryGuard.client(HelloBuilder(serverName: "blocked.test").records(), drip: drip)
        #expect(verdict.rejection == .handshakeBeforeServerHello)
        // Even if the retry then comes.
        _ = retryGuard.server(retryRequest)
        #expect(retryGuard.verdict.rejection == .handshakeBeforeServerHello)
    }

    @Test func anAlertFromTheServerDoesNotEndTheGuard() throws {
        var retryGuard = try guardFor()
        #expect(retryGuard.server([21, 3, 3, 0, 2, 2, 40]) == .inspecting)
        #expect(retryGuard.client(HelloBuilder().records()).rejection == .handshakeBeforeServerHello)
    }

    @Test func aServerThatDoesNotSpeakTLSEndsTheGuard() throws {
        var retryGuard = try guardFor()
        #expect(retryGuard.server(Array("HTTP/1.1 400 Bad Request\r\n\r\n".utf8)) == .passed)
        var other = try guardFor()
        #expect(other.server([22, 2, 0]) == .passed)
    }

    @Test func aRetryAcrossRecordsIsRecognised() throws {
        var retryGuard = try guardFor()
        // The HelloRetryRequest's first 38 bytes in three records, one byte each in the first two.
        let message = serverHello(random: retryRandom)
        let records = frame(Array(message.prefix(1)), recordSize: 1, version: [3, 3])
            + frame(Array(message.dropFirst().prefix(1)), recordSize: 1, version: [3, 3])
            + frame(Array(message.dropFirst(2)), recordSize: 16384, version: [3, 3])
        #expect(retryGuard.server(records) == .inspecting)
        #expect(retryGuard.client(HelloBuilder(serverName: "blocked.test").records()).rejection == .retryHelloChanged)
    }
}
