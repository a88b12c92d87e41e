#!/usr/bin/env python3
"""A small upstream for the adaptive-limiting demonstration (docs/ADAPTIVE.md).

Speaks the simplest framing: a 4-byte big-endian length, then an 8-byte request id, echoed
back when the request is done. Its latency grows with concurrency: WORKERS requests are
served at once, each taking BASE x (1 + min(in_flight, KNEE) / KNEE) (contention: up to twice
as long), and the rest wait in a queue. Past its capacity the queue grows without bound and
every request waits longer than its caller's timeout: without shedding it collapses. Requests
whose caller gave up are still served (it cannot know), as in real servers.

Every --report-every seconds it reports its load to Sluice (ReportLoadRequest: in flight, p50
and p99 of the requests finished since the last report) and writes one JSON line of what it
saw and what Sluice answered to --timeline.
"""
import argparse
import asyncio
import json
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from sluice_client import sluice_pb2 as pb  # noqa: E402


class Upstream:
    def __init__(self, args):
        self.args = args
        self.in_flight = 0
        self.finished = []          # latencies (s) since the last report
        self.oldest = {}            # request key -> start, for a window with no completions
        self.workers = asyncio.Semaphore(args.workers)
        self.served = 0

    async def handle(self, reader, writer):
        try:
            while True:
                header = await reader.readexactly(4)
                (length,) = struct.unpack(">I", header)
                if length != 8:
                    return
                body = await reader.readexactly(8)
                asyncio.get_running_loop().create_task(self.serve(body, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    async def serve(self, body, writer):
        loop = asyncio.get_running_loop()
        started = loop.time()
        key = (id(writer), body)
        self.oldest[key] = started
        self.in_flight += 1
        try:
            async with self.workers:
                await asyncio.sleep(self.args.base * (1 + min(self.in_flight, self.args.knee) / self.args.knee))
        finally:
            self.in_flight -= 1
            self.oldest.pop(key, None)
        self.finished.append(loop.time() - started)
        self.served += 1
        if not writer.is_closing():
            writer.write(struct.pack(">I", 8) + body)

    async def report(self, timeline):
        reader, writer = await asyncio.open_unix_connection(self.args.sluice)
        loop = asyncio.get_running_loop()
        request_id = 0
        started = time.time()
        while True:
            await asyncio.sleep(self.args.report_every)
            finished, self.finished = sorted(self.finished), []
            now = loop.time()
            if finished:
                p50 = finished[len(finished) // 2]
                p99 = finished[min(len(finished) - 1, int(len(finished) * 0.99))]
            else:
                p50 = p99 = 0.0
            # Nothing finished while requests wait: they are at least as late as the oldest one.
            if self.oldest:
                p99 = max(p99, now - min(self.oldest.values()))
            request_id += 1
            request = pb.Request(id=request_id, report_load=pb.ReportLoadRequest(
                service=self.args.service, in_flight=self.in_flight,
                latency_p50_us=int(p50 * 1e6), latency_p99_us=int(p99 * 1e6), error_rate=0.0))
            data = request.SerializeToString()
            writer.write(struct.pack(">I", len(data)) + data)
            await writer.drain()
            (length,) = struct.unpack(">I", await reader.readexactly(4))
            response = pb.Response()
            response.ParseFromString(await reader.readexactly(length))
            answer = response.report_load
            line = {
                "t_unix": time.time(), "t": time.time() - started, "in_flight": self.in_flight,
                "p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3, "served_per_s": len(finished) / self.args.report_every,
                "load_factor": answer.load_factor if response.HasField("report_load") else None,
                "multipliers": {t.tier or "_none": t.multiplier for t in answer.tiers},
                "demand": {t.tier or "_none": t.demand for t in answer.tiers},
            }
            timeline.write(json.dumps(line) + "\n")
            timeline.flush()


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sluice", required=True, help="the daemon's Unix socket")
    parser.add_argument("--service", default="upstream")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--base", type=float, default=0.005, help="seconds per request at low concurrency")
    parser.add_argument("--knee", type=float, default=32, help="concurrency at which a request takes twice as long")
    parser.add_argument("--report-every", type=float, default=0.25)
    parser.add_argument("--timeline", required=True)
    parser.add_argument("--lifetime", type=float, default=600, help="exit after this many seconds whatever happens")
    args = parser.parse_args()
    upstream = Upstream(args)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", args.port)
    with open(args.timeline, "w") as timeline:
        reporter = asyncio.get_running_loop().create_task(upstream.report(timeline))
        async with server:
            try:
                await asyncio.wait_for(server.serve_forever(), timeout=args.lifetime)
            except asyncio.TimeoutError:
                pass
        reporter.cancel()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
