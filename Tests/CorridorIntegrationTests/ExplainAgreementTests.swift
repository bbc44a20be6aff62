import CorridorGateway
import CorridorPolicy
import Foundation
import Logging
import Testing

/// `corridor explain` and the gateway agree: for generated policies, sources and destinations,
/// the verdict explain computes (the same engine call, on the same policy file) is the one the
/// running gateway gives over real sockets: CONNECT answered 200 or 403, a plain-HTTP request
/// refused 403 policy_denied or let through.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct ExplainAgreementTests {
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func int(_ n: Int) -> Int { Int(next() % UInt64(n)) }
        mutating func bool() -> Bool { int(2) == 0 }
        mutating func pick<T>(_ items: [T]) -> T { items[int(items.count)] }
    }

    static let names = ["a.test", "b.test", "api.c.test", "web.c.test", "x.d.test", "new.test"]
    static let sources: [(ip: String, workload: Workload?)] = [
        ("127.0.0.11", Workload(metadata: ObjectMeta(name: "web", namespace: "a"), addresses: [try! CIDR(parsing: "127.0.0.11/32")],
                                serviceAccount: "sa1", labels: ["app": "web"])),
        ("127.0.0.12", Workload(metadata: ObjectMeta(name: "api", namespace: "a"), addresses: [try! CIDR(parsing: "127.0.0.12/32")],
                                serviceAccount: "sa2", labels: ["app": "api"])),
        ("127.0.0.13", Workload(metadata: ObjectMeta(name: "web", namespace: "b"), addresses: [try! CIDR(parsing: "127.0.0.13/32")],
                                serviceAccount: "sa1", labels: ["app": "web"])),
        ("127.0.0.14", Workload(metadata: ObjectMeta(name: "job", namespace: "b"), addresses: [try! CIDR(parsing: "127.0.0.14/32")],
                                serviceAccount: "sa3")),
        ("127.0.0.20", nil),
    ]

    /// A random policy file that `corridor check` accepts.
    static func policyFile(_ r: inout Random, accessLog: String) -> String {
        var documents: [String] = []
        let mode = r.int(3) == 0 ? "Audit" : "Enforce"
        let static_ = names.map { "\($0): [127.0.0.1]" }.joined(separator: ", ")
        documents.append("""
            apiVersion: corridor.dev/v1alpha1
            kind: GatewayConfig
            metadata: {name: agree}
            spec:
              mode: \(mode)
              unknownSources: \(r.bool() ? "Deny" : "Allow")
              listeners: {connect: 127.0.0.1:0, http: 127.0.0.1:0, admin: 127.0.0.1:0}
              resolver: {static: {\(static_)}, system: false}
              destinations: {allowPrivate: [127.0.0.1/32]}
              tls: {allowECH: false}
              logging: {accessLog: {file: \(accessLog)}}
            """)
        var services: [ExternalService] = []
        for n in 0..<(1 + r.int(5)) {
            var ports: [ExternalService.Port] = []
            if r.int(4) != 0 { ports.append(.init(number: 443)) }
            if r.bool() { ports.append(.init(number: 8443)) }
            if r.bool() { ports.append(.init(number: 80, protocol: .http, originateTLS: .init(port: 443))) }
            if ports.isEmpty { ports = [.init(number: 9443)] }
            var hosts = Set<String>()
            for _ in 0..<(1 + r.int(2)) { hosts.insert(r.pick(["a.test", "b.test", "api.c.test", "*.c.test", "x.d.test"])) }
            services.append(ExternalService(metadata: ObjectMeta(name: "s\(n)"), hosts: hosts.sorted().map { try! HostPattern(parsing: $0) },
                                            ports: ports, access: r.int(4) == 0 ? .all : .restricted))
        }
        documents += services.map { ResourceYAML.render($0) }
        for n in 0..<r.int(5) {
            let selector = r.pick([LabelSelector.everything, LabelSelector(matchLabels: ["app": "web"]), LabelSelector(matchLabels: ["app": "api"])])
            var granted = services.filter { _ in r.bool() }.map(\.name)
            if granted.isEmpty { granted = [services[0].name] }
            let all443 = granted.allSatisfy { name in services.first { $0.name == name }!.ports.contains { $0.number == 443 } }
            documents.append(ResourceYAML.render(EgressPolicy(
                metadata: ObjectMeta(name: "p\(n)", namespace: r.pick(["a", "b"])), podSelector: selector,
                serviceAccounts: r.int(3) == 0 ? [r.pick(["sa1", "sa2"])] : [],
                egress: [.init(externalServices: granted, ports: all443 && r.int(3) == 0 ? [443] : [])], mode: r.int(4) == 0 ? .audit : .enforce)))
        }
        documents += sources.compactMap { $0.workload.map { ResourceYAML.render($0) } }
        return ResourceYAML.file(documents)
    }

    /// Runs every probe through the gateway; prints one status code per probe (0: no answer).
    static let client = #"""
    import json, socket, sys
    connect_port, http_port = int(sys.argv[1]), int(sys.argv[2])
    out = []
    for probe in json.load(sys.stdin):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        s.bind((probe["source"], 0))
        try:
            if probe["via"] == "connect":
                s.connect(("127.0.0.1", connect_port))
                s.sendall(f"CONNECT {probe['host']}:{probe['port']} HTTP/1.1\r\nHost: {probe['host']}:{probe['port']}\r\n\r\n".encode())
            else:
                s.connect(("127.0.0.1", http_port))
                s.sendall(f"GET /x HTTP/1.1\r\nHost: {probe['host']}:{probe['port']}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            out.append(int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1 ") else 0)
        except OSError:
            out.append(0)
        finally:
            s.close()
    print(json.dumps(out))
    """#

    @Test func explainAndTheGatewayAgreeOnGeneratedPolicies() async throws {
        var r = Random(state: 20261206)
        var compared = 0
        var verdicts: [String: Int] = [:]
        for round in 0..<20 {
            let dir = try TempDir()
            let config = dir.path("policy.yaml")
            try Self.policyFile(&r, accessLog: dir.path("access.log")).write(toFile: config, atomically: true, encoding: .utf8)
            let snapshot = try PolicyFile.loadCompiled(config, generation: 1).snapshot
            var logger = Logger(label: "agree")
            logger.logLevel = .error
            let gateway = try Gateway(options: .init(configPath: config, workers: 2), logger: logger)
            try await gateway.start()
            let connectPort = try #require(gateway.boundAddresses["connect"]?.port)
            let httpPort = try #require(gateway.boundAddresses["http"]?.port)
            var probes: [[String: Any]] = []
            var expected: [(lets: Bool, text: String)] = []
            for source in Self.sources {
                for host in Self.names {
                    for (via, port) in [("connect", 443), ("connect", 8443), ("connect", 9443), ("http", 80), ("http", 8080)] {
                        let query = try PolicyExplanation.Query.parse(namespace: nil, serviceAccount: nil, labels: [], sourceIP: source.ip, pod: nil,
                                                                      to: "\(host):\(port)", via: via, ech: false)
                        let explanation = try PolicyExplanation.make(query, snapshot: snapshot)
                        probes.append(["source": source.ip, "host": host, "port": port, "via": via])
                        expected.append((explanation.decision.lets, "\(source.ip) -> \(via) \(host):\(port): \(explanation.decision.verdict) \(explanation.decision.reason)"))
                        verdicts[explanation.decision.verdict.rawValue, default: 0] += 1
                    }
                }
            }
            let input = try JSONSerialization.data(withJSONObject: probes)
            let result = try runCommand("python3", ["-c", Self.client, "\(connectPort)", "\(httpPort)"], timeout: 180, stdin: input)
            await gateway.shutdown(drain: .milliseconds(200))
            let statuses = try #require((try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [Int], "\(result.stdout) \(result.stderr)")
            try #require(statuses.count == expected.count)
            for (status, expectation) in zip(statuses, expected) {
                let gatewayLets = status != 403 && status != 0
                #expect(gatewayLets == expectation.lets, "round \(round): gateway answered \(status) for \(expectation.text)")
                compared += 1
            }
        }
        #expect(compared >= 3000, "\(compared)")
        #expect((verdicts["allow"] ?? 0) > 100 && (verdicts["deny"] ?? 0) > 100 && (verdicts["audit"] ?? 0) > 100, "\(verdicts)")
    }
}
