import CorridorPolicy
import NIOCore
import NIOHTTP1
import NIOPosix

/// The admin listener: the console (`/`), `/metrics` (Prometheus text), `/healthz`, `/readyz`,
/// `/policy` (a read-only summary of the policy in force), `/explain`, `/flows` and
/// `/flows/stream`. GET only. With a token (`spec.admin.tokenFile`), the console's APIs need
/// `Authorization: Bearer`; the probes, the metrics and the page itself (which holds no data) do not.
public enum AdminServer {
    /// Who may read what, and what the console shows beside the policy.
    public struct Access: Sendable {
        /// The bearer token the APIs require; nil: open (the listener is on loopback by default).
        public var token: String?
        /// Host names answered besides those ``AdminHostCheck`` always takes (lower case).
        public var hosts: Set<String> = []
        /// In Kubernetes mode: each ExternalService and EgressPolicy with whether it is accepted.
        public var kubernetesObjects: (@Sendable () -> [ClusterObjectState])?

        public init(token: String? = nil, kubernetesObjects: (@Sendable () -> [ClusterObjectState])? = nil) {
            self.token = token
            self.kubernetesObjects = kubernetesObjects
        }
    }

    public static func bind(host: String, port: Int, group: any EventLoopGroup, proxy: ProxyContext, access: Access = Access(),
                            isReady: @escaping @Sendable () -> Bool) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .backingOffFailedAccepts(listener: "admin", logger: proxy.logger)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(AdminHandler(proxy: proxy, access: access, isReady: isReady))
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
    private let access: AdminServer.Access
    private let isReady: @Sendable () -> Bool
    private var request: HTTPRequestHead?

    init(proxy: ProxyContext, access: AdminServer.Access, isReady: @escaping @Sendable () -> Bool) {
        self.proxy = proxy
        self.access = access
        self.isReady = isReady
    }

    /// The paths that need the token when one is set: everything that shows traffic or policy.
    static let protectedPaths: Set<String> = ["/flows", "/flows/stream", "/policy", "/policy.yaml", "/explain"]

    /// Whether `head` may read `path`.
    private func authorized(_ head: HTTPRequestHead, path: String) -> Bool {
        guard let token = access.token, Self.protectedPaths.contains(path) else { return true }
        guard let header = head.headers.first(name: "Authorization"), header.hasPrefix("Bearer ") else { return false }
        return Self.constantTimeEqual(Array(header.utf8.dropFirst(7)), Array(token.utf8))
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for index in 0..<max(a.count, b.count) {
            difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
        }
        return difference == 0
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
            let host = head.headers.first(name: "Host")
            if head.headers["Host"].count > 1 || !AdminHostCheck.allows(host, listed: access.hosts) {
                let shown = String((host ?? "").unicodeScalars.filter { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7f }.prefix(100).map(Character.init))
                let reason = "the admin API does not answer to Host '\(shown)': only to IP addresses, localhost, single labels, "
                    + "*.svc and *.svc.cluster.local names and those in spec.admin.hosts (a browser sent here under another name "
                    + "may have been pointed at this address by DNS rebinding)\n"
                send(context: context, head: head, status: .forbidden, contentType: "text/plain", body: Array(reason.utf8))
            } else if !authorized(head, path: path) {
                var json = JSONLine()
                json.string("error", "this admin API needs Authorization: Bearer <token> (spec.admin.tokenFile)")
                var headers = HTTPHeaders()
                headers.add(name: "WWW-Authenticate", value: "Bearer realm=\"corridor\"")
                send(context: context, head: head, status: .unauthorized, contentType: "application/json", body: json.finishLine(), extra: headers)
            } else if path == "/flows/stream" && head.method == .GET {
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
        let channel = context.channel
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let state: @Sendable () -> FlowStream.ClientState = { !channel.isActive ? .gone : channel.isWritable ? .ready : .behind }
        let source = channel.remoteAddress.flatMap { IPAddress($0)?.unmapped }
        let subscribed = flows.stream.subscribe(filter: filter, source: source, eventLoop: context.eventLoop, state: state,
                                                close: { channel.close(promise: nil) }) { bytes in
            guard channel.isActive else { return }
            let context = loopBound.value
            context.writeAndFlush(NIOAny(HTTPServerResponsePart.body(.byteBuffer(channel.allocator.buffer(bytes: bytes)))), promise: nil)
        }
        let id: ObjectIdentifier
        switch subscribed {
        case .success(let subscription):
            id = subscription
        case .failure(let refusal):
            var extra = HTTPHeaders()
            extra.add(name: "Retry-After", value: "30")
            let why = refusal == .full
                ? "\(FlowStream.maxSubscribers) clients stream /flows/stream already"
                : "\(FlowStream.maxSubscribersPerSource) clients from \(source.map { "\($0)" } ?? "this address") stream /flows/stream already"
            send(context: context, head: head, status: .serviceUnavailable, contentType: "text/plain",
                 body: Array("\(why); try again later (spec.admin.tokenFile keeps others from taking the places)\n".utf8), extra: extra)
            return
        }
        subscription = id
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/event-stream")
        headers.add(name: "Cache-Control", value: "no-cache")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: ": corridor flows\n\n")))), promise: nil)
        channel.closeFuture.whenComplete { _ in flows.stream.unsubscribe(id) }
    }

    private func send(context: ChannelHandlerContext, head: HTTPRequestHead, status: HTTPResponseStatus, contentType: String, body: [UInt8],
                      extra: HTTPHeaders = HTTPHeaders()) {
        var headers = extra
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
            case "/", "/index.html":
                (status, contentType, body) = (.ok, "text/html; charset=utf-8", Array(ConsolePage.html.utf8))
            case "/policy":
                (status, contentType, body) = (.ok, "application/json", PolicySummary.json(proxy.policy.current, kubernetes: access.kubernetesObjects?()))
            case "/flows":
                let (flowStatus, flowBody) = FlowsEndpoint.json(AdminQuery(uri: head.uri), flows: proxy.accessLog.flows)
                (status, contentType, body) = (flowStatus, "application/json", flowBody)
            case "/policy.yaml":
                (status, contentType, body) = (.ok, "application/yaml", Array(PolicySummary.yaml(proxy.policy.current).utf8))
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
                                                           to: query["to"], via: query["via"], ech: query["ech"] == "true", spelling: .adminQuery)
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
    /// The policy in force as YAML the loader reads back (`corridor report --admin`): the gateway's
    /// mode and defaults that decide, the ExternalServices and the EgressPolicies (not the
    /// workloads: in Kubernetes mode they are the pods).
    public static func yaml(_ snapshot: PolicySnapshot) -> String {
        let gateway = snapshot.gateway
        let head = """
            # The policy in force at generation \(snapshot.generation)
            apiVersion: corridor.dev/v1alpha1
            kind: GatewayConfig
            metadata: {name: \(ResourceYAML.quoteName(gateway.name))}
            spec:
              mode: \(gateway.mode.rawValue)
              unknownSources: \(gateway.unknownSources.rawValue)
              tls: {allowECH: \(gateway.tls.allowECH), upstreamPort: \(gateway.tls.upstreamPort)}
            """
            // Private destinations the policy lets through: a report on this policy names them
            // among its risky settings, as it does reading the file.
            + (gateway.allowPrivate.isEmpty ? "" : "\n  destinations: {allowPrivate: [\(gateway.allowPrivate.map { "\"\($0)\"" }.joined(separator: ", "))]}")
        return ResourceYAML.file([head] + snapshot.source.externalServices.map { ResourceYAML.render($0) }
                                 + snapshot.source.egressPolicies.map { ResourceYAML.render($0) })
    }

    /// The workloads listed at most (in Kubernetes mode they are the pods); `workloadCount` has them all.
    static let maxWorkloads = 500

    public static func json(_ snapshot: PolicySnapshot, kubernetes: [ClusterObjectState]? = nil) -> [UInt8] {
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
        json.number("workloadCount", source.workloads.count)
        json.objectArray("workloads", Array(source.workloads.prefix(maxWorkloads))) { w, workload in
            w.string("name", workload.metadata.qualifiedName)
            w.stringArray("addresses", workload.addresses.map(\.description))
            w.string("serviceAccount", workload.serviceAccount)
        }
        if let kubernetes {
            json.object("kubernetes") { k in
                k.objectArray("objects", kubernetes) { o, item in
                    o.string("object", item.object)
                    o.bool("accepted", item.accepted)
                    if !item.accepted { o.string("enforcing", item.enforcing ?? "none") }
                }
            }
        }
        return json.finishLine()
    }
}
