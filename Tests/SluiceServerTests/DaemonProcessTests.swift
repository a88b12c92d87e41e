import Foundation
import SluiceClient
import SluiceCore
import SluiceProto
import Testing

/// The real `sluiced` executable, as a user runs it.
@Suite("sluiced process")
struct DaemonProcessTests {
    /// The built products sit beside the test bundle.
    static var productsDirectory: URL {
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: url.appendingPathComponent("sluiced").path), url.path != "/" {
            url = url.deletingLastPathComponent()
        }
        return url
    }

    static func launch(_ arguments: [String]) throws -> (Process, Pipe) {
        let process = Process()
        process.executableURL = productsDirectory.appendingPathComponent("sluiced")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = pipe
        try process.run()
        return (process, pipe)
    }

    static func waitForSocket(_ path: String) async throws -> Bool {
        for _ in 0..<300 {
            if let client = try? await SluiceClient.connect(to: .unix(path: path)) {
                await client.close()
                return true
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    @Test("sluiced serves, then exits 0 on SIGTERM and removes its socket", arguments: [SIGTERM, SIGINT])
    func signals(signal: Int32) async throws {
        let directory = "/tmp/sluiced-proc-\(UInt32.random(in: .min ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = "\(directory)/s.sock"
        let snapshot = "\(directory)/table.snapshot"
        let (process, _) = try Self.launch(["--unix", socket, "--tcp", "127.0.0.1:0", "--log-level", "warning",
                                            "--snapshot", snapshot, "--metrics", "127.0.0.1:0"])
        #expect(try await Self.waitForSocket(socket))
        let client = try await SluiceClient.connect(to: .unix(path: socket))
        var check = WireCheck()
        check.key = "proc"
        check.rule = "default"
        var request = WireRequest()
        request.check.checks = [check]
        #expect(try await client.send(request).check.verdicts.first?.allowed == true)
        kill(process.processIdentifier, signal)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(process.terminationReason == .exit)
        #expect(!FileManager.default.fileExists(atPath: socket))
        // The table went to disk on the way out: the default rule's two limits for "proc".
        let bytes = try #require(FileManager.default.contents(atPath: snapshot), "no snapshot was written on \(signal)")
        #expect(try TableSnapshot(decoding: Array(bytes)).entries.count == 2)
        await client.close()
    }

    @Test("a bad configuration file stops sluiced with the file, line and key in one sentence")
    func badConfiguration() throws {
        let path = "/tmp/sluiced-bad-\(UInt32.random(in: .min ... .max)).yaml"
        try "rules:\n  login:\n    limit: 5\n    perod: 1m\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (process, pipe) = try Self.launch(["--config", path])
        process.waitUntilExit()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 2)
        #expect(output == "sluiced: \(path):4:5: rules.login.perod: unknown key; expected one of algorithm, burst, limit, limits, period\n")
    }

    @Test("--print-default-config prints a file that --check-config accepts")
    func printDefault() throws {
        let (process, pipe) = try Self.launch(["--print-default-config"])
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let path = "/tmp/sluiced-default-\(UInt32.random(in: .min ... .max)).yaml"
        try output.write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (check, checkPipe) = try Self.launch(["--config", path, "--check-config"])
        check.waitUntilExit()
        let text = String(decoding: checkPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(check.terminationStatus == 0)
        #expect(text.contains("ok (1 rules"))
    }
}
