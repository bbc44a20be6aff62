import Foundation
import Testing

/// Another writer overwriting an object's `Accepted` condition (a controller, or a person with
/// `kubectl edit --subresource=status`): the gateway writes its own view back, counts the conflict,
/// and backs off instead of fighting in a loop.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct KubernetesStatusConflictTests {
    private func overwritten(_ n: Int) -> [String: Any] {
        var object = K8sObject.egressPolicy("payments", "checkout-egress", services: ["allowed-api"], matchLabels: ["app": "checkout"])
        object["status"] = ["conditions": [["type": "Accepted", "status": "False", "reason": "Overwritten", "message": "by someone else \(n)",
                                            "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": 1]]]
        return object
    }

    private func gatewayWrites(_ h: KubernetesHarness) -> Int {
        h.api.statusWrites.filter { $0["resource"] as? String == "egresspolicies" && $0["name"] as? String == "checkout-egress" }.count
    }

    @Test func anOverwrittenConditionIsWrittenBack() async throws {
        let h = try await KubernetesHarness()
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        #expect(await eventually { h.api.accepted("egresspolicies", namespace: "payments", name: "checkout-egress")?["status"] as? String == "True" })
        let before = gatewayWrites(h)
        try h.api.put(overwritten(1))
        #expect(await eventually(timeout: 15) {
            gatewayWrites(h) > before
                && h.api.accepted("egresspolicies", namespace: "payments", name: "checkout-egress")?["status"] as? String == "True"
        }, "\(h.api.statusWrites.suffix(3))")
        #expect(await eventually { (try? h.metrics())?.contains("corridor_kubernetes_status_conflicts_total 1") ?? false },
                "\((try? h.metrics()) ?? "")")
        // The policy was enforced all along.
        #expect(try h.connect(from: "127.0.0.1").status == 0)
    }

    /// Another controller's condition on the same object: the gateway's writes keep it, both
    /// when it was there first and when it arrives between the gateway's reading and writing.
    @Test func anotherControllersConditionIsKept() async throws {
        let h = try await KubernetesHarness(objects: { port in
            var objects = KubernetesHarness.standardObjects(upstreamPort: port)
            objects[1]["status"] = ["conditions": [["type": "Synced", "status": "True", "reason": "Mirrored", "message": "by another controller",
                                                    "lastTransitionTime": "2026-12-01T00:00:00Z"]]]
            return objects
        })
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        func conditions() throws -> [String: String] {
            let object = try h.api.object("egresspolicies", namespace: "payments", name: "checkout-egress")
            let list = (object?["status"] as? [String: Any])?["conditions"] as? [[String: Any]] ?? []
            return Dictionary(list.map { ($0["type"] as? String ?? "", $0["status"] as? String ?? "") }) { first, _ in first }
        }
        #expect(await eventually { (try? conditions()) == ["Synced": "True", "Accepted": "True"] }, "\(String(describing: try? conditions()))")
        // A bad edit: the gateway writes Accepted False over the object as it then is.
        var edited = K8sObject.egressPolicy("payments", "checkout-egress", services: ["allowed-api"], matchLabels: ["app": "checkout"],
                                            extraSpec: ["mode": "Sometimes"])
        edited["status"] = ["conditions": [["type": "Synced", "status": "False", "reason": "Lagging", "message": "by another controller",
                                            "lastTransitionTime": "2026-12-02T00:00:00Z"]]]
        try h.api.put(edited)
        #expect(await eventually { (try? conditions()) == ["Synced": "False", "Accepted": "False"] }, "\(String(describing: try? conditions()))")
        let writes = h.api.statusWrites.filter { $0["name"] as? String == "checkout-egress" }
        #expect(writes.allSatisfy { ($0["code"] as? Int) == 200 || ($0["code"] as? Int) == 409 }, "\(writes)")
    }

    @Test func aWriterThatKeepsOverwritingMeetsABackoffNotALoop() async throws {
        let h = try await KubernetesHarness()
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        #expect(await eventually { h.api.accepted("egresspolicies", namespace: "payments", name: "checkout-egress")?["status"] as? String == "True" })
        let before = gatewayWrites(h)
        // Overwrite it every 150 ms for 3 s: a writer that fights back at once would write ~20 times.
        for n in 1...20 {
            try h.api.put(overwritten(n))
            try await Task.sleep(for: .milliseconds(150))
        }
        let written = gatewayWrites(h) - before
        #expect((1...5).contains(written), "the gateway wrote \(written) times in 3 s")
        let metrics = try h.metrics()
        let conflicts = metrics.split(separator: "\n").first { $0.hasPrefix("corridor_kubernetes_status_conflicts_total ") }
            .flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
        // Each overwrite the gateway finds before a successful write counts; writes the API refused
        // (409: the writer changed the object again meanwhile) count no conflict of their own.
        #expect(conflicts >= 1, "\(metrics)")
        // Once the other writer stops, the gateway's view is back within the backoff.
        #expect(await eventually(timeout: 20) {
            h.api.accepted("egresspolicies", namespace: "payments", name: "checkout-egress")?["status"] as? String == "True"
        })
    }
}
