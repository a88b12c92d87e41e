import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceConfiguration
import SluiceIntelligence

/// Sends alerts to the webhook, one batch at a time, in order.
final class AlertWebhook: Sendable {
    struct State {
        var queue: [AnomalyAlert] = []
        var sending = false
        var delivered: UInt64 = 0
        var failed: UInt64 = 0
        var dropped: UInt64 = 0
        var attempts: UInt64 = 0
    }

    static let capacity = 10_000
    static let batchLimit = 500
    let group: any EventLoopGroup
    let state = NIOLockedValueBox(State())
    let logger: Logger

    init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.group = group
        self.logger = logger
    }

    /// Queues `alerts` for `settings` (the oldest are dropped, counted, beyond the capacity).
    func send(_ alerts: [AnomalyAlert], to settings: WebhookSettings) {
        let start = state.withLockedValue { state -> Bool in
            state.queue.append(contentsOf: alerts)
            if state.queue.count > Self.capacity {
                state.dropped &+= UInt64(state.queue.count - Self.capacity)
                state.queue.removeFirst(state.queue.count - Self.capacity)
            }
            defer { state.sending = true }
            return !state.sending
        }
        if start { next(settings) }
    }

    /// Sends the next batch, if any.
    func next(_ settings: WebhookSettings) {
        let batch = state.withLockedValue { state -> [AnomalyAlert] in
            let batch = Array(state.queue.prefix(Self.batchLimit))
            if batch.isEmpty { state.sending = false }
            return batch
        }
        guard !batch.isEmpty else { return }
        let body = "[" + batch.map(\.jsonLine).joined(separator: ",") + "]"
        attempt(body, count: batch.count, settings: settings, retry: 0)
    }

    func attempt(_ body: String, count: Int, settings: WebhookSettings, retry: Int) {
        state.withLockedValue { $0.attempts &+= 1 }
        Self.post(body, settings: settings, group: group).whenComplete { [self] result in
            let status = (try? result.get()) ?? 0
            if (200..<300).contains(status) {
                state.withLockedValue { state in
                    state.queue.removeFirst(min(count, state.queue.count))
                    state.delivered &+= UInt64(count)
                }
                next(settings)
                return
            }
            guard retry < settings.retries else {
                logger.error("anomaly webhook: alerts not delivered after every retry",
                             metadata: ["webhook.host": "\(settings.host)", "webhook.alerts": "\(count)",
                                        "webhook.status": "\(status)"])
                state.withLockedValue { state in
                    state.queue.removeFirst(min(count, state.queue.count))
                    state.failed &+= UInt64(count)
                }
                next(settings)
                return
            }
            let wait = settings.backoff &* (Int64(1) << Int64(min(retry, 20)))
            group.next().scheduleTask(in: .nanoseconds(wait)) { [self] in
                attempt(body, count: count, settings: settings, retry: retry + 1)
            }
        }
    }

    /// One POST; succeeds with the response status (0 when the connection failed or timed out).
    static func post(_ body: String, settings: WebhookSettings, group: any EventLoopGroup) -> EventLoopFuture<Int> {
        let loop = group.next()
        let promise = OncePromise(loop.makePromise(of: Int.self))
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.nanoseconds(settings.timeout))
            .channelInitializer { channel in
                channel.pipeline.addHTTPClientHandlers().flatMap {
                    channel.pipeline.addHandler(ResponseStatusHandler(promise: promise))
                }
            }
        bootstrap.connect(host: settings.host, port: settings.port).whenComplete { result in
            switch result {
            case .failure:
                promise.succeed(0)
            case .success(let channel):
                let timeout = loop.scheduleTask(in: .nanoseconds(settings.timeout)) {
                    promise.succeed(0)
                    channel.close(promise: nil)
                }
                promise.promise.futureResult.whenComplete { _ in
                    timeout.cancel()
                    channel.close(promise: nil)
                }
                var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: settings.path)
                head.headers.add(name: "Host", value: settings.host)
                head.headers.add(name: "Content-Type", value: "application/json")
                head.headers.add(name: "Content-Length", value: "\(body.utf8.count)")
                head.headers.add(name: "Connection", value: "close")
                channel.write(HTTPClientRequestPart.head(head), promise: nil)
                channel.write(HTTPClientRequestPart.body(.byteBuffer(channel.allocator.buffer(string: body))), promise: nil)
                channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            }
        }
        return promise.promise.futureResult
    }

    var counts: (delivered: UInt64, failed: UInt64, dropped: UInt64, attempts: UInt64) {
        state.withLockedValue { ($0.delivered, $0.failed, $0.dropped, $0.attempts) }
    }
}

/// A promise that the first of several outcomes (an answer, a timeout, a closed connection) completes.
final class OncePromise: Sendable {
    let promise: EventLoopPromise<Int>
    let done = NIOLockedValueBox(false)

    init(_ promise: EventLoopPromise<Int>) { self.promise = promise }

    func succeed(_ value: Int) {
        let first = done.withLockedValue { done -> Bool in
            defer { done = true }
            return !done
        }
        if first { promise.succeed(value) }
    }
}

/// Completes the promise with the response's status, or 0 if the connection closes first.
final class ResponseStatusHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPClientResponsePart
    let promise: OncePromise

    init(promise: OncePromise) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) { promise.succeed(Int(head.status.code)) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.succeed(0)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.succeed(0)
        context.close(promise: nil)
    }
}
