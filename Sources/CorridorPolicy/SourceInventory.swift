/// Maps a source address to the workload that owns it, by longest-prefix match over the
/// Workload entries' addresses. Lookup cost grows with the number of distinct prefix lengths
/// (at most 33 + 129), not with the number of entries. A prefix two workloads claim (a pod and a
/// Workload of the file, two live pods reporting one IP) belongs to neither: its sources are
/// unknown, and a broader prefix does not answer for them either (``conflicts``).
public struct SourceInventory: Sendable {
    /// nil: claimed by more than one workload.
    private var byLength: [(length: Int, v4: Bool, table: [IPAddress: SourceIdentity?])] = []
    public private(set) var entryCount = 0
    /// Prefixes more than one workload claims, with the claimants (`namespace/name`), sorted.
    public private(set) var conflicts: [(cidr: CIDR, workloads: [String])] = []

    public init(workloads: [Workload] = []) {
        var tables: [Int: [IPAddress: SourceIdentity?]] = [:]  // key: length, +1000 for IPv6
        var claimants: [CIDR: [String]] = [:]
        for workload in workloads {
            for claimed in workload.addresses {
                let cidr = claimed.unmapped
                let key = cidr.prefixLength + (cidr.address.isIPv4 ? 0 : 1000)
                let name = "\(workload.metadata.namespace ?? "default")/\(workload.metadata.name)"
                if tables[key]?[cidr.address] != nil {
                    if claimants[cidr]?.contains(name) == false { tables[key]![cidr.address] = .some(nil) }
                } else {
                    tables[key, default: [:]][cidr.address] = .some(workload.identity)
                    entryCount += 1
                }
                if claimants[cidr]?.contains(name) != true { claimants[cidr, default: []].append(name) }
            }
        }
        byLength = tables.map { (length: $0.key % 1000, v4: $0.key < 1000, table: $0.value) }
            .sorted { $0.length > $1.length }
        conflicts = claimants.filter { $0.value.count > 1 }.map { (cidr: $0.key, workloads: $0.value.sorted()) }
            .sorted { $0.cidr.description < $1.cidr.description }
    }

    /// The identity of the workload that owns `address`, or nil for an unknown source (or one
    /// whose address more than one workload claims). An IPv4-mapped IPv6 source is looked up as
    /// the IPv4 address it is.
    public func identity(of address: IPAddress) -> SourceIdentity? {
        let ip = address.isMapped ? (address.embeddedIPv4 ?? address) : address
        for entry in byLength where entry.v4 == ip.isIPv4 {
            let masked = CIDR(address: ip, prefixLength: entry.length).masked(ip)
            if let claim = entry.table[masked] { return claim }
        }
        return nil
    }
}

extension CIDR {
    /// An IPv4-mapped IPv6 prefix (`::ffff:10.0.0.0/120`) as the IPv4 prefix it covers
    /// (`10.0.0.0/24`), as sources are looked up; any other prefix as it is.
    public var unmapped: CIDR {
        guard address.isMapped, prefixLength >= 96, let v4 = address.embeddedIPv4 else { return self }
        return CIDR(address: v4, prefixLength: prefixLength - 96)
    }
}

extension IPAddress {
    /// `::ffff:a.b.c.d`.
    public var isMapped: Bool {
        guard case .v6(let high, let low) = self else { return false }
        return high == 0 && low >> 32 == 0xffff
    }
}
