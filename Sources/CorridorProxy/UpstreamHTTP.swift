import CorridorPolicy
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS

/// One upstream connection for originated HTTP: TLS (verified against the service's roots and
/// name) or, where the policy allows plain text, plain TCP; HTTP/1.1 framing on top. It carries
/// one request at a time; between requests it waits in the event loop's ``UpstreamPool``.
final class UpstreamHTTPConnection {
    let channel: any Channel
    let key: UpstreamPool.Key
    /// The client's original destination (the key's) was not among the name's addresses when
    /// this connection was dialled.
    let addressMismatch: Bool
    var reusable = true
    fileprivate var idleSince: NIODeadline = .now()

    /// The pipeline's last handler, kept here rather than looked up in the pipeline per request.
    private(set) weak var handler: UpstreamHTTPHandler?

    init(channel: any Channel, key: UpstreamPool.Key, addressMismatch: Bool = false, handler: UpstreamHTTPHandler) {
        self.channel = channel
        self.key = key
        self.addressMismatch = addressMismatch
        self.handler = handler
    }
}

@available(*, unavailable)
extension UpstreamHTTPConnection: Sendable {}

/// What the upstream side tells the client side. Called on the shared event loop.
protocol UpstreamHTTPDelegate: AnyObject {
    func upstreamResponse(_ part: HTTPClientResponsePart)
    func upstreamReadComplete()
    func upstreamWritabilityChanged(isWritable: Bool)
    func upstreamFailed(_ error: any Error)
    func upstreamClosed()
    /// Whether the client can take more response bytes now (read gating for downloads).
    var clientIsWritable: Bool { get }
}

/// The last handler of an upstream pipeline: hands response parts to the current delegate and
/// reads from the upstream only while the client can take more (backpressure).
final class UpstreamHTTPHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    weak var delegate: (any UpstreamHTTPDelegate)?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var handshake: EventLoopPromise<Void>?
    var onClose: (() -> Void)?

    init(handshake: EventLoopPromise<Void>?) {
        self.handshake = handshake
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            // The upstream is done with this connection: never pool or reuse it.
            context.close(promise: nil)
            return
        }
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            handshake?.succeed(())
            handshake = nil
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let delegate else {
            // Bytes nobody asked for (the connection is idle in the pool, or its exchange just
            // ended): a response to no request, which would be taken as the next client's
            // answer. The connection is discarded at once.
            context.close(promise: nil)
            return
        }
        delegate.upstreamResponse(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) { delegate?.upstreamReadComplete() }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        delegate?.upstreamWritabilityChanged(isWritable: context.channel.isWritable)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let handshake {
            self.handshake = nil
            handshake.fail(error)
        } else {
            delegate?.upstreamFailed(error)
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let handshake {
            self.handshake = nil
            handshake.fail(ChannelError.eof)
        }
        onClose?()
        delegate?.upstreamClosed()
        delegate = nil
    }

    func read(context: ChannelHandlerContext) {
        if delegate?.clientIsWritable ?? true {
            context.read()
        } else {
            pendingRead = true
        }
    }

    /// The client can take more: issue the read that was held back.
    func resumeReading() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }
}

@available(*, unavailable)
extension UpstreamHTTPHandler: Sendable {}

/// Idle upstream connections of one event loop, per (ExternalService, port, policy generation),
/// reused for later requests and closed after `idleTimeout`. Confined to its event loop.
final class UpstreamPool {
    /// Idle connections kept per (service, port, host) on each event loop: enough for a busy
    /// client pool's concurrency, so steady keep-alive load opens no new upstream handshakes.
    static let maxIdlePerKey = 128
    /// Idle connections kept in all on each event loop (wildcard services make many keys).
    static let maxIdle = 1024
    static let idleTimeout: TimeAmount = .seconds(30)

    /// Which idle connections may serve a request: one policy generation's (a reload never hands
    /// a request a connection dialled under the old policy), one service port's (nil: an audited
    /// host with no registered HTTP port), one host's, for a redirected client one original
    /// destination's (the connection was vetted against it), and one principal's.
    struct Key: Hashable {
        var generation: Int
        var service: String?
        var port: Int
        var host: String
        var originalDestination: IPAddress? = nil
        var principal: Principal? = nil
    }

    /// Whose requests a connection carries. A server may tie state to a connection (NTLM and
    /// Negotiate authenticate the connection, not each request), so one workload's upstream
    /// connection never serves another's request: a workload is its namespace and service
    /// account (its pods share a pool), an unknown source its address.
    enum Principal: Hashable {
        case workload(namespace: String, serviceAccount: String)
        case address(IPAddress)

        init?(identity: SourceIdentity?, address: IPAddress?) {
            if let identity {
                self = .workload(namespace: identity.namespace, serviceAccount: identity.serviceAccount)
            } else if let address {
                self = .address(address)
            } else {
                return nil
            }
        }
    }

    private var idle: [Key: [UpstreamHTTPConnection]] = [:]
    /// The connections in `idle`, in all.
    private var idleCount = 0
    private let eventLoop: any EventLoop
    private var sweep: Scheduled<Void>?

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// An idle connection for `key`, if one is still open.
    func take(_ key: Key) -> UpstreamHTTPConnection? {
        while let connection = idle[key]?.popLast() {
            idleCount -= 1
            if connection.channel.isActive { return connection }
        }
        return nil
    }

    /// Returns a connection after a complete exchange; closes it if it cannot be reused.
    func put(_ connection: UpstreamHTTPConnection) {
        guard connection.reusable, connection.channel.isActive, (idle[connection.key]?.count ?? 0) < Self.maxIdlePerKey,
              idleCount < Self.maxIdle else {
            connection.channel.close(promise: nil)
            return
        }
        connection.idleSince = .now()
        connection.handler?.delegate = nil
        idle[connection.key, default: []].append(connection)
        idleCount += 1
        scheduleSweep()
    }

    private func scheduleSweep() {
        guard sweep == nil else { return }
        sweep = eventLoop.assumeIsolated().scheduleTask(in: Self.idleTimeout) { [weak self] in
            guard let self else { return }
            self.sweep = nil
            let cutoff = NIODeadline.now() - Self.idleTimeout
            for (key, list) in self.idle {
                let (stale, fresh) = (list.filter { $0.idleSince <= cutoff }, list.filter { $0.idleSince > cutoff })
                stale.forEach { $0.channel.close(promise: nil) }
                self.idleCount -= stale.count
                self.idle[key] = fresh.isEmpty ? nil : fresh
            }
            if !self.idle.isEmpty { self.scheduleSweep() }
        }
    }

    /// Dials a new upstream connection for `decision` (already allowed): resolve and vet through
    /// the same dialer as passthrough, then TLS with verification (or plain, where allowed).
    static func connect(key: Key, host: String, originate: ExternalService.OriginateTLS?, context sslContext: NIOSSLContext?,
                        port: Int, serviceAddresses: [CIDR], dialer: UpstreamDialer) -> EventLoopFuture<UpstreamHTTPConnection> {
        // A connection is not Sendable: it is handed over on the dialer's event loop, the caller's.
        let eventLoop = dialer.eventLoop
        let promise = eventLoop.makePromise(of: UpstreamHTTPConnection.self)
        dialer.connect(host: host, port: port, serviceAddresses: serviceAddresses, originalDestination: key.originalDestination)
            .assumeIsolated().whenComplete { result in
            let channel: any Channel
            let addressMismatch: Bool
            switch result {
            case .success(let connected): (channel, addressMismatch) = (connected.channel, connected.addressMismatch)
            case .failure(let error): return promise.fail(error)
            }
            let handshake: EventLoopPromise<Void>? = sslContext == nil ? nil : eventLoop.makePromise()
            let handler = UpstreamHTTPHandler(handshake: handshake)
            do {
                let sync = channel.pipeline.syncOperations
                if let sslContext {
                    try sync.addHandler(NIOSSLClientHandler(context: sslContext, serverHostname: originate?.sni ?? host))
                }
                // The forwarded head states the body's framing itself (`HTTPHeaders.forwardedRequest`):
                // the encoder chunks a body exactly when it says `Transfer-Encoding: chunked`.
                var encoding = HTTPRequestEncoder.Configuration()
                encoding.automaticallySetFramingHeaders = false
                try sync.addHandler(HTTPRequestEncoder(configuration: encoding))
                try sync.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes, informationalResponseStrategy: .forward)))
                try sync.addHandler(handler)
            } catch {
                channel.close(promise: nil)
                return promise.fail(error)
            }
            let connection = UpstreamHTTPConnection(channel: channel, key: key, addressMismatch: addressMismatch, handler: handler)
            guard let handshake else {
                dialer.cancellation?.handedOver()
                return promise.assumeIsolated().succeed(connection)
            }
            let timeout = dialer.snapshot.gateway.limits.connectTimeout
            let timer = eventLoop.scheduleTask(in: .nanoseconds(timeout.nanoseconds)) {
                handshake.fail(UpstreamHTTPFailure.handshakeTimeout)
                channel.close(promise: nil)
            }
            handshake.futureResult.assumeIsolated().whenComplete { result in
                timer.cancel()
                switch result {
                case .success:
                    // NIOSSL verified the chain and its idea of the name; the name must also be in
                    // a DNS alternative name (``CertificateNameCheck``).
                    let expected = originate?.sni ?? host
                    guard let leaf = try? channel.pipeline.syncOperations.nioSSL_peerCertificate(),
                          CertificateNameCheck.names(expected, in: leaf) else {
                        channel.close(promise: nil)
                        return promise.fail(UpstreamHTTPFailure.certificateDoesNotName(expected))
                    }
                    dialer.cancellation?.handedOver()
                    promise.assumeIsolated().succeed(connection)
                case .failure(let error): promise.fail(error)
                }
            }
        }
        return promise.futureResult
    }
}

@available(*, unavailable)
extension UpstreamPool: Sendable {}

enum UpstreamHTTPFailure: Error {
    case handshakeTimeout
    /// The verified certificate has no DNS alternative name for this name.
    case certificateDoesNotName(String)
}
