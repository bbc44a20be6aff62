import CorridorPolicy
import NIOSSL

/// The client TLS contexts for every HTTP port with `originateTLS`, compiled once per policy
/// snapshot (off the data path): trust roots, client certificate and key, minimum version. A CA
/// bundle or key that cannot be read or parsed makes the whole snapshot invalid, so a bad reload
/// keeps the last good policy.
public final class OriginationContexts: Sendable {
    public struct Problem: Error, CustomStringConvertible {
        /// `ExternalService/name`.
        public var object: String
        /// `spec.ports[i].originateTLS.caBundleFile`.
        public var field: String
        public var reason: String
        public var description: String { "\(object): \(field): \(reason)" }
    }

    private let contexts: [String: NIOSSLContext]

    public static let empty = OriginationContexts(contexts: [:])

    private init(contexts: [String: NIOSSLContext]) {
        self.contexts = contexts
    }

    /// Builds every context the snapshot needs; throws every problem found.
    public convenience init(snapshot: PolicySnapshot) throws(OriginationProblems) {
        var contexts: [String: NIOSSLContext] = [:]
        var problems: [Problem] = []
        for service in snapshot.source.externalServices {
            for (index, port) in service.ports.enumerated() {
                guard let originate = port.originateTLS else { continue }
                let object = "ExternalService/\(service.name)", base = "spec.ports[\(index)].originateTLS"
                do {
                    contexts[Self.key(service: service.name, port: port.number)] = try Self.makeContext(originate, object: object, base: base)
                } catch let problem as Problem {
                    problems.append(problem)
                } catch {
                    problems.append(Problem(object: object, field: base, reason: "\(error)"))
                }
            }
        }
        if !problems.isEmpty { throw OriginationProblems(problems: problems) }
        self.init(contexts: contexts)
    }

    static func key(service: String, port: Int) -> String { "\(service)/\(port)" }

    /// TLS 1.2 or later, verified against the system trust store: for audited plain-HTTP requests
    /// to hosts no ExternalService registers with an HTTP port. Built once, on first use.
    static let systemTrust: NIOSSLContext? = try? makeContext(ExternalService.OriginateTLS(port: 443), object: "audit", base: "system trust")

    func context(service: String, port: Int) -> NIOSSLContext? { contexts[Self.key(service: service, port: port)] }

    private static func makeContext(_ originate: ExternalService.OriginateTLS, object: String, base: String) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = originate.minVersion == .tls13 ? .tlsv13 : .tlsv12
        configuration.certificateVerification = .fullVerification
        configuration.applicationProtocols = ["http/1.1"]
        switch originate.caBundle {
        case .none:
            configuration.trustRoots = .default
        case .file(let path):
            configuration.trustRoots = .certificates(try certificates(fromFile: path, object: object, field: "\(base).caBundleFile"))
        case .inline(let pem):
            do {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8)))
            } catch {
                throw Problem(object: object, field: "\(base).caBundle", reason: "not valid PEM certificates: \(error)")
            }
        }
        if let certificateFile = originate.clientCertificateFile, let keyFile = originate.clientKeyFile {
            configuration.certificateChain = try certificates(fromFile: certificateFile, object: object, field: "\(base).clientCertificateFile")
                .map { .certificate($0) }
            do {
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
            } catch {
                throw Problem(object: object, field: "\(base).clientKeyFile", reason: "cannot load the private key \(keyFile): \(error)")
            }
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw Problem(object: object, field: base, reason: "cannot build the TLS client configuration: \(error)")
        }
    }

    private static func certificates(fromFile path: String, object: String, field: String) throws -> [NIOSSLCertificate] {
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMFile(path)
        } catch {
            throw Problem(object: object, field: field, reason: "cannot load PEM certificates from \(path): \(error)")
        }
        guard !certificates.isEmpty else { throw Problem(object: object, field: field, reason: "\(path) holds no certificate") }
        return certificates
    }
}

/// Every origination problem of one snapshot.
public struct OriginationProblems: Error, CustomStringConvertible {
    public var problems: [OriginationContexts.Problem]
    public var description: String { problems.map(\.description).joined(separator: "\n") }
}
