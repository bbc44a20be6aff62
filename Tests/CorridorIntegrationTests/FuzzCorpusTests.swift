import Foundation
import Testing

/// Every fuzz target's corpus (Fuzz/corpus/TARGET: seeds, and the inputs of every crash found
/// and fixed) replayed through the target's invariants, as the plain build makes them: the
/// regression half of Fuzz/run.sh. The config target also reads examples/.
@Suite(.timeLimit(.minutes(3)))
struct FuzzCorpusTests {
    @Test(arguments: ["client-hello", "hello-retry", "connect-head", "connection-engine", "http-head", "config", "kube-objects", "kubeconfig"])
    func theCorpusStillHolds(target: String) throws {
        let binary = Repo.root.appendingPathComponent(".build/debug/fuzz-\(target)").path
        var inputs = [Repo.root.appendingPathComponent("Fuzz/corpus/\(target)").path]
        if target == "config" { inputs.append(Repo.root.appendingPathComponent("examples").path) }
        let result = try runCommand(binary, inputs, timeout: 120)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let count = result.stdout.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        #expect(result.stdout.hasPrefix("replayed ") && count >= 3, "\(result.stdout)")
    }

    /// A corpus that is not there fails the replay rather than passing with nothing replayed.
    @Test func aMissingCorpusFailsTheReplay() throws {
        let dir = try TempDir()
        let result = try runCommand(Repo.root.appendingPathComponent(".build/debug/fuzz-config").path, [dir.path("missing")])
        #expect(result.status != 0 && result.stderr.contains("no such file"), "\(result.stderr)")
    }
}
