import CorridorGateway
import CorridorPolicy
import Foundation
import Testing

/// `corridor iptables` and `corridor netpol`: what they print.
@Suite(.timeLimit(.minutes(2)))
struct CaptureRulesTests {
    func rules(_ topology: CaptureRules.Topology, ports: [Int] = [443, 8443], ipv6: Bool = false) throws -> CaptureRules {
        CaptureRules(topology: topology, podCIDRs: [try CIDR(parsing: "10.244.0.0/16"), try CIDR(parsing: "fd00:10:244::/56")],
                     clusterCIDRs: [try CIDR(parsing: "10.244.0.0/16"), try CIDR(parsing: "10.96.0.0/12")],
                     dnsServers: [IPAddress(parsing: "10.96.0.10")!], gatewayUID: 1337, tlsListenerPort: 15443,
                     capturedPorts: ports, ipv6: ipv6)
    }

    @Test func nodeTopologyRedirectsRegisteredPortsAndRefusesTheRest() throws {
        let text = try rules(.node).restoreText
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains("-A CORRIDOR-CAPTURE -p tcp -m multiport --dports 443,8443 -j REDIRECT --to-ports 15443"))
        #expect(lines.contains("-A CORRIDOR-CAPTURE -d 10.96.0.0/12 -j RETURN"))
        #expect(lines.contains("-A CORRIDOR-EGRESS -d 10.96.0.10 -p udp -m udp --dport 53 -j RETURN"))
        #expect(lines.contains("-A CORRIDOR-EGRESS -p tcp -j REJECT --reject-with tcp-reset"))
        #expect(lines.last(where: { $0.hasPrefix("-A CORRIDOR-EGRESS") }) == "-A CORRIDOR-EGRESS -j REJECT --reject-with icmp-port-unreachable")
        #expect(lines.contains("-A PREROUTING -s 10.244.0.0/16 -j CORRIDOR-CAPTURE"))
        #expect(lines.contains("-A FORWARD -s 10.244.0.0/16 -j CORRIDOR-EGRESS"))
        #expect(!text.contains("fd00"), "IPv6 ranges belong in the ip6tables rules")
        // The refusals come after every exception.
        let egress = lines.filter { $0.hasPrefix("-A CORRIDOR-EGRESS") }
        #expect(egress.firstIndex { $0.contains("REJECT") }! > egress.lastIndex { $0.contains("RETURN") }!)
    }

    @Test func ipv6RulesUseTheIPv6RangesAndRejectType() throws {
        let text = try rules(.node, ipv6: true).restoreText
        #expect(text.contains("-A PREROUTING -s fd00:10:244::/56 -j CORRIDOR-CAPTURE"))
        #expect(text.contains("--reject-with icmp6-port-unreachable"))
        #expect(!text.contains("10.244.0.0/16"))
    }

    /// Found in review: an IPv4 run given IPv6 ranges dropped them without a word, and an
    /// `--ipv6` run with no IPv6 pod CIDR printed chains nothing jumps to, and exited 0.
    @Test func aRunOfOneFamilySaysWhatItLeavesOutAndRefusesToCaptureNothing() throws {
        #expect(try rules(.node).otherFamily == ["--pod-cidr fd00:10:244::/56"])
        #expect(try rules(.node).emptyProblem == nil && rules(.node, ipv6: true).emptyProblem == nil)
        let v4Only = CaptureRules(topology: .node, podCIDRs: [try CIDR(parsing: "10.244.0.0/16")], clusterCIDRs: [], dnsServers: [],
                                  gatewayUID: 0, tlsListenerPort: 15443, capturedPorts: [443], ipv6: true)
        #expect(v4Only.emptyProblem?.contains("no --pod-cidr is IPv6") ?? false)
        let config = Repo.root.appendingPathComponent("examples/quickstart.yaml").path
        let empty = try runCommand(Repo.corridorBinary.path, ["iptables", "--config", config, "--topology", "node", "--pod-cidr", "10.244.0.0/16", "--ipv6"])
        #expect(empty.status != 0 && empty.stderr.contains("no --pod-cidr is IPv6"), "\(empty.stdout)\(empty.stderr)")
        let mixed = try runCommand(Repo.corridorBinary.path, ["iptables", "--config", config, "--topology", "node",
                                                              "--pod-cidr", "10.244.0.0/16,fd00:10:244::/56"])
        #expect(mixed.status == 0 && mixed.stdout.contains("-A PREROUTING -s 10.244.0.0/16"))
        #expect(mixed.stderr.contains("--pod-cidr fd00:10:244::/56 is of the other family and needs a run with --ipv6"), "\(mixed.stderr)")
        // A pod's IPv6 egress is nobody's unless a second run installs it.
        let pod = try runCommand(Repo.corridorBinary.path, ["iptables", "--config", config, "--topology", "pod"])
        #expect(pod.status == 0 && pod.stderr.contains("install the --ipv6 rules too"), "\(pod.stderr)")
        let pod6 = try runCommand(Repo.corridorBinary.path, ["iptables", "--config", config, "--topology", "pod", "--ipv6"])
        #expect(pod6.status == 0 && !pod6.stderr.contains("install the --ipv6 rules too"), "\(pod6.stderr)")
    }

    @Test func podTopologyExemptsTheGatewayUserAndLoopback() throws {
        let lines = try rules(.pod).restoreText.split(separator: "\n").map(String.init)
        #expect(lines.contains("-A CORRIDOR-CAPTURE -m owner --uid-owner 1337 -j RETURN"))
        #expect(lines.contains("-A CORRIDOR-CAPTURE -d 127.0.0.0/8 -j RETURN"))
        #expect(lines.contains("-A CORRIDOR-EGRESS -m owner --uid-owner 1337 -j RETURN"))
        #expect(lines.contains("-A CORRIDOR-EGRESS -d 127.0.0.0/8 -j RETURN"), "redirected connections reach the filter table with a loopback destination")
        #expect(lines.contains("-A OUTPUT -p tcp -j CORRIDOR-CAPTURE"))
        #expect(lines.contains("-A OUTPUT -j CORRIDOR-EGRESS"))
    }

    @Test func moreThanFifteenPortsAreSplitAcrossMultiportRules() throws {
        let text = try rules(.node, ports: Array(9000..<9020)).restoreText
        #expect(text.components(separatedBy: "--dports").count - 1 == 2)
    }

    @Test func capturedPortsComeFromTheRegisteredServices() throws {
        let yaml = """
        apiVersion: corridor.dev/v1alpha1
        kind: ExternalService
        metadata: {name: a}
        spec: {hosts: [a.test], ports: [{number: 8443, protocol: TLS}, {number: 9443, protocol: TLS}]}
        """
        #expect(CaptureRules.ports(for: try ConfigLoader.load(yaml: yaml, file: "t.yaml")) == [443, 8443, 9443])
    }
}

@Suite(.timeLimit(.minutes(2)))
struct NetPolTests {
    @Test func generatedPoliciesValidateOfflineAgainstKubernetesSchemas() throws {
        let dir = try TempDir()
        let file = dir.path("netpol.yaml")
        let result = try runCommand(Repo.corridorBinary.path, ["netpol", "--namespaces", "payments,shop", "--pod-cidr", "10.244.0.0/16,fd00:10:244::/56",
                                                               "--service-cidr", "10.96.0.0/12", "--api-server", "172.18.0.3/32"])
        #expect(result.status == 0, "\(result.stderr)")
        try result.stdout.write(toFile: file, atomically: true, encoding: .utf8)
        let validation = try runCommand("kubernetes-validate", ["--strict", "-k", "1.33.0", file])
        #expect(validation.status == 0, "\(validation.stdout)\(validation.stderr)")
        #expect(validation.stdout.components(separatedBy: "passed for resource").count - 1 == 12)
        // The validator does reject a broken NetworkPolicy (so the check above means something).
        let broken = try runCommand("kubernetes-validate", ["--strict", "-k", "1.33.0",
                                                            Repo.root.appendingPathComponent("../shared/k8s/manifests-invalid/np-wrongtype.yaml").standardized.path])
        #expect(broken.status != 0)

        let text = result.stdout
        #expect(text.contains("name: corridor-default-deny-egress\n  namespace: \"payments\""))
        #expect(text.contains("name: corridor-default-deny-egress\n  namespace: \"shop\""))
        #expect(text.contains(#"except: ["10.244.0.0/16", "10.96.0.0/12", "169.254.0.0/16", "100.100.100.200/32", "168.63.129.16/32"]"#))
        #expect(text.contains(#"except: ["fd00:10:244::/56", "fe80::/10", "fd00:ec2::/64"]"#))
        #expect(text.contains("- {protocol: UDP, port: 53}"))
        // Link-local is out, but for DNS to NodeLocal DNSCache.
        #expect(text.contains("- ipBlock: {cidr: \"169.254.20.10/32\"}\n      ports:\n        - {protocol: UDP, port: 53}\n        - {protocol: TCP, port: 53}"), "\(text)")
        #expect(text.contains("- {protocol: TCP, port: 15443}"))
        // The http listener too: TLS origination through the central gateway.
        #expect(text.contains("- {protocol: TCP, port: 15080}"))
        // The gateway: in from the application namespaces and monitoring, out to the API server.
        #expect(text.contains("name: corridor-gateway-ingress") && text.contains(#"values: ["payments", "shop"]"#))
        #expect(text.contains(#"matchLabels: {kubernetes.io/metadata.name: "monitoring"}"#) && text.contains("- {protocol: TCP, port: 15000}"))
        #expect(text.contains(#"- ipBlock: {cidr: "172.18.0.3/32"}"#) && text.contains("- {protocol: TCP, port: 6443}"))
    }

    /// The admission policy, evaluated with a real CEL implementation against the requests a
    /// namespace editor would make to undo the lockdown, and those it must still let through.
    @Test func theAdmissionPolicyKeepsTheLockdownFromBeingUndone() throws {
        let dir = try TempDir()
        let result = try runCommand(Repo.corridorBinary.path, ["netpol", "--namespaces", "payments,shop", "--pod-cidr", "10.244.0.0/16",
                                                               "--service-cidr", "10.96.0.0/12", "--no-api-server",
                                                               "--admission-exempt-users", "system:serviceaccount:argocd:argocd-application-controller"])
        #expect(result.status == 0, "\(result.stderr)")
        try result.stdout.write(toFile: dir.path("netpol.yaml"), atomically: true, encoding: .utf8)
        let tenant = ["user": "alice", "groups": ["system:authenticated"]] as [String: Any]
        let openEgress: [String: Any] = ["spec": ["podSelector": [:], "policyTypes": ["Egress"], "egress": [[:]]]]
        let defaultDeny: [String: Any] = ["spec": ["podSelector": [:], "policyTypes": ["Egress"]]]
        func request(_ namespace: String, _ operation: String, _ resource: String, by who: [String: Any] = tenant,
                     object: [String: Any]? = nil, old: [String: Any]? = nil, namespace namespaceObject: [String: Any]? = nil) -> [String: Any] {
            who.merging(["namespace": namespace, "operation": operation, "resource": resource,
                         "object": object ?? NSNull(), "oldObject": old ?? NSNull(), "namespaceObject": namespaceObject ?? NSNull()]) { $1 }
        }
        let cases: [(request: [String: Any], expected: String)] = [
            (request("payments", "CREATE", "networkpolicies", object: openEgress), "deny: "),
            (request("payments", "CREATE", "networkpolicies", object: ["spec": ["podSelector": [:], "egress": [["to": [["ipBlock": ["cidr": "0.0.0.0/0"]]]]]]]), "deny: "),
            (request("payments", "DELETE", "networkpolicies", old: defaultDeny), "deny: "),
            (request("payments", "UPDATE", "networkpolicies", object: ["spec": ["podSelector": [:], "policyTypes": ["Ingress"]]], old: defaultDeny), "deny: "),
            (request("shop", "CREATE", "pods", object: ["spec": ["hostNetwork": true, "containers": []]]), "deny: "),
            (request("shop", "CREATE", "pods", object: ["spec": ["hostPID": true, "containers": [["name": "a"]]]]), "deny: "),
            (request("shop", "CREATE", "pods", object: ["spec": ["containers": [["name": "a"], ["name": "b", "securityContext": ["privileged": true]]]]]), "deny: "),
            (request("shop", "CREATE", "pods", object: ["spec": ["containers": [["name": "a"]], "initContainers": [["name": "i", "securityContext": ["privileged": true]]]]]), "deny: "),
            // A Deployment's pods are created by its controller, no more exempt than the editor.
            (request("shop", "CREATE", "pods", by: ["user": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]],
                     object: ["spec": ["hostNetwork": true, "containers": []]]), "deny: "),
            // The namespace controller deletes what a namespace being deleted holds; not before.
            (request("payments", "DELETE", "networkpolicies", by: ["user": "system:serviceaccount:kube-system:namespace-controller", "groups": ["system:serviceaccounts"]],
                     old: defaultDeny, namespace: ["metadata": ["name": "payments", "deletionTimestamp": "2026-12-07T23:00:00Z"]]), "admit"),
            (request("payments", "DELETE", "networkpolicies", by: ["user": "system:serviceaccount:kube-system:namespace-controller", "groups": ["system:serviceaccounts"]],
                     old: defaultDeny), "deny: "),
            // Still free: ingress-only policies, ordinary pods, other namespaces.
            (request("payments", "CREATE", "networkpolicies", object: ["spec": ["podSelector": [:], "policyTypes": ["Ingress"], "ingress": [[:]]]]), "admit"),
            (request("payments", "DELETE", "networkpolicies", old: ["spec": ["podSelector": [:], "policyTypes": ["Ingress"]]]), "admit"),
            (request("shop", "CREATE", "pods", object: ["spec": ["containers": [["name": "a", "securityContext": ["privileged": false]]]]]), "admit"),
            (request("other", "CREATE", "networkpolicies", object: openEgress), "not covered"),
            // Whoever applies corridor netpol's output.
            (request("payments", "UPDATE", "networkpolicies", by: ["user": "root", "groups": ["system:masters"]], object: defaultDeny, old: defaultDeny), "exempt"),
            (request("payments", "CREATE", "networkpolicies", by: ["user": "system:serviceaccount:argocd:argocd-application-controller", "groups": NSNull()],
                     object: openEgress), "exempt"),
        ]
        let json = try JSONSerialization.data(withJSONObject: cases.map(\.request))
        try json.write(to: dir.url.appendingPathComponent("cases.json"))
        let evaluated = try runCommand("python3", [Repo.support.appendingPathComponent("admission_policy_eval.py").path,
                                                   dir.path("netpol.yaml"), dir.path("cases.json")])
        #expect(evaluated.status == 0, "\(evaluated.stderr)")
        let verdicts = try #require(try JSONSerialization.jsonObject(with: Data(evaluated.stdout.utf8)) as? [String])
        #expect(verdicts.count == cases.count)
        for (verdict, expected) in zip(verdicts, cases.map(\.expected)) {
            #expect(verdict.hasPrefix(expected), "expected \(expected), got \(verdict)")
            #expect(!verdict.contains("evaluation error"), "\(verdict)")
        }
        #expect(verdicts[0].contains("only by user system:serviceaccount:argocd:argocd-application-controller, group system:masters, group kubeadm:cluster-admins"),
                "\(verdicts[0])")
        #expect(result.stderr.contains("only user system:serviceaccount:argocd:argocd-application-controller, group system:masters, group kubeadm:cluster-admins may"),
                "who stays exempt is said: \(result.stderr)")

        let without = try runCommand(Repo.corridorBinary.path, ["netpol", "--namespaces", "payments", "--pod-cidr", "10.244.0.0/16",
                                                                "--service-cidr", "10.96.0.0/12", "--no-api-server", "--no-admission-policy"])
        #expect(without.status == 0 && !without.stdout.contains("ValidatingAdmissionPolicy"))
        let quoted = try runCommand(Repo.corridorBinary.path, ["netpol", "--namespaces", "payments", "--pod-cidr", "10.244.0.0/16",
                                                               "--service-cidr", "10.96.0.0/12", "--no-api-server", "--admission-exempt-groups", "ops'team"])
        #expect(quoted.status == 2 && quoted.stderr.contains("--admission-exempt-groups: 'ops'team' may hold only"), "\(quoted.stderr)")
    }

    @Test func theAPIServerMustBeNamedOrFileModeSaid() throws {
        let base = ["netpol", "--namespaces", "a", "--pod-cidr", "10.244.0.0/16", "--service-cidr", "10.96.0.0/12"]
        let missing = try runCommand(Repo.corridorBinary.path, base)
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("--api-server") && missing.stderr.contains("--no-api-server"), "\(missing.stderr)")
        let fileMode = try runCommand(Repo.corridorBinary.path, base + ["--no-api-server"])
        #expect(fileMode.status == 0, "\(fileMode.stderr)")
        #expect(!fileMode.stdout.contains("6443"), "no API server rule in file mode")
        let both = try runCommand(Repo.corridorBinary.path, base + ["--no-api-server", "--api-server", "10.0.0.1/32"])
        #expect(both.status != 0 && both.stderr.contains("contradict"), "\(both.stderr)")
    }

    @Test func badArgumentsAreRefusedWithTheFlagNamed() throws {
        let result = try runCommand(Repo.corridorBinary.path, ["netpol", "--namespaces", "Payments", "--pod-cidr", "10.0.0.0/8", "--service-cidr", "10.96.0.0/12",
                                                               "--no-api-server"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("--namespaces: 'Payments' is not a namespace name"))
        let cidr = try runCommand(Repo.corridorBinary.path, ["netpol", "--namespaces", "a", "--pod-cidr", "10.0.0.1/8", "--service-cidr", "10.96.0.0/12",
                                                             "--no-api-server"])
        #expect(cidr.stderr.contains("--pod-cidr: '10.0.0.1/8' is not a CIDR"))
    }
}
