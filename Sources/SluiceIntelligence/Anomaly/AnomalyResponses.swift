import NIOConcurrencyHelpers
import SluiceCore
import Synchronization

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
        /// For a surge (a global kind): the checks from unknown sources.
        case tighten
        /// For a surge: checks from unknown sources are shed (denied, `REASON_SHED`), except
        /// those of subjects in `spareTiers`.
        case shed
    }

    public var action: Action
    /// How long a block or a tightening lasts (ns).
    public var ttl: Int64
    /// The multiplier of a tightening (0…1); for a surge's block, of the unknown sources
    /// outside the blocked prefixes.
    public var factor: Double
    /// For a surge's block: the prefixes (/24, /48) blocked are those holding at least this
    /// share (0…1) of the new sources' requests.
    public var prefixShare: Double
    /// For a surge's response: subjects in these tiers are never touched by it.
    public var spareTiers: [String]

    public init(action: Action, ttl: Int64 = 600_000_000_000, factor: Double = 0.1, prefixShare: Double = 0.05,
                spareTiers: [String] = []) {
        self.action = action
        self.ttl = ttl
        self.factor = factor
        self.prefixShare = prefixShare
        self.spareTiers = spareTiers
    }
}

/// A surge's response in force (docs/ANOMALY.md, "Surges"): what it does to checks from
/// unknown sources, that is checks whose address and subject the detector had not seen by five
/// minutes before the surge was raised. The regular population is known and is not touched.
public final class SurgeGuard: Sendable {
    /// The alert's kind (its index in ``AnomalyResponseBook/kinds``).
    public let kind: Int
    public let action: AnomalyResponse.Action
    /// When it ends (ns, the checks' clock).
    public let until: Int64
    /// The tightening of unknown sources (for a block, of those outside its prefixes).
    public let factor: Double
    /// Keys (``AnomalyDetector/addressKey(_:)``, ``AnomalyDetector/subjectKey(tenant:subject:)``)
    /// of the addresses and subjects known before the surge.
    public let known: BloomFilter
    /// The keys (``AnomalyDetector/prefixKey(_:)``) of the prefixes a block denies, and their names.
    public let prefixes: [UInt64]
    public let prefixNames: [String]
    /// Tiers it never touches.
    public let spareTiers: [String]

    public init(kind: Int, action: AnomalyResponse.Action, until: Int64, factor: Double, known: BloomFilter,
                prefixes: [(name: String, key: UInt64)], spareTiers: [String]) {
        self.kind = kind
        self.action = action
        self.until = until
        self.factor = factor
        self.known = known
        self.prefixes = prefixes.map(\.key)
        prefixNames = prefixes.map(\.name)
        self.spareTiers = spareTiers
    }

    /// What it does to a check from `ip` by `subject` of `tenant` (the subject's tier named by
    /// `tier` when asked): nil when the source is known or spared, else a block (true) or a
    /// tightening (false, with ``factor``).
    @inline(__always)
    public func verdict(tenant: UnsafeRawBufferPointer, subject: UnsafeRawBufferPointer, ip: UnsafeRawBufferPointer,
                        tier: () -> String?) -> Bool? {
        if ip.count > 0, known.contains(AnomalyDetector.addressKey(ip)) { return nil }
        if known.contains(AnomalyDetector.subjectKey(tenant: tenant, subject: subject)) { return nil }
        if !spareTiers.isEmpty, let name = tier(), spareTiers.contains(name) { return nil }
        switch action {
        case .shed: return true
        case .block:
            if !prefixes.isEmpty, let prefix = AnomalyDetector.prefixKey(ip), prefixes.contains(prefix) { return true }
            return factor < 1 ? false : nil
        default: return factor < 1 ? false : nil
        }
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
                               "many_subjects", "traffic_surge", "failure_surge", "outlier"]
    nonisolated(unsafe) public static let kindBytes: [UnsafeRawBufferPointer] = kinds.map { name in
        let bytes = Array(name.utf8)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        buffer.copyBytes(from: bytes)
        return UnsafeRawBufferPointer(buffer)
    }

    /// With a filter: responses are few, and every check of every subject (and address) asks.
    let map = StripedMap<Entry>(stripeBits: 4, filterWordsPerStripe: 16)

    /// The surge's response in force, if any, and when it ends (0: none), read by checks first.
    let surgeBox = NIOLockedValueBox<SurgeGuard?>(nil)
    let surgeUntil = Atomic<Int64>(0)

    public init() {}

    /// The surge's response in force at `now`, if any: one relaxed load when there is none.
    @inline(__always)
    public func surge(at now: Int64) -> SurgeGuard? {
        guard surgeUntil.load(ordering: .relaxed) > now else { return nil }
        return surgeBox.withLockedValue { $0 }
    }

    /// Puts a surge's response in force, replacing any other.
    public func setSurge(_ surge: SurgeGuard) {
        surgeBox.withLockedValue { $0 = surge }
        surgeUntil.store(surge.until, ordering: .relaxed)
    }

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

    /// Whether any response may be in force (two relaxed loads).
    @inline(__always)
    public var isEmpty: Bool { map.isEmpty && surgeUntil.load(ordering: .relaxed) == 0 }

    /// The response in force for `key` at `now`, nil when none.
    public func entry(for key: Fingerprint, at now: Int64) -> Entry? {
        guard map.mayContain(key), let entry = map.value(for: key), entry.until > now else { return nil }
        return entry
    }

    /// Puts a response in force (replacing an earlier one for the same key).
    public func set(_ entry: Entry, for key: Fingerprint) { map.set(entry, for: key) }

    /// Removes responses that ended by `now`; returns how many.
    @discardableResult
    public func expire(now: Int64) -> Int {
        if surgeUntil.load(ordering: .relaxed) != 0, surgeUntil.load(ordering: .relaxed) <= now {
            surgeBox.withLockedValue { $0 = nil }
            surgeUntil.store(0, ordering: .relaxed)
        }
        return map.removeAll { _, entry in entry.until <= now }.count
    }

    /// Responses in force or not yet expired.
    public var count: Int { map.count }
}
