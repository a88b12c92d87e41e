import SluiceCore
import SluiceIntelligence

/// A learned baseline as both stores keep it: one row per subject, its time-of-day buckets'
/// normal rates as little-endian float32s in one blob (NaN: never sampled).
public enum BaselineRow {
    /// The bytes of `normal`.
    public static func blob(_ normal: [Float]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(normal.count * 4)
        for value in normal {
            let bits = value.bitPattern
            for index in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: bits >> (8 * index))) }
        }
        return bytes
    }

    /// The baseline a stored row holds, or nil when the row does not decode (a blob of the
    /// wrong size, negative counts or rates): such a row is skipped and counted, never trusted.
    public static func decode(high: Int64, low: Int64, windowStart: Int64, lastSeen: Int64, samples: Int64, hits: Int64,
                              blob: some Collection<UInt8>) -> (Fingerprint, Baseline)? {
        guard !blob.isEmpty, blob.count % 4 == 0, blob.count <= 4 * 288, (0...Int64(UInt32.max)).contains(samples), hits >= 0 else {
            return nil
        }
        let bytes = Array(blob)
        let normal = stride(from: 0, to: bytes.count, by: 4).map { offset -> Float in
            var bits: UInt32 = 0
            for index in 0..<4 { bits |= UInt32(bytes[offset + index]) << (8 * index) }
            return Float(bitPattern: bits)
        }
        guard normal.allSatisfy({ $0.isNaN || ($0.isFinite && $0 >= 0) }) else { return nil }
        var baseline = Baseline(normal: normal, windowStart: windowStart, lastSeen: lastSeen, samples: UInt32(samples))
        baseline.current = UInt64(hits)
        return (Fingerprint(high: UInt64(bitPattern: high), low: UInt64(bitPattern: low)), baseline)
    }
}
