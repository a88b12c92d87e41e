import CoreMetrics
import Prometheus

/// The daemon's Prometheus registry and the metrics its background work records through
/// swift-metrics (reloads, snapshots). What the hot path counts is read at scrape time by
/// ``MetricsExporter``, never pushed per request.
public final class SluiceMetrics: Sendable {
    /// Where every metric is registered; `/metrics` emits it.
    public let registry: PrometheusCollectorRegistry
    /// A swift-metrics factory over ``registry``, for components that record through swift-metrics.
    public let factory: PrometheusMetricsFactory

    let reloadsOK: CoreMetrics.Counter
    let reloadsFailed: CoreMetrics.Counter
    let generation: CoreMetrics.Gauge
    let lastReload: CoreMetrics.Gauge
    let snapshotsOK: CoreMetrics.Counter
    let snapshotsFailed: CoreMetrics.Counter
    let snapshotDuration: CoreMetrics.Timer
    let snapshotEntries: CoreMetrics.Gauge
    let snapshotBytes: CoreMetrics.Gauge
    let lastSnapshot: CoreMetrics.Gauge

    /// Metrics registered in `registry` (a fresh one unless given).
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["sluice_snapshot_duration_seconds"] =
            [.milliseconds(1), .milliseconds(10), .milliseconds(100), .seconds(1), .seconds(10)]
        self.factory = factory
        reloadsOK = Counter(label: "sluice_config_reloads_total", dimensions: [("result", "ok")], factory: factory)
        reloadsFailed = Counter(label: "sluice_config_reloads_total", dimensions: [("result", "rejected")], factory: factory)
        generation = Gauge(label: "sluice_config_generation", factory: factory)
        lastReload = Gauge(label: "sluice_config_last_reload_success_timestamp_seconds", factory: factory)
        snapshotsOK = Counter(label: "sluice_snapshot_writes_total", dimensions: [("result", "ok")], factory: factory)
        snapshotsFailed = Counter(label: "sluice_snapshot_writes_total", dimensions: [("result", "failed")], factory: factory)
        snapshotDuration = Timer(label: "sluice_snapshot_duration_seconds", factory: factory)
        snapshotEntries = Gauge(label: "sluice_snapshot_entries", factory: factory)
        snapshotBytes = Gauge(label: "sluice_snapshot_bytes", factory: factory)
        lastSnapshot = Gauge(label: "sluice_snapshot_last_success_timestamp_seconds", factory: factory)
        generation.record(1)
        // Present from the start, so an alert on their rate sees zero rather than nothing.
        reloadsOK.increment(by: 0)
        reloadsFailed.increment(by: 0)
        snapshotsOK.increment(by: 0)
        snapshotsFailed.increment(by: 0)
    }

    func reloaded(generation value: UInt64, at now: Int64) {
        reloadsOK.increment()
        generation.record(Double(value))
        lastReload.record(Double(now) / 1e9)
    }

    func reloadFailed() { reloadsFailed.increment() }

    func snapshotWritten(_ written: Snapshotter.Written, at now: Int64) {
        snapshotsOK.increment()
        snapshotDuration.recordNanoseconds(written.durationNanoseconds)
        snapshotEntries.record(Double(written.entries))
        snapshotBytes.record(Double(written.bytes))
        lastSnapshot.record(Double(now) / 1e9)
    }

    func snapshotFailed() { snapshotsFailed.increment() }
}
