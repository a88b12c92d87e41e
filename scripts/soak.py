#!/usr/bin/env python3
"""Soak a running sluiced with valid, invalid and abusive clients at once, sampling its memory.

Run by scripts/soak.sh, which builds and starts a release daemon; standard library only. Valid
frames come from the dispatcher fuzz corpus (Fuzz/corpus/dispatcher/seed-frame-*: one request of
every kind). Each client kind runs in a loop for the whole duration:

  valid       pipelines checks and every other request kind, reads every answer, and counts
              any request left unanswered (there must be none)
  garbage     random bytes, mutated frames, absurd length prefixes
  stall       one byte of a length prefix, or a large frame less one byte, then silence
  idle        connects and says nothing
  deaf        writes pings and never reads an answer
  split       large pings split 3 bytes into the next frame
  churn       connects and closes at once, hundreds of times a second

Every 10 s it samples the daemon's resident memory and a ping's round trip, and prints a line;
at the end a summary as JSON (exit 1 if the daemon died or a valid request went unanswered).
"""
import argparse
import asyncio
import glob
import json
import os
import random
import struct
import sys
import time


def frames_from_corpus(root):
    frames = []
    for path in sorted(glob.glob(os.path.join(root, "Fuzz/corpus/dispatcher/seed-frame-*"))):
        data = open(path, "rb").read()
        if len(data) >= 4 and struct.unpack(">I", data[:4])[0] == len(data) - 4:
            frames.append(data)
    if not frames:
        sys.exit("soak.py: no seed frames under Fuzz/corpus/dispatcher (run from the repository)")
    return frames


def varint(value):
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def with_id(frame, request_id):
    """The frame with its id (field 1) replaced: seeds carry id first, as swift-protobuf writes it."""
    body = frame[4:]
    if body[:1] == b"\x08":
        index = 1
        while body[index] & 0x80:
            index += 1
        body = body[index + 1:]
    body = b"\x08" + varint(request_id) + body
    return struct.pack(">I", len(body)) + body


def ping(request_id, payload=b""):
    inner = b"\x0a" + varint(len(payload)) + payload if payload else b""
    body = b"\x08" + varint(request_id) + b"\x1a" + varint(len(inner)) + inner
    return struct.pack(">I", len(body)) + body


def check(request_id, key):
    # Check{key, limit{limit: 1000000, period_ms: 60000}}; CheckRequest{checks: [it]}
    limit = b"\x08" + varint(1_000_000) + b"\x10" + varint(60_000)
    item = b"\x12" + varint(len(key)) + key + b"\x3a" + varint(len(limit)) + limit
    request = b"\x0a" + varint(len(item)) + item
    body = b"\x08" + varint(request_id) + b"\x12" + varint(len(request)) + request
    return struct.pack(">I", len(body)) + body


class Stats:
    def __init__(self):
        self.counts = {}

    def add(self, name, amount=1):
        self.counts[name] = self.counts.get(name, 0) + amount


async def connect(endpoint):
    if endpoint.startswith("unix:"):
        return await asyncio.open_unix_connection(endpoint[5:])
    host, port = endpoint.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def read_frame(reader):
    prefix = await reader.readexactly(4)
    return await reader.readexactly(struct.unpack(">I", prefix)[0])


def response_id(body):
    if body[:1] != b"\x08":
        return 0
    value, shift, index = 0, 0, 1
    while True:
        byte = body[index]
        value |= (byte & 0x7F) << shift
        index += 1
        if byte < 0x80:
            return value
        shift += 7


async def valid(endpoints, frames, stats, stop):
    next_id = 1
    while not stop.is_set():
        try:
            reader, writer = await connect(random.choice(endpoints))
        except OSError:
            stats.add("valid.connect_failed")
            await asyncio.sleep(0.1)
            continue
        try:
            for _ in range(50):
                if stop.is_set():
                    break
                batch, ids = [], []
                for _ in range(64):
                    next_id += 1
                    ids.append(next_id)
                    if random.random() < 0.8:
                        batch.append(check(next_id, b"soak:%d" % random.randrange(10_000)))
                    else:
                        batch.append(with_id(random.choice(frames), next_id))
                writer.write(b"".join(batch))
                await writer.drain()
                for expected in ids:
                    body = await asyncio.wait_for(read_frame(reader), 30)
                    if response_id(body) != expected:
                        stats.add("valid.wrong_id")
                    stats.add("valid.answered")
                    if b"\x22" in body[:8] and b"CODE_OVERLOADED" in body:
                        stats.add("valid.overloaded")
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError) as error:
            # An operator request (reload, snapshot) or an idle timeout may end a connection;
            # requests sent on it and never answered are counted.
            stats.add("valid.connection_lost:" + type(error).__name__)
        finally:
            writer.close()


async def garbage(endpoints, frames, stats, stop):
    while not stop.is_set():
        try:
            reader, writer = await connect(random.choice(endpoints))
            kind = random.randrange(3)
            if kind == 0:
                writer.write(os.urandom(random.randrange(1, 4096)))
            elif kind == 1:
                frame = bytearray(random.choice(frames))
                for _ in range(random.randrange(1, 8)):
                    frame[random.randrange(4, len(frame))] = random.randrange(256) if len(frame) > 4 else 0
                writer.write(bytes(frame))
            else:
                writer.write(struct.pack(">I", random.choice([0xFFFFFFFF, 1 << 24, 1 << 30])) + os.urandom(64))
            await writer.drain()
            try:
                await asyncio.wait_for(reader.read(65536), 1)
            except asyncio.TimeoutError:
                pass
            writer.close()
            stats.add("garbage.sent")
        except OSError:
            stats.add("garbage.connect_failed")
        await asyncio.sleep(0.01)


async def stall(endpoints, stats, stop, big):
    held = []
    while not stop.is_set():
        try:
            reader, writer = await connect(random.choice(endpoints))
            if random.random() < 0.5:
                writer.write(b"\x00")
            else:
                writer.write(big[:-1])
            await writer.drain()
            held.append(writer)
            stats.add("stall.opened")
        except OSError:
            stats.add("stall.connect_failed")
        held = [w for w in held if not w.is_closing()]
        if len(held) > 200:
            held.pop(0).close()
        await asyncio.sleep(0.05)
    for writer in held:
        writer.close()


async def idle(endpoints, stats, stop):
    held = []
    while not stop.is_set():
        try:
            _, writer = await connect(random.choice(endpoints))
            held.append(writer)
            stats.add("idle.opened")
        except OSError:
            stats.add("idle.connect_failed")
        if len(held) > 500:
            held.pop(0).close()
        await asyncio.sleep(0.05)
    for writer in held:
        writer.close()


async def deaf(endpoints, stats, stop):
    payload = os.urandom(16 << 10)
    while not stop.is_set():
        try:
            _, writer = await connect(random.choice(endpoints))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not stop.is_set():
                writer.write(ping(1, payload))
                try:
                    await asyncio.wait_for(writer.drain(), 1)
                except asyncio.TimeoutError:
                    stats.add("deaf.pushed_back")
                    await asyncio.sleep(1)
            writer.close()
        except (OSError, ConnectionError):
            stats.add("deaf.lost")
            await asyncio.sleep(0.5)


async def split(endpoints, stats, stop):
    frame = ping(7, b"\x05" * 100_000)
    while not stop.is_set():
        try:
            reader, writer = await connect(random.choice(endpoints))
            for index in range(200):
                start = 0 if index == 0 else 3
                writer.write((frame + frame)[start:len(frame) + 3])
                await writer.drain()
                await asyncio.wait_for(read_frame(reader), 10)
                stats.add("split.answered")
            writer.close()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, OSError):
            stats.add("split.lost")
            await asyncio.sleep(0.2)


async def churn(endpoints, stats, stop):
    while not stop.is_set():
        try:
            _, writer = await connect(random.choice(endpoints))
            writer.close()
            stats.add("churn.connections")
        except OSError:
            stats.add("churn.connect_failed")
        await asyncio.sleep(0.005)


def resident(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# Gauges sampled beside the resident memory (with --metrics): where the memory is.
GAUGES = {"heap_mb": "sluice_heap_in_use_bytes", "sqlite_mb": "sluice_store_memory_bytes", "pending_events": "sluice_store_pending_events",
          "connections": "sluice_connections_open", "reputation_subjects": "sluice_reputation_subjects",
          "table_entries": "sluice_table_entries", "anomaly_subjects": 'sluice_anomaly_tracked{entity="subject"}',
          "anomaly_sources": 'sluice_anomaly_tracked{entity="source"}'}


async def gauges(metrics):
    """The GAUGES from the daemon's /metrics at `metrics` (HOST:PORT); {} when it cannot be read."""
    try:
        host, port = metrics.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: soak\r\n\r\n")
        await writer.drain()
        body = (await asyncio.wait_for(reader.read(), 10)).decode("utf-8", "replace")
        writer.close()
    except (OSError, asyncio.TimeoutError):
        return {}
    values = {}
    for line in body.splitlines():
        name, _, value = line.partition(" ")
        for key, series in GAUGES.items():
            if name == series:
                number = float(value)
                values[key] = round(number / 2**20, 1) if key.endswith("_mb") else int(number)
    return values


async def sample(endpoint, pid, stats, stop, every, samples, metrics=None):
    started = time.monotonic()
    while True:
        alive = os.path.exists(f"/proc/{pid}")
        rtt = None
        if alive:
            try:
                reader, writer = await connect(endpoint)
                begin = time.monotonic()
                writer.write(ping(99))
                await writer.drain()
                await asyncio.wait_for(read_frame(reader), 10)
                rtt = (time.monotonic() - begin) * 1000
                writer.close()
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                pass
        point = {"t_s": round(time.monotonic() - started), "rss_mb": round(resident(pid) / 2**20, 1) if alive else None,
                 "ping_ms": round(rtt, 2) if rtt is not None else None, "alive": alive}
        if metrics and alive:
            point.update(await gauges(metrics))
        samples.append(point)
        print(json.dumps(point), flush=True)
        if not alive or stop.is_set():
            return
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--unix", required=True)
    parser.add_argument("--tcp", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--seconds", type=int, default=1800)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--root", default=".")
    parser.add_argument("--metrics", help="HOST:PORT of the daemon's /metrics: sample its store and connection gauges too")
    parser.add_argument("--only", help="run only this kind of client (valid, garbage, stall, idle, deaf, split, churn)")
    args = parser.parse_args()
    endpoints = ["unix:" + args.unix, args.tcp]
    frames = frames_from_corpus(args.root)
    stats, stop, samples = Stats(), asyncio.Event(), []
    big = ping(3, b"\x01" * 1_000_000)
    kinds = {
        "valid": lambda: [valid(endpoints, frames, stats, stop) for _ in range(8)],
        "garbage": lambda: [garbage(endpoints, frames, stats, stop) for _ in range(4)],
        "stall": lambda: [stall(endpoints, stats, stop, big)],
        "idle": lambda: [idle(endpoints, stats, stop)],
        "deaf": lambda: [deaf(endpoints, stats, stop) for _ in range(4)],
        "split": lambda: [split(endpoints, stats, stop)],
        "churn": lambda: [churn(endpoints, stats, stop)],
    }
    chosen = [args.only] if args.only else list(kinds)
    tasks = [asyncio.create_task(coroutine) for kind in chosen for coroutine in kinds[kind]()]
    sampler = asyncio.create_task(sample("unix:" + args.unix, args.pid, stats, stop, args.every, samples, args.metrics))
    try:
        await asyncio.wait_for(asyncio.shield(sampler), args.seconds)
    except asyncio.TimeoutError:
        pass
    stop.set()
    await sampler
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    alive = os.path.exists(f"/proc/{args.pid}")
    rss = [point["rss_mb"] for point in samples if point["rss_mb"] is not None]
    summary = {"seconds": args.seconds, "alive": alive, "samples": len(samples),
               "rss_mb": {"first": rss[0] if rss else None, "min": min(rss, default=None), "max": max(rss, default=None),
                          "last": rss[-1] if rss else None},
               "ping_ms_max": max((p["ping_ms"] for p in samples if p["ping_ms"] is not None), default=None),
               "counts": dict(sorted(stats.counts.items()))}
    print(json.dumps(summary), flush=True)
    ok = alive and stats.counts.get("valid.wrong_id", 0) == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    asyncio.run(main())
