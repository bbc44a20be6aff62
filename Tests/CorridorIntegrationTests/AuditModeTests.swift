import Foundation
import Testing

/// Gateway-wide `spec.mode: Audit` over real sockets on every listener: what policy refuses goes
/// through (resolved, vetted, dialled) and is recorded as `audit`; guards still refuse; the mode
/// shows in /readyz, /policy, the metrics, the startup log and `corridor check`. (Transparent TCP
/// is covered by the network-namespace suite.)
@Suite(.serialized, .timeLimit(.minutes(3)))
struct AuditModeTests {
    static let audit = "  mode: Audit"

    private func admin(_ port: Int, _ path: String) throws -> String {
        try runCommand("curl", ["-sS", "--max-time", "10", "http://127.0.0.1:\(port)\(path)"]).stdout
    }

    @Test func tlsAndConnectListenersLetPolicyRefusalsThroughAndRecordThem() async throws {
        let h = try await GatewayHarness(gatewayExtra: Self.audit)
        defer { Task { await h.stop() } }
        // CONNECT to a name no ExternalService registers: tunnelled to the upstream.
        let unregistered = try runCommand("curl", ["-sS", "--max-time", "20", "-k", "-x", "http://127.0.0.1:\(h.connectPort)",
                                                   "https://evil.test:\(h.upstream.port)/"])
        #expect(unregistered.stdout == "ok\n", "\(unregistered.stderr)")
        let connect = try #require(h.record { $0["connectHost"] as? String == "evil.test" })
        #expect(connect["decision"] as? String == "audit")
        #expect(connect["reason"] as? String == "would be denied (no ExternalService matches evil.test); the gateway is in Audit mode (spec.mode)")
        #expect(connect["closeCause"] as? String == "completed" && (connect["bytesDown"] as? Int ?? 0) > 0)
        #expect((connect["hint"] as? String ?? "").hasPrefix("register ExternalService evil-test for evil.test port \(h.upstream.port)/TLS"),
                "\(connect)")

        // The tls listener, from a source no Workload claims (127.0.0.2), to a registered service.
        let unknown = try runCommand("curl", ["-sS", "--max-time", "20", "--cacert", h.pki.caCert, "--interface", "127.0.0.2",
                                              "--connect-to", "api.allowed.test:\(h.upstream.port):127.0.0.1:\(h.tlsPort)",
                                              "https://api.allowed.test:\(h.upstream.port)/"])
        #expect(unknown.stdout == "ok\n", "\(unknown.stderr)")
        let tls = try #require(h.record { ($0["src"] as? String ?? "").hasPrefix("127.0.0.2:") })
        #expect(tls["decision"] as? String == "audit" && tls["listener"] as? String == "tls")
        #expect((tls["reason"] as? String ?? "").contains("source 127.0.0.2 is not a known workload"))
        #expect(tls["externalService"] as? String == "allowed-api" && tls["identity"] as? String == "unknown")
        #expect((tls["hint"] as? String ?? "").hasPrefix("source 127.0.0.2 is not a known workload: add Workload default/source-127-0-0-2"), "\(tls)")

        // Guards are not policy: a CONNECT whose SNI is not its host, an IP literal, a private address.
        let mismatch = try runCommand("openssl", ["s_client", "-proxy", "127.0.0.1:\(h.connectPort)", "-connect", "api.allowed.test:\(h.upstream.port)",
                                                  "-servername", "evil.test", "-brief"], timeout: 20, stdin: Data())
        #expect(mismatch.status != 0 || !mismatch.stdout.contains("Verification"), "\(mismatch.stdout)")
        #expect(h.record { ($0["reason"] as? String ?? "").contains("SNI evil.test does not match CONNECT host api.allowed.test") }?["decision"] as? String == "deny")
        let literal = try runCommand("curl", ["-sS", "--max-time", "10", "-k", "-x", "http://127.0.0.1:\(h.connectPort)", "https://127.0.0.1:\(h.upstream.port)/"])
        #expect(literal.status != 0)
        let blocked = try runCommand("curl", ["-sS", "--max-time", "10", "-k", "-x", "http://127.0.0.1:\(h.connectPort)", "https://private.allowed.test:\(h.upstream.port)/"])
        #expect(blocked.status != 0, "private.allowed.test resolves to 127.0.0.2, outside allowPrivate")
        #expect(h.record { $0["connectHost"] as? String == "private.allowed.test" }?["closeCause"] as? String == "destination_blocked")

        // The mode is visible.
        let ready = try admin(h.adminPort, "/readyz")
        #expect(ready.hasPrefix("ready; the gateway is in Audit mode"), "\(ready)")
        #expect(try admin(h.adminPort, "/policy").contains(#""mode":"Audit""#))
        #expect(try admin(h.adminPort, "/metrics").contains("corridor_audit_mode 1"))
    }

    @Test func theHTTPListenerOriginatesAuditedRequests() async throws {
        let h = try await OriginationHarness(gatewayExtra: Self.audit, moreServices: { pki, port in
            [originationService(name: "restricted", hosts: ["other.example.test"], originate: OriginateTLS(port: port, trust: .caFile(pki.caCert)))
                .replacingOccurrences(of: "access: All", with: "access: Restricted")]
        })
        defer { Task { await h.stop() } }
        // Registered but granted to nobody: originated as registered, recorded as audit.
        let granted = try h.curlOriginForm(path: "/r", host: "other.example.test")
        #expect(granted.status == 200 && granted.body == "ok /r\n", "\(granted)")
        let record = try #require(h.record { $0["path"] as? String == "/r" })
        #expect(record["decision"] as? String == "audit" && record["externalService"] as? String == "restricted")
        // Not registered at all: sent over TLS to port 443 of the name, verified against the system
        // store (nothing listens on 127.0.0.1:443 here, so the dial is refused and said so).
        let unregistered = try h.curlOriginForm(path: "/u", host: "unregistered.example.test")
        let audited = try #require(h.record { $0["path"] as? String == "/u" })
        #expect(audited["decision"] as? String == "audit", "\(audited)")
        #expect((audited["reason"] as? String ?? "").hasPrefix("would be denied (no ExternalService matches unregistered.example.test)"))
        #expect(unregistered.status == 502, "\(unregistered)")
    }

    @Test func checkAndStartupWarnAboutAuditMode() async throws {
        let dir = try TempDir()
        let config = dir.path("audit.yaml")
        let quickstart = try String(contentsOf: Repo.root.appendingPathComponent("examples/quickstart.yaml"), encoding: .utf8)
        let withAudit = quickstart.replacingOccurrences(of: "kind: GatewayConfig\nmetadata: {name: local}\nspec:\n",
                                                        with: "kind: GatewayConfig\nmetadata: {name: local}\nspec:\n  mode: Audit\n")
        #expect(withAudit != quickstart, "the quickstart's GatewayConfig head changed; adjust this test")
        try withAudit.replacingOccurrences(of: "127.0.0.1:15443", with: "127.0.0.1:0").replacingOccurrences(of: "127.0.0.1:13128", with: "127.0.0.1:0")
            .replacingOccurrences(of: "127.0.0.1:15000", with: "127.0.0.1:0").replacingOccurrences(of: "127.0.0.1:15080", with: "127.0.0.1:0")
            .write(toFile: config, atomically: true, encoding: .utf8)
        let check = try runCommand(Repo.corridorBinary.path, ["check", "--config", config])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        #expect(check.stdout.contains("mode: Audit"))
        #expect(check.stdout.contains("warning: the gateway is in Audit mode (spec.mode: Audit)"), "\(check.stdout)")
        let gateway = try BackgroundProcess(Repo.corridorBinary.path, ["run", "--config", config, "--workers", "1"])
        #expect(await eventually(timeout: 30) { gateway.stderrText.contains("the gateway is in Audit mode") }, "\(gateway.stderrText)")
        // Signals are taken once the listeners are up; one sent before ends the process by default.
        _ = try listenerPorts(gateway)
        try await Task.sleep(for: .milliseconds(300))
        gateway.signal(SIGTERM)
        #expect(gateway.waitForExit(timeout: 20) == 0)
    }
}
