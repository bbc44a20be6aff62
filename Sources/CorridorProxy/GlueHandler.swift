import CorridorPolicy
import NIOCore

/// One half of a relay: what this channel reads is written to the partner's channel (shown to the
/// ``RelaySession`` first while it inspects the relay).
///
/// Backpressure: a read is only asked for while the partner's channel is writable; when it stops
/// being writable the read waits and is issued when it becomes writable again. Half-close: when
/// this side's input ends (the peer shut its write side), the partner's output is shut, and the
/// other direction goes on until it ends too. Either way the partner is closed only once what was
/// written to it has gone out. Both halves live on the same event loop.
final class GlueHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    /// Whether this side reads several buffers per wake-up (after the first large read).
    private var bulk = false
    /// Whether this side is down to one read per wake-up (the client side at once, the upstream
    /// side after its first reads).
    private var trimmed = false
    private let session: RelaySession
    private let isClientSide: Bool
    /// The relay shut this side's output or began closing it.
    private var endedByRelay = false
    /// This side's peer ended what it sends (a FIN): a write to it that fails after that (a
    /// server that closed without waiting for the client's close_notify) ends the relay normally.
    private var inputEnded = false

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

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // The client's start (the ClientHello) is read: keep one receive buffer from now on.
        if isClientSide { keepOneReceiveBuffer(context) }
    }

    /// One read per wake-up, so NIO keeps one receive buffer for this channel (see ``RelayBuffers``).
    private func keepOneReceiveBuffer(_ context: ChannelHandlerContext) {
        trimmed = true
        try? context.channel.syncOptions?.setOption(.maxMessagesPerRead, value: RelayBuffers.maxMessagesPerRead)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    // MARK: calls from the partner

    private func partnerWrite(_ data: NIOAny) { context?.write(data, promise: nil) }
    private func partnerFlush() { context?.flush() }
    private func partnerWriteEOF() { closeAfterWrites(.output) }
    private func partnerCloseFull() {
        if session.endedByMachine {
            // The machine ended the relay (idle, revoked, refused, the gateway stopping) and gave its
            // admission slot back: nothing more is owed to this side, and its socket goes now, as
            // on the splice plane, not after writes a peer that stopped reading may never take.
            endedByRelay = true
            context?.close(promise: nil)
            return
        }
        closeAfterWrites(.all)
    }

    /// Closes this channel (`mode`) once what was written to it has gone out, so the tail of what
    /// the other side sent before it ended is not cut; within the relay's idle limit.
    private func closeAfterWrites(_ mode: CloseMode) {
        guard let context else { return }
        endedByRelay = true
        context.closeAfterWrites(mode, within: session.idleLimit)
    }
    private var partnerWritable: Bool { context?.channel.isWritable ?? false }

    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        let count = bytes.readableBytes
        session.count(bytes: count, fromClient: isClientSide, at: context.eventLoop.now)
        // At the start of a TLS handshake the session sees each read first, and may refuse it.
        if session.inspectsRelay, !session.passes(bytes, fromClient: isClientSide) { return }
        if !bulk && count >= RelayBuffers.bulkReadBytes {
            // A bulk transfer: read up to four buffers per wake-up from now on. Connections start
            // with one (NIO keeps that many receive buffers per channel, and idle ones pay for them).
            bulk = true
            trimmed = true
            try? context.channel.syncOptions?.setOption(.recvAllocator, value: RelayBuffers.bulkAllocator)
            try? context.channel.syncOptions?.setOption(.maxMessagesPerRead, value: RelayBuffers.bulkMaxMessagesPerRead)
        }
        partner?.partnerWrite(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !trimmed { keepOneReceiveBuffer(context) }
        partner?.partnerFlush()
    }

    /// The client's input ended before the relay started: the upstream's output is shut after
    /// what was written to it (the relay's prefix).
    func shutOutput() { closeAfterWrites(.output) }

    func channelInactive(context: ChannelHandlerContext) {
        // Going inactive with neither of those is its peer's failure (a reset, a write that
        // failed), which NIO does not always report through `errorCaught`.
        if !endedByRelay && !inputEnded { session.error(fromClient: isClientSide) }
        session.sideClosed(isClientSide: isClientSide)
        partner?.partnerCloseFull()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            inputEnded = true
            partner?.partnerWriteEOF()
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
