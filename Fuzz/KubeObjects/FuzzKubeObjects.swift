import CorridorFuzzSupport
import CorridorKubernetes
import CorridorPolicy
import Foundation

/// Watch-event decoding and the compiler from API objects to policy, on an arbitrary watch line
/// read as a Pod event and as an ExternalService or EgressPolicy event. Invariants: nothing
/// crashes, and every object the compiler accepts (and every workload it makes of a pod) is one
/// the config loader accepts too, rendered as `corridor check` would read it: decoding never lets
/// in what the typed model cannot represent; an object that could not be read is never enforced.
func fuzzKubeObjects(_ input: [UInt8]) {
    guard input.count <= 16384 else { return }
    let line = Data(input)
    var objects = ClusterObjects()
    var unreadable: String?
    if let event = try? WatchEvent<Pod>.decode(line), case .added(let pod) = event {
        objects.pods.append(pod)
    }
    if let event = try? WatchEvent<CustomResource>.decode(line) {
        switch event {
        case .added(let resource), .modified(let resource):
            if resource.kind == "EgressPolicy" { objects.egressPolicies.append(resource) } else { objects.externalServices.append(resource) }
        case .unreadable(let object, deleted: false):
            if let metadata = object.metadata, let standIn = CustomResource.unreadable(metadata: metadata, status: object.status, why: object.why) {
                objects.externalServices.append(standIn)
                unreadable = metadata.name
            }
        case .deleted, .bookmark, .error, .unreadable:
            break
        }
    }
    guard !objects.pods.isEmpty || !objects.externalServices.isEmpty || !objects.egressPolicies.isEmpty else { return }
    let policy = ClusterPolicyCompiler(now: { "2026-01-01T00:00:00Z" }).build(base: PolicySource(), objects: objects)
    let source = policy.source
    if let unreadable {
        fuzzCheck(source.externalServices.isEmpty && policy.rejected == ["ExternalService/\(unreadable)"], "an unreadable object was enforced")
    }
    let documents = source.externalServices.map { ResourceYAML.render($0) } + source.egressPolicies.map { ResourceYAML.render($0) }
        + source.workloads.map { ResourceYAML.render($0) }
    guard !documents.isEmpty else { return }
    let rendered = ResourceYAML.file(documents)
    do {
        let again = try ConfigLoader.load(yaml: rendered, file: "rendered.yaml", crossCheck: false)
        fuzzCheck(again.externalServices == source.externalServices, "ExternalServices differ once rendered:\n\(rendered)")
        fuzzCheck(again.egressPolicies == source.egressPolicies, "EgressPolicies differ once rendered:\n\(rendered)")
        fuzzCheck(again.workloads == source.workloads, "Workloads differ once rendered:\n\(rendered)")
    } catch {
        fuzzCheck(false, "the compiler accepted what the loader refuses: \(error.description)\n\(rendered)")
    }
}

#if FUZZING  // libFuzzer's driver (Fuzz/run.sh), else a replayer of files (FuzzCorpusTests)
@_cdecl("fuzz_kube_objects_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt { FuzzDriver.main(argc, argv, fuzzKubeObjects) }
#else
@main enum ReplayKubeObjects { static func main() { FuzzReplay.main(fuzzKubeObjects) } }
#endif
