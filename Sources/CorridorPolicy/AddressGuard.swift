/// Decides whether the gateway may dial a resolved address. Pure.
///
/// Blocked by default: every range that is not the public internet (loopback, link-local and the
/// cloud metadata address, RFC 1918, CGNAT, ULA, multicast, unspecified, documentation, ...), in
/// IPv4 and in every IPv6 form that embeds IPv4. The exceptions are the operator's `allowPrivate`
/// ranges and the `addresses` an ExternalService declares for itself.
public struct AddressGuard: Sendable {
    public struct BlockedRange: Sendable {
        public let cidr: CIDR
        public let name: String
    }

    /// The ranges a gateway must never dial unless told to, with a name for the log.
    public static let defaultBlocked: [BlockedRange] = [
        ("0.0.0.0/8", "unspecified"), ("10.0.0.0/8", "private (RFC 1918)"),
        ("100.64.0.0/10", "carrier-grade NAT (RFC 6598)"), ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (includes the 169.254.169.254 metadata service)"),
        ("172.16.0.0/12", "private (RFC 1918)"), ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"), ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private (RFC 1918)"), ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"), ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"),
        ("168.63.129.16/32", "Azure's platform endpoint (WireServer)"),
        ("::/128", "unspecified"), ("::1/128", "loopback"), ("64:ff9b::/96", "NAT64"),
        ("64:ff9b:1::/48", "local NAT64"), ("100::/64", "discard"), ("2001::/32", "Teredo"),
        ("2001:db8::/32", "documentation"), ("2002::/16", "6to4"), ("fc00::/7", "unique local (ULA)"),
        ("fe80::/10", "link-local"), ("::ffff:0:0:0/96", "IPv4-translated (RFC 2765)"), ("fec0::/10", "site-local"), ("ff00::/8", "multicast"),
    ].map { BlockedRange(cidr: try! CIDR(parsing: $0.0), name: $0.1) }

    public let blocked: [BlockedRange]
    /// The operator's own `destinations.block` ranges: no exception applies to them.
    public let alwaysBlocked: [BlockedRange]
    public let allowPrivate: [CIDR]

    public init(allowPrivate: [CIDR], extraBlocked: [CIDR] = []) {
        self.allowPrivate = allowPrivate
        self.blocked = AddressGuard.defaultBlocked
        self.alwaysBlocked = extraBlocked.map { BlockedRange(cidr: $0, name: "blocked by GatewayConfig spec.destinations.block") }
    }

    /// The addresses an exception to the guard must not take in without the operator knowing:
    /// the cloud metadata services and the gateway's own host.
    static let sensitive: [(address: IPAddress, name: String)] = [
        ("169.254.169.254", "the cloud metadata service (169.254.169.254)"), ("fd00:ec2::254", "the cloud metadata service (fd00:ec2::254)"),
        ("127.0.0.1", "loopback (the gateway's own host)"), ("::1", "loopback (the gateway's own host)"),
    ].map { (IPAddress(parsing: $0.0)!, $0.1) }

    /// What of ``sensitive`` an exception (`allowPrivate`, or an ExternalService's `addresses`)
    /// opens to the names it applies to; empty for a range that takes in none of it.
    public static func sensitiveReach(of range: CIDR) -> [String] {
        var names: [String] = []
        for entry in sensitive where range.contains(entry.address) && !names.contains(entry.name) { names.append(entry.name) }
        return names
    }

    /// Each exception that opens a ``sensitive`` address, said as a risk: `allowPrivate` for
    /// every name, a service's `addresses` for that service's names.
    public static func sensitiveExceptions(allowPrivate: [CIDR], services: [ExternalService]) -> [String] {
        var risks: [String] = []
        for range in allowPrivate {
            let reach = sensitiveReach(of: range)
            if !reach.isEmpty { risks.append("allowPrivate \(range) lets any allowed name resolve to \(reach.joined(separator: " and "))") }
        }
        for service in services {
            for range in service.addresses {
                let reach = sensitiveReach(of: range)
                if !reach.isEmpty {
                    risks.append("ExternalService \(service.name) addresses \(range) let its names resolve to \(reach.joined(separator: " and "))")
                }
            }
        }
        return risks
    }

    public enum Verdict: Equatable, Sendable {
        case allowed
        case blocked(range: String, name: String)
    }

    /// Judges one resolved address for a service that declares `serviceAddresses`.
    public func check(_ ip: IPAddress, serviceAddresses: [CIDR] = []) -> Verdict {
        // Judge an IPv4 address hidden in IPv6 (mapped, compatible) as the IPv4 address it is.
        let candidates = [ip] + (ip.embeddedIPv4.map { [$0] } ?? [])
        for candidate in candidates {
            if let range = alwaysBlocked.first(where: { $0.cidr.contains(candidate) }) {
                return .blocked(range: range.cidr.description, name: range.name)
            }
            guard let range = blocked.first(where: { $0.cidr.contains(candidate) }) else { continue }
            if allowPrivate.contains(where: { $0.contains(candidate) }) { continue }
            if serviceAddresses.contains(where: { $0.contains(candidate) }) { continue }
            return .blocked(range: range.cidr.description, name: range.name)
        }
        return .allowed
    }
}
