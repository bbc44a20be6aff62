import CorridorFuzzSupport
import CorridorWire
import NIOCore

/// The HelloRetryGuard as a relay drives it: after a fixed first ClientHello (for
/// api.allowed.test, ALPN h2), the input is a sequence of chunks, each `[direction, length,
/// bytes...]` (an even direction byte: from the server; odd: from the client), shown in order.
/// Invariants: the verdicts do not depend on how a chunk is cut (each chunk shown whole, and one
/// byte at a time, gives the same verdict after it); a verdict other than `inspecting` never
/// changes; the server's bytes are never refused; a client chunk that ends the guard with
/// `passed` comes after client bytes that named api.allowed.test (in any ASCII case).
func fuzzHelloRetry(_ input: [UInt8]) {
    guard case .complete(let first) = { var parser = ClientHelloParser(); return parser.parse(ByteBuffer(bytes: firstHello)) }() else {
        fuzzCheck(false, "the fixed first ClientHello does not parse")
        return
    }
    var whole = HelloRetryGuard(first: first, maxHelloBytes: 4096)
    var dripped = whole
    var clientBytes: [UInt8] = []
    var index = 0
    while index + 2 <= input.count {
        let fromClient = input[index] & 1 == 1
        let chunk = Array(input[(index + 2)..<min(index + 2 + Int(input[index + 1]), input.count)])
        index += 2 + chunk.count
        let before = whole.verdict
        let verdict = chunk.withUnsafeBytes { fromClient ? whole.client($0) : whole.server($0) }
        var drip = dripped.verdict
        for byte in chunk { drip = [byte].withUnsafeBytes { fromClient ? dripped.client($0) : dripped.server($0) } }
        fuzzCheck(verdict == drip, "chunk \(chunk) whole: \(verdict), a byte at a time: \(drip)")
        fuzzCheck(verdict == whole.verdict, "the verdict returned is not the one kept")
        if before != .inspecting { fuzzCheck(verdict == before, "a final verdict changed: \(before), then \(verdict)") }
        if !fromClient, case .refused = verdict { fuzzCheck(before == verdict, "the server's bytes were refused") }
        if fromClient {
            clientBytes += chunk
            if before == .inspecting, verdict == .passed {
                // Names compare ignoring ASCII case (a second hello naming api.alloweD.test names the same server).
                let lowered = clientBytes.map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 0x20 : $0 }
                fuzzCheck(lowered.firstRange(of: Array("api.allowed.test".utf8)) != nil, "passed on client bytes that never named the server")
            }
        }
    }
}

/// A minimal TLS 1.3 ClientHello record for api.allowed.test with ALPN h2.
let firstHello: [UInt8] = {
    func u16(_ value: Int) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xff)] }
    func ext(_ type: Int, _ data: [UInt8]) -> [UInt8] { u16(type) + u16(data.count) + data }
    let name = Array("api.allowed.test".utf8)
    let extensions = ext(0, u16(name.count + 3) + [0] + u16(name.count) + name) + ext(0x10, u16(3) + [2] + Array("h2".utf8))
        + ext(0x2b, [2, 3, 4])
    let body: [UInt8] = [3, 3] + [UInt8](repeating: 7, count: 32) + [0] + u16(2) + [0x13, 0x01] + [1, 0] + u16(extensions.count) + extensions
    let message: [UInt8] = [1, 0] + u16(body.count) + body
    return [22, 3, 1] + u16(message.count) + message
}()

#if FUZZING  // libFuzzer's driver (Fuzz/run.sh), else a replayer of files (FuzzCorpusTests)
@_cdecl("fuzz_hello_retry_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt { FuzzDriver.main(argc, argv, fuzzHelloRetry) }
#else
@main enum ReplayHelloRetry { static func main() { FuzzReplay.main(fuzzHelloRetry) } }
#endif
