import CorridorPolicy
import NIOCore
import NIOHTTP1
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
        if mode == .http {
            return try await bootstrap(group: group)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try RelayBuffers.configure(channel)
                        try HTTPProxyPipeline.add(to: channel.pipeline.syncOperations, listenerName: "http", proxy: proxy,
                                                  countsConnection: true, position: .last)
                    }
                }
                .bind(host: host, port: port)
                .get()
        }
        let name = mode == .passthrough ? "tls" : "connect"
        let handlerMode: InspectHandler.Mode = mode == .passthrough ? .passthrough : .connect
        return try await bootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try RelayBuffers.configure(channel)
                    try channel.pipeline.syncOperations.addHandler(InspectHandler(mode: handlerMode, listenerName: name, proxy: proxy))
                }
            }
            .bind(host: host, port: port)
            .get()
    }

    static func bootstrap(group: any EventLoopGroup) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Accepted sockets inherit TCP_NODELAY from the listener (Linux and the BSDs): one
            // setsockopt per connection fewer.
            .serverChannelOption(.tcpOption(.tcp_nodelay), value: 1)
    }
}

/// Receive buffers of relayed connections. NIO keeps a channel's receive buffers for reuse (up to
/// `maxMessagesPerRead` of them), so an idle connection keeps paying for them: one per channel
/// until a bulk transfer shows. The first buffer is 1 KiB: a ClientHello (517 B from OpenSSL 3
/// clients) or an origin's first flight (657 B from the bench origin) then takes one read and one
/// write, where 512 B took two of each and grew the kept buffer to 1 KiB anyway (strace: 11 ->
/// 9 reads and 9 -> 8 writes per connection; the same 7.2 KiB per idle connection at 1,000).
/// Smaller first buffers do not pay: below 512 NIO's adaptive allocator grows in 64-byte steps,
/// so a handshake takes several reads (at 256 B a full run cost 4.42 s of CPU per 10k
/// connections against 3.42 at 512).
enum RelayBuffers {
    static let maxMessagesPerRead: UInt = 1
    /// A read this large marks a bulk transfer (see ``GlueHandler``).
    static let bulkReadBytes = 16384
    static let bulkMaxMessagesPerRead: UInt = 4
    static var allocator: AdaptiveRecvByteBufferAllocator { AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 1024, maximum: 65536) }

    /// Sets a new channel's relay options directly (in its initializer, before it is registered):
    /// a bootstrap's option list costs a chain of futures and dynamic casts per connection.
    static func configure(_ channel: any Channel) throws {
        guard let options = channel.syncOptions else { return }
        try options.setOption(.allowRemoteHalfClosure, value: true)
        try options.setOption(.maxMessagesPerRead, value: maxMessagesPerRead)
        try options.setOption(.recvAllocator, value: allocator)
    }
}

/// The handlers of a plain-HTTP connection (the http listener, or a CONNECT-listener connection
/// whose first request is absolute-form plain HTTP).
enum HTTPProxyPipeline {
    /// Request heads over 64 KiB in all are refused with 400.
    static let maxHeaderBytes = 64 * 1024

    static func add(to pipeline: ChannelPipeline.SynchronousOperations, listenerName: String, proxy: ProxyContext,
                    countsConnection: Bool, position: ChannelPipeline.SynchronousOperations.Position) throws {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = maxHeaderBytes
        limits.maxHeaderListSize = maxHeaderBytes
        let handlers: [any ChannelHandler] = [
            HTTPResponseEncoder(),
            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes, limitConfiguration: limits)),
            HTTPServerPipelineHandler(),
            HTTPProxyHandler(listenerName: listenerName, proxy: proxy, countsConnection: countsConnection),
        ]
        try pipeline.addHandlers(handlers, position: position)
    }
}

/// Which kind of data-plane listener to bind.
public enum InspectHandlerMode: Sendable {
    case passthrough
    case connect
    /// Plain HTTP, originated over TLS.
    case http
}
