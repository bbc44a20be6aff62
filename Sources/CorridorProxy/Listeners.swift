import CorridorPolicy
import NIOCore
import NIOPosix

/// Binds the data-plane listeners. Each accepted connection starts with an ``InspectHandler``.
public enum Listeners {
    /// Binds the TLS passthrough listener (`passthrough`) or the CONNECT listener (`connect`).
    public static func bind(
        _ mode: InspectHandlerMode,
        host: String,
        port: Int,
        group: any EventLoopGroup,
        proxy: ProxyContext
    ) async throws -> any Channel {
        let name = mode == .passthrough ? "tls" : "connect"
        let handlerMode: InspectHandler.Mode = mode == .passthrough ? .passthrough : .connect
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.maxMessagesPerRead, value: 4)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(InspectHandler(mode: handlerMode, listenerName: name, proxy: proxy))
                }
            }
            .bind(host: host, port: port)
            .get()
    }
}

/// Which kind of data-plane listener to bind.
public enum InspectHandlerMode: Sendable {
    case passthrough
    case connect
}
