import Foundation
import SluiceClient
@testable import SluiceConfiguration
import SluiceCore
import SluiceProto
@testable import SluiceServer
import Testing
import SluiceTestKit
import SluiceLoad

/// A restart must not hand callers a fresh quota: through real daemons and a real file.
@Suite("Snapshots end to end", .ownThreads)
struct SnapshotEndToEndTests {
    static let limit = WireLimit(limit: 1, periodMs: 60_000)

    @Test("denied before a restart, still denied after it; allowed once its window passed while the daemon was down")
    func survivesRestart() async throws {
        let directory = TestDaemon.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/table.snapshot"
        let t0 = epochMs
        try await TestDaemon.with({ $0.snapshotPath = path }) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            #expect(try await client.verdict(Make.check("caller", limit: Self.limit, nowMs: t0)).allowed)
            #expect(try await !client.verdict(Make.check("caller", limit: Self.limit, nowMs: t0 + 1)).allowed)
            #expect(try await client.verdict(Make.check("other", limit: Self.limit, nowMs: t0)).allowed)
            await client.close()
        }
        #expect(FileManager.default.fileExists(atPath: path), "shutdown wrote the snapshot")
        try await TestDaemon.with({ $0.snapshotPath = path }) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            let again = try await client.verdict(Make.check("caller", limit: Self.limit, nowMs: t0 + 1_000))
            #expect(!again.allowed, "the restart did not reset the caller's limit")
            #expect(again.retryAfterMs == 59_000)
            // A minute later (the daemon was down meanwhile, as far as the clock is concerned).
            #expect(try await client.verdict(Make.check("other", limit: Self.limit, nowMs: t0 + 60_000)).allowed)
            #expect(try await client.verdict(Make.check("never-seen", limit: Self.limit, nowMs: t0 + 1_000)).allowed)
            await client.close()
        }
    }

    @Test("temporary files that interrupted writes left (kill -9 during a snapshot) are removed at start; a live writer's are kept")
    func staleTemporariesAreRemoved() async throws {
        let directory = TestDaemon.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/table.snapshot"
        // A process id that no longer runs: a child that exited.
        let gone = ChildProcess()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        await gone.waitForExit(within: .seconds(60))
        let dead = gone.processIdentifier
        let stale = ["\(path).tmp-\(dead)", "\(path).anomaly.tmp-\(dead)", "\(path).tmp-\(getpid())"]
        let kept = ["\(path).tmp-1", "\(path).tmp-notapid", "\(directory)/other.tmp-\(dead)"]
        for file in stale + kept {
            #expect(FileManager.default.createFile(atPath: file, contents: Data(repeating: 1, count: 4_096)))
        }
        try await TestDaemon.with({ $0.snapshotPath = path }) { _ in
            for file in stale { #expect(!FileManager.default.fileExists(atPath: file), "\(file) was left") }
            for file in kept { #expect(FileManager.default.fileExists(atPath: file), "\(file) was removed") }
        }
    }

    @Test("a corrupt, truncated or foreign snapshot is moved aside and the daemon starts empty", arguments: [
        Array("this is not a snapshot, it is a grocery list: eggs, milk".utf8),
        [UInt8](), Array("SLUICESN".utf8) + [UInt8](repeating: 0xAB, count: 100),
    ])
    func badSnapshot(bytes: [UInt8]) async throws {
        let directory = TestDaemon.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/table.snapshot"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        try await TestDaemon.with({ $0.snapshotPath = path }) { daemon in
            let client = try await SluiceClient.connect(to: daemon.unix)
            #expect(try await client.verdict(Make.check("k", limit: Self.limit)).allowed, "it serves")
            await client.close()
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(names.contains { $0.hasPrefix("table.snapshot.unreadable-") }, "moved aside: \(names)")
        let fresh = try #require(FileManager.default.contents(atPath: path), "a new snapshot was written on shutdown")
        #expect(try TableSnapshot(decoding: Array(fresh)).entries.count == 1)
    }
}
