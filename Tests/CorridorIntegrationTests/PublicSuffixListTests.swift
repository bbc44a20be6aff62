import CorridorTools
import Testing

/// Where `corridor learn` never proposes a wildcard: under a public suffix, and anywhere under a
/// multi-tenant parent (found in review: `*.s3.eu-west-1.amazonaws.com` reached every bucket of the
/// region, `*.foo.s3.amazonaws.com` anyone's dotted bucket names).
@Suite struct PublicSuffixListTests {
    @Test func wildcardsStayOffPublicSuffixesAndEverythingUnderATenantParent() throws {
        let dir = try TempDir()
        let file = dir.path("psl.dat")
        try "// test list\ncom\nco.uk\n*.ck\n!www.ck\n".write(toFile: file, atomically: true, encoding: .utf8)
        let list = try PublicSuffixList(path: file)
        #expect(list.hasList)
        for name in ["com", "co.uk", "foo.ck", "s3.amazonaws.com", "s3.eu-west-1.amazonaws.com", "foo.s3.amazonaws.com",
                     "execute-api.us-east-1.amazonaws.com", "myapp.azurewebsites.net", "x.y.github.io"] {
            #expect(list.isPublic(name), "\(name)")
        }
        for name in ["example.com", "example.co.uk", "www.ck", "api.example.com"] {
            #expect(!list.isPublic(name), "\(name)")
        }
    }
}
