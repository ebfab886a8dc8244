# The Responses API's WebSocket mode for the simulator: lanes, the in-flight queue, the cache.
"""``GET /v1/responses`` upgraded to a WebSocket (RFC 6455), as OpenAI's "WebSocket mode".

The HTTP server parses the upgrade request with h11, checks the key and the fault header, answers
``101 Switching Protocols`` and hands the socket to a :class:`WebSocketSession`, which speaks
the frames with wsproto. Each client message is ``{"type": "response.create", ...}`` with the
fields of a ``POST /v1/responses`` body (``stream`` is implicit, ``background`` unsupported) and
an optional ``stream_id``; the answer is the very events of the SSE path
(:class:`~._responses.ResponseBuilder`), each a bare JSON text frame, with ``stream_id`` added
when the request named one.

- **Lanes.** Requests with the same ``stream_id`` run one after another (FIFO); requests
  without one share the default lane. Different lanes run at once, their frames interleaved.
  At most :data:`MAX_NAMED_LANES` distinct ``stream_id`` values per connection
  (``websocket_stream_limit_reached`` beyond).
- **In flight.** At most :data:`MAX_IN_FLIGHT` responses are generated at once per connection;
  the others wait in arrival order (:class:`LaneScheduler`).
- **Cache.** The latest completed response of each lane stays in a per-connection cache, so a
  ``previous_response_id`` naming it works with ``store: false``; a new connection starts
  with an empty cache (``previous_response_not_found``).
- **Age.** After ``max_age`` seconds the connection gets a ``websocket_connection_limit_reached``
  error frame, then a close frame.
- **Errors** are frames in the nested form of the API's WebSocket mode
  (``{"type": "error", "status": 400, "error": {"type", "code", "message", "param"}}``, as the
  ``openai`` SDK's ``ResponseWsError`` types them), with the lane's ``stream_id`` when the
  request named a valid one.

Faults of the connection as a whole come from the upgrade request's ``X-Simulator-Fault`` header
or ``Simulator.inject_faults(..., endpoint="websocket")``: ``status`` (refuse the upgrade),
``slow_headers``, ``reset``, ``drip``, ``drop_after_frames``, ``ignore_pings``, ``frame_delay``;
the stream faults in that spec apply to every response of the connection, merged with the ones
queued for ``endpoint="responses"`` (one per response).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason

from ._faults import FaultPlan
from ._profiles import ModelProfile, ReplyTokens
from ._responses import (
    ResponseBuilder,
    ResponsesRequest,
    cached_tokens,
    previous_not_found,
)
from ._wire import RequestError, error_object

if TYPE_CHECKING:
    from ._server import Simulator

#: Responses generated at once on one connection; more wait in arrival order.
MAX_IN_FLIGHT = 16
#: Distinct ``stream_id`` values one connection may use.
MAX_NAMED_LANES = 32
#: Requests waiting for a lane or a slot on one connection: the simulator's own bound (the API
#: states none), so a client that floods a socket cannot grow the server's memory.
MAX_QUEUED = 1024
#: The API closes a connection after 60 minutes (``websocket_connection_limit_reached``).
DEFAULT_MAX_AGE = 3600.0
#: Largest client message; larger ones close the connection with 1009 (RFC 6455, 7.4.1).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
_READ_SIZE = 64 * 1024
# Unit frames coalesced into one socket write when nothing paces them (the fast profile).
_BATCH_UNITS = 256
# How long a closing server waits for the client's close frame before dropping the TCP
# connection (RFC 6455, 7.1.1: the server closes the TCP connection first).
_CLOSE_WAIT = 2.0
_STREAM_ID = re.compile(r"[A-Za-z0-9_.\-]{1,256}")
_TERMINAL = frozenset({"response.completed", "response.incomplete"})
_MALFORMED = '{"type":"response.output_text.delta",'

Lane = str | None
Item = TypeVar("Item")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def error_frame(
    status: int,
    message: str | None = None,
    *,
    param: str | None = None,
    code: str | None = None,
    stream_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An error frame in the WebSocket mode's nested form.

    Args:
        status: The HTTP status the same error would have over HTTP.
        message: The message; the status's usual one by default.
        param: The request field at fault.
        code: The error code (``previous_response_not_found``, ...).
        stream_id: The lane the error belongs to, when the request named a valid one.
        headers: Headers the HTTP answer would carry (``retry-after``, ...).

    Returns:
        ``{"type": "error", "status": ..., "error": {...}}`` (+ ``stream_id``).
    """
    error = error_object(status, message, param=param, code=code)["error"]
    if headers:
        error["headers"] = headers
    frame: dict[str, Any] = {"type": "error", "status": status, "error": error}
    if stream_id is not None:
        frame["stream_id"] = stream_id
    return frame


def valid_stream_id(value: object) -> bool:
    """Whether ``value`` is a valid ``stream_id``: 1-256 characters of ``[A-Za-z0-9_.-]``."""
    return isinstance(value, str) and _STREAM_ID.fullmatch(value) is not None


class QueueFullError(Exception):
    """More than :data:`MAX_QUEUED` requests wait on one connection."""


class LaneScheduler(Generic[Item]):
    """Which waiting requests may start: FIFO per lane, a cap on responses in flight (pure).

    A lane runs one response at a time, so the responses in flight are the busy lanes. Waiting
    requests start in arrival order as soon as their lane is idle and a slot is free.

    Args:
        max_in_flight: Responses generated at once.
        max_named_lanes: Distinct named lanes.
        max_queued: Requests waiting at once.
    """

    def __init__(
        self,
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_named_lanes: int = MAX_NAMED_LANES,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._max_in_flight = max_in_flight
        self._max_named_lanes = max_named_lanes
        self._max_queued = max_queued
        self._named: set[str] = set()
        self._busy: set[Lane] = set()
        self._pending: deque[tuple[Lane, Item]] = deque()

    @property
    def in_flight(self) -> int:
        """Responses running now."""
        return len(self._busy)

    @property
    def queued(self) -> int:
        """Requests waiting now."""
        return len(self._pending)

    def open_lane(self, stream_id: str) -> bool:
        """Admit a named lane: False when it is new and the connection has its maximum."""
        if stream_id in self._named:
            return True
        if len(self._named) >= self._max_named_lanes:
            return False
        self._named.add(stream_id)
        return True

    def submit(self, lane: Lane, item: Item) -> list[tuple[Lane, Item]]:
        """Queue a request; returns the requests that start now (this one or none).

        Raises:
            QueueFullError: :data:`MAX_QUEUED` requests wait already.
        """
        if len(self._pending) >= self._max_queued:
            raise QueueFullError
        self._pending.append((lane, item))
        return self._dispatch()

    def finish(self, lane: Lane) -> list[tuple[Lane, Item]]:
        """A lane's response ended; returns the requests that start now."""
        self._busy.discard(lane)
        return self._dispatch()

    def _dispatch(self) -> list[tuple[Lane, Item]]:
        if len(self._busy) >= self._max_in_flight or not self._pending:
            return []
        started: list[tuple[Lane, Item]] = []
        waiting: deque[tuple[Lane, Item]] = deque()
        for lane, item in self._pending:
            if lane not in self._busy and len(self._busy) < self._max_in_flight:
                self._busy.add(lane)
                started.append((lane, item))
            else:
                waiting.append((lane, item))
        self._pending = waiting
        return started


class WebSocketSession:
    """One upgraded connection: a reader, one task per running response, one writer lock.

    Args:
        sim: The simulator.
        stream: The socket, already switched to WebSocket.
        ws: The wsproto connection (fed with any bytes that followed the upgrade request).
        plan: The connection's faults (its upgrade header merged with the queued one).
        reply_tokens: The text length override of the upgrade request (or the profile's).
        max_age: Seconds until ``websocket_connection_limit_reached``.
    """

    def __init__(
        self,
        sim: Simulator,
        stream: trio.SocketStream,
        ws: Connection,
        *,
        plan: FaultPlan,
        reply_tokens: ReplyTokens,
        max_age: float,
    ) -> None:
        self._sim = sim
        self._stream = stream
        self._ws = ws
        self._plan = plan
        self._reply_tokens = reply_tokens
        self._max_age = max_age
        self._scheduler: LaneScheduler[dict[str, Any]] = LaneScheduler()
        self._cache: dict[Lane, tuple[str, int]] = {}
        self._send_lock = trio.Lock()
        self._frames_sent = 0
        self._pings_until = (
            trio.current_time() + plan.ignore_pings_after if plan.ignore_pings else None
        )
        self._ignoring_pings = False
        self._closed = trio.Event()
        self._nursery: trio.Nursery | None = None
        #: True when a fault dropped the connection (the caller closes the socket at once).
        self.dropped = False

    # ---- lifetime ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes, is dropped, or reaches its age limit."""
        counters = self._sim._counters
        counters.open_websockets += 1
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._age_limit)
                nursery.start_soon(self._read_loop)
        finally:
            counters.open_websockets -= 1

    def _end(self) -> None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    async def _age_limit(self) -> None:
        await trio.sleep(self._max_age)
        minutes = self._max_age / 60
        limit = f"{minutes:g} minutes" if minutes >= 1 else f"{self._max_age:g} seconds"
        frame = error_frame(
            400,
            f"Responses websocket connection limit reached ({limit}). Create a new websocket "
            "connection to continue.",
            code="websocket_connection_limit_reached",
        )
        async with self._send_lock:
            if self._ws.state is ConnectionState.OPEN:
                await self._send_bytes(self._ws.send(TextMessage(data=_dumps(frame))))
                self._counted_frame()
        # In-flight responses are cut: their frames are dropped once the close frame is out.
        await self._close(CloseReason.NORMAL_CLOSURE, "websocket_connection_limit_reached")

    # ---- reading ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        # A client that vanishes mid-frame is just gone, as over HTTP.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._read()
        self._closed.set()
        self._end()

    async def _read(self) -> None:
        parts: list[str | bytes | bytearray] = []
        size = 0
        counters = self._sim._counters
        while True:
            for event in self._ws.events():
                if self._ws.state is ConnectionState.LOCAL_CLOSING and not isinstance(
                    event, CloseConnection
                ):
                    continue  # we closed: only the client's close frame matters now
                if isinstance(event, (TextMessage, BytesMessage)):
                    parts.append(event.data)
                    size += len(event.data)
                    if size > MAX_MESSAGE_BYTES:
                        parts, size = [], 0
                        await self._close(CloseReason.MESSAGE_TOO_BIG, "message too big")
                        continue
                    if not event.message_finished:
                        continue
                    counters.websocket_frames_received += 1
                    message, parts, size = parts, [], 0
                    if isinstance(event, TextMessage):
                        await self._on_message("".join(map(str, message)))
                    else:
                        await self._send_frame(
                            error_frame(
                                400,
                                "Binary frames are not supported: send each client event as "
                                "a JSON text frame.",
                                code="unsupported_frame_type",
                            )
                        )
                elif isinstance(event, Ping):
                    if self._pings_until is None or trio.current_time() < self._pings_until:
                        async with self._send_lock:
                            if self._ws.state is ConnectionState.OPEN:
                                await self._send_bytes(self._ws.send(event.response()))
                    elif not self._ignoring_pings:
                        self._ignoring_pings = True  # counted once per connection
                        self._sim._served("ignore_pings")
                elif isinstance(event, CloseConnection):
                    if self._ws.state is ConnectionState.REMOTE_CLOSING:
                        async with self._send_lock:
                            await self._send_bytes(self._ws.send(event.response()))
                    elif self._ws.state is ConnectionState.OPEN:
                        # A protocol violation (wsproto's ParseFailed): close with its code.
                        await self._close(event.code, event.reason or "")
                        continue
                    return
            data = await self._stream.receive_some(_READ_SIZE)
            self._ws.receive_data(data or None)

    async def _close(self, code: int, reason: str) -> None:
        """Start the closing handshake: the client's close frame, or a short wait, ends it.

        Until then the reader discards what the client still sends, so the close frame is read
        instead of lost to a connection reset.
        """
        async with self._send_lock:
            if self._ws.state is ConnectionState.OPEN:
                await self._send_bytes(self._ws.send(CloseConnection(code=code, reason=reason)))
        assert self._nursery is not None
        self._nursery.start_soon(self._close_wait)

    async def _close_wait(self) -> None:
        with trio.move_on_after(_CLOSE_WAIT):
            await self._closed.wait()
        self._end()

    async def _on_message(self, text: str) -> None:
        """One client event: check the envelope, then queue it on its lane."""
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError):
            payload = None
        if not isinstance(payload, dict):
            await self._send_frame(
                error_frame(
                    400,
                    "We could not parse the JSON of your event: each client event must be a "
                    "JSON object.",
                    code="invalid_json",
                )
            )
            return
        kind = payload.get("type")
        if kind != "response.create":
            await self._send_frame(
                error_frame(
                    400,
                    f"Unsupported client event type {_dumps(kind)}; expected 'response.create'.",
                    param="type",
                    code="unknown_event_type",
                )
            )
            return
        stream_id = payload.get("stream_id")
        if stream_id is not None and not valid_stream_id(stream_id):
            await self._send_frame(
                error_frame(
                    400,
                    "Invalid 'stream_id': expected 1 to 256 characters of A-Z, a-z, 0-9, '_', "
                    "'.' and '-'.",
                    param="stream_id",
                    code="invalid_stream_id",
                )
            )
            return
        if stream_id is not None and not self._scheduler.open_lane(stream_id):
            await self._send_frame(
                error_frame(
                    400,
                    f"This connection already uses {MAX_NAMED_LANES} stream_id values, the "
                    "most one connection may have. Open a new connection for more streams.",
                    param="stream_id",
                    code="websocket_stream_limit_reached",
                    stream_id=stream_id,
                )
            )
            return
        try:
            started = self._scheduler.submit(stream_id, payload)
        except QueueFullError:
            await self._send_frame(
                error_frame(
                    429,
                    f"{MAX_QUEUED} requests already wait on this connection; wait for "
                    "responses to finish before sending more.",
                    code="websocket_queue_full",
                    stream_id=stream_id,
                )
            )
            return
        self._start(started)

    def _start(self, started: list[tuple[Lane, dict[str, Any]]]) -> None:
        assert self._nursery is not None
        for lane, payload in started:
            self._nursery.start_soon(self._respond, lane, payload)

    # ---- writing ----------------------------------------------------------------------------

    async def _send_bytes(self, data: bytes) -> None:
        if self._plan.drip:
            for index in range(len(data)):
                await self._stream.send_all(data[index : index + 1])
        else:
            await self._stream.send_all(data)

    def _counted_frame(self) -> None:
        self._frames_sent += 1
        self._sim._counters.websocket_frames_sent += 1

    async def _drop(self, fault: str) -> None:
        """Drop the connection for a fault: no close frame, the caller closes the socket."""
        self._sim._served(fault)
        self.dropped = True
        self._end()
        await trio.lowlevel.checkpoint()  # raises Cancelled: this task unwinds with the rest

    async def _write(self, frames: list[str]) -> None:
        """Send event frames in order, one writer at a time, through the connection's faults."""
        if not await self._write_while_open(frames):
            # Closing (the client asked, the age limit struck): the response stops here,
            # unsent and unbilled, until the session's end cancels it.
            await trio.sleep_forever()

    async def _write_while_open(self, frames: list[str]) -> bool:
        plan = self._plan
        async with self._send_lock:
            if plan.frame_delay is None and plan.drop_after_frames is None:
                if self._ws.state is not ConnectionState.OPEN:
                    return False
                send = self._ws.send
                await self._send_bytes(b"".join([send(TextMessage(data=f)) for f in frames]))
                self._frames_sent += len(frames)
                self._sim._counters.websocket_frames_sent += len(frames)
                return True
            for frame in frames:
                if plan.frame_delay is not None:
                    await trio.sleep(plan.frame_delay)
                if self._ws.state is not ConnectionState.OPEN:
                    return False
                if plan.drop_after_frames is not None and (
                    self._frames_sent >= plan.drop_after_frames
                ):
                    await self._drop("drop_after_frames")
                await self._send_bytes(self._ws.send(TextMessage(data=frame)))
                self._counted_frame()
        return True

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        await self._write([_dumps(frame)])

    # ---- responses --------------------------------------------------------------------------

    async def _respond(self, lane: Lane, payload: dict[str, Any]) -> None:
        try:
            await self._respond_one(lane, payload)
        finally:
            self._sim._counters.websocket_responses += 1
            self._start(self._scheduler.finish(lane))

    async def _respond_one(self, lane: Lane, payload: dict[str, Any]) -> None:
        sim = self._sim
        counters = sim._counters
        try:
            request = ResponsesRequest.from_payload(payload, reply_tokens=self._reply_tokens)
            if payload.get("background") is True:
                raise RequestError(
                    400,
                    "'background' is not supported in WebSocket mode.",
                    param="background",
                    code="unsupported_parameter",
                )
        except RequestError as exc:
            await self._send_frame(
                error_frame(exc.status, exc.message, param=exc.param, code=exc.code, stream_id=lane)
            )
            return
        model = sim.model(request.model)
        if model is None:
            await self._send_frame(
                error_frame(
                    404,
                    f"The model `{request.model}` does not exist or you do not have access to it.",
                    param="model",
                    stream_id=lane,
                )
            )
            return
        if request.max_tokens is not None and request.max_tokens > model.max_output_tokens:
            await self._send_frame(
                error_frame(
                    400,
                    f"max_output_tokens is too large: {request.max_tokens}. This model "
                    f"supports at most {model.max_output_tokens} completion tokens.",
                    param="max_output_tokens",
                    code="invalid_value",
                    stream_id=lane,
                )
            )
            return
        if model.capacity is not None and counters.active[model.name] >= model.capacity:
            counters.requests[model.name] += 1
            sim._served("capacity")
            retry_ms = model.capacity_retry_after_ms
            await self._send_frame(
                error_frame(
                    429,
                    f"Rate limit reached for {model.name}: at most {model.capacity} requests "
                    "at a time. Please try again shortly.",
                    code="rate_limit_exceeded",
                    stream_id=lane,
                    headers={
                        "retry-after": str(-(-retry_ms // 1000)),
                        "retry-after-ms": str(retry_ms),
                    },
                )
            )
            return
        # The connection's faults (its upgrade header) win over queued ones, as a header does.
        plan = (await sim._next_fault("responses", model.name)).merged_with(self._plan)
        counters.requests[model.name] += 1
        counters.active[model.name] += 1
        counters.max_concurrent[model.name] = max(
            counters.max_concurrent[model.name], counters.active[model.name]
        )
        try:
            await self._generate(lane, request, model, plan)
        finally:
            counters.active[model.name] -= 1

    async def _generate(
        self, lane: Lane, request: ResponsesRequest, model: ModelProfile, plan: FaultPlan
    ) -> None:
        sim = self._sim
        if plan.reset:
            # SO_LINGER 0: close() sends RST, "connection reset by peer" for the client.
            self._stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            await self._drop("reset")
            return
        if plan.status is not None:
            sim._served("status")
            headers = {}
            if plan.retry_after is not None:
                headers["retry-after"] = plan.retry_after
            if plan.retry_after_ms is not None:
                headers["retry-after-ms"] = plan.retry_after_ms
            await self._send_frame(error_frame(plan.status, stream_id=lane, headers=headers))
            return
        chained = 0
        previous = request.previous_response_id
        if previous is not None:
            found = self._cached(previous)
            if found is None:
                found = sim.responses.context_tokens(previous)
            if found is None:
                error = previous_not_found(previous)
                await self._send_frame(
                    error_frame(
                        error.status,
                        error.message,
                        param=error.param,
                        code=error.code,
                        stream_id=lane,
                    )
                )
                return
            chained = found
        input_tokens = chained + request.input_tokens
        sim._counters.prompt_tokens[model.name] += input_tokens
        builder = ResponseBuilder(
            request=request,
            reply=request.plan(model),
            model_name=sim._answered_name(request.model, model),
            input_tokens=input_tokens,
            cached_tokens=cached_tokens(chained),
        )
        if await self._stream_events(builder, lane, model, plan):
            self._cache[lane] = (builder.id, builder.context_tokens)
            if request.store:
                sim.responses.put(builder.id, builder.context_tokens)

    def _cached(self, response_id: str) -> int | None:
        # The latest response of every lane: a new lane may fork from another lane's response.
        for cached_id, tokens in self._cache.values():
            if cached_id == response_id:
                return tokens
        return None

    async def _stream_events(
        self, builder: ResponseBuilder, lane: Lane, model: ModelProfile, plan: FaultPlan
    ) -> bool:
        """Pace one response's events onto the socket; True when it ended normally.

        The same order, pacing, fault points and billing as the SSE path: the first two events
        at once, the time to first token (and hidden reasoning), then one unit per token
        interval; a fault at count N fires right after the Nth unit (at 0: before the first).
        """
        sim = self._sim
        delays = sim.profile.delays
        billed = sim._counters.completion_tokens
        total = builder.reply.units
        points = set(plan.fault_points(total))
        events = builder.events()
        pending: list[str] = []
        pending_units = 0

        def encode(event: dict[str, Any]) -> str:
            builder.emit(event)
            if lane is not None:
                event["stream_id"] = lane
            return _dumps(event)

        async def flush() -> None:
            nonlocal pending, pending_units
            if pending:
                frames, units = pending, pending_units
                pending, pending_units = [], 0
                await self._write(frames)
                billed[model.name] += units

        for _ in range(2):  # response.created and response.in_progress, before the first token
            pending.append(encode(next(events)[0]))
        await flush()
        if delays:
            hidden = builder.reply.reasoning_hidden
            await trio.sleep(sim._ttft(model) + hidden / model.tokens_per_second)
        billed[model.name] += builder.reply.reasoning_hidden
        if plan.oversized_event is not None:
            sim._served("oversized_event")
            padding = {"type": "response.simulator.padding", "padding": "x" * plan.oversized_event}
            pending.append(encode(padding))
        sent = 0
        for event, unit in events:
            if unit or (total == 0 and event["type"] in _TERMINAL):
                if sent == 0 and 0 in points:
                    await flush()
                    if not await self._faults_at(0, total, plan, builder, lane):
                        return False
                if not unit:
                    pending.append(encode(event))
                    continue
                if delays and sent:
                    await flush()
                    await trio.sleep(sim._token_interval(model))
                pending.append(encode(event))
                pending_units += 1
                sent += 1
                if sent in points:
                    await flush()
                    if not await self._faults_at(sent, total, plan, builder, lane):
                        return False
                elif delays or pending_units >= _BATCH_UNITS:
                    await flush()
            else:
                pending.append(encode(event))
        await flush()
        return True

    async def _faults_at(
        self, sent: int, total: int, plan: FaultPlan, builder: ResponseBuilder, lane: Lane
    ) -> bool:
        """The stream faults due after ``sent`` units, in the SSE path's order; False ends the
        response (an error or failed event) — a dropped connection raises instead."""
        sim = self._sim
        due = plan.due_at(sent, total)

        def stamped(event: dict[str, Any]) -> str:
            builder.emit(event)
            if lane is not None:
                event["stream_id"] = lane
            return _dumps(event)

        if "stall_after" in due:
            sim._served("stall_after")
            await trio.sleep(plan.stall_seconds)
        if "malformed_after" in due:
            sim._served("malformed_after")
            await self._write([_MALFORMED])
        ending = None
        if "error_event_after" in due:
            sim._served("error_event_after")
            ending = error_frame(plan.error_event_status)
        elif "failed_after" in due:
            sim._served("failed_after")
            ending = builder.failed_event()
        if ending is not None:
            await self._write([stamped(ending)])
            return False
        if "keepalive_after" in due:
            # WebSocket keep-alives are pings: the lane stays busy, sending only those.
            sim._served("keepalive_after")
            while True:
                await trio.sleep(plan.keepalive_every)
                async with self._send_lock:
                    if self._ws.state is ConnectionState.OPEN:
                        await self._send_bytes(self._ws.send(Ping(payload=b"keepalive")))
        if "disconnect_after" in due:
            await self._drop("disconnect_after")
        return True
