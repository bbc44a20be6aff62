/// An immutable, compiled view of one policy source: what every connection reads once.
/// Built off the data path (at load and reload), swapped atomically, never mutated.
public final class PolicySnapshot: Sendable {
    public let generation: Int
    public let source: PolicySource
    public let gateway: GatewayConfig
    public let inventory: SourceInventory
    public let addressGuard: AddressGuard
    /// The services compiled for the decision engine: host tables, ports, grants (by service index).
    let routes: ServiceRoutes
    public let hostPatternCount: Int
    /// `namespace/name` of each EgressPolicy, by index (named in every decision it makes).
    let policyNames: [String]
    /// Namespace -> indexes of the Audit-mode policies there.
    let auditPolicies: [String: [Int]]
    let staticHosts: HostIndex<[IPAddress]>
    /// Port -> the services with a TCP port of that number (matched by address).
    let tcpServices: [Int: [Int]]
    /// Every port number some ExternalService serves with TLS.
    let tlsPorts: Set<Int>

    public init(source: PolicySource, generation: Int) {
        self.generation = generation
        self.source = source
        self.gateway = source.gateway
        self.inventory = SourceInventory(workloads: source.workloads)
        self.addressGuard = AddressGuard(allowPrivate: source.gateway.allowPrivate, extraBlocked: source.gateway.extraBlocked)
        self.hostPatternCount = source.externalServices.reduce(0) { $0 + $1.hosts.count }
        var tcp: [Int: [Int]] = [:]
        for (serviceIndex, service) in source.externalServices.enumerated() {
            for port in service.ports where port.protocol == .tcp { tcp[port.number, default: []].append(serviceIndex) }
        }
        self.tcpServices = tcp
        self.tlsPorts = Set(source.externalServices.flatMap { $0.ports.filter { $0.protocol == .tls }.map(\.number) })
        var grants: [String: [(policy: Int, rule: Int)]] = [:]
        var audit: [String: [Int]] = [:]
        for (policyIndex, policy) in source.egressPolicies.enumerated() {
            if policy.mode == .audit { audit[policy.namespace, default: []].append(policyIndex) }
            for (ruleIndex, rule) in policy.egress.enumerated() {
                for name in rule.externalServices { grants[name, default: []].append((policyIndex, ruleIndex)) }
            }
        }
        self.routes = ServiceRoutes(services: source.externalServices, grants: source.externalServices.map { grants[$0.name] ?? [] },
                                    policies: source.egressPolicies)
        self.auditPolicies = audit
        self.policyNames = source.egressPolicies.map(\.metadata.qualifiedName)
        var staticHosts = HostIndex<[IPAddress]>()
        for (pattern, addresses) in source.gateway.staticHosts { staticHosts.insert(pattern, addresses) }
        self.staticHosts = staticHosts
    }

    /// Addresses the configuration gives for `host` (most specific pattern), or nil to use the system resolver.
    public func staticAddresses(for host: String) -> [IPAddress]? {
        staticHosts.lookup(host).first
    }

    public var serviceCount: Int { routes.routes.count }
    /// Whether any ExternalService has a TCP port (so redirected connections are checked by address first).
    public var hasTCPServices: Bool { !tcpServices.isEmpty }
}
