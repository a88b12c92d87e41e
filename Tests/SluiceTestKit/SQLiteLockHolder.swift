import Foundation
import SluiceLoad

/// Another process (the `sqlite3` shell) holding a database's write lock, as a backup job or a
/// second daemon pointed at the same file would.
public final class SQLiteLockHolder {
    let process = ChildProcess()
    let input = Pipe()
    let output = Pipe()

    /// Starts `sqlite3 path`, takes the write lock with `statement` inside `BEGIN IMMEDIATE`, and
    /// holds it for `seconds` before committing. Returns once the lock is held.
    public init(path: String, statement: String = "DELETE FROM reputation_events WHERE 0;", seconds: Int) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        process.arguments = [path]
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        // `.timeout`: a daemon's commit under way when BEGIN IMMEDIATE runs would otherwise make
        // it fail ("database is locked") and the shell go on to print "held" without the lock.
        input.fileHandleForWriting.write(Data(".timeout 30000\nBEGIN IMMEDIATE;\n\(statement)\n.print held\n.shell sleep \(seconds)\nCOMMIT;\n".utf8))
        // On a loaded machine the shell can take a while to start: wait for it to say so.
        var said = Data()
        while !String(decoding: said, as: UTF8.self).contains("held") {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            said.append(chunk)
        }
    }

    /// Waits until the lock is released and the shell has exited.
    public func waitUntilReleased() throws {
        try input.fileHandleForWriting.close()
        process.waitUntilExit()
    }
}
