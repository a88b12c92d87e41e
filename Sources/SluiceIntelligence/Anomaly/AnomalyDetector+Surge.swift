import SluiceCore

// What a surge's response needs from the detector (docs/ANOMALY.md, "Surges"): who it knew
// before the surge, and where the surge comes from. Checks compute the same keys from their
// bytes (``SurgeGuard``), so the detector's records and the check path agree without strings.

extension AnomalyDetector {
    /// An address's record key, from its text's bytes (the same as the detector's own).
    @inline(__always)
    public static func addressKey(_ ip: UnsafeRawBufferPointer) -> UInt64 {
        var hasher = StableHasher()
        hasher.combine(bytes: ip)
        return hasher.finalize().low
    }

    /// A subject's record key, from its tenant's and its own bytes (the same as the detector's).
    @inline(__always)
    public static func subjectKey(tenant: UnsafeRawBufferPointer, subject: UnsafeRawBufferPointer) -> UInt64 {
        var hasher = StableHasher()
        if tenant.count > 0 { hasher.combine(bytes: tenant) }
        hasher.combine(bytes: subject)
        return hasher.finalize().low
    }

    /// The key of an address's /24 (IPv4) or /48 (IPv6), from its text: the same for every
    /// address in the prefix, however its groups are written (leading zeros, case, `::`), and
    /// for the prefix's own name (`203.0.113.0/24`, `2001:db8:7::/48`). Nil for text that is
    /// neither.
    public static func prefixKey(_ ip: UnsafeRawBufferPointer) -> UInt64? {
        var colon = false
        for byte in ip where byte == UInt8(ascii: ":") {
            colon = true
            break
        }
        var parts: (UInt64, UInt64, UInt64) = (0, 0, 0)
        var count = 0
        var value: UInt64 = 0
        var digits = 0
        func store() {
            switch count {
            case 0: parts.0 = value
            case 1: parts.1 = value
            default: parts.2 = value
            }
            count += 1
        }
        for byte in ip {
            if colon {
                // Groups of up to 4 hex digits; an empty one is the `::` gap: the rest are 0.
                if byte == UInt8(ascii: ":") {
                    guard digits > 0 else { break }
                    store()
                    if count == 3 { break }
                    value = 0
                    digits = 0
                    continue
                }
                let digit: UInt64
                switch byte {
                case 48...57: digit = UInt64(byte - 48)
                case 97...102: digit = UInt64(byte - 87)
                case 65...70: digit = UInt64(byte - 55)
                default: digit = 16
                }
                guard digit < 16 else { break }
                guard digits < 4 else { return nil }
                value = value << 4 | digit
                digits += 1
            } else {
                // Three decimal octets before the third dot.
                if byte == UInt8(ascii: ".") {
                    guard digits > 0, value <= 255 else { return nil }
                    store()
                    if count == 3 { break }
                    value = 0
                    digits = 0
                    continue
                }
                guard (48...57).contains(byte), digits < 3 else { return nil }
                value = value * 10 + UInt64(byte - 48)
                digits += 1
            }
        }
        if colon {
            if count < 3, digits > 0 { store() }
        } else if count < 3 {
            return nil
        }
        var hasher = StableHasher()
        hasher.combine(colon ? 6 : 4)
        hasher.combine(parts.0)
        hasher.combine(parts.1)
        hasher.combine(parts.2)
        return hasher.finalize().low
    }

    /// ``prefixKey(_:)`` of text.
    public static func prefixKey(_ text: String) -> UInt64? {
        var text = text
        return text.withUTF8 { prefixKey(UnsafeRawBufferPointer($0)) }
    }

    /// The keys of the addresses and subjects first seen at least 5 minutes before `now`: the
    /// population a surge's response must not touch (a false "known" at 1 %: one bot in a
    /// hundred slips through, no regular user is caught).
    public func knownBefore(_ now: Int64) -> BloomFilter {
        let before = now - 5 * 60_000
        var known = BloomFilter(count: subjects.count + sources.count)
        subjects.forEach { key, subject in if subject.firstSeen <= before { known.insert(key) } }
        sources.forEach { key, source in if source.firstSeen <= before { known.insert(key) } }
        return known
    }

    /// The prefixes (/24, /48) holding at least `share` of the new sources' requests over the
    /// last minute or two, busiest first, at most `limit`.
    public func surgePrefixes(share: Double, limit: Int = 16) -> [(name: String, share: Double)] {
        surgeShape.prefixShares().filter { $0.share >= share }.prefix(limit).map { $0 }
    }
}

extension SurgeShape {
    /// Every prefix counted in the current and the last minute, with its share of them, busiest first.
    func prefixShares() -> [(name: String, share: Double)] {
        Self.shares(prefixes, last?.prefixes)
    }

    static func shares(_ sketch: SpaceSaving<String>, _ other: SpaceSaving<String>?) -> [(name: String, share: Double)] {
        var merged: [String: UInt64] = [:]
        for entry in sketch.top(capacity) { merged[entry.key, default: 0] += entry.count }
        for entry in other?.top(capacity) ?? [] { merged[entry.key, default: 0] += entry.count }
        let total = Double(max(1, sketch.total + (other?.total ?? 0)))
        return merged.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }
            .map { ($0.key, Double($0.value) / total) }
    }
}
