import SluiceConfiguration
import SluiceCore
import SluiceIntelligence

/// Anomaly detection's flag as the check path reads it.
struct AnomalyGate: Sendable {
    /// Whether the tenant's checks are offered to detection and its responses applied.
    let enabled: Bool
    /// Responses reported, never enforced.
    let shadow: Bool
    /// The subjects responses apply to; nil: all.
    let rollout: CompiledFlag?

    init(_ configuration: Configuration) {
        let flag = configuration.features[AnomalyService.feature]
        enabled = flag?.enabled == true
        shadow = flag?.shadow == true
        rollout = flag.map(CompiledFlag.init)
    }
}

/// Tenants' own settings (`tenants.NAME.features`, `tenants.NAME.reputation.weights`) compiled
/// for the check path: for each tenant with some, the gates its checks take instead of the
/// global ones. A check of any other tenant takes the global gates.
final class TenantGates: Sendable {
    struct Gates: Sendable {
        let name: [UInt8]
        let reputation: ReputationGate?
        let adaptive: AdaptiveGate?
        let anomaly: AnomalyGate
        /// Its tiers with its own numbers (the configuration's names, in the same order); nil
        /// when it sets none of its own.
        let tiers: TierTable?
    }

    let entries: [UInt64: Gates]
    /// Whether some tenant has each feature on (so that its stage runs when the global flag is off).
    let anyReputation: Bool
    let anyAdaptive: Bool
    let anyAnomaly: Bool

    /// Nil when no tenant has settings of its own.
    init?(_ configuration: Configuration) {
        var entries: [UInt64: Gates] = [:]
        for name in configuration.tenants.keys where configuration.hasOwnSettings(name) {
            let own = configuration.settings(for: name)
            let bytes = Array(name.utf8)
            let tiers = configuration.tenants[name]?.tierOverrides.isEmpty == false ? TierTable(Self.withAdaptive(own)) : nil
            entries[QuotaTable.key(bytes)] = Gates(name: bytes, reputation: ReputationGate(own), adaptive: AdaptiveGate(own),
                                                   anomaly: AnomalyGate(own), tiers: tiers)
        }
        guard !entries.isEmpty else { return nil }
        self.entries = entries
        anyReputation = entries.values.contains { $0.reputation != nil }
        anyAdaptive = entries.values.contains { $0.adaptive != nil }
        anyAnomaly = entries.values.contains { $0.anomaly.enabled }
    }

    /// `configuration` with the adaptive flag on, for compiling tables the flag only gates.
    static func withAdaptive(_ configuration: Configuration) -> Configuration {
        var on = configuration
        on.features[AdaptiveFeature.name] = FeatureFlag(name: AdaptiveFeature.name)
        return on
    }

    /// The gates of `tenant`, nil when it has no settings of its own.
    @inline(__always)
    func gates(for tenant: UnsafeRawBufferPointer) -> Gates? {
        guard tenant.count > 0, let entry = entries[QuotaTable.key(tenant)], entry.name.elementsEqual(tenant) else { return nil }
        return entry
    }
}

extension CheckBatch {
    /// The gates check `index` takes: its tenant's own, or nil for the global ones. Consecutive
    /// checks of one tenant (the usual batch) share one lookup through `last`.
    @inline(__always)
    func tenantGates(_ index: Int, _ tenants: TenantGates, last: inout (tenant: UnsafeRawBufferPointer, gates: TenantGates.Gates?)?)
        -> TenantGates.Gates? {
        let tenant = views[index].tenant
        if let last, last.tenant.elementsEqual(tenant) { return last.gates }
        let gates = tenants.gates(for: tenant)
        last = (tenant, gates)
        return gates
    }
}
