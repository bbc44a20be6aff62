import CorridorPolicy

/// What one flow aggregates: a workload identity (or, for an unknown source, its address), the
/// listener, the destination (a name, or an address for TCP), the port, the decision and the rule.
public struct FlowKey: Hashable, Sendable {
    public var namespace: String
    public var workload: String
    public var serviceAccount: String
    /// The source address when no identity is known (empty otherwise).
    public var unknownSource: String
    public var listener: String
    public var destination: String
    public var port: Int
    public var decision: String
    public var externalService: String
    public var egressPolicy: String

    /// Who went where, whatever the port and decision: the key of `new_destination`.
    var reach: Reach { Reach(namespace: namespace, workload: workload, unknownSource: unknownSource, destination: destination) }

    struct Reach: Hashable, Sendable {
        var namespace: String
        var workload: String
        var unknownSource: String
        var destination: String
    }
}

/// The counters of one flow.
public struct FlowStats: Sendable {
    public var connections = 0
    public var active = 0
    public var bytesUp = 0
    public var bytesDown = 0
    /// Wall-clock seconds.
    public var firstSeen = 0.0
    public var lastSeen = 0.0
    /// As parts: rendered into words only when `/flows` is read.
    var lastWhy: Decision.Reason = .text("")
    public var lastReason: String { lastWhy.text }

    mutating func add(_ other: FlowStats) {
        connections += other.connections
        active += other.active
        bytesUp += other.bytesUp
        bytesDown += other.bytesDown
        firstSeen = firstSeen == 0 ? other.firstSeen : (other.firstSeen == 0 ? firstSeen : min(firstSeen, other.firstSeen))
        if other.lastSeen >= lastSeen {
            lastSeen = other.lastSeen
            lastWhy = other.lastWhy
        }
    }
}
