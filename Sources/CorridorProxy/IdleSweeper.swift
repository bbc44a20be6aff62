import CorridorPolicy
import NIOCore

/// The relays of one event loop. Closes those that moved no byte for their idle limit (one sweep
/// a second, only while it has relays, instead of a timer and a pipeline handler per connection),
/// and decides them all again after a policy change when live connections are rechecked.
final class IdleSweeper {
    static let interval: TimeAmount = .seconds(1)
    private let eventLoop: any EventLoop
    /// The relays watched.
    private var sessions = SlotList<RelaySession>(slot: \.sweepSlot)
    private var scheduled: Scheduled<Void>?

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    var count: Int { sessions.count }

    func add(_ session: RelaySession) {
        guard session.sweeper == nil else { return }
        session.sweeper = self
        sessions.insert(session)
        scheduleIfNeeded()
    }

    func remove(_ session: RelaySession) {
        guard session.sweeper === self else { return }
        sessions.remove(session)
        session.sweeper = nil
    }

    private func scheduleIfNeeded() {
        guard scheduled == nil, !sessions.isEmpty else { return }
        scheduled = eventLoop.assumeIsolated().scheduleTask(in: Self.interval) { [weak self] in
            guard let self else { return }
            self.scheduled = nil
            self.sweep()
            self.scheduleIfNeeded()
        }
    }

    func recheck(against snapshot: PolicySnapshot) {
        for session in sessions.items { session.recheck(against: snapshot) }
    }

    func sweep() {
        let now = eventLoop.now
        // Closing may remove sessions from the array (a close can complete at once): walk a copy.
        let clock = ContinuousClock.now
        for session in sessions.items {
            if session.isIdle(at: now) { session.closeForIdle() } else { session.writeInterimIfDue(at: clock) }
        }
    }
}

@available(*, unavailable)
extension IdleSweeper: Sendable {}
