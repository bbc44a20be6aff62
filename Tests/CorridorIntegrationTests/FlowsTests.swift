import Foundation
import Testing

/// The flow table behind `/flows`, the live `/flows/stream` (Server-Sent Events), interim records
/// for long-lived connections, and the suspicious-traffic signals, over real sockets.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct FlowsTests {
    private func admin(_ h: GatewayHarness, _ path: String) throws -> [String: Any] {
        let body = try runCommand("curl", ["-sS", "--max-time", "10", "http://127.0.0.1:\(h.adminPort)\(path)"]).stdout
        return (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? ["raw": body]
    }

    @Test func flowsAggregateConnectionsAndFilter() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        for _ in 0..<3 { #expect(try h.curlViaConnect("https://api.allowed.test:\(h.upstream.port)/").stdout == "ok\n") }
        _ = try h.curlViaConnect("https://evil.test:\(h.upstream.port)/")
        #expect(await eventually { h.records().count >= 4 })
        let all = try admin(h, "/flows")
        let items = all["items"] as? [[String: Any]] ?? []
        let allowed = try #require(items.first { $0["destination"] as? String == "api.allowed.test" }, "\(all)")
        #expect(allowed["connections"] as? Int == 3 && allowed["active"] as? Int == 0)
        #expect(allowed["namespace"] as? String == "payments" && allowed["workload"] as? String == "checkout")
        #expect(allowed["decision"] as? String == "allow" && allowed["egressPolicy"] as? String == "payments/checkout-egress")
        #expect((allowed["bytesDown"] as? Int ?? 0) > 0 && allowed["listener"] as? String == "connect")
        #expect((allowed["lastReason"] as? String ?? "").contains("grants ExternalService allowed-api"))
        let denied = try admin(h, "/flows?decision=deny")
        #expect((denied["items"] as? [[String: Any]])?.map { $0["destination"] as? String ?? "" } == ["evil.test"], "\(denied)")
        #expect((try admin(h, "/flows?host=api.allowed.test&namespace=payments")["flows"] as? Int) == 1)
        #expect((try admin(h, "/flows?namespace=elsewhere")["flows"] as? Int) == 0)
        #expect((try admin(h, "/flows?since=1h")["flows"] as? Int) == 2)
        let bad = try runCommand("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(h.adminPort)/flows?decision=maybe"])
        #expect(bad.stdout == "400")
        // The final record is marked as such.
        #expect(h.records().allSatisfy { $0["event"] as? String == "close" })
    }

    @Test func theStreamDeliversOpenAndCloseEventsAsTheyHappen() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let script = """
        import socket, sys, time
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
        s.sendall(b"GET /flows/stream?host=api.allowed.test HTTP/1.1\\r\\nHost: admin\\r\\n\\r\\n")
        buf = b""
        deadline = time.time() + 20
        while buf.count(b"event: close") < 2 and time.time() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            sys.stdout.write(chunk.decode("latin-1")); sys.stdout.flush()
        """
        let watcher = try BackgroundProcess("python3", ["-c", script, "\(h.adminPort)"])
        #expect(await eventually { watcher.stdoutText.contains("text/event-stream") })
        #expect(try h.curlViaConnect("https://evil.test:\(h.upstream.port)/").status != 0, "filtered out by host")
        for _ in 0..<2 { #expect(try h.curlViaConnect("https://api.allowed.test:\(h.upstream.port)/").stdout == "ok\n") }
        #expect(await eventually(timeout: 15) { watcher.stdoutText.components(separatedBy: "event: close").count == 3 }, "\(watcher.stdoutText)")
        let text = watcher.stdoutText
        #expect(text.components(separatedBy: "event: open").count == 3)
        #expect(!text.contains("evil.test"))
        let data = text.split(separator: "\n").filter { $0.hasPrefix("data: ") }.map { $0.dropFirst(6) }
        let events = data.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }
        #expect(events.count == 4 && events.allSatisfy { $0["sni"] as? String == "api.allowed.test" }, "\(data)")
        #expect(events.map { $0["event"] as? String ?? "" } == ["open", "close", "open", "close"])
        #expect(events[0]["closeCause"] == nil && events[1]["closeCause"] as? String == "completed")
    }

    /// A stream client that stops reading holds at most the stream's bound in the gateway: what
    /// waits beyond it is dropped, and the client is told so when it reads again. The records
    /// (400 of about 60 KB) are well over that bound plus what the kernel's socket buffers take
    /// on loopback (a few MiB): 200 came so close that a run saw nothing dropped.
    @Test func aStalledStreamClientLosesEventsInsteadOfGrowingTheGateway() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let script = #"""
        import socket, sys, time
        admin, http = int(sys.argv[1]), int(sys.argv[2])
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", admin))
        s.sendall(b"GET /flows/stream HTTP/1.1\r\nHost: admin\r\n\r\n")
        time.sleep(0.5)
        path = "/" + "p" * 60000
        for i in range(400):
            c = socket.create_connection(("127.0.0.1", http), timeout=10)
            c.sendall(f"GET {path}{i} HTTP/1.1\r\nHost: evil.example.test\r\nConnection: close\r\n\r\n".encode())
            while c.recv(65536): pass
            c.close()
        time.sleep(0.5)
        s.settimeout(2)
        buf = b""
        try:
            while True:
                d = s.recv(1 << 20)
                if not d: break
                buf += d
        except socket.timeout:
            pass
        print(("dropped" if b"events dropped" in buf else "none") + f" {len(buf)}")
        """#
        let result = try runCommand("python3", ["-c", script, "\(h.adminPort)", "\(h.httpPort)"], timeout: 120)
        #expect(result.stdout.hasPrefix("dropped"), "\(result.stdout) \(result.stderr)")
    }

    @Test func aLongLivedConnectionGetsInterimRecords() async throws {
        let h = try await GatewayHarness(accessLogExtra: ", interimInterval: 1s")
        defer { Task { await h.stop() } }
        let live = try BackgroundProcess("openssl", ["s_client", "-quiet", "-no_ign_eof", "-connect", "127.0.0.1:\(h.tlsPort)",
                                                     "-servername", "api.allowed.test", "-CAfile", h.pki.caCert], withStdin: true)
        live.write("ECHO\nfirst\n")
        #expect(await eventually { live.stdoutText.contains("first") })
        #expect(await eventually(timeout: 10) { h.records().filter { $0["event"] as? String == "interim" }.count >= 2 }, "\(h.records())")
        live.closeStdin()
        #expect(await eventually { h.records().contains { $0["event"] as? String == "close" } })
        let records = h.records()
        let interims = records.filter { $0["event"] as? String == "interim" }
        #expect(interims.allSatisfy { $0["closeCause"] == nil && ($0["bytesDown"] as? Int ?? 0) > 0 && $0["decision"] as? String == "allow" })
        #expect(Set(records.map { $0["id"] as? Int ?? 0 }).count == 1, "all about one connection")
        #expect(records.filter { $0["event"] as? String == "close" }.count == 1, "one final record")
    }

    @Test func signalsAreNamedInTheRecordAndCounted() async throws {
        let h = try await GatewayHarness(gatewayExtra: """
              signals:
                denyBurst: {threshold: 3, window: 1m}
                uploadHeavy: {minMiB: 1, ratio: 2}
            """)
        defer { Task { await h.stop() } }
        // new_destination: the first connection of checkout to api.allowed.test, not the second.
        for _ in 0..<2 { _ = try h.curlViaConnect("https://api.allowed.test:\(h.upstream.port)/") }
        #expect(await eventually { h.records().count >= 2 })
        let firsts = h.records().filter { $0["connectHost"] as? String == "api.allowed.test" }
        #expect((firsts.first?["signals"] as? [String]) == ["new_destination"], "\(firsts)")
        #expect(firsts.last?["signals"] == nil)
        // generated_name, and deny_burst on the third denial within the window.
        for _ in 0..<3 { _ = try h.curlViaConnect("https://x8k2j4h9q3z7w1v5.evil.test:443/") }
        #expect(await eventually { h.records().filter { $0["connectHost"] as? String == "x8k2j4h9q3z7w1v5.evil.test" }.count == 3 })
        let generated = h.records().filter { $0["connectHost"] as? String == "x8k2j4h9q3z7w1v5.evil.test" }
        #expect(generated.allSatisfy { ($0["signals"] as? [String] ?? []).contains("generated_name") })
        #expect((generated.last?["signals"] as? [String])?.contains("deny_burst") == true, "\(generated)")
        #expect((generated.first?["signals"] as? [String] ?? []).contains("deny_burst") == false)
        // guard_refused: an allowed name that resolves into a blocked range.
        _ = try h.curlViaConnect("https://private.allowed.test:\(h.upstream.port)/")
        let blocked = h.record { $0["connectHost"] as? String == "private.allowed.test" }
        #expect((blocked?["signals"] as? [String])?.contains("guard_refused") == true, "\(String(describing: blocked))")
        // upload_heavy: 2 MiB up, a few bytes down.
        let sink = try h.pythonClient(["--port", "\(h.tlsPort)", "--sni", "api.allowed.test", "--mode", "SINK", "--bytes", "\(2 << 20)"])
        #expect(sink["received"] != nil, "\(sink)")
        let heavy = h.record { ($0["bytesUp"] as? Int ?? 0) >= 2 << 20 }
        #expect((heavy?["signals"] as? [String])?.contains("upload_heavy") == true, "\(String(describing: heavy))")
        let metrics = try runCommand("curl", ["-sS", "http://127.0.0.1:\(h.adminPort)/metrics"]).stdout
        for (signal, at_least) in [("new_destination", 1), ("generated_name", 3), ("deny_burst", 1), ("guard_refused", 1), ("upload_heavy", 1)] {
            let line = metrics.split(separator: "\n").first { $0.hasPrefix("corridor_signals_total{signal=\"\(signal)\"}") }
            #expect((line.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0) >= Double(at_least), "\(signal): \(String(describing: line))")
        }
    }

    @Test func signalsCanBeTurnedOff() async throws {
        let h = try await GatewayHarness(gatewayExtra: "  signals: {newDestination: {enabled: false}, generatedName: {enabled: false}}")
        defer { Task { await h.stop() } }
        _ = try h.curlViaConnect("https://api.allowed.test:\(h.upstream.port)/")
        _ = try h.curlViaConnect("https://x8k2j4h9q3z7w1v5.evil.test:443/")
        #expect(await eventually { h.records().count >= 2 })
        #expect(h.records().allSatisfy { $0["signals"] == nil }, "\(h.records())")
    }
}
