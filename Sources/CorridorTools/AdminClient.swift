import NIOCore
import NIOHTTP1
import NIOPosix

/// A GET against a running gateway's admin listener (plain HTTP, on loopback or through
/// `kubectl port-forward`): what `corridor explain --admin` asks. With a token, it is sent as
/// `Authorization: Bearer`.
public enum AdminClient {
    public struct Response: Sendable {
        public var status: Int
        public var body: String
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// `base`: `http://host:port` (a trailing slash is fine); `path`: `/explain?...`.
    public static func get(_ base: String, path: String, token: String? = nil, timeout: TimeAmount = .seconds(10)) async throws -> Response {
        guard base.hasPrefix("http://") else { throw Failure(description: "--admin: '\(base)' must be http://HOST:PORT (the admin listener)") }
        var authority = String(base.dropFirst(7))
        while authority.hasSuffix("/") { authority.removeLast() }
        guard let colon = authority.lastIndex(of: ":"), let port = Int(authority[authority.index(after: colon)...]), (1...65535).contains(port) else {
            throw Failure(description: "--admin: '\(base)' has no port (http://HOST:PORT)")
        }
        var host = String(authority[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: Response.self)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(Collector(promise: promise))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            promise.fail(error)
            throw Failure(description: "cannot reach the admin listener at \(base): \(Self.why(error))")
        }
        var headers = HTTPHeaders([("Host", authority), ("Connection", "close")])
        if let token { headers.add(name: "Authorization", value: "Bearer \(token)") }
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            promise.fail(Failure(description: "the admin listener at \(base) did not answer within \(timeout.nanoseconds / 1_000_000_000) s"))
            channel.close(promise: nil)
        }
        defer { timer.cancel() }
        let response = try await promise.futureResult.get()
        try? await channel.close()
        if response.status == 401 {
            throw Failure(description: token == nil
                ? "the admin listener at \(base) asks for its bearer token: give --token-file FILE (a file holding the token spec.admin.tokenFile names)"
                : "the admin listener at \(base) refused the token of --token-file")
        }
        return response
    }

    /// Why a connection could not be made, in words: refused, timed out, or the error itself.
    static func why(_ error: any Error) -> String {
        let underlying = (error as? NIOConnectionError)?.connectionErrors.first?.error ?? error
        if let io = underlying as? IOError {
            switch io.errnoCode {
            case ECONNREFUSED: return "connection refused (is the gateway running, with spec.listeners.admin at this address?)"
            case ETIMEDOUT, EHOSTUNREACH, ENETUNREACH: return "\(String(cString: strerror(io.errnoCode))) (is the address right, and reachable from here?)"
            default: return String(cString: strerror(io.errnoCode))
            }
        }
        if case ChannelError.connectTimeout = error { return "no answer to the connection within the timeout" }
        return "\(error)"
    }

    private final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        private let promise: EventLoopPromise<Response>
        private var status = 0
        private var body: [UInt8] = []

        init(promise: EventLoopPromise<Response>) { self.promise = promise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): status = Int(head.status.code)
            case .body(let buffer): body += buffer.readableBytesView
            case .end: promise.succeed(Response(status: status, body: String(decoding: body, as: UTF8.self)))
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(Failure(description: "the admin listener closed the connection before answering"))
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            promise.fail(error)
            context.close(promise: nil)
        }
    }
}
