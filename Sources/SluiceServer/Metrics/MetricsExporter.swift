import CSluiceSupport
import NIOConcurrencyHelpers
import Prometheus
import SluiceConfiguration
import SluiceCore
import SluiceIntelligence
import SluiceStore
import SluiceWire

/// Renders `/metrics`: reads what the hot path counted (per-thread check counters, per-shard
/// table counters, connection counters) at scrape time, brings the Prometheus registry up to
/// date, and emits it in the text exposition format.
///
/// Counters read at scrape time reach the registry as the difference from the last scrape, so
/// they keep Prometheus' counter semantics. The decision-latency histogram is emitted here
/// directly: swift-prometheus' histogram takes a lock per observation, and the hot path records
/// one per request into per-thread buckets instead.
final class MetricsExporter: Sendable {
    let metrics: SluiceMetrics
    let state: LiveState
    let table: LimiterTable
    let counters: ServerCounters
    let events: EventTap<CheckEvent>?
    let reputation: ReputationService?
    let load: SheddingService?
    let anomaly: AnomalyService?
    let time: TimeSource
    let version: String
    /// The event loops' queueing-delay gauges, in loop order.
    let loopDelays: [QueueDelayGauge]
    /// The Redis backend, when limits are shared through one.
    let redis: RedisBackend?
    /// Authentication's counters.
    let gatekeeper: Gatekeeper?
    /// Connections per tenant.
    let connectionQuotas: ConnectionQuotas?
    /// Envoy's rate limit service, when served.
    let envoy: EnvoyCounters?
    /// The value each scrape-time counter had at the last scrape, by name and labels.
    let exported = NIOLockedValueBox<[String: UInt64]>([:])

    init(metrics: SluiceMetrics, state: LiveState, table: LimiterTable, counters: ServerCounters,
         events: EventTap<CheckEvent>?, reputation: ReputationService? = nil, load: SheddingService? = nil,
         anomaly: AnomalyService? = nil, time: TimeSource,
         version: String, loopDelays: [QueueDelayGauge] = [], redis: RedisBackend? = nil, gatekeeper: Gatekeeper? = nil,
         connectionQuotas: ConnectionQuotas? = nil, envoy: EnvoyCounters? = nil) {
        self.envoy = envoy
        self.gatekeeper = gatekeeper
        self.connectionQuotas = connectionQuotas
        self.loopDelays = loopDelays
        self.redis = redis
        self.reputation = reputation
        self.load = load
        self.anomaly = anomaly
        self.metrics = metrics
        self.state = state
        self.table = table
        self.counters = counters
        self.events = events
        self.time = time
        self.version = version
    }

    static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    /// The exposition text, `text/plain; version=0.0.4`.
    func render() -> [UInt8] {
        exported.withLockedValue { exported in
            let registry = metrics.registry
            func counter(_ name: String, _ help: String, _ labels: [(String, String)], _ total: UInt64) {
                let key = labels.reduce(name) { "\($0)\u{0}\($1.0)=\($1.1)" }
                let last = exported[key] ?? 0
                let handle = registry.makeCounter(descriptor: Self.descriptor(name, help), labels: labels)
                if total > last { handle.increment(by: Int64(truncatingIfNeeded: total - last)) }
                exported[key] = max(last, total)
            }
            func gauge(_ name: String, _ help: String, _ labels: [(String, String)], _ value: Double) {
                registry.makeGauge(descriptor: Self.descriptor(name, help), labels: labels).set(value)
            }

            for (series, total) in state.checkTotals() {
                counter("sluice_checks_total", "Checks decided, by tenant, rule and decision (allowed, over_limit, exceeds_capacity, blocked, reputation, shed, anomaly, shadow_over_limit: allowed by a rule in shadow that would have denied it).",
                        [("tenant", series.tenant), ("rule", series.rule), ("decision", series.decision)], total)
            }
            counter("sluice_requests_total", "Request frames answered, checks and others, including those answered with an error.", [],
                    counters.requests.load(ordering: .relaxed))
            for (code, total) in counters.errorsByCode() {
                counter("sluice_errors_total", "Requests answered with an error, by its code.", [("code", code)], total)
            }
            gauge("sluice_connections_open", "Connections open now.", [], Double(counters.connectionsOpen.load(ordering: .relaxed)))
            for (index, loop) in loopDelays.enumerated() {
                gauge("sluice_event_loop_delay_max_seconds",
                      "The longest an event loop ran its work late since the last scrape (checks are refused past server.max_queue_delay).",
                      [("loop", "\(index)")], Double(loop.takeLongest()) / 1e9)
            }
            counter("sluice_connections_accepted_total", "Connections accepted since start.", [],
                    counters.connectionsTotal.load(ordering: .relaxed))
            counter("sluice_connections_refused_total", "Connections answered CODE_OVERLOADED or CODE_SHUTTING_DOWN and closed.",
                    [("reason", "max_connections")], counters.connectionsRefused.load(ordering: .relaxed))
            counter("sluice_connections_refused_total", "Connections answered CODE_OVERLOADED or CODE_SHUTTING_DOWN and closed.",
                    [("reason", "shutting_down")], counters.connectionsRefusedShuttingDown.load(ordering: .relaxed))
            counter("sluice_connections_refused_total", "Connections answered CODE_OVERLOADED or CODE_SHUTTING_DOWN and closed.",
                    [("reason", "unix_reserve")], counters.connectionsRefusedUnix.load(ordering: .relaxed))
            for reason in ConnectionEnd.allCases {
                counter("sluice_connections_closed_total", "Connections the daemon closed on its own: idle, stalled in a frame, or evicted for room.",
                        [("reason", reason.description)], counters.ends(reason))
            }
            if let gatekeeper {
                for result in Gatekeeper.Result.allCases {
                    counter("sluice_auth_attempts_total",
                            "Authenticate requests by result: accepted, rejected (no such token, or a wrong one), throttled (the address failed too often).",
                            [("result", result.description)], gatekeeper.results.read(result.rawValue))
                }
                counter("sluice_auth_refused_requests_total", "Requests refused by authentication: unauthenticated (none yet), forbidden (the identity's role or tenant).",
                        [("reason", "unauthenticated")], gatekeeper.unauthenticatedRequests.load(ordering: .relaxed))
                counter("sluice_auth_refused_requests_total", "Requests refused by authentication: unauthenticated (none yet), forbidden (the identity's role or tenant).",
                        [("reason", "forbidden")], gatekeeper.forbiddenRequests.load(ordering: .relaxed))
            }
            if let envoy {
                let requests = "Envoy ShouldRateLimit calls by overall answer: ok, over_limit, error (a gRPC status other than OK)."
                counter("sluice_envoy_requests_total", requests, [("result", "ok")], envoy.overallOK.load(ordering: .relaxed))
                counter("sluice_envoy_requests_total", requests, [("result", "over_limit")], envoy.overallOverLimit.load(ordering: .relaxed))
                counter("sluice_envoy_requests_total", requests, [("result", "error")], envoy.errors.load(ordering: .relaxed))
                let descriptors = "Descriptors of Envoy calls: within_limit, over_limit, shadowed (over, answered OK by shadow_mode), no_limit (no match, an unknown domain, replaced)."
                counter("sluice_envoy_descriptors_total", descriptors, [("result", "within_limit")], envoy.withinLimit.load(ordering: .relaxed))
                counter("sluice_envoy_descriptors_total", descriptors, [("result", "over_limit")], envoy.overLimit.load(ordering: .relaxed))
                counter("sluice_envoy_descriptors_total", descriptors, [("result", "shadowed")], envoy.shadowed.load(ordering: .relaxed))
                counter("sluice_envoy_descriptors_total", descriptors, [("result", "no_limit")], envoy.noLimit.load(ordering: .relaxed))
                counter("sluice_envoy_unknown_domain_requests_total", "Envoy calls naming a domain no descriptor file declares (answered OK).", [],
                        envoy.unknownDomain.load(ordering: .relaxed))
                let perRule = "Descriptors of Envoy calls by limit (domain.path) and result, as envoy ratelimit's per-key stats: within_limit, near_limit (allowed with at least envoy.near_limit_ratio of the limit used; also within_limit), over_limit, shadowed."
                for (rule, counts) in envoy.rules.withLock({ $0 }).sorted(by: { $0.key < $1.key }) {
                    counter("sluice_envoy_rule_descriptors_total", perRule, [("rule", rule), ("result", "within_limit")], counts.withinLimit.load(ordering: .relaxed))
                    counter("sluice_envoy_rule_descriptors_total", perRule, [("rule", rule), ("result", "near_limit")], counts.nearLimit.load(ordering: .relaxed))
                    counter("sluice_envoy_rule_descriptors_total", perRule, [("rule", rule), ("result", "over_limit")], counts.overLimit.load(ordering: .relaxed))
                    counter("sluice_envoy_rule_descriptors_total", perRule, [("rule", rule), ("result", "shadowed")], counts.shadowed.load(ordering: .relaxed))
                }
            }
            for partition in state.current.partitions?.list ?? [] {
                let own = partition.table.statistics()
                gauge("sluice_tenant_table_entries", "Keys held in a tenant's own table (quotas.max_keys).", [("tenant", partition.tenant)],
                      Double(own.entries))
                counter("sluice_tenant_table_evictions_total", "Keys evicted from a tenant's own table because it was full (its own keys only).",
                        [("tenant", partition.tenant)], own.evictions)
            }
            for rate in state.current.quotas?.rates ?? [] {
                counter("sluice_tenant_quota_refusals_total", "Requests refused CODE_QUOTA_EXCEEDED, by tenant and quota.",
                        [("tenant", rate.tenant), ("quota", "checks_per_second")], rate.refusals.load(ordering: .relaxed))
            }
            if let connectionQuotas {
                let counts = connectionQuotas.snapshot
                for (tenant, refused) in counts.refused.sorted(by: { $0.key < $1.key }) {
                    counter("sluice_tenant_quota_refusals_total", "Requests refused CODE_QUOTA_EXCEEDED, by tenant and quota.",
                            [("tenant", tenant), ("quota", "max_connections")], refused)
                }
                for (tenant, open) in counts.open.sorted(by: { $0.key < $1.key }) {
                    gauge("sluice_tenant_connections", "Connections open now acting as one tenant's identity.", [("tenant", tenant)], Double(open))
                }
            }
            counter("sluice_accept_errors_total", "Accepts that failed for want of file descriptors or memory (the listener then backs off).", [],
                    counters.acceptErrors.load(ordering: .relaxed))

            let statistics = table.statistics()
            gauge("sluice_table_entries", "Limiter states held in the table.", [], Double(statistics.entries))
            gauge("sluice_table_max_entries", "Entries held before the least recently used are evicted.", [], Double(statistics.maxEntries))
            gauge("sluice_table_shards", "Lock-striped shards of the table.", [], Double(statistics.shards))
            counter("sluice_table_evictions_total", "Entries evicted because their shard was full (the table is too small if this grows).", [],
                    statistics.evictions)
            counter("sluice_table_reclaimed_total", "Fully recovered entries forgotten to make room.", [], statistics.reclaimed)

            if let events {
                gauge("sluice_background_queue_depth", "Events waiting for a background engine.", [("queue", "check_events")],
                      Double(events.count))
                gauge("sluice_background_queue_capacity", "Events a background queue holds before it drops.", [("queue", "check_events")],
                      Double(events.capacity))
                counter("sluice_background_queue_dropped_total", "Events dropped because their queue was full.",
                        [("queue", "check_events")], events.dropped)
            }
            appendFeatures(counter: counter, gauge: gauge)
            if let redis { appendRedis(redis, counter: counter, gauge: gauge) }
            gauge("sluice_build_info", "Always 1; the labels say which build runs.", [("version", version)], 1)
            gauge("sluice_uptime_seconds", "Seconds since the daemon started.", [], Double(time.uptime()) / 1e9)
            gauge("sluice_heap_in_use_bytes", "Bytes the daemon holds from malloc (glibc's mallinfo2; SQLite's share included); resident memory above it is freed memory not yet returned.",
                  [], Double(sluice_malloc_in_use()))

            var buffer: [UInt8] = []
            buffer.reserveCapacity(16 << 10)
            registry.emit(into: &buffer)
            appendLatency(to: &buffer)
            if let process = ProcessMetrics.read() { buffer.append(contentsOf: ProcessMetrics.exposition(process).utf8) }
            if let redis {
                buffer.append(contentsOf: redis.counts.latency.exposition(
                    name: "sluice_redis_round_trip_seconds", help: "From a pipelined write of script calls to Redis to its last reply.").utf8)
                buffer.append(contentsOf: redis.counts.sizes.exposition(
                    name: "sluice_redis_batch_size", help: "Script calls (checks) in one pipelined write to Redis.").utf8)
            }
            return buffer
        }
    }

    func appendLatency(to buffer: inout [UInt8]) {
        let (buckets, sum, count) = state.latencyTotals()
        let name = "sluice_decision_duration_seconds"
        var text = "# HELP \(name) Time to decide one check request (all its checks), from its decoded bytes to its encoded answer.\n"
        text += "# TYPE \(name) histogram\n"
        var cumulative: UInt64 = 0
        for index in 0..<LatencyBuckets.bounded {
            cumulative &+= buckets[index]
            text += "\(name)_bucket{le=\"\(Double(LatencyBuckets.bound(index)) / 1e9)\"} \(cumulative)\n"
        }
        text += "\(name)_bucket{le=\"+Inf\"} \(count)\n"
        text += "\(name)_sum \(Double(sum) / 1e9)\n"
        text += "\(name)_count \(count)\n"
        buffer.append(contentsOf: text.utf8)
    }

    /// The Redis backend: where checks were decided, errors by kind, the breaker.
    func appendRedis(_ redis: RedisBackend, counter: (String, String, [(String, String)], UInt64) -> Void,
                     gauge: (String, String, [(String, String)], Double) -> Void) {
        let counts = redis.counts
        let help = "Checks by where they were decided: in Redis, denied from the over-limit cache, on this daemon's table (a rule's backend: local), or on the on_failure path."
        counter("sluice_redis_decisions_total", help, [("path", "redis")], counts.decided.load(ordering: .relaxed))
        counter("sluice_redis_decisions_total", help, [("path", "cache")], counts.cached.load(ordering: .relaxed))
        counter("sluice_redis_decisions_total", help, [("path", "local")], counts.local.load(ordering: .relaxed))
        counter("sluice_redis_decisions_total", help, [("path", "on_failure_\(redis.settings.degraded.rawValue)")],
                counts.degraded.load(ordering: .relaxed))
        counter("sluice_redis_writes_total", "Pipelined writes of script calls sent to Redis.", [], counts.writes.load(ordering: .relaxed))
        for (kind, count) in counts.errorCounts {
            counter("sluice_redis_errors_total", "Writes to Redis that failed, by kind (reply: an error reply to one script call).",
                    [("kind", kind)], count)
        }
        let state = redis.breakerState
        for name in ["closed", "open", "half_open"] {
            gauge("sluice_redis_breaker_state", "1 for the circuit breaker's state now (open: checks take the on_failure path without asking Redis; on a Cluster, open when some node's breaker is).",
                  [("state", name)], state == name ? 1 : 0)
        }
        counter("sluice_redis_breaker_opened_total", "Times a circuit breaker opened (a node's, on a Cluster).", [],
                counts.breakerOpened.load(ordering: .relaxed))
        gauge("sluice_redis_breaker_open_nodes", "Nodes whose circuit breaker is open or probing now (on a Cluster: primaries; else the server).",
              [], Double(redis.breakerNodes.open))
        gauge("sluice_redis_connections_up", "Connections to Redis up now.", [], Double(redis.connectionsUp))
        if let cluster = redis.clusterCounts {
            let help = "Redirections a Redis Cluster answered and the client followed: moved (the slot lives elsewhere), ask (the slot is moving), tryagain (its keys are split by a move)."
            counter("sluice_redis_cluster_redirects_total", help, [("kind", "moved")], cluster.moved)
            counter("sluice_redis_cluster_redirects_total", help, [("kind", "ask")], cluster.asked)
            counter("sluice_redis_cluster_redirects_total", help, [("kind", "tryagain")], cluster.retried)
            counter("sluice_redis_cluster_slot_map_reads_total", "Reads of the Cluster's slot map (CLUSTER SLOTS): at start, after a redirection or a node's failure.",
                    [], cluster.refreshes)
        }
        gauge("sluice_redis_denial_cache_entries", "Denials kept to answer again without Redis until their retry time.", [],
              Double(redis.denials?.count ?? 0))
    }

    /// Feature flags, reputation and the store.
    func appendFeatures(counter: (String, String, [(String, String)], UInt64) -> Void,
                        gauge: (String, String, [(String, String)], Double) -> Void) {
        let configuration = state.current.configuration
        for name in Configuration.knownFeatures {
            let flag = configuration.features[name]
            let labels = [("feature", name)]
            gauge("sluice_feature_enabled", "1 when the feature is on (features.NAME.enabled).", labels, flag?.enabled == true ? 1 : 0)
            gauge("sluice_feature_rollout_percent", "The share of subjects the feature applies to.", labels,
                  flag?.enabled == true ? flag?.rolloutPercent ?? 0 : 0)
            gauge("sluice_feature_shadow", "1 when the feature is computed and reported but not enforced.", labels,
                  flag?.shadow == true ? 1 : 0)
        }
        if let anomaly {
            for kind in AnomalyResponseBook.kinds.sorted() {
                counter("sluice_anomaly_alerts_total", "Anomaly alerts raised, by kind.", [("kind", kind)], anomaly.alertsByKind[kind] ?? 0)
            }
            for (tenant, kinds) in anomaly.alertsByTenant.sorted(by: { $0.key < $1.key }) {
                for (kind, count) in kinds.sorted(by: { $0.key < $1.key }) {
                    counter("sluice_anomaly_tenant_alerts_total",
                            "Anomaly alerts raised, by tenant (a declared one, (default), (none) for global alerts, (undeclared) for others) and kind.",
                            [("tenant", tenant), ("kind", kind)], count)
                }
            }
            let webhook = anomaly.webhook.counts
            for (result, value) in [("delivered", webhook.delivered), ("failed", webhook.failed), ("dropped", webhook.dropped)] {
                counter("sluice_anomaly_webhook_alerts_total", "Alerts POSTed to anomaly.webhook: delivered, failed after every retry, or dropped (queue full).",
                        [("result", result)], value)
            }
            gauge("sluice_anomaly_watchers", "Open WatchAlerts streams.", [], Double(anomaly.watchers))
            let tracking = anomaly.tracking
            gauge("sluice_anomaly_tracked", "Subjects and addresses the detector keeps a record of (at most anomaly.max_subjects, max_sources).",
                  [("entity", "subject")], Double(tracking.subjects))
            gauge("sluice_anomaly_tracked", "Subjects and addresses the detector keeps a record of (at most anomaly.max_subjects, max_sources).",
                  [("entity", "source")], Double(tracking.sources))
            counter("sluice_anomaly_untracked_total", "Requests whose subject or address found the detector full (counted in its sketch instead).",
                    [("entity", "subject")], tracking.untrackedSubjects)
            counter("sluice_anomaly_untracked_total", "Requests whose subject or address found the detector full (counted in its sketch instead).",
                    [("entity", "source")], tracking.untrackedSources)
            counter("sluice_anomaly_events_dropped_total", "Checks and outcomes dropped because anomaly detection's queue was full.", [],
                    anomaly.tap.dropped)
        }
        if let load {
            for (service, factor) in load.factors {
                gauge("sluice_adaptive_load_factor",
                      "The share of its normal capacity each service should be sent (1 = no shedding; sluiced: the daemon's own).",
                      [("service", service)], factor)
            }
            for entry in load.tierLoads() {
                let labels = [("service", entry.service), ("tier", entry.tier.isEmpty ? "_none" : entry.tier)]
                gauge("sluice_adaptive_tier_multiplier", "The multiplier each tier's limits get on the rules naming a service (0: shed).",
                      labels, entry.multiplier)
                gauge("sluice_adaptive_demand", "Hits per second each tier asks of a service's rules (smoothed).", labels, entry.demand)
            }
            counter("sluice_shadow_would_deny_total", "Checks allowed that a feature in shadow mode would have denied.",
                    [("feature", AdaptiveFeature.name)], load.wouldDeny.load(ordering: .relaxed))
            gauge("sluice_event_loop_delay_seconds", "The longest delay of a task queued on an event loop, over the last adaptive.interval.",
                  [], Double(load.loopDelay) / 1e9)
        }
        guard let reputation else { return }
        counter("sluice_shadow_would_deny_total", "Checks allowed that a feature in shadow mode would have denied.",
                [("feature", ReputationService.feature)], reputation.hot.wouldDeny.load(ordering: .relaxed))
        gauge("sluice_reputation_subjects", "Subjects with a reputation record (the rest are at the neutral start).", [],
              Double(reputation.book.count))
        let counts = reputation.counts.withLockedValue { $0 }
        for kind in configuration.reputation.model.weights.keys.sorted() {
            counter("sluice_reputation_events_total", "Reputation events applied, by kind (rate_limited: recorded by the daemon).",
                    [("kind", kind)], counts.eventsByKind[kind] ?? 0)
        }
        counter("sluice_reputation_events_dropped_total", "rate_limited events dropped because their queue was full.", [],
                reputation.denials.dropped)
        counter("sluice_reputation_forgotten_total", "Records removed by the sweep (back at neutral, or beyond max_subjects).", [],
                counts.forgotten)
        guard configuration.store.isPersistent else { return }
        let writer = reputation.writer.current
        gauge("sluice_store_up", "1 when the store (SQLite or PostgreSQL) is open.", [], reputation.storeIsUp ? 1 : 0)
        counter("sluice_store_commits_total", "Group commits to the store, by result.", [("result", "ok")], writer.commits)
        counter("sluice_store_commits_total", "Group commits to the store, by result.", [("result", "failed")], writer.failures)
        gauge("sluice_store_last_commit_seconds", "How long the last group commit took.", [], Double(writer.lastCommitDuration) / 1e9)
        counter("sluice_store_events_written_total", "Events committed to the store.", [], writer.eventsWritten)
        gauge("sluice_store_pending_events", "Events waiting for the next commit.", [], Double(writer.pendingEvents))
        gauge("sluice_store_pending_records", "Score changes waiting for the next commit.", [], Double(writer.pendingRecords))
        counter("sluice_store_events_dropped_total", "Events dropped while the store could not be written (beyond store.max_pending_events).",
                [], writer.eventsDropped)
        counter("sluice_store_events_expired_total", "Events deleted by retention or max_events.", [], counts.expired)
        if configuration.store.backend == .postgres {
            let sync = reputation.fleet.statistics
            counter("sluice_store_sync_events_total", "Other daemons' reputation events applied from the shared store.", [], sync.eventsApplied)
            counter("sluice_store_sync_changes_total", "Tier changes and anomaly responses applied from the shared store.", [], sync.changesApplied)
            counter("sluice_store_sync_failures_total", "Reads of the other daemons' changes that failed.", [], sync.failures)
            counter("sluice_store_sync_reloads_total", "Tiers and responses read whole after falling behind the kept changes.", [], sync.reloads)
            counter("sluice_store_sync_changes_dropped_total", "Anomaly responses and operators' scores made here that could not be shared (too many waiting).", [],
                    sync.changesDropped)
            gauge("sluice_store_sync_event_id", "The newest event id this daemon has applied (every daemon's; compare across daemons).", [],
                  Double(sync.cursor))
        }
        gauge("sluice_store_memory_bytes", "Heap SQLite holds (page caches of every connection, statements).", [],
              Double(Stores.memoryInUse))
    }
}
