import Foundation
import Testing

/// `corridor explain` and `corridor test`, run as the binary: exit statuses, output, errors.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct PolicyToolsTests {
    /// Bad input exits 2 whoever finds it: the argument parser or the subcommand itself.
    @Test(arguments: [["check"], ["explain", "--bogus"], ["nosuch"], ["learn", "--format"], ["explain", "--output", "xml", "--config", "x.yaml"]])
    func usageErrorsExitTwo(_ arguments: [String]) throws {
        let result = try runCommand(Repo.corridorBinary.path, arguments)
        #expect(result.status == 2, "\(arguments): \(result.status) \(result.stderr)")
        #expect(!result.stderr.isEmpty)
        #expect(try runCommand(Repo.corridorBinary.path, [arguments[0], "--help"]).status == 0)
    }

    static let quickstart = Repo.root.appendingPathComponent("examples/quickstart.yaml").path

    private func corridor(_ arguments: [String]) throws -> CommandResult {
        try runCommand(Repo.corridorBinary.path, arguments, timeout: 60)
    }

    @Test func theExamplePolicyTestsPass() throws {
        let result = try corridor(["test", "--config", Self.quickstart, Repo.root.appendingPathComponent("examples/policy-tests.yaml").path])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.filter { $0.hasPrefix("ok ") }.count == 7)
        #expect(lines.last == "7 passed, 0 failed")
    }

    /// `--config` naming a directory (the ConfigMap's mount, not the file in it) is an error, not
    /// an empty policy.
    @Test func aConfigPathThatIsNoFileIsAnError() throws {
        let dir = try TempDir()
        let result = try corridor(["check", "--config", dir.url.path])
        #expect(result.status != 0, "\(result.stdout)")
        #expect((result.stdout + result.stderr).contains("\(dir.url.path): cannot read: Is a directory"), "\(result.stdout)\(result.stderr)")
    }

    /// The quickstart lets names resolve to loopback (its upstream runs on the laptop): check says so.
    @Test func checkWarnsOfAnExceptionThatReachesLoopbackOrTheMetadataService() throws {
        let result = try corridor(["check", "--config", Self.quickstart])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("warning: allowPrivate 127.0.0.0/8 lets any allowed name resolve to loopback (the gateway's own host)"),
                "\(result.stdout)")
    }

    /// A redirected connection to a port no TCP service uses is read as TLS: explain says so,
    /// whether or not the port is any service's TLS port.
    @Test func explainViaTCPSaysAPortWithoutATCPServiceIsReadAsTLS() throws {
        let result = try corridor(["explain", "--config", Self.quickstart, "--namespace", "payments", "--to", "10.0.0.1:5432", "--via", "tcp"])
        #expect(result.status == 1, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("no ExternalService serves TCP 10.0.0.1 port 5432: a connection redirected there is read as TLS"),
                "\(result.stdout)")
        #expect(!result.stdout.contains("is a TLS port"), "\(result.stdout)")
    }

    @Test func aFailingCaseSaysWhatItGotAndExits1() throws {
        let dir = try TempDir()
        let cases = dir.path("cases.yaml")
        try """
            cases:
              - name: reports wants the API
                source: {namespace: payments, serviceAccount: reports, labels: {app: reports}}
                to: api.allowed.test
                expect: allow
              - name: checkout by the wrong policy
                source: {ip: 127.0.0.1}
                to: api.allowed.test
                expect: allow
                egressPolicy: payments/other
            """.write(toFile: cases, atomically: true, encoding: .utf8)
        let result = try corridor(["test", "--config", Self.quickstart, cases])
        #expect(result.status == 1)
        #expect(result.stdout.contains("FAIL 1 reports wants the API: expected allow, got deny: ExternalService allowed-api is not granted to payments/sa:reports"),
                "\(result.stdout)")
        #expect(result.stdout.contains("FAIL 2 checkout by the wrong policy: expected EgressPolicy payments/other, got payments/checkout-egress"))
        #expect(result.stdout.hasSuffix("0 passed, 2 failed\n"))
    }

    @Test(arguments: [
        ("cases:\n  - source: {namespace: payments}\n    to: a.test\n    expect: maybe\n", "cases.yaml:4", "cases[0].expect: must be one of allow, deny, audit"),
        ("cases:\n  - source: {namespace: payments, ip: 10.0.0.1}\n    to: a.test\n    expect: allow\n", "cases.yaml:2", "give exactly one source"),
        ("cases:\n  - source: {namespace: payments}\n    to: 10.0.0.1\n    expect: allow\n", "cases.yaml:2", "is not a host name"),
        ("cases:\n  - source: {namespace: payments}\n    to: a.test\n    expect: allow\n    expected: deny\n", "cases.yaml:5", "cases[0].expected"),
        ("cases: []\n", "cases.yaml", "at least one case"),
    ])
    func badCasesNameFileLineAndFieldAndExit2(yaml: String, location: String, reason: String) throws {
        let dir = try TempDir()
        let cases = dir.path("cases.yaml")
        try yaml.write(toFile: cases, atomically: true, encoding: .utf8)
        let result = try corridor(["test", "--config", Self.quickstart, cases])
        #expect(result.status == 2)
        #expect(result.stderr.contains(location) && result.stderr.contains(reason), "\(result.stderr)")
    }

    @Test func explainExitsBySayingAllowedDeniedOrBadInput() throws {
        let allowed = try corridor(["explain", "--config", Self.quickstart, "--source-ip", "127.0.0.1", "--to", "api.allowed.test"])
        #expect(allowed.status == 0, "\(allowed.stdout)\(allowed.stderr)")
        #expect(allowed.stdout.hasPrefix("verdict: allow\nreason: EgressPolicy payments/checkout-egress grants ExternalService allowed-api\n"))
        let denied = try corridor(["explain", "--config", Self.quickstart, "--namespace", "payments", "--label", "app=reports", "--to", "api.allowed.test",
                                   "--output", "json"])
        #expect(denied.status == 1)
        let object = try #require((try? JSONSerialization.jsonObject(with: Data(denied.stdout.utf8))) as? [String: Any], "\(denied.stdout)")
        #expect(object["verdict"] as? String == "deny")
        #expect((object["egressPolicies"] as? [[String: Any]])?.first?["why"] as? String == "podSelector app=checkout does not match labels app=reports")
        let hint = try #require(object["hint"] as? [String: Any])
        // The proposed objects pass `corridor check` together with the policy they extend.
        let dir = try TempDir()
        let extended = dir.path("extended.yaml")
        try (String(contentsOfFile: Self.quickstart, encoding: .utf8) + "\n---\n" + (hint["yaml"] as? String ?? ""))
            .write(toFile: extended, atomically: true, encoding: .utf8)
        #expect(try corridor(["check", "--config", extended]).status == 0)
        let after = try corridor(["explain", "--config", extended, "--namespace", "payments", "--label", "app=reports", "--to", "api.allowed.test"])
        #expect(after.status == 0, "\(after.stdout)")
        for bad in [["--to", "api.allowed.test"], ["--namespace", "payments", "--to", "1.2.3.4"], ["--namespace", "payments", "--to", "a.test", "--via", "udp"],
                    ["--namespace", "payments", "--to", "a.test:0"], ["--source-ip", "nope", "--to", "a.test"]] {
            let result = try corridor(["explain", "--config", Self.quickstart] + bad)
            #expect(result.status == 2 && result.stderr.hasPrefix("corridor: "), "\(bad): \(result.stderr)")
        }
    }

    /// `--admin`: the running gateway's live policy and pod identities (Kubernetes mode).
    @Test func explainAsksARunningGateway() async throws {
        let h = try await KubernetesHarness()
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        let admin = "http://127.0.0.1:\(h.adminPort)"
        let to = "api.allowed.test:\(h.upstream.port)"
        let allowed = try corridor(["explain", "--admin", admin, "--pod", "payments/checkout-1", "--to", to, "--via", "connect"])
        #expect(allowed.status == 0, "\(allowed.stdout)\(allowed.stderr)")
        #expect(allowed.stdout.contains("source: payments/checkout-1 (service account checkout, labels app=checkout)"), "\(allowed.stdout)")
        let denied = try corridor(["explain", "--admin", admin, "--source-ip", "127.0.0.3", "--to", to, "--via", "connect", "--output", "json"])
        #expect(denied.status == 1, "\(denied.stdout)\(denied.stderr)")
        #expect(denied.stdout.contains(#""verdict":"deny""#) && denied.stdout.contains("analytics/reporting-1"))
        let unknownPod = try corridor(["explain", "--admin", admin, "--pod", "payments/nope", "--to", to])
        #expect(unknownPod.status == 2 && unknownPod.stderr.contains("no pod or Workload payments/nope"), "\(unknownPod.stderr)")
        let unreachable = try corridor(["explain", "--admin", "http://127.0.0.1:1", "--pod", "payments/checkout-1", "--to", to])
        #expect(unreachable.status == 2 && unreachable.stderr.contains("cannot reach the admin listener"), "\(unreachable.stderr)")
    }
}
