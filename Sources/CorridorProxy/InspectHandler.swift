import CorridorPolicy
import CorridorWire
import NIOCore

/// The front of every client connection: reads what the client sends until the destination is
/// known (the CONNECT request head, then the whole ClientHello), decides, dials the vetted
/// upstream and hands the connection to a relay. Nothing reaches an upstream before the decision.
///
///     accept -> [CONNECT head -> 200] -> ClientHello -> identify + decide -> resolve + vet -> dial -> relay
///
/// Every way out before the relay writes the connection's access record as a denial.
final class InspectHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    typealias InboundOut = ByteBuffer

    enum Mode: Sendable {
        /// TLS passthrough listener: the ClientHello comes first.
        case passthrough
        /// Explicit proxy: `CONNECT host:port`, then the ClientHello inside the tunnel.
        case connect
    }

    private enum State {
        case readingConnectHead(ConnectHeadParser)
        case readingClientHello(ClientHelloParser)
        case dialing
        case relaying
        case closed
    }

    private let mode: Mode
    private let listenerName: String
    private let proxy: ProxyContext
    private var state: State
    private var snapshot: PolicySnapshot
    private var record: ConnectionRecord?
    /// Everything the client sent that has not been relayed yet (after the CONNECT head).
    private var buffered: ByteBuffer?
    private var deadline: Scheduled<Void>?
    private var clientInputClosed = false
    /// Reads from the client were paused while dialling (it sent more than `maxBufferedWhileDialing`).
    private var readsPaused = false
    /// What a client may send while the upstream is being dialled before reads pause. Reads are not
    /// paused up front: a TLS client waits for the ServerHello anyway, and each pause and resume
    /// is an `epoll_ctl` on every connection.
    static let maxBufferedWhileDialing = 256 * 1024
    /// A plain TCP service's connection: no TLS alert is ever written to it.
    private var plainTCP = false

    init(mode: Mode, listenerName: String, proxy: ProxyContext) {
        self.mode = mode
        self.listenerName = listenerName
        self.proxy = proxy
        self.snapshot = proxy.policy.current
        let gateway = snapshot.gateway
        switch mode {
        case .passthrough: state = .readingClientHello(ClientHelloParser(maxHelloBytes: gateway.tls.maxClientHelloBytes))
        case .connect: state = .readingConnectHead(ConnectHeadParser(maxHeadBytes: gateway.limits.maxConnectHeadBytes))
        }
    }

    // MARK: accept

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        let record = ConnectionRecord(id: proxy.makeConnectionID(), listener: listenerName, source: channel.remoteAddress)
        self.record = record
        record.policyGeneration = snapshot.generation
        proxy.metrics.connectionOpened()
        let limits = snapshot.gateway.limits
        if let refusal = proxy.admit(channel, source: record.sourceAddress, gateway: snapshot.gateway) {
            state = .closed
            record.finish(refusal.cause, log: proxy.accessLog, metrics: proxy.metrics, reason: refusal.reason)
            context.close(promise: nil)
            return
        }
        if let ip = record.sourceAddress {
            record.identity = snapshot.inventory.identity(of: ip)
        }
        if mode == .passthrough {
            // A connection redirected by iptables: its original port selects the service port.
            OriginalDestination.lookup(channel) { [weak self] original in
                record.originalDestination = original
                if let original { self?.judgeAsTCPService(context: context, original: original) }
            }
        }
        let timeout = limits.handshakeTimeout
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(timeout.nanoseconds)) { [weak self] in
            self?.handshakeTimedOut(context: context, after: timeout)
        }
        context.fireChannelActive()
    }

    // MARK: inbound bytes

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if buffered == nil {
            buffered = bytes
        } else {
            buffered!.writeBuffer(&bytes)
        }
        if case .dialing = state, !readsPaused, (buffered?.readableBytes ?? 0) > Self.maxBufferedWhileDialing {
            readsPaused = true
            try? context.channel.syncOptions?.setOption(.autoRead, value: false)
        }
        process(context: context)
    }

    private func process(context: ChannelHandlerContext) {
        guard let record, let bytes = buffered else { return }
        switch state {
        case .readingConnectHead(var parser):
            let outcome = parser.parse(bytes)
            state = .readingConnectHead(parser)
            switch outcome {
            case .needMoreData:
                return
            case .rejected(.methodNotAllowed) where Self.isAbsoluteFormHTTP(bytes):
                // `GET http://host/path`: an explicit proxy client speaking plain HTTP. Originate TLS for it.
                handOverToHTTP(context: context, bytes: bytes)
            case .rejected(let rejection):
                proxy.metrics.connectRequestRejected(rejection.metricLabel)
                respondHTTP(context: context, status: rejection.status, phrase: rejection.reasonPhrase,
                            code: "invalid_request", message: rejection.explanation)
                finishEarly(context: context, cause: .invalidConnectRequest, reason: "invalid CONNECT request: \(rejection.explanation)")
            case .complete(let request):
                record.connectHost = request.host
                record.port = request.port
                let decision = record.decide(DestinationFacts(connectHost: request.host, port: request.port), snapshot: snapshot)
                guard decision.lets else {
                    respondHTTP(context: context, status: 403, phrase: "Forbidden", code: "policy_denied",
                                message: decision.reason + (record.hint.map { "\nto allow it: \($0)" } ?? ""))
                    finishEarly(context: context, cause: .denied, reason: nil)
                    return
                }
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: "HTTP/1.1 200 Connection Established\r\n\r\n")), promise: nil)
                var rest = bytes
                rest.moveReaderIndex(forwardBy: request.headLength)
                buffered = rest.readableBytes > 0 ? rest.slice() : nil
                state = .readingClientHello(ClientHelloParser(maxHelloBytes: snapshot.gateway.tls.maxClientHelloBytes))
                if buffered != nil { process(context: context) }
            }

        case .readingClientHello(var parser):
            let outcome = parser.parse(bytes)
            state = .readingClientHello(parser)
            switch outcome {
            case .needMoreData:
                return
            case .rejected(let rejection, let detail):
                proxy.metrics.clientHelloRejected(rejection)
                let reason = "invalid ClientHello: \(rejection.explanation)" + (detail.map { " (\($0))" } ?? "")
                if rejection != .notTLS && rejection != .sslv2 {
                    context.write(wrapOutboundOut(TLSAlert.decodeError.record(allocator: context.channel.allocator)), promise: nil)
                }
                finishEarly(context: context, cause: .invalidClientHello, reason: reason)
            case .complete(let hello):
                let decision = record.decide(hello: hello, snapshot: snapshot)
                guard decision.lets, let host = decision.host, let port = decision.port else {
                    context.write(wrapOutboundOut(TLSAlert.accessDenied.record(allocator: context.channel.allocator)), promise: nil)
                    finishEarly(context: context, cause: .denied, reason: nil)
                    return
                }
                deadline?.cancel()
                state = .dialing
                dial(context: context, host: host, port: port, serviceAddresses: decision.serviceAddresses)
            }

        case .dialing:
            return  // keep buffering; replayed once the upstream answers
        case .relaying, .closed:
            return
        }
    }

    /// A redirected connection whose original destination is a TCP ExternalService's address and
    /// port is decided at once (some TCP protocols wait for the server to speak first) and relayed
    /// to that address, without TLS inspection. Other connections go on to the ClientHello.
    private func judgeAsTCPService(context: ChannelHandlerContext, original: SocketAddress) {
        guard case .readingClientHello = state, let (decision, ip, port) = record?.decideTCPService(original: original, snapshot: snapshot)
        else { return }
        plainTCP = true
        guard decision.lets else {
            finishEarly(context: context, cause: .denied, reason: nil)
            return
        }
        deadline?.cancel()
        state = .dialing
        let dialer = UpstreamDialer(context: proxy, snapshot: snapshot, eventLoop: context.eventLoop)
        whenDialled(context: context, dialer.connect(address: ip, port: port, serviceAddresses: decision.serviceAddresses))
    }

    /// True if the request line is `METHOD http://...`.
    static func isAbsoluteFormHTTP(_ bytes: ByteBuffer) -> Bool {
        let view = bytes.readableBytesView.prefix(64)
        guard let space = view.firstIndex(of: UInt8(ascii: " ")) else { return false }
        let target = view[view.index(after: space)...].prefix(7)
        return String(decoding: target, as: UTF8.self).lowercased() == "http://"
    }

    private func handOverToHTTP(context: ChannelHandlerContext, bytes: ByteBuffer) {
        deadline?.cancel()
        state = .closed
        buffered = nil
        record?.handedOver(metrics: proxy.metrics)
        do {
            try HTTPProxyPipeline.add(to: context.pipeline.syncOperations, listenerName: listenerName, proxy: proxy,
                                      countsConnection: false, position: .after(context.handler))
        } catch {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(wrapInboundOut(bytes))
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    // MARK: dial and hand over

    private func dial(context: ChannelHandlerContext, host: String, port: Int, serviceAddresses: [CIDR]) {
        let dialer = UpstreamDialer(context: proxy, snapshot: snapshot, eventLoop: context.eventLoop)
        let original = record?.originalDestination.flatMap(IPAddress.init)?.unmapped
        whenDialled(context: context, dialer.connect(host: host, port: port, serviceAddresses: serviceAddresses, originalDestination: original))
    }

    /// Starts the relay once the upstream answers, or ends the connection with the reason it did not.
    private func whenDialled(context: ChannelHandlerContext, _ future: EventLoopFuture<UpstreamDialer.Connected>) {
        future.hop(to: context.eventLoop).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let connected):
                guard case .dialing = self.state else {
                    // The client went away while we dialled.
                    connected.channel.close(promise: nil)
                    return
                }
                self.startRelay(context: context, upstream: connected)
            case .failure(let error):
                guard case .dialing = self.state, let record = self.record else { return }
                let (cause, alert, denial) = record.dialFailed(error as? UpstreamDialer.Failure ?? .connectFailed("\(error)", timedOut: false))
                if !self.plainTCP {
                    context.write(self.wrapOutboundOut(alert.record(allocator: context.channel.allocator)), promise: nil)
                }
                self.finishEarly(context: context, cause: cause, reason: denial)
            }
        }
    }

    private func startRelay(context: ChannelHandlerContext, upstream: UpstreamDialer.Connected) {
        guard let record else { return }
        record.resolved = upstream.address
        record.addressMismatch = upstream.addressMismatch
        if let newer = proxy.newerPolicyToRecheck(than: snapshot), record.revoked(by: newer) {
            // A policy installed while this connection was being decided or dialled refuses it.
            upstream.channel.close(promise: nil)
            if !plainTCP { context.write(wrapOutboundOut(TLSAlert.accessDenied.record(allocator: context.channel.allocator)), promise: nil) }
            finishEarly(context: context, cause: .policyRevoked, reason: nil)
            return
        }
        state = .relaying
        proxy.accessLog.flows?.opened(record)
        let now = context.eventLoop.now
        let session = RelaySession(record: record, context: proxy, idleLimit: .nanoseconds(snapshot.gateway.limits.idleTimeout.nanoseconds), now: now)
        let (clientGlue, upstreamGlue) = GlueHandler.matchedPair(session: session)
        let pending = buffered
        buffered = nil
        if let pending { session.count(bytes: pending.readableBytes, fromClient: true, at: now) }
        do {
            try upstream.channel.pipeline.syncOperations.addHandler(upstreamGlue)
            try context.pipeline.syncOperations.addHandler(clientGlue, position: .after(context.handler))
            session.clientChannel = context.channel
            proxy.sweeper(for: context.eventLoop).add(session)
        } catch {
            upstream.channel.close(promise: nil)
            finishEarly(context: context, cause: .upstreamError, reason: "cannot set up the relay: \(error)")
            return
        }
        if let pending { upstream.channel.writeAndFlush(pending, promise: nil) }
        if clientInputClosed { upstream.channel.close(mode: .output, promise: nil) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        if readsPaused { try? context.channel.syncOptions?.setOption(.autoRead, value: true) }
    }

    // MARK: endings before the relay

    private func handshakeTimedOut(context: ChannelHandlerContext, after timeout: Duration) {
        switch state {
        case .readingConnectHead:
            respondHTTP(context: context, status: 408, phrase: "Request Timeout", code: "handshake_timeout",
                        message: "no complete CONNECT request within \(DurationSyntax.format(timeout))")
            finishEarly(context: context, cause: .handshakeTimeout, reason: "no complete CONNECT request within \(DurationSyntax.format(timeout))")
        case .readingClientHello:
            finishEarly(context: context, cause: .handshakeTimeout, reason: "no complete ClientHello within \(DurationSyntax.format(timeout))")
        default:
            return
        }
    }

    /// Writes the record (as a denial when `reason` is given, else with the decision made) and closes.
    private func finishEarly(context: ChannelHandlerContext, cause: CloseCause, reason: String?) {
        deadline?.cancel()
        state = .closed
        buffered = nil
        record?.finish(cause, log: proxy.accessLog, metrics: proxy.metrics, reason: reason)
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(capacity: 0))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    private func respondHTTP(context: ChannelHandlerContext, status: Int, phrase: String, code: String, message: String) {
        let body = message + "\n"
        let head = "HTTP/1.1 \(status) \(phrase)\r\nContent-Type: text/plain; charset=utf-8\r\nCorridor-Decision: deny\r\n"
            + "Corridor-Reason: \(code)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        context.write(wrapOutboundOut(context.channel.allocator.buffer(string: head + body)), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch state {
        case .readingConnectHead:
            finishEarly(context: context, cause: .clientClosedEarly, reason: "the client closed before sending a complete CONNECT request")
        case .readingClientHello:
            let sentSomething = buffered.map { $0.readableBytes > 0 } ?? false
            finishEarly(context: context, cause: .clientClosedEarly,
                        reason: sentSomething ? "the client closed before sending a complete ClientHello" : "the client closed without sending a ClientHello")
        case .dialing:
            state = .closed
            record?.finish(.clientClosedWhileConnecting, log: proxy.accessLog, metrics: proxy.metrics)
        case .relaying, .closed:
            break
        }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            clientInputClosed = true
            switch state {
            case .readingConnectHead:
                finishEarly(context: context, cause: .clientClosedEarly, reason: "the client shut its side before sending a complete CONNECT request")
            case .readingClientHello:
                finishEarly(context: context, cause: .clientClosedEarly, reason: "the client shut its side before sending a complete ClientHello")
            default:
                break
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch state {
        case .readingConnectHead, .readingClientHello, .dialing:
            finishEarly(context: context, cause: .clientError, reason: "client connection error: \(error)")
        default:
            context.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension InspectHandler: Sendable {}

extension Duration {
    var nanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }
}
