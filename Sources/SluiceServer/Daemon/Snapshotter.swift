#if canImport(Glibc)
import Glibc
import SluiceStore
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Foundation
import Logging
import SluiceCore

/// Keeps the limiter table on disk: restores it at start, writes it every interval on a
/// background Dispatch queue and once more on shutdown (its ``service(clock:interval:)``). A write goes to a temporary file in the
/// same folder, is fsync'd and renamed over the old one, so a crash mid-write leaves the previous
/// snapshot whole. A snapshot that cannot be read is reported, moved aside and ignored: the
/// daemon then starts empty, never fails to start because of one.
final class Snapshotter: Sendable {
    let path: String
    let table: LimiterTable
    let time: TimeSource
    let logger: Logger
    let queue = DispatchQueue(label: "sluice.snapshot")
    let metrics: SluiceMetrics?
    /// Run after each snapshot written: what other features save with it (learned baselines,
    /// what anomaly detection learned), each on its own queue.
    let companions: [@Sendable () -> Void]

    init(path: String, table: LimiterTable, time: TimeSource, logger: Logger, metrics: SluiceMetrics? = nil,
         companions: [@Sendable () -> Void] = []) {
        self.path = path
        self.companions = companions
        self.table = table
        self.time = time
        self.logger = logger
        self.metrics = metrics
    }

    /// What one write did.
    struct Written: Sendable {
        var entries: Int
        var bytes: Int
        var durationNanoseconds: Int64
    }

    /// Reads the snapshot at `path` into the table, if there is one. Returns the entries restored.
    @discardableResult
    func restore() -> Int {
        guard let bytes = Self.read(path) else { return 0 }
        do {
            let snapshot = try TableSnapshot(decoding: bytes)
            let restored = table.restore(snapshot)
            let age = max(0, time.now() - snapshot.writtenAt) / 1_000_000
            logger.info("snapshot restored", metadata: ["snapshot.path": "\(path)", "snapshot.entries": "\(restored)",
                                                        "snapshot.age_ms": "\(age)"])
            return restored
        } catch {
            let aside = "\(path).unreadable-\(time.now() / 1_000_000_000)"
            let moved = rename(path, aside) == 0
            logger.error("snapshot unreadable; starting with an empty table", metadata: [
                "snapshot.path": "\(path)", "error": "\(error)", "moved_to": "\(moved ? aside : "(could not move it)")",
            ])
            return 0
        }
    }

    /// Writes a snapshot every `interval`, and a last one when graceful shutdown reaches it
    /// (after any write under way: both run on the snapshot queue).
    func service<C: Clock>(clock: C, interval: Duration) -> PeriodicService<C> where C.Duration == Duration {
        PeriodicService("snapshotter", every: { interval }, on: queue, clock: clock,
                        tick: { [self] in write() }, finish: { [self] in write() })
    }

    /// Writes a snapshot now, after any write under way (an operator's request).
    func writeNow() -> Result<Written, SluiceError> {
        queue.sync { write() }
    }

    /// Takes and writes one snapshot. Errors are logged; the previous file stays in place.
    @discardableResult
    func write() -> Result<Written, SluiceError> {
        let started = time.uptime()
        let snapshot = table.snapshot(writtenAt: time.now())
        do {
            let bytes = snapshot.encoded()
            try DurableFile.write(bytes, to: path)
            let written = Written(entries: snapshot.entries.count, bytes: bytes.count, durationNanoseconds: time.uptime() - started)
            metrics?.snapshotWritten(written, at: time.now())
            for companion in companions { companion() }
            logger.debug("snapshot written", metadata: ["snapshot.path": "\(path)", "snapshot.entries": "\(written.entries)",
                                                        "snapshot.bytes": "\(written.bytes)"])
            return .success(written)
        } catch {
            metrics?.snapshotFailed()
            logger.error("snapshot not written", metadata: ["snapshot.path": "\(path)", "error": "\(error)"])
            return .failure(SluiceError(.io, "\(error)"))
        }
    }

    /// Removes what writes of `path` by earlier processes left behind (`PATH.tmp-PID`, from a
    /// kill -9 or a power loss in the middle of a write): those of this process's id (it has
    /// written nothing yet) or of one that no longer runs. Returns the files removed.
    @discardableResult
    static func removeStaleTemporaries(of path: String, logger: Logger) -> [String] {
        let slash = path.lastIndex(of: "/")
        let folder = slash.map { String(path[..<$0]) } ?? "."
        let prefix = (slash.map { String(path[path.index(after: $0)...]) } ?? path) + ".tmp-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder.isEmpty ? "/" : folder) else { return [] }
        var removed: [String] = []
        for name in names where name.hasPrefix(prefix) {
            guard let pid = Int32(name.dropFirst(prefix.count)), pid > 0 else { continue }
            // kill(pid, 0) fails with ESRCH when no such process exists.
            guard pid == getpid() || (kill(pid, 0) != 0 && errno == ESRCH) else { continue }
            let file = "\(folder)/\(name)"
            if unlink(file) == 0 {
                removed.append(file)
                logger.notice("removed a temporary file an interrupted write left", metadata: ["file": "\(file)"])
            }
        }
        return removed
    }

    /// The file's bytes, or nil if there is no file to read.
    static func read(_ path: String) -> [UInt8]? {
        FileManager.default.contents(atPath: path).map { Array($0) }
    }
}
