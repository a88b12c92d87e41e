import ArgumentParser
import Foundation
import SluiceConfiguration
import SluiceCore
import SluiceIntelligence
import SluiceLoad
import SluiceStore

/// `sluicectl replay`: the anomaly detector over a trace, in the trace's own (simulated) time.
struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run anomaly detection over a trace (shared/traces/FORMAT.md) in simulated time and write its alerts.",
        discussion: "Needs no daemon. The alerts are JSON Lines in the format score.py reads.")

    @Argument(help: "A trace: PREFIX.csv.gz or .csv.") var trace: String
    @Option(help: "Where to write the alerts (JSON Lines).") var alerts: String
    @Flag(help: "Print what each peer group learned (its busiest minutes), busiest groups first.") var peers = false
    @Option(help: "A configuration file whose anomaly: section sets the thresholds (default: the built-in ones).") var config: String?
    @Option(help: ArgumentHelp("A detector state file: read first if it exists, written at the end.",
                               discussion: "The format sluiced keeps beside its snapshot (SNAPSHOT.anomaly): replay history to warm a daemon up before it starts."))
    var state: String?

    func run() async throws {
        try await Self.reportFailures { try replay() }
    }

    func replay() throws {
        var settings = AnomalySettings()
        if let config {
            do { settings = try ConfigurationLoader.load(file: config).anomalyWithTenants } catch { throw Failure("\(error)") }
        }
        let detector = AnomalyDetector(settings: settings)
        if let state, let bytes = FileManager.default.contents(atPath: state) {
            do { try detector.restoreState(Array(bytes)) } catch { throw Failure("\(state): \(error)") }
        }
        let started = Date()
        var lines: [String] = []
        var rows = 0
        var highestBudget = 1.0
        let line = ProgressLine("replaying \((trace as NSString).lastPathComponent)")
        defer { line.finish() }
        do {
            try TraceReader.forEachRow(path: trace, progress: line.enabled ? { read, total in
                line.update(done: Double(read), total: Double(total),
                            detail: "\(ProgressLine.count(rows)) rows, \(ProgressLine.count(lines.count)) alerts")
            } : nil) { row in
                rows += 1
                let raised = detector.observe(CheckEvent(row))
                highestBudget = max(highestBudget, detector.budget)
                for alert in raised { lines.append(alert.jsonLine) }
            }
        } catch let error as TraceError {
            throw Failure(error.description)
        }
        line.finish()
        let seconds = Date().timeIntervalSince(started)
        try (lines.joined(separator: "\n") + (lines.isEmpty ? "" : "\n")).write(toFile: alerts, atomically: true, encoding: .utf8)
        let tracked = detector.tracked
        FileHandle.standardError.write(Data(String(format: "%d rows, %d alerts in %.2f s (%.0f rows/s, decompression included); %d subjects and %d sources tracked at the end; alert budget factor %.2f (highest %.2f)\n",
                                                   rows, lines.count, seconds, Double(rows) / max(seconds, 1e-9), tracked.subjects,
                                                   tracked.sources, detector.budget, highestBudget).utf8))
        if peers {
            print("peer group                                     minutes   hits/min  distinct/min  sustained/min  (p99.9)")
            func show(_ value: Double?) -> String { value.map { String(format: "%.1f", $0) } ?? "-" }
            for group in detector.peerGroups.prefix(40) {
                print(group.name.padding(toLength: 44, withPad: " ", startingAt: 0)
                      + String(format: " %10.0f %10@ %13@ %14@", group.minutes, show(group.hits), show(group.distinct), show(group.sustained)))
            }
        }
        if let state {
            let saving = Date()
            let bytes = detector.encodedState()
            do { try DurableFile.write(bytes, to: state) } catch { throw Failure("\(error)") }
            FileHandle.standardError.write(Data(String(format: "state: %d bytes written to %@ in %.2f s\n", bytes.count, state,
                                                       Date().timeIntervalSince(saving)).utf8))
        }
        let untracked = detector.untracked
        if untracked.subjects + untracked.sources > 0 {
            FileHandle.standardError.write(Data("the detector was full (anomaly.max_subjects, max_sources) for \(untracked.subjects) requests' subjects and \(untracked.sources) requests' addresses\n".utf8))
        }
    }
}
