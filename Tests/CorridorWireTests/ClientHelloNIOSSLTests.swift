import CorridorWire
import NIOCore
import Testing

/// The ClientHello of swift-nio-ssl (see `NIOSSLClientHelloFixture`), run through the checks that
/// `ClientHelloRealTests` applies to the other captured clients.
@Suite(.timeLimit(.minutes(1)))
struct ClientHelloNIOSSLTests {
    static let hello = RealHello(
        name: "swift-nio-ssl 2.37.6", bytes: NIOSSLClientHelloFixture.bytes, serverName: "api.allowed.test",
        alpn: ["h2", "http/1.1"], versions: [0x0304, 0x0303, 0x0302, 0x0301])

    @Test func fixtureIsOneHandshakeRecord() {
        let bytes = Self.hello.bytes
        #expect(bytes.count == 1497)
        #expect(Array(bytes.prefix(5)) == [22, 0x03, 0x01] + u16(bytes.count - 5))
    }

    @Test func parsesInOneCall() {
        let outcome = parseHello(Self.hello.bytes)
        Self.hello.check(outcome)
        #expect(outcome.info?.supportedVersions.contains(0x0304) == true)
    }

    @Test func parsesWhenDrippedOneByteAtATime() {
        let (outcome, used) = dripHello(Self.hello.bytes)
        Self.hello.check(outcome)
        #expect(used == Self.hello.bytes.count, "decided only once the last byte arrived")
    }

    @Test(arguments: [1, 2, 7, 100, 512, 16384])
    func parsesWhenReframedIntoSmallRecords(recordSize: Int) {
        let reframed = reframe(Self.hello.bytes, recordSize: recordSize)
        Self.hello.check(parseHello(reframed, maxHelloBytes: 1 << 20), helloBytes: reframed.count)
    }

    @Test func reframedAndDripped() {
        let reframed = reframe(Self.hello.bytes, recordSize: 3)
        let (outcome, used) = dripHello(reframed, maxHelloBytes: 1 << 20)
        Self.hello.check(outcome, helloBytes: reframed.count)
        #expect(used == reframed.count)
    }
}
