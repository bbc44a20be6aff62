import CorridorFuzzSupport
import CorridorPolicy
import CorridorWire
import NIOCore

/// The ClientHello parser, fed as a connection would feed it: the bytes in pieces, each call with
/// everything received so far. Invariants: the outcome does not depend on how the bytes were
/// split; an accepted server name is a normalised host name, never an IP literal; the hello's size
/// stays within the bytes given and the parser's bound.
func fuzzClientHello(_ input: [UInt8]) {
    let splits = FuzzSplits(input)
    let maxHelloBytes = 16384
    let atOnce = splits.checkSplitInvariance({ ClientHelloParser(maxHelloBytes: maxHelloBytes) }, pending: .needMoreData) {
        $0.parse(ByteBuffer(bytes: $1))
    }
    guard case .complete(let info) = atOnce else { return }
    fuzzCheck(HostName.normalize(info.serverName) == .success(info.serverName), "accepted server name '\(info.serverName)' is not a normalised host name")
    fuzzCheck(IPAddress(parsing: info.serverName) == nil, "accepted an IP literal as server name: \(info.serverName)")
    fuzzCheck(info.helloBytes <= splits.data.count && info.helloBytes <= maxHelloBytes, "hello of \(info.helloBytes) bytes from \(splits.data.count)")
    fuzzCheck(!info.alpn.contains(""), "an empty ALPN protocol name was accepted")
}

#if FUZZING  // libFuzzer's driver (Fuzz/run.sh), else a replayer of files (FuzzCorpusTests)
@_cdecl("fuzz_client_hello_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt { FuzzDriver.main(argc, argv, fuzzClientHello) }
#else
@main enum ReplayClientHello { static func main() { FuzzReplay.main(fuzzClientHello) } }
#endif
