import CorridorPolicy
import Synchronization

/// Holds the current policy snapshot and what was compiled from it (the TLS origination
/// contexts). The control plane swaps both atomically; every connection reads them once, when it
/// is accepted, and keeps them for its whole life.
public final class PolicyStore: Sendable {
    private let state: Mutex<(snapshot: PolicySnapshot, origination: OriginationContexts)>

    public init(_ snapshot: PolicySnapshot, origination: OriginationContexts = .empty) {
        self.state = Mutex((snapshot, origination))
    }

    public var current: PolicySnapshot { state.withLock { $0.snapshot } }

    /// The snapshot and its origination contexts, read together.
    public var currentWithOrigination: (snapshot: PolicySnapshot, origination: OriginationContexts) { state.withLock { $0 } }

    /// Replaces the snapshot; connections already accepted keep the one they read.
    public func replace(with snapshot: PolicySnapshot, origination: OriginationContexts = .empty) {
        state.withLock { $0 = (snapshot, origination) }
    }
}
