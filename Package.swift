// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "sluice",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "sluiced", targets: ["sluiced"]),
        .executable(name: "sluicectl", targets: ["sluicectl"]),
        .executable(name: "sluice-bench", targets: ["sluice-bench"]),
        .library(name: "SluiceCore", targets: ["SluiceCore"]),
        .library(name: "SluiceClient", targets: ["SluiceClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        // SHA-256 for API token hashes; already built for postgres-nio, so it costs no build time.
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        // DER, to read a client certificate's subject; already built for swift-crypto.
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        // Envoy's rate limit service: its one unary gRPC method served from swift-nio-http2's
        // frames (grpc-swift-2's server cost 70 µs of CPU a call, 90 % of it in its per-stream
        // machinery: docs/BENCHMARKS.md); grpc-swift-2 stays as sluice-bench's Swift gRPC client.
        // The IETF RateLimit header fields (structured-field syntax).
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-http-structured-headers.git", from: "1.7.0"),
        // HTTPS anomaly webhooks (TLS, the system's trust store, redirects, deadlines); its NIO
        // packages are already built for gRPC.
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        // A prefetch hint, which Swift cannot express, and epoll wrappers for the load harness.
        .target(name: "CSluiceSupport"),
        // Algorithms, the sharded table, stable hashing. No I/O, no clock reads.
        .target(
            name: "SluiceCore",
            dependencies: ["CSluiceSupport", .product(name: "NIOConcurrencyHelpers", package: "swift-nio")]
        ),
        // Reputation (and later adaptive limits, anomaly scoring) and feature flags: pure state
        // and functions over events, driven by the server's background queues.
        .target(
            name: "SluiceIntelligence",
            dependencies: ["SluiceCore", .product(name: "NIOConcurrencyHelpers", package: "swift-nio")]
        ),
        // Persistence: SQLite (GRDB over the system libsqlite3), numbered migrations, write-behind.
        .target(
            name: "SluiceStore",
            dependencies: [
                "SluiceCore", "SluiceIntelligence",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            exclude: ["Migrations"]
        ),
        // The shared store: PostgreSQL (postgres-nio), the same migrations and protocols as SQLite.
        .target(
            name: "SluicePostgres",
            dependencies: [
                "SluiceCore", "SluiceIntelligence", "SluiceStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Generated messages (checked in) and their mapping to Core types.
        .target(
            name: "SluiceProto",
            dependencies: ["SluiceCore", .product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        // NIO channel handlers: framing and the request codec. NIOCore only, never NIOPosix.
        .target(
            name: "SluiceWire",
            dependencies: [
                "SluiceCore", "SluiceProto",
                .product(name: "RawStructuredFieldValues", package: "swift-http-structured-headers"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        // The configuration: its model, the YAML loader with every feature's section, the embedded
        // default, reload's diff. What sluicectl needs without the server.
        .target(
            name: "SluiceConfiguration",
            dependencies: [
                "SluiceCore", "SluiceIntelligence",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // Listeners, request dispatch, metrics endpoint, reload, lifecycle.
        .target(
            name: "SluiceServer",
            dependencies: [
                "SluiceCore", "SluiceProto", "SluiceWire", "SluiceIntelligence", "SluiceStore", "SluiceConfiguration", "CSluiceSupport",
                "SluiceRedis", "SluicePostgres",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        // A RESP2 client for Redis on SwiftNIO (no Swift Redis client is in the package mirror):
        // the reply reader, commands, pipelined connections.
        .target(
            name: "SluiceRedis",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // A pipelining NIO client used by sluicectl, the tests and the bench harness.
        .target(
            name: "SluiceClient",
            dependencies: [
                "SluiceProto", "SluiceWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ]
        ),
        // An application's use of the SluiceClient library (docs/SWIFT_CLIENT.md).
        .executableTarget(
            name: "sluice-client-example",
            dependencies: ["SluiceClient"],
            path: "Examples/SwiftClient"
        ),
        .executableTarget(
            name: "sluiced",
            dependencies: [
                "SluiceServer", "SluiceConfiguration", "SluiceCore",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "sluicectl",
            dependencies: [
                "SluiceClient", "SluiceProto", "SluiceCore", "SluiceIntelligence", "SluiceLoad", "SluiceConfiguration", "SluiceStore",
                "SluicePostgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // The load harness's engine: workloads, pre-encoded requests, answer scanners, epoll loops.
        .target(
            name: "SluiceLoad",
            dependencies: [
                "SluiceProto", "CSluiceSupport", "SluiceClient", "SluiceWire", "SluiceIntelligence", "SluiceCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        // The load harness: closed and open loop, trace replay, Sluice, HTTP, Redis and echo
        // targets, and Envoy's side of the gRPC rate limit service.
        .executableTarget(
            name: "sluice-bench",
            dependencies: [
                "SluiceLoad", "SluiceProto", "SluiceCore", "SluiceClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            ]
        ),
        // In-process table benchmark: decisions per second and bytes per key.
        .executableTarget(
            name: "sluice-table-bench",
            dependencies: ["SluiceCore"],
            path: "Benchmarks/TableBenchmark"
        ),
        // In-process reputation benchmark: cost per check, ingestion into SQLite, memory per subject.
        .executableTarget(
            name: "sluice-reputation-bench",
            dependencies: [
                "SluiceServer", "SluiceConfiguration", "SluiceIntelligence", "SluiceStore", "SluicePostgres", "SluiceProto", "SluiceCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/ReputationBenchmark"
        ),
        // Fuzz targets: every decoder of outside bytes as a function of arbitrary input (docs/FUZZING.md).
        .target(
            name: "SluiceFuzzTargets",
            dependencies: [
                "SluiceServer", "SluiceConfiguration", "SluiceWire", "SluiceProto", "SluiceCore", "SluiceIntelligence", "SluiceLoad",
                "SluiceRedis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Fuzz/Targets"
        ),
        // libFuzzer's driver for them (built with -DFUZZING, scripts/fuzz.sh), or a replayer of inputs.
        .executableTarget(
            name: "sluice-fuzz",
            dependencies: ["SluiceFuzzTargets", .product(name: "Logging", package: "swift-log")],
            path: "Fuzz/Main"
        ),
        .target(
            name: "SluiceTestKit",
            dependencies: ["SluiceCore", "SluiceLoad", .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            path: "Tests/SluiceTestKit"
        ),
        .testTarget(name: "SluiceCoreTests", dependencies: ["SluiceCore", "SluiceTestKit", .product(name: "NIOConcurrencyHelpers", package: "swift-nio")]),
        .testTarget(
            name: "SluiceRedisTests",
            dependencies: [
                "SluiceRedis", "SluiceCore", "SluiceTestKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "SluiceIntelligenceTests", dependencies: ["SluiceIntelligence", "SluiceCore", "SluiceTestKit", .product(name: "NIOConcurrencyHelpers", package: "swift-nio")]),
        .testTarget(
            name: "SluiceStoreTests",
            dependencies: [
                "SluiceStore", "SluicePostgres", "SluiceIntelligence", "SluiceCore", "SluiceTestKit", "SluiceLoad",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "SluiceLoadTests", dependencies: ["SluiceLoad", "SluiceTestKit", "SluiceProto", "SluiceIntelligence", "SluiceCore",
                                                    .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        .testTarget(name: "SluiceFuzzTests", dependencies: ["SluiceFuzzTargets", "SluiceTestKit"]),
        .testTarget(
            name: "SluiceWireTests",
            dependencies: [
                "SluiceWire", "SluiceProto", "SluiceCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .testTarget(
            name: "SluiceServerTests",
            dependencies: [
                "SluiceServer", "SluiceConfiguration", "SluiceClient", "SluiceProto", "SluiceTestKit", "SluiceLoad", "SluiceWire", "SluiceCore",
                "SluiceIntelligence", "SluiceRedis", "SluiceStore", "SluicePostgres",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
    ]
)
