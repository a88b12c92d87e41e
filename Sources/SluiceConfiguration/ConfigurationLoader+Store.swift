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
}
