/// The gateway's own settings: listeners, resolver, destination guards, limits, logging.
/// At most one `GatewayConfig` object per config file; every field has a safe default.
public struct GatewayConfig: Sendable, Equatable {
    public enum UnknownSources: String, Sendable, Equatable, CaseIterable {
        /// A connection from an address no Workload (or pod) claims is denied (the default).
        case deny = "Deny"
        /// It is judged as an identity with no namespace or labels: only `access: All` services.
        case allow = "Allow"
    }

    /// What the gateway does with a connection its policy refuses.
    public enum Mode: String, Sendable, Equatable, CaseIterable {
        /// Refuse it (the default).
        case enforce = "Enforce"
        /// Let it through and record it as `audit` with the reason it would have been refused.
        /// Destination guards still refuse (blocked ranges, IP literals, malformed or non-TLS
        /// hellos, SNI/CONNECT mismatch): they are not policy.
        case audit = "Audit"
    }

    /// `host:port` or `[v6]:port`.
    public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        public init?(parsing text: String) {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            var host = String(text[..<colon])
            let portText = text[text.index(after: colon)...]
            guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy(\.isASCII), portText.allSatisfy(\.isNumber),
                  let port = Int(portText), (0...65535).contains(port) else { return nil }
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard IPAddress(parsing: host) != nil else { return nil }
            self.host = host
            self.port = port
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    public struct Listeners: Sendable, Equatable {
        /// TLS passthrough: the SNI decides.
        public var tls: ListenAddress?
        /// Explicit HTTP CONNECT proxy (which also takes absolute-form plain HTTP).
        public var connect: ListenAddress?
        /// Plain HTTP from apps, originated over TLS to the service.
        public var http: ListenAddress?

        public init(tls: ListenAddress? = nil, connect: ListenAddress? = nil, admin: ListenAddress? = nil, http: ListenAddress? = nil) {
            self.tls = tls
            self.connect = connect
            self.admin = admin
            self.http = http
        }
        /// `/metrics`, `/healthz`, `/readyz`, `/policy`.
        public var admin: ListenAddress?
    }

    /// Settings of the TLS passthrough listener.
    public struct TLSSettings: Sendable, Equatable {
        /// The upstream port chosen for a connection that arrives on the tls listener directly when
        /// the matched ExternalService has several TLS ports. With one TLS port, that port is used.
        public var upstreamPort: Int = 443
        /// Let ClientHellos with Encrypted Client Hello through (the outer SNI is then not the real
        /// destination). Off by default.
        public var allowECH = false
        /// The largest ClientHello accepted, in bytes, across TLS records.
        public var maxClientHelloBytes = 65536
        /// What carries the tls listener's connections: Splice on Linux, NIO elsewhere. Read when
        /// the gateway starts.
        public var dataPlane: DataPlane = .platformDefault
    }

    /// Settings of the explicit-proxy (CONNECT) listener.
    public struct ConnectSettings: Sendable, Equatable {
        /// What carries the connect listener's connections: Splice on Linux, NIO elsewhere. A
        /// plain-HTTP request in absolute form is served by the HTTP path (NIO) either way. Read
        /// when the gateway starts.
        public var dataPlane: DataPlane = .platformDefault
    }

    /// What carries a listener's connections (`spec.tls.dataPlane`, `spec.connect.dataPlane`).
    public enum DataPlane: String, Sendable, Equatable, CaseIterable {
        /// SwiftNIO channels, like the other listeners.
        case nio = "NIO"
        /// Raw sockets and epoll, bytes moved by splice(2) without copying (Linux only).
        case splice = "Splice"

        #if os(Linux)
        public static let platformDefault = DataPlane.splice
        #else
        public static let platformDefault = DataPlane.nio
        #endif
    }

    /// Settings of transparent capture (connections redirected to the listeners by iptables).
    public struct TransparentSettings: Sendable, Equatable {
        public enum AddressMismatch: String, Sendable, Equatable, CaseIterable {
            /// Connect to the address the gateway resolved and record the mismatch (the default:
            /// CDNs answer different clients with different addresses).
            case log = "Log"
            /// Refuse a connection whose original destination is not among the addresses the
            /// gateway resolved for its SNI.
            case deny = "Deny"
        }

        /// What to do when a redirected client dialled an address that its SNI does not resolve to.
        /// Either way the gateway connects only to the address it resolved itself.
        public var addressMismatch = AddressMismatch.log
    }

    public struct Limits: Sendable, Equatable {
        public var maxConnections = 10_000
        /// Connections one source address may hold open at once, on all listeners together; nil:
        /// no limit beyond `maxConnections`. One compromised or broken pod cannot take every slot.
        public var maxConnectionsPerSource: Int?
        /// Time allowed for the ClientHello (and the CONNECT head) to arrive complete, from accept.
        public var handshakeTimeout: Duration = .seconds(10)
        public var connectTimeout: Duration = .seconds(5)
        /// A relayed connection with no bytes either way for this long is closed.
        public var idleTimeout: Duration = .seconds(300)
        /// On SIGTERM, how long live connections may go on before they are cut.
        public var drainTimeout: Duration = .seconds(30)
        public var maxConnectHeadBytes = 8192
        /// Plain-HTTP requests: how long the upstream may take to start its response (504 after that).
        public var upstreamResponseTimeout: Duration = .seconds(60)
    }

    /// What a policy change does to connections already open.
    public struct ReloadSettings: Sendable, Equatable {
        public enum LiveConnections: String, Sendable, Equatable, CaseIterable {
            /// A tunnel keeps the decision it was opened with until it ends (the default). Plain-HTTP
            /// requests are judged one by one whatever this says.
            case keep = "Keep"
            /// After every policy change, each relayed connection is decided again against the new
            /// policy and its source's identity now; one now denied is closed (`policy_revoked`).
            case recheck = "Recheck"
        }

        public var liveConnections = LiveConnections.keep
    }

    public struct Logging: Sendable, Equatable {
        /// Where access records go: nil for standard output, else a file path (appended to).
        public var accessLogFile: String?
        /// Record the request path of plain-HTTP requests (off by default: paths can carry secrets).
        public var includePath = false
        /// A tunnel open this long gets an interim record (`"event":"interim"`), and again each
        /// interval; zero turns them off.
        public var interimInterval: Duration = .seconds(300)
        /// What the gateway does while it cannot write access records (a full disk, an I/O error).
        public var onWriteFailure = OnWriteFailure.deny

        public enum OnWriteFailure: String, Sendable, Equatable, CaseIterable {
            /// New connections are refused until a record can be written again: nothing leaves
            /// that is not recorded (the default; what PCI DSS 10 asks of an egress control).
            case deny = "Deny"
            /// Connections go on unrecorded; the failures are logged and counted.
            case `continue` = "Continue"
        }
    }

    /// The admin listener's access control.
    public struct AdminSettings: Sendable, Equatable {
        /// A file holding a bearer token: the console's APIs (`/flows`, `/flows/stream`, `/policy`,
        /// `/explain`) then require `Authorization: Bearer <token>`; `/metrics`, `/healthz` and
        /// `/readyz` stay open for probes and scrapers. Read at start.
        public var tokenFile: String?
        /// Host names the admin listener answers to besides IP addresses, `localhost`, single
        /// labels and cluster Service names (lower case): an Ingress's name, say. Any other is
        /// refused, so that a page that points a name of its own at the listener (DNS
        /// rebinding) cannot read it.
        public var hosts: [String] = []
    }

    /// Kubernetes mode (`corridor run --kubernetes`): how long what the API last said is trusted
    /// while the API cannot be reached.
    public struct KubernetesSettings: Sendable, Equatable {
        /// The shortest ``maxStaleness``: a brief API restart (a list retried with backoff) must
        /// not become an egress outage.
        public static let minimumStaleness: Duration = .seconds(10)
        /// Once the list/watch of any watched resource (pods, ExternalServices, EgressPolicies)
        /// has brought nothing current (no list, event or bookmark) for this long, whether the API
        /// failed or went silent, the identities and policy it last gave are no longer trusted:
        /// every connection is denied, saying why, and `/readyz` answers 503, until the watches
        /// list again. Nil: the last known state stays in force however long the outage (a pod IP
        /// reused meanwhile keeps the identity of the pod that had it; a revoked grant holds).
        public var maxStaleness: Duration?

        /// A quiet watch shows progress only by its bookmarks, which API servers send about once
        /// a minute (some only as a watch ends, every 5 to 10 minutes).
        public static let quietWatchProgress: Duration = .seconds(120)

        /// Why ``maxStaleness`` is risky, if it is: shorter than a quiet watch's bookmarks.
        public var stalenessWarning: String? {
            guard let maxStaleness, maxStaleness < Self.quietWatchProgress else { return nil }
            return "spec.kubernetes.maxStaleness is \(DurationSyntax.format(maxStaleness)): API servers send a quiet watch a bookmark "
                + "about once a minute (some only as a watch ends, every 5 to 10 minutes), so a quiet cluster can look stale and have every connection denied; "
                + "use \(DurationSyntax.format(Self.quietWatchProgress)) or more (10m or more where bookmarks come only as a watch ends)"
        }
    }

    /// The flow table behind the admin API's `/flows`.
    public struct Flows: Sendable, Equatable {
        /// Flows kept in all (the least recently seen idle ones are evicted beyond it).
        public var maxEntries = 50_000
    }

    /// Suspicious-traffic signals: computed by the gateway, named in the record, counted in
    /// `corridor_signals_total`. They inform; policy still decides.
    public struct Signals: Sendable, Equatable {
        /// A workload identity reaches a destination it had not reached since the gateway started.
        public var newDestination = true
        /// A workload with `denyBurstThreshold` or more denials within `denyBurstWindow`.
        public var denyBurst = true
        public var denyBurstThreshold = 20
        public var denyBurstWindow: Duration = .seconds(60)
        /// A name with a label that looks machine-made (long, high entropy, digit and letter runs).
        public var generatedName = true
        public var generatedNameMinLength = 16
        /// Shannon entropy of the label's characters, in bits per character.
        public var generatedNameMinEntropy = 3.5
        /// Bytes up at least `uploadHeavyMiB` MiB and `uploadHeavyRatio` times bytes down.
        public var uploadHeavy = true
        public var uploadHeavyMiB = 10
        public var uploadHeavyRatio = 10
        /// A transparent client dialled an address its SNI does not resolve to.
        public var addressMismatch = true
        /// An allowed name resolved into a blocked range (DNS rebinding, or a wrong record).
        public var guardRefused = true
    }

    public var name = "default"
    public var mode = Mode.enforce
    public var listeners = Listeners(
        tls: ListenAddress(host: "127.0.0.1", port: 15443),
        connect: ListenAddress(host: "127.0.0.1", port: 13128),
        admin: ListenAddress(host: "127.0.0.1", port: 15000),
        http: nil
    )
    public var tls = TLSSettings()
    public var connect = ConnectSettings()
    public var transparent = TransparentSettings()
    /// Names answered from configuration; exact names and `*.suffix` patterns. Other names go to the system resolver.
    public var staticHosts: [(HostPattern, [IPAddress])] = []
    /// Whether names not in `staticHosts` are resolved with the system resolver.
    public var systemResolver = true
    /// How long an answer of the system resolver is reused; zero disables the cache.
    public var resolverCacheTTL: Duration = .seconds(5)
    public var allowPrivate: [CIDR] = []
    public var extraBlocked: [CIDR] = []
    public var unknownSources = UnknownSources.deny
    public var limits = Limits()
    public var reload = ReloadSettings()
    public var logging = Logging()
    public var flows = Flows()
    public var admin = AdminSettings()
    public var signals = Signals()
    public var kubernetes = KubernetesSettings()

    public init() {}

    public static func == (lhs: GatewayConfig, rhs: GatewayConfig) -> Bool {
        lhs.name == rhs.name && lhs.mode == rhs.mode && lhs.listeners == rhs.listeners && lhs.tls == rhs.tls && lhs.connect == rhs.connect
            && lhs.transparent == rhs.transparent
            && lhs.staticHosts.map(\.0) == rhs.staticHosts.map(\.0) && lhs.staticHosts.map(\.1) == rhs.staticHosts.map(\.1)
            && lhs.systemResolver == rhs.systemResolver && lhs.resolverCacheTTL == rhs.resolverCacheTTL && lhs.allowPrivate == rhs.allowPrivate
            && lhs.extraBlocked == rhs.extraBlocked && lhs.unknownSources == rhs.unknownSources
            && lhs.limits == rhs.limits && lhs.reload == rhs.reload && lhs.logging == rhs.logging
            && lhs.flows == rhs.flows && lhs.signals == rhs.signals && lhs.admin == rhs.admin && lhs.kubernetes == rhs.kubernetes
    }
}

/// Kubernetes-style durations: `300ms`, `10s`, `5m`, `1h`, `1m30s`.
public enum DurationSyntax {
    public static func parse(_ text: String) -> Duration? {
        var total: Duration = .zero
        var number = ""
        var rest = Substring(text)
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            number = String(rest.prefix { $0.isASCII && $0.isNumber })
            rest = rest.dropFirst(number.count)
            guard !number.isEmpty, number.count <= 9, let value = Int64(number) else { return nil }
            let unit = String(rest.prefix { $0.isLetter })
            rest = rest.dropFirst(unit.count)
            switch unit {
            case "ms": total += .milliseconds(value)
            case "s": total += .seconds(value)
            case "m": total += .seconds(value * 60)
            case "h": total += .seconds(value * 3600)
            default: return nil
            }
        }
        return total
    }

    public static func format(_ duration: Duration) -> String {
        let ms = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        return ms % 1000 == 0 ? "\(ms / 1000)s" : "\(ms)ms"
    }
}
