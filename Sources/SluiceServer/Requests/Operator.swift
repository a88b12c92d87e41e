import Logging
import NIOConcurrencyHelpers
import SluiceConfiguration
import SluiceCore
import SluiceIntelligence
import SluiceProto

/// Carries out operator requests, off the event loops.
protocol OperatorActions: Sendable {
    /// Re-reads the configuration file and applies it if valid.
    func reload() async -> WireResponse
    /// Writes the table to the snapshot file now.
    func snapshot() async -> WireResponse
    /// Applies flag changes (if any) and lists every feature flag.
    func flags(_ request: Sluice_V1_FlagsRequest) async -> WireResponse
}

/// Reloads the configuration (for SIGHUP and `sluicectl reload`) and writes snapshots on demand.
final class Operator: OperatorActions, Sendable {
    let state: LiveState
    let loader: @Sendable () throws -> Configuration
    let snapshotter: Snapshotter?
    let metrics: SluiceMetrics?
    let time: TimeSource
    let logger: Logger
    /// Reloads one at a time: each is planned against the configuration the previous applied.
    let reloading = NIOLock()
    /// Flags changed by `sluicectl flags` since the file was last applied.
    let overridden = NIOLockedValueBox<Set<String>>([])

    /// Reads again the files the configuration names but does not hold (TLS certificates and
    /// keys): before a reload applies, so that a bad file refuses the whole reload.
    let reloadFiles: @Sendable () throws(SluiceError) -> Void

    init(state: LiveState, loader: @escaping @Sendable () throws -> Configuration, snapshotter: Snapshotter?,
         metrics: SluiceMetrics?, time: TimeSource, logger: Logger, reloadFiles: @escaping @Sendable () throws(SluiceError) -> Void = {}) {
        self.reloadFiles = reloadFiles
        self.state = state
        self.loader = loader
        self.snapshotter = snapshotter
        self.metrics = metrics
        self.time = time
        self.logger = logger
    }

    /// Reads, validates and applies the configuration file. On any error the configuration in
    /// force stays as it was.
    ///
    /// - Returns: what changed, or the error naming the file, the key and the problem.
    func reloadNow() -> Result<ReloadReport, SluiceError> {
        reloading.withLock {
            let loaded: Configuration
            do {
                loaded = try loader()
            } catch {
                let error = error as? SluiceError ?? SluiceError(.invalidConfiguration, "\(error)")
                metrics?.reloadFailed()
                logger.error("configuration not reloaded; the one in force stays", metadata: [
                    "error.code": "\(error.code)", "error.message": "\(error.message)",
                ])
                return .failure(error)
            }
            if let refusal = state.current.configuration.reloadRefusal(applying: loaded) {
                metrics?.reloadFailed()
                logger.error("configuration not reloaded; the one in force stays", metadata: [
                    "error.code": "\(refusal.code)", "error.message": "\(refusal.message)",
                ])
                return .failure(refusal)
            }
            do throws(SluiceError) {
                try reloadFiles()
            } catch {
                metrics?.reloadFailed()
                logger.error("configuration not reloaded; the one in force stays", metadata: [
                    "error.code": "\(error.code)", "error.message": "\(error.message)",
                ])
                return .failure(error)
            }
            let previousFeatures = state.current.configuration.features
            let (configuration, report) = state.current.configuration.reloadPlan(applying: loaded)
            let live = state.apply(configuration)
            for name in Configuration.knownFeatures where previousFeatures[name] != configuration.features[name] {
                let flag = configuration.features[name]
                logger.notice("feature flag changed by the reload", metadata: [
                    "flag.name": "\(name)", "flag.enabled": "\(flag?.enabled ?? false)",
                    "flag.rollout_percent": "\(flag?.rolloutPercent ?? 0)", "flag.shadow": "\(flag?.shadow ?? false)",
                ])
            }
            overridden.withLockedValue { $0.removeAll() }
            var applied = report
            applied.generation = live.generation
            metrics?.reloaded(generation: live.generation, at: time.now())
            logger.notice("configuration reloaded", metadata: [
                "config.source": "\(report.source)", "config.generation": "\(live.generation)",
                "rules.added": "\(report.rulesAdded)", "rules.changed": "\(report.rulesChanged)",
                "rules.removed": "\(report.rulesRemoved)", "config.needs_restart": "\(report.needsRestart)",
            ])
            TokensFileCheck.warnIfShared(configuration.auth.tokensFile, logger: logger)
            do throws(SluiceError) {
                try configuration.checkAuthentication()
            } catch {
                logger.warning("a listener now refuses every client", metadata: ["error.message": "\(error.message)"])
            }
            if !report.needsRestart.isEmpty {
                logger.warning("some changed settings apply only after a restart", metadata: [
                    "config.needs_restart": "\(report.needsRestart.joined(separator: ", "))",
                ])
            }
            return .success(applied)
        }
    }

    func reload() async -> WireResponse {
        switch reloadNow() {
        case .success(let report):
            var response = WireResponse()
            response.reload = Sluice_V1_ReloadResponse.with {
                $0.source = report.source
                $0.rulesAdded = report.rulesAdded
                $0.rulesChanged = report.rulesChanged
                $0.rulesRemoved = report.rulesRemoved
                $0.needsRestart = report.needsRestart
                $0.generation = report.generation
            }
            return response
        case .failure(let error):
            let code: WireError.Code = error.code == .invalidConfiguration ? .invalidConfiguration : .unavailable
            return .error(id: 0, code, error.message)
        }
    }

    func snapshot() async -> WireResponse {
        guard let snapshotter else {
            return .error(id: 0, .unavailable, "snapshots are off: set snapshot.path (or start with --snapshot PATH)")
        }
        switch snapshotter.writeNow() {
        case .success(let written):
            var response = WireResponse()
            response.snapshot = Sluice_V1_SnapshotResponse.with {
                $0.path = snapshotter.path
                $0.entries = UInt64(written.entries)
                $0.bytes = UInt64(written.bytes)
                $0.durationUs = UInt64(max(0, written.durationNanoseconds / 1_000))
            }
            return response
        case .failure(let error):
            return .error(id: 0, .unavailable, "the snapshot was not written: \(error.message)")
        }
    }

    /// Applies `request`'s changes to the flags in force (all or none: an unknown flag or a bad
    /// percentage refuses the whole request), then lists them. A change lasts until the next
    /// reload or restart, which apply the file's flags.
    func flagsNow(_ request: Sluice_V1_FlagsRequest) -> Result<[Sluice_V1_FeatureFlag], SluiceError> {
        reloading.withLock {
            var configuration = state.current.configuration
            var changed: [String] = []
            for change in request.changes {
                guard Configuration.knownFeatures.contains(change.name) else {
                    return .failure(SluiceError(.invalidArgument,
                                                "no feature named '\(change.name)'; known features: \(Configuration.knownFeatures.joined(separator: ", "))"))
                }
                var flag = configuration.features[change.name] ?? FeatureFlag(name: change.name, enabled: false, rolloutPercent: 0)
                if case .enabled(let enabled)? = change.enabledPresence { flag.enabled = enabled }
                if case .shadow(let shadow)? = change.shadowPresence { flag.shadow = shadow }
                if case .rolloutPercent(let percent)? = change.rolloutPresence {
                    guard percent.isFinite, (0...100).contains(percent) else {
                        return .failure(SluiceError(.invalidArgument, "rollout_percent \(percent) for '\(change.name)' is outside 0…100"))
                    }
                    flag.rolloutPercent = percent
                }
                configuration.features[change.name] = flag
                changed.append(change.name)
            }
            if !changed.isEmpty {
                let live = state.apply(configuration)
                overridden.withLockedValue { $0.formUnion(changed) }
                for name in changed {
                    let flag = configuration.features[name]
                    logger.notice("feature flag changed", metadata: [
                        "flag.name": "\(name)", "flag.enabled": "\(flag?.enabled ?? false)",
                        "flag.rollout_percent": "\(flag?.rolloutPercent ?? 0)", "flag.shadow": "\(flag?.shadow ?? false)",
                        "config.generation": "\(live.generation)",
                    ])
                }
            }
            let overridden = overridden.withLockedValue { $0 }
            return .success(Configuration.knownFeatures.map { name in
                let flag = configuration.features[name] ?? FeatureFlag(name: name, enabled: false, rolloutPercent: 0)
                return Sluice_V1_FeatureFlag.with {
                    $0.name = name
                    $0.enabled = flag.enabled
                    $0.rolloutPercent = flag.rolloutPercent
                    $0.shadow = flag.shadow
                    $0.overridden = overridden.contains(name)
                }
            })
        }
    }

    func flags(_ request: Sluice_V1_FlagsRequest) async -> WireResponse {
        switch flagsNow(request) {
        case .success(let flags):
            var response = WireResponse()
            response.flags.flags = flags
            return response
        case .failure(let error):
            return .error(id: 0, .invalidArgument, error.message)
        }
    }
}
