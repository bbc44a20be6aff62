import Foundation
import Testing

/// `spec.reload.liveConnections: Recheck`: after a policy change every relayed connection is
/// decided again, and one the new policy refuses is closed with a final record. The tls listener's
/// tests run on both data planes (`scripts/test`); CONNECT tunnels are NIO's.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct LiveConnectionRecheckTests {
    static let recheck = "  reload: {liveConnections: Recheck}"

    /// A live TLS session through `port` (the tls listener) or through the CONNECT listener at
    /// `proxy`, shown to relay by an echo.
    private func liveSession(tls port: Int? = nil, proxy: Int? = nil, upstreamPort: Int, ca: String, tag: String) async throws -> BackgroundProcess {
        var arguments = ["s_client", "-quiet", "-no_ign_eof", "-servername", "api.allowed.test", "-CAfile", ca]
        if let port { arguments += ["-connect", "127.0.0.1:\(port)"] }
        if let proxy { arguments += ["-proxy", "127.0.0.1:\(proxy)", "-connect", "api.allowed.test:\(upstreamPort)"] }
        let live = try BackgroundProcess("openssl", arguments, withStdin: true)
        live.write("ECHO\n\(tag)\n")
        guard await eventually(timeout: 15, { live.stdoutText.contains(tag) }) else {
            throw TestError.failed("the \(tag) session did not relay: \(live.stdoutText) \(live.stderrText)")
        }
        return live
    }

    /// Waits (without blocking the cooperative pool the in-process gateway shares) for `process` to exit.
    private func ended(_ process: BackgroundProcess, timeout: TimeInterval = 10) async -> Bool {
        await eventually(timeout: timeout) { !process.process.isRunning }
    }

    @Test func aRevokedGrantClosesLiveTunnelsAndAnUnrelatedChangeKeepsThem() async throws {
        let h = try await GatewayHarness(gatewayExtra: Self.recheck)
        defer { Task { await h.stop() } }
        let viaTLS = try await liveSession(tls: h.tlsPort, upstreamPort: h.upstream.port, ca: h.pki.caCert, tag: "tls-one")
        let viaConnect = try await liveSession(proxy: h.connectPort, upstreamPort: h.upstream.port, ca: h.pki.caCert, tag: "connect-one")

        // A change that still allows them: both keep relaying.
        let config = try String(contentsOfFile: h.configPath, encoding: .utf8)
        try (config + "\n---\napiVersion: corridor.dev/v1alpha1\nkind: ExternalService\nmetadata: {name: unrelated}\nspec: {hosts: [unrelated.test], ports: [{number: 443, protocol: TLS}]}\n")
            .write(toFile: h.configPath, atomically: true, encoding: .utf8)
        #expect(h.gateway.reload(reason: "test"))
        viaTLS.write("tls-two\n")
        viaConnect.write("connect-two\n")
        #expect(await eventually { viaTLS.stdoutText.contains("tls-two") && viaConnect.stdoutText.contains("connect-two") })

        // The grant goes: both are closed, each with a final record that says why.
        try config.replacingOccurrences(of: "podSelector: {matchLabels: {app: checkout}}", with: "podSelector: {matchLabels: {app: nobody}}")
            .write(toFile: h.configPath, atomically: true, encoding: .utf8)
        #expect(h.gateway.reload(reason: "test"))
        #expect(await ended(viaTLS), "the tls session is still open")
        #expect(await ended(viaConnect), "the CONNECT tunnel is still open")
        for listener in ["tls", "connect"] {
            let record = h.record { $0["listener"] as? String == listener && $0["closeCause"] as? String == "policy_revoked" }
            #expect(record?["decision"] as? String == "allow", "\(listener): \(String(describing: record))")
            #expect(record?["policyGeneration"] as? Int == 1)
            let reason = record?["reason"] as? String ?? ""
            #expect(reason.contains("revoked by policy generation 3: ExternalService allowed-api"), "\(listener): \(reason)")
            #expect((record?["bytesDown"] as? Int ?? 0) > 0)
        }
        let metrics = try runCommand("curl", ["-sS", "http://127.0.0.1:\(h.adminPort)/metrics"]).stdout
        #expect(metrics.contains(#"cause="policy_revoked""#), "\(metrics)")
    }

    @Test func withoutRecheckLiveTunnelsKeepThePolicyTheyStartedWith() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let viaTLS = try await liveSession(tls: h.tlsPort, upstreamPort: h.upstream.port, ca: h.pki.caCert, tag: "tls-one")
        let config = try String(contentsOfFile: h.configPath, encoding: .utf8)
        try config.replacingOccurrences(of: "podSelector: {matchLabels: {app: checkout}}", with: "podSelector: {matchLabels: {app: nobody}}")
            .write(toFile: h.configPath, atomically: true, encoding: .utf8)
        #expect(h.gateway.reload(reason: "test"))
        viaTLS.write("tls-two\n")
        #expect(await eventually { viaTLS.stdoutText.contains("tls-two") })
        viaTLS.closeStdin()
    }

    /// Kubernetes mode: the EgressPolicy is deleted through the API, and the live tunnel it granted
    /// is closed; then a pod's address passing to another namespace closes that pod's tunnel.
    @Test func inKubernetesModeADeletedPolicyOrAMovedAddressClosesTheTunnel() async throws {
        let h = try await KubernetesHarness(gatewayExtra: Self.recheck)
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        let first = try await liveSession(proxy: h.connectPort, upstreamPort: h.upstream.port, ca: h.pki.caCert, tag: "k8s-one")
        try h.api.delete("egresspolicies", namespace: "payments", name: "checkout-egress")
        #expect(await ended(first, timeout: 15), "the tunnel is still open")
        let revoked = h.record { $0["closeCause"] as? String == "policy_revoked" }
        #expect((revoked?["reason"] as? String)?.contains("is not granted to payments/sa:checkout") == true, "\(String(describing: revoked))")

        try h.api.put(K8sObject.egressPolicy("payments", "checkout-egress", services: ["allowed-api"], matchLabels: ["app": "checkout"]))
        #expect(await eventually(timeout: 15) { (try? h.connect(from: "127.0.0.1").status) == 0 }, "the grant is back")
        let second = try await liveSession(proxy: h.connectPort, upstreamPort: h.upstream.port, ca: h.pki.caCert, tag: "k8s-two")
        try h.api.delete("pods", namespace: "payments", name: "checkout-1")
        try h.api.put(K8sObject.pod("analytics", "crawler-1", ip: "127.0.0.1", serviceAccount: "crawler", labels: ["app": "crawler"]))
        #expect(await ended(second, timeout: 15), "the tunnel of the address's old pod is still open")
        // Judged as nobody (the pod is gone) or as the crawler (its successor), whichever change
        // the gateway saw first: either way not as the checkout pod it was opened for.
        #expect(await eventually {
            h.records().filter { $0["closeCause"] as? String == "policy_revoked" }.contains {
                let reason = $0["reason"] as? String ?? ""
                return reason.contains("is not granted to analytics/sa:crawler") || reason.contains("source 127.0.0.1 is not a known workload")
            }
        }, "\(h.records())")
    }

    /// Plain HTTP: the exchange under way is decided again. One still waiting for its response gets
    /// a 403 that says why; one whose response is streaming is cut. Both records keep the verdict
    /// they were opened with.
    @Test func aRevokedGrantEndsThePlainHTTPExchangeUnderWay() async throws {
        let h = try await OriginationHarness(gatewayExtra: Self.recheck)
        defer { Task { await h.stop() } }
        let waiting = try BackgroundProcess("python3", ["-c", #"""
            import socket, sys
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
            s.sendall(b"GET /stall/20 HTTP/1.1\r\nHost: billing.example.test\r\n\r\n")
            buf = b""
            while True:
                d = s.recv(65536)
                if not d: break
                buf += d
            sys.stdout.write(buf.decode("latin-1") + "\nEOF\n")
            """#, "\(h.httpPort)"])
        let streaming = try BackgroundProcess("python3", ["-c", #"""
            import socket, sys, time
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
            s.sendall(b"GET /size/400000000 HTTP/1.1\r\nHost: billing.example.test\r\n\r\n")
            total = len(s.recv(65536))
            print("STARTED")
            while True:
                d = s.recv(65536)
                if not d: break
                total += len(d)
                time.sleep(0.01)
            print(f"EOF {total}")
            """#, "\(h.httpPort)"])
        #expect(await eventually(timeout: 15) { streaming.stdoutText.contains("STARTED") }, "\(streaming.stderrText)")
        #expect(await eventually(timeout: 15) { h.upstream.requests.contains { $0["path"] as? String == "/stall/20" } })

        let config = try String(contentsOfFile: h.configPath, encoding: .utf8)
        try config.replacingOccurrences(of: "access: All", with: "access: Restricted").write(toFile: h.configPath, atomically: true, encoding: .utf8)
        #expect(h.gateway.reload(reason: "test"))

        #expect(await eventually(timeout: 10) { waiting.stdoutText.contains("EOF") }, "the waiting request is still open")
        #expect(waiting.stdoutText.hasPrefix("HTTP/1.1 403"), "\(waiting.stdoutText)")
        #expect(waiting.stdoutText.lowercased().contains("corridor-reason: policy_denied"), "\(waiting.stdoutText)")
        #expect(waiting.stdoutText.contains("revoked by policy generation 2: "), "\(waiting.stdoutText)")
        #expect(await eventually(timeout: 10) { streaming.stdoutText.contains("EOF") }, "the download goes on")
        let received = Int(streaming.stdoutText.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? -1
        #expect(received > 0 && received < 400_000_000, "\(streaming.stdoutText)")
        for path in ["/stall/20", "/size/400000000"] {
            func find() -> [String: Any]? { h.record { $0["path"] as? String == path && $0["event"] as? String != "interim" } }
            #expect(await eventually(timeout: 10) { find() != nil })
            let record = try #require(find())
            #expect(record["closeCause"] as? String == "policy_revoked", "\(path): \(record)")
            #expect(record["decision"] as? String == "allow", "\(path): \(record)")
            #expect((record["reason"] as? String ?? "").contains("; revoked by policy generation 2: "), "\(path): \(record)")
        }
    }
}
