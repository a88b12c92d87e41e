import SluiceConfiguration
import SluiceCore

/// The series of `sluice_checks_total`: one per (tenant, rule) pair a check can count under,
/// times eight decisions. Labels come only from configured names, so the number of series is
/// bounded by the configuration, never by the keys callers send.
///
/// Each tenant owns a block of slots: slot 0 for inline limits, then one per global rule, then
/// one per rule of its own. The default tenant and every undeclared tenant (labelled `_default`
/// and `_other`) get a block of the first two kinds. A check's series is its tenant's base plus
/// its rule's slot, both stored in the configuration, so counting costs no lookup.
struct CheckSeries: Sendable {
    /// The `decision` label of each of a series' eight counters; the last counts checks a rule in
    /// shadow allowed but would have denied (instead of `allowed`).
    static let decisions = ["allowed", "over_limit", "exceeds_capacity", "blocked", "reputation", "shed", "anomaly", "shadow_over_limit"]
    /// The `tenant` label of the default tenant.
    static let defaultTenant = "_default"
    /// The `tenant` label of tenants the configuration does not declare.
    static let otherTenant = "_other"
    /// The `rule` label of inline limits.
    static let inlineRule = "_inline"

    /// (tenant, rule) labels by series index.
    let labels: [(tenant: String, rule: String)]
    /// The base of the default tenant's block.
    let defaultBase: Int
    /// The base of the block undeclared tenants share.
    let otherBase: Int

    /// Counters needed: eight per series.
    var counterCount: Int { labels.count * Self.decisions.count }

    /// Numbers the series of `configuration`, writing each rule's slot and each tenant's base into it.
    static func assign(_ configuration: inout Configuration) -> CheckSeries {
        let globalNames = configuration.rules.keys.sorted()
        for (index, name) in globalNames.enumerated() { configuration.rules[name]?.seriesSlot = index + 1 }
        var labels: [(tenant: String, rule: String)] = []
        func block(_ tenant: String, own: [String]) -> Int {
            let base = labels.count
            labels.append((tenant, inlineRule))
            for name in globalNames { labels.append((tenant, name)) }
            for name in own { labels.append((tenant, name)) }
            return base
        }
        let defaultBase = block(defaultTenant, own: [])
        let otherBase = block(otherTenant, own: [])
        for tenantName in configuration.tenants.keys.sorted() {
            guard var tenant = configuration.tenants[tenantName] else { continue }
            let own = tenant.rules.keys.sorted()
            tenant.seriesBase = block(tenantName, own: own)
            for (index, name) in own.enumerated() { tenant.rules[name]?.seriesSlot = globalNames.count + 1 + index }
            configuration.tenants[tenantName] = tenant
        }
        return CheckSeries(labels: labels, defaultBase: defaultBase, otherBase: otherBase)
    }

    /// The rule each series counts (nil for inline limits), as its tenant sees it: the tenant's
    /// own first, then the global one; `_default` and `_other` see the global rules.
    func rules(in configuration: Configuration) -> [Configuration.Rule?] {
        labels.map { labels in
            guard labels.rule != Self.inlineRule else { return nil }
            let tenant = labels.tenant == Self.defaultTenant || labels.tenant == Self.otherTenant ? "" : labels.tenant
            return configuration.rule(labels.rule, tenant: tenant)
        }
    }

    /// The counter of `reason` within `series`.
    @inline(__always)
    static func counter(series: Int, reason: DecisionReason) -> Int {
        series &* 8 &+ (Int(reason.rawValue) &- 1)
    }

    /// The counter of checks `series`' rule in shadow would have denied.
    @inline(__always)
    static func shadowCounter(series: Int) -> Int { series &* 8 &+ 7 }
}
