import SluiceConfiguration
import SluiceCore

/// The configuration's rules and tenants compiled for the check path: a check's rule is found
/// from its tenant and rule bytes with the stable hash of those bytes and one probe of a table
/// keyed by fingerprints, where the configuration's path made a `String` of each name, hashed it
/// with SipHash and copied the rule out (about 1,300 instructions a check, callgrind).
///
/// A check it cannot place (a tenant or a rule it does not know) is resolved through the
/// configuration, which says what is wrong.
// @unchecked: the name bytes are allocated once here, never written after, and freed in deinit.
final class RuleIndex: @unchecked Sendable {
    /// A rule, as one tenant sees it (its own, or a global one under the empty tenant).
    struct Rule {
        let tenant: UnsafeRawBufferPointer
        let name: UnsafeRawBufferPointer
        let limits: BatchCheck.Limits
        /// Its slot within its tenant's block of metric series (``CheckSeries``).
        let slot: Int
    }

    /// A declared tenant.
    struct Tenant {
        let name: UnsafeRawBufferPointer
        let seriesBase: Int
    }

    private let rules: [Rule]
    private let ruleIndex: [Fingerprint: Int]
    private let tenants: [Tenant]
    private let tenantIndex: [Fingerprint: Int]
    private let defaultBase: Int
    private let otherBase: Int
    private let strictTenants: Bool
    /// Every name's bytes, in one allocation.
    private let names: UnsafeMutableRawBufferPointer

    /// The rules and tenants of `configuration`, whose series `CheckSeries.assign` numbered.
    init(_ configuration: Configuration, series: CheckSeries) {
        var bytes: [UInt8] = []
        var pending: [(tenant: Range<Int>, name: Range<Int>, rule: Configuration.Rule)] = []
        var pendingTenants: [(name: Range<Int>, base: Int)] = []
        func place(_ string: String) -> Range<Int> {
            let start = bytes.count
            bytes.append(contentsOf: string.utf8)
            return start..<bytes.count
        }
        for (name, rule) in configuration.rules { pending.append((0..<0, place(name), rule)) }
        for (tenantName, tenant) in configuration.tenants {
            let tenantRange = place(tenantName)
            pendingTenants.append((tenantRange, tenant.seriesBase))
            for (name, rule) in tenant.rules { pending.append((tenantRange, place(name), rule)) }
        }
        names = .allocate(byteCount: max(1, bytes.count), alignment: 1)
        names.copyBytes(from: bytes)
        let base = UnsafeRawBufferPointer(names)
        func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: base[range]) }
        rules = pending.map { entry in
            Rule(tenant: slice(entry.tenant), name: slice(entry.name),
                 limits: entry.rule.limits.count == 1 ? .single(entry.rule.limits[0]) : .rule(entry.rule.limits), slot: entry.rule.seriesSlot)
        }
        var ruleIndex: [Fingerprint: Int] = [:]
        for (index, rule) in rules.enumerated() { ruleIndex[Fingerprint.of(tenant: rule.tenant, key: rule.name)] = index }
        self.ruleIndex = ruleIndex
        tenants = pendingTenants.map { Tenant(name: slice($0.name), seriesBase: $0.base) }
        var tenantIndex: [Fingerprint: Int] = [:]
        for (index, tenant) in tenants.enumerated() { tenantIndex[Self.key(tenant: tenant.name)] = index }
        self.tenantIndex = tenantIndex
        defaultBase = series.defaultBase
        otherBase = series.otherBase
        strictTenants = configuration.strictTenants
    }

    deinit { names.deallocate() }

    /// A tenant's key in its own table.
    @inline(__always)
    private static func key(tenant: UnsafeRawBufferPointer) -> Fingerprint {
        Fingerprint.of(tenant: tenant, key: UnsafeRawBufferPointer(start: nil, count: 0))
    }

    /// The limits of rule `rule` as `tenant` sees it (its own first, then the global one), and
    /// the metric series its checks count under; nil when this index cannot place it (an unknown
    /// rule, or an undeclared tenant while tenants are strict).
    @inline(__always)
    func resolve(tenant: UnsafeRawBufferPointer, rule: UnsafeRawBufferPointer) -> (limits: BatchCheck.Limits, series: Int)? {
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        var base = defaultBase
        if tenant.count > 0 {
            if let index = tenantIndex[Self.key(tenant: tenant)], tenants[index].name.elementsEqual(tenant) {
                base = tenants[index].seriesBase
                if let own = find(tenant: tenant, rule: rule) { return (rules[own].limits, base &+ rules[own].slot) }
            } else if strictTenants {
                return nil
            } else {
                base = otherBase
            }
        }
        guard let global = find(tenant: empty, rule: rule) else { return nil }
        return (rules[global].limits, base &+ rules[global].slot)
    }

    @inline(__always)
    private func find(tenant: UnsafeRawBufferPointer, rule: UnsafeRawBufferPointer) -> Int? {
        guard let index = ruleIndex[Fingerprint.of(tenant: tenant, key: rule)],
              rules[index].name.elementsEqual(rule), rules[index].tenant.elementsEqual(tenant) else { return nil }
        return index
    }
}
