import NIOHTTP1
import Testing

@testable import CorridorProxy

/// What leaves the gateway of a request's and a response's fields.
@Suite struct HTTPHeadersHopByHopTests {
    private func pairs(_ headers: HTTPHeaders) -> [String] { headers.map { "\($0.name): \($0.value)" } }

    @Test func aForwardedRequestKeepsTheEndToEndFieldsInOrderThenTheJudgedHost() {
        let client = HTTPHeaders([
            ("host", "evil.example"), ("Accept", "*/*"), ("Connection", "keep-alive, X-Trace"), ("x-trace", "1"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="), ("TE", "trailers"), ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
            ("Upgrade", "h2c"), ("Trailer", "Expires"), ("X-Keep", "2"), ("HOST", "second.example"),
        ])
        #expect(pairs(HTTPHeaders.forwardedRequest(client, host: "api.example:8080", method: .GET, framing: .none))
                == ["Accept: */*", "X-Keep: 2", "Host: api.example:8080"])
    }

    @Test func aRequestWithoutHopByHopFieldsChangesItsHostAndStatesItsFramingAnew() {
        let client = HTTPHeaders([("Host", "api.example"), ("User-Agent", "curl"), ("Content-Length", "03")])
        #expect(pairs(HTTPHeaders.forwardedRequest(client, host: "api.example", method: .POST, framing: .length(3)))
                == ["User-Agent: curl", "Host: api.example", "Content-Length: 3"])
    }

    /// The client's words for its framing never go upstream, only the gateway's: a `Chunked` that
    /// NIO's encoder would not take for chunked would otherwise leave the de-chunked body raw
    /// behind a head saying chunked, for the upstream to read a smuggled request out of.
    @Test(arguments: [HTTPMethod.GET, .DELETE, .OPTIONS, .RAW(value: "PROPFIND"), .POST])
    func aChunkedRequestGoesUpWithExactlyTransferEncodingChunked(_ method: HTTPMethod) {
        let client = HTTPHeaders([("Host", "api.example"), ("Transfer-Encoding", " ,Chunked")])
        #expect(pairs(HTTPHeaders.forwardedRequest(client, host: "api.example", method: method, framing: .chunked))
                == ["Host: api.example", "Transfer-Encoding: chunked"])
    }

    @Test func aBodilessRequestStatesALengthOfZeroOnlyWhereItsMethodTakesContent() {
        for method in [HTTPMethod.POST, .PUT, .PATCH] {
            #expect(pairs(HTTPHeaders.forwardedRequest(HTTPHeaders([("Host", "a")]), host: "a", method: method, framing: .none)) == ["Host: a", "Content-Length: 0"])
        }
        for method in [HTTPMethod.GET, .HEAD, .DELETE, .OPTIONS, .TRACE] {
            #expect(pairs(HTTPHeaders.forwardedRequest(HTTPHeaders([("Host", "a")]), host: "a", method: method, framing: .none)) == ["Host: a"])
        }
    }

    @Test func aResponseNamingAnotherTransferCodingIsTold() {
        #expect(!HTTPHeaders.hasTransferCodingBesidesChunked(HTTPHeaders([("Transfer-Encoding", "Chunked")])))
        #expect(!HTTPHeaders.hasTransferCodingBesidesChunked(HTTPHeaders([("Content-Length", "3")])))
        #expect(HTTPHeaders.hasTransferCodingBesidesChunked(HTTPHeaders([("Transfer-Encoding", "gzip, chunked")])))
        #expect(!HTTPHeaders.hasTransferCodingBesidesChunked(HTTPHeaders([("Transfer-Encoding", " CHUNKED ")])))
        // llhttp reads `chunked,` as no chunked coding (the body would run to the connection's end).
        for odd in ["chunked,", ", chunked", "chunked;x", "chunked, chunked", "chunked\t", "\tchunked", "chunked \t"] {
            #expect(HTTPHeaders.hasTransferCodingBesidesChunked(HTTPHeaders([("Transfer-Encoding", odd)])), "\(odd)")
        }
        #expect(HTTPHeaders.hasTransferCodingBesidesChunked(HTTPHeaders([("transfer-encoding", "gzip"), ("Transfer-Encoding", "chunked")])))
    }

    @Test func aResponseLosesItsHopByHopFieldsAndThoseItsConnectionNames() {
        var response = HTTPHeaders([("Server", "nginx"), ("connection", "keep-alive, x-internal"), ("X-Internal", "a"), ("Content-Length", "3")])
        HTTPHeaders.removeHopByHop(&response)
        #expect(pairs(response) == ["Server: nginx", "Content-Length: 3"])
        var plain = HTTPHeaders([("Server", "nginx"), ("Content-Length", "3")])
        HTTPHeaders.removeHopByHop(&plain)
        #expect(pairs(plain) == ["Server: nginx", "Content-Length: 3"])
    }

    @Test func namesCompareIgnoringTheCaseOfASCIILettersOnly() {
        #expect(ASCIICase.equals("CoNNecTion", lowercase: "connection"))
        #expect(ASCIICase.equals("connection"[...], lowercase: "connection"))
        #expect(!ASCIICase.equals("connectioN2", lowercase: "connection"))
        // The Kelvin sign is not an ASCII K: no field is named by it.
        #expect(!ASCIICase.equals("\u{212A}eep-alive", lowercase: "keep-alive"))
    }
}
