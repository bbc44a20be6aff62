import Foundation
import Testing

/// TLS origination streams bodies both ways: 200 MiB up and down byte-exact, and the gateway's
/// memory stays bounded while it does.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct OriginationLargeTransferTests {
    static let size = 200 << 20

    /// A file of `size` random bytes in `dir`.
    private func randomFile(in dir: TempDir) throws -> String {
        let path = dir.path("upload.bin")
        let result = try runCommand("dd", ["if=/dev/urandom", "of=\(path)", "bs=1048576", "count=\(Self.size >> 20)", "status=none"], timeout: 120)
        guard result.status == 0 else { throw TestError.failed("dd failed: \(result.stderr)") }
        return path
    }

    @Test func upload200MiBIsByteExact() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let file = try randomFile(in: h.dir)
        let expected = try sha256(ofFile: file)
        let result = try h.curlViaProxy("http://billing.example.test/sink", extra: ["-T", file], maxTime: 240)
        #expect(result.status == 200, "\(result.status) \(result.body) \(result.clientError)")
        #expect(result.body == "\(Self.size) \(expected)\n")
        let seen = try #require(h.upstream.requests.first)
        #expect(seen["method"] as? String == "PUT")
        #expect(seen["bodyBytes"] as? Int == Self.size)
        #expect(seen["bodySha256"] as? String == expected)
    }

    @Test func download200MiBIsByteExact() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let out = h.dir.path("download.bin")
        let result = try h.curlViaProxy("http://billing.example.test/size/\(Self.size)", maxTime: 240, output: out)
        #expect(result.status == 200, "\(result.status) \(result.clientError)")
        let attributes = try FileManager.default.attributesOfItem(atPath: out)
        #expect((attributes[.size] as? NSNumber)?.intValue == Self.size)
        #expect(try sha256(ofFile: out) == (try patternSHA256(Self.size)))
    }

    @Test func corridorBinaryStreams200MiBEachWayInBoundedMemory() async throws {
        let dir = try TempDir()
        let pki = try OriginationPKI(in: dir)
        let upstream = try HTTPSUpstream(dir: dir, cert: pki.serverCert, key: pki.serverKey)
        let config = dir.path("corridor.yaml")
        let service = originationService(name: "billing", hosts: ["billing.example.test"],
                                         originate: .init(port: upstream.port, trust: .caFile(pki.caCert)))
        try originationConfig(accessLog: dir.path("access.log"), includePath: true, services: [service])
            .write(toFile: config, atomically: true, encoding: .utf8)
        let gateway = try BackgroundProcess(Repo.corridorBinary.path, ["run", "--config", config, "--workers", "1"])
        let http = try #require(try originationListenerPorts(gateway)["http"])
        let pid = gateway.process.processIdentifier
        let baseline = try peakResidentBytes(pid: pid)

        let out = dir.path("download.bin")
        let down = try curlCapturing(["-x", "http://127.0.0.1:\(http)", "http://billing.example.test/size/\(Self.size)"],
                                     in: dir, maxTime: 240, output: out)
        #expect(down.status == 200, "\(down.status) \(down.clientError) \(gateway.stderrText.suffix(2000))")
        #expect(try sha256(ofFile: out) == (try patternSHA256(Self.size)))
        let afterDownload = try peakResidentBytes(pid: pid)
        try? FileManager.default.removeItem(atPath: out)

        let file = try randomFile(in: dir)
        let up = try curlCapturing(["-x", "http://127.0.0.1:\(http)", "-T", file, "http://billing.example.test/sink"], in: dir, maxTime: 240)
        #expect(up.status == 200, "\(up.status) \(up.clientError)")
        #expect(up.body == "\(Self.size) \(try sha256(ofFile: file))\n")
        let afterUpload = try peakResidentBytes(pid: pid)

        print("corridor VmHWM: at start \(baseline >> 10) KiB, after the 200 MiB download \(afterDownload >> 10) KiB, after the 200 MiB upload \(afterUpload >> 10) KiB")
        #expect(afterDownload < 150 << 20, "VmHWM after the download: \(afterDownload >> 20) MiB")
        #expect(afterUpload < 150 << 20, "VmHWM after the upload: \(afterUpload >> 20) MiB")
        gateway.signal(SIGTERM)
        _ = gateway.waitForExit(timeout: 5)  // killed at deinit if still draining
    }
}
