import SluiceTestKit
import Testing
@testable import SluiceCore

/// A snapshot file is outside input: whatever words it holds (a crafted or damaged file whose
/// checksum matches), deciding against the states it restores never traps, at any time a check
/// may carry and with any limit (the snapshot fuzz target found a token bucket's refill trapping).
@Suite("Restored states", .computes)
struct RestoredStateTests {
    static let words: [UInt64] = [0, 1, 2, 1 << 40, UInt64(Int64.max), UInt64(Int64.max) + 1, UInt64(bitPattern: -1_000_000_000), .max]
    static let times: [Int64] = [0, 1, 1_767_225_600_000_000_000, 7_258_118_399_999_000_000]

    @Test(arguments: 1...5)
    func everyStateDecidesWithoutTrapping(kind: UInt8) throws {
        let specs = try Algorithm.allCases.flatMap { algorithm in
            try [(UInt64(1), Int64(1_000_000)), (10, 1_000_000_000), (LimitSpec.maximumLimit, LimitSpec.maximumPeriod)].map {
                try LimitSpec(limit: $0.0, period: $0.1, burst: $0.0, algorithm: algorithm)
            }
        }
        var decided = 0
        for first in Self.words {
            for second in Self.words {
                for third in [Self.words[0], Self.words[3], Self.words[7]] {
                    let state = try #require(LimiterState(snapshotKind: kind, words: (first, second, third)))
                    for spec in specs where state.matches(spec.algorithm) {
                        for now in Self.times {
                            for hits: UInt64 in [0, 1, spec.limit, LimitSpec.maximumLimit] {
                                let (_, next) = state.evaluate(hits: hits, now: now, spec: spec)
                                _ = next.recoveredAt(spec)
                                _ = state.recoveredAt(spec)
                                decided += 1
                            }
                        }
                    }
                }
            }
        }
        #expect(decided > 0)
    }
}
