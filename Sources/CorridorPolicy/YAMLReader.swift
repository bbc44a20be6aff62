import Yams

/// Walks a YAML node tree for one object, tracking the field path so every error says where it is,
/// and rejecting fields it does not know (a typo such as `podSelecter` must not silently widen a grant).
struct YAMLReader {
    var file: String
    var document: Int
    var object: String?

    func error(_ path: String, _ node: Node?, _ reason: String) -> ConfigError {
        ConfigError(file: file, document: document, object: object, field: path.isEmpty ? nil : path, line: node?.mark?.line, reason: reason)
    }

    /// A mapping's fields by key; call `finish()` to reject the ones nobody read.
    final class Fields {
        var reader: YAMLReader
        let path: String
        let node: Node
        var values: [(String, Node)] = []
        /// The key node of each field, so an error about the field itself points at the key's line.
        var keyNodes: [String: Node] = [:]
        var used = Set<String>()

        init(reader: YAMLReader, path: String, node: Node) throws(ConfigError) {
            self.reader = reader
            self.path = path
            self.node = node
            guard let mapping = node.mapping else {
                throw reader.error(path, node, "must be a mapping (key: value)")
            }
            var seen = Set<String>()
            for (key, value) in mapping {
                guard let name = key.scalar?.string else { throw reader.error(path, key, "keys must be strings") }
                guard seen.insert(name).inserted else { throw reader.error(child(name), key, "the key appears twice") }
                values.append((name, value))
                keyNodes[name] = key
            }
        }

        func child(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

        func node(_ key: String) -> Node? {
            used.insert(key)
            guard let value = values.first(where: { $0.0 == key })?.1 else { return nil }
            // `key:`, `key: ~` and `key: null` (any YAML spelling, or an explicit `!!null`) are the same as absent.
            if case .scalar(let scalar) = value,
               (scalar.style == .plain && Self.nullLiterals.contains(scalar.string)) || value.tag.rawValue == Tag.Name.null.rawValue {
                return nil
            }
            return value
        }

        static let nullLiterals: Set<String> = ["", "~", "null", "Null", "NULL"]

        func finish() throws(ConfigError) {
            for (key, value) in values where !used.contains(key) {
                throw reader.error(child(key), keyNodes[key] ?? value, "unknown field")
            }
        }

        func fields(_ key: String) throws(ConfigError) -> Fields? {
            guard let value = node(key) else { return nil }
            return try Fields(reader: reader, path: child(key), node: value)
        }

        func string(_ key: String) throws(ConfigError) -> String? {
            guard let value = node(key) else { return nil }
            return try reader.string(value, child(key))
        }

        func requiredString(_ key: String) throws(ConfigError) -> String {
            guard let value = try string(key) else { throw reader.error(child(key), node, "is required") }
            return value
        }

        func int(_ key: String, in range: ClosedRange<Int>) throws(ConfigError) -> Int? {
            guard let value = node(key) else { return nil }
            guard let text = value.scalar?.string, text.allSatisfy({ $0.isASCII && $0.isNumber }), !text.isEmpty,
                  text.count <= 10, let number = Int(text) else {
                throw reader.error(child(key), value, "must be a whole number")
            }
            guard range.contains(number) else {
                throw reader.error(child(key), value, "must be between \(range.lowerBound) and \(range.upperBound), got \(number)")
            }
            return number
        }

        func bool(_ key: String) throws(ConfigError) -> Bool? {
            guard let value = node(key) else { return nil }
            switch value.scalar?.string {
            case "true": return true
            case "false": return false
            default: throw reader.error(child(key), value, "must be true or false")
            }
        }

        /// A duration; zero only where `allowZero` says it means "off".
        func duration(_ key: String, allowZero: Bool = false) throws(ConfigError) -> Duration? {
            guard let text = try string(key) else { return nil }
            guard let duration = DurationSyntax.parse(text), duration > .zero || (allowZero && duration == .zero) else {
                throw reader.error(child(key), node(key), "must be a \(allowZero ? "" : "positive ")duration such as \(allowZero ? "0s (off), " : "")500ms, 10s, 5m or 1h, got '\(text)'")
            }
            return duration
        }

        func enumeration<E: RawRepresentable & CaseIterable>(_ key: String, _ type: E.Type) throws(ConfigError) -> E? where E.RawValue == String {
            guard let text = try string(key) else { return nil }
            guard let value = E(rawValue: text) else {
                throw reader.error(child(key), node(key), "must be one of \(E.allCases.map(\.rawValue).joined(separator: ", ")), got '\(text)'")
            }
            return value
        }

        /// Each element of a list, with its path (`key[0]`).
        func list(_ key: String) throws(ConfigError) -> [(String, Node)] {
            guard let value = node(key) else { return [] }
            guard let sequence = value.sequence else { throw reader.error(child(key), value, "must be a list") }
            return sequence.enumerated().map { ("\(child(key))[\($0.offset)]", $0.element) }
        }

        func stringList(_ key: String) throws(ConfigError) -> [String] {
            var result: [String] = []
            for (path, element) in try list(key) { result.append(try reader.string(element, path)) }
            return result
        }

        func stringMap(_ key: String) throws(ConfigError) -> [String: String] {
            guard let map = try fields(key) else { return [:] }
            var result: [String: String] = [:]
            for (name, value) in map.values {
                map.used.insert(name)
                result[name] = try reader.string(value, map.child(name))
            }
            return result
        }
    }

    func string(_ node: Node, _ path: String) throws(ConfigError) -> String {
        guard case .scalar(let scalar) = node else { throw error(path, node, "must be a string") }
        return scalar.string
    }
}
