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
        // An IPv4 client on a dual-stack (`[::]`) listener has an IPv4 conntrack entry.
        let ownIP = localIP.unmapped
        let ownPort = local.port
        // Not redirected: conntrack names the listener's own address (IPv4-mapped on a dual-stack listener).
        func redirected(_ address: SocketAddress) -> SocketAddress? {
            guard let port = address.port, port != 0, !(IPAddress(address) == ownIP && port == ownPort) else { return nil }
            return address
        }
        func fetch<Address: Sendable>(level: Int, _ socketAddress: @escaping (Address) -> SocketAddress) {
            provider.unsafeGetSocketOption(level: SocketOptionLevel(level), name: SocketOptionName(optionName))
                .assumeIsolated().whenComplete { (result: Result<Address, any Error>) in
                    body((try? result.get()).flatMap { redirected(socketAddress($0)) })
                }
        }
        if ownIP.isIPv4 {
            fetch(level: IPPROTO_IP) { (address: sockaddr_in) in SocketAddress(address, host: "") }
        } else {
            fetch(level: IPPROTO_IPV6) { (address: sockaddr_in6) in SocketAddress(address, host: "") }
        }
        #else
        body(nil)
        #endif
    }
}
