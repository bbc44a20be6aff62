/// A Kubernetes label selector (`matchLabels` and `matchExpressions`), with Kubernetes semantics:
/// every requirement must hold; an empty selector selects everything.
public struct LabelSelector: Sendable, Equatable {
    public enum Operator: String, Sendable, CaseIterable {
        case `in` = "In", notIn = "NotIn", exists = "Exists", doesNotExist = "DoesNotExist"
    }

    public struct Requirement: Sendable, Equatable {
        public var key: String
        public var `operator`: Operator
        public var values: [String]

        public init(key: String, operator: Operator, values: [String] = []) {
            self.key = key
            self.operator = `operator`
            self.values = values
        }

        public func matches(_ labels: [String: String]) -> Bool {
            switch self.operator {
            case .in: return labels[key].map { values.contains($0) } ?? false
            case .notIn: return labels[key].map { !values.contains($0) } ?? true
            case .exists: return labels[key] != nil
            case .doesNotExist: return labels[key] == nil
            }
        }
    }

    public var matchLabels: [String: String]
    public var matchExpressions: [Requirement]

    public init(matchLabels: [String: String] = [:], matchExpressions: [Requirement] = []) {
        self.matchLabels = matchLabels
        self.matchExpressions = matchExpressions
    }

    public static let everything = LabelSelector()

    public var isEmpty: Bool { matchLabels.isEmpty && matchExpressions.isEmpty }

    public func matches(_ labels: [String: String]) -> Bool {
        for (key, value) in matchLabels where labels[key] != value { return false }
        for requirement in matchExpressions where !requirement.matches(labels) { return false }
        return true
    }

    /// `app=checkout,tier in (web,api)`: the form kubectl prints.
    public var summary: String {
        if isEmpty { return "<all pods>" }
        var parts = matchLabels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        for requirement in matchExpressions {
            switch requirement.operator {
            case .in: parts.append("\(requirement.key) in (\(requirement.values.joined(separator: ",")))")
            case .notIn: parts.append("\(requirement.key) notin (\(requirement.values.joined(separator: ",")))")
            case .exists: parts.append(requirement.key)
            case .doesNotExist: parts.append("!\(requirement.key)")
            }
        }
        return parts.joined(separator: ",")
    }
}

/// Validation of Kubernetes label keys and values (RFC 1123 / the apimachinery rules).
enum LabelSyntax {
    /// `[prefix/]name`: the prefix a DNS subdomain of at most 253 bytes, the name at most 63
    /// alphanumeric bytes with `-`, `_`, `.` inside.
    static func keyProblem(_ key: String) -> String? {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2 else { return "a label key has at most one '/'" }
        if parts.count == 2 {
            let prefix = String(parts[0])
            if prefix.isEmpty || prefix.count > 253 || (try? HostName.normalize(prefix).get()) != prefix {
                return "the label key prefix '\(prefix)' is not a lower-case DNS subdomain"
            }
        }
        return nameProblem(String(parts.last!), what: "label key name", allowEmpty: false)
    }

    static func valueProblem(_ value: String) -> String? {
        nameProblem(value, what: "label value", allowEmpty: true)
    }

    private static func nameProblem(_ name: String, what: String, allowEmpty: Bool) -> String? {
        if name.isEmpty { return allowEmpty ? nil : "the \(what) is empty" }
        if name.utf8.count > 63 { return "the \(what) '\(name)' is longer than 63 characters" }
        let bytes = Array(name.utf8)
        func isAlnum(_ b: UInt8) -> Bool {
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)
        }
        guard isAlnum(bytes.first!), isAlnum(bytes.last!),
              bytes.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") })
        else {
            return "the \(what) '\(name)' must be alphanumeric with '-', '_' or '.' inside"
        }
        return nil
    }
}
