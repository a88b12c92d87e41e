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
    /// Borrowed: the stage holds them (see ``Borrowed``).
    private let tierBook: Borrowed<TierBook>?
    private let baselineBook: Borrowed<BaselineBook>?

    init(tiers: TierBook?, baselines: BaselineBook?, shedding: SheddingService) {
        self.tiers = tiers
        self.baselines = baselines
        self.shedding = shedding
        tierBook = tiers.map(Borrowed.init)
        baselineBook = baselines.map(Borrowed.init)
    }

    /// Whether anything adaptive applies to checks, without taking references (a check with the
    /// feature off pays nothing).
    func isActive(in live: LiveConfiguration) -> Bool {
        guard live.adaptive != nil || live.tenantGates?.anyAdaptive == true else { return false }
        return (live.tiers != nil && (tiers?.count ?? 0) > 0) || live.load != nil || (baselines != nil && live.baseline != nil)
    }

    func prepare(_ batch: CheckBatch) -> Bool {
        // The configuration and its tables are read through a guaranteed reference and never
        // bound to locals: each table copied into a local was retained and released per request.
        Unmanaged.passUnretained(batch.live)._withUnsafeGuaranteedRef { live in prepare(batch, live: live) }
    }

    @inline(__always)
    private func prepare(_ batch: CheckBatch, live: LiveConfiguration) -> Bool {
        guard live.adaptive != nil || live.tenantGates?.anyAdaptive == true else { return false }
        var last: (tenant: UnsafeRawBufferPointer, gates: TenantGates.Gates?)?
        let tiered = live.tiers != nil && (tiers?.count ?? 0) > 0
        let learning = baselines != nil && live.baseline != nil
        guard tiered || live.load != nil || learning else { return false }
        let untiered = live.tiers?.names.count ?? 0
        let items = batch.items, notes = batch.notes, series = batch.series
        var peeks = false
        // Borrowed for the batch: each call through a table read from `live` retained it.
        let load = live.load.map(Borrowed.init), baselineTable = live.baseline.map(Borrowed.init)
        for index in 0..<batch.count {
            let slot = load?({ $0.slot(ofSeries: series[index]) }) ?? -1
            let relative = learning ? baselineTable?({ $0.entries[series[index]] }) : nil
            guard tiered || slot >= 0 || relative != nil else { continue }
            // The check's tenant's own flag, or the global one.
            let own = live.tenantGates.map { batch.tenantGates(index, $0, last: &last) } ?? nil
            guard let gate = own.map({ $0.adaptive }) ?? live.adaptive else { continue }
            let shadow = gate.shadow
            let subject = batch.subject(index)
            guard gate.includes(subject) else { continue }
            var tierClass = untiered
            var ownLimits = false
            var scale = 1.0
            if tiered, let tier = tierIndex(of: subject, in: live) {
                tierClass = tier
                notes[index].tier = UnsafeRawBufferPointer(live.tiers!.nameBytes[tier])
                // The tenant's own numbers for the tier (same names, same order), or the configuration's.
                let table = own?.tiers ?? live.tiers!
                // The tier's own limits for this rule, if it has some, replace the rule's (and
                // the multiplier); otherwise its multiplier scales them.
                if let limits = tierLimits(tier: tier, rule: batch.views[index].rule, in: table) {
                    ownLimits = true
                    if !shadow { items[index].limits = limits }
                } else {
                    if !shadow { items[index].multiplier *= table.multipliers[tier] }
                }
            }
            // Counted toward the baseline even when the tier's own limits apply.
            if let relative, let baselineTable, let normal = observe(subject, hits: items[index].hits, now: items[index].now, in: baselineTable),
               !ownLimits {
                scale = relative.multiplier(normal: normal)
            }
            if slot >= 0, let load {
                // Shedding sheds traffic, not headroom: the tier's checks on the service's rules
                // are admitted in the proportion of its multiplier (a subject well under its
                // limit would never notice a smaller limit).
                let admitted = load { load in
                    load.admit(slot: slot, tierClass: tierClass, hits: items[index].hits,
                               multiplier: load.multiplier(slot: slot, tierClass: tierClass))
                }
                if !admitted, !items[index].skip {
                    if shadow {
                        if notes[index].wouldDeny == nil { notes[index].wouldDeny = .shed }
                        notes[index].adaptiveShadow = true
                    } else {
                        items[index].skip = true
                        notes[index].blockedFor = load { $0.retryAfter }
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

    /// The index in the tier table of the subject's tier; nil when it has none, or one the
    /// configuration does not name.
    @inline(__always)
    private func tierIndex(of subject: Fingerprint, in live: LiveConfiguration) -> Int? {
        guard let tierBook, let table = live.tiers else { return nil }
        return tierBook { book in book.withTier(of: subject) { name in name.flatMap { table.names.firstIndex(of: $0) } } }
    }

    /// The tier's own limits for `rule`, if it has some.
    @inline(__always)
    private func tierLimits(tier: Int, rule: UnsafeRawBufferPointer?, in table: TierTable) -> BatchCheck.Limits? {
        guard !table.rules[tier].isEmpty, let rule else { return nil }
        return table.rules[tier][String(decoding: rule, as: UTF8.self)]
    }

    /// Counts the check toward the subject's baseline; its normal rate, once learned.
    @inline(__always)
    private func observe(_ subject: Fingerprint, hits: UInt64, now: Int64, in table: Borrowed<BaselineTable>) -> Double? {
        guard let baselineBook else { return nil }
        let settings = table { $0.settings }
        return baselineBook { $0.observe(subject, hits: hits, now: now, settings: settings) }
    }

    /// Shadow mode: counts the allowed checks the feature would have denied.
    func settle(_ batch: CheckBatch, decisions: UnsafeBufferPointer<Decision>) {
        // Marked only by checks whose gate was in shadow mode (theirs or the global one).
        guard batch.live.adaptive?.shadow == true || batch.live.tenantGates?.anyAdaptive == true else { return }
        var wouldDeny: UInt64 = 0
        for index in 0..<batch.count where batch.notes[index].adaptiveShadow && batch.notes[index].wouldDeny != nil && decisions[index].allowed {
            wouldDeny &+= 1
        }
        if wouldDeny > 0 { shedding.wouldDeny.add(wouldDeny, ordering: .relaxed) }
    }
}
