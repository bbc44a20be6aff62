import CorridorPolicy
import NIOCore
import NIOHTTP1
import NIOSSL

/// Plain HTTP from an app, judged request by request and originated over verified TLS.
///
///     request head -> target (absolute form or Host) -> identify + decide -> pooled upstream (TLS) -> stream both ways
///
/// Every request on a keep-alive connection is decided again, against the policy in force when it
/// arrives and the source's identity at that moment (a reload, or a pod IP changing hands, reaches
/// the next request). Refusals are HTTP responses with a one-line reason and a `Corridor-Reason`
/// code; each request writes one access record.
final class HTTPProxyHandler: ChannelDuplexHandler, UpstreamHTTPDelegate {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case idle
        /// Waiting for an upstream; request parts that arrived meanwhile are kept (reads are held).
        case connecting(pending: [HTTPServerRequestPart])
        case forwarding(UpstreamHTTPConnection)
        /// The upstream answered in full before the request's body ended: its connection is gone
        /// (it may not have read the body as a body, so what it reads next is unknowable) and the
        /// rest of the body is read and dropped; then the exchange is complete.
        case discardingBody
        /// A refusal was sent; the rest of the request is dropped, then the connection closes.
        case refusing
        case closed
    }

    private struct Exchange {
        var record: ConnectionRecord
        var keepAlive: Bool
        /// How the request's body is delimited; the forwarded head states exactly this.
        var framing = HTTPRequestHeadCheck.BodyFraming.none
        /// Bytes of the request's body sent upstream.
        var bodySent = 0
        /// Interim (1xx) responses the upstream sent so far.
        var interimResponses = 0
        var requestEnded = false
        var responseStarted = false
        var responseEnded = false
        /// The request's method and version: how the response to it is framed (no body for HEAD;
        /// never chunked, and no interim responses, for an HTTP/1.0 client).
        var method: HTTPMethod
        var version: HTTPVersion
        var speaksHTTP11: Bool { version.major > 1 || (version.major == 1 && version.minor >= 1) }
        /// Where the request goes, once decided.
        var route: Route?
        /// The upstream connection came from the pool (it may have died while idle).
        var reusedUpstream = false
        /// The request was sent again on a fresh connection after a pooled one died unanswered.
        var retried = false
        /// The request's trailers, once its end arrived (kept for a retry).
        var trailers: HTTPHeaders?
        /// The Connection fields of the request's and of the response's header section: the
        /// fields they name are hop-by-hop in the trailers too.
        var requestConnection = HTTPHeaders()
        var responseConnection = HTTPHeaders()
    }

    /// How the current request reaches its upstream: the pool key, the dial parameters, and the
    /// head as forwarded.
    private struct Route {
        var key: UpstreamPool.Key
        var host: String
        var originate: ExternalService.OriginateTLS?
        var sslContext: NIOSSLContext?
        var port: Int
        var serviceAddresses: [CIDR]
        var head: HTTPRequestHead
    }

    private let listenerName: String
    private let proxy: ProxyContext
    /// The policy of the current request (read again as each request head arrives).
    private var snapshot: PolicySnapshot
    private var origination: OriginationContexts
    private let countsConnection: Bool
    private var state = State.idle
    /// Gives up the dial in progress when the client leaves before it answers.
    private var dialCancellation: UpstreamDialer.Cancellation?
    private var exchange: Exchange?
    private var context: ChannelHandlerContext?
    /// The client's address, read once; its identity is looked up per request.
    private var source: SocketAddress?
    private var sourceAddress: IPAddress?
    /// This event loop's idle upstream connections (set when the handler is added).
    private var loopPool: UpstreamPool?
    private var pool: UpstreamPool {
        guard let loopPool else { preconditionFailure("HTTPProxyHandler used before it was added to a pipeline") }
        return loopPool
    }
    private var identity: SourceIdentity?
    /// Where the client dialled, when iptables redirected the connection to the gateway.
    private var originalDestination: SocketAddress?
    /// Its address: checked against the name's addresses (`spec.transparent.addressMismatch`).
    private var originalAddress: IPAddress? { originalDestination.flatMap(IPAddress.init)?.unmapped }
    /// Requests begun (or refused) on this connection; a connection that ends with none still
    /// leaves one record (see ``recordIfNoRequest(_:reason:)``).
    private var requestsSeen = 0
    private var pendingRead = false
    /// When the connection was set up (for its first record).
    private var connectionStarted: (ContinuousClock.Instant, Double)?
    /// A request asking for an upgrade began: once it has been read, the request decoder parses
    /// nothing more (see ``asksForUpgrade(_:)``), so the client is not read again: what it sent
    /// would only pile up in the decoder.
    private var upgradeAsked = false
    private var clientReadsEnded = false
    /// The client shut its side: answer what it asked, then close.
    private var clientInputClosed = false
    /// When a complete request head must have arrived (see ``armHeadDeadline(context:)``), and the
    /// limit it came from.
    private var headDeadline: (at: NIODeadline, limit: Duration)?
    /// When the upstream must have started its response (`limits.upstreamResponseTimeout`).
    private var responseDeadline: (at: NIODeadline, limit: Duration)?
    /// Once the response has started: when the exchange is cut if no byte has moved either way
    /// since `lastActivity` (`limits.idleTimeout`, as for relays); moved on when the timer finds
    /// activity, so a body chunk costs a clock read, not a timer.
    private var idleDeadline: (at: NIODeadline, limit: Duration)?
    private var lastActivity = NIODeadline.uptimeNanoseconds(0)
    /// One timer for every deadline, armed at the earliest and re-armed when it fires early: a
    /// kept-alive connection sets and clears deadlines on every request without scheduling a task.
    private var timer: (task: Scheduled<Void>, at: NIODeadline)?
    /// What arrived from the client while an exchange was still being answered (a pipelined next
    /// request, a half-close, a parse error), taken up in order once that exchange ends. Reads stop
    /// while anything waits here, so it holds at most what one read brought.
    private var waiting = CircularBuffer<ClientEvent>(initialCapacity: 0)

    private enum ClientEvent {
        case part(HTTPServerRequestPart)
        case inputClosed
        case parseError(any Error)
    }

    /// `countsConnection`: false when the connection was already admitted (the CONNECT listener hands over).
    init(listenerName: String, proxy: ProxyContext, countsConnection: Bool) {
        self.listenerName = listenerName
        self.proxy = proxy
        (self.snapshot, self.origination) = proxy.policy.currentWithOrigination
        self.countsConnection = countsConnection
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        loopPool = proxy.pool(for: context.eventLoop)
        if context.channel.isActive { setUp(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimer()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        setUp(context: context)
        context.fireChannelActive()
    }

    private var isSetUp = false
    /// Where this loop's ``LoopConnections`` keeps this handler.
    var tableSlot = -1
    /// The gateway stopped and closed the connection (the drain deadline passed).
    private var stopped = false

    private func setUp(context: ChannelHandlerContext) {
        guard !isSetUp else { return }
        isSetUp = true
        connectionStarted = (.now, AccessLog.now())
        proxy.connections(for: context.eventLoop).add(self)
        armHeadDeadline(context: context)
        source = context.channel.remoteAddress
        sourceAddress = source.flatMap(IPAddress.init)
        refreshPolicy()
        OriginalDestination.lookup(context.channel) { [weak self] in self?.originalDestination = $0 }
        guard countsConnection else { return }
        if let refusal = proxy.admit(context.channel, source: sourceAddress, gateway: snapshot.gateway) {
            requestsSeen += 1
            let record = newRecord(context: context)
            proxy.metrics.connectionOpened()
            record.finish(refusal.cause, log: proxy.accessLog, metrics: proxy.metrics, reason: refusal.reason)
            state = .closed
            context.close(promise: nil)
            return
        }
    }

    /// Reads the policy in force now and the source's identity under it.
    private func refreshPolicy() {
        (snapshot, origination) = proxy.policy.currentWithOrigination
        identity = sourceAddress.flatMap { snapshot.inventory.identity(of: $0) }
    }

    /// A record for the request just begun (``requestsSeen`` counts it already); the connection's
    /// first starts when the connection did, so its duration covers the wait for its head.
    private func newRecord(context: ChannelHandlerContext) -> ConnectionRecord {
        let record = ConnectionRecord(id: proxy.makeConnectionID(), listener: listenerName, source: source,
                                      started: requestsSeen == 1 ? connectionStarted : nil)
        record.identity = identity
        record.policyGeneration = snapshot.generation
        record.originalDestination = originalDestination
        if let original = originalDestination, record.port == nil { record.port = original.port }
        return record
    }

    /// A connection that ends before any request (cut by the head deadline, or closed by the
    /// client) is recorded too: every connection leaves at least one record.
    private func recordIfNoRequest(context: ChannelHandlerContext, _ cause: CloseCause, reason: String) {
        guard requestsSeen == 0 else { return }
        recordUnansweredHead(context: context, cause, reason: reason)
    }

    /// Records a request head that never came whole (or, at the start, no request at all).
    private func recordUnansweredHead(context: ChannelHandlerContext, _ cause: CloseCause, reason: String) {
        requestsSeen += 1
        let record = newRecord(context: context)
        proxy.metrics.connectionOpened()
        record.finish(cause, log: proxy.accessLog, metrics: proxy.metrics, reason: reason)
    }

    static let closedMidHead = "the client closed before sending a complete request head"

    // MARK: requests

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if upgradeAsked, case .end = part { clientReadsEnded = true }
        if mustWait {
            waiting.append(.part(part))
            return
        }
        handle(part, context: context)
    }

    /// The current request has ended and its response has not: what the client sends now belongs
    /// after that response (or earlier client events still wait).
    private var mustWait: Bool { !waiting.isEmpty || awaitingResponse }

    /// A whole request has been read and its exchange is not over.
    private var awaitingResponse: Bool {
        switch state {
        case .connecting, .forwarding: return exchange?.requestEnded ?? false
        case .idle, .refusing, .closed, .discardingBody: return false
        }
    }

    /// Takes up what the client sent while the previous exchange was answered, in order, until a
    /// request again waits for its response; then reads resume.
    private func takeUpWaiting(context: ChannelHandlerContext) {
        while self.context != nil, !waiting.isEmpty {
            if case .closed = state {
                waiting.removeAll()
                return
            }
            if awaitingResponse { return }
            switch waiting.removeFirst() {
            case .part(let part): handle(part, context: context)
            case .inputClosed: clientInputEnded(context: context)
            case .parseError(let error): parseFailed(context: context, error: error)
            }
        }
        if waiting.isEmpty { resumeClientReads(context: context) }
    }

    private func handle(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch (state, part) {
        case (.idle, .head(let head)):
            begin(context: context, head: head)
        case (.idle, _):
            break  // the rest of a request already answered
        case (.connecting(var pending), .end(let trailers)):
            // Trailers reach the upstream without the fields that route, frame or authenticate.
            let forwarded = trailers.map { HTTPHeaders.forwardedTrailers($0, header: exchange?.requestConnection ?? [:]) }
            pending.append(.end(forwarded))
            state = .connecting(pending: pending)
            exchange?.requestEnded = true
            exchange?.trailers = forwarded
        case (.connecting(var pending), _):
            pending.append(part)
            state = .connecting(pending: pending)
        case (.forwarding(let upstream), .body(let buffer)):
            lastActivity = .now()
            send(buffer, to: upstream, context: context)
        case (.forwarding(let upstream), .end(let trailers)):
            let forwarded = trailers.map { HTTPHeaders.forwardedTrailers($0, header: exchange?.requestConnection ?? [:]) }
            exchange?.requestEnded = true
            exchange?.trailers = forwarded
            guard sendEnd(forwarded, to: upstream, context: context, flush: true) else { return }
            if !(exchange?.responseStarted ?? true) {
                // The upload is over: now the upstream's answer is awaited, not the client's bytes.
                startResponseDeadline(context: context)
            }
            completeIfDone(context: context)
        case (.discardingBody, .body(let buffer)):
            exchange?.record.bytesUp += buffer.readableBytes
            lastActivity = .now()
        case (.discardingBody, .end):
            exchange?.requestEnded = true
            completeIfDone(context: context)
        case (.forwarding, .head), (.discardingBody, .head):
            // The next request waits in `waiting` until this exchange is over; a head now would
            // mean bytes of one request could reach another's upstream. Never reuse it.
            refuse(context: context, status: .badRequest, code: .badRequest,
                   reason: "a new request arrived before the previous exchange ended", kind: .denial)
        case (.refusing, .end):
            state = .closed
            closeAfterWrites(context: context)
        case (.refusing, _), (.closed, _):
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .forwarding(let upstream) = state { upstream.channel.flush() }
        context.fireChannelReadComplete()
    }

    private func begin(context: ChannelHandlerContext, head: HTTPRequestHead) {
        headDeadline = nil
        refreshPolicy()
        requestsSeen += 1
        let record = newRecord(context: context)
        proxy.metrics.connectionOpened()
        record.httpMethod = head.method.rawValue
        // A request asking for an upgrade is the last the request decoder reads on the connection
        // (llhttp hands the rest to the new protocol); no upgrade crosses the gateway, so the
        // request is answered as HTTP/1.1 and the connection then closes, which tells the client
        // to send what follows on a new one.
        if Self.asksForUpgrade(head) { upgradeAsked = true }
        exchange = Exchange(record: record, keepAlive: head.isKeepAlive && !upgradeAsked, method: head.method, version: head.version)
        exchange?.requestConnection = HTTPHeaders.connectionFields(head.headers)
        switch HTTPRequestHeadCheck.check(head) {
        case .failure(let problem):
            refuse(context: context, status: problem.status, code: problem.code, reason: problem.reason, kind: .denial)
            return
        case .success(let framing):
            exchange?.framing = framing
        }
        let target: HTTPTarget
        switch HTTPTarget.parse(head) {
        case .failure(let problem):
            refuse(context: context, status: .badRequest, code: .badRequest, reason: problem.reason, kind: .denial)
            return
        case .success(let parsed):
            target = parsed
        }
        record.httpHost = target.host
        record.port = target.port
        if snapshot.gateway.logging.includePath { record.httpPath = target.path }
        let decision = record.decide(DestinationFacts(connectHost: target.host, port: target.port, kind: .http), snapshot: snapshot)
        guard decision.lets else {
            refuse(context: context, status: .forbidden, code: .policyDenied, reason: decision.reason, kind: .policy)
            return
        }
        // Where the client dialled matters for an origin-form request, which a redirected app sends
        // to the origin's address. An absolute-form request is sent to a proxy: through the
        // gateway's Service its original destination is the Service's address, no origin's.
        let dialled = head.uri.utf8.first == UInt8(ascii: "/") || head.uri == "*" ? originalAddress : nil
        let originate: ExternalService.OriginateTLS?
        let sslContext: NIOSSLContext?
        let key: UpstreamPool.Key
        if let service = decision.externalService, let servicePort = decision.servicePort, servicePort.protocol == .http {
            originate = servicePort.originateTLS
            sslContext = origination.context(service: service, port: servicePort.number)
            if originate != nil && sslContext == nil {
                refuse(context: context, status: .badGateway, code: .upstreamTLSUnavailable, reason: "no TLS context for \(service)",
                       kind: .upstreamFailure, cause: .upstreamError)
                return
            }
            key = UpstreamPool.Key(generation: snapshot.generation, service: service, port: servicePort.number, host: target.host,
                                   originalDestination: dialled, principal: .init(identity: record.identity, address: record.sourceAddress))
        } else {
            // Audited, with no registered HTTP port to say how to reach the host: the request goes
            // as it would once registered the usual way, over TLS to port 443, verified against
            // the system trust store. Plain text never leaves for an audit.
            originate = ExternalService.OriginateTLS(port: Self.auditUpstreamPort)
            sslContext = OriginationContexts.systemTrust
            guard sslContext != nil else {
                refuse(context: context, status: .badGateway, code: .upstreamTLSUnavailable, reason: "no TLS context with the system trust store",
                       kind: .upstreamFailure, cause: .upstreamError)
                return
            }
            key = UpstreamPool.Key(generation: snapshot.generation, service: nil, port: Self.auditUpstreamPort, host: target.host,
                                   originalDestination: dialled, principal: .init(identity: record.identity, address: record.sourceAddress))
        }
        let upstreamPort = originate?.port ?? target.port
        // Always HTTP/1.1 upstream: the body's framing (Content-Length or chunked, as the client's
        // request was decoded) is stated and encoded afresh, never sent as it came. The upstream
        // sees the host that was judged, whatever Host header the client added.
        let forwarded = HTTPRequestHead(version: .http1_1, method: head.method, uri: target.path,
                                        headers: HTTPHeaders.forwardedRequest(head.headers, host: target.hostHeader, method: head.method,
                                                                              framing: exchange?.framing ?? .none))
        let route = Route(key: key, host: target.host, originate: originate, sslContext: sslContext, port: upstreamPort,
                          serviceAddresses: decision.serviceAddresses, head: forwarded)
        exchange?.route = route
        state = .connecting(pending: [])
        if let connection = pool.take(key) {
            exchange?.reusedUpstream = true
            startForwarding(context: context, upstream: connection)
            return
        }
        dial(context: context, route: route)
    }

    /// Dials a new upstream connection for the current request.
    private func dial(context: ChannelHandlerContext, route: Route) {
        let cancellation = UpstreamDialer.Cancellation(eventLoop: context.eventLoop)
        dialCancellation = cancellation
        let dialer = UpstreamDialer(context: proxy, snapshot: snapshot, eventLoop: context.eventLoop, cancellation: cancellation)
        UpstreamPool.connect(key: route.key, host: route.host, originate: route.originate, context: route.sslContext, port: route.port,
                             serviceAddresses: route.serviceAddresses, dialer: dialer)
            .assumeIsolated().whenComplete { result in
                if self.dialCancellation === cancellation { self.dialCancellation = nil }
                guard case .connecting = self.state else {
                    if case .success(let connection) = result { connection.channel.close(promise: nil) }
                    return
                }
                switch result {
                case .success(let connection):
                    self.startForwarding(context: context, upstream: connection)
                case .failure(let error):
                    // As the connection engine records them (ConnectionRecord.dialFailed).
                    switch error {
                    case UpstreamDialer.Failure.addressMismatch: self.exchange?.record.noteAddressMismatchRefused(naming: "Host")
                    case UpstreamDialer.Failure.blocked: self.exchange?.record.signals.append(.guardRefused)
                    default: break
                    }
                    let (status, code, reason) = Self.classify(error, host: route.host, port: route.port)
                    let blocked = code == .destinationBlocked
                    self.refuse(context: context, status: status, code: code, reason: reason, kind: blocked ? .denial : .upstreamFailure,
                                cause: blocked ? .destinationBlocked : (status == .gatewayTimeout ? .connectTimeout : .connectFailed))
                }
            }
    }

    private func startForwarding(context: ChannelHandlerContext, upstream: UpstreamHTTPConnection) {
        guard case .connecting(let pending) = state, let head = exchange?.route?.head, let handler = upstream.handler else {
            upstream.channel.close(promise: nil)
            return
        }
        handler.delegate = self
        exchange?.record.resolved = upstream.channel.remoteAddress
        exchange?.record.addressMismatch = upstream.addressMismatch
        state = .forwarding(upstream)
        if let record = exchange?.record { proxy.accessLog.flows?.opened(record) }
        upstream.channel.write(HTTPClientRequestPart.head(head), promise: nil)
        for part in pending {
            switch part {
            case .body(let buffer):
                guard send(buffer, to: upstream, context: context) else { return }
            case .end(let trailers):
                guard sendEnd(trailers, to: upstream, context: context, flush: false) else { return }
            case .head:
                break
            }
        }
        upstream.channel.flush()
        if exchange?.requestEnded ?? false {
            startResponseDeadline(context: context)
        } else {
            // The body is still coming: the upload may take its time as long as it moves.
            startIdleDeadline(context: context)
        }
        resumeClientReads(context: context)
    }

    /// Sends a piece of the request's body upstream, within the framing its forwarded head
    /// states. The request decoder yields no more than that framing holds; were it ever to, the
    /// excess would be read upstream as another request, unjudged, so it is not sent: the
    /// exchange is cut instead (false).
    @discardableResult
    private func send(_ buffer: ByteBuffer, to upstream: UpstreamHTTPConnection, context: ChannelHandlerContext) -> Bool {
        guard let exchange else { return false }
        let sent = exchange.bodySent + buffer.readableBytes
        let fits: Bool
        switch exchange.framing {
        case .chunked: fits = true
        case .length(let length): fits = sent <= length
        case .none: fits = buffer.readableBytes == 0
        }
        guard fits else {
            bodyOutsideFraming(context: context)
            return false
        }
        self.exchange?.bodySent = sent
        self.exchange?.record.bytesUp += buffer.readableBytes
        upstream.channel.write(HTTPClientRequestPart.body(.byteBuffer(buffer)), promise: nil)
        return true
    }

    /// Sends the request's end upstream once its body is as long as the forwarded head said
    /// (else the upstream would read what follows as the rest of it: the exchange is cut, false).
    private func sendEnd(_ trailers: HTTPHeaders?, to upstream: UpstreamHTTPConnection, context: ChannelHandlerContext, flush: Bool) -> Bool {
        guard let exchange else { return false }
        if case .length(let length) = exchange.framing, exchange.bodySent != length {
            bodyOutsideFraming(context: context)
            return false
        }
        let end = HTTPClientRequestPart.end(trailers)
        if flush { upstream.channel.writeAndFlush(end, promise: nil) } else { upstream.channel.write(end, promise: nil) }
        return true
    }

    private func bodyOutsideFraming(context: ChannelHandlerContext) {
        proxy.logger.error("http: a request body did not match the framing it was decoded with; the exchange is cut")
        cutMidResponse(context: context, cause: .internalError, afterWrites: false,
                       reason: "the request's body did not match its framing (\(exchange.map { "\($0.framing)" } ?? "none"))")
    }

    // MARK: deadlines

    private func armTimer(context: ChannelHandlerContext) {
        func earlier(_ a: NIODeadline?, _ b: NIODeadline?) -> NIODeadline? {
            guard let a else { return b }
            guard let b else { return a }
            return min(a, b)
        }
        guard let next = earlier(earlier(headDeadline?.at, responseDeadline?.at), idleDeadline?.at) else { return }
        if let timer, timer.at <= next { return }
        timer?.task.cancel()
        let task = context.eventLoop.assumeIsolated().scheduleTask(deadline: next) { [weak self] () -> Void in
            self?.timerFired(context: context)
        }
        timer = (task, next)
    }

    /// The whole request has gone upstream: its response must start within
    /// `limits.upstreamResponseTimeout` (counted from the request's end, so a long upload is not
    /// cut for the time it took). Until it starts, the idle limit of the upload no longer applies.
    private func startResponseDeadline(context: ChannelHandlerContext) {
        idleDeadline = nil
        let timeout = snapshot.gateway.limits.upstreamResponseTimeout
        responseDeadline = (.now() + .nanoseconds(timeout.nanoseconds), timeout)
        armTimer(context: context)
    }

    /// The request's body is on its way, or the response has started: from now on the exchange
    /// may not stand still longer than a relay.
    private func startIdleDeadline(context: ChannelHandlerContext) {
        lastActivity = .now()
        guard idleDeadline == nil else { return }
        let limit = snapshot.gateway.limits.idleTimeout
        idleDeadline = (lastActivity + .nanoseconds(limit.nanoseconds), limit)
        armTimer(context: context)
    }

    private func cancelTimer() {
        timer?.task.cancel()
        timer = nil
    }

    private func timerFired(context: ChannelHandlerContext) {
        timer = nil
        let now = NIODeadline.now()
        if let response = responseDeadline, response.at <= now {
            responseDeadline = nil
            if case .forwarding = state, !(exchange?.responseStarted ?? true) {
                refuse(context: context, status: .gatewayTimeout, code: .upstreamTimeout,
                       reason: "the upstream did not answer within \(DurationSyntax.format(response.limit)) (spec.limits.upstreamResponseTimeout)",
                       kind: .upstreamFailure, cause: .upstreamTimeout)
            }
        }
        if let idle = idleDeadline, idle.at <= now {
            let due = lastActivity + .nanoseconds(idle.limit.nanoseconds)
            if due > now {
                idleDeadline = (due, idle.limit)
            } else if case .forwarding(let upstream) = state, let exchange, !exchange.responseStarted {
                idleDeadline = nil
                if !exchange.requestEnded && upstream.channel.isWritable {
                    // The request's body stopped coming while the upstream could take it.
                    refuse(context: context, status: .requestTimeout, code: .requestTimeout,
                           reason: "the request body stood still for \(DurationSyntax.format(idle.limit)) (spec.limits.idleTimeout)",
                           kind: .upstreamFailure, cause: .idleTimeout)
                } else {
                    // The upstream stopped taking the body, and has not answered.
                    refuse(context: context, status: .gatewayTimeout, code: .upstreamTimeout,
                           reason: "the upstream took no byte of the request and sent none for \(DurationSyntax.format(idle.limit)) (spec.limits.idleTimeout)",
                           kind: .upstreamFailure, cause: .upstreamTimeout)
                }
            } else if case .forwarding = state, exchange != nil {
                // A client that stopped reading (or an upstream that stopped sending) mid-response
                // holds nothing longer than a relay would.
                cutMidResponse(context: context, cause: .idleTimeout, afterWrites: false,
                               reason: "no byte either way for \(DurationSyntax.format(idle.limit)) (spec.limits.idleTimeout)")
            } else if case .discardingBody = state, exchange != nil {
                // Answered already; the rest of the body stopped coming.
                cutMidResponse(context: context, cause: .idleTimeout, afterWrites: true,
                               reason: "the rest of the request body stood still for \(DurationSyntax.format(idle.limit)) after the response (spec.limits.idleTimeout)")
            } else {
                idleDeadline = nil
            }
        }
        if let head = headDeadline, head.at <= now {
            headDeadline = nil
            switch state {
            case .idle, .refusing:
                recordIfNoRequest(context: context, .handshakeTimeout,
                                  reason: "no complete request head within \(DurationSyntax.format(head.limit)) (spec.limits.handshakeTimeout)")
                state = .closed
                context.close(promise: nil)
            default:
                break
            }
        }
        if case .closed = state { return }
        armTimer(context: context)
    }

    // MARK: responses from the upstream

    func upstreamResponse(_ part: HTTPClientResponsePart) {
        guard let context, case .forwarding = state, let exchange else { return }
        switch part {
        case .head(let head) where head.status == .switchingProtocols:
            // Upgrade never crosses the gateway (it is hop-by-hop), so no request asked for this;
            // whatever follows on the connection is no HTTP response.
            if exchange.responseStarted {
                cutMidResponse(context: context, cause: .upstreamError, afterWrites: true,
                               reason: "the upstream switched protocols, which no request asked for")
            } else {
                refuse(context: context, status: .badGateway, code: .upstreamClosed,
                       reason: "the upstream switched protocols, which no request asked for", kind: .upstreamFailure, cause: .upstreamError)
            }
        case .head(let head) where head.status.code / 100 == 1 && exchange.interimResponses >= Self.maxInterimResponses:
            refuse(context: context, status: .badGateway, code: .upstreamClosed,
                   reason: "the upstream sent more than \(Self.maxInterimResponses) interim responses without a final one",
                   kind: .upstreamFailure, cause: .upstreamError)
        case .head(var head) where head.status.code / 100 == 1:
            // An interim response (`100 Continue` to `Expect: 100-continue`, `103 Early Hints`):
            // passed on at once; the final response follows. The upstream is alive, so the
            // response-start deadline starts again (or, while the body still uploads, the idle
            // limit goes on), a bounded number of times.
            self.exchange?.interimResponses += 1
            responseDeadline = nil
            if exchange.requestEnded {
                startResponseDeadline(context: context)
            } else {
                startIdleDeadline(context: context)
            }
            // An HTTP/1.0 client is sent no 1xx (RFC 9110 section 15.2).
            guard exchange.speaksHTTP11 else { return }
            HTTPHeaders.removeHopByHop(&head.headers)
            Self.frameWithoutBody(&head.headers)
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: head.status, headers: head.headers))), promise: nil)
        case .head(let head) where exchange.method != .HEAD && head.status.mayHaveResponseBody
                                   && HTTPHeaders.hasTransferCodingBesidesChunked(head.headers):
            // The response decoder took the chunked coding off; another (gzip, say) would reach the
            // client unlabelled inside a body re-framed as chunked alone. nginx answers 502 too.
            let codings = head.headers["Transfer-Encoding"].joined(separator: ", ")
            refuse(context: context, status: .badGateway, code: .unsupportedTransferCoding,
                   reason: "the upstream's response has Transfer-Encoding '\(codings.prefix(100))': only chunked is passed on",
                   kind: .upstreamFailure, cause: .upstreamError)
        case .head(var head):
            if !head.isKeepAlive, case .forwarding(let upstream) = state { upstream.reusable = false }
            self.exchange?.responseStarted = true
            responseDeadline = nil
            exchange.record.httpStatus = Int(head.status.code)
            self.exchange?.responseConnection = HTTPHeaders.connectionFields(head.headers)
            startIdleDeadline(context: context)
            HTTPHeaders.removeHopByHop(&head.headers)
            var keepAlive = exchange.keepAlive
            // No body follows a HEAD or a 1xx, 204 or 304 (RFC 9112 section 6.3): a HEAD response
            // keeps the Content-Length the upstream gave (what a GET would have), and nothing is
            // chunked.
            if exchange.method == .HEAD {
                head.headers.remove(name: "Transfer-Encoding")
            } else if !head.status.mayHaveResponseBody {
                Self.frameWithoutBody(&head.headers)
            } else if head.headers.contains(name: "Content-Length") {
                // The response decoder checked the body's length against it.
                head.headers.remove(name: "Transfer-Encoding")
            } else if exchange.speaksHTTP11 {
                head.headers.replaceOrAdd(name: "Transfer-Encoding", value: "chunked")
            } else {
                // An HTTP/1.0 client knows no chunked coding: the body ends with the connection.
                head.headers.remove(name: "Transfer-Encoding")
                keepAlive = false
            }
            if !keepAlive {
                self.exchange?.keepAlive = false
                head.headers.replaceOrAdd(name: "Connection", value: "close")
            } else if !exchange.speaksHTTP11 {
                // An HTTP/1.0 client keeps the connection only when told so.
                head.headers.replaceOrAdd(name: "Connection", value: "keep-alive")
            }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: head.status, headers: head.headers))), promise: nil)
        case .body(let buffer):
            exchange.record.bytesDown += buffer.readableBytes
            lastActivity = .now()
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        case .end(let upstreamTrailers):
            // The upstream's trailers reach the client without hop-by-hop and framing fields.
            let trailers = upstreamTrailers.map { HTTPHeaders.forwardedTrailers($0, header: self.exchange?.responseConnection ?? [:]) }
            self.exchange?.responseEnded = true
            if !exchange.requestEnded {
                // Answered before the body ended (an early 401, a refused 100-continue, a back end
                // that ignores the body): the upstream connection goes, the rest of the body is
                // dropped as it comes, and the client gets the whole response now.
                dropUpstream()
                state = .discardingBody
                context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
                resumeClientReads(context: context)
                return
            }
            // Settle this exchange, write the response's end, then take up a pipelined next
            // request: its answer (a refusal, say) must follow this one on the wire.
            let closeAfter = completeIfDone(context: context, closeNow: false)
            if closeAfter {
                context.writeAndFlush(wrapOutboundOut(.end(trailers))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            } else {
                context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
            }
            takeUpWaiting(context: context)
        }
    }

    /// Whether `head` has an Upgrade field and names `upgrade` in its Connection field, as llhttp
    /// takes a request to switch protocols.
    static func asksForUpgrade(_ head: HTTPRequestHead) -> Bool {
        guard head.headers.contains(name: "Upgrade") else { return false }
        var named = false
        for (name, value) in head.headers where ASCIICase.equals(name, lowercase: "connection") {
            HTTPRequestHeadCheck.forEachToken(value) { token in
                if ASCIICase.equals(token, lowercase: "upgrade") { named = true }
            }
        }
        return named
    }

    /// The framing fields of a response that carries no body (a 1xx, 204 or 304): none, as the
    /// client's encoder frames what it is given (`automaticallySetFramingHeaders` is off).
    private static func frameWithoutBody(_ headers: inout HTTPHeaders) {
        headers.remove(name: "Content-Length")
        headers.remove(name: "Transfer-Encoding")
    }

    func upstreamReadComplete() { context?.flush() }

    func upstreamWritabilityChanged(isWritable: Bool) {
        if isWritable, let context { resumeClientReads(context: context) }
    }

    func upstreamFailed(_ error: any Error) { upstreamEnded(error: error) }

    func upstreamClosed() { upstreamEnded(error: nil) }

    var clientIsWritable: Bool { context?.channel.isWritable ?? false }

    private func upstreamEnded(error: (any Error)?) {
        guard let context, case .forwarding(let upstream) = state, let exchange, !exchange.responseEnded else { return }
        upstream.reusable = false
        if !exchange.responseStarted, let route = exchange.route, isReplayable(exchange) {
            // A pooled connection the upstream had closed while it sat idle: the request cannot
            // have been served, and it carries no body, so it goes again on a fresh connection.
            upstream.handler?.delegate = nil
            upstream.channel.close(promise: nil)
            responseDeadline = nil
            idleDeadline = nil
            self.exchange?.retried = true
            self.exchange?.reusedUpstream = false
            state = .connecting(pending: exchange.requestEnded ? [.end(exchange.trailers)] : [])
            dial(context: context, route: route)
            return
        }
        if !exchange.responseStarted {
            refuse(context: context, status: .badGateway, code: .upstreamClosed,
                   reason: "the upstream closed before answering" + (error.map { ": \($0)" } ?? ""), kind: .upstreamFailure,
                   cause: .upstreamError)
        } else {
            // Part of a response went out: the client gets what was written of it, then sees the
            // connection end (a plain close would drop the writes not yet flushed, the head too).
            finishExchange(cause: .upstreamError)
            state = .closed
            closeAfterWrites(context: context)
        }
    }

    /// How many interim responses one request may get before its final one: each starts the
    /// response deadline again, so an upstream could otherwise hold the exchange open for ever.
    static let maxInterimResponses = 16

    /// Where an audited request to a host with no registered HTTP port goes (TLS, verified).
    static let auditUpstreamPort = 443

    /// Whether a request that met a dead pooled connection may be sent again: once, when it came
    /// from the pool, has no body, and its method is idempotent (RFC 9110 section 9.2.2), so a
    /// second delivery could not change what the first did.
    private func isReplayable(_ exchange: Exchange) -> Bool {
        guard exchange.reusedUpstream, !exchange.retried, exchange.record.bytesUp == 0, let head = exchange.route?.head else { return false }
        switch head.method {
        case .GET, .HEAD, .OPTIONS, .TRACE, .PUT, .DELETE: return true
        default: return false
        }
    }

    // MARK: endings

    /// Ends the exchange once both the request and the response are complete: the upstream goes
    /// back to the pool, the record is written, and the connection waits for the next request or
    /// closes. Returns whether the connection is to close (done here unless `closeNow` is false).
    @discardableResult
    private func completeIfDone(context: ChannelHandlerContext, closeNow: Bool = true) -> Bool {
        guard let exchange, exchange.requestEnded, exchange.responseEnded else { return false }
        switch state {
        case .forwarding(let upstream):
            upstream.handler?.delegate = nil
            pool.put(upstream)
        case .discardingBody:
            break
        case .idle, .connecting, .refusing, .closed:
            return false
        }
        responseDeadline = nil
        finishExchange(cause: .completed)
        if exchange.keepAlive && !clientInputClosed {
            state = .idle
            armHeadDeadline(context: context)
            resumeClientReads(context: context)
            return false
        }
        state = .closed
        if closeNow { closeAfterWrites(context: context) }
        return true
    }

    /// Gives up the dial of a request that no longer waits for it. Called once the state has left
    /// `.connecting`: the dial's failure, which may come at once, is then ignored.
    private func abandonDial() {
        guard let dialling = dialCancellation else { return }
        dialCancellation = nil
        dialling.cancel()
    }

    /// Closes the connection once what was written to the client has gone out (a plain close drops
    /// writes the socket has not taken yet: a slow reader would lose the tail of its response).
    /// The writes get `limits.idleTimeout` to go; a client that reads nothing is closed then.
    private func closeAfterWrites(context: ChannelHandlerContext) {
        guard let encoder = try? context.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self) else {
            context.close(promise: nil)
            return
        }
        // Through the encoder's context: below it the writes are bytes, and so is the empty
        // buffer that marks their end.
        encoder.closeAfterWrites(within: snapshot.gateway.limits.idleTimeout)
    }

    /// Gives up the exchange's upstream connection: mid-exchange, it never goes back to the pool.
    private func dropUpstream() {
        guard case .forwarding(let upstream) = state else { return }
        upstream.reusable = false
        upstream.handler?.delegate = nil
        upstream.channel.close(promise: nil)
    }

    /// Ends an exchange whose response has started, so that no answer of ours can follow it: both
    /// sides are cut, the reason grows by `reason` (if given), and the client sees the connection end (after
    /// what was written to it, with `afterWrites`).
    private func cutMidResponse(context: ChannelHandlerContext, cause: CloseCause, afterWrites: Bool, reason: String?) {
        dropUpstream()
        responseDeadline = nil
        if let reason { exchange?.record.decision?.reason += "; \(reason)" }
        finishExchange(cause: cause)
        state = .closed
        if afterWrites { closeAfterWrites(context: context) } else { context.close(promise: nil) }
    }

    /// A request head must arrive complete within `limits.handshakeTimeout` of the connection
    /// opening or the previous exchange ending; so must the rest of a refused request.
    private func armHeadDeadline(context: ChannelHandlerContext) {
        let timeout = snapshot.gateway.limits.handshakeTimeout
        headDeadline = (.now() + .nanoseconds(timeout.nanoseconds), timeout)
        armTimer(context: context)
    }

    private func finishExchange(cause: CloseCause) {
        idleDeadline = nil
        guard let exchange else { return }
        self.exchange = nil
        exchange.record.finish(cause, log: proxy.accessLog, metrics: proxy.metrics)
    }

    /// How a refusal relates to the policy decision, for the access record.
    private enum Refusal {
        /// The policy denied it: the decision already says why.
        case policy
        /// The request was unusable or its destination not allowed: recorded as a denial with this reason.
        case denial
        /// Policy allowed it, the upstream failed it: the verdict stays, the reason grows.
        case upstreamFailure
        /// Policy allowed it, the client spoiled it (a body gone malformed): the verdict stays, the
        /// reason grows.
        case clientFailure
    }

    /// Answers the current request with an error of ours and closes the connection afterwards.
    private func refuse(context: ChannelHandlerContext, status: HTTPResponseStatus, code: HTTPRefusalCode, reason: String,
                        kind: Refusal, cause: CloseCause = .denied) {
        responseDeadline = nil
        dropUpstream()
        let requestEnded = exchange?.requestEnded ?? true
        let answersHEAD = exchange?.method == .HEAD
        state = requestEnded ? .closed : .refusing
        abandonDial()
        if !requestEnded { armHeadDeadline(context: context) }
        if let record = exchange?.record {
            record.httpStatus = Int(status.code)
            switch kind {
            case .policy:
                break
            case .denial:
                var denial = record.decision ?? .deny(reason, host: record.httpHost, port: record.port)
                denial.verdict = .deny
                denial.reason = reason
                record.decision = denial
            case .upstreamFailure, .clientFailure:
                record.decision?.reason += "; \(reason)"
            }
        }
        let hint = exchange?.record.hint
        if kind == .denial, hint == nil {
            exchange?.record.hint = code == .destinationBlocked
                ? ConnectionRecord.blockedHint : "no policy change allows this request; the reason says what to fix in it"
        }
        finishExchange(cause: cause)
        let body = reason + "\n" + (status == .forbidden ? hint.map { "to allow it: \($0)\n" } ?? "" : "")
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        // As the record says it: a refusal of the request is a denial, an upstream's failure an error.
        headers.add(name: "Corridor-Decision", value: kind == .denial || kind == .policy ? "deny" : "error")
        headers.add(name: "Corridor-Reason", value: code.rawValue)
        if status == .methodNotAllowed { headers.add(name: "Allow", value: "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE") }
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        // A response to HEAD carries no body; its Content-Length is what a GET would have got.
        if !answersHEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if requestEnded { context.close(promise: nil) }
        }
        resumeClientReads(context: context)  // drain the refused request's body, if any
    }

    static func classify(_ error: any Error, host: String, port: Int) -> (HTTPResponseStatus, HTTPRefusalCode, String) {
        switch error {
        case UpstreamDialer.Failure.blocked(let why), UpstreamDialer.Failure.addressMismatch(let why):
            return (.forbidden, .destinationBlocked, why)
        case UpstreamDialer.Failure.resolveFailed(let why):
            return (.badGateway, .upstreamUnreachable, why)
        case UpstreamDialer.Failure.connectFailed(let why, let timedOut):
            return timedOut ? (.gatewayTimeout, .upstreamTimeout, why) : (.badGateway, .upstreamUnreachable, why)
        case UpstreamHTTPFailure.handshakeTimeout:
            return (.gatewayTimeout, .upstreamTimeout, "the TLS handshake with \(host):\(port) did not complete in time")
        case UpstreamHTTPFailure.certificateDoesNotName(let name):
            return (.badGateway, .upstreamTLSVerificationFailed,
                    "the certificate of \(host):\(port) does not name \(name) in a DNS subject alternative name (an address or common name is not enough)")
        case let error as NIOSSLExtraError where error == .failedToValidateHostname:
            return (.badGateway, .upstreamTLSVerificationFailed, "the certificate of \(host):\(port) is not valid for \(host): \(error)")
        case let error as NIOSSLError:
            let text = "\(error)"
            if text.contains("CERTIFICATE_VERIFY_FAILED") || text.contains("certificate verify failed") {
                return (.badGateway, .upstreamTLSVerificationFailed, "the certificate of \(host):\(port) failed verification: \(text)")
            }
            return (.badGateway, .upstreamTLSFailed, "TLS with \(host):\(port) failed: \(text)")
        default:
            return (.badGateway, .upstreamUnreachable, "cannot reach \(host):\(port): \(error)")
        }
    }

    // MARK: connection

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, case .forwarding(let upstream) = state { upstream.handler?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    /// Reads from the client only while the request can go somewhere (upload backpressure) and
    /// nothing the client sent earlier still waits.
    func read(context: ChannelHandlerContext) {
        if clientReadsEnded { return }
        if !waiting.isEmpty {
            pendingRead = true
            return
        }
        switch state {
        case .connecting:
            pendingRead = true
        case .forwarding(let upstream) where !upstream.channel.isWritable:
            pendingRead = true
        default:
            context.read()
        }
    }

    private func resumeClientReads(context: ChannelHandlerContext) {
        if pendingRead {
            pendingRead = false
            read(context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            // Behind queued requests it waits its turn; else the exchange in flight is the last.
            if !waiting.isEmpty {
                waiting.append(.inputClosed)
            } else {
                clientInputEnded(context: context)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// The client shut its side: an idle connection closes (once the last response has gone out);
    /// one answering a request closes after it.
    private func clientInputEnded(context: ChannelHandlerContext) {
        clientInputClosed = true
        if case .idle = state {
            state = .closed
            closeAfterWrites(context: context)
        }
    }

    /// `spec.reload.liveConnections: Recheck`: the exchange under way (dialling, uploading or
    /// downloading) is decided again against `newer`; one it no longer allows ends, its record
    /// keeping the verdict it was opened with and cause `policy_revoked`. Before the response has
    /// started the client gets a 403 that says why; after, the connection closes. The next request
    /// on the connection is decided against `newer` in any case.
    func recheck(against newer: PolicySnapshot) {
        guard let context, let exchange else { return }
        switch state {
        case .connecting, .forwarding: break
        case .idle, .refusing, .closed, .discardingBody: return
        }
        guard let revocation = exchange.record.revoked(by: newer) else { return }
        if exchange.responseStarted {
            cutMidResponse(context: context, cause: .policyRevoked, afterWrites: true, reason: nil)
        } else {
            refuse(context: context, status: .forbidden, code: .policyDenied, reason: revocation, kind: .policy, cause: .policyRevoked)
        }
    }

    /// The gateway is stopping (the drain deadline passed): called by the loop's ``LoopConnections``.
    /// What is in flight ends now, recorded with cause `shutdown`.
    func shutdown() {
        guard let context, !stopped else { return }
        stopped = true
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        proxy.connections(for: context.eventLoop).remove(self)
        cancelTimer()
        waiting.removeAll()
        dropUpstream()
        if exchange != nil { finishExchange(cause: stopped ? .shutdown : .clientError) }
        if stopped {
            recordIfNoRequest(context: context, .shutdown, reason: "the gateway stopped before a complete request head")
        } else {
            recordIfNoRequest(context: context, .clientClosedEarly, reason: Self.closedMidHead)
        }
        state = .closed
        abandonDial()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is HTTPParserError, mustWait {
            // Bytes after a complete request: the error is the next request's, answered in turn.
            waiting.append(.parseError(error))
            return
        }
        parseFailed(context: context, error: error)
    }

    private func parseFailed(context: ChannelHandlerContext, error: any Error) {
        if error as? HTTPParserError == .invalidEOFState, case .idle = state, exchange == nil {
            // The client closed in the middle of a request head: no answer can reach it, and it
            // was no malformed request.
            recordUnansweredHead(context: context, .clientClosedEarly, reason: Self.closedMidHead)
            state = .closed
            context.close(promise: nil)
            return
        }
        if error is HTTPParserError, case .idle = state {
            requestsSeen += 1
            let record = newRecord(context: context)
            proxy.metrics.connectionOpened()
            exchange = Exchange(record: record, keepAlive: false, requestEnded: true, method: .GET, version: .http1_1)
            refuse(context: context, status: .badRequest, code: .badRequest, reason: "malformed HTTP request: \(error)", kind: .denial)
            return
        }
        if error is HTTPParserError, exchange?.responseStarted ?? false {
            // The request went bad mid-body while the upstream's response is going out: a 400 now
            // would land inside that response.
            cutMidResponse(context: context, cause: .clientError, afterWrites: true, reason: "malformed HTTP request: \(error)")
            return
        }
        if error is HTTPParserError, let exchange {
            // A head that was decided, then a body gone bad: an allowed request stays allowed in
            // the record (the client failed it, as when it goes bad mid-response).
            let allowed = exchange.record.decision?.lets == true
            refuse(context: context, status: .badRequest, code: .badRequest, reason: "malformed HTTP request: \(error)",
                   kind: allowed ? .clientFailure : .denial, cause: allowed ? .clientError : .denied)
            return
        }
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension HTTPProxyHandler: Sendable {}
