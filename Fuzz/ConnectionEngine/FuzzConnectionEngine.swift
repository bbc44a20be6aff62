import CorridorFuzzSupport
import CorridorPolicy
@testable import CorridorProxy
import Logging
import NIOCore
import NIOPosix

/// The connection engine (``ConnectionStateMachine``) driven as a data plane drives it: what a
/// client sends arrives in pieces, on the tls or the connect listener; lookups and dials are
/// answered as the input's control byte says. Invariants:
/// - the outcome (every step but reading, the bytes written to the client, how it ended) does not
///   depend on where the client's bytes were cut;
/// - every connection ends with its record written exactly once, or is handed to the HTTP path,
///   and gives its admission slot back;
/// - a tls client is only ever answered with a TLS alert, a connect client with HTTP first;
/// - only the allowed name is looked up, only its vetted address dialled, and only a connection
///   decided for it (by SNI, and CONNECT host on the connect listener) relayed.
///
/// Input: a control byte (bit 0: connect listener; bit 1: the lookup fails; bit 2: the dial fails;
/// bit 3: the client half-closes while dialling), then the client's bytes as ``FuzzSplits`` cuts them.
func fuzzConnectionEngine(_ input: [UInt8]) {
    guard let control = input.first else { return }
    let splits = FuzzSplits(Array(input.dropFirst()))
    let front: ConnectionStateMachine.Front = control & 1 == 0 ? .tls : .connect
    var pieces: [ArraySlice<UInt8>] = []
    var start = 0
    for cut in splits.cuts + [splits.data.count] where cut > start {
        pieces.append(splits.data[start..<cut])
        start = cut
    }
    let whole = drive(front: front, control: control, pieces: splits.data.isEmpty ? [] : [splits.data[...]])
    let piecewise = drive(front: front, control: control, pieces: pieces)
    fuzzCheck(piecewise == whole, "cut at \(splits.cuts): \(piecewise), at once: \(whole)")
}

/// What a connection did, as the driver saw it.
private struct Trace: Equatable, CustomStringConvertible {
    var steps: [String] = []
    var written: [UInt8] = []
    var description: String { "\(steps) and \(written.count) bytes to the client" }
}

private enum Engine {
    static let allowedHost = "api.allowed.test"
    static let upstream = IPAddress(parsing: "10.9.0.5")!
    static let proxy: ProxyContext = {
        let yaml = """
        apiVersion: corridor.dev/v1alpha1
        kind: GatewayConfig
        metadata: {name: fuzz}
        spec:
          listeners: {tls: 127.0.0.1:0, connect: 127.0.0.1:0}
          resolver: {system: false}
          destinations: {allowPrivate: [10.9.0.0/16]}
          logging: {accessLog: {file: /dev/null}}
        ---
        apiVersion: corridor.dev/v1alpha1
        kind: Workload
        metadata: {name: client, namespace: fuzz}
        spec: {addresses: [10.1.0.0/16], serviceAccount: client, labels: {app: client}}
        ---
        apiVersion: corridor.dev/v1alpha1
        kind: ExternalService
        metadata: {name: allowed}
        spec: {hosts: [\(allowedHost)], ports: [{number: 443, protocol: TLS}]}
        ---
        apiVersion: corridor.dev/v1alpha1
        kind: EgressPolicy
        metadata: {name: client-egress, namespace: fuzz}
        spec:
          podSelector: {matchLabels: {app: client}}
          egress: [{to: [{externalService: allowed}]}]
        """
        let source = try! ConfigLoader.load(yaml: yaml, file: "fuzz.yaml")
        let threads = NIOThreadPool(numberOfThreads: 1)
        var logger = Logger(label: "fuzz")
        logger.logLevel = .critical
        return ProxyContext(policy: PolicyStore(PolicySnapshot(source: source, generation: 1)), resolver: Resolver(threadPool: threads),
                            accessLog: try! AccessLog(path: "/dev/null"), metrics: ProxyMetrics(), logger: logger)
    }()
    static let source = try! SocketAddress(ipAddress: "10.1.0.7", port: 40_000)
}

private func drive(front: ConnectionStateMachine.Front, control: UInt8, pieces: [ArraySlice<UInt8>]) -> Trace {
    let proxy = Engine.proxy
    var machine = ConnectionStateMachine(front: front, listener: front == .tls ? "tls" : "connect", source: Engine.source, proxy: proxy)
    let now = ContinuousClock.now
    var trace = Trace()
    var next = pieces.makeIterator()
    var action = machine.start(now: now, originalDestination: nil)
    var handedOver = false
    steps: while true {
        if let reply = action.reply {
            let bytes = Array(reply.readableBytesView)
            if front == .tls {
                fuzzCheck(bytes.first == 0x15 && bytes.count == 7, "a tls client was answered with something else than one TLS alert: \(bytes)")
            } else if trace.written.isEmpty {
                fuzzCheck(bytes.starts(with: Array("HTTP/1.1 ".utf8)), "a connect client was first answered with something else than HTTP")
            }
            trace.written += bytes
        }
        switch action.next {
        case .read:
            if let piece = next.next() {
                action = machine.received(ByteBuffer(bytes: piece), now: now)
            } else {
                // The client sent all it had: the gateway stops before it sends more.
                trace.steps.append("shutdown")
                action = machine.shutdown()
            }
        case .wait, .pauseReads:
            fuzzCheck(false, "the machine waits with nothing outstanding: \(action.next)")
            return trace
        case .resolve(let host):
            fuzzCheck(host == Engine.allowedHost, "looked up \(host)")
            trace.steps.append("resolve \(host)")
            if control & 8 != 0 {
                fuzzCheck(machine.clientClosed(halfClose: true).next.isWait, "a half-close while resolving was not kept")
            }
            action = control & 2 != 0 ? machine.resolved(.failure(FuzzLookupFailure()), now: now) : machine.resolved(.success([Engine.upstream]), now: now)
        case .connect(let address, let attempt):
            fuzzCheck(IPAddress(address)?.unmapped == Engine.upstream && address.port == 443, "dialled \(address)")
            trace.steps.append("connect \(attempt)")
            action = control & 4 != 0 ? machine.connectFailed(attempt: attempt, "refused", now: now) : machine.connected(attempt: attempt, now: now)
        case .relay(let prefix, let ended):
            let record = machine.record
            fuzzCheck(record.decision?.lets == true && record.sni == Engine.allowedHost, "relayed \(String(describing: record.sni))")
            if front == .connect { fuzzCheck(record.connectHost == Engine.allowedHost, "relayed CONNECT \(String(describing: record.connectHost))") }
            fuzzCheck(ended == (control & 8 != 0), "the half-close was \(ended ? "invented" : "lost")")
            // (How much follows the ClientHello in the prefix depends on when the driver stopped feeding.)
            fuzzCheck(prefix.map { $0.readableBytes > 0 } ?? true, "an empty prefix")
            trace.steps.append("relay")
            action = machine.relayEnded(.completed)
        case .handOverToHTTP(let bytes, let slot):
            fuzzCheck(front == .connect, "a tls connection was handed to the HTTP path")
            fuzzCheck(bytes.readableBytes > 0, "handed over with no bytes")
            trace.steps.append("http")
            proxy.release(slot)
            handedOver = true
            break steps
        case .close:
            trace.steps.append("close")
            break steps
        case .discardUpstream:
            fuzzCheck(false, "an upstream to discard, with no attempt given up")
            return trace
        }
    }
    fuzzCheck(machine.isFinished && machine.deadline == nil, "the connection ended but the machine has not")
    fuzzCheck(handedOver || machine.record.written, "no record was written")
    fuzzCheck(proxy.openConnections == 0, "\(proxy.openConnections) admission slots not given back")
    return trace
}

private struct FuzzLookupFailure: Error {}

extension ConnectionStateMachine.Next {
    fileprivate var isWait: Bool {
        if case .wait = self { return true }
        return false
    }
}

#if FUZZING  // libFuzzer's driver (Fuzz/run.sh), else a replayer of files (FuzzCorpusTests)
@_cdecl("fuzz_connection_engine_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt { FuzzDriver.main(argc, argv, fuzzConnectionEngine) }
#else
@main enum ReplayConnectionEngine { static func main() { FuzzReplay.main(fuzzConnectionEngine) } }
#endif
