import CorridorPolicy
import Foundation

/// What the watches hold at one moment: the input of a policy build.
public struct ClusterObjects: Sendable {
    public var pods: [Pod]
    public var externalServices: [CustomResource]
    public var egressPolicies: [CustomResource]

    public init(pods: [Pod] = [], externalServices: [CustomResource] = [], egressPolicies: [CustomResource] = []) {
        self.pods = pods
        self.externalServices = externalServices
        self.egressPolicies = egressPolicies
    }
}

/// An `Accepted` condition to write to one object's status.
public struct StatusUpdate: Sendable, Equatable {
    public var resource: APIResource
    public var namespace: String?
    public var name: String
    /// The object's uid: a deleted and re-created object is another object.
    public var uid: String?
    public var condition: KubeCondition
    /// The object's resourceVersion when this update was computed: a write is made over that version.
    public var observedResourceVersion: String?
    /// The whole `status.conditions` list to write: the object's as observed, with `condition`
    /// in place of its Accepted one (a merge patch replaces a list whole: other controllers'
    /// conditions must be written back as they were, every field of them).
    public var conditions: [JSONValue]

    /// `observed` is the object's `status.conditions` as this update was computed.
    public init(resource: APIResource, namespace: String?, name: String, uid: String?, condition: KubeCondition,
                observedResourceVersion: String? = nil, observed: [JSONValue] = []) {
        self.resource = resource
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.condition = condition
        self.observedResourceVersion = observedResourceVersion
        let place = observed.firstIndex { KubeCondition.type(of: $0) == condition.type }
        var conditions = observed.filter { KubeCondition.type(of: $0) != condition.type }
        conditions.insert(condition.json, at: place ?? conditions.count)
        self.conditions = conditions
    }

    /// Identifies the object's status: a deleted and re-created object (another uid) is another.
    public var key: String { "\(uid ?? "")|\(path)" }

    public var path: String { resource.objectPath(namespace: namespace, name: name) + "/status" }
}

/// The result of one build.
public struct ClusterPolicy: Sendable {
    public var source: PolicySource
    /// Conditions that differ from what the objects' status says now.
    public var statusUpdates: [StatusUpdate]
    /// Objects whose current spec is invalid (enforced at their last good generation, or not at all).
    public var rejected: [String]
    /// Rejected objects this build still enforces at an earlier version: `Kind/[namespace/]name`
    /// to `generation N` (or `the last accepted version`, for a server that sets no generation).
    /// Kept in memory: another gateway, or this one after a restart, may hold none.
    public var enforcedInstead: [String: String] = [:]
    /// Pods that own at least one address in the inventory.
    public var podIdentities: Int
}

/// Builds a policy source from the watched objects: each ExternalService and EgressPolicy is
/// validated on its own by the same loader as the config file (unknown fields, bad hosts, bad
/// selectors are errors); an invalid object is never half-applied: it is enforced as it was at
/// its last accepted generation, or not at all, and its `Accepted` condition says why. Which
/// earlier version is kept is this gateway's memory, so the condition does not name it (every
/// replica writes the same condition; ``ClusterPolicy/enforcedInstead`` and `/policy` say).
/// Pods become the source inventory (see ``PodInventory``).
///
/// Stateful only to remember each object's last good version and to skip re-validating specs
/// that did not change (10,000 ExternalServices rebuild without re-parsing).
public final class ClusterPolicyCompiler {
    private struct Parsed<Value> {
        /// uid and generation (or resourceVersion): what identifies the spec that was parsed.
        var version: Version
        var result: Result<Value, ConfigErrors>
    }

    private struct Version: Equatable {
        var uid: String?
        var generation: Int64?
        var resourceVersion: String?

        init(_ meta: KubeObjectMeta) {
            uid = meta.uid
            generation = meta.generation
            // Without a generation (a server that does not set it), any change is a new version.
            resourceVersion = meta.generation == nil ? meta.resourceVersion : nil
        }
    }

    private struct Good<Value> {
        var uid: String?
        var generation: Int64?
        var value: Value
    }

    private var parsedServices: [String: Parsed<ExternalService>] = [:]
    private var parsedPolicies: [String: Parsed<EgressPolicy>] = [:]
    private var goodServices: [String: Good<ExternalService>] = [:]
    private var goodPolicies: [String: Good<EgressPolicy>] = [:]
    private let now: () -> String

    public init(now: @escaping () -> String = KubeTime.now) {
        self.now = now
    }

    /// `base` holds the GatewayConfig (and any file Workloads); `unusable` names ExternalServices
    /// to leave out with a reason (TLS material that cannot be loaded).
    public func build(base: PolicySource, objects: ClusterObjects, unusable: [String: String] = [:]) -> ClusterPolicy {
        var source = base
        var updates: [StatusUpdate] = []
        var rejected: [String] = []
        var enforcedInstead: [String: String] = [:]

        // ExternalServices.
        // Name -> port numbers of every ExternalService accepted as it is now, and the names of
        // those present but not accepted: what the policies' references are checked against (the
        // same on every replica, unlike what each one still enforces).
        var servicePorts: [String: Set<Int>] = [:]
        var notAccepted = Set<String>()
        var liveServiceKeys = Set<String>()
        for object in objects.externalServices {
            guard let name = object.metadata.name else { continue }
            liveServiceKeys.insert(object.metadata.key)
            let parsed = parse(object, kind: "ExternalService", cache: &parsedServices) { $0.externalServices.first }
            var condition: KubeCondition
            switch parsed {
            case .success(let service):
                if let reason = unusable[name] {
                    condition = accepted(false, "InvalidTLSMaterial", "\(reason); not enforced", object)
                    rejected.append("ExternalService/\(name)")
                    notAccepted.insert(name)
                } else {
                    goodServices[object.metadata.key] = Good(uid: object.metadata.uid, generation: object.metadata.generation, value: service)
                    source.externalServices.append(service)
                    servicePorts[service.name] = Set(service.ports.map(\.number))
                    condition = accepted(true, "Valid", "accepted", object)
                }
            case .failure(let errors):
                rejected.append("ExternalService/\(name)")
                notAccepted.insert(name)
                condition = invalid(errors, object)
                // The last accepted version stays, unless its TLS material cannot be loaded either.
                if let (kept, which) = lastGood(goodServices, object), unusable[name] == nil {
                    source.externalServices.append(kept)
                    enforcedInstead["ExternalService/\(name)"] = which
                }
            }
            if let update = update(.externalServices, object, condition) { updates.append(update) }
        }
        if goodServices.count > liveServiceKeys.count { goodServices = goodServices.filter { liveServiceKeys.contains($0.key) } }
        if parsedServices.count > liveServiceKeys.count { parsedServices = parsedServices.filter { liveServiceKeys.contains($0.key) } }

        // EgressPolicies: references to services that do not exist (yet) grant nothing; say so.
        var livePolicyKeys = Set<String>()
        for object in objects.egressPolicies {
            guard object.metadata.name != nil else { continue }
            livePolicyKeys.insert(object.metadata.key)
            let parsed = parse(object, kind: "EgressPolicy", cache: &parsedPolicies) { $0.egressPolicies.first }
            var condition: KubeCondition
            switch parsed {
            case .success(let policy):
                goodPolicies[object.metadata.key] = Good(uid: object.metadata.uid, generation: object.metadata.generation, value: policy)
                source.egressPolicies.append(policy)
                let notes = Self.unresolved(policy, ports: servicePorts, notAccepted: notAccepted)
                condition = accepted(true, notes.isEmpty ? "Valid" : "UnresolvedReferences",
                                     notes.isEmpty ? "accepted" : "accepted; \(notes.joined(separator: "; "))", object)
            case .failure(let errors):
                rejected.append("EgressPolicy/\(object.metadata.key)")
                condition = invalid(errors, object)
                if let (kept, which) = lastGood(goodPolicies, object) {
                    source.egressPolicies.append(kept)
                    enforcedInstead["EgressPolicy/\(object.metadata.key)"] = which
                }
            }
            if let update = update(.egressPolicies, object, condition) { updates.append(update) }
        }
        if goodPolicies.count > livePolicyKeys.count { goodPolicies = goodPolicies.filter { livePolicyKeys.contains($0.key) } }
        if parsedPolicies.count > livePolicyKeys.count { parsedPolicies = parsedPolicies.filter { livePolicyKeys.contains($0.key) } }

        let inventory = PodInventory.workloads(from: objects.pods)
        source.workloads += inventory
        return ClusterPolicy(source: source, statusUpdates: updates, rejected: rejected, enforcedInstead: enforcedInstead,
                             podIdentities: inventory.count)
    }

    /// An invalid spec's condition. The same on every gateway, whatever each one remembers.
    private func invalid(_ errors: ConfigErrors, _ object: CustomResource) -> KubeCondition {
        accepted(false, "Invalid", "\(Self.summary(errors)); not enforced (a gateway that accepted an earlier generation keeps enforcing it)", object)
    }

    /// The object's last accepted version, if it is still the same object (uid), and which it is.
    private func lastGood<Value>(_ goods: [String: Good<Value>], _ object: CustomResource) -> (Value, String)? {
        guard let good = goods[object.metadata.key], good.uid == object.metadata.uid else { return nil }
        return (good.value, good.generation.map { "generation \($0)" } ?? "the last accepted version")
    }

    /// Validates one object's spec (cached per uid and generation).
    private func parse<Value>(_ object: CustomResource, kind: String, cache: inout [String: Parsed<Value>],
                              extract: (PolicySource) -> Value?) -> Result<Value, ConfigErrors> {
        if let why = object.unreadable {
            // Not cached: the same generation may be read whole next time.
            return .failure(ConfigErrors(errors: [ConfigError(file: "\(kind)/\(object.metadata.key)", reason: "the API server's copy cannot be read: \(why)")]))
        }
        let version = Version(object.metadata)
        if let cached = cache[object.metadata.key], cached.version == version { return cached.result }
        let result: Result<Value, ConfigErrors>
        do {
            let source = try ConfigLoader.load(yaml: Self.document(object, kind: kind), file: "\(kind)/\(object.metadata.key)", crossCheck: false)
            if let value = extract(source) { result = .success(value) } else {
                result = .failure(ConfigErrors(errors: [ConfigError(file: kind, reason: "the object is not a \(kind)")]))
            }
        } catch {
            result = .failure(error)
        }
        cache[object.metadata.key] = Parsed(version: version, result: result)
        return result
    }

    /// The object as the config loader reads it: apiVersion, kind, name, namespace, labels, spec
    /// (server-set metadata and status left out).
    static func document(_ object: CustomResource, kind: String) -> String {
        var metadata: [(String, JSONValue)] = [("name", .string(object.metadata.name ?? ""))]
        if let namespace = object.metadata.namespace { metadata.append(("namespace", .string(namespace))) }
        if let labels = object.metadata.labels, !labels.isEmpty {
            metadata.append(("labels", .object(labels.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })))
        }
        var root: [(String, JSONValue)] = [("apiVersion", .string(APIGroup.apiVersion)), ("kind", .string(kind)), ("metadata", .object(metadata))]
        if let spec = object.spec { root.append(("spec", spec)) }
        return JSONValue.object(root).rendered
    }

    static func summary(_ errors: ConfigErrors) -> String {
        errors.errors.map { [$0.field, $0.reason].compactMap { $0 }.joined(separator: ": ") }.joined(separator: "; ")
    }

    /// References of `policy` to ExternalServices (or their ports) that are not accepted as they
    /// are now: `ports` holds the accepted ones, `notAccepted` the names of those present but
    /// rejected (a gateway that accepted an earlier generation of one keeps granting it).
    static func unresolved(_ policy: EgressPolicy, ports: [String: Set<Int>], notAccepted: Set<String> = []) -> [String] {
        var notes: [String] = []
        for (ruleIndex, rule) in policy.egress.enumerated() {
            for (targetIndex, name) in rule.externalServices.enumerated() {
                if notAccepted.contains(name) {
                    notes.append("spec.egress[\(ruleIndex)].to[\(targetIndex)]: ExternalService '\(name)' is not accepted (see its condition)")
                    continue
                }
                guard let servicePorts = ports[name] else {
                    notes.append("spec.egress[\(ruleIndex)].to[\(targetIndex)]: no ExternalService named '\(name)' (granting nothing until it exists)")
                    continue
                }
                for port in rule.ports where !servicePorts.contains(port) {
                    notes.append("spec.egress[\(ruleIndex)].ports: ExternalService '\(name)' has no port \(port)")
                }
            }
        }
        return notes
    }

    private func accepted(_ ok: Bool, _ reason: String, _ message: String, _ object: CustomResource) -> KubeCondition {
        // The API limits a condition message to 32 KiB; keep well inside it.
        let bounded = message.utf8.count > 4096 ? String(decoding: message.utf8.prefix(4096), as: UTF8.self) + "..." : message
        return KubeCondition(type: "Accepted", status: ok ? "True" : "False", reason: reason, message: bounded,
                             observedGeneration: object.metadata.generation)
    }

    /// The update to write, or nil when the object's status already says this (or could not be
    /// read: a write would replace conditions the gateway cannot see).
    private func update(_ resource: APIResource, _ object: CustomResource, _ condition: KubeCondition) -> StatusUpdate? {
        if object.unreadable != nil && object.statusUnreadable { return nil }
        let observed = object.condition("Accepted")
        if let observed, observed.sameState(as: condition) { return nil }
        var written = condition
        written.lastTransitionTime = observed?.status == condition.status ? (observed?.lastTransitionTime ?? now()) : now()
        return StatusUpdate(resource: resource, namespace: object.metadata.namespace, name: object.metadata.name ?? "",
                            uid: object.metadata.uid, condition: written, observedResourceVersion: object.metadata.resourceVersion,
                            observed: object.status?.conditions ?? [])
    }
}

/// Pod IPs to workload identities, by the rules of the API: an address is claimed only by a pod
/// that has networking of its own (not hostNetwork: those share the node's address) and is not
/// finished (Succeeded and Failed pods keep reporting an IP the network may already have given
/// to another pod). A pod being deleted keeps its address until it is gone, and yields it to a
/// live pod. When two live pods report the same address (a reused IP seen before the old pod's
/// end, or a pod that waited long with an old creation time), both claims stand and the source
/// inventory gives the address to neither (``SourceInventory/conflicts``): which pod sends from
/// it cannot be told, so it is denied until one claim is gone.
public enum PodInventory {
    public static func workloads(from pods: [Pod]) -> [Workload] {
        var owner: [IPAddress: [Pod]] = [:]
        for pod in pods {
            guard pod.spec?.hostNetwork != true, pod.status?.phase != "Succeeded", pod.status?.phase != "Failed" else { continue }
            // An identity the policy model cannot hold (the API server never sends one, but a
            // proxy or a fake in between might) claims nothing: its source stays unknown, denied.
            guard ConfigLoader.workloadIdentityProblem(name: pod.metadata.name ?? "", namespace: pod.metadata.namespace ?? "default",
                                                       serviceAccount: serviceAccount(of: pod), labels: pod.metadata.labels ?? [:]) == nil
            else { continue }
            for text in pod.addresses {
                guard var address = IPAddress(parsing: text) else { continue }
                // `::ffff:a.b.c.d` is the IPv4 address it carries (as sources are looked up).
                if address.isMapped, let v4 = address.embeddedIPv4 { address = v4 }
                guard let others = owner[address], let other = others.first else {
                    owner[address] = [pod]
                    continue
                }
                let deleting = pod.metadata.deletionTimestamp != nil, otherDeleting = other.metadata.deletionTimestamp != nil
                if deleting != otherDeleting {
                    if otherDeleting { owner[address] = [pod] }  // a pod being deleted yields to a live one
                } else if deleting {
                    if isNewer(pod, than: other) { owner[address] = [pod] }  // of two leaving, the newer
                } else if !others.contains(where: { $0.metadata.key == pod.metadata.key }) {
                    owner[address] = others + [pod]  // two live claims: neither gets it
                }
            }
        }
        var addresses: [String: (pod: Pod, cidrs: [CIDR])] = [:]
        for (address, pods) in owner {
            for pod in pods {
                addresses[pod.metadata.key, default: (pod, [])].cidrs.append(CIDR(address: address, prefixLength: address.isIPv4 ? 32 : 128))
            }
        }
        return addresses.values.sorted { $0.pod.metadata.key < $1.pod.metadata.key }.map { entry in
            let pod = entry.pod
            return Workload(metadata: ObjectMeta(name: pod.metadata.name ?? "", namespace: pod.metadata.namespace ?? "default"),
                            addresses: entry.cidrs.sorted { $0.description < $1.description },
                            serviceAccount: serviceAccount(of: pod), labels: pod.metadata.labels ?? [:])
        }
    }

    static func serviceAccount(of pod: Pod) -> String { pod.spec?.serviceAccountName ?? pod.spec?.serviceAccount ?? "default" }

    static func isNewer(_ pod: Pod, than other: Pod) -> Bool {
        let a = pod.metadata.creationTimestamp ?? "", b = other.metadata.creationTimestamp ?? ""
        if a != b { return a > b }  // RFC 3339 UTC timestamps order as text
        return pod.metadata.key > other.metadata.key
    }
}

/// RFC 3339 timestamps as the API writes them (`2026-11-27T05:00:00Z`).
public enum KubeTime {
    @Sendable public static func now() -> String {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        var t = time_t(time.tv_sec)
        var parts = tm()
        gmtime_r(&t, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }
}
