/// What the decision engine reads about the ExternalServices, compiled once per snapshot.
///
/// Laid out for a registry that no longer fits in the CPU caches: a host-table slot yields a
/// service index, and everything a usual decision needs next (name, addresses, access, the first
/// port's number and protocol, the first grant) is in the one ``Route`` at that index (88 bytes)
/// instead of at the end of a chain of dependent loads. A port with nothing but a number and a
/// protocol is rebuilt from those; other ports, and grants beyond a service's first, are read
/// from arrays beside the routes.
struct ServiceRoutes: Sendable {
    /// One ExternalService, by its position in the policy source.
    struct Route: Sendable {
        var name: String
        var addresses: [CIDR]
        var access: ExternalService.Access
        /// `spec.tls.ech`; nil: the gateway's default.
        var ech: ExternalService.ECH?
        /// Its first port's number and protocol, and first grant (placeholders when it has none).
        var firstPort: PortKey
        var firstGrant: Grant
        var portCount: UInt32
        var grantCount: UInt32
        /// Where its ports start in `ports` and `portKeys` (the first is there too).
        var portStart: UInt32
        /// Where its second and later grants start in `extraGrants`.
        var extraGrantStart: UInt32
        /// Whether its first port is `Port(number:protocol:)` and nothing more (no need to read `ports`).
        var firstPortIsPlain: Bool
    }

    struct PortKey: Sendable {
        var number: Int
        var `protocol`: ExternalService.PortProtocol

        init(_ port: ExternalService.Port) {
            number = port.number
            self.protocol = port.protocol
        }
    }

    /// A rule of an EgressPolicy that names the service.
    struct Grant: Sendable {
        var policy: Int
        /// The rule's `ports`; empty means every port.
        var ports: [Int]
    }

    /// The services registering one pattern: a single service index, or `listFlag | position` of
    /// a count in `lists` followed by that many service indexes.
    struct Candidates {
        fileprivate let payload: UInt32
        fileprivate static let listFlag: UInt32 = 0x8000_0000
    }

    /// By service index.
    private(set) var routes: [Route] = []
    /// Every service's ports, one service after the other.
    private var portKeys: [PortKey] = []
    private var ports: [ExternalService.Port] = []
    private var extraGrants: [Grant] = []
    private var exact = HostTable()
    private var wildcard = HostTable()
    private var lists: [UInt32] = []

    /// `grants`: by service position, the (policy, rule) pairs that name it.
    init(services: [ExternalService], grants serviceGrants: [[(policy: Int, rule: Int)]], policies: [EgressPolicy]) {
        precondition(services.count < Int(Candidates.listFlag), "ServiceRoutes: too many ExternalServices")
        routes.reserveCapacity(services.count)
        let noPort = ExternalService.Port(number: 0)
        let noGrant = Grant(policy: -1, ports: [])
        for (index, service) in services.enumerated() {
            let grants = serviceGrants[index].map { Grant(policy: $0.policy, ports: policies[$0.policy].egress[$0.rule].ports) }
            let first = service.ports.first ?? noPort
            routes.append(Route(name: service.name, addresses: service.addresses, access: service.access, ech: service.ech,
                                firstPort: PortKey(first), firstGrant: grants.first ?? noGrant,
                                portCount: UInt32(service.ports.count), grantCount: UInt32(grants.count),
                                portStart: UInt32(ports.count), extraGrantStart: UInt32(extraGrants.count),
                                firstPortIsPlain: first == ExternalService.Port(number: first.number, protocol: first.protocol)))
            portKeys += service.ports.map(PortKey.init)
            ports += service.ports
            extraGrants += grants.dropFirst()
        }

        // Each pattern's services in registration order, as HostIndex keeps them.
        var byPattern: [HostPattern: [Int]] = [:]
        for (index, service) in services.enumerated() {
            for host in service.hosts { byPattern[host, default: []].append(index) }
        }
        for (pattern, indexes) in byPattern {
            let payload: UInt32
            if indexes.count == 1 {
                payload = UInt32(indexes[0])
            } else {
                payload = Candidates.listFlag | UInt32(lists.count)
                lists.append(UInt32(indexes.count))
                lists += indexes.map { UInt32($0) }
            }
            switch pattern {
            case .exact(let name): exact.insert(name, payload: payload)
            case .wildcard(let suffix): wildcard.insert(suffix, payload: payload)
            }
        }
        precondition(lists.count < Int(Candidates.listFlag), "ServiceRoutes: too many host patterns")
    }

    /// The services of the most specific pattern matching `host` (normalised), or nil.
    func candidates(_ host: String) -> Candidates? {
        HostMatch.mostSpecific(host, exact: exact, wildcard: wildcard).map(Candidates.init(payload:))
    }

    func count(_ candidates: Candidates) -> Int {
        candidates.payload & Candidates.listFlag == 0 ? 1 : Int(lists[Int(candidates.payload & ~Candidates.listFlag)])
    }

    /// The service index of the candidate at `position` (0..<count).
    func service(_ candidates: Candidates, _ position: Int) -> Int {
        let payload = candidates.payload
        return payload & Candidates.listFlag == 0 ? Int(payload) : Int(lists[Int(payload & ~Candidates.listFlag) + 1 + position])
    }

    /// Port `ordinal` (0..<portCount) of service `service`: its number and protocol.
    func portKey(_ service: Int, _ ordinal: Int) -> PortKey {
        ordinal == 0 ? routes[service].firstPort : portKeys[Int(routes[service].portStart) + ordinal]
    }

    /// Port `ordinal` (0..<portCount) of service `service`, as configured.
    func port(_ service: Int, _ ordinal: Int) -> ExternalService.Port {
        if ordinal == 0 && routes[service].firstPortIsPlain {
            return ExternalService.Port(number: routes[service].firstPort.number, protocol: routes[service].firstPort.protocol)
        }
        return ports[Int(routes[service].portStart) + ordinal]
    }

    func grantCount(_ service: Int) -> Int { Int(routes[service].grantCount) }

    /// The policy of grant `ordinal` (0..<grantCount) of service `service` if its rule covers
    /// port `port` (a rule without ports covers all), else nil.
    func grantedPolicy(_ service: Int, _ ordinal: Int, port: Int) -> Int? {
        if ordinal == 0 {
            let covers = routes[service].firstGrant.ports.isEmpty || routes[service].firstGrant.ports.contains(port)
            return covers ? routes[service].firstGrant.policy : nil
        }
        let position = Int(routes[service].extraGrantStart) + ordinal - 1
        let covers = extraGrants[position].ports.isEmpty || extraGrants[position].ports.contains(port)
        return covers ? extraGrants[position].policy : nil
    }

    /// The ordinal of the port a connection to service `service` uses: the requested one if the
    /// service serves it with the connection's protocol; with none requested, port 80 for HTTP,
    /// else the only TLS port or the preferred one.
    func choosePort(_ service: Int, requested: Int?, preferred: Int, kind: DestinationFacts.Kind) -> Int? {
        let ordinals = 0..<Int(routes[service].portCount)
        let wanted: ExternalService.PortProtocol = kind == .http ? .http : .tls
        if let requested { return ordinals.first { portKey(service, $0).protocol == wanted && portKey(service, $0).number == requested } }
        if kind == .http { return ordinals.first { portKey(service, $0).protocol == wanted && portKey(service, $0).number == 80 } }
        var only: Int?, count = 0
        for ordinal in ordinals where portKey(service, ordinal).protocol == wanted {
            if portKey(service, ordinal).number == preferred { return ordinal }
            only = ordinal
            count += 1
        }
        return count == 1 ? only : nil
    }

    /// The ordinal of service `service`'s TCP port `number`, if it has one.
    func tcpPort(_ service: Int, _ number: Int) -> Int? {
        (0..<Int(routes[service].portCount)).first { portKey(service, $0).protocol == .tcp && portKey(service, $0).number == number }
    }
}
