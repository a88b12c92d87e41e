import ArgumentParser
import Foundation
import SluiceProto

/// `sluicectl top`: the heaviest subjects, addresses, routes and tenants of the last minute or
/// two, refreshing in the terminal (a `Top` request every --interval).
struct Top: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the heaviest subjects, addresses, routes and tenants, live (docs/ANOMALY.md).",
        discussion: """
            By requests, by denials and by anomaly score, over the current and the previous minute, from the daemon's \
            bounded sketches (anomaly detection must be on; shadow is enough). Refreshes every --interval seconds on a \
            terminal until interrupted; --once (or output that is not a terminal) prints once. --json prints the answer.
            """)

    @OptionGroup var connection: ConnectionOptions
    @Option(name: .long, help: "Entries per list (1 to 100).") var count: UInt32 = 10
    @Option(name: .long, help: "Seconds between refreshes.") var interval: Double = 2
    @Option(name: .long, help: "Only these lists (repeatable): subjects, addresses, routes, tenants.") var show: [String] = []
    @Flag(name: .long, help: "Print once and exit.") var once = false
    @Flag(name: .long, help: "Print the answer as JSON, once.") var json = false

    func validate() throws {
        guard (1...100).contains(count) else { throw ValidationError("--count must be 1 to 100") }
        guard interval >= 0.2, interval <= 3_600 else { throw ValidationError("--interval must be 0.2 to 3600 seconds") }
        let known = ["subjects", "addresses", "routes", "tenants"]
        for name in show where !known.contains(name) {
            throw ValidationError("--show takes \(known.joined(separator: ", ")); got '\(name)'")
        }
    }

    func run() async throws {
        try await Self.reportFailures {
            var request = WireRequest()
            request.top.count = count
            let live = !once && !json && isatty(STDOUT_FILENO) == 1
            repeat {
                let top = try await connection.send(request).top
                if json {
                    try printJSON(top.jsonObject)
                    return
                }
                // Clear the screen and home the cursor, so each refresh replaces the last.
                let screen = (live ? "\u{1B}[H\u{1B}[2J" : "") + Self.render(top, only: Set(show),
                                                                               at: Date(), endpoint: connection.endpointName)
                FileHandle.standardOutput.write(Data(screen.utf8))
                if live { try await Task.sleep(for: .milliseconds(Int64(interval * 1_000))) }
            } while live
        }
    }

    /// The lists as text: a header line, then per dimension its lists side by side.
    static func render(_ top: Sluice_V1_TopResponse, only: Set<String>, at date: Date, endpoint: String) -> String {
        let seconds = Double(top.windowMs) / 1_000
        var out = "sluicectl top — \(endpoint) — \(date.formatted(.iso8601.time(includingFractionalSeconds: false))) — "
        out += String(format: "last %.0f s: %llu checks (%.1f/s), %llu denied (%.1f %%)\n", seconds, top.requests,
                      seconds > 0 ? Double(top.requests) / seconds : 0, top.denied,
                      top.requests > 0 ? Double(top.denied) / Double(top.requests) * 100 : 0)
        for dimension in ["subjects", "addresses", "routes", "tenants"] where only.isEmpty || only.contains(dimension) {
            let lists = top.lists.filter { $0.dimension == dimension }
            guard !lists.isEmpty else { continue }
            out += "\n"
            let width = 38
            out += lists.map { pad("\(dimension.uppercased()) by \($0.measure.replacingOccurrences(of: "_", with: " "))", width) }
                .joined(separator: "  ") + "\n"
            let rows = lists.map(\.entries.count).max() ?? 0
            if rows == 0 { out += "  (none)\n" }
            for row in 0..<rows {
                out += lists.map { list -> String in
                    guard row < list.entries.count else { return pad("", width) }
                    let entry = list.entries[row]
                    let figure = list.measure == "anomaly_score" ? String(format: "%8.2f", entry.value)
                        : String(format: "%8.1f/s", entry.rate)
                    return pad(pad(String(entry.key.prefix(width - 12)), width - 11) + " " + figure, width)
                }.joined(separator: "  ") + "\n"
            }
        }
        return out
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }
}

extension Sluice_V1_TopResponse {
    var jsonObject: [String: Any] {
        [
            "window_ms": windowMs, "requests": requests, "denied": denied,
            "lists": lists.map { list in
                [
                    "dimension": list.dimension, "measure": list.measure,
                    "entries": list.entries.map { ["key": $0.key, "value": $0.value, "rate": $0.rate, "error": $0.error] as [String: Any] },
                ] as [String: Any]
            },
        ]
    }
}
