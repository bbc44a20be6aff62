#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An IPv4 or IPv6 address as a value. Parsing is strict: dotted-quad IPv4 and RFC 4291 IPv6 text only.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(UInt32)
    case v6(UInt64, UInt64)

    /// Parses `1.2.3.4`, `::1`, `[::1]`, `::ffff:1.2.3.4`. Returns nil for anything else
    /// (including the short, octal and hex IPv4 spellings, which callers treat as "not a name").
    public init?(parsing text: String) {
        var text = Substring(text)
        if text.hasPrefix("["), text.hasSuffix("]") { text = text.dropFirst().dropLast() }
        if text.contains("%") { return nil }  // zone ids are never a destination we accept
        var v4 = in_addr()
        if text.withCString({ inet_pton(AF_INET, $0, &v4) }) == 1 {
            self = .v4(UInt32(bigEndian: v4.s_addr))
            return
        }
        var v6 = in6_addr()
        if text.withCString({ inet_pton(AF_INET6, $0, &v6) }) == 1 {
            self.init(in6: v6)
            return
        }
        return nil
    }

    public init(in6 address: in6_addr) {
        let (high, low) = withUnsafeBytes(of: address) { raw in
            (UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
             UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        }
        self = .v6(high, low)
    }

    public init(v6Bytes bytes: [UInt8]) {
        precondition(bytes.count == 16)
        var high: UInt64 = 0
        var low: UInt64 = 0
        for i in 0..<8 { high = high << 8 | UInt64(bytes[i]) }
        for i in 8..<16 { low = low << 8 | UInt64(bytes[i]) }
        self = .v6(high, low)
    }

    /// The IPv4 address an IPv6 address embeds as `::ffff:a.b.c.d` (mapped) or `::a.b.c.d` (compatible), if any.
    public var embeddedIPv4: IPAddress? {
        guard case .v6(let high, let low) = self, high == 0 else { return nil }
        let top = low >> 32
        if top == 0xffff || (top == 0 && low > 1) { return .v4(UInt32(truncatingIfNeeded: low)) }
        return nil
    }

    public var isIPv4: Bool { if case .v4 = self { return true } else { return false } }

    /// The IPv4 address an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) stands for; any other address as it is.
    public var unmapped: IPAddress {
        if case .v6(0, let low) = self, low >> 32 == 0xffff { return .v4(UInt32(truncatingIfNeeded: low)) }
        return self
    }

    public var description: String {
        switch self {
        case .v4(let value):
            return "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
        case .v6:
            var address = in6_addr()
            let bytes = self.v6Bytes
            withUnsafeMutableBytes(of: &address) { raw in for i in 0..<16 { raw[i] = bytes[i] } }
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            _ = inet_ntop(AF_INET6, &address, &text, socklen_t(text.count))
            return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }

    /// The 16 bytes of an IPv6 address (IPv4 as IPv4-mapped).
    public var v6Bytes: [UInt8] {
        let (high, low): (UInt64, UInt64)
        switch self {
        case .v4(let value): (high, low) = (0, 0xffff_0000_0000 | UInt64(value))
        case .v6(let h, let l): (high, low) = (h, l)
        }
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<8 { bytes[i] = UInt8(truncatingIfNeeded: high >> (56 - 8 * i)) }
        for i in 0..<8 { bytes[8 + i] = UInt8(truncatingIfNeeded: low >> (56 - 8 * i)) }
        return bytes
    }
}

/// An address range in CIDR notation, e.g. `10.0.0.0/8` or `fd00::/8`.
public struct CIDR: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let prefixLength: Int

    public enum Problem: Error, Equatable, Sendable {
        case notAnAddress(String)
        case badPrefix(String)
        case hostBitsSet(String)
    }

    public init(address: IPAddress, prefixLength: Int) {
        self.address = address
        self.prefixLength = prefixLength
    }

    /// Parses `a.b.c.d/n`, `x::/n`, or a bare address (a /32 or /128). Host bits must be zero.
    public init(parsing text: String) throws(Problem) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(parsing: String(parts[0])) else { throw .notAnAddress(text) }
        let maxLength = address.isIPv4 ? 32 : 128
        var length = maxLength
        if parts.count == 2 {
            guard let n = Int(parts[1]), parts[1].allSatisfy(\.isNumber), (0...maxLength).contains(n) else {
                throw .badPrefix(text)
            }
            length = n
        }
        let cidr = CIDR(address: address, prefixLength: length)
        guard cidr.masked(address) == address else { throw .hostBitsSet(text) }
        self = cidr
    }

    func masked(_ ip: IPAddress) -> IPAddress {
        switch ip {
        case .v4(let value):
            let mask: UInt32 = prefixLength == 0 ? 0 : ~UInt32(0) << (32 - prefixLength)
            return .v4(value & mask)
        case .v6(let high, let low):
            let highMask: UInt64 = prefixLength >= 64 ? ~0 : (prefixLength == 0 ? 0 : ~UInt64(0) << (64 - prefixLength))
            let lowMask: UInt64 = prefixLength <= 64 ? 0 : (prefixLength == 128 ? ~0 : ~UInt64(0) << (128 - prefixLength))
            return .v6(high & highMask, low & lowMask)
        }
    }

    /// True if `ip` is inside this range. IPv4 ranges also contain the IPv4-mapped IPv6 form of their addresses.
    public func contains(_ ip: IPAddress) -> Bool {
        switch (address, ip) {
        case (.v4, .v4), (.v6, .v6):
            return masked(ip) == address
        case (.v4, .v6):
            guard let inner = ip.embeddedIPv4 else { return false }
            return masked(inner) == address
        case (.v6, .v4):
            return false
        }
    }

    public var description: String { "\(address)/\(prefixLength)" }
}
