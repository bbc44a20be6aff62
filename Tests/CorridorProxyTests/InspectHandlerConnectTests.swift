import CorridorPolicy
import CorridorWire
import NIOCore
import NIOEmbedded
import Testing

@testable import CorridorProxy

/// The explicit-proxy (CONNECT) listener's InspectHandler in an EmbeddedChannel: refused requests,
/// policy denials, and the ClientHello check inside an accepted tunnel. Nothing here is allowed to dial.
@Suite(.timeLimit(.minutes(1)))
struct InspectHandlerConnectTests {
    static let established = "HTTP/1.1 200 Connection Established\r\n\r\n"

    /// Splits an HTTP response into (status line, headers by lower-cased name, body).
    private func parseResponse(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws
        -> (status: String, headers: [String: String], body: String)
    {
        let parts = text.split(separator: "\r\n\r\n", maxSplits: 1, omittingEmptySubsequences: false)
        try #require(parts.count == 2, "no blank line in the response: \(text)", sourceLocation: sourceLocation)
        let lines = parts[0].split(separator: "\r\n", omittingEmptySubsequences: false)
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            let colon = try #require(line.firstIndex(of: ":"), "header line without ':': \(line)", sourceLocation: sourceLocation)
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return (String(lines[0]), headers, String(parts[1]))
    }

    @Test func deniedHostGets403WithTheReason() throws {
        try withHarness { harness in
            let channel = try harness.connect(.connect)
            try channel.send("CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n")
            let response = try parseResponse(try channel.drainOutboundText())
            #expect(response.status == "HTTP/1.1 403 Forbidden")
            #expect(response.headers["corridor-reason"] == "policy_denied")
            #expect(response.headers["corridor-decision"] == "deny")
            let hint = "register ExternalService evil-test for evil.test port 443/TLS; then grant it: add ExternalService evil-test port 443 to EgressPolicy payments/checkout-egress, which selects this workload"
            #expect(response.body.hasPrefix("no ExternalService matches evil.test\nto allow it: " + hint), "\(response.body)")
            #expect(response.headers["content-length"] == String(response.body.utf8.count))
            #expect(!channel.isActive)
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.decision) == "deny")
            #expect(record.string(LogKey.closeCause) == "denied")
            #expect(record.string(LogKey.connectHost) == "evil.test")
            #expect(record.string(LogKey.reason) == "no ExternalService matches evil.test")
            #expect(record.string(LogKey.hint).map { response.body.hasSuffix("to allow it: \($0)\n") } == true)
            #expect(record[LogKey.port] as? Int == 443)
            #expect(record.string(LogKey.listener) == "connect")
            #expect(record[LogKey.sni] == nil)
        }
    }

    @Test func ipLiteralTargetGets400() throws {
        try withHarness { harness in
            let channel = try harness.connect(.connect)
            try channel.send("CONNECT 127.0.0.1:443 HTTP/1.1\r\n\r\n")
            let response = try parseResponse(try channel.drainOutboundText())
            #expect(response.status == "HTTP/1.1 400 Bad Request")
            #expect(response.headers["corridor-reason"] == "invalid_request")
            #expect(response.body.contains("IP-literal targets are not allowed (127.0.0.1)"))
            #expect(!channel.isActive)
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "invalid_connect_request")
            #expect(record.string(LogKey.decision) == "deny")
            #expect(record.string(LogKey.reason)?.hasPrefix("invalid CONNECT request: IP-literal") == true)
            #expect(harness.renderedMetrics.contains(#"corridor_connect_request_failures_total{reason="ip_literal_target"} 1"#))
        }
    }

    @Test func oversizeHeadGets431BeforeItEnds() throws {
        try withHarness(limits: "{maxConnectHeadBytes: 512}") { harness in
            let channel = try harness.connect(.connect)
            try channel.send("CONNECT api.allowed.test:443 HTTP/1.1\r\n")
            let filler = "X-Filler: " + String(repeating: "a", count: 100) + "\r\n"
            for _ in 0..<4 { try channel.send(filler) }
            #expect(channel.isActive, "still under 512 bytes")
            #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
            try channel.send(filler)  // past 512, and still no blank line
            let response = try parseResponse(try channel.drainOutboundText())
            #expect(response.status == "HTTP/1.1 431 Request Header Fields Too Large")
            #expect(!channel.isActive)
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "invalid_connect_request")
        }
    }

    /// Absolute-form plain HTTP (`GET http://...`) is handed to TLS origination (see the
    /// integration tests); any other non-CONNECT request is refused.
    @Test func otherMethodsGet405() throws {
        try withHarness { harness in
            let channel = try harness.connect(.connect)
            try channel.send("GET / HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n")
            let response = try parseResponse(try channel.drainOutboundText())
            #expect(response.status == "HTTP/1.1 405 Method Not Allowed")
            #expect(!channel.isActive)
            #expect(try harness.onlyRecord().string(LogKey.closeCause) == "invalid_connect_request")
        }
    }

    @Test func grantedHostIsEstablishedThenAMismatchingSNIIsRefused() throws {
        try withHarness { harness in
            let channel = try harness.connect(.connect)
            try channel.send("CONNECT api.allowed.test:443 HTTP/1.1\r\n\r\n")
            #expect(try channel.drainOutboundText() == Self.established)
            #expect(channel.isActive)
            #expect(try harness.records().isEmpty, "not decided for good until the ClientHello")

            // second.allowed.test is granted too: the refusal is for the mismatch alone.
            try channel.send(ClientHelloBuilder(serverName: "second.allowed.test").record)
            #expect(try channel.drainOutbound() == accessDeniedAlert)
            #expect(!channel.isActive)
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.decision) == "deny")
            #expect(record.string(LogKey.closeCause) == "denied")
            #expect(record.string(LogKey.reason) == "SNI second.allowed.test does not match CONNECT host api.allowed.test")
            #expect(record.string(LogKey.connectHost) == "api.allowed.test")
            #expect(record.string(LogKey.sni) == "second.allowed.test")
        }
    }

    @Test func headAndMismatchingHelloInOneWrite() throws {
        try withHarness { harness in
            let channel = try harness.connect(.connect)
            let head = Array("CONNECT api.allowed.test:443 HTTP/1.1\r\nHost: api.allowed.test:443\r\n\r\n".utf8)
            try channel.send(head + ClientHelloBuilder(serverName: "evil.test").record)
            #expect(try channel.drainOutbound() == Array(Self.established.utf8) + accessDeniedAlert)
            #expect(!channel.isActive)
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.reason) == "SNI evil.test does not match CONNECT host api.allowed.test")
            #expect(record.string(LogKey.closeCause) == "denied")
        }
    }

    @Test func headAndPartOfTheHelloInOneWriteThenTheRest() throws {
        try withHarness { harness in
            let channel = try harness.connect(.connect)
            let hello = ClientHelloBuilder(serverName: "evil.test").record
            try channel.send(Array("CONNECT api.allowed.test:443 HTTP/1.1\r\n\r\n".utf8) + hello.prefix(25))
            #expect(try channel.drainOutboundText() == Self.established)
            #expect(channel.isActive)
            try channel.send(Array(hello.dropFirst(25)))
            #expect(try channel.drainOutbound() == accessDeniedAlert)
            #expect(try harness.onlyRecord().string(LogKey.reason) == "SNI evil.test does not match CONNECT host api.allowed.test")
        }
    }

    @Test func unknownSourceIsRefusedAtTheConnectHead() throws {
        try withHarness { harness in
            let channel = try harness.connect(.connect, from: strangerSource)
            try channel.send("CONNECT api.allowed.test:443 HTTP/1.1\r\n\r\n")
            let response = try parseResponse(try channel.drainOutboundText())
            #expect(response.status == "HTTP/1.1 403 Forbidden")
            #expect(response.body.contains("is not a known workload"))
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.reason)?.contains("\(strangerSource) is not a known workload") == true)
        }
    }

    @Test func handshakeTimeoutDuringTheHeadGets408() throws {
        try withHarness(limits: "{handshakeTimeout: 2s}") { harness in
            let channel = try harness.connect(.connect)
            try channel.send("CONNECT api.allowed.test:443 HTTP/1.1\r\n")
            harness.loop.advanceTime(by: .seconds(3))
            let response = try parseResponse(try channel.drainOutboundText())
            #expect(response.status == "HTTP/1.1 408 Request Timeout")
            #expect(response.headers["corridor-reason"] == "handshake_timeout")
            #expect(!channel.isActive)
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "handshake_timeout")
            #expect(record.string(LogKey.reason) == "no complete CONNECT request within 2s")
        }
    }

    @Test func handshakeTimeoutInsideTheTunnelCountsFromTheStart() throws {
        try withHarness(limits: "{handshakeTimeout: 2s}") { harness in
            let channel = try harness.connect(.connect)
            try channel.send("CONNECT api.allowed.test:443 HTTP/1.1\r\n\r\n")
            #expect(try channel.drainOutboundText() == Self.established)
            harness.loop.advanceTime(by: .seconds(3))
            #expect(!channel.isActive)
            #expect(try channel.drainOutbound().isEmpty)
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "handshake_timeout")
            // The tunnel was allowed (its 200 went out): the record keeps that, and says why it ended.
            #expect(record.string(LogKey.decision) == "allow")
            #expect(record.string(LogKey.reason)?.hasSuffix("; no complete ClientHello within 2s") == true)
            #expect(record.string(LogKey.connectHost) == "api.allowed.test")
        }
    }
}
