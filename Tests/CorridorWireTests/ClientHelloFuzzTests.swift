import CorridorPolicy
import CorridorWire
import NIOCore
import Testing

/// Seeded random mutations of the real and synthetic hellos: the parser must never trap, and a
/// `complete` outcome must always carry a name that HostName.normalize accepts unchanged.
@Suite(.timeLimit(.minutes(1)))
struct ClientHelloFuzzTests {
    static let seeds: [[UInt8]] = [
        Fixtures.curl, Fixtures.openssl, Fixtures.python, HelloBuilder().records(),
        reframe(Fixtures.openssl, recordSize: 64),
    ]

    @Test func randomMutationsNeverTrapOrAcceptABadName() {
        var random = SplitMix64(seed: 0xC022_1D02)
        var completes = 0
        var rejections: [ClientHelloRejection: Int] = [:]
        for _ in 0..<20_000 {
            var bytes = Self.seeds[Int(random.next() % UInt64(Self.seeds.count))]
            Self.mutate(&bytes, using: &random)
            let outcome: ClientHelloParser.Outcome
            if random.next() % 8 == 0 {
                outcome = dripHello(Array(bytes.prefix(600))).0
            } else {
                var parser = ClientHelloParser(maxHelloBytes: 1 + Int(random.next() % 70_000))
                outcome = parser.parse(buffer(bytes))
            }
            switch outcome {
            case .complete(let info):
                completes += 1
                #expect(HostName.normalize(info.serverName) == .success(info.serverName))
                #expect(info.helloBytes <= bytes.count)
            case .rejected(let reason, _):
                rejections[reason, default: 0] += 1
            case .needMoreData:
                break
            }
        }
        // The mutations must exercise both paths, not just one.
        #expect(completes > 100)
        #expect(rejections.count > 5)
    }

    @Test func randomBytesNeverTrap() {
        var random = SplitMix64(seed: 42)
        for _ in 0..<5_000 {
            let count = Int(random.next() % 300)
            var bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            if random.next() % 2 == 0, !bytes.isEmpty { bytes[0] = 22 }
            if random.next() % 2 == 0, bytes.count > 1 { bytes[1] = 3 }
            _ = parseHello(bytes)
        }
    }

    /// Flips, sets, inserts or deletes a few bytes, often at length fields near the start.
    static func mutate(_ bytes: inout [UInt8], using random: inout SplitMix64) {
        let edits = 1 + Int(random.next() % 4)
        for _ in 0..<edits where !bytes.isEmpty {
            let index = Int(random.next() % UInt64(random.next() % 3 == 0 ? min(bytes.count, 120) : bytes.count))
            switch random.next() % 6 {
            case 0: bytes[index] ^= UInt8(truncatingIfNeeded: 1 << (random.next() % 8))
            case 1: bytes[index] = UInt8(truncatingIfNeeded: random.next())
            case 2: bytes[index] = [0x00, 0xff, 0x01, 0x7f, 0x80][Int(random.next() % 5)]
            case 3: bytes.insert(UInt8(truncatingIfNeeded: random.next()), at: index)
            case 4: bytes.remove(at: index)
            default: bytes.removeLast(Int(random.next() % UInt64(bytes.count)))
            }
        }
    }
}
