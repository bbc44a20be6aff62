import Testing
@testable import CorridorPolicy

typealias Req = LabelSelector.Requirement

@Suite("LabelSelector and EgressPolicy.selects")
struct SelectorTests {
    @Test("each operator follows Kubernetes semantics", arguments: [
        Named("In, value listed", (Req(key: "tier", operator: .in, values: ["web", "api"]), ["tier": "api"], true)),
        Named("In, value not listed", (Req(key: "tier", operator: .in, values: ["web", "api"]), ["tier": "db"], false)),
        Named("In, key absent", (Req(key: "tier", operator: .in, values: ["web"]), [:], false)),
        Named("NotIn, value listed", (Req(key: "tier", operator: .notIn, values: ["db"]), ["tier": "db"], false)),
        Named("NotIn, other value", (Req(key: "tier", operator: .notIn, values: ["db"]), ["tier": "web"], true)),
        Named("NotIn, key absent matches", (Req(key: "tier", operator: .notIn, values: ["db"]), ["app": "x"], true)),
        Named("Exists, present", (Req(key: "app", operator: .exists), ["app": ""], true)),
        Named("Exists, absent", (Req(key: "app", operator: .exists), ["tier": "web"], false)),
        Named("DoesNotExist, absent", (Req(key: "debug", operator: .doesNotExist), ["app": "x"], true)),
        Named("DoesNotExist, present", (Req(key: "debug", operator: .doesNotExist), ["debug": "true"], false)),
    ])
    func requirement(_ example: Named<(Req, [String: String], Bool)>) {
        let (requirement, labels, expected) = example.value
        #expect(requirement.matches(labels) == expected)
        #expect(LabelSelector(matchExpressions: [requirement]).matches(labels) == expected)
    }

    static let combined = LabelSelector(
        matchLabels: ["app": "checkout", "team": "payments"],
        matchExpressions: [Req(key: "tier", operator: .in, values: ["web", "api"]), Req(key: "canary", operator: .doesNotExist)]
    )

    @Test("matchLabels and matchExpressions must all hold", arguments: [
        Named("everything holds", (["app": "checkout", "team": "payments", "tier": "web"], true)),
        Named("extra labels do not matter", (["app": "checkout", "team": "payments", "tier": "api", "x": "y"], true)),
        Named("one matchLabel differs", (["app": "checkout", "team": "fraud", "tier": "web"], false)),
        Named("one matchLabel missing", (["app": "checkout", "tier": "web"], false)),
        Named("expression In fails", (["app": "checkout", "team": "payments", "tier": "db"], false)),
        Named("expression DoesNotExist fails", (["app": "checkout", "team": "payments", "tier": "web", "canary": "1"], false)),
        Named("no labels", ([:], false)),
    ])
    func conjunction(_ example: Named<([String: String], Bool)>) {
        #expect(Self.combined.matches(example.value.0) == example.value.1)
    }

    @Test("the empty selector selects every label set")
    func emptySelector() {
        #expect(LabelSelector.everything.isEmpty)
        #expect(LabelSelector.everything.matches([:]))
        #expect(LabelSelector.everything.matches(["app": "anything"]))
        #expect(!Self.combined.isEmpty)
    }

    @Test("summary prints the selector as kubectl does")
    func summary() {
        #expect(LabelSelector.everything.summary == "<all pods>")
        let selector = LabelSelector(matchLabels: ["b": "2", "a": "1"], matchExpressions: [
            Req(key: "tier", operator: .in, values: ["web", "api"]), Req(key: "x", operator: .notIn, values: ["y"]),
            Req(key: "e", operator: .exists), Req(key: "d", operator: .doesNotExist),
        ])
        #expect(selector.summary == "a=1,b=2,tier in (web,api),x notin (y),e,!d")
    }

    // MARK: EgressPolicy.selects

    @Test("an empty pod selector selects every workload of the policy's namespace only", arguments: [
        Named("same namespace, labelled", (checkoutPod, true)),
        Named("same namespace, other labels", (workerPod, true)),
        Named("same namespace, no labels", (identity("payments", sa: "default"), true)),
        Named("other namespace, same labels", (shopPod, false)),
        Named("unknown source identity (no namespace)", (identity("", sa: ""), false)),
    ])
    func emptySelectorNamespace(_ example: Named<(SourceIdentity, Bool)>) {
        let p = policy("all", namespace: "payments", grants: ["x"])
        #expect(p.selects(example.value.0) == example.value.1)
    }

    @Test("a pod selector never reaches into another namespace")
    func otherNamespace() {
        let p = policy("p", namespace: "payments", selector: LabelSelector(matchLabels: ["app": "checkout"]), grants: ["x"])
        #expect(p.selects(checkoutPod))
        #expect(!p.selects(shopPod))
        #expect(!p.selects(workerPod))
    }

    @Test("serviceAccounts restricts when non-empty", arguments: [
        Named("no service accounts: any", ([String](), checkoutPod, true)),
        Named("listed account", (["checkout"], checkoutPod, true)),
        Named("one of several", (["billing", "checkout"], checkoutPod, true)),
        Named("unlisted account", (["billing"], checkoutPod, false)),
        Named("listed account in another namespace", (["checkout"], shopPod, false)),
    ])
    func serviceAccounts(_ example: Named<([String], SourceIdentity, Bool)>) {
        let (accounts, source, expected) = example.value
        let p = policy("p", namespace: "payments", serviceAccounts: accounts, grants: ["x"])
        #expect(p.selects(source) == expected)
    }

    @Test("serviceAccounts and pod selector must both hold")
    func accountAndSelector() {
        let p = policy("p", namespace: "payments", selector: LabelSelector(matchLabels: ["app": "worker"]),
                       serviceAccounts: ["checkout"], grants: ["x"])
        #expect(!p.selects(checkoutPod), "account matches, labels do not")
        #expect(!p.selects(workerPod), "labels match, account does not")
        #expect(p.selects(identity("payments", sa: "checkout", labels: ["app": "worker"])))
    }

    @Test("a policy without a namespace lives in default")
    func defaultNamespace() {
        let p = EgressPolicy(metadata: ObjectMeta(name: "p"), egress: [.init(externalServices: ["x"])])
        #expect(p.namespace == "default")
        #expect(p.selects(identity("default", sa: "default")))
        #expect(!p.selects(checkoutPod))
    }

    @Test("label keys and values are validated as Kubernetes does", arguments: [
        Named("plain key", ("app", true)), Named("prefixed key", ("app.kubernetes.io/name", true)),
        Named("two slashes", ("a/b/c", false)), Named("empty name", ("example.com/", false)),
        Named("upper-case prefix", ("Example.com/name", false)), Named("leading dash", ("-app", false)),
        Named("64-byte name", (String(repeating: "k", count: 64), false)), Named("dots and underscores inside", ("a_b.c-d", true)),
    ])
    func labelKeys(_ example: Named<(String, Bool)>) {
        #expect((LabelSyntax.keyProblem(example.value.0) == nil) == example.value.1)
    }
}
