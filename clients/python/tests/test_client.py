"""Tests of sluice_client against a real sluiced (SLUICED=path, default .build/debug/sluiced),
started here with --clock request so that time comes from each check's now_ms.

    python3 -m unittest discover -s clients/python/tests -v
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(HERE, ".."))

import sluice_client  # noqa: E402
from sluice_client import Check, Client, SluiceArgumentError, SluiceConnectionError, SluiceError  # noqa: E402

T0 = 1767225600000  # 2026-01-01 in ms


def wait_ready(cls):
    """Waits for ``cls.daemon`` to log that it is ready; returns its log so far."""
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline and "sluiced ready" not in text:
        time.sleep(0.05)
        cls.log.seek(0)
        text = cls.log.read()
    if "sluiced ready" not in text:
        cls.daemon.kill()
        raise RuntimeError("sluiced did not start:\n" + text)
    return text


def stop_daemon(cls):
    """Stops the daemon a test class started and removes its temp dir."""
    cls.daemon.terminate()
    cls.daemon.wait(timeout=15)
    cls.log.close()
    cls.dir.cleanup()


def start_daemon(cls, arguments):
    """Starts sluiced for a test class (its socket, port, log and temp dir on ``cls``)."""
    sluiced = os.environ.get("SLUICED", os.path.join(ROOT, ".build", "debug", "sluiced"))
    cls.dir = tempfile.TemporaryDirectory()
    cls.socket_path = os.path.join(cls.dir.name, "sluice.sock")
    cls.log = open(os.path.join(cls.dir.name, "log"), "w+")
    if "--config" not in arguments:
        # The embedded default, but never refusing checks as overloaded: a debug build on a
        # loaded machine lags its event loop past max_queue_delay (100 ms) while it works
        # through 2,000 pipelined requests, and the client's tests are not about shedding.
        default = subprocess.run([sluiced, "--print-default-config"], check=True, capture_output=True, text=True).stdout
        config = os.path.join(cls.dir.name, "sluice.yaml")
        with open(config, "w") as file:
            file.write(re.sub(r"max_queue_delay: \S+", "max_queue_delay: 0", default))
        arguments = [*arguments, "--config", config]
    cls.daemon = subprocess.Popen([sluiced, *arguments, "--unix", cls.socket_path, "--tcp", "127.0.0.1:0", "--tcp-auth", "none",
                                   "--snapshot", "off", "--store", "off", "--metrics", "off"],
                                  stdout=cls.log, stderr=subprocess.STDOUT)
    text = wait_ready(cls)
    cls.port = int(re.search(r"listen\.tcp=\S*:(\d+)", text).group(1))
    cls.endpoints = ["unix:" + cls.socket_path, f"127.0.0.1:{cls.port}"]


class DaemonTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        start_daemon(cls, ["--clock", "request"])

    @classmethod
    def tearDownClass(cls):
        stop_daemon(cls)

    def each_endpoint(self):
        for endpoint in self.endpoints:
            with self.subTest(endpoint=endpoint), Client(endpoint) as client:
                yield client

    def key(self, name):
        return f"{name}:{time.monotonic_ns()}"

    def test_ping_and_stats(self):
        for client in self.each_endpoint():
            client.ping()
            stats = client.stats()
            self.assertEqual(stats["clock"], "request")
            self.assertGreater(stats["shards"], 0)

    def test_gcra_semantics(self):
        for client in self.each_endpoint():
            key = self.key("gcra")
            verdicts = [client.check(key, limit=3, period_ms=1000, now_ms=T0) for _ in range(4)]
            self.assertEqual([v.allowed for v in verdicts], [True, True, True, False])
            self.assertEqual([v.remaining for v in verdicts[:3]], [2, 1, 0])
            self.assertEqual(verdicts[3].retry_after_ms, 334)
            self.assertEqual(verdicts[3].reason, "over_limit")
            self.assertEqual(verdicts[0].algorithm, "gcra")
            peek = client.check(key, limit=3, period_ms=1000, now_ms=T0 + 334, hits=0)
            self.assertTrue(peek.allowed)
            self.assertTrue(client.check(key, limit=3, period_ms=1000, now_ms=T0 + 334).allowed)
            self.assertFalse(client.check(key, limit=3, period_ms=1000, now_ms=T0 + 334).allowed)

    def test_ratelimit_headers_for_a_verdict(self):
        with Client(self.endpoints[0]) as client:
            allowed = client.check("headers", limit=2, period_ms=60_000, now_ms=T0)
            self.assertEqual(allowed.ratelimit_headers(policy="api", window_seconds=60),
                             {"RateLimit-Policy": '"api";q=2;w=60', "RateLimit": '"api";r=1;t=30'})
            client.check("headers", limit=2, period_ms=60_000, now_ms=T0)
            denied = client.check("headers", limit=2, period_ms=60_000, now_ms=T0)
            headers = denied.ratelimit_headers(legacy=True)
            self.assertEqual(headers["RateLimit-Policy"], '"inline";q=2')
            self.assertEqual(headers["X-RateLimit-Remaining"], "0")
            self.assertEqual(headers["Retry-After"], "30")

    def test_rules_and_errors(self):
        for client in self.each_endpoint():
            verdict = client.check(self.key("rule"), rule="default", now_ms=T0)
            self.assertTrue(verdict.allowed)
            self.assertEqual(verdict.rule, "default")
            with self.assertRaises(sluice_client.UnknownRule) as caught:
                client.check(self.key("rule"), rule="no-such-rule", now_ms=T0)
            self.assertIsInstance(caught.exception, SluiceError, "every daemon error is a SluiceError")
            self.assertEqual(caught.exception.code, "unknown_rule")
            self.assertEqual(caught.exception.check_index, 0)
            self.assertIn("no-such-rule", caught.exception.message)
            key = self.key("batch-error")
            batch = [Check(key, limit=2, period_ms=1000, now_ms=T0) for _ in range(5)]
            batch[3].period_ms = 0
            with self.assertRaises(sluice_client.InvalidArgument) as caught:
                client.check_batch(batch)
            self.assertEqual((caught.exception.code, caught.exception.check_index), ("invalid_argument", 3))
            # Refused before anything is sent: an algorithm the protocol does not have.
            with self.assertRaises(SluiceArgumentError) as refused:
                client.check(key, limit=2, period_ms=1000, algorithm="leaky_bucket")
            self.assertIsInstance(refused.exception, ValueError)
            self.assertIn("leaky_bucket", str(refused.exception))
            self.assertTrue(client.check(key, limit=2, period_ms=1000, now_ms=T0, hits=2).allowed,
                            "the failed batch consumed nothing")
            client.ping()

    def test_batch_and_pipeline(self):
        for client in self.each_endpoint():
            key = self.key("batch")
            verdicts = client.check_batch([Check(key, limit=600, period_ms=60000, now_ms=T0)] * 1000)
            self.assertEqual(sum(v.allowed for v in verdicts), 600)
            self.assertTrue(all(v.allowed for v in verdicts[:600]))
            key = self.key("pipe")
            ids = [client.submit([Check(key, limit=500, period_ms=60000, now_ms=T0)]) for _ in range(2000)]
            with self.assertRaises(SluiceError):
                client.ping()  # answers are pending
            answers = [client.collect() for _ in ids]
            self.assertEqual([a[0] for a in answers], ids)
            self.assertEqual(sum(a[1][0].allowed for a in answers), 500)

    def test_leases(self):
        for client in self.each_endpoint():
            check = Check(self.key("lease"), limit=2, period_ms=30000, algorithm="concurrency", now_ms=T0)
            leases = [client.check_batch([check])[0] for _ in range(3)]
            self.assertEqual([v.allowed for v in leases], [True, True, False])
            self.assertTrue(client.release(check, leases[0].lease_id))
            self.assertFalse(client.release(check, leases[0].lease_id))
            self.assertTrue(client.check_batch([check])[0].allowed)

    def test_reputation(self):
        from sluice_client import Event
        with Client(f"unix:{self.socket_path}") as sluice:
            self.assertEqual(sluice.record_events([Event("py-mallory", "auth_failure", note="/login")] * 6), 6)
            reputation = sluice.reputation("py-mallory")
            self.assertTrue(reputation["tracked"])
            self.assertAlmostEqual(reputation["score"], 20, delta=0.5)
            self.assertEqual(reputation["recent_events"], [])   # the daemon runs without a store
            verdict = sluice.check("py-mallory", rule="default", now_ms=int(time.time() * 1000))
            self.assertAlmostEqual(verdict.reputation, 20, delta=0.5)
            self.assertEqual(verdict.multiplier, 1.0)   # shadow mode (the embedded default): nothing scaled
            with self.assertRaises(SluiceError) as refused:
                sluice.record_events([Event("x", "sneezed")])
            self.assertEqual(refused.exception.code, "invalid_argument")
            self.assertEqual(refused.exception.check_index, 0)


    def test_ip_route_and_outcomes(self):
        with Client(f"unix:{self.socket_path}") as sluice:
            verdict = sluice.check("py-anon", rule="default", ip="203.0.113.9", route="GET /api/items/7",
                                   now_ms=int(time.time() * 1000))
            self.assertTrue(verdict.allowed)
            # The embedded default leaves anomaly detection off: outcomes are taken, not recorded.
            self.assertEqual(sluice.report_outcomes([{"subject": "py-anon", "ip": "203.0.113.9", "status": 401}]), 0)
            with self.assertRaises(SluiceError) as refused:
                sluice.report_outcomes([{"subject": "py-anon", "status": 200}, {"subject": "py-anon", "status": 42}])
            self.assertEqual(refused.exception.code, "invalid_argument")
            self.assertEqual(refused.exception.check_index, 1)


class AlertStreamTests(unittest.TestCase):
    """A daemon with anomaly detection on (no warm-up), followed with watch_alerts."""

    @classmethod
    def setUpClass(cls):
        config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        config.write("anomaly: { warmup: 1ms }\nfeatures: { anomaly: { enabled: true } }\n")
        config.close()
        cls.config = config.name
        start_daemon(cls, ["--config", config.name])

    @classmethod
    def tearDownClass(cls):
        DaemonTests.tearDownClass.__func__(cls)
        os.unlink(cls.config)

    def test_watch_alerts(self):
        now = int(time.time() * 1000)
        with Client(f"unix:{self.socket_path}") as follower, Client(f"127.0.0.1:{self.port}") as reporter:
            stream = follower.watch_alerts(kinds=["credential_stuffing"], timeout=5)
            failures = [{"subject": f"user{i}", "ip": "192.0.2.44", "route": "POST /login", "status": 401,
                         "time_ms": now + 100 * i} for i in range(20)]
            self.assertEqual(reporter.report_outcomes(failures), 20)
            alert = next(stream)
            self.assertEqual(alert["kind"], "credential_stuffing")
            self.assertEqual(alert["scope"], "ip")
            self.assertEqual(alert["ip"], "192.0.2.44")
            self.assertGreaterEqual(alert["score"], 1.0)
        with Client(f"unix:{self.socket_path}") as late:
            recent = next(late.watch_alerts(recent=5, timeout=5))
            self.assertEqual(recent["ip"], "192.0.2.44")
        with Client(f"unix:{self.socket_path}") as bad:
            with self.assertRaises(SluiceError) as refused:
                next(bad.watch_alerts(recent=5000))
            self.assertEqual(refused.exception.code, "invalid_argument")


ADAPTIVE_AND_ANOMALY = """
rules:
  api: { limit: 100, period: 1m, service: checkout }
tiers:
  vip: { multiplier: 4, priority: 100 }
anomaly:
  warmup: 1ms
  responses:
    credential_stuffing: { action: block, ttl: 1h }
features:
  adaptive: { enabled: true }
  anomaly: { enabled: true }
"""


class AdaptiveDaemon:
    """For a test class: a daemon with adaptive limits (a vip tier, a rule guarding service
    checkout) and anomaly detection blocking credential stuffing."""

    @classmethod
    def setUpClass(cls):
        config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        config.write(ADAPTIVE_AND_ANOMALY)
        config.close()
        cls.config = config.name
        start_daemon(cls, ["--config", config.name])

    @classmethod
    def tearDownClass(cls):
        stop_daemon(cls)
        os.unlink(cls.config)


def stuffing(ip, now):
    """Twenty failed logins for twenty accounts from one address: credential stuffing."""
    return [{"subject": f"user{i}", "ip": ip, "route": "POST /login", "status": 401, "time_ms": now + 100 * i}
            for i in range(20)]


class VerdictFieldTests(AdaptiveDaemon, unittest.TestCase):
    """Every verdict field and report_load, against a daemon with tiers, shedding and anomaly
    responses on."""

    def test_tier_is_in_the_verdict(self):
        from sluice_client import pb
        with Client(f"unix:{self.socket_path}") as sluice:
            # Tiers are an operator's (sluicectl tiers set); the test sends SetTier itself.
            sluice._send(sluice._request(set_tier=pb.SetTierRequest(subject="py-vip", tier="vip")))
            sluice._receive()
            vip = sluice.check("py-vip", rule="api")
            self.assertEqual(vip.tier, "vip")
            self.assertEqual(vip.limit, 400)
            self.assertEqual(vip.multiplier, 4.0)
            plain = sluice.check("py-plain", rule="api")
            self.assertEqual((plain.tier, plain.limit, plain.anomaly), ("", 100, ""))

    def test_report_load_answers_the_factor_and_each_tier(self):
        from sluice_client import Load
        with Client(f"127.0.0.1:{self.port}") as sluice:
            healthy = sluice.report_load("checkout", in_flight=3, latency_p50_us=2_000, latency_p99_us=10_000)
            self.assertIsInstance(healthy, Load)
            self.assertEqual(healthy.load_factor, 1.0)
            self.assertEqual([t.tier for t in healthy.tiers], ["vip", ""])
            for _ in range(3):
                loaded = sluice.report_load("checkout", latency_p99_us=5_000_000, error_rate=0.5)
            self.assertLess(loaded.load_factor, 1.0)
            self.assertGreater(loaded.smoothed_p99_us, healthy.smoothed_p99_us)
            by_tier = {t.tier: t.multiplier for t in loaded.tiers}
            self.assertGreaterEqual(by_tier["vip"], by_tier[""], "the vip tier is shed last")
            with self.assertRaises(SluiceError) as refused:
                sluice.report_load("not-a-service", latency_p99_us=1)
            self.assertEqual(refused.exception.code, "invalid_argument")
            with self.assertRaises(SluiceArgumentError):
                sluice.report_load("")
            with self.assertRaises(SluiceArgumentError):
                sluice.report_load("checkout", error_rate=2.0)
            sluice.ping()   # refused arguments cost nothing on the connection

    def test_an_anomaly_block_is_in_the_verdict(self):
        now = int(time.time() * 1000)
        with Client(f"unix:{self.socket_path}") as sluice:
            self.assertEqual(sluice.report_outcomes(stuffing("192.0.2.77", now)), 20)
            deadline = time.monotonic() + 10
            verdict = sluice.check("py-victim", rule="api", ip="192.0.2.77")
            while verdict.allowed and time.monotonic() < deadline:
                time.sleep(0.1)   # the detector drains every 100 ms
                verdict = sluice.check("py-victim", rule="api", ip="192.0.2.77")
            self.assertFalse(verdict.allowed)
            self.assertEqual(verdict.reason, "anomaly")
            self.assertEqual(verdict.anomaly, "credential_stuffing")
            self.assertTrue(sluice.check("py-victim", rule="api", ip="198.51.100.1").allowed, "another address is served")


class BrokenConnectionTests(unittest.TestCase):
    def test_unreachable(self):
        with self.assertRaises(SluiceConnectionError):
            Client("unix:/nonexistent/sluice.sock", timeout=0.5)
        with self.assertRaises(SluiceError):
            Client("no-port-here")

    def test_hang_up_then_reconnect(self):
        """A server that hangs up on the first connection and answers pings on the next."""
        from sluice_client import sluice_pb2 as pb
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(2)

        def serve():
            first, _ = listener.accept()
            first.recv(1024)
            first.close()
            second, _ = listener.accept()
            data = b""
            while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
                data += second.recv(1024)
            request = pb.Request.FromString(data[4:])
            body = pb.Response(id=request.id, ping=pb.PingResponse()).SerializeToString()
            second.sendall(len(body).to_bytes(4, "big") + body)
            second.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client = Client(f"127.0.0.1:{listener.getsockname()[1]}", timeout=2)
        with self.assertRaises(SluiceConnectionError):
            client.ping()
        client.ping()  # reconnects
        client.close()
        thread.join()
        listener.close()


class TokenAndTLSTests(unittest.TestCase):
    """A TCP listener with TLS that requires a token: a certificate made here by openssl, a token
    made by sluicectl token create."""

    @classmethod
    def setUpClass(cls):
        sluiced = os.environ.get("SLUICED", os.path.join(ROOT, ".build", "debug", "sluiced"))
        sluicectl = os.path.join(os.path.dirname(sluiced), "sluicectl")
        cls.dir = tempfile.TemporaryDirectory()
        d = cls.dir.name
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", f"{d}/server.key", "-out", f"{d}/server.pem"], check=True, capture_output=True)
        made = subprocess.run([sluicectl, "token", "create", "--file", f"{d}/tokens.yaml", "--name", "py", "--tenant", "acme",
                               "--role", "check"], check=True, capture_output=True, text=True)
        cls.token = made.stdout.strip()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            cls.port = probe.getsockname()[1]
        with open(f"{d}/sluice.yaml", "w") as file:
            file.write(f"""
listen:
  unix: ["{d}/s.sock"]
  tcp: [{{ address: "127.0.0.1:{cls.port}", tls: {{ certificate: "{d}/server.pem", key: "{d}/server.key" }} }}]
auth: {{ tokens_file: tokens.yaml }}
server: {{ clock: request, max_queue_delay: 0 }}
tenants:
  acme: {{ rules: {{ api: {{ limit: 1, period: 1m }} }} }}
""")
        cls.log = open(f"{d}/log", "w+")
        cls.daemon = subprocess.Popen([sluiced, "--config", f"{d}/sluice.yaml", "--snapshot", "off", "--store", "off", "--metrics", "off"],
                                      stdout=cls.log, stderr=subprocess.STDOUT)
        wait_ready(cls)

    @classmethod
    def tearDownClass(cls):
        stop_daemon(cls)

    def tls(self):
        import ssl
        return ssl.create_default_context(cafile=f"{self.dir.name}/server.pem")

    def test_token_over_tls_acts_for_its_tenant(self):
        with Client(f"127.0.0.1:{self.port}", tls=self.tls(), token=self.token) as client:
            # The tenant left empty is the token's: acme's rule, one a minute.
            self.assertTrue(client.check("k", rule="api", now_ms=T0).allowed)
            self.assertFalse(client.check("k", rule="api", tenant="acme", now_ms=T0).allowed)
            with self.assertRaises(SluiceError) as refused:
                client.check("k", rule="api", tenant="globex", now_ms=T0)
            self.assertEqual(refused.exception.code, "forbidden")

    def test_missing_or_wrong_token_is_refused(self):
        with Client(f"127.0.0.1:{self.port}", tls=self.tls()) as client:
            with self.assertRaises(SluiceError) as refused:
                client.check("k", rule="api", now_ms=T0)
            self.assertEqual(refused.exception.code, "unauthenticated")
        with self.assertRaises(SluiceError) as wrong:
            Client(f"127.0.0.1:{self.port}", tls=self.tls(), token=self.token[:-1] + ("A" if self.token[-1] != "A" else "B"))
        self.assertEqual(wrong.exception.code, "unauthenticated")

    def test_untrusted_certificate_is_refused(self):
        import ssl
        with self.assertRaises(SluiceConnectionError) as refused:
            Client(f"127.0.0.1:{self.port}", tls=ssl.create_default_context(), token=self.token)
        self.assertIn("CERTIFICATE_VERIFY_FAILED", str(refused.exception))



class ErrorTypesTests(unittest.TestCase):
    def test_every_daemon_code_has_its_class_and_the_version_is_the_repositorys(self):
        names = [n.removeprefix("CODE_").lower() for n in sluice_client.pb.Error.Code.keys() if n != "CODE_UNSPECIFIED"]
        for name in names:
            cls = SluiceError.for_code(name)
            self.assertIsNot(cls, SluiceError, f"{name} has a class of its own")
            self.assertEqual(cls.code, name)
            self.assertTrue(issubclass(cls, SluiceError))
        self.assertIs(SluiceError.for_code("something_new"), SluiceError, "a code from a newer daemon is still a SluiceError")
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "..", "VERSION")) as f:
            self.assertEqual(sluice_client.__version__, f.read().strip())


if __name__ == "__main__":
    unittest.main()
