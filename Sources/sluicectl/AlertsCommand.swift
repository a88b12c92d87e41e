import ArgumentParser
import Foundation
import SluiceClient
import SluiceIntelligence
import SluiceProto

/// `sluicectl alerts`: follows the daemon's anomaly alerts (a `WatchAlerts` stream).
struct Alerts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Follow anomaly alerts as the daemon raises them (docs/ANOMALY.md).",
        discussion: """
            Prints one line per alert until interrupted, or until --count alerts were printed. With --json each line is \
            the alert log's JSON object (shared/traces/FORMAT.md). Exit status 2 if the daemon refuses or closes the stream.
            """)

    @OptionGroup var connection: ConnectionOptions
    @Option(name: .long, help: "Only alerts of this kind (repeatable): rate_spike, enumeration, credential_stuffing, …") var kind: [String] = []
    @Option(name: .long, help: "Only alerts about this tenant (global alerts are always shown).") var tenant: String?
    @Option(name: .long, help: "Start with up to this many recent alerts (0 to 1000).") var recent: UInt32 = 10
    @Option(name: .long, help: "Stop after this many alerts (default: follow until interrupted).") var count: Int?
    @Flag(name: .long, help: "One JSON object per line.") var json = false

    func run() async throws {
        try await Self.reportFailures {
            let client = try await connection.connect()
            defer { Task { await client.close() } }
            var request = WireRequest()
            request.watchAlerts.kinds = kind
            request.watchAlerts.tenant = tenant ?? ""
            request.watchAlerts.recent = recent
            var printed = 0
            do {
                for try await response in client.stream(request) {
                    guard case .watchAlerts(let batch) = response.body else { throw Failure("unexpected answer: \(response)") }
                    if batch.dropped > 0 {
                        FileHandle.standardError.write(Data("sluicectl: \(batch.dropped) alerts missed (not read fast enough)\n".utf8))
                    }
                    for alert in batch.alerts {
                        // Written straight away (no stdio buffering): a follower is often piped.
                        FileHandle.standardOutput.write(Data(((json ? AnomalyAlert(alert).jsonLine : AnomalyAlert(alert).text) + "\n").utf8))
                        printed += 1
                        if let count, printed >= count { return }
                    }
                }
            } catch ClientError.refused(let error) {
                throw Failure("\(error.code.name): \(error.message)")
            } catch ClientError.connectionClosed {
                throw Failure("the daemon closed the stream")
            }
            throw Failure("the daemon closed the stream")
        }
    }
}

extension AnomalyAlert {
    init(_ alert: Sluice_V1_Alert) {
        self.init(timestampMs: Int64(clamping: alert.timeMs), scope: AnomalyScope(rawValue: alert.scope) ?? .global,
                  subject: alert.subject.isEmpty ? nil : alert.subject, ip: alert.ip.isEmpty ? nil : alert.ip,
                  tenant: alert.tenant.isEmpty ? nil : alert.tenant, kind: alert.kind, score: alert.score, detail: alert.detail)
    }

    /// One line for a person: time, kind, what it is about, score and detail.
    var text: String {
        let time = Date(timeIntervalSince1970: Double(timestampMs) / 1_000).formatted(.iso8601.time(includingFractionalSeconds: true))
        let about = switch scope {
        case .subject: "subject \(subject ?? "")"
        case .ip: "ip \(ip ?? "")"
        case .global: "global"
        }
        let where_ = tenant.map { " (\($0))" } ?? ""
        return "\(time) \(kind) \(about)\(where_) score \(String(format: "%.2f", score)): \(detail)"
    }
}
