@testable import CorridorProxy
import Testing

@Suite("CertificateNameCheck: a DNS alternative name for the host, nothing looser")
struct CertificateNameCheckTests {
    @Test(arguments: [
        ("api.example.com", "api.example.com", true),
        ("API.Example.COM.", "api.example.com", true),
        ("*.example.com", "api.example.com", true),
        ("*.Example.com", "api.example.com", true),
        ("*.example.com", "example.com", false),
        ("*.example.com", "a.b.example.com", false),
        ("*.example.com", ".example.com", false),
        ("*.com", "example.com", false),
        ("*", "localhost", false),
        ("f*.example.com", "foo.example.com", false),
        ("*.*.example.com", "a.b.example.com", false),
        ("api.example.com", "api.example.com.evil.test", false),
        ("", "api.example.com", false),
        ("127.0.0.1", "api.example.com", false),
    ])
    func matches(name: String, host: String, expected: Bool) {
        #expect(CertificateNameCheck.matches(Array(name.utf8), host: Array(host.utf8)) == expected)
    }
}
