import Testing
@testable import CorridorPolicy

@Suite("SourceInventory")
struct InventoryTests {
    static func workload(_ name: String, _ namespace: String, _ addresses: [String], sa: String = "default",
                         labels: [String: String] = [:]) -> Workload {
        Workload(metadata: ObjectMeta(name: name, namespace: namespace), addresses: addresses.map(cidr),
                 serviceAccount: sa, labels: labels)
    }

    static let subnet = workload("subnet", "ops", ["10.0.0.0/24", "fd00:1::/64"], sa: "ops")
    static let host = workload("host", "payments", ["10.0.0.7/32", "fd00:1::7/128"], sa: "checkout", labels: ["app": "checkout"])
    static let wide = workload("wide", "infra", ["10.0.0.0/8"])

    /// A prefix two workloads claim is neither's (in a cluster: a pod reporting a Workload's
    /// address, found in review, took its identity), and no broader prefix answers for it.
    @Test func aPrefixTwoWorkloadsClaimIsNeithers() {
        let vm = Self.workload("vm-ledger", "ledger", ["10.0.0.10/32"])
        let intruder = Self.workload("intruder", "payments", ["10.0.0.10/32"], labels: ["app": "intruder"])
        for order in [[vm, intruder, Self.subnet], [Self.subnet, intruder, vm]] {
            let inventory = SourceInventory(workloads: order)
            #expect(inventory.identity(of: ip("10.0.0.10")) == nil)
            #expect(inventory.identity(of: ip("::ffff:10.0.0.10")) == nil)
            #expect(inventory.identity(of: ip("10.0.0.11"))?.workload == "subnet")
            #expect(inventory.conflicts.map { $0.workloads } == [["ledger/vm-ledger", "payments/intruder"]])
        }
        #expect(SourceInventory(workloads: [vm, Self.subnet]).conflicts.isEmpty)
    }

    /// `::ffff:10.0.0.99` names the IPv4 source 10.0.0.99 (found in review: filed among IPv6
    /// prefixes, it never matched, and a broader IPv4 Workload answered for its source).
    @Test func anIPv4MappedWorkloadAddressClaimsTheIPv4Source() throws {
        let range = Self.workload("vm-range", "payments", ["10.0.0.0/24"])
        let quarantined = Self.workload("quarantined", "sandbox", ["::ffff:10.0.0.99/128"])
        let inventory = SourceInventory(workloads: [range, quarantined])
        #expect(inventory.identity(of: ip("10.0.0.99"))?.workload == "quarantined")
        #expect(inventory.identity(of: ip("::ffff:10.0.0.99"))?.workload == "quarantined")
        let loaded = try #require(loadValid("""
            apiVersion: corridor.dev/v1alpha1
            kind: Workload
            metadata: {name: quarantined, namespace: sandbox}
            spec: {addresses: ["::ffff:10.0.0.99", "::ffff:10.0.1.0/120"]}
            """))
        #expect(loaded.workloads.first?.addresses.map(\.description) == ["10.0.0.99/32", "10.0.1.0/24"])
        let twice = loadErrors("""
            apiVersion: corridor.dev/v1alpha1
            kind: Workload
            metadata: {name: a, namespace: sandbox}
            spec: {addresses: [10.0.0.5]}
            ---
            apiVersion: corridor.dev/v1alpha1
            kind: Workload
            metadata: {name: b, namespace: sandbox}
            spec: {addresses: ["::ffff:10.0.0.5"]}
            """)
        #expect(twice.contains { $0.reason.contains("already claimed") }, "\(twice)")
    }

    @Test("longest prefix wins, whatever the order of the Workloads", arguments: [
        Named("host first", [host, subnet, wide]),
        Named("subnet first", [subnet, host, wide]),
        Named("widest first", [wide, subnet, host]),
    ])
    func longestPrefix(_ example: Named<[Workload]>) {
        let inventory = SourceInventory(workloads: example.value)
        #expect(inventory.identity(of: ip("10.0.0.7"))?.workload == "host")
        #expect(inventory.identity(of: ip("10.0.0.8"))?.workload == "subnet")
        #expect(inventory.identity(of: ip("10.0.0.255"))?.workload == "subnet")
        #expect(inventory.identity(of: ip("10.0.1.7"))?.workload == "wide")
        #expect(inventory.identity(of: ip("10.255.255.255"))?.workload == "wide")
        #expect(inventory.identity(of: ip("11.0.0.7")) == nil)
        #expect(inventory.identity(of: ip("fd00:1::7"))?.workload == "host")
        #expect(inventory.identity(of: ip("fd00:1::8"))?.workload == "subnet")
        #expect(inventory.identity(of: ip("fd00:2::7")) == nil)
    }

    @Test("the identity carries namespace, service account and labels")
    func identityFields() {
        let inventory = SourceInventory(workloads: [Self.host])
        let found = inventory.identity(of: ip("10.0.0.7"))
        #expect(found == SourceIdentity(namespace: "payments", workload: "host", serviceAccount: "checkout", labels: ["app": "checkout"]))
        #expect(found?.summary == "payments/sa:checkout")
    }

    @Test("an IPv4-mapped IPv6 source is looked up as IPv4", arguments: [
        Named("mapped host", ("::ffff:10.0.0.7", "host")),
        Named("mapped host, bracket-less hex form", ("::ffff:a00:7", "host")),
        Named("mapped subnet member", ("::ffff:10.0.0.9", "subnet")),
    ])
    func mapped(_ example: Named<(String, String)>) {
        let inventory = SourceInventory(workloads: [Self.subnet, Self.host])
        #expect(inventory.identity(of: ip(example.value.0))?.workload == example.value.1)
    }

    @Test("unknown sources are nil", arguments: ["192.168.1.1", "10.0.1.1", "::1", "fd00:2::1", "::ffff:10.0.1.1", "0.0.0.0"])
    func unknown(_ address: String) {
        let inventory = SourceInventory(workloads: [Self.subnet, Self.host])
        #expect(inventory.identity(of: ip(address)) == nil)
    }

    @Test("IPv4 and IPv6 tables do not leak into each other")
    func families() {
        let v4Only = SourceInventory(workloads: [Self.workload("v4", "a", ["0.0.0.0/0"])])
        #expect(v4Only.identity(of: ip("203.0.113.9"))?.workload == "v4")
        #expect(v4Only.identity(of: ip("2001:db8::1")) == nil)
        let v6Only = SourceInventory(workloads: [Self.workload("v6", "a", ["::/0"])])
        #expect(v6Only.identity(of: ip("2001:db8::1"))?.workload == "v6")
        #expect(v6Only.identity(of: ip("203.0.113.9")) == nil)
    }

    @Test("a Workload without a namespace is in default; entries are counted")
    func defaults() {
        let bare = Workload(metadata: ObjectMeta(name: "vm"), addresses: [cidr("192.0.2.10")])
        let inventory = SourceInventory(workloads: [bare, Self.subnet])
        #expect(inventory.identity(of: ip("192.0.2.10"))?.namespace == "default")
        #expect(inventory.identity(of: ip("192.0.2.10"))?.serviceAccount == "default")
        #expect(inventory.entryCount == 3)
        #expect(SourceInventory().identity(of: ip("10.0.0.7")) == nil)
    }

    @Test("a loaded file may nest a /32 of one Workload inside another's range; decisions follow the longest prefix")
    func loadedNesting() throws {
        let yaml = """
        apiVersion: corridor.dev/v1alpha1
        kind: Workload
        metadata: {name: batch, namespace: jobs}
        spec: {addresses: [10.0.0.0/24], labels: {app: batch}}
        ---
        apiVersion: corridor.dev/v1alpha1
        kind: Workload
        metadata: {name: checkout, namespace: payments}
        spec: {addresses: [10.0.0.7/32], serviceAccount: checkout, labels: {app: checkout}}
        ---
        apiVersion: corridor.dev/v1alpha1
        kind: ExternalService
        metadata: {name: api}
        spec: {hosts: [api.test], ports: [{number: 443, protocol: TLS}]}
        ---
        apiVersion: corridor.dev/v1alpha1
        kind: EgressPolicy
        metadata: {name: p, namespace: payments}
        spec: {podSelector: {matchLabels: {app: checkout}}, egress: [{to: [{externalService: api}]}]}
        """
        let source = try #require(loadValid(yaml))
        let snap = PolicySnapshot(source: source, generation: 1)
        func verdict(_ address: String) -> Decision.Verdict {
            decide(snap, from: snap.inventory.identity(of: ip(address)), sni: "api.test", address: address).verdict
        }
        #expect(verdict("10.0.0.7") == .allow)
        #expect(verdict("::ffff:10.0.0.7") == .allow)
        #expect(verdict("10.0.0.8") == .deny)
        #expect(verdict("10.0.1.7") == .deny)
        #expect(snap.inventory.identity(of: ip("10.0.0.8"))?.namespace == "jobs")
    }
}
