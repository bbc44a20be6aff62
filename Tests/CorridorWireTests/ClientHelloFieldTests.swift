import CorridorPolicy
import CorridorWire
import NIOCore
import Testing

@Suite(.timeLimit(.minutes(1)))
struct ClientHelloFieldTests {
    @Test func syntheticHelloParses() throws {
        let records = HelloBuilder().records()
        let info = try #require(parseHello(records).info)
        #expect(info == ClientHelloInfo(
            serverName: "api.allowed.test", alpn: ["h2", "http/1.1"], supportedVersions: [0x0304, 0x0303],
            legacyVersion: 0x0303, hasECH: false, helloBytes: records.count))
    }

    @Test func echPresenceIsFlagged() throws {
        let hello = HelloBuilder { $0.extensions.append(tlsExtension(0xfe0d, [0, 0, 1, 0, 1, 0x42, 0, 0])) }
        #expect(try #require(parseHello(hello.records()).info).hasECH)
        let empty = HelloBuilder { $0.extensions.append(tlsExtension(0xfe0d, [])) }
        #expect(try #require(parseHello(empty.records()).info).hasECH)
        // Earlier ECH drafts' code points and ESNI's encrypted_server_name hide the name too.
        for type: UInt16 in [0xfe08, 0xfe09, 0xfe0a, 0xfe0b, 0xfe0c, 0xff02, 0xffce] {
            let draft = HelloBuilder { $0.extensions.append(tlsExtension(type, [0, 1, 2])) }
            #expect(try #require(parseHello(draft.records()).info).hasECH, "0x\(String(type, radix: 16))")
        }
        let unrelated = HelloBuilder { $0.extensions.append(tlsExtension(0xfe0e, [])) }
        #expect(try #require(parseHello(unrelated.records()).info).hasECH == false)
    }

    @Test func greaseVersionsAreDropped() throws {
        let hello = HelloBuilder {
            $0.extensions[2] = tlsExtension(43, supportedVersionsData([0x0a0a, 0x0304, 0x3a3a, 0x0303, 0xfafa]))
        }
        #expect(try #require(parseHello(hello.records()).info).supportedVersions == [0x0304, 0x0303])
        let onlyGrease = HelloBuilder { $0.extensions[2] = tlsExtension(43, supportedVersionsData([0x1a1a])) }
        #expect(try #require(parseHello(onlyGrease.records()).info).supportedVersions == [])
        // 0x0a1a and 0x0b0b are not GREASE.
        let notGrease = HelloBuilder { $0.extensions[2] = tlsExtension(43, supportedVersionsData([0x0a1a, 0x0b0b])) }
        #expect(try #require(parseHello(notGrease.records()).info).supportedVersions == [0x0a1a, 0x0b0b])
    }

    @Test func greaseExtensionTypesAreAccepted() throws {
        let hello = HelloBuilder {
            $0.extensions.insert(tlsExtension(0x0a0a, []), at: 0)
            $0.extensions.append(tlsExtension(0xdada, [0]))
        }
        #expect(try #require(parseHello(hello.records()).info).serverName == "api.allowed.test")
    }

    @Test func withoutSupportedVersionsTheLegacyVersionIsUsed() throws {
        let hello = HelloBuilder {
            $0.extensions.removeLast()
            $0.legacyVersion = [0x03, 0x02]
        }
        let info = try #require(parseHello(hello.records()).info)
        #expect(info.supportedVersions == [0x0302])
        #expect(info.legacyVersion == 0x0302)
        #expect(info.alpn == ["h2", "http/1.1"])
    }

    @Test func withoutALPNTheListIsEmpty() throws {
        let hello = HelloBuilder { $0.extensions.remove(at: 1) }
        #expect(try #require(parseHello(hello.records()).info).alpn == [])
    }

    @Test(arguments: [
        ("API.Allowed.TEST", "api.allowed.test"),
        ("api.allowed.test.", "api.allowed.test"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a", "a"),
    ])
    func namesAreNormalised(sent: String, expected: String) throws {
        #expect(try #require(parseHello(HelloBuilder(serverName: sent).records()).info).serverName == expected)
    }

    @Test func longestLegalNamesAreAccepted() throws {
        let label63 = String(repeating: "b", count: 63) + ".test"
        #expect(try #require(parseHello(HelloBuilder(serverName: label63).records()).info).serverName == label63)
        let name253 = hostName(length: 253)
        #expect(try #require(parseHello(HelloBuilder(serverName: name253).records()).info).serverName == name253)
    }

    @Test func sessionIDMayBeEmptyAndTLS12RecordVersionIsFine() throws {
        let hello = HelloBuilder {
            $0.sessionID = [0]
            $0.recordVersion = [0x03, 0x03]
        }
        #expect(try #require(parseHello(hello.records()).info).serverName == "api.allowed.test")
    }

    @Test func largestRecordIsAccepted() throws {
        // One record of exactly 2^14 bytes carrying a padded hello.
        let padding = 16384 - HelloBuilder().handshake.count - 4
        let hello = HelloBuilder { $0.extensions.append(tlsExtension(0x0015, [UInt8](repeating: 0, count: padding))) }
        let records = hello.records()
        #expect(records.count == 16389)
        #expect(try #require(parseHello(records).info).helloBytes == 16389)
    }

    @Test func dripOfALargeHelloIsQuick() throws {
        // 60 KiB hello in 1 KiB records, fed one byte at a time: linear work keeps this well under a second.
        let hello = HelloBuilder { $0.extensions.append(tlsExtension(0x0015, [UInt8](repeating: 0, count: 60000))) }
        let records = hello.records(recordSize: 1024)
        let clock = ContinuousClock()
        let start = clock.now
        let (outcome, _) = dripHello(records)
        #expect(outcome.info?.serverName == "api.allowed.test")
        #expect(clock.now - start < .seconds(10))
    }

    @Test func parserKeptInAnEnumBetweenCallsStaysLinear() {
        // The caller's pattern: `case .reading(var parser)`, parse, store back. With 1-byte records
        // (60,000 of them) any state that grows with the input would be copied on every record.
        enum State { case reading(ClientHelloParser), done(ClientHelloParser.Outcome) }
        let hello = HelloBuilder { $0.extensions.append(tlsExtension(0x0015, [UInt8](repeating: 0, count: 10000))) }
        let records = hello.records(recordSize: 1)
        var state = State.reading(ClientHelloParser(maxHelloBytes: 1 << 20))
        var grown = ByteBuffer()
        let clock = ContinuousClock()
        let start = clock.now
        for byte in records {
            grown.writeInteger(byte)
            guard case .reading(var parser) = state else { break }
            let outcome = parser.parse(grown)
            state = outcome == .needMoreData ? .reading(parser) : .done(outcome)
        }
        guard case .done(let outcome) = state else {
            Issue.record("never completed")
            return
        }
        #expect(outcome.info?.helloBytes == records.count)
        #expect(clock.now - start < .seconds(10))
    }
}
