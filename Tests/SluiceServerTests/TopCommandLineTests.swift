import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SluiceClient
import SluiceProto
import SluiceTestKit
import Testing

/// `sluicectl top` as an operator runs it, against a real sluiced with anomaly detection on in
/// shadow mode: the heaviest subject by requests and by denials, the addresses and routes, the
/// tenant; as text and as JSON.
@Suite("sluicectl top and report --live", .ownThreads)
struct TopCommandLineTests {
    @Test("the heaviest subjects, addresses, routes and tenants of the last minute, by requests and by denials")
    func top() async throws {
        let directory = "/tmp/sluicectl-top-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "features: { anomaly: { enabled: true, shadow: true } }\n".write(toFile: "\(directory)/sluice.yaml", atomically: true, encoding: .utf8)
        let daemon = try await ReputationCommandLineTests.Daemon(directory: directory, arguments: ["--config", "\(directory)/sluice.yaml"])
        defer { if daemon.process.isRunning { kill(daemon.process.processIdentifier, SIGKILL) } }

        // One heavy subject, 120 checks against a limit of 20 a minute (100 denied); 30 light
        // ones, a check each.
        let client = try await SluiceClient.connect(to: .unix(path: daemon.socket))
        func check(_ subject: String, ip: String, route: String) -> WireCheck {
            var check = WireCheck()
            check.key = "api:\(subject)"
            check.subject = subject
            check.ip = ip
            check.route = route
            check.limit = .with {
                $0.limit = 20
                $0.periodMs = 60_000
            }
            return check
        }
        var request = WireRequest()
        request.check.checks = (0..<120).map { _ in check("heavy", ip: "192.0.2.1", route: "GET /api/search") }
            + (0..<30).map { check("light\($0)", ip: "10.0.0.\($0)", route: "GET /api/items") }
        let answer = try await client.send(request)
        #expect(answer.check.verdicts.count { !$0.allowed } == 100)
        await client.close()

        // The pump drains every 100 ms.
        var lists: [[String: Any]] = []
        for _ in 0..<30 {
            let run = try await daemon.run(["top", "--json", "--count", "3"])
            #expect(run.status == 0, "\(run.err)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any], "\(run.out)")
            if object["requests"] as? Int == 150 {
                lists = object["lists"] as? [[String: Any]] ?? []
                #expect(object["denied"] as? Int == 100)
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        func first(_ dimension: String, _ measure: String) -> (key: String, value: Double)? {
            let list = lists.first { $0["dimension"] as? String == dimension && $0["measure"] as? String == measure }
            let entries = list?["entries"] as? [[String: Any]] ?? []
            return entries.first.map { ($0["key"] as? String ?? "", $0["value"] as? Double ?? -1) }
        }
        #expect(first("subjects", "requests")?.key == "heavy" && first("subjects", "requests")?.value == 120)
        #expect(first("subjects", "denials")?.key == "heavy" && first("subjects", "denials")?.value == 100)
        #expect(first("addresses", "requests")?.key == "192.0.2.1")
        #expect(first("routes", "requests")?.key == "GET /api/search")
        #expect(first("routes", "denials")?.key == "GET /api/search")
        #expect(first("tenants", "requests")?.key == "(default)" && first("tenants", "requests")?.value == 150)
        #expect(lists.count == 10, "4 dimensions x 2 measures, and 2 by anomaly score")

        // As a person reads it: once, since the output is not a terminal.
        let text = try await daemon.run(["top", "--show", "subjects", "--show", "routes"])
        #expect(text.status == 0, "\(text.err)")
        #expect(text.out.contains("150 checks") && text.out.contains("100 denied"), "\(text.out)")
        #expect(text.out.contains("SUBJECTS by requests") && text.out.contains("SUBJECTS by denials") && text.out.contains("heavy"))
        #expect(text.out.contains("ROUTES by requests") && !text.out.contains("ADDRESSES"))
        // The last hour as a page: the same checks, the daemon's own denials by reason.
        let page = try await daemon.run(["report", "--live", "--out", "\(directory)/live.html", "--top", "5"])
        #expect(page.status == 0, "\(page.err)")
        #expect(page.err.contains("150 checks"), "\(page.err)")
        let html = try String(contentsOfFile: "\(directory)/live.html", encoding: .utf8)
        #expect(html.contains("Sluice report: sluiced, the last hour") && html.contains("150 requests"))
        #expect(html.contains("Denials by reason") && html.contains("over_limit") && html.contains("heavy"))
        #expect(html.contains("<svg"))
        let neither = try await daemon.run(["report", "--out", "\(directory)/x.html"])
        #expect(neither.status != 0 && neither.err.contains("--live"), "\(neither.err)")
        let bad = try await daemon.run(["top", "--show", "nonsense"])
        #expect(bad.status != 0 && bad.err.contains("--show takes"), "\(bad.err)")
        #expect(await daemon.stop() == 0)
    }
}
