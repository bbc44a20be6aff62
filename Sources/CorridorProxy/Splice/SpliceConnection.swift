#if os(Linux)
import CCorridorLinux
import CorridorPolicy
import CorridorWire
import Glibc
import NIOCore

/// One client connection of the splice plane, from accept to its access record:
///
///     accept -> ClientHello -> identify + decide -> resolve + vet -> dial -> splice both ways -> record
///
/// The same steps and rules as ``InspectHandler`` (whose tests this plane also runs): nothing
/// reaches an upstream before the decision, every way out before the relay writes the record as a
/// denial, and the ClientHello is replayed to the upstream byte for byte. A redirected connection
/// to a TCP service's address is decided at once and relayed without TLS.
///
/// The relay moves bytes with splice(2): socket to pipe to socket, one splice each way per
/// wake-up (the loop is level-triggered), a pipe taken from the loop's pool only while bytes are
/// in flight. Backpressure: a direction whose pipe cannot be emptied stops reading until its
/// destination is writable. Half-close: a source's end shuts its destination's write side.
///
/// Confined to its loop's thread.
final class SpliceConnection: EpollHandler, EpollTicking, @unchecked Sendable {
    private enum Phase {
        case readingHello
        case resolving
        case connecting
        case relaying
        case closed
    }

    /// One direction of the relay.
    private struct Direction {
        let fromClient: Bool
        /// Bytes to write before splicing (the client's ClientHello and what followed it).
        var prefix: ByteBuffer?
        var pipe: (read: Int32, write: Int32)?
        /// Bytes in the pipe not yet written on.
        var inPipe = 0
        /// The source has ended; the destination's write side is shut once the pipe is empty.
        var ended = false
        var shut = false
        /// Waiting for the destination to take more.
        var blocked = false

        var wantsToRead: Bool { !ended && !blocked && inPipe == 0 && prefix == nil }
    }

    /// Bytes moved per splice call (the pipe's default capacity).
    static let chunk = 65536
    /// What a ClientHello read takes at most per call.
    static let helloReadBytes = 4096

    let client: Int32
    private var upstream: Int32 = -1
    private let loop: EpollLoop
    private let listener: SpliceListener
    private let proxy: ProxyContext
    private let snapshot: PolicySnapshot
    private let record: ConnectionRecord
    /// Its slots in the connection budgets, given back when it closes.
    private let admission: AdmissionSlot
    private var phase = Phase.readingHello
    private var parser: ClientHelloParser
    private var hello = ByteBuffer()
    private var deadline: ContinuousClock.Instant
    private var plainTCP = false
    // dialling
    private var addresses: [IPAddress] = []
    private var port = 0
    private var attempt = 0
    private var attemptStarted = ContinuousClock.now
    private var attemptAddress: SocketAddress?
    private var lastFailure: UpstreamDialer.Failure?
    private var mismatch = false
    // relaying
    private var up = Direction(fromClient: true)
    private var down = Direction(fromClient: false)
    private var lastActivity = ContinuousClock.now
    private var clientEvents: UInt32 = 0
    private var upstreamEvents: UInt32 = 0
    /// The client (or upstream) hung up and left the epoll set (``hungUp(isClient:)``).
    private var clientHungUp = false
    private var upstreamHungUp = false
    var tickSlot = -1

    private init(client: Int32, listener: SpliceListener, loop: EpollLoop, record: ConnectionRecord, snapshot: PolicySnapshot,
                 slot: AdmissionSlot) {
        self.client = client
        self.admission = slot
        self.listener = listener
        self.loop = loop
        self.proxy = listener.plane.proxy
        self.record = record
        self.snapshot = snapshot
        self.parser = ClientHelloParser(maxHelloBytes: snapshot.gateway.tls.maxClientHelloBytes)
        self.deadline = loop.now + snapshot.gateway.limits.handshakeTimeout
    }

    // MARK: accept

    static func start(client: Int32, peer: SocketAddress?, listener: SpliceListener, loop: EpollLoop) {
        let proxy = listener.plane.proxy
        let snapshot = proxy.policy.current
        let record = ConnectionRecord(id: proxy.makeConnectionID(), listener: listener.name, source: peer)
        record.policyGeneration = snapshot.generation
        proxy.metrics.connectionOpened()
        let slot: AdmissionSlot
        switch proxy.admit(source: record.sourceAddress, gateway: snapshot.gateway) {
        case .success(let taken):
            slot = taken
        case .failure(let refusal):
            record.finish(refusal.cause, log: proxy.accessLog, metrics: proxy.metrics, reason: refusal.reason)
            Glibc.close(client)
            return
        }
        let connection = SpliceConnection(client: client, listener: listener, loop: loop, record: record, snapshot: snapshot, slot: slot)
        guard loop.add(client, EpollLoop.readable, connection) else {
            connection.clientEvents = 0
            connection.finishEarly(.clientError, reason: "cannot watch the connection: \(String(cString: strerror(errno)))")
            return
        }
        connection.clientEvents = EpollLoop.readable
        loop.watchDeadlines(connection)
        if let ip = record.sourceAddress {
            record.identity = snapshot.inventory.identity(of: ip)
            // A connection redirected by iptables: its original port selects the service port.
            if let original = OriginalDestination.lookup(fd: client, peer: ip) {
                record.originalDestination = original
                connection.judgeAsTCPService(original: original)
            }
        }
    }

    // MARK: events

    func ready(fd: Int32, events: UInt32) {
        switch phase {
        case .readingHello:
            if fd == client { readHello() }
        case .resolving:
            // Only failures are watched while resolving.
            if fd == client, events & EpollLoop.failed != 0 { clientLeftWhileConnecting() }
        case .connecting:
            if fd == upstream {
                connectFinished()
            } else if fd == client, events & EpollLoop.failed != 0 {
                clientLeftWhileConnecting()
            }
        case .relaying:
            let isClient = fd == client
            guard isClient || fd == upstream else { return }
            if events & EpollLoop.failed != 0 { hungUp(isClient: isClient) }
            let readable = events & EpollLoop.readable != 0
            pump(readClient: isClient && readable, readUpstream: !isClient && readable)
        case .closed:
            return
        }
    }

    func tick(now: ContinuousClock.Instant) {
        switch phase {
        case .readingHello where now >= deadline:
            let limit = DurationSyntax.format(snapshot.gateway.limits.handshakeTimeout)
            finishEarly(.handshakeTimeout, reason: "no complete ClientHello within \(limit)")
        case .connecting where now >= deadline:
            let timeout = snapshot.gateway.limits.connectTimeout
            failAttempt(.connectFailed("connect to \(attemptAddress.map(AccessLog.format) ?? "?") failed: timed out after \(DurationSyntax.format(timeout))",
                                       timedOut: true))
        case .relaying where now - lastActivity >= snapshot.gateway.limits.idleTimeout:
            end(.idleTimeout)
        case .relaying:
            if let flows = proxy.accessLog.flows, flows.interimDue(record, at: now) {
                record.interims += 1
                proxy.accessLog.writeInterim(record)
            }
        default:
            return
        }
    }

    // MARK: the ClientHello

    private func readHello() {
        var result = 0
        var code: Int32 = 0
        hello.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.helloReadBytes) { buffer in
            result = read(client, buffer.baseAddress, buffer.count)
            code = errno
            return max(0, result)
        }
        if result < 0 {
            if code == EAGAIN || code == EINTR { return }
            finishEarly(.clientError, reason: "client connection error: \(String(cString: strerror(code)))")
            return
        }
        if result == 0 {
            // As the NIO plane words it (its channels see the end of input first).
            finishEarly(.clientClosedEarly, reason: "the client shut its side before sending a complete ClientHello")
            return
        }
        switch parser.parse(hello) {
        case .needMoreData:
            return
        case .rejected(let rejection, let detail):
            proxy.metrics.clientHelloRejected(rejection)
            let reason = "invalid ClientHello: \(rejection.explanation)" + (detail.map { " (\($0))" } ?? "")
            if rejection != .notTLS && rejection != .sslv2 { writeAlert(.decodeError) }
            finishEarly(.invalidClientHello, reason: reason)
        case .complete(let info):
            let decision = record.decide(hello: info, snapshot: snapshot)
            guard decision.lets, let host = decision.host, let port = decision.port else {
                writeAlert(.accessDenied)
                finishEarly(.denied, reason: nil)
                return
            }
            up.prefix = hello
            resolve(host: host, port: port, serviceAddresses: decision.serviceAddresses)
        }
    }

    /// A redirected connection to a TCP ExternalService's address and port: decided at once and
    /// relayed to that address without TLS inspection.
    private func judgeAsTCPService(original: SocketAddress) {
        guard let (decision, ip, port) = record.decideTCPService(original: original, snapshot: snapshot) else { return }
        plainTCP = true
        guard decision.lets else {
            finishEarly(.denied, reason: nil)
            return
        }
        if let failure = UpstreamDialer.vet(address: ip, serviceAddresses: decision.serviceAddresses, snapshot: snapshot) {
            dialFailed(failure)
            return
        }
        self.port = port
        addresses = [ip]
        stopWatchingClient()
        dial()
    }

    // MARK: resolve and dial

    private func stopWatchingClient() {
        // Until the relay starts only a failure of the client matters (what it sends waits in the socket).
        setEvents(client: 0)
    }

    private func resolve(host: String, port: Int, serviceAddresses: [CIDR]) {
        phase = .resolving
        self.port = port
        stopWatchingClient()
        if let known = proxy.resolver.immediate(host, snapshot: snapshot) {
            resolved(.success(known), host: host, serviceAddresses: serviceAddresses)
            return
        }
        // A lookup: getaddrinfo on the resolver's thread pool, timed on a NIO event loop (the
        // resolver's API is called there), the answer brought back to this loop.
        let loop = self.loop, resolver = proxy.resolver, snapshot = self.snapshot
        let nioLoop = listener.plane.group.next()
        nioLoop.execute {
            resolver.resolve(host, snapshot: snapshot, on: nioLoop).whenComplete { result in
                loop.execute { self.resolved(result, host: host, serviceAddresses: serviceAddresses) }
            }
        }
    }

    private func resolved(_ result: Result<[IPAddress], any Error>, host: String, serviceAddresses: [CIDR]) {
        guard case .resolving = phase else { return }
        switch result {
        case .failure(let error):
            dialFailed(.resolveFailed("cannot resolve \(host): \(error)"))
        case .success(let found):
            let original = record.originalDestination.flatMap(IPAddress.init)?.unmapped
            switch UpstreamDialer.vet(found, host: host, serviceAddresses: serviceAddresses, originalDestination: original, snapshot: snapshot) {
            case .failure(let failure):
                dialFailed(failure)
            case .success(let (vetted, mismatch)):
                self.mismatch = mismatch
                addresses = vetted
                dial()
            }
        }
    }

    /// Dials the next address; when none is left, ends with the last failure.
    private func dial() {
        phase = .connecting
        while attempt < addresses.count {
            let ip = addresses[attempt]
            attempt += 1
            guard let target = try? ip.socketAddress(port: port) else {
                lastFailure = .connectFailed("port \(port) is out of range", timedOut: false)
                continue
            }
            let fd = corridor_stream_socket(ip.isIPv4 ? AF_INET : AF_INET6)
            guard fd >= 0 else {
                lastFailure = .connectFailed("cannot open a socket: \(String(cString: strerror(errno)))", timedOut: false)
                continue
            }
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            attemptStarted = loop.now
            attemptAddress = target
            let result = target.withRawSockaddr { Glibc.connect(fd, $0, $1) }
            let code = errno
            guard result == 0 || code == EINPROGRESS else {
                Glibc.close(fd)
                lastFailure = .connectFailed("connect to \(AccessLog.format(target)) failed: \(String(cString: strerror(code)))", timedOut: false)
                continue
            }
            upstream = fd
            guard loop.add(fd, EpollLoop.writable, self) else {
                Glibc.close(fd)
                upstream = -1
                lastFailure = .connectFailed("cannot watch the upstream connection: \(String(cString: strerror(errno)))", timedOut: false)
                continue
            }
            upstreamEvents = EpollLoop.writable
            deadline = loop.now + snapshot.gateway.limits.connectTimeout
            return
        }
        dialFailed(lastFailure ?? .connectFailed("no address to try", timedOut: false))
    }

    private func connectFinished() {
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(upstream, SOL_SOCKET, SO_ERROR, &error, &length) != 0 { error = errno }
        if error == EINPROGRESS || error == EALREADY { return }
        guard error == 0 else {
            failAttempt(.connectFailed("connect to \(attemptAddress.map(AccessLog.format) ?? "?") failed: \(String(cString: strerror(error)))",
                                       timedOut: false))
            return
        }
        proxy.metrics.upstreamConnected(after: loop.now - attemptStarted)
        startRelay()
    }

    private func failAttempt(_ failure: UpstreamDialer.Failure) {
        loop.close(upstream)
        upstream = -1
        upstreamEvents = 0
        lastFailure = failure
        dial()
    }

    private func dialFailed(_ failure: UpstreamDialer.Failure) {
        let (cause, alert, denial) = record.dialFailed(failure)
        if !plainTCP { writeAlert(alert) }
        finishEarly(cause, reason: denial)
    }

    private func clientLeftWhileConnecting() {
        finishEarly(.clientClosedWhileConnecting, reason: nil)
    }

    // MARK: relay

    private func startRelay() {
        record.resolved = attemptAddress
        record.addressMismatch = mismatch
        if let newer = proxy.newerPolicyToRecheck(than: snapshot), record.revoked(by: newer) {
            // A policy installed while this connection was being decided or dialled refuses it.
            if !plainTCP { writeAlert(.accessDenied) }
            finishEarly(.policyRevoked, reason: nil)
            return
        }
        phase = .relaying
        proxy.accessLog.flows?.opened(record)
        lastActivity = loop.now
        if let prefix = up.prefix {
            record.bytesUp += prefix.readableBytes
            if prefix.readableBytes == 0 { up.prefix = nil }
        }
        hello = ByteBuffer()
        pump()
    }

    /// Moves what can be moved each way (reading only from a socket that said it is readable),
    /// then watches each socket for what its directions wait for.
    private func pump(readClient: Bool = false, readUpstream: Bool = false) {
        guard phase == .relaying else { return }
        // `move` works on a direction in place and reports an ending instead of ending the
        // connection itself: ending touches both directions. A hung-up source is not watched:
        // it is read until its end, or until its destination is full.
        if case .failed(let cause) = moveAll(&up, from: client, to: upstream, read: readClient, hungUp: clientHungUp) {
            end(cause)
            return
        }
        if case .failed(let cause) = moveAll(&down, from: upstream, to: client, read: readUpstream, hungUp: upstreamHungUp) {
            end(cause)
            return
        }
        if up.shut && down.shut {
            end(.completed)
            return
        }
        setEvents(client: (up.wantsToRead ? EpollLoop.readable : 0) | (down.blocked ? EpollLoop.writable : 0),
                  upstream: (down.wantsToRead ? EpollLoop.readable : 0) | (up.blocked ? EpollLoop.writable : 0))
    }

    /// The client (or the upstream) hung up: it closed both ways (its end after ours), or reset.
    /// Level-triggered epoll would report that again on every wait, so the socket leaves the set:
    /// nothing more can be written to it, and what it sent before is read without waiting for
    /// readiness (``pump``) until its end (or its error).
    private func hungUp(isClient: Bool) {
        if isClient ? clientHungUp : upstreamHungUp { return }
        if isClient { clientHungUp = true } else { upstreamHungUp = true }
        loop.remove(isClient ? client : upstream)
        var toGone = isClient ? down : up
        if !toGone.shut {
            toGone.ended = true
            toGone.shut = true
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
        if d.pipe == nil {
            // No pipe to be had (the process is out of descriptors): copy this chunk instead.
            guard let pipe = loop.takePipe() else { return copy(&d, from: source, to: destination) }
            d.pipe = pipe
        }
        let n = corridor_splice(source, d.pipe!.write, UInt(Self.chunk))
        if n > 0 {
            d.inPipe = n
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
            d.prefix = ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: scratch[..<result]))
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
    private func shut(_ d: inout Direction, _ destination: Int32) {
        d.shut = true
        if let pipe = d.pipe {
            loop.returnPipe(pipe)
            d.pipe = nil
        }
        shutdown(destination, Int32(SHUT_WR))
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

    /// Ends a relay (or any connection at shutdown) and writes its record with `cause`.
    /// Closes the relay if `snapshot` no longer allows it (`spec.reload.liveConnections: Recheck`);
    /// a connection not relaying yet answers to the newest policy when it starts (``startRelay()``).
    func recheck(against snapshot: PolicySnapshot) {
        guard phase == .relaying, record.revoked(by: snapshot) else { return }
        finishEarly(.policyRevoked, reason: nil)
    }

    func end(_ cause: CloseCause) {
        switch phase {
        case .closed:
            return
        case .readingHello:
            finishEarly(cause, reason: "the gateway stopped before the ClientHello was complete")
        case .resolving, .connecting, .relaying:
            // Decided already: the record keeps the decision, with the cause.
            finishEarly(cause, reason: nil)
        }
    }

    /// Writes the record (as a denial when `reason` is given, else with the decision made) and closes.
    private func finishEarly(_ cause: CloseCause, reason: String?) {
        guard phase != .closed else { return }
        phase = .closed
        loop.unwatchDeadlines(self)
        record.finish(cause, log: proxy.accessLog, metrics: proxy.metrics, reason: reason)
        closeSockets()
    }

    private func writeAlert(_ alert: TLSAlert) {
        let bytes = alert.record(allocator: ByteBufferAllocator())
        _ = bytes.withUnsafeReadableBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    private func closeSockets() {
        for d in [up, down] {
            if let pipe = d.pipe {
                // A pipe still holding bytes cannot serve another relay.
                if d.inPipe == 0 { loop.returnPipe(pipe) } else { loop.dropPipe(pipe) }
            }
        }
        up.pipe = nil
        down.pipe = nil
        loop.close(client)
        if upstream >= 0 { loop.close(upstream) }
        upstream = -1
        proxy.release(admission)
    }
}
#endif
