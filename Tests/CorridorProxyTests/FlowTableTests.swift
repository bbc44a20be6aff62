import CorridorPolicy
import Foundation
import Prometheus
import Testing

@testable import CorridorProxy

/// The flow table's shards, merged on read; its bound; the signals' own rules.
@Suite struct FlowTableTests {
    private func key(_ destination: String, namespace: String = "payments", decision: String = "allow") -> FlowKey {
        FlowKey(namespace: namespace, workload: "checkout", serviceAccount: "checkout", unknownSource: "", listener: "tls", destination: destination,
                port: 443, decision: decision, externalService: "s", egressPolicy: "")
    }

    static let registry = PrometheusCollectorRegistry()

    private func close(_ table: FlowTable, _ key: FlowKey, opened: Bool, up: Int, down: Int, why: String, at now: Double) {
        let series = FlowTable.CounterKey.namespaceConnections(namespace: "n", decision: "allow")
        _ = table.closed(key, wasOpened: opened, up: up, down: down, why: .text(why), at: now,
                         series: { .init(connections: series, bytesUp: series, bytesDown: series, byNamespace: series) }) { _ in
            Self.registry.makeCounter(descriptor: .init(metricName: "test_total", unitName: "", helpText: ""))
        }
    }

    @Test func aFlowLooksUpItsSeriesOnceAndEachSeriesIsMadeOnce() {
        let table = FlowTable(maxEntries: 1000, threads: 1)
        var asked = 0
        var made: [FlowTable.CounterKey] = []
        func close(_ key: FlowKey, service: String) -> FlowTable.FlowCounters {
            table.closed(key, wasOpened: false, up: 1, down: 2, why: .text(""), at: 1, series: {
                asked += 1
                return .init(connections: .serviceConnections(service: service, decision: "allow"),
                             bytesUp: .serviceBytes(service: service, direction: "up"), bytesDown: .serviceBytes(service: service, direction: "down"),
                             byNamespace: .namespaceConnections(namespace: "payments", decision: "allow"))
            }) { series in
                made.append(series)
                return Self.registry.makeCounter(descriptor: .init(metricName: "flow_table_test_total", unitName: "", helpText: ""), labels: [("series", "\(made.count)")])
            }
        }
        let first = close(key("a.test"), service: "a")
        let again = close(key("a.test"), service: "a")
        #expect(asked == 1 && made.count == 4, "a known flow asks for no series")
        #expect(first.connections === again.connections && first.byNamespace === again.byNamespace)
        let other = close(key("b.test"), service: "b")
        #expect(asked == 2 && made.count == 7, "a new flow asks once; the namespace series it shares is not made again")
        #expect(other.byNamespace === first.byNamespace && other.connections !== first.connections)
    }

    @Test func shardsOfSeveralThreadsMergeOnRead() async {
        let table = FlowTable(maxEntries: 10_000, threads: 4)
        // Four threads each open and close 100 connections of the same flow.
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    let thread = Thread {
                        for n in 0..<100 {
                            _ = table.opened(self.key("api.test"), at: Double(n))
                            self.close(table, self.key("api.test"), opened: true, up: 10, down: 20, why: "r\(n)", at: Double(n))
                        }
                    }
                    thread.start()
                    while !thread.isFinished { try? await Task.sleep(for: .milliseconds(5)) }
                }
            }
        }
        let flows = table.flows()
        #expect(flows.count == 1)
        #expect(flows.first?.stats.connections == 400 && flows.first?.stats.active == 0)
        #expect(flows.first?.stats.bytesUp == 4000 && flows.first?.stats.bytesDown == 8000)
        #expect(flows.first?.stats.lastReason == "r99")
    }

    @Test func newDestinationIsNewOncePerWorkloadAndDestination() {
        let table = FlowTable(maxEntries: 1000, threads: 1)
        #expect(table.opened(key("a.test"), at: 1))
        #expect(!table.opened(key("a.test"), at: 2))
        #expect(!table.opened(key("a.test", decision: "audit"), at: 3), "the same destination, whatever the decision")
        #expect(table.opened(key("b.test"), at: 4))
        #expect(table.opened(key("a.test", namespace: "shop"), at: 5), "another workload")
    }

    @Test func theBoundEvictsTheLeastRecentlySeenIdleFlows() {
        let evicted = EvictionCount()
        let table = FlowTable(maxEntries: 100, threads: 1) { evicted.add($0) }
        #expect(table.shardCapacity == 100)
        _ = table.opened(key("live.test"), at: 0)  // stays active: never evicted
        for n in 0..<1000 { close(table, key("h\(n).test"), opened: false, up: 0, down: 0, why: "", at: Double(n + 1)) }
        let flows = table.flows()
        #expect(flows.count <= 100)
        #expect(flows.contains { $0.key.destination == "live.test" })
        #expect(flows.contains { $0.key.destination == "h999.test" }, "the newest stay")
        #expect(table.evictions > 0 && table.evictions == evicted.total)
    }

    @Test(arguments: [
        ("x8k2j4h9q3z7w1v5.evil.test", true), ("a1b2c3d4e5f6g7h8.example.com", true),
        ("mzxw6ytboi2dqnrtgeztsmjwgm4dkmbvhaztamrz.tunnel.example", true),
        ("api.stripe.com", false), ("analyticsmetricsservice.example.com", false), ("storage-api-2.eu-west-1.amazonaws.com", false),
        ("www.googleapis.com", false), ("s3.us-east-2.amazonaws.com", false),
        // Hyphens neither hide a generated label nor make a word look generated.
        ("kqzvxwjpf----------------------------------------hmtlrbgny.wild.test", true), ("q-------------------------------wxzjvkbpmfhgtlr.evil.test", true),
        ("analytics-metrics-service-------.example.com", false),
    ])
    func generatedNames(name: String, generated: Bool) {
        #expect(GeneratedNameCheck.looksGenerated(name, minLength: 16, minEntropy: 3.5) == generated)
    }

    @Test func aDenyBurstNeedsThresholdDenialsWithinTheWindow() {
        let detector = DenyBurstDetector(threshold: 3, window: .seconds(60))
        #expect(!detector.denied("a", at: 0))
        #expect(!detector.denied("a", at: 10))
        #expect(detector.denied("a", at: 20))
        #expect(!detector.denied("b", at: 20), "per workload")
        #expect(!detector.denied("a", at: 200), "the window slid past the old ones")
    }

    @Test func denialsFromManySourcesDoNotWipeAWorkloadsBurst() {
        let detector = DenyBurstDetector(threshold: 3, window: .seconds(60))
        #expect(!detector.denied("workload", at: 0))
        #expect(!detector.denied("workload", at: 1))
        for i in 0..<(DenyBurstDetector.maxWorkloads + 50) { _ = detector.denied("source-\(i)", at: 2) }
        #expect(detector.denied("workload", at: 3), "its window survived the flood")
        #expect(detector.denied("workload", at: 100) == false, "and still slides")
    }
}

final class EvictionCount: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func add(_ n: Int) { lock.lock(); value += n; lock.unlock() }
    var total: Int { lock.lock(); defer { lock.unlock() }; return value }
}
