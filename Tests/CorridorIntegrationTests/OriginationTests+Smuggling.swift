import Foundation
import Testing

/// Request smuggling and fronting attempts against TLS origination (found in review): each must be
/// refused or neutralised, and nothing undecided may reach an upstream.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct OriginationSmugglingTests {
    @Test(arguments: ["content-length", "Transfer-Encoding", "host"])
    func connectionHeaderNamingFramingIs400(named: String) async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let smuggled = "GET /smuggled HTTP/1.1\r\nHost: evil.example\r\n\r\n"
        let request = "GET /a HTTP/1.1\r\nHost: billing.example.test\r\nConnection: \(named)\r\nContent-Length: \(smuggled.utf8.count)\r\n\r\n" + smuggled
        let result = try rawHTTPExchange(port: h.httpPort, bytes: Array(request.utf8))
        #expect(result.status == 400, "\(result.status) \(result.body)")
        #expect(result.reason == "bad_request")
        try await Task.sleep(for: .milliseconds(300))
        #expect(h.upstream.requests.isEmpty, "\(h.upstream.requests)")
    }

    @Test func pipelinedRequestsAreEachJudgedAndNeverSpliced() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let inner = "GET /smuggled HTTP/1.1\r\nHost: evil.example\r\n\r\n"
        let pipelined = "GET /first HTTP/1.1\r\nHost: billing.example.test\r\n\r\n"
            + "POST /sink HTTP/1.1\r\nHost: billing.example.test\r\nContent-Length: \(inner.utf8.count)\r\n\r\n" + inner
            + "GET /third HTTP/1.1\r\nHost: evil.example.test\r\nConnection: close\r\n\r\n"
        let script = readToEndScript(timeout: 10, send: "s.sendall(sys.argv[2].encode())")
        let result = try runCommand("python3", ["-c", script, "\(h.httpPort)", pipelined], timeout: 30)
        let statuses = result.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            .filter { $0.hasPrefix("HTTP/1.1 ") }
        #expect(statuses.count == 3, "\(result.stdout)")
        #expect(statuses.first?.hasPrefix("HTTP/1.1 200") ?? false)
        #expect(statuses.last?.hasPrefix("HTTP/1.1 403") ?? false, "the third request names a host that is not allowed")
        #expect(result.stdout.contains("\(inner.utf8.count) "), "the POST body reached /sink as a body: \(result.stdout)")
        try await Task.sleep(for: .milliseconds(300))
        let paths = h.upstream.requests.map { $0["path"] as? String ?? "" }
        #expect(paths == ["/first", "/sink"], "\(paths)")
    }

    /// Requests that arrive while an earlier one is being answered wait their turn; so do a
    /// half-close and a malformed request after them: each is taken up in order.
    @Test(arguments: ["halfClose", "garbage"])
    func whatFollowsAPipelinedRequestIsTakenUpInOrder(ending: String) async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let two = "GET /one HTTP/1.1\r\nHost: billing.example.test\r\n\r\n" + "GET /two HTTP/1.1\r\nHost: billing.example.test\r\n\r\n"
        let script = readToEndScript(timeout: 10, send: """
        data = sys.argv[2].encode()
        if sys.argv[3] == "garbage":
            data += b"NOT HTTP\\x00\\r\\n\\r\\n"
        s.sendall(data)
        if sys.argv[3] == "halfClose":
            s.shutdown(socket.SHUT_WR)
        """)
        let result = try runCommand("python3", ["-c", script, "\(h.httpPort)", two, ending], timeout: 30)
        let statuses = result.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            .filter { $0.hasPrefix("HTTP/1.1 ") }
        let expected = ending == "garbage" ? ["200", "200", "400"] : ["200", "200"]
        #expect(statuses.map { String($0.dropFirst(9).prefix(3)) } == expected, "\(result.stdout)")
        #expect(result.stdout.hasPrefix("CLOSED"), "the connection closes after the last answer: \(result.stdout)")
        try await Task.sleep(for: .milliseconds(300))
        #expect(h.upstream.requests.map { $0["path"] as? String ?? "" } == ["/one", "/two"], "\(h.upstream.requests)")
    }

    /// A client that half-closes after its request, or whose next request is refused, and has not
    /// read its response yet when the gateway is done with the exchange, still gets every byte of
    /// it (and then the refusal) before the connection closes: the close waits for what the
    /// socket has not taken yet. The client waits for the exchange's access record before reading;
    /// the bytes are then in the socket's buffers, and beyond them only while the response is a
    /// little larger than those, so the script bisects for the largest response whose record
    /// appears before the client reads, checking every response it gets on the way.
    @Test(arguments: ["halfClose", "refusedNext"])
    func theLastResponseIsWrittenWholeBeforeTheClose(ending: String) async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let script = """
        import socket, sys, time
        port, log, ending = int(sys.argv[1]), sys.argv[2], sys.argv[3]
        records = 2 if ending == "refusedNext" else 1
        def lines():
            with open(log, "rb") as f:
                return f.read().count(b"\\n")
        def attempt(n, wait=1.0):
            before = lines()
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(20)
            s.connect(("127.0.0.1", port))
            request = b"GET /size/%d HTTP/1.1\\r\\nHost: billing.example.test\\r\\n\\r\\n" % n
            if ending == "refusedNext":
                request += b"GET /x HTTP/1.1\\r\\nHost: evil.example.test\\r\\n\\r\\n"
            s.sendall(request)
            if ending == "halfClose":
                s.shutdown(socket.SHUT_WR)
            deadline, seen = time.time() + wait, False
            while time.time() < deadline and not seen:
                seen = lines() >= before + records
                time.sleep(0.01)
            buf = bytearray()
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            s.close()
            head_end = buf.index(b"\\r\\n\\r\\n") + 4
            whole = len(buf) - head_end >= n
            if ending == "refusedNext":
                whole = whole and bytes(buf[head_end + n:]).startswith(b"HTTP/1.1 403")
            if not whole:
                print("CUT", n, len(buf) - head_end)
            # This attempt's records are all written before the next one counts lines.
            deadline = time.time() + 10
            while lines() < before + records and time.time() < deadline:
                time.sleep(0.01)
            return seen
        lo, hi = 64 << 10, 32 << 20
        # The lower bracket must be seen: it gets longer to show, on a slow machine. A bisection
        # step missed only makes the bracket tighter below, which still checks every response.
        if not attempt(lo, wait=10.0) or attempt(hi):
            print("NO-BRACKET")
        while hi - lo > 8192:
            mid = (lo + hi) // 2
            if attempt(mid):
                lo = mid
            else:
                hi = mid
        for n in (lo, lo - 4096, lo - 8192, lo + 4096):
            attempt(n)
        print("DONE", lo)
        """
        let result = try runCommand("python3", ["-c", script, "\(h.httpPort)", h.accessLogPath, ending], timeout: 150)
        #expect(result.stdout.contains("DONE"), "\(result.stdout) \(result.stderr)")
        #expect(!result.stdout.contains("NO-BRACKET"), "\(result.stdout)")
        #expect(!result.stdout.contains("CUT"), "a response was cut short: \(result.stdout)")
    }

    /// A request body that turns malformed while the upstream's response is already going out
    /// cuts the connection: a 400 then would land inside that response.
    @Test func aBodyGoingBadMidResponseCutsTheConnection() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let script = readToEndScript(timeout: 5, send: """
        s.sendall(b"POST /early-partial HTTP/1.1\\r\\nHost: billing.example.test\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n5\\r\\nhello\\r\\n")
        while b"12345" not in buf:  # the response is going out (the upstream holds its rest for 1 s)
            chunk = s.recv(65536)
            if not chunk: break
            buf += chunk
        s.sendall(b"zz\\r\\n")
        """)
        let result = try runCommand("python3", ["-c", script, "\(h.httpPort)"], timeout: 30)
        #expect(result.stdout.hasPrefix("CLOSED"), "\(result.stdout)")
        #expect(result.stdout.contains("HTTP/1.1 200") && result.stdout.contains("12345"), "\(result.stdout)")
        #expect(!result.stdout.contains("HTTP/1.1 400"), "a refusal was written into the response: \(result.stdout)")
        let record = try #require(h.record { ($0["path"] as? String)?.hasPrefix("/early-partial") ?? false || $0["status"] as? Int == 200 })
        #expect(record["closeCause"] as? String == "client_error", "\(record)")
        #expect((record["reason"] as? String ?? "").contains("malformed HTTP request"), "\(record)")
    }

    /// NIO's request encoder takes a body for chunked only when the head says exactly `chunked`,
    /// and strips the framing of a TRACE: a request framed in other words (or a TRACE with a
    /// body) left its decoded body raw behind its head, and the upstream read a request of the
    /// client's making out of it, unjudged and unrecorded (found in review). The body must reach
    /// the upstream as the body, framed in the gateway's own words.
    @Test(arguments: [("GET", "Chunked"), ("DELETE", " ,chunked"), ("OPTIONS", "CHUNKED"), ("PROPFIND", "Chunked")])
    func aChunkedBodyGoesUpFramedInTheGatewaysWords(method: String, transferEncoding: String) async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let inner = "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: evil.example\r\n\r\n"
        let chunked = String(inner.utf8.count, radix: 16) + "\r\n" + inner + "\r\n0\r\n\r\n"
        let request = "\(method) /x HTTP/1.1\r\nHost: billing.example.test\r\nTransfer-Encoding: \(transferEncoding)\r\nConnection: close\r\n\r\n" + chunked
        let result = try rawHTTPExchange(port: h.httpPort, bytes: Array(request.utf8))
        #expect(result.status == 200, "\(result.status) \(result.body)")
        try await Task.sleep(for: .milliseconds(300))
        let requests = h.upstream.requests
        #expect(requests.map { $0["path"] as? String ?? "" } == ["/x"], "\(requests)")
        #expect(requests.first?["transferEncoding"] as? String == "chunked", "\(requests)")
        #expect(requests.first?["bodyBytes"] as? Int == inner.utf8.count, "\(requests)")
    }

    @Test func aTRACEWithABodyIs400() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let inner = "GET /smuggled HTTP/1.1\r\nHost: evil.example\r\n\r\n"
        let request = "TRACE /t HTTP/1.1\r\nHost: billing.example.test\r\nContent-Length: \(inner.utf8.count)\r\n\r\n" + inner
        let result = try rawHTTPExchange(port: h.httpPort, bytes: Array(request.utf8))
        #expect(result.status == 400 && result.reason == "bad_request", "\(result.status) \(result.body)")
        #expect(result.headers["corridor-decision"] == "deny", "as the record says: \(result.headers)")
        try await Task.sleep(for: .milliseconds(300))
        #expect(h.upstream.requests.isEmpty, "\(h.upstream.requests)")
        #expect(h.record { $0["method"] as? String == "TRACE" }?["decision"] as? String == "deny")
        // A TRACE without one goes up as it is.
        let plain = try rawHTTPExchange(port: h.httpPort, bytes: Array("TRACE /t HTTP/1.1\r\nHost: billing.example.test\r\nConnection: close\r\n\r\n".utf8))
        #expect(plain.status == 200, "\(plain.status) \(plain.body)")
    }

    /// A request's Content-Length goes up as the number the decoder read, and a bodiless POST
    /// states a length of 0.
    @Test func aLengthGoesUpAsTheNumberDecoded() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let request = "POST /sink HTTP/1.1\r\nHost: billing.example.test\r\nContent-Length: 005\r\n\r\nhello"
            + "POST /empty HTTP/1.1\r\nHost: billing.example.test\r\nConnection: close\r\n\r\n"
        let script = readToEndScript(timeout: 10, send: "s.sendall(sys.argv[2].encode())")
        let result = try runCommand("python3", ["-c", script, "\(h.httpPort)", request], timeout: 30)
        #expect(result.stdout.components(separatedBy: "HTTP/1.1 200").count == 3, "\(result.stdout)")
        try await Task.sleep(for: .milliseconds(300))
        let requests = h.upstream.requests
        #expect(requests.map { $0["contentLength"] as? String ?? "-" } == ["5", "0"], "\(requests)")
        #expect(requests.map { $0["transferEncoding"] is NSNull } == [true, true], "\(requests)")
    }

    /// A response coded with more than chunked (gzip, say) cannot be passed on as it was: the
    /// decoder takes the chunked coding off, and re-framed as chunked alone the body would reach
    /// the client with its gzip coding unnamed.
    /// `chunked,` too (found in review): the decoder takes it for no chunked coding and reads the
    /// body to the connection's end, which the client got as chunk lines and then a cut after
    /// the idle limit.
    @Test(arguments: ["/gzip-chunked", "/te-comma"])
    func aResponseWithAnotherTransferCodingIs502(path: String) async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let result = try rawHTTPExchange(port: h.httpPort, bytes: Array("GET \(path) HTTP/1.1\r\nHost: billing.example.test\r\n\r\n".utf8))
        #expect(result.status == 502 && result.reason == "unsupported_transfer_coding", "\(result.status) \(result.body)")
        #expect(await eventually { h.record { $0["status"] as? Int == 502 } != nil })
    }

    /// Each interim response starts the response deadline again; an upstream sending them without
    /// end gets a 502 after a bounded number instead of holding the exchange for ever.
    @Test func endlessInterimResponsesAre502() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let script = readToEndScript(timeout: 10, send: "s.sendall(b\"GET /many-interims HTTP/1.1\\r\\nHost: billing.example.test\\r\\n\\r\\n\")")
        let result = try runCommand("python3", ["-c", script, "\(h.httpPort)"], timeout: 30)
        let statuses = result.stdout.components(separatedBy: "HTTP/1.1 ").dropFirst().map { String($0.prefix(3)) }
        #expect(result.stdout.hasPrefix("CLOSED"), "\(result.stdout)")
        #expect(statuses == Array(repeating: "103", count: 16) + ["502"], "\(result.stdout)")
    }

    @Test func absoluteFormSendsTheJudgedHostNotTheClientsHostHeader() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let request = "GET http://billing.example.test/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        let result = try rawHTTPExchange(port: h.httpPort, bytes: Array(request.utf8))
        #expect(result.status == 200, "\(result.status) \(result.body)")
        try await Task.sleep(for: .milliseconds(200))
        #expect(h.upstream.requests.map { $0["host"] as? String ?? "" } == ["billing.example.test"], "\(h.upstream.requests)")
    }

    @Test func aRequestHeadThatNeverCompletesIsCutAtTheDeadline() async throws {
        let h = try await OriginationHarness(gatewayExtra: "  limits: {handshakeTimeout: 1s}")
        defer { Task { await h.stop() } }
        let script = """
        import socket, sys, time
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: bill")
        start = time.time()
        try:
            print("closed" if s.recv(1) == b"" else "data", round(time.time() - start, 1))
        except socket.timeout:
            print("open")
        """
        let result = try runCommand("python3", ["-c", script, "\(h.httpPort)"], timeout: 30)
        #expect(result.stdout.hasPrefix("closed"), "\(result.stdout) \(result.stderr)")
    }
}

/// A Python client for the raw exchanges of these tests: connects to the port in argv[1], runs `send` (with
/// `s` the socket), then reads until the gateway closes, and prints CLOSED (or OPEN, when the
/// connection was still open after `timeout` seconds of silence) and then everything it read.
func readToEndScript(timeout: Int, send: String) -> String {
    """
    import socket, sys, time
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=\(timeout))
    buf = b""
    \(send)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk: break
            buf += chunk
        sys.stdout.write("CLOSED\\n")
    except socket.timeout:
        sys.stdout.write("OPEN\\n")
    sys.stdout.write(buf.decode("latin-1"))
    """
}
