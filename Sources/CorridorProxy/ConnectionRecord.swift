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
    /// Out of line, made by the first HTTP field set: a relayed connection's record (which may
    /// stay open for hours) does not carry four empty HTTP fields.
    private var http: HTTPFacts?
    private var httpFacts: HTTPFacts {
        if let http { return http }
        let facts = HTTPFacts()
        http = facts
        return facts
    }
    var bytesUp = 0
    var bytesDown = 0
    private(set) var written = false

    init(id: UInt64, listener: String, source: SocketAddress?) {
        self.id = id
        self.listener = listener
        self.source = source
        self.sourceAddress = source.flatMap(IPAddress.init)
        self.started = .now
        self.wallStart = AccessLog.now()
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
        let duration = ContinuousClock.now - started
        log.write(self, cause: cause, duration: duration)
        metrics.connectionEnded(listener: listener, verdict: decision?.verdict ?? .deny, cause: cause, up: bytesUp, down: bytesDown)
    }
}

/// The plain-HTTP request fields of a ``ConnectionRecord``.
private final class HTTPFacts {
    var method: String?
    var host: String?
    var path: String?
    var status: Int?
}

/// The decisions both data planes make, recorded the same way.
extension ConnectionRecord {
    /// Records what the ClientHello says and decides the connection on it.
    func decide(hello: ClientHelloInfo, snapshot: PolicySnapshot) -> Decision {
        sni = hello.serverName
        alpn = hello.alpn
        tlsVersions = hello.supportedVersions
        ech = hello.hasECH
        if port == nil, let original = originalDestination { port = original.port }
        let facts = DestinationFacts(serverName: hello.serverName, connectHost: connectHost, port: port, hasECH: hello.hasECH)
        let made = DecisionEngine.decide(source: identity, sourceAddress: sourceIP, facts: facts, snapshot: snapshot)
        decision = made
        return made
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
        return (made, ip, servicePort)
    }

    /// Whether `snapshot` (a policy installed while this connection was open) no longer lets it
    /// through: it is decided again on the facts it was decided on (SNI, CONNECT host, port, ECH,
    /// or the TCP service's address) with its source's identity under `snapshot`, and the address
    /// it relays to is vetted again. When it is revoked, the record's reason says so and why; the
    /// verdict stays the one the connection was opened with. Connections policy never let through
    /// are not re-decided.
    func revoked(by snapshot: PolicySnapshot) -> Bool {
        guard let decision, decision.lets else { return false }
        let identity = sourceAddress.flatMap { snapshot.inventory.identity(of: $0) }
        var now: Decision
        if sni == nil, connectHost == nil, let original = originalDestination, let ip = IPAddress(original)?.unmapped,
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
        guard !now.lets else { return false }
        self.decision?.reason += "; revoked by policy generation \(snapshot.generation): \(now.reason)"
        return true
    }

    /// Records why the upstream could not be dialled. Returns how the connection ends, the alert
    /// a TLS client gets, and the denial reason for ``finish(_:log:metrics:reason:)``: the
    /// destination was refused (`destination_blocked`, `access_denied`), or, nil, the policy
    /// allowed it and the upstream could not be reached (the verdict stays, its reason says why;
    /// `internal_error`).
    func dialFailed(_ failure: UpstreamDialer.Failure) -> (cause: CloseCause, alert: TLSAlert, denial: String?) {
        switch failure {
        case .blocked(let why):
            return (.destinationBlocked, .accessDenied, why)
        case .addressMismatch(let why):
            addressMismatch = true
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
