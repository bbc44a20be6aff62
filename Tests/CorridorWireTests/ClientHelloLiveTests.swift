import CorridorWire
import Foundation
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs real TLS clients against a plain TCP listener on 127.0.0.1 and parses what they send.
enum LiveTLS {
    /// The path of `tool` in the usual binary folders, if it is installed.
    static func find(_ tool: String) -> String? {
        ["/usr/bin", "/usr/local/bin", "/bin", "/opt/homebrew/bin"]
            .map { "\($0)/\(tool)" }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// A listening TCP socket on 127.0.0.1, port chosen by the kernel.
    struct Listener: ~Copyable {
        let fd: Int32
        let port: UInt16

        init() throws {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw POSIXError(.EIO) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = 0
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                    bind(fd, raw, length) == 0 && listen(fd, 1) == 0 && getsockname(fd, raw, &length) == 0
                }
            }
            guard ok else {
                close(fd)
                throw POSIXError(.EADDRINUSE)
            }
            self.fd = fd
            self.port = UInt16(bigEndian: address.sin_port)
        }

        deinit { close(fd) }

        /// Accepts one connection and reads until `parser` decides or `deadline` passes.
        func acceptAndParse(deadline: ContinuousClock.Instant) -> ClientHelloParser.Outcome {
            guard Self.wait(for: fd, until: deadline) else { return .needMoreData }
            let connection = accept(fd, nil, nil)
            guard connection >= 0 else { return .needMoreData }
            defer { close(connection) }
            var parser = ClientHelloParser()
            var received = ByteBuffer()
            var chunk = [UInt8](repeating: 0, count: 4096)
            while Self.wait(for: connection, until: deadline) {
                let count = chunk.withUnsafeMutableBytes { read(connection, $0.baseAddress, $0.count) }
                guard count > 0 else { break }
                received.writeBytes(chunk[0..<count])
                let outcome = parser.parse(received)
                if outcome != .needMoreData { return outcome }
            }
            return .needMoreData
        }

        /// Polls `fd` for readability until `deadline`.
        private static func wait(for fd: Int32, until deadline: ContinuousClock.Instant) -> Bool {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { return false }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000)
            return poll(&entry, 1, max(milliseconds, 1)) == 1
        }
    }

    /// Starts `tool` with `arguments`, parses the first bytes it sends, then kills it.
    static func capture(tool: String, arguments: (UInt16) -> [String]) throws -> ClientHelloParser.Outcome {
        let path = try #require(find(tool))
        let listener = try Listener()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments(listener.port)
        let stdin = Pipe()
        process.standardInput = stdin
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            if process.isRunning { process.terminate() }
            try? stdin.fileHandleForWriting.close()
            process.waitUntilExit()
        }
        return listener.acceptAndParse(deadline: .now + .seconds(20))
    }
}

@Suite(.timeLimit(.minutes(1)))
struct ClientHelloLiveTests {
    @Test(.enabled(if: LiveTLS.find("openssl") != nil))
    func opensslSClient() throws {
        let outcome = try LiveTLS.capture(tool: "openssl") { port in
            ["s_client", "-connect", "127.0.0.1:\(port)", "-servername", "Live.Allowed.Test", "-alpn", "h2,http/1.1"]
        }
        let info = try #require(outcome.info, "\(outcome)")
        #expect(info.serverName == "live.allowed.test")
        #expect(info.alpn == ["h2", "http/1.1"])
        #expect(info.supportedVersions.contains(0x0304))
    }

    @Test(.enabled(if: LiveTLS.find("openssl") != nil))
    func opensslSClientWithoutSNIIsNoSNI() throws {
        // An IP address as the connect target and -noservername: no server_name extension.
        let outcome = try LiveTLS.capture(tool: "openssl") { port in
            ["s_client", "-connect", "127.0.0.1:\(port)", "-noservername"]
        }
        #expect(outcome.rejection == .noSNI, "\(outcome)")
    }

    @Test(.enabled(if: LiveTLS.find("curl") != nil))
    func curl() throws {
        let outcome = try LiveTLS.capture(tool: "curl") { port in
            ["-sk", "--max-time", "20", "https://curl.allowed.test:\(port)/", "--resolve", "curl.allowed.test:\(port):127.0.0.1"]
        }
        let info = try #require(outcome.info, "\(outcome)")
        #expect(info.serverName == "curl.allowed.test")
    }
}
