import CorridorPolicy
import CorridorWire
import NIOCore

/// Everything the access record says about one connection, filled in as the connection
/// progresses and written once, when it ends (a denial ends it at once).
/// Confined to the connection's event loop.
final class ConnectionRecord {
    let id: UInt64
    let listener: String
    let source: SocketAddress?
    /// The source's IP address, read once from the socket address's bytes.
    let sourceAddress: IPAddress?
    let started: ContinuousClock.Instant
    let wallStart: Double
    var identity: SourceIdentity?
    var sni: String?
    var connectHost: String?
    var alpn: [String] = []
    var tlsVersions: [UInt16] = []
    var ech = false
    var port: Int?
    var resolved: SocketAddress?
    /// Where the client dialled, when iptables redirected the connection to the gateway.
    var originalDestination: SocketAddress?
    /// The original destination is not among the addresses the gateway resolved for the name.
    var addressMismatch = false
    var decision: Decision?
    var policyGeneration: Int?
    /// Plain-HTTP requests (TLS origination): method, Host, status, and the path when configured.
    var httpMethod: String? {
        get { http?.method }
        set { httpFacts.method = newValue }
    }
    var httpHost: String? {
        get { http?.host }
        set { httpFacts.host = newValue }
    }
    var httpPath: String? {
        get { http?.path }
        set { httpFacts.path = newValue }
    }
    var httpStatus: Int? {
        get { http?.status }
        set { httpFacts.status = newValue }
    }
    /// How to allow a refused or audited connection (see ``PolicyHint``).
    var hint: String? {
        get { http?.hint }
        set { httpFacts.hint = newValue }
    }
    /// Suspicious-traffic signals raised for this connection.
    var signals: [Signal] {
        get { http?.signals ?? [] }
        set { httpFacts.signals = newValue }
    }
    /// The connection started relaying (counted active in the flow table).
    var opened = false
    /// Interim records written so far.
    var interims: UInt32 = 0
    /// Out of line, made by the first HTTP field (or hint) set: a relayed connection's record
    /// (which may stay open for hours) does not carry five empty fields.
    private var http: OccasionalFacts?
    private var httpFacts: OccasionalFacts {
        if let http { return http }
        let facts = OccasionalFacts()
        http = facts
        return facts
    }
    var bytesUp = 0
    var bytesDown = 0
    private(set) var written = false

    /// `started`: when the connection began, if before now (the monotonic and the wall clock's
    /// reading, as ``AccessLog/now()`` gives it).
    init(id: UInt64, listener: String, source: SocketAddress?, started: (ContinuousClock.Instant, Double)? = nil) {
        self.id = id
        self.listener = listener
        self.source = source
        self.sourceAddress = source.flatMap(IPAddress.init)
        self.started = started?.0 ?? .now
        self.wallStart = started?.1 ?? AccessLog.now()
    }

    /// The source address as text, for a reason that names it.
    var sourceIP: String { sourceAddress.map { $0.unmapped.description } ?? "unknown" }

    /// The connection went on as plain HTTP, whose requests are recorded one by one: this record is dropped.
    func handedOver(metrics: ProxyMetrics) {
        guard !written else { return }
        written = true
        metrics.connectionHandedOver()
    }

    /// Writes the record, once; later calls do nothing.
    func finish(_ cause: CloseCause, log: AccessLog, metrics: ProxyMetrics, reason: String? = nil) {
        guard !written else { return }
        written = true
        if decision == nil || reason != nil {
            // The connection ended before (or instead of) a policy decision: record it as a denial.
            var d = decision ?? .deny(reason ?? cause.rawValue, host: connectHost ?? sni ?? httpHost, port: port)
            if let reason {
                d.verdict = .deny
                d.reason = reason
            }
            decision = d
        }
        if hint == nil, decision?.verdict != .allow { hint = cause.denialHint }
        let duration = ContinuousClock.now - started
        log.write(self, cause: cause, duration: duration)
        metrics.connectionEnded(listener: listener, verdict: decision?.verdict ?? .deny, cause: cause, up: bytesUp, down: bytesDown)
    }
}

/// The fields of a ``ConnectionRecord`` that most relayed connections never set: the plain-HTTP
/// request's, and the hint of a refusal.
private final class OccasionalFacts {
    var method: String?
    var host: String?
    var path: String?
    var status: Int?
    var hint: String?
    var signals: [Signal] = []
}

/// The decisions both data planes make, recorded the same way.
extension ConnectionRecord {
    /// Records what the ClientHello says and decides the connection on it.
    func decide(hello: ClientHelloInfo, snapshot: PolicySnapshot) -> Decision {
        sni = hello.serverName
        alpn = Self.recorded(alpn: hello.alpn)
        tlsVersions = hello.supportedVersions
        ech = hello.hasECH
        if port == nil, let original = originalDestination { port = original.port }
        let facts = DestinationFacts(serverName: hello.serverName, connectHost: connectHost, port: port, hasECH: hello.hasECH)
        return decide(facts, snapshot: snapshot)
    }

    /// How many ALPN names a record keeps, and how many bytes of each.
    static let recordedALPNNames = 16
    static let recordedALPNNameBytes = 64

    /// The ClientHello's ALPN names as a record keeps them: at most ``recordedALPNNames``, each
    /// cut to ``recordedALPNNameBytes`` bytes (marked with `…`), and for the rest one
    /// `…N more`. A ClientHello can carry 64 KiB of names, escaped up to six times longer in
    /// JSON: uncut, each denied connection could write hundreds of kilobytes of log.
    static func recorded(alpn names: [String]) -> [String] {
        var kept = names.prefix(recordedALPNNames).map { name in
            name.utf8.count <= recordedALPNNameBytes ? name : String(decoding: name.utf8.prefix(recordedALPNNameBytes), as: UTF8.self) + "…"
        }
        if names.count > recordedALPNNames { kept.append("…\(names.count - recordedALPNNames) more") }
        return kept
    }

    /// Decides on `facts` and records the decision, with its hint when it is not an allow.
    func decide(_ facts: DestinationFacts, snapshot: PolicySnapshot) -> Decision {
        let made = DecisionEngine.decide(source: identity, sourceAddress: sourceIP, facts: facts, snapshot: snapshot)
        decision = made
        noteHint(for: made, to: .name(facts), snapshot: snapshot)
        return made
    }

    /// Records how `decision` could be allowed, when it is not an allow.
    func noteHint(for decision: Decision, to destination: PolicyHint.Destination, snapshot: PolicySnapshot) {
        guard decision.verdict != .allow else { return }
        hint = PolicyHint.make(for: decision, to: destination, identity: identity, address: sourceAddress, snapshot: snapshot)?.text
    }

    /// A connection redirected to a TCP ExternalService's address and port is decided at once
    /// (some TCP protocols wait for the server to speak first), without TLS: the decision, recorded,
    /// with the address and port to dial; nil when the original destination is no TCP service's.
    func decideTCPService(original: SocketAddress, snapshot: PolicySnapshot) -> (decision: Decision, address: IPAddress, port: Int)? {
        guard snapshot.hasTCPServices, let ip = IPAddress(original)?.unmapped, let servicePort = original.port,
              let made = DecisionEngine.decideTCP(source: identity, sourceAddress: sourceIP, destination: ip, port: servicePort, snapshot: snapshot)
        else { return nil }
        port = servicePort
        decision = made
        noteHint(for: made, to: .tcp(address: ip, port: servicePort), snapshot: snapshot)
        return (made, ip, servicePort)
    }

    /// Whether `snapshot` (a policy installed while this connection was open) no longer lets it
    /// through: it is decided again on the facts it was decided on (SNI, CONNECT host, port, ECH,
    /// a plain-HTTP request's host and port, or the TCP service's address) with its source's identity under `snapshot`, and the address
    /// it relays to is vetted again. When it is revoked, the record's reason says so and why, and
    /// that sentence is returned (nil: still allowed); the verdict stays the one the connection was
    /// opened with. Connections policy never let through are not re-decided.
    func revoked(by snapshot: PolicySnapshot) -> String? {
        guard let decision, decision.lets else { return nil }
        let identity = sourceAddress.flatMap { snapshot.inventory.identity(of: $0) }
        var now: Decision
        if let httpHost {
            now = DecisionEngine.decide(source: identity, sourceAddress: sourceIP,
                                        facts: DestinationFacts(connectHost: httpHost, port: port, kind: .http), snapshot: snapshot)
        } else if sni == nil, connectHost == nil, let original = originalDestination, let ip = IPAddress(original)?.unmapped,
           let servicePort = original.port {
            now = DecisionEngine.decideTCP(source: identity, sourceAddress: sourceIP, destination: ip, port: servicePort, snapshot: snapshot)
                ?? .deny("no ExternalService serves TCP \(ip) port \(servicePort)", port: servicePort)
        } else {
            let facts = DestinationFacts(serverName: sni, connectHost: connectHost, port: port, hasECH: ech)
            now = DecisionEngine.decide(source: identity, sourceAddress: sourceIP, facts: facts, snapshot: snapshot)
        }
        if now.lets, let address = resolved.flatMap(IPAddress.init)?.unmapped,
           case .blocked(let why)? = UpstreamDialer.vet(address: address, serviceAddresses: now.serviceAddresses, snapshot: snapshot) {
            now = .deny(why)
        }
        guard !now.lets else { return nil }
        let revocation = "revoked by policy generation \(snapshot.generation): \(now.reason)"
        self.decision?.reason += "; \(revocation)"
        return revocation
    }

    /// Marks a connection refused because the client dialled an address its `name` (the SNI, a
    /// plain-HTTP request's Host) does not resolve to, with the hint for it.
    func noteAddressMismatchRefused(naming name: String) {
        addressMismatch = true
        hint = "the client must dial an address its \(name) resolves to; with spec.transparent.addressMismatch: Log it is connected "
            + "to the resolved address instead"
    }

    /// The hint of a connection whose name resolved into a blocked range.
    static let blockedHint = "if this is an on-premises service, list the range in its ExternalService's spec.addresses "
        + "(or in GatewayConfig spec.destinations.allowPrivate); otherwise the name's DNS answer is wrong or hostile"

    /// Records why the upstream could not be dialled. Returns how the connection ends, the alert
    /// a TLS client gets, and the denial reason for ``finish(_:log:metrics:reason:)``: the
    /// destination was refused (`destination_blocked`, `access_denied`), or, nil, the policy
    /// allowed it and the upstream could not be reached (the verdict stays, its reason says why;
    /// `internal_error`).
    func dialFailed(_ failure: UpstreamDialer.Failure) -> (cause: CloseCause, alert: TLSAlert, denial: String?) {
        switch failure {
        case .blocked(let why):
            hint = Self.blockedHint
            signals.append(.guardRefused)
            return (.destinationBlocked, .accessDenied, why)
        case .addressMismatch(let why):
            noteAddressMismatchRefused(naming: "SNI")
            return (.destinationBlocked, .accessDenied, why)
        case .resolveFailed(let why):
            decision?.reason += "; \(why)"
            return (.resolveFailed, .internalError, nil)
        case .connectFailed(let why, let timedOut):
            decision?.reason += "; \(why)"
            return (timedOut ? .connectTimeout : .connectFailed, .internalError, nil)
        }
    }
}
