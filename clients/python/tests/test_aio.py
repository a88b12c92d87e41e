"""The asyncio client against a real sluiced: one connection shared by many tasks, typed
errors, a daemon that goes away."""
import asyncio
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import sluice_client  # noqa: E402
from sluice_client import Check, SluiceArgumentError, SluiceConnectionError  # noqa: E402
from sluice_client.aio import AsyncClient  # noqa: E402
from test_client import T0, AdaptiveDaemon, start_daemon, stop_daemon, stuffing  # noqa: E402


class AsyncClientTests(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        start_daemon(cls, ["--clock", "request"])

    @classmethod
    def tearDownClass(cls):
        stop_daemon(cls)

    async def test_many_tasks_share_one_connection_and_get_their_own_answers(self):
        for endpoint in self.endpoints:
            async with await AsyncClient.connect(endpoint) as sluice:
                await sluice.ping()
                key = f"aio-{endpoint}"
                # 200 tasks at once on one socket: exactly the limit is allowed, each task gets
                # the verdict of its own request.
                verdicts = await asyncio.gather(*(sluice.check(key, limit=120, period_ms=60_000, now_ms=T0) for _ in range(200)))
                self.assertEqual(sum(v.allowed for v in verdicts), 120)
                batch = await sluice.check_batch([Check(f"{key}-b{i}", limit=1, period_ms=1_000, now_ms=T0) for i in range(50)])
                self.assertTrue(all(v.allowed for v in batch))
                stats = await sluice.stats()
                self.assertGreaterEqual(stats["checks"], 250)

    async def test_errors_are_typed_and_the_connection_survives_them(self):
        async with await AsyncClient.connect(self.endpoints[0]) as sluice:
            with self.assertRaises(sluice_client.UnknownRule) as caught:
                await sluice.check("k", rule="no-such-rule", now_ms=T0)
            self.assertEqual(caught.exception.check_index, 0)
            with self.assertRaises(SluiceArgumentError):
                await sluice.check("k", limit=1, period_ms=1_000, algorithm="leaky_bucket")
            with self.assertRaises(SluiceArgumentError):
                await sluice.check_batch([])
            self.assertTrue((await sluice.check("k2", rule="default", now_ms=T0)).allowed)

    async def test_a_missing_daemon_is_a_connection_error(self):
        with self.assertRaises(SluiceConnectionError):
            await AsyncClient.connect("unix:" + os.path.join(self.dir.name, "absent.sock"), timeout=1)


class AsyncEveryRequestTests(AdaptiveDaemon, unittest.IsolatedAsyncioTestCase):
    """What the blocking client does beyond checks, asynchronously: reputation, load reports,
    outcomes and the alert stream, against a daemon with adaptive limits and anomaly detection."""

    async def test_reputation_and_events(self):
        from sluice_client import Event
        async with await AsyncClient.connect(self.endpoints[0]) as sluice:
            self.assertEqual(await sluice.record_events([Event("aio-mallory", "auth_failure")] * 6), 6)
            reputation = await sluice.reputation("aio-mallory")
            self.assertTrue(reputation["tracked"])
            self.assertLess(reputation["score"], 50)
            unknown = await sluice.reputation("aio-nobody")
            self.assertFalse(unknown["tracked"])

    async def test_report_load(self):
        async with await AsyncClient.connect(self.endpoints[1]) as sluice:
            load = await sluice.report_load("checkout", in_flight=1, latency_p99_us=1_000)
            self.assertEqual(load.load_factor, 1.0)
            self.assertEqual([t.tier for t in load.tiers], ["vip", ""])
            with self.assertRaises(sluice_client.InvalidArgument):
                await sluice.report_load("not-a-service")
            with self.assertRaises(SluiceArgumentError):
                await sluice.report_load("checkout", error_rate=-1)

    async def test_watch_alerts_streams_on_its_own_connection_while_the_client_goes_on(self):
        import time
        async with await AsyncClient.connect(self.endpoints[0]) as sluice:
            stream = sluice.watch_alerts(kinds=["credential_stuffing"])
            first = asyncio.ensure_future(stream.__anext__())
            await asyncio.sleep(0.2)   # the stream is registered before the attack
            self.assertEqual(await sluice.report_outcomes(stuffing("192.0.2.91", int(time.time() * 1000))), 20)
            alert = await asyncio.wait_for(first, 10)
            self.assertEqual((alert["kind"], alert["scope"], alert["ip"]), ("credential_stuffing", "ip", "192.0.2.91"))
            verdict = await sluice.check("aio-victim", rule="api", ip="192.0.2.91")
            self.assertEqual((verdict.allowed, verdict.reason, verdict.anomaly), (False, "anomaly", "credential_stuffing"))
            await stream.aclose()
            with self.assertRaises(sluice_client.InvalidArgument):
                await sluice.watch_alerts(recent=5000).__anext__()


if __name__ == "__main__":
    unittest.main()
