import NIOCore

/// Closes the connection when the ``IdleStateHandler`` before it reports that nothing was read for
/// its read timeout: a watch whose server went quiet ends instead of waiting for its own deadline.
final class CloseOnReadIdleHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
