import Foundation
import NIOConcurrencyHelpers
import NIOCore
import SluiceClient
import SluiceProto

/// A second load engine over the Swift client (SwiftNIO, and swift-nio-ssl for TLS): slower per
/// request than the epoll engine, but it speaks TLS, so plain TCP and TLS can be measured by the
/// same client in the same run (`scripts/bench-tls.sh`). Closed loop: each connection keeps
/// `depth` requests in flight.
enum NIOEngine {
    struct Settings: Sendable {
        var endpoint: Endpoint
        var tls: ClientTLS?
        var token: String?
        var connections: Int
        var depth: Int
        var batch: Int
        var keys: Int
        var seconds: Double
        var warmup: Double
        var tenant: String
        var rule: String?
        var limit: Sluice_V1_Limit
    }

    struct Tally: Sendable {
        var requests = 0
        var checks = 0
        var errors = 0
        var latencies: [Int64] = []
    }

    /// Runs the load and returns its summary (as `--json` prints it).
    static func run(_ settings: Settings) throws -> [String: Any] {
        let tally = try AsyncEngine.block { try await Self.load(settings) }
        let measured = settings.seconds - settings.warmup
        return ["engine": "nio", "tls": settings.tls != nil, "connections": settings.connections, "depth": settings.depth,
                "batch": settings.batch, "seconds": measured, "requests": tally.requests, "errors": tally.errors,
                "requests_per_s": Double(tally.requests) / measured, "checks_per_s": Double(tally.checks) / measured,
                "latency_us": AsyncEngine.percentiles(tally.latencies)]
    }

    static func load(_ settings: Settings) async throws -> Tally {
        var clients: [SluiceClient] = []
        for _ in 0..<settings.connections {
            clients.append(try await SluiceClient.connect(to: settings.endpoint, tls: settings.tls, token: settings.token))
        }
        let start = ContinuousClock.now
        let counted = start + .milliseconds(Int64(settings.warmup * 1_000))
        let end = start + .milliseconds(Int64(settings.seconds * 1_000))
        let tally = try await withThrowingTaskGroup(of: Tally.self) { group in
            for (index, client) in clients.enumerated() {
                for lane in 0..<settings.depth {
                    group.addTask {
                        var generator = SystemRandomNumberGenerator()
                        var tally = Tally()
                        var counter = index &* 7_919 &+ lane
                        while ContinuousClock.now < end {
                            var request = WireRequest()
                            request.check.checks = (0..<settings.batch).map { _ in
                                counter &+= 1
                                return Sluice_V1_Check.with {
                                    $0.tenant = settings.tenant
                                    $0.key = "k\(UInt64.random(in: 0..<UInt64(max(1, settings.keys)), using: &generator))"
                                    if let rule = settings.rule { $0.rule = rule } else { $0.limit = settings.limit }
                                }
                            }
                            let sent = ContinuousClock.now
                            let answer = try await client.send(request)
                            let now = ContinuousClock.now
                            guard sent >= counted else { continue }
                            tally.requests += 1
                            if case .error = answer.body { tally.errors += 1 } else { tally.checks += settings.batch }
                            let elapsed = now - sent
                            tally.latencies.append(AsyncEngine.nanoseconds(elapsed))
                        }
                        return tally
                    }
                }
            }
            var total = Tally()
            for try await part in group {
                total.requests += part.requests
                total.checks += part.checks
                total.errors += part.errors
                total.latencies += part.latencies
            }
            return total
        }
        for client in clients { await client.close() }
        return tally
    }
}
