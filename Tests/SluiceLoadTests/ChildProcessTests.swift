import Foundation
import SluiceLoad
import SluiceTestKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// ChildProcess against real programs: output through a pipe read to its end, exit statuses, a
/// signal's end, and no descriptor of the parent leaking into the child.
@Suite("ChildProcess", .ownThreads)
struct ChildProcessTests {
    @Test("output through a pipe reads to its end, and the exit status comes back")
    func outputAndStatus() throws {
        let child = ChildProcess()
        child.executableURL = URL(fileURLWithPath: "/bin/sh")
        child.arguments = ["-c", "printf 'out'; printf 'err' >&2; exit 3"]
        let out = Pipe(), err = Pipe()
        child.standardOutput = out
        child.standardError = err
        try child.run()
        #expect(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) == "out")
        #expect(String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) == "err")
        child.waitUntilExit()
        #expect(child.terminationStatus == 3 && child.terminationReason == .exit)
        #expect(!child.isRunning)
    }

    @Test("FileHandle.nullDevice (no descriptor of its own) sends the child's stream to /dev/null, not to the parent's")
    func nullDevice() throws {
        let child = ChildProcess()
        child.executableURL = URL(fileURLWithPath: "/bin/sh")
        child.arguments = ["-c", "exec 3>&1; readlink /proc/self/fd/3 >&2"]
        child.standardOutput = FileHandle.nullDevice
        let err = Pipe()
        child.standardError = err
        try child.run()
        let target = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        child.waitUntilExit()
        #expect(target.trimmingCharacters(in: .whitespacesAndNewlines) == "/dev/null")
    }

    @Test("a signal's end is told apart from an exit, and the child keeps only descriptors 0 to 2")
    func signalAndDescriptors() throws {
        // A pipe of the parent's, left open: the child must not hold its write end, or the
        // read below would not see the end of the stream when the child's own output ends.
        let stray = Pipe()
        defer { try? stray.fileHandleForWriting.close() }
        let child = ChildProcess()
        child.executableURL = URL(fileURLWithPath: "/bin/sh")
        child.arguments = ["-c", "ls /proc/self/fd | wc -l"]
        let out = Pipe()
        child.standardOutput = out
        try child.run()
        let count = Int(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines))
        // 0, 1, 2, and the one ls opens to read the folder.
        #expect(count == 4, "\(String(describing: count)) descriptors")
        #expect(child.terminationStatus == 0)

        let sleeper = ChildProcess()
        sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
        sleeper.arguments = ["30"]
        try sleeper.run()
        #expect(sleeper.isRunning)
        kill(sleeper.processIdentifier, SIGKILL)
        sleeper.waitUntilExit()
        #expect(sleeper.terminationReason == .uncaughtSignal && sleeper.terminationStatus == SIGKILL)
    }

    @Test("waitForExit waits for an exit without a thread of the pool, and kills a child still running past its limit")
    func boundedWait() async throws {
        let quick = ChildProcess()
        quick.executableURL = URL(fileURLWithPath: "/bin/sh")
        quick.arguments = ["-c", "sleep 0.2; exit 4"]
        try quick.run()
        #expect(await quick.waitForExit(within: .seconds(30)))
        #expect(quick.terminationStatus == 4 && quick.terminationReason == .exit)

        let stuck = ChildProcess()
        stuck.executableURL = URL(fileURLWithPath: "/bin/sleep")
        stuck.arguments = ["30"]
        try stuck.run()
        let started = ContinuousClock.now
        #expect(await !stuck.waitForExit(within: .milliseconds(300)))
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(!stuck.isRunning)
        #expect(stuck.terminationReason == .uncaughtSignal && stuck.terminationStatus == SIGKILL)
    }

    @Test("a missing executable is an error, not a crash")
    func missing() {
        let child = ChildProcess()
        child.executableURL = URL(fileURLWithPath: "/nonexistent/program")
        #expect(throws: (any Error).self) { try child.run() }
    }
}
