import SluiceConfiguration
import SluiceCore

/// Tenants' own limiter tables (`quotas.max_keys`): a tenant with a key quota keeps its keys in a
/// table of that size, whose least recently used keys are evicted when it is full. A tenant
/// flooding new keys then evicts its own, never another tenant's, and its keys do not count
/// against `table.max_entries`.
///
/// Compiled with each configuration; a tenant's table carries over from the previous one (its
/// state is kept across reloads). Used only when checks are decided in this daemon's own table.
final class TablePartitions: Sendable {
    struct Partition: Sendable {
        let tenant: String
        let name: [UInt8]
        let table: LimiterTable
    }

    /// Partition `n` (a check's ``BatchCheck/partition``) is `list[n - 1]`.
    let list: [Partition]
    let index: [UInt64: Int]

    /// Nil when no tenant has `max_keys`.
    init?(_ configuration: Configuration, previous: TablePartitions?) {
        var list: [Partition] = []
        var index: [UInt64: Int] = [:]
        // In name order, so that the numbering does not depend on a dictionary's order.
        for name in configuration.tenants.keys.sorted() {
            guard let maxKeys = configuration.quotas(for: name)?.maxKeys, list.count < Int(UInt16.max) else { continue }
            let bytes = Array(name.utf8)
            let key = QuotaTable.key(bytes)
            let table = previous.flatMap { previous in previous.index[key].map { previous.list[$0].table } }
                ?? Self.table(maxKeys: maxKeys, configuration: configuration)
            index[key] = list.count
            list.append(Partition(tenant: name, name: bytes, table: table))
        }
        guard !list.isEmpty else { return nil }
        self.list = list
        self.index = index
    }

    /// A tenant's table: about 256 keys a shard (at most as many shards as the shared table).
    static func table(maxKeys: Int, configuration: Configuration) -> LimiterTable {
        let most = configuration.shards > 0 ? configuration.shards : LimiterTable.defaultShardCount
        return LimiterTable(shardCount: max(1, min(most, maxKeys / 256)), maxEntries: maxKeys,
                            reclaimsRecovered: configuration.clock == .monotonic)
    }

    /// The partition of a check naming `tenant` (0: the shared table).
    @inline(__always)
    func partition(for tenant: UnsafeRawBufferPointer) -> UInt16 {
        guard tenant.count > 0, let position = index[QuotaTable.key(tenant)], list[position].name.elementsEqual(tenant) else { return 0 }
        return UInt16(position + 1)
    }

    /// The partition of `tenant` by name (0: the shared table).
    func partition(for tenant: String) -> UInt16 {
        Array(tenant.utf8).withUnsafeBytes { partition(for: $0) }
    }

    /// The table of partition `number` (not 0).
    @inline(__always)
    func table(_ number: UInt16) -> LimiterTable { list[Int(number) - 1].table }
}
