import Foundation
import Testing

/// The CRDs in deploy/crds: structural, valid for Kubernetes 1.33 offline, and they accept and
/// reject the same objects as the file-mode validator (`corridor check`).
@Suite(.serialized, .timeLimit(.minutes(2)))
struct CRDTests {
    static let crdDir = Repo.root.appendingPathComponent("deploy/crds").path
    static var crdFiles: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: crdDir)) ?? []).filter { $0.hasSuffix(".yaml") && $0 != "kustomization.yaml" }.sorted()
            .map { "\(crdDir)/\($0)" }
    }

    @Test func crdsAreStructuralAndValidOffline() throws {
        #expect(Self.crdFiles.count == 2)
        let structural = try runCommand("python3", [Repo.root.appendingPathComponent("../shared/k8s/tools/check_crd_structural.py").standardized.path]
                                        + Self.crdFiles)
        #expect(structural.status == 0, "\(structural.stdout)\(structural.stderr)")
        let validation = try runCommand("kubernetes-validate", ["--strict", "-k", "1.33.0"] + Self.crdFiles)
        #expect(validation.status == 0, "\(validation.stdout)\(validation.stderr)")
    }

    /// The API server prunes fields a structural schema does not list before anyone reads the
    /// object, unless the schema keeps them. Pruned, a typo such as `podSelecter` would reach the
    /// gateway as "no selector" (every pod); kept, the gateway sees it and refuses the object.
    @Test func everySpecObjectKeepsUnknownFieldsForTheGatewayToRefuse() throws {
        let result = try runCommand("python3", ["-c", """
            import sys, yaml
            bad = []
            def walk(node, path):
                if node.get("type") == "object" and "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                    bad.append(path)
                for key, child in node.get("properties", {}).items():
                    walk(child, path + "." + key)
                if isinstance(node.get("items"), dict):
                    walk(node["items"], path + "[]")
            for f in sys.argv[1:]:
                for doc in yaml.safe_load_all(open(f)):
                    for version in doc["spec"]["versions"]:
                        walk(version["schema"]["openAPIV3Schema"]["properties"]["spec"], f.split("/")[-1] + ":spec")
            print("\\n".join(bad))
            sys.exit(1 if bad else 0)
            """] + Self.crdFiles)
        #expect(result.status == 0, "objects that would prune unknown fields: \(result.stdout)\(result.stderr)")
    }

    @Test func theQuickstartObjectsValidateAgainstTheCRDs() throws {
        let result = try runCommand("python3", [Repo.support.appendingPathComponent("validate_cr.py").path, Self.crdDir,
                                                Repo.root.appendingPathComponent("examples/quickstart.yaml").path])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("OK") && result.stdout.contains("ExternalService/allowed-api"))
        #expect(result.stdout.contains("EgressPolicy/checkout-egress"))
    }

    /// Names both accept, close to the refused ones: digits in labels, a hyphenated numeric top
    /// label, hex-looking words.
    @Test func hostNamesNearTheRefusedOnesAreAcceptedByBoth() throws {
        let dir = try TempDir()
        let file = dir.path("good.yaml")
        let hosts = ["1.2.3.example", "a1.b2", "0x7f.example", "1-2", "10.0.0.1.nip.io", "deadbeef", "0xg1", "*.a1", "3com.com", "api.allowed.test."]
        try ("apiVersion: corridor.dev/v1alpha1\nkind: ExternalService\nmetadata: {name: s}\nspec: {hosts: [\(hosts.map { "\"\($0)\"" }.joined(separator: ", "))], ports: [{number: 443, protocol: TLS}]}\n")
            .write(toFile: file, atomically: true, encoding: .utf8)
        let schema = try runCommand("python3", [Repo.support.appendingPathComponent("validate_cr.py").path, Self.crdDir, file])
        #expect(schema.status == 0, "the CRD schema refused one of \(hosts): \(schema.stdout)")
        let check = try runCommand(Repo.corridorBinary.path, ["check", "--config", file])
        #expect(check.status == 0, "corridor check refused one of \(hosts): \(check.stdout) \(check.stderr)")
    }

    @Test(arguments: [
        ("port 0", "kind: ExternalService\nmetadata: {name: s}\nspec: {hosts: [a.test], ports: [{number: 0, protocol: TLS}]}"),
        ("unknown protocol", "kind: ExternalService\nmetadata: {name: s}\nspec: {hosts: [a.test], ports: [{number: 443, protocol: UDP}]}"),
        ("no ports", "kind: ExternalService\nmetadata: {name: s}\nspec: {hosts: [a.test]}"),
        ("bad host", "kind: ExternalService\nmetadata: {name: s}\nspec: {hosts: [\"a..test\"], ports: [{number: 443, protocol: TLS}]}"),
        ("IPv4 host", "kind: ExternalService\nmetadata: {name: s}\nspec: {hosts: [10.0.0.1], ports: [{number: 443, protocol: TLS}]}"),
        ("short IPv4 host", "kind: ExternalService\nmetadata: {name: s}\nspec: {hosts: [\"127.1\"], ports: [{number: 443, protocol: TLS}]}"),
        ("integer IPv4 host", "kind: ExternalService\nmetadata: {name: s}\nspec: {hosts: [\"2130706433\"], ports: [{number: 443, protocol: TLS}]}"),
        ("hex IPv4 host", "kind: ExternalService\nmetadata: {name: s}\nspec: {hosts: [0x7f000001], ports: [{number: 443, protocol: TLS}]}"),
        ("dotted hex IPv4 host", "kind: ExternalService\nmetadata: {name: s}\nspec: {hosts: [0x7f.0x0.0x0.0x1], ports: [{number: 443, protocol: TLS}]}"),
        ("IPv4 wildcard", "kind: ExternalService\nmetadata: {name: s}\nspec: {hosts: [\"*.0.0.1\"], ports: [{number: 443, protocol: TLS}]}"),
        ("IPv6 host", "kind: ExternalService\nmetadata: {name: s}\nspec: {hosts: [\"::1\"], ports: [{number: 443, protocol: TLS}]}"),
        ("numeric top label", "kind: ExternalService\nmetadata: {name: s}\nspec: {hosts: [example.123], ports: [{number: 443, protocol: TLS}]}"),
        ("bad ech", "kind: ExternalService\nmetadata: {name: s}\nspec: {hosts: [a.test], ports: [{number: 443, protocol: TLS}], tls: {ech: Sometimes}}"),
        ("bad access", "kind: ExternalService\nmetadata: {name: s}\nspec: {hosts: [a.test], ports: [{number: 443, protocol: TLS}], access: Everyone}"),
        ("bad minVersion", "kind: ExternalService\nmetadata: {name: s}\nspec: {hosts: [a.test], ports: [{number: 80, protocol: HTTP, originateTLS: {port: 443, minVersion: TLSv1.1}}]}"),
        ("bad mode", "kind: EgressPolicy\nmetadata: {name: p, namespace: n}\nspec: {mode: Sometimes, egress: [{to: [{externalService: s}]}]}"),
        ("no egress", "kind: EgressPolicy\nmetadata: {name: p, namespace: n}\nspec: {mode: Audit}"),
        ("empty to", "kind: EgressPolicy\nmetadata: {name: p, namespace: n}\nspec: {egress: [{to: []}]}"),
        ("bad operator", "kind: EgressPolicy\nmetadata: {name: p, namespace: n}\nspec: {podSelector: {matchExpressions: [{key: a, operator: Is}]}, egress: [{to: [{externalService: s}]}]}"),
    ])
    func invalidObjectsAreRejectedByTheCRDAndByCheck(name: String, body: String) throws {
        let dir = try TempDir()
        let file = dir.path("bad.yaml")
        try ("apiVersion: corridor.dev/v1alpha1\n" + body + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        let schema = try runCommand("python3", [Repo.support.appendingPathComponent("validate_cr.py").path, Self.crdDir, file])
        #expect(schema.status != 0, "the CRD schema accepted \(name): \(schema.stdout)")
        let check = try runCommand(Repo.corridorBinary.path, ["check", "--config", file])
        #expect(check.status == 2, "corridor check accepted \(name): \(check.stdout)")
    }
}
