import ArgumentParser
import CorridorGateway
import CorridorPolicy
import CorridorTools
import Foundation

struct Explain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "May this source reach this destination, and by which rule? Exits 0 allowed, 1 denied or audit-only, 2 bad input.",
        discussion: """
            Judged by the gateway's own decision engine, against a policy file (--config) or a running gateway's live policy \
            (--admin, so Kubernetes mode's CRDs and pod identities count). Prints the verdict, the ExternalService and \
            EgressPolicy that decide it, the services whose patterns match and which one the engine considers, every \
            EgressPolicy of the source's namespace and why it does or does not select the source, and, for a refusal, the \
            objects (YAML that `corridor check` accepts) that would allow it.
            """)

    @Option(name: .long, help: "A policy file to judge against.")
    var config: String?

    @Option(name: .long, help: "A running gateway's admin listener, http://HOST:PORT (e.g. through kubectl port-forward).")
    var admin: String?

    @Option(name: .long, help: "With --admin: a file holding the admin API's bearer token (spec.admin.tokenFile).")
    var tokenFile: String?

    @Option(name: .long, help: "The source's namespace (with --service-account and --label).")
    var namespace: String?

    @Option(name: .long, help: "The source's service account (default: default).")
    var serviceAccount: String?

    @Option(name: .long, help: "A label of the source, key=value (repeatable).")
    var label: [String] = []

    @Option(name: .long, help: "The source's IP address, looked up in the inventory (Workloads; pods with --admin in Kubernetes mode).")
    var sourceIP: String?

    @Option(name: .long, help: "The source pod (or Workload) as NAMESPACE/NAME.")
    var pod: String?

    @Option(name: .long, help: "The destination: HOST[:PORT], or ADDRESS:PORT with --via tcp.")
    var to: String?

    @Option(name: .long, help: "How the connection arrives: tls (default), connect, http or tcp.")
    var via: String = "tls"

    @Flag(name: .long, help: "The ClientHello carries Encrypted Client Hello.")
    var ech = false

    @Option(name: .long, help: "text (default) or json.")
    var output: String = "text"

    mutating func run() async throws {
        guard (config == nil) != (admin == nil) else { fail("give exactly one of --config FILE and --admin URL") }
        guard output == "text" || output == "json" else { fail("--output must be text or json, got '\(output)'") }
        let query: PolicyExplanation.Query
        do {
            query = try PolicyExplanation.Query.parse(namespace: namespace, serviceAccount: serviceAccount, labels: label, sourceIP: sourceIP,
                                                      pod: pod, to: to, via: via, ech: ech)
        } catch {
            fail(error.description)
        }
        if let config {
            let snapshot = loadPolicyOrExit(config)
            let explanation: PolicyExplanation
            do {
                explanation = try PolicyExplanation.make(query, snapshot: snapshot)
            } catch {
                fail(error.description)
            }
            print(output == "json" ? explanation.json : explanation.text)
            throw ExitCode(explanation.exitCode)
        }
        var parameters: [(String, String)] = [("to", to ?? ""), ("via", via)]
        if let namespace { parameters.append(("namespace", namespace)) }
        if let serviceAccount { parameters.append(("serviceAccount", serviceAccount)) }
        parameters += label.map { ("label", $0) }
        if let sourceIP { parameters.append(("sourceIP", sourceIP)) }
        if let pod { parameters.append(("pod", pod)) }
        if ech { parameters.append(("ech", "true")) }
        let path = "/explain?" + parameters.map { "\(Self.escape($0.0))=\(Self.escape($0.1))" }.joined(separator: "&")
        let response: AdminClient.Response
        do {
            response = try await AdminClient.get(admin!, path: path, token: readTokenFileOrExit(tokenFile))
        } catch {
            fail("\(error)")
        }
        let object = (try? JSONSerialization.jsonObject(with: Data(response.body.utf8))) as? [String: Any]
        guard response.status == 200, let object else {
            fail((object?["error"] as? String).map { "the gateway refused the question: \($0)" }
                 ?? "the admin listener answered \(response.status): \(response.body)")
        }
        print(output == "json" ? response.body.trimmingCharacters(in: .newlines) : (object["text"] as? String ?? response.body))
        throw ExitCode(Int32(object["exitCode"] as? Int ?? 1))
    }

    /// Percent-encodes a query parameter.
    static func escape(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~/:")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }
}

/// The admin API token in `path` (`--token-file`), without surrounding whitespace; nil when no
/// file is given; exit 2 when it cannot be read.
func readTokenFileOrExit(_ path: String?) -> String? {
    guard let path else { return nil }
    do {
        return try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    } catch {
        fail("--token-file: cannot read \(path): \(error.localizedDescription)")
    }
}

/// Prints `message` on standard error and exits 2 (bad input).
func fail(_ message: String) -> Never {
    printError("corridor: \(message)")
    Foundation.exit(2)
}
