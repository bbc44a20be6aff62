import ArgumentParser
import CorridorGateway
import CorridorPolicy
import Foundation

struct PolicyTest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Policy unit tests: judge each case of CASES.yaml against --config; one line per case, then 'N passed, M failed'.",
        discussion: "Exits 0 when every case passes, 1 when any fails, 2 on bad input. The case format is in docs/policy-tests.md; "
            + "examples/policy-tests.yaml tests the quickstart.")

    @Option(name: .long, help: "The policy file under test.")
    var config: String

    @Argument(help: "The cases file.")
    var cases: String

    mutating func run() throws {
        let snapshot = loadPolicyOrExit(config)
        let text: String
        do {
            text = try String(contentsOfFile: cases, encoding: .utf8)
        } catch {
            fail("cannot read \(cases): \(error.localizedDescription)")
        }
        let suite: PolicyTestCases
        do {
            suite = try PolicyTestCases.load(yaml: text, file: cases)
        } catch {
            printError(error.description)
            fail("\(cases): \(error.errors.count) problem\(error.errors.count == 1 ? "" : "s")")
        }
        let outcomes = suite.run(against: snapshot)
        for outcome in outcomes { print(outcome.line) }
        let failed = outcomes.filter { !$0.passed }.count
        print("\(outcomes.count - failed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode(1) }
    }
}
