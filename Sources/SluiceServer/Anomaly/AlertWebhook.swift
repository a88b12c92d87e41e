import AsyncHTTPClient
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import SluiceConfiguration
import SluiceCore
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
        let body = Self.body(batch, format: settings.format)
        attempt(body, count: batch.count, settings: settings, retry: 0)
    }

    /// A request's body: the alerts as a JSON array, or (`format: slack`) a message of a line each.
    static func body(_ alerts: [AnomalyAlert], format: WebhookSettings.Format) -> String {
        switch format {
        case .json:
            return "[" + alerts.map(\.jsonLine).joined(separator: ",") + "]"
        case .slack:
            let shown = alerts.prefix(20).map { alert -> String in
                var about = [alert.tenant.map { "tenant \($0)" }, alert.subject.map { "subject \($0)" }, alert.ip.map { "ip \($0)" }].compactMap { $0 }
                if about.isEmpty { about = [alert.scope.rawValue] }
                return "• \(alert.kind) (\(about.joined(separator: ", ")), score \(String(format: "%.1f", alert.score))): \(alert.detail)"
            }
            var text = "Sluice: \(alerts.count) anomaly alert\(alerts.count == 1 ? "" : "s")\n" + shown.joined(separator: "\n")
            if alerts.count > shown.count { text += "\n… and \(alerts.count - shown.count) more (sluicectl alerts)" }
            let data = (try? JSONSerialization.data(withJSONObject: ["text": text], options: [.sortedKeys])) ?? Data("{}".utf8)
            return String(decoding: data, as: UTF8.self)
        }
    }

    func attempt(_ body: String, count: Int, settings: WebhookSettings, retry: Int) {
        state.withLockedValue { $0.attempts &+= 1 }
        Self.post(body, settings: settings).whenComplete { [self] result in
            let outcome: Outcome
            switch result {
            case .success(let got): outcome = got
            case .failure(let error): outcome = Outcome(status: 0, failure: Self.describe(error))
            }
            if (200..<300).contains(outcome.status) {
                state.withLockedValue { state in
                    state.queue.removeFirst(min(count, state.queue.count))
                    state.delivered &+= UInt64(count)
                }
                next(settings)
                return
            }
            guard retry < settings.retries else {
                logger.error("anomaly webhook: alerts not delivered after every retry",
                             metadata: ["webhook.url": "\(settings.redactedURL)", "webhook.alerts": "\(count)",
                                        "webhook.status": "\(outcome.status)", "webhook.error": "\(outcome.failure ?? "-")"])
                state.withLockedValue { state in
                    state.queue.removeFirst(min(count, state.queue.count))
                    state.failed &+= UInt64(count)
                }
                next(settings)
                return
            }
            if retry == 0 {
                logger.warning("anomaly webhook: a request failed; retrying with backoff",
                               metadata: ["webhook.url": "\(settings.redactedURL)", "webhook.status": "\(outcome.status)",
                                          "webhook.error": "\(outcome.failure ?? "-")"])
            }
            let wait = settings.backoff &* (Int64(1) << Int64(min(retry, 20)))
            group.next().scheduleTask(in: .nanoseconds(wait)) { [self] in
                attempt(body, count: count, settings: settings, retry: retry + 1)
            }
        }
    }

    /// How one attempt ended: the response's status (0 when there was none) and, when it
    /// failed, why.
    struct Outcome: Sendable {
        var status: Int
        var failure: String?
    }

    /// One POST through AsyncHTTPClient's shared client: HTTP or HTTPS (the system's trust store,
    /// or `ca_file`'s authorities), the whole attempt within `timeout`.
    static func post(_ body: String, settings: WebhookSettings) -> EventLoopFuture<Outcome> {
        let client = HTTPClient.shared
        let request: HTTPClient.Request
        do {
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "User-Agent", value: "sluiced/\(SluiceVersion.current)")
            for header in settings.headers { headers.add(name: header.name, value: header.value) }
            request = try HTTPClient.Request(url: settings.url, method: .POST, headers: headers, body: .string(body),
                                             tlsConfiguration: try tlsConfiguration(settings))
        } catch {
            return client.eventLoopGroup.next().makeSucceededFuture(Outcome(status: 0, failure: describe(error)))
        }
        return client.execute(request: request, deadline: .now() + .nanoseconds(settings.timeout)).map { response in
            let status = Int(response.status.code)
            return Outcome(status: status, failure: (200..<300).contains(status) ? nil : "HTTP \(status)")
        }
    }

    /// The TLS settings of an `https://` webhook: certificates and host names verified, against
    /// `ca_file`'s authorities (read at each attempt, so a replaced file takes effect) or the
    /// system's; nil for plain HTTP.
    static func tlsConfiguration(_ settings: WebhookSettings) throws -> TLSConfiguration? {
        guard settings.secure else { return nil }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let caFile = settings.caFile {
            let roots = try NIOSSLCertificate.fromPEMFile(caFile)
            guard !roots.isEmpty else { throw SluiceError(.invalidConfiguration, "anomaly.webhook.ca_file \(caFile): no certificate in the file") }
            configuration.trustRoots = .certificates(roots)
        }
        return configuration
    }

    /// An error in a sentence for the log.
    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            if error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout { return "timed out (anomaly.webhook.timeout)" }
            return "\(error)"
        }
        if let error = error as? NIOSSLError { return "TLS: \(error)" }
        if let error = error as? SluiceError { return error.message }
        return "\(error)"
    }

    var counts: (delivered: UInt64, failed: UInt64, dropped: UInt64, attempts: UInt64) {
        state.withLockedValue { ($0.delivered, $0.failed, $0.dropped, $0.attempts) }
    }
}
