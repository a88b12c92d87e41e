import SluiceCore

/// What a reload changed.
public struct ReloadReport: Sendable, Equatable {
    /// The file that was read.
    public var source: String
    /// Rules ("name", or "tenant/name" for a tenant's own) that are new.
    public var rulesAdded: [String] = []
    /// Rules whose limits changed: they apply from the next check.
    public var rulesChanged: [String] = []
    /// Rules no longer configured.
    public var rulesRemoved: [String] = []
    /// Settings that changed in the file but take effect only at the next start.
    public var needsRestart: [String] = []
    /// The generation now in force.
    public var generation: UInt64 = 0
}

extension Configuration {
    /// Every rule by its report name: "name" for global rules, "tenant/name" for a tenant's own.
    var rulesByReportName: [String: [BoundLimit]] {
        var all: [String: [BoundLimit]] = [:]
        for (name, rule) in rules { all[name] = rule.limits }
        for (tenantName, tenant) in tenants {
            for (name, rule) in tenant.rules { all["\(tenantName)/\(name)"] = rule.limits }
        }
        return all
    }

    /// Why `loaded` must not replace `self` although it is valid, or nil. A file that configures
    /// no rule at all (empty, only comments, or truncated by an editor) would remove every rule
    /// in force, so every check naming one would fail: refused unless the file says `rules: {}`.
    public func reloadRefusal(applying loaded: Configuration) -> SluiceError? {
        // No check of credentials here: a reload that revokes the last token must apply (its
        // listeners then refuse everyone), or a revoked token would go on serving.
        let inForce = rulesByReportName.count
        guard inForce > 0, loaded.rulesByReportName.isEmpty, !loaded.declaresRules else { return nil }
        return SluiceError(.invalidConfiguration, "\(loaded.source): configures no rules and would remove all \(inForce) in force; "
                           + "write `rules: {}` to remove them on purpose")
    }

    /// `loaded` as it can be applied over `self` (the configuration in force): settings that are
    /// fixed at start keep their running values, and the report says which of them the file
    /// changed and which rules it added, changed or removed.
    ///
    /// Rules whose limits are unchanged keep their stored state (it is keyed by the rule's name,
    /// the limit's place in the rule and its algorithm); a rule whose numbers changed keeps its
    /// state too, read with the new numbers from the next check; a changed algorithm starts fresh.
    public func reloadPlan(applying loaded: Configuration) -> (configuration: Configuration, report: ReloadReport) {
        var applied = loaded
        var report = ReloadReport(source: loaded.source)
        func fixed<Value: Equatable>(_ name: String, _ keyPath: WritableKeyPath<Configuration, Value>) {
            if self[keyPath: keyPath] != loaded[keyPath: keyPath] { report.needsRestart.append(name) }
            applied[keyPath: keyPath] = self[keyPath: keyPath]
        }
        fixed("listen.unix", \.unixListeners)
        fixed("backend", \.backend)
        // A daemon that started with no check on Redis has no connection to it: a rule moved to
        // Redis by a reload stays on the local table until a restart.
        if !usesRedis, loaded.usesRedis { report.needsRestart.append("rules.*.backend") }
        // A daemon whose every rule was fast answers every check at once, on its event loop: a
        // rule made exact by a reload stays fast until a restart.
        // One whose every rule was exact runs no syncs: a rule made fast stays exact until then.
        if usesRedis, !decidesExactly && loaded.decidesExactly || !decidesFast && loaded.decidesFast {
            report.needsRestart.append("rules.*.mode")
        }
        fixed("redis", \.redis)
        // The fronts' listeners are bound at start; their domains, headers and the rest apply now.
        if envoy.tcpListeners != loaded.envoy.tcpListeners || envoy.unixListeners != loaded.envoy.unixListeners {
            report.needsRestart.append("envoy.listen")
        }
        applied.envoy.tcpListeners = envoy.tcpListeners
        applied.envoy.unixListeners = envoy.unixListeners
        if http.tcpListeners != loaded.http.tcpListeners || http.unixListeners != loaded.http.unixListeners {
            report.needsRestart.append("http.listen")
        }
        applied.http = http
        fixed("listen.tcp", \.tcpListeners)
        fixed("server.threads", \.threads)
        fixed("server.clock", \.clock)
        fixed("server.max_queued_bytes", \.maxQueuedBytes)
        fixed("server.max_queue_delay", \.maxQueueDelayMs)
        fixed("table.shards", \.shards)
        fixed("table.max_entries", \.maxEntries)
        fixed("snapshot.path", \.snapshotPath)
        fixed("snapshot.interval", \.snapshotIntervalMs)
        fixed("metrics.listen", \.metricsListener)
        fixed("log.level", \.logLevel)
        fixed("log.format", \.logFormat)
        fixed("store", \.store)
        // A tenant's own table is sized at its making: a new size waits for a restart.
        for name in tenants.keys.sorted() {
            if let before = quotas(for: name)?.maxKeys, let after = loaded.quotas(for: name)?.maxKeys, before != after {
                report.needsRestart.append("tenants.\(name).quotas.max_keys")
            }
        }

        let before = rulesByReportName, after = loaded.rulesByReportName
        report.rulesAdded = after.keys.filter { before[$0] == nil }.sorted()
        report.rulesRemoved = before.keys.filter { after[$0] == nil }.sorted()
        report.rulesChanged = after.keys.filter { name in before[name].map { $0 != after[name] } ?? false }.sorted()
        return (applied, report)
    }
}
