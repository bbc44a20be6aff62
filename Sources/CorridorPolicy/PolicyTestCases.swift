import Yams

/// `corridor test`: policy unit tests for a policy repository's CI. A YAML file of cases, each a
/// source, a destination and the verdict expected (optionally the ExternalService and
/// EgressPolicy that decide it), judged by ``PolicyExplanation`` (the data plane's engine).
/// See docs/policy-tests.md for the format.
public struct PolicyTestCases: Sendable {
    public struct Case: Sendable {
        public var name: String
        public var line: Int?
        public var query: PolicyExplanation.Query
        public var expect: Decision.Verdict
        public var externalService: String?
        public var egressPolicy: String?
    }

    /// The result of one case.
    public struct Outcome: Sendable {
        public var testCase: Case
        public var passed: Bool
        /// `ok 3 name: allow (stripe, payments/checkout)` or `FAIL 3 name: expected ..., got ... (reason)`.
        public var line: String
    }

    public var cases: [Case]

    /// Reads the cases; every problem names the file, the line and the field.
    public static func load(yaml text: String, file: String) throws(ConfigErrors) -> PolicyTestCases {
        let reader = YAMLReader(file: file, document: 1, object: nil)
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw ConfigErrors(errors: [ConfigError(file: file, reason: "the file is empty: expected `cases:` with a list of cases")])
            }
            root = node
        } catch let errors as ConfigErrors {
            throw errors
        } catch {
            throw ConfigErrors(errors: [ConfigError(file: file, reason: "not valid YAML: \(error)")])
        }
        var cases: [Case] = []
        var errors: [ConfigError] = []
        do {
            let top = try YAMLReader.Fields(reader: reader, path: "", node: root)
            let list = try top.list("cases")
            try top.finish()
            if list.isEmpty { throw reader.error("cases", root, "at least one case is required") }
            for (index, (path, node)) in list.enumerated() {
                do throws(ConfigError) {
                    cases.append(try readCase(path: path, node: node, index: index, reader: reader))
                } catch {
                    errors.append(error)
                }
            }
        } catch let error as ConfigError {
            errors.append(error)
        } catch {
            errors.append(ConfigError(file: file, reason: "\(error)"))
        }
        if !errors.isEmpty { throw ConfigErrors(errors: errors) }
        return PolicyTestCases(cases: cases)
    }

    private static func readCase(path: String, node: Node, index: Int, reader: YAMLReader) throws(ConfigError) -> Case {
        let fields = try YAMLReader.Fields(reader: reader, path: path, node: node)
        let name = try fields.string("name") ?? "case \(index + 1)"
        guard let sourceFields = try fields.fields("source") else { throw reader.error("\(path).source", node, "is required") }
        let namespace = try sourceFields.string("namespace")
        let serviceAccount = try sourceFields.string("serviceAccount")
        let labels = try sourceFields.stringMap("labels").sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let ip = try sourceFields.string("ip")
        let pod = try sourceFields.string("pod")
        try sourceFields.finish()
        let to = try fields.string("to")
        let via = try fields.string("via")
        let ech = try fields.bool("ech") ?? false
        guard let expectText = try fields.string("expect") else { throw reader.error("\(path).expect", node, "is required: allow, deny or audit") }
        guard let expect = Decision.Verdict(rawValue: expectText) else {
            throw reader.error("\(path).expect", fields.node("expect"), "must be one of allow, deny, audit, got '\(expectText)'")
        }
        let externalService = try fields.string("externalService")
        let egressPolicy = try fields.string("egressPolicy")
        try fields.finish()
        let query: PolicyExplanation.Query
        do throws(PolicyExplanation.QueryError) {
            query = try PolicyExplanation.Query.parse(namespace: namespace, serviceAccount: serviceAccount, labels: labels, sourceIP: ip, pod: pod,
                                                      to: to, via: via, ech: ech, spelling: .testCase)
        } catch {
            let reason = error.description
            throw reader.error(path, node, reason)
        }
        return Case(name: name, line: node.mark?.line, query: query, expect: expect, externalService: externalService, egressPolicy: egressPolicy)
    }

    /// Runs every case against `snapshot`.
    public func run(against snapshot: PolicySnapshot) -> [Outcome] {
        cases.enumerated().map { index, testCase in
            let number = index + 1
            let explanation: PolicyExplanation
            do throws(PolicyExplanation.QueryError) {
                explanation = try PolicyExplanation.make(testCase.query, snapshot: snapshot)
            } catch {
                return Outcome(testCase: testCase, passed: false, line: "FAIL \(number) \(testCase.name): \(error.description)")
            }
            let decision = explanation.decision
            var problems: [String] = []
            if decision.verdict != testCase.expect { problems.append("expected \(testCase.expect.rawValue), got \(decision.verdict.rawValue)") }
            if let service = testCase.externalService, decision.externalService != service {
                problems.append("expected ExternalService \(service), got \(decision.externalService ?? "none")")
            }
            if let policy = testCase.egressPolicy, decision.egressPolicy != policy {
                problems.append("expected EgressPolicy \(policy), got \(decision.egressPolicy ?? "none")")
            }
            let by = [decision.externalService, decision.egressPolicy].compactMap { $0 }
            let summary = decision.verdict.rawValue + (by.isEmpty ? "" : " (\(by.joined(separator: ", ")))")
            if problems.isEmpty {
                return Outcome(testCase: testCase, passed: true, line: "ok \(number) \(testCase.name): \(summary)")
            }
            return Outcome(testCase: testCase, passed: false,
                           line: "FAIL \(number) \(testCase.name): \(problems.joined(separator: "; ")): \(decision.reason)")
        }
    }
}
