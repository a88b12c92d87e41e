import SluiceCore
import SluiceIntelligence
import Yams

extension Configuration {
    /// What a tenant changes of a feature flag (`tenants.NAME.features.FEATURE`): each key it sets
    /// replaces the global flag's; the others are the global flag's.
    public struct FlagOverride: Sendable, Equatable {
        public var enabled: Bool?
        public var rolloutPercent: Double?
        public var shadow: Bool?

        public init(enabled: Bool? = nil, rolloutPercent: Double? = nil, shadow: Bool? = nil) {
            self.enabled = enabled
            self.rolloutPercent = rolloutPercent
            self.shadow = shadow
        }
    }

    /// A tenant's own numbers for a tier the configuration defines: its multiplier and its
    /// limits per rule (priority and reserve stay the fleet's: they order shedding across tenants).
    public struct TierOverride: Sendable, Equatable {
        public var multiplier: Double?
        public var rules: [String: [BoundLimit]] = [:]

        public init(multiplier: Double? = nil, rules: [String: [BoundLimit]] = [:]) {
            self.multiplier = multiplier
            self.rules = rules
        }
    }

    /// Whether `tenant` has settings of its own (flags, reputation weights, tiers).
    public func hasOwnSettings(_ tenant: String) -> Bool {
        guard let declared = tenants[tenant] else { return false }
        return !declared.featureOverrides.isEmpty || declared.reputationWeights != nil || !declared.tierOverrides.isEmpty
    }

    /// The configuration as `tenant`'s checks and events see it: the global one with the
    /// tenant's feature flags and reputation weights over it (itself for a tenant without any).
    public func settings(for tenant: String) -> Configuration {
        guard let declared = tenants[tenant], hasOwnSettings(tenant) else { return self }
        var own = self
        for name in declared.featureOverrides.keys { own.features[name] = feature(name, for: tenant) }
        if let weights = declared.reputationWeights {
            own.reputation.model.weights.merge(weights) { _, tenant in tenant }
        }
        for (name, change) in declared.tierOverrides {
            guard var tier = own.tiers[name] else { continue }
            if let multiplier = change.multiplier { tier.multiplier = multiplier }
            tier.rules.merge(change.rules) { _, tenant in tenant }
            own.tiers[name] = tier
        }
        return own
    }

    /// The flag of `feature` as `tenant`'s checks and events see it; nil when neither the
    /// tenant nor the global configuration sets it.
    public func feature(_ name: String, for tenant: String) -> FeatureFlag? {
        guard let change = tenants[tenant]?.featureOverrides[name] else { return features[name] }
        var flag = features[name] ?? FeatureFlag(name: name, enabled: false)
        if let enabled = change.enabled { flag.enabled = enabled }
        if let rollout = change.rolloutPercent { flag.rolloutPercent = rollout }
        if let shadow = change.shadow { flag.shadow = shadow }
        return flag
    }

    /// Anomaly detection's settings with each tenant's own subject thresholds
    /// (`tenants.NAME.anomaly`) in ``AnomalySettings/tenants`` and record quotas
    /// (`quotas.max_anomaly_records`) in ``AnomalySettings/tenantRecordLimits``: what the
    /// detector runs with.
    public var anomalyWithTenants: AnomalySettings {
        var settings = anomaly
        for (name, tenant) in tenants where !tenant.anomalyThresholds.isEmpty {
            var own = anomaly
            for (key, value) in tenant.anomalyThresholds {
                switch key {
                case "spike_factor": own.spikeFactor = value
                case "spike_minimum_rate": own.spikeMinimumRate = value
                case "enumeration_distinct_ids": own.enumerationDistinctIds = Int(value)
                case "sources_per_subject": own.sourcesPerSubject = Int(value)
                case "failures_per_subject": own.failuresPerSubject = Int(value)
                case "sequential_steps": own.sequentialSteps = value
                case "sustained_distinct": own.sustainedDistinct = value
                default: own.newSubjectFactor = value
                }
            }
            settings.tenants[name] = own
        }
        for name in tenants.keys {
            if let limit = quotas(for: name)?.maxAnomalyRecords { settings.tenantRecordLimits[name] = limit }
        }
        return settings
    }

    /// The subject thresholds a tenant may set (`tenants.NAME.anomaly`), with their ranges.
    public static let tenantAnomalyThresholds: [(key: String, range: ClosedRange<Double>, whole: Bool)] = [
        ("spike_factor", 1.5...1_000, false), ("spike_minimum_rate", 0.01...1_000_000, false),
        ("enumeration_distinct_ids", 2...255, true), ("sources_per_subject", 2...255, true),
        ("failures_per_subject", 2...60_000, true), ("new_subject_factor", 1...1_000, false),
        ("sequential_steps", 2...1_000_000, false), ("sustained_distinct", 1...1_000_000, false),
    ]

    /// Whether `feature` is enabled globally or for any declared tenant.
    public func enabledAnywhere(_ feature: String) -> Bool {
        if features[feature]?.enabled == true { return true }
        return tenants.values.contains { $0.featureOverrides[feature]?.enabled == true }
    }
}

extension Reader {
    /// `tenants.NAME.features:` flags as `features:` has them, each key optional.
    func readFeatureOverrides(_ node: Node, _ path: String) throws(SluiceError) -> [String: Configuration.FlagOverride] {
        var overrides: [String: Configuration.FlagOverride] = [:]
        for (name, flagNode) in try mapping(node, path, keys: Set(Configuration.knownFeatures)) {
            let flagPath = "\(path).\(name)"
            var change = Configuration.FlagOverride()
            for (key, value) in try mapping(flagNode, flagPath, keys: ["enabled", "rollout", "shadow"]) {
                switch key {
                case "enabled": change.enabled = try bool(value, "\(flagPath).enabled")
                case "shadow": change.shadow = try bool(value, "\(flagPath).shadow")
                default: change.rolloutPercent = try rolloutPercent(value, "\(flagPath).rollout")
                }
            }
            overrides[name] = change
        }
        return overrides
    }

    /// `tenants.NAME.tiers:` the tenant's own multiplier and limits for tiers `tiers:` defines
    /// (checked against them once every section is read).
    func readTierOverrides(_ node: Node, _ path: String, _ configuration: Configuration) throws(SluiceError) -> [String: Configuration.TierOverride] {
        var overrides: [String: Configuration.TierOverride] = [:]
        for (name, tierNode) in try mapping(node, path, keys: nil) {
            let tierPath = "\(path).\(name)"
            var change = Configuration.TierOverride()
            for (key, value) in try mapping(tierNode, tierPath, keys: ["multiplier", "rules"]) {
                if key == "multiplier" {
                    change.multiplier = try number(value, "\(tierPath).multiplier", 0.001...1_000)
                } else {
                    for (ruleName, rule) in try readRules(value, "\(tierPath).rules", configuration) { change.rules[ruleName] = rule.limits }
                }
            }
            overrides[name] = change
        }
        tenantTierNodes.append((path, node))
        return overrides
    }

    /// `tenants.NAME.reputation:` the tenant's own event weights (over the global ones).
    func readTenantReputation(_ node: Node, _ path: String) throws(SluiceError) -> [String: Double] {
        var weights: [String: Double] = [:]
        for (key, value) in try mapping(node, path, keys: ["weights"]) where key == "weights" {
            for (kind, weightNode) in try mapping(value, "\(path).weights", keys: nil) {
                guard Self.isKindName(kind) else {
                    throw error(weightNode, "\(path).weights.\(kind)", "an event kind is 1 to 64 of a-z, 0-9 and _")
                }
                weights[kind] = try number(weightNode, "\(path).weights.\(kind)", -100...100)
            }
        }
        return weights
    }
}
