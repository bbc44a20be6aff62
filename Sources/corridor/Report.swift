import ArgumentParser
import CorridorGateway
import CorridorPolicy
import CorridorTools
import Foundation

struct Report: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evidence for an auditor: the policy in force and the access records of a period, mapped to PCI DSS requirements.",
        discussion: """
            Reads the access-log files of the period (plain or gzip, - for standard input; streamed, never loaded whole) and \
            the policy (--config FILE, or --admin URL for a running gateway's live policy, Kubernetes mode included). \
            Writes one self-contained HTML file (no external scripts, fonts or images; printable; SVG charts), Markdown for a \
            pull request, or JSON (docs/report.md describes its shape).
            """)

    @Option(name: .long, help: "The policy file in force in the period.")
    var config: String?

    @Option(name: .long, help: "A running gateway's admin listener, http://HOST:PORT: its live policy.")
    var admin: String?

    @Option(name: .long, help: "With --admin: a file holding the admin API's bearer token.")
    var tokenFile: String?

    @Option(name: .long, help: "Only records at or after this time (2026-11-27 or RFC 3339).")
    var since: String?

    @Option(name: .long, help: "Only records before this time.")
    var until: String?

    @Option(name: .long, help: "html (default), md or json.")
    var format: String = "html"

    @Option(name: .shortAndLong, help: "Write here instead of standard output.")
    var output: String?

    @Argument(help: "Access-log files of the period (plain or .gz); - for standard input.")
    var logs: [String]

    mutating func run() async throws {
        guard (config == nil) != (admin == nil) else { fail("give exactly one of --config FILE and --admin URL") }
        guard let format = EvidenceReport.Format(rawValue: format) else { fail("--format must be html, md or json, got '\(format)'") }
        guard !logs.isEmpty else { fail("give at least one access-log file (or - for standard input)") }
        let sinceBound: String?, untilBound: String?
        do {
            (sinceBound, untilBound) = try AccessLogEntry.period(since: since, until: until)
        } catch {
            fail(error.description)
        }
        let snapshot: PolicySnapshot
        let policySource: String
        if let config {
            snapshot = loadPolicyOrExit(config)
            policySource = config
        } else {
            let response: AdminClient.Response
            do {
                response = try await AdminClient.get(admin!, path: "/policy.yaml", token: readTokenFileOrExit(tokenFile))
            } catch {
                fail("\(error)")
            }
            guard response.status == 200 else { fail("the admin listener answered \(response.status): \(response.body)") }
            do {
                snapshot = PolicySnapshot(source: try ConfigLoader.load(yaml: response.body, file: "\(admin!)/policy.yaml"), generation: 0)
            } catch {
                fail("the live policy could not be read: \(error)")
            }
            policySource = "\(admin!)/policy.yaml"
        }
        let report: EvidenceReport
        do {
            // Parsed on every core, merged at the end.
            report = try ParallelLineReader.read(logs, make: { EvidenceReport(since: sinceBound, until: untilBound) },
                                                 add: { part, line in part.add(line: line) }, merge: { $0.merge($1) },
                                                 progress: { printError("corridor report: \($0 / 1_000_000) million lines read") })
        } catch {
            fail("\(error)")
        }
        let text = report.render(format, snapshot: snapshot, policySource: policySource, inputs: logs)
        if let output {
            do {
                try text.write(toFile: output, atomically: true, encoding: .utf8)
            } catch {
                fail("cannot write \(output): \(error.localizedDescription)")
            }
        } else {
            print(text, terminator: "")
        }
    }
}
