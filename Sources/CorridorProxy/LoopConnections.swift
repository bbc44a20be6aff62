import CorridorPolicy
import NIOCore

/// The connections of one NIO event loop: tls and connect connections still being read, decided
/// or dialled (their ``InspectHandler``), the relays (their ``RelaySession``), and the http
/// listener's (their ``HTTPProxyHandler``, to recheck the exchange under way and to end them at
/// shutdown). Sweeps the relays
/// once a second, only while it has some (instead of a timer and a pipeline handler per
/// connection): idle ones close, interim records are written. Decides the relays again after a
/// policy change when live connections are rechecked, and ends every connection at shutdown.
final class LoopConnections {
    static let interval: TimeAmount = .seconds(1)
    private let eventLoop: any EventLoop
    private var opening = SlotList<InspectHandler>(slot: { $0.tableSlot }, setSlot: { $0.tableSlot = $1 })
    private var sessions = SlotList<RelaySession>(slot: { $0.tableSlot }, setSlot: { $0.tableSlot = $1 })
    private var plainHTTP = SlotList<HTTPProxyHandler>(slot: { $0.tableSlot }, setSlot: { $0.tableSlot = $1 })
    private var scheduled: Scheduled<Void>?

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Relays watched.
    var count: Int { sessions.count }

    func add(_ handler: InspectHandler) {
        opening.insert(handler)
    }

    func remove(_ handler: InspectHandler) {
        opening.remove(handler)
    }

    func add(_ handler: HTTPProxyHandler) {
        plainHTTP.insert(handler)
    }

    func remove(_ handler: HTTPProxyHandler) {
        plainHTTP.remove(handler)
    }

    func add(_ session: RelaySession) {
        guard session.table == nil else { return }
        session.table = self
        sessions.insert(session)
        scheduleIfNeeded()
    }

    func remove(_ session: RelaySession) {
        guard session.table === self else { return }
        sessions.remove(session)
        session.table = nil
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
        for handler in plainHTTP.items { handler.recheck(against: snapshot) }
    }

    /// Ends every connection of this loop now (cause `shutdown`).
    func shutdown() {
        for handler in opening.items { handler.shutdown() }
        for session in sessions.items { session.shutdown() }
        for handler in plainHTTP.items { handler.shutdown() }
    }

    func sweep() {
        // Closing may remove sessions from the list (a close can complete at once): walk a copy.
        let now = eventLoop.now
        let clock = ContinuousClock.now
        for session in sessions.items { session.tick(now: now, clock: clock) }
    }
}

@available(*, unavailable)
extension LoopConnections: Sendable {}
