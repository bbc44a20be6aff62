import CorridorWire
import NIOCore
import Testing

/// A CONNECT head and the outcome the parser must reach.
struct ConnectCase: Sendable, CustomTestStringConvertible {
    var name: String
    var head: [UInt8]
    var expected: ConnectHeadParser.Outcome
    var testDescription: String { name }

    init(_ name: String, _ head: String, _ expected: ConnectHeadParser.Outcome) {
        self.init(name, Array(head.utf8), expected)
    }

    init(_ name: String, _ head: [UInt8], _ expected: ConnectHeadParser.Outcome) {
        self.name = name
        self.head = head
        self.expected = expected
    }

    /// `CONNECT <target> HTTP/1.1` with a Host header, expected to be rejected with `rejection`.
    init(target name: String, _ target: String, _ rejection: ConnectRejection) {
        self.init(name, "CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n\r\n", .rejected(rejection))
    }
}

private func ok(_ host: String, _ port: Int, _ head: String) -> ConnectHeadParser.Outcome {
    .complete(ConnectRequest(host: host, port: port, headLength: head.utf8.count))
}

private let ipLiteral = ConnectRejection.ipLiteralTarget
private func malformed(_ reason: String) -> ConnectHeadParser.Outcome { .rejected(.malformedRequest(reason)) }
private let simple = "CONNECT api.allowed.test:443 HTTP/1.1\r\nHost: api.allowed.test:443\r\n\r\n"

extension ConnectCase {
    static let accepted: [ConnectCase] = [
        ConnectCase("plain CONNECT", simple, ok("api.allowed.test", 443, simple)),
        ConnectCase("HTTP/1.0 without headers", "CONNECT a.test:8443 HTTP/1.0\r\n\r\n", ok("a.test", 8443, "CONNECT a.test:8443 HTTP/1.0\r\n\r\n")),
        ConnectCase(
            "mixed-case host and trailing dot", "CONNECT API.Allowed.Test.:1 HTTP/1.1\r\n\r\n",
            ok("api.allowed.test", 1, "CONNECT API.Allowed.Test.:1 HTTP/1.1\r\n\r\n")),
        ConnectCase(
            "port 65535 and several headers",
            "CONNECT a.test:65535 HTTP/1.1\r\nHost: a.test:65535\r\nProxy-Authorization: Basic eDp5\r\nX-Empty:\r\nX-Tab:\tv\r\n\r\n",
            ok("a.test", 65535,
               "CONNECT a.test:65535 HTTP/1.1\r\nHost: a.test:65535\r\nProxy-Authorization: Basic eDp5\r\nX-Empty:\r\nX-Tab:\tv\r\n\r\n")),
    ]

    static let rejected: [ConnectCase] = [
        ConnectCase("GET is 405", "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", .rejected(.methodNotAllowed("GET"))),
        ConnectCase("lower-case connect is 405", "connect a.test:443 HTTP/1.1\r\n\r\n", .rejected(.methodNotAllowed("connect"))),
        ConnectCase("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", malformed("unsupported HTTP version HTTP/2.0")),
        ConnectCase("HTTP/1.2", "CONNECT a.test:443 HTTP/1.2\r\n\r\n", malformed("unsupported HTTP version HTTP/1.2")),
        ConnectCase("two spaces", "CONNECT  a.test:443 HTTP/1.1\r\n\r\n", malformed(requestLineShape)),
        ConnectCase("tab separator", "CONNECT\ta.test:443 HTTP/1.1\r\n\r\n", malformed("control or non-ASCII byte in the request line")),
        ConnectCase("missing version", "CONNECT a.test:443\r\n\r\n", malformed(requestLineShape)),
        ConnectCase("empty request line", "\r\nCONNECT a.test:443 HTTP/1.1\r\n\r\n", malformed("empty request line")),
        ConnectCase("bare LF line endings", "CONNECT a.test:443 HTTP/1.1\n\n", malformed("line ended by a bare LF instead of CRLF")),
        ConnectCase("bare LF in a header", "CONNECT a.test:443 HTTP/1.1\r\nHost: a\n\r\n", malformed("line ended by a bare LF instead of CRLF")),
        ConnectCase("bare CR", "CONNECT a.test:443 HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", malformed("bare CR in the request head")),
        ConnectCase("NUL in the target", Array("CONNECT a.test\0.evil:443 HTTP/1.1\r\n\r\n".utf8), malformed("NUL byte in the request head")),
        ConnectCase("NUL in a header", Array("CONNECT a.test:443 HTTP/1.1\r\nX: a\0b\r\n\r\n".utf8), malformed("NUL byte in the request head")),
        ConnectCase("obs-fold", "CONNECT a.test:443 HTTP/1.1\r\nX: a\r\n b\r\n\r\n", malformed(obsFold)),
        ConnectCase("obs-fold with tab", "CONNECT a.test:443 HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", malformed(obsFold)),
        ConnectCase("header without colon", "CONNECT a.test:443 HTTP/1.1\r\nHost a\r\n\r\n", malformed("a header line has no ':'")),
        ConnectCase("space before colon", "CONNECT a.test:443 HTTP/1.1\r\nHost : a\r\n\r\n", malformed(badName)),
        ConnectCase("empty header name", "CONNECT a.test:443 HTTP/1.1\r\n: a\r\n\r\n", malformed(badName)),
        ConnectCase("control byte in a value", "CONNECT a.test:443 HTTP/1.1\r\nX: a\u{1}b\r\n\r\n", malformed("a header value has a control byte")),
        ConnectCase("non-ASCII in the target", "CONNECT bücher.test:443 HTTP/1.1\r\n\r\n", malformed("control or non-ASCII byte in the request line")),
        // IP literals in every spelling.
        ConnectCase(target: "dotted IPv4", "1.2.3.4:443", ipLiteral("1.2.3.4")),
        ConnectCase(target: "decimal IPv4", "2130706433:443", ipLiteral("2130706433")),
        ConnectCase(target: "hex IPv4", "0x7f000001:443", ipLiteral("0x7f000001")),
        ConnectCase(target: "upper-case hex IPv4", "0X7F000001:443", ipLiteral("0X7F000001")),
        ConnectCase(target: "octal short IPv4", "0177.1:443", ipLiteral("0177.1")),
        ConnectCase(target: "short IPv4", "127.1:443", ipLiteral("127.1")),
        ConnectCase(target: "hex dotted IPv4", "0x7f.0.0.1:443", ipLiteral("0x7f.0.0.1")),
        ConnectCase(target: "bracketed IPv6", "[::1]:443", ipLiteral("[::1]")),
        ConnectCase(target: "bracketed v4-mapped IPv6", "[::ffff:127.0.0.1]:443", ipLiteral("[::ffff:127.0.0.1]")),
        ConnectCase(target: "bracketed IPv6 with zone", "[fe80::1%25eth0]:443", ipLiteral("[fe80::1%25eth0]")),
        ConnectCase(target: "bare IPv6", "::1:443", ipLiteral("::1")),
        // Other targets.
        ConnectCase(target: "userinfo", "user@a.test:443", .invalidTarget("userinfo ('user@') is not allowed in the target")),
        ConnectCase(target: "userinfo with password", "u:p@a.test:443", .invalidTarget("userinfo ('user@') is not allowed in the target")),
        ConnectCase(target: "empty host", ":443", .invalidTarget("the target host is empty")),
        ConnectCase(target: "empty label", "a..test:443", .invalidTarget("the name has an empty label")),
        ConnectCase(target: "underscore", "a_b.test:443", .invalidTarget("the name has a character other than letters, digits, '-' and '.'")),
        ConnectCase(target: "unclosed bracket", "[::1:443", .invalidTarget("unclosed '[' in the target")),
        ConnectCase(target: "path in the target", "a.test:443/x", .invalidPort("the port is not a decimal number")),
        // Ports.
        ConnectCase(target: "missing port", "a.test", .invalidPort("the target has no ':port'")),
        ConnectCase(target: "bracketed host without port", "[::1]", .invalidPort("the target has no ':port'")),
        ConnectCase(target: "empty port", "a.test:", .invalidPort("the port is empty")),
        ConnectCase(target: "port 0", "a.test:0", .invalidPort("the port is 0 or has a leading zero")),
        ConnectCase(target: "leading zero", "a.test:0443", .invalidPort("the port is 0 or has a leading zero")),
        ConnectCase(target: "plus sign", "a.test:+443", .invalidPort("the port is not a decimal number")),
        ConnectCase(target: "minus sign", "a.test:-443", .invalidPort("the port is not a decimal number")),
        ConnectCase(target: "port 65536", "a.test:65536", .invalidPort("the port 65536 is out of range 1-65535")),
        ConnectCase(target: "port 65979 (443 + 65536)", "a.test:65979", .invalidPort("the port 65979 is out of range 1-65535")),
        ConnectCase(target: "port 4294967739 (443 + 2^32)", "a.test:4294967739", .invalidPort("the port has more than 5 digits")),
        ConnectCase(target: "hex port", "a.test:0x1bb", .invalidPort("the port is not a decimal number")),
        ConnectCase(target: "service name port", "a.test:https", .invalidPort("the port is not a decimal number")),
    ]

    static let requestLineShape = "the request line is not 'METHOD target HTTP-version' with single spaces"
    static let obsFold = "obsolete line folding (a header line starting with whitespace)"
    static let badName = "a header name is empty or not a token"
    static let all = accepted + rejected
}

@Suite(.timeLimit(.minutes(1)))
struct ConnectHeadParserTests {
    @Test(arguments: ConnectCase.all)
    func blast(_ input: ConnectCase) {
        var parser = ConnectHeadParser()
        #expect(parser.parse(ByteBuffer(bytes: input.head)) == input.expected)
    }

    @Test(arguments: ConnectCase.all)
    func drip(_ input: ConnectCase) {
        #expect(dripConnect(input.head).0 == input.expected)
    }

    @Test(arguments: ConnectCase.accepted)
    func trailingBytesBelongToTheTunnel(_ input: ConnectCase) throws {
        var parser = ConnectHeadParser()
        let tail = Fixtures.curl + Array("\r\n\r\nGET / HTTP/1.1\r\n\r\n".utf8)
        let outcome = parser.parse(ByteBuffer(bytes: input.head + tail))
        #expect(outcome == input.expected)
        guard case .complete(let request) = outcome else { return }
        #expect(request.headLength == input.head.count)
        var hello = ClientHelloParser()
        let rest = Array((input.head + tail)[request.headLength...])
        #expect(hello.parse(ByteBuffer(bytes: rest)).info?.serverName == "api.allowed.test")
    }

    @Test func headTooLargeAtTheCap() {
        let head = "CONNECT a.test:443 HTTP/1.1\r\nX: " + String(repeating: "a", count: 100) + "\r\n\r\n"
        var exact = ConnectHeadParser(maxHeadBytes: head.utf8.count)
        #expect(exact.parse(buffer(head)) == ok("a.test", 443, head))
        var over = ConnectHeadParser(maxHeadBytes: head.utf8.count - 1)
        #expect(over.parse(buffer(head)) == .rejected(.headTooLarge))
        // Decided as soon as the buffer exceeds the cap, without waiting for a blank line.
        let endless = Array(("CONNECT a.test:443 HTTP/1.1\r\nX: " + String(repeating: "a", count: 9000)).utf8)
        let (outcome, used) = dripConnect(endless, maxHeadBytes: 8192)
        #expect(outcome == .rejected(.headTooLarge))
        #expect(used == 8193)
    }

    @Test func wrongMethodIsDecidedAtTheFirstLine() {
        let (outcome, used) = dripConnect(Array("GET / HTTP/1.1\r\nHost: a\r\n".utf8))
        #expect(outcome == .rejected(.methodNotAllowed("GET")))
        #expect(used == 16)
    }

    @Test func incompleteHeadsNeedMoreData() {
        for length in 0..<simple.utf8.count {
            var parser = ConnectHeadParser()
            #expect(parser.parse(ByteBuffer(bytes: Array(simple.utf8.prefix(length)))) == .needMoreData)
        }
    }

    @Test func outcomeIsStickyAndIndicesUntouched() {
        var parser = ConnectHeadParser()
        var input = ByteBuffer(string: "xx" + simple)
        input.moveReaderIndex(forwardBy: 2)
        let first = parser.parse(input)
        #expect(first == ok("api.allowed.test", 443, simple))
        #expect(input.readerIndex == 2)
        #expect(parser.parse(buffer("GET / HTTP/1.1\r\n\r\n")) == first)
    }

    @Test func rejectionsMapToResponses() {
        let table: [(ConnectRejection, Int, String, String)] = [
            (.headTooLarge, 431, "Request Header Fields Too Large", "head_too_large"),
            (.malformedRequest("x"), 400, "Bad Request", "malformed_request"),
            (.methodNotAllowed("GET"), 405, "Method Not Allowed", "method_not_allowed"),
            (.ipLiteralTarget("1.2.3.4"), 400, "Bad Request", "ip_literal_target"),
            (.invalidTarget("x"), 400, "Bad Request", "invalid_target"),
            (.invalidPort("x"), 400, "Bad Request", "invalid_port"),
        ]
        for (rejection, status, phrase, label) in table {
            #expect(rejection.status == status)
            #expect(rejection.reasonPhrase == phrase)
            #expect(rejection.metricLabel == label)
            #expect(!rejection.explanation.isEmpty)
        }
        #expect(ConnectRejection.ipLiteralTarget("1.2.3.4").explanation.hasPrefix("IP-literal targets are not allowed"))
    }

    @Test func dripOfALongHeadIsQuick() {
        let head = "CONNECT a.test:443 HTTP/1.1\r\n" + String(repeating: "X-Filler: abcdefghijklmnopqrstuvwxyz\r\n", count: 200) + "\r\n"
        let clock = ContinuousClock()
        let start = clock.now
        #expect(dripConnect(Array(head.utf8), maxHeadBytes: 16384).0 == ok("a.test", 443, head))
        #expect(clock.now - start < .seconds(10))
    }
}
