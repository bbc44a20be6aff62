import CorridorGateway
import CorridorProxy
import Foundation
import Logging
import NIOCore

/// The PKI of the TLS origination tests, minted at run time with Python's `cryptography`: a CA and
/// its server certificate for billing.example.test and other.example.test, an expired one and one
/// for another name only (both signed by the same CA), an unrelated CA, and a client CA with a
/// client certificate (CN=corridor-gateway) for mTLS. EC P-256 throughout.
struct OriginationPKI {
    let caCert: String
    let otherCACert: String
    let serverCert: String, serverKey: String
    let expiredCert: String, expiredKey: String
    let mismatchCert: String, mismatchKey: String
    /// Valid for the dialled address only (an IP alternative name 127.0.0.1), and with no
    /// alternative name at all but the right common name.
    let addressOnlyCert: String, addressOnlyKey: String
    let commonNameOnlyCert: String, commonNameOnlyKey: String
    let clientCACert: String
    let clientCert: String, clientKey: String

    static let serverNames = ["billing.example.test", "other.example.test"]

    init(in dir: TempDir) throws {
        let out = dir.path("pki")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let script = dir.path("make_pki.py")
        try Self.script.write(toFile: script, atomically: true, encoding: .utf8)
        let result = try runCommand("python3", [script, out])
        guard result.status == 0, result.stdout.contains("ok") else {
            throw TestError.failed("PKI generation failed: \(result.stdout) \(result.stderr)")
        }
        func p(_ name: String) -> String { "\(out)/\(name).pem" }
        caCert = p("ca"); otherCACert = p("other-ca")
        serverCert = p("server"); serverKey = p("server-key")
        expiredCert = p("expired"); expiredKey = p("expired-key")
        mismatchCert = p("mismatch"); mismatchKey = p("mismatch-key")
        addressOnlyCert = p("address-only"); addressOnlyKey = p("address-only-key")
        commonNameOnlyCert = p("common-name-only"); commonNameOnlyKey = p("common-name-only-key")
        clientCACert = p("client-ca")
        clientCert = p("client"); clientKey = p("client-key")
    }

    private static let script = #"""
    import datetime, ipaddress, sys
    from cryptography import x509
    from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out = sys.argv[1]
    now = datetime.datetime.now(datetime.timezone.utc)

    def write(name, cert, k=None):
        with open(f"{out}/{name}.pem", "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        if k is not None:
            with open(f"{out}/{name}-key.pem", "wb") as f:
                f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def usage(ca):
        return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                             encipher_only=False, decipher_only=False)

    def ca(cn):
        k = ec.generate_private_key(ec.SECP256R1())
        c = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn)).public_key(k.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .add_extension(usage(True), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
             .sign(k, hashes.SHA256()))
        return c, k

    def leaf(issuer, issuer_key, cn, dns, eku, before, after, ips=()):
        k = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer.subject).public_key(k.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(before).not_valid_after(after)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(usage(False), critical=True)
             .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False))
        if dns or ips:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns or []]
                                                            + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]), critical=False)
        return b.sign(issuer_key, hashes.SHA256()), k

    server = ExtendedKeyUsageOID.SERVER_AUTH
    valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2))
    names = ["billing.example.test", "other.example.test"]
    ca_cert, ca_key = ca("Corridor Origination Test CA")
    write("ca", ca_cert)
    write("other-ca", ca("Unrelated Test CA")[0])
    write("server", *leaf(ca_cert, ca_key, "billing.example.test", names, server, *valid))
    write("expired", *leaf(ca_cert, ca_key, "billing.example.test", names, server,
                           now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)))
    write("mismatch", *leaf(ca_cert, ca_key, "wrong.example.test", ["wrong.example.test"], server, *valid))
    write("address-only", *leaf(ca_cert, ca_key, "billing.example.test", None, server, *valid, ips=["127.0.0.1", "::1"]))
    write("common-name-only", *leaf(ca_cert, ca_key, "billing.example.test", None, server, *valid))
    client_ca_cert, client_ca_key = ca("Corridor Client Test CA")
    write("client-ca", client_ca_cert)
    write("client", *leaf(client_ca_cert, client_ca_key, "corridor-gateway", None, ExtendedKeyUsageOID.CLIENT_AUTH, *valid))
    print("ok")
    """#
}

/// The Python HTTPS upstream (Tests/Support/https_upstream.py) on 127.0.0.1.
final class HTTPSUpstream: @unchecked Sendable {
    let process: BackgroundProcess
    let port: Int
    let logPath: String

    init(dir: TempDir, cert: String, key: String, clientCA: String? = nil, maxVersion: String? = nil, name: String = "upstream") throws {
        logPath = dir.path("\(name).log")
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        var arguments = [Repo.support.appendingPathComponent("https_upstream.py").path, "--cert", cert, "--key", key, "--log", logPath]
        if let clientCA { arguments += ["--client-ca", clientCA] }
        if let maxVersion { arguments += ["--max-version", maxVersion] }
        let process = try BackgroundProcess("python3", arguments)
        self.process = process
        var found: Int?
        _ = eventually(timeout: 15) {
            if let line = process.stdoutText.split(separator: "\n").first(where: { $0.hasPrefix("PORT ") }) {
                found = Int(line.dropFirst(5))
            }
            return found != nil
        }
        guard let found else { throw TestError.failed("https upstream did not start: \(process.stderrText)") }
        port = found
    }

    /// One object per request the upstream served (sni, tlsVersion, clientCert, method, path, host,
    /// bodyBytes, bodySha256).
    var requests: [[String: Any]] {
        ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }
    }

    func stop() {
        process.signal(SIGTERM)
        if process.waitForExit(timeout: 2) == nil { process.signal(SIGKILL) }
    }

    /// Handshakes the upstream refused (printed on its stderr).
    var failedHandshakes: [String] {
        process.stderrText.split(separator: "\n").filter { $0.hasPrefix("handshake failed") }.map(String.init)
    }
}

/// How the gateway is told to trust the upstream.
enum OriginationTrust {
    case caFile(String)
    case inlineCA(String)
    /// Neither caBundleFile nor caBundle: the system trust store.
    case system
}

/// The `originateTLS` block of a port, rendered as YAML at `indent` spaces.
struct OriginateTLS {
    var port: Int
    var trust: OriginationTrust
    var clientCertificate: (cert: String, key: String)?
    var sni: String?
    var minVersion: String?

    func yaml(indent: Int) -> String {
        let pad = String(repeating: " ", count: indent)
        var lines = ["originateTLS:", "  port: \(port)"]
        switch trust {
        case .caFile(let path): lines.append("  caBundleFile: \(path)")
        case .inlineCA(let pem):
            lines.append("  caBundle: |")
            lines += pem.split(separator: "\n").map { "    \($0)" }
        case .system: break
        }
        if let clientCertificate {
            lines.append("  clientCertificateFile: \(clientCertificate.cert)")
            lines.append("  clientKeyFile: \(clientCertificate.key)")
        }
        if let sni { lines.append("  sni: \(sni)") }
        if let minVersion { lines.append("  minVersion: \(minVersion)") }
        return lines.map { pad + $0 }.joined(separator: "\n")
    }
}

/// An ExternalService with one HTTP port 80 that originates TLS, open to every known workload.
func originationService(name: String, hosts: [String], originate: OriginateTLS) -> String {
    """
    apiVersion: corridor.dev/v1alpha1
    kind: ExternalService
    metadata: {name: \(name)}
    spec:
      hosts: [\(hosts.joined(separator: ", "))]
      ports:
        - number: 80
          protocol: HTTP
    \(originate.yaml(indent: 6))
      access: All
    """
}

/// A whole config: the gateway on ephemeral ports (tls, http, connect, admin), the test names
/// resolved to 127.0.0.1, a Workload for 127.0.0.1, and `services` as more documents.
func originationConfig(accessLog: String, includePath: Bool?, services: [String], gatewayExtra: String = "") -> String {
    let accessLogSpec = includePath.map { "{file: \(accessLog), includePath: \($0)}" } ?? "{file: \(accessLog)}"
    return """
    apiVersion: corridor.dev/v1alpha1
    kind: GatewayConfig
    metadata: {name: test}
    spec:
      listeners: {tls: 127.0.0.1:0, http: 127.0.0.1:0, connect: 127.0.0.1:0, admin: 127.0.0.1:0}
      resolver:
        static: {billing.example.test: [127.0.0.1], other.example.test: [127.0.0.1]}
        system: false
      destinations: {allowPrivate: [127.0.0.1/32]}
      logging: {accessLog: \(accessLogSpec)}
      connect: {dataPlane: \(testDataPlane)}
    \(gatewayExtra)
    ---
    apiVersion: corridor.dev/v1alpha1
    kind: Workload
    metadata: {name: app, namespace: shop}
    spec: {addresses: [127.0.0.1/32], serviceAccount: app, labels: {app: shop}}
    ---
    \(services.joined(separator: "\n---\n"))
    """
}

/// An HTTP response as a client saw it.
struct HTTPResult {
    var status: Int
    /// Lower-cased names; the last value wins.
    var headers: [String: String]
    var body: String
    var clientError: String

    var reason: String? { headers["corridor-reason"] }

    /// The body is one line of text ending in a newline (what a refusal looks like).
    var bodyIsOneLine: Bool {
        let trimmed = body.hasSuffix("\n") ? String(body.dropLast()) : body
        return !trimmed.isEmpty && !trimmed.contains("\n")
    }

    /// Parses a head (status line and headers, CRLF separated) and a body.
    init(head: String, body: String, clientError: String = "") {
        let lines = head.components(separatedBy: "\r\n")
        status = lines.first.flatMap { $0.split(separator: " ").dropFirst().first.flatMap { Int($0) } } ?? 0
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        self.headers = headers
        self.body = body
        self.clientError = clientError
    }
}

/// One in-process gateway on ephemeral ports in front of one HTTPS upstream, with the origination PKI.
final class OriginationHarness: AccessLogReading, @unchecked Sendable {
    let dir: TempDir
    let pki: OriginationPKI
    let upstream: HTTPSUpstream
    let gateway: Gateway
    let configPath: String
    let accessLogPath: String
    let httpPort: Int
    let connectPort: Int
    let adminPort: Int

    /// `upstreamCert` picks the certificate the upstream presents (default: the valid server
    /// certificate); `configure` adjusts the billing service's originateTLS block (default: port of
    /// the upstream, caBundleFile of the test CA); `moreServices` adds documents given the PKI and
    /// the upstream port.
    init(upstreamCert: ((OriginationPKI) -> (cert: String, key: String))? = nil,
         requireClientCert: Bool = false,
         upstreamMaxVersion: String? = nil,
         includePath: Bool? = true,
         gatewayExtra: String = "",
         workers: Int = 2,
         configure: (inout OriginateTLS, OriginationPKI) -> Void = { _, _ in },
         moreServices: (OriginationPKI, Int) -> [String] = { _, _ in [] }) async throws {
        dir = try TempDir()
        pki = try OriginationPKI(in: dir)
        let cert: (cert: String, key: String) = upstreamCert?(pki) ?? (pki.serverCert, pki.serverKey)
        upstream = try HTTPSUpstream(dir: dir, cert: cert.cert, key: cert.key,
                                     clientCA: requireClientCert ? pki.clientCACert : nil, maxVersion: upstreamMaxVersion)
        var originate = OriginateTLS(port: upstream.port, trust: .caFile(pki.caCert))
        configure(&originate, pki)
        accessLogPath = dir.path("access.log")
        configPath = dir.path("corridor.yaml")
        let services = [originationService(name: "billing", hosts: ["billing.example.test"], originate: originate)]
            + moreServices(pki, upstream.port)
        try originationConfig(accessLog: accessLogPath, includePath: includePath, services: services, gatewayExtra: gatewayExtra)
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        var logger = Logger(label: "corridor-origination-test")
        logger.logLevel = .warning
        gateway = try Gateway(options: .init(configPath: configPath, workers: workers), logger: logger)
        try await gateway.start()
        let bound = gateway.boundAddresses
        guard let http = bound["http"]?.port, let connect = bound["connect"]?.port, let admin = bound["admin"]?.port else {
            await gateway.shutdown(drain: .seconds(1))
            throw TestError.failed("the gateway bound no http/connect/admin listener: \(bound)")
        }
        httpPort = http
        connectPort = connect
        adminPort = admin
    }

    func stop() async {
        await gateway.shutdown(drain: .seconds(2))
        upstream.stop()
    }


    /// curl through the gateway with the URL in absolute form (`-x`), on the http listener unless
    /// `port` says otherwise.
    func curlViaProxy(_ url: String, port: Int? = nil, extra: [String] = [], maxTime: Int = 20, output: String? = nil) throws -> HTTPResult {
        try curlCapturing(["-x", "http://127.0.0.1:\(port ?? httpPort)"] + extra + [url], in: dir, maxTime: maxTime, output: output)
    }

    /// curl straight at the http listener with the URL in origin form and a Host header.
    func curlOriginForm(path: String, host: String, extra: [String] = [], maxTime: Int = 20) throws -> HTTPResult {
        try curl(["-H", "Host: \(host)"] + extra + ["http://127.0.0.1:\(httpPort)\(path)"], maxTime: maxTime)
    }

    func curl(_ arguments: [String], maxTime: Int = 20) throws -> HTTPResult {
        try curlCapturing(arguments, in: dir, maxTime: maxTime)
    }
}

/// Runs curl with the response head and body captured in files of `dir`; the last head wins
/// (a 100 Continue comes before the real one). With `output`, the body is written there instead
/// and not read back.
func curlCapturing(_ arguments: [String], in dir: TempDir, maxTime: Int, output: String? = nil) throws -> HTTPResult {
    let tag = UUID().uuidString.prefix(8)
    let headPath = dir.path("head-\(tag)"), bodyPath = output ?? dir.path("body-\(tag)")
    let result = try runCommand("curl", ["-sS", "--max-time", "\(maxTime)", "-D", headPath, "-o", bodyPath] + arguments,
                                timeout: TimeInterval(maxTime + 10))
    let heads = ((try? String(contentsOfFile: headPath, encoding: .utf8)) ?? "")
        .components(separatedBy: "\r\n\r\n").filter { !$0.isEmpty }
    try? FileManager.default.removeItem(atPath: headPath)
    var body = ""
    if output == nil {
        body = (try? String(contentsOfFile: bodyPath, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: bodyPath)
    }
    return HTTPResult(head: heads.last ?? "", body: body, clientError: "curl exit \(result.status): \(result.stderr)")
}

/// Sends `bytes` as they are to 127.0.0.1:`port` (all of them, before reading), then reads one
/// response: its head and as much body as Content-Length announces, or up to EOF.
func rawHTTPExchange(port: Int, bytes: [UInt8], timeout: TimeInterval = 15) throws -> HTTPResult {
    let script = #"""
    import socket, sys, json
    port, timeout = int(sys.argv[1]), float(sys.argv[2])
    data = sys.stdin.buffer.read()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    error = ""
    try:
        s.sendall(data)
    except OSError as e:
        error = f"send: {e}"
    buf = b""
    try:
        while True:
            if b"\r\n\r\n" in buf:
                head, _, body = buf.partition(b"\r\n\r\n")
                length = None
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip())
                if length is not None and len(body) >= length:
                    break
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except OSError as e:
        error += f" recv: {e}"
    head, _, body = buf.partition(b"\r\n\r\n")
    print(json.dumps({"head": head.decode("latin-1"), "body": body.decode("latin-1"), "error": error}))
    """#
    let result = try runCommand("python3", ["-c", script, "\(port)", "\(timeout)"], timeout: timeout + 10, stdin: Data(bytes))
    guard let object = (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: String] else {
        throw TestError.failed("raw client printed no JSON: \(result.stdout) \(result.stderr)")
    }
    return HTTPResult(head: object["head"] ?? "", body: object["body"] ?? "", clientError: object["error"] ?? "")
}

/// The ports the `corridor` binary logged at start-up, by listener name, once every one of `names`
/// is there (listenerPorts in OperationsTests expects exactly three listeners).
func originationListenerPorts(_ gateway: BackgroundProcess, names: Set<String> = ["http", "connect", "admin"]) throws -> [String: Int] {
    var ports: [String: Int] = [:]
    _ = eventually(timeout: 30) {
        ports = [:]
        for line in gateway.stderrText.split(separator: "\n") where line.contains("listening") {
            guard let listener = line.range(of: "listener=").map({ String(line[$0.upperBound...].prefix { $0.isLetter }) }),
                  let address = line.range(of: "address=").map({ String(line[$0.upperBound...].prefix { $0 != " " }) }),
                  let port = address.split(separator: ":").last.flatMap({ Int($0) }) else { continue }
            ports[listener] = port
        }
        return names.isSubset(of: Set(ports.keys))
    }
    guard names.isSubset(of: Set(ports.keys)) else {
        throw TestError.failed("gateway did not start its \(names.sorted()) listeners: \(gateway.stderrText)")
    }
    return ports
}

/// sha256 of a file, with sha256sum.
func sha256(ofFile path: String) throws -> String {
    let result = try runCommand("sha256sum", [path], timeout: 120)
    guard result.status == 0, let hash = result.stdout.split(separator: " ").first else {
        throw TestError.failed("sha256sum failed: \(result.stderr)")
    }
    return String(hash)
}

/// sha256 of what GET /size/N answers (the upstream's pattern of N bytes).
func patternSHA256(_ n: Int) throws -> String {
    let script = """
    import hashlib, sys
    block = bytes((i * 7 + 3) & 0xFF for i in range(65536))
    chunk = block * 16
    n, h = int(sys.argv[1]), hashlib.sha256()
    while n > 0:
        take = min(n, len(chunk)); h.update(chunk[:take]); n -= take
    print(h.hexdigest())
    """
    let result = try runCommand("python3", ["-c", script, "\(n)"], timeout: 120)
    guard result.status == 0 else { throw TestError.failed("pattern hash failed: \(result.stderr)") }
    return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// VmHWM (peak resident set) of a process, in bytes.
func peakResidentBytes(pid: Int32) throws -> Int {
    let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
          let kB = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap({ Int($0) }) else {
        throw TestError.failed("no VmHWM in /proc/\(pid)/status")
    }
    return kB * 1024
}
