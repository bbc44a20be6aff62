import Foundation
import Testing

/// What crosses the http listener besides a request's head and body, and how responses are framed
/// for the request they answer (found in review): the upstream pool after an answer that came
/// before the request's body, request trailers, HEAD, HTTP/1.0 clients, 101, CONNECT.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct OriginationFramingTests {
    /// A back end that answers before reading a body (here on one route; an early 401 or 417 to
    /// `Expect: 100-continue` is the same) reads that body as its next request. The connection it
    /// answers that on must never serve another request: not the same client's next, not another
    /// client's.
    @Test func anUpstreamThatAnsweredBeforeTheBodyEndedIsNeverReused() async throws {
        let h = try await OriginationHarness(workers: 1)
        defer { Task { await h.stop() } }
        let script = #"""
        import socket, sys
        port = int(sys.argv[1]); H = "Host: billing.example.test\r\n"
        smuggled = f"GET /smuggled HTTP/1.1\r\n{H}\r\n"
        \#(readOneResponse)
        a = socket.create_connection(("127.0.0.1", port), timeout=10)
        a.sendall(f"POST /ignore-body HTTP/1.1\r\n{H}Content-Length: {len(smuggled)}\r\n\r\n".encode())
        first = response(a)   # answered before the body was sent
        a.sendall(smuggled.encode() + f"GET /after HTTP/1.1\r\n{H}\r\n".encode())
        after = response(a)
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(f"GET /client-c HTTP/1.1\r\n{H}\r\n".encode())
        print(f"A1 {first}\nA2 {after}\nC {response(c)}")
        """#
        let result = try runCommand("python3", ["-c", script, "\(h.httpPort)"], timeout: 40)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines == ["A1 ok /ignore-body", "A2 ok /after", "C ok /client-c"], "\(result.stdout) \(result.stderr)")
    }

    /// An upstream that answered before the body and reads no more must not hold the client's
    /// upload: the rest of the body is dropped as it comes, and the connection serves on.
    @Test func theRestOfABodyAnsweredEarlyIsDroppedNotHeldUp() async throws {
        let h = try await OriginationHarness(workers: 1)
        defer { Task { await h.stop() } }
        let script = #"""
        import socket, sys
        port = int(sys.argv[1]); H = "Host: billing.example.test\r\n"; n = 32 << 20
        \#(readOneResponse)
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(f"POST /answer-then-stall HTTP/1.1\r\n{H}Content-Length: {n}\r\n\r\n".encode())
        first = response(s)
        try:
            s.sendall(b"x" * n)
            sent = "sent"
        except socket.timeout:
            sent = "stalled"
        s.sendall(f"GET /after HTTP/1.1\r\n{H}\r\n".encode())
        print(f"{first}\n{sent}\n{response(s)}")
        """#
        let result = try runCommand("python3", ["-c", script, "\(h.httpPort)"], timeout: 60)
        #expect(result.stdout.split(separator: "\n").map(String.init) == ["ok /answer-then-stall", "sent", "ok /after"],
                "\(result.stdout) \(result.stderr)")
        let record = try #require(h.record { $0["path"] as? String == "/answer-then-stall" })
        #expect(record["closeCause"] as? String == "completed" && record["bytesUp"] as? Int == 32 << 20, "\(record)")
    }

    /// Trailers are judged by nobody: the fields that route, frame or authenticate stay behind,
    /// and so do those the header section's Connection field names.
    @Test func requestTrailersLoseTheFieldsThatRouteFrameOrAuthenticate() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let request = "POST /sink HTTP/1.1\r\nHost: billing.example.test\r\nTransfer-Encoding: chunked\r\nConnection: close, X-Hop\r\n\r\n"
            + "5\r\nhello\r\n0\r\nHost: evil.example.test\r\nProxy-Authorization: Basic c2VjcmV0\r\nAuthorization: Bearer x\r\n"
            + "Cookie: session=1\r\nX-Checksum: abc\r\nX-Hop: 1\r\n\r\n"
        let result = try rawHTTPExchange(port: h.httpPort, bytes: Array(request.utf8))
        #expect(result.status == 200, "\(result.status) \(result.body)")
        let seen = try #require(h.upstream.requests.first { $0["path"] as? String == "/sink" })
        #expect(seen["trailers"] as? [String] == ["X-Checksum: abc"], "\(seen)")
        #expect(seen["bodyBytes"] as? Int == 5)
    }

    /// An upstream response that breaks mid-body: the client gets what came before the break,
    /// then the connection ends (it was cut with nothing delivered, the head neither).
    @Test func aResponseBrokenMidBodyDeliversWhatCameBefore() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let script = readToEndScript(timeout: 10, send: "s.sendall(sys.argv[2].encode())")
        let result = try runCommand("python3", ["-c", script, "\(h.httpPort)",
                                                "GET /broken-chunks HTTP/1.1\r\nHost: billing.example.test\r\n\r\n"], timeout: 30)
        #expect(result.stdout.hasPrefix("CLOSED\nHTTP/1.1 200"), "\(result.stdout)")
        #expect(result.stdout.contains("hello\n"), "\(result.stdout)")
        #expect(!result.stdout.hasSuffix("0\r\n\r\n"), "no end of body was made up: \(result.stdout)")
        let record = try #require(h.record { $0["path"] as? String == "/broken-chunks" })
        #expect(record["closeCause"] as? String == "upstream_error", "\(record)")
    }

    /// Response trailers go back without hop-by-hop and framing fields.
    @Test func responseTrailersLoseHopByHopAndFramingFields() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let script = readToEndScript(timeout: 10, send: "s.sendall(sys.argv[2].encode())")
        let result = try runCommand("python3", ["-c", script, "\(h.httpPort)",
                                                "GET /chunked-trailers HTTP/1.1\r\nHost: billing.example.test\r\nConnection: close\r\n\r\n"], timeout: 30)
        let tail = result.stdout.components(separatedBy: "\r\n0\r\n").last ?? ""
        #expect(tail.lowercased().contains("x-checksum: abc"), "\(result.stdout)")
        #expect(!tail.lowercased().contains("cookie") && !tail.lowercased().contains("keep-alive"), "\(result.stdout)")
        #expect(!tail.lowercased().contains("x-hop"), "the response's Connection field names it: \(result.stdout)")
    }

    /// A HEAD response has no body, whatever framing the upstream announced: the next response on
    /// the connection follows its head directly.
    @Test func aHeadResponseAnnouncingChunkedCarriesNoBody() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let host = "Host: billing.example.test\r\n"
        let script = readToEndScript(timeout: 10, send: "s.sendall(sys.argv[2].encode())")
        let result = try runCommand("python3", ["-c", script, "\(h.httpPort)",
                                                "HEAD /chunked HTTP/1.1\r\n\(host)\r\nGET /after HTTP/1.1\r\n\(host)Connection: close\r\n\r\n"],
                                    timeout: 30)
        #expect(result.stdout.hasPrefix("CLOSED"), "\(result.stdout)")
        let responses = result.stdout.dropFirst("CLOSED\n".count).components(separatedBy: "\r\n\r\n")
        #expect(responses.count >= 2 && responses[1].hasPrefix("HTTP/1.1 200"), "a body followed the HEAD response: \(result.stdout)")
        #expect(result.stdout.hasSuffix("ok /after\n"), "\(result.stdout)")
        // A HEAD answered with a Content-Length keeps it (what a GET would get), with no body.
        let sized = try runCommand("python3", ["-c", script, "\(h.httpPort)",
                                               "HEAD /sized HTTP/1.1\r\n\(host)\r\nGET /after HTTP/1.1\r\n\(host)Connection: close\r\n\r\n"],
                                   timeout: 30)
        let sizedResponses = sized.stdout.dropFirst("CLOSED\n".count).components(separatedBy: "\r\n\r\n")
        #expect(sizedResponses.first?.lowercased().contains("content-length: 10") == true, "\(sized.stdout)")
        #expect(sizedResponses.count >= 2 && sizedResponses[1].hasPrefix("HTTP/1.1 200"), "a body followed the HEAD response: \(sized.stdout)")
        #expect(sized.stdout.hasSuffix("ok /after\n"), "\(sized.stdout)")
        // A refusal of a HEAD has no body either.
        let refused = try runCommand("python3", ["-c", script, "\(h.httpPort)",
                                                 "HEAD / HTTP/1.1\r\nHost: evil.example.test\r\n\r\n"], timeout: 30)
        #expect(refused.stdout.contains("HTTP/1.1 403") && refused.stdout.hasSuffix("\r\n\r\n"), "\(refused.stdout)")
    }

    /// An HTTP/1.0 client knows no chunked coding and no 1xx: a body without a length ends with
    /// the connection, and a kept-alive connection is said to be kept.
    @Test func anHTTP10ClientGetsNoChunkedBody() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let script = readToEndScript(timeout: 10, send: "s.sendall(sys.argv[2].encode())")
        let chunked = try runCommand("python3", ["-c", script, "\(h.httpPort)",
                                                 "GET /chunked HTTP/1.0\r\nHost: billing.example.test\r\nConnection: keep-alive\r\n\r\n"],
                                     timeout: 30)
        #expect(chunked.stdout.hasPrefix("CLOSED"), "the body's end is the connection's: \(chunked.stdout)")
        #expect(!chunked.stdout.lowercased().contains("transfer-encoding"), "\(chunked.stdout)")
        #expect(chunked.stdout.lowercased().contains("connection: close"), "\(chunked.stdout)")
        #expect(chunked.stdout.hasSuffix("\r\n\r\nhello\nworld\n"), "\(chunked.stdout)")
        let kept = try runCommand("python3", ["-c", script, "\(h.httpPort)",
                                              "GET /a HTTP/1.0\r\nHost: billing.example.test\r\nConnection: keep-alive\r\n\r\n"
                                                + "GET /b HTTP/1.0\r\nHost: billing.example.test\r\n\r\n"], timeout: 30)
        #expect(kept.stdout.lowercased().contains("connection: keep-alive"), "\(kept.stdout)")
        #expect(kept.stdout.contains("ok /a\n") && kept.stdout.hasSuffix("ok /b\n"), "\(kept.stdout)")
    }

    /// No upgrade crosses the gateway, so a 101 answers nothing that was asked: 502, and the
    /// connection it came on is gone.
    @Test func anUnaskedSwitchingProtocolsIs502() async throws {
        let h = try await OriginationHarness(workers: 1)
        defer { Task { await h.stop() } }
        let result = try rawHTTPExchange(port: h.httpPort, bytes: Array("GET /switch HTTP/1.1\r\nHost: billing.example.test\r\n\r\n".utf8))
        #expect(result.status == 502 && result.reason == "upstream_closed", "\(result.status) \(result.headers) \(result.body)")
        let next = try rawHTTPExchange(port: h.httpPort, bytes: Array("GET /next HTTP/1.1\r\nHost: billing.example.test\r\nConnection: close\r\n\r\n".utf8))
        #expect(next.status == 200 && next.body == "ok /next\n", "\(next.status) \(next.body)")
        let record = try #require(h.record { $0["path"] as? String == "/switch" })
        #expect(record["closeCause"] as? String == "upstream_error" && record["decision"] as? String == "allow", "\(record)")
    }

    @Test func connectOnTheHTTPListenerIs405() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let result = try rawHTTPExchange(port: h.httpPort, bytes: Array("CONNECT billing.example.test:443 HTTP/1.1\r\nHost: billing.example.test:443\r\n\r\n".utf8))
        #expect(result.status == 405 && result.reason == "method_not_allowed", "\(result.status) \(result.headers) \(result.body)")
        #expect(result.headers["allow"]?.contains("GET") == true && result.headers["allow"]?.contains("CONNECT") == false, "\(result.headers)")
        #expect(h.upstream.requests.isEmpty, "\(h.upstream.requests)")
    }
}

extension OriginationFramingTests {
    /// `Upgrade` never crosses the gateway, and the request decoder reads nothing after a request
    /// that asks for one: it is answered as HTTP/1.1 with `Connection: close`, so the client sends
    /// what follows on a new connection instead of waiting on this one. curl --http2 asks for h2c
    /// on plain-HTTP URLs.
    @Test func aRequestAskingForAnUpgradeIsAnsweredAndTheConnectionClosed() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let result = try runCommand("curl", ["-sS", "--http2", "--max-time", "5", "--connect-to", "billing.example.test:80:127.0.0.1:\(h.httpPort)",
                                             "http://billing.example.test/one", "http://billing.example.test/two"], timeout: 30)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "ok /one\nok /two\n", "\(result.stdout) \(result.stderr)")
        let script = readToEndScript(timeout: 10, send: "s.sendall(sys.argv[2].encode())")
        let raw = try runCommand("python3", ["-c", script, "\(h.httpPort)",
                                             "GET /one HTTP/1.1\r\nHost: billing.example.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                                                + "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"], timeout: 30)
        #expect(raw.stdout.hasPrefix("CLOSED") && raw.stdout.hasPrefix("CLOSED\nHTTP/1.1 200"), "\(raw.stdout)")
        #expect(raw.stdout.lowercased().contains("connection: close") && raw.stdout.hasSuffix("ok /one\n"), "\(raw.stdout)")
    }

    /// The decoder reads nothing after a request asking for an upgrade, so neither does the
    /// gateway: what the client pushes meanwhile stays in its socket, not in the gateway's memory.
    @Test func nothingIsReadAfterARequestAskingForAnUpgrade() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let script = #"""
        import socket, sys, time
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
        s.sendall(b"GET /stall/3 HTTP/1.1\r\nHost: billing.example.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        s.setblocking(False)
        block, sent, start = b"x" * 65536, 0, time.time()
        while time.time() - start < 2 and sent < 256 << 20:
            try:
                sent += s.send(block)
            except BlockingIOError:
                time.sleep(0.01)
        print(sent)
        """#
        let result = try runCommand("python3", ["-c", script, "\(h.httpPort)"], timeout: 30)
        let sent = Int(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        #expect(sent >= 0 && sent < 64 << 20, "the gateway took \(sent) bytes after the request: \(result.stdout) \(result.stderr)")
    }
}

/// A Python function for these tests' scripts: `response(s)` reads one response with a
/// Content-Length from socket `s` and returns its body, stripped ("EOF ..." if the connection ends
/// before the head does).
private let readOneResponse = #"""
def response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d: return "EOF " + buf.decode("latin-1")
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    n = next((int(l.split(b":", 1)[1]) for l in head.split(b"\r\n")[1:] if l.lower().startswith(b"content-length:")), 0)
    while len(body) < n:
        d = s.recv(65536)
        if not d: break
        body += d
    return body.decode("latin-1").strip()
"""#
