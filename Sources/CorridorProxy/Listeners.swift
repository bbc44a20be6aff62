import CorridorPolicy
import NIOCore
import NIOHTTP1
import NIOPosix
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Binds the data-plane listeners. Each accepted connection starts with an ``InspectHandler``.
///
/// With several event loops, every loop gets its own listening socket on the same address
/// (SO_REUSEPORT): the kernel spreads new connections over them, and each connection stays on the
/// loop that accepted it. One shared socket would make one loop accept everything and hand each
/// connection to another loop (a cross-thread task and wake-up per connection).
public enum Listeners {
    /// Binds the TLS passthrough listener (`passthrough`), the CONNECT listener (`connect`) or the
    /// plain-HTTP listener (`http`).
    public static func bind(
        _ mode: InspectHandlerMode,
        host: String,
        port: Int,
        group: any EventLoopGroup,
        proxy: ProxyContext
    ) async throws -> BoundListener {
        let loops = Array(group.makeIterator())
        let initializer = childInitializer(mode, proxy: proxy)
        guard loops.count > 1 else {
            return BoundListener(channels: [try await bootstrap(group: group).childChannelInitializer(initializer).bind(host: host, port: port).get()])
        }
        var channels: [any Channel] = []
        do {
            for loop in loops {
                // Port 0: the first socket picks the port, the others join it.
                let port = channels.first?.localAddress?.port ?? port
                channels.append(try await bootstrap(group: loop)
                    .serverChannelOption(ChannelOptions.Types.SocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_REUSEPORT)), value: 1)
                    .childChannelInitializer(initializer)
                    .bind(host: host, port: port)
                    .get())
            }
        } catch {
            for channel in channels { try? await channel.close() }
            throw error
        }
        return BoundListener(channels: channels)
    }

    private static func childInitializer(_ mode: InspectHandlerMode, proxy: ProxyContext) -> @Sendable (any Channel) -> EventLoopFuture<Void> {
        switch mode {
        case .http:
            return { channel in
                channel.eventLoop.makeCompletedFuture {
                    try RelayBuffers.configure(channel)
                    try HTTPProxyPipeline.add(to: channel.pipeline.syncOperations, listenerName: "http", proxy: proxy,
                                              countsConnection: true, position: .last)
                }
            }
        case .passthrough, .connect:
            let name = mode == .passthrough ? "tls" : "connect"
            let handlerMode: InspectHandler.Mode = mode == .passthrough ? .passthrough : .connect
            return { channel in
                channel.eventLoop.makeCompletedFuture {
                    try RelayBuffers.configure(channel)
                    try channel.pipeline.syncOperations.addHandler(InspectHandler(mode: handlerMode, listenerName: name, proxy: proxy))
                }
            }
        }
    }

    /// A server bootstrap on `group` whose children stay on the loop that accepted them.
    static func bootstrap(group: any EventLoopGroup) -> ServerBootstrap {
        ServerBootstrap(group: group, childGroup: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Accepted sockets inherit TCP_NODELAY from the listener (Linux and the BSDs): one
            // setsockopt per connection fewer.
            .serverChannelOption(.tcpOption(.tcp_nodelay), value: 1)
    }
}

/// A bound listener: one listening socket, or one per event loop sharing the address.
public struct BoundListener: Sendable {
    public let channels: [any Channel]

    public init(channels: [any Channel]) {
        self.channels = channels
    }

    /// The bound address (with the real port when 0 was asked for).
    public var localAddress: SocketAddress? { channels.first?.localAddress }

    /// Stops accepting on every socket; accepted connections go on.
    public func close() async {
        for channel in channels { try? await channel.close() }
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
