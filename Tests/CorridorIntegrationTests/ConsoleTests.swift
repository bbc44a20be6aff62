import Foundation
import Testing

/// The console in a real headless Chromium, driven by Selenium (Tests/Support/console_test.py)
/// against a running gateway with traffic the test makes; and the token gate, both ways.
/// Screenshots go to CORRIDOR_CONSOLE_SCREENSHOTS when set (docs/images holds a run's).
@Suite(.serialized, .timeLimit(.minutes(4)))
struct ConsoleTests {
    static let available = FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium")
        && FileManager.default.isExecutableFile(atPath: "/usr/bin/chromedriver")

    private func drive(_ h: GatewayHarness, token: String? = nil, screenshots: Bool = false) throws -> [String: Any] {
        var arguments = [Repo.support.appendingPathComponent("console_test.py").path, "--admin", "\(h.adminPort)", "--connect", "\(h.connectPort)",
                         "--upstream", "\(h.upstream.port)", "--ca", h.pki.caCert]
        if let token { arguments += ["--token", token] }
        if screenshots, let dir = ProcessInfo.processInfo.environment["CORRIDOR_CONSOLE_SCREENSHOTS"] { arguments += ["--screenshots", dir] }
        let result = try runCommand("python3", arguments, timeout: 150)
        guard let object = (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any] else {
            throw TestError.failed("console_test.py printed no JSON: \(result.stdout) \(result.stderr)")
        }
        return object
    }

    private func failures(_ result: [String: Any]) -> [String] {
        (result["checks"] as? [[Any]] ?? []).filter { ($0[1] as? Bool) != true }.map { "\($0[0]): \($0[2])" }
    }

    @Test(.enabled(if: available, "needs Debian's chromium and chromium-driver, and Selenium (scripts/test installs them)"))
    func theConsoleShowsLiveFlowsTheMapDenialsAndSignals() async throws {
        let h = try await GatewayHarness()
        defer { Task { await h.stop() } }
        let result = try drive(h, screenshots: true)
        #expect(result["ok"] as? Bool == true, "\(failures(result))")
        #expect((result["checks"] as? [[Any]] ?? []).count >= 15)
    }

    @Test(.enabled(if: available, "needs Debian's chromium and chromium-driver, and Selenium (scripts/test installs them)"))
    func withATokenTheAPIsNeedItAndTheProbesDoNot() async throws {
        let secrets = try TempDir()
        let tokenFile = secrets.path("admin-token")
        let token = "t-\(UUID().uuidString)"
        try "\(token)\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let h = try await GatewayHarness(gatewayExtra: "  admin: {tokenFile: \(tokenFile)}")
        defer { Task { await h.stop() } }
        func status(_ path: String, _ headers: [String] = []) throws -> String {
            try runCommand("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}"] + headers.flatMap { ["-H", $0] } + ["http://127.0.0.1:\(h.adminPort)\(path)"]).stdout
        }
        for path in ["/flows", "/policy", "/explain?namespace=a&to=b.test", "/flows/stream"] {
            #expect(try status(path) == "401", "\(path)")
            #expect(try status(path, ["Authorization: Bearer wrong"]) == "401", "\(path)")
        }
        #expect(try status("/flows", ["Authorization: Bearer \(token)"]) == "200")
        // The command line says what it lacks (found by a README walkthrough).
        let noToken = try runCommand(Repo.corridorBinary.path, ["explain", "--admin", "http://127.0.0.1:\(h.adminPort)", "--namespace", "a", "--to", "b.test"])
        #expect(noToken.status == 2 && noToken.stderr.contains("give --token-file FILE"), "\(noToken.stderr)")
        for path in ["/metrics", "/healthz", "/readyz", "/"] { #expect(try status(path) == "200", "\(path)") }
        let result = try drive(h, token: token)
        #expect(result["ok"] as? Bool == true, "\(failures(result))")
        #expect((result["checks"] as? [[Any]] ?? []).contains { ($0[0] as? String) == "the page asks for the token" })
    }

    /// A page that points a name of its own at the admin address (DNS rebinding) sends that name
    /// as the Host: refused, on every path (found in review); listed names are answered.
    @Test func theAdminAPIAnswersOnlyToNamesNoOutsiderCanPointHere() async throws {
        let h = try await GatewayHarness(gatewayExtra: "  admin: {hosts: [Console.Example.Test, \"*.svc.k8s.example.test\"]}")
        defer { Task { await h.stop() } }
        func status(_ path: String, host: String) throws -> String {
            try runCommand("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: \(host)", "http://127.0.0.1:\(h.adminPort)\(path)"]).stdout
        }
        for path in ["/flows", "/policy", "/flows/stream", "/metrics", "/"] {
            #expect(try status(path, host: "rebind.attacker.example:\(h.adminPort)") == "403", "\(path)")
        }
        #expect(try status("/policy", host: "127.0.0.1:\(h.adminPort)") == "200")
        #expect(try status("/policy", host: "localhost:\(h.adminPort)") == "200")
        #expect(try status("/policy", host: "corridor-admin.corridor-system.svc:\(h.adminPort)") == "200")
        #expect(try status("/policy", host: "console.example.test") == "200")
        #expect(try status("/metrics", host: "corridor-admin.corridor-system.svc.k8s.example.test:\(h.adminPort)") == "200")
        // The API's errors name its own parameters, not the command line's flags (found by a README walkthrough).
        let explain = try runCommand("curl", ["-sS", "http://127.0.0.1:\(h.adminPort)/explain?to=api.allowed.test"]).stdout
        #expect(explain.contains("give exactly one source: namespace (with serviceAccount, label), sourceIP or pod"), "\(explain)")
        let body = try runCommand("curl", ["-sS", "-H", "Host: rebind.attacker.example", "http://127.0.0.1:\(h.adminPort)/flows"]).stdout
        #expect(body.contains("DNS rebinding") && body.contains("spec.admin.hosts"), "\(body)")
    }

    @Test func anUnreadableTokenFileStopsTheStart() async throws {
        await #expect(throws: (any Error).self) {
            _ = try await GatewayHarness(gatewayExtra: "  admin: {tokenFile: /nonexistent/corridor-token}")
        }
    }
}
