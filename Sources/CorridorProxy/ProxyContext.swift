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
    /// One idle-relay sweeper per event loop.
    private let sweepers = Mutex<[ObjectIdentifier: NIOLoopBound<IdleSweeper>]>([:])
    private let open = Atomic<Int>(0)

    public init(policy: PolicyStore, resolver: Resolver, accessLog: AccessLog, metrics: ProxyMetrics, logger: Logger) {
        self.policy = policy
        self.resolver = resolver
        self.accessLog = accessLog
        self.metrics = metrics
        self.logger = logger
    }

    /// The idle-relay sweeper of `eventLoop`; call on that event loop.
    func sweeper(for eventLoop: any EventLoop) -> IdleSweeper {
        let key = ObjectIdentifier(eventLoop)
        if let bound = sweepers.withLock({ $0[key] }) { return bound.value }
        let bound = NIOLoopBound(IdleSweeper(eventLoop: eventLoop), eventLoop: eventLoop)
        sweepers.withLock { $0[key] = $0[key] ?? bound }
        return sweepers.withLock { $0[key]! }.value
    }

    /// The upstream pool of `eventLoop`; call on that event loop.
    func pool(for eventLoop: any EventLoop) -> UpstreamPool {
        let key = ObjectIdentifier(eventLoop)
        if let bound = pools.withLock({ $0[key] }) { return bound.value }
        let bound = NIOLoopBound(UpstreamPool(eventLoop: eventLoop), eventLoop: eventLoop)
        pools.withLock { $0[key] = $0[key] ?? bound }
        return pools.withLock { $0[key]! }.value
    }

    func makeConnectionID() -> UInt64 { nextID.wrappingAdd(1, ordering: .relaxed).oldValue }

    /// Takes a slot in the connection budget for `channel`, given back when the channel closes;
    /// false when `limit` connections are already open.
    func admit(_ channel: any Channel, limit: Int) -> Bool {
        let previous = open.wrappingAdd(1, ordering: .relaxed).oldValue
        if previous >= limit {
            open.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        channel.closeFuture.whenComplete { [self] _ in open.wrappingSubtract(1, ordering: .relaxed) }
        return true
    }

    /// The reason recorded for a connection refused by ``admit(_:limit:)``.
    static func connectionLimitReason(_ limit: Int) -> String {
        "the gateway already has \(limit) open connections (spec.limits.maxConnections)"
    }

    /// Client connections open now.
    public var openConnections: Int { open.load(ordering: .relaxed) }
}
