"""The asyncio client: the same protocol, requests and answers as :class:`sluice_client.Client`,
for services written with asyncio (aiohttp, FastAPI, Starlette …).

    from sluice_client.aio import AsyncClient
    async with await AsyncClient.connect("unix:/tmp/sluice.sock") as sluice:
        verdict = await sluice.check("login:203.0.113.7", rule="default")

One connection carries every coroutine's requests at once: each request is written as it is
made and its answer resolves its own future (the daemon answers in order), so a hundred tasks
sharing one client pipeline on one socket. When the connection breaks, every waiting call
raises ``SluiceConnectionError`` and the next call connects again.
"""
from __future__ import annotations

import asyncio
import collections
import ssl
import struct
from typing import Any, AsyncIterator

from . import (MAX_BATCH, MAX_FRAME, Check, Event, Load, SluiceArgumentError, SluiceConnectionError, SluiceError, Verdict,
               _daemon_error, _limit, _load_request, _reputation, _stream_items, pb)

__all__ = ["AsyncClient"]


class AsyncClient:
    """One connection to a daemon at ``endpoint`` (``unix:PATH``, a path, ``HOST:PORT``,
    ``[IPv6]:PORT``), shared by any number of tasks. ``timeout`` (seconds) bounds the connect
    and each wait for an answer; ``token`` and ``tls`` as :class:`sluice_client.Client`'s.
    Make one with ``await AsyncClient.connect(...)``."""

    def __init__(self, endpoint: str = "unix:/tmp/sluice.sock", timeout: float = 5.0, token: str | None = None,
                 tls: ssl.SSLContext | bool | None = None, server_name: str | None = None) -> None:
        self.endpoint, self.timeout, self.token, self.server_name = endpoint, timeout, token, server_name
        self._tls = ssl.create_default_context() if tls is True else (tls or None)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: collections.deque[tuple[int, asyncio.Future[pb.Response]]] = collections.deque()
        self._reading: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()
        self._next_id = 1

    @classmethod
    async def connect(cls, endpoint: str = "unix:/tmp/sluice.sock", **options: Any) -> "AsyncClient":
        client = cls(endpoint, **options)
        await client._ensure_connected()
        return client

    async def __aenter__(self) -> "AsyncClient":
        await self._ensure_connected()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connection; calls still waiting raise ``SluiceConnectionError``."""
        self._drop("the client was closed")
        if self._reading is not None:
            self._reading.cancel()
            self._reading = None

    # -- connection ------------------------------------------------------------------------
    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new connection to the endpoint (TLS when asked), not yet authenticated."""
        target = self.endpoint
        try:
            if target.startswith("unix:") or "/" in target:
                opening = asyncio.open_unix_connection(target.removeprefix("unix:"), limit=MAX_FRAME)
            else:
                host, _, port = target.rpartition(":")
                if not host or not port.isdigit():
                    raise SluiceArgumentError(f"endpoint {target!r} is neither unix:PATH nor HOST:PORT")
                name = host.strip("[]")
                opening = asyncio.open_connection(name, int(port), ssl=self._tls, limit=MAX_FRAME,
                                                  server_hostname=(self.server_name or name) if self._tls else None)
            return await asyncio.wait_for(opening, self.timeout)
        except (OSError, asyncio.TimeoutError) as error:
            raise SluiceConnectionError(f"cannot connect to {target}: {error or 'timed out'}") from None

    async def _ensure_connected(self) -> None:
        if self._writer is not None:
            return
        async with self._connecting:
            if self._writer is not None:
                return
            reader, writer = await self._open()
            self._reader, self._writer = reader, writer
            self._reading = asyncio.get_running_loop().create_task(self._read_answers(reader))
            if self.token:
                try:
                    await self._call(authenticate=pb.AuthenticateRequest(token=self.token))
                except SluiceError:
                    await self.close()
                    raise

    def _drop(self, reason: str) -> None:
        """Closes the connection and fails every call waiting on it."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        pending, self._pending = self._pending, collections.deque()
        for _, future in pending:
            if not future.done():
                future.set_exception(SluiceConnectionError(reason))

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await reader.readexactly(4)
                (length,) = struct.unpack(">I", header)
                if length > MAX_FRAME:
                    raise ValueError(f"the daemon sent a frame of {length} bytes")
                response = pb.Response()
                response.ParseFromString(await reader.readexactly(length))
                if not self._pending:
                    raise ValueError(f"an answer for request {response.id} that nothing waits for")
                expected, future = self._pending.popleft()
                if response.id != expected:
                    raise ValueError(f"the answer for request {response.id} arrived where {expected} was expected")
                if not future.done():
                    future.set_result(response)
        except asyncio.CancelledError:
            raise
        except asyncio.IncompleteReadError:
            self._drop("the daemon closed the connection")
        except Exception as error:  # OSError, a frame that does not decode, answers out of order
            self._drop(f"the connection broke: {error}")

    async def _call(self, **body: Any) -> pb.Response:
        await self._ensure_connected()
        writer = self._writer
        if writer is None:
            raise SluiceConnectionError("the connection is closed")
        request = pb.Request(id=self._next_id, **body)
        self._next_id += 1
        payload = request.SerializeToString()
        future: asyncio.Future[pb.Response] = asyncio.get_running_loop().create_future()
        self._pending.append((request.id, future))
        try:
            writer.write(struct.pack(">I", len(payload)) + payload)
            await writer.drain()
        except OSError as error:
            self._drop(f"writing to the daemon failed: {error}")
        try:
            response = await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except asyncio.TimeoutError:
            # The answer may still come; the connection's order cannot be trusted past it.
            self._drop(f"no answer from the daemon within {self.timeout} s")
            raise SluiceConnectionError(f"no answer from the daemon within {self.timeout} s") from None
        if response.WhichOneof("body") == "error":
            raise _daemon_error(response.error)
        return response

    # -- calls -----------------------------------------------------------------------------
    async def ping(self) -> None:
        await self._call(ping=pb.PingRequest())

    async def check(self, key: str, **fields: Any) -> Verdict:
        """One check; ``fields`` are those of :class:`sluice_client.Check`."""
        return (await self.check_batch([Check(key, **fields)]))[0]

    async def check_batch(self, checks: list[Check]) -> list[Verdict]:
        """Up to 1,000 checks in one round trip; a daemon error fails the whole batch."""
        if not 1 <= len(checks) <= MAX_BATCH:
            raise SluiceArgumentError(f"a batch holds 1 to {MAX_BATCH} checks, got {len(checks)}")
        response = await self._call(check=pb.CheckRequest(checks=[c.to_proto() for c in checks]))
        return [Verdict.from_proto(v) for v in response.check.verdicts]

    async def release(self, check: Check, lease_id: int) -> bool:
        """Returns a concurrency lease early; ``check`` names its tenant, key and limit."""
        body = pb.ReleaseRequest(tenant=check.tenant, key=check.key, lease_id=lease_id, now_ms=check.now_ms)
        if check.rule:
            body.rule = check.rule
        else:
            body.limit.CopyFrom(_limit(check))
        return (await self._call(release=body)).release.released

    async def stats(self) -> dict[str, Any]:
        s = (await self._call(stats=pb.StatsRequest())).stats
        return {field.name: value for field, value in s.ListFields()}

    async def report_outcomes(self, outcomes: list[dict[str, Any]]) -> int:
        """What the upstream answered to checked requests (see ``Client.report_outcomes``)."""
        body = pb.ReportOutcomeRequest(outcomes=[pb.Outcome(**o) for o in outcomes])
        return (await self._call(report_outcome=body)).report_outcome.recorded

    async def record_events(self, events: list[Event], durable: bool = False) -> int:
        """Reputation events (see ``Client.record_events``); returns how many were recorded."""
        body = pb.RecordEventsRequest(events=[e.to_proto() for e in events], durable=durable)
        return (await self._call(record_events=body)).record_events.recorded

    async def reputation(self, subject: str, tenant: str = "", recent_events: int = 10) -> dict[str, Any]:
        """A subject's reputation (see ``Client.reputation``)."""
        body = pb.GetReputationRequest(tenant=tenant, subject=subject, recent_events=recent_events)
        return _reputation((await self._call(get_reputation=body)).get_reputation)

    async def report_load(self, service: str, in_flight: int = 0, latency_p50_us: int = 0, latency_p99_us: int = 0,
                          error_rate: float = 0.0) -> Load:
        """How loaded ``service`` is (see ``Client.report_load``); the controller's answer."""
        body = _load_request(service, in_flight, latency_p50_us, latency_p99_us, error_rate)
        return Load.from_proto((await self._call(report_load=body)).report_load)

    async def watch_alerts(self, kinds: list[str] | None = None, tenant: str = "",
                           recent: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Follows anomaly alerts as the daemon raises them, on a connection of its own (this
        client's other calls go on meanwhile): yields each alert as a dict (the alert log's keys),
        starting with up to ``recent`` recent ones, and ``{"dropped": n}`` for alerts a slow
        reader missed. It waits for ever; bound it with ``asyncio.timeout`` or cancel the task.

            async for alert in sluice.watch_alerts(kinds=["credential_stuffing"]):
                ...
        """
        reader, writer = await self._open()
        try:
            request_id = 1
            if self.token:
                await _write(writer, pb.Request(id=request_id, authenticate=pb.AuthenticateRequest(token=self.token)))
                await _answer(reader, request_id, self.timeout)
                request_id += 1
            body = pb.WatchAlertsRequest(kinds=kinds or [], tenant=tenant, recent=recent)
            await _write(writer, pb.Request(id=request_id, watch_alerts=body))
            response = await _answer(reader, request_id, self.timeout)
            while True:
                for item in _stream_items(response.watch_alerts):
                    yield item
                response = await _answer(reader, request_id, None)
        finally:
            writer.close()


async def _write(writer: asyncio.StreamWriter, request: pb.Request) -> None:
    payload = request.SerializeToString()
    try:
        writer.write(struct.pack(">I", len(payload)) + payload)
        await writer.drain()
    except OSError as error:
        raise SluiceConnectionError(f"writing to the daemon failed: {error}") from None


async def _answer(reader: asyncio.StreamReader, request_id: int, timeout: float | None) -> pb.Response:
    """The next frame of a connection used by one request at a time; its error raised."""
    try:
        header = await asyncio.wait_for(reader.readexactly(4), timeout)
        (length,) = struct.unpack(">I", header)
        if length > MAX_FRAME:
            raise SluiceConnectionError(f"the daemon sent a frame of {length} bytes")
        response = pb.Response()
        response.ParseFromString(await asyncio.wait_for(reader.readexactly(length), timeout))
    except asyncio.IncompleteReadError:
        raise SluiceConnectionError("the daemon closed the connection") from None
    except asyncio.TimeoutError:
        raise SluiceConnectionError(f"no answer from the daemon within {timeout} s") from None
    except OSError as error:
        raise SluiceConnectionError(f"the connection broke: {error}") from None
    except SluiceError:
        raise
    except Exception:  # the protobuf runtime raises DecodeError
        raise SluiceConnectionError("the daemon's answer is not a sluice.v1.Response") from None
    if response.id != request_id:
        raise SluiceConnectionError(f"the answer for request {response.id} arrived where {request_id} was expected")
    if response.WhichOneof("body") == "error":
        raise _daemon_error(response.error)
    return response
