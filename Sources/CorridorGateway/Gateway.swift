import CorridorKubernetes
import Foundation
import CorridorPolicy
import CorridorProxy
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A running gateway: the policy store, the listeners, reload and drain.
///
/// `init` loads the config file (a bad file is an error: nothing starts); `start()` binds every
/// listener the GatewayConfig names and serves. `reload()` validates the file again and swaps the
/// snapshot atomically, or keeps the last good one and says why. `shutdown()` stops accepting,
/// lets live connections finish up to the drain deadline, then closes what is left.
///
/// In Kubernetes mode (`Options.kubernetes`) the file holds only the GatewayConfig (and any
/// static Workloads); ExternalServices, EgressPolicies and pod identities come from the API
/// through ``ClusterSync``, and the gateway is not ready, and denies everything, until the first
/// full sync.
public final class Gateway: Sendable {
    public struct Options: Sendable {
        public var configPath: String
        /// Event loop threads; the data plane's parallelism.
        public var workers: Int
        /// The API server to take the policy and pod identities from; nil for file mode.
        public var kubernetes: KubeEndpoint?
        /// Kubernetes mode: watch only this node's pods (the node topology).
        public var nodeName: String?
        /// Kubernetes mode: items per list page.
        public var listPageSize = 500
        /// The most bytes one Kubernetes API response may have (a list page larger than this is
        /// asked for again in smaller pages).
        public var apiMaxBodyBytes = 64 << 20
        /// Kubernetes mode: a watch that brings no byte (no event, no bookmark) for this long is
        /// ended and started again (see ``Reflector``).
        public var watchIdleLimit: Duration = Reflector<Pod>.defaultWatchIdleLimit
        /// Kubernetes mode: the first wait after a failed API request (doubling, with jitter, up to 30 s).
        public var apiInitialBackoff: Duration = .milliseconds(800)

        /// One event loop per core.
        public static var defaultWorkers: Int { System.coreCount }

        public init(configPath: String, workers: Int = System.coreCount, kubernetes: KubeEndpoint? = nil) {
            self.configPath = configPath
            self.workers = max(1, workers)
            self.kubernetes = kubernetes
        }
    }

    /// A bound listener: a NIO server channel, or the splice plane's socket (`spec.tls.dataPlane` or `spec.connect.dataPlane: Splice`).
    enum BoundListener: Sendable {
        case nio(any Channel)
        case splice(SpliceListener)

        var localAddress: SocketAddress? {
            switch self {
            case .nio(let channel): channel.localAddress
            case .splice(let listener): listener.localAddress
            }
        }

        func close() async {
            switch self {
            case .nio(let channel): try? await channel.close()
            case .splice(let listener): await listener.close()
            }
        }
    }

    private struct State {
        var listeners: [String: BoundListener] = [:]
        /// The splice plane, when the tls listener uses it.
        var splice: SplicePlane?
        var fingerprint: [Int]?
        /// File mode: the TLS files of the policy in force as last read (``PolicyFile/tlsFileFingerprints(_:)``).
        var tlsFiles: [String: [Int]?] = [:]
        var ready = false
    }

    /// Snapshot generations, shared by file reloads and cluster rebuilds.
    final class Generations: Sendable {
        private let value = Atomic<Int>(1)
        var current: Int { value.load(ordering: .relaxed) }
        func next() -> Int { value.wrappingAdd(1, ordering: .relaxed).newValue }
        /// Takes `generation` (``current`` + 1 when the caller read it) for a snapshot that was
        /// built: a rejected file reload takes none, so generations in force count up by one.
        func take(_ generation: Int) {
            let taken = value.compareExchange(expected: generation - 1, desired: generation, ordering: .relaxed).exchanged
            precondition(taken, "generation \(generation) taken out of turn (file reloads are serialized)")
        }
    }

    public let options: Options
    public let logger: Logger
    public let proxy: ProxyContext
    private let group: MultiThreadedEventLoopGroup
    private let threadPool: NIOThreadPool
    private let state = Mutex(State())
    private let generations = Generations()
    /// The config file's documents as last parsed: a reload parses only the ones that changed.
    private let configCache = ConfigCache()
    /// Kubernetes mode's watches and policy builds.
    private let cluster: ClusterSync?

    /// Loads the config; throws ConfigErrors if it is invalid, KubeConfigError if the API
    /// server's CA or client certificate cannot be loaded.
    public init(options: Options, logger: Logger, metrics: ProxyMetrics = ProxyMetrics()) throws {
        self.options = options
        self.logger = logger
        let fingerprint = PolicyFile.fingerprint(options.configPath)
        let snapshot: PolicySnapshot, origination: OriginationContexts
        if options.kubernetes != nil {
            // Until the first sync everything is denied, with that reason.
            var waiting = try PolicyFile.loadKubernetesBase(options.configPath)
            waiting.withheld = .awaitingSync
            if let warning = waiting.gateway.kubernetes.stalenessWarning { logger.warning("\(warning)") }
            (snapshot, origination) = (PolicySnapshot(source: waiting, generation: 1), .empty)
        } else {
            (snapshot, origination) = try PolicyFile.loadCompiled(options.configPath, generation: 1, cache: configCache)
        }
        // Each data-plane thread keeps a shard of the flow table: the NIO loops, and the splice loops.
        let flows = FlowRecorder(gateway: snapshot.gateway, threads: options.workers * 2, metrics: metrics)
        let accessLog = try snapshot.gateway.logging.accessLogFile.map { try AccessLog(path: $0, flows: flows, logger: logger) }
            ?? AccessLog(flows: flows, logger: logger)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.workers)
        self.group = group
        self.threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        let proxy = ProxyContext(policy: PolicyStore(snapshot, origination: origination), resolver: Resolver(threadPool: threadPool),
                                 accessLog: accessLog, metrics: metrics, logger: logger)
        self.proxy = proxy
        metrics.policyReload(succeeded: true, snapshot: snapshot)
        metrics.registry.makeGauge(
            descriptor: .init(metricName: "corridor_build_info", unitName: "",
                              helpText: "Always 1; the labels say which release and git commit this gateway runs"),
            labels: [("version", CorridorVersion.version), ("commit", CorridorVersion.commit),
                     ("tree_dirty", CorridorVersion.treeDirty ? "true" : "false")]
        ).set(to: 1)
        if let endpoint = options.kubernetes {
            let generations = self.generations
            var base = snapshot.source
            base.withheld = nil
            cluster = ClusterSync(
                client: try KubeAPIClient(endpoint: endpoint, group: group, maxBodyBytes: options.apiMaxBodyBytes), base: base, registry: metrics.registry, logger: logger,
                nextGeneration: { generations.next() },
                install: { snapshot, origination in
                    proxy.install(snapshot, origination: origination)
                    proxy.metrics.policyReload(succeeded: true, snapshot: snapshot)
                },
                nodeName: options.nodeName, pageSize: options.listPageSize, initialBackoff: options.apiInitialBackoff,
                watchIdleLimit: options.watchIdleLimit)
        } else {
            cluster = nil
        }
        let tlsFiles = cluster == nil ? PolicyFile.tlsFileFingerprints(snapshot.source.externalServices) : [:]
        state.withLock {
            $0.fingerprint = fingerprint
            $0.tlsFiles = tlsFiles
        }
    }

    /// Binds the listeners. Their addresses (with the real port when 0 was asked for) are in `boundAddresses`.
    public func start() async throws {
        let gateway = proxy.policy.current.gateway
        var bound: [String: BoundListener] = [:]
        var splice: SplicePlane?
        do {
            // The splice plane (its loops) is made once, for the listeners that use it.
            func splicePlane() throws -> SplicePlane {
                if let splice { return splice }
                let plane = try SplicePlane(workers: options.workers, proxy: proxy, group: group)
                splice = plane
                return plane
            }
            for (name, address, dataPlane, kind) in [("tls", gateway.listeners.tls, gateway.tls.dataPlane, ListenerKind.passthrough),
                                                     ("connect", gateway.listeners.connect, gateway.connect.dataPlane, ListenerKind.connect)] {
                guard let address else { continue }
                if dataPlane == .splice {
                    #if os(Linux)
                    bound[name] = .splice(try await splicePlane().bind(kind, host: address.host, port: address.port, name: name))
                    #endif
                } else {
                    bound[name] = .nio(try await Listeners.bind(kind, host: address.host, port: address.port, group: group, proxy: proxy))
                }
            }
            if let address = gateway.listeners.http {
                bound["http"] = .nio(try await Listeners.bind(.http, host: address.host, port: address.port, group: group, proxy: proxy))
            }
            if let address = gateway.listeners.admin {
                let isReady: @Sendable () -> Bool = { [weak self] in self?.isReady ?? false }
                var access = AdminServer.Access()
                access.hosts = Set(gateway.admin.hosts)
                if let file = gateway.admin.tokenFile {
                    access.token = try Self.readToken(file)
                }
                if let cluster { access.kubernetesObjects = { cluster.objects } }
                bound["admin"] = .nio(try await AdminServer.bind(host: address.host, port: address.port, group: group, proxy: proxy,
                                                                 access: access, isReady: isReady))
            }
        } catch {
            for listener in bound.values { await listener.close() }
            await splice?.shutdown()
            throw error
        }
        state.withLock {
            $0.listeners = bound
            $0.splice = splice
            $0.ready = true
        }
        for (name, listener) in bound.sorted(by: { $0.key < $1.key }) {
            logger.info("listening", metadata: ["listener": "\(name)", "address": "\(listener.localAddress?.hostPort ?? "?")"])
        }
        if gateway.mode == .audit { logger.warning("\(GatewayModeText.auditWarning)") }
        if let cluster {
            proxy.metrics.setReady(false)
            // The ready gauge follows /readyz: up while a synced policy is in force (unless draining).
            let metrics = proxy.metrics
            cluster.start(onSynced: { [weak self] in
                if self?.state.withLock({ $0.ready }) == true { metrics.setReady(true) }
            }, onWithheld: {
                metrics.setReady(false)
            })
        } else {
            proxy.metrics.setReady(true)
        }
    }

    /// The admin API's bearer token from `spec.admin.tokenFile`: the file's text without the
    /// surrounding whitespace; refused when unreadable or empty.
    static func readToken(_ file: String) throws -> String {
        let token: String
        do {
            token = try String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        } catch {
            throw ConfigErrors(errors: [ConfigError(file: file, field: "spec.admin.tokenFile", reason: "cannot read the token file: \(error.localizedDescription)")])
        }
        guard !token.isEmpty else {
            throw ConfigErrors(errors: [ConfigError(file: file, field: "spec.admin.tokenFile", reason: "the token file is empty")])
        }
        return token
    }

    /// Listeners bound and, in Kubernetes mode, the policy synced from the API.
    public var isReady: Bool { state.withLock { $0.ready } && (cluster?.isSynced ?? true) }

    /// The address each listener is bound to, by name (`tls`, `connect`, `admin`).
    public var boundAddresses: [String: SocketAddress] {
        state.withLock { $0.listeners.compactMapValues { $0.localAddress } }
    }

    /// Validates the config file and swaps the snapshot. Returns false (keeping the last good
    /// policy, logging every problem) if the file is invalid.
    @discardableResult
    public func reload(reason: String) -> Bool {
        reloading.withLock { _ in reloadSerialized(reason: reason) }
    }

    /// One reload at a time: a SIGHUP and the file watcher seeing the same change must not parse
    /// the file twice side by side (a 10,000-service file is half a second of CPU).
    private let reloading = Mutex(())

    private func reloadSerialized(reason: String) -> Bool {
        // This version of the file has been tried, whatever comes of it: the watcher waits for the next.
        let fingerprint = PolicyFile.fingerprint(options.configPath)
        state.withLock { $0.fingerprint = fingerprint }
        let old = proxy.policy.current
        // So are the TLS files of whatever is in force after it: as they were before they were read,
        // so that a change while reading is seen by the next look.
        let tlsBefore = cluster == nil ? PolicyFile.tlsFileFingerprints(old.source.externalServices) : [:]
        defer {
            if cluster == nil {
                let tlsFiles = PolicyFile.tlsFileFingerprints(proxy.policy.current.source.externalServices)
                    .reduce(into: [String: [Int]?]()) { files, file in files[file.key] = tlsBefore[file.key] ?? file.value }
                state.withLock { $0.tlsFiles = tlsFiles }
            }
        }
        if let cluster {
            do {
                let base = try PolicyFile.loadKubernetesBase(options.configPath, reloading: true)
                cluster.updateBase(base)
                warnIfRestartNeeded(old: old.gateway, new: base.gateway)
                logger.info("gateway config reloaded; rebuilding the policy", metadata: ["trigger": "\(reason)"])
                return true
            } catch {
                proxy.metrics.policyReload(succeeded: false, snapshot: old)
                logger.error("gateway config reload rejected; keeping the last good one", metadata: ["trigger": "\(reason)", "errors": "\(error.description)"])
                return false
            }
        }
        // File mode: reloads, serialized, are the only builds.
        let next = generations.current + 1
        do {
            let (snapshot, origination) = try PolicyFile.loadCompiled(options.configPath, generation: next, cache: configCache, reloading: true)
            generations.take(next)
            proxy.install(snapshot, origination: origination)
            proxy.metrics.policyReload(succeeded: true, snapshot: snapshot)
            warnIfRestartNeeded(old: old.gateway, new: snapshot.gateway)
            logger.info("policy reloaded", metadata: [
                "trigger": "\(reason)", "generation": "\(next)",
                "externalServices": "\(snapshot.serviceCount)", "egressPolicies": "\(snapshot.source.egressPolicies.count)",
            ])
            return true
        } catch {
            proxy.metrics.policyReload(succeeded: false, snapshot: old)
            logger.error("policy reload rejected; keeping the last good policy", metadata: [
                "trigger": "\(reason)", "generation": "\(old.generation)", "errors": "\(error.description)",
            ])
            return false
        }
    }

    /// Listeners are bound and the access log opened once, at start.
    private func warnIfRestartNeeded(old: GatewayConfig, new: GatewayConfig) {
        if new.mode != old.mode {
            if new.mode == .audit {
                logger.warning("\(GatewayModeText.auditWarning)")
            } else {
                logger.notice("the gateway is in Enforce mode again (spec.mode): connections the policy refuses are refused")
            }
        }
        if new.listeners != old.listeners || new.logging != old.logging || new.tls.dataPlane != old.tls.dataPlane
            || new.connect.dataPlane != old.connect.dataPlane
            || new.flows != old.flows || new.signals != old.signals || new.admin != old.admin {
            logger.warning("listener, data plane, logging, flow table, signal and admin changes take effect at the next restart",
                           metadata: ["file": "\(options.configPath)"])
        }
    }

    /// Reloads if the file's inode, size or mtime changed since the last load attempt, or in file
    /// mode a TLS file the policy in force names (a CA bundle or client certificate rotated in place).
    public func reloadIfChanged() {
        reloading.withLock { _ in
            let current = PolicyFile.fingerprint(options.configPath)
            if state.withLock({ $0.fingerprint != current }) {
                _ = reloadSerialized(reason: "file changed")
            } else if cluster == nil {
                // The files of the policy in force, as recorded by the load that put it there.
                let read = state.withLock { $0.tlsFiles }
                if PolicyFile.fingerprints(read.keys) != read { _ = reloadSerialized(reason: "TLS file changed") }
            }
        }
    }

    /// Stops accepting, waits for live connections up to `drain`, then closes everything.
    public func shutdown(drain: Duration? = nil) async {
        let deadline = ContinuousClock.now + (drain ?? proxy.policy.current.gateway.limits.drainTimeout)
        // Stop watching at once (an API connect in flight may take its 10 s timeout to give up:
        // it is awaited after the drain, not before).
        cluster?.cancel()
        let (listeners, splice) = state.withLock { state in
            state.ready = false
            defer {
                state.listeners = [:]
                state.splice = nil
            }
            return (state.listeners, state.splice)
        }
        proxy.metrics.setReady(false)
        for (name, listener) in listeners where name != "admin" { await listener.close() }
        logger.info("draining", metadata: ["open": "\(proxy.openConnections)"])
        while proxy.openConnections > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        if proxy.openConnections > 0 {
            logger.warning("drain deadline passed; closing live connections", metadata: ["open": "\(proxy.openConnections)"])
        }
        if let admin = listeners["admin"] { await admin.close() }
        // Connections still open after the drain end now, with cause `shutdown`, on both planes.
        await proxy.endNIOConnections()
        await splice?.shutdown()
        await cluster?.stop()
        try? await group.shutdownGracefully()
        try? await threadPool.shutdownGracefully()
    }
}
