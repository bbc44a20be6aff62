import Foundation
import Testing

/// TLS origination: the upstream's certificate is verified, client certificates are presented, and
/// an upstream that cannot be reached or does not answer is reported as such.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct OriginationVerificationTests {
    /// A 502 with the verification code, a one-line body naming the certificate problem, an access
    /// record with status 502, and nothing served upstream.
    private func expectVerificationFailure(_ h: OriginationHarness, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let result = try h.curlViaProxy("http://billing.example.test/x")
        #expect(result.status == 502, "\(result.status) \(result.body) \(result.clientError)", sourceLocation: sourceLocation)
        #expect(result.reason == "upstream_tls_verification_failed", "\(result.headers)", sourceLocation: sourceLocation)
        #expect(result.bodyIsOneLine, "\(result.body.debugDescription)", sourceLocation: sourceLocation)
        #expect(result.body.lowercased().contains("certificate"), "the body says why: \(result.body)", sourceLocation: sourceLocation)
        let record = h.record { $0["host"] as? String == "billing.example.test" }
        #expect(record?["status"] as? Int == 502, "\(String(describing: record))", sourceLocation: sourceLocation)
        try await Task.sleep(for: .milliseconds(200))
        #expect(h.upstream.requests.isEmpty, "no request may be sent over an unverified connection", sourceLocation: sourceLocation)
    }

    @Test func upstreamSignedByAnotherCAIsRefusedWith502() async throws {
        let h = try await OriginationHarness(configure: { o, pki in o.trust = .caFile(pki.otherCACert) })
        defer { Task { await h.stop() } }
        try await expectVerificationFailure(h)
    }

    @Test func expiredUpstreamCertificateIsRefusedWith502() async throws {
        let h = try await OriginationHarness(upstreamCert: { ($0.expiredCert, $0.expiredKey) })
        defer { Task { await h.stop() } }
        try await expectVerificationFailure(h)
    }

    @Test func upstreamCertificateForAnotherNameIsRefusedWith502() async throws {
        let h = try await OriginationHarness(upstreamCert: { ($0.mismatchCert, $0.mismatchKey) })
        defer { Task { await h.stop() } }
        try await expectVerificationFailure(h)
    }

    /// NIOSSL would take an IP alternative name equal to the address dialled: whoever steers the
    /// gateway's DNS answer to an address of theirs could hold such a certificate.
    @Test func aCertificateForTheDialledAddressOnlyIsRefusedWith502() async throws {
        let h = try await OriginationHarness(upstreamCert: { ($0.addressOnlyCert, $0.addressOnlyKey) })
        defer { Task { await h.stop() } }
        try await expectVerificationFailure(h)
        let record = h.record { $0["host"] as? String == "billing.example.test" }
        #expect((record?["reason"] as? String ?? "").contains("does not name billing.example.test"), "\(String(describing: record))")
    }

    /// NIOSSL falls back to the common name when a certificate has no alternative names.
    @Test func aCertificateNamingTheHostOnlyInItsCommonNameIsRefusedWith502() async throws {
        let h = try await OriginationHarness(upstreamCert: { ($0.commonNameOnlyCert, $0.commonNameOnlyKey) })
        defer { Task { await h.stop() } }
        try await expectVerificationFailure(h)
    }

    /// A CA bundle rotated in place (a mounted Secret's update) is read again with no change to
    /// the config file: a root dropped from it is no longer trusted.
    @Test func aCABundleRotatedInPlaceIsReadAgain() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let bundle = h.dir.path("rotated-ca.pem")
        try FileManager.default.copyItem(atPath: h.pki.caCert, toPath: bundle)
        var config = try String(contentsOfFile: h.configPath, encoding: .utf8)
        config = config.replacingOccurrences(of: h.pki.caCert, with: bundle)
        try config.write(toFile: h.configPath, atomically: true, encoding: .utf8)
        #expect(h.gateway.reload(reason: "test"))
        #expect(try h.curlViaProxy("http://billing.example.test/x").status == 200)
        // The Secret now holds another CA only.
        try String(contentsOfFile: h.pki.otherCACert, encoding: .utf8).write(toFile: bundle, atomically: true, encoding: .utf8)
        #expect(await eventually(timeout: 10) {
            h.gateway.reloadIfChanged()  // what the file watcher does every second
            return (try? h.curlViaProxy("http://billing.example.test/x").status) == 502
        })
        #expect(try h.curlViaProxy("http://billing.example.test/x").reason == "upstream_tls_verification_failed")
    }

    @Test func sniOverrideDoesNotMakeAMismatchedCertificatePass() async throws {
        // The certificate is for wrong.example.test only; an SNI of other.example.test changes nothing.
        let h = try await OriginationHarness(upstreamCert: { ($0.mismatchCert, $0.mismatchKey) },
                                             configure: { o, _ in o.sni = "other.example.test" })
        defer { Task { await h.stop() } }
        try await expectVerificationFailure(h)
    }

    @Test func withoutCABundleTheSystemTrustStoreIsUsedAndRefusesTheTestCA() async throws {
        let h = try await OriginationHarness(configure: { o, _ in o.trust = .system })
        defer { Task { await h.stop() } }
        try await expectVerificationFailure(h)
    }

    @Test func inlineCABundleIsTrusted() async throws {
        let h = try await OriginationHarness(configure: { o, pki in
            o.trust = .inlineCA((try? String(contentsOfFile: pki.caCert, encoding: .utf8)) ?? "")
        })
        defer { Task { await h.stop() } }
        let result = try h.curlViaProxy("http://billing.example.test/x")
        #expect(result.status == 200, "\(result.status) \(result.body) \(result.clientError)")
        #expect(result.body == "ok /x\n")
    }

    @Test func clientCertificateIsPresentedForMutualTLS() async throws {
        let h = try await OriginationHarness(requireClientCert: true, configure: { o, pki in
            o.clientCertificate = (pki.clientCert, pki.clientKey)
        })
        defer { Task { await h.stop() } }
        let result = try h.curlViaProxy("http://billing.example.test/x")
        #expect(result.status == 200, "\(result.status) \(result.body) \(result.clientError)")
        #expect(result.body == "ok /x\n")
        let seen = try #require(h.upstream.requests.first)
        #expect(seen["clientCert"] as? String == "corridor-gateway")
        #expect(seen["sni"] as? String == "billing.example.test")
    }

    @Test func withoutAClientCertificateAnUpstreamThatRequiresOneRefusesAnd502IsReturned() async throws {
        let h = try await OriginationHarness(requireClientCert: true)
        defer { Task { await h.stop() } }
        let result = try h.curlViaProxy("http://billing.example.test/x")
        #expect(result.status == 502, "\(result.status) \(result.body) \(result.clientError)")
        #expect(result.reason != nil, "a refusal always carries Corridor-Reason: \(result.headers)")
        #expect(result.bodyIsOneLine, "\(result.body.debugDescription)")
        #expect(h.upstream.requests.isEmpty)
        #expect(await eventually { !h.upstream.failedHandshakes.isEmpty }, "the upstream refused the handshake")
    }

    @Test func closedUpstreamPortIs502UpstreamUnreachable() async throws {
        let closed = try unusedPort()
        let h = try await OriginationHarness(configure: { o, _ in o.port = closed })
        defer { Task { await h.stop() } }
        let result = try h.curlViaProxy("http://billing.example.test/x")
        #expect(result.status == 502, "\(result.status) \(result.body) \(result.clientError)")
        #expect(result.reason == "upstream_unreachable", "\(result.headers)")
        #expect(result.bodyIsOneLine, "\(result.body.debugDescription)")
        #expect(h.record { $0["host"] as? String == "billing.example.test" }?["status"] as? Int == 502)
    }

    @Test func upstreamThatNeverAnswersIs504UpstreamTimeout() async throws {
        // Accepts TCP (the kernel completes the handshake from the backlog) and never says a word.
        let silent = try BackgroundProcess("python3", ["-c", """
        import socket, time
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
        print(f"PORT {s.getsockname()[1]}", flush=True)
        time.sleep(600)
        """])
        var port: Int?
        _ = await eventually { port = silent.stdoutText.split(separator: "\n").first { $0.hasPrefix("PORT ") }.flatMap { Int($0.dropFirst(5)) }; return port != nil }
        let silentPort = try #require(port)
        let h = try await OriginationHarness(gatewayExtra: "  limits: {connectTimeout: 1s, handshakeTimeout: 2s, idleTimeout: 5s}",
                                             configure: { o, _ in o.port = silentPort })
        defer { Task { await h.stop() } }
        let started = Date()
        let result = try h.curlViaProxy("http://billing.example.test/x", maxTime: 60)
        #expect(result.status == 504, "\(result.status) \(result.body) \(result.clientError)")
        #expect(result.reason == "upstream_timeout", "\(result.headers)")
        #expect(result.bodyIsOneLine, "\(result.body.debugDescription)")
        #expect(Date().timeIntervalSince(started) < 30)
    }
}

@Suite(.serialized, .timeLimit(.minutes(3)))
struct OriginationResponseTimeoutTests {
    @Test func upstreamThatTakesTooLongToAnswerIs504WithTheSettingNamed() async throws {
        let h = try await OriginationHarness(gatewayExtra: "  limits: {upstreamResponseTimeout: 1s}")
        defer { Task { await h.stop() } }
        let started = Date()
        let result = try h.curlViaProxy("http://billing.example.test/stall/20", maxTime: 30)
        #expect(result.status == 504, "\(result.status) \(result.body) \(result.clientError)")
        #expect(result.reason == "upstream_timeout", "\(result.headers)")
        #expect(result.body.contains("spec.limits.upstreamResponseTimeout"))
        #expect(Date().timeIntervalSince(started) < 15)
        let record = try #require(h.record { $0["status"] as? Int == 504 })
        #expect(record["decision"] as? String == "allow", "policy allowed it; the upstream failed it")
        #expect(record["closeCause"] as? String == "upstream_timeout")
        // A quick request right after is served normally.
        #expect(try h.curlViaProxy("http://billing.example.test/x").status == 200)
    }

    /// The response deadline counts from the end of the request: an upload that takes longer than
    /// `upstreamResponseTimeout` while it keeps moving is answered, not cut with a 504.
    @Test func aSlowUploadIsAnsweredWhateverItsLength() async throws {
        let h = try await OriginationHarness(gatewayExtra: "  limits: {upstreamResponseTimeout: 1s}")
        defer { Task { await h.stop() } }
        let result = try runCommand("python3", ["-c", """
        import socket, sys, time
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
        s.sendall(b"POST /sink HTTP/1.1\\r\\nHost: billing.example.test\\r\\nContent-Length: 6\\r\\nConnection: close\\r\\n\\r\\n")
        for part in (b"ab", b"cd", b"ef"):
            time.sleep(0.8)
            s.sendall(part)
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk: break
            buf += chunk
        sys.stdout.write(buf.decode("latin-1"))
        """, "\(h.httpPort)"], timeout: 30)
        #expect(result.stdout.hasPrefix("HTTP/1.1 200"), "\(result.stdout) \(result.stderr)")
        #expect(result.stdout.contains("\n6 "), "the upstream got the whole body: \(result.stdout)")
    }

    /// A request body that stops coming before the upstream answers is refused with 408 after
    /// `limits.idleTimeout`, recorded `idle_timeout`.
    @Test func aStalledUploadIs408AtTheIdleLimit() async throws {
        let h = try await OriginationHarness(gatewayExtra: "  limits: {idleTimeout: 1s}")
        defer { Task { await h.stop() } }
        let started = Date()
        let result = try runCommand("python3", ["-c", """
        import socket, sys
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
        s.sendall(b"POST /sink HTTP/1.1\\r\\nHost: billing.example.test\\r\\nContent-Length: 10\\r\\n\\r\\nabc")
        sys.stdout.write(s.recv(65536).decode("latin-1"))
        """, "\(h.httpPort)"], timeout: 30)
        #expect(result.stdout.hasPrefix("HTTP/1.1 408"), "\(result.stdout) \(result.stderr)")
        #expect(result.stdout.contains("Corridor-Reason: request_timeout"), "\(result.stdout)")
        #expect(result.stdout.contains("spec.limits.idleTimeout"), "\(result.stdout)")
        #expect(Date().timeIntervalSince(started) < 8)
        let record = try #require(h.record { $0["closeCause"] as? String == "idle_timeout" })
        #expect(record["status"] as? Int == 408 && record["decision"] as? String == "allow", "\(record)")
    }

    /// An upstream that stalls is answered 504, never blamed on the client: after an interim 103
    /// (the response deadline starts again), and when it stops taking the request's body (the idle
    /// limit finds the upstream, not the client, standing still).
    @Test(arguments: ["interim", "deaf"])
    func anUpstreamThatStallsIs504NotTheClientsFault(kind: String) async throws {
        let h = try await OriginationHarness(gatewayExtra: "  limits: {upstreamResponseTimeout: 1s, idleTimeout: 2s}")
        defer { Task { await h.stop() } }
        let started = Date()
        let result = try runCommand("python3", ["-c", """
        import select, socket, sys
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
        if sys.argv[2] == "interim":
            s.sendall(b"GET /interim-then-stall HTTP/1.1\\r\\nHost: billing.example.test\\r\\n\\r\\n")
        else:
            s.sendall(b"POST /deaf HTTP/1.1\\r\\nHost: billing.example.test\\r\\nContent-Length: 1000000000\\r\\n\\r\\n")
            # The body goes as fast as it is taken (the upstream's buffers fill, then ours), until
            # an answer arrives.
            while True:
                readable, writable, _ = select.select([s], [s], [], 10)
                if readable or not writable:
                    break
                s.send(b"x" * 65536)
        buf = b""
        try:
            while b"Corridor-Reason" not in buf:
                chunk = s.recv(65536)
                if not chunk: break
                buf += chunk
        except socket.timeout:
            pass
        sys.stdout.write(buf.decode("latin-1"))
        """, "\(h.httpPort)", kind], timeout: 30)
        #expect(result.stdout.contains("HTTP/1.1 504"), "\(result.stdout) \(result.stderr)")
        #expect(result.stdout.contains("Corridor-Reason: upstream_timeout"), "\(result.stdout)")
        #expect(!result.stdout.contains("408"), "\(result.stdout)")
        if kind == "interim" { #expect(result.stdout.hasPrefix("HTTP/1.1 103"), "the interim response was passed on: \(result.stdout)") }
        #expect(Date().timeIntervalSince(started) < 12)
        let record = try #require(h.record { $0["status"] as? Int == 504 })
        #expect(record["closeCause"] as? String == "upstream_timeout" && record["decision"] as? String == "allow", "\(record)")
    }

    /// A client that stops reading mid-response holds the exchange (and its upstream connection)
    /// no longer than `limits.idleTimeout`, as a relay would.
    @Test func aClientThatStopsReadingMidResponseIsCutAtTheIdleLimit() async throws {
        let h = try await OriginationHarness(gatewayExtra: "  limits: {idleTimeout: 1s}")
        defer { Task { await h.stop() } }
        let size = 64 << 20
        let script = """
        import socket, sys, time
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", int(sys.argv[1])))
        s.sendall(b"GET /size/%d HTTP/1.1\\r\\nHost: billing.example.test\\r\\n\\r\\n" % int(sys.argv[2]))
        time.sleep(4)
        got = 0
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk: break
                got += len(chunk)
            print("CLOSED", got)
        except socket.timeout:
            print("OPEN", got)
        except ConnectionResetError:
            print("CLOSED", got)
        """
        let result = try runCommand("python3", ["-c", script, "\(h.httpPort)", "\(size)"], timeout: 60)
        let words = result.stdout.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        #expect(words.first == "CLOSED", "\(result.stdout) \(result.stderr)")
        #expect((Int(words.last ?? "") ?? size) < size, "the whole response went out: \(result.stdout)")
        let record = try #require(h.record { $0["closeCause"] as? String == "idle_timeout" })
        #expect(record["status"] as? Int == 200 && record["decision"] as? String == "allow", "\(record)")
        #expect((record["reason"] as? String ?? "").contains("spec.limits.idleTimeout"), "\(record)")
        // The next request is served normally.
        #expect(try h.curlViaProxy("http://billing.example.test/x").status == 200)
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
func unusedPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard ok else { throw TestError.failed("could not bind an ephemeral port") }
    return Int(UInt16(bigEndian: address.sin_port))
}

@Suite(.serialized, .timeLimit(.minutes(3)))
struct OriginationPlaintextTests {
    @Test func allowPlaintextLetsPlainHTTPThroughToThatPortOnly() async throws {
        let plain = try BackgroundProcess("python3", ["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
        var port: Int?
        _ = await eventually {
            port = plain.stdoutText.split(separator: "\n").first { $0.contains(" port ") }
                .flatMap { line in line.split(separator: " ").firstIndex(of: "port").map { Int(line.split(separator: " ")[$0 + 1]) } ?? nil }
            return port != nil
        }
        let plainPort = try #require(port, "http.server did not start: \(plain.stdoutText) \(plain.stderrText)")
        let h = try await OriginationHarness(moreServices: { _, _ in [
            """
            apiVersion: corridor.dev/v1alpha1
            kind: ExternalService
            metadata: {name: legacy}
            spec:
              hosts: [other.example.test]
              ports: [{number: \(plainPort), protocol: HTTP, allowPlaintext: true}]
              access: All
            """,
        ] })
        defer { Task { await h.stop() } }
        let result = try h.curlViaProxy("http://other.example.test:\(plainPort)/")
        #expect(result.status == 200, "\(result.status) \(result.body) \(result.clientError)")
        #expect(result.body.contains("Directory listing"))
        let record = try #require(h.record { $0["externalService"] as? String == "legacy" })
        #expect(record["decision"] as? String == "allow")
        // The same host on another port is not registered: refused.
        let other = try h.curlViaProxy("http://other.example.test:\(plainPort + 1)/")
        #expect(other.status == 403)
        #expect(other.reason == "policy_denied")
    }
}
