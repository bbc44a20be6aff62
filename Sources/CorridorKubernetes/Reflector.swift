import Foundation
import Logging
import NIOCore
import Synchronization

/// A resource the gateway watches.
public struct APIResource: Sendable, Equatable {
    /// The plural, as in URLs and metric labels: `pods`.
    public var plural: String
    public var kind: String
    /// `/api/v1` or `/apis/corridor.dev/v1alpha1`.
    public var groupPath: String
    public var namespaced: Bool

    public static let pods = APIResource(plural: "pods", kind: "Pod", groupPath: "/api/v1", namespaced: true)
    public static let externalServices = APIResource(plural: "externalservices", kind: "ExternalService", groupPath: "/apis/corridor.dev/v1alpha1", namespaced: false)
    public static let egressPolicies = APIResource(plural: "egresspolicies", kind: "EgressPolicy", groupPath: "/apis/corridor.dev/v1alpha1", namespaced: true)

    /// Every object of the resource, in every namespace.
    public var listPath: String { "\(groupPath)/\(plural)" }

    public func objectPath(namespace: String?, name: String) -> String {
        if namespaced, let namespace { return "\(groupPath)/namespaces/\(namespace)/\(plural)/\(name)" }
        return "\(groupPath)/\(plural)/\(name)"
    }
}

/// The objects of one resource as last listed and watched, keyed by `namespace/name`.
public final class ResourceCache<Object: KubeObject>: Sendable {
    private struct State {
        var objects: [String: Object] = [:]
        /// The keys in byte order, kept sorted as objects come and go (a policy build reads the
        /// objects in a stable order without sorting 10,000 keys each time).
        var keys: [String] = []
        var synced = false

        mutating func insertKey(_ key: String) {
            var low = 0, high = keys.count
            while low < high {
                let mid = (low + high) / 2
                if Self.precedes(keys[mid], key) { low = mid + 1 } else { high = mid }
            }
            keys.insert(key, at: low)
        }

        mutating func removeKey(_ key: String) {
            var low = 0, high = keys.count
            while low < high {
                let mid = (low + high) / 2
                if Self.precedes(keys[mid], key) { low = mid + 1 } else { high = mid }
            }
            if low < keys.count && keys[low] == key { keys.remove(at: low) }
        }

        static func precedes(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }
    }

    private let state = Mutex(State())

    public init() {}

    /// True once a full list has been stored.
    public var isSynced: Bool { state.withLock { $0.synced } }
    public var count: Int { state.withLock { $0.objects.count } }
    /// The objects, in key order (bytewise).
    public var objects: [Object] { state.withLock { state in state.keys.map { state.objects[$0]! } } }

    /// The object stored under `key` (`namespace/name` or `name`).
    public func object(forKey key: String) -> Object? { state.withLock { $0.objects[key] } }

    public func replace(with objects: [Object]) {
        var map: [String: Object] = [:]
        for object in objects where object.metadata.name != nil { map[object.metadata.key] = object }
        let keys = map.keys.sorted(by: State.precedes)
        state.withLock {
            $0.objects = map
            $0.keys = keys
            $0.synced = true
        }
    }

    public func upsert(_ object: Object) {
        guard object.metadata.name != nil else { return }
        let key = object.metadata.key
        state.withLock {
            if $0.objects.updateValue(object, forKey: key) == nil { $0.insertKey(key) }
        }
    }

    public func remove(_ object: Object) { remove(key: object.metadata.key) }

    /// Removes the object stored under `namespace/name` (or `name`), if any.
    public func remove(key: String) {
        state.withLock {
            if $0.objects.removeValue(forKey: key) != nil { $0.removeKey(key) }
        }
    }
}

/// What a reflector reports, for metrics and readiness.
public struct ReflectorObserver: Sendable {
    /// The cache changed (a list was stored, or watch events applied).
    public var changed: @Sendable () -> Void
    /// A request to the API failed or a stream was refused: `(resource, reason)`.
    public var failed: @Sendable (_ resource: String, _ reason: String) -> Void
    /// Whether the resource's list/watch is currently healthy.
    public var healthy: @Sendable (_ resource: String, _ up: Bool) -> Void
    /// A watch restarted: `(resource, why)`: `timeout`, `dropped`, `expired`.
    public var rewatched: @Sendable (_ resource: String, _ why: String) -> Void
    /// An object of a list or watch event could not be read (the others were).
    public var unreadable: @Sendable (_ resource: String) -> Void
    /// The API server showed that the cache is as new as its own view: a list completed, a watch
    /// brought an event or a bookmark, or a watch ran to the server's timeout. A watch that brings
    /// nothing until it is dropped is not progress, however healthy its connection looked.
    public var progressed: @Sendable (_ resource: String) -> Void

    public init(changed: @escaping @Sendable () -> Void = {}, failed: @escaping @Sendable (String, String) -> Void = { _, _ in },
                healthy: @escaping @Sendable (String, Bool) -> Void = { _, _ in }, rewatched: @escaping @Sendable (String, String) -> Void = { _, _ in },
                unreadable: @escaping @Sendable (String) -> Void = { _ in }, progressed: @escaping @Sendable (String) -> Void = { _ in }) {
        self.changed = changed
        self.failed = failed
        self.healthy = healthy
        self.rewatched = rewatched
        self.unreadable = unreadable
        self.progressed = progressed
    }
}

/// Exponential backoff with jitter, as client-go's reflector: 800 ms, doubling, up to +100 %
/// jitter, capped at 30 s.
public struct Backoff: Sendable {
    public var initial: Duration
    public var cap: Duration
    private var current: Duration?

    public init(initial: Duration = .milliseconds(800), cap: Duration = .seconds(30)) {
        self.initial = initial
        self.cap = cap
    }

    /// The next wait: the base doubles up to the cap, then up to +100 % jitter on top, so many
    /// gateways that failed together do not retry in lockstep.
    public mutating func next() -> Duration {
        let base = current.map { min($0 * 2, cap) } ?? initial
        current = base
        return base * Double.random(in: 1...2)
    }

    public mutating func reset() { current = nil }
}

/// List+watch for one resource, per the API conventions: a paged list (`limit`/`continue`;
/// an expired continue token falls back to one full list), then a watch from the list's
/// resourceVersion with bookmarks and a server-side timeout. A clean end or a dropped stream
/// re-watches from the last resourceVersion seen (bookmarks included) with no relist; 410 Gone
/// (in-band ERROR or HTTP status) clears nothing until a fresh full list replaces the cache;
/// any other error backs off with jitter and relists. The cache always holds the last complete
/// view, so an API outage leaves the gateway on its last snapshot.
public final class Reflector<Object: KubeObject>: Sendable {
    public let resource: APIResource
    public let cache: ResourceCache<Object>
    private let client: KubeAPIClient
    private let observer: ReflectorObserver
    private let logger: Logger
    private let pageSize: Int
    private let watchSeconds: ClosedRange<Int>
    private let initialBackoff: Duration
    /// A watch (or the wait for its response head) that brings no byte for this long is ended,
    /// and the watch starts again from the last resourceVersion; a list that stalls as long fails
    /// and is tried again. The API server sends a bookmark
    /// about once a minute on a quiet watch; a server that stops sending (a stalled proxy, an
    /// overloaded apiserver) must not leave identities stale until the watch's own timeout.
    private let watchIdleLimit: Duration
    /// The default ``watchIdleLimit``.
    public static var defaultWatchIdleLimit: Duration { .seconds(90) }
    /// A `fieldSelector` for every list and watch (e.g. `spec.nodeName=node-1`), or nil.
    private let fieldSelector: String?
    /// Objects a list page starts with: ``pageSize``, or fewer once pages of that many were too
    /// large for the client (then it grows back by doubling with each list that completes).
    private let pageLimit: Atomic<Int>
    /// Set by ``nudge()``: the backoff under way ends now.
    private let nudged = Atomic<Bool>(false)

    public init(resource: APIResource, client: KubeAPIClient, cache: ResourceCache<Object> = ResourceCache(), observer: ReflectorObserver,
                logger: Logger, pageSize: Int = 500, watchSeconds: ClosedRange<Int> = 300...600, initialBackoff: Duration = .milliseconds(800),
                watchIdleLimit: Duration = Reflector.defaultWatchIdleLimit, fieldSelector: String? = nil) {
        self.resource = resource
        self.client = client
        self.cache = cache
        self.observer = observer
        self.logger = logger
        self.pageSize = max(1, pageSize)
        self.pageLimit = Atomic(max(1, pageSize))
        self.watchSeconds = watchSeconds
        self.initialBackoff = initialBackoff
        self.watchIdleLimit = watchIdleLimit
        self.fieldSelector = fieldSelector
    }

    private struct Expired: Error { var status: KubeStatus? }

    /// How many times one list starts again from its first page after its continue token expired.
    static var maxListRestarts: Int { 3 }

    /// Runs until the task is cancelled.
    public func run() async {
        var backoff = Backoff(initial: initialBackoff)
        var resourceVersion: String?
        let name = resource.plural
        while !Task.isCancelled {
            do {
                let listed: String
                if let resourceVersion { listed = resourceVersion } else {
                    listed = try await list()
                    resourceVersion = listed
                    observer.progressed(name)
                    observer.healthy(name, true)
                }
                let started = ContinuousClock.now
                let outcome = try await watch(from: listed)
                resourceVersion = outcome.resourceVersion
                if outcome.events == 0 && ContinuousClock.now - started < .seconds(1) {
                    // A watch that ends at once with nothing in it: something is wrong (an API going
                    // away drops it so); not healthy until a relist after the backoff succeeds.
                    logger.warning("watch ended at once; relisting", metadata: ["resource": "\(name)", "end": "\(outcome.end)"])
                    observer.rewatched(name, "short")
                    observer.healthy(name, false)
                    resourceVersion = nil
                    await pause(backoff.next())
                    continue
                }
                if outcome.end == .completed { observer.progressed(name) }
                observer.healthy(name, true)
                backoff.reset()
                if case .dropped(let why) = outcome.end {
                    logger.info("watch dropped; resuming from the last resource version", metadata: ["resource": "\(name)", "resourceVersion": "\(outcome.resourceVersion)", "error": "\(why)"])
                    observer.rewatched(name, "dropped")
                } else {
                    observer.rewatched(name, "timeout")
                }
            } catch let expired as Expired {
                logger.notice("resource version expired (410); relisting", metadata: ["resource": "\(name)", "status": "\(expired.status?.description ?? "")"])
                observer.rewatched(name, "expired")
                resourceVersion = nil
                await pause(backoff.next())
            } catch {
                if Task.isCancelled { break }
                let delay = backoff.next()
                var hint = ""
                if case .status(404, _)? = error as? KubeAPIError {
                    hint = resource.groupPath.hasPrefix("/apis/") ? "; are the CRDs installed (kubectl apply -k deploy/crds)?" : ""
                } else if case .status(let code, _)? = error as? KubeAPIError, code == 401 || code == 403 {
                    hint = "; check the service account's token and RBAC (deploy/base/rbac.yaml)"
                }
                logger.warning("kubernetes API request failed; keeping the last known objects and retrying",
                               metadata: ["resource": "\(name)", "error": "\(error)\(hint)", "retryIn": "\(delay)"])
                observer.failed(name, Self.reason(error))
                observer.healthy(name, false)
                // Whatever failed (the list, a refused watch, a bad event), relist: the resource
                // version may no longer be served, and a fresh list replaces the cache whole.
                resourceVersion = nil
                await pause(delay)
            }
        }
    }

    /// Ends the backoff under way, if any: the API answered another resource's requests again,
    /// so this one need not wait out a backoff that grew during an outage (up to a minute).
    public func nudge() { nudged.store(true, ordering: .releasing) }

    /// Waits `delay`, or until ``nudge()``. A nudge from before the wait does not count.
    private func pause(_ delay: Duration) async {
        nudged.store(false, ordering: .relaxed)
        let end = ContinuousClock.now + delay
        while !Task.isCancelled {
            let left = end - ContinuousClock.now
            if left <= .zero || nudged.exchange(false, ordering: .acquiring) { return }
            try? await Task.sleep(for: min(left, .milliseconds(250)))
        }
    }

    static func reason(_ error: any Error) -> String {
        switch error as? KubeAPIError {
        case .status(let code, _): return "http_\(code)"
        case .transport: return "transport"
        case .tooLarge: return "too_large"
        case .decoding: return "decoding"
        case .credentials: return "credentials"
        case nil: return error is DecodingError ? "decoding" : "other"
        }
    }

    /// Lists every object (paged), replaces the cache, and returns the list's resourceVersion.
    func list() async throws -> String {
        let decoder = JSONDecoder()
        var items: [Object] = []
        var unreadable: [UnreadableObject] = []
        var resourceVersion: String?
        var token: String?
        // Pages of `limit` objects; a page over the client's body limit (large objects: a pod
        // can be near 1.5 MiB) is asked for again with half as many, down to one object a page,
        // rather than failing every list for ever; the next list starts where this one got to.
        var limit = pageLimit.load(ordering: .relaxed)
        var restarts = 0
        pages: while true {
            var query = [("limit", "\(limit)")]
            if let fieldSelector { query.append(("fieldSelector", fieldSelector)) }
            if let token { query.append(("continue", token)) }
            let body: [UInt8]
            do {
                body = try await client.get(resource.listPath, query: query, idle: watchIdleLimit)
            } catch KubeAPIError.tooLarge(let bytes) where limit > 1 {
                limit = max(1, limit / 2)
                logger.notice("a list page was larger than the client takes; asking for smaller pages", metadata: [
                    "resource": "\(resource.plural)", "limitBytes": "\(bytes)", "objectsPerPage": "\(limit)",
                ])
                continue pages
            } catch let error as KubeAPIError where error.isExpired && token != nil {
                // The continue token expired between pages (etcd compacted meanwhile): the list
                // starts again from its first page, at the page size it got to (an unpaged list
                // would be over the body limit whenever pages had to shrink). A few times: a list
                // that cannot outrun compaction fails, and the caller backs off and relists.
                restarts += 1
                guard restarts <= Self.maxListRestarts else { throw error }
                logger.notice("list continue token expired; listing again from the first page", metadata: [
                    "resource": "\(resource.plural)", "objectsPerPage": "\(limit)",
                ])
                (items, unreadable, token) = ([], [], nil)
                continue pages
            }
            let page = try decode(body, decoder)
            items += page.items ?? []
            unreadable += page.unreadable
            resourceVersion = page.metadata.resourceVersion
            token = page.metadata.continue.flatMap { $0.isEmpty ? nil : $0 }
            if token == nil { break pages }
        }
        pageLimit.store(min(pageSize, limit * 2), ordering: .relaxed)
        guard let resourceVersion, !resourceVersion.isEmpty else { throw KubeAPIError.decoding("a \(resource.kind)List without metadata.resourceVersion") }
        for object in unreadable {
            report(object)
            guard let metadata = object.metadata, metadata.name != nil else { continue }
            if let standIn = Object.unreadable(metadata: metadata, status: object.status, why: object.why) ?? cache.object(forKey: metadata.key) { items.append(standIn) }
        }
        cache.replace(with: items)
        logger.info("listed", metadata: ["resource": "\(resource.plural)", "objects": "\(items.count)", "resourceVersion": "\(resourceVersion)"])
        observer.changed()
        return resourceVersion
    }

    private func decode(_ body: [UInt8], _ decoder: JSONDecoder) throws -> ListPage<Object> {
        do { return try ListPage<Object>.decode(body, decoder: decoder) } catch { throw KubeAPIError.decoding("\(resource.kind) list: \(error)") }
    }

    /// An object the decoder could not read: the others are read and applied. A custom object
    /// stands in the cache as unreadable (the policy build rejects it visibly); any other keeps
    /// its last readable version.
    private func report(_ object: UnreadableObject) {
        logger.warning("an object could not be read; the others are applied", metadata: [
            "resource": "\(resource.plural)", "object": "\(object.metadata?.key ?? "(no name)")", "error": "\(object.why)",
        ])
        observer.unreadable(resource.plural)
    }

    private final class Progress: Sendable {
        struct State {
            var resourceVersion: String
            var events = 0
            var carry: [UInt8] = []
            /// How much of `carry` is known to hold no newline (so a long event split over many
            /// chunks is scanned once, not once per chunk).
            var scanned = 0
        }

        let state: Mutex<State>
        init(_ resourceVersion: String) { state = Mutex(State(resourceVersion: resourceVersion)) }
    }

    /// One watch stream from `resourceVersion`; applies events to the cache as they arrive.
    func watch(from resourceVersion: String) async throws -> (end: StreamEnd, resourceVersion: String, events: Int) {
        let seconds = Int.random(in: watchSeconds)
        var query = [("watch", "true"), ("allowWatchBookmarks", "true"), ("resourceVersion", resourceVersion), ("timeoutSeconds", "\(seconds)")]
        if let fieldSelector { query.append(("fieldSelector", fieldSelector)) }
        let progress = Progress(resourceVersion)
        let cache = self.cache, observer = self.observer, limit = client.maxBodyBytes, kind = resource.kind, name = resource.plural
        let end: StreamEnd
        do {
            end = try await client.stream(resource.listPath, query: query, timeout: .seconds(seconds + 30), idle: watchIdleLimit) { buffer in
                let (changed, unreadable, decoded) = try progress.state.withLock { state throws -> (Bool, [UnreadableObject], Bool) in
                    let eventsBefore = state.events
                    state.carry.append(contentsOf: buffer.readableBytesView)
                    var changed = false
                    var unreadable: [UnreadableObject] = []
                    var start = 0
                    var from = state.scanned
                    while let newline = state.carry[from...].firstIndex(of: UInt8(ascii: "\n")) {
                        let line = state.carry[start..<newline]
                        start = newline + 1
                        from = start
                        if line.allSatisfy({ $0 == 0x20 || $0 == 0x0d }) { continue }
                        let event: WatchEvent<Object>
                        do { event = try WatchEvent<Object>.decode(Data(line)) } catch {
                            throw KubeAPIError.decoding("\(kind) watch event: \(error)")
                        }
                        state.events += 1
                        switch event {
                        case .added(let object), .modified(let object):
                            cache.upsert(object)
                            changed = true
                            if let rv = object.metadata.resourceVersion { state.resourceVersion = rv }
                        case .deleted(let object):
                            cache.remove(object)
                            changed = true
                            if let rv = object.metadata.resourceVersion { state.resourceVersion = rv }
                        case .bookmark(let rv):
                            state.resourceVersion = rv
                        case .error(let status):
                            if status.isExpired { throw Expired(status: status) }
                            throw KubeAPIError.status(code: status.code ?? 500, status)
                        case .unreadable(let object, let deleted):
                            guard let metadata = object.metadata else { preconditionFailure("an unreadable event's object without metadata") }
                            unreadable.append(object)
                            if deleted {
                                cache.remove(key: metadata.key)
                            } else if let standIn = Object.unreadable(metadata: metadata, status: object.status, why: object.why) {
                                cache.upsert(standIn)
                            }
                            changed = true
                            if let rv = metadata.resourceVersion { state.resourceVersion = rv }
                        }
                    }
                    state.carry.removeFirst(start)
                    state.scanned = state.carry.count
                    if state.carry.count > limit { throw KubeAPIError.tooLarge(limit: limit) }
                    return (changed, unreadable, state.events > eventsBefore)
                }
                unreadable.forEach(report)
                if decoded { observer.progressed(name) }
                if changed { observer.changed() }
            }
        } catch let error as KubeAPIError where error.isExpired {
            throw Expired(status: { if case .status(_, let s) = error { return s }; return nil }())
        }
        let final = progress.state.withLock { $0 }
        return (end, final.resourceVersion, final.events)
    }
}
