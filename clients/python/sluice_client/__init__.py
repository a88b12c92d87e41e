"""A small Python client for the Sluice rate-limiting daemon.

It is also the reference for writing a client in another language: a frame is a 4-byte
big-endian length and one protobuf message (``sluice.v1.Request`` out, ``sluice.v1.Response``
back); every request carries an id that its answer echoes; answers come back in request order,
so a client may send many requests before reading (pipelining). See docs/PROTOCOL.md.

    from sluice_client import Client
    with Client("unix:/tmp/sluice.sock") as sluice:
        verdict = sluice.check("login:203.0.113.7", rule="default")
        if not verdict.allowed:
            print("retry in", verdict.retry_after_ms, "ms")

A client is one connection and is not safe to share between threads. When the connection
breaks, the call raises ``SluiceConnectionError`` and the next call connects again; answers
that were in flight are lost (the daemon may or may not have counted those requests).
"""
from __future__ import annotations

import collections
import dataclasses
import socket
import ssl
import struct
from typing import Any, Iterator

from . import sluice_pb2 as pb
from ._version import __version__

__all__ = ["Client", "Check", "Verdict", "Event", "Load", "TierLoad", "SluiceError", "SluiceConnectionError", "SluiceArgumentError",
           "InvalidArgument", "UnknownRule", "UnknownTenant", "FrameTooLarge", "MalformedMessage", "Overloaded",
           "InternalError", "Unsupported", "ShuttingDown", "Forbidden", "InvalidConfiguration", "Unavailable",
           "Unauthenticated", "QuotaExceeded", "ALGORITHMS", "__version__"]

ALGORITHMS = {"gcra": 1, "token_bucket": 2, "sliding_window": 3, "fixed_window": 4, "concurrency": 5}
MAX_BATCH = 1000
MAX_FRAME = 16 << 20


class SluiceError(Exception):
    """The daemon answered a request with an error: ``code`` is its stable name, such as
    ``"unknown_rule"``; ``check_index`` names the failing check of a batch, or is -1;
    ``retry_after_ms`` says when to try again where the daemon says it (quotas), else 0.

    Each of the daemon's codes raises its own subclass (``UnknownRule``, ``Overloaded``,
    ``QuotaExceeded`` …; ``SluiceError.for_code`` maps a name to it), so a caller catches what
    it can handle and lets the rest through; catching ``SluiceError`` catches them all."""

    code = "unspecified"

    def __init__(self, code: str, message: str, check_index: int = -1, retry_after_ms: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.check_index, self.retry_after_ms = code, message, check_index, retry_after_ms

    @staticmethod
    def for_code(code: str) -> type["SluiceError"]:
        """The exception class of a daemon error code's name (``"quota_exceeded"``)."""
        return _BY_CODE.get(code, SluiceError)


class SluiceConnectionError(SluiceError):
    """The connection failed, broke, timed out or carried something unreadable; it was closed."""

    code = "connection"

    def __init__(self, message: str) -> None:
        super().__init__("connection", message)


class SluiceArgumentError(SluiceError, ValueError):
    """The call's arguments were refused before anything was sent (an unknown algorithm, a
    batch of the wrong size); also a ``ValueError``."""

    code = "argument"

    def __init__(self, message: str) -> None:
        super().__init__("argument", message)


class InvalidArgument(SluiceError):
    """CODE_INVALID_ARGUMENT: a field is missing or out of range (the message names it)."""
    code = "invalid_argument"


class UnknownRule(SluiceError):
    """CODE_UNKNOWN_RULE: the check named a rule its tenant does not have."""
    code = "unknown_rule"


class UnknownTenant(SluiceError):
    """CODE_UNKNOWN_TENANT: the check named a tenant that is not configured."""
    code = "unknown_tenant"


class FrameTooLarge(SluiceError):
    """CODE_FRAME_TOO_LARGE: a frame above the daemon's maximum; the connection is closed."""
    code = "frame_too_large"


class MalformedMessage(SluiceError):
    """CODE_MALFORMED_MESSAGE: the frame was not a valid Request."""
    code = "malformed_message"


class Overloaded(SluiceError):
    """CODE_OVERLOADED: the daemon refused work to protect itself; retry with backoff."""
    code = "overloaded"


class InternalError(SluiceError):
    """CODE_INTERNAL: an unexpected failure inside the daemon."""
    code = "internal"


class Unsupported(SluiceError):
    """CODE_UNSUPPORTED: a request this daemon does not know."""
    code = "unsupported"


class ShuttingDown(SluiceError):
    """CODE_SHUTTING_DOWN: the daemon is stopping; another replica should be asked."""
    code = "shutting_down"


class Forbidden(SluiceError):
    """CODE_FORBIDDEN: this identity's roles or tenant do not allow the request."""
    code = "forbidden"


class InvalidConfiguration(SluiceError):
    """CODE_INVALID_CONFIGURATION: a reload found the file invalid; the one in force stays."""
    code = "invalid_configuration"


class Unavailable(SluiceError):
    """CODE_UNAVAILABLE: the daemon lacks what the request needs (a store, a snapshot path)."""
    code = "unavailable"


class Unauthenticated(SluiceError):
    """CODE_UNAUTHENTICATED: no valid token on a listener that requires one."""
    code = "unauthenticated"


class QuotaExceeded(SluiceError):
    """CODE_QUOTA_EXCEEDED: the tenant is over a quota; ``retry_after_ms`` says when to retry."""
    code = "quota_exceeded"


def _daemon_error(e: pb.Error) -> SluiceError:
    """The exception of a daemon's Error message: the class of its code."""
    code = pb.Error.Code.Name(e.code).removeprefix("CODE_").lower()
    return SluiceError.for_code(code)(code, e.message, e.check_index, e.retry_after_ms)


_BY_CODE = {cls.code: cls for cls in (InvalidArgument, UnknownRule, UnknownTenant, FrameTooLarge, MalformedMessage,
                                      Overloaded, InternalError, Unsupported, ShuttingDown, Forbidden,
                                      InvalidConfiguration, Unavailable, Unauthenticated, QuotaExceeded)}


@dataclasses.dataclass
class Check:
    """One check: ``key`` and either ``rule`` or an inline ``limit`` per ``period_ms``.
    ``hits=None`` means one hit; ``hits=0`` peeks without consuming."""
    key: str
    rule: str | None = None
    limit: int = 0
    period_ms: int = 0
    burst: int = 0
    algorithm: str | None = None
    tenant: str = ""
    subject: str = ""
    hits: int | None = None
    now_ms: int = 0  # read only by a daemon started with --clock request
    ip: str = ""     # the client's address, for anomaly detection (docs/ANOMALY.md)
    route: str = ""  # "METHOD /concrete/path", for anomaly detection

    def to_proto(self) -> pb.Check:
        message = pb.Check(tenant=self.tenant, key=self.key, subject=self.subject, now_ms=self.now_ms,
                           ip=self.ip, route=self.route)
        if self.hits is not None:
            message.hits = self.hits  # sets the hits_presence oneof, so 0 is sent as a peek
        if self.rule:
            message.rule = self.rule
        else:
            message.limit.CopyFrom(_limit(self))
        return message


@dataclasses.dataclass
class Verdict:
    """The daemon's answer to one check (docs/PROTOCOL.md, Verdict).

    ``reason`` is why (``within_limit``, ``over_limit``, ``blocked``, ``reputation``, ``shed``,
    ``anomaly``, ``exceeds_capacity``); ``limit_index`` is the rule's limit that decided;
    ``lease_id`` is a concurrency lease to release (0 when none)."""
    allowed: bool
    limit: int
    remaining: int
    reset_after_ms: int
    retry_after_ms: int
    rule: str
    algorithm: str
    reason: str
    lease_id: int
    limit_index: int
    # Reputation (docs/REPUTATION.md): the subject's score when the feature applies to it, the
    # multiplier that scaled the limits (1.0 when none), and what a feature in shadow mode would
    # have done ("" when nothing).
    reputation: float | None = None
    multiplier: float = 1.0
    would_deny: str = ""
    # Adaptive limits (docs/ADAPTIVE.md): the subject's tier when it has one ("" otherwise).
    tier: str = ""
    # Anomaly detection (docs/ANOMALY.md): the kind of the alert whose response applied to this
    # subject or address (``credential_stuffing`` …), "" when none; with reason ``anomaly`` when
    # it blocked the check.
    anomaly: str = ""

    @staticmethod
    def from_proto(v: pb.Verdict) -> "Verdict":
        return Verdict(v.allowed, v.limit, v.remaining, v.reset_after_ms, v.retry_after_ms, v.rule,
                       pb.Algorithm.Name(v.algorithm).removeprefix("ALGORITHM_").lower(),
                       _reason(v.reason), v.lease_id, v.limit_index,
                       v.reputation if v.HasField("reputation") else None,
                       v.multiplier or 1.0,
                       _reason(v.would_deny_reason) if v.would_deny else "",
                       v.tier, v.anomaly)

    def ratelimit_headers(self, policy: str | None = None, window_seconds: int = 0, legacy: bool = False,
                          draft: bool = True) -> dict[str, str]:
        """The HTTP fields that tell your caller its limit, for this verdict: the IETF draft's
        ``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers), with
        ``legacy`` the older ``X-RateLimit-Limit``/``-Remaining``/``-Reset``, and
        ``Retry-After`` when denied. ``policy`` names it (default: the rule, else "inline");
        ``window_seconds`` is the limit's period, when you want it said (``w``)."""
        name = policy if policy is not None else (self.rule or "inline")
        reset = -(-self.reset_after_ms // 1000)
        headers: dict[str, str] = {}
        if draft:
            quoted = '"' + "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in name).replace("\\", "\\\\").replace('"', '\\"') + '"'
            headers["RateLimit-Policy"] = f"{quoted};q={self.limit}" + (f";w={window_seconds}" if window_seconds > 0 else "")
            headers["RateLimit"] = f"{quoted};r={self.remaining};t={reset}"
        if legacy:
            headers["X-RateLimit-Limit"] = str(self.limit)
            headers["X-RateLimit-Remaining"] = str(self.remaining)
            headers["X-RateLimit-Reset"] = str(reset)
        if not self.allowed and self.retry_after_ms > 0:
            headers["Retry-After"] = str(-(-self.retry_after_ms // 1000))
        return headers


def _reason(value: int) -> str:
    return pb.Reason.Name(value).removeprefix("REASON_").lower()


@dataclasses.dataclass
class TierLoad:
    """One tier's share at the reported load: ``tier`` ("" for subjects without one), the
    ``multiplier`` its limits get (0: shed), the ``demand`` (hits per second) the daemon measures."""
    tier: str
    multiplier: float
    demand: float


@dataclasses.dataclass
class Load:
    """The daemon's answer to a load report (docs/ADAPTIVE.md, Load shedding): the share of its
    normal capacity the service should be sent (1.0: no shedding), the smoothed p99 latency the
    controller acts on, and each tier's multiplier, highest priority first."""
    load_factor: float
    smoothed_p99_us: int
    tiers: list[TierLoad]

    @staticmethod
    def from_proto(r: pb.ReportLoadResponse) -> "Load":
        return Load(r.load_factor, r.smoothed_p99_us, [TierLoad(t.tier, t.multiplier, t.demand) for t in r.tiers])


def _load_request(service: str, in_flight: int, latency_p50_us: int, latency_p99_us: int, error_rate: float) -> pb.ReportLoadRequest:
    if not service:
        raise SluiceArgumentError("report_load needs the service the report is about")
    if not 0.0 <= error_rate <= 1.0:
        raise SluiceArgumentError(f"error_rate is a share, 0 to 1, got {error_rate}")
    return pb.ReportLoadRequest(service=service, in_flight=in_flight, latency_p50_us=latency_p50_us,
                                latency_p99_us=latency_p99_us, error_rate=error_rate)


def _alert(alert: pb.Alert) -> dict[str, Any]:
    """An alert as the alert log's keys."""
    return {"ts_ms": alert.time_ms, "scope": alert.scope, "subject": alert.subject, "ip": alert.ip,
            "tenant": alert.tenant, "kind": alert.kind, "score": alert.score, "detail": alert.detail}


def _stream_items(batch: pb.WatchAlertsResponse) -> list[dict[str, Any]]:
    """One frame of an alert stream: ``{"dropped": n}`` first when alerts were missed, then each alert."""
    items: list[dict[str, Any]] = [{"dropped": batch.dropped}] if batch.dropped else []
    return items + [_alert(alert) for alert in batch.alerts]


def _reputation(answer: pb.GetReputationResponse) -> dict[str, Any]:
    r = answer.reputation
    return {"score": r.score, "multiplier": r.multiplier, "blocked": r.blocked, "pinned": r.pinned,
            "neutral_at_ms": r.neutral_at_ms, "events": r.events, "tracked": answer.tracked,
            "recent_events": [{"kind": e.kind, "weight": e.weight, "at_ms": e.at_ms, "note": e.note}
                              for e in answer.recent_events]}


@dataclasses.dataclass
class Event:
    """A reputation event: ``kind`` is a built-in kind (``auth_failure``, ``success`` …) or one
    the daemon's configuration names; ``weight=None`` uses the configured weight; ``at_ms=0`` is now."""
    subject: str
    kind: str
    tenant: str = ""
    weight: float | None = None
    at_ms: int = 0
    note: str = ""

    def to_proto(self) -> pb.ReputationEvent:
        message = pb.ReputationEvent(tenant=self.tenant, subject=self.subject, kind=self.kind, at_ms=self.at_ms, note=self.note)
        if self.weight is not None:
            message.weight = self.weight
        return message


def _limit(c: Check) -> pb.Limit:
    if c.algorithm and c.algorithm not in ALGORITHMS:
        raise SluiceArgumentError(f"algorithm {c.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    algorithm = "ALGORITHM_" + c.algorithm.upper() if c.algorithm else "ALGORITHM_UNSPECIFIED"
    return pb.Limit(limit=c.limit, period_ms=c.period_ms, burst=c.burst, algorithm=algorithm)


class Client:
    """One connection to a daemon at ``endpoint``: ``unix:PATH``, a path, ``HOST:PORT`` or
    ``[IPv6]:PORT``. ``timeout`` (seconds) bounds the connect and each wait for an answer.

    ``token``: an API token (``sluicectl token create``), presented first on every connection
    (it reconnects with it too); a refused token raises ``SluiceError`` with code
    ``unauthenticated``. ``tls``: for a TCP listener configured with ``tls:``, an
    ``ssl.SSLContext`` (``ssl.create_default_context(cafile=...)``, with ``load_cert_chain`` for
    mutual TLS), or ``True`` for the system's roots. ``server_name``: the name the daemon's
    certificate must carry (default: the endpoint's host)."""

    def __init__(self, endpoint: str = "unix:/tmp/sluice.sock", timeout: float = 5.0, token: str | None = None,
                 tls: "ssl.SSLContext | bool | None" = None, server_name: str | None = None) -> None:
        self.endpoint, self.timeout = endpoint, timeout
        self.token, self.server_name = token, server_name
        self._tls = ssl.create_default_context() if tls is True else (tls or None)
        self._socket: socket.socket | None = None
        self._buffer = bytearray()
        self._pending: collections.deque[int] = collections.deque()
        self._next_id = 1
        self._connect()

    # -- connection ------------------------------------------------------------------------
    def _connect(self) -> None:
        target = self.endpoint
        try:
            if target.startswith("unix:") or "/" in target:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(self.timeout)
                try:
                    s.connect(target.removeprefix("unix:"))
                except OSError:
                    s.close()
                    raise
            else:
                host, _, port = target.rpartition(":")
                if not host or not port.isdigit():
                    raise SluiceArgumentError(f"endpoint {target!r} is neither unix:PATH nor HOST:PORT")
                s = socket.create_connection((host.strip("[]"), int(port)), timeout=self.timeout)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._tls is not None:
                    try:
                        s = self._tls.wrap_socket(s, server_hostname=self.server_name or host.strip("[]"))
                    except (OSError, ssl.SSLError):
                        s.close()
                        raise
        except OSError as error:  # ssl.SSLError included: a refused certificate, in OpenSSL's words
            raise SluiceConnectionError(f"cannot connect to {target}: {error}") from None
        self._socket, self._buffer, self._pending = s, bytearray(), collections.deque()
        if self.token:
            self._send(self._request(authenticate=pb.AuthenticateRequest(token=self.token)))
            try:
                self._receive()
            except SluiceError:
                self.close()
                raise

    def close(self) -> None:
        """Closes the connection; answers still pending are dropped."""
        if self._socket:
            self._socket.close()
        self._socket, self._buffer, self._pending = None, bytearray(), collections.deque()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _broken(self, message: str) -> SluiceConnectionError:
        self.close()
        return SluiceConnectionError(message)

    # -- frames ----------------------------------------------------------------------------
    def _send(self, request: pb.Request) -> None:
        body = request.SerializeToString()
        if self._socket is None:
            self._connect()
        assert self._socket is not None
        try:
            self._socket.sendall(struct.pack(">I", len(body)) + body)
        except OSError as error:
            raise self._broken(f"writing to the daemon failed: {error}") from None
        self._pending.append(request.id)

    def _receive(self) -> pb.Response:
        if not self._pending:
            raise SluiceError("state", "no request is waiting for an answer")
        response = self._read_frame()
        expected = self._pending.popleft()
        if response.id != expected:
            raise self._broken(f"the answer for request {response.id} arrived where {expected} was expected")
        if response.WhichOneof("body") == "error":
            e = response.error
            raise _daemon_error(e)
        return response

    def _read_frame(self) -> pb.Response:
        while True:
            if len(self._buffer) >= 4:
                (length,) = struct.unpack_from(">I", self._buffer)
                if length > MAX_FRAME:
                    raise self._broken(f"the daemon sent a frame of {length} bytes")
                if len(self._buffer) >= 4 + length:
                    frame = bytes(self._buffer[4:4 + length])
                    del self._buffer[:4 + length]
                    break
            if self._socket is None:
                raise SluiceConnectionError("the connection is closed")
            try:
                chunk = self._socket.recv(65536)
            except OSError as error:  # socket.timeout included
                raise self._broken(f"no answer from the daemon: {error}") from None
            if not chunk:
                raise self._broken("the daemon closed the connection")
            self._buffer += chunk
        response = pb.Response()
        try:
            response.ParseFromString(frame)
        except Exception:  # the protobuf runtime raises DecodeError
            raise self._broken("the daemon's answer is not a sluice.v1.Response") from None
        return response

    def _request(self, **body: Any) -> pb.Request:
        request = pb.Request(id=self._next_id, **body)
        self._next_id += 1
        return request

    # -- calls -----------------------------------------------------------------------------
    def _require_idle(self) -> None:
        if self._pending:
            raise SluiceError("state", f"{len(self._pending)} pipelined answers are still to be collected")

    def ping(self) -> None:
        self._require_idle()
        self._send(self._request(ping=pb.PingRequest()))
        self._receive()

    def check(self, key: str, **fields: Any) -> Verdict:
        """One check; ``fields`` are those of :class:`Check`."""
        return self.check_batch([Check(key, **fields)])[0]

    def check_batch(self, checks: list[Check]) -> list[Verdict]:
        """Up to 1,000 checks in one round trip; a daemon error fails the whole batch."""
        self._require_idle()
        self.submit(checks)
        return self.collect()[1]

    def submit(self, checks: list[Check]) -> int:
        """Pipelining: sends a batch without waiting; returns its request id."""
        if not 1 <= len(checks) <= MAX_BATCH:
            raise SluiceArgumentError(f"a batch holds 1 to {MAX_BATCH} checks, got {len(checks)}")
        request = self._request(check=pb.CheckRequest(checks=[c.to_proto() for c in checks]))
        self._send(request)
        return request.id

    def collect(self) -> tuple[int, list[Verdict]]:
        """The answer to the oldest submitted batch: (request id, verdicts)."""
        response = self._receive()
        return response.id, [Verdict.from_proto(v) for v in response.check.verdicts]

    def release(self, check: Check, lease_id: int) -> bool:
        """Returns a concurrency lease early; ``check`` names its tenant, key and limit."""
        self._require_idle()
        body = pb.ReleaseRequest(tenant=check.tenant, key=check.key, lease_id=lease_id, now_ms=check.now_ms)
        if check.rule:
            body.rule = check.rule
        else:
            body.limit.CopyFrom(_limit(check))
        self._send(self._request(release=body))
        return self._receive().release.released

    def stats(self) -> dict[str, Any]:
        self._require_idle()
        self._send(self._request(stats=pb.StatsRequest()))
        s = self._receive().stats
        return {field.name: value for field, value in s.ListFields()}

    # -- anomaly detection (docs/ANOMALY.md) -----------------------------------------------
    def report_outcomes(self, outcomes: list[dict[str, Any]]) -> int:
        """Reports what the upstream answered to checked requests: each a dict with ``subject``
        and ``status`` (and optionally ``tenant``, ``ip``, ``route``, ``time_ms``). Returns how
        many the daemon took (0 while its anomaly feature is off)."""
        self._require_idle()
        body = pb.ReportOutcomeRequest(outcomes=[pb.Outcome(**o) for o in outcomes])
        self._send(self._request(report_outcome=body))
        return self._receive().report_outcome.recorded

    def watch_alerts(self, kinds: list[str] | None = None, tenant: str = "", recent: int = 0,
                     timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Follows anomaly alerts as the daemon raises them: yields each alert as a dict (the
        alert log's keys: ``ts_ms``, ``scope``, ``subject``, ``ip``, ``tenant``, ``kind``,
        ``score``, ``detail``), starting with up to ``recent`` recent ones. Alerts a slow reader
        missed are yielded as ``{"dropped": n}``. ``timeout`` (seconds, None for ever) bounds each
        wait; it ends the generator. The connection then belongs to the stream: use a Client of
        its own for it."""
        self._require_idle()
        body = pb.WatchAlertsRequest(kinds=kinds or [], tenant=tenant, recent=recent)
        request = self._request(watch_alerts=body)
        self._send(request)
        first = self._receive()
        if self._socket is None:
            raise SluiceConnectionError("the connection is closed")
        self._socket.settimeout(timeout)
        response = first
        while True:
            yield from _stream_items(response.watch_alerts)
            try:
                response = self._read_frame()
            except SluiceConnectionError:
                if timeout is not None:
                    return
                raise
            if response.id != request.id:
                raise self._broken(f"a frame for request {response.id} arrived on the alert stream")

    # -- reputation (docs/REPUTATION.md) ---------------------------------------------------
    def record_events(self, events: list[Event], durable: bool = False) -> int:
        """Reports what subjects did. With ``durable``, returns only once the daemon has
        committed the events to its store. Returns how many were recorded."""
        self._require_idle()
        body = pb.RecordEventsRequest(events=[e.to_proto() for e in events], durable=durable)
        self._send(self._request(record_events=body))
        return self._receive().record_events.recorded

    def reputation(self, subject: str, tenant: str = "", recent_events: int = 10) -> dict[str, Any]:
        """A subject's reputation: ``score``, ``multiplier``, ``blocked``, ``pinned``,
        ``neutral_at_ms``, ``tracked`` and its ``recent_events`` (newest first)."""
        self._require_idle()
        body = pb.GetReputationRequest(tenant=tenant, subject=subject, recent_events=recent_events)
        self._send(self._request(get_reputation=body))
        return _reputation(self._receive().get_reputation)

    # -- adaptive limits (docs/ADAPTIVE.md) ------------------------------------------------
    def report_load(self, service: str, in_flight: int = 0, latency_p50_us: int = 0, latency_p99_us: int = 0,
                    error_rate: float = 0.0) -> Load:
        """Reports how loaded ``service`` is (say once a second): requests in flight, latency
        percentiles over the last interval (microseconds) and the share of requests that failed.
        Each report is one step of the daemon's load controller; the answer says how much of its
        normal capacity the service should be sent now and what each tier gets."""
        self._require_idle()
        self._send(self._request(report_load=_load_request(service, in_flight, latency_p50_us, latency_p99_us, error_rate)))
        return Load.from_proto(self._receive().report_load)
