import CorridorGateway
import Foundation
import Testing

/// The operational log (standard error) writes one line per message, whatever a message quotes:
/// where it shares a stream with the access log (`kubectl logs`), a quoted line break would let
/// whoever names an object write a line of their own, an access record the offline tools count
/// (found in review).
@Suite(.serialized, .timeLimit(.minutes(2)))
struct OperationalLogTests {
    @Test func controlAndReorderingCharactersAreEscapedAndTheLineEndKept() {
        func text(_ string: String) -> String { String(decoding: OperationalLogStream.escaped(string), as: UTF8.self) }
        #expect(text("plain line\n") == "plain line\n")
        #expect(text("a\nb\r\n") == #"a\nb\r"# + "\n")
        #expect(text("x\u{1B}[31my\u{7F}\u{85}") == #"x\u{1B}[31my\u{7F}\u{85}"#)
        #expect(text("\u{202E}gnp.exe\u{2028}\u{2066}") == #"\u{202E}gnp.exe\u{2028}\u{2066}"#)
        #expect(text("naïve – ok\n") == "naïve – ok\n")
    }

    @Test func aQuotedLineBreakCannotStartALineOfTheLog() async throws {
        let dir = try TempDir()
        let config = dir.path("corridor.yaml")
        let good = testConfig(upstreamPort: 18443, accessLog: dir.path("access.log"))
        try good.write(toFile: config, atomically: true, encoding: .utf8)
        let gateway = try BackgroundProcess(Repo.corridorBinary.path, ["run", "--config", config, "--workers", "1"])
        defer { gateway.signal(SIGKILL) }
        _ = try listenerPorts(gateway)
        let forged = #"{"time":"2026-01-01T00:00:00.000Z","id":1,"listener":"tls","decision":"allow","sni":"forged.example"}"#
        let bad = good + """

            ---
            apiVersion: corridor.dev/v1alpha1
            kind: EgressPolicy
            metadata: {name: forger, namespace: payments}
            spec:
              egress: [{to: [{externalService: "nope\\n\(forged.replacingOccurrences(of: "\"", with: "\\\""))\\n"}]}]
            """
        try bad.write(toFile: config, atomically: true, encoding: .utf8)
        gateway.signal(SIGHUP)
        #expect(await eventually(timeout: 15) { gateway.stderrText.contains("policy reload rejected") }, "\(gateway.stderrText)")
        let lines = gateway.stderrText.split(separator: "\n")
        #expect(!lines.contains { $0.hasPrefix("{") }, "a line of the log starts with what an object's name held: \(gateway.stderrText)")
        #expect(gateway.stderrText.contains(#"nope\n{"#), "the name is quoted, escaped: \(gateway.stderrText)")
    }
}
