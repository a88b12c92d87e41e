import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SluiceTestKit
import Testing
import SluiceLoad

/// `sluicectl reputation` and `sluicectl flags`, run as processes against the real `sluiced`
/// started on its embedded default (reputation on, in shadow mode) with its own store.
@Suite("sluicectl reputation", .ownThreads)
struct ReputationCommandLineTests {
    static func json(_ text: String) -> [String: Any]? { DaemonProcessTests.json(text) }

    /// A real sluiced on its own socket and store in `directory`, and a way to run sluicectl at it.
    struct Daemon {
        let process: ChildProcess
        let socket: String

        init(directory: String, arguments: [String] = []) async throws {
            socket = "\(directory)/s.sock"
            (process, _) = try DaemonProcessTests.launch(arguments + ["--unix", socket, "--store", "\(directory)/sluice.db",
                                                                      "--snapshot", "off", "--metrics", "off", "--log-level", "warning"])
            #expect(try await DaemonProcessTests.waitForSocket(socket))
        }

        func run(_ arguments: [String]) async throws -> (status: Int32, out: String, err: String) {
            try await DaemonProcessTests.sluicectl(arguments + ["-e", "unix:\(socket)"])
        }

        /// SIGTERM, and the exit status.
        func stop() async -> Int32 {
            kill(process.processIdentifier, SIGTERM)
            await process.waitForExit(within: .seconds(60))
            return process.terminationStatus
        }
    }

    @Test("record, get, list, set, pin, unpin, reset and flags as an operator types them, and README's tiers and alerts examples on the embedded default")
    func commands() async throws {
        let directory = "/tmp/sluicectl-rep-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try await Daemon(directory: directory)
        defer { if daemon.process.isRunning { kill(daemon.process.processIdentifier, SIGKILL) } }
        let run = daemon.run

        // Eight auth failures take mallory from 50 to 10; after that the score decays back toward
        // 50 with the default half-life (1 h). On a loaded machine seconds pass between commands:
        // a score read later must lie between 10 and what the decay allows by then.
        let recordedAt = ContinuousClock.now
        func decayed(_ score: Double) -> Bool {
            let hours = Double((ContinuousClock.now - recordedAt).components.seconds + 1) / 3_600
            return score >= 10 - 0.05 && score <= 50 - 40 * pow(2, -hours) + 0.05
        }
        let recorded = try await run(["reputation", "record", "mallory", "auth_failure", "--count", "8", "--note", "/login", "--durable"])
        #expect(recorded.status == 0)
        #expect(recorded.out.contains("recorded 8 event(s), committed"))
        let get = try await run(["reputation", "get", "mallory", "--json"])
        let object = try #require(Self.json(get.out), "\(get.out) \(get.err)")
        #expect(decayed(object["score"] as? Double ?? 0), "\(object)")
        #expect(object["tracked"] as? Bool == true)
        #expect((object["recent_events"] as? [[String: Any]])?.first?["note"] as? String == "/login")
        let text = try await run(["reputation", "get", "mallory"]).out
        #expect(text.hasPrefix("mallory score="), "\(text)")
        #expect(decayed(Double(text.dropFirst("mallory score=".count).prefix { $0 != " " && $0 != "\n" }) ?? 0), "\(text)")

        _ = try await run(["reputation", "record", "eve", "bad_request"])
        let list = try await run(["reputation", "list", "--limit", "1"])
        #expect(list.out.hasPrefix("mallory score="))
        #expect(list.out.contains("2 subjects tracked; next page: --page 1"))

        // The default is shadow mode: the score is reported, nothing is enforced.
        let check = try await run(["check", "mallory", "--rule", "default", "--json"])
        let verdict = try #require(Self.json(check.out))
        #expect(verdict["allowed"] as? Bool == true)
        #expect(decayed(verdict["reputation"] as? Double ?? 0), "\(verdict)")
        #expect(verdict["multiplier"] == nil)
        #expect(try await run(["reputation", "pin", "mallory", "2"]).out.contains("BLOCKED pinned"))
        let shadow = try #require(Self.json(try await run(["check", "mallory", "--rule", "default", "--json"]).out))
        #expect(shadow["allowed"] as? Bool == true)
        #expect(shadow["would_deny"] as? Bool == true)
        #expect(shadow["would_deny_reason"] as? String == "reputation")

        let enforced = try await run(["flags", "reputation", "--shadow", "off"])
        #expect(enforced.out.contains("reputation: on rollout=100% enforced (changed at runtime"))
        let blocked = try await run(["check", "mallory", "--rule", "default"])
        #expect(blocked.status == 1)
        #expect(blocked.out.contains("reason=reputation"))
        #expect(try await run(["reputation", "set", "mallory", "10"]).status == 0)   // 0.25x below 20, flat
        let limited = try await run(["check", "mallory", "--rule", "default", "--json"])
        #expect(Self.json(limited.out)?["multiplier"] as? Double == 0.25)
        #expect(try await run(["reputation", "unpin", "mallory"]).status == 0)
        #expect(try await run(["reputation", "set", "mallory", "90"]).out.contains("score=90.0 multiplier=1.50"))
        #expect(try await run(["reputation", "reset", "mallory"]).out.contains("score=50.0"))
        #expect(try await run(["reputation", "get", "mallory"]).out.contains("no record"))

        let bad = try await run(["reputation", "record", "x", "sneezed"])
        #expect(bad.status == 2)
        #expect(bad.err.contains("unknown event kind 'sneezed'"))
        #expect(try await run(["flags", "telepathy", "--enable"]).err.contains("no feature named 'telepathy'"))
        #expect(try await run(["flags"]).out.contains("reputation: on rollout=100% enforced"))

        // README's examples, on the embedded default as written there.
        let tier = try await run(["tiers", "set", "acme-corp", "vip"])
        #expect(tier.status == 0 && tier.out.hasPrefix("acme-corp tier=vip"), "\(tier.out) \(tier.err)")
        // Anomaly detection is off in the default: following alerts says so and fails, at once.
        let alerts = try await run(["alerts"])
        #expect(alerts.status == 2)
        #expect(alerts.err.contains("anomaly detection is off"), "\(alerts.err)")

        #expect(await daemon.stop() == 0)
    }

    @Test("sluicectl tiers set, get, list and remove, and the tier in a check's verdict")
    func tiers() async throws {
        let directory = "/tmp/sluicectl-tiers-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = "\(directory)/sluice.yaml"
        try """
        rules: { api: { limit: 10, period: 1s } }
        tiers: { vip: { multiplier: 3, priority: 10 }, free: { multiplier: 0.5 } }
        features: { adaptive: { enabled: true } }
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let daemon = try await Daemon(directory: directory, arguments: ["--config", file])
        defer { if daemon.process.isRunning { kill(daemon.process.processIdentifier, SIGKILL) } }
        let run = daemon.run
        #expect(try await run(["tiers", "set", "acme-corp", "vip"]).out.hasPrefix("acme-corp tier=vip"))
        #expect(try await run(["check", "acme-corp", "--rule", "api"]).out.contains("limit=30"))
        #expect(try await run(["check", "acme-corp", "--rule", "api"]).out.contains("tier=vip"))
        #expect(Self.json(try await run(["tiers", "get", "acme-corp", "--json"]).out)?["tier"] as? String == "vip")
        let list = try await run(["tiers", "list"]).out
        #expect(list.contains("tier vip: multiplier=3 priority=10 subjects=1"))
        #expect(list.contains("tier free: multiplier=0.5 priority=0 subjects=0"))
        #expect(try await run(["tiers", "set", "x", "gold"]).err.contains("no tier named 'gold'"))
        #expect(try await run(["tiers", "remove", "acme-corp"]).out.hasPrefix("removed: acme-corp tier=vip"))
        #expect(try await run(["tiers", "get", "acme-corp"]).out == "no tier\n")
        #expect(await daemon.stop() == 0)
    }
}
