import Foundation
import Testing

/// The explicit CONNECT listener over real sockets.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct ConnectTests {
    @Test func curlThroughConnectReachesUpstreamByteExact() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let size = 4 << 20
        let file = h.dir.path("download.bin")
        let result = try h.curlViaConnect("https://api.allowed.test:\(h.upstream.port)/size/\(size)", extra: ["-o", file])
        #expect(result.status == 0, "curl: \(result.stderr)")
        let data = try Data(contentsOf: URL(fileURLWithPath: file))
        #expect(data.count == size)
        #expect(data == expectedPattern(size))
        let record = try #require(h.record { $0["connectHost"] as? String == "api.allowed.test" })
        #expect(record["listener"] as? String == "connect")
        #expect(record["sni"] as? String == "api.allowed.test")
        #expect(record["decision"] as? String == "allow")
        #expect((record["bytesDown"] as? Int ?? 0) > size)
    }

    @Test func deniedHostGets403WithTheReason() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try runCommand("curl", ["-sS", "--max-time", "20", "-v", "-k", "-x", "http://127.0.0.1:\(h.connectPort)",
                                             "https://evil.test:\(h.upstream.port)/"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("403"), "curl: \(result.stderr)")
        let record = try #require(h.record { $0["connectHost"] as? String == "evil.test" })
        #expect(record["decision"] as? String == "deny")
        #expect(record["reason"] as? String == "no ExternalService matches evil.test")
        #expect(h.upstream.acceptedNames.isEmpty)
    }

    @Test func connectToAnAllowedHostWithAnotherSNIIsDeniedAndNotTunnelled() async throws {
        // Squid's peek/splice checks the SNI and then tunnels to the CONNECT host anyway; Corridor must not.
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try h.pythonClient(["--port", "\(h.connectPort)", "--connect", "evil.test:\(h.upstream.port)",
                                         "--sni", "api.allowed.test"])
        #expect(result["error"] != nil)
        let mismatch = try h.pythonClient(["--port", "\(h.connectPort)", "--connect", "api.allowed.test:\(h.upstream.port)",
                                           "--sni", "second.allowed.test"])
        #expect(mismatch["error"] != nil)
        let record = try #require(h.record { $0["connectHost"] as? String == "api.allowed.test" })
        #expect(record["decision"] as? String == "deny")
        #expect(record["reason"] as? String == "SNI second.allowed.test does not match CONNECT host api.allowed.test")
        #expect(h.upstream.acceptedNames.isEmpty)
    }

    @Test func clientHelloInTheSameWriteAsConnectIsHandled() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try h.pythonClient(["--port", "\(h.connectPort)", "--connect", "api.allowed.test:\(h.upstream.port)",
                                         "--sni", "api.allowed.test", "--pipelined", "--bytes", "65536"])
        #expect(result["error"] == nil, "\(result)")
        #expect(result["receivedHash"] as? String == result["sentHash"] as? String)
    }

    @Test func plainBytesInsideTheTunnelAreDenied() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try runCommand("curl", ["-sS", "--max-time", "20", "-p", "-x", "http://127.0.0.1:\(h.connectPort)",
                                             "http://api.allowed.test:\(h.upstream.port)/"])
        #expect(result.status != 0)
        let record = try #require(h.record { $0["connectHost"] as? String == "api.allowed.test" })
        #expect(record["decision"] as? String == "deny")
        #expect(record["closeCause"] as? String == "invalid_client_hello")
        #expect(h.upstream.acceptedNames.isEmpty)
    }

    @Test(arguments: ["127.0.0.1:443", "2130706433:443", "0x7f000001:443", "[::1]:443", "api.allowed.test:0", "api.allowed.test:65979",
                      "user@api.allowed.test:443"])
    func invalidTargetsGet4xxAndTheGatewayCarriesOn(target: String) async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let head = try rawExchange(port: h.connectPort, send: "CONNECT \(target) HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(head.hasPrefix("HTTP/1.1 4"), "got: \(head)")
        let ok = try h.curlViaConnect("https://api.allowed.test:\(h.upstream.port)/")
        #expect(ok.stdout == "ok\n")
    }

    @Test func oversizeHeadGets4xx() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let head = try rawExchange(port: h.connectPort, send: "CONNECT " + String(repeating: "a", count: 20000) + ".test:443 HTTP/1.1\r\n\r\n")
        #expect(head.hasPrefix("HTTP/1.1 4"), "got: \(head)")
    }
}

/// Sends `text` on a new connection to 127.0.0.1:`port` and returns what comes back until close.
func rawExchange(port: Int, send text: String) throws -> String {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw TestError.failed("connect failed") }
    let bytes = Array(text.utf8)
    _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    var received = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 { break }
        received += buffer[0..<n]
    }
    return String(decoding: received, as: UTF8.self)
}

/// The bytes tls_upstream.py serves for /size/N.
func expectedPattern(_ n: Int) -> Data {
    let block = (0..<65536).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) }
    var data = Data(capacity: n)
    while data.count + block.count <= n { data.append(contentsOf: block) }
    data.append(contentsOf: block[0..<(n - data.count)])
    return data
}
