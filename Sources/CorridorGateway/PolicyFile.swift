import CorridorPolicy
import CorridorProxy
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads the config file and builds a snapshot; the one place file mode touches the disk.
public enum PolicyFile {
    /// The file's text, or a ConfigErrors naming the file and the reason.
    public static func read(_ path: String) throws(ConfigErrors) -> String {
        guard let file = fopen(path, "rb") else {
            throw ConfigErrors(errors: [ConfigError(file: path, reason: "cannot read: \(String(cString: strerror(errno)))")])
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
            if n < chunk.count {
                // A short read is the end of the file or a failure (a directory: EISDIR), which
                // must not pass for an empty policy.
                if ferror(file) != 0 {
                    throw ConfigErrors(errors: [ConfigError(file: path, reason: "cannot read: \(String(cString: strerror(errno)))")])
                }
                break
            }
            if bytes.count > 64 << 20 {
                throw ConfigErrors(errors: [ConfigError(file: path, reason: "larger than 64 MiB")])
            }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ConfigErrors(errors: [ConfigError(file: path, reason: "not UTF-8 text")])
        }
        return text
    }

    /// A reloaded file that holds no object at all is refused: most likely it is being rewritten.
    static func refuseIfEmpty(_ text: String, _ path: String) throws(ConfigErrors) {
        guard holdsNoObjects(text) else { return }
        throw ConfigErrors(errors: [ConfigError(file: path, reason: "holds no objects, which would drop every rule and setting at once; "
            + "an empty file is taken for one being rewritten, and the policy in force stays")])
    }

    /// Whether `text` is nothing but blank lines, comments and bare document markers (`---` or
    /// `...` alone, or before a comment: `--- {kind: ...}` starts a document with content).
    static func holdsNoObjects(_ text: String) -> Bool {
        text.split(whereSeparator: \.isNewline).allSatisfy { line in
            var rest = line.trimmingPrefix { $0 == " " || $0 == "\t" }
            if rest.hasPrefix("---") || rest.hasPrefix("...") {
                rest = rest.dropFirst(3)
                guard rest.isEmpty || rest.first == " " || rest.first == "\t" else { return false }
                rest = rest.trimmingPrefix { $0 == " " || $0 == "\t" }
            }
            return rest.isEmpty || rest.hasPrefix("#")
        }
    }

    public static func load(_ path: String, generation: Int) throws(ConfigErrors) -> PolicySnapshot {
        try loadCompiled(path, generation: generation).snapshot
    }

    /// The snapshot and the TLS origination contexts compiled from it: a CA bundle or key that
    /// cannot be loaded makes the file invalid, like any other error in it.
    /// With a `cache`, documents unchanged since the last load through it are not parsed again.
    /// `reloading`: a file that holds no object at all is refused (a truncated or half-written
    /// file, most likely), where at start it is an empty policy.
    public static func loadCompiled(_ path: String, generation: Int, cache: ConfigCache? = nil,
                                    reloading: Bool = false) throws(ConfigErrors) -> (snapshot: PolicySnapshot, origination: OriginationContexts) {
        let text = try read(path)
        if reloading { try refuseIfEmpty(text, path) }
        let source = try ConfigLoader.load(yaml: text, file: path, cache: cache)
        let snapshot = PolicySnapshot(source: source, generation: generation)
        do {
            return (snapshot, try OriginationContexts(snapshot: snapshot))
        } catch {
            throw ConfigErrors(errors: error.problems.map { ConfigError(file: path, object: $0.object, field: $0.field, reason: $0.reason) })
        }
    }

    /// Kubernetes mode's file: the GatewayConfig and any static Workloads (VMs, nodes). The
    /// ExternalServices and EgressPolicies come from the API; in this file they are an error,
    /// not silently ignored or merged.
    public static func loadKubernetesBase(_ path: String, reloading: Bool = false) throws(ConfigErrors) -> PolicySource {
        let text = try read(path)
        if reloading { try refuseIfEmpty(text, path) }
        let source = try ConfigLoader.load(yaml: text, file: path)
        var errors: [ConfigError] = []
        for service in source.externalServices {
            errors.append(ConfigError(file: path, object: "ExternalService/\(service.name)",
                                      reason: "ExternalService/\(service.name): with --kubernetes, ExternalServices come from the API (kubectl apply); remove it from this file"))
        }
        for policy in source.egressPolicies {
            errors.append(ConfigError(file: path, object: "EgressPolicy/\(policy.metadata.qualifiedName)",
                                      reason: "EgressPolicy/\(policy.metadata.qualifiedName): with --kubernetes, EgressPolicies come from the API (kubectl apply); remove it from this file"))
        }
        if !errors.isEmpty { throw ConfigErrors(errors: errors) }
        return source
    }

    /// The TLS files `services` name for origination (CA bundles, client certificates and keys),
    /// each with its ``fingerprint(_:)`` (nil: unreadable): a file rotated in place, such as a
    /// mounted Secret, is read again although no object changed.
    public static func tlsFileFingerprints(_ services: [ExternalService]) -> [String: [Int]?] {
        var paths = Set<String>()
        for service in services {
            for port in service.ports {
                guard let originate = port.originateTLS else { continue }
                paths.formUnion([originate.clientCertificateFile, originate.clientKeyFile].compactMap { $0 })
                if case .file(let path)? = originate.caBundle { paths.insert(path) }
            }
        }
        return fingerprints(paths)
    }

    /// Each of `paths` with its ``fingerprint(_:)``; an unreadable file stays in the map, with nil.
    public static func fingerprints(_ paths: some Sequence<String>) -> [String: [Int]?] {
        var files: [String: [Int]?] = [:]
        for path in paths { files[path] = .some(fingerprint(path)) }
        return files
    }

    /// What identifies a version of the file cheaply: inode, size, mtime. Follows symlinks, so a
    /// Kubernetes ConfigMap's atomic `..data` swap is seen too.
    public static func fingerprint(_ path: String) -> [Int]? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return [Int(info.st_ino), Int(info.st_size), Int(info.st_mtim.tv_sec), Int(info.st_mtim.tv_nsec)]
    }
}
