#!/usr/bin/env python3
"""Writes contrib/grafana/sluice.json, the Grafana dashboard for sluiced, from the panel list
below (edit here, then run this script; tests/contrib checks the JSON is what this writes, that
every query parses and that every metric it names is one sluiced exports)."""
import json
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SEL = 'instance=~"$instance"'
RATE = "$__rate_interval"

# (title, unit, description, [(expr, legend)], kind)
ROWS = [
    ("Decisions", [
        ("Checks per second by decision", "reqps", "Every check decided, by its decision (allowed, over_limit, blocked, shed, anomaly, ...).",
         [(f'sum by (decision) (rate(sluice_checks_total{{{SEL}}}[{RATE}]))', "{{decision}}")], "timeseries"),
        ("Denied share by rule", "percentunit", "Of each rule's checks, the share not allowed.",
         [(f'sum by (tenant, rule) (rate(sluice_checks_total{{{SEL},decision!="allowed"}}[{RATE}])) / sum by (tenant, rule) (rate(sluice_checks_total{{{SEL}}}[{RATE}]))', "{{tenant}} / {{rule}}")], "timeseries"),
        ("Denials by reason", "reqps", "Checks not allowed, by why: over_limit, exceeds_capacity, blocked (reputation or anomaly block), reputation, shed, anomaly.",
         [(f'sum by (decision) (rate(sluice_checks_total{{{SEL},decision!~"allowed|shadow_over_limit"}}[{RATE}]))', "{{decision}}")], "timeseries"),
        ("Decision latency", "s", "Time to decide one check request, from its decoded bytes to its encoded answer.",
         [(f'histogram_quantile({q}, sum by (le) (rate(sluice_decision_duration_seconds_bucket{{{SEL}}}[{RATE}])))', f"p{label}")
          for q, label in ((0.5, "50"), (0.99, "99"), (0.999, "99.9"))], "timeseries"),
        ("Errors by code", "reqps", "Requests answered with an error.",
         [(f'sum by (code) (rate(sluice_errors_total{{{SEL}}}[{RATE}]))', "{{code}}")], "timeseries"),
        ("Envoy descriptors near or over their limit", "reqps", "Per limit (domain.path): near_limit (at least envoy.near_limit_ratio used) and over_limit.",
         [(f'sum by (rule, result) (rate(sluice_envoy_rule_descriptors_total{{{SEL},result=~"near_limit|over_limit"}}[{RATE}]))', "{{rule}} {{result}}")], "timeseries"),
    ]),
    ("Capacity", [
        ("Table entries", "short", "Limiter states held, against table.max_entries.",
         [(f'sum by (instance) (sluice_table_entries{{{SEL}}})', "{{instance}} entries"),
          (f'sum by (instance) (sluice_table_max_entries{{{SEL}}})', "{{instance}} max")], "timeseries"),
        ("Table evictions", "ops", "Entries evicted because the table was full: evicted callers get a fresh quota.",
         [(f'sum by (instance) (rate(sluice_table_evictions_total{{{SEL}}}[{RATE}]))', "{{instance}}")], "timeseries"),
        ("Event loop delay", "s", "The longest an event loop ran late since the previous scrape; past server.max_queue_delay checks are refused.",
         [(f'max by (instance) (sluice_event_loop_delay_max_seconds{{{SEL}}})', "{{instance}}")], "timeseries"),
        ("Connections", "short", "Connections open, and accepted per second.",
         [(f'sum by (instance) (sluice_connections_open{{{SEL}}})', "{{instance}} open"),
          (f'sum by (instance) (rate(sluice_connections_accepted_total{{{SEL}}}[{RATE}]))', "{{instance}} accepted/s")], "timeseries"),
        ("Memory", "bytes", "Resident memory, and what the daemon holds from malloc.",
         [(f'process_resident_memory_bytes{{{SEL}}}', "{{instance}} resident"),
          (f'sluice_heap_in_use_bytes{{{SEL}}}', "{{instance}} heap")], "timeseries"),
        ("CPU", "percentunit", "CPU time per second (1 = one core).",
         [(f'rate(process_cpu_seconds_total{{{SEL}}}[{RATE}])', "{{instance}}")], "timeseries"),
    ]),
    ("Backends", [
        ("Store up", "short", "1 while the store (SQLite or PostgreSQL) is reachable.",
         [(f'sluice_store_up{{{SEL}}}', "{{instance}}")], "stat"),
        ("Store commits", "ops", "Commits of reputation and tiers, by result.",
         [(f'sum by (result) (rate(sluice_store_commits_total{{{SEL}}}[{RATE}]))', "{{result}}")], "timeseries"),
        ("Store pending events", "short", "Events waiting to be written.",
         [(f'sum by (instance) (sluice_store_pending_events{{{SEL}}})', "{{instance}}")], "timeseries"),
        ("Redis breaker open", "short", "1 while checks take redis.on_failure because Redis cannot be reached.",
         [(f'max by (instance) (sluice_redis_breaker_state{{{SEL},state="open"}})', "{{instance}}")], "stat"),
        ("Redis round trip", "s", "p99 of a pipelined write of script calls to its last reply.",
         [(f'histogram_quantile(0.99, sum by (le) (rate(sluice_redis_round_trip_seconds_bucket{{{SEL}}}[{RATE}])))', "p99")], "timeseries"),
        ("Where checks are decided", "reqps", "In Redis, from the over-limit cache, locally, or on the on_failure path.",
         [(f'sum by (path) (rate(sluice_redis_decisions_total{{{SEL}}}[{RATE}]))', "{{path}}")], "timeseries"),
    ]),
    ("Intelligence", [
        ("Anomaly alerts by kind", "short", "Alerts raised in each interval, by kind.",
         [(f'sum by (kind) (increase(sluice_anomaly_alerts_total{{{SEL}}}[{RATE}]))', "{{kind}}")], "timeseries"),
        ("Webhook deliveries", "short", "Alerts POSTed to anomaly.webhook: delivered, failed after every retry, dropped.",
         [(f'sum by (result) (increase(sluice_anomaly_webhook_alerts_total{{{SEL}}}[{RATE}]))', "{{result}}")], "timeseries"),
        ("Events dropped", "ops", "Checks and outcomes the background engines could not take.",
         [(f'sum by (instance) (rate(sluice_anomaly_events_dropped_total{{{SEL}}}[{RATE}]))', "{{instance}} anomaly"),
          (f'sum by (instance) (rate(sluice_background_queue_dropped_total{{{SEL}}}[{RATE}]))', "{{instance}} background"),
          (f'sum by (instance) (rate(sluice_reputation_events_dropped_total{{{SEL}}}[{RATE}]))', "{{instance}} reputation")], "timeseries"),
        ("Shadow would-deny rate", "reqps", "Checks a feature in shadow mode would have denied: what turning shadow off would refuse.",
         [(f'sum by (feature) (rate(sluice_shadow_would_deny_total{{{SEL}}}[{RATE}]))', "{{feature}}")], "timeseries"),
        ("Reputation subjects", "short", "Subjects with a reputation record.",
         [(f'sum by (instance) (sluice_reputation_subjects{{{SEL}}})', "{{instance}}")], "timeseries"),
        ("Load factor", "percentunit", "The share of its normal capacity each protected service should be sent (1: no shedding).",
         [(f'min by (service) (sluice_adaptive_load_factor{{{SEL}}})', "{{service}}")], "timeseries"),
    ]),
]


def dashboard():
    panels = []
    ident = 1
    y = 0
    for row_title, row_panels in ROWS:
        panels.append({"type": "row", "title": row_title, "id": ident, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        ident += 1
        y += 1
        for index, (title, unit, description, targets, kind) in enumerate(row_panels):
            width = 8
            panel = {
                "type": kind, "title": title, "description": description, "id": ident,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": width, "x": (index % 3) * width, "y": y + (index // 3) * 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
                "targets": [{"refId": chr(ord("A") + n), "expr": expr, "legendFormat": legend,
                             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                            for n, (expr, legend) in enumerate(targets)],
            }
            panels.append(panel)
            ident += 1
        y += 8 * ((len(row_panels) + 2) // 3)
    return {
        "title": "Sluice",
        "uid": "sluice-overview",
        "description": "sluiced: decisions, denials by reason, latency, capacity, store and Redis, anomaly alerts and webhooks.",
        "tags": ["sluice", "rate-limiting"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1},
            {"name": "instance", "label": "Instance", "type": "query",
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": {"query": "label_values(sluice_build_info, instance)", "refId": "instances"},
             "definition": "label_values(sluice_build_info, instance)",
             "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "hide": 0, "refresh": 2, "sort": 1},
        ]},
        "panels": panels,
    }


def render():
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    path = os.path.join(ROOT, "contrib", "grafana", "sluice.json")
    if sys.argv[1:] == ["--check"]:
        with open(path) as f:
            sys.exit(0 if f.read() == render() else "contrib/grafana/sluice.json is stale: run scripts/grafana-dashboard.py")
    with open(path, "w") as f:
        f.write(render())
