import SluiceConfiguration
import SluiceCore
import SluiceIntelligence

/// Rules whose limit is relative to the subject's learned baseline, compiled for the hot path
/// (the adaptive feature): nil in ``LiveConfiguration`` when the flag is off or no rule has a
/// `baseline`.
final class BaselineTable: Sendable {
    /// One relative rule: its limit becomes `factor × normal × period`, within `floor…ceiling`,
    /// applied as a multiplier of its first limit.
    struct Entry: Sendable {
        var factor: Double
        var floor: Double
        var ceiling: Double
        /// The rule's first limit (the one `floor` and `ceiling` are counted in).
        var limit: Double
        /// Its period, seconds.
        var period: Double

        /// The multiplier that makes the rule's first limit `factor × normal` per period.
        @inline(__always)
        func multiplier(normal: Double) -> Double {
            min(ceiling, max(floor, factor * normal * period)) / limit
        }
    }

    /// The entry of each metric series (see ``CheckSeries``); nil for series without one.
    let entries: [Entry?]
    let settings: BaselineSettings
    let gate: AdaptiveGate

    init?(_ configuration: Configuration, series: CheckSeries) {
        guard let gate = AdaptiveGate(configuration) else { return nil }
        entries = series.rules(in: configuration).map { rule -> Entry? in
            guard let rule, let baseline = rule.baseline, let first = rule.limits.first else { return nil }
            return Entry(factor: baseline.factor, floor: Double(baseline.floor), ceiling: Double(baseline.ceiling),
                         limit: Double(first.spec.limit), period: Double(first.spec.period) / 1e9)
        }
        guard entries.contains(where: { $0 != nil }) else { return nil }
        settings = configuration.baseline
        self.gate = gate
    }

}
