import Logging
import NIOConcurrencyHelpers
import SluiceClient
@testable import SluiceConfiguration
import SluiceCore
import SluiceProto
@testable import SluiceServer
import Testing

/// What an embedder plugs in: a stage of its own (multiplier, block) and the event tap.
final class TestPolicy: CheckStage {
    let calls = NIOLockedValueBox(0)

    func isActive(in live: LiveConfiguration) -> Bool { true }

    func prepare(_ batch: CheckBatch) -> Bool {
        for index in 0..<batch.count {
            calls.withLockedValue { $0 += 1 }
            switch CheckStages.subject(of: batch.views[index]) {
            case "evil":
                batch.items[index].skip = true
                batch.notes[index].blockedFor = 30_000_000_000
                batch.notes[index].blockReason = .blocked
            case "vip":
                batch.items[index].multiplier *= 3
            default:
                break
            }
        }
        return false
    }
}

@Suite("Hooks end to end")
struct HooksEndToEndTests {
    @Test("a stage of an embedder's scales or blocks checks, and every decided check reaches the event tap")
    func policyAndEvents() async throws {
        let directory = TestDaemon.temporaryDirectory()
        var configuration = try ConfigurationLoader.parse("", source: "hooks.yaml")
        configuration.unixListeners = [.init(path: "\(directory)/s.sock")]
        configuration.tcpListeners = []
        configuration.clock = .request
        let policy = TestPolicy()
        let events = EventTap<CheckEvent>(capacity: 4)
        let daemon = try await SluiceDaemon.start(configuration: configuration, logger: Logger(label: "test"), events: events,
                                                 metrics: nil, reloadFrom: nil, stages: [policy], clock: ContinuousClock())
        let client = try await SluiceClient.connect(to: .unix(path: daemon.unixPaths[0]))
        let limit = WireLimit(limit: 2, periodMs: 60_000, algorithm: .fixedWindow)
        func check(_ key: String, subject: String) -> WireCheck {
            var check = Make.check(key, limit: limit)
            check.subject = subject
            return check
        }
        var request = WireRequest()
        request.check.checks = [check("a", subject: "vip"), check("a", subject: "vip"), check("a", subject: "vip"),
                                check("b", subject: "evil"), check("c", subject: "")]
        let verdicts = try await client.send(request).check.verdicts
        #expect(verdicts.count == 5)
        #expect(verdicts[0...2].allSatisfy { $0.allowed }, "a 3x multiplier lets 6 through, not 2")
        #expect(verdicts[2].limit == 6)
        #expect(!verdicts[3].allowed)
        #expect(verdicts[3].reason == .blocked)
        #expect(verdicts[3].retryAfterMs == 30_000)
        #expect(verdicts[4].allowed)
        #expect(policy.calls.withLockedValue { $0 } == 5)
        let drained = events.drain()
        #expect(drained.count == 4, "the tap holds 4; the fifth was dropped, not waited for")
        #expect(events.dropped == 1)
        #expect(drained.first?.subject == "vip" && drained.first?.allowed == true)
        #expect(drained.last?.reason == .blocked)
        var stats = WireRequest()
        stats.stats = .init()
        #expect(try await client.send(stats).stats.eventsDropped == 1)
        await client.close()
        await daemon.shutdown()
    }
}
