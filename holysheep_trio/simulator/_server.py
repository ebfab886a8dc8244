# The simulator's HTTP/1.1 server: trio sockets + h11, routing, auth, pacing and scripted faults.
from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import math
import random
import secrets
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from http import HTTPStatus
from typing import Any, Literal, TypeAlias
from urllib.parse import unquote

import attrs
import h11
import trio
from wsproto import ConnectionType
from wsproto.connection import Connection as WSConnection
from wsproto.utilities import generate_accept_token

from ._faults import NO_FAULTS, WEBSOCKET_ONLY, FaultPlan, FaultSpecError, parse_faults
from ._frames import FrameSource
from ._profiles import PROFILES, ModelProfile, Profile, ReplyTokens, check_reply_tokens
from ._responses import (
    ResponseBuilder,
    ResponseFrames,
    ResponsesRequest,
    ResponseStore,
    cached_tokens,
    previous_not_found,
    whole_response,
)
from ._stats import SimulatorStats
from ._websocket import DEFAULT_MAX_AGE, WebSocketSession
from ._wire import (
    PING,
    ChatFrames,
    ChatRequest,
    ChatTextFrames,
    ChunkEncoder,
    RequestError,
    completion_body,
    error_body,
    is_plain_text,
    replies_usage,
)
from ._workers import RemoteFaults, WorkerPool, open_worker_pool

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:  # pragma: no cover - trio depends on this backport below 3.11
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

_log = logging.getLogger("holysheep_trio.simulator")

#: Largest request body accepted; larger ones get a 413, so no client can make the server
#: buffer without bound.
MAX_BODY_BYTES = 8 * 1024 * 1024
#: Largest request head (request line + headers); h11 answers larger ones with a 431.
MAX_HEADER_BYTES = 64 * 1024
_READ_SIZE = 64 * 1024
# Fast path: content chunks coalesced into one socket write (about 100-200 bytes each).
_BATCH_CHUNKS = 512
# While answering, the peer watcher buffers at most this much early input for the next request.
_MAX_EARLY_INPUT = 64 * 1024
_FAULT_HEADER = "x-simulator-fault"
_REPLY_TOKENS_HEADER = "x-simulator-reply-tokens"
_LINGER_SECONDS = 2.0
#: The highest TCP port number.
_MAX_PORT = 65535
# Listen backlog of a worker's socket (trio's own listeners ask for the most the OS allows).
_BACKLOG = 4096

Endpoint = Literal["chat", "responses", "models", "websocket"]
_ENDPOINTS: tuple[Endpoint, ...] = ("chat", "responses", "models", "websocket")


_Parsed: TypeAlias = ChatRequest | ResponsesRequest


def check_http_faults(plan: FaultPlan) -> None:
    """Refuse the faults that only a WebSocket connection can suffer.

    Raises:
        FaultSpecError: The plan names one.
    """
    named = [name for name in plan.names if name in WEBSOCKET_ONLY]
    if named:
        raise FaultSpecError(
            f"fault {named[0]!r} applies to WebSocket connections only (an upgrade request's "
            "header, or inject_faults(..., endpoint='websocket'))"
        )


class _Counters:
    """The mutable counters behind :class:`SimulatorStats` (private, one per simulator)."""

    def __init__(self, models: Mapping[str, ModelProfile]) -> None:
        self.models = list(models)
        self.active = dict.fromkeys(self.models, 0)
        self.open_connections = 0
        self.open_websockets = 0
        self.internal_errors = 0
        self.reset()

    def reset(self) -> None:
        self.requests = dict.fromkeys(self.models, 0)
        self.max_concurrent = dict(self.active)
        self.prompt_tokens = dict.fromkeys(self.models, 0)
        self.completion_tokens = dict.fromkeys(self.models, 0)
        self.faults_served: dict[str, int] = {}
        self.connections_accepted = 0
        self.total_requests = 0
        self.by_endpoint: dict[str, int] = dict.fromkeys(_ENDPOINTS, 0)
        self.websocket_connections = 0
        self.websocket_frames_received = 0
        self.websocket_frames_sent = 0
        self.websocket_responses = 0

    def snapshot(self) -> SimulatorStats:
        return SimulatorStats(
            requests=self.requests,
            max_concurrent=self.max_concurrent,
            active=self.active,
            open_connections=self.open_connections,
            connections_accepted=self.connections_accepted,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            faults_served=self.faults_served,
            total_requests=self.total_requests,
            internal_errors=self.internal_errors,
            requests_by_endpoint=self.by_endpoint,
            websocket_connections=self.websocket_connections,
            open_websockets=self.open_websockets,
            websocket_frames_received=self.websocket_frames_received,
            websocket_frames_sent=self.websocket_frames_sent,
            websocket_responses=self.websocket_responses,
        )


class Simulator:
    """A running simulator; get one from :func:`open_simulator`.

    Attributes:
        host: The address it listens on.
        port: The port it listens on (the real one when 0 was asked for).
        profile: The :class:`Profile` it serves.
        seed: The seed of its latency draws.
        snapshots: Whether replies name the model's dated snapshot (see
            :func:`open_simulator`).
        websocket_max_age: Seconds a WebSocket connection lives before
            ``websocket_connection_limit_reached`` (see :func:`open_simulator`).
        workers: How many processes serve the port (``open_simulator(workers=...)``).
    """

    def __init__(
        self,
        *,
        api_key: str,
        profile: Profile,
        host: str,
        port: int,
        seed: int,
        snapshots: bool = True,
        websocket_max_age: float = DEFAULT_MAX_AGE,
        remote: RemoteFaults | None = None,
        worker: int | None = None,
    ) -> None:
        self._api_key = api_key.encode()
        self.websocket_max_age = websocket_max_age
        # How many processes serve the port (see `open_simulator(workers=...)`).
        self.workers = 1
        # In a worker of a pool: the controller's fault queues and statistics, and the worker's
        # number, sent as `x-simulator-worker` so a client can tell which worker answered.
        self._remote = remote
        self._worker_header = [] if worker is None else [("x-simulator-worker", str(worker))]
        self.profile = profile
        self.host = host
        self.port = port
        self.seed = seed
        self.snapshots = snapshots
        self._counters = _Counters(profile.models)
        self._queues: dict[tuple[Endpoint, str | None], deque[FaultPlan]] = {}
        self._models_fault = NO_FAULTS
        # One latency RNG per model: draws for one model do not depend on traffic to another.
        self._latency = {name: random.Random(f"{seed}:{name}") for name in profile.models}
        # Requests may name a model by its dated snapshot too, as the real API accepts both.
        self._by_name: dict[str, ModelProfile] = {}
        for model in profile.models.values():
            self._by_name.setdefault(model.served_name, model)
        self._by_name.update(profile.models)
        self.responses = ResponseStore()

    @property
    def api_key(self) -> str:
        """The key clients must send as ``Authorization: Bearer <key>`` (never in the repr)."""
        return self._api_key.decode()

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. ``http://127.0.0.1:8080/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def __repr__(self) -> str:
        workers = f" workers={self.workers}" if self.workers > 1 else ""
        return f"<Simulator {self.base_url} profile={self.profile.name!r}{workers}>"

    def stats(self) -> SimulatorStats:
        """A snapshot of the counters.

        Returns:
            The snapshot; later traffic does not change it.
        """
        return self._counters.snapshot()

    def reset_stats(self) -> None:
        """Zero the counters; live gauges (``active``, ``open_connections``) keep their values."""
        self._counters.reset()

    def model(self, name: str) -> ModelProfile | None:
        """The profile of a model by its id or its dated snapshot name, or ``None``."""
        return self._by_name.get(name)

    def inject_faults(
        self, *specs: str, model: str | None = None, endpoint: Endpoint = "chat"
    ) -> None:
        """Queue faults for the next requests, one spec per request, in FIFO order.

        Each spec has the syntax of the ``X-Simulator-Fault`` header (``""`` means "no fault":
        it lets a request through while later ones fail). A request for ``model`` takes from
        that model's queue first, then from the global queue (``model=None``). A fault in the
        request's header wins over a queued one of the same name.

        Args:
            *specs: The faults, e.g. ``inject_faults("status=503", "status=503")`` makes the
                next two attempts fail and the third succeed.
            model: Only requests for this model take these faults.
            endpoint: ``"chat"`` (``POST /v1/chat/completions``), ``"responses"``
                (``POST /v1/responses``, and each ``response.create`` of a WebSocket
                connection), ``"models"`` (``GET /v1/models`` and ``GET /v1/models/{id}``,
                where only ``status``, ``slow_headers``, ``drip``, ``disconnect_after`` and
                ``reset`` apply) or ``"websocket"`` (the next WebSocket upgrades, one spec per
                connection, as their ``X-Simulator-Fault`` header would say: see
                ``docs/simulator.md``); ``model`` must be ``None`` for ``"models"`` and
                ``"websocket"``.

        Raises:
            FaultSpecError: A spec is invalid, or names a WebSocket-only fault for an HTTP
                endpoint (nothing is queued then).
            ValueError: ``model`` is not configured, or given with ``endpoint="models"`` or
                ``"websocket"``.
        """
        plans = self._fault_plans(specs, model, endpoint)
        self._queues.setdefault((endpoint, model), deque()).extend(plans)

    def _fault_plans(
        self, specs: tuple[str, ...], model: str | None, endpoint: Endpoint
    ) -> list[FaultPlan]:
        """Check :meth:`inject_faults` arguments; the parsed plans."""
        if endpoint not in _ENDPOINTS:
            raise ValueError(
                f"endpoint must be 'chat', 'responses', 'models' or 'websocket', got {endpoint!r}"
            )
        if model is not None and (
            endpoint in ("models", "websocket") or model not in self.profile.models
        ):
            raise ValueError(f"cannot queue faults for model {model!r} on endpoint {endpoint!r}")
        plans = [parse_faults(spec) for spec in specs]
        if endpoint != "websocket":
            for plan in plans:
                check_http_faults(plan)
        return plans

    def clear_faults(self) -> None:
        """Drop every queued fault (the standing models fault stays; see
        :meth:`set_models_fault`)."""
        self._queues.clear()

    def set_models_fault(self, spec: str | None) -> None:
        """Make every ``GET /v1/models`` (and ``/v1/models/{id}``) fail until changed.

        Unlike :meth:`inject_faults`, which fails the next requests once each, this fault
        stands: health checks see the API down until it is cleared, then up again, on a
        schedule the test controls. Queued faults and the request's header still win over it,
        fault by fault.

        Args:
            spec: A fault spec (``"status=503"``, ``"reset"``, ``"disconnect_after=0"``,
                ``"slow_headers=30"``), or ``None`` / ``""`` to clear it.

        Raises:
            FaultSpecError: The spec is invalid (the previous fault stays).
        """
        self._models_fault = parse_faults(spec or "")

    async def _next_fault(self, endpoint: Endpoint, model: str | None) -> FaultPlan:
        """The fault plan of the next request: queued here, or in a pool's controller."""
        plan = self._take_fault(endpoint, model)
        if self._remote is not None and self._remote.pending:
            queued = await self._remote.take(endpoint, model)
            if queued is not None:
                plan = plan.merged_with(queued)
        return plan

    def _take_fault(self, endpoint: Endpoint, model: str | None) -> FaultPlan:
        standing = self._models_fault if endpoint == "models" else NO_FAULTS
        for key in ((endpoint, model), (endpoint, None)):
            queue = self._queues.get(key)
            if queue:
                return standing.merged_with(queue.popleft())
        return standing

    def _ttft(self, model: ModelProfile) -> float:
        mu, sigma = model.ttft_lognormal()
        return self._latency[model.name].lognormvariate(mu, sigma)

    def _token_interval(self, model: ModelProfile) -> float:
        # About tokens_per_second, with +-15 % jitter so inter-chunk gaps look measured.
        jitter = self._latency[model.name].uniform(0.85, 1.15)
        return jitter / model.tokens_per_second

    def _served(self, *names: str) -> None:
        served = self._counters.faults_served
        for name in names:
            served[name] = served.get(name, 0) + 1

    def _answered_name(self, requested: str, model: ModelProfile) -> str:
        return model.served_name if self.snapshots else requested

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self._api_key
        )

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        counters = self._counters
        counters.open_connections += 1
        counters.connections_accepted += 1
        connection = _Connection(self, stream)
        try:
            await connection.run()
            if connection.linger:
                await _lingering_close(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            pass  # the client went away or spoke broken HTTP: its problem, not the server's
        except Exception:
            # One misbehaving connection must never take the server down: tests share it.
            counters.internal_errors += 1
            _log.exception("simulator connection handler failed")
        finally:
            await trio.aclose_forcefully(stream)
            counters.open_connections -= 1


class _PooledSimulator(Simulator):
    """The handle of ``open_simulator(workers=N)``: this process controls, the workers serve."""

    def __init__(self, pool: WorkerPool, **options: Any) -> None:
        super().__init__(**options)
        self._pool = pool
        self.workers = len(pool.workers)

    def stats(self) -> SimulatorStats:
        """Every worker's counters, added up (asks each worker; blocks briefly).

        Returns:
            The sum (:meth:`SimulatorStats.combined`).
        """
        return self._pool.stats()

    def reset_stats(self) -> None:
        """Zero every worker's counters before returning."""
        self._pool.reset_stats()

    def inject_faults(
        self, *specs: str, model: str | None = None, endpoint: Endpoint = "chat"
    ) -> None:
        """Queue faults here, FIFO across workers: see :meth:`Simulator.inject_faults`."""
        self._fault_plans(specs, model, endpoint)
        self._pool.queue(endpoint, model, list(specs))

    def clear_faults(self) -> None:
        """Drop every queued fault, here and in every worker."""
        self._pool.clear()

    def set_models_fault(self, spec: str | None) -> None:
        """Set the standing models fault in every worker before returning."""
        parse_faults(spec or "")
        self._pool.models_fault(spec or None)


async def _lingering_close(stream: trio.SocketStream) -> None:
    """Half-close, then drain what the client still sends, bounded in time and bytes.

    Closing a socket with unread input makes the kernel send RST, which can discard the error
    response before the client reads it (RFC 9112, section 9.6, "tear-down").
    """
    await stream.send_eof()
    drained = 0
    with trio.move_on_after(_LINGER_SECONDS):
        while drained < MAX_BODY_BYTES + MAX_HEADER_BYTES:
            data = await stream.receive_some(_READ_SIZE)
            if not data:
                break
            drained += len(data)


@attrs.frozen(kw_only=True)
class _Request:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


class _Connection:
    """One client connection: a keep-alive loop of requests and responses."""

    def __init__(self, sim: Simulator, stream: trio.SocketStream) -> None:
        self._sim = sim
        self._stream = stream
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._drip = False
        self._close = False
        self._request_id = ""
        self._active_model: str | None = None
        # Set by the peer watcher when the client half-closes (or leaves) during an answer.
        self._peer_eof = trio.Event()
        # Set after an error answer that ends the connection while the client may still be
        # sending: closing at once would reset the connection and could destroy the answer.
        self.linger = False

    async def run(self) -> None:
        while not self._close:
            request = await self._read_request()
            if request is None:
                return
            self._sim._counters.total_requests += 1
            self._request_id = f"req_{secrets.token_hex(12)}"
            self._drip = False
            if _wants_websocket(request):
                # The socket is the WebSocket's from here on, or closes after a refusal.
                await self._websocket(request)
                return
            await self._answer_watching_peer(request)
            if self._close or self._h11.our_state is not h11.DONE:
                return
            if self._h11.their_state is not h11.DONE:
                return
            self._h11.start_next_cycle()

    # ---- reading ---------------------------------------------------------------------------

    async def _next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            self._h11.receive_data(await self._stream.receive_some(_READ_SIZE))

    async def _read_request(self) -> _Request | None:
        try:
            event = await self._next_event()
            if not isinstance(event, h11.Request):
                return None  # ConnectionClosed (or PAUSED, which keep-alive never reaches)
            headers = {
                name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers
            }
            declared = headers.get("content-length")
            if declared is not None and int(declared) > MAX_BODY_BYTES:
                await self._send_error(413, close=True)
                return None
            if self._h11.they_are_waiting_for_100_continue:
                # curl sends `Expect: 100-continue` for large bodies (RFC 9110, section 10.1.1).
                await self._send(h11.InformationalResponse(status_code=100, headers=[]))
            body = bytearray()
            while True:
                part = await self._next_event()
                if isinstance(part, h11.Data):
                    body += part.data
                    if len(body) > MAX_BODY_BYTES:
                        await self._send_error(413, close=True)
                        return None
                elif isinstance(part, h11.EndOfMessage):
                    break
                else:
                    return None
        except h11.RemoteProtocolError as exc:
            if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await self._send_error(exc.error_status_hint, str(exc), close=True)
            return None
        target = event.target.decode("latin-1")
        return _Request(
            method=event.method.decode("latin-1"),
            path=target.partition("?")[0],
            headers=headers,
            body=bytes(body),
        )

    async def _answer_watching_peer(self, request: _Request) -> None:
        """Answer while watching the socket, so a client that leaves stops its answer at once."""
        self._peer_eof = trio.Event()
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                try:
                    await self._answer(request)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._close = True
                finally:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(answer)
            nursery.start_soon(self._watch_peer, nursery.cancel_scope)

    async def _watch_peer(self, answer_scope: trio.CancelScope) -> None:
        early = 0
        try:
            while early <= _MAX_EARLY_INPUT:
                data = await self._stream.receive_some(_READ_SIZE)
                if not data:
                    # EOF is a half-close (RFC 9293, section 3.6: the client may still read),
                    # not a departure: finish the answer; a failed send ends it if the client
                    # really left. h11 learns of the EOF so no next request is awaited.
                    self._h11.receive_data(b"")
                    self._peer_eof.set()
                    return
                # Bytes of a next request are kept for the next keep-alive cycle.
                self._h11.receive_data(data)
                early += len(data)
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        self._close = True
        answer_scope.cancel()

    async def _fault_silence(self, seconds: float) -> None:
        """A fault's wait without content (stall, slow headers, between keep-alive pings).

        Only a failed send tells a client that left from one that half-closed its side, and
        these faults send nothing (or only pings, which a departed client's kernel may still
        accept): rather than hold a possibly dead connection for the whole stretch, the
        client's EOF, during or before the wait, ends the answer. Elsewhere an EOF is a
        half-close and the answer goes on.
        """
        with trio.move_on_after(seconds):
            await self._peer_eof.wait()
            raise trio.BrokenResourceError("the client sent EOF during a fault's silence")

    # ---- WebSocket mode --------------------------------------------------------------------

    async def _websocket(self, request: _Request) -> None:
        """``GET /v1/responses`` with ``Upgrade: websocket``: refuse it with an HTTP error as
        the HTTP endpoints would, or switch protocols and serve a :class:`WebSocketSession`."""
        sim = self._sim
        path = request.path.rstrip("/")
        if path != "/v1/responses" or request.method != "GET":
            # Only the Responses API has a WebSocket mode: answer as plain HTTP would.
            self._close = True
            await self._answer_watching_peer(request)
            return
        if not sim._authorized(request.headers):
            await self._send_error(
                401,
                "Incorrect API key provided. Pass it as 'Authorization: Bearer <key>'.",
                extra=[("www-authenticate", "Bearer")],
                close=True,
            )
            return
        # RFC 6455, section 4.2.1: what a server must check before it may switch.
        key = request.headers.get("sec-websocket-key", "").strip()
        if request.headers.get("sec-websocket-version", "").strip() != "13":
            await self._send_error(
                426,
                "Unsupported WebSocket version: this server speaks version 13 (RFC 6455).",
                code="unsupported_websocket_version",
                extra=[("sec-websocket-version", "13")],
                close=True,
            )
            return
        if not _valid_websocket_key(key) or "upgrade" not in _tokens(
            request.headers.get("connection", "")
        ):
            await self._send_error(
                400,
                "Invalid WebSocket upgrade request: it needs 'Connection: Upgrade' and a "
                "'Sec-WebSocket-Key' of 16 base64-encoded bytes.",
                code="invalid_websocket_handshake",
                close=True,
            )
            return
        sim._counters.by_endpoint["websocket"] += 1
        try:
            header_plan = self._header_faults(request, websocket=True)
            reply_tokens = self._reply_tokens(request)
        except FaultSpecError as exc:
            await self._send_error(400, str(exc), code="invalid_simulator_fault", close=True)
            return
        except RequestError as exc:
            await self._send_error(
                exc.status, exc.message, param=exc.param, code=exc.code, close=True
            )
            return
        plan = (await sim._next_fault("websocket", None)).merged_with(header_plan)
        self._drip = plan.drip
        if await self._status_fault(plan, close=True):
            return
        for name in ("drip", "frame_delay"):
            if name in plan.names:
                self._served(name)
        self._drip = False  # the 101 goes out whole; `drip` applies to the frames
        await self._send(
            h11.InformationalResponse(
                status_code=101,
                headers=[
                    ("upgrade", "websocket"),
                    ("connection", "Upgrade"),
                    ("sec-websocket-accept", generate_accept_token(key.encode()).decode()),
                    ("x-request-id", self._request_id),
                    ("server", "holysheep-trio-simulator"),
                    *sim._worker_header,
                ],
                reason=b"Switching Protocols",
            )
        )
        trailing, _ = self._h11.trailing_data
        sim._counters.websocket_connections += 1
        session = WebSocketSession(
            sim,
            self._stream,
            WSConnection(ConnectionType.SERVER, trailing_data=bytes(trailing)),
            plan=plan,
            reply_tokens=reply_tokens,
            max_age=sim.websocket_max_age,
        )
        self._close = True
        await session.run()

    # ---- writing ---------------------------------------------------------------------------

    async def _send(self, event: h11.Event) -> None:
        data = self._h11.send(event)
        if not data:
            return
        if self._drip and not isinstance(event, h11.Response):
            for index in range(len(data)):
                await self._stream.send_all(data[index : index + 1])
        else:
            await self._stream.send_all(data)

    async def _start_response(
        self,
        status: int,
        content_type: str,
        *,
        length: int | None = None,
        extra: list[tuple[str, str]] | None = None,
        close: bool = False,
    ) -> None:
        headers = [
            ("content-type", content_type),
            ("x-request-id", self._request_id or f"req_{secrets.token_hex(12)}"),
            ("server", "holysheep-trio-simulator"),
            *self._sim._worker_header,
        ]
        if length is not None:
            headers.append(("content-length", str(length)))
        else:
            headers.append(("cache-control", "no-cache"))
        if close:
            headers.append(("connection", "close"))
            self._close = True
        headers.extend(extra or [])
        await self._send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))

    async def _send_json(
        self,
        status: int,
        body: bytes,
        *,
        extra: list[tuple[str, str]] | None = None,
        close: bool = False,
    ) -> None:
        await self._start_response(
            status, "application/json", length=len(body), extra=extra, close=close
        )
        await self._send(h11.Data(data=body))
        await self._send(h11.EndOfMessage())

    async def _send_error(
        self,
        status: int,
        message: str | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
        extra: list[tuple[str, str]] | None = None,
        close: bool = False,
    ) -> None:
        body = error_body(status, message, param=param, code=code)
        self.linger = close
        await self._send_json(status, body, extra=extra, close=close)

    # ---- routing ---------------------------------------------------------------------------

    async def _answer(self, request: _Request) -> None:
        routes: dict[str, tuple[str, Callable[[_Request], Awaitable[None]]]] = {
            "/v1/chat/completions": ("POST", self._chat),
            "/v1/responses": ("POST", self._responses),
            "/v1/models": ("GET", self._models),
            "/simulator/stats": ("GET", self._stats),
            # Also under /v1, so a client whose base URL ends in /v1 reaches it too.
            "/v1/simulator/stats": ("GET", self._stats),
        }
        path = request.path.rstrip("/") or "/"
        route = routes.get(path)
        if route is None and path.startswith("/v1/models/"):
            route = ("GET", self._model_retrieve)
        if route is None:
            await self._send_error(
                404, f"Unknown request URL: {request.method} {request.path}.", code="unknown_url"
            )
            return
        method, handler = route
        if request.method != method:
            await self._send_error(405, extra=[("allow", method)])
            return
        if not self._sim._authorized(request.headers):
            await self._send_error(
                401,
                "Incorrect API key provided. Pass it as 'Authorization: Bearer <key>'.",
                extra=[("www-authenticate", "Bearer")],
            )
            return
        await handler(request)

    def _header_faults(self, request: _Request, *, websocket: bool = False) -> FaultPlan:
        plan = parse_faults(request.headers.get(_FAULT_HEADER, ""))
        if not websocket:
            check_http_faults(plan)
        return plan

    def _reply_tokens(self, request: _Request) -> ReplyTokens:
        """The ``X-Simulator-Reply-Tokens`` header (``N`` or ``max``), else the profile's."""
        value = request.headers.get(_REPLY_TOKENS_HEADER)
        if value is None:
            return self._sim.profile.reply_tokens
        text = value.strip().lower()
        if text == "max":
            return "max"
        if text.isdigit() and int(text) >= 1:
            return int(text)
        raise RequestError(
            400,
            f"Invalid X-Simulator-Reply-Tokens header {value!r}: expected a whole number >= 1 "
            "or 'max'.",
            code="invalid_simulator_header",
        )

    def _served(self, *names: str) -> None:
        self._sim._served(*names)

    async def _status_fault(self, plan: FaultPlan, *, close: bool = False) -> bool:
        """Apply ``slow_headers``, ``reset`` and ``status``; True when the request is answered."""
        if plan.slow_headers is not None:
            self._served("slow_headers")
            await self._fault_silence(plan.slow_headers)
        if plan.reset:
            self._served("reset")
            self._release_active()
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN: the client
            # sees "connection reset by peer", as when a load balancer drops a backend.
            self._stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self._close = True
            return True
        if plan.status is None:
            return False
        self._served("status")
        extra = []
        if plan.retry_after is not None:
            extra.append(("retry-after", plan.retry_after))
        if plan.retry_after_ms is not None:
            extra.append(("retry-after-ms", plan.retry_after_ms))
        if plan.should_retry is not None:
            extra.append(("x-should-retry", "true" if plan.should_retry else "false"))
        self._release_active()
        await self._send_error(plan.status, extra=extra, close=close)
        return True

    async def _models_fault(self, request: _Request) -> FaultPlan | None:
        """The fault plan of a models request, or ``None`` when it is already answered."""
        self._sim._counters.by_endpoint["models"] += 1
        try:
            header_plan = self._header_faults(request)
        except FaultSpecError as exc:
            await self._send_error(400, str(exc), code="invalid_simulator_fault")
            return None
        # Only a valid request takes a queued fault, so a typo in a header cannot eat one.
        plan = (await self._sim._next_fault("models", None)).merged_with(header_plan)
        self._drip = plan.drip
        if plan.drip:
            self._served("drip")
        if await self._status_fault(plan):
            return None
        if plan.disconnect_after is not None:
            self._served("disconnect_after")
            self._close = True
            return None
        return plan

    async def _models(self, request: _Request) -> None:
        if await self._models_fault(request) is None:
            return
        body = _json_bytes(
            {
                "object": "list",
                "data": [
                    _model_object(model.name, model) for model in self._sim.profile.models.values()
                ],
            }
        )
        await self._send_json(200, body)

    async def _model_retrieve(self, request: _Request) -> None:
        if await self._models_fault(request) is None:
            return
        name = unquote(request.path.rstrip("/")[len("/v1/models/") :])
        model = self._sim.model(name)
        if model is None:
            await self._send_error(
                404,
                f"The model '{name}' does not exist",
                param="model",
                code="model_not_found",
            )
            return
        await self._send_json(200, _json_bytes(_model_object(name, model)))

    async def _stats(self, request: _Request) -> None:
        sim = self._sim
        # A worker of a pool answers for the whole pool, as its controller sums it.
        stats = sim.stats() if sim._remote is None else await sim._remote.stats_all()
        await self._send_json(200, _json_bytes(stats.to_json()))

    async def _admit(
        self, request: _Request, endpoint: Endpoint, parse: Callable[[ReplyTokens], _Parsed]
    ) -> tuple[_Parsed, ModelProfile, FaultPlan] | None:
        """What chat and responses requests share before the reply: validation, the model,
        hidden capacity, faults and the counters. ``None`` when the request is answered."""
        sim = self._sim
        sim._counters.by_endpoint[endpoint] += 1
        try:
            header_plan = self._header_faults(request)
            parsed = parse(self._reply_tokens(request))
        except FaultSpecError as exc:
            await self._send_error(400, str(exc), code="invalid_simulator_fault")
            return None
        except RequestError as exc:
            await self._send_error(exc.status, exc.message, param=exc.param, code=exc.code)
            return None
        model = sim.model(parsed.model)
        if model is None:
            await self._send_error(
                404,
                f"The model `{parsed.model}` does not exist or you do not have access to it.",
                param="model",
            )
            return None
        if parsed.max_tokens is not None and parsed.max_tokens > model.max_output_tokens:
            param = "max_tokens" if endpoint == "chat" else "max_output_tokens"
            await self._send_error(
                400,
                f"{param} is too large: {parsed.max_tokens}. This model supports at most "
                f"{model.max_output_tokens} completion tokens.",
                param=param,
                code="invalid_value",
            )
            return None
        counters = sim._counters
        if model.capacity is not None and counters.active[model.name] >= model.capacity:
            # Checked before any fault is taken: scripted faults land on accepted requests.
            counters.requests[model.name] += 1
            self._served("capacity")
            retry_ms = model.capacity_retry_after_ms
            await self._send_error(
                429,
                f"Rate limit reached for {model.name}: at most {model.capacity} requests at a"
                " time. Please try again shortly.",
                code="rate_limit_exceeded",
                extra=[
                    ("retry-after", str(math.ceil(retry_ms / 1000))),
                    ("retry-after-ms", str(retry_ms)),
                ],
            )
            return None
        plan = (await sim._next_fault(endpoint, model.name)).merged_with(header_plan)
        counters.requests[model.name] += 1
        counters.active[model.name] += 1
        self._active_model = model.name
        counters.max_concurrent[model.name] = max(
            counters.max_concurrent[model.name], counters.active[model.name]
        )
        try:
            self._drip = plan.drip
            if plan.drip:
                self._served("drip")
            if await self._status_fault(plan):
                self._release_active()
                return None
        except BaseException:
            # A client that leaves during `slow_headers` cancels us here: still release.
            self._release_active()
            raise
        return parsed, model, plan

    async def _chat(self, request: _Request) -> None:
        admitted = await self._admit(
            request, "chat", lambda tokens: ChatRequest.from_body(request.body, reply_tokens=tokens)
        )
        if admitted is None:
            return
        chat, model, plan = admitted
        assert isinstance(chat, ChatRequest)
        try:
            self._sim._counters.prompt_tokens[model.name] += chat.prompt_tokens
            replies = chat.plan(model)
            completion_id = _completion_id()
            if not chat.stream:
                body = completion_body(
                    completion_id=completion_id,
                    created=int(time.time()),
                    model=self._sim._answered_name(chat.model, model),
                    replies=replies,
                    prompt_tokens=chat.prompt_tokens,
                    reasoning_field=model.reasoning_field,
                )
                tokens = sum(reply.output_tokens for reply in replies)
                await self._whole_reply(body, model, plan, tokens=tokens)
                return
            encoder = ChunkEncoder(
                completion_id=completion_id,
                created=int(time.time()),
                model=self._sim._answered_name(chat.model, model),
                include_usage=chat.include_usage,
            )
            usage = replies_usage(chat.prompt_tokens, replies) if chat.include_usage else None
            source: FrameSource
            profile = self._sim.profile
            if profile.pre_encoded and not profile.delays and is_plain_text(replies):
                source = ChatTextFrames(replies[0], encoder, usage=usage)
            else:
                source = ChatFrames(
                    replies, encoder, usage=usage, reasoning_field=model.reasoning_field
                )
            await self._stream_frames(source, model, plan)
        finally:
            self._release_active()

    async def _responses(self, request: _Request) -> None:
        admitted = await self._admit(
            request,
            "responses",
            lambda tokens: ResponsesRequest.from_body(request.body, reply_tokens=tokens),
        )
        if admitted is None:
            return
        parsed, model, plan = admitted
        assert isinstance(parsed, ResponsesRequest)
        sim = self._sim
        try:
            chained = 0
            if parsed.previous_response_id is not None:
                found = sim.responses.context_tokens(parsed.previous_response_id)
                if found is None:
                    error = previous_not_found(parsed.previous_response_id)
                    self._release_active()
                    await self._send_error(
                        error.status, error.message, param=error.param, code=error.code
                    )
                    return
                chained = found
            input_tokens = chained + parsed.input_tokens
            sim._counters.prompt_tokens[model.name] += input_tokens
            builder = ResponseBuilder(
                request=parsed,
                reply=parsed.plan(model),
                model_name=sim._answered_name(parsed.model, model),
                input_tokens=input_tokens,
                cached_tokens=cached_tokens(chained),
            )
            if parsed.stream:
                finished = await self._stream_frames(ResponseFrames(builder), model, plan)
            else:
                body = _json_bytes(whole_response(builder))
                reply = builder.reply
                finished = await self._whole_reply(body, model, plan, tokens=reply.output_tokens)
            if finished and parsed.store:
                sim.responses.put(builder.id, builder.context_tokens)
        finally:
            self._release_active()

    def _release_active(self) -> None:
        """Stop counting this request as active, before its last bytes go out.

        A client that has read a whole response then never sees it still active in the stats.
        """
        if self._active_model is not None:
            self._sim._counters.active[self._active_model] -= 1
            self._active_model = None

    # ---- replies ---------------------------------------------------------------------------

    def _ttft(self, model: ModelProfile) -> float:
        return self._sim._ttft(model)

    def _token_interval(self, model: ModelProfile) -> float:
        return self._sim._token_interval(model)

    async def _whole_reply(
        self, body: bytes, model: ModelProfile, plan: FaultPlan, *, tokens: int
    ) -> bool:
        """Send a non-streamed reply after the time its stream would take; True when sent."""
        if self._sim.profile.delays:
            await trio.sleep(self._ttft(model) + tokens / model.tokens_per_second)
        if plan.stall_after is not None:
            self._served("stall_after")
            await self._fault_silence(plan.stall_seconds)
        await self._start_response(200, "application/json", length=len(body))
        if plan.disconnect_after is not None:
            # A whole reply has no chunks to count: drop the connection half-way through the body.
            self._served("disconnect_after")
            await self._send(h11.Data(data=body[: len(body) // 2]))
            self._close = True
            return False
        self._sim._counters.completion_tokens[model.name] += tokens
        self._release_active()
        await self._send(h11.Data(data=body))
        await self._send(h11.EndOfMessage())
        return True

    async def _stream_frames(
        self, source: FrameSource, model: ModelProfile, plan: FaultPlan
    ) -> bool:
        """Pace a stream's units, inject its faults and bill it; True when it ended normally."""
        delays = self._sim.profile.delays
        total = source.units
        points = plan.fault_points(total)
        billed = self._sim._counters.completion_tokens
        await self._start_response(200, "text/event-stream; charset=utf-8")
        head = source.head()
        if head:
            await self._send(h11.Data(data=head))
        if delays:
            # Hidden reasoning takes its time at the model's rate before anything shows.
            await trio.sleep(self._ttft(model) + source.hidden_tokens / model.tokens_per_second)
        billed[model.name] += source.billed_hidden
        opening = source.opening()
        if plan.oversized_event is not None:
            self._served("oversized_event")
            opening += source.oversized(plan.oversized_event)
        if opening:
            await self._send(h11.Data(data=opening))
        sent = 0
        while True:
            if sent in points and not await self._faults_at(sent, total, plan, source):
                return False
            if sent >= total:
                break
            if delays:
                if sent:
                    await trio.sleep(self._token_interval(model))
                batch = 1
            else:
                stop = next((point for point in points if point > sent), total)
                batch = min(_BATCH_CHUNKS, stop - sent)
            payload, count = source.take(batch)
            await self._send(h11.Data(data=payload))
            sent += count
            billed[model.name] += count
        self._release_active()
        await self._send(h11.Data(data=source.closing()))
        await self._send(h11.EndOfMessage())
        return True

    async def _faults_at(self, sent: int, total: int, plan: FaultPlan, source: FrameSource) -> bool:
        """Apply the stream faults due after ``sent`` units; False ends the stream.

        Order at one count: stall, malformed event, error event and failed event (either ends
        the stream cleanly), keep-alive pings (until the client leaves), disconnect.
        """
        due = plan.due_at(sent, total)
        if "stall_after" in due:
            self._served("stall_after")
            await self._fault_silence(plan.stall_seconds)
        if "malformed_after" in due:
            self._served("malformed_after")
            await self._send(h11.Data(data=source.malformed()))
        ending = None
        if "error_event_after" in due:
            self._served("error_event_after")
            ending = source.error_event(plan.error_event_status)
        elif "failed_after" in due:
            self._served("failed_after")
            ending = source.failed_event()
        if ending is not None:
            self._release_active()
            await self._send(h11.Data(data=ending))
            await self._send(h11.EndOfMessage())
            return False
        if "keepalive_after" in due:
            self._served("keepalive_after")
            while True:
                await self._fault_silence(plan.keepalive_every)
                await self._send(h11.Data(data=PING))
        if "disconnect_after" in due:
            self._served("disconnect_after")
            self._close = True
            return False
        return True


def _tokens(value: str) -> set[str]:
    """The comma-separated tokens of a header, lower-cased (``Connection: keep-alive, Upgrade``)."""
    return {token.strip().lower() for token in value.split(",")}


def _wants_websocket(request: _Request) -> bool:
    return "websocket" in _tokens(request.headers.get("upgrade", ""))


def _valid_websocket_key(key: str) -> bool:
    """RFC 6455, section 4.1: the key is 16 random bytes, base64-encoded."""
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _model_object(name: str, model: ModelProfile) -> dict[str, object]:
    return {"id": name, "object": "model", "created": model.created, "owned_by": model.owned_by}


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Overloaded" if status == 529 else b""


def _completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _resolve_profile(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(
            f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)} or pass a Profile"
        ) from None


def _with_capacity(profile: Profile, capacity: int | Mapping[str, int | None] | None) -> Profile:
    if capacity is None:
        return profile
    if isinstance(capacity, Mapping):
        unknown = sorted(set(capacity) - set(profile.models))
        if unknown:
            raise ValueError(f"capacity for unknown model(s): {', '.join(map(repr, unknown))}")
        by_model = dict(capacity)
    else:
        by_model = dict.fromkeys(profile.models, capacity)
    models = {
        name: attrs.evolve(model, capacity=by_model[name]) if name in by_model else model
        for name, model in profile.models.items()
    }
    return attrs.evolve(profile, models=models)


async def serve_simulator(
    sock: socket.socket,
    options: dict[str, Any],
    *,
    task_status: trio.TaskStatus[Simulator] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a simulator on a bound socket until cancelled (a worker of ``workers=N``).

    Use with ``nursery.start``, which returns the :class:`Simulator`.

    Args:
        sock: A bound TCP socket (``SO_REUSEPORT`` for a pool); it is put in listening mode.
        options: The :class:`Simulator` arguments but ``port``.
    """
    sock.listen(_BACKLOG)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    sim = Simulator(port=sock.getsockname()[1], **options)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(
                trio.serve_listeners, sim._serve_connection, [listener], handler_nursery=nursery
            )
        )
        task_status.started(sim)


def _sole_exception(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def open_simulator(
    *,
    api_key: str = "sk-simulator",
    profile: str | Profile = "realistic",
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 0,
    capacity: int | Mapping[str, int | None] | None = None,
    reply_tokens: ReplyTokens = None,
    snapshots: bool = True,
    websocket_max_age: float = DEFAULT_MAX_AGE,
    workers: int = 1,
) -> AsyncIterator[Simulator]:
    """Run an OpenAI-compatible simulator on a real socket for the duration of the block.

    Must be used with ``async with``; it owns a nursery with the listener and one task per
    connection. Leaving the block closes the listener and every connection.

    Args:
        api_key: The key clients must send as ``Authorization: Bearer <key>``.
        profile: ``"realistic"``, ``"fast"`` or a :class:`Profile`.
        host: The address to listen on (loopback by default).
        port: The port; 0 picks a free one (read it from ``sim.port`` / ``sim.base_url``).
        seed: Seed of the latency draws, so runs are reproducible.
        capacity: Hidden per-model concurrency limits that override the profile's
            (:attr:`ModelProfile.capacity`): one int for every model, or a mapping of model name
            to int (``None`` removes a limit). Beyond it, requests get a 429.
        reply_tokens: The length of text replies, overriding the profile's
            (:attr:`Profile.reply_tokens`): an int for exactly that many tokens, or ``"max"``
            to run every reply to its ``max_tokens`` with ``finish_reason: "length"`` (what
            benchmarks that need an exact length ask for). ``None`` keeps the profile's, by
            default natural lengths.
        snapshots: Whether ``model`` in replies is the model's dated snapshot
            (:attr:`ModelProfile.snapshot`, e.g. ``gpt-4.1-2025-04-14`` for ``gpt-4.1``), as
            OpenAI answers. ``False`` echoes the id the request named, as many relays do.
        websocket_max_age: Seconds a WebSocket connection (the Responses API's WebSocket mode)
            lives before it gets a ``websocket_connection_limit_reached`` error frame and is
            closed: 3,600 by default, the API's 60 minutes.
        workers: How many processes serve the port. Above 1, that many worker processes
            share it with ``SO_REUSEPORT`` and this process only controls them:
            ``stats()`` adds theirs up, faults queue here and stay FIFO across workers; hidden
            capacity, stored responses and latency draws are per worker (see
            ``docs/simulator.md``).

    Yields:
        The :class:`Simulator` handle.

    Raises:
        ValueError: Unknown profile name, a capacity for an unknown model, a capacity
            below 1, a port outside 0-65535, a bad ``reply_tokens``, or a
            ``websocket_max_age`` that is not a positive number, or ``workers`` below 1.
        RuntimeError: ``workers > 1`` on a platform without ``SO_REUSEPORT`` (Windows).
        OSError: The address cannot be bound (or a worker could not start).
    """
    if not 0 <= port <= _MAX_PORT:
        # The socket layer would wrap 65536 to 0 and listen on a random port.
        raise ValueError(f"port must be between 0 and {_MAX_PORT}, got {port}")
    check_reply_tokens(reply_tokens)
    if not (isinstance(websocket_max_age, (int, float)) and websocket_max_age > 0):
        raise ValueError(f"websocket_max_age must be a positive number, got {websocket_max_age!r}")
    resolved = _with_capacity(_resolve_profile(profile), capacity)
    if reply_tokens is not None:
        resolved = attrs.evolve(resolved, reply_tokens=reply_tokens)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")
    try:
        if workers > 1:
            async with open_worker_pool(
                workers=workers,
                profile=resolved,
                api_key=api_key,
                host=host,
                port=port,
                seed=seed,
                snapshots=snapshots,
                websocket_max_age=websocket_max_age,
            ) as (pool, bound):
                yield _PooledSimulator(
                    pool,
                    api_key=api_key,
                    profile=resolved,
                    host=host,
                    port=bound,
                    seed=seed,
                    snapshots=snapshots,
                    websocket_max_age=websocket_max_age,
                )
            return
        # trio sets SO_REUSEADDR on its listeners (except on Windows), so a simulator stopped
        # and started again on the same port binds at once, its old connections' TIME_WAIT
        # notwithstanding: tests simulate a network flap that way.
        listeners = await trio.open_tcp_listeners(port, host=host)
        sockname = listeners[0].socket.getsockname()
        sim = Simulator(
            api_key=api_key,
            profile=resolved,
            host=host,
            port=sockname[1],
            seed=seed,
            snapshots=snapshots,
            websocket_max_age=websocket_max_age,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(
                    trio.serve_listeners, sim._serve_connection, listeners, handler_nursery=nursery
                )
            )
            try:
                yield sim
            finally:
                nursery.cancel_scope.cancel()
    except BaseException as exc:
        # A public API raises one exception, not a group, when one thing failed (STYLE.md).
        sole = _sole_exception(exc)
        if sole is exc:
            raise
        cause, context = sole.__cause__, sole.__context__
        suppress = sole.__suppress_context__
        try:
            raise sole
        finally:
            sole.__cause__, sole.__context__ = cause, context
            sole.__suppress_context__ = suppress
