#if os(Linux)
import CCorridorLinux
import Glibc
import Synchronization

/// Something with descriptors in an ``EpollLoop``. `ready` may be called for a descriptor that
/// has since been closed and reused (readiness is level-triggered and may be spurious): handlers
/// find out by calling and getting `EAGAIN`.
protocol EpollHandler: AnyObject {
    func ready(fd: Int32, events: UInt32)
}

/// Something with deadlines: the loop calls `tick` about four times a second while it is listed.
protocol EpollTicking: AnyObject {
    var tickSlot: Int { get set }
    func tick(now: ContinuousClock.Instant)
}

/// One thread and one epoll set: the event loop of the splice data plane (``SplicePlane``).
/// Level-triggered: a descriptor is watched for what its owner wants next (read, write or
/// nothing), so each wake-up does one read or splice and no probing for `EAGAIN`. Closing a
/// descriptor removes it from the set (no `EPOLL_CTL_DEL`). Work from other threads (a resolved
/// name, a stop) comes in through ``execute(_:)`` and an eventfd.
///
/// Everything but ``execute(_:)`` and ``stop()`` is called on the loop's own thread.
final class EpollLoop: @unchecked Sendable {
    static let readable = corridor_epollin()
    static let writable = corridor_epollout()
    static let failed = corridor_epollhup() | corridor_epollerr()
    static let tickInterval: Duration = .milliseconds(250)
    /// EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD (sys/epoll.h).
    static let opAdd: Int32 = 1, opRemove: Int32 = 2, opModify: Int32 = 3
    /// Pipes kept for reuse per loop (each is two descriptors; a relay takes one only while bytes move).
    static let maxPooledPipes = 64
    /// What a bulk direction's pipe is enlarged to: one splice(2) then takes up to this much of
    /// what waits in the socket, instead of one default pipe's 64 KiB per wake-up.
    static let largePipeBytes = 1 << 20
    /// Enlarged pipes per loop at most, in use or pooled. The kernel counts a pipe's capacity
    /// against its user's `fs.pipe-user-pages-soft` (16,384 pages by default; past it, new pipes
    /// get 2 pages unless privileged): 8 of 1 MiB per loop keep each loop to an eighth of that.
    static let maxLargePipes = 8
    /// How long the loop leaves enlarging alone after the kernel refused it.
    static let enlargeBackoff: Duration = .seconds(1)

    private let epfd: Int32
    private let wakeFD: Int32
    private var handlers: [(any EpollHandler)?] = []
    /// Descriptors closed during this wake-up (see ``close(_:)``).
    private var closing: [Int32] = []
    private var ticking = EpollLoop.newTickingList()
    private let inbox = Mutex<(tasks: [@Sendable () -> Void], stopping: Bool, stopped: Bool)>(([], false, false))
    private var lastTick = ContinuousClock.now
    private var pipes: [RelayPipe] = []
    /// Enlarged pipes given back, taken before ``pipes``: only bulk directions splice, so an
    /// enlarged pipe left in the pool must not wait under small ones while the budget is spent.
    private var largePool: [RelayPipe] = []
    /// Enlarged pipes of this loop that are open, pooled or in use.
    private(set) var largePipes = 0
    private var enlargeRefusedAt: ContinuousClock.Instant?
    /// The time of the current wake-up.
    private(set) var now = ContinuousClock.now

    init() throws(SpliceError) {
        epfd = corridor_epoll_create()
        guard epfd >= 0 else { throw .system("epoll_create1", errno) }
        wakeFD = corridor_eventfd()
        guard wakeFD >= 0 else {
            let code = errno
            close(epfd)
            throw .system("eventfd", code)
        }
        guard corridor_epoll_ctl(epfd, Self.opAdd, wakeFD, Self.readable) == 0 else {
            let code = errno
            close(wakeFD)
            close(epfd)
            throw .system("epoll_ctl", code)
        }
    }

    deinit {
        scratch.deallocate()
        for pipe in pipes + largePool { dropPipe(pipe) }
        close(wakeFD)
        close(epfd)
    }

    // MARK: descriptors

    /// Watches `fd` for `events` on behalf of `handler`.
    func add(_ fd: Int32, _ events: UInt32, _ handler: any EpollHandler) -> Bool {
        guard corridor_epoll_ctl(epfd, Self.opAdd, fd, events) == 0 else { return false }
        let index = Int(fd)
        if index >= handlers.count { handlers.append(contentsOf: repeatElement(nil, count: index - handlers.count + 1024)) }
        handlers[index] = handler
        return true
    }

    /// Changes what `fd` is watched for.
    func modify(_ fd: Int32, _ events: UInt32) {
        _ = corridor_epoll_ctl(epfd, Self.opModify, fd, events)
    }

    /// Stops watching `fd` without closing it (a descriptor shared with other loops).
    func remove(_ fd: Int32) {
        _ = corridor_epoll_ctl(epfd, Self.opRemove, fd, 0)
        if Int(fd) < handlers.count { handlers[Int(fd)] = nil }
    }

    /// Closes `fd`, which the kernel takes out of the set. Events for it already fetched in this
    /// wake-up are dropped; the descriptor itself is closed at the end of the wake-up, so that its
    /// number cannot be reused meanwhile (by an accept or a dial) and receive a stale event.
    func close(_ fd: Int32) {
        if Int(fd) < handlers.count { handlers[Int(fd)] = nil }
        closing.append(fd)
    }

    private func closePending() {
        for fd in closing { _ = Glibc.close(fd) }
        closing.removeAll(keepingCapacity: true)
    }

    // MARK: deadlines

    func watchDeadlines(_ item: any EpollTicking) { ticking.insert(item) }

    private static func newTickingList() -> SlotList<any EpollTicking> {
        SlotList(slot: { $0.tickSlot }, setSlot: { $0.tickSlot = $1 })
    }

    func unwatchDeadlines(_ item: any EpollTicking) { ticking.remove(item) }

    /// What is watched for deadlines now (the connections of this loop).
    var watched: [any EpollTicking] { ticking.items }

    // MARK: pipes

    /// A pipe from the pool, or a new one; nil when none can be made (descriptor limit).
    func takePipe() -> RelayPipe? {
        if let pipe = largePool.popLast() ?? pipes.popLast() { return pipe }
        var fds: [Int32] = [0, 0]
        guard corridor_pipe(&fds) == 0 else { return nil }
        // Past the user's soft limit the kernel hands out smaller pipes: ask what this one holds.
        let capacity = corridor_pipe_capacity(fds[0])
        return RelayPipe(read: fds[0], write: fds[1], capacity: capacity > 0 ? Int(capacity) : RelayPipe.defaultCapacity)
    }

    /// Pipes kept for reuse now.
    var pooledPipes: Int { pipes.count + largePool.count }

    /// Enlarges a pipe to ``largePipeBytes`` (it may hold bytes) while fewer than
    /// ``maxLargePipes`` are open; false when it stays as it was. After the kernel refuses (the
    /// user's pipe pages are at their limit, or `fs.pipe-max-size` is lower), no pipe is enlarged
    /// for ``enlargeBackoff``.
    @discardableResult
    func enlarge(_ pipe: inout RelayPipe) -> Bool {
        guard pipe.capacity < Self.largePipeBytes, largePipes < Self.maxLargePipes else { return false }
        if let refused = enlargeRefusedAt {
            guard now - refused >= Self.enlargeBackoff else { return false }
            enlargeRefusedAt = nil
        }
        let capacity = corridor_pipe_resize(pipe.write, Int32(Self.largePipeBytes))
        guard capacity >= Self.largePipeBytes else {
            enlargeRefusedAt = now
            return false
        }
        pipe.capacity = Int(capacity)
        largePipes += 1
        return true
    }

    /// Gives back an empty pipe.
    func returnPipe(_ pipe: RelayPipe) {
        if pipe.capacity >= Self.largePipeBytes {
            largePool.append(pipe)   // at most maxLargePipes are open
        } else if pipes.count < Self.maxPooledPipes {
            pipes.append(pipe)
        } else {
            dropPipe(pipe)
        }
    }

    /// Closes a pipe that is not to be reused (full pool, or bytes still in it).
    func dropPipe(_ pipe: RelayPipe) {
        if pipe.capacity >= Self.largePipeBytes { largePipes -= 1 }
        _ = Glibc.close(pipe.read)
        _ = Glibc.close(pipe.write)
    }

    // MARK: running

    /// Runs `task` on the loop's thread; from any thread. False (and the task dropped) once the
    /// loop has stopped.
    @discardableResult
    func execute(_ task: @escaping @Sendable () -> Void) -> Bool {
        let (accepted, wake) = inbox.withLock { inbox -> (Bool, Bool) in
            guard !inbox.stopped else { return (false, false) }
            inbox.tasks.append(task)
            return (true, inbox.tasks.count == 1)
        }
        if wake { signal() }
        return accepted
    }

    /// Makes ``run(onStop:)`` return after its current wake-up; from any thread. Tasks queued
    /// after that are dropped (``execute(_:)`` says so).
    func stop() {
        inbox.withLock { $0.stopping = true }
        signal()
    }

    private func signal() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// The loop; returns after ``stop()`` (or if `epoll_wait` fails, which `onStop` is told with its
    /// errno), once `onStop` has run on the loop's thread.
    func run(onStop: (_ failure: Int32?) -> Void) {
        var failure: Int32?
        var fds = [Int32](repeating: 0, count: 256)
        var events = [UInt32](repeating: 0, count: 256)
        while true {
            let timeout: Int32 = ticking.isEmpty ? -1 : 250
            let count = corridor_epoll_wait(epfd, &fds, &events, 256, timeout)
            now = .now
            if count < 0 && errno != EINTR {
                failure = errno
                break
            }
            var woken = false
            for i in 0..<max(0, Int(count)) {
                let fd = fds[i]
                if fd == wakeFD {
                    woken = true
                    continue
                }
                if Int(fd) < handlers.count, let handler = handlers[Int(fd)] { handler.ready(fd: fd, events: events[i]) }
            }
            if woken {
                var value: UInt64 = 0
                _ = read(wakeFD, &value, 8)
                let (tasks, stopping) = inbox.withLock { inbox in
                    defer { inbox.tasks.removeAll(keepingCapacity: true) }
                    return (inbox.tasks, inbox.stopping)
                }
                for task in tasks { task() }
                if stopping {
                    closePending()
                    break
                }
            }
            if now - lastTick >= Self.tickInterval {
                lastTick = now
                // A tick may end connections, which leave the list: walk a copy.
                for item in ticking.items { item.tick(now: now) }
            }
            closePending()
        }
        onStop(failure)
        // From here `execute` refuses; what was accepted before still runs (a listener's close
        // step, a late resolver answer), so that nobody waits for it for ever.
        let leftovers = inbox.withLock { inbox in
            inbox.stopped = true
            defer { inbox.tasks.removeAll() }
            return inbox.tasks
        }
        for task in leftovers { task() }
        closePending()
        // Drop what is watched (it refers back to the loop).
        ticking = Self.newTickingList()
        handlers.removeAll()
    }

    /// A buffer for reads that cannot be spliced (``SpliceConnection``); used on the loop's thread only.
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 16384, alignment: 16)
}

enum SpliceError: Error, CustomStringConvertible {
    case system(String, Int32)
    case address(String)
    case failed(String)

    var description: String {
        switch self {
        case .system(let call, let code): "\(call): \(String(cString: strerror(code)))"
        case .address(let text), .failed(let text): text
        }
    }
}
#endif
