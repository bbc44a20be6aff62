import Foundation
import Testing

/// Reload, drain, limits, timeouts and the admin listener, over real sockets.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct OperationsTests {
    @Test func adminEndpointsServeMetricsHealthAndPolicy() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        _ = try h.curlViaConnect("https://api.allowed.test:\(h.upstream.port)/")
        _ = try h.curlViaConnect("https://evil.test:\(h.upstream.port)/")
        _ = h.record { $0["connectHost"] as? String == "evil.test" }
        let admin = "http://127.0.0.1:\(h.adminPort)"
        let metrics = try runCommand("curl", ["-sS", "--max-time", "10", "\(admin)/metrics"]).stdout
        #expect(metrics.contains(#"corridor_connections_total{listener="connect",decision="allow"} 1"#), "\(metrics)")
        #expect(metrics.contains(#"corridor_connections_total{listener="connect",decision="deny"} 1"#))
        #expect(metrics.contains("corridor_upstream_connect_seconds_bucket"))
        #expect(metrics.contains("corridor_active_connections"))
        #expect(metrics.contains(#"corridor_policy_reloads_total{result="success"} 1"#))
        let version = try String(contentsOf: Repo.root.appendingPathComponent("VERSION"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(metrics.contains(#"corridor_build_info{version="\#(version)",commit=""#), "\(metrics)")
        #expect(try runCommand("curl", ["-sS", "--max-time", "10", "\(admin)/healthz"]).stdout == "ok\n")
        #expect(try runCommand("curl", ["-sS", "--max-time", "10", "\(admin)/readyz"]).stdout == "ready\n")
        let policy = try runCommand("curl", ["-sS", "--max-time", "10", "\(admin)/policy"]).stdout
        let object = try #require(try JSONSerialization.jsonObject(with: Data(policy.utf8)) as? [String: Any])
        #expect((object["externalServices"] as? [[String: Any]])?.first?["name"] as? String == "allowed-api")
    }

    @Test func aRelayThatMovesNoByteForTheIdleTimeoutIsClosed() async throws {
        let h = try await GatewayHarness(gatewayExtra: "  limits: {idleTimeout: 2s}")
        defer { Task { await h.stop() } }
        // A real TLS session through the tls listener that then says nothing: the gateway must
        // end it after about 2 s (swept once a second), and log it as idle_timeout.
        let started = Date()
        let result = try runCommand("python3", ["-c", """
            import socket, ssl, sys
            ctx = ssl.create_default_context(cafile=sys.argv[1])
            raw = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=20)
            tls = ctx.wrap_socket(raw, server_hostname="api.allowed.test")
            try:
                data = tls.recv(1)
            except (ssl.SSLError, OSError) as e:
                data = b""
            print("closed" if data == b"" else "data")
            """, h.pki.caCert, "\(h.tlsPort)"], timeout: 30)
        let elapsed = Date().timeIntervalSince(started)
        #expect(result.stdout.contains("closed"), "\(result.stdout)\(result.stderr)")
        #expect(elapsed >= 1.9 && elapsed < 10, "closed after \(elapsed) s")
        let record = try #require(h.record { $0["closeCause"] as? String == "idle_timeout" })
        #expect(record["decision"] as? String == "allow")
    }

    @Test func clientThatDripsTheHelloIsCutAtTheDeadline() async throws {
        let h = try await GatewayHarness(gatewayExtra: "  limits: {handshakeTimeout: 1s}")
        defer { Task { await h.stop() } }
        let fd = try openRawConnection(port: h.tlsPort)
        defer { close(fd) }
        var closedByGateway = false
        // A valid record header announcing a large hello, then one byte every 100 ms.
        for byte: UInt8 in [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc] + [UInt8](repeating: 0x03, count: 40) {
            var b = byte
            if send(fd, &b, 1, Int32(MSG_NOSIGNAL)) != 1 { closedByGateway = true; break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let record = try #require(h.record { $0["closeCause"] as? String == "handshake_timeout" })
        #expect(record["reason"] as? String == "no complete ClientHello within 1s")
        #expect(record["decision"] as? String == "deny")
        _ = closedByGateway
    }

    @Test func connectionsOverTheLimitAreRefusedAndLogged() async throws {
        let h = try await GatewayHarness(gatewayExtra: "  limits: {maxConnections: 2}")
        defer { Task { await h.stop() } }
        let a = try openRawConnection(port: h.tlsPort), b = try openRawConnection(port: h.tlsPort)
        defer { close(a); close(b) }
        try await Task.sleep(for: .milliseconds(200))
        let c = try openRawConnection(port: h.tlsPort)
        defer { close(c) }
        let record = try #require(h.record { $0["closeCause"] as? String == "connection_limit" })
        #expect((record["reason"] as? String ?? "").contains("spec.limits.maxConnections"))
    }

    @Test func fileChangeAndSIGHUPReloadAndABadFileKeepsTheLastGoodPolicy() async throws {
        let dir = try TempDir()
        let pki = try TestPKI(in: dir)
        let upstream = try TLSUpstream(pki: pki, dir: dir)
        let config = dir.path("corridor.yaml"), log = dir.path("access.log")
        let base = testConfig(upstreamPort: upstream.port, accessLog: log)
        // Start with second.allowed.test not registered.
        let initial = base.replacingOccurrences(of: ", second.allowed.test,", with: ",")
        try initial.write(toFile: config, atomically: true, encoding: .utf8)
        let gateway = try BackgroundProcess(Repo.corridorBinary.path, ["run", "--config", config, "--workers", "1"])
        let ports = try listenerPorts(gateway)
        let connect = try #require(ports["connect"])
        func fetch(_ host: String) throws -> CommandResult {
            try runCommand("curl", ["-sS", "--max-time", "10", "--cacert", pki.caCert, "-x", "http://127.0.0.1:\(connect)",
                                    "https://\(host):\(upstream.port)/"])
        }
        #expect(try fetch("second.allowed.test").status != 0)

        // A live connection survives every reload below.
        let live = try BackgroundProcess("openssl", ["s_client", "-quiet", "-no_ign_eof", "-connect", "127.0.0.1:\(ports["tls"]!)",
                                                     "-servername", "api.allowed.test", "-CAfile", pki.caCert], withStdin: true)
        live.write("ECHO\nbefore\n")
        #expect(await eventually { live.stdoutText.contains("before") })

        try base.write(toFile: config, atomically: true, encoding: .utf8)  // the file watcher picks this up
        #expect(try await eventually(timeout: 15) { try fetch("second.allowed.test").stdout == "ok\n" })

        try base.replacingOccurrences(of: "number: \(upstream.port)", with: "number: 0").write(toFile: config, atomically: true, encoding: .utf8)
        gateway.signal(SIGHUP)
        #expect(await eventually(timeout: 15) { gateway.stderrText.contains("policy reload rejected") })
        #expect(gateway.stderrText.contains("spec.ports[0].number: must be between 1 and 65535, got 0"), "\(gateway.stderrText)")
        #expect(try fetch("second.allowed.test").stdout == "ok\n")
        #expect(try fetch("api.allowed.test").stdout == "ok\n")

        // A file emptied (truncated before a rewrite, a template that rendered nothing) is no
        // policy that drops every rule and setting: the last good one stays.
        try "# being rewritten\n---\n".write(toFile: config, atomically: true, encoding: .utf8)
        gateway.signal(SIGHUP)
        #expect(await eventually(timeout: 15) { gateway.stderrText.contains("holds no objects") }, "\(gateway.stderrText)")
        #expect(try fetch("second.allowed.test").stdout == "ok\n")

        live.write("after\n")
        #expect(await eventually { live.stdoutText.contains("after") })
        live.closeStdin()
        gateway.signal(SIGTERM)
        #expect(gateway.waitForExit(timeout: 20) == 0)
    }

    @Test func aRejectedReloadTakesNoGeneration() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let good = try String(contentsOfFile: h.configPath, encoding: .utf8)
        let first = h.gateway.proxy.policy.current.generation
        try good.replacingOccurrences(of: "kind: EgressPolicy", with: "kind: EgressPolicyy").write(toFile: h.configPath, atomically: true, encoding: .utf8)
        #expect(!h.gateway.reload(reason: "test"))
        #expect(h.gateway.proxy.policy.current.generation == first)
        try good.write(toFile: h.configPath, atomically: true, encoding: .utf8)
        #expect(h.gateway.reload(reason: "test"))
        #expect(h.gateway.proxy.policy.current.generation == first + 1, "generations in force count up by one")
    }

    @Test func sigtermStopsAcceptingAndDrainsLiveConnections() async throws {
        let dir = try TempDir()
        let pki = try TestPKI(in: dir)
        let upstream = try TLSUpstream(pki: pki, dir: dir)
        let config = dir.path("corridor.yaml")
        try testConfig(upstreamPort: upstream.port, accessLog: dir.path("access.log"), gatewayExtra: "  limits: {drainTimeout: 30s}")
            .write(toFile: config, atomically: true, encoding: .utf8)
        let gateway = try BackgroundProcess(Repo.corridorBinary.path, ["run", "--config", config, "--workers", "1"])
        let tls = try #require(try listenerPorts(gateway)["tls"])
        let live = try BackgroundProcess("openssl", ["s_client", "-quiet", "-no_ign_eof", "-connect", "127.0.0.1:\(tls)",
                                                     "-servername", "api.allowed.test", "-CAfile", pki.caCert], withStdin: true)
        live.write("ECHO\none\n")
        #expect(await eventually { live.stdoutText.contains("one") })
        gateway.signal(SIGTERM)
        #expect(await eventually { gateway.stderrText.contains("draining") })
        #expect((try? openRawConnection(port: tls)) == nil, "the listener must be closed while draining")
        live.write("two\n")
        #expect(await eventually { live.stdoutText.contains("two") }, "a live connection keeps working during the drain")
        #expect(gateway.waitForExit(timeout: 0.5) == nil, "the gateway waits for the live connection")
        live.closeStdin()
        #expect(gateway.waitForExit(timeout: 20) == 0)
    }

    /// The drain deadline ends what is left with cause `shutdown`, whatever the phase and the data
    /// plane (the suite runs on both): a tunnel relaying on each listener, a ClientHello and a
    /// CONNECT request left half-sent.
    @Test func connectionsLeftAtTheDrainDeadlineAreRecordedAsShutdown() async throws {
        let dir = try TempDir()
        let pki = try TestPKI(in: dir)
        let upstream = try TLSUpstream(pki: pki, dir: dir)
        let config = dir.path("corridor.yaml")
        let log = AccessLogFile(accessLogPath: dir.path("access.log"))
        try testConfig(upstreamPort: upstream.port, accessLog: log.accessLogPath, gatewayExtra: "  limits: {drainTimeout: 1s, handshakeTimeout: 60s}")
            .write(toFile: config, atomically: true, encoding: .utf8)
        let gateway = try BackgroundProcess(Repo.corridorBinary.path, ["run", "--config", config, "--workers", "1"])
        let ports = try listenerPorts(gateway)
        let tls = try #require(ports["tls"]), connect = try #require(ports["connect"])
        func tunnel(_ extra: [String]) throws -> BackgroundProcess {
            let live = try BackgroundProcess("openssl", ["s_client", "-quiet", "-no_ign_eof", "-servername", "api.allowed.test",
                                                         "-CAfile", pki.caCert] + extra, withStdin: true)
            live.write("ECHO\nup\n")
            return live
        }
        let direct = try tunnel(["-connect", "127.0.0.1:\(tls)"])
        let proxied = try tunnel(["-proxy", "127.0.0.1:\(connect)", "-connect", "api.allowed.test:\(upstream.port)"])
        defer { direct.closeStdin(); proxied.closeStdin() }
        #expect(await eventually { direct.stdoutText.contains("up") && proxied.stdoutText.contains("up") })
        let halfHello = try openRawConnection(port: tls)
        let halfHead = try openRawConnection(port: connect)
        defer { close(halfHello); close(halfHead) }
        _ = [UInt8]([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).withUnsafeBytes { send(halfHello, $0.baseAddress, $0.count, 0) }
        _ = Array("CONNECT api.allowed".utf8).withUnsafeBytes { send(halfHead, $0.baseAddress, $0.count, 0) }
        // All four are the gateway's (accepted, reading) before it is told to stop.
        let admin = try #require(ports["admin"])
        func open() -> Double? {
            let metrics = (try? runCommand("curl", ["-sS", "--max-time", "10", "http://127.0.0.1:\(admin)/metrics"]))?.stdout ?? ""
            return metrics.split(separator: "\n").first { $0.hasPrefix("corridor_active_connections ") }
                .flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        #expect(await eventually { open() == 4 }, "four connections open: \(open().map { "\($0)" } ?? "no gauge")")
        gateway.signal(SIGTERM)
        #expect(gateway.waitForExit(timeout: 20) == 0)
        let records = log.records()
        let relayed = records.filter { $0["decision"] as? String == "allow" }
        #expect(relayed.count == 2, "\(records)")
        #expect(Set(relayed.compactMap { $0["listener"] as? String }) == ["tls", "connect"])
        for record in relayed {
            #expect(record["closeCause"] as? String == "shutdown", "\(record)")
            #expect((record["bytesUp"] as? Int ?? 0) > 0 && (record["bytesDown"] as? Int ?? 0) > 0, "\(record)")
        }
        let hello = try #require(records.first { $0["listener"] as? String == "tls" && $0["decision"] as? String == "deny" })
        #expect(hello["closeCause"] as? String == "shutdown")
        #expect(hello["reason"] as? String == "the gateway stopped before the ClientHello was complete")
        let head = try #require(records.first { $0["listener"] as? String == "connect" && $0["decision"] as? String == "deny" })
        #expect(head["closeCause"] as? String == "shutdown")
        #expect(head["reason"] as? String == "the gateway stopped before the CONNECT request was complete")
        #expect(records.count == 4, "\(records)")
    }

    @Test func checkCommandReportsFileDocumentFieldAndReason() throws {
        let dir = try TempDir()
        let bad = dir.path("bad.yaml")
        try """
        apiVersion: corridor.dev/v1alpha1
        kind: ExternalService
        metadata: {name: ok}
        spec: {hosts: [a.test], ports: [{number: 443, protocol: TLS}]}
        ---
        apiVersion: corridor.dev/v1alpha1
        kind: ExternalService
        metadata: {name: broken}
        spec: {hosts: ["1.2.3.4"], ports: [{number: 443, protocol: TLS}]}
        """.write(toFile: bad, atomically: true, encoding: .utf8)
        let result = try runCommand(Repo.corridorBinary.path, ["check", "--config", bad])
        #expect(result.status == 2)
        #expect(result.stderr.contains("\(bad):9: document 2 (ExternalService/broken): spec.hosts[0]: '1.2.3.4' is not a valid host name"), "\(result.stderr)")
        let good = try runCommand(Repo.corridorBinary.path, ["check", "--config", Repo.root.appendingPathComponent("examples/quickstart.yaml").path])
        #expect(good.status == 0, "\(good.stderr)")
        #expect(good.stdout.contains("1 ExternalService(s)"))
        #if os(Linux)
        #expect(good.stdout.contains("tls data plane: Splice"), "\(good.stdout)")
        #expect(good.stdout.contains("connect data plane: Splice"), "\(good.stdout)")
        #endif
    }
}

/// The ports the gateway logged at start-up, by listener name.
func listenerPorts(_ gateway: BackgroundProcess) throws -> [String: Int] {
    var ports: [String: Int] = [:]
    _ = eventually(timeout: 30) {
        ports = [:]
        for line in gateway.stderrText.split(separator: "\n") where line.contains("listening") {
            guard let listener = line.range(of: "listener=")
                .map({ String(line[$0.upperBound...].prefix { $0.isLetter }) }),
                let address = line.range(of: "address=").map({ String(line[$0.upperBound...].prefix { $0 != " " }) }),
                let port = address.split(separator: ":").last.flatMap({ Int($0) }) else { continue }
            ports[listener] = port
        }
        return ports.count == 3
    }
    guard ports.count == 3 else { throw TestError.failed("gateway did not start: \(gateway.stderrText)") }
    return ports
}

func openRawConnection(port: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        throw TestError.failed("connect to \(port) failed")
    }
    return fd
}
