#!/usr/bin/env python3
"""Plots the adaptive demonstration's two runs side by side (scripts/adaptive-demo.sh).

Each run folder holds bench.jsonl (sluice-bench --timeline: per second and tier) and
upstream.jsonl (the upstream's reports and Sluice's answers).
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load(folder):
    bench = lines(os.path.join(folder, "bench.jsonl"))
    upstream = lines(os.path.join(folder, "upstream.jsonl"))
    start = min(row["t_unix"] for row in bench)
    tiers = sorted({row["tier"] for row in bench}, key=lambda t: (t != "vip", t))
    return bench, upstream, start, tiers


def figures(bench, upstream, start, tiers, seconds):
    """One run's figures: per tier totals and success, and the upstream's p99 over the run."""
    p99s = sorted(r["p99_ms"] for r in upstream if 0 <= r["t_unix"] - start <= seconds) or [0]
    out = {"upstream_p99_ms": {"median": round(p99s[len(p99s) // 2], 1), "p90_of_reports": round(p99s[int(len(p99s) * 0.9)], 1),
                               "max": round(p99s[-1], 1)},
           "tiers": {}}
    for tier in tiers:
        rows = [r for r in bench if r["tier"] == tier]
        total = {k: sum(r[k] for r in rows) for k in ("offered", "admitted", "ok", "timed_out", "shed", "limited", "errors")}
        total["success_percent"] = round(100 * total["ok"] / total["offered"], 2) if total["offered"] else 0
        out["tiers"][tier] = total
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--off", required=True)
    parser.add_argument("--on", required=True)
    parser.add_argument("--png", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()
    runs = {"adaptive off": load(args.off), "adaptive on": load(args.on)}
    colors = {"vip": "tab:blue", "best_effort": "tab:orange"}
    fig, axes = plt.subplots(3, 2, figsize=(13, 10), sharex=True)
    report = {}
    for column, (title, (bench, upstream, start, tiers)) in enumerate(runs.items()):
        report[title] = figures(bench, upstream, start, tiers, args.seconds)
        ax = axes[0][column]
        for tier in tiers:
            rows = [r for r in bench if r["tier"] == tier]
            t = [r["t"] + 0.5 for r in rows]
            ax.plot(t, [r["offered"] for r in rows], ":", color=colors.get(tier), label=f"{tier} offered")
            ax.plot(t, [r["admitted"] for r in rows], "-", color=colors.get(tier), label=f"{tier} admitted by Sluice")
            ax.plot(t, [r["ok"] for r in rows], "--", color=colors.get(tier), alpha=0.6, label=f"{tier} served in time")
        ax.set_title(title)
        ax.set_ylabel("requests per second")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
        ax = axes[1][column]
        t = [r["t_unix"] - start for r in upstream]
        ax.semilogy(t, [max(r["p99_ms"], 0.1) for r in upstream], color="tab:red", label="upstream p99 (its own reports)")
        ax.axhline(20, color="gray", ls=":", label="target_p99 20 ms")
        ax.axhline(1000, color="black", ls=":", label="client timeout 1 s")
        ax.set_ylabel("ms")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
        ax = axes[2][column]
        ax.plot(t, [r["load_factor"] for r in upstream], color="tab:green", label="load factor" + (" (computed, not applied)" if "off" in title else ""))
        for tier in tiers:
            ax.plot(t, [r["multipliers"].get(tier, 1) for r in upstream], color=colors.get(tier), alpha=0.7, label=f"{tier} multiplier")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("seconds (offered load rises linearly)")
        ax.legend(fontsize=7, loc="lower left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.png, dpi=90)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")
    for title, figures_ in report.items():
        p99 = figures_["upstream_p99_ms"]
        print(f"{title}: upstream p99 median {p99['median']} ms, max {p99['max']} ms")
        for tier, total in figures_["tiers"].items():
            print(f"  {tier:12} offered {total['offered']:7} admitted {total['admitted']:7} ok {total['ok']:7} "
                  f"success {total['success_percent']:6.2f}%")


if __name__ == "__main__":
    main()
