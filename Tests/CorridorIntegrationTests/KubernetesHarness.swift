import CorridorGateway
import CorridorKubernetes
import Foundation
import Logging
import NIOCore

/// shared/k8s: the test PKI of the fake API server and realistic API objects.
enum SharedK8s {
    static let root = Repo.root.deletingLastPathComponent().appendingPathComponent("shared/k8s")
    static func path(_ name: String) -> String { root.appendingPathComponent(name).path }
}

/// The fake Kubernetes API server (Tests/Support/fake_apiserver.py) over TLS on 127.0.0.1, with
/// bearer-token and client-certificate authentication, and its control port for the tests.
final class FakeAPIServer: @unchecked Sendable {
    let process: BackgroundProcess
    let apiPort: Int
    let controlPort: Int

    init(tokens: [String], state: [[String: Any]] = [], dir: TempDir, extra: [String] = []) throws {
        let statePath = dir.path("apiserver-state-\(UUID().uuidString.prefix(6)).json")
        try JSONSerialization.data(withJSONObject: ["items": state]).write(to: URL(fileURLWithPath: statePath))
        var arguments = [Repo.support.appendingPathComponent("fake_apiserver.py").path,
                         "--cert", SharedK8s.path("tls/apiserver.crt"), "--key", SharedK8s.path("tls/apiserver.key"),
                         "--client-ca", SharedK8s.path("tls/ca.crt"), "--state", statePath]
        for token in tokens { arguments += ["--token", token] }
        let process = try BackgroundProcess("python3", arguments + extra)
        self.process = process
        var ports: (Int, Int)?
        _ = eventually(timeout: 15) {
            if let line = process.stdoutText.split(separator: "\n").first(where: { $0.hasPrefix("LISTENING ") }) {
                var api: Int?, control: Int?
                for field in line.split(separator: " ") {
                    if field.hasPrefix("api=") { api = Int(field.dropFirst(4)) }
                    if field.hasPrefix("control=") { control = Int(field.dropFirst(8)) }
                }
                if let api, let control { ports = (api, control) }
            }
            return ports != nil
        }
        guard let ports else { throw TestError.failed("fake API server did not start: \(process.stderrText)") }
        (apiPort, controlPort) = ports
    }

    /// A control request; returns the decoded JSON answer (or nil).
    @discardableResult
    func control(_ method: String, _ path: String, _ body: Any? = nil) throws -> Any? {
        var arguments = ["-sS", "--max-time", "10", "-X", method, "http://127.0.0.1:\(controlPort)\(path)"]
        if let body {
            let data = try JSONSerialization.data(withJSONObject: body)
            arguments += ["-H", "Content-Type: application/json", "--data-binary", String(decoding: data, as: UTF8.self)]
        }
        let result = try runCommand("curl", arguments)
        guard result.status == 0 else { throw TestError.failed("control \(method) \(path): \(result.stderr)") }
        return try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8), options: [.fragmentsAllowed])
    }

    func put(_ object: [String: Any]) throws { try control("POST", "/objects", object) }
    func delete(_ plural: String, namespace: String?, name: String) throws { try control("DELETE", "/objects/\(plural)/\(namespace ?? "_")/\(name)") }
    /// The object as the server stores it.
    func object(_ plural: String, namespace: String?, name: String) throws -> [String: Any]? {
        try control("GET", "/objects/\(plural)/\(namespace ?? "_")/\(name)") as? [String: Any]
    }

    var requests: [[String: Any]] { ((try? control("GET", "/requests")) as? [[String: Any]]) ?? [] }
    var statusWrites: [[String: Any]] { ((try? control("GET", "/status-writes")) as? [[String: Any]]) ?? [] }

    /// The last Accepted condition written for an object.
    func accepted(_ plural: String, namespace: String? = nil, name: String) -> [String: Any]? {
        statusWrites.last { $0["resource"] as? String == plural && $0["name"] as? String == name && ($0["namespace"] as? String ?? "") == (namespace ?? "") }
            .flatMap { (($0["status"] as? [String: Any])?["conditions"] as? [[String: Any]])?.first { $0["type"] as? String == "Accepted" } }
    }
}

/// API objects for the tests.
enum K8sObject {
    static func pod(_ namespace: String, _ name: String, ip: String, serviceAccount: String, labels: [String: String],
                    hostNetwork: Bool = false, phase: String = "Running", node: String = "node-a") -> [String: Any] {
        ["apiVersion": "v1", "kind": "Pod",
         "metadata": ["name": name, "namespace": namespace, "labels": labels],
         "spec": ["serviceAccountName": serviceAccount, "hostNetwork": hostNetwork, "nodeName": node, "containers": [["name": "app", "image": "app:1"]]],
         "status": ["phase": phase, "podIP": ip, "podIPs": [["ip": ip]]]]
    }

    static func externalService(_ name: String, hosts: [String], port: Int, extraSpec: [String: Any] = [:]) -> [String: Any] {
        var spec: [String: Any] = ["hosts": hosts, "ports": [["number": port, "protocol": "TLS"]]]
        spec.merge(extraSpec) { $1 }
        return ["apiVersion": "corridor.dev/v1alpha1", "kind": "ExternalService", "metadata": ["name": name, "generation": 1], "spec": spec]
    }

    static func egressPolicy(_ namespace: String, _ name: String, services: [String], matchLabels: [String: String],
                             extraSpec: [String: Any] = [:]) -> [String: Any] {
        var spec: [String: Any] = ["podSelector": ["matchLabels": matchLabels], "egress": [["to": services.map { ["externalService": $0] }]]]
        spec.merge(extraSpec) { $1 }
        return ["apiVersion": "corridor.dev/v1alpha1", "kind": "EgressPolicy", "metadata": ["name": name, "namespace": namespace, "generation": 1], "spec": spec]
    }
}

/// A gateway in Kubernetes mode against the fake API server: the GatewayConfig in a file, the
/// policy and pod identities from the API. Source addresses 127.0.0.x stand in for pod IPs.
final class KubernetesHarness: AccessLogReading, @unchecked Sendable {
    static let token = "token-one-\(UUID().uuidString.prefix(8))"

    let dir: TempDir
    let pki: TestPKI
    let upstream: TLSUpstream
    let api: FakeAPIServer
    let configPath: String
    let kubeconfigPath: String
    let tokenPath: String
    let accessLogPath: String
    var gateway: Gateway!
    var connectPort = 0
    var adminPort = 0

    /// The standard objects: allowed-api granted to app=checkout in payments; checkout at
    /// 127.0.0.1, a reporting pod of another namespace at 127.0.0.3.
    static func standardObjects(upstreamPort: Int) -> [[String: Any]] {
        [
            K8sObject.externalService("allowed-api", hosts: ["api.allowed.test"], port: upstreamPort),
            K8sObject.egressPolicy("payments", "checkout-egress", services: ["allowed-api"], matchLabels: ["app": "checkout"]),
            K8sObject.pod("payments", "checkout-1", ip: "127.0.0.1", serviceAccount: "checkout", labels: ["app": "checkout"]),
            K8sObject.pod("analytics", "reporting-1", ip: "127.0.0.3", serviceAccount: "reporting", labels: ["app": "reporting"]),
        ]
    }

    /// `objects` receives the upstream's port; `clientCertificate` authenticates with shared/k8s's
    /// client certificate instead of the token file.
    let nodeName: String?
    let pageSize: Int
    let apiMaxBodyBytes: Int
    let watchIdleLimit: Duration
    let apiInitialBackoff: Duration

    init(objects: (Int) -> [[String: Any]] = standardObjects, clientCertificate: Bool = false, apiExtra: [String] = [],
         nodeName: String? = nil, pageSize: Int = 500, watchIdleLimit: Duration = .seconds(90), gatewayExtra: String = "",
         apiMaxBodyBytes: Int = 64 << 20, apiInitialBackoff: Duration = .milliseconds(800), start: Bool = true) async throws {
        self.apiInitialBackoff = apiInitialBackoff
        self.nodeName = nodeName
        self.pageSize = pageSize
        self.apiMaxBodyBytes = apiMaxBodyBytes
        self.watchIdleLimit = watchIdleLimit
        dir = try TempDir()
        pki = try TestPKI(in: dir)
        upstream = try TLSUpstream(pki: pki, dir: dir)
        api = try FakeAPIServer(tokens: [Self.token], state: objects(upstream.port), dir: dir, extra: apiExtra)
        accessLogPath = dir.path("access.log")
        configPath = dir.path("corridor.yaml")
        tokenPath = dir.path("token")
        try "\(Self.token)\n".write(toFile: tokenPath, atomically: true, encoding: .utf8)
        try """
            apiVersion: corridor.dev/v1alpha1
            kind: GatewayConfig
            metadata: {name: test}
            spec:
              listeners: {connect: 127.0.0.1:0, admin: 127.0.0.1:0}
              resolver: {static: {api.allowed.test: [127.0.0.1]}, system: false}
              destinations: {allowPrivate: [127.0.0.1/32]}
              unknownSources: Deny
              logging: {accessLog: {file: \(accessLogPath)}}
            \(gatewayExtra)
            """.write(toFile: configPath, atomically: true, encoding: .utf8)
        kubeconfigPath = dir.path("kubeconfig")
        let user = clientCertificate
            ? "{client-certificate: \(SharedK8s.path("tls/client.crt")), client-key: \(SharedK8s.path("tls/client.key"))}"
            : "{tokenFile: \(tokenPath)}"
        try """
            apiVersion: v1
            kind: Config
            current-context: test
            clusters: [{name: fake, cluster: {server: "https://127.0.0.1:\(api.apiPort)", certificate-authority: \(SharedK8s.path("tls/ca.crt"))}}]
            users: [{name: corridor, user: \(user)}]
            contexts: [{name: test, context: {cluster: fake, user: corridor}}]
            """.write(toFile: kubeconfigPath, atomically: true, encoding: .utf8)
        if start { try await startGateway() }
    }

    func startGateway() async throws {
        var logger = Logger(label: "corridor-test")
        logger.logLevel = .warning
        let endpoint = try KubeEndpoint.kubeconfig(path: kubeconfigPath)
        var options = Gateway.Options(configPath: configPath, workers: 2, kubernetes: endpoint)
        options.nodeName = nodeName
        options.listPageSize = pageSize
        options.apiMaxBodyBytes = apiMaxBodyBytes
        options.watchIdleLimit = watchIdleLimit
        options.apiInitialBackoff = apiInitialBackoff
        gateway = try Gateway(options: options, logger: logger)
        try await gateway.start()
        connectPort = gateway.boundAddresses["connect"]?.port ?? 0
        adminPort = gateway.boundAddresses["admin"]?.port ?? 0
    }

    func stop() async { await gateway?.shutdown(drain: .seconds(1)) }

    /// Waits for the gateway's first sync.
    func waitReady(timeout: TimeInterval = 20) async -> Bool { await eventually(timeout: timeout) { gateway.isReady } }

    /// curl through the CONNECT listener from `source` (a 127.0.0.x address standing for a pod IP).
    func connect(from source: String, host: String = "api.allowed.test") throws -> CommandResult {
        try runCommand("curl", ["-sS", "--max-time", "20", "--cacert", pki.caCert, "--interface", source,
                                "-x", "http://127.0.0.1:\(connectPort)", "https://\(host):\(upstream.port)/"])
    }

    func metrics() throws -> String {
        try runCommand("curl", ["-sS", "--max-time", "10", "http://127.0.0.1:\(adminPort)/metrics"]).stdout
    }

    func admin(_ path: String) throws -> String {
        try runCommand("curl", ["-sS", "--max-time", "10", "http://127.0.0.1:\(adminPort)\(path)"]).stdout
    }

    /// Records whose source starts with `source:`, in order.
    func records(from source: String) -> [[String: Any]] {
        records().filter { ($0["src"] as? String ?? "").hasPrefix("\(source):") }
    }
}
