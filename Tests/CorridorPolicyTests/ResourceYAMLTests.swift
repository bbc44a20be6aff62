import Testing
@testable import CorridorPolicy

/// What ResourceYAML writes loads back to the same objects, whatever characters a string holds.
@Suite struct ResourceYAMLTests {
    @Test(arguments: ["/etc/corridor/ca.pem", "/tmp/with \"quotes\" and \\ back", "/tmp/del\u{7f}and\u{85}c1", "/tmp/tab\tand\nnewline", "/tmp/ünïcödé-✓-😀"])
    func stringsRoundTrip(path: String) throws {
        let service = ExternalService(metadata: ObjectMeta(name: "s"), hosts: [.exact("a.test")],
                                      ports: [.init(number: 80, protocol: .http, originateTLS: .init(port: 443, caBundle: .file(path)))])
        let loaded = try ConfigLoader.load(yaml: ResourceYAML.render(service), file: "round-trip.yaml", crossCheck: false)
        #expect(loaded.externalServices == [service])
    }
}
