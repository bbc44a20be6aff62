import Foundation
import Testing

/// Regressions for defects an adversarial run found on the http listener: each was reproduced over
/// a real socket first, and each test here fails on the code before its fix.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct HTTPListenerDefectTests {
    /// A grant removed by a reload reaches the next request of a kept-alive connection (it used to
    /// be judged against the policy of the moment the connection opened).
    @Test func aRevokedGrantStopsTheNextRequestOnAKeptAliveConnection() async throws {
        let h = try await OriginationHarness()
        defer { Task { await h.stop() } }
        let session = try HTTPSession(port: h.httpPort)
        defer { session.close() }
        let first = try session.get("/one", host: "billing.example.test")
        #expect(first.status == 200, "\(first)")

        let config = try String(contentsOfFile: h.configPath, encoding: .utf8)
        #expect(config.contains("  access: All"))
        try config.replacingOccurrences(of: "  access: All", with: "  access: Restricted").write(toFile: h.configPath, atomically: true, encoding: .utf8)
        #expect(h.gateway.reload(reason: "test"))

        let second = try session.get("/two", host: "billing.example.test")
        #expect(second.status == 403, "\(second)")
        #expect(second.reason == "policy_denied")
        try await Task.sleep(for: .milliseconds(200))
        #expect(h.upstream.requests.map { $0["path"] as? String ?? "" } == ["/one"], "\(h.upstream.requests)")
        let denied = h.record { $0["path"] as? String == "/two" }
        #expect(denied?["decision"] as? String == "deny", "\(String(describing: denied))")
        #expect(denied?["policyGeneration"] as? Int == 2)
        #expect((denied?["reason"] as? String ?? "").contains("is not granted to shop/sa:app"), "\(String(describing: denied))")
    }

    /// The identity is looked up per request too: the source's Workload changes between two
    /// requests of one connection, and the second is judged (and recorded) as the new one.
    @Test func theNextRequestIsJudgedAsTheSourcesIdentityNow() async throws {
        let h = try await OriginationHarness(moreServices: { _, _ in [Self.grantToShopOnly] })
        defer { Task { await h.stop() } }
        let config = try String(contentsOfFile: h.configPath, encoding: .utf8)
            .replacingOccurrences(of: "  access: All", with: "  access: Restricted")
        try config.write(toFile: h.configPath, atomically: true, encoding: .utf8)
        #expect(h.gateway.reload(reason: "test"))
        let session = try HTTPSession(port: h.httpPort)
        defer { session.close() }
        #expect(try session.get("/one", host: "billing.example.test").status == 200)

        try config.replacingOccurrences(of: "metadata: {name: app, namespace: shop}", with: "metadata: {name: app, namespace: elsewhere}")
            .write(toFile: h.configPath, atomically: true, encoding: .utf8)
        #expect(h.gateway.reload(reason: "test"))
        let second = try session.get("/two", host: "billing.example.test")
        #expect(second.status == 403, "\(second)")
        let denied = h.record { $0["path"] as? String == "/two" }
        #expect((denied?["identity"] as? [String: Any])?["namespace"] as? String == "elsewhere", "\(String(describing: denied))")
    }

    static let grantToShopOnly = """
    apiVersion: corridor.dev/v1alpha1
    kind: EgressPolicy
    metadata: {name: billing, namespace: shop}
    spec:
      podSelector: {}
      egress: [{to: [{externalService: billing}]}]
    """
}
