import CorridorPolicy
import Synchronization

/// Holds the current policy snapshot and what was compiled from it (the TLS origination
/// contexts). The control plane swaps both atomically. A tunnel reads them once, when it is
/// accepted (and, with `spec.reload.liveConnections: Recheck`, is decided again after each swap);
/// a plain-HTTP connection reads them again for every request.
public final class PolicyStore: Sendable {
    private let state: Mutex<(snapshot: PolicySnapshot, origination: OriginationContexts)>
    private let latestGeneration: Atomic<Int>

    public init(_ snapshot: PolicySnapshot, origination: OriginationContexts = .empty) {
        self.state = Mutex((snapshot, origination))
        self.latestGeneration = Atomic(snapshot.generation)
    }

    public var current: PolicySnapshot { state.withLock { $0.snapshot } }

    /// The snapshot and its origination contexts, read together.
    public var currentWithOrigination: (snapshot: PolicySnapshot, origination: OriginationContexts) { state.withLock { $0 } }

    /// The generation of the current snapshot, read without the lock: a connection that decided on
    /// an older snapshot compares it before it starts relaying.
    public var generation: Int { latestGeneration.load(ordering: .acquiring) }

    /// Replaces the snapshot; see ``ProxyContext/install(_:origination:)`` for what live connections do.
    public func replace(with snapshot: PolicySnapshot, origination: OriginationContexts = .empty) {
        state.withLock {
            $0 = (snapshot, origination)
            latestGeneration.store(snapshot.generation, ordering: .releasing)
        }
    }
}
