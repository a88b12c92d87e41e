"""Envoy's rate limit service, exercised as Envoy calls it: Python grpcio with the xds-protos
package's generated messages and stub (the messages Envoy itself sends), against a real sluiced
(SLUICED=path, default .build/debug/sluiced), over TCP and a Unix socket.

    python3 -m unittest discover -s tests/envoy -v

Needs `pip install grpcio xds-protos` (scripts/test.sh installs them in its venv).
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from envoy.type.v3 import ratelimit_unit_pb2
from google.protobuf import wrappers_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SLUICED = os.environ.get("SLUICED", os.path.join(ROOT, ".build", "debug", "sluiced"))
OK = rls_pb2.RateLimitResponse.OK
OVER = rls_pb2.RateLimitResponse.OVER_LIMIT
UINT32_MAX = 2**32 - 1

# Written after envoy ratelimit's documented example: nested descriptors, names and replaces,
# 0 per unit, shadow mode, unlimited, quota mode, wildcards. Hours and days, so that a test never
# straddles a window's end (minute windows are used where a test waits for the edge).
EDGE = """\
---
domain: edge
descriptors:
  - key: category
    value: account
    rate_limit:
      replaces:
        - name: per_user
      unit: hour
      requests_per_unit: 4
  - key: source_cluster
    value: proxy
    descriptors:
      - key: destination_cluster
        value: users
        rate_limit:
          name: per_user
          unit: hour
          requests_per_unit: 2
      - key: destination_cluster
        value: mock
        rate_limit:
          unit: hour
          requests_per_unit: 1
      - key: destination_cluster
        value: headers
        rate_limit:
          name: per_destination
          unit: hour
          requests_per_unit: 2
  - key: user
    rate_limit:
      unit: day
      requests_per_unit: 3
    descriptors:
      - key: action
        rate_limit:
          unit: day
          requests_per_unit: 2
      - key: action
        value: banned
        rate_limit:
          name: banned_limit
          unit: hour
          requests_per_unit: 0
      - key: action
        value: shady
        shadow_mode: true
        rate_limit:
          unit: hour
          requests_per_unit: 1
      - key: action
        value: free
        rate_limit:
          unlimited: true
  - key: path
    value: /static/*
    share_threshold: true
    rate_limit:
      unit: hour
      requests_per_unit: 2
  - key: path
    value: /item/*
    rate_limit:
      unit: hour
      requests_per_unit: 1
  - key: service
    value: one
    quota_mode: true
    rate_limit:
      unit: hour
      requests_per_unit: 1
  - key: service
    value: two
    quota_mode: true
    rate_limit:
      unit: hour
      requests_per_unit: 2
  - key: remote_address
    rate_limit:
      unit: hour
      requests_per_unit: 5
      # Sluice's extensions: a token bucket with a burst, and a second limit decided together.
      algorithm: token_bucket
      burst: 5
      limits:
        - {limit: 100, period: 1d}
"""

DATABASE = """\
domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit:
      unit: second
      requests_per_unit: 500
  - key: database
    value: default
    rate_limit:
      unit: second
      requests_per_unit: 500
"""


def request(domain, *descriptors, hits=0):
    """A RateLimitRequest: each descriptor a list of (key, value), or a dict with entries,
    limit (requests_per_unit, unit name) and hits."""
    message = rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits)
    for descriptor in descriptors:
        if isinstance(descriptor, list):
            descriptor = {"entries": descriptor}
        added = message.descriptors.add()
        for key, value in descriptor["entries"]:
            added.entries.add(key=key, value=value)
        if "limit" in descriptor:
            per_unit, unit = descriptor["limit"]
            added.limit.requests_per_unit = per_unit
            added.limit.unit = ratelimit_unit_pb2.RateLimitUnit.Value(unit.upper())
        if "hits" in descriptor:
            added.hits_addend.CopyFrom(wrappers_pb2.UInt64Value(value=descriptor["hits"]))
    return message


class Daemon:
    """A sluiced serving Envoy's service, on a folder of its own."""

    def __init__(self, config, files=None, extra_arguments=()):
        self.dir = tempfile.mkdtemp(prefix="sluice-envoy-")
        os.makedirs(os.path.join(self.dir, "descriptors"))
        for name, text in (files or {}).items():
            self.write(name, text)
        self.config = os.path.join(self.dir, "sluice.yaml")
        self.rls_socket = os.path.join(self.dir, "rls.sock")
        with open(self.config, "w") as file:
            file.write(config.replace("RLS_SOCKET", self.rls_socket))
        self.log = open(os.path.join(self.dir, "log"), "w+")
        self.process = subprocess.Popen(
            [SLUICED, "--config", self.config, "--unix", os.path.join(self.dir, "sluice.sock"), "--tcp", "127.0.0.1:0",
             "--tcp-auth", "none", "--snapshot", "off", "--store", "off", "--metrics", "127.0.0.1:0", *extra_arguments],
            stdout=self.log, stderr=subprocess.STDOUT)
        text = self.wait_for("sluiced ready")
        self.port = int(re.search(r"envoy\.listen\.tcp=\S*:(\d+)", text).group(1))
        self.metrics_port = int(re.search(r"metrics\.listen=\S*:(\d+)", text).group(1))
        self.channels = []

    def write(self, name, text):
        path = os.path.join(self.dir, "descriptors", name)
        with open(path + ".new", "w") as file:
            file.write(text)
        os.rename(path + ".new", path)

    def wait_for(self, needle, timeout=20):
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            self.log.seek(0)
            text = self.log.read()
            if needle in text:
                return text
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"sluiced did not log {needle!r}:\n{text}")

    def stub(self, target=None):
        channel = grpc.insecure_channel(target or f"127.0.0.1:{self.port}")
        self.channels.append(channel)
        return rls_pb2_grpc.RateLimitServiceStub(channel)

    def targets(self):
        return [f"127.0.0.1:{self.port}", "unix://" + self.rls_socket]

    def metrics(self):
        with socket.create_connection(("127.0.0.1", self.metrics_port), timeout=5) as connection:
            connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := connection.recv(65536):
                data += chunk
        return data.decode()

    def stop(self):
        for channel in self.channels:
            channel.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        finally:
            self.log.close()
            shutil.rmtree(self.dir, ignore_errors=True)


CONFIG = """\
envoy:
  listen:
    tcp: [{address: "127.0.0.1:0", auth: none}]
    unix: [RLS_SOCKET]
  config: descriptors
  headers: both
"""


class EnvoyBehaviourTests(unittest.TestCase):
    """Every behaviour envoy ratelimit's users rely on, on both listeners."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(CONFIG, {"edge.yaml": EDGE, "database.yaml": DATABASE})

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

    def each_target(self):
        for index, target in enumerate(self.daemon.targets()):
            with self.subTest(target=target):
                yield index, self.daemon.stub(target)

    def test_matched_descriptors_count_until_over_limit(self):
        for index, stub in self.each_target():
            entries = [("source_cluster", "proxy"), ("destination_cluster", "mock"), ][:2]
            key = [("user", f"count-{index}")]
            remaining = [stub.ShouldRateLimit(request("edge", key)).statuses[0].limit_remaining for _ in range(3)]
            self.assertEqual(remaining, [2, 1, 0])
            over = stub.ShouldRateLimit(request("edge", key))
            self.assertEqual(over.overall_code, OVER)
            self.assertEqual(over.statuses[0].code, OVER)
            self.assertEqual(over.statuses[0].limit_remaining, 0)
            self.assertEqual(over.statuses[0].current_limit.requests_per_unit, 3)
            self.assertEqual(over.statuses[0].current_limit.unit, rls_pb2.RateLimitResponse.RateLimit.DAY)
            self.assertTrue(0 < over.statuses[0].duration_until_reset.seconds <= 86_400)
            if index == 0:
                first = stub.ShouldRateLimit(request("edge", entries))
                self.assertEqual((first.overall_code, first.statuses[0].limit_remaining), (OK, 0))
                self.assertEqual(first.statuses[0].current_limit.unit, rls_pb2.RateLimitResponse.RateLimit.HOUR)
            # Both listeners count in the same table.
            self.assertEqual(stub.ShouldRateLimit(request("edge", entries)).overall_code, OVER)

    def test_unknown_domain_and_unmatched_descriptors_are_ok_without_a_limit(self):
        for _, stub in self.each_target():
            unknown = stub.ShouldRateLimit(request("no_such_domain", [("a", "b")], [("c", "d")]))
            self.assertEqual(unknown.overall_code, OK)
            self.assertEqual(len(unknown.statuses), 2)
            for status in unknown.statuses:
                self.assertEqual(status.code, OK)
                self.assertFalse(status.HasField("current_limit"))
            unmatched = stub.ShouldRateLimit(request("edge", [("nothing", "here")], [("source_cluster", "proxy")],
                                                     [("user", "u"), ("action", "x"), ("extra", "level")]))
            self.assertEqual([s.code for s in unmatched.statuses], [OK, OK, OK])
            self.assertFalse(any(s.HasField("current_limit") for s in unmatched.statuses))

    def test_the_overall_code_is_over_limit_if_any_descriptor_is(self):
        stub = self.daemon.stub()
        stub.ShouldRateLimit(request("edge", [("user", "overall")], hits=3))
        # Another domain's descriptor, in this domain: no limit.
        fine = stub.ShouldRateLimit(request("edge", [("database", "users")], [("user", "overall2")]))
        self.assertEqual(fine.overall_code, OK)
        mixed = stub.ShouldRateLimit(request("edge", [("user", "overall2")], [("user", "overall")]))
        self.assertEqual([s.code for s in mixed.statuses], [OK, OVER])
        self.assertEqual(mixed.overall_code, OVER)
        self.assertEqual(mixed.statuses[0].limit_remaining, 1)

    def test_near_limit_and_over_limit_are_counted_per_limit(self):
        stub = self.daemon.stub()

        def counts():
            text = self.daemon.metrics()
            found = {}
            for result in ("within_limit", "near_limit", "over_limit"):
                match = re.search(r'sluice_envoy_rule_descriptors_total\{rule="edge\.user",result="%s"\} (\d+)' % result, text)
                found[result] = int(match.group(1)) if match else 0
            return found

        before = counts()
        # 3 a day: the third leaves none (at least 0.8 of the limit used: near it), the fourth is over.
        codes = [stub.ShouldRateLimit(request("edge", [("user", "near-limit")])).overall_code for _ in range(4)]
        self.assertEqual(codes, [OK, OK, OK, OVER])
        after = counts()
        self.assertEqual({k: after[k] - before[k] for k in after}, {"within_limit": 3, "near_limit": 1, "over_limit": 1})

    def test_unlimited_zero_per_unit_and_shadow_mode(self):
        for _, stub in self.each_target():
            free = stub.ShouldRateLimit(request("edge", [("user", "u"), ("action", "free")]))
            self.assertEqual(free.overall_code, OK)
            self.assertEqual(free.statuses[0].limit_remaining, UINT32_MAX)
            banned = stub.ShouldRateLimit(request("edge", [("user", "u"), ("action", "banned")]))
            self.assertEqual(banned.overall_code, OVER)
            self.assertEqual(banned.statuses[0].current_limit.requests_per_unit, 0)
            for _ in range(3):
                shady = stub.ShouldRateLimit(request("edge", [("user", "shadow-" + str(id(stub))), ("action", "shady")]))
                self.assertEqual(shady.overall_code, OK)
        self.assertRegex(self.daemon.metrics(), r'sluice_envoy_descriptors_total\{result="shadowed"\} [1-9]')

    def test_replaces_drops_the_replaced_limit(self):
        stub = self.daemon.stub()
        users = [("source_cluster", "proxy"), ("destination_cluster", "users")]
        account = [("category", "account")]
        for _ in range(4):
            both = stub.ShouldRateLimit(request("edge", account, users))
            self.assertEqual(both.overall_code, OK)
            self.assertFalse(both.statuses[1].HasField("current_limit"))
        # Alone, per_user applies (2 per hour) and nothing above counted it.
        self.assertEqual(stub.ShouldRateLimit(request("edge", users)).statuses[0].limit_remaining, 1)
        self.assertEqual(stub.ShouldRateLimit(request("edge", account)).overall_code, OVER)

    def test_hits_addend_of_the_request_and_of_a_descriptor(self):
        stub = self.daemon.stub()
        r = stub.ShouldRateLimit(request("edge", [("user", "hits")], hits=2))
        self.assertEqual(r.statuses[0].limit_remaining, 1)
        # A descriptor's own hits_addend wins; 0 looks without counting.
        peek = stub.ShouldRateLimit(request("edge", {"entries": [("user", "hits")], "hits": 0}, hits=3))
        self.assertEqual(peek.overall_code, OK)
        self.assertEqual(peek.statuses[0].limit_remaining, 1)
        over = stub.ShouldRateLimit(request("edge", {"entries": [("user", "hits")], "hits": 2}))
        self.assertEqual(over.overall_code, OVER)

    def test_a_descriptor_limit_override_counts_its_key_with_the_given_numbers(self):
        stub = self.daemon.stub()
        override = {"entries": [("anything", "x")], "limit": (2, "hour")}
        codes = [stub.ShouldRateLimit(request("edge", override)).overall_code for _ in range(3)]
        self.assertEqual(codes, [OK, OK, OVER])
        status = stub.ShouldRateLimit(request("edge", override)).statuses[0]
        self.assertEqual(status.current_limit.requests_per_unit, 2)
        self.assertEqual(status.current_limit.unit, rls_pb2.RateLimitResponse.RateLimit.HOUR)

    def test_wildcards_share_or_split_their_count(self):
        stub = self.daemon.stub()
        shared = [stub.ShouldRateLimit(request("edge", [("path", f"/static/{n}.css")])).overall_code for n in range(3)]
        self.assertEqual(shared, [OK, OK, OVER])
        split = [stub.ShouldRateLimit(request("edge", [("path", f"/item/{n}")])).overall_code for n in range(3)]
        self.assertEqual(split, [OK, OK, OK])

    def test_quota_mode_is_over_only_when_every_quota_descriptor_is(self):
        stub = self.daemon.stub()
        one, two = [("service", "one")], [("service", "two")]
        stub.ShouldRateLimit(request("edge", one))
        for _ in range(2):
            r = stub.ShouldRateLimit(request("edge", one, two))
            self.assertEqual([s.code for s in r.statuses], [OVER, OK])
            self.assertEqual(r.overall_code, OK)
        r = stub.ShouldRateLimit(request("edge", one, two))
        self.assertEqual([s.code for s in r.statuses], [OVER, OVER])
        self.assertEqual(r.overall_code, OVER)

    def test_sluice_extensions_decide_with_their_algorithm_and_every_limit(self):
        stub = self.daemon.stub()
        codes = [stub.ShouldRateLimit(request("edge", [("remote_address", "203.0.113.9")])).overall_code for _ in range(6)]
        self.assertEqual(codes, [OK] * 5 + [OVER])
        r = stub.ShouldRateLimit(request("edge", [("remote_address", "203.0.113.10")]))
        # A token bucket reports when it is full again, not a window's end.
        self.assertEqual(r.statuses[0].limit_remaining, 4)
        self.assertTrue(0 < r.statuses[0].duration_until_reset.ToMilliseconds() <= 720_000)

    def test_ratelimit_headers(self):
        stub = self.daemon.stub()
        r = stub.ShouldRateLimit(request("edge", [("user", "headers")], [("source_cluster", "proxy"), ("destination_cluster", "headers")]))
        headers = {h.key: h.value for h in r.response_headers_to_add}
        self.assertEqual(headers["RateLimit-Policy"], '"user";q=3;w=86400, "per_destination";q=2;w=3600')
        self.assertRegex(headers["RateLimit"], r'^"user";r=2;t=\d+, "per_destination";r=1;t=\d+$')
        self.assertEqual(headers["X-RateLimit-Limit"], "2")
        self.assertEqual(headers["X-RateLimit-Remaining"], "1")
        self.assertTrue(0 < int(headers["X-RateLimit-Reset"]) <= 3600)

    def test_an_empty_domain_or_no_descriptors_is_an_error(self):
        for _, stub in self.each_target():
            for bad in (request("", [("a", "b")]), request("edge"), request("edge", [])):
                with self.assertRaises(grpc.RpcError) as caught:
                    stub.ShouldRateLimit(bad)
                self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertTrue(caught.exception.details())


class BadInputTests(unittest.TestCase):
    """What a broken or hostile client sends: refused in words, and everyone else still served."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(CONFIG, {"edge.yaml": EDGE})

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

    def assert_still_serving(self):
        r = self.daemon.stub().ShouldRateLimit(request("edge", [("user", "after-" + self.id())]))
        self.assertEqual(r.overall_code, OK)

    def test_unknown_method(self):
        channel = grpc.insecure_channel(f"127.0.0.1:{self.daemon.port}")
        self.daemon.channels.append(channel)
        call = channel.unary_unary("/envoy.service.ratelimit.v3.RateLimitService/Nope")
        with self.assertRaises(grpc.RpcError) as caught:
            call(b"")
        self.assertEqual(caught.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        other = channel.unary_unary("/some.Other/Method")
        with self.assertRaises(grpc.RpcError) as caught:
            other(b"")
        self.assertEqual(caught.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        self.assert_still_serving()

    def test_malformed_protobuf(self):
        channel = grpc.insecure_channel(f"127.0.0.1:{self.daemon.port}")
        self.daemon.channels.append(channel)
        call = channel.unary_unary("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit")
        for garbage in (b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05\x0a\x03\x0a", os.urandom(200)):
            with self.assertRaises(grpc.RpcError) as caught:
                call(garbage)
            self.assertIn(caught.exception.code(), (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT))
        self.assert_still_serving()

    def test_oversized_and_absurd_requests(self):
        stub = self.daemon.stub()
        huge = request("edge", [("user", "x" * (2 << 20))])
        with self.assertRaises(grpc.RpcError) as caught:
            stub.ShouldRateLimit(huge)
        # Past server.max_frame_bytes the stream is reset before the message is read.
        self.assertIn(caught.exception.code(), (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED))
        many = request("edge", *[[("user", str(n))] for n in range(1_001)])
        with self.assertRaises(grpc.RpcError) as caught:
            stub.ShouldRateLimit(many)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("max_batch", caught.exception.details())
        long_key = request("edge", [("user", "y" * 5_000)])
        with self.assertRaises(grpc.RpcError) as caught:
            stub.ShouldRateLimit(long_key)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(grpc.RpcError) as caught:
            stub.ShouldRateLimit(request("edge", {"entries": [("user", "huge-hits")], "hits": 2**64 - 1}))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("hits", caught.exception.details())
        self.assert_still_serving()

    def test_a_client_that_stops_reading_and_bytes_that_are_not_http2(self):
        # Not HTTP/2 at all: the connection is closed, nothing else happens.
        with socket.create_connection(("127.0.0.1", self.daemon.port), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(512))
            raw.settimeout(5)
            try:
                while raw.recv(4096):
                    pass
            except (ConnectionResetError, socket.timeout):
                pass
        # A client that sends many calls on one connection and never reads an answer.
        stalled = socket.create_connection(("127.0.0.1", self.daemon.port), timeout=5)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        stalled.sendall(preface)
        self.assert_still_serving()
        stalled.close()
        self.assert_still_serving()


class ReloadTests(unittest.TestCase):
    def test_a_descriptor_file_rewritten_under_load_takes_effect_at_reload_without_errors(self):
        daemon = Daemon(CONFIG, {"db.yaml": DATABASE})
        try:
            errors, answers = [], []
            stop = threading.Event()

            def load():
                stub = daemon.stub()
                while not stop.is_set():
                    try:
                        answers.append(stub.ShouldRateLimit(request("mongo_cps", [("database", "users")], [("table", "t")])))
                    except grpc.RpcError as error:
                        errors.append(error)

            threads = [threading.Thread(target=load) for _ in range(4)]
            for thread in threads:
                thread.start()
            time.sleep(0.5)
            daemon.write("db.yaml", DATABASE + "  - key: table\n    rate_limit: {unit: hour, requests_per_unit: 1}\n")
            daemon.process.send_signal(signal.SIGHUP)
            daemon.wait_for("configuration reloaded")
            time.sleep(0.5)
            stop.set()
            for thread in threads:
                thread.join()
            self.assertEqual(errors, [])
            self.assertGreater(len(answers), 20)
            last = daemon.stub().ShouldRateLimit(request("mongo_cps", [("table", "t")]))
            self.assertEqual(last.overall_code, OVER)
            self.assertEqual(last.statuses[0].current_limit.requests_per_unit, 1)
            # A broken file is refused at reload; the domains in force stay.
            daemon.write("db.yaml", "domain: mongo_cps\ndescriptors:\n  - key: table\n    rate_limit: {unit: fortnight}\n")
            daemon.process.send_signal(signal.SIGHUP)
            text = daemon.wait_for("fortnight")
            self.assertIn("db.yaml:4", text)
            again = daemon.stub().ShouldRateLimit(request("mongo_cps", [("table", "t")]))
            self.assertEqual(again.statuses[0].current_limit.requests_per_unit, 1)
        finally:
            daemon.stop()


TOKEN_CONFIG = """\
auth:
  tokens_file: tokens.yaml
envoy:
  listen:
    tcp: ["127.0.0.1:0"]
    unix: [RLS_SOCKET]
  config: descriptors
"""


class AuthenticationTests(unittest.TestCase):
    def test_a_listener_that_requires_a_token_takes_it_from_the_calls_metadata(self):
        directory = tempfile.mkdtemp(prefix="sluice-envoy-tokens-")
        tokens = os.path.join(directory, "tokens.yaml")
        sluicectl = os.path.join(os.path.dirname(SLUICED), "sluicectl")
        token = subprocess.run([sluicectl, "token", "create", "--file", tokens, "--name", "envoy", "--tenant", "edge", "--role", "check"],
                               check=True, capture_output=True, text=True).stdout.split()[-1]
        other = subprocess.run([sluicectl, "token", "create", "--file", tokens, "--name", "other", "--tenant", "elsewhere", "--role", "check"],
                               check=True, capture_output=True, text=True).stdout.split()[-1]
        daemon = Daemon(TOKEN_CONFIG.replace("tokens.yaml", tokens), {"edge.yaml": EDGE})
        try:
            stub = daemon.stub()
            with self.assertRaises(grpc.RpcError) as caught:
                stub.ShouldRateLimit(request("edge", [("user", "a")]))
            self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            with self.assertRaises(grpc.RpcError) as caught:
                stub.ShouldRateLimit(request("edge", [("user", "a")]), metadata=[("authorization", "Bearer sluice_000000000000_wrong")])
            self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            good = stub.ShouldRateLimit(request("edge", [("user", "a")]), metadata=[("authorization", "Bearer " + token)])
            self.assertEqual(good.overall_code, OK)
            self.assertEqual(good.statuses[0].limit_remaining, 2)
            # A token of another tenant may not decide this domain's limits.
            with self.assertRaises(grpc.RpcError) as caught:
                stub.ShouldRateLimit(request("edge", [("user", "a")]), metadata=[("authorization", "Bearer " + other)])
            self.assertEqual(caught.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
            # The Unix socket listener needs none (auth: none is its default).
            unix = daemon.stub("unix://" + daemon.rls_socket).ShouldRateLimit(request("edge", [("user", "a")]))
            self.assertEqual(unix.statuses[0].limit_remaining, 1)
        finally:
            daemon.stop()
            shutil.rmtree(directory, ignore_errors=True)


FEATURES = CONFIG + """\
features:
  reputation: { enabled: true, shadow: false }
  adaptive: { enabled: true }
tiers:
  vip: { multiplier: 4, priority: 10 }
"""


class FeatureTests(unittest.TestCase):
    """Sluice's features through the Envoy path: the caller is the remote_address entry."""

    def test_a_tier_scales_and_a_reputation_blocks_the_caller_of_an_envoy_descriptor(self):
        daemon = Daemon(FEATURES, {"edge.yaml": EDGE})
        sluicectl = os.path.join(os.path.dirname(SLUICED), "sluicectl")
        endpoint = "unix:" + os.path.join(daemon.dir, "sluice.sock")
        try:
            stub = daemon.stub()
            plain = stub.ShouldRateLimit(request("edge", [("remote_address", "198.51.100.1")]))
            self.assertEqual(plain.statuses[0].limit_remaining, 4)
            subprocess.run([sluicectl, "tiers", "set", "-e", endpoint, "198.51.100.2", "--tenant", "edge", "vip"], check=True, capture_output=True)
            vip = stub.ShouldRateLimit(request("edge", [("remote_address", "198.51.100.2")]))
            self.assertEqual(vip.statuses[0].limit_remaining, 19, "4x the 5 per hour")
            subprocess.run([sluicectl, "reputation", "set", "-e", endpoint, "198.51.100.3", "0", "--tenant", "edge"], check=True, capture_output=True)
            blocked = stub.ShouldRateLimit(request("edge", [("remote_address", "198.51.100.3")]))
            self.assertEqual((blocked.overall_code, blocked.statuses[0].code), (OVER, OVER))
        finally:
            daemon.stop()


class TLSTests(unittest.TestCase):
    def test_a_tls_listener_serves_envoy_with_a_real_certificate_and_refuses_plain_text(self):
        directory = tempfile.mkdtemp(prefix="sluice-envoy-tls-")
        key, certificate = os.path.join(directory, "server.key"), os.path.join(directory, "server.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", certificate],
                       check=True, capture_output=True)
        config = CONFIG.replace('tcp: [{address: "127.0.0.1:0", auth: none}]',
                                f'tcp: [{{address: "127.0.0.1:0", auth: none, tls: {{certificate: "{certificate}", key: "{key}"}}}}]')
        daemon = Daemon(config, {"edge.yaml": EDGE})
        try:
            with open(certificate, "rb") as file:
                credentials = grpc.ssl_channel_credentials(root_certificates=file.read())
            channel = grpc.secure_channel(f"localhost:{daemon.port}", credentials)
            daemon.channels.append(channel)
            answer = rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request("edge", [("user", "tls")]))
            self.assertEqual((answer.overall_code, answer.statuses[0].limit_remaining), (OK, 2))
            plain = daemon.stub(f"127.0.0.1:{daemon.port}")
            with self.assertRaises(grpc.RpcError) as caught:
                plain.ShouldRateLimit(request("edge", [("user", "tls")]), timeout=5)
            self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE)
        finally:
            daemon.stop()
            shutil.rmtree(directory, ignore_errors=True)


REDIS = shutil.which("redis-server")


@unittest.skipIf(REDIS is None, "redis-server is not installed")
class FleetTests(unittest.TestCase):
    def test_two_daemons_on_one_redis_hold_one_limit_for_envoy(self):
        directory = tempfile.mkdtemp(prefix="sluice-envoy-redis-")
        redis_socket = os.path.join(directory, "redis.sock")
        redis = subprocess.Popen([REDIS, "--port", "0", "--unixsocket", redis_socket, "--save", "", "--appendonly", "no"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        daemons = []
        try:
            deadline = time.monotonic() + 20
            while not os.path.exists(redis_socket) and time.monotonic() < deadline:
                time.sleep(0.05)
            config = CONFIG + f'backend: redis\nredis: {{ url: "unix://{redis_socket}", timeout: 2s, on_failure: local }}\n'
            daemons = [Daemon(config, {"edge.yaml": EDGE}) for _ in range(2)]
            stubs = [daemon.stub() for daemon in daemons]
            codes = [stubs[n % 2].ShouldRateLimit(request("edge", [("user", "fleet")])).overall_code for n in range(6)]
            self.assertEqual(codes, [OK, OK, OK, OVER, OVER, OVER])
        finally:
            for daemon in daemons:
                daemon.stop()
            redis.terminate()
            redis.wait(timeout=10)
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
