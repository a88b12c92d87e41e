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

    let reloadsOK: Prometheus.Counter
    let reloadsFailed: Prometheus.Counter
    let generation: Prometheus.Gauge
    let lastReload: Prometheus.Gauge
    let snapshotsOK: Prometheus.Counter
    let snapshotsFailed: Prometheus.Counter
    let snapshotDuration: Prometheus.DurationHistogram
    let snapshotEntries: Prometheus.Gauge
    let snapshotBytes: Prometheus.Gauge
    let lastSnapshot: Prometheus.Gauge

    /// Metrics registered in `registry` (a fresh one unless given), each with its help text.
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        factory = PrometheusMetricsFactory(registry: registry)
        func name(_ name: String, _ help: String) -> MetricNameDescriptor { MetricNameDescriptor(metricName: name, helpText: help) }
        let reloads = name("sluice_config_reloads_total", "Configuration reloads (SIGHUP or sluicectl reload) by result: ok, or rejected (the file is invalid; the one in force stays).")
        reloadsOK = registry.makeCounter(descriptor: reloads, labels: [("result", "ok")])
        reloadsFailed = registry.makeCounter(descriptor: reloads, labels: [("result", "rejected")])
        generation = registry.makeGauge(descriptor: name("sluice_config_generation", "The configuration in force: 1 at start, one more at each reload applied."))
        lastReload = registry.makeGauge(descriptor: name("sluice_config_last_reload_success_timestamp_seconds",
                                                         "When the configuration in force was last reloaded (seconds since the epoch; 0: never)."))
        let writes = name("sluice_snapshot_writes_total", "Snapshots of the table written, by result: ok, or failed (the previous file stays).")
        snapshotsOK = registry.makeCounter(descriptor: writes, labels: [("result", "ok")])
        snapshotsFailed = registry.makeCounter(descriptor: writes, labels: [("result", "failed")])
        snapshotDuration = registry.makeDurationHistogram(descriptor: name("sluice_snapshot_duration_seconds", "Time to write one snapshot."),
                                                          buckets: [.milliseconds(1), .milliseconds(10), .milliseconds(100), .seconds(1), .seconds(10)])
        snapshotEntries = registry.makeGauge(descriptor: name("sluice_snapshot_entries", "Entries in the last snapshot written."))
        snapshotBytes = registry.makeGauge(descriptor: name("sluice_snapshot_bytes", "Size of the last snapshot written (bytes)."))
        lastSnapshot = registry.makeGauge(descriptor: name("sluice_snapshot_last_success_timestamp_seconds",
                                                           "When the last snapshot was written (seconds since the epoch; 0: never)."))
        generation.set(Double(1))
        // Present from the start, so an alert on their rate sees zero rather than nothing.
        reloadsOK.increment(by: Int64(0))
        reloadsFailed.increment(by: Int64(0))
        snapshotsOK.increment(by: Int64(0))
        snapshotsFailed.increment(by: Int64(0))
    }

    func reloaded(generation value: UInt64, at now: Int64) {
        reloadsOK.increment()
        generation.set(Double(value))
        lastReload.set(Double(now) / 1e9)
    }

    func reloadFailed() { reloadsFailed.increment() }

    func snapshotWritten(_ written: Snapshotter.Written, at now: Int64) {
        snapshotsOK.increment()
        snapshotDuration.record(.nanoseconds(written.durationNanoseconds))
        snapshotEntries.set(Double(written.entries))
        snapshotBytes.set(Double(written.bytes))
        lastSnapshot.set(Double(now) / 1e9)
    }

    func snapshotFailed() { snapshotsFailed.increment() }
}
