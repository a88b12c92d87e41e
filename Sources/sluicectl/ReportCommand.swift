import ArgumentParser
import Foundation
import SluiceConfiguration
import SluiceCore
import SluiceIntelligence
import SluiceLoad
import SluiceProto

/// `sluicectl report`: a trace replayed through detection, drawn as one HTML page that opens
/// offline (inline SVG, no script from anywhere).
struct Report: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay a trace through anomaly detection and write an HTML report with plots and top-K tables.",
        discussion: """
            The page is one file with inline SVG: traffic over time per tenant, outcomes by class, alerts on the \
            timeline (with the labelled episodes, given --labels), the distribution of the subjects' scores with \
            the alert threshold, and the heaviest subjects, addresses, routes and tenants by requests, failures \
            and alerts (space-saving sketches, so a trace of any length fits in bounded memory). With --live instead \
            of a trace: the running daemon's last hour, its own verdicts (denials by reason) and alerts.
            """)

    @Argument(help: "A trace: PREFIX.csv.gz or .csv (shared/traces/FORMAT.md).") var trace: String?
    @Flag(help: "Report the daemon's last hour instead of a trace (anomaly detection must be on).") var live = false
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Where to write the page.") var out: String
    @Option(help: "The trace's labels (PREFIX.labels.json), to draw its episodes on the timeline.") var labels: String?
    @Option(help: "A configuration file whose anomaly: section sets the thresholds.") var config: String?
    @Option(help: "Rows in each top-K table.") var top = 10
    @Option(help: "Also write the alerts here (JSON Lines).") var alerts: String?

    func validate() throws {
        guard (trace == nil) == live else { throw ValidationError("give a trace, or --live for the daemon's last hour") }
        guard (1...100).contains(top) else { throw ValidationError("--top must be 1 to 100") }
    }

    func run() async throws {
        try await Self.reportFailures {
            if live { try await reportLive() } else { try report(trace: trace ?? "") }
        }
    }

    /// The daemon's last hour (a `Report` request), drawn as a trace's would be.
    func reportLive() async throws {
        var request = WireRequest()
        request.report.top = UInt32(top)
        let answer = try await connection.send(request).report
        guard let snapshot = try? JSONDecoder().decode(ReportSnapshot.self, from: Data(answer.json.utf8)) else {
            throw Failure("the daemon's report could not be read (a sluicectl of another version?)")
        }
        let page = ReportPage(title: "\(snapshot.title) (\(connection.endpointName))", data: snapshot.data, alerts: snapshot.alerts,
                              episodes: [], scores: (snapshot.bins, snapshot.threshold), top: top).html
        do { try page.write(toFile: out, atomically: true, encoding: .utf8) } catch { throw Failure("\(out): \(error.localizedDescription)") }
        FileHandle.standardError.write(Data("\(snapshot.data.rows) checks, \(snapshot.alerts.count) alerts; report written to \(out)\n".utf8))
    }

    func report(trace: String) throws {
        var settings = AnomalySettings()
        if let config {
            do { settings = try ConfigurationLoader.load(file: config).anomalyWithTenants } catch { throw Failure("\(error)") }
        }
        let detector = AnomalyDetector(settings: settings)
        var tally = ReportTally(capacity: max(100, 10 * top))
        var raised: [AnomalyAlert] = []
        let started = Date()
        let line = ProgressLine("reading \((trace as NSString).lastPathComponent)")
        defer { line.finish() }
        do {
            try TraceReader.forEachRow(path: trace, progress: line.enabled ? { read, total in
                line.update(done: Double(read), total: Double(total),
                            detail: "\(ProgressLine.count(tally.rows)) rows, \(ProgressLine.count(raised.count)) alerts")
            } : nil) { row in
                tally.count(row)
                let alerts = detector.observe(row)
                for alert in alerts { tally.count(alert) }
                raised += alerts
            }
        } catch let error as TraceError {
            throw Failure(error.description)
        }
        line.finish()
        guard tally.rows > 0 else { throw Failure("\(trace): no rows") }
        var episodes: [ReportPage.Episode] = []
        if let labels {
            guard let data = FileManager.default.contents(atPath: labels),
                  let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw Failure("\(labels): not a labels file (shared/traces/FORMAT.md)")
            }
            for episode in object["episodes"] as? [[String: Any]] ?? [] {
                guard let start = (episode["start_ms"] as? NSNumber)?.int64Value, let end = (episode["end_ms"] as? NSNumber)?.int64Value else { continue }
                episodes.append(.init(name: episode["id"] as? String ?? "?", start: start, end: end, benign: false))
            }
            for event in object["benign_events"] as? [[String: Any]] ?? [] {
                guard let start = (event["start_ms"] as? NSNumber)?.int64Value, let end = (event["end_ms"] as? NSNumber)?.int64Value else { continue }
                episodes.append(.init(name: event["id"] as? String ?? "?", start: start, end: end, benign: true))
            }
        }
        if let alerts {
            try (raised.map(\.jsonLine).joined(separator: "\n") + (raised.isEmpty ? "" : "\n")).write(toFile: alerts, atomically: true, encoding: .utf8)
        }
        let scores = detector.scoreDistribution
        let page = ReportPage(title: (trace as NSString).lastPathComponent, data: tally.data(top: top), alerts: raised, episodes: episodes,
                              scores: (scores.bins.map { ReportData.Bin(score: $0.score, minutes: $0.minutes) }, scores.threshold), top: top).html
        do { try page.write(toFile: out, atomically: true, encoding: .utf8) } catch { throw Failure("\(out): \(error.localizedDescription)") }
        FileHandle.standardError.write(Data(String(format: "%d rows, %d alerts in %.2f s; report written to %@\n", tally.rows, raised.count,
                                                   Date().timeIntervalSince(started), out).utf8))
    }
}
