@testable import CorridorGateway
import Testing

/// `ChildProcess`: what `corridor iptables --apply` runs iptables-restore and iptables with.
@Suite(.timeLimit(.minutes(1)))
struct ChildProcessTests {
    @Test func inputGoesInAndOutputAndStatusComeBack() throws {
        let (status, output) = try ChildProcess.run("sh", ["-c", "cat; echo to-stderr >&2; exit 3"], input: "line one\nline two\n")
        #expect(status == 3)
        #expect(output == "line one\nline two\nto-stderr\n")
        #expect(try ChildProcess.run("true", []).status == 0)
    }

    @Test func aLargeInputAndAChildThatDoesNotReadIt() throws {
        let big = String(repeating: "-A CHAIN -j RETURN\n", count: 20_000)  // 380 KB, past any pipe buffer
        #expect(try ChildProcess.run("wc", ["-l"], input: big).output.trimmingCharacters(in: .whitespacesAndNewlines) == "20000")
        // Exits without reading: no SIGPIPE kills the caller.
        #expect(try ChildProcess.run("sh", ["-c", "exit 0"], input: big).status == 0)
    }

    @Test func aMissingProgramIsAnErrorNamingIt() {
        #expect { try ChildProcess.run("corridor-no-such-program", ["x"]) } throws: { error in
            "\(error)".contains("corridor-no-such-program x")
        }
    }

    @Test func aKilledChildReportsTheSignal() throws {
        #expect(try ChildProcess.run("sh", ["-c", "kill -TERM $$"]).status == 128 + 15)
    }
}
