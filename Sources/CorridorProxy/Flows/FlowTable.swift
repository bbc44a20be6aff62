import CorridorPolicy
import NIOPosix
import Prometheus
import Synchronization

/// The gateway's flows, aggregated per ``FlowKey``: connections, active, bytes, first and last
/// seen, last reason. Every data-plane thread (NIO event loop, splice loop) writes only its own
/// shard, so a connection takes no lock that another thread contends for; `/flows` merges the
/// shards when it is read. Bounded: each shard keeps at most its share of `spec.flows.maxEntries`,
/// evicting the least recently seen idle flows (counted).
public final class FlowTable: Sendable {
    final class Shard: Sendable {
        struct State {
            var flows: [FlowKey: Entry] = [:]
            /// This thread's per-service and per-namespace counters, made on first use (the
            /// registry's lock is taken once per label set and thread, not per connection).
            var counters: [CounterKey: Counter] = [:]
            /// (workload, destination) pairs seen (for `new_destination`), bounded like the flows.
            var seen: Set<FlowKey.Reach> = []
        }

        let state = Mutex(State())
        let capacity: Int
        let evictions = Atomic<Int>(0)
        let onEvict: @Sendable (Int) -> Void

        init(capacity: Int, onEvict: @escaping @Sendable (Int) -> Void) {
            self.capacity = capacity
            self.onEvict = onEvict
        }

        /// Drops the least recently seen tenth of the idle flows (and of the seen pairs, at random).
        fileprivate func evict(_ state: inout State) {
            let idle = state.flows.filter { $0.value.stats.active == 0 }.sorted { $0.value.stats.lastSeen < $1.value.stats.lastSeen }
            let drop = max(1, state.flows.count / 10)
            for (key, _) in idle.prefix(drop) { state.flows[key] = nil }
            let evicted = min(drop, idle.count)
            evictions.wrappingAdd(evicted, ordering: .relaxed)
            onEvict(evicted)
        }
    }

    private let shards = Mutex<[Shard]>([])
    private let local = ThreadSpecificVariable<Shard>()
    let shardCapacity: Int
    private let onEvict: @Sendable (Int) -> Void

    /// `maxEntries` in all, shared by `threads` data-plane threads; `onEvict` counts evictions.
    public init(maxEntries: Int, threads: Int, onEvict: @escaping @Sendable (Int) -> Void = { _ in }) {
        shardCapacity = max(64, maxEntries / max(1, threads))
        self.onEvict = onEvict
    }

    /// This thread's shard (made on first use).
    private var shard: Shard {
        if let shard = local.currentValue { return shard }
        let shard = Shard(capacity: shardCapacity, onEvict: onEvict)
        local.currentValue = shard
        shards.withLock { $0.append(shard) }
        return shard
    }

    /// A connection starts relaying. Returns whether its workload had not reached this destination
    /// before (in any shard).
    func opened(_ key: FlowKey, at now: Double) -> Bool {
        let pair = key.reach
        let mine = shard
        let known = mine.state.withLock { state -> Bool in
            if state.flows.count >= mine.capacity && state.flows[key] == nil { mine.evict(&state) }
            modify(&state.flows[key, default: Entry(now)]) { entry in
                entry.stats.active += 1
                entry.stats.lastSeen = now
            }
            return state.seen.contains(pair)
        }
        if known { return false }
        // New here: another thread's shard may have seen it (checked once per new pair, not per connection).
        let elsewhere = shards.withLock { $0 }.contains { $0 !== mine && $0.state.withLock { $0.seen.contains(pair) } }
        mine.state.withLock { state in
            if state.seen.count >= mine.capacity {
                state.seen = Set(state.seen.prefix(mine.capacity / 2))
            }
            state.seen.insert(pair)
        }
        return !elsewhere
    }

    /// A connection ended (`wasOpened`: it had been counted active by ``opened(_:at:)``). Returns
    /// this thread's counters for the series `series` names, made with `make` on first use, all
    /// under the one lock the flow update takes. A flow keeps its counters, so a connection of a
    /// known flow looks up no series: `series` must be a function of the key's fields alone.
    func closed(_ key: FlowKey, wasOpened: Bool, up: Int, down: Int, why: Decision.Reason, at now: Double,
                series: () -> FlowCounters.Keys, make: (CounterKey) -> Counter) -> FlowCounters {
        let mine = shard
        return mine.state.withLock { state in
            if state.flows.count >= mine.capacity && state.flows[key] == nil { mine.evict(&state) }
            let known: FlowCounters? = modify(&state.flows[key, default: Entry(now)]) { entry in
                entry.stats.connections += 1
                if wasOpened { entry.stats.active = max(0, entry.stats.active - 1) }
                entry.stats.bytesUp += up
                entry.stats.bytesDown += down
                entry.stats.lastSeen = now
                entry.stats.lastWhy = why
                return entry.counters
            }
            if let known { return known }
            func counter(_ key: CounterKey) -> Counter {
                if let counter = state.counters[key] { return counter }
                let counter = make(key)
                state.counters[key] = counter
                return counter
            }
            let keys = series()
            let counters = FlowCounters(connections: counter(keys.connections), bytesUp: counter(keys.bytesUp),
                                        bytesDown: counter(keys.bytesDown), byNamespace: counter(keys.byNamespace))
            state.flows[key]?.counters = counters
            return counters
        }
    }

    /// One flow in a shard: its figures, and (once one of its connections has ended) the Prometheus
    /// series its connections count in.
    struct Entry {
        var stats: FlowStats
        var counters: FlowCounters?

        init(_ now: Double) { stats = FlowStats(firstSeen: now) }
    }

    /// The series a flow's connections count in when they end.
    struct FlowCounters {
        struct Keys {
            var connections, bytesUp, bytesDown, byNamespace: CounterKey
        }

        var connections, bytesUp, bytesDown, byNamespace: Counter
    }

    /// A per-service or per-namespace series: its labels come from configuration (the policy's
    /// service names, workload namespaces), never from traffic.
    enum CounterKey: Hashable {
        case serviceConnections(service: String, decision: String)
        case serviceBytes(service: String, direction: String)
        case namespaceConnections(namespace: String, decision: String)
    }

    /// Every flow, merged across shards, most recently seen first.
    public func flows() -> [(key: FlowKey, stats: FlowStats)] {
        var merged: [FlowKey: FlowStats] = [:]
        for shard in shards.withLock({ $0 }) {
            for (key, entry) in shard.state.withLock({ $0.flows }) {
                merged[key, default: FlowStats()].add(entry.stats)
            }
        }
        return merged.map { ($0.key, $0.value) }.sorted { $0.stats.lastSeen > $1.stats.lastSeen }
    }

    /// Flows evicted to keep the bound, in all.
    public var evictions: Int { shards.withLock { $0 }.reduce(0) { $0 + $1.evictions.load(ordering: .relaxed) } }
}

/// Changes a value in place (one hash for a dictionary's `[key, default:]` entry).
@inline(__always)
private func modify<Value, Result>(_ value: inout Value, _ change: (inout Value) -> Result) -> Result { change(&value) }
