/// A limit together with the identity its state is stored under.
///
/// A rule's limits are bound once, when the configuration loads; an inline limit is bound per
/// check from its numbers, so equal inline limits share state.
public struct BoundLimit: Sendable, Hashable {
    /// The limit.
    public var spec: LimitSpec
    /// A stable 64-bit identity, mixed with the key's fingerprint to name the stored state.
    public var identity: UInt64

    /// Binds `spec` under an explicit identity.
    @inlinable public init(spec: LimitSpec, identity: UInt64) {
        self.spec = spec
        self.identity = identity
    }

    /// The `index`-th limit of rule `rule`. Changing the rule's numbers keeps the state; changing
    /// its algorithm starts fresh.
    public static func rule(_ rule: String, index: Int, spec: LimitSpec) -> BoundLimit {
        var hasher = StableHasher()
        hasher.combine("rule")
        hasher.combine(rule)
        hasher.combine(UInt64(index))
        hasher.combine(UInt64(spec.algorithm.rawValue))
        return BoundLimit(spec: spec, identity: hasher.finalize().low)
    }

    /// An inline limit, identified by its numbers.
    @inlinable
    public static func inline(_ spec: LimitSpec) -> BoundLimit {
        var hasher = StableHasher()
        hasher.combine(0x696E_6C69_6E65) // "inline"
        hasher.combine(spec.limit)
        hasher.combine(UInt64(bitPattern: spec.period))
        hasher.combine(spec.burst)
        hasher.combine(UInt64(spec.algorithm.rawValue))
        return BoundLimit(spec: spec, identity: hasher.finalize().low)
    }
}
