import SluiceCore

/// The switch of one intelligence feature: on or off, the share of subjects it applies to, and
/// whether it is enforced or only computed and reported (shadow).
///
/// Subjects are chosen by a stable hash of the feature's name and the subject, so the choice is
/// the same in every process and on every machine, and raising the percentage only ever adds
/// subjects: one that is in at 5 % is in at 25 %, 50 % and 100 %.
public struct FeatureFlag: Sendable, Equatable {
    /// The feature's name (`reputation`, …).
    public var name: String
    /// Off means the feature is neither computed nor enforced.
    public var enabled: Bool
    /// The share of subjects it applies to, 0…100.
    public var rolloutPercent: Double
    /// Computed and reported (`would_deny`), never enforced.
    public var shadow: Bool

    /// Buckets a subject can fall in: a percentage with two decimals.
    public static let buckets: UInt64 = 10_000

    /// Creates a flag.
    public init(name: String, enabled: Bool = true, rolloutPercent: Double = 100, shadow: Bool = false) {
        self.name = name
        self.enabled = enabled
        self.rolloutPercent = min(100, max(0, rolloutPercent.isFinite ? rolloutPercent : 0))
        self.shadow = shadow
    }

    /// The feature's salt: each feature picks its own subjects at a given percentage.
    public var salt: UInt64 {
        var hasher = StableHasher()
        hasher.combine(name)
        return hasher.finalize().low
    }

    /// How many buckets are in: subjects whose bucket is below this.
    @inlinable
    public var threshold: UInt64 {
        enabled ? UInt64((rolloutPercent * Double(Self.buckets) / 100).rounded(.down)) : 0
    }

    /// The bucket (0 ..< 10,000) of the subject with fingerprint `subject` for a feature salted `salt`.
    @inlinable
    public static func bucket(of subject: Fingerprint, salt: UInt64) -> UInt64 {
        StableHasher.finalMix(subject.high ^ salt) % buckets
    }

    /// Whether the feature applies to the subject with fingerprint `subject` (``CompiledFlag``
    /// is the form the hot path keeps).
    public func includes(_ subject: Fingerprint) -> Bool { CompiledFlag(self).includes(subject) }
}

/// A flag's rollout compiled for the hot path: which subjects it applies to. The one rollout test
/// of every feature (reputation, adaptive limiting, anomaly responses).
public struct CompiledFlag: Sendable, Equatable {
    /// ``FeatureFlag/salt``.
    public let salt: UInt64
    /// ``FeatureFlag/threshold``: buckets below it are in; 0 when the flag is off.
    public let threshold: UInt64

    /// Compiles `flag`.
    public init(_ flag: FeatureFlag) {
        salt = flag.salt
        threshold = flag.threshold
    }

    /// Whether every subject is in (no hashing needed).
    @inlinable
    public var includesAll: Bool { threshold >= FeatureFlag.buckets }

    /// Whether the feature applies to the subject with fingerprint `subject`: without hashing it
    /// when the rollout is full or empty.
    @inlinable @inline(__always)
    public func includes(_ subject: Fingerprint) -> Bool {
        includesAll || (threshold > 0 && FeatureFlag.bucket(of: subject, salt: salt) < threshold)
    }
}
