import SluiceCore

/// What anomaly detection does about an alert of one kind (`anomaly.responses.KIND`).
public struct AnomalyResponse: Sendable, Equatable {
    public enum Action: String, Sendable, CaseIterable {
        /// Only the alert.
        case alert
        /// A reputation event `anomaly` for the subject.
        case penalty
        /// Checks of the subject (or the address) are denied, `REASON_ANOMALY`, for `ttl`.
        case block
        /// Checks of the subject (or the address) get limits `factor` times smaller, for `ttl`.
        case tighten
    }

    public var action: Action
    /// How long a block or a tightening lasts (ns).
    public var ttl: Int64
    /// The multiplier of a tightening (0…1).
    public var factor: Double

    public init(action: Action, ttl: Int64 = 600_000_000_000, factor: Double = 0.1) {
        self.action = action
        self.ttl = ttl
        self.factor = factor
    }
}

/// The responses in force (blocks and tightenings with an end), read by every check while any
/// exists: one relaxed load when none does, else a stripe lock per subject or address.
public final class AnomalyResponseBook: Sendable {
    /// One response in force.
    public struct Entry: Sendable, Equatable {
        /// The alert's kind (its index in ``AnomalyResponseBook/kinds``).
        public var kind: Int
        public var block: Bool
        public var factor: Double
        /// When it ends (ns, the checks' clock).
        public var until: Int64

        public init(kind: Int, block: Bool, factor: Double, until: Int64) {
            self.kind = kind
            self.block = block
            self.factor = factor
            self.until = until
        }
    }

    /// The alert kinds, in a fixed order; each name's bytes live as long as the process (written once, then only read).
    public static let kinds = ["rate_spike", "enumeration", "credential_stuffing", "new_source_surge", "many_sources", "brute_force",
                               "many_subjects", "traffic_surge", "failure_surge"]
    nonisolated(unsafe) public static let kindBytes: [UnsafeRawBufferPointer] = kinds.map { name in
        let bytes = Array(name.utf8)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        buffer.copyBytes(from: bytes)
        return UnsafeRawBufferPointer(buffer)
    }

    /// With a filter: responses are few, and every check of every subject (and address) asks.
    let map = StripedMap<Entry>(stripeBits: 4, filterWordsPerStripe: 16)

    public init() {}

    /// The key of an address.
    public static func key(ip: UnsafeRawBufferPointer) -> Fingerprint { Fingerprint.of(tenant: UnsafeRawBufferPointer(ipTenant), key: ip) }
    public static func key(ip: String) -> Fingerprint {
        var ip = ip
        return ip.withUTF8 { key(ip: UnsafeRawBufferPointer($0)) }
    }
    nonisolated(unsafe) static let ipTenant: UnsafeMutableRawBufferPointer = {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4, alignment: 1)
        buffer.copyBytes(from: Array("\u{0}ip\u{0}".utf8))
        return buffer
    }()

    /// Whether any response may be in force (one relaxed load).
    @inline(__always)
    public var isEmpty: Bool { map.isEmpty }

    /// The response in force for `key` at `now`, nil when none.
    public func entry(for key: Fingerprint, at now: Int64) -> Entry? {
        guard map.mayContain(key), let entry = map.value(for: key), entry.until > now else { return nil }
        return entry
    }

    /// Puts a response in force (replacing an earlier one for the same key).
    public func set(_ entry: Entry, for key: Fingerprint) { map.set(entry, for: key) }

    /// Removes responses that ended by `now`; returns how many.
    @discardableResult
    public func expire(now: Int64) -> Int { map.removeAll { _, entry in entry.until <= now }.count }

    /// Responses in force or not yet expired.
    public var count: Int { map.count }
}
