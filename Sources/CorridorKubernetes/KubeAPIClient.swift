import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

public enum KubeAPIError: Error, Sendable, CustomStringConvertible {
    /// The server answered with a non-2xx status (and usually a Status body).
    case status(code: Int, KubeStatus?)
    /// Connecting, TLS, or the connection closed before a response.
    case transport(String)
    case tooLarge(limit: Int)
    case decoding(String)
    case credentials(KubeConfigError)

    public var description: String {
        switch self {
        case .status(let code, let status): return "HTTP \(code)" + (status.map { ": \($0.reason ?? "") \($0.message ?? "")" } ?? "")
        case .transport(let reason): return reason
        case .tooLarge(let limit): return "response larger than \(limit) bytes"
        case .decoding(let reason): return "cannot decode: \(reason)"
        case .credentials(let error): return "credentials: \(error)"
        }
    }

    /// 410 Gone / Expired: the resource version is compacted; relist.
    public var isExpired: Bool {
        if case .status(let code, let status) = self { return code == 410 || (status?.isExpired ?? false) }
        return false
    }
}

/// How a watch stream ended.
public enum StreamEnd: Sendable, Equatable {
    /// The server ended the body cleanly (its `timeoutSeconds` passed).
    case completed
    /// The connection dropped mid-stream.
    case dropped(String)
}

/// A small HTTP/1.1 client for the Kubernetes API, written for what the gateway does: GET a list
/// page, stream a watch, PATCH a status. One connection per request (a watch holds its own for
/// minutes; lists and status writes are rare), TLS verified against the cluster CA, bearer token
/// or client certificate, a deadline on every request, and bounded bodies.
public final class KubeAPIClient: Sendable {
    public let endpoint: KubeEndpoint
    public let tokens: TokenSource
    private let group: any EventLoopGroup
    private let tls: NIOSSLContext?
    /// Largest response body (a list page) or watch event line accepted.
    public let maxBodyBytes: Int

    public init(endpoint: KubeEndpoint, group: any EventLoopGroup, maxBodyBytes: Int = 64 << 20) throws {
        self.endpoint = endpoint
        self.group = group
        self.tokens = TokenSource(credentials: endpoint.credentials)
        self.maxBodyBytes = maxBodyBytes
        guard endpoint.scheme == .https else {
            self.tls = nil
            return
        }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = ["http/1.1"]
        configuration.certificateVerification = .fullVerification
        do {
            if let ca = endpoint.caPEM {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(ca))
            }
            if let certificate = endpoint.credentials.clientCertificatePEM, let key = endpoint.credentials.clientKeyPEM {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMBytes(certificate).map { .certificate($0) }
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: key, format: .pem))
            }
            self.tls = try NIOSSLContext(configuration: configuration)
        } catch {
            throw KubeConfigError(file: endpoint.origin, reason: "cannot load the CA bundle or client certificate: \(error)")
        }
    }

    /// GET and return the whole body; a non-2xx answer throws `.status`.
    /// `idle`: as for ``stream(_:query:timeout:idle:onData:)``.
    public func get(_ path: String, query: [(String, String)] = [], timeout: Duration = .seconds(60), idle: Duration? = nil) async throws -> [UInt8] {
        try await exchange(.GET, path, query: query, body: nil, contentType: nil, timeout: timeout, idle: idle) { head, iterator in
            try await self.checkedBody(head, &iterator)
        }
    }

    /// PATCH with an RFC 7386 merge patch (`application/merge-patch+json`).
    public func mergePatch(_ path: String, body: [UInt8], timeout: Duration = .seconds(30)) async throws -> [UInt8] {
        try await exchange(.PATCH, path, query: [], body: body, contentType: "application/merge-patch+json", timeout: timeout) { head, iterator in
            try await self.checkedBody(head, &iterator)
        }
    }

    /// GET a streaming body (a watch) and hand every chunk to `onData` as it arrives. Returns how
    /// the stream ended; throws if the server refused it (non-200) or `onData` throws. `timeout`
    /// is a client-side bound on the whole stream, above the server's `timeoutSeconds`, so a
    /// half-dead connection cannot hold the watch forever.
    /// `idle`: the connection is closed when no byte arrives for that long (the stream then ends
    /// `.dropped`, or the request fails if the response head never came).
    public func stream(_ path: String, query: [(String, String)], timeout: Duration, idle: Duration? = nil,
                       onData: @Sendable (ByteBuffer) async throws -> Void) async throws -> StreamEnd {
        try await exchange(.GET, path, query: query, body: nil, contentType: nil, timeout: timeout, idle: idle) { head, iterator in
            guard head.status == .ok else {
                _ = try await self.checkedBody(head, &iterator)
                return .completed
            }
            while true {
                let part: HTTPClientResponsePart?
                do { part = try await iterator.next() } catch { return .dropped("\(error)") }
                switch part {
                case .body(let buffer): try await onData(buffer)
                case .end: return .completed
                case .head: return .dropped("a second response head")
                case nil: return .dropped(Task.isCancelled ? "cancelled" : "connection closed mid-stream")
                }
            }
        }
    }

    private func exchange<R: Sendable>(
        _ method: HTTPMethod, _ path: String, query: [(String, String)], body: [UInt8]?, contentType: String?, timeout: Duration,
        idle: Duration? = nil, _ handle: @Sendable (HTTPResponseHead, inout NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator) async throws -> R
    ) async throws -> R {
        let token: String?
        do { token = try tokens.token() } catch { throw KubeAPIError.credentials(error) }
        let tls = self.tls, endpoint = self.endpoint
        let sni = endpoint.serverName ?? (endpoint.host.isIPAddress ? nil : endpoint.host)
        let channel: NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.seconds(10))
                .channelOption(.socketOption(.so_keepalive), value: 1)
                // A half-open connection (a dropped NAT entry, a dead node) is found within about a
                // minute, not the kernel's default two hours: a silent watch must not leave the
                // identities stale for long.
                .channelOption(ChannelOptions.Types.SocketOption(level: .init(rawValue: CInt(IPPROTO_TCP)), name: .init(rawValue: TCP_KEEPIDLE)), value: 30)
                .channelOption(ChannelOptions.Types.SocketOption(level: .init(rawValue: CInt(IPPROTO_TCP)), name: .init(rawValue: TCP_KEEPINTVL)), value: 10)
                .channelOption(ChannelOptions.Types.SocketOption(level: .init(rawValue: CInt(IPPROTO_TCP)), name: .init(rawValue: TCP_KEEPCNT)), value: 3)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .connect(host: endpoint.host, port: endpoint.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: sni))
                        }
                        if let idle {
                            try channel.pipeline.syncOperations.addHandlers([
                                IdleStateHandler(readTimeout: TimeAmount(idle)), CloseOnReadIdleHandler(),
                            ])
                        }
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw KubeAPIError.transport("cannot connect to \(endpoint.url): \(error)")
        }
        let raw = channel.channel
        let deadline = raw.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            raw.close(promise: nil)
        }
        defer { deadline.cancel() }
        return try await withTaskCancellationHandler {
            try await channel.executeThenClose { inbound, outbound in
                var head = HTTPRequestHead(version: .http1_1, method: method, uri: uri(path, query))
                head.headers.add(name: "Host", value: endpoint.host.contains(":") ? "[\(endpoint.host)]:\(endpoint.port)" : "\(endpoint.host):\(endpoint.port)")
                head.headers.add(name: "Accept", value: "application/json")
                head.headers.add(name: "User-Agent", value: "corridor")
                if let token { head.headers.add(name: "Authorization", value: "Bearer \(token)") }
                if let body {
                    head.headers.add(name: "Content-Type", value: contentType ?? "application/json")
                    head.headers.add(name: "Content-Length", value: "\(body.count)")
                }
                do {
                    try await outbound.write(.head(head))
                    if let body { try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body)))) }
                    try await outbound.write(.end(nil))
                } catch {
                    throw KubeAPIError.transport("cannot send the request to \(endpoint.url): \(error)")
                }
                var iterator = inbound.makeAsyncIterator()
                let first: HTTPClientResponsePart?
                do { first = try await iterator.next() } catch {
                    throw KubeAPIError.transport("\(endpoint.url): \(error)")
                }
                guard case .head(let response) = first else {
                    throw KubeAPIError.transport("\(endpoint.url) closed the connection before answering")
                }
                if response.status == .unauthorized { self.tokens.invalidate() }
                return try await handle(response, &iterator)
            }
        } onCancel: {
            raw.close(promise: nil)
        }
    }

    private func uri(_ path: String, _ query: [(String, String)]) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        let encoded = query.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")" }
        return endpoint.pathPrefix + path + (encoded.isEmpty ? "" : "?" + encoded.joined(separator: "&"))
    }

    private func collect(_ iterator: inout NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator) async throws -> [UInt8] {
        var body: [UInt8] = []
        while true {
            let part: HTTPClientResponsePart?
            do { part = try await iterator.next() } catch { throw KubeAPIError.transport("\(endpoint.url): \(error)") }
            switch part {
            case .body(let buffer):
                guard body.count + buffer.readableBytes <= maxBodyBytes else { throw KubeAPIError.tooLarge(limit: maxBodyBytes) }
                body.append(contentsOf: buffer.readableBytesView)
            case .end: return body
            case .head, nil: throw KubeAPIError.transport("\(endpoint.url) closed the connection mid-response")
            }
        }
    }

    /// The whole body; a non-2xx answer throws `.status` with the Status it carried.
    private func checkedBody(_ head: HTTPResponseHead,
                             _ iterator: inout NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator) async throws -> [UInt8] {
        let body = try await collect(&iterator)
        guard (200..<300).contains(head.status.code) else {
            let status = try? JSONDecoder().decode(KubeStatus.self, from: Data(body))
            throw KubeAPIError.status(code: Int(head.status.code), status)
        }
        return body
    }
}

extension String {
    /// An IPv4 or IPv6 literal (which must not be sent as SNI; the certificate's IP SAN is checked instead).
    var isIPAddress: Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, self, &v4) == 1 || inet_pton(AF_INET6, self, &v6) == 1
    }
}
