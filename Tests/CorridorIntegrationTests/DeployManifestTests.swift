import Foundation
import Testing

/// deploy/base: valid for Kubernetes 1.33 offline, least-privilege, hardened, and its ConfigMap's
/// config is one `corridor check` accepts.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct DeployManifestTests {
    static let base = Repo.root.appendingPathComponent("deploy/base").path
    static var manifests: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).filter { $0.hasSuffix(".yaml") && $0 != "kustomization.yaml" }
            .sorted().map { "\(base)/\($0)" }
    }

    @Test func manifestsValidateOffline() throws {
        #expect(Self.manifests.count >= 7)
        let result = try runCommand("kubernetes-validate", ["--strict", "-k", "1.33.0"] + Self.manifests)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.components(separatedBy: "passed for resource").count - 1 == 8)
    }

    @Test func theConfigMapHoldsAConfigThatCorridorAccepts() throws {
        let dir = try TempDir()
        let config = dir.path("corridor.yaml")
        let extract = try runCommand("python3", ["-c", """
            import sys, yaml
            doc = yaml.safe_load(open(sys.argv[1]))
            open(sys.argv[2], "w").write(doc["data"]["corridor.yaml"])
            """, "\(Self.base)/configmap.yaml", config])
        #expect(extract.status == 0, "\(extract.stderr)")
        let check = try runCommand(Repo.corridorBinary.path, ["check", "--config", config])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        #expect(check.stdout.contains("admin 0.0.0.0:15000"), "probes reach the admin listener: \(check.stdout)")
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
}
