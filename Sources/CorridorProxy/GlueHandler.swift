import CorridorPolicy
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
    /// Whether this side reads several buffers per wake-up (after the first large read).
    private var bulk = false
    /// Whether this side is down to one read per wake-up (the client side at once, the upstream
    /// side after its first reads).
    private var trimmed = false
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
        session.count(bytes: count, fromClient: isClientSide, at: context.eventLoop.now)
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

    func channelInactive(context: ChannelHandlerContext) {
        session.sideClosed(isClientSide: isClientSide)
        partner?.partnerCloseFull()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
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

/// The relay of one connection: byte counts both ways, the last time a byte moved, and the access
/// record, written when both sides have closed. Confined to the connection's event loop.
final class RelaySession {
    private let record: ConnectionRecord
    private let context: ProxyContext
    private var closedSides = 0
    private var cause: CloseCause = .completed
    /// No byte either way for this long closes the relay (`spec.limits.idleTimeout`).
    let idleLimit: TimeAmount
    private(set) var lastActivity: NIODeadline
    /// Set while an ``IdleSweeper`` watches the relay: the client channel to close when idle.
    var clientChannel: (any Channel)?
    weak var sweeper: IdleSweeper?
    /// Where the sweeper keeps this session (its index in the sweeper's ``SlotList``).
    fileprivate var sweepSlot = -1

    init(record: ConnectionRecord, context: ProxyContext, idleLimit: TimeAmount = .hours(1), now: NIODeadline = .now()) {
        self.record = record
        self.context = context
        self.idleLimit = idleLimit
        self.lastActivity = now
    }

    func count(bytes: Int, fromClient: Bool, at now: NIODeadline) {
        if fromClient { record.bytesUp += bytes } else { record.bytesDown += bytes }
        lastActivity = now
    }

    func isIdle(at now: NIODeadline) -> Bool { now - lastActivity >= idleLimit }

    /// Writes an interim record when one is due (`logging.accessLog.interimInterval`).
    func writeInterimIfDue(at now: ContinuousClock.Instant) {
        guard closedSides == 0, let flows = context.accessLog.flows, flows.interimDue(record, at: now) else { return }
        record.interims += 1
        context.accessLog.writeInterim(record)
    }

    /// Closes the relay as idle: the client side closes, and its glue closes the upstream side.
    func closeForIdle() {
        if cause == .completed { cause = .idleTimeout }
        clientChannel?.close(promise: nil)
    }

    /// Closes the relay if `snapshot` no longer allows it (`spec.reload.liveConnections: Recheck`).
    func recheck(against snapshot: PolicySnapshot) {
        guard closedSides == 0, record.revoked(by: snapshot) else { return }
        cause = .policyRevoked
        clientChannel?.close(promise: nil)
    }

    func error(fromClient: Bool) {
        if cause == .completed { cause = fromClient ? .clientError : .upstreamError }
    }

    func sideClosed(isClientSide: Bool) {
        closedSides += 1
        if closedSides == 2 {
            sweeper?.remove(self)
            clientChannel = nil
            record.finish(cause, log: context.accessLog, metrics: context.metrics)
        }
    }
}

/// The relays of one event loop. Closes those that moved no byte for their idle limit (one sweep
/// a second, only while it has relays, instead of a timer and a pipeline handler per connection),
/// and decides them all again after a policy change when live connections are rechecked.
final class IdleSweeper {
    static let interval: TimeAmount = .seconds(1)
    private let eventLoop: any EventLoop
    /// The relays watched.
    private var sessions = SlotList<RelaySession>(slot: \.sweepSlot)
    private var scheduled: Scheduled<Void>?

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    var count: Int { sessions.count }

    func add(_ session: RelaySession) {
        guard session.sweeper == nil else { return }
        session.sweeper = self
        sessions.insert(session)
        scheduleIfNeeded()
    }

    func remove(_ session: RelaySession) {
        guard session.sweeper === self else { return }
        sessions.remove(session)
        session.sweeper = nil
    }

    private func scheduleIfNeeded() {
        guard scheduled == nil, !sessions.isEmpty else { return }
        scheduled = eventLoop.assumeIsolated().scheduleTask(in: Self.interval) { [weak self] in
            guard let self else { return }
            self.scheduled = nil
            self.sweep()
            self.scheduleIfNeeded()
        }
    }

    func recheck(against snapshot: PolicySnapshot) {
        for session in sessions.items { session.recheck(against: snapshot) }
    }

    func sweep() {
        let now = eventLoop.now
        // Closing may remove sessions from the array (a close can complete at once): walk a copy.
        let clock = ContinuousClock.now
        for session in sessions.items {
            if session.isIdle(at: now) { session.closeForIdle() } else { session.writeInterimIfDue(at: clock) }
        }
    }
}

@available(*, unavailable)
extension IdleSweeper: Sendable {}

@available(*, unavailable)
extension RelaySession: Sendable {}
