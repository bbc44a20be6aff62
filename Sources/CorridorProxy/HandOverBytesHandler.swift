import NIOCore

/// Feeds the bytes another driver read before it gave the connection to NIO (a plain-HTTP request
/// read on the splice plane's connect listener) to the pipeline as its first read, right after
/// the channel becomes active, then leaves the pipeline.
final class HandOverBytesHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var bytes: ByteBuffer?

    init(bytes: ByteBuffer) {
        self.bytes = bytes
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        if let bytes {
            self.bytes = nil
            context.fireChannelRead(wrapInboundOut(bytes))
            context.fireChannelReadComplete()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

@available(*, unavailable)
extension HandOverBytesHandler: Sendable {}
