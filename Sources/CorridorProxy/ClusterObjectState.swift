/// One ExternalService or EgressPolicy as this gateway holds it, for `/policy`: whether its
/// current spec is accepted and, when it is not, the earlier version this gateway still enforces.
public struct ClusterObjectState: Sendable, Equatable {
    /// `Kind/[namespace/]name`.
    public var object: String
    public var accepted: Bool
    /// For an object not accepted: the version still in force here (`generation 3`), or nil
    /// when none is. Other gateways may hold another (each keeps what it last accepted).
    public var enforcing: String?

    public init(object: String, accepted: Bool, enforcing: String? = nil) {
        self.object = object
        self.accepted = accepted
        self.enforcing = enforcing
    }
}
