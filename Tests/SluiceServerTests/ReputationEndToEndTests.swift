import Foundation
import SluiceClient
@testable import SluiceConfiguration
import SluiceProto
@testable import SluiceServer
import SluiceTestKit
import Testing

/// Reputation through real sockets and a real SQLite file.
@Suite(.ownThreads) struct ReputationEndToEndTests {
    static func yaml(store: String?, rollout: Double = 100, shadow: Bool = false, extra: String = "") -> String {
        """
        rules:
          api: { limit: 100, period: 1s }
        reputation:
          neutral: 50
          half_life: 1h
          block_below: 10
          weights: { auth_failure: -5, scraping: -7 }
        \(store.map { "store: { path: \"\($0)\", commit_interval: 20ms }" } ?? "")
        features:
          reputation: { enabled: true, rollout: \(rollout), shadow: \(shadow) }
        \(extra)
        """
    }

    /// Now, at the start of the suite: events and checks carry it, so reads by the daemon's own
    /// clock (GetReputation, ListReputations) see almost no decay since.
    static let base = UInt64(Date().timeIntervalSince1970 * 1_000)

    static func check(_ key: String, rule: String? = nil, limit: WireLimit? = nil, nowMs: UInt64 = base) -> WireCheck {
        Make.check(key, rule: rule, limit: limit, nowMs: nowMs)
    }

    static func events(_ subject: String, _ kind: String, count: Int, tenant: String = "", atMs: UInt64 = base,
                       durable: Bool = false, note: String = "") -> WireRequest {
        var event = Sluice_V1_ReputationEvent()
        event.tenant = tenant
        event.subject = subject
        event.kind = kind
        event.atMs = atMs
        event.note = note
        var request = WireRequest()
        request.recordEvents.events = Array(repeating: event, count: count)
        request.recordEvents.durable = durable
        return request
    }

    static func get(_ subject: String, tenant: String = "", client: SluiceClient) async throws -> Sluice_V1_GetReputationResponse {
        var request = WireRequest()
        request.getReputation.subject = subject
        request.getReputation.tenant = tenant
        let response = try await client.send(request)
        guard case .getReputation(let answer) = response.body else { throw TestFailure("expected a reputation, got \(response)") }
        return answer
    }

    static func set(_ subject: String, _ action: Sluice_V1_SetReputationRequest.Action, score: Double = 0,
                    client: SluiceClient) async throws -> WireResponse {
        var request = WireRequest()
        request.setReputation = .with {
            $0.subject = subject
            $0.action = action
            $0.score = score
        }
        return try await client.send(request)
    }

    @Test("pipelined durable events that take longer than read_timeout to commit are all answered: waiting on the daemon is not a stall")
    func durablePipelineOutlastsTheReadTimeout() async throws {
        let directory = TestDaemon.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await TestDaemon.with(yaml: Self.yaml(store: "\(directory)/sluice.db"), { $0.readTimeoutMs = 300 }) { daemon in
            let raw = try await RawConnection.connect(daemon.unix)
            var bytes: [UInt8] = []
            for index in 1...25 {
                var request = Self.events("user\(index)", "auth_failure", count: 1, durable: true)
                request.id = UInt64(index)
                bytes += try RawConnection.frame(request)
            }
            // Each waits for its commit (every 100 ms): about 2.5 s in all, well past 300 ms.
            try await raw.write(bytes)
            var answers: [WireResponse] = []
            for _ in 0..<100 where answers.count < 25 && !raw.isClosed {
                try await Task.sleep(for: .milliseconds(100))
                answers = raw.collector.responses.withLockedValue { $0 }
            }
            #expect(answers.map(\.id) == Array(1...25))
            #expect(answers.allSatisfy { $0.recordEvents.committed })
            #expect(!raw.isClosed)
            await raw.close()
        }
    }

    @Test func eventsLowerTheScoreWhichScalesTheLimitAndBlocksBelowTheThreshold() async throws {
        let directory = TestDaemon.temporaryDirectory()
        try await TestDaemon.with(yaml: Self.yaml(store: "\(directory)/sluice.db")) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            // A neutral subject: reported at 50, 1x (the standard curve; sent as none), the rule's own limit.
            let neutral = try await client.verdict(Self.check("login:alice", rule: "api"))
            #expect(neutral.reputation == 50)
            #expect(neutral.multiplier == 0, "1x is sent as none")
            #expect(neutral.limit == 100)
            // Six auth failures (-5 each): 20, where the standard curve gives 0.25×.
            let recorded = try await client.send(Self.events("login:mallory", "auth_failure", count: 6))
            #expect(recorded.recordEvents.recorded == 6)
            #expect(!recorded.recordEvents.committed)
            let penalised = try await client.verdict(Self.check("login:mallory", rule: "api"))
            #expect(penalised.reputation == 20)
            #expect(penalised.multiplier == 0.25)
            #expect(penalised.limit == 25)
            // Two more: 10 is not yet below the threshold; a custom kind (-7) takes it to 3: blocked.
            _ = try await client.send(Self.events("login:mallory", "auth_failure", count: 2))
            #expect(try await client.verdict(Self.check("login:mallory", rule: "api")).allowed)
            let durable = try await client.send(Self.events("login:mallory", "scraping", count: 1, durable: true, note: "/admin"))
            #expect(durable.recordEvents.committed)
            let blocked = try await client.verdict(Self.check("login:mallory", rule: "api"))
            #expect(!blocked.allowed)
            #expect(blocked.reason == .reputation)
            #expect(blocked.reputation == 3)
            // It may retry when the decay brings 3 back over 10: log2(47/40) hours ≈ 14 minutes.
            let expected = log2(47.0 / 40.0) * 3_600_000
            #expect(abs(Double(blocked.retryAfterMs) - expected) <= 1)
            // The same check one retry-after later passes.
            let later = try await client.verdict(Self.check("login:mallory", rule: "api", nowMs: Self.base + blocked.retryAfterMs))
            #expect(later.allowed)
            // GetReputation: the score, when it will be neutral, the events, newest first.
            let answer = try await Self.get("login:mallory", client: client)
            #expect(answer.tracked)
            #expect(abs(answer.reputation.score - 3) < 1, "read by the daemon's clock, later than the checks")
            #expect(answer.reputation.blocked)
            #expect(answer.reputation.events == 9)
            #expect(answer.reputation.neutralAtMs > 0)
            #expect(answer.recentEvents.first?.kind == "scraping")
            #expect(answer.recentEvents.first?.note == "/admin")
            #expect(answer.recentEvents.count == 9)
            let untracked = try await Self.get("login:nobody", client: client)
            #expect(!untracked.tracked)
            #expect(untracked.reputation.score == 50)
            await client.close()
        }
    }

    @Test func operatorsListPinUnpinAndReset() async throws {
        let directory = TestDaemon.temporaryDirectory()
        try await TestDaemon.with(yaml: Self.yaml(store: "\(directory)/sluice.db")) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            for (index, subject) in ["a", "b", "c", "d"].enumerated() {
                _ = try await client.send(Self.events(subject, "auth_failure", count: index + 1))
            }
            var list = WireRequest()
            list.listReputations.pageSize = 3
            let first = try await client.send(list).listReputations
            #expect(first.reputations.map(\.subject) == ["d", "c", "b"])
            #expect(first.total == 4)
            list.listReputations.pageToken = first.nextPageToken
            let second = try await client.send(list).listReputations
            #expect(second.reputations.map(\.subject) == ["a"])
            #expect(second.nextPageToken.isEmpty)
            list.listReputations = .with { $0.order = .best; $0.pageSize = 1 }
            #expect(try await client.send(list).listReputations.reputations.map(\.subject) == ["a"])
            list.listReputations = .with { $0.pageToken = "abc" }
            #expect(try await client.send(list).error.message.contains("page_token 'abc' is not one this daemon gave"))
            list.listReputations = .with { $0.pageSize = 2_000 }
            #expect(try await client.send(list).error.message.contains("page_size 2000 is above 1000"))

            // Pin: events no longer move it, and the pin is committed before the answer.
            let pinned = try await Self.set("a", .pin, score: 95, client: client)
            #expect(pinned.setReputation.reputation.pinned)
            _ = try await client.send(Self.events("a", "auth_failure", count: 3))
            #expect(try await client.verdict(Self.check("a", rule: "api")).reputation == 95)
            let unpinned = try await Self.set("a", .unpin, client: client)
            #expect(!unpinned.setReputation.reputation.pinned)
            _ = try await client.send(Self.events("a", "auth_failure", count: 1, atMs: 0))
            #expect(try await Self.get("a", client: client).reputation.score < 95)
            let reset = try await Self.set("a", .reset, client: client)
            #expect(reset.setReputation.reputation.score == 50)
            #expect(!(try await Self.get("a", client: client)).tracked)
            let bad = try await Self.set("a", .set, score: 101, client: client)
            #expect(bad.error.code == .invalidArgument)
            // Over TCP, overrides are operator requests: refused without admin.allow_tcp.
            let tcp = try await SluiceClient.connect(to: daemon.tcp)
            #expect(try await Self.set("b", .reset, client: tcp).error.code == .forbidden)
            await tcp.close()
            await client.close()
        }
    }

    @Test func invalidEventsRefuseTheWholeBatchWithTheIndex() async throws {
        try await TestDaemon.with(yaml: Self.yaml(store: nil)) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            var request = Self.events("eve", "auth_failure", count: 3)
            request.recordEvents.events[2].kind = "sneezed"
            let unknown = try await client.send(request)
            #expect(unknown.error.code == .invalidArgument)
            #expect(unknown.error.checkIndex == 2)
            #expect(unknown.error.message.contains("unknown event kind 'sneezed'"))
            #expect(!(try await Self.get("eve", client: client)).tracked, "nothing of a refused batch is applied")
            request = Self.events("", "success", count: 1)
            #expect(try await client.send(request).error.message.contains("subject must not be empty"))
            request = Self.events("eve", "success", count: 1, atMs: UInt64(Date().timeIntervalSince1970 * 1_000) + 3_600_000)
            #expect(try await client.send(request).error.message.contains("ahead of the daemon's clock"))
            request = Self.events("eve", "success", count: 1, note: String(repeating: "x", count: 300))
            #expect(try await client.send(request).error.message.contains("note must be at most 256 bytes"))
            request = Self.events("eve", "success", count: 1)
            request.recordEvents.events[0].weight = .infinity
            #expect(try await client.send(request).error.message.contains("outside -100…100"))
            // Durable events need a store; this daemon has none.
            let durable = try await client.send(Self.events("eve", "success", count: 1, durable: true))
            #expect(durable.error.code == .unavailable)
            #expect(durable.error.message.contains("store.path"))
            await client.close()
        }
    }

    @Test func theDaemonRecordsRateLimitedWhenALimitDenies() async throws {
        try await TestDaemon.with(yaml: Self.yaml(store: nil)) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            var limit = WireLimit()
            limit.limit = 1
            limit.periodMs = 3_600_000
            var request = WireRequest()
            request.check.checks = Array(repeating: Self.check("burst", limit: limit), count: 11)
            let verdicts = try await client.send(request).check.verdicts
            #expect(verdicts.filter(\.allowed).count == 1)
            // Ten denials, -1 each (the built-in weight), applied in the background.
            var score = 50.0
            for _ in 0..<100 {
                score = try await Self.get("burst", client: client).reputation.score
                if score < 40.5 { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(abs(score - 40) < 0.5)
            await client.close()
        }
    }

    @Test func shadowModeReportsWouldDenyWithoutEnforcing() async throws {
        try await TestDaemon.with(yaml: Self.yaml(store: nil, shadow: true), { $0.metricsListener = .init(host: "127.0.0.1", port: 0) }) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            _ = try await client.send(Self.events("troll", "auth_failure", count: 9))
            let blocked = try await client.verdict(Self.check("troll", rule: "api"))
            #expect(blocked.allowed, "shadow mode does not enforce")
            #expect(blocked.wouldDeny)
            #expect(blocked.wouldDenyReason == .reputation)
            #expect(blocked.multiplier == 0, "nothing scaled the limit")
            // 25 is 0.375× (37 of 100): 40 checks in one batch are within the real limit, and each
            // is evaluated against what the checks before it left, so the last 3 would be denied.
            _ = try await client.send(Self.events("grumpy", "auth_failure", count: 5))
            var request = WireRequest()
            request.check.checks = Array(repeating: Self.check("grumpy", rule: "api"), count: 40)
            let verdicts = try await client.send(request).check.verdicts
            #expect(verdicts.filter(\.allowed).count == 40)
            #expect(verdicts.prefix(37).filter(\.wouldDeny).isEmpty)
            #expect(verdicts.suffix(3).filter { $0.wouldDeny && $0.wouldDenyReason == .overLimit }.count == 3)
            let port = try #require(daemon.daemon.metricsAddress?.port)
            let body = try HTTPGet.get(port: port, path: "/metrics").body
            #expect(sample("sluice_shadow_would_deny_total{feature=\"reputation\"}", in: body) == 4)
            #expect(sample("sluice_feature_shadow{feature=\"reputation\"}", in: body) == 1)
            #expect(sample("sluice_reputation_events_total{kind=\"auth_failure\"}", in: body) == 14)
            await client.close()
        }
    }

    @Test func flagsChangeAtRuntimeAndAReloadRestoresTheFile() async throws {
        let directory = TestDaemon.temporaryDirectory()
        let file = "\(directory)/sluice.yaml"
        try Self.yaml(store: nil, rollout: 0).write(toFile: file, atomically: true, encoding: .utf8)
        try await TestDaemon.with(file: file) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let subjects = (0..<200).map { "user-\($0)" }
            func reported() async throws -> Set<String> {
                var request = WireRequest()
                request.check.checks = subjects.map { Self.check($0, rule: "api") }
                let verdicts = try await client.send(request).check.verdicts
                return Set(zip(subjects, verdicts).compactMap { $0.1.reputationPresence == nil ? nil : $0.0 })
            }
            #expect(try await reported().isEmpty)
            var previous: Set<String> = []
            for percent in [5.0, 25, 50, 100] {
                var request = WireRequest()
                request.flags.changes = [.with { $0.name = "reputation"; $0.rolloutPercent = percent }]
                let flags = try await client.send(request).flags.flags
                #expect(flags.first { $0.name == "reputation" }?.rolloutPercent == percent)
                #expect(flags.first { $0.name == "reputation" }?.overridden == true)
                let now = try await reported()
                #expect(now.isSuperset(of: previous), "raising the rollout only adds subjects")
                previous = now
            }
            #expect(previous.count == subjects.count)
            var unknown = WireRequest()
            unknown.flags.changes = [.with { $0.name = "telepathy"; $0.enabled = true }]
            #expect(try await client.send(unknown).error.message.contains("no feature named 'telepathy'"))
            // A reload applies the file's flags again.
            var reload = WireRequest()
            reload.reload = Sluice_V1_ReloadRequest()
            _ = try await client.send(reload)
            #expect(try await reported().isEmpty)
            var list = WireRequest()
            list.flags = Sluice_V1_FlagsRequest()
            #expect(try await client.send(list).flags.flags.first { $0.name == "reputation" }?.overridden == false)
            await client.close()
        }
    }

    @Test func aRestartWithTheSameFileKeepsEveryScore() async throws {
        let directory = TestDaemon.temporaryDirectory()
        let firstRead = ContinuousClock.now
        let yaml = Self.yaml(store: "\(directory)/sluice.db")
        var before: [String: Sluice_V1_Reputation] = [:]
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            for index in 0..<300 {
                _ = try await client.send(Self.events("s\(index)", index % 3 == 0 ? "captcha_passed" : "auth_failure", count: 1 + index % 5))
            }
            _ = try await Self.set("s7", .pin, score: 2, client: client)
            for index in 0..<300 { before["s\(index)"] = try await Self.get("s\(index)", client: client).reputation }
            await client.close()
            // No durable request: shutdown commits what is pending.
        }
        try await TestDaemon.with(yaml: yaml) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            for index in 0..<300 {
                let answer = try await Self.get("s\(index)", client: client)
                #expect(answer.tracked)
                // The same record: measured at the same time, with the same events; read a little
                // later by the daemon's clock, so decayed a little further.
                let previous = try #require(before["s\(index)"])
                #expect(answer.reputation.updatedMs == previous.updatedMs)
                #expect(answer.reputation.events == previous.events)
                // A score decays toward 50 with the default half-life (1 h): by at most 50 × (1 − 2^(−t/1 h))
                // in the t since the first daemon's reads began (seconds on a loaded machine).
                let hours = Double((ContinuousClock.now - firstRead).components.seconds + 1) / 3_600
                #expect(abs(answer.reputation.score - previous.score) <= max(0.1, 50 * (1 - pow(2, -hours))), "s\(index)")
            }
            #expect(try await Self.get("s7", client: client).reputation.pinned)
            #expect(try await client.verdict(Self.check("s7", rule: "api")).reason == .reputation)
            await client.close()
        }
    }

    @Test func aCorruptDatabaseIsReportedAndChecksAreStillAnswered() async throws {
        let directory = TestDaemon.temporaryDirectory()
        let path = "\(directory)/sluice.db"
        try Data(repeating: 0x42, count: 32 << 10).write(to: URL(fileURLWithPath: path))
        try await TestDaemon.with(yaml: Self.yaml(store: path), { $0.metricsListener = .init(host: "127.0.0.1", port: 0) }) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            #expect(try await client.verdict(Self.check("k", rule: "api")).allowed)
            // In memory, events still apply; durable ones are refused with the store's complaint.
            #expect(try await client.send(Self.events("k", "auth_failure", count: 2)).recordEvents.recorded == 2)
            #expect(try await client.verdict(Self.check("k", rule: "api")).reputation == 40)
            let durable = try await client.send(Self.events("k", "auth_failure", count: 1, durable: true))
            #expect(durable.error.code == .unavailable)
            #expect(durable.error.message.contains("not a database"), "\(durable.error.message)")
            #expect(durable.error.message.contains(path))
            let port = try #require(daemon.daemon.metricsAddress?.port)
            #expect(sample("sluice_store_up", in: try HTTPGet.get(port: port, path: "/metrics").body) == 0)
            // The file was left as it was, for the operator to inspect.
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)).allSatisfy { $0 == 0x42 })
            await client.close()
        }
    }

    @Test func aLockedDatabaseFailsDurableEventsClearlyUntilReleased() async throws {
        let directory = TestDaemon.temporaryDirectory()
        let path = "\(directory)/sluice.db"
        try await TestDaemon.with(yaml: Self.yaml(store: path, extra: "")) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            // auth_failure, not success: a score near neutral could be forgotten by a sweep midway.
            #expect(try await client.send(Self.events("x", "auth_failure", count: 1, durable: true)).recordEvents.committed)
            // Another process holds the write lock for 6 s (far longer than the 1 s busy timeout:
            // on a loaded machine 3 s could pass before the daemon's commit even tried).
            let holder = try SQLiteLockHolder(path: path, seconds: 6)
            let locked = try await client.send(Self.events("x", "auth_failure", count: 1, durable: true))
            #expect(locked.error.code == .unavailable)
            #expect(locked.error.message.contains("locked"), "\(locked.error.message)")
            // Checks are answered all the while.
            #expect(try await client.verdict(Self.check("x", rule: "api")).allowed)
            try holder.waitUntilReleased()
            // Released: the next durable batch commits, with what was kept from the failed one.
            // auth_failure, not success: a score near neutral could be forgotten by a sweep midway.
            #expect(try await client.send(Self.events("x", "auth_failure", count: 1, durable: true)).recordEvents.committed)
            let answer = try await Self.get("x", client: client)
            #expect(answer.recentEvents.count == 3)
            await client.close()
        }
    }
}
