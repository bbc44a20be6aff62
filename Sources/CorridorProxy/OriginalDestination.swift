import CorridorPolicy
import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The destination a client dialled before iptables REDIRECT sent its connection to the gateway:
/// `SO_ORIGINAL_DST` (IPv4) or `IP6T_SO_ORIGINAL_DST` (IPv6) from conntrack. For a connection
/// that reached the listener directly there is none (or it is the listener's own address).
enum OriginalDestination {
    /// `SO_ORIGINAL_DST` and `IP6T_SO_ORIGINAL_DST` share the value 80 (linux/netfilter_ipv4.h, netfilter_ipv6/ip6_tables.h).
    static let optionName: Int32 = 80

    /// Looks the original destination up and calls `body` with it (nil when not redirected). Call on
    /// the channel's event loop: the lookup is one `getsockopt` there, and `body` runs before this returns.
    static func lookup(_ channel: any Channel, _ body: @escaping (SocketAddress?) -> Void) {
        #if os(Linux)
        guard let provider = channel as? any SocketOptionProvider, let local = channel.localAddress,
              let localIP = IPAddress(local) else {
            return body(nil)
        }
        func fetch<Address: Sendable>(level: Int, _ socketAddress: @escaping (Address) -> SocketAddress) {
            provider.unsafeGetSocketOption(level: SocketOptionLevel(level), name: SocketOptionName(optionName))
                .assumeIsolated().whenComplete { (result: Result<Address, any Error>) in
                    body((try? result.get()).flatMap { redirected(socketAddress($0), listener: local) })
                }
        }
        // An IPv4 client on a dual-stack (`[::]`) listener has an IPv4 conntrack entry.
        if localIP.unmapped.isIPv4 {
            fetch(level: IPPROTO_IP) { (address: sockaddr_in) in SocketAddress(address, host: "") }
        } else {
            fetch(level: IPPROTO_IPV6) { (address: sockaddr_in6) in SocketAddress(address, host: "") }
        }
        #else
        body(nil)
        #endif
    }

    /// The original destination of an accepted socket `fd` (the splice plane's), or nil when it
    /// was not redirected. `peer`: the client's address (an IPv4 client, mapped or not, has an
    /// IPv4 conntrack entry). One `getsockopt`, and a `getsockname` only when conntrack answers.
    static func lookup(fd: Int32, peer: IPAddress) -> SocketAddress? {
        #if os(Linux)
        func fetch<Address>(level: Int32, _ empty: Address) -> Address? {
            var address = empty
            var length = socklen_t(MemoryLayout<Address>.size)
            let status = withUnsafeMutableBytes(of: &address) { getsockopt(fd, level, optionName, $0.baseAddress, &length) }
            return status == 0 ? address : nil
        }
        let found = peer.unmapped.isIPv4
            ? fetch(level: Int32(IPPROTO_IP), sockaddr_in()).map { SocketAddress($0, host: "") }
            : fetch(level: Int32(IPPROTO_IPV6), sockaddr_in6()).map { SocketAddress($0, host: "") }
        guard let found, let listener = SocketAddress.local(of: fd) else { return nil }
        return redirected(found, listener: listener)
        #else
        return nil
        #endif
    }

    /// What conntrack answered, unless it is the listener's own address (the connection reached the
    /// listener directly; IPv4-mapped on a dual-stack listener) or names no port.
    private static func redirected(_ address: SocketAddress, listener: SocketAddress) -> SocketAddress? {
        guard let port = address.port, port != 0 else { return nil }
        if IPAddress(address)?.unmapped == IPAddress(listener)?.unmapped && port == listener.port { return nil }
        return address
    }
}

extension SocketAddress {
    /// The local address of socket `fd` (`getsockname`), from its bytes.
    static func local(of fd: Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let done = withUnsafeMutableBytes(of: &storage) { getsockname(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length) }
        return done == 0 ? SocketAddress(storage: storage) : nil
    }

    /// An IPv4 or IPv6 address from `sockaddr_storage` bytes (no text formatting); nil for others.
    init?(storage: sockaddr_storage) {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            let address = withUnsafeBytes(of: &storage) { $0.loadUnaligned(as: sockaddr_in.self) }
            self = SocketAddress(address, host: "")
        case AF_INET6:
            let address = withUnsafeBytes(of: &storage) { $0.loadUnaligned(as: sockaddr_in6.self) }
            self = SocketAddress(address, host: "")
        default:
            return nil
        }
    }
}
