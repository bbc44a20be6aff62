import CorridorFuzzSupport
import CorridorPolicy
@testable import CorridorProxy
import NIOCore
import NIOEmbedded
import NIOHTTP1

/// The http listener's head handling on what NIO's HTTP/1 decoder makes of arbitrary bytes: the
/// framing checks, the request target and Host, and hop-by-hop removal. Invariants: a head the
/// checks pass has at most 100 fields, one framing of its body, and a Connection header naming no
/// framing field; an accepted target is a normalised host name (never an IP literal), a port in
/// 1-65535, and an origin-form path without a fragment; after hop-by-hop removal no named or
/// standard hop-by-hop field is left, and every other field is, in order.
func fuzzHTTPHead(_ input: [UInt8]) {
    let channel = EmbeddedChannel()
    defer { _ = try? channel.finish() }
    guard (try? channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))) != nil,
          (try? channel.writeInbound(ByteBuffer(bytes: input))) != nil else { return }
    while let part = try? channel.readInbound(as: HTTPServerRequestPart.self) {
        guard case .head(let head) = part else { continue }
        check(head)
    }
}

private func check(_ head: HTTPRequestHead) {
    var framing = HTTPRequestHeadCheck.BodyFraming.none
    if case .success(let checked) = HTTPRequestHeadCheck.check(head) {
        framing = checked
        fuzzCheck(head.headers.count <= HTTPRequestHeadCheck.maxHeaderFields, "\(head.headers.count) fields passed")
        let lengths = head.headers["content-length"], codings = head.headers["transfer-encoding"]
        fuzzCheck(lengths.isEmpty || codings.isEmpty, "Content-Length and Transfer-Encoding both passed")
        fuzzCheck(lengths.count <= 1, "\(lengths.count) Content-Length fields passed")
        let stated: HTTPRequestHeadCheck.BodyFraming = !codings.isEmpty ? .chunked : lengths.first.flatMap { Int($0) }.map { .length($0) } ?? .none
        fuzzCheck(framing == stated, "framing \(framing) for Content-Length \(lengths) and Transfer-Encoding \(codings)")
        fuzzCheck(head.method != .TRACE || framing == .none || framing == .length(0), "a TRACE request with content passed")
        let named = head.headers["connection"].flatMap { HTTPRequestHeadCheck.tokens($0) }.map(asciiLowercased)
        fuzzCheck(!named.contains { HTTPHeaders.framingFields.contains($0) }, "Connection names a framing field: \(named)")
    }

    if case .success(let target) = HTTPTarget.parse(head) {
        fuzzCheck(HostName.normalize(target.host) == .success(target.host), "target host '\(target.host)' is not a normalised host name")
        fuzzCheck(IPAddress(parsing: target.host) == nil, "target host is an IP literal: \(target.host)")
        fuzzCheck((1...65535).contains(target.port), "target port \(target.port)")
        fuzzCheck(target.path == "*" || target.path.hasPrefix("/"), "path '\(target.path)' is not origin form")
        fuzzCheck(!target.path.contains("#"), "a fragment would be forwarded: \(target.path)")
    }

    var headers = head.headers
    HTTPHeaders.removeHopByHop(&headers)
    // RFC 9110 section 7.6.1's hop-by-hop fields, and those the Connection header names.
    var named: Set<String> = ["connection", "proxy-connection", "keep-alive", "te", "trailer", "upgrade"]
    for value in head.headers[canonicalForm: "connection"] { named.insert(asciiLowercased(value)) }
    let kept = head.headers.filter { !named.contains(asciiLowercased($0.name)) }
    fuzzCheck(!headers.contains { named.contains(asciiLowercased($0.name)) }, "a hop-by-hop field survived")
    fuzzCheck(headers.map { "\($0.name):\($0.value)" } == kept.map { "\($0.name):\($0.value)" }, "end-to-end fields lost or reordered")

    // What goes upstream: the same, without the proxy's credentials and the client's Host and
    // framing fields, then the judged Host and the framing as decoded, in the gateway's words.
    let forwarded = HTTPHeaders.forwardedRequest(head.headers, host: "judged.example", method: head.method, framing: framing)
    var expected = kept.filter { !["host", "proxy-authorization", "content-length", "transfer-encoding"].contains(asciiLowercased($0.name)) }
        .map { ($0.name, $0.value) } + [("Host", "judged.example")]
    switch framing {
    case .length(let length): expected.append(("Content-Length", String(length)))
    case .chunked: expected.append(("Transfer-Encoding", "chunked"))
    case .none: if [.POST, .PUT, .PATCH].contains(head.method) { expected.append(("Content-Length", "0")) }
    }
    fuzzCheck(forwarded.map { "\($0.name):\($0.value)" } == expected.map { "\($0.0):\($0.1)" }, "forwarded fields differ from the end-to-end fields, the Host and the framing")
}

/// Field names and connection options are tokens, compared ignoring ASCII case only (RFC 9110
/// section 5.1): a non-ASCII option names no field.
private func asciiLowercased(_ text: some StringProtocol) -> String {
    String(decoding: text.utf8.map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 0x20 : $0 }, as: UTF8.self)
}

#if FUZZING  // libFuzzer's driver (Fuzz/run.sh), else a replayer of files (FuzzCorpusTests)
@_cdecl("fuzz_http_head_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt { FuzzDriver.main(argc, argv, fuzzHTTPHead) }
#else
@main enum ReplayHTTPHead { static func main() { FuzzReplay.main(fuzzHTTPHead) } }
#endif
