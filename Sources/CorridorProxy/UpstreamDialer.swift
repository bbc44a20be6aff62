import CorridorPolicy
import NIOCore
import NIOPosix

/// Resolves an allowed host, vets every address against the destination guard, and dials the
/// vetted addresses in order until one answers: the HTTP path's upstream connections (TLS
/// origination). The client never chooses the address. ``vet(_:host:serviceAddresses:originalDestination:snapshot:)``
/// is also the connection engine's (``ConnectionStateMachine``), which dials through its drivers.
struct UpstreamDialer {
    enum Failure: Error {
        case resolveFailed(String)
        case blocked(String)
        case addressMismatch(String)
        case connectFailed(String, timedOut: Bool)
    }

    struct Connected {
        var channel: any Channel
        var address: SocketAddress
        /// The client's original destination was not among the name's addresses.
        var addressMismatch = false
    }

    /// Lets a dial's owner give it up (its client left): the channel being connected (or its TLS
    /// handshake) is closed, and no further address is tried. Once the connection is handed over
    /// it is the owner's, and cancelling does nothing. Used on the dial's event loop.
    final class Cancellation: Sendable {
        private let state: NIOLoopBoundBox<(cancelled: Bool, channel: (any Channel)?)>

        init(eventLoop: any EventLoop) {
            state = NIOLoopBoundBox((false, nil), eventLoop: eventLoop)
        }

        var isCancelled: Bool { state.value.cancelled }

        func cancel() {
            let channel = state.value.channel
            state.value = (true, nil)
            channel?.close(promise: nil)
        }

        /// The dial succeeded and its connection goes to the owner: no longer the dial's to close.
        func handedOver() {
            state.value.channel = nil
        }

        /// The channel of the attempt now in progress; closed at once if the dial was given up.
        fileprivate func track(_ channel: (any Channel)?) {
            if state.value.cancelled {
                channel?.close(promise: nil)
            } else {
                state.value.channel = channel
            }
        }
    }

    /// At most this many resolved addresses are tried, each with the connect timeout.
    static let maxAttempts = 4

    let context: ProxyContext
    let snapshot: PolicySnapshot
    let eventLoop: any EventLoop
    var cancellation: Cancellation? = nil

    /// `originalDestination`: where a redirected client dialled, checked against the name's
    /// addresses (`spec.transparent.addressMismatch`).
    func connect(host: String, port: Int, serviceAddresses: [CIDR], originalDestination: IPAddress? = nil) -> EventLoopFuture<Connected> {
        context.resolver.resolve(host, snapshot: snapshot, on: eventLoop)
            .flatMapErrorThrowing { error in throw Failure.resolveFailed("cannot resolve \(host): \(error)") }
            .flatMap { addresses in
                switch Self.vet(addresses, host: host, serviceAddresses: serviceAddresses, originalDestination: originalDestination, snapshot: snapshot) {
                case .failure(let failure):
                    return eventLoop.makeFailedFuture(failure)
                case .success(let (vetted, mismatch)):
                    return attempt(vetted, port: port, lastError: nil).map { connected in
                        var connected = connected
                        connected.addressMismatch = mismatch
                        return connected
                    }
                }
            }
    }

    /// The addresses of `host` that may be dialled, in order (at most ``maxAttempts``), and whether
    /// the client's original destination was not among them; or why none may.
    static func vet(_ addresses: [IPAddress], host: String, serviceAddresses: [CIDR], originalDestination: IPAddress?,
                    snapshot: PolicySnapshot) -> Result<(vetted: [IPAddress], mismatch: Bool), Failure> {
        var mismatch = false
        if let original = originalDestination, !addresses.contains(original) {
            mismatch = true
            if snapshot.gateway.transparent.addressMismatch == .deny {
                let list = addresses.map(\.description).joined(separator: ", ")
                return .failure(.addressMismatch(
                    "the client dialled \(original), which is not an address of \(host) ([\(list)]) (spec.transparent.addressMismatch: Deny)"))
            }
        }
        var vetted: [IPAddress] = []
        var firstBlock: String?
        for address in addresses {
            switch snapshot.addressGuard.check(address, serviceAddresses: serviceAddresses) {
            case .allowed: vetted.append(address)
            case .blocked(let range, let name):
                firstBlock = firstBlock ?? "\(host) resolved to \(address), which is in blocked range \(range) (\(name))"
            }
        }
        guard !vetted.isEmpty else { return .failure(.blocked(firstBlock ?? "\(host) resolved to no address")) }
        return .success((Array(vetted.prefix(maxAttempts)), mismatch))
    }

    /// Vets an address the policy named itself (a TCP service's original destination).
    static func vet(address: IPAddress, serviceAddresses: [CIDR], snapshot: PolicySnapshot) -> Failure? {
        if case .blocked(let range, let name) = snapshot.addressGuard.check(address, serviceAddresses: serviceAddresses) {
            return .blocked("\(address) is in blocked range \(range) (\(name))")
        }
        return nil
    }

    private func attempt(_ addresses: [IPAddress], port: Int, lastError: Failure?) -> EventLoopFuture<Connected> {
        if cancellation?.isCancelled == true {
            return eventLoop.makeFailedFuture(Failure.connectFailed("the dial was given up", timedOut: false))
        }
        guard let address = addresses.first else {
            return eventLoop.makeFailedFuture(lastError ?? Failure.connectFailed("no address to try", timedOut: false))
        }
        let target: SocketAddress
        do { target = try address.socketAddress(port: port) } catch {
            return attempt(Array(addresses.dropFirst()), port: port, lastError: .connectFailed("\(error)", timedOut: false))
        }
        let started = ContinuousClock.now
        let metrics = context.metrics
        let (channel, connected) = context.bootstraps(for: eventLoop).dial(target, connectTimeout: snapshot.gateway.limits.connectTimeout)
        cancellation?.track(channel)
        return connected
            .map { channel in
                metrics.upstreamConnected(after: ContinuousClock.now - started)
                return Connected(channel: channel, address: target)
            }
            .flatMapError { error in
                let timedOut: Bool
                if case ChannelError.connectTimeout = error { timedOut = true } else { timedOut = false }
                let failure = Failure.connectFailed("connect to \(AccessLog.format(target)) failed: \(error)", timedOut: timedOut)
                return attempt(Array(addresses.dropFirst()), port: port, lastError: failure)
            }
    }
}

/// The event loop's client bootstrap for upstream connections, kept from one connection to the
/// next (building one per connection cost an option list and its dynamic casts each time). Reads
/// start as soon as a connection is up: its owner adds its handlers in the same event-loop tick
/// the connect completes, before any read can be delivered.
final class UpstreamBootstraps {
    private let eventLoop: any EventLoop
    private var cached: (timeout: Duration, bootstrap: ClientBootstrap)?
    /// The channel the bootstrap's initializer was last given: on its own event loop, NIO sets a
    /// new channel up inside `connect(to:)`, before the connect starts.
    private let initialized: NIOLoopBoundBox<(any Channel)?>

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        initialized = NIOLoopBoundBox(nil, eventLoop: eventLoop)
    }

    /// Dials `target`: the channel being connected, which its owner closes when it gives the
    /// attempt up, and the connection's future. Called on the event loop (elsewhere the loop-bound
    /// box traps); the channel is nil only if NIO could not make one (the future has failed then).
    func dial(_ target: SocketAddress, connectTimeout timeout: Duration) -> (channel: (any Channel)?, connected: EventLoopFuture<any Channel>) {
        let bootstrap = bootstrap(connectTimeout: timeout)
        initialized.value = nil
        let connected = bootstrap.connect(to: target)
        defer { initialized.value = nil }
        return (initialized.value, connected)
    }

    private func bootstrap(connectTimeout timeout: Duration) -> ClientBootstrap {
        if let cached, cached.timeout == timeout { return cached.bootstrap }
        // TCP_NODELAY is a ClientBootstrap default; the rest is set in the initializer.
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(.nanoseconds(timeout.nanoseconds))
            .channelInitializer { [initialized] channel in
                initialized.value = channel
                return channel.eventLoop.makeCompletedFuture { try RelayBuffers.configure(channel, relayed: true) }
            }
        cached = (timeout, bootstrap)
        return bootstrap
    }
}

@available(*, unavailable)
extension UpstreamBootstraps: Sendable {}
