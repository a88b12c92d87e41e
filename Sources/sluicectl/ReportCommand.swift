import ArgumentParser
import Foundation
import SluiceConfiguration
import SluiceCore
import SluiceIntelligence
import SluiceLoad

/// `sluicectl report`: a trace replayed through detection, drawn as one HTML page that opens
/// offline (inline SVG, no script from anywhere).
struct Report: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay a trace through anomaly detection and write an HTML report with plots and top-K tables.",
        discussion: """
            The page is one file with inline SVG: traffic over time per tenant, outcomes by class, alerts on the \
            timeline (with the labelled episodes, given --labels), the distribution of the subjects' scores with \
            the alert threshold, and the heaviest subjects, addresses, routes and tenants by requests, failures \
            and alerts (space-saving sketches, so a trace of any length fits in bounded memory).
            """)

    @Argument(help: "A trace: PREFIX.csv.gz or .csv (shared/traces/FORMAT.md).") var trace: String
    @Option(help: "Where to write the page.") var out: String
    @Option(help: "The trace's labels (PREFIX.labels.json), to draw its episodes on the timeline.") var labels: String?
    @Option(help: "A configuration file whose anomaly: section sets the thresholds.") var config: String?
    @Option(help: "Rows in each top-K table.") var top = 10
    @Option(help: "Also write the alerts here (JSON Lines).") var alerts: String?

    func run() async throws {
        try await Self.reportFailures { try report() }
    }

    func report() throws {
        guard (1...100).contains(top) else { throw Failure("--top must be 1 to 100") }
        var settings = AnomalySettings()
        if let config {
            do { settings = try ConfigurationLoader.load(file: config).anomalyWithTenants } catch { throw Failure("\(error)") }
        }
        let detector = AnomalyDetector(settings: settings)
        var tally = ReportTally(capacity: max(100, 10 * top))
        var raised: [AnomalyAlert] = []
        let started = Date()
        do {
            try TraceReader.forEachRow(path: trace) { row in
                tally.count(row)
                let alerts = detector.observe(row)
                for alert in alerts { tally.count(alert) }
                raised += alerts
            }
        } catch let error as TraceError {
            throw Failure(error.description)
        }
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
        let page = ReportPage(title: (trace as NSString).lastPathComponent, tally: tally, alerts: raised, episodes: episodes,
                              scores: detector.scoreDistribution, top: top).html
        do { try page.write(toFile: out, atomically: true, encoding: .utf8) } catch { throw Failure("\(out): \(error.localizedDescription)") }
        FileHandle.standardError.write(Data(String(format: "%d rows, %d alerts in %.2f s; report written to %@\n", tally.rows, raised.count,
                                                   Date().timeIntervalSince(started), out).utf8))
    }
}

/// What the report counts while the trace goes by: per minute, per tenant and per outcome
/// class; the heaviest keys in space-saving sketches.
struct ReportTally {
    /// Outcome classes, in the order they are drawn.
    static let classes = ["2xx/3xx", "401/403", "429", "other 4xx", "5xx"]
    /// Tenants drawn one by one; the rest are summed as "(others)".
    static let maxTenants = 12

    var rows = 0
    var first: Int64 = .max
    var last: Int64 = .min
    var tenantMinutes: [String: [Int64: Int]] = [:]
    var classMinutes: [[Int64: Int]] = Array(repeating: [:], count: classes.count)
    var subjects: SpaceSaving<String>
    var addresses: SpaceSaving<String>
    var routes: SpaceSaving<String>
    var failingSubjects: SpaceSaving<String>
    var failingAddresses: SpaceSaving<String>
    var tenants: [String: Int] = [:]
    var alerted: [String: Int] = [:]

    init(capacity: Int) {
        subjects = SpaceSaving(capacity: capacity)
        addresses = SpaceSaving(capacity: capacity)
        routes = SpaceSaving(capacity: capacity)
        failingSubjects = SpaceSaving(capacity: capacity)
        failingAddresses = SpaceSaving(capacity: capacity)
    }

    static func outcomeClass(_ status: Int) -> Int {
        switch status {
        case 401, 403: 1
        case 429: 2
        case 400..<500: 3
        case 500...: 4
        default: 0
        }
    }

    mutating func count(_ row: CheckEvent) {
        rows += 1
        first = min(first, row.timestampMs)
        last = max(last, row.timestampMs)
        let minute = row.timestampMs / 60_000
        let tenant = tenantMinutes[row.tenant] != nil || tenantMinutes.count < Self.maxTenants ? row.tenant : "(others)"
        tenantMinutes[tenant, default: [:]][minute, default: 0] += 1
        let outcome = Self.outcomeClass(row.status)
        classMinutes[outcome][minute, default: 0] += 1
        subjects.add(row.subject)
        addresses.add(row.ip)
        routes.add(String(PeerGroups.routeKind(row.route)))
        tenants[row.tenant, default: 0] += 1
        if outcome == 1 {
            failingSubjects.add(row.subject)
            failingAddresses.add(row.ip)
        }
    }

    mutating func count(_ alert: AnomalyAlert) {
        let name = switch alert.scope {
        case .subject: "subject \(alert.subject ?? "?")"
        case .ip: "address \(alert.ip ?? "?")"
        case .global: "global"
        }
        alerted[name, default: 0] += 1
    }
}
