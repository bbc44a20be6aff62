import CorridorPolicy
import NIOCore

/// The relay of one connection: byte counts both ways, the last time a byte moved, and the access
/// record, written when both sides have closed. Confined to the connection's event loop.
final class RelaySession {
    private let record: ConnectionRecord
    private let context: ProxyContext
    private var closedSides = 0
    private var cause: CloseCause = .completed
    /// No byte either way for this long closes the relay (`spec.limits.idleTimeout`).
    let idleLimit: TimeAmount
    private(set) var lastActivity: NIODeadline
    /// Set while an ``IdleSweeper`` watches the relay: the client channel to close when idle.
    var clientChannel: (any Channel)?
    weak var sweeper: IdleSweeper?
    /// Where the sweeper keeps this session (its index in the sweeper's ``SlotList``).
    var sweepSlot = -1

    init(record: ConnectionRecord, context: ProxyContext, idleLimit: TimeAmount = .hours(1), now: NIODeadline = .now()) {
        self.record = record
        self.context = context
        self.idleLimit = idleLimit
        self.lastActivity = now
    }

    func count(bytes: Int, fromClient: Bool, at now: NIODeadline) {
        if fromClient { record.bytesUp += bytes } else { record.bytesDown += bytes }
        lastActivity = now
    }

    func isIdle(at now: NIODeadline) -> Bool { now - lastActivity >= idleLimit }

    /// Writes an interim record when one is due (`logging.accessLog.interimInterval`).
    func writeInterimIfDue(at now: ContinuousClock.Instant) {
        guard closedSides == 0, let flows = context.accessLog.flows, flows.interimDue(record, at: now) else { return }
        record.interims += 1
        context.accessLog.writeInterim(record)
    }

    /// Closes the relay as idle: the client side closes, and its glue closes the upstream side.
    func closeForIdle() {
        if cause == .completed { cause = .idleTimeout }
        clientChannel?.close(promise: nil)
    }

    /// Closes the relay if `snapshot` no longer allows it (`spec.reload.liveConnections: Recheck`).
    func recheck(against snapshot: PolicySnapshot) {
        guard closedSides == 0, record.revoked(by: snapshot) else { return }
        cause = .policyRevoked
        clientChannel?.close(promise: nil)
    }

    func error(fromClient: Bool) {
        if cause == .completed { cause = fromClient ? .clientError : .upstreamError }
    }

    func sideClosed(isClientSide: Bool) {
        closedSides += 1
        if closedSides == 2 {
            sweeper?.remove(self)
            clientChannel = nil
            record.finish(cause, log: context.accessLog, metrics: context.metrics)
        }
    }
}

@available(*, unavailable)
extension RelaySession: Sendable {}
