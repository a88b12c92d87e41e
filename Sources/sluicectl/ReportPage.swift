import Foundation
import SluiceIntelligence

/// The report as one HTML page: inline SVG plots and tables, a stylesheet of its own, and a few
/// lines of script that only check the plots drew (`data-rendered` on the body, which the
/// headless-browser test reads). Nothing is fetched: it opens offline.
struct ReportPage {
    struct Episode {
        var name: String
        var start: Int64
        var end: Int64
        /// A labelled benign event (a flash crowd), drawn apart from the attacks.
        var benign: Bool
    }

    let title: String
    let data: ReportData
    let alerts: [AnomalyAlert]
    let episodes: [Episode]
    let scores: (bins: [ReportData.Bin], threshold: Double)
    let top: Int

    static let width = 960.0
    static let height = 220.0
    static let margin = (left: 60.0, right: 150.0, top: 12.0, bottom: 28.0)
    static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                          "#17becf", "#393b79", "#637939", "#8c6d31"]

    var html: String {
        var body = "<h1>Sluice report: \(Self.escape(title))</h1>\n"
        body += "<p class=\"summary\">\(data.rows) requests from \(Self.time(data.first)) to \(Self.time(data.last)) UTC; "
            + "\(alerts.count) alerts; \(data.tenantCount) tenants.</p>\n"
        body += section("Traffic over time per tenant", "Requests a minute.", lineChart(series: tenantSeries))
        body += section("Outcomes by class", "Requests a minute by the status the upstream answered: 429 is a denial, 401/403 a failure.",
                        lineChart(series: classSeries))
        body += section("Alerts on the timeline", episodes.isEmpty ? "One row per kind." : "One row per kind; labelled attacks shaded red, benign events green.",
                        timeline)
        body += section("Scores of the subjects' minutes", String(format: "Minutes by their highest signal against its threshold (the last hour or so, fading); an alert needs a score of at least %.2f.",
                                                                  max(1, scores.threshold)), scoreChart)
        body += "<h2>Heaviest</h2>\n<div class=\"tables\">\n"
        for (name, title) in [("subjects", "Subjects by requests"), ("addresses", "Addresses by requests"), ("routes", "Routes by requests"),
                              ("tenants", "Tenants by requests"), ("failing_subjects", "Subjects by failures (401/403)"),
                              ("failing_addresses", "Addresses by failures (401/403)"), ("alerted", "Alerted on most")] {
            body += table(title, (data.lists[name] ?? []).prefix(top).map { ($0.key, $0.count, $0.error) })
        }
        if let denials = data.lists["denials"], !denials.isEmpty {
            body += table("Denials by reason", denials.prefix(top).map { ($0.key, $0.count, $0.error) })
        }
        body += "</div>\n"
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>Sluice report: \(Self.escape(title))</title>
            <style>
            body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1000px; }
            h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
            p.note { color: #555; margin: 4px 0; }
            svg { background: #fafafa; border: 1px solid #ddd; }
            svg text { font-size: 11px; fill: #333; }
            .tables { display: flex; flex-wrap: wrap; gap: 16px; }
            table { border-collapse: collapse; min-width: 300px; }
            th, td { border-bottom: 1px solid #eee; padding: 2px 8px; text-align: left; }
            td.n { text-align: right; font-variant-numeric: tabular-nums; }
            </style></head>
            <body>
            \(body)<script>
            // Checks that every plot drew something: read by the headless-browser test.
            const plots = [...document.querySelectorAll('svg')];
            const drawn = plots.filter(svg => { const box = svg.getBBox(); return box.width > 0 && box.height > 0 && svg.querySelectorAll('path, rect, circle').length > 0; });
            document.body.dataset.plots = String(plots.length);
            document.body.dataset.rendered = plots.length > 0 && drawn.length === plots.length ? 'yes' : 'no';
            </script>
            </body></html>

            """
    }

    func section(_ heading: String, _ note: String, _ svg: String) -> String {
        "<h2>\(Self.escape(heading))</h2>\n<p class=\"note\">\(Self.escape(note))</p>\n\(svg)\n"
    }

    /// A top-K table; a sketch's counts may overstate by up to their error, shown beside them.
    func table(_ heading: String, _ rows: [(String, UInt64, UInt64)]) -> String {
        var html = "<table><thead><tr><th>\(Self.escape(heading))</th><th class=\"n\">count</th></tr></thead><tbody>\n"
        for (key, count, error) in rows {
            html += "<tr><td>\(Self.escape(key))</td><td class=\"n\">\(error > 0 ? "\(count - error)–\(count)" : "\(count)")</td></tr>\n"
        }
        if rows.isEmpty { html += "<tr><td>none</td><td class=\"n\">0</td></tr>\n" }
        return html + "</tbody></table>\n"
    }

    // MARK: Series

    var minutes: ClosedRange<Int64> { (data.first / 60_000)...(max(data.first, data.last) / 60_000) }

    var tenantSeries: [(String, [Int64: Int])] {
        data.tenantMinutes.mapValues(ReportData.series).sorted { $0.value.values.reduce(0, +) > $1.value.values.reduce(0, +) }
            .map { ($0.key, $0.value) }
    }

    var classSeries: [(String, [Int64: Int])] {
        ReportTally.classes.indices.map { (ReportTally.classes[$0], $0 < data.classMinutes.count ? ReportData.series(data.classMinutes[$0]) : [:]) }
    }

    // MARK: Plots

    func x(_ minute: Double) -> Double {
        let span = Double(max(1, minutes.upperBound - minutes.lowerBound))
        return Self.margin.left + (minute - Double(minutes.lowerBound)) / span * (Self.width - Self.margin.left - Self.margin.right)
    }

    func timeAxis(height: Double) -> String {
        var svg = ""
        let span = minutes.upperBound - minutes.lowerBound
        let step = Int64(max(1, [5, 10, 15, 30, 60, 120, 240, 480, 1_440].first { span / $0 <= 10 } ?? 1_440))
        var tick = (minutes.lowerBound + step - 1) / step * step
        while tick <= minutes.upperBound {
            let position = x(Double(tick))
            svg += "<line x1=\"\(Self.f(position))\" y1=\"\(Self.f(Self.margin.top))\" x2=\"\(Self.f(position))\" y2=\"\(Self.f(height - Self.margin.bottom))\" stroke=\"#e4e4e4\"/>"
            svg += "<text x=\"\(Self.f(position))\" y=\"\(Self.f(height - 10))\" text-anchor=\"middle\">\(Self.clock(tick * 60_000))</text>\n"
            tick += step
        }
        return svg
    }

    func lineChart(series: [(String, [Int64: Int])]) -> String {
        let height = Self.height
        let peak = Double(max(1, series.flatMap(\.1.values).max() ?? 1))
        func y(_ value: Double) -> Double { height - Self.margin.bottom - value / peak * (height - Self.margin.top - Self.margin.bottom) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(Self.width))\" height=\"\(Int(height))\" role=\"img\">\n"
        svg += timeAxis(height: height)
        for fraction in [0.0, 0.5, 1.0] {
            svg += "<text x=\"\(Self.f(Self.margin.left - 6))\" y=\"\(Self.f(y(peak * fraction) + 4))\" text-anchor=\"end\">\(Int(peak * fraction))</text>\n"
        }
        for (index, (name, counts)) in series.enumerated() {
            let color = Self.palette[index % Self.palette.count]
            var path = ""
            for minute in minutes {
                path += (path.isEmpty ? "M" : "L") + "\(Self.f(x(Double(minute)))),\(Self.f(y(Double(counts[minute] ?? 0))))"
            }
            svg += "<path d=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\"><title>\(Self.escape(name))</title></path>\n"
            let legendY = Self.margin.top + 14 * Double(index) + 8
            svg += "<rect x=\"\(Self.f(Self.width - Self.margin.right + 10))\" y=\"\(Self.f(legendY - 8))\" width=\"10\" height=\"10\" fill=\"\(color)\"/>"
            svg += "<text x=\"\(Self.f(Self.width - Self.margin.right + 24))\" y=\"\(Self.f(legendY + 1))\">\(Self.escape(name))</text>\n"
        }
        return svg + "</svg>"
    }

    var timeline: String {
        let kinds = Array(Set(alerts.map(\.kind))).sorted()
        let row = 18.0
        let height = Self.margin.top + Self.margin.bottom + row * Double(max(1, kinds.count))
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(Self.width))\" height=\"\(Int(height))\" role=\"img\">\n"
        svg += timeAxis(height: height)
        for episode in episodes {
            let from = x(Double(episode.start) / 60_000), to = x(Double(episode.end) / 60_000)
            svg += "<rect x=\"\(Self.f(from))\" y=\"\(Self.f(Self.margin.top))\" width=\"\(Self.f(max(1, to - from)))\" height=\"\(Self.f(height - Self.margin.top - Self.margin.bottom))\" "
                + "fill=\"\(episode.benign ? "#2ca02c" : "#d62728")\" fill-opacity=\"0.12\"><title>\(Self.escape(episode.name))</title></rect>\n"
        }
        for (index, kind) in kinds.enumerated() {
            let y = Self.margin.top + row * Double(index) + row / 2
            svg += "<text x=\"\(Self.f(Self.width - Self.margin.right + 10))\" y=\"\(Self.f(y + 4))\">\(Self.escape(kind))</text>\n"
            for alert in alerts where alert.kind == kind {
                let name = alert.subject ?? alert.ip ?? "global"
                svg += "<circle cx=\"\(Self.f(x(Double(alert.timestampMs) / 60_000)))\" cy=\"\(Self.f(y))\" r=\"4\" fill=\"\(Self.palette[index % Self.palette.count])\">"
                    + "<title>\(Self.clock(alert.timestampMs)) \(Self.escape(name)): \(Self.escape(alert.detail))</title></circle>\n"
            }
        }
        if kinds.isEmpty {
            svg += "<text x=\"\(Self.f(Self.margin.left))\" y=\"\(Self.f(Self.margin.top + row / 2 + 4))\">no alerts</text>"
            svg += "<path d=\"M\(Self.f(Self.margin.left)),\(Self.f(height - Self.margin.bottom))H\(Self.f(Self.width - Self.margin.right))\" stroke=\"#999\"/>\n"
        }
        return svg + "</svg>"
    }

    var scoreChart: String {
        let height = Self.height
        let bins = scores.bins.filter { $0.score <= 20 }
        let peak = max(1, bins.map { log10(1 + $0.minutes) }.max() ?? 1)
        let plotWidth = Self.width - Self.margin.left - Self.margin.right
        let barWidth = plotWidth / Double(max(1, bins.count))
        func y(_ minutes: Double) -> Double { height - Self.margin.bottom - log10(1 + minutes) / peak * (height - Self.margin.top - Self.margin.bottom) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(Self.width))\" height=\"\(Int(height))\" role=\"img\">\n"
        let threshold = max(1, scores.threshold)
        var thresholdX = Self.margin.left
        for (index, bin) in bins.enumerated() {
            let left = Self.margin.left + Double(index) * barWidth
            if bin.score < threshold { thresholdX = left + barWidth }
            svg += "<rect x=\"\(Self.f(left))\" y=\"\(Self.f(y(bin.minutes)))\" width=\"\(Self.f(max(1, barWidth - 1)))\" height=\"\(Self.f(height - Self.margin.bottom - y(bin.minutes)))\" "
                + "fill=\"\(bin.score >= threshold ? "#d62728" : "#1f77b4")\"><title>score up to \(String(format: "%.2f", bin.score)): \(String(format: "%.1f", bin.minutes)) minutes</title></rect>\n"
            if index % 6 == 0 {
                svg += "<text x=\"\(Self.f(left))\" y=\"\(Self.f(height - 10))\">\(String(format: "%.2g", bin.score))</text>\n"
            }
        }
        svg += "<path d=\"M\(Self.f(thresholdX)),\(Self.f(Self.margin.top))V\(Self.f(height - Self.margin.bottom))\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"/>"
        svg += "<text x=\"\(Self.f(thresholdX + 4))\" y=\"\(Self.f(Self.margin.top + 10))\">alert threshold \(String(format: "%.2f", threshold))</text>\n"
        svg += "<text x=\"\(Self.f(Self.margin.left - 6))\" y=\"\(Self.f(Self.margin.top + 8))\" text-anchor=\"end\">log</text>\n"
        return svg + "</svg>"
    }

    // MARK: Text

    static func f(_ value: Double) -> String { String(format: "%.1f", value) }

    static func escape(_ text: String) -> String {
        var escaped = ""
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    static func time(_ ms: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withFullDate, .withTime, .withColonSeparatorInTime, .withSpaceBetweenDateAndTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date(timeIntervalSince1970: Double(ms) / 1_000))
    }

    static func clock(_ ms: Int64) -> String {
        let seconds = (ms / 1_000) % 86_400
        return String(format: "%02d:%02d", seconds / 3_600, seconds / 60 % 60)
    }
}
