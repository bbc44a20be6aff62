import CorridorGateway
import CorridorPolicy
import CorridorProxy
import Foundation
import Logging
import NIOCore

/// The tls listener's data plane in the integration tests: `CORRIDOR_TEST_DATA_PLANE` (NIO or
/// Splice), else the platform's default. `scripts/test` runs the passthrough suites under both.
let testDataPlane = ProcessInfo.processInfo.environment["CORRIDOR_TEST_DATA_PLANE"] ?? GatewayConfig.DataPlane.platformDefault.rawValue

/// The config every integration test starts from: the quickstart's objects, with the upstream's
/// real port and listeners on port 0. `extra` is appended as more YAML documents.
func testConfig(upstreamPort: Int, accessLog: String, gatewayExtra: String = "", extra: String = "", accessLogExtra: String = "") -> String {
    """
    apiVersion: corridor.dev/v1alpha1
    kind: GatewayConfig
    metadata: {name: test}
    spec:
      listeners: {tls: 127.0.0.1:0, connect: 127.0.0.1:0, admin: 127.0.0.1:0}
      resolver:
        static:
          api.allowed.test: [127.0.0.1]
          second.allowed.test: [127.0.0.1]
          "*.wild.allowed.test": [127.0.0.1]
          evil.test: [127.0.0.1]
          private.allowed.test: [127.0.0.2]
          fallback.allowed.test: ["::1", 127.0.0.1]
        system: false
      destinations: {allowPrivate: [127.0.0.1/32, "::1/128"]}
      unknownSources: Deny
      logging: {accessLog: {file: \(accessLog)\(accessLogExtra)}}
      tls: {dataPlane: \(testDataPlane)}
      connect: {dataPlane: \(testDataPlane)}
    \(gatewayExtra)
    ---
    apiVersion: corridor.dev/v1alpha1
    kind: Workload
    metadata: {name: checkout, namespace: payments}
    spec: {addresses: [127.0.0.1/32], serviceAccount: checkout, labels: {app: checkout}}
    ---
    apiVersion: corridor.dev/v1alpha1
    kind: Workload
    metadata: {name: reporting, namespace: analytics}
    spec: {addresses: [127.0.0.3/32], serviceAccount: reporting, labels: {app: reporting}}
    ---
    apiVersion: corridor.dev/v1alpha1
    kind: ExternalService
    metadata: {name: allowed-api}
    spec:
      hosts: [api.allowed.test, "*.wild.allowed.test", second.allowed.test, private.allowed.test, fallback.allowed.test]
      ports: [{number: \(upstreamPort), protocol: TLS}]
    ---
    apiVersion: corridor.dev/v1alpha1
    kind: EgressPolicy
    metadata: {name: checkout-egress, namespace: payments}
    spec:
      podSelector: {matchLabels: {app: checkout}}
      egress: [{to: [{externalService: allowed-api}]}]
    \(extra)
    """
}

/// A harness whose gateway writes its access log to a file: read and wait for records.
protocol AccessLogReading {
    var accessLogPath: String { get }
}

extension AccessLogReading {
    /// Every access record written so far, parsed.
    func records() -> [[String: Any]] {
        let text = (try? String(contentsOfFile: accessLogPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }
    }

    /// Waits for a record matching `predicate` and returns it.
    func record(timeout: TimeInterval = 10, where predicate: ([String: Any]) -> Bool) -> [String: Any]? {
        var found: [String: Any]?
        _ = eventually(timeout: timeout) {
            found = records().first(where: predicate)
            return found != nil
        }
        return found
    }
}

/// The access log of a gateway run as its own process.
struct AccessLogFile: AccessLogReading {
    let accessLogPath: String
}

/// One in-process gateway on ephemeral ports, with a TLS upstream and a test PKI.
final class GatewayHarness: AccessLogReading, @unchecked Sendable {
    let dir: TempDir
    let pki: TestPKI
    let upstream: TLSUpstream
    let gateway: Gateway
    let configPath: String
    let accessLogPath: String
    let tlsPort: Int
    let connectPort: Int
    let adminPort: Int

    init(gatewayExtra: String = "", extra: String = "", accessLogExtra: String = "") async throws {
        dir = try TempDir()
        pki = try TestPKI(in: dir)
        upstream = try TLSUpstream(pki: pki, dir: dir)
        accessLogPath = dir.path("access.log")
        configPath = dir.path("corridor.yaml")
        try testConfig(upstreamPort: upstream.port, accessLog: accessLogPath, gatewayExtra: gatewayExtra, extra: extra, accessLogExtra: accessLogExtra)
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        var logger = Logger(label: "corridor-test")
        logger.logLevel = .warning
        gateway = try Gateway(options: .init(configPath: configPath, workers: 2), logger: logger)
        try await gateway.start()
        let bound = gateway.boundAddresses
        tlsPort = bound["tls"]?.port ?? 0
        connectPort = bound["connect"]?.port ?? 0
        adminPort = bound["admin"]?.port ?? 0
    }

    func stop() async { await gateway.shutdown(drain: .seconds(2)) }


    func curlViaConnect(_ url: String, extra: [String] = []) throws -> CommandResult {
        try runCommand("curl", ["-sS", "--max-time", "20", "--cacert", pki.caCert, "-x", "http://127.0.0.1:\(connectPort)"] + extra + [url])
    }

    func pythonClient(_ arguments: [String], timeout: TimeInterval = 120) throws -> [String: Any] {
        let result = try runCommand("python3", [Repo.support.appendingPathComponent("tls_client.py").path, "--ca", pki.caCert] + arguments, timeout: timeout)
        guard let object = (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any] else {
            throw TestError.failed("client printed no JSON: \(result.stdout) \(result.stderr)")
        }
        return object
    }
}
