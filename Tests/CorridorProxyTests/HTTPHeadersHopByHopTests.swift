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
        #expect(pairs(HTTPHeaders.forwardedRequest(client, host: "api.example:8080")) == ["Accept: */*", "X-Keep: 2", "Host: api.example:8080"])
    }

    @Test func aRequestWithoutHopByHopFieldsOnlyChangesItsHost() {
        let client = HTTPHeaders([("Host", "api.example"), ("User-Agent", "curl"), ("Content-Length", "3")])
        #expect(pairs(HTTPHeaders.forwardedRequest(client, host: "api.example")) == ["User-Agent: curl", "Content-Length: 3", "Host: api.example"])
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
