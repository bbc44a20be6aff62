@testable import CorridorKubernetes
import CorridorPolicy
import Foundation
import Testing

func pod(_ namespace: String, _ name: String, ip: [String], sa: String = "default", labels: [String: String] = [:],
         created: String = "2026-11-27T05:00:00Z", phase: String = "Running", hostNetwork: Bool = false, deleting: Bool = false) -> Pod {
    Pod(metadata: KubeObjectMeta(name: name, namespace: namespace, uid: "uid-\(namespace)-\(name)", labels: labels, creationTimestamp: created,
                                 deletionTimestamp: deleting ? "2026-11-27T06:00:00Z" : nil),
        serviceAccount: sa, hostNetwork: hostNetwork, phase: phase, ips: ip)
}

func service(_ name: String, hosts: [String], port: Int = 443, generation: Int64 = 1, uid: String? = nil, extra: [(String, JSONValue)] = [],
             conditions: [KubeCondition]? = nil) -> CustomResource {
    CustomResource(kind: "ExternalService", metadata: KubeObjectMeta(name: name, uid: uid ?? "uid-\(name)", generation: generation),
                   spec: .object([("hosts", .array(hosts.map { .string($0) })),
                                  ("ports", .array([.object([("number", .int(Int64(port))), ("protocol", .string("TLS"))])]))] + extra),
                   conditions: conditions)
}

func policy(_ namespace: String, _ name: String, services: [String], accounts: [String] = [], generation: Int64 = 1,
            extra: [(String, JSONValue)] = [], conditions: [KubeCondition]? = nil) -> CustomResource {
    CustomResource(kind: "EgressPolicy", metadata: KubeObjectMeta(name: name, namespace: namespace, uid: "uid-\(namespace)-\(name)", generation: generation),
                   spec: .object([("serviceAccounts", .array(accounts.map { .string($0) })),
                                  ("egress", .array([.object([("to", .array(services.map { .object([("externalService", .string($0))]) }))])]))] + extra),
                   conditions: conditions)
}

let base: PolicySource = {
    var source = PolicySource()
    source.gateway = GatewayConfig()
    return source
}()

func decide(_ snapshot: PolicySnapshot, from address: String, to host: String) -> Decision {
    let identity = snapshot.inventory.identity(of: IPAddress(parsing: address)!)
    return DecisionEngine.decide(source: identity, sourceAddress: address, facts: DestinationFacts(serverName: host, port: 443), snapshot: snapshot)
}

@Suite struct PodInventoryTests {
    @Test func fixturePodsFollowTheAPIsRules() throws {
        struct List: Decodable { var items: [Pod] }
        let pods = try JSONDecoder().decode(List.self, from: Fixtures.data("podlist.json")).items
            + JSONDecoder().decode(List.self, from: Fixtures.data("podlist-edgecases.json")).items
        let inventory = SourceInventory(workloads: PodInventory.workloads(from: pods))
        // Running, dual-stack: both addresses are the checkout pod's.
        for address in ["10.244.1.23", "fd00:10:244:1::17"] {
            let identity = try #require(inventory.identity(of: IPAddress(parsing: address)!))
            #expect(identity.namespace == "payments" && identity.serviceAccount == "checkout" && identity.workload == "checkout-7d9c5b6f4-xk2lp")
            #expect(identity.labels["app.kubernetes.io/name"] == "checkout")
        }
        #expect(inventory.identity(of: IPAddress(parsing: "10.244.2.8")!)?.serviceAccount == "ledger")
        // The host-network pod never claims the node's address; the Succeeded job's stale IP went to checkout above.
        #expect(inventory.identity(of: IPAddress(parsing: "172.18.0.3")!) == nil)
        #expect(inventory.entryCount == 3)
    }

    /// Two live pods reporting one address: which sends from it cannot be told (creation time
    /// says nothing of when a pod got its IP; found in review: a pod kept Pending with an old
    /// creation time got a newer pod's grants), so it is neither's until one claim is gone.
    @Test func anAddressTwoLivePodsClaimIsNeithers() {
        let old = pod("payments", "old", ip: ["10.0.0.5"], sa: "checkout", created: "2026-11-27T01:00:00Z")
        let new = pod("analytics", "new", ip: ["10.0.0.5"], sa: "crawler", created: "2026-11-27T02:00:00Z")
        let wide = Workload(metadata: ObjectMeta(name: "subnet", namespace: "infra"), addresses: [CIDR(address: IPAddress(parsing: "10.0.0.0")!, prefixLength: 24)])
        for order in [[old, new], [new, old]] {
            let inventory = SourceInventory(workloads: PodInventory.workloads(from: order) + [wide])
            #expect(inventory.identity(of: IPAddress(parsing: "10.0.0.5")!) == nil, "no broader prefix answers for it either")
            #expect(inventory.identity(of: IPAddress(parsing: "10.0.0.4")!)?.workload == "subnet")
            #expect(inventory.conflicts.map(\.cidr.description) == ["10.0.0.5/32"])
            #expect(inventory.conflicts.first?.workloads == ["analytics/new", "payments/old"])
        }
        // Once the old pod's end is seen, the address is the new pod's.
        #expect(SourceInventory(workloads: PodInventory.workloads(from: [new])).identity(of: IPAddress(parsing: "10.0.0.5")!)?.namespace == "analytics")
        // An old pod being deleted yields even to an older-looking live one; a finished pod claims nothing.
        let deleting = pod("payments", "going", ip: ["10.0.0.6"], created: "2026-11-27T03:00:00Z", deleting: true)
        let live = pod("analytics", "live", ip: ["10.0.0.6"], created: "2026-11-27T02:00:00Z")
        #expect(SourceInventory(workloads: PodInventory.workloads(from: [deleting, live])).identity(of: IPAddress(parsing: "10.0.0.6")!)?.namespace == "analytics")
        #expect(SourceInventory(workloads: PodInventory.workloads(from: [deleting])).identity(of: IPAddress(parsing: "10.0.0.6")!)?.namespace == "payments")
        let failed = pod("payments", "failed", ip: ["10.0.0.7"], phase: "Failed")
        #expect(PodInventory.workloads(from: [failed]).isEmpty)
    }

    /// A pod whose identity the policy model cannot hold (found by the kube-objects fuzz target:
    /// an upper-case name became a Workload the file loader refuses) claims no address.
    @Test func aPodWithAnIdentityTheModelRefusesClaimsNothing() {
        for bad in [pod("payments", "paymentS-api", ip: ["10.0.0.9"]), pod("Payments", "api", ip: ["10.0.0.9"]),
                    pod("payments", "api", ip: ["10.0.0.9"], sa: "Checkout")] {
            #expect(PodInventory.workloads(from: [bad]).isEmpty, "\(bad.metadata)")
        }
        #expect(PodInventory.workloads(from: [pod("payments", "api", ip: ["10.0.0.9"])]).count == 1)
    }

    @Test func anIPv4MappedPodAddressIsTheIPv4AddressItCarries() {
        let mapped = pod("payments", "mapped", ip: ["::ffff:10.0.0.8"])
        let inventory = SourceInventory(workloads: PodInventory.workloads(from: [mapped]))
        #expect(inventory.identity(of: IPAddress(parsing: "10.0.0.8")!)?.workload == "mapped")
        // And it competes for that address like any IPv4 claim.
        let other = pod("analytics", "other", ip: ["10.0.0.8"], created: "2026-11-27T09:00:00Z")
        let both = SourceInventory(workloads: PodInventory.workloads(from: [mapped, other]))
        #expect(both.identity(of: IPAddress(parsing: "10.0.0.8")!) == nil && both.conflicts.count == 1)
    }

    @Test func backoffDoublesToItsCapAndJittersAboveIt() {
        var backoff = Backoff(initial: .milliseconds(100), cap: .milliseconds(800))
        let waits = (0..<8).map { _ in backoff.next() }
        #expect(waits[0] >= .milliseconds(100) && waits[0] <= .milliseconds(200))
        #expect(waits[7] >= .milliseconds(800) && waits[7] <= .milliseconds(1600))
        backoff.reset()
        #expect(backoff.next() <= .milliseconds(200))
    }
}

@Suite struct ClusterPolicyCompilerTests {
    let pods = [pod("payments", "checkout-1", ip: ["10.0.0.1"], sa: "checkout"), pod("payments", "other-1", ip: ["10.0.0.2"], sa: "other")]

    @Test func validObjectsAreEnforcedAndAcceptedOnce() {
        let compiler = ClusterPolicyCompiler(now: { "2026-11-27T05:00:00Z" })
        let objects = ClusterObjects(pods: pods, externalServices: [service("api", hosts: ["api.example.com"])],
                                     egressPolicies: [policy("payments", "checkout", services: ["api"], accounts: ["checkout"])])
        let built = compiler.build(base: base, objects: objects)
        #expect(built.rejected.isEmpty)
        #expect(built.podIdentities == 2)
        #expect(built.statusUpdates.map(\.path) == ["/apis/corridor.dev/v1alpha1/externalservices/api/status",
                                                    "/apis/corridor.dev/v1alpha1/namespaces/payments/egresspolicies/checkout/status"])
        #expect(built.statusUpdates.allSatisfy { $0.condition.status == "True" && $0.condition.reason == "Valid" && $0.condition.observedGeneration == 1 })
        #expect(built.statusUpdates.map(\.uid) == ["uid-api", "uid-payments-checkout"])
        let snapshot = PolicySnapshot(source: built.source, generation: 2)
        #expect(decide(snapshot, from: "10.0.0.1", to: "api.example.com").verdict == .allow)
        #expect(decide(snapshot, from: "10.0.0.2", to: "api.example.com").verdict == .deny)
        #expect(decide(snapshot, from: "10.0.0.9", to: "api.example.com").verdict == .deny)

        // Once the objects carry the condition, nothing more is written.
        let written = built.statusUpdates.map(\.condition)
        let echoed = ClusterObjects(pods: pods, externalServices: [service("api", hosts: ["api.example.com"], conditions: [written[0]])],
                                    egressPolicies: [policy("payments", "checkout", services: ["api"], accounts: ["checkout"], conditions: [written[1]])])
        #expect(compiler.build(base: base, objects: echoed).statusUpdates.isEmpty)
    }

    /// A valid policy whose service turned invalid: one gateway still enforces the service's last
    /// good generation, one started since enforces none, and both write the same condition.
    @Test func aReferenceToAServiceNotAcceptedReadsTheSameOnEveryReplica() throws {
        let remembering = ClusterPolicyCompiler()
        let checkout = policy("payments", "checkout", services: ["api"], accounts: ["checkout"])
        _ = remembering.build(base: base, objects: ClusterObjects(pods: pods, externalServices: [service("api", hosts: ["api.example.com"])],
                                                                  egressPolicies: [checkout]))
        let bad = ClusterObjects(pods: pods, externalServices: [service("api", hosts: ["api..example.com"], generation: 2)], egressPolicies: [checkout])
        let first = remembering.build(base: base, objects: bad)
        let second = ClusterPolicyCompiler().build(base: base, objects: bad)
        #expect(first.enforcedInstead["ExternalService/api"] == "generation 1" && second.enforcedInstead.isEmpty)
        let conditions = [first, second].map { $0.statusUpdates.first { $0.resource == .egressPolicies }?.condition }
        #expect(conditions[0] == conditions[1], "\(conditions)")
        #expect(conditions[0]?.reason == "UnresolvedReferences")
        #expect(conditions[0]?.message.contains("ExternalService 'api' is not accepted (see its condition)") == true, "\(String(describing: conditions[0]))")
    }

    @Test func anInvalidUpdateKeepsTheLastGoodGenerationAndSaysWhy() throws {
        let compiler = ClusterPolicyCompiler()
        _ = compiler.build(base: base, objects: ClusterObjects(pods: pods, externalServices: [service("api", hosts: ["api.example.com"])],
                                                               egressPolicies: [policy("payments", "checkout", services: ["api"], accounts: ["checkout"])]))
        // Generation 2 of the policy has a typo'd field; generation 2 of the service a bad host.
        let bad = ClusterObjects(
            pods: pods,
            externalServices: [service("api", hosts: ["api..example.com"], generation: 2)],
            egressPolicies: [policy("payments", "checkout", services: ["api"], accounts: ["checkout"], generation: 2,
                                    extra: [("podSelecter", .object([]))])])
        let built = compiler.build(base: base, objects: bad)
        #expect(built.rejected.sorted() == ["EgressPolicy/payments/checkout", "ExternalService/api"])
        let conditions = built.statusUpdates.map(\.condition)
        #expect(conditions.count == 2)
        #expect(conditions.allSatisfy { $0.status == "False" && $0.reason == "Invalid" && $0.observedGeneration == 2 })
        // The condition is the same on every replica: what each still enforces is its own memory.
        #expect(conditions[0].message.contains("spec.hosts[0]") && conditions[0].message.hasSuffix(
            "; not enforced (a gateway that accepted an earlier generation keeps enforcing it)"))
        #expect(conditions[1].message.contains("spec.podSelecter: unknown field"))
        #expect(built.enforcedInstead == ["ExternalService/api": "generation 1", "EgressPolicy/payments/checkout": "generation 1"])
        // A gateway started after the bad edit (another replica, a restart) writes the same condition.
        let fresh = ClusterPolicyCompiler().build(base: base, objects: bad)
        #expect(fresh.statusUpdates.map(\.condition.message) == conditions.map(\.message))
        #expect(fresh.enforcedInstead.isEmpty)
        #expect(decide(PolicySnapshot(source: built.source, generation: 3), from: "10.0.0.1", to: "api.example.com").verdict == .allow)
    }

    @Test func anInvalidNewObjectIsNotEnforcedAtAll() {
        let compiler = ClusterPolicyCompiler()
        let built = compiler.build(base: base, objects: ClusterObjects(
            pods: pods, externalServices: [service("api", hosts: ["api.example.com"])],
            egressPolicies: [policy("payments", "wide", services: ["api"], extra: [("podSelector", .object([("matchLabel", .object([]))]))])]))
        #expect(built.source.egressPolicies.isEmpty)
        #expect(built.statusUpdates.last?.condition.message.contains("not enforced") == true)
        #expect(built.enforcedInstead.isEmpty)
        #expect(decide(PolicySnapshot(source: built.source, generation: 2), from: "10.0.0.2", to: "api.example.com").verdict == .deny)
    }

    @Test func aDeletedAndRecreatedObjectDoesNotInheritTheOldGoodVersion() {
        let compiler = ClusterPolicyCompiler()
        _ = compiler.build(base: base, objects: ClusterObjects(externalServices: [service("api", hosts: ["api.example.com"])]))
        let recreated = service("api", hosts: ["bad host"], uid: "uid-api-2")
        let built = compiler.build(base: base, objects: ClusterObjects(externalServices: [recreated]))
        #expect(built.source.externalServices.isEmpty)
    }

    @Test func referencesToMissingServicesAreAcceptedButNamed() {
        let compiler = ClusterPolicyCompiler()
        let built = compiler.build(base: base, objects: ClusterObjects(
            pods: pods, externalServices: [service("api", hosts: ["api.example.com"])],
            egressPolicies: [policy("payments", "checkout", services: ["api", "later"], accounts: ["checkout"])]))
        let condition = built.statusUpdates.last!.condition
        #expect(condition.status == "True" && condition.reason == "UnresolvedReferences")
        #expect(condition.message.contains("no ExternalService named 'later' (granting nothing until it exists)"))
        #expect(decide(PolicySnapshot(source: built.source, generation: 2), from: "10.0.0.1", to: "api.example.com").verdict == .allow)
    }

    @Test func unusableTLSMaterialLeavesTheServiceOut() {
        let compiler = ClusterPolicyCompiler()
        let built = compiler.build(base: base, objects: ClusterObjects(externalServices: [service("api", hosts: ["api.example.com"])]),
                                   unusable: ["api": "spec.ports[0].originateTLS.caBundleFile: cannot read"])
        #expect(built.source.externalServices.isEmpty)
        #expect(built.statusUpdates.first?.condition.reason == "InvalidTLSMaterial")
    }

    @Test func beforeTheFirstSyncEverythingIsDeniedAndSaysWhy() throws {
        var waiting = ClusterPolicyCompiler().build(base: base, objects: ClusterObjects(
            pods: pods, externalServices: [service("api", hosts: ["api.example.com"], extra: [("access", .string("All"))])])).source
        waiting.withheld = .awaitingSync
        let snapshot = PolicySnapshot(source: waiting, generation: 1)
        let decision = decide(snapshot, from: "10.0.0.1", to: "api.example.com")
        #expect(decision.verdict == .deny && decision.reason.contains("not been synced"))
        let tcp = try #require(DecisionEngine.decideTCP(source: nil, sourceAddress: "10.0.0.1", destination: IPAddress(parsing: "192.0.2.1")!,
                                                         port: 5432, snapshot: snapshot))
        #expect(tcp.verdict == .deny && tcp.reason.contains("not been synced"))
    }

    @Test func aPolicyWithheldForAStaleAPIDeniesEverythingAndSaysWhy() throws {
        var stale = ClusterPolicyCompiler().build(base: base, objects: ClusterObjects(
            pods: pods, externalServices: [service("api", hosts: ["api.example.com"], extra: [("access", .string("All"))])])).source
        let open = PolicySnapshot(source: stale, generation: 1)
        #expect(decide(open, from: "10.0.0.1", to: "api.example.com").verdict == .allow)
        stale.withheld = .stale(resources: ["pods", "egresspolicies"], limit: .seconds(120))
        let snapshot = PolicySnapshot(source: stale, generation: 2)
        let decision = decide(snapshot, from: "10.0.0.1", to: "api.example.com")
        #expect(decision.verdict == .deny)
        #expect(decision.reason.contains("about pods, egresspolicies for over 120s (spec.kubernetes.maxStaleness)"), "\(decision.reason)")
        let hint = try #require(PolicyHint.make(for: decision, to: .tcp(address: IPAddress(parsing: "192.0.2.1")!, port: 443), identity: nil, address: nil, snapshot: snapshot))
        #expect(hint.text.contains("restore the gateway's access to the Kubernetes API"))
        let tcp = try #require(DecisionEngine.decideTCP(source: nil, sourceAddress: "10.0.0.1", destination: IPAddress(parsing: "192.0.2.1")!,
                                                         port: 5432, snapshot: snapshot))
        #expect(tcp.verdict == .deny && tcp.reason.contains("maxStaleness"))
    }

    @Test func tenThousandServicesRebuildWithoutReparsing() {
        let compiler = ClusterPolicyCompiler()
        let services = (0..<10_000).map { service("svc-\($0)", hosts: ["h\($0).example.com"]) }
        let objects = ClusterObjects(pods: pods, externalServices: services)
        let first = compiler.build(base: base, objects: objects)
        #expect(first.source.externalServices.count == 10_000)
        let clock = ContinuousClock()
        let again = clock.measure { _ = compiler.build(base: base, objects: objects) }
        // Printed, not asserted (timings belong to bench/): the second build reuses every parsed spec.
        print("rebuild of 10,000 cached ExternalServices: \(again)")
    }
}

@Suite struct ResourceCacheTests {
    @Test func objectsComeInKeyOrderAsTheyAreAddedAndRemoved() {
        let cache = ResourceCache<Pod>()
        cache.replace(with: [pod("b", "x", ip: []), pod("a", "y", ip: []), pod("c", "z", ip: [])])
        #expect(cache.objects.map(\.metadata.key) == ["a/y", "b/x", "c/z"])
        cache.upsert(pod("a", "a", ip: []))
        cache.upsert(pod("b", "x", ip: ["10.0.0.1"]))  // a replacement keeps one key
        cache.upsert(pod("d", "w", ip: []))
        cache.remove(pod("c", "z", ip: []))
        cache.remove(pod("c", "z", ip: []))  // twice is harmless
        #expect(cache.objects.map(\.metadata.key) == ["a/a", "a/y", "b/x", "d/w"])
        #expect(cache.objects[2].addresses == ["10.0.0.1"])
        #expect(cache.count == 4 && cache.isSynced)
    }
}
