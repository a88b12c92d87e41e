import Foundation
import Logging
import SluiceCore
import SluiceStore

/// Tenants' own tables kept with the snapshot: each in a file beside it,
/// `<snapshot.path>.tenant-<the tenant's name in hex>`, written with the shared table's (and as
/// durably: a temporary file, fsync'd, renamed) and read back at start.
enum PartitionSnapshots {
    static func path(_ base: String, tenant: String) -> String {
        "\(base).tenant-\(Array(tenant.utf8).map { String(format: "%02x", $0) }.joined())"
    }

    /// Writes every partition of `partitions`; a failure is logged and the previous file stays.
    static func write(_ partitions: TablePartitions?, base: String, now: Int64, logger: Logger) {
        for partition in partitions?.list ?? [] {
            let file = path(base, tenant: partition.tenant)
            do {
                try DurableFile.write(partition.table.snapshot(writtenAt: now).encoded(), to: file)
            } catch {
                logger.error("tenant table snapshot not written", metadata: ["snapshot.path": "\(file)", "tenant": "\(partition.tenant)",
                                                                            "error": "\(error)"])
            }
        }
    }

    /// Restores each partition from its file, if it has one; one that cannot be read is logged
    /// and the tenant starts with an empty table.
    static func restore(_ partitions: TablePartitions?, base: String, logger: Logger) {
        for partition in partitions?.list ?? [] {
            let file = path(base, tenant: partition.tenant)
            guard let bytes = FileManager.default.contents(atPath: file) else { continue }
            do {
                let restored = partition.table.restore(try TableSnapshot(decoding: Array(bytes)))
                logger.info("tenant table restored", metadata: ["snapshot.path": "\(file)", "tenant": "\(partition.tenant)",
                                                                "snapshot.entries": "\(restored)"])
            } catch {
                logger.error("tenant table snapshot unreadable; the tenant starts empty", metadata: [
                    "snapshot.path": "\(file)", "tenant": "\(partition.tenant)", "error": "\(error)"])
            }
        }
    }
}
