import CorridorPolicy
import CorridorWire
import NIOCore
import Testing

@testable import CorridorProxy

/// The connection engine, every phase against every event: what it answers, that a connection is
/// recorded exactly once (when it closes, never again after), and that an event the drivers never
/// report in a phase stops the process instead of being ignored.
@Suite(.timeLimit(.minutes(1)))
struct ConnectionStateMachineTableTests {
    /// The phases a driver can find the machine in, after `start`.
    enum Phase: String, CaseIterable, Codable, Sendable {
        case readingClientHello, readingConnectHead, resolving, connecting, relaying, handedOver, closed
    }

    /// What a driver reports. Stale: for a dial attempt the machine has given up (attempt 99).
    enum Event: String, CaseIterable, Codable, Sendable {
        case bytes, resolved, connected, staleConnected, connectFailed, staleConnectFailed, relayEnded, recheck,
             deadlinesPassed, halfClose, close, clientFailed, internalFailure, shutdown
    }

    /// What the machine answers, as the kind of its next step.
    enum Outcome: Equatable, CustomStringConvertible {
        case read, wait, pauseReads, resolve, connect, relay, handOver, close, discard
        /// A precondition failure: the event is impossible in that phase.
        case stops

        var description: String {
            switch self {
            case .read: "read"
            case .wait: "wait"
            case .pauseReads: "pauseReads"
            case .resolve: "resolve"
            case .connect: "connect"
            case .relay: "relay"
            case .handOver: "handOver"
            case .close: "close"
            case .discard: "discard"
            case .stops: "stops"
            }
        }
    }

    static let expected: [Phase: [Event: Outcome]] = [
        // "x" is no TLS record: refused as an invalid ClientHello.
        .readingClientHello: [
            .bytes: .close, .resolved: .stops, .connected: .stops, .staleConnected: .stops, .connectFailed: .stops,
            .staleConnectFailed: .stops, .relayEnded: .stops, .recheck: .wait, .deadlinesPassed: .close, .halfClose: .close,
            .close: .close, .clientFailed: .close, .internalFailure: .close, .shutdown: .close,
        ],
        // "x" can still begin a method: more is read.
        .readingConnectHead: [
            .bytes: .read, .resolved: .stops, .connected: .stops, .staleConnected: .stops, .connectFailed: .stops,
            .staleConnectFailed: .stops, .relayEnded: .stops, .recheck: .wait, .deadlinesPassed: .close, .halfClose: .close,
            .close: .close, .clientFailed: .close, .internalFailure: .close, .shutdown: .close,
        ],
        // The resolver has deadlines of its own; bytes are kept for the upstream; a half-close is
        // passed on once relaying.
        .resolving: [
            .bytes: .wait, .resolved: .connect, .connected: .stops, .staleConnected: .stops, .connectFailed: .stops,
            .staleConnectFailed: .stops, .relayEnded: .stops, .recheck: .wait, .deadlinesPassed: .wait, .halfClose: .wait,
            .close: .close, .clientFailed: .close, .internalFailure: .close, .shutdown: .close,
        ],
        // One address: its failure or its deadline ends the connection.
        .connecting: [
            .bytes: .wait, .resolved: .stops, .connected: .relay, .staleConnected: .discard, .connectFailed: .close,
            .staleConnectFailed: .wait, .relayEnded: .stops, .recheck: .wait, .deadlinesPassed: .close, .halfClose: .wait,
            .close: .close, .clientFailed: .close, .internalFailure: .close, .shutdown: .close,
        ],
        // The relay reports its own ending; the client's bytes and closes are the relay's.
        .relaying: [
            .bytes: .stops, .resolved: .stops, .connected: .stops, .staleConnected: .stops, .connectFailed: .stops,
            .staleConnectFailed: .stops, .relayEnded: .close, .recheck: .wait, .deadlinesPassed: .close, .halfClose: .stops,
            .close: .stops, .clientFailed: .stops, .internalFailure: .stops, .shutdown: .close,
        ],
        // The HTTP path owns the connection; what was read with the hand-over is ignored.
        .handedOver: [
            .bytes: .wait, .resolved: .stops, .connected: .stops, .staleConnected: .stops, .connectFailed: .stops,
            .staleConnectFailed: .stops, .relayEnded: .stops, .recheck: .wait, .deadlinesPassed: .wait, .halfClose: .wait,
            .close: .wait, .clientFailed: .wait, .internalFailure: .wait, .shutdown: .wait,
        ],
        // Ended: what was in flight when it ended arrives late and changes nothing, except that a
        // dial that completes anyway is closed.
        .closed: [
            .bytes: .wait, .resolved: .wait, .connected: .discard, .staleConnected: .discard, .connectFailed: .wait,
            .staleConnectFailed: .wait, .relayEnded: .wait, .recheck: .wait, .deadlinesPassed: .wait, .halfClose: .wait,
            .close: .wait, .clientFailed: .wait, .internalFailure: .wait, .shutdown: .wait,
        ],
    ]

    static var answered: [(Phase, Event)] { cases { $0 != .stops } }
    static var impossible: [(Phase, Event)] { cases { $0 == .stops } }

    private static func cases(_ filter: (Outcome) -> Bool) -> [(Phase, Event)] {
        Phase.allCases.flatMap { phase in Event.allCases.filter { filter(expected[phase]![$0]!) }.map { (phase, $0) } }
    }

    static let t0 = ContinuousClock.now

    @Test func theTableCoversEveryPhaseAndEvent() {
        for phase in Phase.allCases {
            #expect(Set(Self.expected[phase]?.keys.map(\.self) ?? []) == Set(Event.allCases), "\(phase)")
        }
    }

    @Test(arguments: answered)
    func answers(_ phase: Phase, _ event: Event) throws {
        let harness = try ProxyHarness(limits: "{handshakeTimeout: 2s, connectTimeout: 1s, idleTimeout: 30s}",
                                       gatewayExtra: dialablePrivateRange)
        defer { harness.shutdown() }
        var machine = try Self.machine(in: phase, harness)
        let recordsBefore = try harness.records().count
        let outcome = Self.outcome(Self.report(event, to: &machine, harness))
        let expected = Self.expected[phase]![event]!
        #expect(outcome == expected, "\(phase) + \(event)")
        let written = try harness.records().count - recordsBefore
        // A connection is recorded when it closes, and once; a hand-over leaves the records to the
        // HTTP path.
        #expect(written == (outcome == .close ? 1 : 0), "\(phase) + \(event): \(written) records written")
        if outcome == .close || phase == .closed {
            #expect(machine.isFinished && machine.deadline == nil, "\(phase) + \(event): ended, with no deadline left")
        }
    }

    @Test(arguments: impossible)
    func stopsTheProcess(_ phase: Phase, _ event: Event) async {
        await #expect(processExitsWith: .failure, "\(phase) + \(event)") { [phase, event] in
            let harness = try ProxyHarness(gatewayExtra: dialablePrivateRange)
            var machine = try ConnectionStateMachineTableTests.machine(in: phase, harness)
            _ = ConnectionStateMachineTableTests.report(event, to: &machine, harness)
        }
    }

    // MARK: driving

    /// A machine of the checkout workload for api.allowed.test, driven to `phase` by events alone.
    static func machine(in phase: Phase, _ harness: ProxyHarness) throws -> ConnectionStateMachine {
        let source = try SocketAddress(ipAddress: workloadSource, port: 40_001)
        let front: ConnectionStateMachine.Front = phase == .readingConnectHead || phase == .handedOver ? .connect : .tls
        var machine = ConnectionStateMachine(front: front, listener: front == .tls ? "tls" : "connect", source: source, proxy: harness.proxy)
        _ = machine.start(now: t0, originalDestination: nil)
        switch phase {
        case .readingClientHello, .readingConnectHead:
            break
        case .handedOver:
            let request = "GET http://api.allowed.test/ HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n"
            guard case .handOverToHTTP(_, let slot) = machine.received(ByteBuffer(string: request), now: t0).next else {
                throw HarnessError.unexpected("no hand-over")
            }
            harness.proxy.release(slot)
        case .resolving, .connecting, .relaying:
            let hello = ClientHelloBuilder(serverName: "api.allowed.test").record
            guard case .resolve = machine.received(ByteBuffer(bytes: hello), now: t0).next else { throw HarnessError.unexpected("no lookup") }
            if phase == .resolving { break }
            guard case .connect(_, 1) = machine.resolved(.success([try #require(IPAddress(parsing: pretendUpstream))]), now: t0).next
            else { throw HarnessError.unexpected("no dial") }
            if phase == .connecting { break }
            guard case .relay = machine.connected(attempt: 1, now: t0).next else { throw HarnessError.unexpected("no relay") }
        case .closed:
            guard case .close = machine.clientClosed(halfClose: false).next else { throw HarnessError.unexpected("not closed") }
        }
        return machine
    }

    static func report(_ event: Event, to machine: inout ConnectionStateMachine, _ harness: ProxyHarness) -> ConnectionStateMachine.Action {
        let later = t0 + .seconds(600)
        switch event {
        case .bytes: return machine.received(ByteBuffer(string: "x"), now: t0)
        case .resolved: return machine.resolved(.success([IPAddress(parsing: pretendUpstream)!]), now: t0)
        case .connected: return machine.connected(attempt: 1, now: t0)
        case .staleConnected: return machine.connected(attempt: 99, now: t0)
        case .connectFailed: return machine.connectFailed(attempt: 1, "refused", now: t0)
        case .staleConnectFailed: return machine.connectFailed(attempt: 99, "refused", now: t0)
        case .relayEnded: return machine.relayEnded(.completed)
        case .recheck: return machine.recheck(against: harness.proxy.policy.current)
        case .deadlinesPassed: return machine.tick(now: later, idleFor: .seconds(600))
        case .halfClose: return machine.clientClosed(halfClose: true)
        case .close: return machine.clientClosed(halfClose: false)
        case .clientFailed: return machine.clientFailed("reset")
        case .internalFailure: return machine.internalFailure("cannot watch the connection")
        case .shutdown: return machine.shutdown()
        }
    }

    static func outcome(_ action: ConnectionStateMachine.Action) -> Outcome {
        switch action.next {
        case .read: .read
        case .wait: .wait
        case .pauseReads: .pauseReads
        case .resolve: .resolve
        case .connect: .connect
        case .relay: .relay
        case .handOverToHTTP: .handOver
        case .close: .close
        case .discardUpstream: .discard
        }
    }
}
