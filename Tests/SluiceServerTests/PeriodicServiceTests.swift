import Foundation
import Logging
import NIOConcurrencyHelpers
import SluiceConfiguration
@testable import SluiceServer
import SluiceTestKit
import Testing

@Suite("PeriodicService")
struct PeriodicServiceTests {
    @Test("ticks once per interval of its clock, on its queue, reading the interval anew each turn")
    func ticksPerInterval() async throws {
        let clock = TestClock()
        let queue = DispatchQueue(label: "test.periodic")
        let ticks = NIOLockedValueBox(0)
        let interval = NIOLockedValueBox(Duration.seconds(10))
        let service = PeriodicService("test", every: { interval.withLockedValue { $0 } }, on: queue, clock: clock, tick: {
            dispatchPrecondition(condition: .onQueue(queue))
            ticks.withLockedValue { $0 += 1 }
        })
        let services = RunningServices([service], logger: Logger(label: "test"))
        #expect(await clock.waitForSleeps(1))
        clock.advance(by: .seconds(10))
        #expect(await clock.waitForSleeps(2))
        #expect(ticks.withLockedValue { $0 } == 1)
        // A reload shortens it: the wait already begun keeps its deadline, the next uses the new one.
        interval.withLockedValue { $0 = .seconds(1) }
        clock.advance(by: .seconds(10))
        #expect(await clock.waitForSleeps(3))
        clock.advance(by: .seconds(1))
        #expect(await clock.waitForSleeps(4))
        #expect(ticks.withLockedValue { $0 } == 3)
        await services.shutdown()
        #expect(ticks.withLockedValue { $0 } == 3, "shutdown does not tick")
    }

    @Test("graceful shutdown stops services in reverse order, each finishing before the one started before it is told")
    func shutdownInReverseOrder() async throws {
        let clock = TestClock()
        let finished = NIOLockedValueBox<[String]>([])
        let services = (0..<3).map { index in
            PeriodicService("s\(index)", every: { .seconds(1) }, on: DispatchQueue(label: "test.s\(index)"), clock: clock, tick: {},
                            finish: {
                                // The later service's finish is slow: the earlier one must still wait for it.
                                if index == 2 { usleep(50_000) }
                                finished.withLockedValue { $0.append("s\(index)") }
                            })
        }
        let running = RunningServices(services, logger: Logger(label: "test"))
        #expect(await clock.waitForSleeps(3))
        await running.shutdown()
        #expect(finished.withLockedValue { $0 } == ["s2", "s1", "s0"])
    }

    @Test("the daemon's clock sleeps at least as long as asked, and a cancelled sleep throws at once")
    func dispatchClockSleeps() async throws {
        let clock = DispatchClock()
        let started = ContinuousClock.now
        try await clock.sleep(for: .milliseconds(30))
        #expect(ContinuousClock.now - started >= .milliseconds(30))
        let long = Task { try await clock.sleep(for: .seconds(600)) }
        long.cancel()
        await #expect(throws: CancellationError.self) { try await long.value }
    }

    @Test("a daemon's engines run on the clock it is given, and its shutdown writes the last snapshot")
    func daemonRunsOnItsClock() async throws {
        let directory = TestDaemon.temporaryDirectory()
        var configuration = Configuration()
        configuration.unixListeners = [.init(path: "\(directory)/s.sock")]
        configuration.tcpListeners = []
        configuration.metricsListener = nil
        configuration.snapshotPath = "\(directory)/table.snapshot"
        configuration.snapshotIntervalMs = 60_000
        let clock = TestClock()
        let daemon = try await SluiceDaemon.start(configuration: configuration, logger: Logger(label: "test"), events: nil,
                                                 metrics: nil, reloadFrom: nil, stages: [], clock: clock)
        // memory, shedding, reputation sweep and denials, snapshotter, anomaly: six timers waiting.
        #expect(await clock.waitForSleeps(6))
        #expect(!FileManager.default.fileExists(atPath: "\(directory)/table.snapshot"), "no snapshot before its interval")
        clock.advance(by: .seconds(60))
        var waited = 0
        while !FileManager.default.fileExists(atPath: "\(directory)/table.snapshot"), waited < 1_000 {
            try await Task.sleep(for: .milliseconds(5))
            waited += 1
        }
        #expect(FileManager.default.fileExists(atPath: "\(directory)/table.snapshot"), "the snapshot interval passed on the daemon's clock")
        try FileManager.default.removeItem(atPath: "\(directory)/table.snapshot")
        await daemon.shutdown()
        #expect(FileManager.default.fileExists(atPath: "\(directory)/table.snapshot"), "shutdown writes the last snapshot")
    }
}
