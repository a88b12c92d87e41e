/// The configuration `sluiced` runs with when given no file. `sluiced --print-default-config`
/// prints it, as a starting point for your own.
public enum DefaultConfiguration {
    /// The embedded default configuration file.
    public static let yaml = """
    # Sluice configuration. Every key is optional; these are the defaults.
    # Durations: an integer of milliseconds, or a number with ms, s, m, h or d (e.g. 500ms, 1m, 1d).

    listen:
      # Unix sockets: the fastest way in from the same machine.
      unix:
        - path: /tmp/sluice.sock
          mode: "0660"          # owner and group may connect
      # TCP: loopback only unless you say otherwise. A TCP listener requires every client to
      # authenticate (auth.tokens_file) unless it says auth: none, allowed only on loopback.
      tcp:
        - { address: 127.0.0.1:7420, auth: none }

    server:
      max_frame_bytes: 1048576  # larger frames are refused and the connection closed
      max_connections: 10000    # more are answered CODE_OVERLOADED and closed
      max_batch: 1000           # checks in one request
      max_key_bytes: 4096       # bytes in a tenant, key, subject or rule name
      max_queued_bytes: 1048576 # unread answers per connection before its requests stop being read
      idle_timeout: 10m         # a connection that sends nothing this long is closed (0: never)
      read_timeout: 10s         # a frame must arrive whole within this (0: never)
      write_timeout: 30s        # answers left unread (past max_queued_bytes) this long close the connection (0: never)
      evict_idle_after: 10s     # when full, a new client evicts the TCP connection idle longest, if this idle (0: never)
      unix_reserve: 64          # Unix socket connections allowed past max_connections
      max_queue_delay: 100ms    # past this queueing delay checks are answered CODE_OVERLOADED at once (0: never)
      threads: 0                # event-loop threads; 0 = one per core
      clock: monotonic          # or "request": time comes from each check's now_ms

    table:
      shards: 0                 # 0 = 16 per core (a power of two)
      max_entries: 5000000      # beyond this the least recently used keys are evicted

    # The table is written here every interval and on shutdown, and read back at start, so a
    # restart keeps every caller's limits. path: "" keeps nothing.
    snapshot:
      path: /tmp/sluice.snapshot
      interval: 30s

    # Prometheus metrics at /metrics, and /healthz and /readyz, over HTTP. "off" serves none.
    metrics:
      listen: 127.0.0.1:7421

    # Operator requests (sluicectl reload, sluicectl snapshot) are served on the Unix sockets,
    # whose mode says who may connect; on TCP only if allowed here.
    admin:
      allow_tcp: false

    # Who may connect (docs/SECURITY.md). sluicectl token create --file FILE makes a token, prints
    # it once and writes only its salted hash to FILE; name FILE here and reload.
    auth:
      # tokens_file: /etc/sluice/tokens.yaml
      max_failures: 3           # failed authentications before a connection is closed
      failures_per_minute: 30   # per client address; past it, its attempts are refused for a while

    log:
      level: info               # trace, debug, info, notice, warning, error, critical
      format: text              # or json: one object per line

    defaults:
      algorithm: gcra           # gcra, token_bucket, sliding_window, fixed_window, concurrency

    # Tenants: when strict, a check naming an undeclared tenant gets CODE_UNKNOWN_TENANT.
    strict_tenants: false

    # Rules, by name, usable by every tenant. A rule has one limit, or several under `limits`
    # that are decided together (allowed only if all allow).
    rules:
      # Example: 10 per second with bursts of 20, and at most 10,000 a day.
      default:
        limits:
          - { limit: 10, period: 1s, burst: 20 }
          - { limit: 10000, period: 1d }

    # Reputation: every subject (the check's subject, or its key) has a score from 0 (hostile)
    # to 100 (trusted) that events move and time brings back to neutral. It scales the subject's
    # limits through the curve and, below block_below, denies its checks (reason "reputation").
    # docs/REPUTATION.md explains the model and how to roll it out.
    reputation:
      neutral: 50
      half_life: 1h             # the distance from neutral halves every half-life
      block_below: 5            # 0 never blocks
      record_denials: true      # a check denied by a limit records rate_limited
      max_subjects: 1000000     # beyond, the mildest records are forgotten
      weights:                  # score points per event; add your own kinds here
        rate_limited: -1
        auth_failure: -5
        bad_request: -2
        success: 0.2
        captcha_passed: 20
        anomaly: -20
      curve:                    # score -> limit multiplier
        interpolation: linear   # or step
        points:
          - { score: 0, multiplier: 0.25 }
          - { score: 20, multiplier: 0.25 }
          - { score: 50, multiplier: 1.0 }
          - { score: 80, multiplier: 1.5 }

    # Where reputation is kept across restarts (SQLite). path: "" keeps it in memory only.
    store:
      path: /tmp/sluice.db
      commit_interval: 100ms    # what a crash can lose of events not sent as durable
      retention: 7d             # events older than this are deleted
      max_events: 10000000

    # Feature flags: each feature on or off, the share of subjects it applies to (a stable hash
    # picks them: raising the rollout only adds subjects), and shadow mode (computed and reported
    # as would_deny, not enforced). `sluicectl flags` changes them until the next reload.
    features:
      reputation: { enabled: true, rollout: 100, shadow: true }
      # adaptive: { enabled: true, rollout: 100, shadow: true }
      # anomaly: { enabled: true, rollout: 100, shadow: true }

    # Adaptive limiting (docs/ADAPTIVE.md), under features.adaptive: tiers of subjects
    # (sluicectl tiers set SUBJECT TIER), rules naming the service they protect (shed lowest
    # priority first when it reports overload with ReportLoad), limits relative to each
    # subject's learned normal rate. Subjects can be put in a tier at any time; its multiplier
    # and priority apply while features.adaptive is on.
    tiers:
      vip:         { multiplier: 4, priority: 100, reserve: 0.9 }
      best_effort: { multiplier: 1, priority: 0 }
    # adaptive:
    #   target_p99: 100ms        # the latency a reporting service should stay under
    # rules:
    #   api:    { limit: 100, period: 1s, service: checkout }
    #   export: { limit: 100, period: 1m, baseline: { factor: 3, floor: 10, ceiling: 1000 } }

    # Anomaly detection (docs/ANOMALY.md), under features.anomaly: checks (with their ip and
    # route) and ReportOutcome feed signals against learned normals; alerts go to the log,
    # `sluicectl alerts`, the webhook and sluice_anomaly_alerts_total, and each kind may respond.
    # anomaly:
    #   alert_log: /tmp/sluice-alerts.jsonl
    #   responses:
    #     credential_stuffing: { action: block, ttl: 1h }
    #     rate_spike:          { action: tighten, factor: 0.1, ttl: 10m }
    #   webhook: { url: "https://hooks.slack.com/services/T000/B000/XXXX", format: slack }   # or http://; ca_file: a private CA

    # tenants:
    #   acme:
    #     rules:
    #       login: { limit: 5, period: 1m, algorithm: sliding_window }
    """
}
