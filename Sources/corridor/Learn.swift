import ArgumentParser
import CorridorGateway
import CorridorPolicy
import CorridorTools
import Foundation

struct Learn: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Propose a least-privilege policy from access logs (best written under spec.mode: Audit); YAML on standard output.",
        discussion: """
            Reads the gateway's JSON access records (plain or gzip, several files such as rotated logs, - for standard \
            input) and proposes ExternalServices for the exact names and ports used and one EgressPolicy per workload group \
            (namespace and app.kubernetes.io/name or app label, else service account), each annotated with its evidence. \
            The proposal passes `corridor check` (with --merge, once merged into the policy it was made for) and, with the \
            gateway's own engine, allows every connection it was learned from. Denials, guard refusals and unknown sources are never learned; they are reported on standard error.
            """)

    @Argument(help: "Access-log files (plain or .gz); - for standard input.")
    var logs: [String]

    @Option(name: .long, help: "Only records at or after this time (2026-11-27 or RFC 3339).")
    var since: String?

    @Option(name: .long, help: "Only records before this time.")
    var until: String?

    @Option(name: .long, help: "Only workloads of this namespace.")
    var namespace: String?

    @Option(name: .long, help: "Collapse N or more sibling names under their parent into *.parent (never under a public suffix or multi-tenant parent).")
    var wildcardThreshold: Int?

    @Option(name: .long, help: "An existing policy file: propose only what it lacks (objects to add, or changed objects whole).")
    var merge: String?

    @Option(name: .long, help: "The Public Suffix List file (default: \(PublicSuffixList.systemPath) when present).")
    var publicSuffixList: String?

    mutating func run() throws {
        guard !logs.isEmpty else { fail("give at least one access-log file (or - for standard input)") }
        if let wildcardThreshold, wildcardThreshold < 2 { fail("--wildcard-threshold must be 2 or more, got \(wildcardThreshold)") }
        var base = PolicySource()
        if let merge { base = loadPolicyOrExit(merge).source }
        let suffixes: PublicSuffixList
        do {
            suffixes = try PublicSuffixList(path: publicSuffixList)
        } catch {
            fail("\(error)")
        }
        if wildcardThreshold != nil && !suffixes.hasList {
            fail("--wildcard-threshold needs the Public Suffix List (Debian's publicsuffix package installs it at \(PublicSuffixList.systemPath); "
                 + "or give --public-suffix-list FILE): without it a wildcard could land under a public suffix such as co.uk")
        }
        var learner: PolicyLearner
        do {
            learner = try PolicyLearner(options: .init(since: since, until: until, namespace: namespace, wildcardThreshold: wildcardThreshold,
                                                       publicSuffixes: suffixes))
        } catch {
            fail("\(error)")
        }
        for path in logs {
            do {
                try AccessLogReader.forEachLine(path) { line, _ in learner.add(line: line) }
            } catch {
                fail("\(error)")
            }
        }
        let (yaml, problems) = learner.propose(base: base)
        print(yaml, terminator: "")
        for line in learner.notes + problems { printError(line) }
    }
}
