import CorridorPolicy
import CorridorWire
import NIOCore

/// The NIO plane's driver of a tls or connect connection until it relays: it feeds what the
/// client's channel does to the connection's ``ConnectionStateMachine`` and does what the machine
/// answers (writes replies, resolves, dials with the event loop's bootstrap, arms the machine's
/// deadline as a timer). When the machine says relay, the machine moves to a ``RelaySession``
/// between a ``GlueHandler`` pair and this handler leaves the pipeline; when it says plain HTTP,
/// the ``HTTPProxyPipeline`` takes its place.
///
/// Time for the machine is the event loop's clock (so a test's embedded loop drives it), as
/// `ContinuousClock` instants counted from when the connection became active.
final class InspectHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let front: ConnectionStateMachine.Front
    private let listenerName: String
    private let proxy: ProxyContext
    /// Until the relay starts (then the ``RelaySession`` holds it).
    private var machine: ConnectionStateMachine?
    private var context: ChannelHandlerContext?
    private var epoch = (clock: ContinuousClock.now, loop: NIODeadline.uptimeNanoseconds(0))
    private var timer: (at: ContinuousClock.Instant, task: Scheduled<Void>)?
    /// The upstream channel of the dial in progress: closed when the machine gives it up (its
    /// deadline passed, or the connection ended), not left to the bootstrap's own timeout.
    private var dialling: (attempt: Int, channel: any Channel)?
    /// Where this loop's ``LoopConnections`` keeps this handler until the relay starts.
    var tableSlot = -1

    init(front: ConnectionStateMachine.Front, listenerName: String, proxy: ProxyContext) {
        self.front = front
        self.listenerName = listenerName
        self.proxy = proxy
    }

    /// The machine's clock: the event loop's, as a `ContinuousClock` instant.
    private func now(_ context: ChannelHandlerContext) -> ContinuousClock.Instant {
        epoch.clock + .nanoseconds((context.eventLoop.now - epoch.loop).nanoseconds)
    }

    // MARK: events in

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        epoch = (ContinuousClock.now, context.eventLoop.now)
        var original: SocketAddress?
        if front == .tls {
            // A connection redirected by iptables: where it was going (the callback runs at once).
            OriginalDestination.lookup(context.channel) { original = $0 }
        }
        machine = ConnectionStateMachine(front: front, listener: listenerName, source: context.channel.remoteAddress, proxy: proxy)
        proxy.connections(for: context.eventLoop).add(self)
        apply(machine!.start(now: now(context), originalDestination: original), context: context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard machine != nil else { return }
        apply(machine!.received(unwrapInboundIn(data), now: now(context)), context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if machine != nil { apply(machine!.clientClosed(halfClose: false), context: context) }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            if machine != nil { apply(machine!.clientClosed(halfClose: true), context: context) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard machine != nil else { return context.close(promise: nil) }
        apply(machine!.clientFailed("\(error)"), context: context)
    }

    /// The gateway is stopping: called by the loop's ``LoopConnections``.
    func shutdown() {
        guard let context, machine != nil else { return }
        apply(machine!.shutdown(), context: context)
    }

    // MARK: actions out

    private func apply(_ action: ConnectionStateMachine.Action, context: ChannelHandlerContext, upstream: (any Channel)? = nil) {
        // The reply is flushed after the step has started: a flush that fails closes the channel
        // at once, and the machine ends (and leaves this handler) inside it.
        if let reply = action.reply { context.write(wrapOutboundOut(reply), promise: nil) }
        switch action.next {
        case .read, .wait:
            break
        case .pauseReads:
            try? context.channel.syncOptions?.setOption(.autoRead, value: false)
        case .resolve(let host):
            proxy.resolver.resolve(host, snapshot: machine!.snapshot, on: context.eventLoop)
                .hop(to: context.eventLoop).assumeIsolated().whenComplete { result in
                    guard self.machine != nil else { return }
                    self.apply(self.machine!.resolved(result, now: self.now(context)), context: context)
                }
        case .connect(let target, let attempt):
            dial(target, attempt: attempt, context: context)
        case .relay(let prefix, let clientInputEnded):
            guard let upstream else { preconditionFailure("relay without an upstream channel") }
            startRelay(context: context, upstream: upstream, prefix: prefix, clientInputEnded: clientInputEnded)
        case .handOverToHTTP(let bytes, let slot):
            handOverToHTTP(context: context, bytes: bytes, slot: slot)
        case .close:
            upstream?.close(promise: nil)
            leave(context)
            abandonDial()
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
            return
        case .discardUpstream:
            upstream?.close(promise: nil)
        }
        if action.reply != nil { context.flush() }
        if machine != nil { rearm(context) }
    }

    /// Keeps one timer at the machine's deadline.
    private func rearm(_ context: ChannelHandlerContext) {
        let deadline = machine?.deadline
        if timer?.at == deadline { return }
        timer?.task.cancel()
        timer = nil
        guard let deadline else { return }
        let at = epoch.loop + .nanoseconds((deadline - epoch.clock).nanoseconds)
        let task = context.eventLoop.assumeIsolated().scheduleTask(deadline: at) { [weak self] in
            guard let self, self.machine != nil else { return }
            self.timer = nil
            self.apply(self.machine!.tick(now: self.now(context)), context: context)
        }
        timer = (deadline, task)
    }

    private func dial(_ target: SocketAddress, attempt: Int, context: ChannelHandlerContext) {
        abandonDial()
        // The machine's deadline ends an attempt; the bootstrap's own timeout is only a backstop.
        let timeout = machine!.snapshot.gateway.limits.connectTimeout + .seconds(1)
        let (channel, connected) = proxy.bootstraps(for: context.eventLoop).dial(target, connectTimeout: timeout)
        dialling = channel.map { (attempt, $0) }
        connected.assumeIsolated().whenComplete { result in
            if self.dialling?.attempt == attempt { self.dialling = nil }
            switch result {
            case .success(let channel):
                guard self.machine != nil else { return channel.close(promise: nil) }
                self.apply(self.machine!.connected(attempt: attempt, now: self.now(context)), context: context, upstream: channel)
            case .failure(let error):
                guard self.machine != nil else { return }
                self.apply(self.machine!.connectFailed(attempt: attempt, "\(error)", now: self.now(context)), context: context)
            }
        }
    }

    /// Closes the channel of a dial the machine no longer waits for; its connect fails, and the
    /// machine ignores an attempt it gave up.
    private func abandonDial() {
        guard let dialling else { return }
        self.dialling = nil
        dialling.channel.close(promise: nil)
    }

    /// The machine is done here: no timer, out of the loop's table.
    private func leave(_ context: ChannelHandlerContext) {
        timer?.task.cancel()
        timer = nil
        machine = nil
        proxy.connections(for: context.eventLoop).remove(self)
    }

    private func startRelay(context: ChannelHandlerContext, upstream: any Channel, prefix: ByteBuffer?, clientInputEnded: Bool) {
        let readsPaused = machine!.readsPaused
        let session = RelaySession(machine: machine!, now: context.eventLoop.now)
        leave(context)
        let (clientGlue, upstreamGlue) = GlueHandler.matchedPair(session: session)
        do {
            try upstream.pipeline.syncOperations.addHandler(upstreamGlue)
            try context.pipeline.syncOperations.addHandler(clientGlue, position: .after(context.handler))
        } catch {
            // The record says internal_error (the operational log says why); the sockets close.
            proxy.logger.error("cannot set up a relay: \(error)")
            session.setUpFailed()
            upstream.close(promise: nil)
            context.close(promise: nil)
            return
        }
        session.clientChannel = context.channel
        session.upstreamChannel = upstream
        proxy.connections(for: context.eventLoop).add(session)
        if let prefix { upstream.writeAndFlush(prefix, promise: nil) }
        if clientInputEnded { upstreamGlue.shutOutput() }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        if readsPaused { try? context.channel.syncOptions?.setOption(.autoRead, value: true) }
    }

    private func handOverToHTTP(context: ChannelHandlerContext, bytes: ByteBuffer, slot: AdmissionSlot) {
        leave(context)
        context.channel.closeFuture.whenComplete { [proxy] _ in proxy.release(slot) }
        do {
            try HTTPProxyPipeline.add(to: context.pipeline.syncOperations, listenerName: listenerName, proxy: proxy,
                                      countsConnection: false, position: .after(context.handler))
        } catch {
            HTTPProxyPipeline.recordFailedHandOver(source: context.channel.remoteAddress, listenerName: listenerName, proxy: proxy, error: error)
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(wrapInboundOut(bytes))
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

@available(*, unavailable)
extension InspectHandler: Sendable {}

extension Duration {
    var nanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }
}
