import CorridorPolicy
import CorridorWire
import NIOCore
import Testing

@testable import CorridorProxy

/// The connection engine on its own: events in, actions out, time given by the test (a manual
/// clock: instants counted from `t0`). No socket is opened and nothing is dialled; the addresses
/// "resolved" are in 10.9.0.0/16, which the harness lets through the guard.
@Suite(.timeLimit(.minutes(1)))
struct ConnectionStateMachineTests {
    static let limits = "{handshakeTimeout: 2s, connectTimeout: 1s, idleTimeout: 30s}"
    let t0 = ContinuousClock.now
    let hello = ClientHelloBuilder(serverName: "api.allowed.test").record

    private func withMachineHarness(limits: String = Self.limits, _ body: (ProxyHarness) throws -> Void) throws {
        try withHarness(limits: limits, gatewayExtra: dialablePrivateRange, body)
    }

    private func machine(_ harness: ProxyHarness, _ front: ConnectionStateMachine.Front = .tls, from source: String = workloadSource,
                         port: Int = 40_001) throws -> ConnectionStateMachine {
        ConnectionStateMachine(front: front, listener: front == .tls ? "tls" : "connect",
                               source: try SocketAddress(ipAddress: source, port: port), proxy: harness.proxy)
    }

    private func ips(_ list: String...) throws -> [IPAddress] { try list.map { try #require(IPAddress(parsing: $0)) } }
    private func text(_ buffer: ByteBuffer?) -> String { buffer.map { String(buffer: $0) } ?? "" }
    private func bytes(_ buffer: ByteBuffer?) -> [UInt8] { buffer.map { Array($0.readableBytesView) } ?? [] }

    // MARK: reading and deciding

    @Test func aPartialHelloWaitsAndTheHandshakeDeadlineEndsIt() throws {
        try withMachineHarness { harness in
            var m = try machine(harness)
            #expect(isRead(m.start(now: t0, originalDestination: nil)))
            #expect(m.deadline == t0 + .seconds(2))
            #expect(isRead(m.received(ByteBuffer(bytes: hello.prefix(20)), now: t0 + .seconds(1))))
            #expect(isWait(m.tick(now: t0 + .milliseconds(1_999))), "not before the deadline")
            #expect(try harness.records().isEmpty)
            let end = m.tick(now: t0 + .seconds(2))
            #expect(isClose(end) && end.reply == nil, "a client that has not finished its ClientHello gets no alert")
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "handshake_timeout")
            #expect(record.string(LogKey.reason) == "no complete ClientHello within 2s")
            #expect(m.isFinished && m.deadline == nil)
        }
    }

    @Test func anAllowedHelloIsResolvedDialledInTurnAndRelayedWithItsBytes() throws {
        try withMachineHarness { harness in
            var m = try machine(harness)
            #expect(!m.isReadingRequest, "not before start")
            _ = m.start(now: t0, originalDestination: nil)
            #expect(m.isReadingRequest)
            guard case .resolve(let host) = m.received(ByteBuffer(bytes: hello), now: t0).next else { Issue.record("no lookup"); return }
            #expect(host == "api.allowed.test")
            #expect(!m.isReadingRequest, "the request is read: the connection is decided")
            #expect(m.deadline == nil, "the resolver times its own lookups")
            // Two addresses: the first attempt times out on the machine's deadline, the second connects.
            guard case .connect(let first, let one) = m.resolved(.success(try ips("10.9.0.5", "10.9.0.6")), now: t0 + .milliseconds(10)).next
            else { Issue.record("no dial"); return }
            #expect(first == (try SocketAddress(ipAddress: "10.9.0.5", port: 443)))
            #expect(m.deadline == t0 + .milliseconds(1_010))
            guard case .connect(let second, let two) = m.tick(now: t0 + .milliseconds(1_010)).next else { Issue.record("no second dial"); return }
            #expect(second == (try SocketAddress(ipAddress: "10.9.0.6", port: 443)) && two == one + 1)
            #expect(isWait(m.connectFailed(attempt: one, "late", now: t0 + .seconds(2))), "the given-up attempt's failure changes nothing")
            #expect(isDiscard(m.connected(attempt: one, now: t0 + .seconds(2))), "the given-up attempt's connection is closed")
            let relay = m.connected(attempt: two, now: t0 + .milliseconds(1_500))
            guard case .relay(let prefix, let ended) = relay.next else { Issue.record("no relay"); return }
            #expect(bytes(prefix) == hello && !ended)
            #expect(m.isRelaying && m.deadline == nil && !m.isReadingRequest)
            #expect(m.record.bytesUp == hello.count)
            #expect(m.record.resolved == second)
            #expect(try harness.records().isEmpty, "a relay's record is written when it ends")
            #expect(isWait(m.tick(now: t0 + .seconds(40), idleFor: .seconds(29))))
            #expect(isClose(m.tick(now: t0 + .seconds(41), idleFor: .seconds(30))))
            #expect(isWait(m.relayEnded(.completed)), "the driver's own close coming back changes nothing")
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "idle_timeout")
            #expect(record.string(LogKey.decision) == "allow")
            #expect(record.string(LogKey.resolved) == "10.9.0.6:443")
        }
    }

    @Test func everyAddressFailingEndsWithTheLastFailureAndAnInternalErrorAlert() throws {
        try withMachineHarness { harness in
            var m = try machine(harness)
            _ = m.start(now: t0, originalDestination: nil)
            _ = m.received(ByteBuffer(bytes: hello), now: t0)
            guard case .connect(_, let attempt) = m.resolved(.success(try ips("10.9.0.5")), now: t0).next else { Issue.record("no dial"); return }
            let end = m.connectFailed(attempt: attempt, "Connection refused", now: t0)
            #expect(isClose(end))
            #expect(bytes(end.reply) == [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50], "internal_error")
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "connect_failed")
            #expect(record.string(LogKey.decision) == "allow", "the policy allowed it; the upstream could not be reached")
            #expect(record.string(LogKey.reason)?.hasSuffix("; connect to 10.9.0.5:443 failed: Connection refused") == true)
        }
    }

    @Test func aResolvedAddressInABlockedRangeIsRefused() throws {
        try withMachineHarness { harness in
            var m = try machine(harness)
            _ = m.start(now: t0, originalDestination: nil)
            _ = m.received(ByteBuffer(bytes: hello), now: t0)
            let end = m.resolved(.success(try ips("169.254.169.254")), now: t0)
            #expect(isClose(end) && bytes(end.reply) == accessDeniedAlert)
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "destination_blocked")
            #expect(record.string(LogKey.decision) == "deny")
            #expect(record.strings(LogKey.signals) == ["guard_refused"])
        }
    }

    @Test func aDeniedHelloGetsAccessDenied() throws {
        try withMachineHarness { harness in
            var m = try machine(harness)
            _ = m.start(now: t0, originalDestination: nil)
            let end = m.received(ByteBuffer(bytes: ClientHelloBuilder(serverName: "evil.test").record), now: t0)
            #expect(isClose(end) && bytes(end.reply) == accessDeniedAlert)
            #expect(try harness.onlyRecord().string(LogKey.closeCause) == "denied")
        }
    }

    // MARK: CONNECT

    @Test func connectHeadAndHelloInOneReadGetThe200ThenALookup() throws {
        try withMachineHarness { harness in
            var m = try machine(harness, .connect)
            _ = m.start(now: t0, originalDestination: nil)
            var bytes = ByteBuffer(string: "CONNECT api.allowed.test:443 HTTP/1.1\r\nHost: api.allowed.test:443\r\n\r\n")
            bytes.writeBytes(hello)
            let action = m.received(bytes, now: t0)
            #expect(text(action.reply) == ConnectionStateMachine.established)
            guard case .resolve("api.allowed.test") = action.next else { Issue.record("no lookup: \(action.next)"); return }
            #expect(!m.isReadingRequest)
        }
    }

    @Test func aDeniedConnectGets403AndADeniedHelloInsideTheTunnelGetsAnAlertAfterThe200() throws {
        try withMachineHarness { harness in
            var denied = try machine(harness, .connect)
            _ = denied.start(now: t0, originalDestination: nil)
            let refusal = denied.received(ByteBuffer(string: "CONNECT evil.test:443 HTTP/1.1\r\n\r\n"), now: t0)
            #expect(isClose(refusal) && text(refusal.reply).hasPrefix("HTTP/1.1 403 Forbidden\r\n"))

            var mismatched = try machine(harness, .connect, port: 40_002)
            _ = mismatched.start(now: t0, originalDestination: nil)
            #expect(text(mismatched.received(ByteBuffer(string: "CONNECT api.allowed.test:443 HTTP/1.1\r\n\r\n"), now: t0).reply)
                == ConnectionStateMachine.established)
            let end = mismatched.received(ByteBuffer(bytes: ClientHelloBuilder(serverName: "evil.test").record), now: t0)
            #expect(isClose(end) && bytes(end.reply) == accessDeniedAlert)
            #expect(try harness.records().map { $0.string(LogKey.closeCause) } == ["denied", "denied"])
        }
    }

    @Test func anAllowedTunnelLeftBeforeItsHelloKeepsTheConnectDecision() throws {
        try withMachineHarness { harness in
            let endings: [(String, (inout ConnectionStateMachine) -> ConnectionStateMachine.Action)] = [
                ("client_closed_before_hello", { $0.clientClosed(halfClose: false) }),
                ("client_error", { $0.clientFailed("Connection reset by peer") }),
                ("shutdown", { $0.shutdown() }),
                ("internal_error", { $0.internalFailure("cannot watch the connection: No space left on device") }),
                ("handshake_timeout", { $0.tick(now: t0 + .seconds(3600)) }),
            ]
            for (index, (cause, end)) in endings.enumerated() {
                var m = try machine(harness, .connect, port: 40_010 + index)
                _ = m.start(now: t0, originalDestination: nil)
                #expect(text(m.received(ByteBuffer(string: "CONNECT api.allowed.test:443 HTTP/1.1\r\n\r\n"), now: t0).reply)
                    == ConnectionStateMachine.established)
                _ = m.received(ByteBuffer(bytes: hello.prefix(10)), now: t0)
                #expect(isClose(end(&m)), "\(cause)")
            }
            let records = try harness.records()
            #expect(records.map { $0.string(LogKey.closeCause) } == endings.map(\.0))
            #expect(records.allSatisfy { $0.string(LogKey.decision) == "allow" }, "the CONNECT was allowed: \(records)")
            #expect(records.allSatisfy { $0.string(LogKey.hint) == nil }, "no hint on how to allow what was allowed")
            #expect(records[0].string(LogKey.reason)?.hasSuffix("; the client closed before sending a complete ClientHello") == true)
            #expect(records[1].string(LogKey.reason)?.hasSuffix("; client connection error: Connection reset by peer") == true)
            #expect(records[2].string(LogKey.reason)?.hasSuffix("; the gateway stopped before the ClientHello was complete") == true)
            #expect(records[3].string(LogKey.reason)?.hasSuffix("; gateway error: cannot watch the connection: No space left on device") == true)
            #expect(records[4].string(LogKey.reason)?.contains("; no complete ClientHello within") == true)
        }
    }

    @Test func aConnectHeadDeadlineAnswers408() throws {
        try withMachineHarness { harness in
            var m = try machine(harness, .connect)
            _ = m.start(now: t0, originalDestination: nil)
            _ = m.received(ByteBuffer(string: "CONNECT api.allowed"), now: t0)
            let end = m.tick(now: t0 + .seconds(2))
            #expect(isClose(end) && text(end.reply).hasPrefix("HTTP/1.1 408 Request Timeout\r\n"))
            #expect(try harness.onlyRecord().string(LogKey.reason) == "no complete CONNECT request within 2s")
        }
    }

    @Test func absoluteFormHTTPIsHandedOverWithItsSlotAndNoRecord() throws {
        try withMachineHarness(limits: "{maxConnections: 1}") { harness in
            var m = try machine(harness, .connect)
            _ = m.start(now: t0, originalDestination: nil)
            let request = "GET http://api.allowed.test/ HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n"
            guard case .handOverToHTTP(let bytes, let slot) = m.received(ByteBuffer(string: request), now: t0).next
            else { Issue.record("not handed over"); return }
            #expect(String(buffer: bytes) == request)
            #expect(m.isFinished && m.deadline == nil)
            #expect(try harness.records().isEmpty, "the HTTP path records each request")
            #expect(harness.proxy.openConnections == 1, "the slot goes with the connection")
            harness.proxy.release(slot)
            #expect(harness.proxy.openConnections == 0)
        }
    }

    @Test func absoluteFormHTTPCutAnywhereIsHandedOverAndAnyOtherMethodRefused() throws {
        let request = Array("GET http://api.allowed.test/ HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n".utf8)
        try withMachineHarness { harness in
            // Whatever the first segment holds of the request line, the answer is the same.
            for cut in 1..<request.count {
                var m = try machine(harness, .connect, port: 41_000 + cut)
                _ = m.start(now: t0, originalDestination: nil)
                var action = m.received(ByteBuffer(bytes: request[..<cut]), now: t0)
                var given = cut
                if case .read = action.next {
                    action = m.received(ByteBuffer(bytes: request[cut...]), now: t0)
                    given = request.count
                }
                guard case .handOverToHTTP(let bytes, let slot) = action.next else { Issue.record("cut at \(cut): \(action.next)"); return }
                #expect(Array(bytes.readableBytesView) == Array(request[..<given]), "everything read so far goes to the HTTP path")
                harness.proxy.release(slot)
            }
            var other = try machine(harness, .connect, port: 40_999)
            _ = other.start(now: t0, originalDestination: nil)
            #expect(isRead(other.received(ByteBuffer(string: "GET ht"), now: t0)), "could still become http://")
            let refusal = other.received(ByteBuffer(string: "ps://api.allowed.test/ HTTP/1.1\r\n\r\n"), now: t0)
            #expect(isClose(refusal) && text(refusal.reply).hasPrefix("HTTP/1.1 405 "))
            #expect(harness.proxy.openConnections == 0)
        }
        #expect(ConnectionStateMachine.absoluteForm(ByteBuffer(string: "POST HTTP://x/ HTTP/1.1")) == true)
        #expect(ConnectionStateMachine.absoluteForm(ByteBuffer(string: "GET /x HTTP/1.1")) == false)
        #expect(ConnectionStateMachine.absoluteForm(ByteBuffer(string: "GE")) == nil)
        #expect(ConnectionStateMachine.absoluteForm(ByteBuffer(string: String(repeating: "A", count: 64))) == false, "bounded")
    }

    // MARK: endings

    @Test func aHalfCloseWhileDiallingIsPassedOnWhenTheRelayStarts() throws {
        try withMachineHarness { harness in
            var m = try machine(harness)
            _ = m.start(now: t0, originalDestination: nil)
            _ = m.received(ByteBuffer(bytes: hello), now: t0)
            guard case .connect(_, let attempt) = m.resolved(.success(try ips("10.9.0.5")), now: t0).next else { Issue.record("no dial"); return }
            #expect(isWait(m.clientClosed(halfClose: true)))
            guard case .relay(_, true) = m.connected(attempt: attempt, now: t0).next else { Issue.record("the half-close was lost"); return }
        }
    }

    @Test func theClientLeavingWhileResolvingEndsItAndTheLateAnswerIsIgnored() throws {
        try withMachineHarness { harness in
            var m = try machine(harness)
            _ = m.start(now: t0, originalDestination: nil)
            _ = m.received(ByteBuffer(bytes: hello), now: t0)
            #expect(isClose(m.clientClosed(halfClose: false)))
            #expect(isWait(m.resolved(.success(try ips("10.9.0.5")), now: t0)))
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "client_closed_while_connecting")
            #expect(record.string(LogKey.decision) == "allow")
        }
    }

    @Test func aClientFailingWhileDiallingKeepsTheDecisionAndSaysWhatFailed() throws {
        try withMachineHarness { harness in
            var m = try machine(harness)
            _ = m.start(now: t0, originalDestination: nil)
            _ = m.received(ByteBuffer(bytes: hello), now: t0)
            guard case .connect(_, let attempt) = m.resolved(.success(try ips("10.9.0.5")), now: t0).next else { Issue.record("no dial"); return }
            #expect(isClose(m.clientFailed("Connection reset by peer")))
            #expect(isDiscard(m.connected(attempt: attempt, now: t0)), "the dial that answers late is closed")
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "client_error")
            #expect(record.string(LogKey.decision) == "allow")
            #expect(record.string(LogKey.reason)?.hasSuffix("; client connection error: Connection reset by peer") == true,
                    "\(record.string(LogKey.reason) ?? "no reason")")
            #expect(harness.proxy.openConnections == 0)
        }
    }

    @Test func aGatewayFailureIsRecordedAsTheGatewaysNotTheClients() throws {
        try withMachineHarness { harness in
            var reading = try machine(harness, port: 40_001)
            _ = reading.start(now: t0, originalDestination: nil)
            #expect(isClose(reading.internalFailure("cannot watch the connection: No space left on device")))
            var dialling = try machine(harness, port: 40_002)
            _ = dialling.start(now: t0, originalDestination: nil)
            _ = dialling.received(ByteBuffer(bytes: hello), now: t0)
            #expect(isClose(dialling.internalFailure("cannot watch the connection: No space left on device")))
            let records = try harness.records()
            #expect(records.map { $0.string(LogKey.closeCause) } == ["internal_error", "internal_error"])
            // Before the ClientHello nothing was decided: refused, with what failed.
            #expect(records[0].string(LogKey.decision) == "deny")
            #expect(records[0].string(LogKey.reason) == "gateway error: cannot watch the connection: No space left on device")
            // Decided: the decision stays.
            #expect(records[1].string(LogKey.decision) == "allow")
            #expect(records[1].string(LogKey.reason)?.hasSuffix("; gateway error: cannot watch the connection: No space left on device") == true)
            #expect(harness.proxy.openConnections == 0)
        }
    }

    @Test func shutdownEndsEveryPhaseWithCauseShutdown() throws {
        try withMachineHarness { harness in
            var reading = try machine(harness, port: 40_001)
            _ = reading.start(now: t0, originalDestination: nil)
            _ = reading.received(ByteBuffer(bytes: hello.prefix(10)), now: t0)
            var head = try machine(harness, .connect, port: 40_002)
            _ = head.start(now: t0, originalDestination: nil)
            var dialling = try machine(harness, port: 40_003)
            _ = dialling.start(now: t0, originalDestination: nil)
            _ = dialling.received(ByteBuffer(bytes: hello), now: t0)
            _ = dialling.resolved(.success(try ips("10.9.0.5")), now: t0)
            var relaying = try relayingMachine(harness, port: 40_004, now: t0)
            for index in 0..<2 {
                #expect(isClose(reading.shutdown()) == (index == 0))
                #expect(isClose(head.shutdown()) == (index == 0))
                #expect(isClose(dialling.shutdown()) == (index == 0))
                #expect(isClose(relaying.shutdown()) == (index == 0), "a second shutdown does nothing")
            }
            let records = try harness.records()
            #expect(records.map { $0.string(LogKey.closeCause) } == ["shutdown", "shutdown", "shutdown", "shutdown"])
            #expect(records.map { $0.string(LogKey.decision) } == ["deny", "deny", "allow", "allow"])
            #expect(records[0].string(LogKey.reason) == "the gateway stopped before the ClientHello was complete")
            #expect(records[1].string(LogKey.reason) == "the gateway stopped before the CONNECT request was complete")
            #expect(harness.proxy.openConnections == 0, "every slot is given back")
        }
    }

    @Test func admissionRefusesBeyondTheBudgetAndASlotComesBackWithTheRecord() throws {
        try withMachineHarness(limits: "{maxConnections: 1}") { harness in
            var first = try machine(harness, port: 40_001)
            #expect(isRead(first.start(now: t0, originalDestination: nil)))
            var second = try machine(harness, port: 40_002)
            #expect(isClose(second.start(now: t0, originalDestination: nil)))
            #expect(try harness.onlyRecord().string(LogKey.closeCause) == "connection_limit")
            _ = first.clientClosed(halfClose: false)
            var third = try machine(harness, port: 40_003)
            #expect(isRead(third.start(now: t0, originalDestination: nil)), "the first one's slot came back with its record")
        }
    }

    @Test func aRelayThatANewPolicyNoLongerAllowsIsRevoked() throws {
        try withMachineHarness { harness in
            var m = try relayingMachine(harness, now: t0)
            let unchanged = harness.proxy.policy.current
            #expect(isWait(m.recheck(against: unchanged)))
            let yaml = policyYAML(limits: Self.limits, gatewayExtra: dialablePrivateRange)
                .replacingOccurrences(of: "podSelector: {matchLabels: {app: checkout}}", with: "podSelector: {matchLabels: {app: other}}")
            let newer = PolicySnapshot(source: try ConfigLoader.load(yaml: yaml, file: "newer.yaml"), generation: 8)
            #expect(isClose(m.recheck(against: newer)))
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.closeCause) == "policy_revoked")
            #expect(record.string(LogKey.reason)?.contains("revoked by policy generation 8") == true)
        }
    }

    // MARK: HelloRetryRequest

    /// A HelloRetryRequest record: a ServerHello whose random is SHA-256("HelloRetryRequest").
    private static let retryRequest: [UInt8] = {
        let body: [UInt8] = [3, 3] + HelloRetryGuard.retryRandom + [0, 0x13, 0x01, 0, 0, 0]
        return [22, 3, 3, 0, UInt8(4 + body.count), 2, 0, 0, UInt8(body.count)] + body
    }()
    private static let illegalParameterAlert: [UInt8] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 47]

    private func inspect(_ m: inout ConnectionStateMachine, _ bytes: [UInt8], fromClient: Bool) -> ConnectionStateMachine.Action? {
        bytes.withUnsafeBytes { m.inspect($0, fromClient: fromClient) }
    }

    @Test func theRelayIsInspectedUntilTheServerAnswersAndAnotherNameAfterARetryIsRefused() throws {
        try withMachineHarness { harness in
            var m = try relayingMachine(harness, now: t0)
            #expect(m.inspectsRelay, "the server has not answered the ClientHello yet")
            #expect(inspect(&m, Self.retryRequest, fromClient: false) == nil, "the retry request goes to the client")
            #expect(inspect(&m, [20, 3, 3, 0, 1, 1], fromClient: true) == nil, "change_cipher_spec goes on")
            let second = ClientHelloBuilder(serverName: "evil.test").record
            let end = try #require(inspect(&m, second, fromClient: true), "the second hello must not go on")
            #expect(isClose(end) && bytes(end.reply) == Self.illegalParameterAlert)
            #expect(m.isFinished)
            // What was read with it is dropped too, whichever way it came.
            #expect(inspect(&m, [23, 3, 3, 0, 1, 0], fromClient: true).map(isWait) == true)
            #expect(inspect(&m, [23, 3, 3, 0, 1, 0], fromClient: false).map(isWait) == true)
            #expect(isWait(m.relayEnded(.completed)))
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.decision) == "deny")
            #expect(record.string(LogKey.closeCause) == "invalid_client_hello")
            #expect(record.string(LogKey.sni) == "api.allowed.test")
            #expect(record.string(LogKey.reason)?.hasSuffix("(server_name api.allowed.test, then evil.test)") == true)
        }
    }

    @Test func aServerHelloEndsTheInspection() throws {
        try withMachineHarness { harness in
            var m = try relayingMachine(harness, now: t0)
            var serverHello = Self.retryRequest
            serverHello[11] ^= 0xff  // another random: an ordinary ServerHello
            #expect(inspect(&m, serverHello, fromClient: false) == nil)
            #expect(!m.inspectsRelay, "the relay may splice from here on")
            #expect(isClose(m.tick(now: t0 + .seconds(31), idleFor: .seconds(30))))
            #expect(try harness.onlyRecord().string(LogKey.decision) == "allow")
        }
    }

    @Test func aSecondHelloSentWhileDiallingIsRefusedBeforeTheRelay() throws {
        try withMachineHarness { harness in
            var m = try machine(harness)
            _ = m.start(now: t0, originalDestination: nil)
            _ = m.received(ByteBuffer(bytes: hello), now: t0)
            guard case .connect(_, let attempt) = m.resolved(.success(try ips("10.9.0.5")), now: t0).next else { Issue.record("no dial"); return }
            #expect(isWait(m.received(ByteBuffer(bytes: ClientHelloBuilder(serverName: "evil.test").record), now: t0)))
            let end = m.connected(attempt: attempt, now: t0)
            #expect(isClose(end) && bytes(end.reply) == Self.illegalParameterAlert, "nothing is relayed")
            let record = try harness.onlyRecord()
            #expect(record.string(LogKey.decision) == "deny")
            #expect(record.string(LogKey.reason) == "invalid ClientHello: \(ClientHelloRejection.handshakeBeforeServerHello.explanation)")
        }
    }

    // MARK: impossible events

    @Test func bytesAfterTheRelayStartedStopTheProcess() async {
        await #expect(processExitsWith: .failure) {
            let harness = try ProxyHarness(gatewayExtra: dialablePrivateRange)
            var m = try relayingMachine(harness)
            _ = m.received(ByteBuffer(string: "x"), now: .now)
        }
    }

    @Test func aLookupAnswerNobodyAskedForStopsTheProcess() async {
        await #expect(processExitsWith: .failure) {
            let harness = try ProxyHarness()
            var m = ConnectionStateMachine(front: .tls, listener: "tls", source: nil, proxy: harness.proxy)
            _ = m.start(now: .now, originalDestination: nil)
            _ = m.resolved(.success([]), now: .now)
        }
    }
}

private func isRead(_ action: ConnectionStateMachine.Action) -> Bool {
    if case .read = action.next { return true }
    return false
}

private func isWait(_ action: ConnectionStateMachine.Action) -> Bool {
    if case .wait = action.next { return true }
    return false
}

private func isClose(_ action: ConnectionStateMachine.Action) -> Bool {
    if case .close = action.next { return true }
    return false
}

private func isDiscard(_ action: ConnectionStateMachine.Action) -> Bool {
    if case .discardUpstream = action.next { return true }
    return false
}
