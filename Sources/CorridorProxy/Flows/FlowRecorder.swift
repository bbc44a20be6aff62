import CorridorPolicy
import NIOCore
import Prometheus

/// Where every connection's life meets the flow table, the live stream and the signals: told when
/// a connection starts relaying (``opened(_:)``), before its final record is written
/// (``finishing(_:cause:)``, which settles its signals) and after (``finished(_:cause:line:)``).
/// Runs on the connection's own thread; see ``FlowTable`` for why that takes no contended lock.
public final class FlowRecorder: Sendable {
    public let table: FlowTable
    public let stream = FlowStream()
    let settings: GatewayConfig.Signals
    /// Zero: no interim records.
    let interimInterval: Duration
    private let denyBursts: DenyBurstDetector
    private let signalCounters: [Signal: Counter]
    private let registry: PrometheusCollectorRegistry
    private let writeFailures: Counter
    private let logWritable: Gauge

    /// `threads`: the data-plane threads that will share `spec.flows.maxEntries`.
    public init(gateway: GatewayConfig, threads: Int, metrics: ProxyMetrics) {
        let evictions = metrics.registry.makeCounter(descriptor: .init(metricName: "corridor_flow_evictions_total", unitName: "",
                                                                       helpText: "Flows evicted from the flow table to keep spec.flows.maxEntries"))
        table = FlowTable(maxEntries: gateway.flows.maxEntries, threads: threads) { evictions.increment(by: Int64($0)) }
        settings = gateway.signals
        interimInterval = gateway.logging.interimInterval
        denyBursts = DenyBurstDetector(threshold: gateway.signals.denyBurstThreshold, window: gateway.signals.denyBurstWindow)
        var counters: [Signal: Counter] = [:]
        for signal in Signal.allCases {
            counters[signal] = metrics.registry.makeCounter(
                descriptor: .init(metricName: "corridor_signals_total", unitName: "", helpText: "Suspicious-traffic signals raised, by signal"),
                labels: [("signal", signal.rawValue)])
        }
        signalCounters = counters
        registry = metrics.registry
        writeFailures = metrics.registry.makeCounter(descriptor: .init(metricName: "corridor_access_log_write_failures_total", unitName: "",
                                                                       helpText: "Access records that could not be written whole"))
        logWritable = metrics.registry.makeGauge(descriptor: .init(metricName: "corridor_access_log_writable", unitName: "",
                                                                   helpText: "1 while access records are written; 0 while the last one could not be"))
        logWritable.set(to: 1)
    }

    func key(of record: ConnectionRecord) -> FlowKey {
        let identity = record.identity
        var destination = record.connectHost ?? record.sni ?? record.httpHost
        if destination == nil, let original = record.originalDestination, let ip = IPAddress(original) { destination = ip.unmapped.description }
        let decision = record.decision
        return FlowKey(namespace: identity?.namespace ?? "", workload: identity?.workload ?? "", serviceAccount: identity?.serviceAccount ?? "",
                       unknownSource: identity == nil ? record.sourceIP : "", listener: record.listener, destination: destination ?? "",
                       port: decision?.port ?? record.port ?? 0, decision: decision?.verdict.rawValue ?? "deny",
                       externalService: decision?.externalService ?? "", egressPolicy: decision?.egressPolicy ?? "")
    }

    /// The connection starts relaying.
    func opened(_ record: ConnectionRecord) {
        guard !record.opened else { return }
        record.opened = true
        let key = key(of: record)
        let new = table.opened(key, at: AccessLog.now())
        var signals = record.signals
        if new && settings.newDestination { signals.append(.newDestination) }
        nameSignals(record, into: &signals)
        if signals != record.signals { record.signals = signals }
        stream.publish(.open, key: key, signals: signals) { AccessLog.openLine(record) }
    }

    /// The final record is about to be written: its signals are settled.
    func finishing(_ record: ConnectionRecord, cause: CloseCause) {
        var signals = record.signals
        if !settings.guardRefused { signals.removeAll { $0 == .guardRefused } }
        if !record.opened { nameSignals(record, into: &signals) }
        if settings.denyBurst, record.decision?.verdict ?? .deny == .deny {
            let identity = record.identity
            let who = identity.map { "\($0.namespace)/\($0.workload)" } ?? "unknown \(record.sourceIP)"
            if denyBursts.denied(who, at: AccessLog.now()) { signals.append(.denyBurst) }
        }
        if settings.uploadHeavy, record.bytesUp >= settings.uploadHeavyMiB << 20, record.bytesUp >= settings.uploadHeavyRatio * record.bytesDown {
            signals.append(.uploadHeavy)
        }
        if signals != record.signals { record.signals = signals }
    }

    /// Signals of the destination itself, raised once: a generated-looking name, an address mismatch.
    private func nameSignals(_ record: ConnectionRecord, into signals: inout [Signal]) {
        if settings.generatedName, !signals.contains(.generatedName), let name = record.connectHost ?? record.sni ?? record.httpHost,
           GeneratedNameCheck.looksGenerated(name, minLength: settings.generatedNameMinLength, minEntropy: settings.generatedNameMinEntropy) {
            signals.append(.generatedName)
        }
        if settings.addressMismatch, record.addressMismatch, !signals.contains(.addressMismatch) { signals.append(.addressMismatch) }
    }

    /// The final record was written as `line`.
    func finished(_ record: ConnectionRecord, cause: CloseCause, line: [UInt8]) {
        let key = key(of: record)
        let counters = table.closed(
            key, wasOpened: record.opened, up: record.bytesUp, down: record.bytesDown, why: record.decision?.why ?? .text(cause.rawValue),
            at: AccessLog.now(),
            series: {
                let service = key.externalService.isEmpty ? "none" : key.externalService
                let namespace = key.unknownSource.isEmpty ? key.namespace : "unknown"
                return .init(connections: .serviceConnections(service: service, decision: key.decision),
                             bytesUp: .serviceBytes(service: service, direction: "up"), bytesDown: .serviceBytes(service: service, direction: "down"),
                             byNamespace: .namespaceConnections(namespace: namespace, decision: key.decision))
            },
            make: makeCounter)
        counters.connections.increment()
        if record.bytesUp > 0 { counters.bytesUp.increment(by: Int64(record.bytesUp)) }
        if record.bytesDown > 0 { counters.bytesDown.increment(by: Int64(record.bytesDown)) }
        counters.byNamespace.increment()
        let signals = record.signals
        for signal in signals { signalCounters[signal]?.increment() }
        stream.publish(.close, key: key, signals: signals) { line }
    }

    /// The per-service and per-namespace series (`corridor_service_connections_total`,
    /// `corridor_service_bytes_total`, `corridor_namespace_connections_total`): label values from
    /// configuration only (`none` for no service, `unknown` for an unknown source).
    private func makeCounter(_ key: FlowTable.CounterKey) -> Counter {
        switch key {
        case .serviceConnections(let service, let decision):
            return registry.makeCounter(descriptor: .init(metricName: "corridor_service_connections_total", unitName: "",
                                                          helpText: "Connections by ExternalService (none: no service matched) and decision, counted when they end"),
                                        labels: [("external_service", service), ("decision", decision)])
        case .serviceBytes(let service, let direction):
            return registry.makeCounter(descriptor: .init(metricName: "corridor_service_bytes_total", unitName: "",
                                                          helpText: "Bytes relayed by ExternalService: up = client to upstream, down = upstream to client"),
                                        labels: [("external_service", service), ("direction", direction)])
        case .namespaceConnections(let namespace, let decision):
            return registry.makeCounter(descriptor: .init(metricName: "corridor_namespace_connections_total", unitName: "",
                                                          helpText: "Connections by source namespace (unknown: no identity) and decision, counted when they end"),
                                        labels: [("namespace", namespace), ("decision", decision)])
        }
    }

    /// An access record could not be written whole.
    func accessLogWriteFailed() { writeFailures.increment() }

    /// Records could (true) or could not (false) be written, since the last change.
    func accessLogWritable(_ writable: Bool) { logWritable.set(to: writable ? 1 : 0) }

    /// An interim record was written as `line`.
    func interim(_ record: ConnectionRecord, line: [UInt8]) {
        stream.publish(.interim, key: key(of: record), signals: record.signals) { line }
    }

    /// Whether `record`, open since it started, is due an interim record at `now`.
    func interimDue(_ record: ConnectionRecord, at now: ContinuousClock.Instant) -> Bool {
        guard interimInterval > .zero, record.opened else { return false }
        return now - record.started >= interimInterval * Int(record.interims + 1)
    }
}
