import Foundation
import Testing

/// TLS origination: malformed requests are refused with 400 before anything goes upstream.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct OriginationBadRequestTests {
    private func expectBadRequest(_ request: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let result = try rawHTTPExchange(port: h.httpPort, bytes: request)
        #expect(result.status == 400, "\(result.status) \(result.body.debugDescription) \(result.clientError)", sourceLocation: sourceLocation)
        #expect(result.reason == "bad_request", "\(result.headers)", sourceLocation: sourceLocation)
        #expect(result.bodyIsOneLine, "\(result.body.debugDescription)", sourceLocation: sourceLocation)
        #expect(h.record { $0["status"] as? Int == 400 } != nil, "the request is logged: \(h.records())", sourceLocation: sourceLocation)
        try await Task.sleep(for: .milliseconds(300))
        #expect(h.upstream.requests.isEmpty, "nothing goes upstream for a 400: \(h.upstream.requests)", sourceLocation: sourceLocation)
    }

    @Test func contentLengthAndTransferEncodingTogetherIs400() async throws {
        // The chunked body ends at once; a smuggled request follows it. Neither may go upstream.
        try await expectBadRequest(Array(("POST /sink HTTP/1.1\r\nHost: billing.example.test\r\nContent-Length: 5\r\n"
            + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: billing.example.test\r\n\r\n").utf8))
    }

    @Test func headerNameWithASpaceIs400() async throws {
        try await expectBadRequest(Array("GET /x HTTP/1.1\r\nHost: billing.example.test\r\nBad Name: v\r\n\r\n".utf8))
    }

    @Test func controlByteInAHeaderValueIs400() async throws {
        try await expectBadRequest(Array("GET /x HTTP/1.1\r\nHost: billing.example.test\r\nX-Bad: a\u{01}b\r\n\r\n".utf8))
    }

    @Test func headersOver64KiBAre400() async throws {
        let big = String(repeating: "a", count: 70 * 1024)
        try await expectBadRequest(Array("GET /x HTTP/1.1\r\nHost: billing.example.test\r\nX-Big: \(big)\r\n\r\n".utf8))
    }

    @Test func manyHeadersOver64KiBInTotalAre400() async throws {
        let headers = (0..<70).map { "X-H\($0): \(String(repeating: "b", count: 1024))\r\n" }.joined()
        try await expectBadRequest(Array("GET /x HTTP/1.1\r\nHost: billing.example.test\r\n\(headers)\r\n".utf8))
    }

    @Test func headersJustUnder64KiBArePassedOn() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let value = String(repeating: "c", count: 60 * 1024)
        let result = try rawHTTPExchange(port: h.httpPort, bytes: Array("GET /x HTTP/1.1\r\nHost: billing.example.test\r\nX-Big: \(value)\r\nConnection: close\r\n\r\n".utf8))
        #expect(result.status == 200, "\(result.status) \(result.body.debugDescription) \(result.clientError)")
        #expect(h.upstream.requests.count == 1)
    }
}

/// `Expect: 100-continue`: the upstream's interim `100 Continue` reaches the client, which then
/// sends the body, and the final response follows on the same connection.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct OriginationContinueTests {
    @Test func aHundredContinueFromTheUpstreamReachesTheClient() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let result = try runCommand("python3", ["-c", """
            import socket, sys
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
            s.sendall(b"POST /sink HTTP/1.1\\r\\nHost: billing.example.test\\r\\nContent-Length: 5\\r\\n"
                      b"Expect: 100-continue\\r\\nConnection: close\\r\\n\\r\\n")
            s.settimeout(5)
            first = b""
            try:
                while b"\\r\\n\\r\\n" not in first:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    first += chunk
            except socket.timeout:
                print("NO-INTERIM")
                sys.exit(0)
            print("FIRST " + first.split(b"\\r\\n", 1)[0].decode())
            s.sendall(b"hello")
            rest = first.split(b"\\r\\n\\r\\n", 1)[1]
            s.settimeout(10)
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                rest += chunk
            print("FINAL " + rest.split(b"\\r\\n", 1)[0].decode())
            """, "\(h.httpPort)"], timeout: 60)
        #expect(result.stdout.contains("FIRST HTTP/1.1 100 Continue"), "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("FINAL HTTP/1.1 200"), "\(result.stdout)\(result.stderr)")
        #expect(h.upstream.requests.count == 1)
    }
}

/// `corridor check` on HTTP ports.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct OriginationCheckTests {
    private func check(_ ports: String) throws -> (CommandResult, String) {
        let dir = try TempDir()
        let file = dir.path("services.yaml")
        try """
        apiVersion: corridor.dev/v1alpha1
        kind: ExternalService
        metadata: {name: billing}
        spec:
          hosts: [billing.example.test]
          ports:
        \(ports)
          access: All
        """.write(toFile: file, atomically: true, encoding: .utf8)
        return (try runCommand(Repo.corridorBinary.path, ["check", "--config", file]), file)
    }

    @Test func httpPortWithoutOriginateTLSOrAllowPlaintextIsRejected() throws {
        let (result, file) = try check("    - {number: 80, protocol: HTTP}")
        #expect(result.status == 2, "\(result.stdout) \(result.stderr)")
        #expect(result.stderr.contains("\(file):"), "\(result.stderr)")
        #expect(result.stderr.contains("(ExternalService/billing): spec.ports[0]"), "\(result.stderr)")
    }

    @Test func allowPlaintextIsAcceptedWithAWarning() throws {
        let (result, _) = try check("    - {number: 80, protocol: HTTP, allowPlaintext: true}")
        #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
        #expect(result.stdout.split(separator: "\n").contains { $0.contains("allowPlaintext") }, "\(result.stdout)")
    }

    @Test func originateTLSWithEveryFieldIsAccepted() throws {
        let dir = try TempDir()
        let pki = try OriginationPKI(in: dir)
        var originate = OriginateTLS(port: 8443, trust: .caFile(pki.caCert))
        originate.clientCertificate = (pki.clientCert, pki.clientKey)
        originate.sni = "other.example.test"
        originate.minVersion = "TLSv1.3"
        let (result, _) = try check("    - number: 80\n      protocol: HTTP\n" + originate.yaml(indent: 6))
        #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
        #expect(!result.stdout.contains("allowPlaintext"))
        var inline = OriginateTLS(port: 8443, trust: .inlineCA(try String(contentsOfFile: pki.caCert, encoding: .utf8)))
        inline.minVersion = "TLSv1.2"
        let (second, _) = try check("    - number: 80\n      protocol: HTTP\n" + inline.yaml(indent: 6))
        #expect(second.status == 0, "\(second.stdout) \(second.stderr)")
    }

    @Test func originateTLSWithoutPortIsRejected() throws {
        let (result, _) = try check("    - number: 80\n      protocol: HTTP\n      originateTLS: {sni: billing.example.test}")
        #expect(result.status == 2, "\(result.stdout) \(result.stderr)")
        #expect(result.stderr.contains("(ExternalService/billing): spec.ports[0].originateTLS"), "\(result.stderr)")
    }

    @Test func minVersionOtherThanTLS12OrTLS13IsRejected() throws {
        let (result, _) = try check("    - number: 80\n      protocol: HTTP\n      originateTLS: {port: 8443, minVersion: TLSv1.0}")
        #expect(result.status == 2, "\(result.stdout) \(result.stderr)")
        #expect(result.stderr.contains("minVersion"), "\(result.stderr)")
    }
}
