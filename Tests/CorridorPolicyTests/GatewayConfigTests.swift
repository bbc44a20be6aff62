import Testing
@testable import CorridorPolicy

@Suite("DurationSyntax and ListenAddress")
struct GatewayConfigTests {
    @Test("durations parse", arguments: [
        Named("500ms", ("500ms", Duration.milliseconds(500))), Named("10s", ("10s", .seconds(10))),
        Named("5m", ("5m", .seconds(300))), Named("1h", ("1h", .seconds(3600))),
        Named("1m30s", ("1m30s", .seconds(90))), Named("1h2m3s4ms", ("1h2m3s4ms", .milliseconds(3_723_004))),
        Named("0s", ("0s", .zero)),
    ])
    func parses(_ example: Named<(String, Duration)>) {
        #expect(DurationSyntax.parse(example.value.0) == example.value.1)
    }

    @Test("bad durations are rejected", arguments: ["", "10", "-1s", "1d", "s", "ms", "1.5s", "10 s", " 10s", "1h30", "10S", "1e3s", "+5s", "1234567890s"])
    func rejects(_ text: String) {
        #expect(DurationSyntax.parse(text) == nil)
    }

    @Test("durations format back", arguments: [
        Named("whole seconds", (Duration.seconds(10), "10s")), Named("milliseconds", (.milliseconds(1500), "1500ms")),
        Named("minutes as seconds", (.seconds(300), "300s")),
    ])
    func formats(_ example: Named<(Duration, String)>) {
        #expect(DurationSyntax.format(example.value.0) == example.value.1)
        #expect(DurationSyntax.parse(DurationSyntax.format(example.value.0)) == example.value.0)
    }

    @Test("listen addresses parse", arguments: [
        Named("IPv4", ("127.0.0.1:15443", "127.0.0.1", 15443)), Named("IPv6", ("[::1]:8080", "::1", 8080)),
        Named("any", ("0.0.0.0:443", "0.0.0.0", 443)), Named("port 0", ("127.0.0.1:0", "127.0.0.1", 0)),
    ])
    func listen(_ example: Named<(String, String, Int)>) throws {
        let address = try #require(GatewayConfig.ListenAddress(parsing: example.value.0))
        #expect(address.host == example.value.1)
        #expect(address.port == example.value.2)
        #expect(address.description == example.value.0)
    }

    @Test("bad listen addresses are rejected", arguments: [
        "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "localhost:80", "127.0.0.1:-1", "127.0.0.1:8o", ":80",
    ])
    func listenRejects(_ text: String) {
        #expect(GatewayConfig.ListenAddress(parsing: text) == nil)
    }

    @Test("defaults are safe")
    func defaults() {
        let config = GatewayConfig()
        #expect(config.unknownSources == .deny)
        #expect(config.tls.allowECH == false)
        #expect(config.tls.upstreamPort == 443)
        #expect(config.allowPrivate.isEmpty)
        #expect(config.listeners.tls?.host == "127.0.0.1")
    }
}

@Suite("ConfigLoader: GatewayConfig fields")
struct GatewayConfigLoadTests {
    static func gateway(_ spec: String) -> String {
        "apiVersion: corridor.dev/v1alpha1\nkind: GatewayConfig\nmetadata: {name: gw}\nspec:\n" + spec
    }

    @Test("bad GatewayConfig fields are located", arguments: [
        Named("listener host name", ("  listeners: {tls: \"localhost:443\"}\n", "spec.listeners.tls", 5, "IP:port")),
        Named("listener port out of range", ("  listeners: {connect: \"127.0.0.1:70000\"}\n", "spec.listeners.connect", 5, "IP:port")),
        Named("no data listener", ("  listeners: {admin: \"127.0.0.1:15000\"}\n", "spec.listeners", 5, "at least one of tls, connect and http")),
        Named("upstreamPort 0", ("  tls: {upstreamPort: 0}\n", "spec.tls.upstreamPort", 5, "between 1 and 65535")),
        Named("allowECH yes", ("  tls: {allowECH: yes}\n", "spec.tls.allowECH", 5, "true or false")),
        Named("static host pattern", ("  resolver:\n    static: {\"a*.test\": [127.0.0.1]}\n", "spec.resolver.static.a*.test", 6, "host name")),
        Named("static host address", ("  resolver:\n    static:\n      api.test: [127.0.0.1, nope]\n", "spec.resolver.static.api.test[1]", 7, "not an IP address")),
        Named("static host empty list", ("  resolver:\n    static: {api.test: []}\n", "spec.resolver.static.api.test", 6, "non-empty list")),
        Named("allowPrivate host bits", ("  destinations:\n    allowPrivate: [127.0.0.1/8]\n", "spec.destinations.allowPrivate[0]", 6, "bits set")),
        Named("unknownSources lower case", ("  unknownSources: deny\n", "spec.unknownSources", 5, "Deny, Allow")),
        Named("zero timeout", ("  limits: {connectTimeout: 0s}\n", "spec.limits.connectTimeout", 5, "positive duration")),
        Named("typo in limits", ("  limits: {idleTimeOut: 5m}\n", "spec.limits.idleTimeOut", 5, "unknown field")),
        Named("dataPlane lower case", ("  tls: {dataPlane: splice}\n", "spec.tls.dataPlane", 5, "NIO, Splice")),
        Named("connect dataPlane unknown", ("  connect: {dataPlane: Epoll}\n", "spec.connect.dataPlane", 5, "NIO, Splice")),
        Named("connect unknown field", ("  connect: {plane: NIO}\n", "spec.connect.plane", 5, "unknown field")),
        Named("maxStaleness too short", ("  kubernetes: {maxStaleness: 5s}\n", "spec.kubernetes.maxStaleness", 5, "at least 10s")),
        Named("maxStaleness not a duration", ("  kubernetes: {maxStaleness: 5}\n", "spec.kubernetes.maxStaleness", 5, "duration")),
        Named("kubernetes unknown field", ("  kubernetes: {staleness: 5m}\n", "spec.kubernetes.staleness", 5, "unknown field")),
    ])
    func errors(_ example: Named<(String, String, Int, String)>) throws {
        let (spec, field, line, reason) = example.value
        let errors = loadErrors(Self.gateway(spec), file: "gw.yaml")
        let error = try #require(errors.first)
        #expect(errors.count == 1)
        #expect(error.document == 1)
        #expect(error.object == "GatewayConfig/gw")
        #expect(error.field == field)
        #expect(error.line == line)
        #expect(error.reason.contains(reason), "reason: \(error.reason)")
    }

    @Test("how long the Kubernetes API's last word is trusted")
    func maxStaleness() throws {
        #expect(GatewayConfig().kubernetes.maxStaleness == nil)
        let set = try #require(loadValid(Self.gateway("  kubernetes: {maxStaleness: 2m}\n")))
        #expect(set.gateway.kubernetes.maxStaleness == .seconds(120))
        #expect(set.gateway != GatewayConfig())
    }

    @Test("the tls and connect listeners' data planes")
    func dataPlane() throws {
        let byDefault = try #require(loadValid(Self.gateway("  tls: {upstreamPort: 443}\n")))
        #if os(Linux)
        #expect(byDefault.gateway.tls.dataPlane == .splice)
        #expect(byDefault.gateway.connect.dataPlane == .splice)
        #else
        #expect(byDefault.gateway.tls.dataPlane == .nio)
        #expect(byDefault.gateway.connect.dataPlane == .nio)
        #endif
        let nio = try #require(loadValid(Self.gateway("  tls: {dataPlane: NIO}\n  connect: {dataPlane: NIO}\n")))
        #expect(nio.gateway.tls.dataPlane == .nio)
        #expect(nio.gateway.connect.dataPlane == .nio)
        let mixed = try #require(loadValid(Self.gateway("  connect: {dataPlane: NIO}\n")))
        #expect(mixed.gateway.tls.dataPlane == GatewayConfig.DataPlane.platformDefault)
        #expect(mixed.gateway.connect.dataPlane == .nio)
    }

    @Test("access log to standard output and a file")
    func accessLog() throws {
        let toStdout = try #require(loadValid(Self.gateway("  logging: {accessLog: {file: \"-\"}}\n")))
        #expect(toStdout.gateway.logging.accessLogFile == nil)
        let toFile = try #require(loadValid(Self.gateway("  logging: {accessLog: {file: access.log}}\n")))
        #expect(toFile.gateway.logging.accessLogFile == "access.log")
    }
}
