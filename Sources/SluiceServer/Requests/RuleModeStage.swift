import SluiceConfiguration
import SluiceCore

/// Rules' own modes, compiled per metric series (a series is one tenant's view of one rule):
/// `shadow` (decide, never deny), `unlimited` (allow without counting) and `replaces` (a rule
/// checked in the same request stands in for the rules it names). Nil on a configuration
/// without any, so the check path pays nothing for them.
final class RuleModes: Sendable {
    static let shadow: UInt8 = 1, unlimited: UInt8 = 2, replaces: UInt8 = 4
    /// Bits per series.
    let flags: [UInt8]
    /// The series a series' rule replaces, within its tenant's block.
    let replaced: [Int: Set<Int>]

    init?(_ configuration: Configuration, series: CheckSeries) {
        let rules = series.rules(in: configuration)
        var flags = [UInt8](repeating: 0, count: rules.count)
        var replaced: [Int: Set<Int>] = [:]
        var byName: [String: [String: Int]] = [:]
        for (index, labels) in series.labels.enumerated() { byName[labels.tenant, default: [:]][labels.rule] = index }
        for (index, rule) in rules.enumerated() {
            guard let rule else { continue }
            if rule.shadow { flags[index] |= Self.shadow }
            if rule.unlimited { flags[index] |= Self.unlimited }
            let targets = rule.replaces.compactMap { byName[series.labels[index].tenant]?[$0] }
            if !targets.isEmpty {
                flags[index] |= Self.replaces
                replaced[index] = Set(targets)
            }
        }
        guard flags.contains(where: { $0 != 0 }) else { return nil }
        self.flags = flags
        self.replaced = replaced
    }
}

/// Applies ``RuleModes`` to a batch: unlimited and replaced checks skip the backend (and are
/// answered allowed by the pipeline); shadow checks are marked, and their denials by their own
/// limits turned into `would_deny` (``CheckPipeline``'s `apply`).
final class RuleModeStage: CheckStage {
    func isActive(in live: LiveConfiguration) -> Bool { live.ruleModes != nil }

    func prepare(_ batch: CheckBatch) -> Bool {
        guard let modes = batch.live.ruleModes else { return false }
        var replaced: Set<Int>?
        for index in 0..<batch.count {
            let series = batch.series[index]
            let flags = series < modes.flags.count ? modes.flags[series] : 0
            guard flags != 0 else { continue }
            if flags & RuleModes.unlimited != 0 {
                batch.items[index].skip = true
                batch.notes[index].ruleMode |= CheckNote.exempt
            }
            if flags & RuleModes.shadow != 0 { batch.notes[index].ruleMode |= CheckNote.shadowed }
            if flags & RuleModes.replaces != 0, let targets = modes.replaced[series] {
                replaced = (replaced ?? []).union(targets)
            }
        }
        if let replaced {
            for index in 0..<batch.count where replaced.contains(batch.series[index]) {
                batch.items[index].skip = true
                batch.notes[index].ruleMode |= CheckNote.exempt
            }
        }
        return false
    }
}

extension Decision {
    /// An unlimited or replaced rule's answer: allowed, nothing counted.
    static let exempt = Decision(allowed: true, limit: 0, remaining: UInt64(UInt32.max), resetAfter: 0, retryAfter: 0,
                                 reason: .withinLimit, algorithm: .gcra)
}
