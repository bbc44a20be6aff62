import NIOHTTP1
import Testing

@testable import CorridorProxy

/// Where a plain-HTTP request goes, from its target and Host header; delimiters are bytes, so a
/// combining mark after one changes nothing.
@Suite struct HTTPTargetTests {
    private func parse(_ uri: String, host: [String] = ["a.test"], method: HTTPMethod = .GET) -> Result<HTTPTarget, HTTPTarget.Problem> {
        HTTPTarget.parse(HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: HTTPHeaders(host.map { ("Host", $0) })))
    }

    @Test(arguments: [
        ("http://A.Test/x?y#frag", "a.test", 80, "/x?y", "a.test"),
        ("HTTP://a.test:8080", "a.test", 8080, "/", "a.test:8080"),
        ("http://a.test?q", "a.test", 80, "/?q", "a.test"),
        ("http://a.test:80/p#\u{301}", "a.test", 80, "/p", "a.test"),
        ("/path#x", "a.test", 80, "/path", "a.test"),
        ("/#\u{301}", "a.test", 80, "/", "a.test"),
    ])
    func accepted(_ uri: String, _ host: String, _ port: Int, _ path: String, _ hostHeader: String) throws {
        let target = try parse(uri).get()
        #expect(target == HTTPTarget(host: host, port: port, path: path, hostHeader: hostHeader))
    }

    @Test func originFormTakesTheHostHeaderWithoutSurroundingWhitespace() throws {
        #expect(try parse("/", host: [" \tB.test:444 "]).get() == HTTPTarget(host: "b.test", port: 444, path: "/", hostHeader: "b.test:444"))
        #expect(try parse("*", method: .OPTIONS).get().path == "*")
        #expect(try parse("http://a.test", method: .OPTIONS).get().path == "*")
    }

    @Test(arguments: [
        ("https://a.test/", "CONNECT"), ("http://u@a.test/", "userinfo"), ("http://a.test:0/", "invalid port"),
        ("http://a.test:65536/", "invalid port"), ("http://a.test:8a/", "invalid port"), ("http://a.test:/", "invalid port"),
        ("http://a.test:\u{661}/", "invalid port"),  // an Arabic-Indic digit is no port
        ("http://10.0.0.1/", "not an allowed host name"), ("x", "unsupported request target"),
    ])
    func refused(_ uri: String, _ reasonPart: String) {
        guard case .failure(let problem) = parse(uri) else {
            Issue.record("\(uri) was accepted")
            return
        }
        #expect(problem.reason.contains(reasonPart), "\(problem.reason)")
    }

    @Test func originFormNeedsExactlyOneHost() {
        #expect(throws: HTTPTarget.Problem(reason: "the request has no Host header")) { try parse("/", host: []).get() }
        #expect(throws: HTTPTarget.Problem(reason: "the request has 2 Host headers")) { try parse("/", host: ["a.test", "b.test"]).get() }
    }
}
