import CorridorWire
import NIOCore
import Testing

/// A captured ClientHello and what the parser must find in it.
struct RealHello: Sendable, CustomTestStringConvertible {
    var name: String
    var bytes: [UInt8]
    var serverName: String
    var alpn: [String]
    var versions: [UInt16]
    var testDescription: String { name }

    static let all: [RealHello] = [
        RealHello(
            name: "curl 7.88.1", bytes: Fixtures.curl, serverName: "api.allowed.test",
            alpn: ["h2", "http/1.1"], versions: [0x0304, 0x0303, 0x0302, 0x0301]),
        RealHello(
            name: "openssl s_client", bytes: Fixtures.openssl, serverName: "api.allowed.test",
            alpn: ["h2", "http/1.1"], versions: [0x0304, 0x0303, 0x0302, 0x0301]),
        RealHello(
            name: "python ssl", bytes: Fixtures.python, serverName: "python.allowed.test",
            alpn: [], versions: [0x0304, 0x0303]),
        RealHello(
            name: "openssl s_client, 360 ALPN names, two records", bytes: Fixtures.bigALPN,
            serverName: "big.allowed.test",
            alpn: (0..<360).map { "proto-" + String(String($0 + 100_000).dropFirst()) + "-" + String(repeating: "x", count: 40) },
            versions: [0x0304, 0x0303, 0x0302, 0x0301]),
    ]

    func check(_ outcome: ClientHelloParser.Outcome, helloBytes: Int? = nil) {
        guard let info = outcome.info else {
            Issue.record("\(name): expected complete, got \(outcome)")
            return
        }
        #expect(info.serverName == serverName)
        #expect(info.alpn == alpn)
        #expect(info.supportedVersions == versions)
        #expect(info.legacyVersion == 0x0303)
        #expect(info.hasECH == false)
        #expect(info.helloBytes == (helloBytes ?? bytes.count))
    }
}

@Suite(.timeLimit(.minutes(1)))
struct ClientHelloRealTests {
    @Test(arguments: RealHello.all)
    func parsesInOneCall(hello: RealHello) {
        hello.check(parseHello(hello.bytes))
    }

    @Test(arguments: RealHello.all)
    func parsesWhenDrippedOneByteAtATime(hello: RealHello) {
        let (outcome, used) = dripHello(hello.bytes)
        hello.check(outcome)
        #expect(used == hello.bytes.count, "decided only once the last byte arrived")
    }

    @Test(arguments: RealHello.all, [1, 2, 7, 100, 512, 16384])
    func parsesWhenReframedIntoSmallRecords(hello: RealHello, recordSize: Int) {
        let reframed = reframe(hello.bytes, recordSize: recordSize)
        hello.check(parseHello(reframed, maxHelloBytes: 1 << 20), helloBytes: reframed.count)
    }

    @Test(arguments: RealHello.all)
    func reframedAndDripped(hello: RealHello) {
        let reframed = reframe(hello.bytes, recordSize: 3)
        hello.check(dripHello(reframed, maxHelloBytes: 1 << 20).0, helloBytes: reframed.count)
    }

    @Test(arguments: RealHello.all)
    func bytesAfterTheHelloAreIgnored(hello: RealHello) {
        let extras: [[UInt8]] = [
            [23, 3, 3, 0, 5, 1, 2, 3, 4, 5],  // early data record
            [21, 3, 3, 0, 2, 2, 40],  // alert
            Array("GET / HTTP/1.1\r\n\r\n".utf8),
            [UInt8](repeating: 0, count: 70000),
        ]
        for extra in extras {
            hello.check(parseHello(hello.bytes + extra))
            var parser = ClientHelloParser()
            #expect(parser.parse(buffer(Array(hello.bytes.dropLast()))) == .needMoreData)
            hello.check(parser.parse(buffer(hello.bytes + extra)))
        }
    }

    @Test(arguments: RealHello.all)
    func everyStrictPrefixNeedsMoreData(hello: RealHello) {
        // Cheap for the small ones; for the big one, sample.
        let step = hello.bytes.count > 2000 ? 97 : 1
        for length in stride(from: 0, to: hello.bytes.count, by: step) {
            #expect(parseHello(Array(hello.bytes.prefix(length))) == .needMoreData)
        }
    }

    @Test func callerBufferIndicesAreUntouched() {
        var parser = ClientHelloParser()
        var input = ByteBuffer(bytes: [0xde, 0xad] + Fixtures.openssl)
        input.moveReaderIndex(forwardBy: 2)
        let before = (input.readerIndex, input.writerIndex)
        RealHello.all[1].check(parser.parse(input))
        #expect((input.readerIndex, input.writerIndex) == before)
    }

    @Test func finalOutcomeIsSticky() {
        var parser = ClientHelloParser()
        let first = parser.parse(buffer(Fixtures.curl))
        #expect(first.info != nil)
        #expect(parser.parse(buffer(Array("garbage".utf8))) == first)
        var rejecting = ClientHelloParser()
        let rejected = rejecting.parse(buffer("GET / HTTP/1.1\r\n"))
        #expect(rejected.rejection == .notTLS)
        #expect(rejecting.parse(buffer(Fixtures.curl)) == rejected)
    }

    @Test func capCountsRecordBytes() {
        let big = Fixtures.bigALPN
        hasOutcome(parseHello(big, maxHelloBytes: big.count), complete: true)
        #expect(parseHello(big, maxHelloBytes: big.count - 1).rejection == .helloTooLarge)
        #expect(parseHello(Fixtures.curl, maxHelloBytes: 516).rejection == .helloTooLarge)
        // Reframed into 1 KiB records the same hello needs more header bytes.
        let reframed = reframe(big, recordSize: 1024)
        #expect(parseHello(reframed, maxHelloBytes: big.count).rejection == .helloTooLarge)
        hasOutcome(parseHello(reframed, maxHelloBytes: reframed.count), complete: true)
    }

    @Test func tooLargeIsDecidedFromTheDeclaredLength() {
        // Only the record header and the handshake header: the declared length already exceeds the cap.
        let (outcome, used) = dripHello(reframe(Fixtures.bigALPN, recordSize: 100), maxHelloBytes: 19000)
        #expect(outcome.rejection == .helloTooLarge)
        #expect(used == 9)
        // A record header that alone passes the cap is refused at its fifth byte.
        let (byRecord, usedByRecord) = dripHello(Fixtures.bigALPN, maxHelloBytes: 16384)
        #expect(byRecord.rejection == .helloTooLarge)
        #expect(usedByRecord == 5)
    }

    private func hasOutcome(_ outcome: ClientHelloParser.Outcome, complete: Bool) {
        #expect((outcome.info != nil) == complete, "\(outcome)")
    }
}
