"""The HTTP/JSON API against a real sluiced (SLUICED=path, default .build/debug/sluiced), as curl
or any HTTP client calls it, every answer checked against docs/openapi.json (the document is
itself checked with openapi-spec-validator, the bodies with jsonschema).

    python3 -m unittest discover -s tests/http -v
"""
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

import jsonschema
from openapi_spec_validator import validate as validate_spec

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SLUICED = os.environ.get("SLUICED", os.path.join(ROOT, ".build", "debug", "sluiced"))
SLUICECTL = os.path.join(os.path.dirname(SLUICED), "sluicectl")
with open(os.path.join(ROOT, "docs", "openapi.json")) as file:
    SPEC = json.load(file)

CONFIG = """\
http:
  listen:
    tcp: [{address: "127.0.0.1:0", auth: none}]
    unix: [HTTP_SOCKET]
rules:
  login: {limit: 3, period: 1h}
  jobs: {limit: 1, period: 1h, algorithm: concurrency}
features:
  reputation: {enabled: true}
  anomaly: {enabled: true}
"""


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


class Daemon:
    def __init__(self, config, extra=()):
        self.dir = tempfile.mkdtemp(prefix="sluice-http-")
        self.socket = os.path.join(self.dir, "http.sock")
        path = os.path.join(self.dir, "sluice.yaml")
        with open(path, "w") as file:
            file.write(config.replace("HTTP_SOCKET", self.socket))
        self.log = open(os.path.join(self.dir, "log"), "w+")
        self.process = subprocess.Popen([SLUICED, "--config", path, "--unix", os.path.join(self.dir, "sluice.sock"), "--tcp", "127.0.0.1:0",
                                         "--tcp-auth", "none", "--snapshot", "off", "--store", "off", "--metrics", "off", *extra],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline and "sluiced ready" not in text:
            time.sleep(0.05)
            self.log.seek(0)
            text = self.log.read()
        if "sluiced ready" not in text:
            self.process.kill()
            raise RuntimeError("sluiced did not start:\n" + text)
        self.port = int(re.search(r"http\.listen\.tcp=\S*:(\d+)", text).group(1))

    def request(self, method, path, body=None, headers=None, unix=False, raw=None):
        connection = UnixHTTPConnection(self.socket) if unix else http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            sent = {"Content-Type": "application/json"} if data is not None else {}
            sent.update(headers or {})
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            text = response.read()
            return response.status, dict(response.getheaders()), json.loads(text) if text else None
        finally:
            connection.close()

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        finally:
            self.log.close()
            shutil.rmtree(self.dir, ignore_errors=True)


def schema(name):
    return {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]}


def check_against_spec(test, method, path_template, status, body):
    """The body matches what docs/openapi.json says this path answers with this status."""
    operation = SPEC["paths"][path_template][method.lower()]
    test.assertIn(str(status), operation["responses"], f"{method} {path_template} documents no {status}")
    response = operation["responses"][str(status)]
    if "$ref" in response:
        response = SPEC["components"]["responses"][response["$ref"].split("/")[-1]]
    body_schema = dict(response["content"]["application/json"]["schema"])
    body_schema["components"] = SPEC["components"]
    jsonschema.validate(body, body_schema)


class HTTPAPITests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(CONFIG)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

    def call(self, method, path, template, body=None, **options):
        status, headers, answer = self.daemon.request(method, path, body, **options)
        check_against_spec(self, method, template, status, answer)
        return status, headers, answer

    def test_the_document_is_valid_openapi(self):
        validate_spec(SPEC)

    def test_one_check_answers_its_verdict_with_ratelimit_fields(self):
        for unix in (False, True):
            with self.subTest(unix=unix):
                key = f"alice-{unix}"
                answers = [self.call("POST", "/v1/check", "/v1/check", {"key": key, "rule": "login"}, unix=unix) for _ in range(4)]
                self.assertEqual([a[0] for a in answers], [200] * 4)
                self.assertEqual([a[2]["allowed"] for a in answers], [True, True, True, False])
                self.assertEqual([a[2]["remaining"] for a in answers], [2, 1, 0, 0])
                status, headers, verdict = answers[-1]
                self.assertEqual(verdict["reason"], "REASON_OVER_LIMIT")
                self.assertEqual(headers["RateLimit-Policy"], '"login";q=3')
                self.assertRegex(headers["RateLimit"], r'^"login";r=0;t=\d+$')
                self.assertGreater(int(headers["Retry-After"]), 0)
                self.assertNotIn("Retry-After", answers[0][1])

    def test_a_batch_answers_every_verdict_in_order(self):
        body = {"checks": [{"key": "bob", "rule": "login"}, {"key": "inline", "limit": {"limit": 1, "period_ms": 60000}},
                           {"key": "inline", "limit": {"limit": "1", "periodMs": "60000"}}]}
        status, _, answer = self.call("POST", "/v1/check", "/v1/check", body)
        self.assertEqual(status, 200)
        self.assertEqual([v["allowed"] for v in answer["verdicts"]], [True, True, False])

    def test_a_lease_is_taken_and_released(self):
        _, _, first = self.call("POST", "/v1/check", "/v1/check", {"key": "worker", "rule": "jobs"})
        self.assertTrue(first["allowed"])
        _, _, second = self.call("POST", "/v1/check", "/v1/check", {"key": "worker", "rule": "jobs"})
        self.assertFalse(second["allowed"])
        status, _, released = self.call("POST", "/v1/release", "/v1/release", {"key": "worker", "rule": "jobs", "lease_id": first["lease_id"]})
        self.assertEqual((status, released), (200, {"released": True}))
        _, _, third = self.call("POST", "/v1/check", "/v1/check", {"key": "worker", "rule": "jobs"})
        self.assertTrue(third["allowed"])

    def test_reports_move_a_reputation_that_can_be_read_back(self):
        status, _, answer = self.call("POST", "/v1/report", "/v1/report",
                                      {"events": [{"subject": "mallory", "kind": "auth_failure"}] * 3, "durable": False,
                                       "outcomes": [{"subject": "mallory", "ip": "203.0.113.5", "route": "POST /login", "status": 401}]})
        self.assertEqual(status, 200)
        self.assertEqual(answer["events"]["recorded"], 3)
        self.assertEqual(answer["outcomes"]["recorded"], 1)
        status, _, reputation = self.call("GET", "/v1/reputation/mallory?recent_events=5", "/v1/reputation/{subject}")
        self.assertEqual(status, 200)
        self.assertTrue(reputation["tracked"])
        self.assertLess(reputation["reputation"]["score"], 50)
        self.assertEqual(reputation["reputation"]["events"], 3)
        status, _, neutral = self.call("GET", "/v1/reputation/some%20one", "/v1/reputation/{subject}")
        self.assertEqual((status, neutral["reputation"]["subject"]), (200, "some one"))

    def test_mistakes_are_clear_4xx_answers(self):
        cases = [
            ("POST", "/v1/check", None, b'{"key":', {}, 400, "not valid JSON"),
            ("POST", "/v1/check", None, b"[1, 2]", {}, 400, "JSON object"),
            ("POST", "/v1/check", None, b"", {}, 400, "empty"),
            ("POST", "/v1/check", {"key": "a", "rule": "login", "colour": "red"}, None, {}, 400, "colour"),
            ("POST", "/v1/check", {"key": "a", "rule": "nope"}, None, {}, 400, "nope"),
            ("POST", "/v1/check", {"key": "", "rule": "login"}, None, {}, 400, "key"),
            ("POST", "/v1/check", {"key": "a", "limit": {"limit": 0, "period_ms": 1000}}, None, {}, 400, "limit"),
            ("POST", "/v1/check", {"key": "a", "rule": "login", "hits": "18446744073709551616"}, None, {}, 400, "out of range"),
            ("POST", "/v1/check", {"key": "a", "rule": "login", "limit": {"limit": 1, "period_ms": 1}}, None, {}, 400, "both rule and limit"),
            ("POST", "/v1/check", {"key": "a", "limit": {"limit": 1, "period_ms": 1000, "algorithm": "ALGORITHM_MAGIC"}}, None, {}, 400, "enum"),
            ("POST", "/v1/check", None, b'{"key":"a"}', {"Content-Type": "text/plain"}, 415, "application/json"),
            ("POST", "/v1/report", {"events": [{"subject": "s", "kind": "nonsense"}]}, None, {}, 400, "nonsense"),
            ("POST", "/v1/report", {"complaints": []}, None, {}, 400, "complaints"),
            ("GET", "/v1/reputation/x?colour=red", None, None, {}, 400, "colour"),
        ]
        for method, path, body, raw, headers, expected, words in cases:
            with self.subTest(path=path, body=body or raw):
                status, _, answer = self.daemon.request(method, path, body, headers=headers, raw=raw)
                self.assertEqual(status, expected, answer)
                self.assertIn(words, answer["error"]["message"])
                jsonschema.validate(answer, schema("ErrorResponse"))
        for method, path, expected in (("GET", "/v1/check", 405), ("DELETE", "/v1/report", 405), ("GET", "/metrics", 404),
                                       ("POST", "/v2/check", 404), ("GET", "/v1/reputation/", 404)):
            with self.subTest(path=path, method=method):
                status, _, answer = self.daemon.request(method, path)
                self.assertEqual(status, expected)
                jsonschema.validate(answer, schema("ErrorResponse"))

    def test_huge_and_broken_requests_never_take_the_daemon_down(self):
        status, _, answer = self.daemon.request("POST", "/v1/check", raw=b'{"key":"' + b"a" * (2 << 20) + b'"}')
        self.assertEqual(status, 413)
        jsonschema.validate(answer, schema("ErrorResponse"))
        deep = b'{"key":"a","limit":' * 64 + b"{}" + b"}" * 64
        status, _, _ = self.daemon.request("POST", "/v1/check", raw=deep)
        self.assertEqual(status, 400)
        # Bytes that are not HTTP: the connection is answered 400 by the parser and closed.
        with socket.create_connection(("127.0.0.1", self.daemon.port), timeout=5) as raw:
            raw.sendall(b"\x16\x03\x01\x02\x00" + os.urandom(300) + b"\r\n\r\n")
            raw.settimeout(5)
            try:
                raw.recv(4096)
            except (ConnectionResetError, socket.timeout):
                pass
        # Many requests on one kept-alive connection, pipelined: answered in order.
        with socket.create_connection(("127.0.0.1", self.daemon.port), timeout=5) as pipelined:
            body = b'{"key":"pipelined","rule":"login"}'
            one = b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            pipelined.sendall(one * 4)
            data = b""
            deadline = time.monotonic() + 10
            while data.count(b"HTTP/1.1 200") < 4 and time.monotonic() < deadline:
                data += pipelined.recv(65536)
            self.assertEqual(re.findall(rb'"remaining":(\d+)', data), [b"2", b"1", b"0", b"0"])
        status, _, verdict = self.call("POST", "/v1/check", "/v1/check", {"key": "after", "rule": "login"})
        self.assertEqual((status, verdict["allowed"]), (200, True))


class HTTPAuthenticationTests(unittest.TestCase):
    def test_a_listener_that_requires_a_token_takes_it_as_a_bearer(self):
        directory = tempfile.mkdtemp(prefix="sluice-http-tokens-")
        tokens = os.path.join(directory, "tokens.yaml")
        token = subprocess.run([SLUICECTL, "token", "create", "--file", tokens, "--name", "web", "--tenant", "acme", "--role", "check"],
                               check=True, capture_output=True, text=True).stdout.split()[-1]
        config = f"auth: {{tokens_file: {tokens}}}\nhttp:\n  listen:\n    tcp: [\"127.0.0.1:0\"]\nrules:\n  login: {{limit: 3, period: 1h}}\n"
        daemon = Daemon(config)
        try:
            status, headers, answer = daemon.request("POST", "/v1/check", {"key": "k", "rule": "login"})
            self.assertEqual(status, 401)
            self.assertEqual(headers["WWW-Authenticate"], 'Bearer realm="sluice"')
            self.assertEqual(answer["error"]["code"], "CODE_UNAUTHENTICATED")
            status, _, _ = daemon.request("POST", "/v1/check", {"key": "k", "rule": "login"}, headers={"Authorization": "Bearer sluice_000000000000_x"})
            self.assertEqual(status, 401)
            status, _, verdict = daemon.request("POST", "/v1/check", {"key": "k", "rule": "login"}, headers={"Authorization": "Bearer " + token})
            self.assertEqual((status, verdict["allowed"]), (200, True))
            status, _, answer = daemon.request("POST", "/v1/check", {"tenant": "other", "key": "k", "rule": "login"},
                                               headers={"Authorization": "Bearer " + token})
            self.assertEqual((status, answer["error"]["code"]), (403, "CODE_FORBIDDEN"))
            # Its role is check only: reporting is refused.
            status, _, answer = daemon.request("POST", "/v1/report", {"events": [{"subject": "s", "kind": "success"}]},
                                               headers={"Authorization": "Bearer " + token})
            self.assertEqual(status, 403)
        finally:
            daemon.stop()
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
