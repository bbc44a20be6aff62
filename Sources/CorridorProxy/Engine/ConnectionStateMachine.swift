import CorridorPolicy
import CorridorWire
import NIOCore

/// The life of one connection of the tls or connect listener, from accept to its access record,
/// on either data plane:
///
///     start -> [CONNECT head -> 200] -> ClientHello -> identify + decide -> resolve -> vet
///           -> dial the vetted addresses in turn -> relay -> ended with a cause
///
/// No I/O happens here. A driver (``InspectHandler`` and ``RelaySession`` on NIO,
/// ``SpliceConnection`` on the splice plane) reports what its sockets did, as events, and does
/// what the returned ``Action`` says: write a reply, read on, look a name up, dial an address,
/// relay, hand the connection to the HTTP path, close. Time is an input: every event that can
/// start or check a deadline takes `now`, and ``deadline`` says when the driver must call
/// ``tick(now:idleFor:)`` next.
///
/// It owns what both planes must agree on: admission (a slot taken in ``start(now:originalDestination:)``,
/// given back when the record is written), the ``ConnectionRecord`` (written exactly once, here),
/// every deadline (handshake, connect, idle), every reason sentence and close cause, and the
/// replies (the CONNECT 200, an HTTP refusal, a TLS alert). Nothing reaches an upstream before the
/// decision, and every way out before the relay records the connection as a denial.
///
/// An event that cannot happen in the phase the connection is in (bytes fed after the relay
/// started, a lookup answer nobody asked for) is a driver bug and stops the process. Events that
/// race with an ending (a lookup or dial completing after the client left) are answered calmly.
struct ConnectionStateMachine {
    /// Which listener the connection came in on.
    enum Front: Sendable, Equatable {
        /// TLS passthrough: the ClientHello comes first.
        case tls
        /// Explicit proxy: `CONNECT host:port`, then the ClientHello inside the tunnel (or a
        /// plain-HTTP request in absolute form, handed to the HTTP path).
        case connect
    }

    /// What the driver does next, after writing ``Action/reply`` (if any) to the client.
    enum Next {
        /// Read from the client and report the bytes with ``received(_:now:)``.
        case read
        /// Nothing to do until the next event.
        case wait
        /// Stop reading from the client for now (enough is buffered while the upstream is dialled).
        case pauseReads
        /// Look `host` up with the resolver, under ``snapshot``, and report with ``resolved(_:now:)``.
        case resolve(String)
        /// Dial `address` (any attempt in flight is given up: close it), and report with
        /// ``connected(attempt:now:)`` or ``connectFailed(attempt:_:now:)``.
        case connect(SocketAddress, attempt: Int)
        /// Start relaying: write `prefix` to the upstream first (what the client sent that the
        /// upstream has not seen), shut the upstream's write side when `clientInputEnded`, read
        /// from the client again, then move bytes both ways until ``relayEnded(_:)``.
        case relay(prefix: ByteBuffer?, clientInputEnded: Bool)
        /// The connection is plain HTTP from here on: give it, with `bytes` unread, to the HTTP
        /// path, which records each request; `slot` is given back when the connection closes.
        case handOverToHTTP(ByteBuffer, AdmissionSlot)
        /// Close the connection; its record is written.
        case close
        /// The upstream connection just reported belongs to an attempt given up, or to a
        /// connection that has ended: close it and nothing else.
        case discardUpstream
    }

    struct Action {
        /// Bytes for the client, written before ``next``: the CONNECT 200, an HTTP refusal, a TLS alert.
        var reply: ByteBuffer?
        var next: Next

        static let read = Action(reply: nil, next: .read)
        static let wait = Action(reply: nil, next: .wait)
    }

    private enum Phase {
        /// Accepted, ``start(now:originalDestination:)`` not yet called.
        case new
        case readingConnectHead(ConnectHeadParser)
        case readingClientHello(ClientHelloParser)
        case resolving(Destination)
        case connecting(Dial)
        case relaying
        /// Given to the HTTP path; nothing more happens here.
        case handedOver
        case closed
    }

    /// Where an allowed connection goes: a name to resolve (or an address the policy named), its
    /// port and the ranges its ExternalService declares.
    private struct Destination {
        var host: String
        var port: Int
        var serviceAddresses: [CIDR]
    }

    private struct Dial {
        var destination: Destination
        /// The vetted addresses, tried in order.
        var addresses: [IPAddress]
        /// How many have been tried (the one in flight included).
        var tried = 0
        /// The attempt in flight: its number (``Next/connect(_:attempt:)``), address and start.
        var attempt = 0
        var target: SocketAddress?
        var started: ContinuousClock.Instant
        var lastFailure: UpstreamDialer.Failure?
        var mismatch: Bool
    }

    /// What a client may send while the upstream is being dialled before its reads pause (NIO
    /// reads on; the splice plane does not read until the relay). A TLS client waits for the
    /// ServerHello anyway.
    static let maxBufferedWhileDialing = 256 * 1024
    static let established = "HTTP/1.1 200 Connection Established\r\n\r\n"

    let front: Front
    let record: ConnectionRecord
    private let proxy: ProxyContext
    /// The policy the connection is decided on, read once when it is accepted.
    let snapshot: PolicySnapshot
    private var phase = Phase.new
    private var slot: AdmissionSlot?
    /// What the client sent that has not been relayed yet (after the CONNECT head).
    private var buffered = ByteBuffer()
    /// Reads were paused while dialling (``Next/pauseReads``): the driver resumes them at the relay.
    private(set) var readsPaused = false
    private var clientInputEnded = false
    /// A plain TCP service's connection: no TLS alert is ever written to it.
    private var plainTCP = false
    /// The ClientHello the connection was decided on.
    private var judgedHello: ClientHelloInfo?
    /// Holds the relay to ``judgedHello`` across a HelloRetryRequest, until the handshake is past
    /// it (then nil); kept after a refusal, so that what was read with the refused bytes is
    /// dropped too.
    private var retryGuard: HelloRetryGuard?
    private static let allocator = ByteBufferAllocator()
    /// When the driver must call ``tick(now:idleFor:)`` next (nil: no deadline; while relaying
    /// the idle limit is measured from the driver's last activity instead).
    private(set) var deadline: ContinuousClock.Instant?

    init(front: Front, listener: String, source: SocketAddress?, proxy: ProxyContext) {
        self.front = front
        self.proxy = proxy
        self.snapshot = proxy.policy.current
        self.record = ConnectionRecord(id: proxy.makeConnectionID(), listener: listener, source: source)
        record.policyGeneration = snapshot.generation
    }

    /// The connection has been decided and dialled and moves bytes now.
    var isRelaying: Bool {
        if case .relaying = phase { return true }
        return false
    }

    /// The driver must show the relay's bytes to ``inspect(_:fromClient:)`` before it sends them
    /// on (the TLS handshake has not passed the point where a HelloRetryRequest could bring a
    /// second ClientHello). Drivers copy, rather than splice, while it is true. Always
    /// `retryGuard != nil`, but kept as a flag: the drivers ask on every read, and testing the
    /// large optional measured a few microseconds of CPU per connection more (bench/profile ab).
    private(set) var inspectsRelay = false

    /// Waiting for the client's CONNECT head or ClientHello: the connection is not decided yet.
    var isReadingRequest: Bool {
        switch phase {
        case .readingConnectHead, .readingClientHello: return true
        default: return false
        }
    }

    /// The record is written (or handed over): the driver has nothing more to report.
    var isFinished: Bool {
        switch phase {
        case .closed, .handedOver: return true
        default: return false
        }
    }

    /// Relays close after this long without a byte either way (`spec.limits.idleTimeout`).
    var idleLimit: Duration { snapshot.gateway.limits.idleTimeout }

    // MARK: accept

    /// The connection was accepted: admission, the source's identity, and (for a connection
    /// iptables redirected to the tls listener) its original destination, which selects the
    /// service port, or decides at once for a TCP service's address.
    mutating func start(now: ContinuousClock.Instant, originalDestination: SocketAddress?) -> Action {
        guard case .new = phase else { preconditionFailure("start: the connection has started already") }
        proxy.metrics.connectionOpened()
        // The identity first: a connection refused admission is recorded with who it was from.
        if let ip = record.sourceAddress {
            record.identity = snapshot.inventory.identity(of: ip)
        }
        switch proxy.admit(source: record.sourceAddress, gateway: snapshot.gateway) {
        case .success(let taken):
            slot = taken
        case .failure(let refusal):
            return finish(refusal.cause, reason: refusal.reason)
        }
        let limits = snapshot.gateway.limits
        deadline = now + limits.handshakeTimeout
        switch front {
        case .connect:
            phase = .readingConnectHead(ConnectHeadParser(maxHeadBytes: limits.maxConnectHeadBytes))
        case .tls:
            phase = .readingClientHello(ClientHelloParser(maxHelloBytes: snapshot.gateway.tls.maxClientHelloBytes))
            if let originalDestination {
                record.originalDestination = originalDestination
                if let action = judgeAsTCPService(original: originalDestination, now: now) { return action }
            }
        }
        return .read
    }

    /// A redirected connection whose original destination is a TCP ExternalService's address and
    /// port is decided at once (some TCP protocols wait for the server to speak first) and relayed
    /// to that address without TLS inspection; nil for any other connection.
    private mutating func judgeAsTCPService(original: SocketAddress, now: ContinuousClock.Instant) -> Action? {
        guard let (decision, ip, port) = record.decideTCPService(original: original, snapshot: snapshot) else { return nil }
        plainTCP = true
        guard decision.lets else { return finish(.denied, reason: nil) }
        if let failure = UpstreamDialer.vet(address: ip, serviceAddresses: decision.serviceAddresses, snapshot: snapshot) {
            return dialFailed(failure)
        }
        let destination = Destination(host: ip.description, port: port, serviceAddresses: decision.serviceAddresses)
        return dial(Dial(destination: destination, addresses: [ip], started: now, mismatch: false), now: now)
    }

    // MARK: what the client sends

    /// Bytes from the client, before the relay.
    mutating func received(_ bytes: ByteBuffer, now: ContinuousClock.Instant) -> Action {
        switch phase {
        case .readingConnectHead, .readingClientHello:
            append(bytes)
            return parse(now: now)
        case .resolving, .connecting:
            // Kept, and replayed to the upstream once it answers.
            append(bytes)
            guard !readsPaused, buffered.readableBytes > Self.maxBufferedWhileDialing else { return .wait }
            readsPaused = true
            return Action(reply: nil, next: .pauseReads)
        case .closed, .handedOver:
            // Read in the same batch as what ended the connection.
            return .wait
        case .new:
            preconditionFailure("received: bytes before start")
        case .relaying:
            preconditionFailure("received: bytes fed to the state machine after the relay started")
        }
    }

    private mutating func append(_ bytes: ByteBuffer) {
        if buffered.readableBytes == 0 {
            buffered = bytes
        } else {
            var bytes = bytes
            buffered.writeBuffer(&bytes)
        }
    }

    private mutating func parse(now: ContinuousClock.Instant) -> Action {
        switch phase {
        case .readingConnectHead(var parser):
            let outcome = parser.parse(buffered)
            phase = .readingConnectHead(parser)
            return connectHead(outcome, now: now)
        case .readingClientHello(var parser):
            let outcome = parser.parse(buffered)
            phase = .readingClientHello(parser)
            return clientHello(outcome, now: now)
        default:
            preconditionFailure("parse: not reading a request")
        }
    }

    private mutating func connectHead(_ outcome: ConnectHeadParser.Outcome, now: ContinuousClock.Instant) -> Action {
        switch outcome {
        case .needMoreData:
            return .read
        case .rejected(.methodNotAllowed) where Self.absoluteForm(buffered) == nil:
            // Not CONNECT, and too little of the request line yet to tell plain HTTP from garbage
            // (the parser answers the same once more arrives).
            return .read
        case .rejected(.methodNotAllowed) where Self.absoluteForm(buffered) == true:
            // `GET http://host/path`: an explicit proxy client speaking plain HTTP; its requests are
            // originated over TLS and recorded one by one.
            guard let slot else { preconditionFailure("connect head: no admission slot") }
            self.slot = nil
            phase = .handedOver
            deadline = nil
            record.handedOver(metrics: proxy.metrics)
            let bytes = buffered
            buffered = ByteBuffer()
            return Action(reply: nil, next: .handOverToHTTP(bytes, slot))
        case .rejected(let rejection):
            proxy.metrics.connectRequestRejected(rejection.metricLabel)
            let reply = Self.httpRefusal(status: rejection.status, phrase: rejection.reasonPhrase, code: "invalid_request",
                                         message: rejection.explanation)
            return finish(.invalidConnectRequest, reason: "invalid CONNECT request: \(rejection.explanation)", reply: reply)
        case .complete(let request):
            record.connectHost = request.host
            record.port = request.port
            let decision = record.decide(DestinationFacts(connectHost: request.host, port: request.port), snapshot: snapshot)
            guard decision.lets else {
                let reply = Self.httpRefusal(status: 403, phrase: "Forbidden", code: "policy_denied",
                                             message: decision.reason + (record.hint.map { "\nto allow it: \($0)" } ?? ""))
                return finish(.denied, reason: nil, reply: reply)
            }
            buffered.moveReaderIndex(forwardBy: request.headLength)
            buffered = buffered.readableBytes > 0 ? buffered.slice() : ByteBuffer()
            phase = .readingClientHello(ClientHelloParser(maxHelloBytes: snapshot.gateway.tls.maxClientHelloBytes))
            var action = buffered.readableBytes > 0 ? parse(now: now) : .read
            // The 200 goes first, whatever the ClientHello that came with the request leads to.
            var reply = Self.allocator.buffer(string: Self.established)
            if var after = action.reply { reply.writeBuffer(&after) }
            action.reply = reply
            return action
        }
    }

    private mutating func clientHello(_ outcome: ClientHelloParser.Outcome, now: ContinuousClock.Instant) -> Action {
        switch outcome {
        case .needMoreData:
            return .read
        case .rejected(let rejection, let detail):
            // A client that does not speak TLS gets no TLS alert.
            return refuseHello(rejection, detail: detail, alert: rejection == .notTLS || rejection == .sslv2 ? nil : .decodeError)
        case .complete(let hello):
            judgedHello = hello
            let decision = record.decide(hello: hello, snapshot: snapshot)
            guard decision.lets, let host = decision.host, let port = decision.port else {
                return finish(.denied, reason: nil, reply: TLSAlert.accessDenied.record(allocator: Self.allocator))
            }
            let destination = Destination(host: host, port: port, serviceAddresses: decision.serviceAddresses)
            if let known = proxy.resolver.immediate(host, snapshot: snapshot) {
                return vetAndDial(known, destination: destination, now: now)
            }
            phase = .resolving(destination)
            deadline = nil
            return Action(reply: nil, next: .resolve(host))
        }
    }

    /// Whether the request line is `METHOD http://...` (an absolute-form plain-HTTP request),
    /// looking at its first 64 bytes; nil while those bytes could still become one, so the answer
    /// does not depend on how the client's bytes were cut into segments.
    static func absoluteForm(_ bytes: ByteBuffer) -> Bool? {
        let window = 64
        let view = bytes.readableBytesView.prefix(window)
        guard let space = view.firstIndex(of: UInt8(ascii: " ")) else { return view.count < window ? nil : false }
        let target = view[view.index(after: space)...].prefix(7).map { (0x41...0x5A).contains($0) ? $0 | 0x20 : $0 }  // lower case
        let scheme = Array("http://".utf8)
        if target.count == scheme.count { return target == scheme }
        // The target so far: a beginning of "http://" can still become it, unless the window is full.
        guard target == Array(scheme.prefix(target.count)) else { return false }
        return view.count < window ? nil : false
    }

    // MARK: resolve and dial

    /// The resolver's answer to ``Next/resolve(_:)``.
    mutating func resolved(_ result: Result<[IPAddress], any Error>, now: ContinuousClock.Instant) -> Action {
        switch phase {
        case .resolving(let destination):
            switch result {
            case .failure(let error):
                return dialFailed(.resolveFailed("cannot resolve \(destination.host): \(error)"))
            case .success(let addresses):
                return vetAndDial(addresses, destination: destination, now: now)
            }
        case .closed:
            return .wait  // the client left while the name was looked up
        default:
            preconditionFailure("resolved: no lookup was asked for")
        }
    }

    private mutating func vetAndDial(_ addresses: [IPAddress], destination: Destination, now: ContinuousClock.Instant) -> Action {
        let original = record.originalDestination.flatMap(IPAddress.init)?.unmapped
        switch UpstreamDialer.vet(addresses, host: destination.host, serviceAddresses: destination.serviceAddresses,
                                  originalDestination: original, snapshot: snapshot) {
        case .failure(let failure):
            return dialFailed(failure)
        case .success(let (vetted, mismatch)):
            return dial(Dial(destination: destination, addresses: vetted, started: now, mismatch: mismatch), now: now)
        }
    }

    /// Dials the next vetted address; when none is left, ends with the last failure.
    private mutating func dial(_ state: Dial, now: ContinuousClock.Instant) -> Action {
        var state = state
        while state.tried < state.addresses.count {
            let address = state.addresses[state.tried]
            state.tried += 1
            guard let target = try? address.socketAddress(port: state.destination.port) else {
                state.lastFailure = .connectFailed("port \(state.destination.port) is out of range", timedOut: false)
                continue
            }
            state.attempt += 1
            state.target = target
            state.started = now
            phase = .connecting(state)
            deadline = now + snapshot.gateway.limits.connectTimeout
            return Action(reply: nil, next: .connect(target, attempt: state.attempt))
        }
        return dialFailed(state.lastFailure ?? .connectFailed("no address to try", timedOut: false))
    }

    /// The upstream connection of `attempt` is up.
    mutating func connected(attempt: Int, now: ContinuousClock.Instant) -> Action {
        switch phase {
        case .connecting(let state) where state.attempt == attempt:
            proxy.metrics.upstreamConnected(after: now - state.started)
            return startRelay(to: state)
        case .connecting, .closed:
            return Action(reply: nil, next: .discardUpstream)
        default:
            preconditionFailure("connected: no dial was asked for")
        }
    }

    /// The upstream connection of `attempt` failed (`error` says how); the next address is tried.
    mutating func connectFailed(attempt: Int, _ error: String, now: ContinuousClock.Instant) -> Action {
        switch phase {
        case .connecting(var state) where state.attempt == attempt:
            state.lastFailure = .connectFailed("connect to \(state.target.map(AccessLog.format) ?? "?") failed: \(error)", timedOut: false)
            return dial(state, now: now)
        case .connecting, .closed:
            return .wait  // an attempt given up already
        default:
            preconditionFailure("connectFailed: no dial was asked for")
        }
    }

    private mutating func dialFailed(_ failure: UpstreamDialer.Failure) -> Action {
        let (cause, alert, denial) = record.dialFailed(failure)
        return finish(cause, reason: denial, reply: plainTCP ? nil : alert.record(allocator: Self.allocator))
    }

    // MARK: relay

    private mutating func startRelay(to state: Dial) -> Action {
        record.resolved = state.target
        record.addressMismatch = state.mismatch
        if let newer = proxy.newerPolicyToRecheck(than: snapshot), record.revoked(by: newer) != nil {
            // A policy installed while this connection was being decided or dialled refuses it.
            return finish(.policyRevoked, reason: nil, reply: plainTCP ? nil : TLSAlert.accessDenied.record(allocator: Self.allocator))
        }
        if let hello = judgedHello, !plainTCP {
            var retryGuard = HelloRetryGuard(first: hello, maxHelloBytes: snapshot.gateway.tls.maxClientHelloBytes)
            // What the client sent after the ClientHello's records, while it was decided and dialled.
            let after = buffered.readableBytesView.dropFirst(hello.helloBytes)
            let verdict = after.withUnsafeBytes { retryGuard.client($0) }
            if case .refused(let rejection, let detail) = verdict { return refuseHello(rejection, detail: detail, alert: .illegalParameter) }
            if verdict == .inspecting {
                self.retryGuard = retryGuard
                inspectsRelay = true
            }
        }
        phase = .relaying
        deadline = nil
        proxy.accessLog.flows?.opened(record)
        let prefix = buffered.readableBytes > 0 ? buffered : nil
        buffered = ByteBuffer()
        record.bytesUp += prefix?.readableBytes ?? 0
        return Action(reply: nil, next: .relay(prefix: prefix, clientInputEnded: clientInputEnded))
    }

    /// Bytes the relay read from the client (`fromClient`) or the upstream, shown before they are
    /// sent on while ``inspectsRelay``. Nil: send them on. Otherwise do not send them, but what
    /// the action says (the connection has ended).
    mutating func inspect(_ bytes: UnsafeRawBufferPointer, fromClient: Bool) -> Action? {
        guard inspectsRelay, retryGuard != nil else { preconditionFailure("inspect: nothing to inspect the relay for") }
        switch phase {
        case .relaying:
            // Changed in place (one owner: a second hello's records are not copied).
            let verdict = fromClient ? retryGuard!.client(bytes) : retryGuard!.server(bytes)
            switch verdict {
            case .inspecting:
                return nil
            case .passed:
                retryGuard = nil
                inspectsRelay = false
                return nil
            case .refused(let rejection, let detail):
                // The guard stays: what was read with the refused bytes is dropped too.
                return refuseHello(rejection, detail: detail, alert: .illegalParameter)
            }
        case .closed:
            // Read in the same batch as the refused bytes: dropped with them.
            return .wait
        default:
            preconditionFailure("inspect: the connection was not relaying")
        }
    }

    /// A ClientHello refused (the first one, or what followed it against ``HelloRetryGuard``'s
    /// rule): a denial with the reason, and `alert` for the client; nothing more goes upstream.
    private mutating func refuseHello(_ rejection: ClientHelloRejection, detail: String?, alert: TLSAlert?) -> Action {
        proxy.metrics.clientHelloRejected(rejection)
        let reason = "invalid ClientHello: \(rejection.explanation)" + (detail.map { " (\($0))" } ?? "")
        return finish(.invalidClientHello, reason: reason, reply: alert?.record(allocator: Self.allocator))
    }

    /// The relay ended (both sides done, an error, or the driver's own close): the record is written.
    /// Reported again after the machine ended the relay itself (idle, revoked, shutdown), it does nothing.
    mutating func relayEnded(_ cause: CloseCause) -> Action {
        switch phase {
        case .relaying:
            return finish(cause, reason: nil)
        case .closed:
            return .wait
        default:
            preconditionFailure("relayEnded: the connection was not relaying")
        }
    }

    /// Closes the relay if `newer` (a policy just installed, `spec.reload.liveConnections:
    /// Recheck`) no longer allows it. A connection not relaying yet answers to the newest policy
    /// when it starts to.
    mutating func recheck(against newer: PolicySnapshot) -> Action {
        guard case .relaying = phase, record.revoked(by: newer) != nil else { return .wait }
        return finish(.policyRevoked, reason: nil)
    }

    // MARK: time

    /// Checks the deadlines: the handshake's, the connect attempt's, and while relaying the idle
    /// limit, given how long no byte has moved (and writes an interim record when one is due).
    mutating func tick(now: ContinuousClock.Instant, idleFor: Duration? = nil) -> Action {
        switch phase {
        case .readingConnectHead where deadline.map({ now >= $0 }) ?? false:
            let message = "no complete CONNECT request within \(DurationSyntax.format(snapshot.gateway.limits.handshakeTimeout))"
            return finish(.handshakeTimeout, reason: message,
                          reply: Self.httpRefusal(status: 408, phrase: "Request Timeout", code: "handshake_timeout", message: message))
        case .readingClientHello where deadline.map({ now >= $0 }) ?? false:
            // A CONNECT tunnel already allowed keeps its decision (see endBeforeTheHello).
            return endBeforeTheHello(.handshakeTimeout, "no complete ClientHello within \(DurationSyntax.format(snapshot.gateway.limits.handshakeTimeout))")
        case .connecting(var state) where deadline.map({ now >= $0 }) ?? false:
            let timeout = DurationSyntax.format(snapshot.gateway.limits.connectTimeout)
            state.lastFailure = .connectFailed("connect to \(state.target.map(AccessLog.format) ?? "?") failed: timed out after \(timeout)",
                                               timedOut: true)
            return dial(state, now: now)
        case .relaying:
            guard let idleFor else { preconditionFailure("tick: a relay's tick needs how long it has been idle") }
            if idleFor >= idleLimit { return finish(.idleTimeout, reason: nil) }
            if let flows = proxy.accessLog.flows, flows.interimDue(record, at: now) {
                record.interims += 1
                proxy.accessLog.writeInterim(record)
            }
            return .wait
        default:
            return .wait
        }
    }

    // MARK: endings

    /// The client ended its side (`halfClose`: its input ended, it may still read) or closed.
    /// Before the decision that ends the connection; while dialling, a half-close is passed on
    /// when the relay starts.
    mutating func clientClosed(halfClose: Bool) -> Action {
        switch phase {
        case .readingConnectHead:
            return finish(.clientClosedEarly, reason: halfClose
                ? "the client shut its side before sending a complete CONNECT request"
                : "the client closed before sending a complete CONNECT request")
        case .readingClientHello:
            let reason: String
            if halfClose {
                reason = "the client shut its side before sending a complete ClientHello"
            } else {
                reason = buffered.readableBytes > 0 ? "the client closed before sending a complete ClientHello"
                    : "the client closed without sending a ClientHello"
            }
            return endBeforeTheHello(.clientClosedEarly, reason)
        case .resolving, .connecting:
            if halfClose {
                clientInputEnded = true
                return .wait
            }
            return finish(.clientClosedWhileConnecting, reason: nil)
        case .closed, .handedOver:
            return .wait
        case .new, .relaying:
            preconditionFailure("clientClosed: reported by the relay, or before start")
        }
    }

    /// The client's socket failed before the relay.
    mutating func clientFailed(_ error: String) -> Action {
        failedBeforeRelay(.clientError, "client connection error: \(error)", event: "clientFailed")
    }

    /// The driver cannot go on with the connection before the relay for a reason of the gateway's
    /// own (it cannot watch the socket, say): cause `internal_error`, the decision kept if made.
    mutating func internalFailure(_ error: String) -> Action {
        failedBeforeRelay(.internalError, "gateway error: \(error)", event: "internalFailure")
    }

    private mutating func failedBeforeRelay(_ cause: CloseCause, _ what: String, event: StaticString) -> Action {
        switch phase {
        case .readingConnectHead:
            return finish(cause, reason: what)
        case .readingClientHello:
            return endBeforeTheHello(cause, what)
        case .resolving, .connecting:
            // Decided already: the record keeps the decision (an allowed connection that failed
            // is no denial), with the cause and what failed.
            record.decision?.reason += "; \(what)"
            return finish(cause, reason: nil)
        case .closed, .handedOver:
            return .wait
        case .new, .relaying:
            preconditionFailure("\(event): reported by the relay, or before start")
        }
    }

    /// The gateway is stopping (the drain deadline passed): the connection ends now, cause `shutdown`.
    mutating func shutdown() -> Action {
        switch phase {
        case .new, .closed, .handedOver:
            return .wait
        case .readingConnectHead:
            return finish(.shutdown, reason: "the gateway stopped before the CONNECT request was complete")
        case .readingClientHello:
            return endBeforeTheHello(.shutdown, "the gateway stopped before the ClientHello was complete")
        case .resolving, .connecting, .relaying:
            // Decided already: the record keeps the decision, with the cause.
            return finish(.shutdown, reason: nil)
        }
    }

    /// Ends a connection whose ClientHello never came complete, for a reason not the policy's (the
    /// client left, the gateway stopped). A CONNECT tunnel already allowed (its 200 sent) keeps
    /// that decision, with `why` after its reason; any other connection is recorded as refused.
    private mutating func endBeforeTheHello(_ cause: CloseCause, _ why: String) -> Action {
        guard record.decision?.lets == true else { return finish(cause, reason: why) }
        record.decision?.reason += "; \(why)"
        return finish(cause, reason: nil)
    }

    /// Writes the record (as a denial when `reason` is given, else with the decision made), gives
    /// the admission slot back, and has the driver close after writing `reply`.
    private mutating func finish(_ cause: CloseCause, reason: String?, reply: ByteBuffer? = nil) -> Action {
        phase = .closed
        deadline = nil
        buffered = ByteBuffer()
        record.finish(cause, log: proxy.accessLog, metrics: proxy.metrics, reason: reason)
        if let slot {
            proxy.release(slot)
            self.slot = nil
        }
        return Action(reply: reply, next: .close)
    }

    /// An HTTP refusal for a CONNECT client: status, `Corridor-Decision: deny`, the reason code
    /// and a plain-text body.
    static func httpRefusal(status: Int, phrase: String, code: String, message: String) -> ByteBuffer {
        let body = message + "\n"
        let head = "HTTP/1.1 \(status) \(phrase)\r\nContent-Type: text/plain; charset=utf-8\r\nCorridor-Decision: deny\r\n"
            + "Corridor-Reason: \(code)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        return allocator.buffer(string: head + body)
    }
}
