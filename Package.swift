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
        .library(name: "CorridorKubernetes", targets: ["CorridorKubernetes"]),
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
        // Linux calls for the splice data plane (epoll, accept4, pipe2, splice) that Glibc's module lacks.
        .target(name: "CCorridorLinux"),
        // The data plane: listeners, sniff/decide/dial/relay handlers (NIO, and the splice plane
        // for TLS passthrough), access log, metrics.
        .target(
            name: "CorridorProxy",
            dependencies: [
                "CorridorPolicy",
                "CorridorWire",
                "CCorridorLinux",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // The Kubernetes control plane: API client (in-cluster, kubeconfig), list+watch
        // reflectors, and the compiler from watched objects to a policy source.
        .target(
            name: "CorridorKubernetes",
            dependencies: [
                "CorridorPolicy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // Generates the version and git commit (scripts/build-info) before every build.
        .plugin(name: "BuildInfoPlugin", capability: .buildTool()),
        // Composition: the policy store, config reload, signals, drain, cluster sync.
        .target(
            name: "CorridorGateway",
            dependencies: [
                "CorridorPolicy",
                "CorridorProxy",
                "CorridorKubernetes",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            plugins: ["BuildInfoPlugin"]
        ),
        // Operators' tools around the gateway that are not the data plane: the admin API client,
        // and the offline tools over access logs (learn).
        // zlib (Debian's zlib1g-dev), for gzip-compressed access logs.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        .target(
            name: "CorridorTools",
            dependencies: [
                "CorridorPolicy",
                "CZlib",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "corridor",
            dependencies: [
                "CorridorGateway",
                "CorridorTools",
                "CorridorKubernetes",
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
        // Coverage-guided fuzzing (Fuzz/README.md): each target is a libFuzzer entry point when
        // built by fuzz/run.sh (-sanitize=fuzzer,address -DFUZZING), and otherwise a replayer of
        // its corpus, which the test suite runs.
        .target(name: "CorridorFuzzSupport", path: "Fuzz/Support"),
        .executableTarget(name: "fuzz-client-hello", dependencies: ["CorridorFuzzSupport", "CorridorWire", "CorridorPolicy",
                                                                   .product(name: "NIOCore", package: "swift-nio")], path: "Fuzz/ClientHello"),
        .executableTarget(name: "fuzz-hello-retry", dependencies: ["CorridorFuzzSupport", "CorridorWire",
                                                                  .product(name: "NIOCore", package: "swift-nio")], path: "Fuzz/HelloRetry"),
        .executableTarget(name: "fuzz-connect-head", dependencies: ["CorridorFuzzSupport", "CorridorWire", "CorridorPolicy",
                                                                   .product(name: "NIOCore", package: "swift-nio")], path: "Fuzz/ConnectHead"),
        .executableTarget(name: "fuzz-http-head", dependencies: [
            "CorridorFuzzSupport", "CorridorProxy", "CorridorPolicy", .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
        ], path: "Fuzz/HTTPHead"),
        .executableTarget(name: "fuzz-config", dependencies: ["CorridorFuzzSupport", "CorridorPolicy"], path: "Fuzz/Config"),
        .executableTarget(name: "fuzz-connection-engine", dependencies: [
            "CorridorFuzzSupport", "CorridorProxy", "CorridorPolicy", .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
        ], path: "Fuzz/ConnectionEngine"),
        .executableTarget(name: "fuzz-kube-objects", dependencies: ["CorridorFuzzSupport", "CorridorKubernetes", "CorridorPolicy"],
                          path: "Fuzz/KubeObjects"),
        .executableTarget(name: "fuzz-kubeconfig", dependencies: ["CorridorFuzzSupport", "CorridorKubernetes", "CorridorPolicy"],
                          path: "Fuzz/KubeConfig"),
        .testTarget(name: "CorridorPolicyTests", dependencies: ["CorridorPolicy"]),
        .testTarget(
            name: "CorridorKubernetesTests",
            dependencies: ["CorridorKubernetes", "CorridorPolicy", .product(name: "NIOPosix", package: "swift-nio")]
        ),
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
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .testTarget(
            name: "CorridorIntegrationTests",
            dependencies: [
                "CorridorGateway", "CorridorProxy", "CorridorPolicy", "CorridorKubernetes", "CorridorTools",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
