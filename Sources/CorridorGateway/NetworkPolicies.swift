import CorridorPolicy

/// The NetworkPolicies that close the bypass around a central gateway: application namespaces may
/// send only DNS to the cluster DNS and connections to the gateway's listeners; the gateway
/// accepts connections only from those namespaces (and the monitoring namespace on the admin
/// port), and may reach DNS, the API server (Kubernetes mode) and the outside, but not the
/// cluster's pod and service ranges nor the cloud platform addresses (metadata services and
/// their agents). The gateway refuses those itself too (``AddressGuard``); the
/// policy holds if the gateway is compromised. `corridor netpol` prints them as
/// multi-document YAML for `kubectl apply -f -`; deploy/base ships the gateway's own part.
public struct NetworkPolicies: Sendable {
    public var namespaces: [String]
    public var gatewayNamespace: String
    public var gatewayLabels: [(String, String)]
    /// The gateway's listener ports (container ports): applications may use the tls, connect and
    /// http listeners; the monitoring namespace the admin listener.
    public var ports: GatewayPorts
    public var dnsNamespace: String
    public var dnsLabels: [(String, String)]
    public var podCIDRs: [CIDR]
    public var serviceCIDRs: [CIDR]
    /// Never reachable from the gateway, whatever the policy says.
    public var blockedCIDRs: [CIDR]
    /// ``blockedCIDRs`` by default: link-local (the metadata service at 169.254.169.254 and the
    /// platform services beside it: AWS's agents, GKE's metadata server, cloud storage targets),
    /// AWS's IPv6 metadata and agent range, Alibaba Cloud's metadata address and Azure's platform
    /// endpoint (WireServer). NodeLocal DNSCache, also link-local, gets a rule of its own
    /// (``nodeLocalDNS``).
    public static let platformCIDRs = ["169.254.0.0/16", "100.100.100.200/32", "168.63.129.16/32", "fe80::/10", "fd00:ec2::/64"]
        .map { try! CIDR(parsing: $0) }
    /// NodeLocal DNSCache's address, where the gateway's own lookups go in clusters that run it
    /// (DNS only, UDP and TCP 53): upstream's default; kubespray's is 169.254.25.10.
    public static let defaultNodeLocalDNS = [IPAddress(parsing: "169.254.20.10")!]
    public var nodeLocalDNS: [IPAddress]
    /// The API server's endpoint addresses (Kubernetes mode); empty in file mode. An explicit
    /// rule, because the endpoints may sit in an excluded range, and some CNIs do not count the
    /// API server as an ipBlock address at all.
    public var apiServerCIDRs: [CIDR]
    public var apiServerPorts: [Int]
    /// The namespace whose pods scrape the admin port (/metrics); nil: none.
    public var monitoringNamespace: String?

    public init(namespaces: [String], gatewayNamespace: String, gatewayLabels: [(String, String)], ports: GatewayPorts,
                dnsNamespace: String = "kube-system", dnsLabels: [(String, String)] = [("k8s-app", "kube-dns")],
                podCIDRs: [CIDR], serviceCIDRs: [CIDR],
                blockedCIDRs: [CIDR] = NetworkPolicies.platformCIDRs,
                apiServerCIDRs: [CIDR], apiServerPorts: [Int] = [443, 6443], monitoringNamespace: String? = "monitoring",
                nodeLocalDNS: [IPAddress] = NetworkPolicies.defaultNodeLocalDNS) {
        self.namespaces = namespaces
        self.gatewayNamespace = gatewayNamespace
        self.gatewayLabels = gatewayLabels
        self.ports = ports
        self.dnsNamespace = dnsNamespace
        self.dnsLabels = dnsLabels
        self.podCIDRs = podCIDRs
        self.serviceCIDRs = serviceCIDRs
        self.blockedCIDRs = blockedCIDRs
        self.apiServerCIDRs = apiServerCIDRs
        self.apiServerPorts = apiServerPorts
        self.monitoringNamespace = monitoringNamespace
        self.nodeLocalDNS = nodeLocalDNS
    }

    /// Every policy: each application namespace's, then the gateway's.
    public var yaml: String { render(applicationDocuments + gatewayDocuments) }

    /// The gateway namespace's policies only (what deploy/base ships).
    public var gatewayYAML: String { render(gatewayDocuments) }

    private var applicationDocuments: [[String]] {
        var documents: [[String]] = []
        for namespace in namespaces {
            documents.append(policy("corridor-default-deny-egress", namespace, selector: ["  podSelector: {}"], type: "Egress",
                                    rules: ["  egress: []"]))
            documents.append(policy("corridor-allow-dns", namespace, selector: ["  podSelector: {}"], type: "Egress",
                                    rules: ["  egress:"] + dnsRule))
            documents.append(policy("corridor-allow-gateway", namespace, selector: ["  podSelector: {}"], type: "Egress", rules: [
                "  egress:",
                "    - to:",
                "        - namespaceSelector:",
                "            matchLabels: {kubernetes.io/metadata.name: \(quote(gatewayNamespace))}",
                "          podSelector:",
                "            matchLabels: \(labels(gatewayLabels))",
            ] + portList(ports.application)))
        }
        return documents
    }

    private var gatewayDocuments: [[String]] {
        let gatewaySelector = ["  podSelector:", "    matchLabels: \(labels(gatewayLabels))"]
        var ingress = [
            "  ingress:",
            "    - from:",
            "        - namespaceSelector:",
            "            matchExpressions:",
            "              - key: kubernetes.io/metadata.name",
            "                operator: In",
            "                values: [\(namespaces.map(quote).joined(separator: ", "))]",
        ] + portList(ports.application)
        if let monitoringNamespace, let admin = ports.admin {
            ingress += [
                "    - from:",
                "        - namespaceSelector:",
                "            matchLabels: {kubernetes.io/metadata.name: \(quote(monitoringNamespace))}",
            ] + portList([admin])
        }
        var egress = ["  egress:", "    - to:"]
        let inside = podCIDRs + serviceCIDRs + blockedCIDRs
        for (everything, v4) in [("0.0.0.0/0", true), ("::/0", false)] {
            let except = inside.filter { $0.address.isIPv4 == v4 }.map { quote($0.description) }
            egress += ["        - ipBlock:", "            cidr: \(quote(everything))"]
            if !except.isEmpty { egress.append("            except: [\(except.joined(separator: ", "))]") }
        }
        egress += dnsRule
        if !nodeLocalDNS.isEmpty {
            egress.append("    - to:")
            egress += nodeLocalDNS.map { "        - ipBlock: {cidr: \(quote(CIDR(address: $0, prefixLength: $0.isIPv4 ? 32 : 128).description))}" }
            egress += ["      ports:", "        - {protocol: UDP, port: 53}", "        - {protocol: TCP, port: 53}"]
        }
        if !apiServerCIDRs.isEmpty {
            egress.append("    - to:")
            egress += apiServerCIDRs.map { "        - ipBlock: {cidr: \(quote($0.description))}" }
            egress += portList(apiServerPorts)
        }
        return [
            policy("corridor-gateway-ingress", gatewayNamespace, selector: gatewaySelector, type: "Ingress", rules: ingress),
            policy("corridor-gateway-egress", gatewayNamespace, selector: gatewaySelector, type: "Egress", rules: egress),
        ]
    }

    private func render(_ documents: [[String]]) -> String {
        documents.map { $0.joined(separator: "\n") + "\n" }.joined(separator: "---\n")
    }

    private func portList(_ ports: [Int]) -> [String] {
        ["      ports:"] + ports.map { "        - {protocol: TCP, port: \($0)}" }
    }

    /// DNS to the cluster DNS pods, UDP and TCP 53.
    private var dnsRule: [String] {
        [
            "    - to:",
            "        - namespaceSelector:",
            "            matchLabels: {kubernetes.io/metadata.name: \(quote(dnsNamespace))}",
            "          podSelector:",
            "            matchLabels: \(labels(dnsLabels))",
            "      ports:",
            "        - {protocol: UDP, port: 53}",
            "        - {protocol: TCP, port: 53}",
        ]
    }

    private func policy(_ name: String, _ namespace: String, selector: [String], type: String, rules: [String]) -> [String] {
        [
            "apiVersion: networking.k8s.io/v1",
            "kind: NetworkPolicy",
            "metadata:",
            "  name: \(name)",
            "  namespace: \(quote(namespace))",
            "  labels: {app.kubernetes.io/managed-by: corridor}",
            "spec:",
        ] + selector + ["  policyTypes: [\(type)]"] + rules
    }

    private func labels(_ pairs: [(String, String)]) -> String {
        "{" + pairs.map { "\(quote($0.0)): \(quote($0.1))" }.joined(separator: ", ") + "}"
    }

    /// Double-quoted YAML scalar (names and label values never need more than this).
    private func quote(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}
