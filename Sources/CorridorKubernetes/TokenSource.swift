import Foundation
import Synchronization

/// The bearer token for API requests. A fixed token is used as is; a token file (the projected
/// service-account token the kubelet rotates, swapped atomically through a `..data` symlink) is
/// re-read by path at most every `period`, and at once after the server answered 401. If a
/// re-read fails while a token is cached, the cached token is kept (client-go does the same).
public final class TokenSource: Sendable {
    private struct Cache {
        var token: String?
        var readAt: ContinuousClock.Instant?
    }

    private let fixed: String?
    private let file: String?
    private let period: Duration
    private let cache = Mutex(Cache())

    public init(credentials: KubeCredentials, period: Duration = .seconds(50)) {
        self.fixed = credentials.token
        self.file = credentials.tokenFile
        self.period = period
    }

    /// The token to send now, or nil when the credentials carry none.
    public func token() throws(KubeConfigError) -> String? {
        guard let file else { return fixed }
        let now = ContinuousClock.now
        if let cached = cache.withLock({ c -> String? in
            guard let token = c.token, let readAt = c.readAt, now - readAt < period else { return nil }
            return token
        }) { return cached }
        do {
            let token = try Self.readToken(file)
            cache.withLock { $0 = Cache(token: token, readAt: now) }
            return token
        } catch {
            if let stale = cache.withLock({ $0.token }) { return stale }
            throw error
        }
    }

    /// Forgets the cached token so the next request re-reads the file (after a 401).
    public func invalidate() {
        cache.withLock { $0.readAt = nil }
    }

    /// The trimmed content of a token file; an empty file is an error.
    static func readToken(_ path: String) throws(KubeConfigError) -> String {
        let text = String(decoding: try KubeEndpoint.readFile(path), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { throw KubeConfigError(file: path, reason: "the token file is empty") }
        guard !text.contains(where: \.isNewline) else { throw KubeConfigError(file: path, reason: "the token spans several lines") }
        return text
    }
}
