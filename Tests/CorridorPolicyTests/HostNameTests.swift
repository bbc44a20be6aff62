import Testing
@testable import CorridorPolicy

private let label63 = String(repeating: "a", count: 63)
private let label64 = String(repeating: "a", count: 64)
/// 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 bytes.
private let name253 = [label63, label63, label63, String(repeating: "b", count: 61)].joined(separator: ".")

@Suite("HostName.normalize")
struct HostNameTests {
    @Test("accepts and normalises valid names", arguments: [
        Named("lower case kept", ("api.example.com", "api.example.com")),
        Named("upper case folded", ("API.Example.COM", "api.example.com")),
        Named("one trailing dot dropped", ("api.example.com.", "api.example.com")),
        Named("trailing dot and case together", ("WWW.Example.Test.", "www.example.test")),
        Named("single label", ("localhost", "localhost")),
        Named("inner hyphens", ("my-api.ex-ample.test", "my-api.ex-ample.test")),
        Named("digits in labels", ("s3.eu-west-1.amazonaws.com", "s3.eu-west-1.amazonaws.com")),
        Named("all-digit inner label", ("123.example.com", "123.example.com")),
        Named("punycode A-label", ("xn--bcher-kva.example", "xn--bcher-kva.example")),
        Named("hex-looking label with a real TLD", ("0x7f000001.example.com", "0x7f000001.example.com")),
        Named("label of exactly 63 bytes", ("\(label63).test", "\(label63).test")),
        Named("name of exactly 253 bytes", (name253, name253)),
        Named("253 bytes plus the trailing dot", (name253 + ".", name253)),
    ])
    func accepts(_ example: Named<(String, String)>) {
        let (input, expected) = example.value
        #expect(HostName.normalize(input) == .success(expected))
        #expect(HostName.normalize(bytes: Array(input.utf8)) == .success(expected), "bytes and string entry points agree")
        // Normalising is idempotent.
        #expect(HostName.normalize(expected) == .success(expected))
    }

    @Test("rejects malformed names with the right problem", arguments: [
        Named("empty", ("", HostName.Problem.empty)),
        Named("only a dot", (".", .empty)),
        Named("two trailing dots", ("example.com..", .emptyLabel)),
        Named("empty inner label", ("a..b.test", .emptyLabel)),
        Named("leading dot", (".example.com", .emptyLabel)),
        Named("NUL byte", ("exa\u{0}mple.com", .nulByte)),
        Named("NUL byte before a suffix (truncation attack)", ("evil.test\u{0}.allowed.test", .nulByte)),
        Named("non-ASCII (U-label IDN)", ("bücher.example", .nonASCII)),
        Named("label of 64 bytes", ("\(label64).test", .labelTooLong)),
        Named("name of 254 bytes", (name253 + "c", .tooLong)),
        Named("leading hyphen", ("-api.example.com", .hyphenAtLabelEdge)),
        Named("trailing hyphen in inner label", ("api-.example.com", .hyphenAtLabelEdge)),
        Named("trailing hyphen in last label", ("api.example-", .hyphenAtLabelEdge)),
        Named("trailing hyphen before the trailing dot", ("api.example-.", .hyphenAtLabelEdge)),
        Named("underscore", ("_dmarc.example.com", .invalidCharacter)),
        Named("underscore inside", ("a_b.example.com", .invalidCharacter)),
        Named("space", ("a b.example.com", .invalidCharacter)),
        Named("asterisk", ("*.example.com", .invalidCharacter)),
        Named("slash", ("example.com/path", .invalidCharacter)),
        Named("port suffix", ("example.com:443", .invalidCharacter)),
        Named("at sign", ("user@example.com", .invalidCharacter)),
    ])
    func rejects(_ example: Named<(String, HostName.Problem)>) {
        let (input, problem) = example.value
        #expect(HostName.normalize(input) == .failure(problem))
        #expect(HostName.normalize(bytes: Array(input.utf8)) == .failure(problem))
    }

    @Test("rejects high bytes that are not UTF-8", arguments: [
        Named("0xff", [UInt8(ascii: "a"), 0xff, UInt8(ascii: "."), UInt8(ascii: "t")]),
        Named("0x80", [0x80, UInt8(ascii: "b"), UInt8(ascii: "."), UInt8(ascii: "t")]),
        Named("overlong slash", [UInt8(ascii: "a"), 0xc0, 0xaf, UInt8(ascii: "."), UInt8(ascii: "t")]),
    ])
    func rejectsHighBytes(_ example: Named<[UInt8]>) {
        #expect(HostName.normalize(bytes: example.value) == .failure(.nonASCII))
    }

    @Test("rejects every spelling of an IP address", arguments: [
        "1.2.3.4", "1.2.3.4.", "127.1", "2130706433", "0x7f000001", "0X7F000001", "0x7f.0.0.1", "0x7f.0x0.0x0.0x1",
        "0177.0.0.1", "017700000001", "[::1]", "::1", "::ffff:127.0.0.1", "[::ffff:127.0.0.1]", "[2606:2800:220:1::1]",
        "169.254.169.254", "10.0.0.1",
    ])
    func rejectsIPLiterals(_ literal: String) {
        switch HostName.normalize(literal) {
        case .success(let name):
            Issue.record("'\(literal)' was accepted as host name '\(name)'")
        case .failure(let problem):
            #expect(problem == .ipLiteral || problem == .allNumericTopLabel || problem == .invalidCharacter,
                    "'\(literal)' rejected for \(problem)")
        }
    }

    @Test("dotted-quad and bracketed IPv6 are named as IP literals")
    func ipLiteralProblem() {
        #expect(HostName.normalize("1.2.3.4") == .failure(.ipLiteral))
        #expect(HostName.normalize("[::1]") == .failure(.ipLiteral))
        #expect(HostName.normalize("::ffff:127.0.0.1") == .failure(.ipLiteral))
        #expect(HostName.normalize("0x7f000001") == .failure(.ipLiteral))
    }

    @Test("every problem explains itself in words and has a distinct metric label")
    func explanations() {
        let problems: [HostName.Problem] = [.empty, .tooLong, .emptyLabel, .labelTooLong, .invalidCharacter,
                                            .nonASCII, .nulByte, .hyphenAtLabelEdge, .ipLiteral, .allNumericTopLabel]
        #expect(Set(problems.map(\.rawValue)).count == problems.count)
        #expect(Set(problems.map(\.explanation)).count == problems.count)
        #expect(HostName.Problem.tooLong.explanation.contains("253"))
        #expect(HostName.Problem.labelTooLong.explanation.contains("63"))
    }

    @Test("names that differ only in case or a trailing dot normalise to the same name")
    func equivalence() throws {
        let forms = ["Api.Stripe.Com", "api.stripe.com.", "API.STRIPE.COM.", "api.stripe.com"]
        let normalised = try forms.map { try HostName.normalize($0).get() }
        #expect(Set(normalised) == ["api.stripe.com"])
    }
}

/// The byte-wise inet_aton check against the character-wise one it replaced, on edge cases and
/// on every name of up to five labels drawn from a small alphabet of label shapes.
@Suite struct HexIPv4CheckTests {
    /// The former implementation, kept as the reference.
    static func reference(_ name: String) -> Bool {
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.count <= 4 else { return false }
        for label in labels {
            let isHex = label.count > 2 && label.hasPrefix("0x") && label.dropFirst(2).allSatisfy(\.isHexDigit)
            let isDecimal = label.allSatisfy(\.isNumber)
            if !(isHex || isDecimal) { return false }
        }
        return true
    }

    @Test func agreesWithTheCharacterWiseCheck() {
        let shapes = ["0", "7", "127", "0x", "0x7f", "0x0", "0xg", "x7f", "0x7f000001", "00x1", "a", "ab", "0a", "1x", "abc", "0xabcdef", "0xfg"]
        var names: [String] = []
        for a in shapes {
            names.append(a)
            for b in shapes {
                names.append("\(a).\(b)")
                for c in ["0", "0x1", "x", "1"] {
                    names.append("\(a).\(b).\(c)")
                    names.append("\(a).\(b).\(c).1")
                    names.append("\(a).\(b).\(c).1.2")
                }
            }
        }
        for name in names {
            #expect(HostName.looksLikeHexIPv4(Array(name.utf8)) == Self.reference(name), "\(name)")
        }
    }
}
