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

    /// What stands in the cache for an object whose metadata could be read but not the rest
    /// (`why` says what went wrong; `status` is its `status` as JSON, when that much is there);
    /// nil: nothing, the cache keeps the object's last readable version, if any.
    static func unreadable(metadata: KubeObjectMeta, status: Data?, why: String) -> Self?
}

extension KubeObject {
    public static func unreadable(metadata: KubeObjectMeta, status: Data?, why: String) -> Self? { nil }
}

/// An object of a list or watch event that the decoder could not read: its metadata when that
/// much could be read, and why.
public struct UnreadableObject: Sendable, Equatable {
    public var metadata: KubeObjectMeta?
    /// The object's `status`, as JSON text, when it has one.
    public var status: Data?
    public var why: String

    /// The metadata fields ``KubeObjectMeta`` reads. managedFields, which can nest as deep as the
    /// spec it tracks, is left out.
    static let metadataFields: Set<String> = ["name", "namespace", "uid", "resourceVersion", "generation", "labels",
                                              "creationTimestamp", "deletionTimestamp"]

    /// Reads what it can of the object JSON text `range` of `bytes` holds after `error` refused it.
    init(_ bytes: [UInt8], _ range: Range<Int>, error: any Error, decoder: JSONDecoder) {
        let depth = ShallowJSON.depth(of: bytes, in: range)
        why = depth > Self.decodableDepth
            ? "a value is nested \(depth) levels deep; the decoder reads at most \(Self.decodableDepth)" : Self.describe(error)
        let members = (try? ShallowJSON.members(of: bytes, in: range)) ?? []
        status = members.first { $0.key == "status" }.map { Data(bytes[$0.value]) }
        metadata = members.first { $0.key == "metadata" }.flatMap { Self.metadata(bytes, $0.value, decoder: decoder) }
    }

    /// The metadata in `range` of `bytes`, read from its members ``metadataFields`` names.
    static func metadata(_ bytes: [UInt8], _ range: Range<Int>, decoder: JSONDecoder) -> KubeObjectMeta? {
        guard let members = try? ShallowJSON.members(of: bytes, in: range) else { return nil }
        var shallow: [UInt8] = [UInt8(ascii: "{")]
        for member in members where metadataFields.contains(member.key) {
            if shallow.count > 1 { shallow.append(UInt8(ascii: ",")) }
            shallow += Array("\"\(member.key)\":".utf8) + bytes[member.value]
        }
        shallow.append(UInt8(ascii: "}"))
        return try? decoder.decode(KubeObjectMeta.self, from: Data(shallow))
    }

    /// How deep Foundation's JSON decoder follows nested values (the whole text is refused beyond).
    static let decodableDepth = 512

    /// One line for a decoding error: Foundation's own says only that the data was not valid JSON.
    static func describe(_ error: any Error) -> String {
        guard case DecodingError.dataCorrupted(let context) = error else { return "\(error)" }
        let path = context.codingPath.map(\.stringValue).joined(separator: ".")
        let underlying = (context.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
        return [path.isEmpty ? nil : path, context.debugDescription, underlying].compactMap { $0 }.joined(separator: ": ")
    }
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

    /// The condition as JSON, as it is written.
    public var json: JSONValue {
        var fields: [(String, JSONValue)] = [("type", .string(type)), ("status", .string(status)), ("reason", .string(reason)),
                                             ("message", .string(message))]
        if let observedGeneration { fields.append(("observedGeneration", .int(observedGeneration))) }
        if let lastTransitionTime { fields.append(("lastTransitionTime", .string(lastTransitionTime))) }
        return .object(fields)
    }

    /// A condition read from JSON another writer may have written: a `type` is required, the
    /// other fields are taken as far as they are there (missing strings read as empty).
    public init?(json: JSONValue) {
        guard let type = Self.type(of: json) else { return nil }
        var generation: Int64?
        if case .int(let value)? = json.member("observedGeneration") { generation = value }
        self.init(type: type, status: json.member("status")?.string ?? "", reason: json.member("reason")?.string ?? "",
                  message: json.member("message")?.string ?? "", observedGeneration: generation,
                  lastTransitionTime: json.member("lastTransitionTime")?.string)
    }

    /// The type of a condition as JSON, if it has one.
    static func type(of json: JSONValue) -> String? { json.member("type")?.string }
}

/// An ExternalService or EgressPolicy as the API serves it: metadata, the spec kept as raw JSON
/// (it is validated by the same loader as the config file), and the conditions last written.
public struct CustomResource: KubeObject, Equatable {
    /// The status as other writers may have left it: the conditions kept as JSON, whole (a status
    /// write sends them back as they were), and nothing in them can make the object unreadable.
    public struct Status: Decodable, Sendable, Equatable {
        public var conditions: [JSONValue]?

        private enum CodingKeys: String, CodingKey { case conditions }

        public init(conditions: [JSONValue]?) { self.conditions = conditions }

        public init(from decoder: any Decoder) throws {
            let container = try? decoder.container(keyedBy: CodingKeys.self)
            conditions = (try? container?.decodeIfPresent([JSONValue].self, forKey: .conditions)) ?? nil
        }
    }

    public var kind: String?
    public var metadata: KubeObjectMeta
    public var spec: JSONValue?
    public var status: Status?
    /// Set (never decoded) when the object's metadata could be read but not the rest: why. The
    /// policy build treats such an object as invalid.
    public var unreadable: String?
    /// An unreadable object whose status could not be read either: no status is written to it.
    public var statusUnreadable = false

    private enum CodingKeys: String, CodingKey { case kind, metadata, spec, status }

    public init(kind: String, metadata: KubeObjectMeta, spec: JSONValue?, conditions: [KubeCondition]? = nil) {
        self.kind = kind
        self.metadata = metadata
        self.spec = spec
        self.status = conditions.map { Status(conditions: $0.map(\.json)) }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        kind = try container.decodeIfPresent(String.self, forKey: .kind)
        metadata = try container.decode(KubeObjectMeta.self, forKey: .metadata)
        spec = try container.decodeIfPresent(JSONValue.self, forKey: .spec)
        // A status of another shape is no reason to refuse the object.
        status = (try? container.decodeIfPresent(Status.self, forKey: .status)) ?? nil
    }

    public static func unreadable(metadata: KubeObjectMeta, status: Data?, why: String) -> CustomResource? {
        var object = CustomResource(kind: "", metadata: metadata, spec: nil)
        object.kind = nil
        object.unreadable = why
        // The conditions as they are, so that a status write keeps the others (an object without
        // a status has none to keep).
        if let status {
            object.status = try? JSONDecoder().decode(Status.self, from: status)
            object.statusUnreadable = object.status == nil
        }
        return object
    }

    /// The condition of `type`, read leniently (see ``KubeCondition/init(json:)``).
    public func condition(_ type: String) -> KubeCondition? {
        status?.conditions?.first { KubeCondition.type(of: $0) == type }.flatMap(KubeCondition.init(json:))
    }
}

/// A list page: its items, the list's resourceVersion and the continue token.
struct ListPage<Object: KubeObject>: Decodable {
    struct Meta: Decodable {
        var resourceVersion: String?
        var `continue`: String?
    }

    var metadata: Meta
    var items: [Object]?
    /// Items the decoder could not read (see ``decode(_:decoder:)``).
    var unreadable: [UnreadableObject] = []

    private enum CodingKeys: String, CodingKey { case metadata, items }

    /// Decodes a page whole; when the decoder refuses it, decodes its metadata and each item on
    /// its own (see ``ShallowJSON``), so that one unreadable item leaves the others readable.
    /// Throws only when the page itself cannot be read.
    static func decode(_ body: [UInt8], decoder: JSONDecoder) throws -> ListPage {
        let whole: any Error
        do { return try decoder.decode(ListPage.self, from: Data(body)) } catch { whole = error }
        guard let members = try? ShallowJSON.members(of: body), let meta = members.first(where: { $0.key == "metadata" }) else { throw whole }
        var page = ListPage(metadata: try decoder.decode(Meta.self, from: Data(body[meta.value])), items: [])
        guard let items = members.first(where: { $0.key == "items" }), body[items.value].first != UInt8(ascii: "n") else { return page }
        for range in try ShallowJSON.elements(of: body, in: items.value) {
            do {
                page.items?.append(try decoder.decode(Object.self, from: Data(body[range])))
            } catch {
                page.unreadable.append(UnreadableObject(body, range, error: error, decoder: decoder))
            }
        }
        return page
    }
}

/// One line of a watch stream.
public enum WatchEvent<Object: KubeObject>: Sendable {
    case added(Object)
    case modified(Object)
    case deleted(Object)
    /// Only a resource version: the stream is at least this far.
    case bookmark(resourceVersion: String)
    case error(KubeStatus)
    /// An ADDED, MODIFIED (`deleted` false) or DELETED event whose object the decoder could not read.
    case unreadable(UnreadableObject, deleted: Bool)

    private struct Head: Decodable { var type: String }
    private struct Body<T: Decodable>: Decodable { var object: T }
    private struct RVOnly: Decodable {
        struct Meta: Decodable { var resourceVersion: String? }
        var metadata: Meta?
    }

    /// Decodes one `{"type":..., "object":...}` line. A BOOKMARK's object is read as metadata
    /// only (servers send `"containers":null` and other empty shells in it).
    /// An event whose object the decoder refuses (a value nested too deep, a field of the wrong
    /// type) is read as far as its type and the object's metadata: ``unreadable(_:deleted:)``.
    public static func decode(_ line: Data, decoder: JSONDecoder = JSONDecoder()) throws -> WatchEvent {
        let head: Head
        do { head = try decoder.decode(Head.self, from: line) } catch {
            return try unreadableEvent(Array(line), error: error, decoder: decoder)
        }
        switch head.type {
        case "ADDED", "MODIFIED", "DELETED":
            do { return event(head.type, try decoder.decode(Body<Object>.self, from: line).object) } catch {
                return try unreadableEvent(Array(line), error: error, decoder: decoder)
            }
        case "BOOKMARK":
            guard let rv = try decoder.decode(Body<RVOnly>.self, from: line).object.metadata?.resourceVersion else {
                throw KubeAPIError.decoding("a BOOKMARK without metadata.resourceVersion")
            }
            return .bookmark(resourceVersion: rv)
        case "ERROR": return .error(try decoder.decode(Body<KubeStatus>.self, from: line).object)
        default: throw KubeAPIError.decoding("unknown watch event type '\(head.type)'")
        }
    }

    /// An ADDED, MODIFIED or DELETED event (`type`) of `object`.
    private static func event(_ type: String, _ object: Object) -> WatchEvent {
        switch type {
        case "ADDED": return .added(object)
        case "MODIFIED": return .modified(object)
        default: return .deleted(object)
        }
    }

    /// The event `line` holds, when the decoder refused it whole (`error`): its type and what can
    /// be read of its object. Throws `error` again when not even that can be read.
    private static func unreadableEvent(_ line: [UInt8], error whole: any Error, decoder: JSONDecoder) throws -> WatchEvent {
        guard let members = try? ShallowJSON.members(of: line),
              let type = members.first(where: { $0.key == "type" }).flatMap({ try? decoder.decode(String.self, from: Data(line[$0.value])) }),
              ["ADDED", "MODIFIED", "DELETED"].contains(type),
              let object = members.first(where: { $0.key == "object" })?.value
        else { throw whole }
        let why: any Error
        do {
            // Readable alone (the event's wrapping was one level too many): an ordinary event.
            return event(type, try decoder.decode(Object.self, from: Data(line[object])))
        } catch {
            why = error
        }
        let unreadable = UnreadableObject(line, object, error: why, decoder: decoder)
        guard unreadable.metadata?.name != nil else { throw whole }
        return .unreadable(unreadable, deleted: type == "DELETED")
    }
}
