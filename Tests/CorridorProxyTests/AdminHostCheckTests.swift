import Testing

@testable import CorridorProxy

/// The Host names the admin listener answers to: none an outsider's DNS can hand a browser
/// (DNS rebinding, found in review).
@Suite struct AdminHostCheckTests {
    @Test(arguments: [
        "127.0.0.1", "127.0.0.1:15000", "10.1.2.3:15000", "[::1]:15000", "[fd00::7]", "localhost", "LOCALHOST:15000",
        "console.localhost", "admin", "corridor-gateway:15000", "corridor-admin.corridor-system.svc",
        "corridor-admin.corridor-system.svc.cluster.local:15000", "corridor-admin.corridor-system.svc.cluster.local.",
    ])
    func answered(_ host: String) {
        #expect(AdminHostCheck.allows(host, listed: []))
    }

    @Test(arguments: [
        "rebind.attacker.example:15000", "attacker.example", "127.0.0.1.nip.io", "a.svc.attacker.example", "localhost.attacker.example",
        "[::1", "[not-an-address]:15000", "svc.cluster.local.attacker.example", "exa mple", "ex\u{0}ample",
    ])
    func refused(_ host: String) {
        #expect(!AdminHostCheck.allows(host, listed: []))
    }

    @Test func listedSuffixesAnswerEveryNameUnderThem() {
        let listed: Set<String> = ["*.svc.k8s.example.com", "corridor-admin.corridor-system"]  // as the reader keeps them
        #expect(AdminHostCheck.allows("corridor-admin.corridor-system.svc.k8s.example.com:15000", listed: listed))
        #expect(AdminHostCheck.allows("corridor-admin.corridor-system:15000", listed: listed))
        #expect(!AdminHostCheck.allows("svc.k8s.example.com.attacker.example", listed: listed))
        #expect(!AdminHostCheck.allows("corridor-admin.other", listed: listed))
    }

    @Test func listedNamesAreAnsweredWhateverTheirCase() {
        #expect(AdminHostCheck.allows("Console.Example.COM:443", listed: ["console.example.com"]))
        #expect(AdminHostCheck.allows("console.example.com.", listed: ["console.example.com"]))
        #expect(!AdminHostCheck.allows("other.example.com", listed: ["console.example.com"]))
    }

    @Test func aRequestWithoutAHostIsNoBrowsers() {
        #expect(AdminHostCheck.allows(nil, listed: []))
    }
}
