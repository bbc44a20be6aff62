import CorridorPolicy
import CorridorWire
import NIOCore
import Testing

/// One input the ClientHello parser must refuse, and why.
struct RejectedHello: Sendable, CustomTestStringConvertible {
    var name: String
    var bytes: [UInt8]
    var expected: ClientHelloRejection
    var detail: String? = nil
    var maxHelloBytes = 65536
    var testDescription: String { name }

    init(_ name: String, _ expected: ClientHelloRejection, detail: String? = nil, maxHelloBytes: Int = 65536, _ bytes: [UInt8]) {
        self.name = name
        self.bytes = bytes
        self.expected = expected
        self.detail = detail
        self.maxHelloBytes = maxHelloBytes
    }

    init(_ name: String, _ expected: ClientHelloRejection, detail: String? = nil, configure: (inout HelloBuilder) -> Void) {
        self.init(name, expected, detail: detail, HelloBuilder(configure: configure).records())
    }

    /// A hello whose server_name is `name` (raw bytes), expected to fail HostName.normalize with `problem`.
    init(badName label: String, _ name: [UInt8], _ problem: HostName.Problem) {
        self.init(label, .invalidServerName, detail: problem.explanation) {
            $0.extensions[0] = tlsExtension(0, serverNameData([(0, name)]))
        }
    }
}

private let good = HelloBuilder().records()
private let goodHandshake = HelloBuilder().handshake

extension RejectedHello {
    static let recordLayer: [RejectedHello] = [
        RejectedHello("an HTTP GET request", .notTLS, Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8)),
        RejectedHello("a CONNECT request", .notTLS, Array("CONNECT api.allowed.test:443 HTTP/1.1\r\n\r\n".utf8)),
        RejectedHello("random bytes", .notTLS, [0x42, 0x9c, 0x11, 0x07, 0xee, 0x01]),
        RejectedHello("high-bit garbage that is not SSLv2", .notTLS, [0x9f, 0x00, 0x07, 0x00]),
        RejectedHello("an SSLv2 ClientHello", .sslv2, [0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10]),
        RejectedHello("an alert record before the hello", .notHandshakeRecord, [21, 3, 3, 0, 2, 2, 40] + good),
        RejectedHello("change_cipher_spec before the hello", .notHandshakeRecord, [20, 3, 3, 0, 1, 1] + good),
        RejectedHello(
            "an alert record between two hello records", .notHandshakeRecord,
            Array(frame(goodHandshake, recordSize: 40).prefix(45)) + [21, 3, 3, 0, 2, 2, 40]),
        RejectedHello("record version major byte 2", .notTLS, [22, 2, 0] + Array(good.dropFirst(3))),
        RejectedHello(
            "second record version major byte 4", .malformed,
            Array(frame(goodHandshake, recordSize: 40).prefix(45)) + [22, 4, 1, 0, 40] + [UInt8](repeating: 0, count: 40)),
        RejectedHello(
            // A 560-byte hello in 10-byte records (15 on the wire): forty take 600 bytes exactly, and
            // no forty-first fits, though the hello goes on.
            "an unfinished hello whose records reach the cap", .helloTooLarge, maxHelloBytes: 600,
            Array(frame(HelloBuilder { $0.extensions.append(tlsExtension(0x0015, [UInt8](repeating: 0, count: 560 - goodHandshake.count - 4))) }.handshake,
                        recordSize: 10).prefix(600))),
        RejectedHello("a second ClientHello in the hello's record", .handshakeAfterHello, frame(goodHandshake + goodHandshake, recordSize: 16384)),
        RejectedHello("a Finished message in the hello's last record", .handshakeAfterHello,
                      detail: "4 handshake bytes after the ClientHello", frame(goodHandshake + [20, 0, 0, 0], recordSize: goodHandshake.count + 4)),
        RejectedHello("handshake type 2 (server_hello)", .notClientHello) { $0.handshakeType = 2 },
        RejectedHello("handshake type 0 (hello_request)", .notClientHello) { $0.handshakeType = 0 },
        RejectedHello("record length 0", .malformed, [22, 3, 1, 0, 0] + good),
        RejectedHello("record length 2^14 + 1", .recordTooLarge, [22, 3, 1, 0x40, 0x01, 1, 0, 0x3f, 0xfc]),
        RejectedHello(
            // 148 bytes in one record would fit; in 10-byte records the headers push it over 150.
            "hello over the cap across records", .helloTooLarge, maxHelloBytes: 150,
            frame(goodHandshake, recordSize: 10)),
        RejectedHello(
            "declared handshake length over the cap", .helloTooLarge, maxHelloBytes: 4096,
            [22, 3, 1, 0, 4, 1, 0, 0x10, 0x00]),
        RejectedHello("empty handshake body", .malformed, [22, 3, 1, 0, 4, 1, 0, 0, 0]),
    ]

    static let lengths: [RejectedHello] = [
        RejectedHello("session id length 33", .malformed) { $0.sessionID = [33] + [UInt8](repeating: 1, count: 33) },
        RejectedHello("session id longer than the hello", .malformed) {
            $0.sessionID = [32, 1, 2, 3]
            $0.cipherSuites = []
            $0.compression = []
            $0.omitExtensions = true
        },
        RejectedHello("cipher suites odd length", .malformed) { $0.cipherSuites = u16(3) + [0x13, 0x01, 0x13] },
        RejectedHello("cipher suites empty", .malformed) { $0.cipherSuites = u16(0) },
        RejectedHello("cipher suites longer than the hello", .malformed) {
            $0.cipherSuites = u16(400) + [0x13, 0x01]
            $0.omitExtensions = true
        },
        RejectedHello("compression methods empty", .malformed) { $0.compression = [0] },
        RejectedHello("compression methods longer than the hello", .malformed) {
            $0.compression = [200, 0]
            $0.omitExtensions = true
        },
        RejectedHello("extensions block longer than the hello", .malformed) {
            $0.extensionsBlock = u16(100) + tlsExtension(0, serverNameData("api.allowed.test"))
        },
        RejectedHello("extensions block shorter than the hello", .trailingBytesInHello) {
            let sni = tlsExtension(0, serverNameData("api.allowed.test"))
            $0.extensionsBlock = u16(sni.count) + sni + [0, 0, 0, 0]
        },
        RejectedHello("bytes after the extensions block", .trailingBytesInHello) { $0.trailing = [0] },
        RejectedHello("extension data longer than the block", .malformed) {
            $0.extensionsBlock = u16(8) + u16(0x000a) + u16(10) + [0, 0, 0, 0]
        },
        RejectedHello("truncated extension header", .malformed) {
            let sni = tlsExtension(0, serverNameData("api.allowed.test"))
            $0.extensionsBlock = u16(sni.count + 3) + sni + [0x00, 0x10, 0x00]
        },
        RejectedHello("server_name list longer than the extension", .malformed) {
            $0.extensions[0] = tlsExtension(0, u16(30) + [0] + u16(16) + Array("api.allowed.test".utf8))
        },
        RejectedHello("server_name list shorter than the extension", .malformed) {
            $0.extensions[0] = tlsExtension(0, u16(19) + [0] + u16(16) + Array("api.allowed.test".utf8) + [0])
        },
        RejectedHello("host name length longer than the list", .malformed) {
            $0.extensions[0] = tlsExtension(0, u16(19) + [0] + u16(17) + Array("api.allowed.test".utf8))
        },
        RejectedHello("ALPN list length mismatch", .malformed) { $0.extensions[1] = tlsExtension(16, u16(20) + [2] + Array("h2".utf8)) },
        RejectedHello("ALPN empty protocol name", .malformed) { $0.extensions[1] = tlsExtension(16, u16(3) + [0, 1, 0x61]) },
        RejectedHello("ALPN empty list", .malformed) { $0.extensions[1] = tlsExtension(16, u16(0)) },
        RejectedHello("supported_versions odd length", .malformed) { $0.extensions[2] = tlsExtension(43, [3, 3, 4, 3]) },
        RejectedHello("supported_versions length mismatch", .malformed) { $0.extensions[2] = tlsExtension(43, [4, 3, 4]) },
    ]

    static let semantics: [RejectedHello] = [
        RejectedHello("duplicate ALPN extension", .duplicateExtension) { $0.extensions.append(tlsExtension(16, alpnData(["h2"]))) },
        RejectedHello("duplicate server_name extension", .duplicateExtension) {
            $0.extensions.append(tlsExtension(0, serverNameData("other.allowed.test")))
        },
        RejectedHello("no server_name extension", .noSNI) { $0.extensions.removeFirst() },
        RejectedHello("no extensions block at all", .noSNI) { $0.omitExtensions = true },
        RejectedHello("an empty extensions block", .noSNI) { $0.extensions = [] },
        RejectedHello("server_name with empty data", .emptyServerNameList) { $0.extensions[0] = tlsExtension(0, []) },
        RejectedHello("server_name with an empty list", .emptyServerNameList) { $0.extensions[0] = tlsExtension(0, u16(0)) },
        RejectedHello("two server names", .multipleServerNames) {
            $0.extensions[0] = tlsExtension(0, serverNameData([(0, Array("a.test".utf8)), (0, Array("b.test".utf8))]))
        },
        RejectedHello("name type 1", .unsupportedNameType) {
            $0.extensions[0] = tlsExtension(0, serverNameData([(1, Array("api.allowed.test".utf8))]))
        },
        RejectedHello(badName: "empty name", [], .empty),
        RejectedHello(badName: "NUL inside the name", Array("api.allowed.test\0.evil.test".utf8), .nulByte),
        RejectedHello(badName: "trailing NUL", Array("api.allowed.test".utf8) + [0], .nulByte),
        RejectedHello(badName: "high byte", Array("api.allowed.t".utf8) + [0xc3, 0xa9, 0x74], .nonASCII),
        RejectedHello(badName: "dotted IPv4", Array("1.2.3.4".utf8), .ipLiteral),
        RejectedHello(badName: "bracketed IPv6", Array("[::1]".utf8), .ipLiteral),
        RejectedHello(badName: "decimal IPv4", Array("2130706433".utf8), .allNumericTopLabel),
        RejectedHello(badName: "hex IPv4", Array("0x7f000001".utf8), .ipLiteral),
        RejectedHello(badName: "empty label", Array("a..b".utf8), .emptyLabel),
        RejectedHello(badName: "64-byte label", Array((String(repeating: "a", count: 64) + ".test").utf8), .labelTooLong),
        RejectedHello(badName: "254-byte name", Array(hostName(length: 254).utf8), .tooLong),
        RejectedHello(badName: "underscore", Array("under_score.test".utf8), .invalidCharacter),
        RejectedHello(badName: "leading hyphen", Array("-a.test".utf8), .hyphenAtLabelEdge),
    ]

    static let all = recordLayer + lengths + semantics
}

/// A host name of exactly `length` bytes made of 63-byte labels.
func hostName(length: Int) -> String {
    var labels: [String] = []
    var remaining = length
    while remaining > 0 {
        let label = min(63, remaining - (labels.isEmpty ? 0 : 1))
        labels.append(String(repeating: "a", count: max(label, 1)))
        remaining -= label + (labels.count > 1 ? 1 : 0)
    }
    return labels.joined(separator: ".")
}

@Suite(.timeLimit(.minutes(1)))
struct ClientHelloRejectionTests {
    @Test(arguments: RejectedHello.all)
    func rejectedInOneCall(_ input: RejectedHello) {
        let outcome = parseHello(input.bytes, maxHelloBytes: input.maxHelloBytes)
        #expect(outcome.rejection == input.expected, "\(outcome)")
        if let detail = input.detail { #expect(outcome.detail == detail) }
    }

    @Test(arguments: RejectedHello.all)
    func rejectedWhenDripped(_ input: RejectedHello) {
        let (outcome, _) = dripHello(input.bytes, maxHelloBytes: input.maxHelloBytes)
        #expect(outcome.rejection == input.expected, "\(outcome)")
    }

    @Test func everyRejectionHasALabelAndASentence() {
        for rejection in ClientHelloRejection.allCases {
            #expect(rejection.rawValue.allSatisfy { $0.isLowercase || $0 == "_" || $0.isNumber })
            #expect(!rejection.explanation.isEmpty)
        }
        #expect(ClientHelloRejection.notTLS.rawValue == "not_tls")
        #expect(ClientHelloRejection.noSNI.explanation == "the ClientHello has no server_name (SNI) extension")
    }

    @Test func nameHelperLengths() {
        #expect(hostName(length: 253).utf8.count == 253)
        #expect(hostName(length: 254).utf8.count == 254)
    }
}
