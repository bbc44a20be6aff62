/// The admission policies that keep the egress lockdown of ``NetworkPolicies`` in place.
/// NetworkPolicies add up: any one that allows egress opens it, so anyone who may write
/// NetworkPolicies in an application namespace (the built-in `edit` and `admin` roles may) could
/// undo the lockdown; and a pod in the host's network (host network, host PID namespace,
/// privileged) is outside NetworkPolicies. Two ValidatingAdmissionPolicies
/// (admissionregistration.k8s.io/v1, Kubernetes 1.30 and later), each with its binding to the
/// locked namespaces, refuse to everyone but the exempt users and groups: creating or changing a
/// NetworkPolicy that governs egress (egress rules, or policy type Egress), changing or deleting
/// one that does (Corridor's own among them; deletion is let through once the namespace itself is
/// being deleted), and creating such a pod. Ingress-only NetworkPolicies stay free. `corridor
/// netpol` prints them after the policies.
public struct EgressLockdownAdmission: Sendable {
    public static let networkPolicyName = "corridor-egress-lockdown-networkpolicies"
    public static let podName = "corridor-egress-lockdown-pods"
    /// Cluster administrators: `system:masters`, and kubeadm's `admin.conf` group since 1.29.
    public static let defaultExemptGroups = ["system:masters", "kubeadm:cluster-admins"]

    /// What a user or group name must look like to be written into a CEL string literal.
    public static func nameProblem(_ name: String) -> String? {
        if name.isEmpty { return "is empty" }
        let allowed = name.unicodeScalars.allSatisfy { scalar in
            scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || ":._@-/".unicodeScalars.contains(scalar))
        }
        return allowed ? nil : "may hold only letters, digits and : . _ @ - /"
    }

    public var namespaces: [String]
    /// Users and groups the policies do not apply to: whoever applies `corridor netpol`'s output
    /// (cluster administrators, a GitOps controller's service account).
    public var exemptUsers: [String]
    public var exemptGroups: [String]

    public init(namespaces: [String], exemptUsers: [String], exemptGroups: [String]) {
        self.namespaces = namespaces
        self.exemptUsers = exemptUsers
        self.exemptGroups = exemptGroups
    }

    /// Who may still change egress NetworkPolicies, as the refusals say it.
    public var exempt: String {
        let names = exemptUsers.map { "user \($0)" } + exemptGroups.map { "group \($0)" }
        return names.isEmpty ? "nobody" : names.joined(separator: ", ")
    }

    /// The policies and their bindings, as four YAML documents.
    public var yaml: String {
        let governsEgress = { (object: String) in
            "(has(\(object).spec.egress) || (has(\(object).spec.policyTypes) && 'Egress' in \(object).spec.policyTypes))"
        }
        let privileged = "has(c.securityContext) && has(c.securityContext.privileged) && c.securityContext.privileged"
        let networkPolicies = policy(Self.networkPolicyName, rule: [
            "      - apiGroups: [\"networking.k8s.io\"]",
            "        apiVersions: [\"*\"]",
            "        operations: [CREATE, UPDATE, DELETE]",
            "        resources: [networkpolicies]",
        ], validations: [
            ("request.operation == 'DELETE' || !\(governsEgress("object"))",
             "Corridor locks down egress in this namespace: a NetworkPolicy with egress rules or policy type Egress may be created or changed only by \(exempt) (egress leaves through the gateway; corridor netpol)"),
            ("request.operation == 'CREATE' || (request.operation == 'DELETE' && has(namespaceObject.metadata.deletionTimestamp)) || !\(governsEgress("oldObject"))",
             "Corridor locks down egress in this namespace: a NetworkPolicy that governs egress may be changed or deleted only by \(exempt)"),
        ])
        let pods = policy(Self.podName, rule: [
            "      - apiGroups: [\"\"]",
            "        apiVersions: [\"*\"]",
            "        operations: [CREATE]",
            "        resources: [pods]",
        ], validations: [
            ("!(has(object.spec.hostNetwork) && object.spec.hostNetwork) && !(has(object.spec.hostPID) && object.spec.hostPID)"
                + " && !object.spec.containers.exists(c, \(privileged))"
                + " && !(has(object.spec.initContainers) && object.spec.initContainers.exists(c, \(privileged)))",
             "Corridor locks down egress in this namespace: a pod in the host's network or PID namespace, or with a privileged container, is outside NetworkPolicies (only \(exempt) may create one)"),
        ])
        return [networkPolicies, binding(Self.networkPolicyName), pods, binding(Self.podName)]
            .map { $0.joined(separator: "\n") + "\n" }.joined(separator: "---\n")
    }

    private func policy(_ name: String, rule: [String], validations: [(expression: String, message: String)]) -> [String] {
        [
            "apiVersion: admissionregistration.k8s.io/v1",
            "kind: ValidatingAdmissionPolicy",
            "metadata:",
            "  name: \(name)",
            "  labels: {app.kubernetes.io/managed-by: corridor}",
            "spec:",
            "  failurePolicy: Fail",
            "  matchConstraints:",
            "    resourceRules:",
        ] + rule + [
            "  matchConditions:",
            "    - name: not-exempt",
            "      expression: \"!(request.userInfo.username in [\(literals(exemptUsers))]) && !(has(request.userInfo.groups) && request.userInfo.groups.exists(g, g in [\(literals(exemptGroups))]))\"",
            "  validations:",
        ] + validations.flatMap { validation in [
            "    - expression: \"\(validation.expression)\"",
            "      reason: Forbidden",
            "      message: \"\(validation.message)\"",
        ] }
    }

    private func binding(_ name: String) -> [String] {
        [
            "apiVersion: admissionregistration.k8s.io/v1",
            "kind: ValidatingAdmissionPolicyBinding",
            "metadata:",
            "  name: \(name)",
            "  labels: {app.kubernetes.io/managed-by: corridor}",
            "spec:",
            "  policyName: \(name)",
            "  validationActions: [Deny]",
            "  matchResources:",
            "    namespaceSelector:",
            "      matchExpressions:",
            "        - key: kubernetes.io/metadata.name",
            "          operator: In",
            "          values: [\(namespaces.map { "\"\($0)\"" }.joined(separator: ", "))]",
        ]
    }

    /// CEL string literals (the names are checked by ``nameProblem(_:)``: no quote or backslash).
    private func literals(_ names: [String]) -> String {
        names.map { name in
            precondition(Self.nameProblem(name) == nil, "an exempt name CEL cannot quote: \(name)")
            return "'\(name)'"
        }.joined(separator: ", ")
    }
}
