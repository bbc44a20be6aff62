/// The resource model: Kubernetes-style objects of group `corridor.dev`, version `v1alpha1`.
/// The same objects are read from a multi-document YAML file (`corridor run --config`) and,
/// in a cluster, from CRDs. See docs/resources.md for every field.
public enum APIGroup {
    public static let group = "corridor.dev"
    public static let version = "v1alpha1"
    public static let apiVersion = "corridor.dev/v1alpha1"
}

public struct ObjectMeta: Sendable, Equatable {
    public var name: String
    public var namespace: String?
    public var labels: [String: String]

    public init(name: String, namespace: String? = nil, labels: [String: String] = [:]) {
        self.name = name
        self.namespace = namespace
        self.labels = labels
    }

    /// `namespace/name` for namespaced objects, `name` otherwise.
    public var qualifiedName: String { namespace.map { "\($0)/\(name)" } ?? name }
}

/// A registered outside service: what may be reached at all (cluster-scoped).
public struct ExternalService: Sendable, Equatable {
    public enum Access: String, Sendable, Equatable, CaseIterable {
        /// Every workload may use it.
        case all = "All"
        /// Only workloads granted it by an EgressPolicy (the default).
        case restricted = "Restricted"
    }

    public enum PortProtocol: String, Sendable, Equatable, CaseIterable {
        /// TLS passthrough: the SNI is checked, the bytes are relayed untouched.
        case tls = "TLS"
        /// Plain TCP to the service's `addresses` (legacy services such as an on-premises
        /// database), matched by the original destination of a redirected connection; no name is
        /// checked, so only the listed addresses can be reached.
        case tcp = "TCP"
        /// Plain HTTP from the app to the gateway; the gateway originates verified TLS to the
        /// service (`originateTLS`), or, only where `allowPlaintext` says so, plain HTTP.
        case http = "HTTP"
    }

    /// How the gateway speaks TLS to a service whose port the apps reach with plain HTTP.
    public struct OriginateTLS: Sendable, Equatable {
        public enum PEM: Sendable, Equatable {
            case file(String)
            case inline(String)
        }

        public enum MinimumVersion: String, Sendable, Equatable, CaseIterable {
            case tls12 = "TLSv1.2"
            case tls13 = "TLSv1.3"
        }

        /// The upstream TLS port.
        public var port: Int
        /// Roots to verify the service's certificate against; nil for the system trust store.
        public var caBundle: PEM?
        /// A client certificate chain and key for mutual TLS.
        public var clientCertificateFile: String?
        public var clientKeyFile: String?
        /// The SNI (and the name verified in the certificate); default the request's host.
        public var sni: String?
        public var minVersion: MinimumVersion

        public init(port: Int, caBundle: PEM? = nil, clientCertificateFile: String? = nil, clientKeyFile: String? = nil,
                    sni: String? = nil, minVersion: MinimumVersion = .tls12) {
            self.port = port
            self.caBundle = caBundle
            self.clientCertificateFile = clientCertificateFile
            self.clientKeyFile = clientKeyFile
            self.sni = sni
            self.minVersion = minVersion
        }
    }

    public struct Port: Sendable, Equatable {
        public var number: Int
        public var `protocol`: PortProtocol
        public var name: String?
        /// HTTP ports: TLS origination to the service.
        public var originateTLS: OriginateTLS? {
            get { originate?.value }
            set { originate = newValue.map(SharedOriginateTLS.init) }
        }
        /// Kept out of line: a port (and every decision, which carries its port) stays small,
        /// and copying one is a reference count, not about 70 bytes of settings.
        private var originate: SharedOriginateTLS?
        /// HTTP ports: let plain HTTP leave as it came (an explicit, audited exception).
        public var allowPlaintext: Bool

        public init(number: Int, protocol: PortProtocol = .tls, name: String? = nil,
                    originateTLS: OriginateTLS? = nil, allowPlaintext: Bool = false) {
            self.number = number
            self.protocol = `protocol`
            self.name = name
            self.originate = originateTLS.map(SharedOriginateTLS.init)
            self.allowPlaintext = allowPlaintext
        }
    }

    /// The origination settings of a port, shared by its copies.
    final class SharedOriginateTLS: Sendable, Equatable {
        let value: OriginateTLS
        init(_ value: OriginateTLS) { self.value = value }
        static func == (lhs: SharedOriginateTLS, rhs: SharedOriginateTLS) -> Bool { lhs === rhs || lhs.value == rhs.value }
    }

    /// Whether a ClientHello with Encrypted Client Hello may reach the service (`spec.tls.ech`).
    public enum ECH: String, Sendable, Equatable, CaseIterable {
        /// Let it through. Only for a service that is not on a shared ECH front (a CDN that
        /// routes the encrypted inner name anywhere behind it): there the outer SNI proves nothing.
        case allow = "Allow"
        case deny = "Deny"
    }

    public var metadata: ObjectMeta
    public var hosts: [HostPattern]
    /// Ranges the service's names may resolve to even when those ranges are blocked
    /// (private, loopback, ...): the exception for on-premises services.
    public var addresses: [CIDR]
    public var ports: [Port]
    public var access: Access
    /// nil: the gateway's `spec.tls.allowECH` decides.
    public var ech: ECH?

    public init(metadata: ObjectMeta, hosts: [HostPattern], addresses: [CIDR] = [], ports: [Port], access: Access = .restricted,
                ech: ECH? = nil) {
        self.metadata = metadata
        self.hosts = hosts
        self.addresses = addresses
        self.ports = ports
        self.access = access
        self.ech = ech
    }

    public var name: String { metadata.name }
}

/// Which workloads of a namespace may use which ExternalServices (namespaced).
public struct EgressPolicy: Sendable, Equatable {
    public enum Mode: String, Sendable, Equatable, CaseIterable {
        /// Connections not granted are denied.
        case enforce = "Enforce"
        /// Connections from the selected workloads that would be denied are let through and logged
        /// as `audit`: the safe way to roll a policy out.
        case audit = "Audit"
    }

    public struct Rule: Sendable, Equatable {
        /// Names of the ExternalServices granted.
        public var externalServices: [String]
        /// Port numbers the grant is limited to; empty means every port of those services.
        public var ports: [Int]

        public init(externalServices: [String], ports: [Int] = []) {
            self.externalServices = externalServices
            self.ports = ports
        }
    }

    public var metadata: ObjectMeta
    public var podSelector: LabelSelector
    /// Service account names (in the policy's namespace); empty means any.
    public var serviceAccounts: [String]
    public var egress: [Rule]
    public var mode: Mode

    public init(metadata: ObjectMeta, podSelector: LabelSelector = .everything, serviceAccounts: [String] = [], egress: [Rule], mode: Mode = .enforce) {
        self.metadata = metadata
        self.podSelector = podSelector
        self.serviceAccounts = serviceAccounts
        self.egress = egress
        self.mode = mode
    }

    public var namespace: String { metadata.namespace ?? "default" }

    /// Whether the policy's source selectors pick this identity.
    public func selects(_ identity: SourceIdentity) -> Bool {
        guard identity.namespace == namespace else { return false }
        if !serviceAccounts.isEmpty && !serviceAccounts.contains(identity.serviceAccount) { return false }
        return podSelector.matches(identity.labels)
    }
}

/// A static inventory entry: source addresses that belong to one workload (file mode, VMs).
public struct Workload: Sendable, Equatable {
    public var metadata: ObjectMeta
    public var addresses: [CIDR]
    public var serviceAccount: String
    public var labels: [String: String]

    public init(metadata: ObjectMeta, addresses: [CIDR], serviceAccount: String = "default", labels: [String: String] = [:]) {
        self.metadata = metadata
        self.addresses = addresses
        self.serviceAccount = serviceAccount
        self.labels = labels
    }

    public var identity: SourceIdentity {
        SourceIdentity(namespace: metadata.namespace ?? "default", workload: metadata.name, serviceAccount: serviceAccount, labels: labels)
    }
}

/// Who opened a connection, as far as the gateway can tell.
public struct SourceIdentity: Sendable, Equatable, Hashable {
    public var namespace: String
    /// The workload (pod or Workload entry) name.
    public var workload: String
    public var serviceAccount: String
    public var labels: [String: String]

    public init(namespace: String, workload: String, serviceAccount: String, labels: [String: String]) {
        self.namespace = namespace
        self.workload = workload
        self.serviceAccount = serviceAccount
        self.labels = labels
    }

    /// `payments/sa:checkout`, as reasons name a source.
    public var summary: String { "\(namespace)/sa:\(serviceAccount)" }
}
