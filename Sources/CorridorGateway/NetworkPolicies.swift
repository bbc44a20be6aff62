import CorridorPolicy

/// The NetworkPolicies that close the bypass around a central gateway: application namespaces may
/// send only DNS to the cluster DNS and connections to the gateway; the gateway may reach the
/// outside but not the cluster's pod and service ranges nor the metadata address.
/// `corridor netpol` prints them as multi-document YAML for `kubectl apply -f -`.
public struct NetworkPolicies: Sendable {
    public var namespaces: [String]
    public var gatewayNamespace: String
    public var gatewayLabels: [(String, String)]
    /// TCP ports of the gateway's Service that applications may use (tls, connect, http listeners).
    public var gatewayPorts: [Int]
    public var dnsNamespace: String
    public var dnsLabels: [(String, String)]
    public var podCIDRs: [CIDR]
    public var serviceCIDRs: [CIDR]
    /// Never reachable from the gateway, whatever the policy says.
    public var blockedCIDRs: [CIDR]

    public init(namespaces: [String], gatewayNamespace: String, gatewayLabels: [(String, String)], gatewayPorts: [Int],
                dnsNamespace: String = "kube-system", dnsLabels: [(String, String)] = [("k8s-app", "kube-dns")],
                podCIDRs: [CIDR], serviceCIDRs: [CIDR],
                blockedCIDRs: [CIDR] = [try! CIDR(parsing: "169.254.169.254/32"), try! CIDR(parsing: "fd00:ec2::254/128")]) {
        self.namespaces = namespaces
        self.gatewayNamespace = gatewayNamespace
        self.gatewayLabels = gatewayLabels
        self.gatewayPorts = gatewayPorts
        self.dnsNamespace = dnsNamespace
        self.dnsLabels = dnsLabels
        self.podCIDRs = podCIDRs
        self.serviceCIDRs = serviceCIDRs
        self.blockedCIDRs = blockedCIDRs
    }

    public var yaml: String {
        var documents: [[String]] = []
        for namespace in namespaces {
            documents.append(policy("corridor-default-deny-egress", namespace, selector: ["  podSelector: {}"], egress: ["  egress: []"]))
            documents.append(policy("corridor-allow-dns", namespace, selector: ["  podSelector: {}"], egress: ["  egress:"] + dnsRule))
            documents.append(policy("corridor-allow-gateway", namespace, selector: ["  podSelector: {}"], egress: [
                "  egress:",
                "    - to:",
                "        - namespaceSelector:",
                "            matchLabels: {kubernetes.io/metadata.name: \(quote(gatewayNamespace))}",
                "          podSelector:",
                "            matchLabels: \(labels(gatewayLabels))",
                "      ports:",
            ] + gatewayPorts.map { "        - {protocol: TCP, port: \($0)}" }))
        }
        var outside = ["  egress:", "    - to:"]
        let inside = podCIDRs + serviceCIDRs + blockedCIDRs
        for (everything, v4) in [("0.0.0.0/0", true), ("::/0", false)] {
            let except = inside.filter { $0.address.isIPv4 == v4 }.map { quote($0.description) }
            outside += ["        - ipBlock:", "            cidr: \(quote(everything))"]
            if !except.isEmpty { outside.append("            except: [\(except.joined(separator: ", "))]") }
        }
        documents.append(policy("corridor-gateway-egress", gatewayNamespace,
                                selector: ["  podSelector:", "    matchLabels: \(labels(gatewayLabels))"], egress: outside + dnsRule))
        return documents.map { $0.joined(separator: "\n") + "\n" }.joined(separator: "---\n")
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

    private func policy(_ name: String, _ namespace: String, selector: [String], egress: [String]) -> [String] {
        [
            "apiVersion: networking.k8s.io/v1",
            "kind: NetworkPolicy",
            "metadata:",
            "  name: \(name)",
            "  namespace: \(quote(namespace))",
            "  labels: {app.kubernetes.io/managed-by: corridor}",
            "spec:",
        ] + selector + ["  policyTypes: [Egress]"] + egress
    }

    private func labels(_ pairs: [(String, String)]) -> String {
        "{" + pairs.map { "\(quote($0.0)): \(quote($0.1))" }.joined(separator: ", ") + "}"
    }

    /// Double-quoted YAML scalar (names and label values never need more than this).
    private func quote(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}
