import Foundation

/// Where the API server is and how to prove who we are: read from the pod's service-account
/// files (in a cluster) or from a kubeconfig (development).
public struct KubeEndpoint: Sendable, Equatable {
    public enum Scheme: String, Sendable { case https, http }

    public var scheme: Scheme
    public var host: String
    public var port: Int
    /// A path prefix some API proxies put before `/api` (usually empty).
    public var pathPrefix: String
    /// PEM roots that verify the server; nil for the system trust store.
    public var caPEM: [UInt8]?
    /// The name verified in the server certificate (`tls-server-name`); default the host.
    public var serverName: String?
    public var credentials: KubeCredentials
    /// The namespace the gateway runs in (in-cluster) or the context's namespace.
    public var namespace: String?
    /// `in-cluster` or `kubeconfig FILE (context NAME)`, for logs.
    public var origin: String

    public init(scheme: Scheme = .https, host: String, port: Int, pathPrefix: String = "", caPEM: [UInt8]? = nil, serverName: String? = nil,
                credentials: KubeCredentials = KubeCredentials(), namespace: String? = nil, origin: String) {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.pathPrefix = pathPrefix
        self.caPEM = caPEM
        self.serverName = serverName
        self.credentials = credentials
        self.namespace = namespace
        self.origin = origin
    }

    /// `https://host:port`, with IPv6 hosts bracketed.
    public var url: String {
        let shownHost = host.contains(":") ? "[\(host)]" : host
        return "\(scheme.rawValue)://\(shownHost):\(port)\(pathPrefix)"
    }
}

/// How requests are authenticated. A kubeconfig user may combine a client certificate with a token.
public struct KubeCredentials: Sendable, Equatable {
    /// A fixed bearer token (kubeconfig `token`).
    public var token: String?
    /// A file holding the bearer token, re-read as it rotates (in-cluster, kubeconfig `tokenFile`).
    public var tokenFile: String?
    public var clientCertificatePEM: [UInt8]?
    public var clientKeyPEM: [UInt8]?

    public init(token: String? = nil, tokenFile: String? = nil, clientCertificatePEM: [UInt8]? = nil, clientKeyPEM: [UInt8]? = nil) {
        self.token = token
        self.tokenFile = tokenFile
        self.clientCertificatePEM = clientCertificatePEM
        self.clientKeyPEM = clientKeyPEM
    }
}

/// A problem with the in-cluster files or a kubeconfig: which file, which field, why.
public struct KubeConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var field: String?
    public var reason: String

    public init(file: String, field: String? = nil, reason: String) {
        self.file = file
        self.field = field
        self.reason = reason
    }

    public var description: String { [file, field, reason].compactMap { $0 }.joined(separator: ": ") }
}

extension KubeEndpoint {
    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// The in-cluster configuration, as client-go's `InClusterConfig`: the API server from
    /// `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`, the bearer token from the projected
    /// service-account token file (re-read as the kubelet rotates it), the CA bundle and the
    /// namespace from the files beside it.
    public static func inCluster(environment: [String: String] = ProcessInfo.processInfo.environment,
                                 directory: String = serviceAccountDirectory) throws(KubeConfigError) -> KubeEndpoint {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty,
              let portText = environment["KUBERNETES_SERVICE_PORT"], !portText.isEmpty else {
            throw KubeConfigError(file: "environment", reason: "not running in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set (outside a cluster pass --kubeconfig)")
        }
        guard let port = Int(portText), (1...65535).contains(port) else {
            throw KubeConfigError(file: "environment", field: "KUBERNETES_SERVICE_PORT", reason: "'\(portText)' is not a port number")
        }
        let caFile = "\(directory)/ca.crt", tokenFile = "\(directory)/token"
        let ca = try readFile(caFile)
        guard String(decoding: ca, as: UTF8.self).contains("-----BEGIN CERTIFICATE-----") else {
            throw KubeConfigError(file: caFile, reason: "holds no PEM certificate")
        }
        _ = try TokenSource.readToken(tokenFile)
        let namespace = (try? readFile("\(directory)/namespace")).map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
        return KubeEndpoint(host: host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port: port, caPEM: ca,
                            credentials: KubeCredentials(tokenFile: tokenFile), namespace: namespace, origin: "in-cluster")
    }

    /// The kubeconfig search order for development: `--kubeconfig`, else the first file of
    /// `$KUBECONFIG`, else `~/.kube/config`.
    public static func kubeconfigPath(explicit: String?, environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let explicit { return explicit }
        if let list = environment["KUBECONFIG"], let first = list.split(separator: ":").first { return String(first) }
        return "\(environment["HOME"] ?? NSHomeDirectory())/.kube/config"
    }

    /// Reads a kubeconfig: the named context or `current-context`, its cluster (server, CA data
    /// or file, tls-server-name) and user (token, tokenFile, client certificate and key, as data
    /// or files). Relative paths resolve against the kubeconfig's directory. What the gateway does
    /// not support (exec and auth-provider plugins, basic auth, skipping TLS verification, proxies)
    /// is an error rather than a silent downgrade.
    public static func kubeconfig(path: String, context requested: String? = nil) throws(KubeConfigError) -> KubeEndpoint {
        let text = String(decoding: try readFile(path), as: UTF8.self)
        guard let root = try KubeConfigYAML.load(text, path: path) as? [String: Any] else {
            throw KubeConfigError(file: path, reason: "not a kubeconfig (expected a mapping with clusters, users and contexts)")
        }
        let directory = (path as NSString).deletingLastPathComponent
        func resolve(_ file: String) -> String { file.hasPrefix("/") || directory.isEmpty ? file : "\(directory)/\(file)" }
        func named(_ list: String, _ name: String, _ inner: String) throws(KubeConfigError) -> [String: Any] {
            let entries = root[list] as? [[String: Any]] ?? []
            guard let entry = entries.first(where: { $0["name"] as? String == name }) else {
                throw KubeConfigError(file: path, field: list, reason: "no entry named '\(name)'")
            }
            return entry[inner] as? [String: Any] ?? [:]
        }
        guard let contextName = requested ?? (root["current-context"] as? String).flatMap({ $0.isEmpty ? nil : $0 }) else {
            throw KubeConfigError(file: path, field: "current-context", reason: "is not set; pass --context")
        }
        let context = try named("contexts", contextName, "context")
        guard let clusterName = context["cluster"] as? String else {
            throw KubeConfigError(file: path, field: "contexts[\(contextName)].context.cluster", reason: "is required")
        }
        let cluster = try named("clusters", clusterName, "cluster")
        let user = try (context["user"] as? String).map { name throws(KubeConfigError) in try named("users", name, "user") } ?? [:]
        let clusterField = "clusters[\(clusterName)].cluster", userField = "users[\(context["user"] as? String ?? "")].user"

        guard let server = cluster["server"] as? String, let components = URLComponents(string: server),
              let scheme = components.scheme.flatMap(Scheme.init(rawValue:)), let host = components.host, !host.isEmpty else {
            throw KubeConfigError(file: path, field: "\(clusterField).server", reason: "must be an https:// URL, got '\(cluster["server"] ?? "")'")
        }
        let bareHost = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if let port = components.port, !(1...65535).contains(port) {
            throw KubeConfigError(file: path, field: "\(clusterField).server", reason: "port \(port) is not a port number (1-65535)")
        }
        if scheme == .http && !["127.0.0.1", "::1", "localhost"].contains(bareHost) {
            throw KubeConfigError(file: path, field: "\(clusterField).server", reason: "plain http is allowed only to loopback (kubectl proxy); use https")
        }
        if cluster["insecure-skip-tls-verify"] as? Bool == true {
            throw KubeConfigError(file: path, field: "\(clusterField).insecure-skip-tls-verify",
                                  reason: "is not supported: the gateway's policy must come from a verified API server")
        }
        if cluster["proxy-url"] != nil {
            throw KubeConfigError(file: path, field: "\(clusterField).proxy-url", reason: "is not supported")
        }
        for unsupported in ["exec", "auth-provider", "username", "password"] where user[unsupported] != nil {
            throw KubeConfigError(file: path, field: "\(userField).\(unsupported)",
                                  reason: "is not supported by corridor; use a token, tokenFile or client certificate")
        }
        func pem(_ dataKey: String, _ fileKey: String, in map: [String: Any], field: String) throws(KubeConfigError) -> [UInt8]? {
            if let encoded = map[dataKey] as? String {
                guard let data = Data(base64Encoded: encoded.filter { !$0.isWhitespace }) else {
                    throw KubeConfigError(file: path, field: "\(field).\(dataKey)", reason: "is not valid base64")
                }
                return Array(data)
            }
            if let file = map[fileKey] as? String { return try referenced("\(field).\(fileKey)") { () throws(KubeConfigError) in try readFile(resolve(file)) } }
            return nil
        }
        // A file the kubeconfig names that cannot be used: the kubeconfig and its field, then the file and why.
        func referenced<T>(_ field: String, _ body: () throws(KubeConfigError) -> T) throws(KubeConfigError) -> T {
            do {
                return try body()
            } catch {
                throw KubeConfigError(file: path, field: field, reason: "\(error.file): \(error.reason)")
            }
        }
        let serverName = cluster["tls-server-name"] as? String
        if let serverName, serverName.isEmpty || serverName.isIPAddress {
            throw KubeConfigError(file: path, field: "\(clusterField).tls-server-name", reason: "must be a DNS name (an IP address is checked against the server address itself)")
        }
        let ca = try pem("certificate-authority-data", "certificate-authority", in: cluster, field: clusterField)
        var credentials = KubeCredentials()
        credentials.token = user["token"] as? String
        credentials.tokenFile = (user["tokenFile"] as? String).map(resolve)
        credentials.clientCertificatePEM = try pem("client-certificate-data", "client-certificate", in: user, field: userField)
        credentials.clientKeyPEM = try pem("client-key-data", "client-key", in: user, field: userField)
        if (credentials.clientCertificatePEM == nil) != (credentials.clientKeyPEM == nil) {
            throw KubeConfigError(file: path, field: userField, reason: "a client certificate and a client key go together")
        }
        if let tokenFile = credentials.tokenFile {
            _ = try referenced("\(userField).tokenFile") { () throws(KubeConfigError) in try TokenSource.readToken(tokenFile) }
        }
        let port = components.port ?? (scheme == .https ? 443 : 80)
        var prefix = components.path
        while prefix.hasSuffix("/") { prefix.removeLast() }
        return KubeEndpoint(scheme: scheme, host: bareHost, port: port, pathPrefix: prefix, caPEM: ca,
                            serverName: serverName, credentials: credentials,
                            namespace: context["namespace"] as? String, origin: "kubeconfig \(path) (context \(contextName))")
    }

    static func readFile(_ path: String) throws(KubeConfigError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KubeConfigError(file: path, reason: "cannot be read")
        }
        return Array(data)
    }
}
