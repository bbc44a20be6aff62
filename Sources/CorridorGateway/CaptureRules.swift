import CorridorPolicy

/// The iptables rules that send workload egress to the gateway (transparent mode) and refuse
/// everything else, in iptables-restore format. Pure: `corridor iptables` prints them and, with
/// `--apply`/`--remove`, hands them to iptables-restore (see `CaptureRules+Apply.swift`).
public struct CaptureRules: Sendable {
    public enum Topology: String, Sendable, CaseIterable {
        /// The gateway runs on the node (host network); pod traffic arrives from the pod CIDR and
        /// is redirected in PREROUTING; what is not redirected is refused in FORWARD.
        case node
        /// The gateway runs beside the app in the pod; the pod's own OUTPUT is redirected, except
        /// the gateway's traffic (by its user ID); what is not redirected is refused in OUTPUT.
        case pod
    }

    public var topology: Topology
    /// Node topology: the sources to capture (the pod CIDRs).
    public var podCIDRs: [CIDR]
    /// Destinations never captured nor refused: the cluster's pod and service CIDRs.
    public var clusterCIDRs: [CIDR]
    /// DNS servers the workloads may reach on UDP and TCP 53.
    public var dnsServers: [IPAddress]
    /// Pod topology: the user ID the gateway runs as.
    public var gatewayUID: Int
    /// The gateway's TLS listener port, where captured connections are redirected (0: none; TLS ports are then refused).
    public var tlsListenerPort: Int
    /// TCP ports to redirect: every TLS and TCP port of a registered ExternalService, plus 443.
    public var capturedPorts: [Int]
    /// The gateway's plain-HTTP listener port (TLS origination), if it has one.
    public var httpListenerPort: Int?
    /// TCP ports redirected to the HTTP listener: the registered HTTP ports.
    public var httpPorts: [Int]
    public var ipv6: Bool

    public static let captureChain = "CORRIDOR-CAPTURE"
    public static let egressChain = "CORRIDOR-EGRESS"

    public init(topology: Topology, podCIDRs: [CIDR], clusterCIDRs: [CIDR], dnsServers: [IPAddress], gatewayUID: Int,
                tlsListenerPort: Int, capturedPorts: [Int], httpListenerPort: Int? = nil, httpPorts: [Int] = [], ipv6: Bool = false) {
        self.topology = topology
        self.podCIDRs = podCIDRs
        self.clusterCIDRs = clusterCIDRs
        self.dnsServers = dnsServers
        self.gatewayUID = gatewayUID
        self.tlsListenerPort = tlsListenerPort
        self.capturedPorts = Array(Set(capturedPorts).subtracting(httpListenerPort == nil ? [] : httpPorts)).sorted()
        self.httpListenerPort = httpListenerPort
        self.httpPorts = httpListenerPort == nil ? [] : Array(Set(httpPorts)).sorted()
        self.ipv6 = ipv6
    }

    /// The ports to capture for a policy: 443 and every TLS or TCP port an ExternalService declares.
    public static func ports(for source: PolicySource) -> [Int] {
        Array(Set([443] + source.externalServices.flatMap { $0.ports.filter { $0.protocol != .http }.map(\.number) })).sorted()
    }

    /// The plain-HTTP ports of a policy (redirected to the http listener for TLS origination).
    public static func httpPorts(for source: PolicySource) -> [Int] {
        Array(Set(source.externalServices.flatMap { $0.ports.filter { $0.protocol == .http }.map(\.number) })).sorted()
    }

    private func family<T>(_ items: [T], _ isV4: (T) -> Bool) -> [T] { items.filter { isV4($0) != ipv6 } }

    /// The ranges and servers given that these rules leave out, being of the other address family
    /// (they need a run with the other `ipv6`), as `--flag value`.
    public var otherFamily: [String] {
        podCIDRs.filter { $0.address.isIPv4 == ipv6 }.map { "--pod-cidr \($0)" }
            + clusterCIDRs.filter { $0.address.isIPv4 == ipv6 }.map { "--cluster-cidr \($0)" }
            + dnsServers.filter { $0.isIPv4 == ipv6 }.map { "--dns \($0)" }
    }

    /// Why these rules would do nothing: node topology with no pod CIDR of this family has no
    /// jump into its chains, so it would capture and refuse nothing. nil when they are whole.
    public var emptyProblem: String? {
        guard topology == .node, family(podCIDRs, { $0.address.isIPv4 }).isEmpty else { return nil }
        return "no --pod-cidr is \(ipv6 ? "IPv6" : "IPv4"): the \(ipv6 ? "ip6tables" : "iptables") rules would capture and refuse nothing"
            + (ipv6 ? "" : " (for an IPv6-only cluster, run with --ipv6)")
    }

    /// The jump rules from the built-in chains, as (table, chain, rule arguments).
    public var jumps: [(table: String, chain: String, rule: [String])] {
        switch topology {
        case .node:
            return family(podCIDRs, { $0.address.isIPv4 }).flatMap { cidr in [
                ("nat", "PREROUTING", ["-s", cidr.description, "-j", Self.captureChain]),
                ("filter", "FORWARD", ["-s", cidr.description, "-j", Self.egressChain]),
            ] }
        case .pod:
            return [("nat", "OUTPUT", ["-p", "tcp", "-j", Self.captureChain]), ("filter", "OUTPUT", ["-j", Self.egressChain])]
        }
    }

    /// The two chains' contents, in iptables-restore format (without the jumps).
    public var chainsRestoreText: String {
        let loopback = ipv6 ? "::1/128" : "127.0.0.0/8"
        let reject = ipv6 ? "icmp6-port-unreachable" : "icmp-port-unreachable"
        let cluster = family(clusterCIDRs, { $0.address.isIPv4 }).map(\.description)
        let dns = family(dnsServers, { $0.isIPv4 }).map { $0.description }
        var nat = ["*nat", ":\(Self.captureChain) - [0:0]"]
        var filter = ["*filter", ":\(Self.egressChain) - [0:0]"]
        if topology == .pod {
            nat.append("-A \(Self.captureChain) -m owner --uid-owner \(gatewayUID) -j RETURN")
            nat.append("-A \(Self.captureChain) -d \(loopback) -j RETURN")
            filter.append("-A \(Self.egressChain) -m owner --uid-owner \(gatewayUID) -j RETURN")
            filter.append("-A \(Self.egressChain) -o lo -j RETURN")
            // A connection REDIRECTed to the gateway: its destination is loopback by the time the
            // filter table sees it, whatever interface the first route lookup chose.
            filter.append("-A \(Self.egressChain) -d \(loopback) -j RETURN")
        }
        for cidr in cluster {
            nat.append("-A \(Self.captureChain) -d \(cidr) -j RETURN")
            filter.append("-A \(Self.egressChain) -d \(cidr) -j RETURN")
        }
        for server in dns {
            for proto in ["udp", "tcp"] {
                filter.append("-A \(Self.egressChain) -d \(server) -p \(proto) -m \(proto) --dport 53 -j RETURN")
            }
        }
        if topology == .pod {
            filter.append("-A \(Self.egressChain) -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
        }
        // multiport takes at most 15 ports per rule.
        for (ports, listener) in [(capturedPorts, tlsListenerPort), (httpPorts, httpListenerPort ?? 0)] where !ports.isEmpty && listener != 0 {
            for start in stride(from: 0, to: ports.count, by: 15) {
                let group = ports[start..<min(ports.count, start + 15)].map(String.init).joined(separator: ",")
                nat.append("-A \(Self.captureChain) -p tcp -m multiport --dports \(group) -j REDIRECT --to-ports \(listener)")
            }
        }
        // Everything not redirected and not cluster-internal is refused, loudly, so clients fall
        // back or fail fast: UDP 443 (QUIC) and unregistered ports included.
        filter.append("-A \(Self.egressChain) -p tcp -j REJECT --reject-with tcp-reset")
        filter.append("-A \(Self.egressChain) -j REJECT --reject-with \(reject)")
        nat.append("COMMIT")
        filter.append("COMMIT")
        return (nat + filter).joined(separator: "\n") + "\n"
    }

    /// Everything, for printing: the chains and, as comments-free `-A` lines, the jumps.
    public var restoreText: String {
        var text = "# corridor capture rules (\(topology.rawValue) topology, \(ipv6 ? "IPv6" : "IPv4")); apply with: corridor iptables --apply\n"
            + "# (by hand: \(ipv6 ? "ip6tables-restore" : "iptables-restore") --noflush; without it every table named here is flushed, "
            + "kube-proxy's rules included, and these jumps are appended where --apply inserts them first)\n"
        text += chainsRestoreText
        let jumpsByTable = Dictionary(grouping: jumps, by: \.table)
        for table in ["nat", "filter"] {
            guard let rules = jumpsByTable[table] else { continue }
            text += "*\(table)\n" + rules.map { "-A \($0.chain) " + $0.rule.joined(separator: " ") }.joined(separator: "\n") + "\nCOMMIT\n"
        }
        return text
    }
}
