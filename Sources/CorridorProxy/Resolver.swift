import CorridorPolicy
import NIOCore
import NIOPosix
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Resolves an allowed host name to addresses, by the gateway itself: the static map of the
/// policy snapshot first, else the system resolver (getaddrinfo on a thread pool, never on an
/// event loop). Only names that policy allowed are ever looked up.
///
/// Answers of the system resolver are kept for `resolver.cacheTTL` (getaddrinfo reports no TTL),
/// so a busy name costs one lookup per TTL instead of a thread hop and a lookup per connection.
public struct Resolver: Sendable {
    public enum Failure: Error, Equatable {
        case notFound(String)
        case systemResolverDisabled
        case timedOut(String)
    }

    /// At most this many names are cached; past it, expired entries are dropped, then all.
    static let maxCachedNames = 10_000

    let threadPool: NIOThreadPool
    private let cache = ResolverCache()

    public init(threadPool: NIOThreadPool) {
        self.threadPool = threadPool
    }

    /// The answer known without a lookup: the static map's, or a cached one. Nil: call ``resolve(_:snapshot:on:)``.
    func immediate(_ host: String, snapshot: PolicySnapshot) -> [IPAddress]? {
        if let fixed = snapshot.staticAddresses(for: host) { return fixed }
        guard snapshot.gateway.systemResolver, snapshot.gateway.resolverCacheTTL > .zero else { return nil }
        return cache.lookup(host, now: ContinuousClock.now)
    }

    public func resolve(_ host: String, snapshot: PolicySnapshot, on eventLoop: any EventLoop) -> EventLoopFuture<[IPAddress]> {
        if let known = immediate(host, snapshot: snapshot) { return eventLoop.makeSucceededFuture(known) }
        guard snapshot.gateway.systemResolver else { return eventLoop.makeFailedFuture(Failure.systemResolverDisabled) }
        let ttl = snapshot.gateway.resolverCacheTTL
        let cache = self.cache
        let lookup = threadPool.runIfActive(eventLoop: eventLoop) {
            let addresses = try Self.getaddrinfo(host)
            if ttl > .zero { cache.store(host, addresses, until: ContinuousClock.now + ttl, limit: Self.maxCachedNames) }
            return addresses
        }
        // A slow resolver must not hold an allowed connection for ever: the lookup gets the
        // connect timeout too (the lookup itself finishes on its thread and fills the cache).
        let timeout = snapshot.gateway.limits.connectTimeout
        let promise = eventLoop.makePromise(of: [IPAddress].self)
        let settled = NIOLoopBoundBox(false, eventLoop: eventLoop)
        let timer = eventLoop.scheduleTask(in: .nanoseconds(timeout.nanoseconds)) {
            guard !settled.value else { return }
            settled.value = true
            promise.fail(Failure.timedOut(host))
        }
        lookup.hop(to: eventLoop).whenComplete { result in
            timer.cancel()
            guard !settled.value else { return }
            settled.value = true
            promise.completeWith(result)
        }
        return promise.futureResult
    }

    static func getaddrinfo(_ host: String) throws -> [IPAddress] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>?
        let status = Glibc.getaddrinfo(host, nil, &hints, &result)
        guard status == 0, let first = result else { throw Failure.notFound(host) }
        defer { freeaddrinfo(first) }
        var addresses: [IPAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let entry = cursor {
            if let sa = entry.pointee.ai_addr {
                switch Int32(sa.pointee.sa_family) {
                case AF_INET:
                    let v4 = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
                    addresses.append(.v4(UInt32(bigEndian: v4.s_addr)))
                case AF_INET6:
                    let v6 = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
                    addresses.append(IPAddress(in6: v6))
                default: break
                }
            }
            cursor = entry.pointee.ai_next
        }
        var seen = Set<IPAddress>()
        return addresses.filter { seen.insert($0).inserted }
    }
}

extension IPAddress {
    /// The address with `port`, built from the bytes (no text formatting and parsing per connection).
    func socketAddress(port: Int) throws -> SocketAddress {
        guard let port = UInt16(exactly: port) else { throw InvalidPortError.invalidPort(port) }
        switch self {
        case .v4(let value):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr.s_addr = value.bigEndian
            return SocketAddress(sin, host: "")
        case .v6(let high, let low):
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in
                raw.storeBytes(of: high.bigEndian, toByteOffset: 0, as: UInt64.self)
                raw.storeBytes(of: low.bigEndian, toByteOffset: 8, as: UInt64.self)
            }
            return SocketAddress(sin6, host: "")
        }
    }

    /// The IP address of a socket address, read from its bytes; nil for a Unix domain socket.
    /// An IPv4 client of a dual-stack listener stays IPv4-mapped, as the kernel reports it.
    init?(_ address: SocketAddress) {
        switch address {
        case .v4(let v4): self = .v4(UInt32(bigEndian: v4.address.sin_addr.s_addr))
        case .v6(let v6): self.init(in6: v6.address.sin6_addr)
        case .unixDomainSocket: return nil
        }
    }
}

enum InvalidPortError: Error, CustomStringConvertible {
    case invalidPort(Int)
    var description: String {
        switch self {
        case .invalidPort(let port): "port \(port) is out of range"
        }
    }
}

/// Positive answers of the system resolver with their expiry.
final class ResolverCache: Sendable {
    private let entries = Mutex<[String: (addresses: [IPAddress], expires: ContinuousClock.Instant)]>([:])

    func lookup(_ host: String, now: ContinuousClock.Instant) -> [IPAddress]? {
        entries.withLock { entries in
            guard let entry = entries[host], entry.expires > now else { return nil }
            return entry.addresses
        }
    }

    func store(_ host: String, _ addresses: [IPAddress], until expires: ContinuousClock.Instant, limit: Int) {
        entries.withLock { entries in
            if entries.count >= limit {
                let now = ContinuousClock.now
                entries = entries.filter { $0.value.expires > now }
                if entries.count >= limit { entries.removeAll(keepingCapacity: true) }
            }
            entries[host] = (addresses, expires)
        }
    }
}
