import Logging
import NIOConcurrencyHelpers
import SluiceCore
import SluiceProto

/// Carries out operator requests, off the event loops.
protocol OperatorActions: Sendable {
    /// Re-reads the configuration file and applies it if valid.
    func reload() async -> WireResponse
    /// Writes the table to the snapshot file now.
    func snapshot() async -> WireResponse
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

    init(state: LiveState, loader: @escaping @Sendable () throws -> Configuration, snapshotter: Snapshotter?,
         metrics: SluiceMetrics?, time: TimeSource, logger: Logger) {
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
            let (configuration, report) = state.current.configuration.reloadPlan(applying: loaded)
            let live = state.apply(configuration)
            var applied = report
            applied.generation = live.generation
            metrics?.reloaded(generation: live.generation, at: time.now())
            logger.notice("configuration reloaded", metadata: [
                "config.source": "\(report.source)", "config.generation": "\(live.generation)",
                "rules.added": "\(report.rulesAdded)", "rules.changed": "\(report.rulesChanged)",
                "rules.removed": "\(report.rulesRemoved)", "config.needs_restart": "\(report.needsRestart)",
            ])
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
}
