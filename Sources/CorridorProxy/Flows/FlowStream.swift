import CorridorPolicy
import NIOCore
import Synchronization

/// Records as they happen, for the admin API's `/flows/stream` (Server-Sent Events): `open` when a
/// connection starts relaying, `interim` for long-lived ones, `close` with the final record. With
/// nobody subscribed, publishing costs one atomic load. Records are queued per subscriber and sent
/// together every `flushDelay` (one wake-up of the admin loop and one write for many records). A
/// client that stops taking what it is sent gets nothing more written until it does: its frames
/// wait, and past `maxPendingBytes` it loses events, and is told how many; one that takes nothing
/// for `maxStall` is closed. At most `maxSubscribers` clients stream at once, and at most
/// `maxSubscribersPerSource` from one address, so what the stream can hold is bounded whoever
/// connects and one host cannot take every place. Every `heartbeat` each client is sent a comment
/// line, so a peer that vanished is found by the write and a stalled one is counted as such.
public final class FlowStream: Sendable {
    public enum Event: String, Sendable, Hashable {
        case open, interim, close
    }

    /// What a subscriber asked to see; every field given must match.
    public struct Filter: Sendable, Equatable {
        public var namespace: String?
        public var workload: String?
        public var host: String?
        public var decision: String?
        public var signal: String?

        public init(namespace: String? = nil, workload: String? = nil, host: String? = nil, decision: String? = nil, signal: String? = nil) {
            self.namespace = namespace
            self.workload = workload
            self.host = host
            self.decision = decision
            self.signal = signal
        }

        func matches(_ key: FlowKey, signals: [Signal]) -> Bool {
            if let namespace, key.namespace != namespace { return false }
            if let workload, key.workload != workload { return false }
            if let host, key.destination != host { return false }
            if let decision, key.decision != decision { return false }
            if let signal, !signals.contains(where: { $0.rawValue == signal }) { return false }
            return true
        }
    }

    /// Whether a subscriber's client takes more.
    enum ClientState {
        case ready
        /// What was written has not gone out yet (the connection is not writable).
        case behind
        case gone
    }

    final class Subscriber: Sendable {
        let filter: Filter
        /// Where the client connects from, for the per-source bound (nil: not known).
        let source: IPAddress?
        let eventLoop: any EventLoop
        /// Writes SSE frames and flushes; called on `eventLoop`.
        let write: @Sendable ([UInt8]) -> Void
        /// Asked on `eventLoop` before each write.
        let state: @Sendable () -> ClientState
        /// Closes the client's connection; called on `eventLoop`.
        let close: @Sendable () -> Void
        /// Flushes in a row that found the client behind.
        let stalledFlushes = Atomic<Int>(0)
        /// Frames not written yet, and how many were dropped because the client fell behind.
        let pending = Mutex<(bytes: [UInt8], dropped: Int)>(([], 0))
        let scheduled = Atomic<Bool>(false)

        init(filter: Filter, source: IPAddress?, eventLoop: any EventLoop, state: @escaping @Sendable () -> ClientState,
             close: @escaping @Sendable () -> Void, write: @escaping @Sendable ([UInt8]) -> Void) {
            self.filter = filter
            self.source = source
            self.eventLoop = eventLoop
            self.state = state
            self.close = close
            self.write = write
        }

        /// Queues `frame`; the first frame after a flush schedules the next one, `flushDelay`
        /// later, so a busy gateway wakes the admin loop and writes to the client a few times a
        /// second, not once per record.
        func enqueue(_ frame: [UInt8]) {
            let queued = pending.withLock { pending -> Bool in
                guard pending.bytes.count + frame.count <= FlowStream.maxPendingBytes else {
                    pending.dropped += 1
                    return false
                }
                pending.bytes += frame
                return true
            }
            guard queued, !scheduled.exchange(true, ordering: .acquiringAndReleasing) else { return }
            eventLoop.scheduleTask(in: FlowStream.flushDelay) { self.flush() }
        }

        /// Sends the heartbeat comment when the client takes writes; counts a stall as flushes
        /// do when it does not. Runs every `heartbeat` until the client is gone.
        func beat() {
            switch state() {
            case .gone:
                return
            case .behind:
                // While frames wait, the flushes count the stall every `flushDelay`; otherwise
                // this counts it, a heartbeat's worth at a time.
                // The first beat that finds it behind may come just after it fell behind: the
                // stall is counted as over only a beat past `maxStall`.
                if !scheduled.load(ordering: .acquiring) {
                    let perBeat = Int(FlowStream.heartbeat.nanoseconds / FlowStream.flushDelay.nanoseconds)
                    let stalled = stalledFlushes.wrappingAdd(perBeat, ordering: .relaxed).newValue
                    if stalled >= FlowStream.maxStalledFlushes + perBeat {
                        closeStalled()
                        return
                    }
                }
            case .ready:
                stalledFlushes.store(0, ordering: .relaxed)
                write(FlowStream.heartbeatFrame)
            }
            eventLoop.scheduleTask(in: FlowStream.heartbeat) { self.beat() }
        }

        /// Drops what waits for a client that took nothing for `maxStall`, and closes it.
        private func closeStalled() {
            pending.withLock { $0 = ([], 0) }
            close()
        }

        private func flush() {
            switch state() {
            case .gone:
                return
            case .behind:
                // Nothing more is written while the last writes wait: the frames stay queued
                // (events past the bound are dropped and counted), and this is tried again,
                // until the client has taken nothing for `maxStall`.
                if stalledFlushes.wrappingAdd(1, ordering: .relaxed).newValue >= FlowStream.maxStalledFlushes {
                    closeStalled()
                    return
                }
                eventLoop.scheduleTask(in: FlowStream.flushDelay) { self.flush() }
                return
            case .ready:
                stalledFlushes.store(0, ordering: .relaxed)
            }
            scheduled.store(false, ordering: .releasing)
            let (bytes, dropped) = pending.withLock { pending in
                defer { pending = ([], 0) }
                return (pending.bytes, pending.dropped)
            }
            if dropped > 0 { write(Array(": \(dropped) events dropped: this client fell behind\n\n".utf8)) }
            if !bytes.isEmpty { write(bytes) }
        }
    }

    /// How long records wait to be sent together.
    static let flushDelay: TimeAmount = .milliseconds(50)
    /// What may wait for one client before its events are dropped.
    static let maxPendingBytes = 4 << 20
    /// How many clients may stream at once, and from one address.
    static let maxSubscribers = 32
    static let maxSubscribersPerSource = 4
    /// How often each client is sent a comment line.
    static let heartbeat: TimeAmount = .seconds(15)
    static let heartbeatFrame = Array(": heartbeat\n\n".utf8)
    /// How long a client may take nothing of what was written before it is closed.
    static let maxStall: TimeAmount = .seconds(30)
    static let maxStalledFlushes = Int(maxStall.nanoseconds / flushDelay.nanoseconds)

    private let subscribers = Mutex<[Subscriber]>([])
    private let count = Atomic<Int>(0)

    public init() {}

    var hasSubscribers: Bool { count.load(ordering: .relaxed) > 0 }

    /// Why a client cannot subscribe now.
    enum Refusal: Error, Equatable {
        /// ``maxSubscribers`` stream already.
        case full
        /// ``maxSubscribersPerSource`` stream from this client's address already.
        case fullForSource
    }

    /// Whether `source` counts toward ``maxSubscribersPerSource``: every client of a `kubectl
    /// port-forward` (or of anything else on the gateway's host) arrives from loopback.
    static func isBoundPerSource(_ source: IPAddress?) -> Bool {
        guard let source else { return true }
        return !loopback.contains { $0.contains(source.unmapped) }
    }

    private static let loopback = [CIDR(address: IPAddress(parsing: "127.0.0.0")!, prefixLength: 8),
                                   CIDR(address: IPAddress(parsing: "::1")!, prefixLength: 128)]

    /// Adds a subscriber from `source` (the client's address); the returned token removes it.
    func subscribe(filter: Filter, source: IPAddress?, eventLoop: any EventLoop, state: @escaping @Sendable () -> ClientState,
                   close: @escaping @Sendable () -> Void, write: @escaping @Sendable ([UInt8]) -> Void) -> Result<ObjectIdentifier, Refusal> {
        let subscriber = Subscriber(filter: filter, source: source, eventLoop: eventLoop, state: state, close: close, write: write)
        let refusal = subscribers.withLock { list -> Refusal? in
            guard list.count < Self.maxSubscribers else { return .full }
            guard !Self.isBoundPerSource(source) || list.lazy.filter({ $0.source == source }).count < Self.maxSubscribersPerSource else {
                return .fullForSource
            }
            list.append(subscriber)
            return nil
        }
        if let refusal { return .failure(refusal) }
        count.wrappingAdd(1, ordering: .relaxed)
        eventLoop.scheduleTask(in: Self.heartbeat) { subscriber.beat() }
        return .success(ObjectIdentifier(subscriber))
    }

    func unsubscribe(_ id: ObjectIdentifier) {
        let removed = subscribers.withLock { list -> Bool in
            guard let index = list.firstIndex(where: { ObjectIdentifier($0) == id }) else { return false }
            list.remove(at: index)
            return true
        }
        if removed { count.wrappingSubtract(1, ordering: .relaxed) }
    }

    /// Sends the record `record` makes (one JSON line, made only if some subscriber's filter wants
    /// it) to those subscribers.
    func publish(_ event: Event, key: FlowKey, signals: [Signal], record: () -> [UInt8]) {
        guard hasSubscribers else { return }
        let all = subscribers.withLock { $0 }
        var frame: [UInt8]?
        for subscriber in all where subscriber.filter.matches(key, signals: signals) {
            if frame == nil {
                let line = record()
                var bytes = Self.prefixes[event]!
                bytes.reserveCapacity(bytes.count + line.count + 1)
                bytes += line.last == UInt8(ascii: "\n") ? line.dropLast() : line[...]
                bytes += Self.frameEnd
                frame = bytes
            }
            subscriber.enqueue(frame!)
        }
    }

    private static let prefixes: [Event: [UInt8]] = [.open: Array("event: open\ndata: ".utf8), .interim: Array("event: interim\ndata: ".utf8),
                                                      .close: Array("event: close\ndata: ".utf8)]
    private static let frameEnd: [UInt8] = [UInt8(ascii: "\n"), UInt8(ascii: "\n")]
}
