/// A problem in a configuration source, located as precisely as the source allows:
/// file, document, object, field path and line.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    /// 1-based index of the YAML document in the file, if known.
    public var document: Int?
    /// `Kind/namespace/name` of the object, if known.
    public var object: String?
    /// Field path such as `spec.ports[0].number`.
    public var field: String?
    public var line: Int?
    public var reason: String

    public init(file: String, document: Int? = nil, object: String? = nil, field: String? = nil, line: Int? = nil, reason: String) {
        self.file = file
        self.document = document
        self.object = object
        self.field = field
        self.line = line
        self.reason = reason
    }

    public var description: String {
        var location = file
        if let line { location += ":\(line)" }
        var parts = [location]
        if let document { parts.append("document \(document)" + (object.map { " (\($0))" } ?? "")) }
        if let field { parts.append(field) }
        parts.append(reason)
        return parts.joined(separator: ": ")
    }
}

/// Several problems at once, so one `corridor check` run lists them all.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [ConfigError]

    public init(errors: [ConfigError]) {
        self.errors = errors
    }

    public var description: String { errors.map(\.description).joined(separator: "\n") }
}
