import NIOPosix
import NIOCore
import NIOHTTP1

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
        // The handler frames each response itself: it knows the request's method (no body after a
        // HEAD) and version (nothing chunked for HTTP/1.0), which this encoder is not told.
        var encoding = HTTPResponseEncoder.Configuration()
        encoding.automaticallySetFramingHeaders = false
        let handlers: [any ChannelHandler] = [
            HTTPResponseEncoder(configuration: encoding),
            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes, limitConfiguration: limits)),
            HTTPProxyHandler(listenerName: listenerName, proxy: proxy, countsConnection: countsConnection),
        ]
        try pipeline.addHandlers(handlers, position: position)
    }
}

extension HTTPProxyPipeline {
    /// Makes a NIO channel of `socket`, a connection accepted and read by the splice plane's
    /// connect listener whose first request is absolute-form plain HTTP: `bytes` (what was read)
    /// reach the HTTP path first, and the connection's admission `slot` is given back when it
    /// closes. A connection that cannot be adopted is closed and recorded (`internal_error`).
    static func adopt(_ socket: NIOBSDSocket.Handle, source: SocketAddress?, bytes: ByteBuffer, slot: AdmissionSlot, listenerName: String,
                      proxy: ProxyContext, group: any EventLoopGroup) {
        let bootstrap = ClientBootstrap(group: group.next())
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try RelayBuffers.configure(channel, relayed: false)
                    try channel.pipeline.syncOperations.addHandler(HandOverBytesHandler(bytes: bytes))
                    try add(to: channel.pipeline.syncOperations, listenerName: listenerName, proxy: proxy, countsConnection: false,
                            position: .last)
                }
            }
        // NIO owns the descriptor from here: it closes it with the channel, or when it cannot make one.
        let adopted = bootstrap.withConnectedSocket(socket)
        adopted.whenComplete { result in
            switch result {
            case .success(let channel):
                channel.closeFuture.whenComplete { _ in proxy.release(slot) }
            case .failure(let error):
                recordFailedHandOver(source: source, listenerName: listenerName, proxy: proxy, error: error)
                proxy.release(slot)
            }
        }
    }

    /// A connection whose record was handed over with it, closed because the HTTP path could not
    /// take it: it still leaves a record (cause `internal_error`) and an error in the log.
    static func recordFailedHandOver(source: SocketAddress?, listenerName: String, proxy: ProxyContext, error: any Error) {
        proxy.logger.error("cannot hand a plain-HTTP connection to the HTTP path: \(error)")
        let snapshot = proxy.policy.current
        let record = ConnectionRecord(id: proxy.makeConnectionID(), listener: listenerName, source: source)
        record.identity = record.sourceAddress.flatMap { snapshot.inventory.identity(of: $0) }
        record.policyGeneration = snapshot.generation
        proxy.metrics.connectionOpened()
        record.finish(.internalError, log: proxy.accessLog, metrics: proxy.metrics,
                      reason: "the plain-HTTP connection could not be handed to the HTTP path: \(error)")
    }
}
