import Foundation
import Testing

/// The relay when its destinations take less than it has: sends that stop part-way, and the bytes
/// that wait for room. The gateway runs in a network namespace of its own whose TCP buffers are
/// 4 KiB at most (`net.ipv4.tcp_wmem`, `tcp_rmem`: per namespace), so every chunk it reads is
/// below its 16 KiB copy buffer and, once an end stops reading, larger than what the socket takes.
/// The sends and the waits for readiness are traced with strace, so the test knows the partial
/// sends happened rather than hoping they did, and that the gateway did not spin meanwhile. Needs root (CI runs as root); scripts/test installs iproute2 and strace.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct RelayBackpressureTests {
    static let isRoot = getuid() == 0
    static let tlsPort = 15443, adminPort = 15090, upstreamPort = 15444

    /// `upload`: both ends send 256 KiB, then shut their side. Otherwise the client only shuts its
    /// side after the hello, and the upstream sends 48 KiB and closes at once, before the client
    /// reads: few enough that the gateway reads them all and the upstream's end (NIO's write
    /// queue takes 64 KiB before it stops reading), so what it holds for the client when the
    /// upstream is gone must still reach it.
    @Test(.enabled(if: isRoot, "needs root for a network namespace"), arguments: [true, false])
    func partialSendsKeepEveryByteInOrder(upload: Bool) throws {
        let namespace = "corrb\(getpid() % 100_000)"
        let dir = try TempDir()
        defer { Self.remove(namespace) }
        for command in [["netns", "add", namespace], ["netns", "exec", namespace, "ip", "link", "set", "lo", "up"],
                        ["netns", "exec", namespace, "sysctl", "-qw", "net.ipv4.tcp_wmem=4096 4096 4096", "net.ipv4.tcp_rmem=4096 4096 4096"]] {
            let result = try runCommand("ip", command)
            try #require(result.status == 0, "ip \(command.joined(separator: " ")): \(result.stderr)")
        }
        let accessLog = dir.path("access.log")
        let base = testConfig(upstreamPort: Self.upstreamPort, accessLog: accessLog)
        let config = base.replacingOccurrences(of: "listeners: {tls: 127.0.0.1:0, connect: 127.0.0.1:0, admin: 127.0.0.1:0}",
                                               with: "listeners: {tls: 127.0.0.1:\(Self.tlsPort), admin: 127.0.0.1:\(Self.adminPort)}")
        try #require(config != base, "testConfig's listeners changed; adjust this test")
        try config.write(toFile: dir.path("config.yaml"), atomically: true, encoding: .utf8)
        let trace = dir.path("strace.txt")
        let gateway = try BackgroundProcess("ip", ["netns", "exec", namespace, "strace", "-f", "-qq", "-s", "0",
                                                   "-e", "trace=accept4,connect,sendto,epoll_wait,epoll_pwait", "-o", trace,
                                                   Repo.corridorBinary.path, "run", "--config", dir.path("config.yaml"), "--workers", "1"])
        // The gateway goes first: strace then exits with its tracee. Killed first itself, strace
        // leaves a zombie that Foundation's Process does not see exit while the gateway lives.
        defer {
            Self.kill(in: namespace, sparing: gateway.process.processIdentifier)
            _ = gateway.waitForExit(timeout: 10)
        }
        let ready = eventually(timeout: 30) {
            (try? runCommand("ip", ["netns", "exec", namespace, "curl", "-sf", "http://127.0.0.1:\(Self.adminPort)/readyz"]))?.status == 0
        }
        try #require(ready, "the gateway never became ready: \(gateway.stderrText)")

        let downloaded = upload ? 262_144 : 49_152
        let run = try runCommand("ip", ["netns", "exec", namespace, "python3", Repo.support.appendingPathComponent("relay_backpressure.py").path,
                                        "--gateway", "\(Self.tlsPort)", "--upstream-port", "\(Self.upstreamPort)",
                                        "--sni", "api.allowed.test", "--bytes", "\(downloaded)", "--hold", "2"]
                                        + (upload ? [] : ["--client-bytes", "0", "--upstream-close"]), timeout: 90)
        try #require(run.status == 0, "\(run.stdout)\(run.stderr)")
        let parsed = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8))
        let result = try #require(parsed as? [String: Any], "\(run.stdout)")
        #expect(result["helloRelayed"] as? Bool == true, "\(result)")
        let uploaded = upload ? 262_144 : 0
        for (direction, bytes) in [("up", uploaded), ("down", downloaded)] {
            let received = try #require(result[direction] as? [String: Any], "\(result)")
            #expect(received["received"] as? Int == bytes && received["matches"] as? Bool == true,
                    "\(direction): \(received)")
        }
        let hello = try #require(result["hello"] as? Int)
        let reader = AccessLogFile(accessLogPath: accessLog)
        let record = try #require(reader.record { $0["sni"] as? String == "api.allowed.test" }, "\(gateway.stderrText)")
        #expect(record["decision"] as? String == "allow")
        #expect(record["bytesUp"] as? Int == hello + uploaded, "\(record)")
        #expect(record["bytesDown"] as? Int == downloaded, "\(record)")
        #expect(record["closeCause"] as? String == "completed", "\(record)")

        // While both ends hold their reads, nothing is ready that the gateway may act on: a socket
        // left watched for something it cannot act on would wake the gateway in a loop. Waits are
        // counted from the trace: about 160 for this exchange on either plane, over 11,000 when the
        // client's socket stays watched for reads while its direction is full.
        let lines = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n")
        let waits = lines.filter { $0.contains("epoll_wait(") || $0.contains("epoll_pwait(") }.count
        #expect(waits < 2_000, "the gateway woke \(waits) times for one connection: a readiness it does not act on")

        // The splice plane's copies go out with sendto(2): each of its two sockets must have taken
        // part of a send at least once. (The NIO plane writes with write(2) and writev(2), whose
        // partial writes are NIO's; there the bytes and the record above are the test.)
        guard testDataPlane == "Splice" else { return }
        let client = try #require(Self.descriptor(in: lines, of: "accept4(", port: nil), "no accept4 in the trace")
        let upstream = try #require(Self.descriptor(in: lines, of: "connect(", port: Self.upstreamPort), "no connect in the trace")
        let partial = Self.partialSends(in: lines)
        #expect(partial[client, default: 0] > 0, "no partial send to the client (fd \(client)): \(partial)")
        if upload { #expect(partial[upstream, default: 0] > 0, "no partial send to the upstream (fd \(upstream)): \(partial)") }
    }

    /// The descriptor a traced `accept4` returned, or the one a `connect` to `port` used.
    static func descriptor(in lines: [Substring], of call: String, port: Int?) -> Int? {
        for line in lines {
            guard let start = line.range(of: call) else { continue }
            if let port {
                guard line.contains("htons(\(port))") else { continue }
                return Int(line[start.upperBound...].prefix { $0.isNumber })
            }
            guard let equals = line.range(of: ") = ", options: .backwards) else { continue }
            if let fd = Int(line[equals.upperBound...].prefix { $0.isNumber }) { return fd }
        }
        return nil
    }

    /// Per descriptor, how many traced `sendto(FD, ""..., LENGTH, ...) = SENT` took 0 < SENT < LENGTH.
    static func partialSends(in lines: [Substring]) -> [Int: Int] {
        var counts: [Int: Int] = [:]
        for line in lines {
            guard let start = line.range(of: "sendto(") else { continue }
            let arguments = line[start.upperBound...].split(separator: ",", maxSplits: 3).map { $0.trimmingCharacters(in: .whitespaces) }
            guard arguments.count == 4, let fd = Int(arguments[0]), let length = Int(arguments[2]),
                  let equals = line.range(of: ") = ", options: .backwards),
                  let sent = Int(line[equals.upperBound...].prefix { $0.isNumber }) else { continue }
            if sent > 0 && sent < length { counts[fd, default: 0] += 1 }
        }
        return counts
    }

    /// Kills every process in the namespace but `spared`.
    static func kill(in namespace: String, sparing spared: Int32? = nil) {
        guard let pids = try? runCommand("ip", ["netns", "pids", namespace]).stdout else { return }
        for pid in pids.split(separator: "\n").compactMap({ Int32($0) }) where pid != spared {
            Glibc.kill(pid, SIGKILL)
        }
    }

    /// Kills what still runs in the namespace and removes it.
    static func remove(_ namespace: String) {
        kill(in: namespace)
        _ = try? runCommand("ip", ["netns", "del", namespace])
    }
}
