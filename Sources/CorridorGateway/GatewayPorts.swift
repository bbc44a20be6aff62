import CorridorPolicy

/// The container ports a deployed gateway listens on: what applications may reach (the tls,
/// connect and http listeners) and what monitoring scrapes (admin). `corridor netpol` takes them
/// from the gateway's config (`--config`), or else these standard ones, which are the ports
/// deploy/'s config (deploy/base/corridor.yaml) sets; a test holds the two together.
public struct GatewayPorts: Sendable, Equatable {
    public var tls: Int?
    public var connect: Int?
    public var http: Int?
    public var admin: Int?

    public init(tls: Int?, connect: Int?, http: Int?, admin: Int?) {
        self.tls = tls
        self.connect = connect
        self.http = http
        self.admin = admin
    }

    /// The listeners of a config: only those it enables.
    public init(_ gateway: GatewayConfig) {
        self.init(tls: gateway.listeners.tls?.port, connect: gateway.listeners.connect?.port,
                  http: gateway.listeners.http?.port, admin: gateway.listeners.admin?.port)
    }

    /// The ports deploy/base and deploy/overlays/node run the gateway with.
    public static let standard = GatewayPorts(tls: 15443, connect: 13128, http: 15080, admin: 15000)

    /// The listeners applications send traffic to, in the order tls, connect, http.
    public var application: [Int] { [tls, connect, http].compactMap { $0 } }
}
