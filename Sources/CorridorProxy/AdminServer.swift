import CorridorPolicy
import NIOCore
import NIOHTTP1
import NIOPosix

/// The admin listener: `/metrics` (Prometheus text), `/healthz`, `/readyz`, and `/policy`
/// (a read-only summary of the policy in force). GET only.
public enum AdminServer {
    public static func bind(host: String, port: Int, group: any EventLoopGroup, proxy: ProxyContext,
                            isReady: @escaping @Sendable () -> Bool) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(AdminHandler(proxy: proxy, isReady: isReady))
                    }
                }
            }
            .bind(host: host, port: port)
            .get()
    }
}

final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let proxy: ProxyContext
    private let isReady: @Sendable () -> Bool
    private var request: HTTPRequestHead?

    init(proxy: ProxyContext, isReady: @escaping @Sendable () -> Bool) {
        self.proxy = proxy
        self.isReady = isReady
    }

    /// Set while this connection streams `/flows/stream`.
    private var subscription: ObjectIdentifier?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): request = head
        case .body: break
        case .end:
            guard let head = request, subscription == nil else { return }
            request = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            if path == "/flows/stream" && head.method == .GET {
                stream(context: context, head: head)
            } else {
                respond(context: context, head: head)
            }
        }
    }

    /// Server-Sent Events of records as they happen (`open`, `interim`, `close`), filtered like
    /// `/flows`; the connection stays open until the client leaves.
    private func stream(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let filter: FlowStream.Filter
        do throws(FlowsEndpoint.Problem) {
            filter = try FlowsEndpoint.filter(AdminQuery(uri: head.uri))
        } catch {
            var json = JSONLine()
            json.string("error", error.reason)
            send(context: context, head: head, status: .badRequest, contentType: "application/json", body: json.finishLine())
            return
        }
        guard let flows = proxy.accessLog.flows else {
            send(context: context, head: head, status: .notFound, contentType: "text/plain", body: Array("no flow table\n".utf8))
            return
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/event-stream")
        headers.add(name: "Cache-Control", value: "no-cache")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: ": corridor flows\n\n")))), promise: nil)
        let channel = context.channel
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        subscription = flows.stream.subscribe(filter: filter, eventLoop: context.eventLoop) { bytes in
            guard channel.isActive else { return }
            let context = loopBound.value
            context.writeAndFlush(NIOAny(HTTPServerResponsePart.body(.byteBuffer(channel.allocator.buffer(bytes: bytes)))), promise: nil)
        }
        let id = subscription!
        channel.closeFuture.whenComplete { _ in flows.stream.unsubscribe(id) }
    }

    private func send(context: ChannelHandlerContext, head: HTTPRequestHead, status: HTTPResponseStatus, contentType: String, body: [UInt8]) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    private func respond(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let (status, contentType, body): (HTTPResponseStatus, String, [UInt8])
        if head.method != .GET && head.method != .HEAD {
            (status, contentType, body) = (.methodNotAllowed, "text/plain", Array("GET only\n".utf8))
        } else {
            switch path {
            case "/metrics":
                (status, contentType, body) = (.ok, "text/plain; version=0.0.4", proxy.metrics.render())
            case "/healthz":
                (status, contentType, body) = (.ok, "text/plain", Array("ok\n".utf8))
            case "/readyz":
                let ready = isReady()
                let audit = proxy.policy.current.gateway.mode == .audit ? "; \(GatewayModeText.auditWarning)" : ""
                (status, contentType, body) = (ready ? .ok : .serviceUnavailable, "text/plain", Array(((ready ? "ready" : "not ready") + audit + "\n").utf8))
            case "/policy":
                (status, contentType, body) = (.ok, "application/json", PolicySummary.json(proxy.policy.current))
            case "/flows":
                let (flowStatus, flowBody) = FlowsEndpoint.json(AdminQuery(uri: head.uri), flows: proxy.accessLog.flows)
                (status, contentType, body) = (flowStatus, "application/json", flowBody)
            case "/explain":
                (status, contentType, body) = Self.explain(AdminQuery(uri: head.uri), snapshot: proxy.policy.current)
            default:
                (status, contentType, body) = (.notFound, "text/plain", Array("not found: try /metrics, /healthz, /readyz, /policy, /explain, /flows, /flows/stream\n".utf8))
            }
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.count))
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}

extension AdminHandler {
    /// `/explain?namespace=&serviceAccount=&label=k=v&sourceIP=&pod=NS/NAME&to=HOST[:PORT]&via=&ech=true`:
    /// the explanation of the live policy (pods included, in Kubernetes mode) as JSON; 400 with
    /// `{"error": ...}` for a query that does not say who and where.
    static func explain(_ query: AdminQuery, snapshot: PolicySnapshot) -> (HTTPResponseStatus, String, [UInt8]) {
        do {
            let parsed = try PolicyExplanation.Query.parse(namespace: query["namespace"], serviceAccount: query["serviceAccount"],
                                                           labels: query.all("label"), sourceIP: query["sourceIP"], pod: query["pod"],
                                                           to: query["to"], via: query["via"], ech: query["ech"] == "true")
            let explanation = try PolicyExplanation.make(parsed, snapshot: snapshot)
            return (.ok, "application/json", Array((explanation.json + "\n").utf8))
        } catch {
            var json = JSONLine()
            json.string("error", error.description)
            return (.badRequest, "application/json", json.finishLine())
        }
    }
}

@available(*, unavailable)
extension AdminHandler: Sendable {}

/// A JSON summary of a policy snapshot for `/policy` and `corridor check`.
public enum PolicySummary {
    public static func json(_ snapshot: PolicySnapshot) -> [UInt8] {
        var json = JSONLine()
        json.number("generation", snapshot.generation)
        let source = snapshot.source
        json.object("gateway") { g in
            g.string("name", source.gateway.name)
            g.string("mode", source.gateway.mode.rawValue)
            g.string("unknownSources", source.gateway.unknownSources.rawValue)
            g.stringArray("allowPrivate", source.gateway.allowPrivate.map(\.description))
        }
        json.objectArray("externalServices", source.externalServices) { s, service in
            s.string("name", service.name)
            s.stringArray("hosts", service.hosts.map(\.description))
            s.stringArray("ports", service.ports.map { "\($0.number)/\($0.protocol.rawValue)" })
            s.string("access", service.access.rawValue)
        }
        json.objectArray("egressPolicies", source.egressPolicies) { p, policy in
            p.string("name", policy.metadata.qualifiedName)
            p.string("mode", policy.mode.rawValue)
            p.string("podSelector", policy.podSelector.summary)
            p.stringArray("serviceAccounts", policy.serviceAccounts)
            p.stringArray("externalServices", policy.egress.flatMap(\.externalServices))
        }
        json.objectArray("workloads", source.workloads) { w, workload in
            w.string("name", workload.metadata.qualifiedName)
            w.stringArray("addresses", workload.addresses.map(\.description))
            w.string("serviceAccount", workload.serviceAccount)
        }
        return json.finishLine()
    }
}
