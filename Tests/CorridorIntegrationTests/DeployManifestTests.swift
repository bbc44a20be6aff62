import Foundation
import Testing

/// deploy/: the base (a central gateway in Kubernetes mode) and overlays/node (a DaemonSet with
/// iptables capture) build with kustomize, are valid for Kubernetes 1.33 offline, least-privilege
/// and hardened; the ConfigMap's config and examples/cluster are ones `corridor check` accepts.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct DeployManifestTests {
    static let base = Repo.root.appendingPathComponent("deploy/base").path
    /// The Kubernetes objects of the base (corridor.yaml is the gateway's config, which kustomize
    /// turns into a ConfigMap).
    static var manifests: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [])
            .filter { $0.hasSuffix(".yaml") && $0 != "kustomization.yaml" && $0 != "corridor.yaml" }
            .sorted().map { "\(base)/\($0)" }
    }
    /// The gateway's config that the ConfigMap holds.
    static let config = "\(base)/corridor.yaml"
    static let examples = Repo.root.appendingPathComponent("examples/cluster").path
    static var clusterExamples: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: examples)) ?? []).filter { $0.hasSuffix(".yaml") }.sorted().map { "\(examples)/\($0)" }
    }
    static let structuralChecker = Repo.root.appendingPathComponent("../shared/k8s/tools/check_crd_structural.py").standardized.path
    /// The ClusterRole's rules, each as [apiGroups, resources, verbs] sorted.
    static let leastPrivilege: [[[String]]] = [
        [[""], ["pods"], ["get", "list", "watch"]],
        [["corridor.dev"], ["egresspolicies", "externalservices"], ["get", "list", "watch"]],
        [["corridor.dev"], ["egresspolicies/status", "externalservices/status"], ["get", "patch", "update"]],
    ]

    /// `kubectl kustomize` of a directory (relative to the repository), written to a file in `dir`.
    static func render(_ kustomization: String, into dir: TempDir) throws -> String {
        let result = try runCommand("kubectl", ["kustomize", Repo.root.appendingPathComponent(kustomization).path])
        guard result.status == 0 else { throw TestError.failed("kubectl kustomize \(kustomization): \(result.stdout)\(result.stderr)") }
        let file = dir.path(kustomization.replacingOccurrences(of: "/", with: "-") + ".yaml")
        try result.stdout.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    /// What the tests check in a rendered install, read with PyYAML. Container security settings
    /// are the effective ones (the pod's securityContext where the container sets none).
    static func facts(_ rendered: String) throws -> RenderedFacts {
        let result = try runCommand("python3", ["-c", """
            import json, sys, yaml
            docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
            workload = next(d for d in docs if d["kind"] in ("Deployment", "DaemonSet"))
            pod = workload["spec"]["template"]["spec"]
            podContext = pod.get("securityContext", {})
            def container(c):
                context = c.get("securityContext", {})
                caps = context.get("capabilities", {})
                return {"name": c["name"], "image": c["image"], "args": c.get("args", []),
                        "ports": {p["name"]: p["containerPort"] for p in c.get("ports", [])}, "add": sorted(caps.get("add", [])), "drop": caps.get("drop", []),
                        "runAsUser": context.get("runAsUser", podContext.get("runAsUser")),
                        "runAsNonRoot": context.get("runAsNonRoot", podContext.get("runAsNonRoot", False)),
                        "allowPrivilegeEscalation": context.get("allowPrivilegeEscalation", True),
                        "readOnlyRootFilesystem": context.get("readOnlyRootFilesystem", False)}
            accounts = [d for d in docs if d["kind"] == "ServiceAccount"]
            role = next(d for d in docs if d["kind"] == "ClusterRole")
            namespace = next(d for d in docs if d["kind"] == "Namespace")
            print(json.dumps({
                "kinds": sorted(d["kind"] for d in docs),
                "networkPolicies": sorted(d["metadata"]["name"] for d in docs if d["kind"] == "NetworkPolicy"),
                "workloadKind": workload["kind"],
                "podSecurity": namespace["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce", ""),
                "hostNetwork": pod.get("hostNetwork", False),
                "dnsPolicy": pod.get("dnsPolicy", "ClusterFirst"),
                "toleratesEverything": {"operator": "Exists"} in pod.get("tolerations", []),
                "tokenMounted": all(d.get("automountServiceAccountToken") is not False for d in accounts + [pod]),
                "rbacRules": [[sorted(r["apiGroups"]), sorted(r["resources"]), sorted(r["verbs"])] for r in role["rules"]],
                "initContainers": [container(c) for c in pod.get("initContainers", [])],
                "containers": [container(c) for c in pod["containers"]],
            }))
            """, rendered])
        guard result.status == 0 else { throw TestError.failed("cannot read \(rendered): \(result.stderr)") }
        return try JSONDecoder().decode(RenderedFacts.self, from: Data(result.stdout.utf8))
    }

    @Test func manifestsValidateOffline() throws {
        #expect(Self.manifests.count >= 7)
        let result = try runCommand("kubernetes-validate", ["--strict", "-k", "1.33.0"] + Self.manifests)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.components(separatedBy: "passed for resource").count - 1 == 9)
    }

    @Test func theConfigIsOneThatCorridorAccepts() throws {
        let config = Self.config
        let check = try runCommand(Repo.corridorBinary.path, ["check", "--config", config])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        #expect(check.stdout.contains("admin 0.0.0.0:15000"), "probes reach the admin listener: \(check.stdout)")
        #expect(check.stdout.contains("\n0 ExternalService(s)") && check.stdout.contains("\n0 EgressPolicy(ies)"),
                "Kubernetes mode: the policy objects come from the API, not the ConfigMap: \(check.stdout)")
    }

    @Test func theGatewayRunsHardenedWithLeastPrivilege() throws {
        let deployment = try String(contentsOfFile: "\(Self.base)/deployment.yaml", encoding: .utf8)
        for needle in ["runAsNonRoot: true", "readOnlyRootFilesystem: true", "allowPrivilegeEscalation: false",
                       "capabilities: {drop: [\"ALL\"]}", "path: /readyz", "path: /healthz", "seccompProfile: {type: RuntimeDefault}"] {
            #expect(deployment.contains(needle), "deployment.yaml lacks \(needle)")
        }
        let rbac = try String(contentsOfFile: "\(Self.base)/rbac.yaml", encoding: .utf8)
        #expect(!rbac.contains("\"*\""), "no wildcard permissions")
        #expect(!rbac.contains("create") && !rbac.contains("delete"), "read, plus status updates only")
    }

    @Test func theGatewayRunsInKubernetesMode() throws {
        let dir = try TempDir()
        let facts = try Self.facts(Self.render("deploy/base", into: dir))
        #expect(facts.workloadKind == "Deployment")
        #expect(facts.containers.count == 1)
        let gateway = try #require(facts.containers.first)
        #expect(gateway.args.contains("--kubernetes"), "\(gateway.args)")
        #expect(gateway.args == ["run", "--kubernetes", "--config", "/etc/corridor/corridor.yaml"], "\(gateway.args)")
        #expect(gateway.add.isEmpty && gateway.drop == ["ALL"] && gateway.runAsNonRoot, "\(gateway)")
        #expect(facts.podSecurity == "restricted")
    }

    @Test(arguments: [("deploy/base", 12), ("deploy/overlays/node", 8)])
    func theKustomizationsBuildAndValidateOffline(kustomization: String, resources: Int) throws {
        let dir = try TempDir()
        let rendered = try Self.render(kustomization, into: dir)
        let validation = try runCommand("kubernetes-validate", ["--strict", "-k", "1.33.0", rendered])
        #expect(validation.status == 0, "\(validation.stdout)\(validation.stderr)")
        #expect(validation.stdout.components(separatedBy: "passed for resource").count - 1 == resources, "\(validation.stdout)")
        let structural = try runCommand("python3", [Self.structuralChecker, rendered])
        #expect(structural.status == 0, "\(structural.stdout)\(structural.stderr)")
        #expect(structural.stdout.contains("externalservices.corridor.dev") && structural.stdout.contains("egresspolicies.corridor.dev"),
                "both CRDs are in the install: \(structural.stdout)")
        let facts = try Self.facts(rendered)
        #expect(facts.rbacRules == Self.leastPrivilege, "\(facts.rbacRules)")
        #expect(facts.tokenMounted, "the gateway reads the API with its service account token")
    }

    @Test func theNodeOverlayCapturesFromAnInitContainerWithOnlyNetAdminAndNetRaw() throws {
        let dir = try TempDir()
        let facts = try Self.facts(Self.render("deploy/overlays/node", into: dir))
        #expect(facts.workloadKind == "DaemonSet")
        for kind in ["Deployment", "PodDisruptionBudget", "Service"] {
            #expect(!facts.kinds.contains(kind), "the node overlay drops the base's \(kind)")
        }
        #expect(facts.hostNetwork && facts.dnsPolicy == "ClusterFirstWithHostNet" && facts.toleratesEverything)
        #expect(facts.podSecurity == "privileged", "host network and NET_ADMIN are outside the restricted level")

        #expect(facts.initContainers.count == 1)
        let capture = try #require(facts.initContainers.first)
        #expect(capture.add == ["NET_ADMIN", "NET_RAW"] && capture.drop == ["ALL"], "\(capture)")
        #expect(capture.runAsUser == 0 && !capture.allowPrivilegeEscalation && capture.readOnlyRootFilesystem, "\(capture)")
        #expect(Array(capture.args.prefix(3)) == ["iptables", "--topology", "node"] && capture.args.last == "--apply", "\(capture.args)")

        #expect(facts.containers.count == 1)
        let gateway = try #require(facts.containers.first)
        #expect(gateway.add.isEmpty && gateway.drop == ["ALL"], "\(gateway)")
        #expect(gateway.runAsNonRoot && gateway.runAsUser != 0 && !gateway.allowPrivilegeEscalation && gateway.readOnlyRootFilesystem, "\(gateway)")
        #expect(gateway.args == ["run", "--kubernetes", "--node-name", "$(NODE_NAME)", "--config", "/etc/corridor/corridor.yaml"], "\(gateway.args)")

        // The init container's flags are ones `corridor iptables` takes: printed here instead of applied.
        let config = Self.config
        let printing = capture.args.filter { $0 != "--apply" }.map { $0 == "/etc/corridor/corridor.yaml" ? config : $0 }
        let rules = try runCommand(Repo.corridorBinary.path, printing)
        #expect(rules.status == 0, "\(rules.stdout)\(rules.stderr)")
        #expect(rules.stdout.contains("-A PREROUTING -s 10.244.0.0/16 -j CORRIDOR-CAPTURE"), "\(rules.stdout)")
        #expect(rules.stdout.contains("REDIRECT --to-ports 15443"), "\(rules.stdout)")
    }

    /// The ports the gateway listens on agree everywhere: its config (corridor.yaml), the
    /// containers of both installs, and `corridor netpol` (by default, and reading the config).
    @Test func theListenerPortsAgreeAcrossConfigManifestsAndNetpol() throws {
        let dir = try TempDir()
        let standard = ["tls": 15443, "connect": 13128, "http": 15080, "admin": 15000]
        for kustomization in ["deploy/base", "deploy/overlays/node"] {
            let facts = try Self.facts(Self.render(kustomization, into: dir))
            #expect(facts.containers.first?.ports == standard, "\(kustomization): \(facts.containers.first?.ports ?? [:])")
        }
        let check = try runCommand(Repo.corridorBinary.path, ["check", "--config", Self.config])
        for (name, port) in standard {
            #expect(check.stdout.contains("\(name) 0.0.0.0:\(port)"), "corridor.yaml listens with \(name) on \(port): \(check.stdout)")
        }
        let arguments = ["netpol", "--namespaces", "apps", "--pod-cidr", "10.244.0.0/16", "--service-cidr", "10.96.0.0/12",
                         "--api-server", "172.18.0.2/32"]
        let byDefault = try runCommand(Repo.corridorBinary.path, arguments)
        let fromConfig = try runCommand(Repo.corridorBinary.path, arguments + ["--config", Self.config])
        #expect(byDefault.status == 0 && fromConfig.status == 0, "\(byDefault.stderr)\(fromConfig.stderr)")
        #expect(byDefault.stdout == fromConfig.stdout, "netpol's defaults are the ports deploy/ runs")
        for port in [15443, 13128, 15080] {
            #expect(byDefault.stdout.contains("- {protocol: TCP, port: \(port)}"), "applications may reach port \(port)")
        }
    }

    /// deploy/base/networkpolicy.yaml is exactly what `corridor netpol --gateway-only` prints for
    /// the command its header names, so the shipped policy and the generator cannot drift.
    @Test func theShippedGatewayNetworkPolicyIsTheGeneratorsOutput() throws {
        let text = try String(contentsOfFile: "\(Self.base)/networkpolicy.yaml", encoding: .utf8)
        let command = try #require(text.split(separator: "\n").first { $0.hasPrefix("#   corridor netpol ") })
        var arguments = command.dropFirst("#   corridor ".count).split(separator: " ").map(String.init)
        arguments = arguments.map { $0 == "deploy/base/corridor.yaml" ? Self.config : $0 }
        #expect(arguments.contains("--gateway-only") && arguments.contains("--api-server"), "\(arguments)")
        let generated = try runCommand(Repo.corridorBinary.path, arguments)
        #expect(generated.status == 0, "\(generated.stderr)")
        let body = text.split(separator: "\n", omittingEmptySubsequences: false).drop { $0.hasPrefix("#") }.joined(separator: "\n")
        #expect(body == generated.stdout, "regenerate deploy/base/networkpolicy.yaml with the command in its header")

        let dir = try TempDir()
        let base = try Self.facts(Self.render("deploy/base", into: dir))
        #expect(base.networkPolicies == ["corridor-gateway-egress", "corridor-gateway-ingress"], "\(base.networkPolicies)")
        let node = try Self.facts(Self.render("deploy/overlays/node", into: dir))
        #expect(node.networkPolicies.isEmpty, "NetworkPolicies do not apply to host-network pods: \(node.networkPolicies)")
    }

    /// The installs name the image kustomization.yaml sets once, at the version VERSION names.
    @Test func theInstallsRunTheImageOfThisVersion() throws {
        let version = try String(contentsOf: Repo.root.appendingPathComponent("VERSION"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let dir = try TempDir()
        let base = try Self.facts(Self.render("deploy/base", into: dir))
        #expect(base.containers.map(\.image) == ["localhost/corridor:\(version)"])
        let node = try Self.facts(Self.render("deploy/overlays/node", into: dir))
        #expect(node.containers.map(\.image) == ["localhost/corridor:\(version)"])
        #expect(node.initContainers.map(\.image) == ["localhost/corridor-capture:\(version)"])
    }

    /// checkov, an independent manifest scanner, over both rendered installs: nothing fails, and
    /// what it skips is exactly the findings the manifests justify next to the field.
    @Test(arguments: [
        ("deploy/base", ["CKV_K8S_11", "CKV_K8S_15", "CKV_K8S_38", "CKV_K8S_43"]),
        ("deploy/overlays/node", ["CKV2_K8S_6", "CKV_K8S_11", "CKV_K8S_15", "CKV_K8S_19", "CKV_K8S_25", "CKV_K8S_38", "CKV_K8S_43"]),
    ])
    func checkovFindsNothingUnjustified(kustomization: String, justified: [String]) throws {
        let dir = try TempDir()
        let rendered = try Self.render(kustomization, into: dir)
        // --skip-download and BC_SKIP_MAPPING: checkov asks nothing of any server.
        let result = try runCommand("/usr/bin/env", ["BC_SKIP_MAPPING=TRUE", "checkov", "--skip-download", "--framework", "kubernetes",
                                                     "--output", "json", "-f", rendered], timeout: 300)
        let output = dir.path("checkov.json")
        try result.stdout.write(toFile: output, atomically: true, encoding: .utf8)
        let summary = try runCommand("python3", ["-c", """
            import json, sys
            report = json.load(open(sys.argv[1]))
            report = report if isinstance(report, dict) else report[0]
            failed = [c["check_id"] + " " + c["resource"] for c in report["results"]["failed_checks"]]
            skipped = sorted(c["check_id"] for c in report["results"]["skipped_checks"])
            print(json.dumps({"passed": report["summary"]["passed"], "failed": failed, "skipped": skipped}))
            """, output])
        #expect(summary.status == 0, "checkov printed no report: \(summary.stderr)\(result.stdout.prefix(2000))\(result.stderr.suffix(2000))")
        struct Summary: Decodable { var passed: Int; var failed: [String]; var skipped: [String] }
        let report = try JSONDecoder().decode(Summary.self, from: Data(summary.stdout.utf8))
        #expect(report.failed.isEmpty, "\(kustomization): \(report.failed)")
        #expect(report.skipped == justified, "\(kustomization): \(report.skipped)")
        #expect(report.passed > 50, "checkov ran its Kubernetes checks: \(report.passed) passed")
    }

    @Test func theClusterExamplesPassCheckAndTheCRDSchemas() throws {
        let examples = Self.clusterExamples
        #expect(!examples.isEmpty)
        let schema = try runCommand("python3", [Repo.support.appendingPathComponent("validate_cr.py").path,
                                                Repo.root.appendingPathComponent("deploy/crds").path] + examples)
        #expect(schema.status == 0, "\(schema.stdout)\(schema.stderr)")
        let services = schema.stdout.components(separatedBy: ": ExternalService/").count - 1
        let policies = schema.stdout.components(separatedBy: ": EgressPolicy/").count - 1
        #expect(services > 0 && policies > 0, "\(schema.stdout)")

        // In file mode every kind is allowed: the same objects after corridor.yaml's GatewayConfig.
        let dir = try TempDir()
        var text = try String(contentsOfFile: Self.config, encoding: .utf8)
        for file in examples {
            let objects = try String(contentsOfFile: file, encoding: .utf8)
            text += "\n---\n" + objects
        }
        let config = dir.path("cluster.yaml")
        try text.write(toFile: config, atomically: true, encoding: .utf8)
        let check = try runCommand(Repo.corridorBinary.path, ["check", "--config", config])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        #expect(check.stdout.contains("\n\(services) ExternalService(s)") && check.stdout.contains("\n\(policies) EgressPolicy(ies)"),
                "\(check.stdout)")
        #expect(check.stdout.contains("\n0 Workload(s)"), "examples/cluster holds ExternalService and EgressPolicy objects only")
    }
}

/// The parts of a rendered install that DeployManifestTests checks (see `DeployManifestTests.facts`).
struct RenderedFacts: Decodable {
    struct Container: Decodable {
        var name: String
        var image: String
        var ports: [String: Int]
        var args: [String]
        var add: [String]
        var drop: [String]
        var runAsUser: Int?
        var runAsNonRoot: Bool
        var allowPrivilegeEscalation: Bool
        var readOnlyRootFilesystem: Bool
    }
    var kinds: [String]
    var networkPolicies: [String]
    var workloadKind: String
    var podSecurity: String
    var hostNetwork: Bool
    var dnsPolicy: String
    var toleratesEverything: Bool
    var tokenMounted: Bool
    var rbacRules: [[[String]]]
    var initContainers: [Container]
    var containers: [Container]
}
