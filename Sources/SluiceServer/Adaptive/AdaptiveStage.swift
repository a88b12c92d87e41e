import SluiceCore
import SluiceIntelligence

/// Adaptive limiting on the check path, for each check whose subject is in the feature's rollout:
/// - its tier: the tier's multiplier, or its own limits for the rule, and its name in the verdict;
/// - a rule relative to the learned baseline: the subject's `factor × normal`, within the rule's
///   floor and ceiling (and the check's hits are counted toward the baseline);
/// - a rule naming a protected service: the share of the tier's checks the shedding controller
///   admits now (the rest are shed), and its hits counted as the tier's demand.
/// In shadow mode nothing is scaled: the tier is named, what would have been denied is evaluated
/// and counted.
final class AdaptiveStage: CheckStage {
    let tiers: TierBook?
    let baselines: BaselineBook?
    let shedding: SheddingService

    init(tiers: TierBook?, baselines: BaselineBook?, shedding: SheddingService) {
        self.tiers = tiers
        self.baselines = baselines
        self.shedding = shedding
    }

    /// Whether anything adaptive applies to checks, without taking references (a check with the
    /// feature off pays nothing).
    func isActive(in live: LiveConfiguration) -> Bool {
        guard live.adaptive != nil else { return false }
        return (live.tiers != nil && (tiers?.count ?? 0) > 0) || live.load != nil || (baselines != nil && live.baseline != nil)
    }

    func prepare(_ batch: CheckBatch) -> Bool {
        // Read through the batch's configuration and this stage's own `let`s, which both outlive
        // the request: copied into a struct, each reference was retained and released per request.
        let live = batch.live
        guard let gate = live.adaptive else { return false }
        let tierTable = (tiers?.count ?? 0) > 0 ? live.tiers : nil
        let load = live.load
        let baseline = baselines == nil ? nil : live.baseline
        guard tierTable != nil || load != nil || baseline != nil else { return false }
        let untiered = live.tiers?.names.count ?? 0
        let items = batch.items, notes = batch.notes, series = batch.series
        var peeks = false
        let shadow = gate.shadow
        for index in 0..<batch.count {
            let slot = load?.slot(ofSeries: series[index]) ?? -1
            let relative = baseline?.entries[series[index]]
            guard tierTable != nil || slot >= 0 || relative != nil else { continue }
            let subject = batch.subject(index)
            guard gate.includes(subject) else { continue }
            var tierClass = untiered
            var ownLimits = false
            var scale = 1.0
            if let tiers = tierTable, let name = self.tiers?.tier(of: subject), let tier = tiers.index(of: name) {
                tierClass = tier
                notes[index].tier = UnsafeRawBufferPointer(tiers.nameBytes[tier])
                // The tier's own limits for this rule, if it has some, replace the rule's (and
                // the multiplier); otherwise its multiplier scales them.
                if !tiers.rules[tier].isEmpty, let rule = batch.views[index].rule,
                   let limits = tiers.rules[tier][String(decoding: rule, as: UTF8.self)] {
                    ownLimits = true
                    if !shadow { items[index].limits = limits }
                } else {
                    if !shadow { items[index].multiplier *= tiers.multipliers[tier] }
                }
            }
            if let relative, let table = baseline, let book = baselines,
               let normal = book.observe(subject, hits: items[index].hits, now: items[index].now, settings: table.settings), !ownLimits {
                scale = relative.multiplier(normal: normal)
            }
            if slot >= 0, let load {
                // Shedding sheds traffic, not headroom: the tier's checks on the service's rules
                // are admitted in the proportion of its multiplier (a subject well under its
                // limit would never notice a smaller limit).
                let multiplier = load.multiplier(slot: slot, tierClass: tierClass)
                if !load.admit(slot: slot, tierClass: tierClass, hits: items[index].hits, multiplier: multiplier), !items[index].skip {
                    if shadow {
                        if notes[index].wouldDeny == nil { notes[index].wouldDeny = .shed }
                        notes[index].adaptiveShadow = true
                    } else {
                        items[index].skip = true
                        notes[index].blockedFor = load.retryAfter
                        notes[index].blockReason = .shed
                    }
                }
            }
            if scale != 1, !items[index].skip {
                if shadow {
                    // Only tighter limits can deny what was allowed.
                    if scale < 1 {
                        notes[index].peek(scale)
                        notes[index].adaptiveShadow = true
                        peeks = true
                    }
                } else {
                    items[index].multiplier *= scale
                }
            }
            if !shadow { notes[index].multiplier = items[index].multiplier }
        }
        return peeks
    }

    /// Shadow mode: counts the allowed checks the feature would have denied.
    func settle(_ batch: CheckBatch, decisions: UnsafeBufferPointer<Decision>) {
        guard let gate = batch.live.adaptive, gate.shadow else { return }
        var wouldDeny: UInt64 = 0
        for index in 0..<batch.count where batch.notes[index].adaptiveShadow && batch.notes[index].wouldDeny != nil && decisions[index].allowed {
            wouldDeny &+= 1
        }
        if wouldDeny > 0 { shedding.wouldDeny.add(wouldDeny, ordering: .relaxed) }
    }
}
