#if os(Linux)
import CCorridorLinux
import CorridorPolicy
import CorridorWire
import Glibc
import NIOCore

/// The splice plane's driver of one tls or connect connection, from accept to close. Until the
/// relay starts it feeds what the client's socket does to the connection's
/// ``ConnectionStateMachine`` (the same machine the NIO plane drives, so both planes decide,
/// record and word every ending alike) and does what the machine answers: writes replies, reads
/// on, resolves, dials the addresses it is given, starts the relay, or hands a plain-HTTP
/// connection to NIO. Time is the loop's clock (``EpollLoop/now``), deadlines checked four
/// times a second.
///
/// The relay moves one read each way per wake-up (the loop is level-triggered). Small messages
/// are copied through the loop's scratch buffer (recv, send); a read that fills it marks a bulk
/// transfer, which moves with splice(2), socket to pipe to socket, through a pipe taken from the
/// loop's pool only while bytes are in flight, and enlarged (within the loop's budget) when a
/// splice fills it. While the machine inspects the relay (``ConnectionStateMachine/inspectsRelay``,
/// the start of a TLS handshake) every read is copied and shown to it before it is sent on.
/// Backpressure: a direction whose bytes cannot all be written stops reading
/// until its destination is writable. Half-close: a source's end shuts its destination's write
/// side.
///
/// Confined to its loop's thread.
final class SpliceConnection: EpollHandler, EpollTicking, @unchecked Sendable {
    /// One direction of the relay.
    private struct Direction {
        let fromClient: Bool
        /// Bytes to write before splicing (the client's ClientHello and what followed it).
        var prefix: ByteBuffer?
        var pipe: RelayPipe?
        /// Bytes in the pipe not yet written on.
        var inPipe = 0
        /// The source has ended; the destination's write side is shut once the pipe is empty.
        var ended = false
        var shut = false
        /// The destination hung up: the direction was given up with its source unread.
        var abandoned = false
        /// Waiting for the destination to take more.
        var blocked = false
        /// The last read filled the loop's scratch buffer: the direction carries a bulk transfer
        /// and splices; otherwise it copies.
        var bulk = false

        var wantsToRead: Bool { !ended && !blocked && inPipe == 0 && prefix == nil }
    }

    /// What a read before the relay takes at most per call.
    static let requestReadBytes = 4096

    let client: Int32
    private var upstream: Int32 = -1
    private let loop: EpollLoop
    private let listener: SpliceListener
    private let proxy: ProxyContext
    private var machine: ConnectionStateMachine
    private var record: ConnectionRecord { machine.record }
    private var relaying = false
    private var closed = false
    /// The dial in flight: the machine's attempt number.
    private var attempt = 0
    // relaying
    private var up = Direction(fromClient: true)
    private var down = Direction(fromClient: false)
    private var lastActivity = ContinuousClock.now
    /// The client's socket is in the loop's epoll set.
    private var clientInLoop = false
    /// The first read was tried right after accept, before the socket was watched.
    private var readBeforeWatching = false
    private var clientEvents: UInt32 = 0
    private var upstreamEvents: UInt32 = 0
    /// The client (or upstream) hung up (``hungUp(isClient:)``).
    private var clientHungUp = false
    private var upstreamHungUp = false
    /// A socket that hung up and is still in the epoll set: ``pump`` takes it out unless the
    /// connection ends first (closing the socket does that).
    private var clientLeavesSet = false
    private var upstreamLeavesSet = false
    var tickSlot = -1

    private init(client: Int32, listener: SpliceListener, loop: EpollLoop, machine: ConnectionStateMachine) {
        self.client = client
        self.listener = listener
        self.loop = loop
        self.proxy = listener.plane.proxy
        self.machine = machine
    }

    // MARK: accept

    static func start(client: Int32, peer: SocketAddress?, listener: SpliceListener, loop: EpollLoop) {
        let proxy = listener.plane.proxy
        let machine = ConnectionStateMachine(front: listener.front, listener: listener.name, source: peer, proxy: proxy)
        let connection = SpliceConnection(client: client, listener: listener, loop: loop, machine: machine)
        var original: SocketAddress?
        if listener.front == .tls, let ip = machine.record.sourceAddress {
            // A connection redirected by iptables: where it was going.
            original = OriginalDestination.lookup(fd: client, peer: ip)
        }
        loop.watchDeadlines(connection)
        connection.apply(connection.machine.start(now: loop.now, originalDestination: original))
    }

    // MARK: events

    func ready(fd: Int32, events: UInt32) {
        if closed { return }
        if relaying {
            let isClient = fd == client
            guard isClient || fd == upstream else { return }
            if events & EpollLoop.failed != 0 { hungUp(isClient: isClient) }
            let readable = events & EpollLoop.readable != 0
            pump(readClient: isClient && readable, readUpstream: !isClient && readable)
        } else if fd == upstream {
            connectFinished()
        } else if fd == client {
            // Reads pause once the request is read, until the relay (``pauseClientReads()``).
            let readsPaused = !machine.isReadingRequest
            if events & EpollLoop.readable != 0 && !readsPaused {
                readClient()
            } else if readsPaused && events & EpollLoop.failed == 0 {
                // Bytes (or the client's end) while the name is looked up and dialled: they wait
                // in the socket until the relay, which no longer leaves the socket watched for reads.
                watchClient(0)
            } else {
                // Watched for failures only, while the name is looked up and dialled: a reset is
                // an error (as NIO reports it), a hang-up a close.
                var code: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                if getsockopt(client, SOL_SOCKET, SO_ERROR, &code, &length) == 0 && code != 0 {
                    apply(machine.clientFailed(String(cString: strerror(code))))
                } else {
                    apply(machine.clientClosed(halfClose: false))
                }
            }
        }
    }

    func tick(now: ContinuousClock.Instant) {
        if closed { return }
        apply(machine.tick(now: now, idleFor: relaying ? now - lastActivity : nil))
    }

    // MARK: before the relay

    /// Reads what the client sent (the CONNECT head, the ClientHello) and hands it to the machine;
    /// false when nothing was there to read yet.
    @discardableResult
    private func readClient() -> Bool {
        var bytes = ByteBuffer()
        var result = 0
        var code: Int32 = 0
        bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.requestReadBytes) { buffer in
            result = read(client, buffer.baseAddress, buffer.count)
            code = errno
            return max(0, result)
        }
        if result < 0 {
            if code == EAGAIN || code == EINTR { return false }
            apply(machine.clientFailed(String(cString: strerror(code))))
        } else if result == 0 {
            apply(machine.clientClosed(halfClose: true))
        } else {
            apply(machine.received(bytes, now: loop.now))
        }
        return true
    }

    /// Does what the machine says.
    private func apply(_ action: ConnectionStateMachine.Action) {
        if let reply = action.reply {
            // A reply is small and the socket's buffer empty: it goes whole, or the client is gone.
            _ = reply.withUnsafeReadableBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
        switch action.next {
        case .read:
            if !clientInLoop && !readBeforeWatching {
                // Just accepted: a client that speaks first has usually sent its first bytes with
                // the handshake's last ACK. Reading them now saves a wait for readiness, and the
                // socket joins the epoll set for what the machine wants next.
                readBeforeWatching = true
                if readClient() { return }
            }
            watchClient(EpollLoop.readable)
        case .wait:
            return
        case .pauseReads:
            // The machine holds enough of what came while dialling (the NIO plane reads on then;
            // this driver reads nothing until the relay).
            pauseClientReads()
        case .resolve(let host):
            pauseClientReads()
            if closed { return }
            // A lookup: getaddrinfo on the resolver's thread pool, timed on a NIO event loop (the
            // resolver's API is called there), the answer brought back to this loop.
            let loop = self.loop, resolver = proxy.resolver, snapshot = machine.snapshot
            let nioLoop = listener.plane.group.next()
            nioLoop.execute {
                resolver.resolve(host, snapshot: snapshot, on: nioLoop).whenComplete { result in
                    loop.execute {
                        if !self.closed { self.apply(self.machine.resolved(result, now: loop.now)) }
                    }
                }
            }
        case .connect(let target, let attempt):
            pauseClientReads()
            if !closed { dial(target, attempt: attempt) }
        case .relay(let prefix, _):
            // A client that ended its side while dialling is read to its end again by the relay
            // (a TCP end of input stays readable), which shuts the upstream's write side then.
            startRelay(prefix: prefix)
        case .handOverToHTTP(let bytes, let slot):
            handOverToHTTP(bytes, slot: slot)
        case .close:
            close()
        case .discardUpstream:
            dropUpstream()
        }
    }

    /// Watches the client for `events` (for failures only with 0).
    private func watchClient(_ events: UInt32) {
        guard clientInLoop else {
            guard loop.add(client, events, self) else {
                apply(machine.internalFailure("cannot watch the connection: \(String(cString: strerror(errno)))"))
                return
            }
            clientInLoop = true
            clientEvents = events
            return
        }
        setEvents(client: events)
    }

    /// The client is not read while its name is looked up and the upstream dialled (what it sends
    /// meanwhile waits in the socket), and until the relay starts only its failure matters. It
    /// stays watched for reads until it does send something (``ready(fd:events:)`` then watches it
    /// for failures only): most clients wait for the upstream's answer, and the relay then needs
    /// no change of what the socket is watched for.
    private func pauseClientReads() {
        if clientInLoop { return }
        watchClient(EpollLoop.readable)
    }

    /// Dials `target` (giving up any attempt in flight); a failure to start is reported at once.
    private func dial(_ target: SocketAddress, attempt: Int) {
        dropUpstream()
        self.attempt = attempt
        let fd = corridor_stream_socket(target.protocol == .inet ? AF_INET : AF_INET6)
        guard fd >= 0 else {
            // The gateway's own shortage (descriptors, memory), not the upstream's failure.
            apply(machine.internalFailure("cannot open a socket: \(String(cString: strerror(errno)))"))
            return
        }
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let result = target.withRawSockaddr { Glibc.connect(fd, $0, $1) }
        let code = errno
        guard result == 0 || code == EINPROGRESS else {
            Glibc.close(fd)
            apply(machine.connectFailed(attempt: attempt, String(cString: strerror(code)), now: loop.now))
            return
        }
        guard loop.add(fd, EpollLoop.writable, self) else {
            let error = String(cString: strerror(errno))
            Glibc.close(fd)
            apply(machine.internalFailure("cannot watch the upstream connection: \(error)"))
            return
        }
        upstream = fd
        upstreamEvents = EpollLoop.writable
    }

    private func connectFinished() {
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(upstream, SOL_SOCKET, SO_ERROR, &error, &length) != 0 { error = errno }
        if error == EINPROGRESS || error == EALREADY { return }
        guard error == 0 else {
            dropUpstream()
            apply(machine.connectFailed(attempt: attempt, String(cString: strerror(error)), now: loop.now))
            return
        }
        apply(machine.connected(attempt: attempt, now: loop.now))
    }

    private func dropUpstream() {
        guard upstream >= 0 else { return }
        loop.close(upstream)
        upstream = -1
        upstreamEvents = 0
    }

    /// Absolute-form plain HTTP on the connect listener: the socket leaves this loop and becomes a
    /// NIO channel running the HTTP path, with what was read so far fed to it first.
    private func handOverToHTTP(_ bytes: ByteBuffer, slot: AdmissionSlot) {
        closed = true
        loop.unwatchDeadlines(self)
        if clientInLoop { loop.remove(client) }
        clientInLoop = false
        HTTPProxyPipeline.adopt(client, source: record.source, bytes: bytes, slot: slot, listenerName: listener.name, proxy: proxy,
                                group: listener.plane.group)
    }

    // MARK: relay

    private func startRelay(prefix: ByteBuffer?) {
        relaying = true
        up.prefix = prefix
        lastActivity = loop.now
        pump()
    }

    /// Moves what can be moved each way (reading only from a socket that said it is readable),
    /// then watches each socket for what its directions wait for.
    private func pump(readClient: Bool = false, readUpstream: Bool = false) {
        guard relaying, !closed else { return }
        // `move` works on a direction in place and reports an ending instead of ending the
        // connection itself: ending touches both directions. A hung-up source is not watched:
        // it is read until its end, or until its destination is full.
        let upStep = moveAll(&up, from: client, to: upstream, read: readClient, hungUp: clientHungUp)
        guard case .ok = upStep else { return stop(upStep) }
        let downStep = moveAll(&down, from: upstream, to: client, read: readUpstream, hungUp: upstreamHungUp)
        guard case .ok = downStep else { return stop(downStep) }
        if up.shut && down.shut {
            end(.completed)
            return
        }
        if clientLeavesSet {
            clientLeavesSet = false
            loop.remove(client)
        }
        if upstreamLeavesSet {
            upstreamLeavesSet = false
            loop.remove(upstream)
        }
        setEvents(client: (up.wantsToRead ? EpollLoop.readable : 0) | (down.blocked ? EpollLoop.writable : 0),
                  upstream: (down.wantsToRead ? EpollLoop.readable : 0) | (up.blocked ? EpollLoop.writable : 0))
    }

    /// A direction's step ended the relay.
    private func stop(_ step: Step) {
        switch step {
        case .failed(let cause): end(cause)
        case .refused(let action): apply(action)
        case .ok: preconditionFailure("stop: the step did not end the relay")
        }
    }

    /// The client (or the upstream) hung up: it closed both ways (its end after ours), or reset.
    /// Level-triggered epoll would report that again on every wait, so the socket leaves the set
    /// at the end of this ``pump`` (if the connection has not ended by then): nothing more can be
    /// written to it, and what it sent before is read without waiting for readiness until its end
    /// (or its error).
    private func hungUp(isClient: Bool) {
        if isClient ? clientHungUp : upstreamHungUp { return }
        if isClient {
            clientHungUp = true
            clientLeavesSet = true
        } else {
            upstreamHungUp = true
            upstreamLeavesSet = true
        }
        var toGone = isClient ? down : up
        if !toGone.shut {
            toGone.ended = true
            toGone.shut = true
            toGone.abandoned = true
            toGone.prefix = nil
            toGone.blocked = false
            if let pipe = toGone.pipe {
                loop.dropPipe(pipe)
                toGone.pipe = nil
            }
            toGone.inPipe = 0
            if isClient { down = toGone } else { up = toGone }
        }
    }

    private enum Step {
        case ok
        /// The relay ends with this cause (a read or write failed).
        case failed(CloseCause)
        /// The machine refused what was read (``ConnectionStateMachine/inspect(_:fromClient:)``)
        /// and ended the connection: do what it says.
        case refused(ConnectionStateMachine.Action)
    }

    /// One ``move(_:from:to:read:)``, or, from a source that hung up (and is not watched), moves
    /// until its end, until its destination is full, or until a read brings nothing.
    private func moveAll(_ d: inout Direction, from source: Int32, to destination: Int32, read: Bool, hungUp: Bool) -> Step {
        while true {
            let before = d.fromClient ? record.bytesUp : record.bytesDown
            let step = move(&d, from: source, to: destination, read: read || hungUp)
            guard case .ok = step, hungUp, !d.ended, !d.blocked, (d.fromClient ? record.bytesUp : record.bytesDown) > before else { return step }
        }
    }

    /// One step of a direction: write what is waiting, then (when `read`) take one chunk from the
    /// source and write it on.
    private func move(_ d: inout Direction, from source: Int32, to destination: Int32, read: Bool) -> Step {
        d.blocked = false
        if var prefix = d.prefix {
            let n = prefix.withUnsafeReadableBytes { send(destination, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 { return writeFailed(&d, errno) }
            prefix.moveReaderIndex(forwardBy: n)
            lastActivity = loop.now
            if prefix.readableBytes > 0 {
                d.prefix = prefix
                d.blocked = true
                return .ok
            }
            d.prefix = nil
        }
        if d.inPipe > 0 {
            let step = drain(&d, to: destination)
            guard case .ok = step else { return step }
        }
        if d.blocked { return .ok }
        if d.ended {
            if !d.shut { shut(&d, destination) }
            return .ok
        }
        guard read else { return .ok }
        // Small messages (a TLS handshake, requests and answers) cost less copied through the
        // loop's scratch buffer than spliced through a pipe; a read that fills the buffer marks
        // a bulk transfer, which splices while its reads keep coming in whole buffers.
        if !d.bulk || machine.inspectsRelay { return copy(&d, from: source, to: destination) }
        if d.pipe == nil {
            // No pipe to be had (the process is out of descriptors): copy this chunk instead.
            guard let pipe = loop.takePipe() else { return copy(&d, from: source, to: destination) }
            d.pipe = pipe
        }
        let n = corridor_splice(source, d.pipe!.write, UInt(d.pipe!.capacity))
        if n > 0 {
            d.inPipe = n
            if n < loop.scratch.count { d.bulk = false }
            // A splice that filled the pipe found more waiting than it holds: a bulk transfer,
            // which moves in fewer and larger steps through a larger pipe.
            if n == d.pipe!.capacity { loop.enlarge(&d.pipe!) }
            count(n, fromClient: d.fromClient)
            return drain(&d, to: destination)
        }
        let code = errno
        loop.returnPipe(d.pipe!)
        d.pipe = nil
        if n < 0 && code != EAGAIN && code != EINTR {
            return .failed(d.fromClient ? .clientError : .upstreamError)
        }
        // splice(2) stops at TCP urgent data (MSG_OOB): it answers EAGAIN (or 0 once the peer has
        // shut its side) although bytes follow, and level-triggered epoll would report them again
        // and again. read(2) steps over the urgent byte, as the NIO plane does: one read decides.
        return copy(&d, from: source, to: destination)
    }

    /// Reads one chunk with recv(2) and writes it on (the bytes wait as the direction's prefix if the
    /// destination is full); a zero-byte read is the source's end.
    private func copy(_ d: inout Direction, from source: Int32, to destination: Int32) -> Step {
        let scratch = loop.scratch
        let result = recv(source, scratch.baseAddress, scratch.count, Int32(MSG_DONTWAIT))
        let code = errno
        if result > 0 {
            count(result, fromClient: d.fromClient)
            if machine.inspectsRelay, let refusal = machine.inspect(UnsafeRawBufferPointer(rebasing: scratch[0..<result]), fromClient: d.fromClient) {
                return .refused(refusal)
            }
            if result == scratch.count { d.bulk = true }
            let sent = send(destination, scratch.baseAddress, result, Int32(MSG_NOSIGNAL))
            if sent == result { return .ok }
            // What the destination did not take waits as the prefix (or the send failed: the
            // prefix's own send reports why).
            d.prefix = ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: scratch[max(sent, 0)..<result]))
            return move(&d, from: source, to: destination, read: false)
        }
        if result == 0 {
            d.ended = true
            shut(&d, destination)
            return .ok
        }
        if code == EAGAIN || code == EINTR { return .ok }
        return .failed(d.fromClient ? .clientError : .upstreamError)
    }

    /// The source ended and everything it sent is written: shut the destination's write side.
    /// When the other way has ended too, read to its end, the connection closes at the end of this
    /// ``pump``, and closing the socket sends the same FIN. (Not when the other way was given up
    /// unread: closing a socket with unread bytes sends a reset, which the FIN must precede.)
    private func shut(_ d: inout Direction, _ destination: Int32) {
        d.shut = true
        if let pipe = d.pipe {
            loop.returnPipe(pipe)
            d.pipe = nil
        }
        let other = d.fromClient ? down : up
        if !other.shut || other.abandoned { Glibc.shutdown(destination, Int32(SHUT_WR)) }
    }

    /// Writes the pipe's bytes on; sets `blocked` when the destination takes no more for now.
    private func drain(_ d: inout Direction, to destination: Int32) -> Step {
        while d.inPipe > 0 {
            let n = corridor_splice(d.pipe!.read, destination, UInt(d.inPipe))
            if n > 0 {
                d.inPipe -= n
                continue
            }
            return writeFailed(&d, n < 0 ? errno : EPIPE)
        }
        if let pipe = d.pipe {
            loop.returnPipe(pipe)
            d.pipe = nil
        }
        return .ok
    }

    private func writeFailed(_ d: inout Direction, _ code: Int32) -> Step {
        if code == EAGAIN || code == EINTR {
            d.blocked = true
            return .ok
        }
        // The destination went away.
        return .failed(d.fromClient ? .upstreamError : .clientError)
    }

    private func count(_ bytes: Int, fromClient: Bool) {
        if fromClient { record.bytesUp += bytes } else { record.bytesDown += bytes }
        lastActivity = loop.now
    }

    private func setEvents(client clientWanted: UInt32? = nil, upstream upstreamWanted: UInt32? = nil) {
        if let clientWanted, !clientHungUp, clientWanted != clientEvents {
            clientEvents = clientWanted
            loop.modify(client, clientWanted)
        }
        if let upstreamWanted, upstream >= 0, !upstreamHungUp, upstreamWanted != upstreamEvents {
            upstreamEvents = upstreamWanted
            loop.modify(upstream, upstreamWanted)
        }
    }

    // MARK: endings

    /// Closes the relay if `snapshot` no longer allows it (`spec.reload.liveConnections: Recheck`);
    /// a connection not relaying yet answers to the newest policy when it starts.
    func recheck(against snapshot: PolicySnapshot) {
        guard !closed, relaying else { return }
        apply(machine.recheck(against: snapshot))
    }

    /// The gateway is stopping: the connection ends now (cause `shutdown`).
    func shutdown() {
        guard !closed else { return }
        apply(machine.shutdown())
    }

    /// The relay ended with `cause`: the machine writes the record, and the sockets close.
    private func end(_ cause: CloseCause) {
        apply(machine.relayEnded(cause))
    }

    private func close() {
        guard !closed else { return }
        closed = true
        loop.unwatchDeadlines(self)
        for d in [up, down] {
            if let pipe = d.pipe {
                // A pipe still holding bytes cannot serve another relay.
                if d.inPipe == 0 { loop.returnPipe(pipe) } else { loop.dropPipe(pipe) }
            }
        }
        up.pipe = nil
        down.pipe = nil
        loop.close(client)
        dropUpstream()
    }
}
#endif
