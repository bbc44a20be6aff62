import Foundation
import Testing

/// Faults and floods, over real sockets: a source that holds too many connections, the access
/// log on a full file system or renamed or removed under the gateway, rotation with SIGUSR1.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct FaultTests {
    /// Opens `count` TCP connections from `source` to `port` that send nothing (printing `OPEN`
    /// once they are), and keeps them open until the returned process's stdin closes. Told a
    /// number on stdin, it waits (up to 10 s) until the gateway has closed that many and prints
    /// how many it has closed: `CLOSED N`.
    static func holdConnections(_ count: Int, from source: String, to port: Int) throws -> BackgroundProcess {
        try BackgroundProcess("python3", ["-c", """
            import socket, sys, select, time
            held = []
            for _ in range(int(sys.argv[1])):
                s = socket.socket()
                s.bind((sys.argv[2], 0))
                s.connect(("127.0.0.1", int(sys.argv[3])))
                held.append(s)
                time.sleep(0.05)
            print("OPEN", flush=True)
            expected = int(sys.stdin.readline())
            deadline, closed = time.monotonic() + 10, set()
            while True:
                for s in held:
                    if s not in closed and select.select([s], [], [], 0)[0] and s.recv(1) == b"":
                        closed.add(s)
                if len(closed) >= expected or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            print(f"CLOSED {len(closed)}", flush=True)  # one write: the test may read while it prints
            sys.stdin.read()
            """, "\(count)", source, "\(port)"], withStdin: true)
    }

    /// Two thousand idle clients against maxConnections 1500, on the tls listener (the splice
    /// plane on Linux) and the CONNECT listener: the ones past the limit are refused at once, each
    /// with a record and counted; a real client is served as soon as some let go.
    ///
    /// The gateway runs as its own process: 1,500 accepted sockets in the test process would
    /// push Foundation's Process.run into its /proc/self/fd over-read (swift-corelibs-foundation
    /// #5472), which crashed the test runner when a later test started a client.
    @Test func aFloodOfIdleClientsMeetsTheLimitAndTheGatewayRecovers() async throws {
        let dir = try TempDir()
        let pki = try TestPKI(in: dir)
        let upstream = try TLSUpstream(pki: pki, dir: dir)
        let config = dir.path("corridor.yaml"), log = dir.path("access.log")
        try testConfig(upstreamPort: upstream.port, accessLog: log, gatewayExtra: "  limits: {maxConnections: 1500, handshakeTimeout: 60s}")
            .write(toFile: config, atomically: true, encoding: .utf8)
        let gateway = try BackgroundProcess(Repo.corridorBinary.path, ["run", "--config", config, "--workers", "2"])
        defer { gateway.signal(SIGKILL) }
        let ports = try listenerPorts(gateway)
        let h = (tlsPort: try #require(ports["tls"]), connectPort: try #require(ports["connect"]), adminPort: try #require(ports["admin"]),
                 pki: pki, upstream: upstream)
        func records() -> [[String: Any]] {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
                (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
            }
        }
        let flood = try BackgroundProcess("python3", ["-c", """
            import socket, sys, select, time
            held = []
            for port in (int(sys.argv[1]), int(sys.argv[2])):
                for _ in range(1000):
                    s = socket.socket()
                    s.setblocking(False)
                    try:
                        s.connect(("127.0.0.1", port))
                    except BlockingIOError:
                        pass
                    held.append(s)
            print("OPEN", flush=True)
            expected = int(sys.stdin.readline())
            poller = select.poll()  # select() stops at descriptor 1024
            for s in held:
                poller.register(s, select.POLLIN)
            deadline = time.monotonic() + 10
            while True:
                closed = [fd for fd, _ in poller.poll(0)]
                if len(closed) >= expected or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            print(f"CLOSED {len(closed)}", flush=True)  # one write: the test may read while it prints
            sys.stdin.readline()
            for s in held[:300]:
                s.close()
            print("RELEASED", flush=True)
            sys.stdin.read()
            """, "\(h.tlsPort)", "\(h.connectPort)"], withStdin: true)
        #expect(await eventually(timeout: 60) { flood.stdoutText.contains("OPEN") }, "\(flood.stderrText)")
        // The gateway records a refusal, then closes the connection: the client counts the closes
        // once the records are there.
        #expect(await eventually(timeout: 60) { records().filter { $0["closeCause"] as? String == "connection_limit" }.count == 500 })
        flood.write("500\n")
        #expect(await eventually(timeout: 30) { flood.stdoutText.contains("CLOSED") })
        let closed = flood.stdoutText.split(separator: "\n").first { $0.hasPrefix("CLOSED") }.flatMap { $0.split(separator: " ").dropFirst().first }.flatMap { Int($0) } ?? -1
        #expect(closed == 500, "2,000 clients, 1,500 slots: \(flood.stdoutText)")
        let metrics = try runCommand("curl", ["-sS", "--max-time", "10", "http://127.0.0.1:\(h.adminPort)/metrics"]).stdout
        #expect(metrics.contains(#"corridor_connections_closed_total{cause="connection_limit"} 500"#), "\(metrics.prefix(300))")
        // Full: a real client is refused too.
        let refused = try runCommand("curl", ["-sS", "--max-time", "10", "--cacert", h.pki.caCert, "-x", "http://127.0.0.1:\(h.connectPort)",
                                              "https://api.allowed.test:\(h.upstream.port)/"])
        #expect(refused.stdout != "ok\n")
        // Some let go: served again at once.
        flood.write("\n")
        #expect(await eventually(timeout: 20) { flood.stdoutText.contains("RELEASED") })
        #expect(await eventually(timeout: 20) {
            let result = try? runCommand("curl", ["-sS", "--max-time", "10", "--cacert", h.pki.caCert, "-x", "http://127.0.0.1:\(h.connectPort)",
                                                  "https://api.allowed.test:\(h.upstream.port)/"])
            return result?.stdout == "ok\n"
        })
        flood.closeStdin()
    }

    @Test func oneSourceCannotTakeEverySlot() async throws {
        let h = try await GatewayHarness(gatewayExtra: "  limits: {maxConnections: 100, maxConnectionsPerSource: 3}")
        defer { Task { await h.stop() } }
        for port in [h.tlsPort, h.connectPort] {
            // Five idle connections from 127.0.0.1: three are held, two are refused at once.
            let refusedBefore = h.records().filter { ($0["closeCause"] as? String) == "source_connection_limit" }.count
            let greedy = try Self.holdConnections(5, from: "127.0.0.1", to: port)
            #expect(await eventually(timeout: 15) { greedy.stdoutText.contains("OPEN") })
            #expect(await eventually(timeout: 15) { h.gateway.proxy.openConnections == 3 }, "three held")
            greedy.write("2\n")
            #expect(await eventually(timeout: 15) { greedy.stdoutText.contains("CLOSED") })
            #expect(greedy.stdoutText.contains("CLOSED 2"), "\(greedy.stdoutText)")
            let refused = h.records().filter { ($0["closeCause"] as? String) == "source_connection_limit" }
            #expect(refused.count == refusedBefore + 2)
            let reason = refused.first?["reason"] as? String ?? ""
            #expect(reason.contains("this source already has 3 open connections (spec.limits.maxConnectionsPerSource)"), "\(reason)")
            #expect((refused.first?["hint"] as? String)?.contains("maxConnectionsPerSource") == true)
            // Whose connections they were (found by a README walkthrough: "identity":"unknown").
            #expect((refused.first?["identity"] as? [String: Any])?["workload"] as? String == "checkout", "\(refused.first ?? [:])")

            // Another source is still served while 127.0.0.1 holds its three.
            let other = try Self.holdConnections(1, from: "127.0.0.3", to: port)
            #expect(await eventually(timeout: 15) { other.stdoutText.contains("OPEN") })
            #expect(await eventually(timeout: 15) { h.gateway.proxy.openConnections == 4 }, "the other source's held too")
            other.write("0\n")
            #expect(await eventually(timeout: 15) { other.stdoutText.contains("CLOSED") })
            #expect(other.stdoutText.contains("CLOSED 0"), "\(other.stdoutText)")
            other.closeStdin()

            // When the greedy source lets go, it is served again.
            greedy.closeStdin()
            _ = greedy.waitForExit(timeout: 10)
            #expect(await eventually(timeout: 15) {
                let again = try? runCommand("curl", ["-sS", "--max-time", "10", "--cacert", h.pki.caCert, "-x", "http://127.0.0.1:\(h.connectPort)",
                                                     "https://api.allowed.test:\(h.upstream.port)/"])
                return again?.stdout == "ok\n"
            })
            #expect(await eventually(timeout: 15) { h.gateway.proxy.openConnections == 0 })
        }
        let metrics = try runCommand("curl", ["-sS", "--max-time", "10", "http://127.0.0.1:\(h.adminPort)/metrics"]).stdout
        #expect(metrics.contains("corridor_connections_total"), "\(metrics.prefix(400))")
    }

    @Test func aRenamedOrRemovedLogIsFollowedAndSIGUSR1ReopensIt() async throws {
        let dir = try TempDir()
        let pki = try TestPKI(in: dir)
        let upstream = try TLSUpstream(pki: pki, dir: dir)
        let config = dir.path("corridor.yaml"), log = dir.path("access.log")
        try testConfig(upstreamPort: upstream.port, accessLog: log).write(toFile: config, atomically: true, encoding: .utf8)
        let gateway = try BackgroundProcess(Repo.corridorBinary.path, ["run", "--config", config, "--workers", "1"])
        let ports = try listenerPorts(gateway)
        let connect = try #require(ports["connect"])
        func fetch() throws {
            let result = try runCommand("curl", ["-sS", "--max-time", "10", "--cacert", pki.caCert, "-x", "http://127.0.0.1:\(connect)",
                                                 "https://api.allowed.test:\(upstream.port)/"])
            #expect(result.stdout == "ok\n", "\(result.stderr)")
        }
        func ids(_ path: String) -> [Int] {
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            return text.split(separator: "\n").map { line in
                let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                return object?["id"] as? Int ?? -1
            }
        }
        try fetch()
        #expect(await eventually { ids(log).count == 1 })

        // logrotate's default: rename, then SIGUSR1.
        try FileManager.default.moveItem(atPath: log, toPath: log + ".1")
        gateway.signal(SIGUSR1)
        #expect(await eventually { gateway.stderrText.contains("access log reopened") }, "\(gateway.stderrText)")
        try fetch()
        #expect(await eventually { ids(log).count == 1 })

        // Renamed without a signal: noticed by the first record after the check interval.
        try FileManager.default.moveItem(atPath: log, toPath: log + ".2")
        try await Task.sleep(for: .milliseconds(250))
        try fetch()
        #expect(await eventually { ids(log).count == 1 })

        // Removed: a new file.
        try FileManager.default.removeItem(atPath: log)
        try await Task.sleep(for: .milliseconds(250))
        try fetch()
        #expect(await eventually { ids(log).count == 1 })

        // The records of the three files that remain (the third went with the removed file):
        // each in exactly one file, every line whole.
        let all = ids(log + ".1") + ids(log + ".2") + ids(log)
        #expect(all.count == 3 && Set(all).count == 3 && !all.contains(-1), "\(all)")
        gateway.signal(SIGTERM)
        #expect(gateway.waitForExit(timeout: 20) == 0)
    }

    /// The access log on a tiny tmpfs (as root): when it fills, new connections are refused under
    /// the default Deny and served under Continue; when space returns, records resume with no
    /// torn line.
    @Test(.enabled(if: getuid() == 0, "needs root to mount a tmpfs"), arguments: ["Deny", "Continue"])
    func aFullDiskRefusesWhatItCannotRecord(onWriteFailure: String) async throws {
        let dir = try TempDir()
        let disk = dir.path("disk")
        try FileManager.default.createDirectory(atPath: disk, withIntermediateDirectories: true)
        let mount = try runCommand("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", disk])
        try #require(mount.status == 0, "\(mount.stderr)")
        defer { _ = try? runCommand("umount", ["-l", disk]) }
        let pki = try TestPKI(in: dir)
        let upstream = try TLSUpstream(pki: pki, dir: dir)
        let config = dir.path("corridor.yaml"), log = "\(disk)/access.log"
        try testConfig(upstreamPort: upstream.port, accessLog: log, accessLogExtra: ", onWriteFailure: \(onWriteFailure)")
            .write(toFile: config, atomically: true, encoding: .utf8)
        let gateway = try BackgroundProcess(Repo.corridorBinary.path, ["run", "--config", config, "--workers", "1"])
        let ports = try listenerPorts(gateway)
        let connect = try #require(ports["connect"]), admin = try #require(ports["admin"])
        func fetch() throws -> CommandResult {
            try runCommand("curl", ["-sS", "--max-time", "10", "--cacert", pki.caCert, "-x", "http://127.0.0.1:\(connect)",
                                    "https://api.allowed.test:\(upstream.port)/"])
        }
        func metrics() throws -> String { try runCommand("curl", ["-sS", "--max-time", "10", "http://127.0.0.1:\(admin)/metrics"]).stdout }
        #expect(try fetch().stdout == "ok\n")

        // Fill the file system to the last byte; records go on into the log's last page until it
        // is full too.
        let filler = "\(disk)/filler"
        _ = try runCommand("dd", ["if=/dev/zero", "of=\(filler)", "bs=1k", "count=1024"])
        var fetches = 0
        while fetches < 40, try !metrics().contains("corridor_access_log_writable 0") {
            _ = try fetch()
            fetches += 1
        }
        #expect(await eventually { (try? metrics().contains("corridor_access_log_writable 0")) == true })
        #expect(gateway.stderrText.contains("No space left on device"), "\(gateway.stderrText)")
        let blocked = try fetch()
        if onWriteFailure == "Deny" {
            #expect(blocked.stdout != "ok\n", "a connection that cannot be recorded must not go out")
        } else {
            #expect(blocked.stdout == "ok\n", "Continue: served unrecorded: \(blocked.stderr)")
        }
        let failures = try metrics().split(separator: "\n").first { $0.hasPrefix("corridor_access_log_write_failures_total ") }
        #expect((failures?.split(separator: " ").last).flatMap { Double($0) } ?? 0 >= 1, "\(failures ?? "")")

        // Space returns: the next record is written (under Deny, the refusal's own), then traffic flows.
        try FileManager.default.removeItem(atPath: filler)
        _ = try fetch()
        #expect(await eventually { (try? metrics().contains("corridor_access_log_writable 1")) == true })
        #expect(try fetch().stdout == "ok\n")
        #expect(gateway.stderrText.contains("records are written again"), "\(gateway.stderrText)")
        // Every line of the log is a whole record: what a failed write left was cut off.
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        for line in lines {
            #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) != nil, "torn line: \(line.prefix(200))")
        }
        if onWriteFailure == "Deny" {
            #expect(lines.contains { $0.contains("\"closeCause\":\"access_log_unwritable\"") }, "the refusal is recorded once space returns")
        }
        gateway.signal(SIGTERM)
        #expect(gateway.waitForExit(timeout: 20) == 0)
    }

    /// Started with few descriptors and flooded on every listener: no crash, no busy loop while it
    /// cannot accept (the accepting thread backs off), and connections are served again once the
    /// flood lets go.
    @Test func outOfDescriptorsItBacksOffAndRecovers() async throws {
        let dir = try TempDir()
        let pki = try TestPKI(in: dir)
        let upstream = try TLSUpstream(pki: pki, dir: dir)
        let config = dir.path("corridor.yaml")
        try testConfig(upstreamPort: upstream.port, accessLog: dir.path("access.log")).write(toFile: config, atomically: true, encoding: .utf8)
        let gateway = try BackgroundProcess("prlimit", ["--nofile=64:64", Repo.corridorBinary.path, "run", "--config", config, "--workers", "1"])
        let ports = try listenerPorts(gateway)
        let connect = try #require(ports["connect"]), tls = try #require(ports["tls"]), admin = try #require(ports["admin"])
        // 80 idle connections on each listener, far past what 64 descriptors allow; then the
        // gateway's CPU time over 3 s while they are held.
        let flood = try BackgroundProcess("python3", ["-c", """
            import os, socket, sys, time
            pid = int(sys.argv[1])
            held = []
            for port in sys.argv[2:]:
                for _ in range(80):
                    s = socket.socket()
                    s.setblocking(False)
                    try:
                        s.connect(("127.0.0.1", int(port)))
                    except BlockingIOError:
                        pass
                    held.append(s)
            print("OPEN", flush=True)
            sys.stdin.readline()
            def cpu():
                fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            before = cpu()
            time.sleep(3)
            print(f"CPU {cpu() - before}", flush=True)
            sys.stdin.read()
            """, "\(gateway.process.processIdentifier)", "\(tls)", "\(connect)", "\(admin)"], withStdin: true)
        // The window opens once the gateway has run out of descriptors.
        #expect(await eventually(timeout: 20) { flood.stdoutText.contains("OPEN") })
        #expect(await eventually(timeout: 20) { gateway.stderrText.contains("Too many open files") }, "\(gateway.stderrText.suffix(2000))")
        flood.write("\n")
        #expect(await eventually(timeout: 20) { flood.stdoutText.contains("CPU") })
        let cpu = flood.stdoutText.split(separator: " ").last.flatMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 99
        // A listener spinning on accept burns a whole core (3 s of CPU in 3 s); backing off, a
        // few wake-ups a second.
        #expect(cpu < 1.0, "CPU seconds in 3 s while out of descriptors: \(cpu)")
        #expect(gateway.stderrText.contains("Too many open files"), "\(gateway.stderrText.suffix(2000))")
        flood.closeStdin()
        _ = flood.waitForExit(timeout: 10)
        // Served again once descriptors free up.
        #expect(await eventually(timeout: 20) {
            let result = try? runCommand("curl", ["-sS", "--max-time", "5", "--cacert", pki.caCert, "-x", "http://127.0.0.1:\(connect)",
                                                  "https://api.allowed.test:\(upstream.port)/"])
            return result?.stdout == "ok\n"
        })
        #expect(await eventually(timeout: 20) {
            let result = try? runCommand("curl", ["-sS", "--max-time", "5", "--cacert", pki.caCert, "--connect-to",
                                                  "api.allowed.test:\(upstream.port):127.0.0.1:\(tls)", "https://api.allowed.test:\(upstream.port)/"])
            return result?.stdout == "ok\n"
        })
        gateway.signal(SIGTERM)
        #expect(gateway.waitForExit(timeout: 20) == 0, "no crash: \(gateway.stderrText.suffix(1000))")
    }
}
