#!/usr/bin/env python3
"""A second labeled-trace generator, written apart from ../shared/traces/gen_dev.py so that the
anomaly detector can be tuned on one and scored on the other (docs/TRACES.md).

    python3 scripts/traces/gen_field.py --seed 7 --hours 2 --out /tmp/field-7
    python3 ../shared/traces/score.py /tmp/field-7 alerts.jsonl

It writes PREFIX.csv.gz (ts_ms,tenant,subject,ip,route,status,cost) and PREFIX.labels.json in the
shared format. Standard library only; deterministic for a seed and a length.

What it models, and what gen_dev.py does not:
- four tenants with their own peak hours (an evening shop, an office-hours B2B API, a morning
  news site, a night-time mobile game), each with its own mix of the actors below;
- benign traffic real services see: people browsing a catalogue of many distinct items (some
  reading dozens a minute), offices of many users behind one NAT address, mobile users whose
  address changes every few minutes (IPv4 carrier pools and rotating IPv6), heavy API partners
  whose batch jobs burst every quarter hour, internal services with cron bursts on the hour,
  polite crawlers, login typos; and a benign flash crowd (a story everyone reads at once);
- attacks: credential stuffing spread thinly over hundreds of addresses with a few attempts
  each, one API key or account used from many places at once, scraping paced just under a
  per-minute floor for hours, an application-level flood from a large botnet, enumeration of
  object ids by one account, and password spraying from one address.
"""
import argparse
import gzip
import ipaddress
import json
import math
import random

HOUR = 3_600_000
MINUTE = 60_000


class Trace:
    def __init__(self, rng, start, end):
        self.rng = rng
        self.start = start
        self.end = end
        self.rows = []

    def add(self, ts, tenant, subject, ip, route, status=200, cost=1):
        if self.start <= ts <= self.end:
            self.rows.append((int(ts), tenant, subject, ip, route, status, cost))


class Tenant:
    def __init__(self, name, prefix, peaks, scale, mobile, catalogue):
        self.name = name
        self.prefix = prefix
        self.peaks = peaks  # (hour UTC, weight, width in hours)
        self.scale = scale
        self.mobile = mobile
        self.catalogue = catalogue

    def level(self, ts):
        """Relative load at `ts`: a floor plus the tenant's peaks, each a bump around its hour."""
        hour = (ts / HOUR) % 24
        value = 0.15
        for peak, weight, width in self.peaks:
            distance = min(abs(hour - peak), 24 - abs(hour - peak))
            value += weight * math.exp(-0.5 * (distance / width) ** 2)
        return value


def public_v4(rng):
    while True:
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        if address.is_global and not address.is_multicast:
            return str(address)


def v4_in(rng, prefix16):
    return f"{prefix16}.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"


def v6_in(rng, prefix64):
    return str(ipaddress.IPv6Address((prefix64 << 64) | rng.getrandbits(64)))


def public_prefix16(rng):
    while True:
        a, b = rng.randrange(11, 224), rng.randrange(0, 256)
        if a in (100, 127, 169, 172, 192, 198, 203):
            continue
        return f"{a}.{b}"


def zipf_item(rng, size, exponent=1.1):
    """An item id of a catalogue of `size`, popular ones more often (inverse-CDF of a power law)."""
    u = rng.random()
    return int(size ** (u ** exponent)) if size > 1 else 1


def poisson_times(rng, start, end, rate_per_ms, level=None):
    """Arrival times of a Poisson process of `rate_per_ms` (thinned by `level(ts)` in [0, 1])."""
    ts = start
    while rate_per_ms > 0:
        ts += rng.expovariate(rate_per_ms)
        if ts > end:
            return
        if level is None or rng.random() < level(ts):
            yield ts


# --- benign actors -------------------------------------------------------------------------------

def browsers(trace, tenant, count, offices):
    """People: sessions at their own rates, page views with think times, a login first."""
    rng = trace.rng
    peak = max(tenant.level(h * HOUR) for h in range(24))
    subjects = []
    for n in range(count):
        subject = f"{tenant.prefix}-u{n:06d}"
        subjects.append(subject)
        sessions_per_hour = rng.lognormvariate(-0.7, 0.9)
        mobile = rng.random() < tenant.mobile
        if offices and rng.random() < 0.25:
            home = rng.choice(offices)
        else:
            home = public_v4(rng)
        carrier16 = public_prefix16(rng)
        v6_prefix = rng.getrandbits(64) | (0x2A00 << 48)
        binge = rng.random() < 0.08  # reads dozens of items a minute, legitimately
        for session in poisson_times(rng, trace.start - 30 * MINUTE, trace.end, sessions_per_hour / HOUR,
                                     lambda ts: tenant.level(ts) / peak):
            ip = home
            if mobile:
                ip = v6_in(rng, v6_prefix) if rng.random() < 0.5 else v4_in(rng, carrier16)
            ts = session
            if rng.random() < 0.3:
                if rng.random() < 0.05:
                    trace.add(ts, tenant.name, subject, ip, "POST /session", 401)
                    ts += rng.uniform(3_000, 15_000)
                trace.add(ts, tenant.name, subject, ip, "POST /session", 200)
            views = 1 + int(rng.expovariate(1 / (40 if binge else 9)))
            for _ in range(views):
                think = rng.lognormvariate(math.log(2_500 if binge else 7_000), 0.8)
                ts += think
                if mobile and rng.random() < 0.05:
                    ip = v6_in(rng, v6_prefix) if ":" in ip else v4_in(rng, carrier16)
                item = zipf_item(rng, tenant.catalogue)
                status = 404 if rng.random() < 0.015 else (304 if rng.random() < 0.1 else 200)
                trace.add(ts, tenant.name, subject, ip, f"GET /catalog/items/{item}", status)
                for _ in range(rng.randrange(0, 4)):
                    trace.add(ts + rng.uniform(20, 400), tenant.name, subject, ip, f"GET /catalog/items/{item}/media/{rng.randrange(1, 9)}")
                if rng.random() < 0.04:
                    trace.add(ts + rng.uniform(500, 3_000), tenant.name, subject, ip, "POST /cart/lines", 201)
    return subjects


def partners(trace, tenant, count):
    """Heavy API partners: a steady trickle, and a batch job every quarter hour at full speed."""
    rng = trace.rng
    for n in range(count):
        subject = f"{tenant.prefix}-key-{rng.getrandbits(40):010x}"
        ips = [public_v4(rng) for _ in range(rng.randrange(1, 4))]
        offset = rng.uniform(0, 15 * MINUTE)
        batch = rng.randrange(500, 4_000)
        for ts in poisson_times(rng, trace.start, trace.end, 0.3 / 1_000):
            trace.add(ts, tenant.name, subject, rng.choice(ips), f"GET /v2/accounts/{rng.randrange(1, 5_000)}/balance")
        job = trace.start + offset
        while job < trace.end:
            length = rng.uniform(40_000, 120_000)
            for i in range(batch):
                status = 429 if rng.random() < 0.01 else 200
                trace.add(job + length * i / batch, tenant.name, subject, rng.choice(ips), f"POST /v2/ledger/entries", status)
            job += 15 * MINUTE * rng.uniform(0.9, 1.1)


def internal(trace, tenant, count):
    """Internal services on private addresses: cron bursts at the top of each hour."""
    rng = trace.rng
    for n in range(count):
        subject = f"{tenant.prefix}-svc-{n}"
        ip = f"10.{rng.randrange(0, 256)}.{rng.randrange(0, 256)}.{rng.randrange(1, 255)}"
        hour = (trace.start // HOUR) * HOUR + rng.uniform(0, 5 * MINUTE)
        while hour < trace.end:
            burst = rng.randrange(200, 1_500)
            for i in range(burst):
                trace.add(hour + i * rng.uniform(5, 40), tenant.name, subject, ip, f"PUT /internal/index/{rng.randrange(1, 100_000)}")
            hour += HOUR


def crawlers(trace, tenant, count):
    rng = trace.rng
    for n in range(count):
        subject = f"ip:{public_v4(rng)}"
        ip = subject[3:]
        for ts in poisson_times(rng, trace.start, trace.end, 0.4 / 1_000):
            trace.add(ts, tenant.name, subject, ip, f"GET /catalog/items/{rng.randrange(1, tenant.catalogue)}")


def flash_crowd(trace, tenant, subjects):
    """Regular users all reading one story at once: benign, and must not be alerted on."""
    rng = trace.rng
    start = rng.uniform(trace.start + 0.2 * (trace.end - trace.start), trace.end - 0.2 * (trace.end - trace.start))
    end = start + rng.uniform(6, 12) * MINUTE
    story = rng.randrange(1, tenant.catalogue)
    readers = rng.sample(subjects, min(len(subjects), max(200, len(subjects) // 3)))
    for subject in readers:
        ip = public_v4(rng)
        ts = rng.uniform(start, end)
        for _ in range(rng.randrange(1, 4)):
            trace.add(ts, tenant.name, subject, ip, f"GET /catalog/items/{story}")
            ts += rng.uniform(5_000, 60_000)
    return {"id": "flash_crowd-1", "kind": "flash_crowd", "start_ms": int(start), "end_ms": int(end), "note": f"{tenant.name} story {story}"}


# --- attacks -------------------------------------------------------------------------------------

def window(rng, trace, minimum, maximum):
    length = rng.uniform(minimum, maximum)
    start = rng.uniform(trace.start + 0.1 * (trace.end - trace.start), max(trace.start + 0.1 * (trace.end - trace.start) + 1, trace.end - length))
    return start, min(trace.end, start + length)


def thin_stuffing(trace, tenant, real, index):
    """Hundreds of addresses, each trying a few usernames once or twice: no address stands out."""
    rng = trace.rng
    start, end = window(rng, trace, 20 * MINUTE, 40 * MINUTE)
    ips = [public_v4(rng) for _ in range(rng.randrange(300, 800))]
    names = set()
    for ip in ips:
        for _ in range(rng.randrange(2, 5)):
            name = rng.choice(real) if rng.random() < 0.05 else f"{tenant.prefix}-login-{rng.getrandbits(36):09x}"
            names.add(name)
            status = 200 if name in real and rng.random() < 0.2 else 401
            trace.add(rng.uniform(start, end), tenant.name, name, ip, "POST /session", status)
    return {"id": f"thin_stuffing-{index}", "kind": "thin_stuffing", "start_ms": int(start), "end_ms": int(end),
            "subjects": sorted(names), "ips": ips, "scope": "global", "params": {"addresses": len(ips)}}


def shared_credential(trace, tenant, index):
    """One API key used from many places at once (leaked or shared), each place at a normal pace."""
    rng = trace.rng
    start, end = window(rng, trace, 10 * MINUTE, 25 * MINUTE)
    subject = f"{tenant.prefix}-key-{rng.getrandbits(40):010x}"
    ips = [public_v4(rng) for _ in range(rng.randrange(60, 200))]
    for ip in ips:
        for ts in poisson_times(rng, start, end, rng.uniform(0.01, 0.05) / 1_000):
            trace.add(ts, tenant.name, subject, ip, f"GET /v2/accounts/{rng.randrange(1, 5_000)}/balance")
    return {"id": f"shared_credential-{index}", "kind": "shared_credential", "start_ms": int(start), "end_ms": int(end),
            "subjects": [subject], "ips": ips, "scope": "subject", "params": {"places": len(ips)}}


def paced_scraping(trace, tenant, index):
    """A few accounts reading the catalogue in id order, just under 30 a minute, for hours."""
    rng = trace.rng
    start, end = window(rng, trace, 40 * MINUTE, 0.8 * (trace.end - trace.start))
    subjects, ips = [], []
    for n in range(rng.randrange(2, 5)):
        subject = f"{tenant.prefix}-u9{rng.getrandbits(20):06d}"
        ip = public_v4(rng)
        subjects.append(subject)
        ips.append(ip)
        item = rng.randrange(1, tenant.catalogue // 2)
        ts = start + rng.uniform(0, MINUTE)
        while ts < end:
            trace.add(ts, tenant.name, subject, ip, f"GET /catalog/items/{item}", 200 if rng.random() < 0.97 else 404)
            item += 1
            ts += rng.uniform(2_050, 2_300)
    return {"id": f"paced_scraping-{index}", "kind": "paced_scraping", "start_ms": int(start), "end_ms": int(end),
            "subjects": subjects, "ips": ips, "scope": "subject", "params": {"per_minute": 27}}


def botnet_flood(trace, tenant, index, scale=1.0):
    """An application-level flood from thousands of addresses, each at a modest rate."""
    rng = trace.rng
    start, end = window(rng, trace, 5 * MINUTE, 12 * MINUTE)
    sources = max(200, int(rng.randrange(2_000, 5_000) * min(1.0, scale)))
    ips = [public_v4(rng) if rng.random() < 0.8 else v6_in(rng, rng.getrandbits(64) | (0x2400 << 48)) for _ in range(sources)]
    routes = ["GET /", "GET /catalog/search", "POST /cart/lines"]
    for ip in ips:
        subject = f"ip:{ip}"
        first = rng.uniform(start, start + 0.3 * (end - start))
        for ts in poisson_times(rng, first, end, rng.uniform(0.3, 1.5) / 1_000):
            trace.add(ts, tenant.name, subject, ip, rng.choice(routes), 200 if rng.random() < 0.7 else 503)
    return {"id": f"botnet_flood-{index}", "kind": "botnet_flood", "start_ms": int(start), "end_ms": int(end),
            "subjects": [f"ip:{ip}" for ip in ips], "ips": ips, "scope": "global", "params": {"sources": len(ips)}}


def enumeration(trace, tenant, index):
    """One account walking other customers' order ids: mostly 403 and 404, at a browsing pace."""
    rng = trace.rng
    start, end = window(rng, trace, 10 * MINUTE, 30 * MINUTE)
    subject = f"{tenant.prefix}-u8{rng.getrandbits(20):06d}"
    ip = public_v4(rng)
    order = rng.randrange(100_000, 900_000)
    ts = start
    while ts < end:
        trace.add(ts, tenant.name, subject, ip, f"GET /v2/orders/{order}", 403 if rng.random() < 0.7 else 404)
        order += 1
        ts += rng.uniform(800, 2_500)
    return {"id": f"enumeration-{index}", "kind": "enumeration", "start_ms": int(start), "end_ms": int(end),
            "subjects": [subject], "ips": [ip], "scope": "subject", "params": {}}


def spraying(trace, tenant, real, index):
    """One address trying one password against many real accounts, slowly."""
    rng = trace.rng
    start, end = window(rng, trace, 15 * MINUTE, 30 * MINUTE)
    ip = public_v4(rng)
    targets = rng.sample(real, min(len(real), rng.randrange(150, 400)))
    for n, name in enumerate(targets):
        trace.add(start + (end - start) * n / len(targets), tenant.name, name, ip, "POST /session", 401)
    return {"id": f"spraying-{index}", "kind": "spraying", "start_ms": int(start), "end_ms": int(end),
            "subjects": targets, "ips": [ip], "scope": "subject", "params": {"accounts": len(targets)}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--out", required=True, help="PREFIX: writes PREFIX.csv.gz and PREFIX.labels.json")
    parser.add_argument("--scale", type=float, default=1.0, help="users per tenant and botnet sources, relative (1: about 5,800 users)")
    arguments = parser.parse_args()
    if not 0.25 <= arguments.hours <= 24:
        parser.error("--hours must be between 0.25 and 24")
    rng = random.Random(arguments.seed)
    day = 1_767_225_600_000 + rng.randrange(0, 300) * 24 * HOUR  # some day of 2026
    start = day + rng.randrange(0, 24) * HOUR + rng.randrange(0, 60) * MINUTE
    end = start + int(arguments.hours * HOUR)
    trace = Trace(rng, start, end)
    scale = arguments.scale
    tenants = [
        Tenant("shopfront", "sf", [(19, 1.0, 2.5), (12, 0.4, 1.5)], 1.0, 0.45, 60_000),
        Tenant("ledgerly", "lg", [(10, 0.8, 2.0), (15, 0.9, 2.0)], 0.6, 0.05, 8_000),
        Tenant("dailywire", "dw", [(7, 1.0, 1.5), (21, 0.5, 2.0)], 0.8, 0.6, 20_000),
        Tenant("pixelquest", "pq", [(23, 1.0, 3.0), (2, 0.6, 2.0)], 0.5, 0.85, 5_000),
    ]
    real_users = {}
    for tenant in tenants:
        offices = [public_v4(rng) for _ in range(max(1, int(6 * tenant.scale)))]
        real_users[tenant.name] = browsers(trace, tenant, int(2_000 * tenant.scale * scale), offices)
        crawlers(trace, tenant, 2)
        internal(trace, tenant, 2)
    partners(trace, tenants[1], max(1, int(6 * scale)))
    benign_events = [flash_crowd(trace, tenants[2], real_users["dailywire"])]
    episodes = []
    attacks = [
        lambda i: thin_stuffing(trace, tenants[0], real_users["shopfront"], i),
        lambda i: shared_credential(trace, tenants[1], i),
        lambda i: paced_scraping(trace, tenants[0], i),
        lambda i: botnet_flood(trace, tenants[3], i, scale),
        lambda i: enumeration(trace, tenants[1], i),
        lambda i: spraying(trace, tenants[2], real_users["dailywire"], i),
    ]
    rounds = max(1, int(arguments.hours // 2))
    for round_index in range(rounds):
        for attack in attacks:
            episodes.append(attack(round_index + 1))
    trace.rows.sort(key=lambda row: row[0])
    attack_subjects = set()
    for episode in episodes:
        attack_subjects.update(episode["subjects"])
    seen = set()
    with gzip.open(arguments.out + ".csv.gz", "wt", encoding="utf-8", newline="\n") as file:
        file.write("ts_ms,tenant,subject,ip,route,status,cost\n")
        for row in trace.rows:
            seen.add(row[2])
            file.write(",".join(str(field) for field in row) + "\n")
    labels = {
        "trace": arguments.out.rsplit("/", 1)[-1],
        "start_ms": start,
        "end_ms": end,
        "episodes": [{**episode, "subjects": sorted(set(episode["subjects"]) & seen) or episode["subjects"]} for episode in episodes],
        "benign_subjects": len(seen - attack_subjects),
        "benign_events": benign_events,
        "generator": {"name": "gen_field.py", "seed": arguments.seed, "hours": arguments.hours, "rows": len(trace.rows),
                      "heavy_legitimate": ["ledgerly partners (key-…)", "*-svc-* internal services", "binge readers", "offices behind NAT"]},
    }
    with open(arguments.out + ".labels.json", "w") as file:
        json.dump(labels, file, indent=1)
    print(f"{arguments.out}: {len(trace.rows)} rows, {len(episodes)} episodes, {labels['benign_subjects']} benign subjects")


if __name__ == "__main__":
    main()
