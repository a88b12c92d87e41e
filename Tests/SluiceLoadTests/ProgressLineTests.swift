import Foundation
@testable import SluiceLoad
import SluiceTestKit
import Testing

/// The progress line long commands draw on a terminal, on a manual clock; and the trace reader's
/// progress, from a trace's own size.
@Suite("Progress line", .computes)
struct ProgressLineTests {
    final class Screen: @unchecked Sendable {
        var text = ""
        var seconds = 100.0
    }

    @Test("the share, the counts and the time left; at most four drawings a second; erased at the end")
    func drawsThrottlesAndErases() {
        let screen = Screen()
        let line = ProgressLine("replaying t.csv.gz", enabled: true, write: { screen.text += $0 }, now: { screen.seconds })
        line.update(done: 0, total: 1_000, detail: "0 rows, 0 alerts")
        #expect(screen.text == "\r\u{1B}[Kreplaying t.csv.gz    0%  0 rows, 0 alerts  0 s")
        screen.seconds += 0.1
        line.update(done: 10, total: 1_000, detail: "9 rows")
        #expect(!screen.text.contains("9 rows"), "drawn again within a quarter second")
        screen.seconds += 9.9
        line.update(done: 250, total: 1_000, detail: "250 rows, 3 alerts")
        #expect(screen.text.hasSuffix("\r\u{1B}[Kreplaying t.csv.gz   25%  250 rows, 3 alerts  30 s left"), "\(screen.text)")
        screen.seconds += 590
        line.update(done: 500, total: 1_000, detail: "")
        #expect(screen.text.hasSuffix(" 50%  10 min 00 s left"), "\(screen.text)")
        line.finish()
        #expect(screen.text.hasSuffix("\r\u{1B}[K"))
        let drawn = screen.text
        line.finish()
        #expect(screen.text == drawn, "erased once")
    }

    @Test("without a whole, the count and the time so far; disabled, nothing at all")
    func unknownTotalAndDisabled() {
        let screen = Screen()
        let line = ProgressLine("copying", enabled: true, write: { screen.text += $0 }, now: { screen.seconds })
        screen.seconds += 7_500
        line.update(done: 5, total: nil, detail: "5 events")
        #expect(screen.text.hasSuffix("copying  5 events  2 h 05 min"), "\(screen.text)")
        let quiet = Screen()
        let off = ProgressLine("copying", enabled: false, write: { quiet.text += $0 }, now: { quiet.seconds })
        off.update(done: 1, total: 2, detail: "x")
        off.finish()
        #expect(quiet.text.isEmpty)
    }

    @Test("durations and counts stay short, and odd inputs do not trap")
    func shortForms() {
        #expect(ProgressLine.duration(59.4) == "59 s")
        #expect(ProgressLine.duration(.infinity) == "?")
        #expect(ProgressLine.duration(-1) == "?")
        #expect(ProgressLine.duration(1e300) == "277777 h 46 min")
        #expect(ProgressLine.count(9_999) == "9999" && ProgressLine.count(12_345) == "12.3k" && ProgressLine.count(4_500_000) == "4.5M")
        #expect(ProgressLine.line(label: "x", done: 5, total: 0, elapsed: 2, detail: "d") == "x  d  2 s")
        #expect(ProgressLine.line(label: "x", done: 5, total: 2, elapsed: 2, detail: "d") == "x  100%  d  2 s")
    }

    @Test("a trace's progress: bytes read against its size, from a gzip trailer or the plain file's")
    func traceProgress() throws {
        let directory = NSTemporaryDirectory() + "sluice-progress-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var csv = "ts_ms,tenant,subject,ip,route,status,cost\n"
        for index in 0..<150_000 {
            csv += "\(1_710_243_000_000 + index),acme,key_\(index % 977),198.51.100.\(index % 200),GET /api/v1/orders,200,1\n"
        }
        let plain = directory + "/t.csv"
        try csv.write(toFile: plain, atomically: true, encoding: .utf8)
        let bytes = UInt64(csv.utf8.count)
        #expect(bytes > 8 << 20, "more than two chunks")
        #expect(TraceReader.expectedBytes(path: plain) == bytes)
        let gzip = ChildProcess()
        gzip.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        gzip.arguments = ["gzip", "-k", plain]
        try gzip.run()
        gzip.waitUntilExit()
        #expect(TraceReader.expectedBytes(path: plain + ".gz") == bytes)
        #expect(TraceReader.expectedBytes(path: directory + "/none.gz") == 0)
        for path in [plain, plain + ".gz"] {
            var reports: [(UInt64, UInt64)] = []
            var rows = 0
            try TraceReader.forEachRow(path: path, progress: { reports.append(($0, $1)) }) { _ in rows += 1 }
            #expect(rows == 150_000)
            #expect(reports.count >= 3, "\(path): \(reports)")
            #expect(reports.last.map { $0 == (bytes, bytes) } == true, "\(path): \(reports)")
            #expect(zip(reports, reports.dropFirst()).allSatisfy { $0.0 < $1.0 }, "growing")
        }
    }
}
