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
        let handlers: [any ChannelHandler] = [
            HTTPResponseEncoder(),
            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes, limitConfiguration: limits)),
            HTTPServerPipelineHandler(),
            HTTPProxyHandler(listenerName: listenerName, proxy: proxy, countsConnection: countsConnection),
        ]
        try pipeline.addHandlers(handlers, position: position)
    }
}
