import CorridorPolicy
import Synchronization

/// Holds the current policy snapshot. The control plane swaps it atomically; every connection
/// reads it once, when it is decided, and keeps that snapshot for its whole life.
public final class PolicyStore: Sendable {
    private let state: Mutex<PolicySnapshot>

    public init(_ snapshot: PolicySnapshot) {
        self.state = Mutex(snapshot)
    }

    public var current: PolicySnapshot { state.withLock { $0 } }

    /// Replaces the snapshot; connections already decided keep the one they read.
    public func replace(with snapshot: PolicySnapshot) {
        state.withLock { $0 = snapshot }
    }
}
