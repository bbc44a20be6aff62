import CorridorPolicy
import Logging
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
        let name = mode == .passthrough ? "tls" : "connect"
        let handlerMode: InspectHandler.Mode = mode == .passthrough ? .passthrough : .connect
        return try await bootstrap(group: group, name: name, logger: proxy.logger)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try RelayBuffers.configure(channel, relayed: true)
                    try channel.pipeline.syncOperations.addHandler(InspectHandler(mode: handlerMode, listenerName: name, proxy: proxy))
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

/// Receive buffers of relayed connections, and what an idle connection keeps of them.
///
/// NIO keeps a channel's receive buffers for reuse (up to `maxMessagesPerRead` of them), and an
/// idle relay would keep paying for them: about 1 KiB on each of its two channels, a third of
/// what an idle connection cost. Relayed channels therefore read with ``RelayRecvAllocator``:
/// NIO keeps the first buffer a channel reads into, and that one is 16 bytes; every later read
/// gets a fresh buffer sized by NIO's adaptive allocator (first 1 KiB, so a ClientHello or an
/// origin's first flight takes one read and one write), freed as soon as its bytes are written
/// on. Two reads per wake-up while a channel starts, so the 16-byte read costs one `read(2)` and
/// no extra wake-up; the relay then trims each channel to one kept buffer (see ``GlueHandler``).
/// A bulk transfer switches to NIO's reusing adaptive allocator, four buffers per wake-up.
enum RelayBuffers {
    /// Reads per wake-up while a channel starts: the 16-byte first read, then a full one.
    static let startingMessagesPerRead: UInt = 2
    /// Reads per wake-up of a relayed channel (and the buffers NIO keeps for it).
    static let maxMessagesPerRead: UInt = 1
    /// A read this large marks a bulk transfer (see ``GlueHandler``).
    static let bulkReadBytes = 16384
    static let bulkMaxMessagesPerRead: UInt = 4
    /// The reusing allocator of bulk transfers.
    static var bulkAllocator: AdaptiveRecvByteBufferAllocator { AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 65536, maximum: 65536) }
    /// NIO's adaptive sizes: 1 KiB first, between 64 B and 64 KiB. Plain-HTTP client connections
    /// (parsed by NIO's HTTP decoder, not relayed) read with it; ``RelayRecvAllocator`` follows
    /// the same rule (a test checks that it does).
    static var adaptiveAllocator: AdaptiveRecvByteBufferAllocator { AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 1024, maximum: 65536) }

    /// Sets a new channel's options directly (in its initializer, before it is registered): a
    /// bootstrap's option list costs a chain of futures and dynamic casts per connection.
    /// `relayed`: its bytes are relayed (``RelayRecvAllocator``, two reads per wake-up while it
    /// starts); else it is a plain-HTTP client connection.
    static func configure(_ channel: any Channel, relayed: Bool) throws {
        guard let options = channel.syncOptions else { return }
        try options.setOption(.allowRemoteHalfClosure, value: true)
        if relayed {
            try options.setOption(.maxMessagesPerRead, value: startingMessagesPerRead)
            try options.setOption(.recvAllocator, value: RelayRecvAllocator())
        } else {
            try options.setOption(.maxMessagesPerRead, value: maxMessagesPerRead)
            try options.setOption(.recvAllocator, value: adaptiveAllocator)
        }
    }
}

/// A receive allocator whose first buffer is 16 bytes and whose later buffers NIO never keeps:
/// NIO's buffer pool stores the first buffer it allocates for a channel, reuses a stored buffer
/// only when the allocator names a next size (`nextBufferSize()`; here nil) or says reads will
/// not grow (`record`; here always "may grow"), and stores later buffers only up to
/// `maxMessagesPerRead`. Later sizes follow NIO's adaptive rule (``RelayBuffers/adaptiveAllocator``:
/// 1 KiB first, powers of two from 64 B to 64 KiB, double after a read that fills the buffer,
/// halve after two reads in a row that fit in half of it), kept in three bytes: a channel stores
/// its allocator as an existential, and one over 24 bytes (NIO's is 48) costs a heap box per channel.
struct RelayRecvAllocator: RecvByteBufferAllocator {
    static let firstBufferBytes = 16
    static let minimumShift: UInt8 = 6  // 64 B
    static let initialShift: UInt8 = 10  // 1 KiB
    static let maximumShift: UInt8 = 16  // 64 KiB
    /// log2 of the next buffer's size, after the first.
    private(set) var shift = Self.initialShift
    private var first = true
    private var decreaseNow = false

    var nextAdaptiveSize: Int { 1 << Int(shift) }

    func buffer(allocator: ByteBufferAllocator) -> ByteBuffer {
        allocator.buffer(capacity: first ? Self.firstBufferBytes : nextAdaptiveSize)
    }

    func nextBufferSize() -> Int? { nil }

    mutating func record(actualReadBytes: Int) -> Bool {
        if first {
            first = false
            return true
        }
        let size = nextAdaptiveSize
        if actualReadBytes <= size >> 1 && shift > Self.minimumShift {
            if decreaseNow { shift -= 1 }
            decreaseNow.toggle()
        } else if actualReadBytes >= size && shift < Self.maximumShift {
            shift += 1
            decreaseNow = false
        } else {
            decreaseNow = false
        }
        return true
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
