import Foundation
import SluiceCore
import SluiceIntelligence
import Yams

extension Reader {
    func number(_ node: Node, _ path: String, _ range: ClosedRange<Double>) throws(SluiceError) -> Double {
        guard case .scalar(let scalar) = node, let value = Double(scalar.string.replacingOccurrences(of: "_", with: "")),
              value.isFinite else {
            throw error(node, path, "expected a number from \(range.lowerBound) to \(range.upperBound)")
        }
        guard range.contains(value) else {
            throw error(node, path, "expected a number from \(range.lowerBound) to \(range.upperBound), got \(value)")
        }
        return value
    }

    /// `reputation:` the model (neutral, half-life, weights, curve, block threshold) and its bounds.
    func readReputation(_ node: Node, _ configuration: inout Configuration) throws(SluiceError) {
        var settings = configuration.reputation
        let keys: Set = ["neutral", "half_life", "block_below", "weights", "curve", "record_denials", "max_subjects", "sweep_interval"]
        for (key, value) in try mapping(node, "reputation", keys: keys) {
            let path = "reputation.\(key)"
            switch key {
            case "neutral": settings.model.neutral = try number(value, path, ReputationModel.range)
            case "half_life": settings.model.halfLife = try duration(value, path)
            case "block_below":
                let threshold = try number(value, path, ReputationModel.range)
                settings.model.blockBelow = threshold > 0 ? threshold : nil
            case "record_denials": settings.recordDenials = try bool(value, path)
            case "max_subjects": settings.maxSubjects = try integer(value, path, 1...100_000_000)
            case "sweep_interval":
                settings.sweepInterval = try duration(value, path)
                guard settings.sweepInterval >= 100_000_000 else { throw error(value, path, "expected at least 100ms") }
            case "weights":
                var weights = ReputationModel.builtInWeights
                for (kind, weightNode) in try mapping(value, path, keys: nil) {
                    guard Self.isKindName(kind) else {
                        throw error(weightNode, "\(path).\(kind)", "an event kind is 1 to 64 of a-z, 0-9 and _")
                    }
                    weights[kind] = try number(weightNode, "\(path).\(kind)", -100...100)
                }
                settings.model.weights = weights
            default: settings.model.curve = try readCurve(value, path)
            }
        }
        if let threshold = settings.model.blockBelow, threshold >= settings.model.neutral {
            throw error(node, "reputation.block_below", "must be below neutral (\(settings.model.neutral)), or every new subject would be blocked")
        }
        configuration.reputation = settings
    }

    static func isKindName(_ kind: String) -> Bool {
        !kind.isEmpty && kind.utf8.count <= 64 && kind.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F }
    }

    func readCurve(_ node: Node, _ path: String) throws(SluiceError) -> MultiplierCurve {
        var interpolation = MultiplierCurve.Interpolation.linear
        var points: [MultiplierCurve.Point] = []
        var pointsNode: Node?
        for (key, value) in try mapping(node, path, keys: ["interpolation", "points"]) {
            if key == "interpolation" {
                let text = try string(value, "\(path).interpolation")
                guard let mode = MultiplierCurve.Interpolation(rawValue: text) else {
                    throw error(value, "\(path).interpolation", "expected linear or step, got '\(text)'")
                }
                interpolation = mode
            } else {
                pointsNode = value
                for (index, item) in try sequence(value, "\(path).points").enumerated() {
                    let itemPath = "\(path).points[\(index)]"
                    var score: Double?, multiplier: Double?
                    for (k, v) in try mapping(item, itemPath, keys: ["score", "multiplier"]) {
                        if k == "score" {
                            score = try number(v, "\(itemPath).score", ReputationModel.range)
                        } else {
                            multiplier = try number(v, "\(itemPath).multiplier", 0.001...1_000)
                        }
                    }
                    guard let score, let multiplier else { throw error(item, itemPath, "expected score and multiplier") }
                    points.append(.init(score: score, multiplier: multiplier))
                }
            }
        }
        guard let pointsNode else { throw error(node, "\(path).points", "required: a list of { score, multiplier }") }
        do {
            return try MultiplierCurve(points: points, interpolation: interpolation)
        } catch {
            throw self.error(pointsNode, "\(path).points", error.message)
        }
    }

    /// `store:` the SQLite file and its write-behind, retention and lock settings.
    func readStore(_ node: Node, _ configuration: inout Configuration) throws(SluiceError) {
        var settings = configuration.store
        let keys: Set = ["path", "commit_interval", "retention", "max_events", "busy_timeout", "max_pending_events"]
        for (key, value) in try mapping(node, "store", keys: keys) {
            let path = "store.\(key)"
            switch key {
            case "path":
                let text = try string(value, path)
                settings.path = text.isEmpty ? nil : text
            case "commit_interval":
                settings.commitInterval = try duration(value, path)
                guard settings.commitInterval <= 10_000_000_000 else { throw error(value, path, "expected at most 10s") }
            case "retention": settings.retention = try duration(value, path)
            case "max_events": settings.maxEvents = try integer(value, path, 1...1_000_000_000)
            case "busy_timeout": settings.busyTimeout = try duration(value, path)
            default: settings.maxPendingEvents = try integer(value, path, 1...100_000_000)
            }
        }
        configuration.store = settings
    }

    /// `features:` one flag per known feature: enabled, rollout (percent) and shadow.
    func readFeatures(_ node: Node, _ configuration: inout Configuration) throws(SluiceError) {
        var flags: [String: FeatureFlag] = [:]
        for (name, flagNode) in try mapping(node, "features", keys: Set(Configuration.knownFeatures)) {
            let path = "features.\(name)"
            var flag = FeatureFlag(name: name)
            for (key, value) in try mapping(flagNode, path, keys: ["enabled", "rollout", "shadow"]) {
                switch key {
                case "enabled": flag.enabled = try bool(value, "\(path).enabled")
                case "shadow": flag.shadow = try bool(value, "\(path).shadow")
                default:
                    var text = try string(value, "\(path).rollout").trimmingCharacters(in: .whitespaces)
                    if text.hasSuffix("%") { text.removeLast() }
                    guard let percent = Double(text), percent.isFinite, (0...100).contains(percent) else {
                        throw error(value, "\(path).rollout", "expected a percentage from 0 to 100 (e.g. 5 or 25%), got '\(text)'")
                    }
                    flag.rolloutPercent = percent
                }
            }
            flags[name] = flag
        }
        configuration.features = flags
    }

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

    /// `anomaly:` the detection thresholds (docs/ANOMALY.md).
    func readAnomaly(_ node: Node, _ configuration: inout Configuration) throws(SluiceError) {
        var settings = configuration.anomaly
        let keys: Set = ["spike_factor", "spike_minimum_rate", "enumeration_distinct_ids", "failures_per_ip", "failed_subjects_per_ip",
                         "sources_per_subject", "failures_per_subject", "subjects_per_ip", "max_subjects", "max_sources", "traffic_factor",
                         "surge_factor", "surge_minimum", "warmup", "subject_warmup", "new_subject_factor", "cooldown", "idle_after",
                         "alert_log", "responses", "webhook"]
        for (key, value) in try mapping(node, "anomaly", keys: keys) {
            let path = "anomaly.\(key)"
            switch key {
            case "spike_factor": settings.spikeFactor = try number(value, path, 1.5...1_000)
            case "spike_minimum_rate": settings.spikeMinimumRate = try number(value, path, 0.01...1_000_000)
            case "enumeration_distinct_ids": settings.enumerationDistinctIds = try integer(value, path, 2...255)
            case "failures_per_ip": settings.failuresPerIP = try integer(value, path, 2...1_000_000)
            case "failed_subjects_per_ip": settings.failedSubjectsPerIP = try integer(value, path, 2...64)
            case "sources_per_subject": settings.sourcesPerSubject = try integer(value, path, 2...255)
            case "failures_per_subject": settings.failuresPerSubject = try integer(value, path, 2...60_000)
            case "subjects_per_ip": settings.subjectsPerIP = try integer(value, path, 2...255)
            case "max_subjects": settings.maxSubjects = try integer(value, path, 1_000...1_000_000_000)
            case "max_sources": settings.maxSources = try integer(value, path, 1_000...1_000_000_000)
            case "traffic_factor": settings.trafficFactor = try number(value, path, 1.5...1_000)
            case "surge_factor": settings.surgeFactor = try number(value, path, 1.5...1_000)
            case "surge_minimum": settings.surgeMinimum = try number(value, path, 1...100_000_000)
            case "warmup": settings.warmupMs = try duration(value, path, 0...86_400_000_000_000) / 1_000_000
            case "subject_warmup": settings.subjectWarmupMs = try duration(value, path, 1_000_000_000...86_400_000_000_000) / 1_000_000
            case "new_subject_factor": settings.newSubjectFactor = try number(value, path, 1...1_000)
            case "responses":
                for (kind, responseNode) in try mapping(value, path, keys: nil) {
                    let responsePath = "\(path).\(kind)"
                    guard AnomalyResponseBook.kinds.contains(kind) else {
                        throw error(responseNode, responsePath, "unknown alert kind; expected one of \(AnomalyResponseBook.kinds.sorted().joined(separator: ", "))")
                    }
                    var response = AnomalyResponse(action: .alert)
                    for (key, node) in try mapping(responseNode, responsePath, keys: ["action", "ttl", "factor"]) {
                        switch key {
                        case "action":
                            let name = try string(node, "\(responsePath).action")
                            guard let action = AnomalyResponse.Action(rawValue: name) else {
                                throw error(node, "\(responsePath).action", "expected alert, penalty, block or tighten, got '\(name)'")
                            }
                            response.action = action
                        case "ttl": response.ttl = try duration(node, "\(responsePath).ttl", 1_000_000_000...30 * 86_400_000_000_000)
                        default: response.factor = try number(node, "\(responsePath).factor", 0.001...1)
                        }
                    }
                    if kind == "new_source_surge" || kind == "traffic_surge", response.action != .alert {
                        throw error(responseNode, responsePath, "a global alert names no subject or address: its only action is alert")
                    }
                    configuration.anomalyResponses[kind] = response
                }
            case "webhook":
                var webhook: WebhookSettings?
                var retries: Int?, backoff: Int64?, timeout: Int64?
                for (key, node) in try mapping(value, path, keys: ["url", "retries", "backoff", "timeout"]) {
                    switch key {
                    case "url":
                        let url = try string(node, "\(path).url")
                        guard let parsed = WebhookSettings(url: url) else {
                            throw error(node, "\(path).url", "expected http://HOST[:PORT]/PATH (plain HTTP; put a local relay in front of HTTPS), got '\(url)'")
                        }
                        webhook = parsed
                    case "retries": retries = try integer(node, "\(path).retries", 0...20)
                    case "backoff": backoff = try duration(node, "\(path).backoff", 1_000_000...600_000_000_000)
                    default: timeout = try duration(node, "\(path).timeout", 1_000_000...600_000_000_000)
                    }
                }
                guard var settings = webhook else { throw error(value, "\(path).url", "required: where alerts are POSTed") }
                if let retries { settings.retries = retries }
                if let backoff { settings.backoff = backoff }
                if let timeout { settings.timeout = timeout }
                configuration.anomalyWebhook = settings
            case "alert_log":
                let path = try string(value, path)
                configuration.anomalyLog = path.isEmpty ? nil : path
            case "cooldown": settings.cooldownMs = try duration(value, path, 1_000_000_000...86_400_000_000_000) / 1_000_000
            default: settings.idleMs = try duration(value, path, 60_000_000_000...30 * 86_400_000_000_000) / 1_000_000
            }
        }
        configuration.anomaly = settings
    }
}
