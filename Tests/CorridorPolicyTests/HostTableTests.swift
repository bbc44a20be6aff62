import Testing
@testable import CorridorPolicy

/// The open-addressing table under HostIndex and the decision engine's service routes.
@Suite("HostTable")
struct HostTableTests {
    func find(_ table: HostTable, _ key: String) -> UInt32? {
        table.find(key.utf8.span, from: 0, hash: HostTable.hash(key.utf8.span))
    }

    @Test("an empty table finds nothing, not even the empty name")
    func empty() {
        let table = HostTable()
        #expect(table.count == 0)
        for key in ["", ".", "api.test", String(repeating: "a", count: 300)] {
            #expect(find(table, key) == nil)
        }
        #expect(HostMatch.mostSpecific("api.test", exact: table, wildcard: table) == nil)
        #expect(HostMatch.all("a.b.test", exact: table, wildcard: table).isEmpty)
    }

    @Test("a key inserted twice keeps its first payload")
    func duplicate() {
        var table = HostTable()
        #expect(table.insert("api.test", payload: 7) == (7, true))
        #expect(table.insert("api.test", payload: 9) == (7, false))
        #expect(table.count == 1)
        #expect(find(table, "api.test") == 7)
    }

    @Test("keys are compared byte for byte: case, trailing dot and a prefix or suffix all differ", arguments: [
        "API.test", "api.test.", "api.tes", "api.testx", "xapi.test", "api", "", "api.tesT",
    ])
    func byteExact(_ other: String) {
        var table = HostTable()
        table.insert("api.test", payload: 1)
        #expect(find(table, "api.test") == 1)
        #expect(find(table, other) == nil)
    }

    @Test("keys with the same hash are told apart by their bytes, at every length and position of difference")
    func collisions() {
        // Every key is inserted under one hash, so every probe walks the same run of slots.
        let hash: UInt64 = 0x1234_5678_9abc_def0
        var keys: [String] = []
        for length in [1, 7, 8, 9, 16, 17, 63] {
            let base = String(repeating: "a", count: length)
            keys.append(base)
            for position in [0, length / 2, length - 1] {
                var bytes = Array(base.utf8)
                bytes[position] = UInt8(ascii: "b")
                keys.append(String(decoding: bytes, as: UTF8.self))
            }
        }
        keys = Array(Set(keys)).sorted()
        var table = HostTable()
        for (payload, key) in keys.enumerated() { #expect(table.insert(key, hash: hash, payload: UInt32(payload)).inserted) }
        #expect(table.count == keys.count)
        for (payload, key) in keys.enumerated() {
            #expect(table.find(key.utf8.span, from: 0, hash: hash) == UInt32(payload), "\(key)")
        }
        for missing in ["c", "aaaaaaaaaaaaaaaac", String(repeating: "a", count: 64), ""] {
            #expect(table.find(missing.utf8.span, from: 0, hash: hash) == nil, "\(missing)")
        }
    }

    @Test("a key is found from an offset into a longer name, as wildcard suffixes are")
    func fromOffset() {
        var table = HostTable()
        table.insert("b.test", payload: 3)
        let name = "a.b.test"
        #expect(table.find(name.utf8.span, from: 2, hash: HostTable.hash("b.test".utf8.span)) == 3)
        #expect(table.find(name.utf8.span, from: 1, hash: HostTable.hash(".b.test".utf8.span)) == nil)
    }

    @Test("100,000 keys: each found with its payload through growth, near misses not found")
    func large() {
        var table = HostTable()
        let count = 100_000
        for i in 0..<count { table.insert("h\(i).svc\(i % 977).example.test", payload: UInt32(i)) }
        #expect(table.count == count)
        var wrong = 0
        for i in 0..<count where find(table, "h\(i).svc\(i % 977).example.test") != UInt32(i) { wrong += 1 }
        for i in stride(from: 0, to: count, by: 7) {
            if find(table, "h\(i).svc\(i % 977 + 1).example.test") != nil { wrong += 1 }
            if find(table, "h\(i).svc\(i % 977).example.tes") != nil { wrong += 1 }
            if find(table, "h\(i + count).svc\(i % 977).example.test") != nil { wrong += 1 }
        }
        #expect(wrong == 0)
    }
}

/// HostIndex against the Dictionary-of-Strings index it replaced, on well-formed and malformed names.
@Suite("HostIndex matches the reference")
struct HostIndexReferenceTests {
    /// The previous implementation, kept as the reference.
    struct Reference {
        var exact: [String: [Int]] = [:]
        var wildcard: [Substring: [Int]] = [:]

        mutating func insert(_ pattern: HostPattern, _ value: Int) {
            switch pattern {
            case .exact(let name): exact[name, default: []].append(value)
            case .wildcard(let suffix): wildcard[Substring(suffix), default: []].append(value)
            }
        }

        func lookup(_ name: String) -> [Int] {
            var result = exact[name] ?? []
            var rest = Substring(name)
            while let dot = rest.utf8.firstIndex(of: UInt8(ascii: ".")) {
                rest = rest[rest.utf8.index(after: dot)...]
                if let values = wildcard[rest] { result += values }
            }
            return result
        }

        func lookupMostSpecific(_ name: String) -> [Int] {
            if let values = exact[name], !values.isEmpty { return values }
            var rest = Substring(name)
            while let dot = rest.utf8.firstIndex(of: UInt8(ascii: ".")) {
                rest = rest[rest.utf8.index(after: dot)...]
                if let values = wildcard[rest], !values.isEmpty { return values }
            }
            return []
        }
    }

    static let patterns: [HostPattern] = [
        .exact("api.test"), .exact("a.b.test"), .wildcard(suffix: "test"), .wildcard(suffix: "b.test"),
        .wildcard(suffix: "a.b.test"), .exact("test"), .exact("x.a.b.test"), .wildcard(suffix: "api.test"),
        // Patterns only the enum's public cases can make, never the parser: the index takes them as given.
        .exact(""), .wildcard(suffix: ""), .exact("."), .wildcard(suffix: ".test"), .exact("API.test"),
        .exact("api.test"),  // a second value under the same pattern
    ]

    static let names: [String] = [
        "api.test", "a.b.test", "x.a.b.test", "y.a.b.test", "p.q.r.a.b.test", "b.test", "test", "evilb.test",
        "a.b.example", "API.test", "api.test.", ".b.test", "a..b.test", "..test", ".", "..", "", "a.", "test.",
        ".test", "aapi.test", "x.api.test", "api.testx", "ünï.test", "a.ünï.test", "a b.test", "a\u{0}.test",
        String(repeating: "a.", count: 200) + "test", String(repeating: "x", count: 300) + ".b.test",
    ]

    @Test("lookup and lookupMostSpecific agree with the reference on every name")
    func agrees() {
        var index = HostIndex<Int>()
        var reference = Reference()
        for (value, pattern) in Self.patterns.enumerated() {
            index.insert(pattern, value)
            reference.insert(pattern, value)
        }
        #expect(index.patternCount == Self.patterns.count)
        for name in Self.names {
            #expect(index.lookup(name) == reference.lookup(name), "lookup(\(name.debugDescription))")
            #expect(index.lookupMostSpecific(name) == reference.lookupMostSpecific(name), "lookupMostSpecific(\(name.debugDescription))")
        }
    }

    @Test("an index holding only wildcards, or only exact names, still answers both kinds of lookup")
    func oneKind() {
        var wildcards = HostIndex<Int>()
        wildcards.insert(.wildcard(suffix: "b.test"), 1)
        #expect(wildcards.lookupMostSpecific("a.b.test") == [1])
        #expect(wildcards.lookupMostSpecific("b.test").isEmpty)
        var exact = HostIndex<Int>()
        exact.insert(.exact("b.test"), 2)
        #expect(exact.lookup("b.test") == [2])
        #expect(exact.lookup("a.b.test").isEmpty)
    }
}
