import Foundation
import SluiceCore
import SluiceIntelligence
import Yams

extension Reader {
    /// `tiers:` each tier's limit multiplier and shedding priority.
    func readTiers(_ node: Node, _ configuration: inout Configuration) throws(SluiceError) {
        var tiers: [String: Configuration.Tier] = [:]
        for (name, tierNode) in try mapping(node, "tiers", keys: nil) {
            let path = "tiers.\(name)"
            guard Self.isKindName(name) else { throw error(tierNode, path, "a tier name is 1 to 64 of a-z, 0-9 and _") }
            var tier = Configuration.Tier(name: name)
            for (key, value) in try mapping(tierNode, path, keys: ["multiplier", "priority", "rules", "reserve"]) {
                switch key {
                case "multiplier": tier.multiplier = try number(value, "\(path).multiplier", 0.001...1_000)
                case "reserve": tier.reserve = try number(value, "\(path).reserve", 0...1)
                case "priority": tier.priority = try integer(value, "\(path).priority", -1_000...1_000)
                default:
                    // Same syntax as rules; bound to the rule's own name, so that its state is the
                    // rule's state read with the tier's numbers.
                    for (ruleName, rule) in try readRules(value, "\(path).rules", configuration) {
                        tier.rules[ruleName] = rule.limits
                    }
                }
            }
            tiers[name] = tier
        }
        guard tiers.count <= 64 else { throw error(node, "tiers", "at most 64 tiers") }
        configuration.tiers = tiers
        tiersNode = node
    }

    /// Every rule a tier gives limits for must exist (globally or in a tenant): a typo would
    /// otherwise never apply. Checked once every section is read.
    func checkTierRules(_ configuration: Configuration) throws(SluiceError) {
        let known = Set(configuration.rules.keys).union(configuration.tenants.values.flatMap(\.rules.keys))
        // A tenant's tiers are its numbers for the configuration's tiers, never new ones.
        for (name, tenant) in configuration.tenants.sorted(by: { $0.key < $1.key }) {
            for tier in tenant.tierOverrides.keys.sorted() where configuration.tiers[tier] == nil {
                let node = tenantTierNodes.first { $0.0 == "tenants.\(name).tiers" }?.1
                throw error(node, "tenants.\(name).tiers.\(tier)", "no tier named '\(tier)' is configured (tiers:); a tenant sets its own numbers for the configuration's tiers")
            }
            for (tier, change) in tenant.tierOverrides.sorted(by: { $0.key < $1.key }) {
                for rule in change.rules.keys.sorted() where !known.contains(rule) {
                    let node = tenantTierNodes.first { $0.0 == "tenants.\(name).tiers" }?.1
                    throw error(node, "tenants.\(name).tiers.\(tier).rules.\(rule)", "no rule named '\(rule)' is configured")
                }
            }
        }
        for tier in configuration.tiers.values.sorted(by: { $0.name < $1.name }) {
            for name in tier.rules.keys.sorted() where !known.contains(name) {
                throw error(tiersNode, "tiers.\(tier.name).rules.\(name)", "no rule named '\(name)' is configured")
            }
        }
    }

    /// `adaptive:` the load controller (target p99, band, cuts, growth, bounds).
    func readAdaptive(_ node: Node, _ configuration: inout Configuration) throws(SluiceError) {
        var settings = configuration.adaptive
        let keys: Set = ["target_p99", "tolerance", "max_error_rate", "decrease", "increase", "cooldown", "minimum", "smoothing",
                         "max_services", "interval", "stale_after", "untiered_priority", "max_loop_delay"]
        for (key, value) in try mapping(node, "adaptive", keys: keys) {
            let path = "adaptive.\(key)"
            switch key {
            case "target_p99": settings.controller.targetLatency = try duration(value, path)
            case "tolerance": settings.controller.tolerance = try number(value, path, 0...0.9)
            case "max_error_rate": settings.controller.maxErrorRate = try number(value, path, 0...1)
            case "decrease": settings.controller.decrease = try number(value, path, 0.1...0.99)
            case "increase": settings.controller.increase = try number(value, path, 0.001...0.5)
            case "cooldown": settings.controller.cooldown = try integer(value, path, 0...100)
            case "minimum": settings.controller.minimum = try number(value, path, 0.01...1)
            case "smoothing": settings.controller.smoothing = try number(value, path, 0.01...1)
            case "interval": settings.interval = try duration(value, path, 10_000_000...60_000_000_000)
            case "stale_after": settings.staleAfter = try duration(value, path, 1_000_000...86_400_000_000_000)
            case "untiered_priority": settings.untieredPriority = try integer(value, path, -1_000...1_000)
            case "max_loop_delay": settings.maxLoopDelay = try duration(value, path, 1_000_000...60_000_000_000)
            default: settings.maxServices = try integer(value, path, 1...10_000)
            }
        }
        configuration.adaptive = settings
    }

    /// `baseline:` how per-subject baselines are learned.
    func readBaselineSettings(_ node: Node, _ configuration: inout Configuration) throws(SluiceError) {
        var settings = configuration.baseline
        for (key, value) in try mapping(node, "baseline", keys: ["window", "buckets", "smoothing", "warmup", "max_subjects", "idle_after"]) {
            let path = "baseline.\(key)"
            switch key {
            case "window": settings.window = try duration(value, path, 1_000_000_000...3_600_000_000_000)
            case "buckets":
                settings.buckets = try integer(value, path, 1...288)
                guard 86_400 % settings.buckets == 0 else { throw error(value, path, "must divide a day evenly (1, 2, 3, 4, 6, 8, 12, 24, 48 …)") }
            case "smoothing": settings.smoothing = try number(value, path, 0.001...1)
            case "warmup": settings.warmup = try integer(value, path, 0...100_000)
            case "max_subjects": settings.maxSubjects = try integer(value, path, 1...100_000_000)
            default: settings.idleAfter = try duration(value, path, 60_000_000_000...365 * 86_400_000_000_000)
            }
        }
        guard settings.window <= settings.bucketLength else {
            throw error(node, "baseline.window", "must be at most one bucket (\(Self.describe(settings.bucketLength)))")
        }
        configuration.baseline = settings
    }
}
