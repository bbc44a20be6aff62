/// Where to cut an input into the pieces a parser is fed one by one: chosen from the input's
/// first byte (so libFuzzer explores splittings as it explores bytes), with the rest as the data.
public struct FuzzSplits {
    /// The data to parse.
    public let data: [UInt8]
    /// Increasing cut offsets inside `data` (each in 1..<data.count).
    public let cuts: [Int]

    public init(_ input: [UInt8]) {
        guard let seed = input.first else {
            data = []
            cuts = []
            return
        }
        data = Array(input.dropFirst())
        // A small xorshift generator seeded by the first byte: up to 16 cuts, anywhere.
        var state = UInt32(seed) &* 2_654_435_761 | 1
        func next() -> UInt32 {
            state ^= state << 13
            state ^= state >> 17
            state ^= state << 5
            return state
        }
        var chosen = Set<Int>()
        if data.count > 1 {
            for _ in 0..<Int(seed % 17) { chosen.insert(1 + Int(next() % UInt32(data.count - 1))) }
        }
        cuts = chosen.sorted()
    }

    /// The growing prefixes a connection would hold after each piece arrived: data[..<cut] for
    /// every cut, then all of it.
    public var prefixes: [ArraySlice<UInt8>] { (cuts + [data.count]).map { data[..<$0] } }

    /// Feeds `parser` the growing prefixes until it answers something other than `pending`, and
    /// a second parser all the data at once; checks that both answer the same, and that the
    /// first, once finished, answers the same again. Returns that answer.
    public func checkSplitInvariance<Parser, Outcome: Equatable>(
        _ make: () -> Parser, pending: Outcome, parse: (inout Parser, ArraySlice<UInt8>) -> Outcome
    ) -> Outcome {
        var whole = make()
        let atOnce = parse(&whole, data[...])
        var piecewise = make()
        var outcome = pending
        for prefix in prefixes {
            outcome = parse(&piecewise, prefix)
            if outcome != pending { break }
        }
        fuzzCheck(outcome == atOnce, "split at \(cuts): \(outcome), at once: \(atOnce)")
        fuzzCheck(parse(&piecewise, data[...]) == outcome, "a second call changed the outcome")
        return atOnce
    }
}
