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
from test_client import T0, start_daemon, stop_daemon  # noqa: E402


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


if __name__ == "__main__":
    unittest.main()
