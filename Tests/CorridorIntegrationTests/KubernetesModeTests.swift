import CorridorPolicy
import Foundation
import Testing

/// `corridor run --kubernetes` against the fake API server over TLS: the policy and the pod
/// identities come from list+watch, the gateway writes each object's Accepted condition, and it
/// survives what real API servers do (410 Gone, dropped streams, outages, token rotation).
@Suite(.serialized, .timeLimit(.minutes(3)))
struct KubernetesModeTests {
    private func identity(_ record: [String: Any]?) -> [String: Any] { record?["identity"] as? [String: Any] ?? [:] }

    @Test func policyAndIdentitiesComeFromTheAPIAndEveryObjectIsAccepted() async throws {
        let h = try await KubernetesHarness()
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        #expect(try h.admin("/readyz") == "ready\n")
        #expect(try h.connect(from: "127.0.0.1").status == 0)
        #expect(try h.connect(from: "127.0.0.3").status != 0)
        let allowed = try #require(h.record { ($0["src"] as? String ?? "").hasPrefix("127.0.0.1:") })
        #expect(allowed["decision"] as? String == "allow")
        #expect(allowed["egressPolicy"] as? String == "payments/checkout-egress")
        #expect(identity(allowed)["workload"] as? String == "checkout-1")
        #expect(identity(allowed)["serviceAccount"] as? String == "checkout")
        let denied = try #require(h.record { ($0["src"] as? String ?? "").hasPrefix("127.0.0.3:") })
        #expect(denied["decision"] as? String == "deny")
        #expect(identity(denied)["namespace"] as? String == "analytics")

        // The gateway says so on each object, through the status subresource.
        #expect(await eventually { h.api.accepted("externalservices", name: "allowed-api")?["status"] as? String == "True" })
        #expect(await eventually { h.api.accepted("egresspolicies", namespace: "payments", name: "checkout-egress")?["status"] as? String == "True" })
        // List then watch, as the API conventions ask: paged lists, watches with bookmarks and a server timeout.
        let requests = h.api.requests
        let podList = try #require(requests.first { $0["path"] as? String == "/api/v1/pods" })
        #expect((podList["query"] as? [String: Any])?["limit"] as? String == "500")
        let podWatch = try #require(requests.first { $0["path"] as? String == "/api/v1/pods" && ($0["query"] as? [String: Any])?["watch"] != nil })
        let query = podWatch["query"] as? [String: Any] ?? [:]
        #expect(query["allowWatchBookmarks"] as? String == "true")
        #expect(query["resourceVersion"] as? String != nil && query["resourceVersion"] as? String != "0")
        #expect(Int(query["timeoutSeconds"] as? String ?? "") ?? 0 >= 300)
        let metrics = try h.metrics()
        #expect(metrics.contains(#"corridor_kubernetes_watch_up{resource="pods"} 1"#), "\(metrics)")
        #expect(metrics.contains("corridor_kubernetes_synced 1"))
        #expect(metrics.contains("corridor_kubernetes_pod_identities 2"))
        #expect(metrics.contains("corridor_ready 1"))
    }

    @Test func anIPReusedByAPodOfAnotherNamespaceGetsTheNewIdentityAtOnce() async throws {
        let h = try await KubernetesHarness()
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        try h.api.put(K8sObject.pod("payments", "checkout-2", ip: "127.0.0.5", serviceAccount: "checkout", labels: ["app": "checkout"]))
        // Waits without blocking first: curl blocks a thread of the cooperative pool, which the
        // in-process gateway's Kubernetes sync needs to take the watch event in.
        #expect(await eventually(timeout: 30) { h.gatewayIdentity(of: "127.0.0.5") == "payments/checkout-2" })
        var lastCurl: CommandResult?
        #expect(await eventually {
            lastCurl = try? h.connect(from: "127.0.0.5")
            return lastCurl?.status == 0
        }, "last curl: \(String(describing: lastCurl)); records from 127.0.0.5: \(h.records(from: "127.0.0.5"))")
        // The pod goes away and the network hands its address to a pod in another namespace.
        try h.api.delete("pods", namespace: "payments", name: "checkout-2")
        try h.api.put(K8sObject.pod("analytics", "crawler-1", ip: "127.0.0.5", serviceAccount: "crawler", labels: ["app": "checkout"]))
        #expect(await eventually { h.gatewayIdentity(of: "127.0.0.5") == "analytics/crawler-1" })
        let before = h.records(from: "127.0.0.5").count
        #expect(try h.connect(from: "127.0.0.5").status != 0)
        let record = try #require(h.record { ($0["src"] as? String ?? "").hasPrefix("127.0.0.5:") && h.records(from: "127.0.0.5").count > before })
        let last = h.records(from: "127.0.0.5").last ?? record
        #expect(last["decision"] as? String == "deny")
        #expect(identity(last)["namespace"] as? String == "analytics")
        #expect(identity(last)["workload"] as? String == "crawler-1")
    }

    @Test func aHostNetworkOrFinishedPodNeverClaimsAnAddress() async throws {
        let h = try await KubernetesHarness(objects: { port in
            KubernetesHarness.standardObjects(upstreamPort: port) + [
                K8sObject.pod("payments", "node-agent", ip: "127.0.0.6", serviceAccount: "checkout", labels: ["app": "checkout"], hostNetwork: true),
                K8sObject.pod("payments", "job-done", ip: "127.0.0.7", serviceAccount: "checkout", labels: ["app": "checkout"], phase: "Succeeded"),
            ]
        })
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        for source in ["127.0.0.6", "127.0.0.7"] {
            #expect(try h.connect(from: source).status != 0)
            let record = try #require(h.record { ($0["src"] as? String ?? "").hasPrefix("\(source):") })
            #expect(record["decision"] as? String == "deny")
            #expect(record["identity"] as? String == "unknown", "\(record)")
        }
    }

    @Test func relistsAfter410GoneAndSeesWhatChangedMeanwhile() async throws {
        let h = try await KubernetesHarness()
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        func lists() -> Int { h.api.requests.filter { $0["method"] as? String == "GET" && ($0["query"] as? [String: Any])?["watch"] == nil }.count }
        let listsBefore = lists()
        // The stream drops and the server has compacted past the gateway's resourceVersion:
        // resuming gets an in-band ERROR 410, and only a fresh list shows what changed meanwhile.
        try h.api.control("POST", "/expire-next-watch")
        try h.api.control("POST", "/drop-watches")
        try h.api.put(K8sObject.pod("payments", "checkout-3", ip: "127.0.0.8", serviceAccount: "checkout", labels: ["app": "checkout"]))
        #expect(await eventually(timeout: 20) { h.gatewayIdentity(of: "127.0.0.8") == "payments/checkout-3" })
        #expect(await eventually { lists() > listsBefore }, "a fresh list after 410")
        // Awaited too: under load a list may come first for another reason (a watch that ended at
        // once is relisted), before the watch that gets the 410 has asked again.
        #expect(await eventually { (try? h.metrics().contains(#"reason="expired"} 1"#)) ?? false }, "one watch (whichever resource's came first) got 410")
        #expect(try h.connect(from: "127.0.0.8").status == 0)
    }

    @Test func eventsSplitAcrossChunksAndStreamsCutMidEventResumeWithoutARelist() async throws {
        let h = try await KubernetesHarness()
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        func podLists() -> Int {
            h.api.requests.filter { $0["path"] as? String == "/api/v1/pods" && ($0["query"] as? [String: Any])?["watch"] == nil }.count
        }
        let lists = podLists()
        try h.api.control("POST", "/split-chunks", ["size": 7])
        try h.api.put(K8sObject.pod("payments", "checkout-6", ip: "127.0.0.11", serviceAccount: "checkout", labels: ["app": "checkout"]))
        #expect(await eventually { h.gatewayIdentity(of: "127.0.0.11") == "payments/checkout-6" })
        try h.api.control("POST", "/split-chunks", ["size": 0])
        // A namespace write moves the server's resourceVersion past every pod event; the bookmark says so.
        try h.api.put(["apiVersion": "v1", "kind": "Namespace", "metadata": ["name": "elsewhere"]])
        let info = try #require(try h.api.control("GET", "/info") as? [String: Any])
        let current = "\(info["resourceVersion"] ?? "")"
        // The server answers once the bookmark is on every watch's socket: the cut that follows
        // comes after it on the stream, which the gateway reads in order.
        try h.api.control("POST", "/bookmark")
        try h.api.control("POST", "/drop-watches", ["midEvent": true])
        #expect(await eventually {
            h.api.requests.last { $0["path"] as? String == "/api/v1/pods" }.flatMap { ($0["query"] as? [String: Any])?["resourceVersion"] as? String } == current
        }, "the re-watch resumes from the bookmark's resourceVersion")
        try h.api.put(K8sObject.pod("payments", "checkout-7", ip: "127.0.0.12", serviceAccount: "checkout", labels: ["app": "checkout"]))
        #expect(await eventually { h.gatewayIdentity(of: "127.0.0.12") == "payments/checkout-7" })
        #expect(podLists() == lists, "no relist for a dropped stream")
        #expect(try h.metrics().contains(#"corridor_kubernetes_watch_restarts_total{resource="pods",reason="dropped"}"#))
    }

    @Test func aGatewayConfigReloadRebuildsOnTheClusterObjects() async throws {
        let h = try await KubernetesHarness()
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        #expect(try h.connect(from: "127.0.0.13").status != 0)
        // A static Workload (a VM) joins the file; the cluster's policy applies to it too.
        let config = try String(contentsOfFile: h.configPath, encoding: .utf8) + """

            ---
            apiVersion: corridor.dev/v1alpha1
            kind: Workload
            metadata: {name: batch-vm, namespace: payments}
            spec: {addresses: [127.0.0.13/32], serviceAccount: batch, labels: {app: checkout}}
            """
        try config.write(toFile: h.configPath, atomically: true, encoding: .utf8)
        #expect(h.gateway.reload(reason: "test"))
        #expect(await eventually { h.gatewayIdentity(of: "127.0.0.13") == "payments/batch-vm" })
        #expect(try h.connect(from: "127.0.0.13").status == 0)
        #expect(try h.connect(from: "127.0.0.1").status == 0, "the API's pods are still there")
        // A bad file is refused and changes nothing.
        try "kind: [".write(toFile: h.configPath, atomically: true, encoding: .utf8)
        #expect(!h.gateway.reload(reason: "test"))
        #expect(try h.connect(from: "127.0.0.13").status == 0)
    }

    @Test func theFakeServerSatisfiesRealClientGo() async throws {
        let h = try await KubernetesHarness(start: false)
        let pods = try runCommand("kubectl", ["--kubeconfig", h.kubeconfigPath, "get", "pods", "-A", "-o", "name"])
        #expect(pods.status == 0, "\(pods.stderr)")
        #expect(pods.stdout.split(separator: "\n").sorted() == ["pod/checkout-1", "pod/reporting-1"])
        let policies = try runCommand("kubectl", ["--kubeconfig", h.kubeconfigPath, "get", "egresspolicies.corridor.dev", "-A", "-o", "name"])
        #expect(policies.status == 0, "\(policies.stderr)")
        #expect(policies.stdout.contains("egresspolicy.corridor.dev/checkout-egress"))
    }

    @Test func listsArePagedAndANodeGatewayWatchesOnlyItsNodesPods() async throws {
        let h = try await KubernetesHarness(objects: { port in
            KubernetesHarness.standardObjects(upstreamPort: port) + [
                K8sObject.pod("payments", "checkout-b", ip: "127.0.0.14", serviceAccount: "checkout", labels: ["app": "checkout"], node: "node-b"),
                K8sObject.pod("payments", "checkout-c", ip: "127.0.0.15", serviceAccount: "checkout", labels: ["app": "checkout"]),
            ]
        }, nodeName: "node-a", pageSize: 1)
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        #expect(h.gatewayIdentity(of: "127.0.0.15") == "payments/checkout-c")
        #expect(h.gatewayIdentity(of: "127.0.0.14") == nil, "another node's pod is not this gateway's to know")
        let podRequests = h.api.requests.filter { $0["path"] as? String == "/api/v1/pods" }
        #expect(podRequests.allSatisfy { ($0["query"] as? [String: Any])?["fieldSelector"] as? String == "spec.nodeName=node-a" })
        let pages = podRequests.filter { ($0["query"] as? [String: Any])?["watch"] == nil }
        #expect(pages.count == 3, "one pod per page: \(pages)")
        #expect(pages.dropFirst().allSatisfy { ($0["query"] as? [String: Any])?["continue"] != nil })
        #expect(pages.allSatisfy { ($0["query"] as? [String: Any])?["resourceVersion"] == nil })
        // Pages across the other resources too: both services and policies list one object per page.
        #expect(try h.connect(from: "127.0.0.15").status == 0)
    }

    @Test func anOutageKeepsTheLastSnapshotAndRecovers() async throws {
        let h = try await KubernetesHarness()
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        try h.api.control("POST", "/outage", ["on": true])
        #expect(await eventually(timeout: 15) { (try? h.metrics().contains(#"corridor_kubernetes_watch_up{resource="pods"} 0"#)) == true })
        // Still serving on the last snapshot, still ready.
        #expect(try h.connect(from: "127.0.0.1").status == 0)
        #expect(h.gateway.isReady)
        // (A watch cut at once counts as down before its relist fails and counts an error.)
        #expect(await eventually(timeout: 15) { (try? h.metrics().contains("corridor_kubernetes_api_errors_total{resource=\"pods\"")) == true })
        // Changes made during the outage arrive once the API is back.
        try h.api.put(K8sObject.pod("payments", "checkout-4", ip: "127.0.0.9", serviceAccount: "checkout", labels: ["app": "checkout"]))
        try h.api.control("POST", "/outage", ["on": false])
        #expect(await eventually(timeout: 30) { h.gatewayIdentity(of: "127.0.0.9") == "payments/checkout-4" })
        #expect(await eventually(timeout: 10) { (try? h.metrics().contains(#"corridor_kubernetes_watch_up{resource="pods"} 1"#)) == true })
    }

    @Test func anOutagePastMaxStalenessDeniesEverythingUntilTheWatchesListAgain() async throws {
        let h = try await KubernetesHarness(gatewayExtra: "  kubernetes: {maxStaleness: 10s}")
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        #expect(try h.connect(from: "127.0.0.1").status == 0)
        try h.api.control("POST", "/outage", ["on": true])
        #expect(await eventually(timeout: 15) { (try? h.metrics().contains(#"corridor_kubernetes_watch_up{resource="pods"} 0"#)) == true })
        // Within the limit the last snapshot still serves.
        #expect(try h.connect(from: "127.0.0.1").status == 0)
        #expect(h.gateway.isReady)
        // Past it, nothing from the API is trusted: not ready, and every connection denied, saying why.
        #expect(await eventually(timeout: 30) { !h.gateway.isReady })
        #expect(try runCommand("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                                        "http://127.0.0.1:\(h.adminPort)/readyz"]).stdout == "503")
        let metrics = try h.metrics()
        #expect(metrics.contains("corridor_kubernetes_synced 0"), "\(metrics)")
        #expect(try h.connect(from: "127.0.0.1").status != 0)
        let record = try #require(h.record { $0["decision"] as? String == "deny" && ($0["src"] as? String ?? "").hasPrefix("127.0.0.1:") })
        let reason = record["reason"] as? String ?? ""
        #expect(reason.contains("spec.kubernetes.maxStaleness") && reason.contains("pods"), "\(record)")
        #expect((record["hint"] as? String ?? "").contains("restore the gateway's access to the Kubernetes API"), "\(record)")
        // Once the watches list again, the policy is built afresh, with what changed meanwhile.
        try h.api.put(K8sObject.pod("payments", "checkout-5", ip: "127.0.0.10", serviceAccount: "checkout", labels: ["app": "checkout"]))
        try h.api.control("POST", "/outage", ["on": false])
        #expect(await h.waitReady(timeout: 30))
        #expect(h.gatewayIdentity(of: "127.0.0.10") == "payments/checkout-5")
        #expect(try h.connect(from: "127.0.0.1").status == 0)
        #expect(try h.metrics().contains("corridor_kubernetes_synced 1"))
    }

    @Test func aWatchThatBringsNothingCountsAsStaleThoughItsConnectionLooksHealthy() async throws {
        // The API answers the watch and then sends nothing, not even bookmarks: the stream is
        // dropped at the idle limit and watched again, never failing, and never current.
        let h = try await KubernetesHarness(apiExtra: ["--bookmark-interval", "3600"], watchIdleLimit: .seconds(3),
                                            gatewayExtra: "  kubernetes: {maxStaleness: 10s}")
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        #expect(await eventually(timeout: 40) { !h.gateway.isReady }, "a silent watch never counted as stale")
        #expect(try h.metrics().contains(#"corridor_kubernetes_watch_up{resource="pods"} 1"#), "the connection itself never failed")
        #expect(try h.connect(from: "127.0.0.1").status != 0)
        // An event is progress: a new pod brings the policy back (every resource must have news, so
        // one object of each changes).
        try h.api.put(K8sObject.pod("payments", "checkout-6", ip: "127.0.0.11", serviceAccount: "checkout", labels: ["app": "checkout"]))
        #expect(await eventually(timeout: 20) {
            _ = try? h.api.control("POST", "/bookmark")  // watches come and go every 3 s: ask again
            return h.gateway.isReady
        })
        #expect(try h.connect(from: "127.0.0.1").status == 0)
    }

    @Test func aCABundleRotatedInPlaceIsReadAgainThoughNoObjectChanged() async throws {
        let files = try TempDir()
        let bundle = files.path("mounted-ca.pem")
        try FileManager.default.copyItem(atPath: try TestPKI(in: files).caCert, toPath: bundle)
        let billing = K8sObject.externalService("billing", hosts: ["billing.example.test"], port: 443, extraSpec: [
            "ports": [["number": 80, "protocol": "HTTP", "originateTLS": ["port": 443, "caBundleFile": bundle]]],
        ])
        let h = try await KubernetesHarness(objects: { KubernetesHarness.standardObjects(upstreamPort: $0) + [billing] })
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        #expect(await eventually { h.api.accepted("externalservices", name: "billing")?["status"] as? String == "True" })
        // Quiet: no object changes from here on (the status write's own event has been built).
        try await Task.sleep(for: .seconds(2))
        let builds = h.api.statusWrites.count
        // The mounted Secret is updated to something unusable: the gateway notices, builds, and says so.
        try "not a certificate\n".write(toFile: bundle, atomically: true, encoding: .utf8)
        #expect(await eventually(timeout: 20) { h.api.accepted("externalservices", name: "billing")?["reason"] as? String == "InvalidTLSMaterial" },
                "\(String(describing: h.api.accepted("externalservices", name: "billing")))")
        #expect(h.api.statusWrites.count > builds)
    }

    @Test func aRotatedTokenIsRereadAfter401() async throws {
        let h = try await KubernetesHarness()
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        let next = "token-two-\(UUID().uuidString.prefix(8))"
        // The server now accepts only the new token; the kubelet writes it into the file.
        try h.api.control("POST", "/tokens", ["tokens": [next]])
        try "\(next)\n".write(toFile: h.tokenPath, atomically: true, encoding: .utf8)
        try h.api.control("POST", "/drop-watches")
        try h.api.put(K8sObject.pod("payments", "checkout-5", ip: "127.0.0.10", serviceAccount: "checkout", labels: ["app": "checkout"]))
        #expect(await eventually(timeout: 30) { h.gatewayIdentity(of: "127.0.0.10") == "payments/checkout-5" })
        let requests = h.api.requests
        #expect(requests.contains { $0["status"] as? Int == 401 }, "the old token was refused first")
        #expect(requests.last { $0["path"] as? String == "/api/v1/pods" }?["auth"] as? String == "token:\(next.prefix(6))")
    }

    @Test func clientCertificateAuthenticationWorks() async throws {
        let h = try await KubernetesHarness(clientCertificate: true)
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        #expect(h.api.requests.allSatisfy { $0["auth"] as? String == "cert:jane" })
        #expect(try h.connect(from: "127.0.0.1").status == 0)
    }

    @Test func anInvalidObjectIsRejectedVisiblyAndAnInvalidUpdateKeepsTheLastGoodOne() async throws {
        let h = try await KubernetesHarness(objects: { port in
            KubernetesHarness.standardObjects(upstreamPort: port) + [
                K8sObject.egressPolicy("analytics", "typo", services: ["allowed-api"], matchLabels: ["app": "reporting"], extraSpec: ["podSelecter": [:]]),
            ]
        })
        defer { Task { await h.stop() } }
        #expect(await h.waitReady())
        #expect(await eventually { h.api.accepted("egresspolicies", namespace: "analytics", name: "typo")?["status"] as? String == "False" })
        let condition = try #require(h.api.accepted("egresspolicies", namespace: "analytics", name: "typo"))
        #expect(condition["reason"] as? String == "Invalid")
        #expect((condition["message"] as? String ?? "").contains("spec.podSelecter: unknown field"), "\(condition)")
        #expect(try h.connect(from: "127.0.0.3").status != 0, "the invalid policy grants nothing")

        // A bad edit of a good policy: the last good generation stays in force.
        try h.api.put(K8sObject.egressPolicy("payments", "checkout-egress", services: ["allowed-api"], matchLabels: ["app": "checkout"],
                                             extraSpec: ["mode": "Sometimes"]))
        #expect(await eventually { h.api.accepted("egresspolicies", namespace: "payments", name: "checkout-egress")?["status"] as? String == "False" })
        let kept = try #require(h.api.accepted("egresspolicies", namespace: "payments", name: "checkout-egress"))
        #expect((kept["message"] as? String ?? "").contains("not enforced (a gateway that accepted an earlier generation keeps enforcing it)"), "\(kept)")
        #expect(try h.admin("/policy").contains(#"{"object":"EgressPolicy/payments/checkout-egress","accepted":false,"enforcing":"generation 1"}"#),
                "\((try? h.admin("/policy")) ?? "")")
        #expect(try h.connect(from: "127.0.0.1").status == 0)
    }

    /// A value nested deeper than the decoder reads (600 arrays, under a field the CRD lets keep
    /// unknown fields) in one object: the lists and watches go on for every other object.
    @Test func anUnreadableObjectIsRejectedWithoutFreezingTheOthers() async throws {
        var deep: Any = [Any]()
        for _ in 0..<600 { deep = [deep] }
        let nested = deep
        let h = try await KubernetesHarness(objects: { port in
            var deepService = K8sObject.externalService("deep-api", hosts: ["second.allowed.test"], port: port, extraSpec: ["x": nested])
            deepService["status"] = ["conditions": [["type": "Synced", "status": "True", "reason": "Mirrored", "message": "by another controller",
                                                     "lastTransitionTime": "2026-12-01T00:00:00Z"]]]
            return KubernetesHarness.standardObjects(upstreamPort: port) + [deepService]
        })
        defer { Task { await h.stop() } }
        #expect(await h.waitReady(), "the list with the unreadable object must still sync")
        #expect(try h.connect(from: "127.0.0.1").status == 0)
        #expect(await eventually { h.api.accepted("externalservices", name: "deep-api")?["status"] as? String == "False" })
        let rejected = try #require(h.api.accepted("externalservices", name: "deep-api"))
        #expect((rejected["message"] as? String ?? "").contains("the API server's copy cannot be read: a value is nested 603 levels deep"), "\(rejected)")
        // Another controller's condition on it stays (the object itself is too deep for the test to
        // read back: what the gateway wrote is the whole list), and the gateway writes once.
        let deepWrite = h.api.statusWrites.last { $0["name"] as? String == "deep-api" }
        let deepConditions = (deepWrite?["status"] as? [String: Any])?["conditions"] as? [[String: Any]]
        #expect(deepConditions?.compactMap { $0["type"] as? String } == ["Synced", "Accepted"], "\(String(describing: deepWrite))")

        // An unreadable update arrives by watch: the last good generation stays in force...
        try h.api.put(K8sObject.egressPolicy("payments", "checkout-egress", services: ["allowed-api"], matchLabels: ["app": "checkout"],
                                             extraSpec: ["x": nested]))
        #expect(await eventually { h.api.accepted("egresspolicies", namespace: "payments", name: "checkout-egress")?["status"] as? String == "False" })
        let kept = try #require(h.api.accepted("egresspolicies", namespace: "payments", name: "checkout-egress"))
        #expect((kept["message"] as? String ?? "").contains("cannot be read"), "\(kept)")
        #expect(try h.admin("/policy").contains(#"{"object":"EgressPolicy/payments/checkout-egress","accepted":false,"enforcing":"generation 1"}"#))
        #expect(try h.connect(from: "127.0.0.1").status == 0)
        // ...and the watch goes on: a readable revocation that follows takes effect.
        var revoked = K8sObject.egressPolicy("payments", "checkout-egress", services: ["allowed-api"], matchLabels: ["app": "other"])
        revoked["metadata"] = ["name": "checkout-egress", "namespace": "payments", "generation": 3]  // the fake server keeps a generation it is given
        try h.api.put(revoked)
        #expect(await eventually { h.api.accepted("egresspolicies", namespace: "payments", name: "checkout-egress")?["status"] as? String == "True" })
        #expect(await eventually { (try? h.connect(from: "127.0.0.1").status) != 0 }, "the revocation never applied")
        let metrics = try h.metrics()
        let deepWrites = h.api.statusWrites.filter { $0["name"] as? String == "deep-api" }
        #expect(deepWrites.count == 1, "\(deepWrites)")
        // Counted per list item or event read (a status write brings the object back once more).
        #expect(metrics.contains(#"corridor_kubernetes_unreadable_objects_total{resource="externalservices"} "#), "\(metrics)")
        #expect(metrics.contains(#"corridor_kubernetes_unreadable_objects_total{resource="egresspolicies"} "#), "\(metrics)")
    }

    @Test func notReadyAndDenyingUntilTheFirstSync() async throws {
        let h = try await KubernetesHarness(start: false)
        try h.api.control("POST", "/outage", ["on": true])
        try await h.startGateway()
        defer { Task { await h.stop() } }
        try await Task.sleep(for: .seconds(2))
        #expect(!h.gateway.isReady)
        #expect(try runCommand("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                                        "http://127.0.0.1:\(h.adminPort)/readyz"]).stdout == "503")
        #expect(try h.connect(from: "127.0.0.1").status != 0)
        let record = try #require(h.record { ($0["src"] as? String ?? "").hasPrefix("127.0.0.1:") })
        #expect(record["decision"] as? String == "deny")
        #expect((record["reason"] as? String ?? "").contains("not been synced from the Kubernetes API"), "\(record)")
        try h.api.control("POST", "/outage", ["on": false])
        #expect(await h.waitReady(timeout: 30))
        #expect(try h.connect(from: "127.0.0.1").status == 0)
    }

    @Test func theCommandLineRunsKubernetesModeAndRefusesPolicyInTheFile() async throws {
        let h = try await KubernetesHarness(start: false)
        // The admin port must be known: pick one for the subprocess.
        let admin = try freePort()
        let config = try String(contentsOfFile: h.configPath, encoding: .utf8).replacingOccurrences(of: "admin: 127.0.0.1:0", with: "admin: 127.0.0.1:\(admin)")
        try config.write(toFile: h.configPath, atomically: true, encoding: .utf8)
        let process = try BackgroundProcess(Repo.corridorBinary.path, ["run", "--kubeconfig", h.kubeconfigPath, "--config", h.configPath])
        #expect(await eventually(timeout: 30) {
            (try? runCommand("curl", ["-sS", "--max-time", "2", "http://127.0.0.1:\(admin)/readyz"]).stdout) == "ready\n"
        }, "\(process.stderrText)")
        process.signal(SIGTERM)
        #expect(process.waitForExit(timeout: 15) == 0)

        let withPolicy = h.dir.path("with-policy.yaml")
        try (config + """

            ---
            apiVersion: corridor.dev/v1alpha1
            kind: ExternalService
            metadata: {name: stray}
            spec: {hosts: [stray.example.com], ports: [{number: 443, protocol: TLS}]}
            """).write(toFile: withPolicy, atomically: true, encoding: .utf8)
        let refused = try runCommand(Repo.corridorBinary.path, ["run", "--kubeconfig", h.kubeconfigPath, "--config", withPolicy])
        #expect(refused.status == 2)
        #expect(refused.stderr.contains("ExternalService/stray") && refused.stderr.contains("come from the API"), "\(refused.stderr)")
        let badContext = try runCommand(Repo.corridorBinary.path, ["run", "--kubeconfig", h.kubeconfigPath, "--context", "nope", "--config", h.configPath])
        #expect(badContext.status == 2)
        #expect(badContext.stderr.contains("no entry named 'nope'"), "\(badContext.stderr)")
    }
}

extension KubernetesHarness {
    /// `namespace/workload` the gateway's policy in force maps `address` to (via /policy's inventory).
    func gatewayIdentity(of address: String) -> String? {
        guard let identity = gateway.proxy.policy.current.inventory.identity(of: IPAddress(parsing: address)!) else { return nil }
        return "\(identity.namespace)/\(identity.workload)"
    }
}

/// A free TCP port on 127.0.0.1 (bound and released).
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw TestError.failed("no free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}
