import CorridorPolicy
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// Binds the NIO data-plane listeners: a tls or connect connection starts with an
/// ``InspectHandler``, an http one with the ``HTTPProxyPipeline``.
public enum Listeners {
    /// Binds the TLS passthrough (`passthrough`), CONNECT (`connect`) or plain-HTTP (`http`) listener.
    public static func bind(
        _ kind: ListenerKind,
        host: String,
        port: Int,
        group: any EventLoopGroup,
        proxy: ProxyContext
    ) async throws -> any Channel {
        if kind == .http {
            return try await bootstrap(group: group, name: "http", logger: proxy.logger)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try RelayBuffers.configure(channel, relayed: false)
                        try HTTPProxyPipeline.add(to: channel.pipeline.syncOperations, listenerName: "http", proxy: proxy,
                                                  countsConnection: true, position: .last)
                    }
                }
                .bind(host: host, port: port)
                .get()
        }
        let name = kind == .passthrough ? "tls" : "connect"
        let front: ConnectionStateMachine.Front = kind == .passthrough ? .tls : .connect
        return try await bootstrap(group: group, name: name, logger: proxy.logger)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try RelayBuffers.configure(channel, relayed: true)
                    try channel.pipeline.syncOperations.addHandler(InspectHandler(front: front, listenerName: name, proxy: proxy))
                }
            }
            .bind(host: host, port: port)
            .get()
    }

    static func bootstrap(group: any EventLoopGroup, name: String, logger: Logger) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Accepted sockets inherit TCP_NODELAY from the listener (Linux and the BSDs): one
            // setsockopt per connection fewer.
            .serverChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .backingOffFailedAccepts(listener: name, logger: logger)
    }
}
