import SluiceConfiguration
import SluiceCore
import SluiceIntelligence

/// The configured tiers compiled for the hot path, under the `adaptive` flag: nil in
/// ``LiveConfiguration`` when the flag is off or no tier is configured.
///
/// Each tier's name is kept in bytes of its own whose address never changes, so a verdict can
/// carry the name without copying a string.
// @unchecked: the name buffers are allocated once here, never written after, and freed in deinit.
final class TierTable: @unchecked Sendable {
    /// Tier names, and the multiplier and priority of each, in the same order.
    let names: [String]
    let multipliers: [Double]
    let priorities: [Int]
    /// Explicit limits per rule name, per tier.
    let rules: [[String: BatchCheck.Limits]]
    let nameBytes: [UnsafeMutableRawBufferPointer]
    let gate: AdaptiveGate

    init?(_ configuration: Configuration) {
        guard let gate = AdaptiveGate(configuration), !configuration.tiers.isEmpty else { return nil }
        self.gate = gate
        let tiers = configuration.tiers.values.sorted { ($0.priority, $0.name) > ($1.priority, $1.name) }
        names = tiers.map(\.name)
        multipliers = tiers.map(\.multiplier)
        priorities = tiers.map(\.priority)
        rules = tiers.map { tier in tier.rules.mapValues { $0.count == 1 ? .single($0[0]) : .rule($0) } }
        nameBytes = tiers.map { tier in
            let utf8 = Array(tier.name.utf8)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, utf8.count), alignment: 1)
            buffer.copyBytes(from: utf8)
            return UnsafeMutableRawBufferPointer(rebasing: buffer[0..<utf8.count])
        }
    }

    deinit {
        for bytes in nameBytes { bytes.deallocate() }
    }

}

/// The adaptive feature's names.
enum AdaptiveFeature {
    /// Its flag.
    static let name = "adaptive"
}

/// The adaptive flag compiled for the hot path: whether it applies to a subject (its rollout)
/// and whether it only reports (shadow mode).
struct AdaptiveGate: Sendable {
    /// Which subjects it applies to.
    let rollout: CompiledFlag
    let shadow: Bool

    /// Nil when the flag is off.
    init?(_ configuration: Configuration) {
        guard let flag = configuration.features[AdaptiveFeature.name], flag.enabled else { return nil }
        rollout = CompiledFlag(flag)
        shadow = flag.shadow
    }

    /// Whether the feature applies to `subject`.
    @inline(__always)
    func includes(_ subject: Fingerprint) -> Bool { rollout.includes(subject) }
}
