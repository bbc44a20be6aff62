import NIOCore

/// One half of a relay: what this channel reads is written to the partner's channel.
///
/// Backpressure: a read is only asked for while the partner's channel is writable; when it stops
/// being writable the read waits and is issued when it becomes writable again. Half-close: when
/// this side's input ends (the peer shut its write side), the partner's output is shut, and the
/// other direction goes on until it ends too. Both halves live on the same event loop.
final class GlueHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private let session: RelaySession
    private let isClientSide: Bool

    private init(session: RelaySession, isClientSide: Bool) {
        self.session = session
        self.isClientSide = isClientSide
    }

    /// A linked pair: (client side, upstream side).
    static func matchedPair(session: RelaySession) -> (GlueHandler, GlueHandler) {
        let client = GlueHandler(session: session, isClientSide: true)
        let upstream = GlueHandler(session: session, isClientSide: false)
        client.partner = upstream
        upstream.partner = client
        return (client, upstream)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    // MARK: calls from the partner

    private func partnerWrite(_ data: NIOAny) { context?.write(data, promise: nil) }
    private func partnerFlush() { context?.flush() }
    private func partnerWriteEOF() { context?.close(mode: .output, promise: nil) }
    private func partnerCloseFull() { context?.close(promise: nil) }
    private var partnerWritable: Bool { context?.channel.isWritable ?? false }

    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let count = unwrapInboundIn(data).readableBytes
        session.count(bytes: count, fromClient: isClientSide)
        partner?.partnerWrite(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) { partner?.partnerFlush() }

    func channelInactive(context: ChannelHandlerContext) {
        session.sideClosed(isClientSide: isClientSide)
        partner?.partnerCloseFull()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            partner?.partnerWriteEOF()
        } else if event is IdleStateHandler.IdleStateEvent {
            session.idleTimedOut()
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        session.error(fromClient: isClientSide)
        context.close(promise: nil)
    }

    // MARK: outbound

    func read(context: ChannelHandlerContext) {
        if partner?.partnerWritable ?? false {
            context.read()
        } else {
            pendingRead = true
        }
    }
}

@available(*, unavailable)
extension GlueHandler: Sendable {}

/// The relay of one connection: byte counts both ways and the access record, written when both
/// sides have closed. Confined to the connection's event loop.
final class RelaySession {
    private let record: ConnectionRecord
    private let context: ProxyContext
    private var closedSides = 0
    private var cause: CloseCause = .completed

    init(record: ConnectionRecord, context: ProxyContext) {
        self.record = record
        self.context = context
    }

    func count(bytes: Int, fromClient: Bool) {
        if fromClient { record.bytesUp += bytes } else { record.bytesDown += bytes }
    }

    func idleTimedOut() { if cause == .completed { cause = .idleTimeout } }

    func error(fromClient: Bool) {
        if cause == .completed { cause = fromClient ? .clientError : .upstreamError }
    }

    func sideClosed(isClientSide: Bool) {
        closedSides += 1
        if closedSides == 2 { record.finish(cause, log: context.accessLog, metrics: context.metrics) }
    }
}

@available(*, unavailable)
extension RelaySession: Sendable {}
