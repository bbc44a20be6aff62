import Foundation

/// The few fields of the Kubernetes API objects the gateway reads. Decoding ignores every other
/// field (managedFields, annotations, containers...), so servers of any version decode.

/// A `Status` body: what the API server answers on errors, and the object of a watch ERROR event.
public struct KubeStatus: Decodable, Sendable, Equatable, CustomStringConvertible {
    public var status: String?
    public var message: String?
    public var reason: String?
    public var code: Int?

    public init(message: String? = nil, reason: String? = nil, code: Int? = nil) {
        self.status = "Failure"
        self.message = message
        self.reason = reason
        self.code = code
    }

    public var description: String {
        [code.map { "\($0)" }, reason, message].compactMap { $0 }.joined(separator: " ")
    }

    /// 410 Gone with reason Expired (or Gone, before Kubernetes 1.18): the resource version is compacted.
    public var isExpired: Bool { code == 410 || reason == "Expired" || reason == "Gone" }
}

public struct KubeObjectMeta: Decodable, Sendable, Equatable {
    public var name: String?
    public var namespace: String?
    public var uid: String?
    public var resourceVersion: String?
    public var generation: Int64?
    public var labels: [String: String]?
    public var creationTimestamp: String?
    public var deletionTimestamp: String?

    public init(name: String? = nil, namespace: String? = nil, uid: String? = nil, resourceVersion: String? = nil, generation: Int64? = nil,
                labels: [String: String]? = nil, creationTimestamp: String? = nil, deletionTimestamp: String? = nil) {
        self.name = name
        self.namespace = namespace
        self.uid = uid
        self.resourceVersion = resourceVersion
        self.generation = generation
        self.labels = labels
        self.creationTimestamp = creationTimestamp
        self.deletionTimestamp = deletionTimestamp
    }

    /// `namespace/name` or `name`: the cache key, unique per resource.
    public var key: String { namespace.map { "\($0)/\(name ?? "")" } ?? (name ?? "") }
}

/// An object the reflector can cache.
public protocol KubeObject: Decodable, Sendable {
    var metadata: KubeObjectMeta { get }
}

/// A pod: who it is (namespace, name, service account, labels) and the addresses it owns.
public struct Pod: KubeObject, Equatable {
    public struct Spec: Decodable, Sendable, Equatable {
        public var serviceAccountName: String?
        /// Deprecated mirror of serviceAccountName; read only when the new field is absent.
        public var serviceAccount: String?
        public var hostNetwork: Bool?
        public var nodeName: String?
    }

    public struct Status: Decodable, Sendable, Equatable {
        public struct PodIP: Decodable, Sendable, Equatable { public var ip: String }
        public var phase: String?
        public var podIP: String?
        public var podIPs: [PodIP]?
    }

    public var metadata: KubeObjectMeta
    public var spec: Spec?
    public var status: Status?

    public init(metadata: KubeObjectMeta, serviceAccount: String? = nil, hostNetwork: Bool = false, phase: String? = "Running", ips: [String] = []) {
        self.metadata = metadata
        self.spec = Spec(serviceAccountName: serviceAccount, serviceAccount: nil, hostNetwork: hostNetwork, nodeName: nil)
        self.status = Status(phase: phase, podIP: ips.first, podIPs: ips.map { .init(ip: $0) })
    }

    /// Every IP the pod reports (`status.podIPs`, else `status.podIP`), deduplicated.
    public var addresses: [String] {
        var seen: [String] = []
        for ip in (status?.podIPs?.map(\.ip) ?? []) + [status?.podIP].compactMap({ $0 }) where !ip.isEmpty && !seen.contains(ip) {
            seen.append(ip)
        }
        return seen
    }
}

/// A condition as written in `status.conditions` (metav1.Condition).
public struct KubeCondition: Codable, Sendable, Equatable {
    public var type: String
    public var status: String
    public var reason: String
    public var message: String
    public var observedGeneration: Int64?
    public var lastTransitionTime: String?

    public init(type: String, status: String, reason: String, message: String, observedGeneration: Int64?, lastTransitionTime: String? = nil) {
        self.type = type
        self.status = status
        self.reason = reason
        self.message = message
        self.observedGeneration = observedGeneration
        self.lastTransitionTime = lastTransitionTime
    }

    /// Same state, ignoring when it was written.
    public func sameState(as other: KubeCondition) -> Bool {
        type == other.type && status == other.status && reason == other.reason && message == other.message
            && observedGeneration == other.observedGeneration
    }
}

/// An ExternalService or EgressPolicy as the API serves it: metadata, the spec kept as raw JSON
/// (it is validated by the same loader as the config file), and the conditions last written.
public struct CustomResource: KubeObject, Equatable {
    public struct Status: Decodable, Sendable, Equatable {
        public var conditions: [KubeCondition]?
    }

    public var kind: String?
    public var metadata: KubeObjectMeta
    public var spec: JSONValue?
    public var status: Status?

    public init(kind: String, metadata: KubeObjectMeta, spec: JSONValue?, conditions: [KubeCondition]? = nil) {
        self.kind = kind
        self.metadata = metadata
        self.spec = spec
        self.status = conditions.map { Status(conditions: $0) }
    }

    public func condition(_ type: String) -> KubeCondition? { status?.conditions?.first { $0.type == type } }
}

/// A list page: its items, the list's resourceVersion and the continue token.
struct ListPage<Object: KubeObject>: Decodable {
    struct Meta: Decodable {
        var resourceVersion: String?
        var `continue`: String?
    }

    var metadata: Meta
    var items: [Object]?
}

/// One line of a watch stream.
public enum WatchEvent<Object: KubeObject>: Sendable {
    case added(Object)
    case modified(Object)
    case deleted(Object)
    /// Only a resource version: the stream is at least this far.
    case bookmark(resourceVersion: String)
    case error(KubeStatus)

    private struct Head: Decodable { var type: String }
    private struct Body<T: Decodable>: Decodable { var object: T }
    private struct RVOnly: Decodable {
        struct Meta: Decodable { var resourceVersion: String? }
        var metadata: Meta?
    }

    /// Decodes one `{"type":..., "object":...}` line. A BOOKMARK's object is read as metadata
    /// only (servers send `"containers":null` and other empty shells in it).
    public static func decode(_ line: Data, decoder: JSONDecoder = JSONDecoder()) throws -> WatchEvent {
        let head = try decoder.decode(Head.self, from: line)
        switch head.type {
        case "ADDED": return .added(try decoder.decode(Body<Object>.self, from: line).object)
        case "MODIFIED": return .modified(try decoder.decode(Body<Object>.self, from: line).object)
        case "DELETED": return .deleted(try decoder.decode(Body<Object>.self, from: line).object)
        case "BOOKMARK":
            guard let rv = try decoder.decode(Body<RVOnly>.self, from: line).object.metadata?.resourceVersion else {
                throw KubeAPIError.decoding("a BOOKMARK without metadata.resourceVersion")
            }
            return .bookmark(resourceVersion: rv)
        case "ERROR": return .error(try decoder.decode(Body<KubeStatus>.self, from: line).object)
        default: throw KubeAPIError.decoding("unknown watch event type '\(head.type)'")
        }
    }
}
