@testable import CorridorKubernetes
import CorridorPolicy
import Foundation
import Testing

enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let shared = root.deletingLastPathComponent().appendingPathComponent("shared/k8s")
    static func path(_ name: String) -> String { shared.appendingPathComponent(name).path }
    static func data(_ name: String) throws -> Data { try Data(contentsOf: shared.appendingPathComponent(name)) }

    static func scratch() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("corridor-k8s-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

@Suite struct KubeconfigTests {
    @Test func currentContextWithAnEmbeddedClientCertificate() throws {
        let endpoint = try KubeEndpoint.kubeconfig(path: Fixtures.path("kubeconfig-example.yaml"))
        #expect(endpoint.scheme == .https)
        #expect(endpoint.host == "127.0.0.1")
        #expect(endpoint.port == 6443)
        #expect(String(decoding: endpoint.caPEM ?? [], as: UTF8.self).contains("BEGIN CERTIFICATE"))
        #expect(String(decoding: endpoint.credentials.clientCertificatePEM ?? [], as: UTF8.self).contains("BEGIN CERTIFICATE"))
        #expect(String(decoding: endpoint.credentials.clientKeyPEM ?? [], as: UTF8.self).contains("PRIVATE KEY"))
        #expect(endpoint.credentials.token == nil)
        #expect(endpoint.origin.contains("context kind-dev"))
    }

    @Test func anUnsupportedProxyIsAnErrorNamingTheField() throws {
        #expect {
            try KubeEndpoint.kubeconfig(path: Fixtures.path("kubeconfig-example.yaml"), context: "staging-egress")
        } throws: { error in
            "\(error)".contains("clusters[staging].cluster.proxy-url")
        }
    }

    @Test func tokenUserTLSServerNameRelativePathsAndNamespace() throws {
        let dir = try Fixtures.scratch()
        try FileManager.default.copyItem(atPath: Fixtures.path("tls/ca.crt"), toPath: dir.appendingPathComponent("ca.crt").path)
        try "sometoken\n".write(to: dir.appendingPathComponent("token"), atomically: true, encoding: .utf8)
        let config = """
            apiVersion: v1
            kind: Config
            current-context: dev
            clusters:
            - name: c
              cluster: {server: "https://[::1]:16443/prefix/", certificate-authority: ca.crt, tls-server-name: kubernetes.default.svc}
            users:
            - name: u
              user: {tokenFile: token}
            contexts:
            - name: dev
              context: {cluster: c, user: u, namespace: corridor-system}
            """
        let path = dir.appendingPathComponent("config").path
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        let endpoint = try KubeEndpoint.kubeconfig(path: path)
        #expect(endpoint.host == "::1")
        #expect(endpoint.port == 16443)
        #expect(endpoint.pathPrefix == "/prefix")
        #expect(endpoint.url == "https://[::1]:16443/prefix")
        #expect(endpoint.serverName == "kubernetes.default.svc")
        #expect(endpoint.namespace == "corridor-system")
        #expect(endpoint.credentials.tokenFile == dir.appendingPathComponent("token").path)
        #expect(try TokenSource(credentials: endpoint.credentials).token() == "sometoken")
    }

    @Test(arguments: [
        ("insecure-skip-tls-verify: true", "insecure-skip-tls-verify"),
        ("server: http://10.0.0.1:8080", "plain http is allowed only to loopback"),
        ("server: not a url", "server"),
        ("server: https://127.0.0.1:0", "port 0 is not a port number"),
        ("server: https://127.0.0.1:65536", "port 65536 is not a port number"),
        ("tls-server-name: 10.96.0.1", "tls-server-name: must be a DNS name"),
    ])
    func refusedClusterSettings(line: String, expected: String) throws {
        let dir = try Fixtures.scratch()
        let server = line.hasPrefix("server:") ? line : "server: https://127.0.0.1:6443"
        let extra = line.hasPrefix("server:") ? "" : "\n    \(line)"
        let config = """
            current-context: x
            clusters:
            - name: c
              cluster:
                \(server)\(extra)
            users: [{name: u, user: {token: t}}]
            contexts: [{name: x, context: {cluster: c, user: u}}]
            """
        let path = dir.appendingPathComponent("config").path
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try KubeEndpoint.kubeconfig(path: path) } throws: { "\($0)".contains(expected) }
    }

    @Test func execPluginsAreRefusedClearly() throws {
        #expect { try KubeEndpoint.kubeconfig(path: Fixtures.path("kubeconfig-exec-example.yaml")) } throws: { error in
            "\(error)".contains(".exec") && "\(error)".contains("not supported")
        }
    }

    @Test func missingContextAndMissingFile() throws {
        #expect { try KubeEndpoint.kubeconfig(path: Fixtures.path("kubeconfig-example.yaml"), context: "nope") } throws: {
            "\($0)".contains("contexts: no entry named 'nope'")
        }
        #expect { try KubeEndpoint.kubeconfig(path: "/nonexistent/kubeconfig") } throws: { "\($0)".contains("cannot be read") }
    }

    /// A file the kubeconfig names that cannot be read: the error names the kubeconfig and the
    /// field, then the file (found by the kubeconfig fuzz target, whose invariant is that every
    /// refusal names the kubeconfig).
    @Test func anUnreadableReferencedFileNamesTheKubeconfigAndTheField() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("corridor-kubeconfig-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("config").path
        for (user, field) in [("{tokenFile: /nonexistent/token}", "users[u].user.tokenFile"),
                              ("{client-certificate: missing.crt, client-key: missing.key}", "users[u].user.client-certificate")] {
            try """
                apiVersion: v1
                kind: Config
                current-context: x
                clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
                users: [{name: u, user: \(user)}]
                contexts: [{name: x, context: {cluster: c, user: u}}]
                """.write(toFile: path, atomically: true, encoding: .utf8)
            #expect { try KubeEndpoint.kubeconfig(path: path) } throws: { error in
                "\(error)".hasPrefix("\(path): \(field): ") && "\(error)".hasSuffix("cannot be read")
            }
        }
    }
}

@Suite struct InClusterTests {
    @Test func readsTheServiceAccountFiles() throws {
        let endpoint = try KubeEndpoint.inCluster(environment: ["KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"],
                                                  directory: Fixtures.path("serviceaccount"))
        #expect(endpoint.url == "https://10.96.0.1:443")
        #expect(endpoint.credentials.tokenFile == Fixtures.path("serviceaccount") + "/token")
        #expect(endpoint.namespace == (try String(contentsOfFile: Fixtures.path("serviceaccount/namespace"), encoding: .utf8)))
        #expect(endpoint.caPEM != nil)
        let v6 = try KubeEndpoint.inCluster(environment: ["KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"],
                                            directory: Fixtures.path("serviceaccount"))
        #expect(v6.url == "https://[fd00::1]:443")
    }

    @Test func outsideAClusterSaysSo() {
        #expect { try KubeEndpoint.inCluster(environment: [:], directory: Fixtures.path("serviceaccount")) } throws: {
            "\($0)".contains("not running in a cluster")
        }
        #expect { try KubeEndpoint.inCluster(environment: ["KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "https"],
                                             directory: Fixtures.path("serviceaccount")) } throws: { "\($0)".contains("KUBERNETES_SERVICE_PORT") }
    }

    @Test func theTokenFileIsRereadAfterRotationAndKeptWhenUnreadable() throws {
        let dir = try Fixtures.scratch()
        let file = dir.appendingPathComponent("token").path
        try "first\n".write(toFile: file, atomically: true, encoding: .utf8)
        let tokens = TokenSource(credentials: KubeCredentials(tokenFile: file), period: .seconds(3600))
        #expect(try tokens.token() == "first")
        try "second".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try tokens.token() == "first", "cached within the period")
        tokens.invalidate()  // as after a 401
        #expect(try tokens.token() == "second")
        try FileManager.default.removeItem(atPath: file)
        tokens.invalidate()
        #expect(try tokens.token() == "second", "an unreadable file keeps the last token")
        try "".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(throws: KubeConfigError.self) { try TokenSource(credentials: KubeCredentials(tokenFile: file)).token() }
    }
}

@Suite struct DecodingTests {
    @Test func podListsDecodeWithTheirAddresses() throws {
        struct List: Decodable { var items: [Pod] }
        let pods = try JSONDecoder().decode(List.self, from: Fixtures.data("podlist.json")).items
        #expect(pods.count == 3)
        let checkout = try #require(pods.first { $0.status?.phase == "Running" && $0.spec?.serviceAccountName == "checkout" })
        #expect(checkout.addresses == ["10.244.1.23", "fd00:10:244:1::17"])
        #expect(pods.first { $0.status?.phase == "Pending" }?.addresses == [])
    }

    @Test func theWatchTranscriptDecodesEventByEvent() throws {
        let lines = try String(decoding: Fixtures.data("watch-pods.jsonl"), as: UTF8.self).split(separator: "\n")
        var kinds: [String] = []
        for line in lines {
            switch try WatchEvent<Pod>.decode(Data(line.utf8)) {
            case .added: kinds.append("ADDED")
            case .modified: kinds.append("MODIFIED")
            case .deleted(let pod): kinds.append("DELETED \(pod.metadata.resourceVersion ?? "")")
            case .bookmark(let rv): kinds.append("BOOKMARK \(rv)")
            case .error: kinds.append("ERROR")
            case .unreadable: kinds.append("UNREADABLE")
            }
        }
        #expect(kinds == ["MODIFIED", "ADDED", "MODIFIED", "BOOKMARK 10301", "MODIFIED", "MODIFIED", "DELETED 10340"])
    }

    @Test func anExpiredWatchIsAnErrorEventWith410() throws {
        let line = try String(decoding: Fixtures.data("watch-pods-expired.jsonl"), as: UTF8.self).split(separator: "\n")[0]
        guard case .error(let status) = try WatchEvent<Pod>.decode(Data(line.utf8)) else { Issue.record("not an ERROR"); return }
        #expect(status.isExpired)
        #expect(status.code == 410)
    }

    @Test func garbageAndUnknownTypesAreErrors() {
        #expect(throws: (any Error).self) { try WatchEvent<Pod>.decode(Data("{\"type\":\"EXPLODED\",\"object\":{}}".utf8)) }
        #expect(throws: (any Error).self) { try WatchEvent<Pod>.decode(Data("{\"type\":\"ADDED\"".utf8)) }
        #expect(throws: (any Error).self) { try WatchEvent<Pod>.decode(Data("{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{}}}".utf8)) }
    }

    @Test func customResourcesRenderBackToTheLoadersInput() throws {
        let json = #"""
            {"apiVersion":"corridor.dev/v1alpha1","kind":"ExternalService","metadata":{"name":"api","uid":"u1","generation":3,
             "managedFields":[{"manager":"kubectl"}],"labels":{"team":"pay"}},
             "spec":{"hosts":["api.example.com"],"ports":[{"number":443,"protocol":"TLS"}],"note":"tab\there \"q\" \u2603"},
             "status":{"conditions":[{"type":"Accepted","status":"True","reason":"Valid","message":"accepted","observedGeneration":3}]}}
            """#
        let object = try JSONDecoder().decode(CustomResource.self, from: Data(json.utf8))
        #expect(object.condition("Accepted")?.observedGeneration == 3)
        let document = ClusterPolicyCompiler.document(object, kind: "ExternalService")
        #expect(!document.contains("managedFields") && !document.contains("status"))
        // The loader sees the spec as written: an unknown field is reported by name.
        #expect { try ConfigLoader.load(yaml: document, file: "x", crossCheck: false) } throws: { "\($0)".contains("spec.note: unknown field") }
        // Escapes survive the trip: a non-ASCII host is refused, quoting the host as sent.
        var unicode = object
        unicode.spec = .object([("hosts", .array([.string("*.caf\u{e9}.example")])), ("ports", .array([.object([("number", .int(443)), ("protocol", .string("TLS"))])]))])
        #expect { try ConfigLoader.load(yaml: ClusterPolicyCompiler.document(unicode, kind: "ExternalService"), file: "x", crossCheck: false) } throws: {
            "\($0)".contains("'*.caf\u{e9}.example'")
        }
        var valid = object
        valid.spec = .object([("hosts", .array([.string("api.example.com")])), ("ports", .array([.object([("number", .int(443)), ("protocol", .string("TLS"))])]))])
        let source = try ConfigLoader.load(yaml: ClusterPolicyCompiler.document(valid, kind: "ExternalService"), file: "x", crossCheck: false)
        #expect(source.externalServices.first?.metadata.labels == ["team": "pay"])
    }

    /// A mapping used as a key stopped the process inside Yams (found by the kubeconfig fuzz
    /// target; the input is Fuzz/corpus/kubeconfig/regression-complex-key). Now an error.
    @Test func aComplexMappingKeyIsAnErrorNotACrash() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("corridor-kubeconfig-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("config").path
        try """
            apiVersion: v1
            kind: Config
            clusters:
            - name: c
              cluster:
                ? server: https://127.0.0.1:6443
                : x
            """.write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try KubeEndpoint.kubeconfig(path: path) } throws: { error in
            "\(error)".hasPrefix(path) && "\(error)".contains("a mapping key must be a plain string")
        }
    }
}
