import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import SluiceProto

/// Envoy's side of the rate limit service: grpc-swift-2 clients calling `ShouldRateLimit`, one
/// HTTP/2 connection each, `depth` calls in flight per connection (closed loop). One descriptor
/// per call, `[(descriptor_key, k<random>)]` in `domain` (`scripts/bench-fronts.sh`).
enum GRPCEngine {
    typealias Request = Envoy_Service_Ratelimit_V3_RateLimitRequest
    typealias Response = Envoy_Service_Ratelimit_V3_RateLimitResponse
    static let method = MethodDescriptor(fullyQualifiedService: "envoy.service.ratelimit.v3.RateLimitService", method: "ShouldRateLimit")

    struct Settings: Sendable {
        var host: String
        var port: Int
        var unixPath: String?
        var connections: Int
        var depth: Int
        var keys: Int
        var seconds: Double
        var warmup: Double
        var domain: String
        var descriptorKey: String
        var token: String?
        /// Open loop: calls per second in all (nil: closed loop).
        var rate: Double?
    }

    struct Tally: Sendable {
        var requests = 0
        var overLimit = 0
        var errors = 0
        var latencies: [Int64] = []
    }

    static func run(_ settings: Settings) throws -> [String: Any] {
        let tally = try AsyncEngine.block { try await Self.load(settings) }
        let measured = settings.seconds - settings.warmup
        return ["engine": "grpc", "connections": settings.connections, "depth": settings.depth, "seconds": measured,
                "requests": tally.requests, "over_limit": tally.overLimit, "errors": tally.errors,
                "requests_per_s": Double(tally.requests) / measured, "checks_per_s": Double(tally.requests) / measured,
                "latency_us": AsyncEngine.percentiles(tally.latencies)]
    }

    static func load(_ settings: Settings) async throws -> Tally {
        var clients: [GRPCClient<HTTP2ClientTransport.Posix>] = []
        var runners: [Task<Void, any Error>] = []
        for _ in 0..<settings.connections {
            let target: any ResolvableTarget = settings.unixPath.map { .unixDomainSocket(path: $0) } ?? .ipv4(address: settings.host, port: settings.port)
            let transport = try HTTP2ClientTransport.Posix(target: target, transportSecurity: .plaintext)
            let client = GRPCClient(transport: transport)
            runners.append(Task { try await client.runConnections() })
            clients.append(client)
        }
        var headers: Metadata = [:]
        if let token = settings.token { headers.addString("Bearer \(token)", forKey: "authorization") }
        let metadata = headers
        let start = ContinuousClock.now
        let counted = start + .milliseconds(Int64(settings.warmup * 1_000))
        let end = start + .milliseconds(Int64(settings.seconds * 1_000))
        let lanes = settings.connections * settings.depth
        // Open loop: each lane sends at its share of the rate, on schedule, late calls counted from
        // when they were due.
        let interval = settings.rate.map { Duration.seconds(Double(lanes) / $0) }
        let tally = try await withThrowingTaskGroup(of: Tally.self) { group in
            for (index, client) in clients.enumerated() {
                for lane in 0..<settings.depth {
                    group.addTask {
                        var generator = SystemRandomNumberGenerator()
                        var tally = Tally()
                        var due = start + (interval.map { $0 * Double(index * settings.depth + lane) / Double(lanes) } ?? .zero)
                        while ContinuousClock.now < end {
                            if let interval {
                                if ContinuousClock.now < due { try await Task.sleep(until: due, clock: .continuous) }
                                due += interval
                            }
                            var request = Request()
                            request.domain = settings.domain
                            var descriptor = Envoy_Service_Ratelimit_V3_RateLimitDescriptor()
                            var entry = Envoy_Service_Ratelimit_V3_RateLimitDescriptor.Entry()
                            entry.key = settings.descriptorKey
                            entry.value = "k\(UInt64.random(in: 0..<UInt64(max(1, settings.keys)), using: &generator))"
                            descriptor.entries = [entry]
                            request.descriptors = [descriptor]
                            let sent = interval == nil ? ContinuousClock.now : due - interval!
                            let code: Int
                            do {
                                code = try await client.unary(request: ClientRequest(message: request, metadata: metadata), descriptor: Self.method,
                                                              serializer: ProtobufSerializer<Request>(), deserializer: ProtobufDeserializer<Response>(),
                                                              options: .defaults) { response in try response.message.overallCode.rawValue }
                            } catch {
                                code = -1
                            }
                            let now = ContinuousClock.now
                            guard sent >= counted else { continue }
                            tally.requests += 1
                            if code < 0 { tally.errors += 1 } else if code == 2 { tally.overLimit += 1 }
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
                total.overLimit += part.overLimit
                total.errors += part.errors
                total.latencies += part.latencies
            }
            return total
        }
        for client in clients { client.beginGracefulShutdown() }
        for runner in runners { _ = try? await runner.value }
        return tally
    }
}
