#if os(Linux)
import CCorridorLinux
import CorridorPolicy
import Glibc
import NIOCore
import NIOPosix
import Synchronization

/// The splice data plane of the tls listener (`spec.tls.dataPlane: Splice`): TLS passthrough on
/// raw sockets and epoll, one ``EpollLoop`` thread per worker. A connection is accepted, its
/// ClientHello read and decided, the vetted upstream dialled, and the bytes moved by the kernel
/// with splice(2) through a pipe, never copied into the gateway. The steps and their rules are the
/// NIO plane's (``InspectHandler``, ``UpstreamDialer``, ``GlueHandler``): same parser, decision
/// engine, resolver, address guard, access record and metrics. See ``SpliceConnection``.
///
/// Why a second plane: each NIO connection is two channels with fixed costs (about 14
/// `epoll_ctl` and 7 `getsockname`/`getpeername` per connection, about 3.8 KiB of the 5 KiB an
/// idle connection holds) and no way to splice. Here an idle connection is two descriptors and
/// one object, and a connection usually costs 4 `epoll_ctl` (no removal: a closed socket leaves
/// the set by itself) and no `getsockname`/`getpeername`.
public final class SplicePlane: Sendable {
    let loops: [EpollLoop]
    private let threads: NIOThreadPool
    let proxy: ProxyContext
    /// Event loops for the resolver's futures (its thread pool and timeout).
    let group: any EventLoopGroup

    public init(workers: Int, proxy: ProxyContext, group: any EventLoopGroup) throws {
        // A write to a socket whose peer has gone must fail with EPIPE, not kill the process.
        signal(SIGPIPE, SIG_IGN)
        var loops: [EpollLoop] = []
        for _ in 0..<max(1, workers) { loops.append(try EpollLoop()) }
        self.loops = loops
        self.proxy = proxy
        self.group = group
        threads = NIOThreadPool(numberOfThreads: loops.count)
        threads.start()
        let logger = proxy.logger
        proxy.addRecheck { [loops] snapshot in
            for loop in loops {
                _ = loop.execute {
                    for item in loop.watched { (item as? SpliceConnection)?.recheck(against: snapshot) }
                }
            }
        }
        for (index, loop) in loops.enumerated() {
            threads.submit { _ in
                loop.run { failure in
                    if let failure {
                        logger.error("splice data plane loop \(index) stopped: epoll_wait: \(String(cString: strerror(failure))); ending its connections")
                    }
                    for item in loop.watched { (item as? SpliceConnection)?.shutdown() }
                }
            }
        }
    }

    /// Binds the tls (`passthrough`) or connect listener; every loop accepts from it. Throws if a
    /// loop cannot watch it.
    public func bind(_ kind: ListenerKind, host: String, port: Int, name: String) async throws -> SpliceListener {
        let front: ConnectionStateMachine.Front
        switch kind {
        case .passthrough: front = .tls
        case .connect: front = .connect
        case .http: throw SpliceError.failed("the http listener runs on NIO only")
        }
        let listener = try SpliceListener(host: host, port: port, name: name, front: front, plane: self)
        let failures = Mutex<[String]>([])
        await Self.onEachLoop(loops) { loop, running in
            guard running else { return failures.withLock { $0.append("the data plane has stopped") } }
            if !loop.add(listener.fd, SpliceAcceptor.events, SpliceAcceptor(listener: listener, loop: loop)) {
                let reason = String(cString: strerror(errno))
                failures.withLock { $0.append(reason) }
            }
        }
        if let reason = failures.withLock({ $0.first }) {
            await listener.close()
            throw SpliceError.failed("cannot watch the \(name) listener on \(host):\(port): \(reason)")
        }
        return listener
    }

    /// Runs `task` once per loop: on that loop's thread (`running` true), or here for a loop that
    /// has stopped (`running` false). Returns when every loop has had its turn.
    static func onEachLoop(_ loops: [EpollLoop], _ task: @escaping @Sendable (_ loop: EpollLoop, _ running: Bool) -> Void) async {
        let remaining = Atomic<Int>(loops.count)
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            for loop in loops {
                let turn: @Sendable (Bool) -> Void = { running in
                    task(loop, running)
                    if remaining.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 { done.resume() }
                }
                if !loop.execute({ turn(true) }) { turn(false) }
            }
        }
    }

    /// Ends every connection (cause `shutdown`) and stops the loops.
    public func shutdown() async {
        for loop in loops { loop.stop() }
        try? await threads.shutdownGracefully()
    }
}

/// A listening socket of the splice plane, shared by its loops.
public final class SpliceListener: Sendable {
    let fd: Int32
    let name: String
    let front: ConnectionStateMachine.Front
    let plane: SplicePlane
    /// Set by ``close()``: a paused acceptor must not watch the socket again.
    let closed = Atomic<Bool>(false)
    /// The bound address (with the real port when 0 was asked for).
    public let localAddress: SocketAddress

    init(host: String, port: Int, name: String, front: ConnectionStateMachine.Front, plane: SplicePlane) throws {
        guard let ip = IPAddress(parsing: host), let address = try? ip.socketAddress(port: port) else {
            throw SpliceError.address("cannot listen on \(host):\(port): not an IP address and port")
        }
        let fd = corridor_stream_socket(ip.isIPv4 ? AF_INET : AF_INET6)
        guard fd >= 0 else { throw SpliceError.system("socket", errno) }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        // Accepted sockets inherit TCP_NODELAY.
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = address.withRawSockaddr { Glibc.bind(fd, $0, $1) }
        guard bound == 0, listen(fd, 4096) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw SpliceError.system("bind \(host):\(port)", code)
        }
        self.fd = fd
        self.name = name
        self.front = front
        self.plane = plane
        self.localAddress = SocketAddress.local(of: fd) ?? address
    }

    /// Stops accepting: every loop lets go of the socket, then it is closed (new connections are refused).
    public func close() async {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let fd = self.fd
        // A loop that has stopped no longer watches anything.
        await SplicePlane.onEachLoop(plane.loops) { loop, running in if running { loop.remove(fd) } }
        Glibc.close(fd)
    }
}

/// Accepts connections of one listener on one loop.
final class SpliceAcceptor: EpollHandler, EpollTicking, @unchecked Sendable {
    private let listener: SpliceListener
    private let loop: EpollLoop
    /// Accepts per wake-up, so one busy listener does not starve the relays.
    static let acceptsPerWake = 64
    /// Set while accepting is paused because the process is out of descriptors.
    private var pausedUntil: ContinuousClock.Instant?
    var tickSlot = -1

    init(listener: SpliceListener, loop: EpollLoop) {
        self.listener = listener
        self.loop = loop
    }

    static let events = EpollLoop.readable | corridor_epollexclusive()

    func ready(fd: Int32, events: UInt32) {
        guard fd == listener.fd, pausedUntil == nil else { return }
        for _ in 0..<Self.acceptsPerWake {
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let client = corridor_accept(fd, &storage, &length)
            if client < 0 {
                let code = errno
                if code == EMFILE || code == ENFILE || code == ENOBUFS || code == ENOMEM {
                    // Out of descriptors: stop watching the listener for a moment rather than
                    // spin on it (it stays readable; connections wait in the backlog).
                    pausedUntil = loop.now + .milliseconds(250)
                    loop.remove(fd)
                    loop.watchDeadlines(self)
                    listener.plane.proxy.logger.warning("cannot accept on the \(listener.name) listener: \(String(cString: strerror(code))); accepting again in 250 ms")
                }
                return
            }
            SpliceConnection.start(client: client, peer: SocketAddress(storage: storage), listener: listener, loop: loop)
        }
    }

    func tick(now: ContinuousClock.Instant) {
        guard let pausedUntil, now >= pausedUntil else { return }
        guard !listener.closed.load(ordering: .acquiring) else {
            self.pausedUntil = nil
            loop.unwatchDeadlines(self)
            return
        }
        guard loop.add(listener.fd, Self.events, self) else {
            // Still short of something (memory for epoll): try again in a moment.
            self.pausedUntil = now + .milliseconds(250)
            listener.plane.proxy.logger.warning("cannot watch the \(listener.name) listener again: \(String(cString: strerror(errno))); trying again in 250 ms")
            return
        }
        self.pausedUntil = nil
        loop.unwatchDeadlines(self)
    }
}

extension SocketAddress {
    /// Calls `body` with the raw `sockaddr` and its length.
    func withRawSockaddr<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        switch self {
        case .v4(let v4):
            var address = v4.address
            return withUnsafeBytes(of: &address) { body($0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count)) }
        case .v6(let v6):
            var address = v6.address
            return withUnsafeBytes(of: &address) { body($0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count)) }
        case .unixDomainSocket:
            var address = sockaddr()
            return body(&address, 0)
        }
    }
}
#endif
