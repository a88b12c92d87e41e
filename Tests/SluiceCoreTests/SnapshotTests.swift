import Testing
import SluiceTestKit
@testable import SluiceCore

@Suite("Snapshots", .computes)
struct SnapshotTests {
    static let second: Int64 = 1_000_000_000
    static let start: Int64 = 1_767_225_600 * second

    static func limits() throws -> [[BoundLimit]] {
        let s = second
        return [
            [.inline(try LimitSpec(limit: 3, period: s))],
            [.inline(try LimitSpec(limit: 4, period: 10 * s, algorithm: .tokenBucket))],
            [.inline(try LimitSpec(limit: 5, period: 10 * s, algorithm: .slidingWindow))],
            [.inline(try LimitSpec(limit: 6, period: 60 * s, algorithm: .fixedWindow))],
            [.inline(try LimitSpec(limit: 2, period: 30 * s, algorithm: .concurrency))],
            [.rule("r", index: 0, spec: try LimitSpec(limit: 4, period: s, burst: 2)),
             .rule("r", index: 1, spec: try LimitSpec(limit: 20, period: 3_600 * s, algorithm: .slidingWindow))],
        ]
    }

    @Test("an entry is still 48 bytes with the key's shard bits in it")
    func entrySize() {
        #expect(MemoryLayout<Shard.Entry>.stride == 48)
    }

    @Test("a restored table decides exactly as the original, under another shard count and seed",
          arguments: [(8, 8), (8, 64), (64, 2)])
    func roundTrip(shards: (Int, Int)) throws {
        let limits = try Self.limits()
        var random = SeededGenerator(seed: UInt64(shards.0 * 100 + shards.1))
        let original = LimiterTable(shardCount: shards.0, maxEntries: 100_000, seed: 1)
        var now = Self.start
        func randomCheck(_ table: LimiterTable, key: Int, limit: Int, hits: UInt64, at now: Int64) -> Decision {
            table.check(key: .of(tenant: key % 3 == 0 ? "t" : "", key: "k\(key)"), limits: limits[limit], hits: hits, now: now)
        }
        for _ in 0..<3_000 {
            now += Int64.random(in: 0...(Self.second / 5), using: &random)
            _ = randomCheck(original, key: Int.random(in: 0..<200, using: &random), limit: Int.random(in: 0..<limits.count, using: &random),
                            hits: UInt64.random(in: 0...2, using: &random), at: now)
        }
        let snapshot = original.snapshot(writtenAt: now)
        #expect(snapshot.entries.count == original.statistics().entries)
        #expect(!snapshot.leaseSets.isEmpty, "the concurrency limit left leases")
        let decoded = try TableSnapshot(decoding: snapshot.encoded())
        #expect(decoded == snapshot)

        let restored = LimiterTable(shardCount: shards.1, maxEntries: 100_000, seed: 99)
        #expect(restored.restore(decoded) == snapshot.entries.count)
        #expect(restored.statistics().entries == snapshot.entries.count)
        // The daemon was down for a while; then the same checks go to both tables.
        now += 2 * Self.second
        for round in 0..<3_000 {
            now += Int64.random(in: 0...(Self.second / 5), using: &random)
            let key = Int.random(in: 0..<220, using: &random), limit = Int.random(in: 0..<limits.count, using: &random)
            let hits = UInt64.random(in: 0...2, using: &random)
            let want = randomCheck(original, key: key, limit: limit, hits: hits, at: now)
            var got = randomCheck(restored, key: key, limit: limit, hits: hits, at: now)
            // Lease ids carry the shard index, which differs under another shard count.
            if want.leaseID != 0, got.leaseID != 0 { got.leaseID = want.leaseID }
            #expect(got == want, "round \(round)")
        }
    }

    @Test("truncated, corrupted, foreign and absurd snapshots are refused with a reason, never a trap")
    func refusesBadBytes() throws {
        let table = LimiterTable(shardCount: 4, maxEntries: 1_000, seed: 1)
        let limits = try Self.limits()
        for i in 0..<50 { _ = table.check(key: .of(tenant: "", key: "k\(i)"), limits: limits[i % limits.count], hits: 1, now: Self.start) }
        let good = table.snapshot(writtenAt: Self.start).encoded()
        #expect(try TableSnapshot(decoding: good).entries.count == table.statistics().entries)
        for cut in stride(from: 0, to: good.count, by: 7) {
            #expect(throws: SnapshotError.self) { try TableSnapshot(decoding: Array(good[..<cut])) }
        }
        var flipped = good
        flipped[good.count / 2] ^= 0x40
        do {
            _ = try TableSnapshot(decoding: flipped)
            Issue.record("a flipped byte was accepted")
        } catch {
            #expect(error.description.contains("checksum"))
        }
        #expect(throws: SnapshotError.self) { try TableSnapshot(decoding: Array("not a snapshot at all, just some text here...........".utf8)) }
        // Well-formed bytes that lie: another version, and a count far beyond the file, each
        // with a checksum that matches.
        func sealed(_ body: [UInt8]) -> [UInt8] {
            var bytes = body
            bytes.appendLittleEndian(TableSnapshot.checksum(body[...]))
            return bytes
        }
        var v2 = Array(good[..<(good.count - 8)])
        v2[8] = 2
        do {
            _ = try TableSnapshot(decoding: sealed(v2))
            Issue.record("version 2 was accepted")
        } catch {
            #expect(error.description.contains("version 2"))
        }
        var huge = Array(good[..<(good.count - 8)])
        for index in 24..<32 { huge[index] = 0xFF }
        #expect(throws: SnapshotError.self) { try TableSnapshot(decoding: sealed(huge)) }
        var random = SeededGenerator(seed: 5)
        for _ in 0..<500 {
            let bytes = (0..<Int.random(in: 0..<200, using: &random)).map { _ in UInt8.random(in: 0 ... 255, using: &random) }
            _ = try? TableSnapshot(decoding: sealed(Array("SLUICESN".utf8) + bytes))
        }
    }
}
