import Foundation
import NIOCore
import Testing

@testable import CorridorProxy

/// The access log's JSON writer: numbers, decimals and timestamps written digit by digit, nested
/// objects in place, strings escaped; every line must parse as JSON.
@Suite struct JSONLineTests {
    private func text(_ build: (inout JSONLine) -> Void) -> String {
        var json = JSONLine()
        build(&json)
        return String(decoding: json.finishLine(), as: UTF8.self)
    }

    /// A ClientHello may carry 64 KiB of ALPN names (found in review: a record of 384 KB per denied
    /// connection, 6x the bytes sent); a record keeps a bounded part of them.
    @Test func aRecordKeepsABoundedPartOfTheALPNNames() {
        #expect(ConnectionRecord.recorded(alpn: ["h2", "http/1.1"]) == ["h2", "http/1.1"])
        let long = String(repeating: "\u{1}", count: 255)
        let many = Array(repeating: long, count: 200)
        let kept = ConnectionRecord.recorded(alpn: many)
        #expect(kept.count == ConnectionRecord.recordedALPNNames + 1 && kept.last == "…184 more")
        #expect(kept.dropLast().allSatisfy { $0.utf8.count == ConnectionRecord.recordedALPNNameBytes + "…".utf8.count })
        let line = text { $0.stringArray("alpn", kept) }
        #expect(line.utf8.count < 8 * 1024, "\(line.utf8.count) bytes")
    }

    @Test func integersAsDecimalDigits() throws {
        for value in [0, 7, 10, 99, 100, 12345, -1, -90, Int.max, Int.min] {
            let line = text { $0.number("n", value) }
            #expect(line == "{\"n\":\(value)}\n")
            let parsed = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(parsed?["n"] != nil)
        }
    }

    @Test(arguments: ["0.0.0.0", "192.0.2.1", "255.255.255.255", "10.20.30.40", "::1", "2001:db8::7", "::ffff:192.0.2.9"])
    func addressesAsLogsPrintThem(_ ip: String) throws {
        for port in [0, 7, 443, 65535] {
            let address = try SocketAddress(ipAddress: ip, port: port)
            #expect(text { $0.address("a", address) } == "{\"a\":\"\(address.hostPort)\"}\n")
        }
        let known = try SocketAddress(ipAddress: "192.0.2.1", port: 443)
        #expect(text { $0.address("a", known) } == "{\"a\":\"192.0.2.1:443\"}\n")
    }

    @Test func decimalsWithThreePlaces() {
        #expect(text { $0.decimal("ms", 0) } == "{\"ms\":0.000}\n")
        #expect(text { $0.decimal("ms", 1.5) } == "{\"ms\":1.500}\n")
        #expect(text { $0.decimal("ms", 12.3456) } == "{\"ms\":12.346}\n")
        #expect(text { $0.decimal("ms", 1000.0004) } == "{\"ms\":1000.000}\n")
        #expect(text { $0.decimal("ms", 0.0015) } == "{\"ms\":0.002}\n")
        #expect(text { $0.decimal("ms", -2.25) } == "{\"ms\":-2.250}\n")
    }

    @Test func timestampsInRFC3339UTC() {
        #expect(text { $0.timestamp("t", 0) } == "{\"t\":\"1970-01-01T00:00:00.000Z\"}\n")
        #expect(text { $0.timestamp("t", 1_795_764_984.1795) } == "{\"t\":\"2026-11-27T07:36:24.179Z\"}\n")
        #expect(text { $0.timestamp("t", 951_782_400.999_9) } == "{\"t\":\"2000-02-29T00:00:00.999Z\"}\n")
        #expect(text { $0.timestamp("t", -0.5) } == "{\"t\":\"1969-12-31T23:59:59.500Z\"}\n")
    }

    @Test func datesAgreeWithTheCLibraryAcrossCenturies() {
        // Every day from 1900 to 2200 (leap days, the non-leap 1900 and 2100, the leap 2000), at
        // a time of day that walks through the seconds of the day.
        var day = -25_567
        while day < 84_000 {
            let seconds = day * 86_400 + (day * 7_919) % 86_400 + (day < 0 ? 86_400 : 0)
            var time = time_t(seconds)
            var parts = tm()
            gmtime_r(&time, &parts)
            let expected = String(format: "%04d-%02d-%02dT%02d:%02d:%02d.000Z", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                                  parts.tm_hour, parts.tm_min, parts.tm_sec)
            let line = text { $0.timestamp("t", Double(seconds)) }
            if line != "{\"t\":\"\(expected)\"}\n" {
                Issue.record("\(seconds): \(line) is not \(expected)")
                return
            }
            day += 1
        }
    }

    @Test func nestedObjectsAndEscapes() throws {
        let line = text { json in
            json.string("a", "quote \" backslash \\ newline \n tab \t bell \u{7}")
            json.object("o") { inner in
                inner.string("k", "v")
                inner.object("empty") { _ in }
                inner.number("n", 1)
            }
            json.stringArray("list", ["x", "y\"z"])
            json.bool("b", true)
        }
        #expect(line.hasSuffix("}\n"))
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(parsed["a"] as? String == "quote \" backslash \\ newline \n tab \t bell \u{7}")
        let inner = try #require(parsed["o"] as? [String: Any])
        #expect(inner["k"] as? String == "v")
        #expect((inner["empty"] as? [String: Any])?.isEmpty == true)
        #expect(inner["n"] as? Int == 1)
        #expect(parsed["list"] as? [String] == ["x", "y\"z"])
        #expect(line.contains(#""o":{"k":"v","empty":{},"n":1},"list""#))
    }
}
