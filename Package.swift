// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "corridor",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "corridor", targets: ["corridor"]),
        .library(name: "CorridorPolicy", targets: ["CorridorPolicy"]),
        .library(name: "CorridorWire", targets: ["CorridorWire"]),
        .library(name: "CorridorProxy", targets: ["CorridorProxy"]),
        .library(name: "CorridorGateway", targets: ["CorridorGateway"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
    ],
    targets: [
        // Pure model and decision logic: no NIO, no I/O beyond reading a config file's text.
        .target(
            name: "CorridorPolicy",
            dependencies: [.product(name: "Yams", package: "Yams")]
        ),
        // Wire formats: ClientHello parser, CONNECT head parser, TLS alert bytes.
        .target(
            name: "CorridorWire",
            dependencies: ["CorridorPolicy", .product(name: "NIOCore", package: "swift-nio")]
        ),
        // The NIO data plane: listeners, sniff/decide/dial/relay handlers, access log, metrics.
        .target(
            name: "CorridorProxy",
            dependencies: [
                "CorridorPolicy",
                "CorridorWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // Composition: the policy store, config reload, signals, drain.
        .target(
            name: "CorridorGateway",
            dependencies: [
                "CorridorPolicy",
                "CorridorProxy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "corridor",
            dependencies: [
                "CorridorGateway",
                "CorridorPolicy",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "corridor-decision-bench",
            dependencies: ["CorridorPolicy"],
            path: "bench/DecisionBench"
        ),
        .testTarget(name: "CorridorPolicyTests", dependencies: ["CorridorPolicy"]),
        .testTarget(
            name: "CorridorWireTests",
            dependencies: ["CorridorWire", "CorridorPolicy", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "CorridorProxyTests",
            dependencies: [
                "CorridorProxy", "CorridorPolicy", "CorridorWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "CorridorIntegrationTests",
            dependencies: [
                "CorridorGateway", "CorridorProxy", "CorridorPolicy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
