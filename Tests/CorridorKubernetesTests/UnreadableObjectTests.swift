@testable import CorridorKubernetes
import CorridorPolicy
import Foundation
import Testing

/// Objects the decoder refuses (a value nested deeper than Foundation's 512 levels, which
/// `x-kubernetes-preserve-unknown-fields` lets into a custom object, or a field of the wrong type):
/// the others in the same list are read, a watch goes on, and the policy build rejects the
/// unreadable one visibly.
@Suite struct UnreadableObjectTests {
    /// A value nested `depth` arrays deep.
    static func nested(_ depth: Int) -> String { String(repeating: "[", count: depth) + String(repeating: "]", count: depth) }

    static func service(_ name: String, generation: Int = 1, extra: String = "") -> String {
        #"{"apiVersion":"corridor.dev/v1alpha1","kind":"ExternalService","metadata":{"name":"\#(name)","uid":"u-\#(name)","generation":\#(generation),"resourceVersion":"\#(10 + generation)"},"#
            + #""spec":{"hosts":["\#(name).example"],"ports":[{"number":443,"protocol":"TLS"}]\#(extra)}}"#
    }

    @Test func theShallowReaderFindsMembersAndElementsAtAnyDepth() throws {
        let text = #" { "a" : 1, "b\u0063" : "x\"}]" , "deep": \#(Self.nested(5000)), "list": [ {"k": [1, 2]}, "s", null ] } "#
        let bytes = Array(text.utf8)
        let members = try ShallowJSON.members(of: bytes)
        #expect(members.map(\.key) == ["a", "bc", "deep", "list"])
        #expect(String(decoding: bytes[members[1].value], as: UTF8.self) == #""x\"}]""#)
        #expect(members[2].value.count == 10_000)
        #expect(ShallowJSON.depth(of: bytes, in: 0..<bytes.count) == 5001)
        let elements = try ShallowJSON.elements(of: bytes, in: members[3].value)
        #expect(elements.map { String(decoding: bytes[$0], as: UTF8.self) } == [#"{"k": [1, 2]}"#, #""s""#, "null"])
        for bad in [#"{"a":1"#, #"{"a":[1}"#, #"{"a" 1}"#, #"{"a":1,}"#, #"{"a":"x}"#, #"{"a":1} x"#, "[1]", ""] {
            #expect(throws: ShallowJSON.Malformed.self, "\(bad)") { try ShallowJSON.members(of: Array(bad.utf8)) }
        }
    }

    @Test func aListWithOneUnreadableItemReadsTheOthers() throws {
        let body = #"{"kind":"ExternalServiceList","metadata":{"resourceVersion":"77","continue":""},"items":["#
            + [Self.service("one"), Self.service("deep", extra: #","x":\#(Self.nested(600))"#), Self.service("two")].joined(separator: ",") + "]}"
        let page = try ListPage<CustomResource>.decode(Array(body.utf8), decoder: JSONDecoder())
        #expect(page.metadata.resourceVersion == "77")
        #expect(page.items?.map { $0.metadata.name } == ["one", "two"])
        let unreadable = try #require(page.unreadable.first)
        #expect(page.unreadable.count == 1)
        #expect(unreadable.metadata?.name == "deep" && unreadable.metadata?.generation == 1)
        // The object's own depth, counted from its braces (the page's are not counted).
        #expect(unreadable.why == "a value is nested 602 levels deep; the decoder reads at most 512", "\(unreadable.why)")
        // A page that is not JSON at all is still an error.
        #expect(throws: (any Error).self) { try ListPage<CustomResource>.decode(Array(#"{"metadata":{"resourceVersion":"1"},"items":[{]}"#.utf8), decoder: JSONDecoder()) }
    }

    @Test func aWatchEventWithAnUnreadableObjectKeepsItsTypeAndMetadata() throws {
        let modified = #"{"type":"MODIFIED","object":\#(Self.service("deep", generation: 2, extra: #","x":\#(Self.nested(600))"#))}"#
        guard case .unreadable(let object, let deleted) = try WatchEvent<CustomResource>.decode(Data(modified.utf8)) else {
            Issue.record("not read as unreadable"); return
        }
        #expect(!deleted && object.metadata?.key == "deep" && object.metadata?.resourceVersion == "12")
        // A pod with a field of the wrong type, deleted.
        let pod = #"{"type":"DELETED","object":{"metadata":{"name":"p","namespace":"ns","resourceVersion":"9"},"spec":{"hostNetwork":"yes"}}}"#
        guard case .unreadable(let gone, true) = try WatchEvent<Pod>.decode(Data(pod.utf8)) else { Issue.record("not read as unreadable"); return }
        #expect(gone.metadata?.key == "ns/p")
        #expect(gone.why.contains("hostNetwork"), "\(gone.why)")
        // Without a name there is nothing to key it by: an error, as before.
        #expect(throws: (any Error).self) { try WatchEvent<Pod>.decode(Data(#"{"type":"ADDED","object":{"metadata":{},"spec":{"hostNetwork":"yes"}}}"#.utf8)) }
    }

    @Test func deepManagedFieldsDoNotHideTheName() throws {
        // The API server tracks each nested map key under x-kubernetes-preserve-unknown-fields in
        // managedFields: as deep as the spec. The metadata is read without it.
        var fields = "{}"
        for _ in 0..<600 { fields = #"{"f:x":\#(fields)}"# }
        let object = #"{"apiVersion":"corridor.dev/v1alpha1","kind":"ExternalService","metadata":{"name":"mf","uid":"u-mf","generation":2,"#
            + #""resourceVersion":"40","managedFields":[{"manager":"kubectl","fieldsV1":\#(fields)}]},"spec":{"x":\#(Self.nested(600))},"#
            + #""status":{"conditions":[{"type":"Synced","status":"True","reason":"R","message":"m","lastTransitionTime":"2026-12-01T00:00:00Z"}]}}"#
        guard case .unreadable(let unreadable, false) = try WatchEvent<CustomResource>.decode(Data(#"{"type":"MODIFIED","object":\#(object)}"#.utf8)) else {
            Issue.record("not read as unreadable"); return
        }
        #expect(unreadable.metadata?.name == "mf" && unreadable.metadata?.generation == 2 && unreadable.metadata?.resourceVersion == "40")
        // The stand-in keeps the status as it is: a status write keeps the other conditions.
        let metadata = try #require(unreadable.metadata)
        let standIn = try #require(CustomResource.unreadable(metadata: metadata, status: unreadable.status, why: unreadable.why))
        #expect(standIn.status?.conditions?.compactMap(KubeCondition.type(of:)) == ["Synced"])
        let policy = ClusterPolicyCompiler(now: { "2026-01-01T00:00:00Z" }).build(base: PolicySource(), objects: ClusterObjects(externalServices: [standIn]))
        #expect(policy.statusUpdates.first?.conditions.compactMap(KubeCondition.type(of:)) == ["Synced", "Accepted"])
        // A status that cannot be read either: no write, rather than one that drops conditions.
        var blind = standIn
        blind.status = nil
        blind.statusUnreadable = true
        #expect(ClusterPolicyCompiler().build(base: PolicySource(), objects: ClusterObjects(externalServices: [blind])).statusUpdates.isEmpty)
    }

    /// Another controller's condition of another shape (no reason or message, extra fields) reads,
    /// and leaves the object readable.
    @Test func aForeignConditionOfAnyShapeLeavesTheObjectReadable() throws {
        let object = Self.service("api").replacingOccurrences(
            of: #""spec""#, with: #""status":{"conditions":[{"type":"Ready","status":"True","severity":"Info"}]},"spec""#)
        let resource = try JSONDecoder().decode(CustomResource.self, from: Data(object.utf8))
        #expect(resource.unreadable == nil && resource.condition("Ready")?.status == "True")
        let odd = try JSONDecoder().decode(CustomResource.self, from: Data(Self.service("odd").replacingOccurrences(
            of: #""spec""#, with: #""status":{"conditions":"not a list"},"spec""#).utf8))
        #expect(odd.status?.conditions == nil)
        let policy = ClusterPolicyCompiler(now: { "2026-01-01T00:00:00Z" }).build(base: PolicySource(), objects: ClusterObjects(externalServices: [resource]))
        #expect(policy.source.externalServices.map(\.name) == ["api"])
        let written = try #require(policy.statusUpdates.first?.conditions)
        #expect(written.first == .object([("severity", .string("Info")), ("status", .string("True")), ("type", .string("Ready"))]))
    }

    @Test func anEventOnlyItsWrappingMakesTooDeepIsAnOrdinaryEvent() throws {
        // The event adds a level around the object: find the depth where the line is refused
        // whole and the object alone is not.
        for depth in 505...515 {
            let object = Self.service("edge", extra: #","x":\#(Self.nested(depth))"#)
            let line = Data(#"{"type":"MODIFIED","object":\#(object)}"#.utf8)
            struct Whole: Decodable { var object: CustomResource }
            guard (try? JSONDecoder().decode(Whole.self, from: line)) == nil,
                  (try? JSONDecoder().decode(CustomResource.self, from: Data(object.utf8))) != nil else { continue }
            guard case .modified(let edge) = try WatchEvent<CustomResource>.decode(line) else { Issue.record("not an ordinary MODIFIED"); return }
            #expect(edge.metadata.name == "edge" && edge.unreadable == nil)
            return
        }
        Issue.record("no depth where only the wrapping is too deep")
    }

    @Test func theBuildRejectsAnUnreadableObjectAndKeepsItsLastGoodGeneration() throws {
        let compiler = ClusterPolicyCompiler(now: { "2026-01-01T00:00:00Z" })
        let good = try JSONDecoder().decode(CustomResource.self, from: Data(Self.service("api").utf8))
        #expect(compiler.build(base: PolicySource(), objects: ClusterObjects(externalServices: [good])).source.externalServices.map(\.name) == ["api"])
        var metadata = good.metadata
        metadata.generation = 2
        let standIn = try #require(CustomResource.unreadable(metadata: metadata, status: nil, why: "too deep"))
        let policy = compiler.build(base: PolicySource(), objects: ClusterObjects(externalServices: [standIn]))
        #expect(policy.source.externalServices.map(\.name) == ["api"], "generation 1 stays in force")
        #expect(policy.rejected == ["ExternalService/api"])
        let condition = try #require(policy.statusUpdates.first?.condition)
        #expect(condition.status == "False" && condition.reason == "Invalid")
        #expect(condition.message == "the API server's copy cannot be read: too deep; not enforced (a gateway that accepted an earlier generation keeps enforcing it)",
                "\(condition.message)")
        #expect(policy.enforcedInstead == ["ExternalService/api": "generation 1"])
        // A new object that cannot be read is never enforced.
        let fresh = try #require(CustomResource.unreadable(metadata: KubeObjectMeta(name: "new", uid: "u-new", generation: 1), status: nil, why: "too deep"))
        #expect(ClusterPolicyCompiler().build(base: PolicySource(), objects: ClusterObjects(externalServices: [fresh])).source.externalServices.isEmpty)
        // The field is never read from the API's JSON.
        let sneaky = try JSONDecoder().decode(CustomResource.self, from: Data(Self.service("api", extra: "").replacingOccurrences(of: #""spec""#, with: #""unreadable":"x","spec""#).utf8))
        #expect(sneaky.unreadable == nil)
    }
}
