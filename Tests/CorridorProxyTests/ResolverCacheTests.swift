import CorridorPolicy
import Testing
@testable import CorridorProxy

@Suite("Resolver cache")
struct ResolverCacheTests {
    let a: [IPAddress] = [IPAddress(parsing: "192.0.2.1")!]

    @Test func answersUntilExpiryThenForgets() {
        let cache = ResolverCache()
        let now = ContinuousClock.now
        cache.store("api.example.test", a, until: now + .seconds(5), limit: 10)
        #expect(cache.lookup("api.example.test", now: now) == a)
        #expect(cache.lookup("api.example.test", now: now + .seconds(4)) == a)
        #expect(cache.lookup("api.example.test", now: now + .seconds(5)) == nil)
        #expect(cache.lookup("other.example.test", now: now) == nil)
    }

    @Test func staysWithinItsLimit() {
        let cache = ResolverCache()
        let later = ContinuousClock.now + .seconds(60)
        for i in 0..<25 { cache.store("n\(i).example.test", a, until: later, limit: 10) }
        let present = (0..<25).filter { cache.lookup("n\($0).example.test", now: .now) != nil }.count
        #expect(present <= 10)
        #expect(cache.lookup("n24.example.test", now: .now) == a)
    }

    @Test func cacheTTLIsConfigurable() throws {
        let yaml = """
        apiVersion: corridor.dev/v1alpha1
        kind: GatewayConfig
        metadata: {name: g}
        spec: {resolver: {cacheTTL: 0s}}
        """
        #expect(try ConfigLoader.load(yaml: yaml, file: "t.yaml").gateway.resolverCacheTTL == .zero)
        #expect(throws: ConfigErrors.self) {
            try ConfigLoader.load(yaml: yaml.replacingOccurrences(of: "0s", with: "soon"), file: "t.yaml")
        }
    }
}
