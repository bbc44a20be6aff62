import Logging
import CorridorPolicy
import NIOCore
import NIOPosix
import Testing

@testable import CorridorProxy

/// Addresses read from and written to socket-address bytes (no text round trip per connection),
/// and the socket options accepted connections inherit from the listener.
@Suite(.timeLimit(.minutes(1)))
struct SocketAddressTests {
    @Test func ipAddressFromSocketAddressBytes() throws {
        #expect(IPAddress(try SocketAddress(ipAddress: "192.0.2.7", port: 443)) == IPAddress(parsing: "192.0.2.7"))
        #expect(IPAddress(try SocketAddress(ipAddress: "2001:db8::1", port: 443)) == IPAddress(parsing: "2001:db8::1"))
        // A dual-stack listener's IPv4 client stays mapped (as the kernel reports it); `unmapped` gives the IPv4 address.
        let mapped = try #require(IPAddress(try SocketAddress(ipAddress: "::ffff:10.1.2.3", port: 1)))
        #expect(mapped == IPAddress(parsing: "::ffff:10.1.2.3"))
        #expect(!mapped.isIPv4)
        #expect(mapped.unmapped == IPAddress(parsing: "10.1.2.3"))
        #expect(IPAddress(parsing: "::1")!.unmapped == IPAddress(parsing: "::1"))
        #expect(IPAddress(try SocketAddress(unixDomainSocketPath: "/tmp/x")) == nil)
    }

    @Test func hostPortAsLogsPrintIt() throws {
        #expect(try SocketAddress(ipAddress: "192.0.2.7", port: 443).hostPort == "192.0.2.7:443")
        #expect(try SocketAddress(ipAddress: "2001:db8::1", port: 8443).hostPort == "[2001:db8::1]:8443")
        #expect(try SocketAddress(ipAddress: "::ffff:10.1.2.3", port: 5).hostPort == "10.1.2.3:5")
        #expect(try SocketAddress(ipAddress: "::", port: 0).hostPort == "[::]:0")
    }

    @Test func socketAddressFromIPAddressBytes() throws {
        for (text, port) in [("192.0.2.7", 443), ("2001:db8::1:2", 65535), ("::ffff:10.1.2.3", 1), ("0.0.0.0", 0)] {
            let ip = try #require(IPAddress(parsing: text))
            let built = try ip.socketAddress(port: port)
            let parsed = try SocketAddress(ipAddress: text, port: port)
            #expect(built.port == port)
            #expect(IPAddress(built) == ip)
            #expect(built.ipAddress == parsed.ipAddress, "\(text)")
        }
        #expect(throws: InvalidPortError.self) { try IPAddress.v4(1).socketAddress(port: 65536) }
        #expect(throws: InvalidPortError.self) { try IPAddress.v4(1).socketAddress(port: -1) }
    }

    /// The listener sets TCP_NODELAY once; every accepted connection must have it (Nagle would
    /// hold back small TLS records of a relay).
    @Test func acceptedConnectionsInheritNoDelayFromTheListener() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let accepted = group.next().makePromise(of: SocketOptionValue.self)
        let server = try await Listeners.bootstrap(group: group, name: "test", logger: Logger(label: "test"))
            .childChannelInitializer { channel in
                accepted.completeWith(channel.getOption(.tcpOption(.tcp_nodelay)))
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let client = try await ClientBootstrap(group: group).connect(to: server.localAddress!).get()
        #expect(try await accepted.futureResult.get() != 0)
        try await client.close()
        try await server.close()
        try await group.shutdownGracefully()
    }
}
