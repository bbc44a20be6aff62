/// What the gateway last wrote to each object's `Accepted` condition, deciding whether a new
/// update is written now. Pure: the caller passes the time.
///
/// The compiler asks for an update whenever an object's status differs from what the gateway
/// means to say. Between a write and the watch echoing it, builds still see the old status and ask
/// again: those repeats are skipped (the object is still at the version the write was made over).
/// When the object has moved on and still says something else, another writer (a controller, a
/// person with `kubectl edit --subresource=status`) overwrote the condition: it is written back,
/// counted as a conflict, and each further rewrite of the same condition waits twice as long as
/// the last (1 s up to 5 min), so two writers never fight in a tight loop. A write the API refused
/// because the object had changed (409) is made again over the new version, after a pause that
/// also doubles with each refusal in a row; a refusal is no overwrite and counts no conflict.
public struct StatusWriteLedger: Sendable {
    public enum Verdict: Equatable, Sendable {
        /// Write it now.
        case write
        /// The gateway's own write of this condition has not come back through the watch yet.
        case skip
        /// Another writer keeps overwriting it: write again no earlier than this.
        case wait(until: ContinuousClock.Instant)
    }

    private struct Entry: Sendable {
        var condition: KubeCondition
        /// The resourceVersion the write was made over.
        var over: String?
        var at: ContinuousClock.Instant
        /// Writes of this same condition in a row after another writer overwrote it.
        var rewrites: Int
        /// The version at which the last conflict was counted (one conflict per overwrite).
        var conflictSeenAt: String?
        /// The last attempt to write this condition was refused (409) at this time, after
        /// `refusals` refusals in a row.
        var refusedAt: ContinuousClock.Instant?
        var refusals = 0
    }

    /// Entries kept at most; past that the ledger starts again (it only saves repeated writes).
    public static let maxEntries = 50_000
    static let maxBackoff: Duration = .seconds(300)

    private var entries: [String: Entry] = [:]

    public init() {}

    /// How long after the last write a rewrite waits, by how many rewrites came before it.
    static func backoff(rewrites: Int) -> Duration {
        guard rewrites > 0 else { return .zero }
        return min(.seconds(1 << min(rewrites - 1, 20)), maxBackoff)
    }

    /// Whether to write `update` at `now`, and whether it reveals a new overwrite by another writer.
    public mutating func consider(_ update: StatusUpdate, now: ContinuousClock.Instant) -> (verdict: Verdict, conflict: Bool) {
        guard var last = entries[update.key], last.condition.sameState(as: update.condition) else { return (.write, false) }
        if let refusedAt = last.refusedAt {
            let notBefore = refusedAt + Self.backoff(rewrites: last.refusals)
            return (now >= notBefore ? .write : .wait(until: notBefore), false)
        }
        if update.observedResourceVersion == last.over { return (.skip, false) }
        var conflict = false
        if last.conflictSeenAt != update.observedResourceVersion {
            conflict = true
            last.conflictSeenAt = update.observedResourceVersion
            entries[update.key] = last
        }
        let notBefore = last.at + Self.backoff(rewrites: last.rewrites)
        return (now >= notBefore ? .write : .wait(until: notBefore), conflict)
    }

    /// Records a successful write of `update` at `now`.
    public mutating func written(_ update: StatusUpdate, at now: ContinuousClock.Instant) {
        if entries.count >= Self.maxEntries { entries.removeAll() }
        let previous = entries[update.key]
        var rewrites = 0
        if let previous, previous.condition.sameState(as: update.condition) {
            // A write after refusals is the write those were for, not a rewrite over another writer.
            rewrites = previous.refusedAt == nil ? previous.rewrites + 1 : previous.rewrites
        }
        entries[update.key] = Entry(condition: update.condition, over: update.observedResourceVersion, at: now, rewrites: rewrites,
                                    conflictSeenAt: previous?.conflictSeenAt)
    }

    /// Records that the API refused `update` at `now` because the object had changed (409): the
    /// next write of it waits a pause that grows with the refusals in a row. The last successful
    /// write, if any, stays what an echo is compared with.
    public mutating func refused(_ update: StatusUpdate, at now: ContinuousClock.Instant) {
        if entries.count >= Self.maxEntries { entries.removeAll() }
        var entry = entries[update.key].flatMap { $0.condition.sameState(as: update.condition) ? $0 : nil }
            ?? Entry(condition: update.condition, over: nil, at: now, rewrites: 0, conflictSeenAt: nil)
        entry.refusals += 1
        entry.refusedAt = now
        entries[update.key] = entry
    }

    /// Forgets `update`'s object (deleted, or its write failed and will be tried afresh).
    public mutating func forget(_ update: StatusUpdate) {
        entries[update.key] = nil
    }
}
