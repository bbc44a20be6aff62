import NIOHTTP1
import Testing

@testable import CorridorProxy

/// The checks a plain-HTTP request head passes before anything of it goes upstream, and
/// hop-by-hop removal, which must stay one pass whatever the Connection header names.
@Suite struct HTTPRequestHeadCheckTests {
    private func head(_ fields: [(String, String)], method: HTTPMethod = .POST) -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: method, uri: "/", headers: HTTPHeaders([("Host", "a.test")] + fields))
    }

    @Test(arguments: [
        ("chunked", nil), ("Chunked", nil), (" chunked ", nil),
        ("xchunked", HTTPRefusalCode.badRequest), ("\"chunked\"", .badRequest), ("chunked, gzip", .badRequest),
        ("gzip, chunked", .unsupportedTransferCoding), ("chunked, chunked", .unsupportedTransferCoding), (",", .badRequest),
    ])
    func transferEncoding(_ value: String, _ expected: HTTPRefusalCode?) {
        #expect(HTTPRequestHeadCheck.problem(head([("Transfer-Encoding", value)]))?.code == expected)
    }

    @Test func framingConflictsAndBadLengths() {
        #expect(HTTPRequestHeadCheck.problem(head([("Content-Length", "3"), ("Transfer-Encoding", "chunked")]))?.code == .badRequest)
        #expect(HTTPRequestHeadCheck.problem(head([("Content-Length", "3"), ("Content-Length", "3")]))?.code == .badRequest)
        #expect(HTTPRequestHeadCheck.problem(head([("Content-Length", "+3")]))?.code == .badRequest)
        #expect(HTTPRequestHeadCheck.problem(head([("Content-Length", "3")])) == nil)
        for named in ["content-length", "Transfer-Encoding", "HOST"] {
            #expect(HTTPRequestHeadCheck.problem(head([("Connection", "keep-alive, \(named)")]))?.code == .badRequest, "\(named)")
        }
    }

    @Test func anAcceptedHeadYieldsItsBodysFraming() {
        #expect(HTTPRequestHeadCheck.check(head([("Transfer-Encoding", "CHUNKED")])) == .success(.chunked))
        #expect(HTTPRequestHeadCheck.check(head([("Content-Length", "007")])) == .success(.length(7)))
        #expect(HTTPRequestHeadCheck.check(head([])) == .success(.none))
        #expect(HTTPRequestHeadCheck.problem(head([("Content-Length", "99999999999999999999999")]))?.code == .badRequest)
    }

    @Test func aTRACERequestCarriesNoContent() {
        #expect(HTTPRequestHeadCheck.problem(head([("Content-Length", "5")], method: .TRACE))?.code == .badRequest)
        #expect(HTTPRequestHeadCheck.problem(head([("Transfer-Encoding", "chunked")], method: .TRACE))?.code == .badRequest)
        #expect(HTTPRequestHeadCheck.check(head([("Content-Length", "0")], method: .TRACE)) == .success(.length(0)))
        #expect(HTTPRequestHeadCheck.check(head([], method: .TRACE)) == .success(.none))
    }

    @Test func theFieldCountIsBounded() {
        let fields = (0..<HTTPRequestHeadCheck.maxHeaderFields - 1).map { ("x-\($0)", "v") }
        #expect(HTTPRequestHeadCheck.problem(head(fields)) == nil)
        let problem = HTTPRequestHeadCheck.problem(head(fields + [("x-last", "v")]))
        #expect(problem?.status == .requestHeaderFieldsTooLarge && problem?.code == .tooManyHeaderFields)
    }

    @Test func hopByHopRemovalDropsWhatTheConnectionHeaderNamesAndKeepsTheRest() {
        var headers = HTTPHeaders([("Host", "a.test"), ("Connection", "close, X-Secret"), ("x-secret", "1"), ("Keep-Alive", "5"),
                                   ("TE", "trailers"), ("X-Kept", "2"), ("Upgrade", "h2c"), ("Proxy-Connection", "keep-alive")])
        HTTPHeaders.removeHopByHop(&headers)
        #expect(headers.map(\.name) == ["Host", "X-Kept"])
    }

    /// Thousands of names over thousands of fields cost about what the same number of plain fields
    /// does (the removal scanned every field once per name: 3,000 x 3,000 comparisons).
    @Test func hopByHopRemovalIsOnePass() {
        let n = 3000
        let names = (0..<n).map { "x-t\($0)" }
        let named = HTTPHeaders([("Connection", names.joined(separator: ", "))] + names.map { ($0, "v") })
        let plain = HTTPHeaders([("Connection", String(repeating: "v", count: names.joined(separator: ", ").utf8.count))]
                                + names.map { ($0, "v") })
        func cost(_ headers: HTTPHeaders) -> Duration {
            var best = Duration.seconds(1000)
            for _ in 0..<5 {
                var copy = headers
                let start = ContinuousClock.now
                HTTPHeaders.removeHopByHop(&copy)
                best = min(best, ContinuousClock.now - start)
            }
            return best
        }
        let ratio = cost(named) / cost(plain)
        #expect(ratio < 6, "\(ratio)x")
        var copy = named
        HTTPHeaders.removeHopByHop(&copy)
        #expect(copy.count == 0)
    }

    @Test func asciiCaseComparisonsFoldOnlyASCIILetters() {
        #expect(ASCIICase.equals("Keep-ALIVE", lowercase: "keep-alive"))
        #expect(!ASCIICase.equals("keep-alivE ", lowercase: "keep-alive"))
        #expect(!ASCIICase.equals("te", lowercase: "trailer"))
        #expect(!ASCIICase.equals("K\u{212A}", lowercase: "kk"))  // Kelvin sign folds to k in Unicode, not here
        #expect(ASCIICase.hasPrefix("HTTP://a.test/", lowercase: "http://"))
        #expect(ASCIICase.hasPrefix("http://", lowercase: "http://"))
        #expect(!ASCIICase.hasPrefix("http:/", lowercase: "http://"))
        #expect(!ASCIICase.hasPrefix("https://a.test/", lowercase: "http://"))
        #expect(!ASCIICase.hasPrefix("[ttp://", lowercase: "{ttp://"))  // '[' + 32 is '{': only A-Z fold
    }
}
