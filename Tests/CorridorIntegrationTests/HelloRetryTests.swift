import Foundation
import Testing

/// A HelloRetryRequest between the client and an allowed server, on the tls and connect
/// listeners (and both data planes, see `testDataPlane`): the second ClientHello must repeat what
/// the first was decided on.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct HelloRetryTests {
    enum Front: String, CaseIterable { case tls, connect }

    /// Runs `hello_retry_client.py` through `front`, to the harness's upstream.
    private func retryClient(_ h: GatewayHarness, _ front: Front, first: String, second: String, early: Bool = false) throws -> [String: Any] {
        var arguments = [Repo.support.appendingPathComponent("hello_retry_client.py").path, "--first", first, "--second", second]
        switch front {
        case .tls: arguments += ["--port", "\(h.tlsPort)"]
        case .connect: arguments += ["--port", "\(h.connectPort)", "--connect", "\(first):\(h.upstream.port)"]
        }
        if early { arguments.append("--early") }
        let result = try runCommand("python3", arguments, timeout: 30)
        guard let object = (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any] else {
            throw TestError.failed("client printed no JSON: \(result.stdout) \(result.stderr)")
        }
        return object
    }

    @Test(arguments: Front.allCases)
    func aSecondHelloNamingAnotherServerIsRefused(_ front: Front) async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        // evil.test is served by the same upstream, at the same address, but no policy allows it.
        let result = try retryClient(h, front, first: "api.allowed.test", second: "evil.test")
        #expect(result["retry"] as? Bool == true, "\(result)")
        #expect(result["answer"] as? String == "alert:47", "the server answered the second hello: \(result)")
        let record = try #require(h.record { $0["sni"] as? String == "api.allowed.test" })
        #expect(record["decision"] as? String == "deny", "\(record)")
        #expect(record["closeCause"] as? String == "invalid_client_hello", "\(record)")
        let reason = try #require(record["reason"] as? String)
        #expect(reason.contains("after a HelloRetryRequest") && reason.contains("then evil.test"), "\(reason)")
        #expect(h.record(timeout: 0.5) { $0["decision"] as? String == "allow" } == nil)
    }

    @Test(arguments: Front.allCases)
    func theSameSecondHelloGoesThrough(_ front: Front) async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try retryClient(h, front, first: "api.allowed.test", second: "api.allowed.test")
        #expect(result["retry"] as? Bool == true, "\(result)")
        #expect(result["answer"] as? String == "server_hello", "\(result)")
        let record = try #require(h.record { $0["sni"] as? String == "api.allowed.test" })
        #expect(record["decision"] as? String == "allow", "\(record)")
    }

    @Test(arguments: Front.allCases)
    func aSecondHelloSentBeforeTheServerAnswersIsRefused(_ front: Front) async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try retryClient(h, front, first: "api.allowed.test", second: "evil.test", early: true)
        #expect(result["answer"] as? String == "alert:47", "\(result)")
        let record = try #require(h.record { $0["sni"] as? String == "api.allowed.test" })
        #expect(record["decision"] as? String == "deny", "\(record)")
        #expect(record["closeCause"] as? String == "invalid_client_hello", "\(record)")
    }

    /// OpenSSL's own client and server: the client's key share is for P-256, the server takes
    /// X25519 only, so the server asks for a retry and the client sends its hello again.
    @Test(arguments: Front.allCases)
    func aRealClientsRetryGoesThrough(_ front: Front) async throws {
        let dir = try TempDir()
        let key = dir.path("key.pem"), cert = dir.path("cert.pem")
        _ = try runCommand("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                                       "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=evil.test"])
        let server = try BackgroundProcess("openssl", ["s_server", "-accept", "127.0.0.1:0", "-cert", cert, "-key", key,
                                                       "-groups", "X25519", "-naccept", "1"],
                                           withStdin: true)  // s_server ends the connection at the end of its input
        defer { server.signal(SIGKILL) }
        #expect(await eventually { server.stdoutText.contains("ACCEPT") }, "\(server.stderrText)")
        let port = try #require(server.stdoutText.split(separator: ":").last.flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
        let h = try await GatewayHarness(extra: """
            ---
            apiVersion: corridor.dev/v1alpha1
            kind: ExternalService
            metadata: {name: retrying}
            spec:
              hosts: [evil.test]
              ports: [{number: \(port), protocol: TLS}]
              access: All
            """)
        defer { Task { await h.stop() } }
        var arguments = ["s_client", "-servername", "evil.test", "-groups", "P-256:X25519", "-msg"]
        switch front {
        case .tls: arguments += ["-connect", "127.0.0.1:\(h.tlsPort)"]
        case .connect: arguments += ["-connect", "evil.test:\(port)", "-proxy", "127.0.0.1:\(h.connectPort)"]
        }
        let result = try runCommand("openssl", arguments, timeout: 20, stdin: Data("retried\n".utf8))
        #expect(result.stdout.components(separatedBy: "ClientHello").count - 1 == 2, "one retry: \(result.stdout)")
        #expect(result.stdout.contains("Finished"), "the handshake completes: \(result.stdout) \(result.stderr)")
        let record = try #require(h.record { $0["sni"] as? String == "evil.test" })
        #expect(record["decision"] as? String == "allow", "\(record)")
    }
}
