@testable import CorridorPolicy
import Testing

/// The loader splits a stream into documents by text (so a reload can skip the unchanged ones):
/// it must count documents and place errors exactly as parsing the stream whole does.
@Suite struct ConfigCacheTests {
    static func service(_ name: String, host: String) -> String {
        "---\napiVersion: corridor.dev/v1alpha1\nkind: ExternalService\nmetadata: {name: \(name)}\nspec:\n  hosts: [\(host)]\n  ports: [{number: 443, protocol: TLS}]\n"
    }

    @Test(arguments: [
        ("a: 1\n---\nb: 2\n", [0, 1]),
        ("---\na: 1\n---\nb: 2", [0, 2]),
        ("# just a comment\n---\na: 1\n", [0, 1]),
        ("---\n---\na: 1\n", [0, 1]),
        ("a: '---'\n--- # a marker with a comment\nb: 2\n----\n", [0, 1]),
    ])
    func splitsAtDocumentMarkers(text: String, firstLines: [Int]) throws {
        let pieces = try #require(ConfigLoader.splitDocuments(text))
        #expect(pieces.map(\.firstLine) == firstLines)
        #expect(pieces.map(\.text).joined() == text, "nothing lost or repeated")
    }

    @Test func directivesAndEndMarkersAreParsedWhole() {
        #expect(ConfigLoader.splitDocuments("%YAML 1.2\n---\na: 1\n") == nil)
        #expect(ConfigLoader.splitDocuments("a: 1\n...\n---\nb: 2\n") == nil)
    }

    @Test func aCachedReloadParsesOnlyWhatChangedAndAgreesWithAFreshLoad() throws {
        let cache = ConfigCache()
        let first = (0..<50).map { Self.service("s\($0)", host: "h\($0).example.com") }.joined()
        let loaded = try ConfigLoader.load(yaml: first, file: "f.yaml", cache: cache)
        #expect(loaded.externalServices.count == 50)
        #expect(cache.count == 50)
        // One service changes and one is inserted at the top: every line below moves.
        let second = Self.service("new", host: "new.example.com") + first.replacingOccurrences(of: "h7.example.com", with: "seven.example.com")
        let cached = try ConfigLoader.load(yaml: second, file: "f.yaml", cache: cache)
        let fresh = try ConfigLoader.load(yaml: second, file: "f.yaml")
        #expect(cached == fresh)
        #expect(cached.externalServices.first { $0.name == "s7" }?.hosts == [try HostPattern(parsing: "seven.example.com")])
        #expect(cache.count == 51, "only this load's documents are kept")
    }

    @Test func errorsFromCachedDocumentsNameTheirNewDocumentAndLine() throws {
        let cache = ConfigCache()
        let bad = "---\napiVersion: corridor.dev/v1alpha1\nkind: ExternalService\nmetadata: {name: bad}\nspec:\n  hosts: [a.example.com]\n  ports: [{number: 443, protocol: TLS}]\n  typo: 1\n"
        let text = Self.service("ok", host: "ok.example.com") + bad
        #expect { try ConfigLoader.load(yaml: text, file: "f.yaml", cache: cache) } throws: { "\($0)" == "f.yaml:15: document 2 (ExternalService/bad): spec.typo: unknown field" }
        // Two documents inserted above: the cached document's error moves with it.
        let shifted = Self.service("x", host: "x.example.com") + Self.service("y", host: "y.example.com") + text
        #expect { try ConfigLoader.load(yaml: shifted, file: "f.yaml", cache: cache) } throws: { "\($0)" == "f.yaml:29: document 4 (ExternalService/bad): spec.typo: unknown field" }
        #expect { try ConfigLoader.load(yaml: shifted, file: "f.yaml") } throws: { "\($0)" == "f.yaml:29: document 4 (ExternalService/bad): spec.typo: unknown field" }
    }

    @Test func crossChecksAndDuplicateGatewaysAreNotCachedAway() throws {
        let cache = ConfigCache()
        let gateway = "---\napiVersion: corridor.dev/v1alpha1\nkind: GatewayConfig\nmetadata: {name: g}\nspec: {}\n"
        _ = try ConfigLoader.load(yaml: gateway + Self.service("a", host: "a.example.com"), file: "f.yaml", cache: cache)
        #expect { try ConfigLoader.load(yaml: gateway + gateway, file: "f.yaml", cache: cache) } throws: {
            "\($0)".contains("document 2 (GatewayConfig/g): kind: only one GatewayConfig may be given")
        }
        #expect { try ConfigLoader.load(yaml: Self.service("a", host: "a.example.com") + Self.service("a", host: "b.example.com"), file: "f.yaml", cache: cache) } throws: {
            "\($0)".contains("document 2 (ExternalService/a): metadata.name: another ExternalService has the same name")
        }
    }
}
