import Foundation

extension Process {
    /// Serialises the launches of every process the tests start.
    static let launching = NSLock()

    /// Runs the process as `run()` does, one launch at a time across the test process:
    /// Foundation's `Process.run` on Linux is not safe to call from several threads at once (CI
    /// crashed with a bad pointer in its memcpy while parallel tests started redis-servers and
    /// sluicectl together).
    public func spawn() throws {
        Self.launching.lock()
        defer { Self.launching.unlock() }
        try run()
    }
}
