import Foundation
import Testing

/// Real headless Chromium (Debian's `chromium`) sends a GREASE Encrypted Client Hello in every
/// ClientHello: refused by default with a hint naming `spec.tls.ech`; allowed for a service with
/// `ech: Allow`; still refused for another service; through both the CONNECT and tls listeners.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct ChromiumECHTests {
    static let available = FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium")

    /// Loads `url` in headless Chromium and returns the page's DOM (empty when it did not load).
    /// Only loopback is reached: through `proxy`, or with every name mapped by `hostRules`.
    static func load(_ url: String, proxy: Int? = nil, hostRules: String? = nil, dir: TempDir) throws -> String {
        var arguments = ["--headless=new", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-domain-reliability",
                         "--no-default-browser-check", "--user-data-dir=\(dir.path("chromium-\(UUID().uuidString.prefix(6))"))"]
        if let proxy { arguments.append("--proxy-server=http://127.0.0.1:\(proxy)") } else { arguments.append("--no-proxy-server") }
        if let hostRules { arguments.append("--host-resolver-rules=\(hostRules)") }
        arguments += ["--dump-dom", url]
        return try runCommand("chromium", arguments, timeout: 60).stdout
    }

    /// Whether the DOM is the test upstream's page (its body is `ok`).
    static func isUpstreamPage(_ dom: String) -> Bool { dom.contains(">ok\n</pre>") || dom.contains(">ok</pre>") }

    /// allowed-api without second.allowed.test (which gets a service of its own, granted too), and
    /// with `ech` as given.
    static func config(ech: String?) -> (String) -> String {
        { base in
            var text = base.replacingOccurrences(of: "\"*.wild.allowed.test\", second.allowed.test,", with: "\"*.wild.allowed.test\",")
            if let ech { text = text.replacingOccurrences(of: "  ports: [{number:", with: "  tls: {ech: \(ech)}\n  ports: [{number:") }
            return text
        }
    }

    @Test(.enabled(if: available, "needs Debian's chromium (scripts/test installs it)"))
    func chromiumIsRefusedByDefaultAndAllowedWhereTheServiceSaysSo() async throws {
        let other = """
            ---
            apiVersion: corridor.dev/v1alpha1
            kind: ExternalService
            metadata: {name: second-api}
            spec:
              hosts: [second.allowed.test]
              ports: [{number: PORT, protocol: TLS}]
            ---
            apiVersion: corridor.dev/v1alpha1
            kind: EgressPolicy
            metadata: {name: second, namespace: payments}
            spec:
              egress: [{to: [{externalService: second-api}]}]
            """
        // Refused by default, on both listeners, with the hint.
        let h = try await GatewayHarness(extra: "")
        let url = "https://api.allowed.test:\(h.upstream.port)/"
        #expect(try Self.load(url, proxy: h.connectPort, dir: h.dir).isUpstreamPage == false)
        let rules = "MAP api.allowed.test:\(h.upstream.port) 127.0.0.1:\(h.tlsPort), MAP * ~NOTFOUND"
        #expect(try Self.load(url, hostRules: rules, dir: h.dir).isUpstreamPage == false)
        for listener in ["connect", "tls"] {
            let record = h.record { $0["listener"] as? String == listener && $0["ech"] as? Bool == true }
            #expect(record?["decision"] as? String == "deny", "\(listener): \(String(describing: record))")
            #expect((record?["reason"] as? String)?.contains("does not allow ECH: spec.tls.ech") == true)
            #expect((record?["hint"] as? String)?.hasPrefix("set spec.tls.ech: Allow on ExternalService allowed-api") == true)
        }
        await h.stop()

        // ech: Allow on allowed-api: Chromium gets the page; second-api still refuses it.
        let allowing = try await GatewayHarness(extra: "")
        defer { Task { await allowing.stop() } }
        let base = try String(contentsOfFile: allowing.configPath, encoding: .utf8)
        try (Self.config(ech: "Allow")(base) + "\n" + other.replacingOccurrences(of: "PORT", with: "\(allowing.upstream.port)"))
            .write(toFile: allowing.configPath, atomically: true, encoding: .utf8)
        #expect(allowing.gateway.reload(reason: "test"))
        let port = allowing.upstream.port
        #expect(try Self.load("https://api.allowed.test:\(port)/", proxy: allowing.connectPort, dir: allowing.dir).isUpstreamPage)
        #expect(try Self.load("https://api.allowed.test:\(port)/", hostRules: "MAP api.allowed.test:\(port) 127.0.0.1:\(allowing.tlsPort), MAP * ~NOTFOUND",
                              dir: allowing.dir).isUpstreamPage)
        #expect(try Self.load("https://second.allowed.test:\(port)/", proxy: allowing.connectPort, dir: allowing.dir).isUpstreamPage == false)
        let allowed = allowing.record { $0["sni"] as? String == "api.allowed.test" && $0["decision"] as? String == "allow" && $0["ech"] as? Bool == true }
        #expect(allowed?["externalService"] as? String == "allowed-api", "\(allowing.records())")
        let refused = allowing.record { $0["sni"] as? String == "second.allowed.test" }
        #expect(refused?["decision"] as? String == "deny" && (refused?["reason"] as? String ?? "").contains("ExternalService second-api does not allow ECH"),
                "\(String(describing: refused))")
    }
}

extension String {
    fileprivate var isUpstreamPage: Bool { ChromiumECHTests.isUpstreamPage(self) }
}
