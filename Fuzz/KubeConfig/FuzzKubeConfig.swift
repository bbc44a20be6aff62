import CorridorFuzzSupport
import CorridorKubernetes
import CorridorPolicy
import Foundation

/// kubeconfig parsing on arbitrary text (from a file, as `corridor run --kubeconfig` reads it).
/// Invariants: nothing crashes; every refusal names the file; an accepted endpoint has a host, a
/// port in 1-65535, and plain http only to loopback.
func fuzzKubeConfig(_ input: [UInt8]) {
    guard input.count <= 16384 else { return }
    guard FileManager.default.createFile(atPath: kubeconfigPath, contents: Data(input)) else {
        fuzzCheck(false, "cannot write \(kubeconfigPath)")
        return
    }
    let endpoint: KubeEndpoint
    do {
        endpoint = try KubeEndpoint.kubeconfig(path: kubeconfigPath)
    } catch {
        fuzzCheck(error.description.contains(kubeconfigPath), "a refusal that does not name the file: \(error.description)")
        return
    }
    fuzzCheck(!endpoint.host.isEmpty, "an endpoint without a host")
    fuzzCheck((1...65535).contains(endpoint.port), "port \(endpoint.port)")
    if endpoint.scheme == .http {
        let host = endpoint.host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        fuzzCheck(["127.0.0.1", "::1", "localhost"].contains(host), "plain http to \(endpoint.host)")
    }
}

/// One file per fuzzing process, rewritten for every input.
private let kubeconfigPath = NSTemporaryDirectory() + "/corridor-fuzz-kubeconfig-\(ProcessInfo.processInfo.processIdentifier).yaml"

#if FUZZING  // libFuzzer's driver (Fuzz/run.sh), else a replayer of files (FuzzCorpusTests)
@_cdecl("fuzz_kubeconfig_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt { FuzzDriver.main(argc, argv, fuzzKubeConfig) }
#else
@main enum ReplayKubeConfig { static func main() { FuzzReplay.main(fuzzKubeConfig) } }
#endif
