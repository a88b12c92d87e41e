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

    /// `store:` the database (the SQLite file, or PostgreSQL's URL) and its write-behind,
    /// retention, lock and timeout settings.
    func readStore(_ node: Node, _ configuration: inout Configuration) throws(SluiceError) {
        var settings = configuration.store
        let keys: Set = ["backend", "path", "url", "timeout", "commit_interval", "retention", "max_events", "busy_timeout", "max_pending_events", "sync_interval"]
        let entries = try mapping(node, "store", keys: keys)
        for (key, value) in entries {
            let path = "store.\(key)"
            switch key {
            case "backend":
                let text = try string(value, path)
                guard let backend = Configuration.StoreSettings.Backend(rawValue: text) else {
                    throw error(value, path, "expected sqlite or postgres, got '\(text)'")
                }
                settings.backend = backend
            case "path":
                let text = try string(value, path)
                settings.path = text.isEmpty ? nil : text
            case "url":
                let text = try string(value, path)
                guard text.isEmpty || text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") else {
                    throw error(value, path, "expected postgres://user:password@host:port/database (or ?host=/socket/folder)")
                }
                settings.url = text.isEmpty ? nil : text
            case "timeout":
                settings.timeout = try duration(value, path)
                guard (1_000_000...300_000_000_000).contains(settings.timeout) else { throw error(value, path, "expected 1ms to 5m") }
            case "commit_interval":
                settings.commitInterval = try duration(value, path)
                guard settings.commitInterval <= 10_000_000_000 else { throw error(value, path, "expected at most 10s") }
            case "retention": settings.retention = try duration(value, path)
            case "max_events": settings.maxEvents = try integer(value, path, 1...1_000_000_000)
            case "busy_timeout": settings.busyTimeout = try duration(value, path)
            case "sync_interval":
                settings.syncInterval = try duration(value, path)
                guard (1_000_000...10_000_000_000).contains(settings.syncInterval) else { throw error(value, path, "expected 1ms to 10s") }
            default: settings.maxPendingEvents = try integer(value, path, 1...100_000_000)
            }
        }
        // Each backend's own key, and only its own: a path left beside a PostgreSQL URL would
        // leave the operator unsure which database holds the state.
        switch settings.backend {
        case .postgres:
            guard settings.url != nil else { throw error(node, "store.url", "backend postgres needs store.url (postgres://user:password@host:port/database)") }
            if let (_, value) = entries.first(where: { $0.0 == "path" }), settings.path != nil {
                throw error(value, "store.path", "is for backend sqlite; with backend postgres the database is store.url")
            }
        case .sqlite:
            if let (_, value) = entries.first(where: { $0.0 == "url" }), settings.url != nil {
                throw error(value, "store.url", "is for backend postgres (set store.backend: postgres)")
            }
            if let (_, value) = entries.first(where: { $0.0 == "sync_interval" }) {
                throw error(value, "store.sync_interval", "is for backend postgres, where several daemons share the store")
            }
        }
        configuration.store = settings
    }

    /// A rollout: a percentage from 0 to 100, with or without `%`.
    func rolloutPercent(_ value: Node, _ path: String) throws(SluiceError) -> Double {
        var text = try string(value, path).trimmingCharacters(in: .whitespaces)
        if text.hasSuffix("%") { text.removeLast() }
        guard let percent = Double(text), percent.isFinite, (0...100).contains(percent) else {
            throw error(value, path, "expected a percentage from 0 to 100 (e.g. 5 or 25%), got '\(text)'")
        }
        return percent
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
                default: flag.rolloutPercent = try rolloutPercent(value, "\(path).rollout")
                }
            }
            flags[name] = flag
        }
        configuration.features = flags
    }
}
