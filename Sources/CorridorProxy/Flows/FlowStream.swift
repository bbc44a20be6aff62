import NIOCore
import Synchronization

/// Records as they happen, for the admin API's `/flows/stream` (Server-Sent Events): `open` when a
/// connection starts relaying, `interim` for long-lived ones, `close` with the final record. With
/// nobody subscribed, publishing costs one atomic load. A subscriber that falls behind (more than
/// `maxInFlight` events not yet written) loses events, and is told how many.
public final class FlowStream: Sendable {
    public enum Event: String, Sendable {
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

    final class Subscriber: Sendable {
        let filter: Filter
        let eventLoop: any EventLoop
        /// Writes one SSE frame and flushes; called on `eventLoop`.
        let write: @Sendable ([UInt8]) -> Void
        let inFlight = Atomic<Int>(0)
        let dropped = Atomic<Int>(0)

        init(filter: Filter, eventLoop: any EventLoop, write: @escaping @Sendable ([UInt8]) -> Void) {
            self.filter = filter
            self.eventLoop = eventLoop
            self.write = write
        }
    }

    static let maxInFlight = 4096

    private let subscribers = Mutex<[ObjectIdentifier: Subscriber]>([:])
    private let count = Atomic<Int>(0)

    public init() {}

    var hasSubscribers: Bool { count.load(ordering: .relaxed) > 0 }

    /// Adds a subscriber; the returned token removes it.
    func subscribe(filter: Filter, eventLoop: any EventLoop, write: @escaping @Sendable ([UInt8]) -> Void) -> ObjectIdentifier {
        let subscriber = Subscriber(filter: filter, eventLoop: eventLoop, write: write)
        let id = ObjectIdentifier(subscriber)
        subscribers.withLock { $0[id] = subscriber }
        count.wrappingAdd(1, ordering: .relaxed)
        return id
    }

    func unsubscribe(_ id: ObjectIdentifier) {
        if subscribers.withLock({ $0.removeValue(forKey: id) }) != nil { count.wrappingSubtract(1, ordering: .relaxed) }
    }

    /// Sends `record` (one JSON line) to the subscribers whose filter matches.
    func publish(_ event: Event, key: FlowKey, signals: [Signal], record: [UInt8]) {
        guard hasSubscribers else { return }
        let matching = subscribers.withLock { $0.values.filter { $0.filter.matches(key, signals: signals) } }
        guard !matching.isEmpty else { return }
        var frame = Array("event: \(event.rawValue)\ndata: ".utf8)
        frame += record.last == UInt8(ascii: "\n") ? record.dropLast() : record[...]
        frame += Array("\n\n".utf8)
        for subscriber in matching {
            guard subscriber.inFlight.wrappingAdd(1, ordering: .relaxed).oldValue < Self.maxInFlight else {
                subscriber.inFlight.wrappingSubtract(1, ordering: .relaxed)
                subscriber.dropped.wrappingAdd(1, ordering: .relaxed)
                continue
            }
            let bytes = frame
            subscriber.eventLoop.execute {
                let dropped = subscriber.dropped.exchange(0, ordering: .relaxed)
                if dropped > 0 { subscriber.write(Array(": \(dropped) events dropped: this client fell behind\n\n".utf8)) }
                subscriber.write(bytes)
                subscriber.inFlight.wrappingSubtract(1, ordering: .relaxed)
            }
        }
    }
}
