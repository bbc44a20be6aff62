import CorridorPolicy
import CorridorProxy
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A running gateway: the policy store, the listeners, reload and drain.
///
/// `start()` loads the config file (a bad file is an error: nothing starts), binds every listener
/// the GatewayConfig names and serves. `reload()` validates the file again and swaps the snapshot
/// atomically, or keeps the last good one and says why. `shutdown()` stops accepting, lets live
/// connections finish up to the drain deadline, then closes what is left.
public final class Gateway: Sendable {
    public struct Options: Sendable {
        public var configPath: String
        /// Event loop threads; the data plane's parallelism.
        public var workers: Int

        /// One event loop per core.
        public static var defaultWorkers: Int { System.coreCount }

        public init(configPath: String, workers: Int = System.coreCount) {
            self.configPath = configPath
            self.workers = max(1, workers)
        }
    }

    private struct State {
        var listeners: [String: any Channel] = [:]
        var generation = 0
        var fingerprint: [Int]?
        var ready = false
    }

    public let options: Options
    public let logger: Logger
    public let proxy: ProxyContext
    private let group: MultiThreadedEventLoopGroup
    private let threadPool: NIOThreadPool
    private let state = Mutex(State())

    /// Loads the config; throws ConfigErrors if it is invalid.
    public init(options: Options, logger: Logger, metrics: ProxyMetrics = ProxyMetrics()) throws {
        self.options = options
        self.logger = logger
        let fingerprint = PolicyFile.fingerprint(options.configPath)
        let (snapshot, origination) = try PolicyFile.loadCompiled(options.configPath, generation: 1)
        let accessLog = try snapshot.gateway.logging.accessLogFile.map { try AccessLog(path: $0) } ?? AccessLog()
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: options.workers)
        self.threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        self.proxy = ProxyContext(policy: PolicyStore(snapshot, origination: origination), resolver: Resolver(threadPool: threadPool),
                                  accessLog: accessLog, metrics: metrics, logger: logger)
        metrics.policyReload(succeeded: true, snapshot: snapshot)
        state.withLock {
            $0.generation = 1
            $0.fingerprint = fingerprint
        }
    }

    /// Binds the listeners. Their addresses (with the real port when 0 was asked for) are in `boundAddresses`.
    public func start() async throws {
        let gateway = proxy.policy.current.gateway
        var bound: [String: any Channel] = [:]
        do {
            if let address = gateway.listeners.tls {
                bound["tls"] = try await Listeners.bind(.passthrough, host: address.host, port: address.port, group: group, proxy: proxy)
            }
            if let address = gateway.listeners.connect {
                bound["connect"] = try await Listeners.bind(.connect, host: address.host, port: address.port, group: group, proxy: proxy)
            }
            if let address = gateway.listeners.http {
                bound["http"] = try await Listeners.bind(.http, host: address.host, port: address.port, group: group, proxy: proxy)
            }
            if let address = gateway.listeners.admin {
                let isReady: @Sendable () -> Bool = { [weak self] in self?.isReady ?? false }
                bound["admin"] = try await AdminServer.bind(host: address.host, port: address.port, group: group, proxy: proxy, isReady: isReady)
            }
        } catch {
            for channel in bound.values { try? await channel.close() }
            throw error
        }
        state.withLock {
            $0.listeners = bound
            $0.ready = true
        }
        proxy.metrics.setReady(true)
        for (name, channel) in bound.sorted(by: { $0.key < $1.key }) {
            logger.info("listening", metadata: ["listener": "\(name)", "address": "\(channel.localAddress?.hostPort ?? "?")"])
        }
    }

    public var isReady: Bool { state.withLock { $0.ready } }

    /// The address each listener is bound to, by name (`tls`, `connect`, `admin`).
    public var boundAddresses: [String: SocketAddress] {
        state.withLock { $0.listeners.compactMapValues { $0.localAddress } }
    }

    /// Validates the config file and swaps the snapshot. Returns false (keeping the last good
    /// policy, logging every problem) if the file is invalid.
    @discardableResult
    public func reload(reason: String) -> Bool {
        let next = state.withLock { $0.generation + 1 }
        let fingerprint = PolicyFile.fingerprint(options.configPath)
        let old = proxy.policy.current
        do {
            let (snapshot, origination) = try PolicyFile.loadCompiled(options.configPath, generation: next)
            proxy.policy.replace(with: snapshot, origination: origination)
            state.withLock {
                $0.generation = next
                $0.fingerprint = fingerprint
            }
            proxy.metrics.policyReload(succeeded: true, snapshot: snapshot)
            if snapshot.gateway.listeners != old.gateway.listeners || snapshot.gateway.logging != old.gateway.logging {
                logger.warning("listener and logging changes take effect at the next restart", metadata: ["file": "\(options.configPath)"])
            }
            logger.info("policy reloaded", metadata: [
                "trigger": "\(reason)", "generation": "\(next)",
                "externalServices": "\(snapshot.serviceCount)", "egressPolicies": "\(snapshot.source.egressPolicies.count)",
            ])
            return true
        } catch {
            state.withLock { $0.fingerprint = fingerprint }
            proxy.metrics.policyReload(succeeded: false, snapshot: old)
            logger.error("policy reload rejected; keeping the last good policy", metadata: [
                "trigger": "\(reason)", "generation": "\(old.generation)", "errors": "\(error.description)",
            ])
            return false
        }
    }

    /// Reloads if the file's inode, size or mtime changed since the last load attempt.
    public func reloadIfChanged() {
        let current = PolicyFile.fingerprint(options.configPath)
        let changed = state.withLock { $0.fingerprint != current }
        if changed { reload(reason: "file changed") }
    }

    /// Stops accepting, waits for live connections up to `drain`, then closes everything.
    public func shutdown(drain: Duration? = nil) async {
        let deadline = ContinuousClock.now + (drain ?? proxy.policy.current.gateway.limits.drainTimeout)
        let listeners = state.withLock { state in
            state.ready = false
            defer { state.listeners = [:] }
            return state.listeners
        }
        proxy.metrics.setReady(false)
        for (name, channel) in listeners where name != "admin" { try? await channel.close() }
        logger.info("draining", metadata: ["open": "\(proxy.openConnections)"])
        while proxy.openConnections > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        if proxy.openConnections > 0 {
            logger.warning("drain deadline passed; closing live connections", metadata: ["open": "\(proxy.openConnections)"])
        }
        if let admin = listeners["admin"] { try? await admin.close() }
        try? await group.shutdownGracefully()
        try? await threadPool.shutdownGracefully()
    }
}
