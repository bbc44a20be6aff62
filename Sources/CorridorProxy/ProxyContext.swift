import CorridorPolicy
import Logging
import NIOCore
import Synchronization

/// What every connection handler shares: the policy store, the resolver, the access log, the
/// metrics and the connection budget. Immutable references, safe to share across event loops.
public final class ProxyContext: Sendable {
    public let policy: PolicyStore
    public let resolver: Resolver
    public let accessLog: AccessLog
    public let metrics: ProxyMetrics
    public let logger: Logger
    private let nextID = Atomic<UInt64>(1)
    /// One pool of idle upstream HTTP connections per event loop.
    private let pools = Mutex<[ObjectIdentifier: NIOLoopBound<UpstreamPool>]>([:])
    /// One upstream bootstrap cache per event loop.
    private let upstreamBootstraps = Mutex<[ObjectIdentifier: NIOLoopBound<UpstreamBootstraps>]>([:])
    /// The tls and connect connections of each NIO event loop.
    private let loopConnections = Mutex<[ObjectIdentifier: NIOLoopBound<LoopConnections>]>([:])
    private let open = Atomic<Int>(0)
    private let sourceCounts = SourceConnectionCounts()
    /// Data planes outside NIO (the splice plane) that re-decide their live connections after a
    /// policy change; each call runs the work on the plane's own threads.
    private let recheckers = Mutex<[@Sendable (PolicySnapshot) -> Void]>([])

    public init(policy: PolicyStore, resolver: Resolver, accessLog: AccessLog, metrics: ProxyMetrics, logger: Logger) {
        self.policy = policy
        self.resolver = resolver
        self.accessLog = accessLog
        self.metrics = metrics
        self.logger = logger
    }

    /// Makes `snapshot` the policy in force. With `spec.reload.liveConnections: Recheck`, every
    /// relayed connection on every data plane is then decided again against it, on its own event
    /// loop, and those it no longer allows are closed (`policy_revoked`). Connections still
    /// deciding or dialling compare the generation before they start relaying (see
    /// ``PolicyStore/generation``), so none slips between the swap and the recheck.
    public func install(_ snapshot: PolicySnapshot, origination: OriginationContexts) {
        policy.replace(with: snapshot, origination: origination)
        guard snapshot.gateway.reload.liveConnections == .recheck else { return }
        for bound in loopConnections.withLock({ Array($0.values) }) {
            bound.eventLoop.execute { bound.value.recheck(against: snapshot) }
        }
        for recheck in recheckers.withLock({ $0 }) { recheck(snapshot) }
    }

    /// Registers a data plane's recheck of its live connections (see ``install(_:origination:)``).
    func addRecheck(_ recheck: @escaping @Sendable (PolicySnapshot) -> Void) {
        recheckers.withLock { $0.append(recheck) }
    }

    /// The policy a connection that decided on `decided` must answer to before it relays: nil
    /// when that is still the one in force or live connections keep their policy, else the new one.
    func newerPolicyToRecheck(than decided: PolicySnapshot) -> PolicySnapshot? {
        guard policy.generation != decided.generation else { return nil }
        let current = policy.current
        return current.gateway.reload.liveConnections == .recheck ? current : nil
    }

    /// The tls and connect connections of `eventLoop`; call on that event loop.
    func connections(for eventLoop: any EventLoop) -> LoopConnections {
        Self.perLoop(loopConnections, eventLoop) { LoopConnections(eventLoop: eventLoop) }
    }

    /// Ends every tls and connect connection of the NIO plane now (cause `shutdown`), each on its
    /// own event loop; returns when all have been told. The splice plane ends its own when it stops.
    public func endNIOConnections() async {
        for bound in loopConnections.withLock({ Array($0.values) }) {
            try? await bound.eventLoop.submit { bound.value.shutdown() }.get()
        }
    }

    /// The upstream bootstraps of `eventLoop`; call on that event loop.
    func bootstraps(for eventLoop: any EventLoop) -> UpstreamBootstraps {
        Self.perLoop(upstreamBootstraps, eventLoop) { UpstreamBootstraps(eventLoop: eventLoop) }
    }

    /// The upstream pool of `eventLoop`; call on that event loop.
    func pool(for eventLoop: any EventLoop) -> UpstreamPool {
        Self.perLoop(pools, eventLoop) { UpstreamPool(eventLoop: eventLoop) }
    }

    /// The object of `eventLoop` in `table`, made on first use (on that event loop).
    private static func perLoop<Value>(_ table: borrowing Mutex<[ObjectIdentifier: NIOLoopBound<Value>]>, _ eventLoop: any EventLoop,
                                       make: () -> Value) -> Value {
        let key = ObjectIdentifier(eventLoop)
        if let bound = table.withLock({ $0[key] }) { return bound.value }
        let bound = NIOLoopBound(make(), eventLoop: eventLoop)
        return table.withLock { table in
            if table[key] == nil { table[key] = bound }
            return table[key]!
        }.value
    }

    func makeConnectionID() -> UInt64 { nextID.wrappingAdd(1, ordering: .relaxed).oldValue }

    /// Admits a connection just accepted from `source` for `channel`, its slots given back when
    /// the channel closes; or says why not (see ``admit(source:gateway:)``).
    func admit(_ channel: any Channel, source: IPAddress?, gateway: GatewayConfig) -> AdmissionRefusal? {
        switch admit(source: source, gateway: gateway) {
        case .success(let slot):
            channel.closeFuture.whenComplete { [self] _ in release(slot) }
            return nil
        case .failure(let refusal):
            return refusal
        }
    }

    /// Takes a slot in the connection budget (and in its source's, under
    /// `limits.maxConnectionsPerSource`) for a connection just accepted, unless the access log
    /// cannot record it and `onWriteFailure` is Deny. Each slot taken is given back with
    /// ``release(_:)``.
    func admit(source: IPAddress?, gateway: GatewayConfig) -> Result<AdmissionSlot, AdmissionRefusal> {
        if gateway.logging.onWriteFailure == .deny && !accessLog.writable {
            return .failure(.accessLogUnwritable(accessLog.failure ?? "the access log cannot be written"))
        }
        let limit = gateway.limits.maxConnections
        let previous = open.wrappingAdd(1, ordering: .relaxed).oldValue
        if previous >= limit {
            open.wrappingSubtract(1, ordering: .relaxed)
            return .failure(.connectionLimit(limit))
        }
        guard let perSource = gateway.limits.maxConnectionsPerSource, let source = source?.unmapped else {
            return .success(AdmissionSlot(source: nil))
        }
        guard sourceCounts.take(source, limit: perSource) else {
            open.wrappingSubtract(1, ordering: .relaxed)
            return .failure(.sourceConnectionLimit(perSource))
        }
        return .success(AdmissionSlot(source: source))
    }

    /// Gives back the slots of a connection admitted with ``admit(source:gateway:)``.
    func release(_ slot: AdmissionSlot) {
        open.wrappingSubtract(1, ordering: .relaxed)
        if let source = slot.source { sourceCounts.give(source) }
    }

    /// Client connections open now.
    public var openConnections: Int { open.load(ordering: .relaxed) }
}
