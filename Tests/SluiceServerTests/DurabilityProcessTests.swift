import Foundation
#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers
import SluiceClient
import SluiceProto
import Testing
import SluiceTestKit
import SluiceLoad

/// Durable reputation events against the real `sluiced`, killed with SIGKILL mid-stream.
@Suite("sluiced durability", .ownThreads)
struct DurabilityProcessTests {
    static func notes(in database: String) throws -> Set<String> {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        process.arguments = [database, "SELECT note FROM reputation_events;"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Set(String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init))
    }

    /// Sends durable batches of 20 events (subjects `subject-W-N`) from `writers` connections,
    /// back to back, and kills `process` with SIGKILL once `killAfter` events were acknowledged
    /// (or after 10 s); returns the notes of every event acknowledged before the kill.
    static func acknowledgedUntilKilled(socket: String, process: ChildProcess, writers: Int, killAfter: Int) async throws -> [String] {
        let acknowledged = NIOLockedValueBox<[String]>([])
        let stop = NIOLockedValueBox(false)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    let client = try await SluiceClient.connect(to: .unix(path: socket))
                    var batch = 0
                    while !stop.withLockedValue({ $0 }) {
                        var request = WireRequest()
                        request.recordEvents.durable = true
                        let notes = (0..<20).map { "w\(writer)-b\(batch)-e\($0)" }
                        request.recordEvents.events = notes.map { note in
                            Sluice_V1_ReputationEvent.with {
                                $0.subject = "subject-\(writer)-\(batch % 7)"
                                $0.kind = "auth_failure"
                                $0.note = note
                            }
                        }
                        batch += 1
                        guard let response = try? await client.send(request) else { break }   // the daemon died
                        if case .recordEvents(let answer) = response.body, answer.committed {
                            acknowledged.withLockedValue { $0.append(contentsOf: notes) }
                        }
                    }
                    await client.close()
                }
            }
            group.addTask {
                for _ in 0..<1_000 where acknowledged.withLockedValue({ $0.count }) < killAfter {
                    try await Task.sleep(for: .milliseconds(10))
                }
                kill(process.processIdentifier, SIGKILL)
                await process.waitForExit(within: .seconds(60))
                stop.withLockedValue { $0 = true }
            }
            try await group.waitForAll()
        }
        return acknowledged.withLockedValue { $0 }
    }

    @Test("kill -9 in the middle of a stream of durable events loses none that were acknowledged")
    func killNineLosesNoAcknowledgedEvent() async throws {
        let directory = "/tmp/sluiced-durable-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = "\(directory)/s.sock", database = "\(directory)/sluice.db"
        let (process, _) = try DaemonProcessTests.launch(["--unix", socket, "--store", database, "--snapshot", "off",
                                                          "--metrics", "off", "--log-level", "warning"])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        #expect(try await DaemonProcessTests.waitForSocket(socket))

        let acked = try await Self.acknowledgedUntilKilled(socket: socket, process: process, writers: 4, killAfter: 2_000)
        #expect(process.terminationReason == .uncaughtSignal)
        #expect(acked.count >= 1_000, "too few batches acknowledged before the kill to mean anything: \(acked.count)")
        let stored = try Self.notes(in: database)
        let lost = acked.filter { !stored.contains($0) }
        #expect(lost.isEmpty, "\(lost.count) acknowledged events lost, e.g. \(lost.prefix(3))")
        print("durability: \(acked.count) events acknowledged before SIGKILL, \(stored.count) in the database, \(lost.count) lost")

        // A restart on the same file opens it (recovering the WAL) and serves the scores.
        let (again, _) = try DaemonProcessTests.launch(["--unix", socket, "--store", database, "--snapshot", "off",
                                                        "--metrics", "off", "--log-level", "warning"])
        defer { if again.isRunning { kill(again.processIdentifier, SIGKILL) } }
        #expect(try await DaemonProcessTests.waitForSocket(socket))
        try await Self.servesTheScoresThenStops(again, socket: socket)
    }

    /// The daemon at `socket` (started after the kill) tracks `subject-0-0` with its score moved
    /// below neutral by the events sent before; then it stops cleanly on SIGTERM.
    static func servesTheScoresThenStops(_ daemon: ChildProcess, socket: String) async throws {
        let client = try await SluiceClient.connect(to: .unix(path: socket))
        var get = WireRequest()
        get.getReputation.subject = "subject-0-0"
        let answer = try await client.send(get).getReputation
        #expect(answer.tracked)
        #expect(answer.reputation.score < 50)
        await client.close()
        kill(daemon.processIdentifier, SIGTERM)
        await daemon.waitForExit(within: .seconds(60))
        #expect(daemon.terminationStatus == 0)
    }
}
