import Glibc
import NIOCore
import NIOPosix
import Testing

@testable import CorridorProxy

/// The data-plane listener over real sockets: one listening socket per event loop on the same
/// address (SO_REUSEPORT), every one of them serving connections.
@Suite(.timeLimit(.minutes(1)))
struct ListenerTests {
    @Test func oneSocketPerEventLoopSharesTheAddressAndServes() async throws {
        let harness = try ProxyHarness()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let listener = try await Listeners.bind(.passthrough, host: "127.0.0.1", port: 0, group: group, proxy: harness.proxy)
        #expect(listener.channels.count == 2)
        let port = try #require(listener.localAddress?.port)
        #expect(port != 0)
        #expect(listener.channels.allSatisfy { $0.localAddress?.port == port })
        #expect(Set(listener.channels.map { ObjectIdentifier($0.eventLoop) }).count == 2, "each socket on its own loop")
        for channel in listener.channels {
            let reusePort = ChannelOptions.Types.SocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_REUSEPORT))
            #expect(try await channel.getOption(reusePort).get() != 0)
        }

        // Denied ClientHellos from 24 connections (spread over both sockets by the kernel's hash):
        // every one gets the access-denied alert and one record.
        let hello = ClientHelloBuilder(serverName: "evil.test").record
        for _ in 0..<24 {
            #expect(try Self.exchange(port: port, send: hello) == accessDeniedAlert)
        }
        #expect(try harness.records().count == 24)

        await listener.close()
        try await group.shutdownGracefully()
    }

    /// Connects to 127.0.0.1:`port`, sends `send`, returns everything read until the server closes.
    static func exchange(port: Int, send: [UInt8]) throws -> [UInt8] {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(connected == 0)
        try #require(send.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) } == send.count)
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            received += chunk[0..<n]
        }
        return received
    }
}
