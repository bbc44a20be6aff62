import CorridorFuzzSupport
import CorridorPolicy
import CorridorWire
import NIOCore

/// The CONNECT head parser, fed in pieces as a connection would feed it. Invariants: the outcome
/// does not depend on the split; an accepted host is a normalised host name, never an IP literal;
/// the port is 1-65535; the head ends inside the bytes given, with its blank line, within the bound.
func fuzzConnectHead(_ input: [UInt8]) {
    let splits = FuzzSplits(input)
    let maxHeadBytes = 2048
    let atOnce = splits.checkSplitInvariance({ ConnectHeadParser(maxHeadBytes: maxHeadBytes) }, pending: .needMoreData) {
        $0.parse(ByteBuffer(bytes: $1))
    }
    guard case .complete(let request) = atOnce else { return }
    fuzzCheck(HostName.normalize(request.host) == .success(request.host), "accepted host '\(request.host)' is not a normalised host name")
    fuzzCheck(IPAddress(parsing: request.host) == nil, "accepted an IP literal: \(request.host)")
    fuzzCheck((1...65535).contains(request.port), "port \(request.port)")
    fuzzCheck(request.headLength <= splits.data.count && request.headLength <= maxHeadBytes, "head of \(request.headLength) bytes")
    let end = splits.data[..<request.headLength]
    fuzzCheck(end.suffix(2) == [0x0A, 0x0A] || end.suffix(4) == [0x0D, 0x0A, 0x0D, 0x0A], "the head does not end with a blank line")
}

#if FUZZING  // libFuzzer's driver (Fuzz/run.sh), else a replayer of files (FuzzCorpusTests)
@_cdecl("fuzz_connect_head_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt { FuzzDriver.main(argc, argv, fuzzConnectHead) }
#else
@main enum ReplayConnectHead { static func main() { FuzzReplay.main(fuzzConnectHead) } }
#endif
