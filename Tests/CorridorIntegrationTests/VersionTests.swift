import Foundation
import Testing

/// `corridor version`: the release version from VERSION, and the git commit the binary was built
/// from, with whether the tree differed (scripts/build-info, run by the BuildInfo plugin).
@Suite(.timeLimit(.minutes(2)))
struct VersionTests {
    @Test func versionNamesTheReleaseAndTheCommitItWasBuiltFrom() throws {
        let version = try String(contentsOf: Repo.root.appendingPathComponent("VERSION"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let result = try runCommand(Repo.corridorBinary.path, ["version"])
        #expect(result.status == 0)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == "corridor \(version)", "\(result.stdout)")
        // The checkout's HEAD: the test binary and corridor were built from this tree just now.
        let head = try runCommand("git", ["-C", Repo.root.path, "rev-parse", "HEAD"])
        guard head.status == 0 else { return }  // a source archive without .git: nothing to compare
        let commit = head.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let dirty = try !runCommand("git", ["-C", Repo.root.path, "status", "--porcelain"]).stdout.isEmpty
        #expect(lines.count == 2 && lines[1] == "commit \(commit)\(dirty ? " (tree modified)" : "")", "\(result.stdout)")
        #expect(try String(contentsOf: Repo.root.appendingPathComponent("CHANGELOG.md"), encoding: .utf8).contains("## \(version)"),
                "CHANGELOG.md has a section for the version VERSION names")
    }

    @Test func theBuildInfoScriptRefusesABadVersionAndReadsAStampedCommit() throws {
        let dir = try TempDir()
        let script = Repo.root.appendingPathComponent("scripts/build-info").path
        try "1.2.3\n".write(toFile: dir.path("VERSION"), atomically: true, encoding: .utf8)
        try "0123456789abcdef0123456789abcdef01234567-dirty\n".write(toFile: dir.path(".build-commit"), atomically: true, encoding: .utf8)
        let stamped = try runCommand("/bin/sh", [script, dir.url.path, dir.path("out/Build.swift")])
        #expect(stamped.status == 0, "\(stamped.stderr)")
        let text = try String(contentsOfFile: dir.path("out/Build.swift"), encoding: .utf8)
        #expect(text.contains(#"version = "1.2.3""#) && text.contains(#"commit = "0123456789abcdef0123456789abcdef01234567""#)
                && text.contains("treeDirty = true"), "\(text)")

        try "1.2.3; rm -rf /\n".write(toFile: dir.path("VERSION"), atomically: true, encoding: .utf8)
        let bad = try runCommand("/bin/sh", [script, dir.url.path, dir.path("out/Build.swift")])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("VERSION: '1.2.3;rm-rf/' is not a version"), "\(bad.stderr)")
    }
}
