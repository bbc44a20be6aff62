import CorridorPolicy
import NIOCore

/// The NIO plane's relay of one connection, the second half of its driver (after
/// ``InspectHandler``): it holds the connection's ``ConnectionStateMachine`` once the relay has
/// started, counts bytes both ways on the record, keeps the last time a byte moved, and reports the
/// relay's end (both sides closed) with its cause. Confined to the connection's event loop.
final class RelaySession {
    private var machine: ConnectionStateMachine
    private var closedSides = 0
    /// How the relay ends unless the machine ends it first (idle, revoked, shutdown).
    private var cause: CloseCause = .completed
    private(set) var lastActivity: NIODeadline
    /// The client and upstream channels, closed when the machine ends the relay.
    var clientChannel: (any Channel)?
    var upstreamChannel: (any Channel)?
    /// The machine ended the relay itself (its record is written, its slot given back): both
    /// channels close at once.
    private(set) var endedByMachine = false
    weak var table: LoopConnections?
    /// Where the table keeps this session (its index in the table's ``SlotList``).
    var tableSlot = -1

    /// `machine` must be relaying.
    init(machine: ConnectionStateMachine, now: NIODeadline) {
        precondition(machine.isRelaying, "a relay session starts with a relaying connection")
        self.machine = machine
        self.lastActivity = now
    }

    var record: ConnectionRecord { machine.record }

    /// How long a relay may go without moving a byte (`limits.idleTimeout`).
    var idleLimit: Duration { machine.idleLimit }

    func count(bytes: Int, fromClient: Bool, at now: NIODeadline) {
        if fromClient { machine.record.bytesUp += bytes } else { machine.record.bytesDown += bytes }
        lastActivity = now
    }

    /// Whether reads must go through ``passes(_:fromClient:)`` before they are sent on.
    var inspectsRelay: Bool { machine.inspectsRelay }

    /// Shows the machine bytes just read; false when they must not be sent on (the machine
    /// refused them and ended the connection).
    func passes(_ bytes: ByteBuffer, fromClient: Bool) -> Bool {
        guard let refusal = bytes.withUnsafeReadableBytes({ machine.inspect($0, fromClient: fromClient) }) else { return true }
        apply(refusal)
        return false
    }

    /// The table's sweep: the idle limit, and interim records.
    func tick(now: NIODeadline, clock: ContinuousClock.Instant) {
        guard closedSides == 0 else { return }
        apply(machine.tick(now: clock, idleFor: .nanoseconds((now - lastActivity).nanoseconds)))
    }

    func recheck(against snapshot: PolicySnapshot) {
        guard closedSides == 0 else { return }
        apply(machine.recheck(against: snapshot))
    }

    func shutdown() {
        apply(machine.shutdown())
    }

    /// The relay could not be set up (its handlers could not be added): it ends at once.
    func setUpFailed() {
        apply(machine.relayEnded(.internalError))
    }

    func error(fromClient: Bool) {
        if cause == .completed { cause = fromClient ? .clientError : .upstreamError }
    }

    func sideClosed(isClientSide: Bool) {
        closedSides += 1
        if closedSides == 2 {
            table?.remove(self)
            clientChannel = nil
            upstreamChannel = nil
            apply(machine.relayEnded(cause))
        }
    }

    private func apply(_ action: ConnectionStateMachine.Action) {
        switch action.next {
        case .wait:
            return
        case .close:
            table?.remove(self)
            endedByMachine = true
            if let reply = action.reply { clientChannel?.writeAndFlush(reply, promise: nil) }
            clientChannel?.close(promise: nil)
            // Closed directly too: its side may be past the glue's own close (its peer, the
            // client, went first and left it finishing its writes).
            upstreamChannel?.close(promise: nil)
        case .read, .pauseReads, .resolve, .connect, .relay, .handOverToHTTP, .discardUpstream:
            preconditionFailure("a relay was asked to \(action.next)")
        }
    }
}

@available(*, unavailable)
extension RelaySession: Sendable {}
