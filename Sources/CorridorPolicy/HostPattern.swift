/// A host rule of an ExternalService: an exact name (`api.stripe.com`) or a wildcard
/// (`*.stripe.com`) that matches one or more labels below the suffix, never the suffix itself.
public enum HostPattern: Hashable, Sendable, CustomStringConvertible {
    case exact(String)
    /// The suffix without the `*.`; it matches names ending in `.suffix`.
    case wildcard(suffix: String)

    public enum Problem: Error, Equatable, Sendable {
        case invalidName(String, HostName.Problem)
        case misplacedWildcard(String)
    }

    /// Parses and normalises a pattern from configuration.
    public init(parsing text: String) throws(Problem) {
        if text.hasPrefix("*.") {
            let suffix = String(text.dropFirst(2))
            if suffix.contains("*") { throw .misplacedWildcard(text) }
            switch HostName.normalize(suffix) {
            case .success(let name): self = .wildcard(suffix: name)
            case .failure(let problem): throw .invalidName(text, problem)
            }
            return
        }
        if text.contains("*") { throw .misplacedWildcard(text) }
        switch HostName.normalize(text) {
        case .success(let name): self = .exact(name)
        case .failure(let problem): throw .invalidName(text, problem)
        }
    }

    /// Matches an already normalised host name.
    public func matches(_ name: String) -> Bool {
        switch self {
        case .exact(let exact): return name == exact
        case .wildcard(let suffix):
            return name.utf8.count > suffix.utf8.count + 1 && name.hasSuffix("." + suffix)
        }
    }

    public var description: String {
        switch self {
        case .exact(let name): return name
        case .wildcard(let suffix): return "*." + suffix
        }
    }
}

/// Maps host names to the entries registered for them, in time proportional to the length of the
/// name, whatever the number of patterns: exact names in one hash table, wildcard suffixes in
/// another, looked up once per parent suffix of the name (one pass hashes every suffix).
/// Names and patterns are compared byte for byte, so both must be normalised (``HostName``).
public struct HostIndex<Value: Sendable>: Sendable {
    /// Payloads are positions in `values`.
    private var exact = HostTable()
    private var wildcard = HostTable()
    /// By entry: the values of one pattern, in insertion order.
    private var values: [[Value]] = []
    public private(set) var patternCount = 0

    public init() {}

    public mutating func insert(_ pattern: HostPattern, _ value: Value) {
        patternCount += 1
        let next = UInt32(values.count)
        let entry: (payload: UInt32, inserted: Bool)
        switch pattern {
        case .exact(let name): entry = exact.insert(name, payload: next)
        case .wildcard(let suffix): entry = wildcard.insert(suffix, payload: next)
        }
        if entry.inserted { values.append([value]) } else { values[Int(entry.payload)].append(value) }
    }

    /// The values whose pattern matches `name` (normalised), most specific first: the exact
    /// entries, then wildcards from the longest suffix to the shortest.
    public func lookup(_ name: String) -> [Value] {
        HostMatch.all(name, exact: exact, wildcard: wildcard).flatMap { values[Int($0)] }
    }

    /// The values of the most specific pattern that matches `name` only: the exact entries if
    /// any, else those of the longest matching wildcard suffix. A broader pattern never overrides
    /// a more specific one.
    func lookupMostSpecific(_ name: String) -> [Value] {
        HostMatch.mostSpecific(name, exact: exact, wildcard: wildcard).map { values[Int($0)] } ?? []
    }
}
