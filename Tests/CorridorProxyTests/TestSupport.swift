import CorridorPolicy
import CorridorWire
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOPosix
import Testing

@testable import CorridorProxy

// MARK: wire bytes

func u16(_ value: Int) -> [UInt8] { [UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)] }
func u24(_ value: Int) -> [UInt8] { [UInt8(truncatingIfNeeded: value >> 16)] + u16(value) }

/// `extension_type(2) length(2) data`.
func tlsExtension(_ type: UInt16, _ data: [UInt8]) -> [UInt8] { u16(Int(type)) + u16(data.count) + data }

/// A minimal valid TLS 1.3 ClientHello: legacy_version, random, session id, cipher suites,
/// compression and an extensions block with server_name, ALPN and supported_versions.
struct ClientHelloBuilder {
    var serverName: String
    var alpn: [String] = ["h2", "http/1.1"]
    /// Extra extensions appended after the standard ones (already encoded, see ``tlsExtension(_:_:)``).
    var extraExtensions: [[UInt8]] = []

    init(serverName: String, alpn: [String] = ["h2", "http/1.1"], extraExtensions: [[UInt8]] = []) {
        self.serverName = serverName
        self.alpn = alpn
        self.extraExtensions = extraExtensions
    }

    var extensions: [UInt8] {
        let name = Array(serverName.utf8)
        let nameList = [0] + u16(name.count) + name  // host_name(0), length, name
        let sni = tlsExtension(0x0000, u16(nameList.count) + nameList)
        let protocols = alpn.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) }
        let alpnExtension = tlsExtension(0x0010, u16(protocols.count) + protocols)
        let versions = tlsExtension(0x002b, [4, 0x03, 0x04, 0x03, 0x03])
        return ([sni, alpnExtension, versions] + extraExtensions).flatMap { $0 }
    }

    var body: [UInt8] {
        let legacyVersion: [UInt8] = [0x03, 0x03]
        let random = [UInt8](repeating: 0xab, count: 32)
        let sessionID: [UInt8] = [32] + [UInt8](repeating: 0x5e, count: 32)
        let cipherSuites: [UInt8] = u16(4) + [0x13, 0x01, 0x13, 0x02]
        let compression: [UInt8] = [1, 0]
        return legacyVersion + random + sessionID + cipherSuites + compression + u16(extensions.count) + extensions
    }

    /// The handshake message: msg_type client_hello (1), uint24 length, body.
    var handshake: [UInt8] { [1] + u24(body.count) + body }

    /// The handshake message in one TLS handshake record.
    var record: [UInt8] { Self.frame(handshake) }

    /// The handshake message split into two handshake records after `firstPart` handshake bytes.
    func twoRecords(firstPart: Int) -> [UInt8] {
        Self.frame(Array(handshake[..<firstPart])) + Self.frame(Array(handshake[firstPart...]))
    }

    static func frame(_ payload: [UInt8]) -> [UInt8] { [22, 0x03, 0x01] + u16(payload.count) + payload }
}

/// The fatal access_denied alert record the gateway answers a refused ClientHello with.
let accessDeniedAlert: [UInt8] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31]

// MARK: policy

/// The test policy: one workload (checkout in payments, at 127.0.0.1), one ExternalService
/// `allowed-api` (api.allowed.test, second.allowed.test on 443) granted to app=checkout. The
/// system resolver is off and there is no static map, so a connection that is (wrongly) allowed
/// could never dial anything: it would end in resolve_failed.
func policyYAML(limits: String = "{}", gatewayExtra: String = "") -> String {
    """
    apiVersion: corridor.dev/v1alpha1
    kind: GatewayConfig
    metadata: {name: embedded}
    spec:
      resolver: {system: false}
      limits: \(limits)
    \(gatewayExtra)
    ---
    apiVersion: corridor.dev/v1alpha1
    kind: Workload
    metadata: {name: checkout, namespace: payments}
    spec: {addresses: [127.0.0.1/32], serviceAccount: checkout, labels: {app: checkout}}
    ---
    apiVersion: corridor.dev/v1alpha1
    kind: ExternalService
    metadata: {name: allowed-api}
    spec:
      hosts: [api.allowed.test, second.allowed.test]
      ports: [{number: 443, protocol: TLS}]
    ---
    apiVersion: corridor.dev/v1alpha1
    kind: EgressPolicy
    metadata: {name: checkout-egress, namespace: payments}
    spec:
      podSelector: {matchLabels: {app: checkout}}
      egress: [{to: [{externalService: allowed-api}]}]
    """
}

/// The address of the checkout workload, and one that no Workload covers (TEST-NET-1, never dialled).
let workloadSource = "127.0.0.1"
let strangerSource = "192.0.2.10"

// MARK: harness

/// One ProxyContext (policy, resolver, access log in a temp file, metrics) and the embedded
/// channels that share it, all on one EmbeddedEventLoop. Use from one thread (synchronous tests).
final class ProxyHarness {
    let loop = EmbeddedEventLoop()
    let proxy: ProxyContext
    let metrics: ProxyMetrics
    let logPath: String
    private let threadPool: NIOThreadPool
    private var channels: [EmbeddedChannel] = []

    init(limits: String = "{}", gatewayExtra: String = "") throws {
        let source = try ConfigLoader.load(yaml: policyYAML(limits: limits, gatewayExtra: gatewayExtra), file: "embedded-test.yaml")
        let snapshot = PolicySnapshot(source: source, generation: 7)
        logPath = NSTemporaryDirectory() + "corridor-proxy-test-\(UUID().uuidString).jsonl"
        threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        metrics = ProxyMetrics()
        var logger = Logger(label: "corridor.proxy.tests")
        logger.logLevel = .critical
        proxy = ProxyContext(policy: PolicyStore(snapshot), resolver: Resolver(threadPool: threadPool),
                             accessLog: try AccessLog(path: logPath), metrics: metrics, logger: logger)
    }

    /// A channel with an InspectHandler, its remote address set to `source`, made active.
    func connect(_ front: ConnectionStateMachine.Front, from source: String = workloadSource, port: Int = 40_001) throws -> EmbeddedChannel {
        let listener = front == .tls ? "tls" : "connect"
        let channel = EmbeddedChannel(handler: InspectHandler(front: front, listenerName: listener, proxy: proxy), loop: loop)
        // EmbeddedChannel.connect(to:) only records the remote address after channelActive has
        // run, so set it first: the handler reads it in channelActive.
        channel.remoteAddress = try SocketAddress(ipAddress: source, port: port)
        try channel.connect(to: channel.remoteAddress!).wait()
        channels.append(channel)
        return channel
    }

    /// Every access record written so far, one JSON object per line.
    func records() throws -> [[String: Any]] {
        let text = try String(contentsOfFile: logPath, encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
            return try #require(object as? [String: Any], "access log line is not a JSON object: \(line)")
        }
    }

    /// The only access record; fails the test if there is not exactly one.
    func onlyRecord(sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
        let all = try records()
        try #require(all.count == 1, "expected one access record, got \(all.count): \(all)", sourceLocation: sourceLocation)
        return all[0]
    }

    var renderedMetrics: String { String(decoding: metrics.render(), as: UTF8.self) }

    func shutdown() {
        for channel in channels { _ = try? channel.finish(acceptAlreadyClosed: true) }
        loop.run()
        try? loop.syncShutdownGracefully()
        try? threadPool.syncShutdownGracefully()
        try? FileManager.default.removeItem(atPath: logPath)
    }
}

/// Runs `body` with a fresh harness, shutting it down afterwards.
func withHarness(limits: String = "{}", gatewayExtra: String = "", _ body: (ProxyHarness) throws -> Void) throws {
    let harness = try ProxyHarness(limits: limits, gatewayExtra: gatewayExtra)
    defer { harness.shutdown() }
    try body(harness)
}

// MARK: connections without I/O

/// What a harness needs for ``relayingMachine(_:port:)``: 10.9.0.0/16 may be dialled.
let dialablePrivateRange = "  destinations: {allowPrivate: [10.9.0.0/16]}"
/// The address ``relayingMachine(_:port:)`` pretends api.allowed.test resolved to (never dialled).
let pretendUpstream = "10.9.0.5"

/// A connection of the checkout workload to api.allowed.test, driven to relaying through its
/// state machine with no I/O at all: the ClientHello, the name "resolved" to ``pretendUpstream``,
/// attempt 1 "connected". The harness must allow ``dialablePrivateRange``.
func relayingMachine(_ harness: ProxyHarness, port: Int = 40_100, now: ContinuousClock.Instant = .now) throws -> ConnectionStateMachine {
    let source = try SocketAddress(ipAddress: workloadSource, port: port)
    var machine = ConnectionStateMachine(front: .tls, listener: "tls", source: source, proxy: harness.proxy)
    guard case .read = machine.start(now: now, originalDestination: nil).next else { throw HarnessError.unexpected("start") }
    guard case .resolve = machine.received(ByteBuffer(bytes: ClientHelloBuilder(serverName: "api.allowed.test").record), now: now).next
    else { throw HarnessError.unexpected("hello") }
    let address = try #require(IPAddress(parsing: pretendUpstream))
    guard case .connect(_, let attempt) = machine.resolved(.success([address]), now: now).next else { throw HarnessError.unexpected("resolved") }
    guard case .relay = machine.connected(attempt: attempt, now: now).next else { throw HarnessError.unexpected("connected") }
    // The ClientHello (the relay's prefix) is counted at once; these tests relay nothing of it.
    machine.record.bytesUp = 0
    return machine
}

enum HarnessError: Error {
    case unexpected(String)
}

// MARK: channel helpers

extension EmbeddedChannel {
    /// Writes `bytes` inbound as one read.
    func send(_ bytes: [UInt8]) throws { try writeInbound(ByteBuffer(bytes: bytes)) }
    func send(_ text: String) throws { try writeInbound(ByteBuffer(string: text)) }

    /// Everything written outbound so far, concatenated (empty flush buffers contribute nothing).
    func drainOutbound() throws -> [UInt8] {
        var out: [UInt8] = []
        while let buffer = try readOutbound(as: ByteBuffer.self) { out += buffer.readableBytesView }
        return out
    }

    func drainOutboundText() throws -> String { String(decoding: try drainOutbound(), as: UTF8.self) }
}

extension Dictionary where Key == String, Value == Any {
    func string(_ key: String) -> String? { self[key] as? String }
    func strings(_ key: String) -> [String]? { self[key] as? [String] }
}
