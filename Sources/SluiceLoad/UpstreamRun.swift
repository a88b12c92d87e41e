import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SluiceClient
import SluiceProto
import SluiceWire

/// `sluice-bench --upstream`: traffic as a protected service sees it. Each request asks Sluice
/// first and, if allowed, is sent to the upstream and waited for (up to a timeout). The rate
/// rises linearly (open loop: requests leave on schedule whatever the answers do), subjects
/// belong to tiers by name (`TIER-N`), and every second is recorded per tier.
///
/// The upstream speaks the simplest framing: a 4-byte big-endian length, then an 8-byte request
/// id, echoed back when the request is done (docs/ADAPTIVE.md's demonstration has one).
public struct UpstreamRun: Sendable {
    /// A tier of the traffic: subjects `NAME-N`, and its share of the requests.
    public struct Tier: Sendable {
        public var name: String
        public var share: Double

        public init(name: String, share: Double) {
            self.name = name
            self.share = share
        }
    }

    public var sluice: Endpoint
    public var upstreamHost: String
    public var upstreamPort: Int
    /// The rule every check names.
    public var rule: String
    public var tiers: [Tier]
    public var subjectsPerTier: Int
    /// Requests per second at the start and at the end (linear in between).
    public var rateFrom: Double
    public var rateTo: Double
    /// Seconds.
    public var duration: Double
    /// Seconds a request waits for the upstream.
    public var timeout: Double
    /// Where each second's figures per tier go (JSON lines); nil: nowhere.
    public var timeline: String?
    public var sluiceConnections = 4
    public var upstreamConnections = 16
    public var seed: UInt64 = 1

    /// A run.
    public init(sluice: Endpoint, upstreamHost: String, upstreamPort: Int, rule: String, tiers: [Tier], subjectsPerTier: Int,
                rateFrom: Double, rateTo: Double, duration: Double, timeout: Double, timeline: String?, seed: UInt64 = 1) {
        self.sluice = sluice
        self.upstreamHost = upstreamHost
        self.upstreamPort = upstreamPort
        self.rule = rule
        self.tiers = tiers
        self.subjectsPerTier = subjectsPerTier
        self.rateFrom = rateFrom
        self.rateTo = rateTo
        self.duration = duration
        self.timeout = timeout
        self.timeline = timeline
        self.seed = seed
    }

    /// One tier's second.
    struct Second: Sendable {
        var offered = 0
        var admitted = 0
        var ok = 0
        var timedOut = 0
        var shed = 0
        var limited = 0
        var errors = 0
        /// Milliseconds from the request's scheduled time to the upstream's answer (ok only).
        var latencies: [Double] = []
    }

    final class Recorder: Sendable {
        let seconds: NIOLockedValueBox<[[Second]]>

        init(seconds: Int, tiers: Int) {
            self.seconds = NIOLockedValueBox(Array(repeating: Array(repeating: Second(), count: tiers), count: seconds))
        }

        func record(second: Int, tier: Int, _ change: (inout Second) -> Void) {
            seconds.withLockedValue { seconds in
                guard second >= 0, second < seconds.count else { return }
                change(&seconds[second][tier])
            }
        }
    }

    struct UpstreamTimeout: Error {}

    /// Runs it; returns the summary (per tier: offered, admitted, ok, timed_out, shed, limited,
    /// errors, success_percent, p99_ms).
    public func run() throws -> [String: Any] {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let result = NIOLockedValueBox<Result<(seconds: [[Second]], startedAt: Double), any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let run = self
        Task {
            do {
                let recorded = try await run.drive(group: group)
                result.withLockedValue { $0 = .success(recorded) }
            } catch {
                result.withLockedValue { $0 = .failure(error) }
            }
            done.signal()
        }
        done.wait()
        guard let outcome = result.withLockedValue({ $0 }) else { throw UpstreamTimeout() }
        let recorded = try outcome.get()
        return try summarize(recorded.seconds, startedAt: recorded.startedAt, tierNames: tiers.map(\.name))
    }

    func drive(group: MultiThreadedEventLoopGroup) async throws -> (seconds: [[Second]], startedAt: Double) {
        var clients: [SluiceClient] = []
        for _ in 0..<sluiceConnections { clients.append(try await SluiceClient.connect(to: sluice, group: group)) }
        var upstreams: [UpstreamConnection] = []
        for _ in 0..<upstreamConnections {
            upstreams.append(try await UpstreamConnection.connect(host: upstreamHost, port: upstreamPort, group: group))
        }
        let seconds = Int(duration.rounded(.up))
        let recorder = Recorder(seconds: seconds, tiers: tiers.count)
        let totalShare = tiers.reduce(0) { $0 + $1.share }
        let cumulative = tiers.indices.map { index in tiers[...index].reduce(0) { $0 + $1.share } / totalShare }
        let clock = ContinuousClock()
        let start = clock.now
        let startedAt = Date().timeIntervalSince1970
        let timeoutNanoseconds = Int64(timeout * 1e9)
        let rule = rule, tierList = tiers, subjectsPerTier = subjectsPerTier
        await withDiscardingTaskGroup { group in
            var random = FastRandom(seed: seed)
            var sent = 0
            while true {
                // A late wake-up (a loaded machine) must not drop the arrivals it slept through: the
                // schedule is offered in full, each request's latency counted from when it was due.
                let elapsed = min((clock.now - start).seconds, duration)
                // Arrivals due by now: the integral of the linearly rising rate.
                let due = rateFrom * elapsed + (rateTo - rateFrom) * elapsed * elapsed / (2 * duration)
                while Double(sent) < due {
                    // When this request was due: latency counts from here (no coordinated omission).
                    let dueAt = Self.time(ofArrival: Double(sent), from: rateFrom, to: rateTo, over: duration)
                    let unit = Double(random.next() >> 11) * 0x1p-53
                    let tier = cumulative.firstIndex { unit < $0 } ?? (tierList.count - 1)
                    let subject = "\(tierList[tier].name)-\(Int(random.next() % UInt64(subjectsPerTier)))"
                    let client = clients[sent % clients.count]
                    let upstream = upstreams[sent % upstreams.count]
                    let id = UInt64(sent + 1)
                    let second = Int(dueAt)
                    sent += 1
                    group.addTask {
                        recorder.record(second: second, tier: tier) { $0.offered += 1 }
                        var request = WireRequest()
                        request.check.checks = [WireCheck.with {
                            $0.key = subject
                            $0.subject = subject
                            $0.rule = rule
                        }]
                        guard let response = try? await client.send(request), case .check(let answer)? = response.body,
                              let verdict = answer.verdicts.first else {
                            recorder.record(second: second, tier: tier) { $0.errors += 1 }
                            return
                        }
                        guard verdict.allowed else {
                            recorder.record(second: second, tier: tier) { if verdict.reason == .shed { $0.shed += 1 } else { $0.limited += 1 } }
                            return
                        }
                        recorder.record(second: second, tier: tier) { $0.admitted += 1 }
                        do {
                            try await upstream.call(id: id, timeoutNanoseconds: timeoutNanoseconds)
                            let latency = ((clock.now - start).seconds - dueAt) * 1_000
                            recorder.record(second: second, tier: tier) {
                                $0.ok += 1
                                $0.latencies.append(latency)
                            }
                        } catch {
                            recorder.record(second: second, tier: tier) { $0.timedOut += 1 }
                        }
                    }
                }
                if elapsed >= duration { break }
                try? await Task.sleep(for: .milliseconds(2))
            }
        }
        for client in clients { await client.close() }
        for upstream in upstreams { await upstream.close() }
        return (recorder.seconds.withLockedValue { $0 }, startedAt)
    }

    /// The time (s) at which arrival `n` is due under a rate rising from `from` to `to` over `duration`.
    static func time(ofArrival n: Double, from: Double, to: Double, over duration: Double) -> Double {
        let slope = (to - from) / duration
        guard abs(slope) > 1e-12 else { return n / from }
        // Solve from·t + slope·t²/2 = n.
        return (-from + (from * from + 2 * slope * n).squareRoot()) / slope
    }

    static func percentile(_ values: [Double], _ p: Double) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
    }

    func summarize(_ seconds: [[Second]], startedAt: Double, tierNames: [String]) throws -> [String: Any] {
        var lines: [String] = []
        for (index, second) in seconds.enumerated() {
            for (tier, stats) in second.enumerated() {
                var line: [String: Any] = [
                    "t": index, "t_unix": startedAt + Double(index), "tier": tierNames[tier], "offered": stats.offered,
                    "admitted": stats.admitted, "ok": stats.ok, "timed_out": stats.timedOut, "shed": stats.shed,
                    "limited": stats.limited, "errors": stats.errors,
                ]
                if let p99 = Self.percentile(stats.latencies, 0.99) { line["p99_ms"] = p99 }
                let data = try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys])
                lines.append(String(decoding: data, as: UTF8.self))
            }
        }
        if let timeline {
            try (lines.joined(separator: "\n") + "\n").write(toFile: timeline, atomically: true, encoding: .utf8)
        }
        var perTier: [String: Any] = [:]
        for (tier, name) in tierNames.enumerated() {
            let all = seconds.map { $0[tier] }
            let offered = all.reduce(0) { $0 + $1.offered }, ok = all.reduce(0) { $0 + $1.ok }
            var entry: [String: Any] = [
                "offered": offered, "admitted": all.reduce(0) { $0 + $1.admitted }, "ok": ok,
                "timed_out": all.reduce(0) { $0 + $1.timedOut }, "shed": all.reduce(0) { $0 + $1.shed },
                "limited": all.reduce(0) { $0 + $1.limited }, "errors": all.reduce(0) { $0 + $1.errors },
                "success_percent": offered == 0 ? 0 : 100 * Double(ok) / Double(offered),
            ]
            if let p99 = Self.percentile(all.flatMap(\.latencies), 0.99) { entry["p99_ms"] = p99 }
            perTier[name] = entry
        }
        return ["mode": "upstream", "rate_from": rateFrom, "rate_to": rateTo, "duration_s": duration, "timeout_s": timeout,
                "tiers": perTier]
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}

/// One connection to the upstream: requests multiplexed by id, each failed after its timeout.
final class UpstreamConnection: Sendable {
    let channel: any Channel
    let handler: NIOLoopBound<UpstreamHandler>

    init(channel: any Channel, handler: NIOLoopBound<UpstreamHandler>) {
        self.channel = channel
        self.handler = handler
    }

    static func connect(host: String, port: Int, group: any EventLoopGroup) async throws -> UpstreamConnection {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maximumFrameBytes: 64)))
                    try channel.pipeline.syncOperations.addHandler(UpstreamHandler())
                }
            }
            .connect(host: host, port: port).get()
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: UpstreamHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return UpstreamConnection(channel: channel, handler: handler)
    }

    /// Sends request `id` and waits for its answer; throws after `timeoutNanoseconds`.
    func call(id: UInt64, timeoutNanoseconds: Int64) async throws {
        let loop = channel.eventLoop
        let promise = loop.makePromise(of: Void.self)
        let handler = handler, channel = channel
        loop.execute {
            handler.value.pending[id] = promise
            var buffer = channel.allocator.buffer(capacity: 12)
            buffer.writeInteger(UInt32(8))
            buffer.writeInteger(id)
            channel.writeAndFlush(buffer, promise: nil)
            loop.scheduleTask(in: .nanoseconds(timeoutNanoseconds)) {
                handler.value.pending.removeValue(forKey: id)?.fail(UpstreamRun.UpstreamTimeout())
            }
        }
        try await promise.futureResult.get()
    }

    func close() async {
        try? await channel.close()
    }
}

final class UpstreamHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    var pending: [UInt64: EventLoopPromise<Void>] = [:]

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var frame = unwrapInboundIn(data)
        guard let id = frame.readInteger(as: UInt64.self) else { return }
        pending.removeValue(forKey: id)?.succeed(())
    }

    func channelInactive(context: ChannelHandlerContext) {
        let waiting = pending
        pending = [:]
        for promise in waiting.values { promise.fail(UpstreamRun.UpstreamTimeout()) }
        context.fireChannelInactive()
    }
}
