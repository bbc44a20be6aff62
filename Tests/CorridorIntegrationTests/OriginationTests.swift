import Foundation
import Testing

/// The harness of the origination tests on its own (no gateway): the PKI verifies the way each
/// case needs it to, and the HTTPS upstream serves, records and requires client certificates.
/// These pass before the feature exists, so a failure below is the harness's, not the gateway's.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct OriginationHarnessSelfTests {
    @Test func pkiVerifiesAsEachCaseNeeds() throws {
        let dir = try TempDir()
        let pki = try OriginationPKI(in: dir)
        func verify(_ ca: String, _ cert: String, _ extra: [String] = []) throws -> CommandResult {
            try runCommand("openssl", ["verify", "-CAfile", ca] + extra + [cert])
        }
        #expect(try verify(pki.caCert, pki.serverCert, ["-verify_hostname", "billing.example.test"]).status == 0)
        #expect(try verify(pki.caCert, pki.serverCert, ["-verify_hostname", "other.example.test"]).status == 0)
        #expect(try verify(pki.clientCACert, pki.clientCert, ["-purpose", "sslclient"]).status == 0)
        #expect(try verify(pki.otherCACert, pki.serverCert).status != 0)
        let expired = try verify(pki.caCert, pki.expiredCert)
        #expect(expired.status != 0 && (expired.stdout + expired.stderr).contains("expired"))
        #expect(try verify(pki.caCert, pki.expiredCert, ["-no_check_time"]).status == 0, "only the dates are wrong")
        let mismatch = try verify(pki.caCert, pki.mismatchCert, ["-verify_hostname", "billing.example.test"])
        #expect(mismatch.status != 0 && (mismatch.stdout + mismatch.stderr).contains("hostname mismatch"))
        #expect(try verify(pki.caCert, pki.mismatchCert).status == 0, "only the name is wrong")
        let subject = try runCommand("openssl", ["x509", "-in", pki.clientCert, "-noout", "-subject"])
        #expect(subject.stdout.contains("CN = corridor-gateway") || subject.stdout.contains("CN=corridor-gateway"))
    }

    @Test func upstreamServesRoutesOverKeepAliveAndRecordsEachRequest() throws {
        let dir = try TempDir()
        let pki = try OriginationPKI(in: dir)
        let upstream = try HTTPSUpstream(dir: dir, cert: pki.serverCert, key: pki.serverKey)
        let base = "https://billing.example.test:\(upstream.port)"
        let resolve = ["--resolve", "billing.example.test:\(upstream.port):127.0.0.1", "--cacert", pki.caCert]
        let two = try runCommand("curl", ["-sS", "--max-time", "20"] + resolve + ["\(base)/x", "\(base)/y"])
        #expect(two.stdout == "ok /x\nok /y\n", "\(two.stderr)")
        let file = dir.path("up.bin")
        try runCommand("dd", ["if=/dev/urandom", "of=\(file)", "bs=1024", "count=3000"])
        let sink = try runCommand("curl", ["-sS", "--max-time", "20"] + resolve + ["-T", file, "\(base)/sink"])
        #expect(sink.stdout == "\(3000 * 1024) \(try sha256(ofFile: file))\n", "\(sink.stderr)")
        let chunked = try runCommand("curl", ["-sS", "--max-time", "20"] + resolve
                                     + ["-H", "Transfer-Encoding: chunked", "--data-binary", "@\(file)", "\(base)/sink"])
        #expect(chunked.stdout == sink.stdout)
        let size = try runCommand("curl", ["-sS", "--max-time", "20", "-o", dir.path("down.bin")] + resolve + ["\(base)/size/1000003"])
        #expect(size.status == 0)
        #expect(try sha256(ofFile: dir.path("down.bin")) == (try patternSHA256(1_000_003)))
        let tls12 = try runCommand("curl", ["-sS", "--max-time", "20", "--tls-max", "1.2"] + resolve + ["\(base)/v12"])
        #expect(tls12.stdout == "ok /v12\n")
        let log = upstream.requests
        #expect(log.count == 6, "\(log)")
        #expect(log.first?["sni"] as? String == "billing.example.test")
        #expect(log.first?["path"] as? String == "/x")
        #expect(log.first?["clientCert"] is NSNull)
        #expect(log.map { $0["method"] as? String ?? "" } == ["GET", "GET", "PUT", "POST", "GET", "GET"])
        #expect(log[2]["bodyBytes"] as? Int == 3000 * 1024)
        #expect(log.last?["tlsVersion"] as? String == "TLSv1.2")
    }

    @Test func upstreamWithClientCARequiresAClientCertificate() throws {
        let dir = try TempDir()
        let pki = try OriginationPKI(in: dir)
        let upstream = try HTTPSUpstream(dir: dir, cert: pki.serverCert, key: pki.serverKey, clientCA: pki.clientCACert)
        let resolve = ["--resolve", "billing.example.test:\(upstream.port):127.0.0.1", "--cacert", pki.caCert]
        let url = "https://billing.example.test:\(upstream.port)/m"
        let with = try runCommand("curl", ["-sS", "--max-time", "20", "--cert", pki.clientCert, "--key", pki.clientKey] + resolve + [url])
        #expect(with.stdout == "ok /m\n", "\(with.stderr)")
        let without = try runCommand("curl", ["-sS", "--max-time", "20"] + resolve + [url])
        #expect(without.status != 0)
        #expect(upstream.requests.count == 1)
        #expect(upstream.requests.first?["clientCert"] as? String == "corridor-gateway")
    }
}

/// TLS origination: plain HTTP in from the app, verified TLS out to the service.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct OriginationTests {
    @Test func absoluteFormViaCurlProxyReachesTheUpstreamOverTLS() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let result = try h.curlViaProxy("http://billing.example.test/x")
        #expect(result.status == 200, "\(result.clientError)")
        #expect(result.body == "ok /x\n", "the upstream is sent the origin form")
        let seen = try #require(h.upstream.requests.first)
        #expect(h.upstream.requests.count == 1)
        #expect(seen["method"] as? String == "GET")
        #expect(seen["path"] as? String == "/x")
        #expect(seen["host"] as? String == "billing.example.test")
    }

    @Test func originFormWithHostHeaderReachesTheUpstream() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let result = try h.curlOriginForm(path: "/x", host: "billing.example.test")
        #expect(result.status == 200, "\(result.clientError)")
        #expect(result.body == "ok /x\n")
        #expect(h.upstream.requests.count == 1)
        #expect(h.upstream.requests.first?["sni"] as? String == "billing.example.test")
    }

    @Test func pythonURLLibThroughProxyHandler() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let script = """
        import sys, urllib.request
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": "http://127.0.0.1:\(h.httpPort)"}))
        with opener.open("http://billing.example.test/x", timeout=20) as r:
            sys.stdout.write(f"{r.status} {r.read().decode()}")
        """
        let result = try runCommand("python3", ["-c", script], timeout: 40)
        #expect(result.stdout == "200 ok /x\n", "\(result.stderr)")
        #expect(h.upstream.requests.first?["path"] as? String == "/x")
    }

    @Test func upstreamSeesTLS12OrLaterAndTheHostAsSNI() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        _ = try h.curlViaProxy("http://billing.example.test/x")
        _ = try h.curlOriginForm(path: "/y", host: "billing.example.test")
        let seen = h.upstream.requests
        #expect(seen.count == 2)
        for request in seen {
            #expect(request["sni"] as? String == "billing.example.test")
            #expect(["TLSv1.2", "TLSv1.3"].contains(request["tlsVersion"] as? String ?? ""), "\(request)")
            #expect(request["clientCert"] is NSNull)
        }
    }

    @Test func upstreamLimitedToTLS12IsReachedWithTheDefaultMinimum() async throws {
        let h = try await OriginationHarness(upstreamMaxVersion: "TLSv1.2")
        defer { Task { await h.stop() } }
        let result = try h.curlViaProxy("http://billing.example.test/x")
        #expect(result.status == 200, "\(result.clientError)")
        #expect(h.upstream.requests.first?["tlsVersion"] as? String == "TLSv1.2")
    }

    @Test func minVersionTLS13RefusesAnUpstreamLimitedToTLS12() async throws {
        let h = try await OriginationHarness(upstreamMaxVersion: "TLSv1.2", configure: { o, _ in o.minVersion = "TLSv1.3" })
        defer { Task { await h.stop() } }
        let result = try h.curlViaProxy("http://billing.example.test/x")
        #expect(result.status == 502, "\(result.status) \(result.body) \(result.clientError)")
        #expect(result.reason != nil)
        #expect(h.upstream.requests.isEmpty)
    }

    @Test func minVersionTLS13IsUsedWhenTheUpstreamOffersIt() async throws {
        let h = try await OriginationHarness(configure: { o, _ in o.minVersion = "TLSv1.3" })
        defer { Task { await h.stop() } }
        let result = try h.curlViaProxy("http://billing.example.test/x")
        #expect(result.status == 200, "\(result.clientError)")
        #expect(h.upstream.requests.first?["tlsVersion"] as? String == "TLSv1.3")
    }

    @Test func sniOverrideIsSentInsteadOfTheHost() async throws {
        let h = try await OriginationHarness(configure: { o, _ in o.sni = "other.example.test" })
        defer { Task { await h.stop() } }
        let result = try h.curlViaProxy("http://billing.example.test/x")
        #expect(result.status == 200, "\(result.clientError)")
        let seen = try #require(h.upstream.requests.first)
        #expect(seen["sni"] as? String == "other.example.test")
        #expect(seen["host"] as? String == "billing.example.test", "the Host header is the app's")
    }

    @Test func absoluteFormOnTheConnectListenerIsOriginatedToo() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let result = try h.curlViaProxy("http://billing.example.test/x", port: h.connectPort)
        #expect(result.status == 200, "\(result.clientError)")
        #expect(result.body == "ok /x\n")
        let seen = try #require(h.upstream.requests.first)
        #expect(seen["sni"] as? String == "billing.example.test")
        #expect(["TLSv1.2", "TLSv1.3"].contains(seen["tlsVersion"] as? String ?? ""))
        let record = try #require(h.record { $0["host"] as? String == "billing.example.test" })
        #expect(record["listener"] as? String == "connect")
        #expect(record["decision"] as? String == "allow")
        #expect(record["status"] as? Int == 200)
    }

    @Test func absoluteFormOnTheConnectListenerKeepsItsConnectionForLaterRequests() async throws {
        // On the splice plane the connection is read there, then handed to NIO's HTTP path: the
        // same socket serves the next request.
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let session = try HTTPSession(port: h.connectPort)
        defer { session.close() }
        for path in ["/one", "/two", "/three"] {
            let result = try session.send("GET http://billing.example.test\(path) HTTP/1.1\r\nHost: billing.example.test\r\n\r\n")
            #expect(result.status == 200 && result.body == "ok \(path)\n", "\(result)")
        }
        #expect(await eventually { h.records().filter { $0["listener"] as? String == "connect" }.count == 3 })
        #expect(h.gateway.proxy.openConnections == 1, "one connection, admitted once, for the three requests")
    }

    @Test func unregisteredHostIsRefusedWith403PolicyDenied() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let result = try h.curlViaProxy("http://evil.example.test/x")
        #expect(result.status == 403, "\(result.clientError)")
        #expect(result.reason == "policy_denied")
        // The reason, then how to allow it: the same hint as the record's.
        let lines = result.body.split(separator: "\n").map(String.init)
        #expect(lines.count == 2 && lines[0] == "no ExternalService matches evil.example.test", "\(result.body)")
        let record = try #require(h.record { $0["host"] as? String == "evil.example.test" })
        #expect(lines.last == "to allow it: \(record["hint"] as? String ?? "?")")
        #expect((record["hint"] as? String ?? "").hasPrefix("register ExternalService evil-example-test for evil.example.test port 80/HTTP"))
        #expect(record["decision"] as? String == "deny")
        #expect(record["status"] as? Int == 403)
        try await Task.sleep(for: .milliseconds(200))
        #expect(h.upstream.requests.isEmpty)
    }

    @Test func everyRequestOnAKeepAliveConnectionIsJudged() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let result = try keepAliveExchange(port: h.httpPort, hosts: ["billing.example.test", "evil.example.test"])
        #expect(result.map(\.status) == [200, 403], "\(result)")
        #expect(result.last?.reason == "policy_denied")
        #expect(Set(result.map(\.localPort)).count == 1, "both requests went over one connection: \(result)")
        try await Task.sleep(for: .milliseconds(200))
        #expect(h.upstream.requests.count == 1, "\(h.upstream.requests)")
        #expect(h.upstream.requests.first?["host"] as? String == "billing.example.test")
        #expect(h.record { $0["host"] as? String == "evil.example.test" && $0["status"] as? Int == 403 } != nil)
        let lines = h.records()
        #expect(lines.count == 2, "one access line per request: \(lines)")
        #expect(lines.contains { $0["host"] as? String == "billing.example.test" && $0["status"] as? Int == 200 })
    }

    /// Upstream connections are pooled per workload: a server may tie state to a connection (NTLM
    /// and Negotiate authenticate the connection), so another workload's request never rides one.
    @Test func pooledUpstreamConnectionsServeOnlyTheWorkloadThatOpenedThem() async throws {
        let other = """
            apiVersion: corridor.dev/v1alpha1
            kind: Workload
            metadata: {name: other, namespace: shop}
            spec: {addresses: [127.0.0.2/32], serviceAccount: other, labels: {app: other}}
            """
        let h = try await OriginationHarness(workers: 1, moreServices: { _, _ in [other] })
        defer { Task { await h.stop() } }
        func fetch(_ extra: [String] = []) throws -> Int? {
            let result = try h.curlViaProxy("http://billing.example.test/x", extra: extra)
            #expect(result.status == 200, "\(result.status) \(result.body) \(result.clientError)")
            usleep(200_000)  // the connection goes back to the pool as the response ends
            return h.upstream.requests.last?["peerPort"] as? Int
        }
        let first = try fetch()
        let again = try fetch()
        let otherWorkload = try fetch(["--interface", "127.0.0.2"])
        #expect(first != nil && first == again, "the workload's second request reuses its connection")
        #expect(otherWorkload != nil && otherWorkload != first, "another workload gets a connection of its own")
        #expect(h.upstream.requests.count == 3)
    }

    @Test func keepAliveSwitchBetweenTwoAllowedServicesReachesEachWithItsOwnSNI() async throws {
        let h = try await OriginationHarness(moreServices: { pki, port in
            [originationService(name: "other", hosts: ["other.example.test"], originate: .init(port: port, trust: .caFile(pki.caCert)))]
        })
        defer { Task { await h.stop() } }
        let result = try keepAliveExchange(port: h.httpPort, hosts: ["billing.example.test", "other.example.test"])
        #expect(result.map(\.status) == [200, 200], "\(result)")
        #expect(Set(result.map(\.localPort)).count == 1)
        let seen = h.upstream.requests
        #expect(seen.map { $0["sni"] as? String ?? "" } == ["billing.example.test", "other.example.test"], "\(seen)")
        #expect(seen.map { $0["host"] as? String ?? "" } == ["billing.example.test", "other.example.test"])
        #expect(h.record { $0["host"] as? String == "other.example.test" }?["externalService"] as? String == "other")
    }

    @Test func clientThatHalfClosesGetsItsAnswerAndTheConnectionIsThenClosed() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        // The request, then FIN: the answer still comes back, and then the gateway closes its side
        // (a connection left in CLOSE-WAIT would hold a slot of maxConnections for ever).
        let script = """
        import socket, sys, time
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
        s.sendall(b"GET /x HTTP/1.1\\r\\nHost: billing.example.test\\r\\n\\r\\n")
        s.shutdown(socket.SHUT_WR)
        buf, start = b"", time.time()
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    print("EOF", round(time.time() - start, 1)); break
                buf += chunk
        except socket.timeout:
            print("NO-EOF")
        sys.stdout.write(buf.decode("latin-1"))
        """
        let result = try runCommand("python3", ["-c", script, "\(h.httpPort)"], timeout: 30)
        #expect(result.stdout.hasPrefix("EOF"), "\(result.stdout) \(result.stderr)")
        #expect(result.stdout.contains("HTTP/1.1 200"))
        #expect(result.stdout.hasSuffix("ok /x\n"))
    }

    @Test func connectionsAreClosedOnceCurlHasGone() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        _ = try h.curlViaProxy("http://billing.example.test/x")
        _ = try h.curlViaProxy("http://billing.example.test/sink", extra: ["--data-binary", "hello"])
        // No socket of the http listener may stay in CLOSE-WAIT once the clients have hung up.
        let closed = await eventually(timeout: 5) {
            let ss = (try? runCommand("ss", ["-Htn", "state", "close-wait", "sport", "= :\(h.httpPort)"]))?.stdout ?? ""
            return ss.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
        }
        #expect(closed, "\((try? runCommand("ss", ["-tn", "sport", "= :\(h.httpPort)"]))?.stdout ?? "")")
    }

    @Test func accessLogHasOneLinePerRequestWithMethodHostStatusAndPath() async throws {
        let h = try await OriginationHarness(includePath: true)
        defer { Task { await h.stop() } }
        _ = try h.curlViaProxy("http://billing.example.test/x")
        _ = try h.curlOriginForm(path: "/sink", host: "billing.example.test", extra: ["--data-binary", "hello"])
        _ = try h.curlViaProxy("http://evil.example.test/nope")
        #expect(await eventually { h.records().count >= 3 })
        try await Task.sleep(for: .milliseconds(300))
        let records = h.records()
        #expect(records.count == 3, "one line per request: \(records)")
        let get = try #require(records.first { $0["path"] as? String == "/x" })
        for key in ["time", "id", "src", "identity", "decision"] { #expect(get[key] != nil, "\(key) missing: \(get)") }
        #expect(get["listener"] as? String == "http")
        #expect(get["method"] as? String == "GET")
        #expect(get["host"] as? String == "billing.example.test")
        #expect(get["status"] as? Int == 200)
        #expect(get["decision"] as? String == "allow")
        #expect(get["externalService"] as? String == "billing")
        let post = try #require(records.first { $0["path"] as? String == "/sink" })
        #expect(post["method"] as? String == "POST")
        #expect(post["status"] as? Int == 200)
        let denied = try #require(records.first { $0["host"] as? String == "evil.example.test" })
        #expect(denied["path"] as? String == "/nope")
        #expect(denied["decision"] as? String == "deny")
        #expect(denied["status"] as? Int == 403)
    }

    @Test func accessLogLeavesThePathOutByDefault() async throws {
        let h = try await OriginationHarness(includePath: nil)
        defer { Task { await h.stop() } }
        _ = try h.curlViaProxy("http://billing.example.test/secret-token")
        let record = try #require(h.record { $0["host"] as? String == "billing.example.test" })
        #expect(record["method"] as? String == "GET")
        #expect(record["status"] as? Int == 200)
        #expect(record["path"] == nil, "\(record)")
        let text = (try? String(contentsOfFile: h.accessLogPath, encoding: .utf8)) ?? ""
        #expect(!text.contains("secret-token"))
    }

    @Test func accessLogLeavesThePathOutWhenIncludePathIsFalse() async throws {
        let h = try await OriginationHarness(includePath: false)
        defer { Task { await h.stop() } }
        _ = try h.curlOriginForm(path: "/secret-token", host: "billing.example.test")
        let record = try #require(h.record { $0["host"] as? String == "billing.example.test" })
        #expect(record["status"] as? Int == 200)
        #expect(record["path"] == nil, "\(record)")
    }
}

struct KeepAliveResponse: CustomStringConvertible {
    var status: Int
    var reason: String?
    var body: String
    var localPort: Int
    var description: String { "\(status) \(reason ?? "-") port \(localPort) \(body.debugDescription)" }
}

/// One Python http.client connection to the gateway, GET /x once per host with that Host header.
func keepAliveExchange(port: Int, hosts: [String]) throws -> [KeepAliveResponse] {
    let script = """
    import http.client, json, sys
    c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=20)
    out = []
    for host in sys.argv[2:]:
        c.request("GET", "/x", headers={"Host": host})
        local = c.sock.getsockname()[1]
        r = c.getresponse()
        body = r.read().decode("latin-1")
        out.append({"status": r.status, "reason": r.getheader("Corridor-Reason"), "body": body, "localPort": local})
    print(json.dumps(out))
    """
    let result = try runCommand("python3", ["-c", script, "\(port)"] + hosts, timeout: 60)
    guard let array = (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [[String: Any]] else {
        throw TestError.failed("http.client printed no JSON: \(result.stdout) \(result.stderr)")
    }
    return array.map {
        KeepAliveResponse(status: $0["status"] as? Int ?? 0, reason: $0["reason"] as? String,
                          body: $0["body"] as? String ?? "", localPort: $0["localPort"] as? Int ?? 0)
    }
}
