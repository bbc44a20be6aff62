/// The admission policy that keeps the egress lockdown of ``NetworkPolicies`` in place.
/// NetworkPolicies add up: any one that allows egress opens it, so anyone who may write
/// NetworkPolicies in an application namespace (the built-in `edit` and `admin` roles may) could
/// undo the lockdown, and a host-network pod is outside NetworkPolicies and without an identity.
/// A ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, Kubernetes 1.30 and later) with
/// its binding refuses, in the locked namespaces and to everyone but the exempt users and groups:
/// creating or changing a NetworkPolicy that governs egress (egress rules, or policy type Egress),
/// changing or deleting one that does (Corridor's own among them), and creating a host-network
/// pod. Ingress-only NetworkPolicies stay free. `corridor netpol` prints it after the policies.
public struct EgressLockdownAdmission: Sendable {
    public static let name = "corridor-egress-lockdown"

    /// What a user or group name must look like to be written into a CEL string literal.
    public static func nameProblem(_ name: String) -> String? {
        if name.isEmpty { return "is empty" }
        let allowed = name.unicodeScalars.allSatisfy { scalar in
            scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || ":._@-/".unicodeScalars.contains(scalar))
        }
        return allowed ? nil : "may hold only letters, digits and : . _ @ - /"
    }

    public var namespaces: [String]
    /// Users and groups the policy does not apply to: whoever applies `corridor netpol`'s output
    /// (cluster administrators, a GitOps controller's service account).
    public var exemptUsers: [String]
    public var exemptGroups: [String]

    public init(namespaces: [String], exemptUsers: [String], exemptGroups: [String]) {
        self.namespaces = namespaces
        self.exemptUsers = exemptUsers
        self.exemptGroups = exemptGroups
    }

    /// The policy and its binding, as two YAML documents.
    public var yaml: String {
        let exempt = (exemptUsers.map { "user \($0)" } + exemptGroups.map { "group \($0)" }).joined(separator: ", ")
        let who = exempt.isEmpty ? "nobody" : exempt
        let governsEgress = { (object: String) in
            "(has(\(object).spec.egress) || (has(\(object).spec.policyTypes) && 'Egress' in \(object).spec.policyTypes))"
        }
        let policy = [
            "apiVersion: admissionregistration.k8s.io/v1",
            "kind: ValidatingAdmissionPolicy",
            "metadata:",
            "  name: \(Self.name)",
            "  labels: {app.kubernetes.io/managed-by: corridor}",
            "spec:",
            "  failurePolicy: Fail",
            "  matchConstraints:",
            "    resourceRules:",
            "      - apiGroups: [\"networking.k8s.io\"]",
            "        apiVersions: [\"*\"]",
            "        operations: [CREATE, UPDATE, DELETE]",
            "        resources: [networkpolicies]",
            "      - apiGroups: [\"\"]",
            "        apiVersions: [\"*\"]",
            "        operations: [CREATE]",
            "        resources: [pods]",
            "  matchConditions:",
            "    - name: not-exempt",
            "      expression: \"!(request.userInfo.username in [\(literals(exemptUsers))]) && !(has(request.userInfo.groups) && request.userInfo.groups.exists(g, g in [\(literals(exemptGroups))]))\"",
            "  validations:",
            "    - expression: \"request.resource.resource != 'networkpolicies' || request.operation == 'DELETE' || !\(governsEgress("object"))\"",
            "      reason: Forbidden",
            "      message: \"Corridor locks down egress in this namespace: a NetworkPolicy with egress rules or policy type Egress may be created or changed only by \(who) (egress leaves through the gateway; corridor netpol)\"",
            "    - expression: \"request.resource.resource != 'networkpolicies' || request.operation == 'CREATE' || !\(governsEgress("oldObject"))\"",
            "      reason: Forbidden",
            "      message: \"Corridor locks down egress in this namespace: a NetworkPolicy that governs egress may be changed or deleted only by \(who)\"",
            "    - expression: \"request.resource.resource != 'pods' || !has(object.spec.hostNetwork) || !object.spec.hostNetwork\"",
            "      reason: Forbidden",
            "      message: \"Corridor locks down egress in this namespace: a host-network pod is outside NetworkPolicies and has no identity at the gateway\"",
        ]
        let binding = [
            "apiVersion: admissionregistration.k8s.io/v1",
            "kind: ValidatingAdmissionPolicyBinding",
            "metadata:",
            "  name: \(Self.name)",
            "  labels: {app.kubernetes.io/managed-by: corridor}",
            "spec:",
            "  policyName: \(Self.name)",
            "  validationActions: [Deny]",
            "  matchResources:",
            "    namespaceSelector:",
            "      matchExpressions:",
            "        - key: kubernetes.io/metadata.name",
            "          operator: In",
            "          values: [\(namespaces.map { "\"\($0)\"" }.joined(separator: ", "))]",
        ]
        return [policy, binding].map { $0.joined(separator: "\n") + "\n" }.joined(separator: "---\n")
    }

    /// CEL string literals (the names are checked by ``nameProblem(_:)``: no quote or backslash).
    private func literals(_ names: [String]) -> String {
        names.map { name in
            precondition(Self.nameProblem(name) == nil, "an exempt name CEL cannot quote: \(name)")
            return "'\(name)'"
        }.joined(separator: ", ")
    }
}
