import Foundation
import Testing

/// Monitoring the way Prometheus users expect, tested with the real thing (Debian's `prometheus`
/// package): promtool checks and unit-tests the alert rules of deploy/monitoring; a real
/// Prometheus server scrapes a running gateway and PromQL returns the counts the test produced; the
/// dashboard's queries name only metrics the gateway exports.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct PrometheusTests {
    static let available = FileManager.default.isExecutableFile(atPath: "/usr/bin/prometheus")
        && FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool")
    static let monitoring = Repo.root.appendingPathComponent("deploy/monitoring")

    /// The PrometheusRule's spec as a plain rules file in `dir`.
    static func rulesFile(in dir: TempDir) throws -> String {
        let path = dir.path("rules.yaml")
        let result = try runCommand("python3", ["-c", """
            import sys, yaml
            rule = yaml.safe_load(open(sys.argv[1]))
            assert rule["kind"] == "PrometheusRule", rule["kind"]
            yaml.safe_dump(rule["spec"], open(sys.argv[2], "w"))
            """, monitoring.appendingPathComponent("prometheusrule.yaml").path, path])
        guard result.status == 0 else { throw TestError.failed("cannot extract the rules: \(result.stderr)") }
        return path
    }

    @Test(.enabled(if: available, "needs Debian's prometheus (scripts/test installs it)"))
    func theAlertRulesPassPromtoolAndTheirUnitTests() throws {
        let dir = try TempDir()
        let rules = try Self.rulesFile(in: dir)
        let check = try runCommand("promtool", ["check", "rules", rules])
        #expect(check.status == 0 && check.stdout.contains("SUCCESS: 7 rules found"), "\(check.stdout)\(check.stderr)")
        try FileManager.default.copyItem(atPath: Repo.support.appendingPathComponent("prometheus/rules_test.yaml").path, toPath: dir.path("rules_test.yaml"))
        let test = try runCommand("promtool", ["test", "rules", dir.path("rules_test.yaml")])
        #expect(test.status == 0 && test.stdout.contains("SUCCESS"), "\(test.stdout)\(test.stderr)")
    }

    @Test(.enabled(if: available, "needs Debian's prometheus (scripts/test installs it)"))
    func aRealPrometheusScrapesTheCountsTheTestProduced() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        for _ in 0..<3 { #expect(try h.curlViaConnect("https://api.allowed.test:\(h.upstream.port)/").stdout == "ok\n") }
        for _ in 0..<2 { _ = try h.curlViaConnect("https://evil.test:\(h.upstream.port)/") }
        #expect(await eventually { h.records().count == 5 })

        let dir = try TempDir()
        let port = 19_000 + Int(getpid() % 900)
        try """
            global: {scrape_interval: 1s, evaluation_interval: 1s}
            rule_files: [\(try Self.rulesFile(in: dir))]
            scrape_configs:
              - job_name: corridor
                static_configs: [{targets: ["127.0.0.1:\(h.adminPort)"]}]
            """.write(toFile: dir.path("prometheus.yml"), atomically: true, encoding: .utf8)
        let prometheus = try BackgroundProcess("prometheus", ["--config.file=\(dir.path("prometheus.yml"))", "--storage.tsdb.path=\(dir.path("data"))",
                                                              "--web.listen-address=127.0.0.1:\(port)"])
        defer { prometheus.signal(SIGTERM) }
        func query(_ promql: String) -> Double? {
            let result = try? runCommand("curl", ["-sS", "--max-time", "5", "--data-urlencode", "query=\(promql)",
                                                  "http://127.0.0.1:\(port)/api/v1/query"])
            guard let body = result?.stdout, let object = (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any],
                  let data = object["data"] as? [String: Any], let series = data["result"] as? [[String: Any]],
                  let value = series.first?["value"] as? [Any], let text = value.last as? String else { return nil }
            return Double(text)
        }
        #expect(await eventually(timeout: 40) { query(#"up{job="corridor"}"#) == 1 }, "\(prometheus.stderrText.suffix(2000))")
        #expect(query(#"sum(corridor_connections_total{decision="allow"})"#) == 3)
        #expect(query(#"sum(corridor_connections_total{decision="deny"})"#) == 2)
        #expect(query(#"corridor_service_connections_total{external_service="allowed-api",decision="allow"}"#) == 3)
        #expect(query(#"corridor_service_connections_total{external_service="none",decision="deny"}"#) == 2)
        #expect(query(#"corridor_namespace_connections_total{namespace="payments",decision="deny"}"#) == 2)
        #expect(query(#"sum(corridor_signals_total{signal="new_destination"})"#) == 1)
        // Cardinality: no label value comes from traffic; the unregistered name is nowhere.
        let labels = try runCommand("curl", ["-sS", "http://127.0.0.1:\(port)/api/v1/label/external_service/values"]).stdout
        #expect(labels.contains("allowed-api") && !labels.contains("evil.test"), "\(labels)")
    }

    @Test func theDashboardQueriesOnlyMetricsTheGatewayExports() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        _ = try h.curlViaConnect("https://api.allowed.test:\(h.upstream.port)/")
        _ = try h.curlViaConnect("https://evil.test:\(h.upstream.port)/")
        #expect(await eventually { h.records().count == 2 })
        let exported = Set(try runCommand("curl", ["-sS", "http://127.0.0.1:\(h.adminPort)/metrics"]).stdout
            .split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { String($0.split(separator: " ")[2]) })
        let data = try Data(contentsOf: Self.monitoring.appendingPathComponent("grafana-dashboard.json"))
        let dashboard = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let expressions = (dashboard["panels"] as? [[String: Any]] ?? []).flatMap { ($0["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String } }
        #expect(expressions.count >= 14)
        // Kubernetes-mode metrics exist only in Kubernetes mode.
        let kubernetesOnly: Set<String> = ["corridor_kubernetes_watch_up"]
        for expression in expressions {
            let names = expression.matches(of: /corridor_[a-z_]+/).map { String($0.output) }
                .map { $0.hasSuffix("_bucket") ? String($0.dropLast(7)) : $0 }
            for name in names where !kubernetesOnly.contains(name) {
                #expect(exported.contains(name), "the dashboard queries \(name), which the gateway does not export")
            }
        }
    }
}
