/// One change to a policy, in resource terms: what a hint proposes and `corridor explain` prints
/// as YAML. Applying a hint's changes to the policy it was made for allows the connection.
public enum PolicyChange: Sendable, Equatable {
    /// Register a new ExternalService.
    case addService(ExternalService)
    /// Replace the ExternalService of the same name (a port added, ECH allowed, an address listed).
    case updateService(ExternalService)
    case addPolicy(EgressPolicy)
    /// Replace the EgressPolicy of the same namespace and name (a rule added).
    case updatePolicy(EgressPolicy)
    /// Claim a source address for a workload (file mode's static inventory).
    case addWorkload(Workload)

    public func apply(to source: inout PolicySource) {
        switch self {
        case .addService(let service):
            source.externalServices.append(service)
        case .updateService(let service):
            if let index = source.externalServices.firstIndex(where: { $0.name == service.name }) {
                source.externalServices[index] = service
            } else {
                source.externalServices.append(service)
            }
        case .addPolicy(let policy):
            source.egressPolicies.append(policy)
        case .updatePolicy(let policy):
            if let index = source.egressPolicies.firstIndex(where: { $0.namespace == policy.namespace && $0.metadata.name == policy.metadata.name }) {
                source.egressPolicies[index] = policy
            } else {
                source.egressPolicies.append(policy)
            }
        case .addWorkload(let workload):
            source.workloads.append(workload)
        }
    }

    /// The object as it is after the change, as a YAML document.
    public var yaml: String {
        switch self {
        case .addService(let service), .updateService(let service): return ResourceYAML.render(service)
        case .addPolicy(let policy), .updatePolicy(let policy): return ResourceYAML.render(policy)
        case .addWorkload(let workload): return ResourceYAML.render(workload)
        }
    }

    /// `add`, `update`: whether the object is new.
    public var isNew: Bool {
        switch self {
        case .addService, .addPolicy, .addWorkload: return true
        case .updateService, .updatePolicy: return false
        }
    }

    /// `ExternalService/name`, `EgressPolicy/ns/name`, `Workload/ns/name`.
    public var object: String {
        switch self {
        case .addService(let service), .updateService(let service): return "ExternalService/\(service.name)"
        case .addPolicy(let policy), .updatePolicy(let policy): return "EgressPolicy/\(policy.namespace)/\(policy.metadata.name)"
        case .addWorkload(let workload): return "Workload/\(workload.metadata.namespace ?? "default")/\(workload.metadata.name)"
        }
    }
}
