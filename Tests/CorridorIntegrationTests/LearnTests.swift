import CorridorGateway
import Foundation
import Logging
import Testing

/// `corridor learn` on logs the real gateway wrote under `spec.mode: Audit`: the proposal passes
/// `corridor check`, and the real gateway, in Enforce with it, allows every connection of the log
/// and refuses other names of the same suffix; `--merge` proposes only what a policy lacks.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct LearnTests {
    /// The gateway settings and workloads, in `mode`, with no service and no policy.
    static func baseConfig(mode: String, upstreamPort: Int, accessLog: String) -> String {
        """
        apiVersion: corridor.dev/v1alpha1
        kind: GatewayConfig
        metadata: {name: learn}
        spec:
          mode: \(mode)
          listeners: {tls: 127.0.0.1:0, connect: 127.0.0.1:0, http: 127.0.0.1:0, admin: 127.0.0.1:0}
          tls: {upstreamPort: \(upstreamPort)}
          resolver:
            static: {"*.learn.test": [127.0.0.1], api.other.test: [127.0.0.1], plain.learn.test: [127.0.0.1]}
            system: false
          destinations: {allowPrivate: [127.0.0.1/32]}
          logging: {accessLog: {file: \(accessLog)}}
        ---
        apiVersion: corridor.dev/v1alpha1
        kind: Workload
        metadata: {name: checkout, namespace: payments}
        spec: {addresses: [127.0.0.1/32], serviceAccount: checkout, labels: {app: checkout}}
        ---
        apiVersion: corridor.dev/v1alpha1
        kind: Workload
        metadata: {name: reporting, namespace: analytics}
        spec: {addresses: [127.0.0.3/32], serviceAccount: reporting}
        """
    }

    struct Ports { var tls: Int; var connect: Int; var http: Int }

    static func start(_ config: String) async throws -> (Gateway, Ports) {
        var logger = Logger(label: "learn")
        logger.logLevel = .error
        let gateway = try Gateway(options: .init(configPath: config, workers: 1), logger: logger)
        try await gateway.start()
        let bound = gateway.boundAddresses
        return (gateway, Ports(tls: bound["tls"]!.port!, connect: bound["connect"]!.port!, http: bound["http"]!.port!))
    }

    /// The traffic: what each workload does. Returns one line per connection: whether it got through.
    static func traffic(_ ports: Ports, upstream: Int, ca: String, extra: [(source: String, host: String)] = []) throws -> [String: Bool] {
        var results: [String: Bool] = [:]
        func connect(_ source: String, _ host: String) throws {
            // -k: the test certificate does not name these hosts; whether the gateway lets the
            // connection through is what counts.
            let r = try runCommand("curl", ["-sS", "--max-time", "10", "-k", "--interface", source, "-x", "http://127.0.0.1:\(ports.connect)",
                                            "https://\(host):\(upstream)/"])
            results["connect \(source) \(host)"] = r.stdout == "ok\n"
        }
        try connect("127.0.0.1", "a.learn.test")
        try connect("127.0.0.1", "b.learn.test")
        try connect("127.0.0.3", "api.other.test")
        for (source, host) in extra { try connect(source, host) }
        let tls = try runCommand("curl", ["-sS", "--max-time", "10", "-k", "--interface", "127.0.0.3",
                                          "--connect-to", "c.learn.test:\(upstream):127.0.0.1:\(ports.tls)", "https://c.learn.test:\(upstream)/"])
        results["tls 127.0.0.3 c.learn.test"] = tls.stdout == "ok\n"
        let http = try runCommand("curl", ["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "--interface", "127.0.0.1",
                                           "-H", "Host: plain.learn.test", "http://127.0.0.1:\(ports.http)/x"])
        // Let through, the request is originated over TLS to port 443 (where nothing listens): 502.
        results["http 127.0.0.1 plain.learn.test"] = http.stdout != "403"
        return results
    }

    @Test func aLearnedPolicyAllowsWhatWasSeenAndNothingElse() async throws {
        let dir = try TempDir()
        let pki = try TestPKI(in: dir)
        let upstream = try TLSUpstream(pki: pki, dir: dir)
        let auditLog = dir.path("audit.log")
        let auditConfig = dir.path("audit.yaml")
        try Self.baseConfig(mode: "Audit", upstreamPort: upstream.port, accessLog: auditLog).write(toFile: auditConfig, atomically: true, encoding: .utf8)
        let (auditing, auditPorts) = try await Self.start(auditConfig)
        let seen = try Self.traffic(auditPorts, upstream: upstream.port, ca: pki.caCert, extra: [("127.0.0.5", "a.learn.test")])
        await auditing.shutdown(drain: .milliseconds(300))
        #expect(seen.values.allSatisfy { $0 }, "under Audit everything policy-refused gets through: \(seen)")
        // A rotated, compressed log.
        #expect(try runCommand("gzip", ["-k", auditLog]).status == 0)

        let learned = try runCommand(Repo.corridorBinary.path, ["learn", auditLog + ".gz"])
        #expect(learned.status == 0, "\(learned.stderr)")
        #expect(learned.stderr.contains("127.0.0.5 (1)"), "the unknown source is reported: \(learned.stderr)")
        #expect(!learned.stdout.contains("*."), "no wildcard unless asked: \(learned.stdout)")
        #expect(learned.stdout.contains("corridor.dev/learned"))
        // The same log cut short (copied while being compressed): an error, never a partial answer.
        let whole = try Data(contentsOf: URL(fileURLWithPath: auditLog + ".gz"))
        try whole.prefix(whole.count - 12).write(to: URL(fileURLWithPath: dir.path("cut.log.gz")))
        let cut = try runCommand(Repo.corridorBinary.path, ["learn", dir.path("cut.log.gz")])
        #expect(cut.status != 0 && cut.stdout.isEmpty, "\(cut.stdout)")
        #expect(cut.stderr.contains("cut.log.gz: unexpected end of file") && cut.stderr.contains("the file is incomplete"), "\(cut.stderr)")

        let enforceLog = dir.path("enforce.log")
        let enforceConfig = dir.path("enforce.yaml")
        try (Self.baseConfig(mode: "Enforce", upstreamPort: upstream.port, accessLog: enforceLog) + "\n---\n" + learned.stdout)
            .write(toFile: enforceConfig, atomically: true, encoding: .utf8)
        let check = try runCommand(Repo.corridorBinary.path, ["check", "--config", enforceConfig])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        let (enforcing, ports) = try await Self.start(enforceConfig)
        let replay = try Self.traffic(ports, upstream: upstream.port, ca: pki.caCert,
                                      extra: [("127.0.0.1", "d.learn.test"), ("127.0.0.3", "a.learn.test"), ("127.0.0.5", "a.learn.test")])
        await enforcing.shutdown(drain: .milliseconds(300))
        for key in seen.keys where !key.contains("127.0.0.5") {
            #expect(replay[key] == true, "learned, so allowed: \(key)")
        }
        #expect(replay["connect 127.0.0.1 d.learn.test"] == false, "another name of the same suffix is refused")
        #expect(replay["connect 127.0.0.3 a.learn.test"] == false, "another workload is not granted what checkout used")
        #expect(replay["connect 127.0.0.5 a.learn.test"] == false, "an unknown source is never learned")

        // With a wildcard threshold of 2, a.learn.test and b.learn.test (and c, seen from the tls
        // listener) become *.learn.test; learn.test is no public suffix.
        let wild = try runCommand(Repo.corridorBinary.path, ["learn", "--wildcard-threshold", "2", auditLog])
        #expect(wild.stdout.contains(#"hosts: ["*.learn.test"]"#), "\(wild.stdout)")

        // --merge: a policy that already grants a.learn.test to checkout; only the rest is proposed.
        let partial = dir.path("partial.yaml")
        try (Self.baseConfig(mode: "Enforce", upstreamPort: upstream.port, accessLog: enforceLog) + """

            ---
            apiVersion: corridor.dev/v1alpha1
            kind: ExternalService
            metadata: {name: a-api}
            spec: {hosts: [a.learn.test], ports: [{number: \(upstream.port), protocol: TLS}]}
            ---
            apiVersion: corridor.dev/v1alpha1
            kind: EgressPolicy
            metadata: {name: checkout, namespace: payments}
            spec:
              podSelector: {matchLabels: {app: checkout}}
              egress: [{to: [{externalService: a-api}]}]
            """).write(toFile: partial, atomically: true, encoding: .utf8)
        let merged = try runCommand(Repo.corridorBinary.path, ["learn", "--merge", partial, auditLog])
        #expect(merged.status == 0, "\(merged.stderr)")
        #expect(!merged.stdout.contains("\"a.learn.test\""), "already registered: \(merged.stdout)")
        #expect(merged.stdout.contains("\"b.learn.test\""))
        #expect(merged.stdout.contains("changed EgressPolicy"), "checkout's existing policy gains the grant: \(merged.stdout)")
        let combined = dir.path("combined.yaml")
        // The changed policy replaces the old one; new objects are added.
        let partialText = try String(contentsOfFile: partial, encoding: .utf8)
        let withoutOldPolicy = partialText.components(separatedBy: "\n---\n").filter { !$0.contains("kind: EgressPolicy") }.joined(separator: "\n---\n")
        try (withoutOldPolicy + "\n---\n" + merged.stdout).write(toFile: combined, atomically: true, encoding: .utf8)
        let explain = try runCommand(Repo.corridorBinary.path, ["explain", "--config", combined, "--source-ip", "127.0.0.1",
                                                                "--to", "b.learn.test:\(upstream.port)", "--via", "connect"])
        #expect(explain.status == 0, "\(explain.stdout)\(explain.stderr)")
    }

    /// A name that never resolved is no grant: it would allow nothing that works, and such names
    /// are typos or generated ones.
    @Test func namesThatDidNotResolveAreNotLearned() throws {
        let dir = try TempDir()
        let log = dir.path("audit.log")
        func record(_ host: String, _ cause: String) -> String {
            #"{"time":"2026-12-07T10:00:00.000Z","id":1,"listener":"connect","src":"127.0.0.1:40000","#
                + #""identity":{"namespace":"payments","workload":"checkout","serviceAccount":"checkout","labels":{"app":"checkout"}},"#
                + #""connectHost":"\#(host)","sni":"\#(host)","port":443,"decision":"audit","bytesUp":0,"bytesDown":0,"durationMs":3,"closeCause":"\#(cause)","event":"close"}"#
        }
        try [record("api.learn.test", "completed"), record("api.leran.test", "resolve_failed"), record("api.leran.test", "resolve_failed")]
            .joined(separator: "\n").write(toFile: log, atomically: true, encoding: .utf8)
        let learned = try runCommand(Repo.corridorBinary.path, ["learn", log])
        #expect(learned.status == 0, "\(learned.stderr)")
        #expect(learned.stdout.contains("\"api.learn.test\""), "\(learned.stdout)")
        #expect(!learned.stdout.contains("leran"), "\(learned.stdout)")
        #expect(learned.stderr.contains("not learned: 2 connections to 1 name(s) that did not resolve"), "\(learned.stderr)")
        #expect(learned.stderr.contains("api.leran.test (2)"), "\(learned.stderr)")
    }

    /// A grant goes to the workloads that used it: two groups on one service account (a labelled
    /// Deployment and an unlabelled CronJob) each get their own, and a policy of the namespace
    /// that selects every pod is not where a grant goes (found in review: both widened the grant
    /// to workloads that never asked for it). A plain-HTTP request sent to the connect listener
    /// (an http_proxy client) is learned like one sent to the http listener.
    @Test func aGrantGoesOnlyToTheWorkloadsThatUsedIt() throws {
        let dir = try TempDir()
        let log = dir.path("audit.log")
        func record(_ labels: String, _ destination: String) -> String {
            #"{"time":"2026-12-07T10:00:00.000Z","id":1,"listener":"connect","src":"127.0.0.1:40000","#
                + #""identity":{"namespace":"shop","workload":"w","serviceAccount":"shared","labels":{\#(labels)}},"#
                + destination + #","decision":"audit","bytesUp":0,"bytesDown":0,"durationMs":3,"closeCause":"completed","event":"close"}"#
        }
        try [
            record("", #""connectHost":"one.learn.test","sni":"one.learn.test","port":443"#),
            record(#""app":"web""#, #""connectHost":"pay.learn.test","sni":"pay.learn.test","port":443"#),
            record(#""app":"legacy""#, #""method":"GET","host":"plain.learn.test","port":8080,"status":200"#),
        ].joined(separator: "\n").write(toFile: log, atomically: true, encoding: .utf8)
        let existing = dir.path("existing.yaml")
        try """
            apiVersion: corridor.dev/v1alpha1
            kind: GatewayConfig
            metadata: {name: learn}
            spec: {listeners: {connect: 127.0.0.1:0}}
            ---
            apiVersion: corridor.dev/v1alpha1
            kind: Workload
            metadata: {name: cron, namespace: shop}
            spec: {addresses: [10.0.0.1/32], serviceAccount: shared}
            ---
            apiVersion: corridor.dev/v1alpha1
            kind: Workload
            metadata: {name: web, namespace: shop}
            spec: {addresses: [10.0.0.2/32], serviceAccount: shared, labels: {app: web}}
            ---
            apiVersion: corridor.dev/v1alpha1
            kind: Workload
            metadata: {name: batch, namespace: shop}
            spec: {addresses: [10.0.0.3/32], serviceAccount: shared, labels: {app: batch}}
            ---
            apiVersion: corridor.dev/v1alpha1
            kind: ExternalService
            metadata: {name: telemetry}
            spec: {hosts: [telemetry.learn.test], ports: [{number: 443, protocol: TLS}]}
            ---
            apiVersion: corridor.dev/v1alpha1
            kind: EgressPolicy
            metadata: {name: all-pods-telemetry, namespace: shop}
            spec:
              podSelector: {}
              egress: [{to: [{externalService: telemetry}]}]
            """.write(toFile: existing, atomically: true, encoding: .utf8)
        let learned = try runCommand(Repo.corridorBinary.path, ["learn", "--merge", existing, log])
        #expect(learned.status == 0, "\(learned.stderr)")
        #expect(learned.stdout.contains("\"plain.learn.test\""), "the http_proxy request is learned: \(learned.stdout)\(learned.stderr)")
        #expect(!learned.stdout.contains("all-pods-telemetry"), "\(learned.stdout)")
        let combined = dir.path("combined.yaml")
        try (String(contentsOfFile: existing, encoding: .utf8) + "\n---\n" + learned.stdout).write(toFile: combined, atomically: true, encoding: .utf8)
        let check = try runCommand(Repo.corridorBinary.path, ["check", "--config", combined])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        func verdict(_ source: String, _ to: String) throws -> String {
            let explain = try runCommand(Repo.corridorBinary.path, ["explain", "--config", combined, "--source-ip", source, "--to", to, "--via", "connect"])
            return explain.stdout.split(separator: "\n").first.map(String.init) ?? explain.stderr
        }
        #expect(try verdict("10.0.0.1", "one.learn.test:443").contains("allow"))
        #expect(try verdict("10.0.0.2", "pay.learn.test:443").contains("allow"))
        for (source, to) in [("10.0.0.1", "pay.learn.test:443"), ("10.0.0.2", "one.learn.test:443"), ("10.0.0.3", "one.learn.test:443"),
                             ("10.0.0.3", "pay.learn.test:443")] {
            let said = try verdict(source, to)
            #expect(!said.contains("allow"), "\(source) -> \(to) never used it: \(said)\n\(learned.stdout)")
        }
    }

    /// What learn says it did not learn, and why (found by a README walkthrough): a denial in a log
    /// of Audit mode is a guard's refusal, not a policy's; a log with nothing to learn says so.
    @Test func whatWasNotLearnedIsToldAsItIs() throws {
        let dir = try TempDir()
        let log = dir.path("audit.log")
        func record(_ host: String, _ decision: String, _ cause: String) -> String {
            #"{"time":"2026-12-07T10:00:00.000Z","id":1,"listener":"connect","src":"127.0.0.1:40000","#
                + #""identity":{"namespace":"payments","workload":"checkout","serviceAccount":"checkout","labels":{"app":"checkout"}},"#
                + #""connectHost":"\#(host)","sni":"other.test","port":443,"decision":"\#(decision)","bytesUp":0,"bytesDown":0,"durationMs":3,"closeCause":"\#(cause)","event":"close"}"#
        }
        try [record("a.learn.test", "audit", "completed"), record("b.learn.test", "deny", "denied")]
            .joined(separator: "\n").write(toFile: log, atomically: true, encoding: .utf8)
        let audit = try runCommand(Repo.corridorBinary.path, ["learn", log])
        #expect(audit.stderr.contains("1 denied connections, refused in Audit mode too"), "\(audit.stderr)")
        let none = try runCommand(Repo.corridorBinary.path, ["learn", "--namespace", "shop", log])
        #expect(none.stdout.hasPrefix("# corridor learn: nothing to propose (no connection to learn from"), "\(none.stdout)")
    }

    @Test func badInputIsRefusedWithAReason() throws {
        let dir = try TempDir()
        let missing = try runCommand(Repo.corridorBinary.path, ["learn", dir.path("nope.log")])
        #expect(missing.status == 2 && missing.stderr.contains("nope.log: cannot open"), "\(missing.stderr)")
        let since = try runCommand(Repo.corridorBinary.path, ["learn", "--since", "yesterday", "-"])
        #expect(since.status == 2 && since.stderr.contains("--since: 'yesterday' is not a date"), "\(since.stderr)")
        let empty = try runCommand(Repo.corridorBinary.path, ["learn", "--since", "2026-12-07", "--until", "2026-12-01", "-"])
        #expect(empty.status == 2 && empty.stderr.contains("--since 2026-12-07 is not before --until 2026-12-01"), "\(empty.stderr)")
        let garbage = dir.path("garbage.log")
        let interim = #"{"time":"2026-12-07T10:00:00.000Z","id":9,"listener":"tls","src":"127.0.0.1:40000","sni":"api.allowed.test","decision":"allow","bytesUp":10,"bytesDown":20,"durationMs":300000,"event":"interim"}"#
        try "not json\n{\"also\": \"not a record\"}\n\(interim)\n".write(toFile: garbage, atomically: true, encoding: .utf8)
        let skipped = try runCommand(Repo.corridorBinary.path, ["learn", garbage])
        #expect(skipped.status == 0 && skipped.stderr.contains("skipped: 2 lines"), "\(skipped.stderr)")
        #expect(skipped.stderr.contains("skipped: 1 interim records"), "an interim record is no unusable line: \(skipped.stderr)")
        #expect(skipped.stdout.hasPrefix("# corridor learn: nothing to propose"))
    }
}
