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
        let original: EventLoopFuture<SocketAddress>
        switch local {
        case .v4:
            original = provider.unsafeGetSocketOption(level: SocketOptionLevel(IPPROTO_IP), name: SocketOptionName(optionName))
                .map { (address: sockaddr_in) in SocketAddress(address, host: "") }
        case .v6:
            original = provider.unsafeGetSocketOption(level: SocketOptionLevel(IPPROTO_IPV6), name: SocketOptionName(optionName))
                .map { (address: sockaddr_in6) in SocketAddress(address, host: "") }
        default:
            return channel.eventLoop.makeSucceededFuture(nil)
        }
        return original
            .map { address -> SocketAddress? in
                guard let port = address.port, port != 0, !(address.ipAddress == local.ipAddress && port == local.port) else { return nil }
                return address
            }
            .recover { _ in nil }
        #else
        return channel.eventLoop.makeSucceededFuture(nil)
        #endif
    }
}
