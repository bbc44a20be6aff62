import Foundation
import Testing

/// The TLS passthrough listener over real sockets, with real clients (openssl s_client, curl, Python ssl).
@Suite(.serialized, .timeLimit(.minutes(3)))
struct PassthroughTests {
    @Test func opensslClientWithAllowedSNIReachesUpstreamAndIsLogged() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try runCommand("openssl", ["s_client", "-connect", "127.0.0.1:\(h.tlsPort)", "-servername", "api.allowed.test",
                                                "-CAfile", h.pki.caCert, "-verify_return_error", "-brief", "-ign_eof"],
                                    timeout: 20, stdin: Data("GET / HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n".utf8))
        #expect(result.stdout.hasSuffix("\r\n\r\nok\n"), "stdout: \(result.stdout) stderr: \(result.stderr)")
        #expect(result.stderr.contains("Verification: OK"))
        let record = try #require(h.record { $0["sni"] as? String == "api.allowed.test" && $0["decision"] as? String == "allow" })
        #expect(record["listener"] as? String == "tls")
        #expect(record["externalService"] as? String == "allowed-api")
        #expect(record["egressPolicy"] as? String == "payments/checkout-egress")
        #expect(record["resolved"] as? String == "127.0.0.1:\(h.upstream.port)")
        #expect(record["port"] as? Int == h.upstream.port)
        let identity = try #require(record["identity"] as? [String: Any])
        #expect(identity["namespace"] as? String == "payments")
        #expect(identity["serviceAccount"] as? String == "checkout")
        #expect((identity["labels"] as? [String: String]) == ["app": "checkout"])
        #expect(h.upstream.acceptedNames == ["api.allowed.test"])
    }

    @Test func deniedSNIGetsTLSAlertAndNeverReachesUpstream() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try runCommand("openssl", ["s_client", "-connect", "127.0.0.1:\(h.tlsPort)", "-servername", "evil.test",
                                                "-CAfile", h.pki.caCert, "-brief"], timeout: 20, stdin: Data())
        #expect(result.status != 0)
        #expect(result.stderr.contains("access denied"), "stderr: \(result.stderr)")
        let record = try #require(h.record { $0["sni"] as? String == "evil.test" })
        #expect(record["decision"] as? String == "deny")
        #expect(record["reason"] as? String == "no ExternalService matches evil.test")
        #expect(record["closeCause"] as? String == "denied")
        #expect(record["resolved"] == nil)
        try await Task.sleep(for: .milliseconds(200))
        #expect(h.upstream.acceptedNames.isEmpty)
    }

    @Test func wildcardNameIsAllowedAndTheSuffixItselfIsNot() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let ok = try runCommand("curl", ["-sS", "--max-time", "20", "--cacert", h.pki.caCert,
                                         "--connect-to", "x.wild.allowed.test:443:127.0.0.1:\(h.tlsPort)", "https://x.wild.allowed.test/"])
        #expect(ok.stdout == "ok\n", "curl: \(ok.stderr)")
        let bad = try runCommand("curl", ["-sS", "--max-time", "20", "-k",
                                          "--connect-to", "wild.allowed.test:443:127.0.0.1:\(h.tlsPort)", "https://wild.allowed.test/"])
        #expect(bad.status != 0)
        #expect(h.record { $0["sni"] as? String == "wild.allowed.test" && $0["decision"] as? String == "deny" } != nil)
    }

    @Test func echoOfEightMiBIsByteExact() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try h.pythonClient(["--port", "\(h.tlsPort)", "--sni", "api.allowed.test", "--mode", "ECHO", "--bytes", "\(8 << 20)"])
        #expect(result["error"] == nil, "\(result)")
        #expect(result["received"] as? Int == 8 << 20)
        #expect(result["receivedHash"] as? String == result["sentHash"] as? String)
        let record = try #require(h.record { $0["decision"] as? String == "allow" && ($0["bytesUp"] as? Int ?? 0) > 8 << 20 })
        #expect((record["bytesDown"] as? Int ?? 0) > 8 << 20)
        #expect(record["closeCause"] as? String == "completed")
    }

    @Test func aClientResettingMidTransferEndsTheRelayWithARecordAndTheGatewayGoesOn() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        // A TLS session that sends 256 KiB, reads a little of the echo, then resets (SO_LINGER 0).
        let result = try runCommand("python3", ["-c", """
            import socket, ssl, struct, sys
            ctx = ssl.create_default_context(cafile=sys.argv[1])
            raw = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=20)
            tls = ctx.wrap_socket(raw, server_hostname="api.allowed.test")
            tls.sendall(b"ECHO\\n")
            tls.sendall(b"x" * (256 << 10))
            got = tls.recv(1000)
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            tls.close()
            print("reset after", len(got))
            """, h.pki.caCert, "\(h.tlsPort)"], timeout: 30)
        #expect(result.stdout.contains("reset after"), "\(result.stdout)\(result.stderr)")
        let record = try #require(h.record { $0["decision"] as? String == "allow" && ($0["bytesUp"] as? Int ?? 0) > 0 })
        #expect(["client_error", "upstream_error", "completed"].contains(record["closeCause"] as? String ?? "?"), "\(record)")
        // The next connection is served as usual.
        let next = try h.pythonClient(["--port", "\(h.tlsPort)", "--sni", "api.allowed.test", "--mode", "ECHO", "--bytes", "65536"])
        #expect(next["error"] == nil, "\(next)")
        #expect(next["receivedHash"] as? String == next["sentHash"] as? String)
    }

    @Test func aClientThatReadsLateGetsEveryByte() async throws {
        // The client asks for more than the gateway's socket buffers hold and reads only after a
        // pause: the gateway's writes to it are cut short, the rest waits in the relay's pipe
        // while reads from the upstream stop, and all of it must arrive, in order.
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let size = 12 << 20
        let result = try runCommand("python3", ["-c", """
            import hashlib, socket, ssl, sys, time
            ctx = ssl.create_default_context(cafile=sys.argv[1])
            raw = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=60)
            tls = ctx.wrap_socket(raw, server_hostname="api.allowed.test")
            tls.sendall(b"GET /size/%d HTTP/1.1\\r\\nHost: api.allowed.test\\r\\n\\r\\n" % int(sys.argv[3]))
            time.sleep(1.5)
            data = bytearray()
            while True:
                part = tls.recv(65536)
                if not part:
                    break
                data += part
            head, body = bytes(data).split(b"\\r\\n\\r\\n", 1)
            print(len(body), hashlib.sha256(body).hexdigest())
            """, h.pki.caCert, "\(h.tlsPort)", "\(size)"], timeout: 120)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "\(size) \(try patternSHA256(size))")
        let record = try #require(h.record { $0["decision"] as? String == "allow" && ($0["bytesDown"] as? Int ?? 0) > size })
        #expect(record["closeCause"] as? String == "completed")
    }

    @Test func bothDirectionsFilledWithSmallRecordsDeliverEveryOne() async throws {
        // Paced 4 KiB TLS records to the echo upstream while the client reads nothing: the echoes
        // fill the client's small receive buffer, the relay's writes to it stop, the upstream
        // stops reading, and the relay's writes to the upstream stop too, the relay moving between
        // copies and splices as its reads come short or full. Once the client reads, every record
        // must come back, in order, none lost or repeated.
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try runCommand("python3", ["-c", """
            import select, socket, ssl, sys, time
            ctx = ssl.create_default_context(cafile=sys.argv[1])
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            raw.settimeout(30)
            raw.connect(("127.0.0.1", int(sys.argv[2])))
            tls = ctx.wrap_socket(raw, server_hostname="api.allowed.test")
            tls.sendall(b"ECHO\\n")
            tls.setblocking(False)
            record = lambda i: i.to_bytes(8, "big") * 512  # 4 KiB, numbered: a lost or repeated piece shows
            # Write paced records until a write has waited half a second (every buffer on the way is
            # full; the cap only guards against a path that never fills), then read the echoes.
            sent, blocked_since, deadline = 0, None, time.monotonic() + 60
            while sent < 24576 and time.monotonic() < deadline:
                try:
                    tls.send(record(sent))
                    sent, blocked_since = sent + 1, None
                    time.sleep(0.0002)
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    blocked_since = blocked_since or time.monotonic()
                    if time.monotonic() - blocked_since > 0.5:
                        break
                    select.select([], [tls], [], 0.05)
            got, deadline = bytearray(), time.monotonic() + 60
            while len(got) < sent * 4096 and time.monotonic() < deadline:
                try:
                    part = tls.recv(65536)
                    if not part:
                        break
                    got += part
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    select.select([tls], [], [], 0.05)
            whole = len(got) == sent * 4096 and all(got[i * 4096:(i + 1) * 4096] == record(i) for i in range(sent))
            # Full means well past the client's 16 KiB receive buffer, not a stall of the gateway.
            print(sent > 256 and blocked_since is not None, whole, sent)
            """, h.pki.caCert, "\(h.tlsPort)"], timeout: 120)
        #expect(result.status == 0, "\(result.stderr)")
        // The writes stopped because the path was full (not at the cap), and every record came back.
        #expect(result.stdout.hasPrefix("True True "), "\(result.stdout)")
    }

    @Test func tcpUrgentDataNeitherStallsTheRelayNorCutsWhatFollows() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        // An urgent byte (MSG_OOB) on the TCP connection under a TLS session: it is not part of the
        // stream (read(2) steps over it; splice(2) stops at it), and what follows must still flow,
        // including after the client shuts its side.
        let result = try runCommand("python3", ["-c", """
            import os, socket, ssl, sys
            ctx = ssl.create_default_context(cafile=sys.argv[1])
            raw = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=10)
            tls = ctx.wrap_socket(raw, server_hostname="api.allowed.test")
            side = socket.socket(socket.AF_INET, socket.SOCK_STREAM, fileno=os.dup(tls.fileno()))
            tls.sendall(b"ECHO\\n")
            side.send(b"!", socket.MSG_OOB)
            tls.sendall(b"first")
            got = b""
            while len(got) < 5:
                got += tls.recv(100)
            side.send(b"!", socket.MSG_OOB)
            tls.sendall(b"second")
            side.shutdown(socket.SHUT_WR)
            while True:
                chunk = tls.recv(100)
                if not chunk:
                    break
                got += chunk
            print(got.decode())
            """, h.pki.caCert, "\(h.tlsPort)"], timeout: 30)
        #expect(result.stdout.contains("firstsecond"), "\(result.stdout)\(result.stderr)")
    }

    @Test func halfCloseIsPassedOnAndTheAnswerStillComesBack() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try h.pythonClient(["--port", "\(h.tlsPort)", "--sni", "api.allowed.test", "--mode", "SINK", "--bytes", "\(16 << 20)"])
        #expect(result["error"] == nil, "\(result)")
        #expect(result["received"] as? Int == 16 << 20)
        #expect(result["receivedHash"] as? String == result["sentHash"] as? String)
    }

    @Test func sourceWithAnotherIdentityIsRefusedWithItsIdentityLogged() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try runCommand("curl", ["-sS", "--max-time", "20", "--cacert", h.pki.caCert, "--interface", "127.0.0.3",
                                             "--connect-to", "api.allowed.test:443:127.0.0.1:\(h.tlsPort)", "https://api.allowed.test/"])
        #expect(result.status != 0)
        let record = try #require(h.record { ($0["src"] as? String ?? "").hasPrefix("127.0.0.3:") })
        #expect(record["decision"] as? String == "deny")
        #expect(record["reason"] as? String == "ExternalService allowed-api is not granted to analytics/sa:reporting")
        #expect((record["identity"] as? [String: Any])?["workload"] as? String == "reporting")
    }

    @Test func unknownSourceIsDenied() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try runCommand("curl", ["-sS", "--max-time", "20", "--cacert", h.pki.caCert, "--interface", "127.0.0.9",
                                             "--connect-to", "api.allowed.test:443:127.0.0.1:\(h.tlsPort)", "https://api.allowed.test/"])
        #expect(result.status != 0)
        let record = try #require(h.record { ($0["src"] as? String ?? "").hasPrefix("127.0.0.9:") })
        #expect(record["identity"] as? String == "unknown")
        #expect((record["reason"] as? String ?? "").contains("is not a known workload"))
    }

    @Test func allowedNameResolvingToABlockedAddressIsRefused() async throws {
        // private.allowed.test resolves to 127.0.0.2, outside allowPrivate (127.0.0.1/32): never dialled.
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try runCommand("curl", ["-sS", "--max-time", "20", "-k",
                                             "--connect-to", "private.allowed.test:443:127.0.0.1:\(h.tlsPort)", "https://private.allowed.test/"])
        #expect(result.status != 0)
        let record = try #require(h.record { $0["sni"] as? String == "private.allowed.test" })
        #expect(record["decision"] as? String == "deny")
        #expect(record["closeCause"] as? String == "destination_blocked")
        #expect((record["reason"] as? String ?? "").contains("127.0.0.0/8 (loopback)"))
    }

    @Test func aRefusedAddressIsFollowedByTheNextResolvedOne() async throws {
        // fallback.allowed.test resolves to ::1 (nothing listens there: refused) and then 127.0.0.1.
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try runCommand("curl", ["-sS", "--max-time", "20", "-k",
                                             "--connect-to", "fallback.allowed.test:443:127.0.0.1:\(h.tlsPort)", "https://fallback.allowed.test/"])
        #expect(result.stdout == "ok\n", "\(result.stdout)\(result.stderr)")
        let record = try #require(h.record { $0["sni"] as? String == "fallback.allowed.test" })
        #expect(record["decision"] as? String == "allow")
        #expect(record["resolved"] as? String == "127.0.0.1:\(h.upstream.port)")
        #expect(record["closeCause"] as? String == "completed")
    }

    @Test func anUpstreamThatNeverAnswersTheConnectIsGivenUpAfterTheTimeout() async throws {
        // A connect to a full accept queue hangs. evil.test resolves to 127.0.0.1 and is opened to
        // all on that port.
        let queue = try FullAcceptQueue(), port = queue.port
        defer { queue.close() }
        let h = try await GatewayHarness(gatewayExtra: "  limits: {connectTimeout: 1s}", extra: Self.evilService("silent", port: port))
        defer { Task { await h.stop() } }
        let started = Date()
        let result = try runCommand("curl", ["-sS", "--max-time", "20", "-k",
                                             "--connect-to", "evil.test:443:127.0.0.1:\(h.tlsPort)", "https://evil.test/"])
        #expect(result.status != 0)
        #expect(Date().timeIntervalSince(started) < 10)
        let record = try #require(h.record { $0["sni"] as? String == "evil.test" })
        #expect(record["decision"] as? String == "allow", "the policy allowed it; the upstream did not answer")
        #expect(record["closeCause"] as? String == "connect_timeout", "\(record)")
        #expect(record["externalService"] as? String == "silent")
    }

    @Test func bytesSentWhileTheUpstreamIsDialledFollowTheHelloInOrder() async throws {
        // The upstream's accept queue is full (backlog 0, one connection waiting), so the
        // gateway's SYN is dropped and its dial waits for the retransmission about a second later.
        // Meanwhile the client sends more after its ClientHello. Then the queue is emptied: the
        // dial completes, and the upstream must get the hello and those bytes, in order. (The
        // splice plane leaves them in the socket until the relay; the NIO plane reads and keeps them.)
        let queue = try FullAcceptQueue(), port = queue.port, listener = queue.listener
        defer { queue.close() }
        let h = try await GatewayHarness(gatewayExtra: "  limits: {connectTimeout: 8s}", extra: Self.evilService("slow", port: port))
        defer { Task { await h.stop() } }
        let client = try BackgroundProcess("python3", ["-c", Self.evilHello + """
            import sys
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
            s.sendall(hello)
            print("HELLO", len(hello), flush=True)
            sys.stdin.readline()
            s.sendall(b"after-the-hello")
            print("MORE", flush=True)
            print("END", repr(s.recv(100)), flush=True)
            """, "\(h.tlsPort)"], withStdin: true)
        // The rest goes once the gateway is dialling (its SYN waits in SYN-SENT), so it cannot
        // arrive with the hello.
        #expect(await eventually { queue.dialsInProgress == 1 }, "the gateway never dialled: \(client.stderrText)")
        client.write("\n")
        #expect(await eventually { client.stdoutText.contains("MORE") }, "\(client.stdoutText)\(client.stderrText)")
        let helloLength = try #require(client.stdoutText.split(separator: "\n").first.flatMap { Int($0.split(separator: " ").last ?? "") })
        // Let the gateway's socket hold those bytes a moment, then make room: the next SYN gets in.
        usleep(200_000)
        let queued = accept(listener, nil, nil)
        if queued >= 0 { close(queued) }
        var poll = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        try #require(Glibc.poll(&poll, 1, 10_000) == 1, "the gateway's dial never arrived")
        let upstream = accept(listener, nil, nil)
        try #require(upstream >= 0)
        defer { close(upstream) }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        var socketPoll = pollfd(fd: upstream, events: Int16(POLLIN), revents: 0)
        while received.count < helloLength + 15, Glibc.poll(&socketPoll, 1, 10_000) == 1 {
            let n = recv(upstream, &buffer, buffer.count, 0)
            if n <= 0 { break }
            received += buffer[0..<n]
        }
        #expect(received.count == helloLength + 15, "\(received.count) bytes for a \(helloLength)-byte hello and 15 more")
        #expect(received.first == 0x16, "the ClientHello first")
        #expect(String(decoding: received.suffix(15), as: UTF8.self) == "after-the-hello")
        // The upstream closes: the client sees its end, and the connection is recorded once.
        shutdown(upstream, Int32(SHUT_RDWR))
        #expect(client.waitForExit(timeout: 10) == 0, "\(client.stderrText)")
        let record = try #require(h.record { $0["sni"] as? String == "evil.test" })
        #expect(record["decision"] as? String == "allow")
        #expect(record["bytesUp"] as? Int == helloLength + 15, "\(record)")
        #expect(record["closeCause"] as? String == "completed", "\(record)")
    }

    @Test func aDialWhoseClientLeftIsClosedAtOnce() async throws {
        // The upstream's accept queue is full, so the gateway's dial stays in SYN-SENT; the
        // connect timeout is a minute. The client resets its connection: its dial must go with it,
        // not live on until the timeout (that would let clients that come and go hold sockets
        // beyond the connection limits). A client that only closes its side may still read, so
        // that dial goes on (ConnectionStateMachineTests: aHalfCloseWhileDiallingIsPassedOn...).
        let queue = try FullAcceptQueue(), port = queue.port
        defer { queue.close() }
        let h = try await GatewayHarness(gatewayExtra: "  limits: {connectTimeout: 60s}", extra: Self.evilService("slow", port: port))
        defer { Task { await h.stop() } }
        let client = try BackgroundProcess("python3", ["-c", Self.evilHello + """
            import struct, sys
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
            s.sendall(hello)
            sys.stdin.read()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            """, "\(h.tlsPort)"], withStdin: true)
        #expect(await eventually { queue.dialsInProgress == 1 }, "the gateway's dial never started: \(client.stderrText)")
        client.closeStdin()
        #expect(client.waitForExit(timeout: 10) == 0, "\(client.stderrText)")
        #expect(await eventually(timeout: 15) { queue.dialsInProgress == 0 }, "the dial outlived its client")
        let record = try #require(h.record { $0["sni"] as? String == "evil.test" })
        // Reset by its client, allowed by the policy: the record says both.
        #expect(record["decision"] as? String == "allow", "\(record)")
        #expect(record["closeCause"] as? String == "client_error", "\(record)")
        #expect((record["reason"] as? String)?.contains("; client connection error: ") == true, "\(record)")
    }

    @Test(arguments: ["reset", "close"])
    func aClientThatLeavesMidDownloadIsRecordedAsItsError(_ leaving: String) async throws {
        // The upstream sends 32 MiB; the client takes 64 KiB and leaves (a reset, or a close
        // with bytes unread, which the kernel answers with a reset too): the relay did not
        // complete, and the record says the client ended it, on both planes.
        let script = Self.evilHello + """
            import struct, sys, threading
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            print(f"PORT {listener.getsockname()[1]}", flush=True)  # one write: the test reads it as it comes
            gateway = int(sys.stdin.readline())
            client = socket.create_connection(("127.0.0.1", gateway), timeout=30)
            client.sendall(hello)
            upstream, _ = listener.accept()
            def send():
                try:
                    upstream.sendall(b"y" * (32 << 20))
                except OSError:
                    pass
                upstream.close()
            sender = threading.Thread(target=send)
            sender.start()
            got = 0
            while got < 65536:
                chunk = client.recv(65536 - got)
                if not chunk:
                    break
                got += len(chunk)
            if sys.argv[1] == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            sender.join(30)
            print(f"LEFT {got}", flush=True)
            """
        let peer = try BackgroundProcess("python3", ["-c", script, leaving], withStdin: true)
        #expect(await eventually { peer.stdoutText.contains("PORT") }, "\(peer.stderrText)")
        let port = try #require(peer.stdoutText.split(separator: "\n").first.flatMap { Int($0.split(separator: " ").last ?? "") })
        let h = try await GatewayHarness(extra: Self.evilService("bulk", port: port))
        defer { Task { await h.stop() } }
        peer.write("\(h.tlsPort)\n")
        #expect(peer.waitForExit(timeout: 60) == 0, "\(peer.stderrText)")
        #expect(peer.stdoutText.contains("LEFT 65536"), "\(peer.stdoutText)")
        #expect(await eventually { h.record { $0["sni"] as? String == "evil.test" } != nil })
        let record = try #require(h.record { $0["sni"] as? String == "evil.test" })
        #expect(record["decision"] as? String == "allow", "\(record)")
        #expect(record["closeCause"] as? String == "client_error", "\(record)")
    }

    /// A relay the machine ends itself (here the idle limit) while neither end reads: the client
    /// pushed until everything filled, and the upstream never reads. Both sockets close with the
    /// record, on both planes: none waits for writes its peer will not take (the NIO plane kept
    /// the upstream's open for another idle limit, its admission slot already given back).
    @Test func aRelayEndedByTheIdleLimitClosesBothSocketsAtOnce() async throws {
        let script = Self.evilHello + """
            import sys, time
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            print(f"PORT {listener.getsockname()[1]}", flush=True)
            gateway = int(sys.stdin.readline())
            client = socket.create_connection(("127.0.0.1", gateway), timeout=30)
            client.sendall(hello)
            upstream, _ = listener.accept()  # never read
            client.setblocking(False)
            pushed = 0
            idle_since = time.monotonic()
            while time.monotonic() - idle_since < 1.0:
                try:
                    pushed += client.send(b"x" * 65536)
                    idle_since = time.monotonic()
                except BlockingIOError:
                    time.sleep(0.05)
            print(f"FULL {pushed}", flush=True)
            sys.stdin.readline()  # hold both ends until the test is done
            """
        let peer = try BackgroundProcess("python3", ["-c", script], withStdin: true)
        defer { peer.signal(SIGKILL) }
        #expect(await eventually { peer.stdoutText.contains("PORT") }, "\(peer.stderrText)")
        let port = try #require(peer.stdoutText.split(separator: "\n").first.flatMap { Int($0.split(separator: " ").last ?? "") })
        let h = try await GatewayHarness(gatewayExtra: "  limits: {idleTimeout: 4s}", extra: Self.evilService("stalled", port: port))
        defer { Task { await h.stop() } }
        peer.write("\(h.tlsPort)\n")
        #expect(await eventually(timeout: 20) { peer.stdoutText.contains("FULL") }, "\(peer.stdoutText)\(peer.stderrText)")
        func established() throws -> Int {
            let result = try runCommand("ss", ["-Htn", "state", "established", "( dport = :\(port) )"])
            return result.stdout.split(separator: "\n").count
        }
        #expect(try established() == 1, "the gateway's connection to the upstream")
        #expect(await eventually(timeout: 15) { h.record { $0["sni"] as? String == "evil.test" } != nil })
        let record = try #require(h.record { $0["sni"] as? String == "evil.test" })
        #expect(record["closeCause"] as? String == "idle_timeout", "\(record)")
        // Not another idle limit (4 s) later.
        #expect(await eventually(timeout: 1.5) { (try? established()) == 0 }, "the upstream connection outlived its record")
        peer.write("\n")
    }

    /// An ExternalService `name` for evil.test (127.0.0.1 in the harness) on `port`, open to all.
    private static func evilService(_ name: String, port: Int) -> String {
        """
        ---
        apiVersion: corridor.dev/v1alpha1
        kind: ExternalService
        metadata: {name: \(name)}
        spec:
          hosts: [evil.test]
          ports: [{number: \(port), protocol: TLS}]
          access: All
        """
    }

    /// Python that leaves a real ClientHello for evil.test in `hello` (and imports `socket`).
    private static let evilHello = """
        import socket, ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname="evil.test")
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = outgoing.read()

        """

    @Test func manyConnectionsEndingEveryWayLeaveNoDescriptorOrBudgetBehind() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        // Sockets only: the splice plane keeps up to 64 empty pipes per loop for reuse.
        func openDescriptors() -> Int {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
            return entries.filter { ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)")) ?? "").hasPrefix("socket:") }.count
        }
        // Warm up (pooled pipes, resolver, metrics), then count.
        _ = try h.pythonClient(["--port", "\(h.tlsPort)", "--sni", "api.allowed.test", "--mode", "ECHO", "--bytes", "1000"])
        #expect(await eventually { h.gateway.proxy.openConnections == 0 })
        let before = openDescriptors()
        // 200 connections at 20 at a time, ending every way: echoed and closed, reset mid-transfer,
        // half-closed, denied by name, not TLS at all, closed before a hello, and left idle then cut.
        let result = try runCommand("python3", ["-c", """
            import socket, ssl, struct, sys, threading, time
            from concurrent.futures import ThreadPoolExecutor
            ca, port = sys.argv[1], int(sys.argv[2])
            ports = {}
            def tls(name):
                ctx = ssl.create_default_context(cafile=ca)
                # Longer than the test upstream's own 30 s timeout: under a loaded CI machine its
                # thread per connection can take seconds to answer a handshake, and a client that
                # gave up sooner would leave the gateway's connection waiting on that upstream.
                raw = socket.create_connection(("127.0.0.1", port), timeout=45)
                ports[threading.get_ident()] = raw.getsockname()[1]
                return ctx.wrap_socket(raw, server_hostname=name)
            def one(i):
                kind = i % 6
                started = time.monotonic()
                ports.pop(threading.get_ident(), None)
                try:
                    if kind == 0:
                        s = tls("api.allowed.test"); s.sendall(b"ECHO\\n" + b"a" * 5000); got = b""
                        while len(got) < 5000: got += s.recv(65536)
                        s.close()
                    elif kind == 1:
                        s = tls("api.allowed.test"); s.sendall(b"ECHO\\n" + b"b" * 200000); s.recv(100)
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close()
                    elif kind == 2:
                        s = tls("api.allowed.test"); s.sendall(b"SINK\\n" + b"c" * 3000); s.shutdown(socket.SHUT_WR)
                        while s.recv(100): pass
                        s.close()
                    elif kind == 3:
                        try: tls("evil.test")
                        except ssl.SSLError: pass
                    elif kind == 4:
                        r = socket.create_connection(("127.0.0.1", port), timeout=10); r.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
                        try: r.recv(100)
                        except ConnectionResetError: pass  # refused: closed, or reset
                        r.close()
                    else:
                        r = socket.create_connection(("127.0.0.1", port), timeout=10); r.close()
                    return "ok"
                except Exception as e:
                    # The client's port finds the gateway's record of the connection.
                    return f"kind {kind} from port {ports.get(threading.get_ident(), '?')} after {time.monotonic() - started:.1f}s: {e!r}"
            with ThreadPoolExecutor(20) as pool:
                results = list(pool.map(one, range(200)))
            print(sum(r == "ok" for r in results), [r for r in results if r != "ok"][:5])
            """, h.pki.caCert, "\(h.tlsPort)"], timeout: 150)
        if !result.stdout.hasPrefix("200 ") {
            // What the gateway recorded of the clients that failed, once their connections end.
            let failedPorts = result.stdout.matches(of: /from port (\d+)/).map { ":\($0.1)" }
            _ = await eventually(timeout: 35) { h.gateway.proxy.openConnections == 0 }
            let theirs = h.records().filter { record in failedPorts.contains { (record["src"] as? String ?? "").hasSuffix($0) } }
            Issue.record("""
                failed clients: \(result.stdout)\(result.stderr)
                open connections: \(h.gateway.proxy.openConnections)
                their records: \(theirs)
                upstream accepted \(h.upstream.acceptedNames.count) TLS connections
                """)
        }
        #expect(await eventually(timeout: 15) { h.gateway.proxy.openConnections == 0 }, "every connection gave its budget back")
        #expect(await eventually(timeout: 15) { openDescriptors() <= before }, "sockets: \(before) before, \(openDescriptors()) after")
        #expect(await eventually { h.records().count >= 201 }, "one record per connection")
    }

    @Test func nonTLSBytesAreRefusedAsSuch() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try runCommand("curl", ["-sS", "--max-time", "20", "http://127.0.0.1:\(h.tlsPort)/"])
        #expect(result.status != 0)
        let record = try #require(h.record { $0["closeCause"] as? String == "invalid_client_hello" })
        #expect((record["reason"] as? String ?? "").hasPrefix("invalid ClientHello"))
    }
}
