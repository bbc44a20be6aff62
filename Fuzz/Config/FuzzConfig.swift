import CorridorFuzzSupport
import CorridorPolicy

/// The config loader on arbitrary YAML. Invariants: it never crashes, every refusal names where
/// (a field path and a line), and what it accepts renders (ResourceYAML, what `corridor explain`
/// and `corridor learn` write) and loads again to the same objects.
func fuzzConfig(_ input: [UInt8]) {
    guard input.count <= 8192 else { return }
    let text = String(decoding: input, as: UTF8.self)
    let source: PolicySource
    do {
        source = try ConfigLoader.load(yaml: text, file: "fuzz.yaml")
    } catch {
        for problem in error.errors {
            fuzzCheck(!problem.description.isEmpty, "an empty error")
            fuzzCheck(problem.description.hasPrefix("fuzz.yaml"), "an error that does not name the file: \(problem.description)")
        }
        return
    }
    let documents = [gateway] + source.externalServices.map { ResourceYAML.render($0) } + source.egressPolicies.map { ResourceYAML.render($0) }
        + source.workloads.map { ResourceYAML.render($0) }
    let rendered = ResourceYAML.file(documents)
    do {
        let again = try ConfigLoader.load(yaml: rendered, file: "rendered.yaml")
        fuzzCheck(again.externalServices == source.externalServices, "ExternalServices changed in a round trip:\n\(rendered)")
        fuzzCheck(again.egressPolicies == source.egressPolicies, "EgressPolicies changed in a round trip:\n\(rendered)")
        fuzzCheck(again.workloads == source.workloads, "Workloads changed in a round trip:\n\(rendered)")
    } catch {
        fuzzCheck(false, "accepted objects render to a file the loader refuses: \(error.description)\n\(rendered)")
    }
}

/// The rendered file's GatewayConfig (the objects' round trip is what is checked).
private let gateway = """
    apiVersion: corridor.dev/v1alpha1
    kind: GatewayConfig
    metadata: {name: fuzz}
    spec: {listeners: {connect: "127.0.0.1:3128"}}
    """

#if FUZZING  // libFuzzer's driver (Fuzz/run.sh), else a replayer of files (FuzzCorpusTests)
@_cdecl("fuzz_config_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt { FuzzDriver.main(argc, argv, fuzzConfig) }
#else
@main enum ReplayConfig { static func main() { FuzzReplay.main(fuzzConfig) } }
#endif
