/// Maps a source address to the workload that owns it, by longest-prefix match over the
/// Workload entries' addresses. Lookup cost grows with the number of distinct prefix lengths
/// (at most 33 + 129), not with the number of entries.
public struct SourceInventory: Sendable {
    private var byLength: [(length: Int, v4: Bool, table: [IPAddress: SourceIdentity])] = []
    public private(set) var entryCount = 0

    public init(workloads: [Workload] = []) {
        var tables: [Int: [IPAddress: SourceIdentity]] = [:]  // key: length, +1000 for IPv6
        for workload in workloads {
            for cidr in workload.addresses {
                let key = cidr.prefixLength + (cidr.address.isIPv4 ? 0 : 1000)
                tables[key, default: [:]][cidr.address] = workload.identity
                entryCount += 1
            }
        }
        byLength = tables.map { (length: $0.key % 1000, v4: $0.key < 1000, table: $0.value) }
            .sorted { $0.length > $1.length }
    }

    /// The identity of the workload that owns `address`, or nil for an unknown source.
    /// An IPv4-mapped IPv6 source is looked up as the IPv4 address it is.
    public func identity(of address: IPAddress) -> SourceIdentity? {
        let ip = address.isMapped ? (address.embeddedIPv4 ?? address) : address
        for entry in byLength where entry.v4 == ip.isIPv4 {
            let masked = CIDR(address: ip, prefixLength: entry.length).masked(ip)
            if let identity = entry.table[masked] { return identity }
        }
        return nil
    }
}

extension IPAddress {
    /// `::ffff:a.b.c.d`.
    public var isMapped: Bool {
        guard case .v6(let high, let low) = self else { return false }
        return high == 0 && low >> 32 == 0xffff
    }
}
