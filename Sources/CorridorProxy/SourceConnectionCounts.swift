import CorridorPolicy
import Synchronization

/// How many connections each source address holds open, for `spec.limits.maxConnectionsPerSource`.
/// Only sources with a connection open have an entry, so the table is bounded by the connections.
final class SourceConnectionCounts: Sendable {
    private let counts = Mutex<[IPAddress: Int]>([:])

    /// Counts one more connection of `source`; false (and nothing counted) when it holds `limit`.
    func take(_ source: IPAddress, limit: Int) -> Bool {
        counts.withLock { counts in
            let held = counts[source, default: 0]
            guard held < limit else { return false }
            counts[source] = held + 1
            return true
        }
    }

    /// Gives back one connection of `source` taken with ``take(_:limit:)``.
    func give(_ source: IPAddress) {
        counts.withLock { counts in
            guard let held = counts[source] else { preconditionFailure("a connection of \(source) given back that was never taken") }
            counts[source] = held > 1 ? held - 1 : nil
        }
    }
}
