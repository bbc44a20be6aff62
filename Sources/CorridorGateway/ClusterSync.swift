import CorridorKubernetes
import CorridorPolicy
import CorridorProxy
import Foundation
import Logging
import NIOCore
import Prometheus
import Synchronization

/// Kubernetes mode: watches Pods, ExternalServices and EgressPolicies, rebuilds the policy
/// snapshot from the caches whenever they change, swaps it in atomically, and writes each
/// object's `Accepted` condition. Nothing is installed until every watch has completed its first
/// full list (until then every connection is denied and /readyz says no). An API outage leaves
/// the caches, and so the snapshot, as they were; it shows in the metrics and the log. With
/// `spec.kubernetes.maxStaleness`, a resource whose list/watch has shown no progress (a list, an
/// event, a bookmark: ``ReflectorObserver/progressed``) for longer than that withholds the policy
/// instead: every connection is denied and /readyz says no, until the watches list again.
final class ClusterSync: Sendable {
    private let client: KubeAPIClient
    private let logger: Logger
    private let metrics: ClusterMetrics
    private let pods: Reflector<Pod>
    private let services: Reflector<CustomResource>
    private let policies: Reflector<CustomResource>
    private let base: Mutex<PolicySource>
    private let dirty: AsyncStream<Void>.Continuation
    private let dirtySignals: AsyncStream<Void>
    private let statusQueue: AsyncStream<[StatusUpdate]>.Continuation
    private let statusBatches: AsyncStream<[StatusUpdate]>
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let synced = Atomic<Bool>(false)
    /// Applies a build: makes the snapshot (and its origination contexts) and swaps it in.
    private let install: @Sendable (PolicySnapshot, OriginationContexts) -> Void
    private let nextGeneration: @Sendable () -> Int

    /// The origination contexts of the last build, reused while the ExternalServices are unchanged
    /// (a pod event must not reload every CA bundle).
    /// and the TLS files they name as they were read (a rotated CA bundle or client certificate
    /// is read again: ``tlsFilesLoop()``).
    private let lastOrigination = Mutex<(services: [ExternalService], files: [String: [Int]?], contexts: OriginationContexts)?>(nil)
    /// The contested addresses last logged (logged again only when they change).
    private let loggedConflicts = Mutex<[CIDR]>([])
    /// State the reflectors' callbacks and retry tasks share.
    private final class Shared: Sendable {
        /// When each resource's list/watch stopped being healthy (absent while healthy).
        let unhealthySince = Mutex<[String: ContinuousClock.Instant]>([:])
        /// When each resource's list/watch last showed that the cache is current.
        let lastProgress = Mutex<[String: ContinuousClock.Instant]>([:])
        /// A status-write retry is scheduled.
        let retryPending = Atomic<Bool>(false)
        /// Ends every reflector's backoff (``Reflector/nudge()``).
        let nudgeAll = Mutex<@Sendable () -> Void>({})
    }

    /// The stale resources and the base the policy in force was withheld for (nil: it is not withheld).
    private let withheldFor = Mutex<(stale: [String], base: PolicySource)?>(nil)
    /// The resources a policy build considers, in the order reasons name them.
    private static let resources = ["pods", "externalservices", "egresspolicies"]

    private let shared = Shared()
    /// Each ExternalService and EgressPolicy of the last build, with whether it is accepted (for the console).
    private let objectStatus = Mutex<[ClusterObjectState]>([])

    /// `Kind/[namespace/]name` and Accepted of every custom object, as of the last build.
    var objects: [ClusterObjectState] { objectStatus.withLock { $0 } }

    /// `nodeName` limits the pods watched to one node's (the node topology: a gateway only ever
    /// sees its own node's pods, and the API server is spared N copies of every pod).
    init(client: KubeAPIClient, base: PolicySource, registry: PrometheusCollectorRegistry, logger: Logger,
         nextGeneration: @escaping @Sendable () -> Int, install: @escaping @Sendable (PolicySnapshot, OriginationContexts) -> Void,
         nodeName: String? = nil, pageSize: Int = 500, initialBackoff: Duration = .milliseconds(800),
         watchIdleLimit: Duration = Reflector<Pod>.defaultWatchIdleLimit) {
        self.client = client
        self.logger = logger
        self.base = Mutex(base)
        self.install = install
        self.nextGeneration = nextGeneration
        let metrics = ClusterMetrics(registry: registry)
        self.metrics = metrics
        (dirtySignals, dirty) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        (statusBatches, statusQueue) = AsyncStream.makeStream(of: [StatusUpdate].self, bufferingPolicy: .bufferingNewest(1))
        let dirty = self.dirty, shared = self.shared
        let observer = ReflectorObserver(
            changed: { dirty.yield() },
            failed: { resource, reason in metrics.apiError(resource: resource, reason: reason) },
            healthy: { resource, up in
                metrics.setUp(resource: resource, up)
                let recovered = shared.unhealthySince.withLock { since in
                    if up { return since.removeValue(forKey: resource) != nil }
                    if since[resource] == nil { since[resource] = .now }
                    return false
                }
                // A policy withheld for this resource's outage is built again now, and the other
                // resources, if still failing, try again at once: the API answers again.
                if recovered {
                    dirty.yield()
                    shared.nudgeAll.withLock { $0 }()
                }
            },
            rewatched: { resource, why in metrics.rewatch(resource: resource, why: why) },
            unreadable: { resource in metrics.unreadable(resource: resource) },
            progressed: { resource in shared.lastProgress.withLock { $0[resource] = .now } }
        )
        pods = Reflector(resource: .pods, client: client, observer: observer, logger: logger, pageSize: pageSize, initialBackoff: initialBackoff,
                         watchIdleLimit: watchIdleLimit, fieldSelector: nodeName.map { "spec.nodeName=\($0)" })
        services = Reflector(resource: .externalServices, client: client, observer: observer, logger: logger, pageSize: pageSize,
                             initialBackoff: initialBackoff, watchIdleLimit: watchIdleLimit)
        policies = Reflector(resource: .egressPolicies, client: client, observer: observer, logger: logger, pageSize: pageSize,
                             initialBackoff: initialBackoff, watchIdleLimit: watchIdleLimit)
        let reflectors: [@Sendable () -> Void] = [pods.nudge, services.nudge, policies.nudge]
        shared.nudgeAll.withLock { $0 = { for nudge in reflectors { nudge() } } }
    }

    /// True while a snapshot built from a full sync of every resource is in force (not before the
    /// first sync, nor while withheld for an outage longer than `spec.kubernetes.maxStaleness`).
    var isSynced: Bool { synced.load(ordering: .acquiring) }

    /// Starts the watches; `onSynced` runs when a full build comes into force after none was
    /// (the first sync, and the recovery from a withheld policy), `onWithheld` when the policy is
    /// withheld for an outage.
    func start(onSynced: @escaping @Sendable () -> Void = {}, onWithheld: @escaping @Sendable () -> Void = {}) {
        logger.info("watching the Kubernetes API", metadata: ["server": "\(client.endpoint.url)", "via": "\(client.endpoint.origin)"])
        let started: [Task<Void, Never>] = [
            Task { await self.pods.run() },
            Task { await self.services.run() },
            Task { await self.policies.run() },
            Task { await self.rebuildLoop(onSynced: onSynced, onWithheld: onWithheld) },
            Task { await self.statusLoop() },
            Task { await self.stalenessLoop() },
            Task { await self.tlsFilesLoop() },
        ]
        tasks.withLock { $0 = started }
    }

    /// Cancels the watches, builds and status writes (returns at once).
    func cancel() {
        for task in tasks.withLock({ $0 }) { task.cancel() }
        dirty.finish()
        statusQueue.finish()
    }

    /// Cancels and waits for everything to end, so nothing is left on the event loops.
    func stop() async {
        cancel()
        for task in tasks.withLock({ $0 }) { await task.value }
    }

    /// The GatewayConfig (and file Workloads) changed: rebuild on the new base.
    func updateBase(_ source: PolicySource) {
        base.withLock { $0 = source }
        dirty.yield()
    }

    /// `corridor_kubernetes_watch_stale_seconds{resource}`: how long a resource's list/watch has
    /// been failing (0 while healthy): how stale the identities and policy in force may be. Asks
    /// for a build when the resources stale beyond `spec.kubernetes.maxStaleness` change (the
    /// build withholds the policy, or brings it back).
    private func stalenessLoop() async {
        var warned = Set<String>()
        var lastStale: [String] = []
        while !Task.isCancelled {
            let now = ContinuousClock.now
            let since = shared.unhealthySince.withLock { $0 }
            let stale = staleResources(now: now)
            if stale != lastStale {
                lastStale = stale
                dirty.yield()
            }
            for resource in Self.resources {
                let stale = since[resource].map { now - $0 } ?? .zero
                metrics.setStale(resource: resource, seconds: Double(stale.components.seconds))
                if stale > .seconds(300) && warned.insert(resource).inserted {
                    logger.error("the Kubernetes API has been unreachable for over 5 minutes; the policy and identities in force may be stale",
                                 metadata: ["resource": "\(resource)"])
                } else if stale == .zero {
                    warned.remove(resource)
                }
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// Asks for a build when a TLS file the ExternalServices name has changed since it was read
    /// (a mounted Secret rotated: a CA bundle that drops a compromised root, a renewed client
    /// certificate). Nothing else would: no object changed.
    private func tlsFilesLoop() async {
        var asked: [String: [Int]?]?
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(5))
            guard let files = lastOrigination.withLock({ $0?.files }), !files.isEmpty else { continue }
            let now = PolicyFile.fingerprints(files.keys)
            // Once per change: a build that cannot take it in (the policy withheld) is not asked again and again.
            if now != files && now != asked {
                asked = now
                logger.info("a TLS file an ExternalService names changed; rebuilding the policy")
                dirty.yield()
            }
        }
    }

    /// The resources whose list/watch has shown no progress for longer than
    /// `spec.kubernetes.maxStaleness` (none when it is not set, and none before a first list).
    private func staleResources(now: ContinuousClock.Instant) -> [String] {
        guard let limit = base.withLock({ $0.gateway.kubernetes.maxStaleness }) else { return [] }
        let progress = shared.lastProgress.withLock { $0 }
        return Self.resources.filter { resource in progress[resource].map { now - $0 > limit } ?? false }
    }

    private func rebuildLoop(onSynced: @Sendable () -> Void, onWithheld: @Sendable () -> Void) async {
        let compiler = ClusterPolicyCompiler()
        for await _ in dirtySignals {
            // Let a burst of events (a rollout, a relist) settle into one build.
            try? await Task.sleep(for: .milliseconds(100))
            if Task.isCancelled { return }
            guard pods.cache.isSynced, services.cache.isSynced, policies.cache.isSynced else { continue }
            let stale = staleResources(now: .now)
            if !stale.isEmpty {
                if withhold(for: stale) { onWithheld() }
            } else if rebuild(compiler) {
                onSynced()
            }
        }
    }

    /// Installs a snapshot that denies every connection because `stale` have shown no progress for
    /// longer than `spec.kubernetes.maxStaleness` (again when they or the base changed, so that a
    /// reload's settings apply meanwhile); true when a full build was in force until now.
    private func withhold(for stale: [String]) -> Bool {
        let base = self.base.withLock { $0 }
        guard let limit = base.gateway.kubernetes.maxStaleness,
              withheldFor.withLock({ withheld in
                  defer { withheld = (stale, base) }
                  return withheld.map { $0.stale != stale || $0.base != base } ?? true
              }) else { return false }
        var source = base
        source.withheld = .stale(resources: stale, limit: limit)
        let generation = nextGeneration()
        install(PolicySnapshot(source: source, generation: generation), .empty)
        let wasSynced = synced.exchange(false, ordering: .acquiringAndReleasing)
        metrics.setSynced(false)
        logger.error("the Kubernetes API has sent nothing current for longer than spec.kubernetes.maxStaleness; every connection is denied until the watches list again",
                     metadata: ["resources": "\(stale.joined(separator: ", "))", "maxStaleness": "\(DurationSyntax.format(limit))", "generation": "\(generation)"])
        return wasSynced
    }

    /// Builds and installs a snapshot; true when it is the first one from a full sync since none
    /// was in force (at start, or after the policy was withheld).
    private func rebuild(_ compiler: ClusterPolicyCompiler) -> Bool {
        let started = ContinuousClock.now
        let objects = ClusterObjects(pods: pods.cache.objects, externalServices: services.cache.objects, egressPolicies: policies.cache.objects)
        let base = self.base.withLock { $0 }
        var policy = compiler.build(base: base, objects: objects)
        let generation = nextGeneration()
        var snapshot = PolicySnapshot(source: policy.source, generation: generation)
        var origination: OriginationContexts
        // As they are before they are read: a change while reading is seen by the next look.
        let tlsFiles = PolicyFile.tlsFileFingerprints(policy.source.externalServices)
        do {
            if let last = lastOrigination.withLock({ $0 }), last.services == policy.source.externalServices, last.files == tlsFiles {
                origination = last.contexts
            } else {
                origination = try OriginationContexts(snapshot: snapshot)
            }
        } catch {
            // TLS material an ExternalService names cannot be loaded: leave those services out.
            var unusable: [String: String] = [:]
            for problem in error.problems {
                let name = problem.object.hasPrefix("ExternalService/") ? String(problem.object.dropFirst("ExternalService/".count)) : problem.object
                unusable[name] = "\(problem.field): \(problem.reason)"
            }
            policy = compiler.build(base: base, objects: objects, unusable: unusable)
            snapshot = PolicySnapshot(source: policy.source, generation: generation)
            guard let contexts = try? OriginationContexts(snapshot: snapshot) else {
                logger.error("cannot build TLS origination contexts; keeping the last good policy", metadata: ["errors": "\(error)"])
                return false
            }
            origination = contexts
        }
        lastOrigination.withLock { $0 = (policy.source.externalServices, tlsFiles, origination) }
        let rejected = Set(policy.rejected)
        let names = objects.externalServices.map { "ExternalService/\($0.metadata.key)" } + objects.egressPolicies.map { "EgressPolicy/\($0.metadata.key)" }
        let status = names.map { ClusterObjectState(object: $0, accepted: !rejected.contains($0), enforcing: policy.enforcedInstead[$0]) }
        objectStatus.withLock { $0 = status }
        install(snapshot, origination)
        let wasWithheld = withheldFor.withLock { withheld in defer { withheld = nil }; return withheld != nil }
        let first = !synced.exchange(true, ordering: .acquiringAndReleasing)
        let took = ContinuousClock.now - started
        metrics.built(objects: objects, policy: policy, duration: took)
        let conflicts = snapshot.inventory.conflicts
        metrics.contested(conflicts.count)
        if loggedConflicts.withLock({ logged in defer { logged = conflicts.map(\.cidr) }; return logged != conflicts.map(\.cidr) }),
           !conflicts.isEmpty {
            let shown = conflicts.prefix(10).map { "\($0.cidr) (\($0.workloads.joined(separator: ", ")))" }.joined(separator: "; ")
            logger.warning("addresses claimed by more than one workload are denied until one claim is gone", metadata: [
                "addresses": "\(shown)\(conflicts.count > 10 ? "; and \(conflicts.count - 10) more" : "")",
            ])
        }
        logger.log(level: first ? .info : .debug, wasWithheld ? "the Kubernetes API is reachable again; policy synced from it"
                   : first ? "policy synced from the Kubernetes API" : "policy rebuilt", metadata: [
            "generation": "\(generation)", "externalServices": "\(policy.source.externalServices.count)",
            "egressPolicies": "\(policy.source.egressPolicies.count)", "podIdentities": "\(policy.podIdentities)",
            "rejected": "\(policy.rejected.count)", "took": "\(took)",
        ])
        if !policy.statusUpdates.isEmpty { statusQueue.yield(policy.statusUpdates) }
        return first
    }

    /// Writes `Accepted` conditions with a merge patch on the status subresource: the object's
    /// whole condition list as observed (a merge patch replaces a list whole), with Accepted in
    /// it, made over the resourceVersion it was observed at, so that a condition another writer
    /// added meanwhile is not lost (the API answers 409, and the next build writes over the new
    /// version). A write that fails is retried with a later build (the object's status still
    /// differs then); what to write and when is the ledger's call (see ``StatusWriteLedger``).
    private func statusLoop() async {
        var ledger = StatusWriteLedger()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        for await batch in statusBatches {
            for update in batch {
                if Task.isCancelled { return }
                let object = "\(update.resource.kind)/\(update.namespace.map { "\($0)/" } ?? "")\(update.name)"
                let (verdict, conflict) = ledger.consider(update, now: .now)
                if conflict {
                    metrics.statusConflict()
                    logger.warning("another writer changed the Accepted condition; writing it back", metadata: [
                        "object": "\(object)", "resourceVersion": "\(update.observedResourceVersion ?? "?")",
                    ])
                }
                switch verdict {
                case .skip:
                    continue
                case .wait(let until):
                    rebuild(after: until - .now)
                    continue
                case .write:
                    break
                }
                struct Patch: Encodable {
                    struct Metadata: Encodable { var resourceVersion: String? }
                    struct Status: Encodable { var conditions: [JSONValue] }
                    var metadata: Metadata
                    var status: Status
                }
                do {
                    let body = try encoder.encode(Patch(metadata: .init(resourceVersion: update.observedResourceVersion),
                                                        status: .init(conditions: update.conditions)))
                    _ = try await client.mergePatch(update.path, body: Array(body))
                    ledger.written(update, at: .now)
                    metrics.statusWrite(succeeded: true)
                    if update.condition.status == "True" && update.condition.reason == "Valid" {
                        logger.info("accepted", metadata: ["object": "\(object)", "generation": "\(update.condition.observedGeneration ?? 0)"])
                    } else {
                        logger.warning("\(update.condition.status == "True" ? "accepted with warnings" : "rejected")", metadata: [
                            "object": "\(object)", "reason": "\(update.condition.reason)", "message": "\(update.condition.message)",
                        ])
                    }
                } catch KubeAPIError.status(code: 404, _) {
                    ledger.forget(update)  // deleted meanwhile
                } catch KubeAPIError.status(code: 409, _) {
                    // Changed since it was observed: the watch brings the new version, and a
                    // build computes the write again over it, after the ledger's pause (which
                    // grows while the refusals go on, and counts no conflict).
                    ledger.refused(update, at: .now)
                    logger.debug("the object changed while its status was written; writing it again over the new version",
                                 metadata: ["object": "\(object)"])
                    rebuild(after: .milliseconds(200))
                } catch {
                    ledger.forget(update)
                    metrics.statusWrite(succeeded: false)
                    logger.warning("cannot write status; retrying", metadata: ["object": "\(object)", "error": "\(error)"])
                    // Rebuild (and so re-send what still differs) after a pause, even if nothing changes.
                    rebuild(after: .seconds(5))
                }
            }
        }
    }

    /// Rebuilds after `delay` even if nothing changes (one such retry pending at a time).
    private func rebuild(after delay: Duration) {
        guard !shared.retryPending.exchange(true, ordering: .relaxed) else { return }
        let dirty = self.dirty, shared = self.shared
        Task {
            try? await Task.sleep(for: max(delay, .milliseconds(10)))
            shared.retryPending.store(false, ordering: .relaxed)
            dirty.yield()
        }
    }
}

/// `corridor_kubernetes_*` metrics: whether each watch is healthy, API errors, watch restarts,
/// object counts, rejected objects, status writes, build time.
struct ClusterMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    private let synced: Gauge
    private let lastBuild: Gauge
    private let rejected: Gauge
    private let identities: Gauge
    private let contestedAddresses: Gauge
    private let buildSeconds: Gauge

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        synced = registry.makeGauge(descriptor: .init(metricName: "corridor_kubernetes_synced", unitName: "",
                                                      helpText: "1 while a policy built from a full sync of the API is in force (0 before it, and while withheld for an API outage past spec.kubernetes.maxStaleness)"))
        lastBuild = registry.makeGauge(descriptor: .init(metricName: "corridor_kubernetes_last_build_timestamp_seconds", unitName: "", helpText: "When the policy was last rebuilt from the API caches"))
        rejected = registry.makeGauge(descriptor: .init(metricName: "corridor_kubernetes_rejected_objects", unitName: "", helpText: "ExternalServices and EgressPolicies whose current spec is invalid"))
        identities = registry.makeGauge(descriptor: .init(metricName: "corridor_kubernetes_pod_identities", unitName: "", helpText: "Pods whose addresses map to an identity"))
        contestedAddresses = registry.makeGauge(descriptor: .init(metricName: "corridor_source_contested_addresses", unitName: "",
                                                                  helpText: "Source addresses more than one workload claims (denied until one claim is gone)"))
        buildSeconds = registry.makeGauge(descriptor: .init(metricName: "corridor_kubernetes_last_build_duration_seconds", unitName: "", helpText: "How long the last policy build took"))
        for resource in ["pods", "externalservices", "egresspolicies"] { setUp(resource: resource, false) }
    }

    func setStale(resource: String, seconds: Double) {
        registry.makeGauge(descriptor: .init(metricName: "corridor_kubernetes_watch_stale_seconds", unitName: "", helpText: "How long a resource's list/watch has been failing (0 while healthy)"),
                           labels: [("resource", resource)]).set(to: seconds)
    }

    func setUp(resource: String, _ up: Bool) {
        registry.makeGauge(descriptor: .init(metricName: "corridor_kubernetes_watch_up", unitName: "", helpText: "1 while the list/watch of a resource is healthy, 0 during an API outage"),
                           labels: [("resource", resource)]).set(to: up ? 1 : 0)
    }

    func unreadable(resource: String) {
        registry.makeCounter(descriptor: .init(metricName: "corridor_kubernetes_unreadable_objects_total", unitName: "",
                                               helpText: "Objects in lists and watch events that could not be read (the others were applied)"),
                             labels: [("resource", resource)]).increment()
    }

    func apiError(resource: String, reason: String) {
        registry.makeCounter(descriptor: .init(metricName: "corridor_kubernetes_api_errors_total", unitName: "", helpText: "Failed Kubernetes API requests by resource and reason"),
                             labels: [("resource", resource), ("reason", reason)]).increment()
    }

    func rewatch(resource: String, why: String) {
        registry.makeCounter(descriptor: .init(metricName: "corridor_kubernetes_watch_restarts_total", unitName: "", helpText: "Watch streams restarted, by why: timeout, dropped, expired (410, relist), short"),
                             labels: [("resource", resource), ("reason", why)]).increment()
    }

    func statusConflict() {
        registry.makeCounter(descriptor: .init(metricName: "corridor_kubernetes_status_conflicts_total", unitName: "",
                                               helpText: "Accepted conditions found overwritten by another writer (and written back, with backoff)")).increment()
    }

    func statusWrite(succeeded: Bool) {
        registry.makeCounter(descriptor: .init(metricName: "corridor_kubernetes_status_writes_total", unitName: "", helpText: "Accepted conditions written, by result"),
                             labels: [("result", succeeded ? "success" : "failure")]).increment()
    }

    func contested(_ count: Int) { contestedAddresses.set(to: Double(count)) }

    func setSynced(_ on: Bool) { synced.set(to: on ? 1 : 0) }

    func built(objects: ClusterObjects, policy: ClusterPolicy, duration: Duration) {
        synced.set(to: 1)
        lastBuild.set(to: Date().timeIntervalSince1970)
        rejected.set(to: Double(policy.rejected.count))
        identities.set(to: Double(policy.podIdentities))
        buildSeconds.set(to: Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
        for (resource, count) in [("pods", objects.pods.count), ("externalservices", objects.externalServices.count), ("egresspolicies", objects.egressPolicies.count)] {
            registry.makeGauge(descriptor: .init(metricName: "corridor_kubernetes_objects", unitName: "", helpText: "Objects in the watch caches"),
                               labels: [("resource", resource)]).set(to: Double(count))
        }
    }
}
