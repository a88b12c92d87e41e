import Foundation
import SluiceLoad

extension Process {
    /// Serialises the launches of every process the tests start.
    static let launching = NSLock()

    /// Runs the process with SluiceLoad's `runSafely()` (a crash of Foundation's `Process.run` on
    /// Linux: with many sockets open the test process crashed in two fresh-clone CI runs of two),
    /// one launch at a time.
    public func spawn() throws {
        Self.launching.lock()
        defer { Self.launching.unlock() }
        try runSafely()
    }
}
