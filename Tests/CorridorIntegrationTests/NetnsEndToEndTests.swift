import Foundation
import Testing

/// Transparent capture and bypass prevention on real Linux networking: Tests/e2e/netns-e2e.sh builds
/// pod, node and outside network namespaces with veth pairs, runs the gateway with the rules
/// `corridor iptables` generates, and checks what unmodified clients can and cannot reach.
/// Needs root (CI runs as root); scripts/test installs iproute2, iptables and dnsmasq.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct NetnsEndToEndTests {
    static let isRoot = getuid() == 0

    @Test(.enabled(if: isRoot, "needs root for network namespaces and iptables"))
    func captureAndBypassPreventionInNetworkNamespaces() throws {
        let prefix = "cor\(getpid() % 100_000)"
        let script = Repo.root.appendingPathComponent("Tests/e2e/netns-e2e.sh").path
        let result = try runCommand("/usr/bin/env", ["E2E_PREFIX=\(prefix)", "CORRIDOR_BIN=\(Repo.corridorBinary.path)", "bash", script],
                                    timeout: 240)
        let failures = result.stdout.split(separator: "\n").filter { $0.hasPrefix("not ok") }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))\n\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains(" passed, 0 failed"), "\(result.stdout)\n\(result.stderr)")
        #expect(result.status == 0)
        // Nothing left behind: namespaces (and with them their links and rules) and resolver files.
        let namespaces = try runCommand("ip", ["netns", "list"]).stdout
        #expect(!namespaces.contains(prefix), "left behind: \(namespaces)")
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: "/etc/netns")) ?? []
        #expect(!leftovers.contains { $0.hasPrefix(prefix) })
    }
}
