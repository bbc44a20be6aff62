import Testing
@testable import CorridorPolicy

@Suite("HostPattern parsing and matching")
struct HostPatternTests {
    @Test("parses exact names and wildcards, normalised", arguments: [
        Named("exact", ("api.stripe.com", HostPattern.exact("api.stripe.com"))),
        Named("exact, case and trailing dot", ("API.Stripe.com.", .exact("api.stripe.com"))),
        Named("wildcard", ("*.stripe.com", .wildcard(suffix: "stripe.com"))),
        Named("wildcard, case and trailing dot", ("*.Stripe.COM.", .wildcard(suffix: "stripe.com"))),
        Named("wildcard over one label", ("*.test", .wildcard(suffix: "test"))),
    ])
    func parses(_ example: Named<(String, HostPattern)>) throws {
        let (text, expected) = example.value
        #expect(try HostPattern(parsing: text) == expected)
    }

    @Test("rejects bad patterns", arguments: [
        Named("bare wildcard label with nothing after it", ("*.", "invalid")),
        Named("wildcard glued to a label", ("a*.b", "misplaced")),
        Named("wildcard in the middle", ("a.*.b", "misplaced")),
        Named("double wildcard", ("*.*.b", "misplaced")),
        Named("lone star", ("*", "misplaced")),
        Named("star star", ("**.b", "misplaced")),
        Named("trailing wildcard", ("example.*", "misplaced")),
        Named("IPv4 literal", ("1.2.3.4", "invalid")),
        Named("wildcard over an IPv4 literal", ("*.1.2.3.4", "invalid")),
        Named("IPv6 literal", ("[::1]", "invalid")),
        Named("empty", ("", "invalid")),
        Named("underscore", ("a_b.test", "invalid")),
        Named("leading hyphen after wildcard", ("*.-a.test", "invalid")),
        Named("empty label", ("a..test", "invalid")),
    ])
    func rejects(_ example: Named<(String, String)>) {
        let (text, kind) = example.value
        do {
            let parsed = try HostPattern(parsing: text)
            Issue.record("'\(text)' parsed as \(parsed)")
        } catch {
            switch error {
            case .invalidName(let given, _): #expect(kind == "invalid" && given == text)
            case .misplacedWildcard(let given): #expect(kind == "misplaced" && given == text)
            }
        }
    }

    @Test("a wildcard matches one or more labels below its suffix", arguments: [
        "a.suffix.test", "x-y.suffix.test", "a.b.suffix.test", "a.b.c.d.suffix.test", "0.suffix.test",
    ])
    func wildcardMatches(_ name: String) {
        #expect(pattern("*.suffix.test").matches(name))
    }

    @Test("a wildcard never matches its suffix or a look-alike", arguments: [
        Named("the suffix itself", "suffix.test"),
        Named("glued prefix", "evilsuffix.test"),
        Named("suffix followed by more labels", "suffix.test.evil.test"),
        Named("match candidate followed by more labels", "a.suffix.test.evil"),
        Named("parent only", "test"),
        Named("different TLD", "a.suffix.tes"),
        Named("suffix with a different first label", "a.prefix.test"),
        Named("dot-less look-alike", "asuffixtest"),
    ])
    func wildcardRejects(_ example: Named<String>) {
        #expect(!pattern("*.suffix.test").matches(example.value))
    }

    @Test("an exact pattern matches only its own name")
    func exact() {
        let exact = pattern("api.allowed.test")
        #expect(exact.matches("api.allowed.test"))
        #expect(!exact.matches("x.api.allowed.test"))
        #expect(!exact.matches("allowed.test"))
        #expect(!exact.matches("api.allowed.test.evil.test"))
        #expect(!exact.matches("xapi.allowed.test"))
    }

    @Test("matching after normalisation is case-insensitive and ignores one trailing dot")
    func normalisedMatch() throws {
        let wildcard = pattern("*.Suffix.Test")
        #expect(wildcard.matches(try HostName.normalize("API.SUFFIX.TEST.").get()))
        #expect(pattern("Api.Allowed.Test").matches(try HostName.normalize("api.ALLOWED.test.").get()))
    }

    @Test("description prints the pattern as configured")
    func description() {
        #expect(pattern("*.Stripe.com").description == "*.stripe.com")
        #expect(pattern("API.stripe.com.").description == "api.stripe.com")
    }
}

@Suite("HostIndex")
struct HostIndexTests {
    /// Inserted least specific first, so the order of results cannot come from insertion order.
    static func sample() -> HostIndex<String> {
        var index = HostIndex<String>()
        index.insert(pattern("*.test"), "*.test")
        index.insert(pattern("*.b.test"), "*.b.test")
        index.insert(pattern("*.a.b.test"), "*.a.b.test")
        index.insert(pattern("a.b.test"), "a.b.test")
        index.insert(pattern("x.a.b.test"), "x.a.b.test")
        return index
    }

    @Test("lookup returns matches most specific first", arguments: [
        Named("exact before wildcards", ("a.b.test", ["a.b.test", "*.b.test", "*.test"])),
        Named("exact then longer suffix then shorter", ("x.a.b.test", ["x.a.b.test", "*.a.b.test", "*.b.test", "*.test"])),
        Named("wildcards only, longest first", ("y.a.b.test", ["*.a.b.test", "*.b.test", "*.test"])),
        Named("deep name", ("p.q.r.a.b.test", ["*.a.b.test", "*.b.test", "*.test"])),
        Named("suffix of a wildcard is not matched by it", ("b.test", ["*.test"])),
        Named("top label alone matches nothing", ("test", [])),
        Named("look-alike", ("evilb.test", ["*.test"])),
        Named("other TLD", ("a.b.example", [])),
    ])
    func order(_ example: Named<(String, [String])>) {
        let (name, expected) = example.value
        #expect(Self.sample().lookup(name) == expected)
    }

    @Test("the most specific pattern alone decides", arguments: [
        Named("exact shadows wildcards", ("a.b.test", ["a.b.test"])),
        Named("longest wildcard shadows shorter", ("y.a.b.test", ["*.a.b.test"])),
        Named("falls back to a shorter wildcard", ("c.b.test", ["*.b.test"])),
        Named("nothing matches", ("test", [])),
    ])
    func mostSpecific(_ example: Named<(String, [String])>) {
        #expect(Self.sample().lookupMostSpecific(example.value.0) == example.value.1)
    }

    @Test("several values under one pattern keep their insertion order")
    func samePattern() {
        var index = HostIndex<Int>()
        index.insert(pattern("api.test"), 1)
        index.insert(pattern("*.test"), 3)
        index.insert(pattern("api.test"), 2)
        #expect(index.lookup("api.test") == [1, 2, 3])
        #expect(index.patternCount == 3)
    }

    @Test("an empty index matches nothing")
    func empty() {
        let index = HostIndex<Int>()
        #expect(index.lookup("api.test").isEmpty)
        #expect(index.patternCount == 0)
    }

    @Test("the index agrees with matching every pattern one by one")
    func agreesWithLinearScan() {
        let labels = ["a", "b", "c", "ab"]
        var patterns: [HostPattern] = []
        for first in labels {
            for second in labels {
                patterns.append(pattern("\(first).\(second).test"))
                patterns.append(pattern("*.\(first).\(second).test"))
            }
            patterns.append(pattern("*.\(first).test"))
        }
        var index = HostIndex<Int>()
        for (position, pattern) in patterns.enumerated() { index.insert(pattern, position) }

        var names: [String] = ["test", "a.test"]
        for x in labels {
            for y in labels {
                names.append("\(x).\(y).test")
                for z in labels { names.append("\(x).\(y).\(z).test"); names.append("q.\(x).\(y).\(z).test") }
            }
        }
        var nonEmpty = 0
        for name in names {
            let expected = Set(patterns.indices.filter { patterns[$0].matches(name) })
            let found = index.lookup(name)
            #expect(Set(found) == expected, "lookup(\(name))")
            #expect(found.count == expected.count, "lookup(\(name)) has no duplicates")
            if !found.isEmpty { nonEmpty += 1 }
        }
        #expect(nonEmpty > names.count / 2, "the sample exercises matches, not only misses")
    }
}
