import CorridorPolicy
import CorridorWire
import Prometheus

/// The gateway's Prometheus metrics. Names are stable; labels are small closed sets
/// (listener, verdict, close cause, parse failure reason), never host names or addresses.
public final class ProxyMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let bytesUp: Counter
    private let bytesDown: Counter
    private let active: Gauge
    private let connectLatency: DurationHistogram
    private let policyGeneration: Gauge
    private let policyServices: Gauge
    private let ready: Gauge
    /// Counters for every label value known in advance, made once: the hot path only looks them up.
    private let connections: [String: [Decision.Verdict: Counter]]
    private let closed: [CloseCause: Counter]
    private let helloFailures: [ClientHelloRejection: Counter]

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        bytesUp = registry.makeCounter(descriptor: .init(metricName: "corridor_bytes_total", unitName: "", helpText: "Bytes relayed: up = client to upstream, down = upstream to client"), labels: [("direction", "up")])
        bytesDown = registry.makeCounter(descriptor: .init(metricName: "corridor_bytes_total", unitName: "", helpText: "Bytes relayed: up = client to upstream, down = upstream to client"), labels: [("direction", "down")])
        active = registry.makeGauge(descriptor: .init(metricName: "corridor_active_connections", unitName: "", helpText: "Client connections open now"))
        connectLatency = registry.makeDurationHistogram(
            descriptor: .init(metricName: "corridor_upstream_connect_seconds", unitName: "",
                              helpText: "Time to establish the upstream TCP connection (after resolution)"),
            buckets: [.milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                      .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5)])
        policyGeneration = registry.makeGauge(descriptor: .init(metricName: "corridor_policy_generation", unitName: "", helpText: "Generation of the policy snapshot in force"))
        policyServices = registry.makeGauge(descriptor: .init(metricName: "corridor_policy_external_services", unitName: "", helpText: "ExternalServices in the policy in force"))
        var connections: [String: [Decision.Verdict: Counter]] = [:]
        for listener in ["tls", "connect", "http"] {
            for verdict in [Decision.Verdict.allow, .deny, .audit] {
                connections[listener, default: [:]][verdict] = registry.makeCounter(
                    descriptor: .init(metricName: "corridor_connections_total", unitName: "",
                                      helpText: "Client connections by listener and decision, counted when they end"),
                    labels: [("listener", listener), ("decision", verdict.rawValue)])
            }
        }
        self.connections = connections
        var closed: [CloseCause: Counter] = [:]
        for cause in CloseCause.allCases {
            closed[cause] = registry.makeCounter(
                descriptor: .init(metricName: "corridor_connections_closed_total", unitName: "", helpText: "Client connections by the cause of their end"),
                labels: [("cause", cause.rawValue)])
        }
        self.closed = closed
        var helloFailures: [ClientHelloRejection: Counter] = [:]
        for reason in ClientHelloRejection.allCases {
            helloFailures[reason] = registry.makeCounter(
                descriptor: .init(metricName: "corridor_clienthello_failures_total", unitName: "", helpText: "ClientHellos refused by the parser, by reason"),
                labels: [("reason", reason.rawValue)])
        }
        self.helloFailures = helloFailures
        ready = registry.makeGauge(descriptor: .init(metricName: "corridor_ready", unitName: "", helpText: "1 when the gateway has a policy and its listeners are bound"))
    }

    func connectionOpened() { active.increment() }

    func connectionEnded(listener: String, verdict: Decision.Verdict, cause: CloseCause, up: Int, down: Int) {
        active.decrement()
        connections[listener]?[verdict]?.increment()
        closed[cause]?.increment()
        if up > 0 { bytesUp.increment(by: Int64(up)) }
        if down > 0 { bytesDown.increment(by: Int64(down)) }
    }

    /// A connection counted as open turned into per-request records (plain HTTP on the CONNECT listener).
    func connectionHandedOver() { active.decrement() }

    func upstreamConnected(after duration: Duration) { connectLatency.record(duration) }

    func clientHelloRejected(_ reason: ClientHelloRejection) {
        helloFailures[reason]?.increment()
    }

    func connectRequestRejected(_ reason: String) {
        registry.makeCounter(descriptor: .init(metricName: "corridor_connect_request_failures_total", unitName: "", helpText: "CONNECT requests refused before a policy decision, by reason"), labels: [("reason", reason)]).increment()
    }

    /// Called by the control plane after each load or reload attempt.
    public func policyReload(succeeded: Bool, snapshot: PolicySnapshot) {
        registry.makeCounter(descriptor: .init(metricName: "corridor_policy_reloads_total", unitName: "", helpText: "Policy loads and reloads by result"), labels: [("result", succeeded ? "success" : "failure")]).increment()
        policyGeneration.set(to: Double(snapshot.generation))
        policyServices.set(to: Double(snapshot.serviceCount))
        registry.makeGauge(descriptor: .init(metricName: "corridor_audit_mode", unitName: "",
                                             helpText: "1 while the gateway is in Audit mode (spec.mode: Audit): connections the policy refuses are let through"))
            .set(to: snapshot.gateway.mode == .audit ? 1 : 0)
    }

    public func setReady(_ value: Bool) { ready.set(to: value ? 1 : 0) }

    public func render() -> [UInt8] { registry.emitToBuffer() }
}
