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

    /// Looks the original destination up on the channel's event loop; nil when not redirected.
    static func lookup(_ channel: any Channel) -> EventLoopFuture<SocketAddress?> {
        #if os(Linux)
        guard let provider = channel as? any SocketOptionProvider, let local = channel.localAddress else {
            return channel.eventLoop.makeSucceededFuture(nil)
        }
        // An IPv4 client on a dual-stack (`[::]`) listener has an IPv4 conntrack entry.
        let useIPv4: Bool
        switch local {
        case .v4: useIPv4 = true
        case .v6: useIPv4 = local.ipAddress.map { $0.hasPrefix("::ffff:") && $0.contains(".") } ?? false
        default: return channel.eventLoop.makeSucceededFuture(nil)
        }
        let original: EventLoopFuture<SocketAddress>
        if useIPv4 {
            original = provider.unsafeGetSocketOption(level: SocketOptionLevel(IPPROTO_IP), name: SocketOptionName(optionName))
                .map { (address: sockaddr_in) in SocketAddress(address, host: "") }
        } else {
            original = provider.unsafeGetSocketOption(level: SocketOptionLevel(IPPROTO_IPV6), name: SocketOptionName(optionName))
                .map { (address: sockaddr_in6) in SocketAddress(address, host: "") }
        }
        return original
            .map { address -> SocketAddress? in
                // Not redirected: conntrack names the listener's own address (IPv4-mapped on a dual-stack listener).
                let ownIP = local.ipAddress.map { $0.hasPrefix("::ffff:") && $0.contains(".") ? String($0.dropFirst(7)) : $0 }
                guard let port = address.port, port != 0, !(address.ipAddress == ownIP && port == local.port) else { return nil }
                return address
            }
            .recover { _ in nil }
        #else
        return channel.eventLoop.makeSucceededFuture(nil)
        #endif
    }
}
