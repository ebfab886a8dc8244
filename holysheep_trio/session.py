# The Responses API's WebSocket mode: one long-lived socket, lanes, heartbeat, reconnect, rotation.
"""A WebSocket session of the Responses API: :meth:`Client.open_session
<holysheep_trio.Client.open_session>` and :class:`Session`.

One long-lived socket (``wss://…/responses``) carries many responses. Each
``session.stream_response(...)`` is a :class:`~holysheep_trio.ResponseStream` over the shared
request lifecycle (admission, budget, deadlines, telemetry, statistics), whose one attempt talks
to the server through a *lane exchange* (:class:`_LaneExchange`) instead of an HTTP ``POST``:

- **open** waits, in the session's pending queue (first in, first out, under the request's own
  deadlines), until its lane is idle, a slot of ``max_in_flight`` is free and a connection is
  up; then the dispatcher queues its ``response.create`` frame for the connection's one writer.
  Nothing is sent twice: the lifecycle runs with ``RetryPolicy(max_retries=0)``.
- **receive** returns the lane's frames, parsed once by the reader (a :class:`_Frame` carries
  the JSON object, which :class:`_FrameDecoder` types without parsing again).
- **aclose** stops delivery. The lane stays busy until the server's terminal event (the
  protocol has no cancel); the reader drops the frames meanwhile, without buffering them.

The session owns a nursery: per connection a reader (always reading, so pings are answered even
when nobody consumes), a writer and a rotation timer; and the health monitor
(:func:`~holysheep_trio.open_health_monitor`) whose probe is a WebSocket ping while healthy and a
new connection otherwise, so every health event applies.

Frames are routed by ``stream_id``: frames of a named lane carry it, frames of the default lane
carry none. An ``error`` frame goes to the lane it names; one that names none goes to the
default lane when a response runs there, unless its code concerns the connection
(:data:`_CONNECTION_CODES`); otherwise it fails the connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs
import httpx2
import trio

from ._groups import BlockGuard
from ._lifecycle import CLOSE_TIMEOUT, scrub_error
from ._responses_stream import ResponseStream, _ResponseDecoder
from ._responses_wire import prepare_response_request
from ._websocket import WebSocketConnection, connect, websocket_url
from ._wire import _error_fields, _status_from_words
from .errors import (
    APIConnectionError,
    APIStreamError,
    APITimeoutError,
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    ConnectionLostError,
    HolySheepError,
    PendingQueueFullError,
    PreviousResponseNotFoundError,
    StreamProtocolError,
    error_class_for_status,
)
from .health import (
    HealthConfig,
    HealthMonitor,
    HealthState,
    open_health_monitor,
)
from .models import Message
from .responses import Response, ResponseEvent
from .retry import RetryPolicy, parse_retry_after
from .sse import ServerSentEvent

if TYPE_CHECKING:
    import ssl

    from .client import Client
    from .timeouts import Timeouts

__all__ = [
    "DEFAULT_HEALTH",
    "DEFAULT_MAX_AGE",
    "MAX_NAMED_LANES",
    "Session",
    "SessionStatistics",
    "open_session",
    "valid_stream_id",
]

logger = logging.getLogger("holysheep_trio")

#: The session's heartbeat by default: a ping every 20 s, answered within 5 s.
DEFAULT_HEALTH: Final = HealthConfig(interval=20.0, timeout=5.0)
#: Rotate to a fresh connection after 55 minutes, before the API's 60-minute limit.
DEFAULT_MAX_AGE: Final = 55 * 60.0
#: Responses in flight at once per connection: the API's cap.
DEFAULT_MAX_IN_FLIGHT: Final = 16
#: Distinct ``stream_id`` values one connection may use (the API refuses a 33rd).
MAX_NAMED_LANES: Final = 32
#: Seconds the session waits for the server's close frame when it closes a connection.
CLOSE_WAIT: Final = 1.0
_STREAM_ID: Final = re.compile(r"[A-Za-z0-9_.\-]{1,256}")
#: Frame types that end a response on its lane (the server then takes the lane's next request).
_TERMINAL: Final = frozenset(
    {"response.completed", "response.incomplete", "response.failed", "error"}
)
#: Error codes about the connection itself, never about a lane (the API sends them without a
#: ``stream_id``, as it does the default lane's errors).
_CONNECTION_CODES: Final = frozenset(
    {
        "websocket_connection_limit_reached",
        "invalid_json",
        "unknown_event_type",
        "unsupported_frame_type",
        "invalid_stream_id",
    }
)
#: Headers of the client's HTTP client that the upgrade request must not repeat (the
#: handshake sets its own ``Connection``, ``Upgrade`` and ``Sec-WebSocket-*``; there is no body).
_HANDSHAKE_OWN: Final = frozenset(
    {
        "accept",
        "accept-encoding",
        "connection",
        "content-length",
        "content-type",
        "host",
        "transfer-encoding",
        "upgrade",
    }
)
#: A session never re-sends a request the server may be running (it may still be generating).
_NO_RETRY: Final = RetryPolicy(max_retries=0)


def valid_stream_id(value: object) -> bool:
    """Whether ``value`` is a valid ``stream_id``: 1-256 characters of ``[A-Za-z0-9_.-]``."""
    return isinstance(value, str) and _STREAM_ID.fullmatch(value) is not None


def _sign_upgrade(headers: httpx2.Headers, auth: httpx2.Auth | None, url: str) -> None:
    """Add what the http_client's ``auth`` (or the URL's credentials) would send."""
    if auth is None:
        parsed = httpx2.URL(url)
        if not parsed.username:
            return
        auth = httpx2.BasicAuth(parsed.username, parsed.password)
    request = httpx2.Request("GET", url, headers=headers)
    flow = auth.sync_auth_flow(request)
    try:
        signed = next(flow)
    except Exception:
        raise ConfigurationError(
            "the http_client's auth cannot sign the WebSocket upgrade by itself; pass"
            " open_client(api_key=...) or an Authorization header in extra_headers"
        ) from None
    finally:
        flow.close()
    value = signed.headers.get("authorization")
    if value is not None:
        headers["Authorization"] = value


def error_from_frame(payload: Mapping[str, Any], text: str) -> HolySheepError:
    """The typed error of an ``error`` frame refusing a request (before its response began).

    The nested form ``{"type": "error", "status": 400, "error": {...}}`` (the API's WebSocket
    mode) and the flat form ``{"type": "error", "code": ..., "message": ...}`` (its SSE event)
    both become the :class:`~holysheep_trio.APIStatusError` an HTTP answer with that status
    would raise (``error.headers`` gives ``retry_after``); ``previous_response_not_found`` is
    a :class:`~holysheep_trio.PreviousResponseNotFoundError`. Without any status (none given,
    none implied by the code), an :class:`~holysheep_trio.APIStreamError`.
    """
    nested = payload.get("error")
    fields: Mapping[str, Any] = nested if isinstance(nested, Mapping) else payload
    message, error_type, code, status = _error_fields(fields)
    raw_status = payload.get("status")
    if isinstance(raw_status, int) and not isinstance(raw_status, bool):
        status = raw_status
    if status is None:
        status = _status_from_words(code, error_type)
    param = fields.get("param")
    raw_headers = fields.get("headers")
    headers = (
        {str(name).lower(): str(value) for name, value in raw_headers.items()}
        if isinstance(raw_headers, Mapping)
        else {}
    )
    if code == "previous_response_not_found":
        return PreviousResponseNotFoundError(
            f"HTTP {status or 400}: {message}",
            status=status or 400,
            body=text,
            error_type=error_type,
            code=code,
            headers=headers,
        )
    if status is None or not 100 <= status <= 599:
        return APIStreamError(
            f"the server sent an error frame: {message}",
            error_type=error_type,
            code=code,
            param=param if isinstance(param, str) else None,
        )
    return error_class_for_status(status)(
        f"HTTP {status}: {message}",
        status=status,
        body=text,
        error_type=error_type,
        code=code,
        retry_after=parse_retry_after(headers),
        headers=headers,
    )


@attrs.frozen(kw_only=True)
class SessionStatistics:
    """A snapshot of a :class:`Session` (from :meth:`Session.statistics`).

    Attributes:
        connections: WebSocket connections opened so far (reconnects and rotations included).
        open_connections: Connections open now (a rotated one finishing its responses counts).
        in_flight: Responses sent and not yet ended by the server (abandoned ones included).
        pending: Requests waiting in the pending queue (for their lane, a slot or a connection).
        frames_received: Text frames read from the server.
        frames_dropped: Frames dropped: those of responses whose stream was left early, and
            strays for no lane in flight.
        replays: Requests sent once more with their lane's full input (``recover=True``).
    """

    connections: int
    open_connections: int
    in_flight: int
    pending: int
    frames_received: int
    frames_dropped: int
    replays: int


class _Frame(ServerSentEvent):
    """A text frame as the lifecycle's event: ``data`` is the text, ``payload`` its JSON object
    (parsed once, by the reader, to route it)."""

    __slots__ = ("payload",)
    payload: dict[str, Any]


_new_frame: Final = object.__new__
_set_data: Final = ServerSentEvent.__dict__["data"].__set__
_set_event: Final = ServerSentEvent.__dict__["event"].__set__
_set_id: Final = ServerSentEvent.__dict__["id"].__set__
_set_retry: Final = ServerSentEvent.__dict__["retry"].__set__


def _frame(payload: dict[str, Any], text: str) -> _Frame:
    # Filled slot by slot, as the SSE parser does for its events (attrs' frozen __init__ costs
    # more than the rest of the routing).
    frame: _Frame = _new_frame(_Frame)
    _set_event(frame, "message")
    _set_data(frame, text)
    _set_id(frame, "")
    _set_retry(frame, None)
    object.__setattr__(frame, "payload", payload)
    return frame


class _FrameDecoder(_ResponseDecoder):
    """The Responses decoder for frames the reader has parsed already."""

    __slots__ = ()

    def decode(self, event: ServerSentEvent) -> tuple[ResponseEvent | None, int]:
        payload = getattr(event, "payload", None)
        if payload is None:
            return super().decode(event)
        try:
            item = ResponseEvent.from_json(payload)
        except StreamProtocolError as exc:
            raise StreamProtocolError(exc.message, data=event.data) from None
        return self.fold(item, event.data)


class _Lane:
    """One ``stream_id`` (or the default lane): which exchange runs on it, and its history."""

    __slots__ = ("history", "key", "running")

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.running: _LaneExchange | None = None
        #: The conversation's input items so far (kept only with ``recover=True``).
        self.history: list[dict[str, Any]] = []


class _Connection:
    """One WebSocket of the session, with the responses running on it."""

    __slots__ = ("done", "named", "opened_at", "retiring", "running", "scope", "url", "ws")

    def __init__(self, ws: WebSocketConnection, opened_at: float, url: str) -> None:
        self.ws = ws
        self.opened_at = opened_at
        #: The endpoint (an HTTP base URL of the client's) this socket was opened to.
        self.url = url
        self.running: dict[str | None, _LaneExchange] = {}
        self.named: set[str] = set()
        #: No new responses go here (rotated, or the server announced its close).
        self.retiring = False
        self.scope = trio.CancelScope()
        self.done = trio.Event()

    @property
    def usable(self) -> bool:
        return self.ws.open and not self.retiring


class _LaneExchange:
    """One attempt's exchange over a session's lane (see the module docs).

    Attributes:
        status: 200 once the response began; the error's status when the server refused it.
        request_id: Always None (a WebSocket frame has no ``x-request-id``).
    """

    __slots__ = (
        "_arrived",
        "_base",
        "_connection",
        "_dispatched",
        "_ended",
        "_failure",
        "_frames",
        "_frames_bytes",
        "_input",
        "_payload",
        "_replayed",
        "_sent_number",
        "_session",
        "_started",
        "abandoned",
        "lane_key",
        "queued",
        "request_id",
        "status",
        "withdrawn",
    )

    def __init__(
        self,
        session: Session,
        *,
        lane_key: str | None,
        payload: dict[str, Any],
        input_items: list[dict[str, Any]],
    ) -> None:
        self._session = session
        self.lane_key = lane_key
        self._payload = payload
        self._input = input_items
        self._base: list[dict[str, Any]] = []
        self._connection: _Connection | None = None
        self._dispatched = trio.Event()
        self._arrived = trio.Event()
        self._frames: list[ServerSentEvent] = []
        self._frames_bytes = 0
        self._ended = False
        self._failure: HolySheepError | None = None
        self._started = False  # the response began (a frame other than an error came)
        self._replayed = False
        self.abandoned = False  # aclose() before the end: frames are dropped
        self.withdrawn = False  # left the pending queue unsent
        self.queued = False  # entered the pending queue
        self._sent_number = 0  # the frame's number on its connection (see `sent`)
        self.status: int | None = None
        self.request_id: str | None = None

    # ---- the Exchange protocol ----------------------------------------------------------

    @property
    def endpoint(self) -> str | None:
        """The endpoint of the connection the request was sent on (None before that)."""
        connection = self._connection
        return None if connection is None else connection.url

    @property
    def sent(self) -> bool:
        """Whether the ``response.create`` frame reached the kernel (the server may run it).

        A frame still queued when its connection failed was never sent: the request costs
        nothing.
        """
        connection = self._connection
        return (
            connection is not None
            and self._sent_number > 0
            and connection.ws.texts_written >= self._sent_number
        )

    async def open(self, deadline: float) -> bool:
        session = self._session
        session._submit(self)
        try:
            with trio.move_on_at(deadline):
                await self._dispatched.wait()
        except BaseException:
            self._leave_queue()
            raise
        if not self._dispatched.is_set():
            self._leave_queue()
            return False
        if self._failure is not None and not self.sent:
            raise self._failure
        return True

    async def receive(self) -> tuple[list[ServerSentEvent], bool]:
        while not self._frames and not self._ended and self._failure is None:
            self._arrived = trio.Event()
            await self._arrived.wait()
        return self._take()

    def readable_fd(self) -> int:
        return -1  # a lane's frames come from the session's reader, not from a socket of its own

    def receive_ready(self) -> tuple[list[ServerSentEvent], bool] | None:  # pragma: no cover
        raise RuntimeError("a lane has no file descriptor to wait on")

    async def receive_nowait(self) -> tuple[list[ServerSentEvent], bool] | None:
        await trio.lowlevel.checkpoint()
        if not self._frames and not self._ended and self._failure is None:
            return None
        return self._take()

    async def aclose(self) -> None:
        self._leave_queue()
        if self._connection is not None and not self._ended and self._failure is None:
            self.abandoned = True  # the lane stays busy until the terminal frame, unread
        self._frames.clear()
        self._frames_bytes = 0
        await trio.lowlevel.checkpoint()

    # ---- the session's side ---------------------------------------------------------------

    def _take(self) -> tuple[list[ServerSentEvent], bool]:
        frames = self._frames
        if frames:
            self._frames = []
            self._frames_bytes = 0
            return frames, self._ended
        if self._failure is not None:
            raise self._failure
        return [], True

    def _leave_queue(self) -> None:
        if self.queued and not self._dispatched.is_set() and not self.withdrawn:
            self.withdrawn = True
            self._session._withdraw(self)

    def frame_text(self, lane: _Lane, recover: bool) -> str:
        """The ``response.create`` frame, noting the lane's history first (``recover``)."""
        payload = self._payload
        if recover:
            # A continuation of the lane's conversation builds on its history; a request
            # without previous_response_id starts a new one.
            self._base = list(lane.history) if payload.get("previous_response_id") else []
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)

    def dispatched(self, connection: _Connection, number: int) -> None:
        self._connection = connection
        self._sent_number = number
        self._dispatched.set()

    def refuse(self, error: HolySheepError) -> None:
        """Fail the request before it was sent (it leaves the queue)."""
        self.withdrawn = True
        self._failure = error
        self._dispatched.set()

    def fail(self, error: HolySheepError) -> None:
        """The connection failed under the response (the lane is free again)."""
        if self._ended or self._failure is not None:
            return
        self._failure = error
        self._arrived.set()

    def deliver(self, payload: dict[str, Any], text: str, kind: object) -> bool:
        """Take one frame of this lane; return whether the response ended with it."""
        terminal = kind in _TERMINAL
        if kind == "error" and not self._started:
            # The request was refused in its turn (no response began): a typed error, as an
            # HTTP status would be, unless recover=True can replay a lost continuation.
            error = error_from_frame(payload, text)
            if isinstance(error, PreviousResponseNotFoundError) and self._replay():
                return False
            self.status = getattr(error, "status", None)
            self._failure = error
            self._ended = True
            self._arrived.set()
            return True
        if not self._started:
            self._started = True
            self.status = 200
        if terminal:
            self._ended = True
            if self._session._recover and kind != "error":
                self._remember(payload)
        if self.abandoned:
            self._session._frames_dropped += 1
            return terminal
        self._frames.append(_frame(payload, text))
        self._frames_bytes += len(text)
        limit = self._session._max_buffered
        if self._frames_bytes > limit and not self._ended:
            # The reader never waits for a consumer (pings must be answered), so a stream read
            # too slowly is cut at a bound instead of growing without one.
            self._failure = APIConnectionError(
                f"this stream was read too slowly: more than {limit} bytes of frames waited"
            )
            self.abandoned = True
            self._frames.clear()
        self._arrived.set()
        return terminal

    def _replay(self) -> bool:
        """Send the request once more with the lane's full input and no previous response."""
        session = self._session
        connection = self._connection
        if not session._recover or self._replayed or connection is None:
            return False
        self._replayed = True
        payload = dict(self._payload)
        payload.pop("previous_response_id", None)
        payload["input"] = [*self._base, *self._input]
        try:
            connection.ws.send_text(json.dumps(payload, separators=(",", ":"), ensure_ascii=False))
        except HolySheepError:
            return False
        session._replays += 1
        logger.info("session: previous response not found; replaying the lane's full input")
        return True

    def _remember(self, payload: Mapping[str, Any]) -> None:
        """Extend the lane's history with this turn's input and output (``recover=True``)."""
        response = payload.get("response")
        output = response.get("output") if isinstance(response, Mapping) else None
        items = [dict(item) for item in output or () if isinstance(item, Mapping)]
        lane = self._session._lane(self.lane_key)
        lane.history = [*self._base, *self._input, *items]


class Session:
    """A WebSocket session of the Responses API; made by :meth:`Client.open_session
    <holysheep_trio.Client.open_session>` (use it with ``async with``).

    See ``docs/websocket.md`` for lanes, the pending queue, the heartbeat, reconnects, recover
    and rotation.
    """

    def __init__(
        self,
        client: Client,
        *,
        health: HealthConfig,
        max_age: float,
        max_in_flight: int,
        recover: bool,
        extra_headers: Mapping[str, str],
    ) -> None:
        self._client = client
        self._config = health
        self._max_age = max_age
        self._max_in_flight = max_in_flight
        self._recover = recover
        self._extra_headers = dict(extra_headers)
        # The client's endpoints, primary first: the session fails over and back among them
        # as its HTTP requests do (the health monitor decides, see _probe).
        self._urls = client.base_urls
        self._max_buffered = 2 * client._max_event_size
        self._lanes: dict[str | None, _Lane] = {}
        self._waiting: deque[_LaneExchange] = deque()
        self._pending = 0
        self._current: _Connection | None = None
        # The connection the health monitor last saw answer (a probe succeeded with it).
        self._confirmed: _Connection | None = None
        self._connections: set[_Connection] = set()
        self._streams: set[ResponseStream] = set()
        self._nursery: trio.Nursery | None = None
        self._monitor: HealthMonitor | None = None
        self._closed = False
        self._opened = 0
        self._frames_received = 0
        self._frames_dropped = 0
        self._replays = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.health.state.value if self._monitor else "new"
        return (
            f"<Session {state} connections={len(self._connections)}"
            f" in_flight={self._in_flight()} pending={self._pending}>"
        )

    # ---- public surface ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The endpoint (the client's base URL or one of its fallback URLs) new responses go to:
        that of the current connection, else the one the health monitor is reconnecting to."""
        current = self._current
        if current is not None:
            return current.url
        if self._monitor is not None:
            return self._monitor.active_url
        return self._urls[0]

    @property
    def health(self) -> HealthMonitor:
        """The session's health monitor: ``state``, ``subscribe()``, ``wait_healthy()``,
        ``reconnect()`` (see ``docs/health.md``); its probe is a WebSocket ping."""
        if self._monitor is None:
            raise RuntimeError("use the session inside `async with client.open_session()`")
        return self._monitor

    @property
    def closed(self) -> bool:
        """Whether the session's block was left (or its client closed)."""
        return self._closed

    def statistics(self) -> SessionStatistics:
        """A snapshot of the connections, the lanes and the pending queue."""
        return SessionStatistics(
            connections=self._opened,
            open_connections=len(self._connections),
            in_flight=self._in_flight(),
            pending=self._pending,
            frames_received=self._frames_received,
            frames_dropped=self._frames_dropped,
            replays=self._replays,
        )

    def stream_response(
        self,
        *,
        model: str,
        input: str | Iterable[Mapping[str, Any] | Message],
        instructions: str | None = None,
        previous_response_id: str | None = None,
        store: bool | None = None,
        tools: Iterable[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        max_output_tokens: int | None = None,
        stream_id: str | None = None,
        timeouts: Timeouts | None = None,
        **params: Any,
    ) -> ResponseStream:
        """Stream a response over the session's socket. Use the result with ``async with``.

        The same arguments, events and :class:`~holysheep_trio.Response` as
        :meth:`Client.stream_response <holysheep_trio.Client.stream_response>`, plus
        ``stream_id``. Entering the stream waits in the pending queue (its lane, a free slot,
        a connection), under the request's own deadlines, then sends one ``response.create``
        frame; the client's limits, budget and statistics apply. The request is never sent
        twice, except once with ``recover=True`` after ``previous_response_not_found``.

        Args:
            model: The model name.
            input: A string or input items, as for ``Client.stream_response``.
            instructions: The system (developer) message.
            previous_response_id: Continue a response (the connection's own cache holds the
                latest response of each lane, also with ``store=False``).
            store: Whether the server keeps the response.
            tools: Tool definitions.
            tool_choice: ``"auto"``, ``"required"``, ``"none"`` or a tool object.
            max_output_tokens: The limit of output tokens.
            stream_id: The lane: responses of one ``stream_id`` run one after another, lanes
                run in parallel; None is the default lane (also one after another).
            timeouts: Deadlines for this request instead of the client's.
            **params: Other API parameters.

        Returns:
            A :class:`~holysheep_trio.ResponseStream`.

        Raises:
            TypeError: an argument cannot be sent (at the call).
            ValueError: ``stream_id`` is not 1-256 characters of ``[A-Za-z0-9_.-]``, or
                ``max_output_tokens`` is below 1 (at the call).
        """
        if stream_id is not None and not valid_stream_id(stream_id):
            if not isinstance(stream_id, str):
                raise TypeError(f"stream_id must be a str or None, got {type(stream_id).__name__}")
            raise ValueError(
                "stream_id must be 1 to 256 characters of A-Z, a-z, 0-9, '_', '.' and '-'"
            )
        request = prepare_response_request(
            model=model,
            input=input,
            instructions=instructions,
            previous_response_id=previous_response_id,
            store=store,
            tools=tools,
            tool_choice=tool_choice,
            max_output_tokens=max_output_tokens,
            params=params,
        )
        payload: dict[str, Any] = {"type": "response.create", **json.loads(request.body)}
        del payload["stream"]  # implicit in WebSocket mode
        if stream_id is not None:
            payload["stream_id"] = stream_id
        raw_input = payload["input"]
        input_items = (
            [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else raw_input
        )
        client = self._client

        def new_exchange(url: str) -> _LaneExchange:
            return _LaneExchange(self, lane_key=stream_id, payload=payload, input_items=input_items)

        return _SessionStream(
            self,
            client,
            model=model,
            max_output_tokens=max_output_tokens,
            timeouts=timeouts or client._timeouts,
            estimated_tokens=request.estimated_tokens,
            estimated_prompt_tokens=request.estimated_prompt_tokens,
            fields=request.fields,
            new_exchange=new_exchange,
            new_decoder=_FrameDecoder,
            retry=_NO_RETRY,
            base_urls=(self.url,),
            client_health=False,
        )

    async def create_response(
        self,
        *,
        model: str,
        input: str | Iterable[Mapping[str, Any] | Message],
        stream_id: str | None = None,
        **params: Any,
    ) -> Response:
        """Run a response to its end over the session and return it.

        Takes the arguments of :meth:`stream_response`; its errors are that method's.
        """
        async with self.stream_response(
            model=model, input=input, stream_id=stream_id, **params
        ) as stream:
            async for _ in stream:
                pass
        return stream.response

    # ---- the pending queue and the dispatcher -------------------------------------------------

    def _lane(self, key: str | None) -> _Lane:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(key)
        return lane

    def _in_flight(self) -> int:
        return sum(len(connection.running) for connection in self._connections)

    def _submit(self, exchange: _LaneExchange) -> None:
        """Queue a request (the exchange's ``open``); the dispatcher sends it in its turn.

        Raises:
            ClientClosedError: the session is closed.
            ConnectionLostError: the health monitor gave up reconnecting.
            PendingQueueFullError: ``max_pending`` requests wait for the connection already.
            APIConnectionError: no connection, and ``hold_requests=False``.
        """
        if self._closed:
            raise ClientClosedError("the session is closed")
        connection = self._current
        connected = connection is not None and connection.usable
        if not connected:
            monitor = self._monitor
            if monitor is not None and monitor.state is HealthState.LOST:
                raise self._lost_error()
            if not self._config.hold_requests:
                raise APIConnectionError("the session has no connection (hold_requests=False)")
            if self._pending >= self._config.max_pending:
                raise PendingQueueFullError(
                    f"{self._pending} requests already wait for the session's connection "
                    f"(max_pending={self._config.max_pending})",
                    max_pending=self._config.max_pending,
                )
        self._waiting.append(exchange)
        exchange.queued = True
        self._pending += 1
        self._dispatch()

    def _withdraw(self, exchange: _LaneExchange) -> None:
        # Lazily: the dispatcher skips withdrawn exchanges when it walks the queue.
        self._pending -= 1
        if self._waiting and self._waiting[-1] is exchange:
            self._waiting.pop()

    def _dispatch(self) -> None:
        """Send waiting requests, in order, whose lane is idle while a slot is free.

        Synchronous: the frames are queued for the connection's writer in this order, so the
        server sees them in the order the requests entered the pending queue.
        """
        connection = self._current
        if connection is None or not connection.usable or not self._waiting:
            return
        waiting: deque[_LaneExchange] = deque()
        recover = self._recover
        for exchange in self._waiting:
            if exchange.withdrawn:
                continue
            lane = self._lane(exchange.lane_key)
            if (
                lane.running is not None
                or len(connection.running) >= self._max_in_flight
                or not connection.usable
            ):
                waiting.append(exchange)
                continue
            key = exchange.lane_key
            if (
                key is not None
                and key not in connection.named
                and len(connection.named) >= MAX_NAMED_LANES
            ):
                self._pending -= 1
                exchange.refuse(
                    BadRequestError(
                        f"this connection already uses {MAX_NAMED_LANES} stream_id values, "
                        "the most one WebSocket connection may have (a new connection, "
                        "after a rotation or a reconnect, starts again from none)",
                        status=400,
                        code="websocket_stream_limit_reached",
                    )
                )
                continue
            try:
                number = connection.ws.send_text(exchange.frame_text(lane, recover))
            except HolySheepError:
                waiting.append(exchange)
                continue
            if key is not None:
                connection.named.add(key)
            self._pending -= 1
            lane.running = exchange
            connection.running[key] = exchange
            exchange.dispatched(connection, number)
        self._waiting = waiting

    def _lane_done(self, connection: _Connection, key: str | None) -> None:
        exchange = connection.running.pop(key, None)
        lane = self._lanes.get(key)
        if lane is not None and lane.running is exchange:
            lane.running = None
        if connection.retiring and not connection.running:
            connection.ws.close()
        self._dispatch()

    def _fail_waiting(self, error: HolySheepError) -> None:
        waiting, self._waiting = self._waiting, deque()
        for exchange in waiting:
            if not exchange.withdrawn:
                self._pending -= 1
                exchange.refuse(error)

    def _lost_error(self) -> ConnectionLostError:
        monitor = self._monitor
        cause = None if monitor is None else monitor.statistics().last_error
        error = ConnectionLostError(
            "the session's connection is lost; the health monitor probes again every "
            f"{self._config.max_delay:g} s"
        )
        error.__cause__ = cause
        return error

    # ---- frames in ----------------------------------------------------------------------------

    def _route(self, connection: _Connection, text: str) -> None:
        """Give one frame to the response of the lane it names (the reader's hot path)."""
        self._frames_received += 1
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError):
            payload = None
        if not isinstance(payload, dict):
            self._unroutable(
                connection, StreamProtocolError("a WebSocket frame is not a JSON object", data=text)
            )
            return
        kind = payload.get("type")
        if kind is not None and not isinstance(kind, str):
            self._unroutable(
                connection,
                StreamProtocolError("a WebSocket frame's type is not a string", data=text),
            )
            return
        key = payload.get("stream_id")
        if not isinstance(key, str):
            key = None
        if kind == "error" and key is None:
            code = _error_fields(payload.get("error", payload))[2]
            if code in _CONNECTION_CODES or None not in connection.running:
                self._connection_error(connection, code, error_from_frame(payload, text))
                return
        exchange = connection.running.get(key)
        if exchange is None:
            self._frames_dropped += 1  # a stray: no response of that lane runs here
            return
        if exchange.deliver(payload, text, kind):
            self._lane_done(connection, key)

    def _route_safely(self, connection: _Connection, text: str) -> None:
        """:meth:`_route`, where a frame that breaks the code's expectations fails only this
        connection (with a protocol error), never the session and every lane with it: the
        frames are the server's input, so a surprise in them is the server's fault."""
        try:
            self._route(connection, text)
        except Exception as exc:
            logger.exception("session: a WebSocket frame could not be handled")
            self._kill(
                connection,
                StreamProtocolError(
                    f"a WebSocket frame could not be handled ({type(exc).__name__})", data=text
                ),
            )

    def _unroutable(self, connection: _Connection, error: HolySheepError) -> None:
        """A frame that names no lane: its lane's, when only one response runs; else the
        connection's failure."""
        if len(connection.running) == 1:
            exchange = next(iter(connection.running.values()))
            exchange.fail(error)
            exchange.abandoned = True  # its later frames are dropped until the terminal one
            return
        self._kill(connection, error)

    def _connection_error(
        self, connection: _Connection, code: str | None, error: HolySheepError
    ) -> None:
        if code == "websocket_connection_limit_reached":
            # The server closes this connection now: new responses go to a fresh one.
            logger.info("session: the server's connection age limit; opening a new connection")
            connection.retiring = True
            if self._nursery is not None and not self._closed:
                self._nursery.start_soon(self._rotate, connection)
            return
        logger.warning("session: the server failed the connection: %s", error)
        self._kill(connection, error)

    def _kill(self, connection: _Connection, error: HolySheepError) -> None:
        connection.ws.fail(error)
        connection.ws.close()
        connection.scope.cancel()

    # ---- connections --------------------------------------------------------------------------

    def _handshake_headers(self, url: str) -> dict[str, str]:
        """The upgrade's headers to ``url``, authenticated as the client's HTTP requests are.

        Names are merged without case (an ``authorization`` in ``extra_headers`` replaces the
        client's, never joins it). Without an API key, the http_client's own ``auth`` (or the
        base URL's ``user:password@``) signs the upgrade, as httpx2 signs HTTP requests.

        Raises:
            ConfigurationError: the http_client's ``auth`` cannot sign a request by itself (it
                needs the server's answer, e.g. digest auth).
        """
        client = self._client
        http = client._http
        headers = httpx2.Headers(
            {
                name: value
                for name, value in http.headers.items()
                if name.lower() not in _HANDSHAKE_OWN
                and not name.lower().startswith("sec-websocket")
            }
        )
        headers.update(
            {
                name: value
                for name, value in client._request_headers().items()
                if name.lower() == "authorization"
            }
        )
        if "authorization" not in headers:
            _sign_upgrade(headers, http.auth, url)
        headers.update(self._extra_headers)
        return dict(headers.items())

    def _ssl_context(self) -> ssl.SSLContext:
        transport = getattr(self._client._http, "_transport", None)
        get_context = getattr(transport, "_get_ssl_context", None)
        if get_context is not None:
            context: ssl.SSLContext = get_context()
            return context
        return httpx2.create_ssl_context()

    async def _connect(self, url: str) -> _Connection:
        """Open a new connection to the endpoint ``url`` and start serving it (not yet the
        current one).

        Raises:
            HolySheepError: the upgrade was refused (typed as an HTTP error) or failed.
        """
        nursery = self._nursery
        assert nursery is not None
        try:
            ws = await connect(
                websocket_url(url),
                headers=self._handshake_headers(url),
                ssl_context=self._ssl_context,
                max_message_size=self._client._max_event_size,
            )
        except HolySheepError as error:
            scrub_error(error, self._client._secrets() + self._extra_secrets())
            raise
        connection = _Connection(ws, trio.current_time(), url)
        try:
            await nursery.start(self._serve, connection)
        except BaseException:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
                await ws.aclose()
            raise
        self._opened += 1
        return connection

    def _extra_secrets(self) -> tuple[str, ...]:
        from ._lifecycle import header_secrets

        return tuple(header_secrets(self._extra_headers))

    def _install(self, connection: _Connection) -> None:
        """Make ``connection`` the one new responses go to; the previous one retires."""
        old = self._current
        self._current = connection
        if old is not None and old is not connection:
            old.retiring = True
            if not old.running:
                old.ws.close()
        self._dispatch()

    async def _serve(
        self,
        connection: _Connection,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one connection: its writer, its rotation timer and the reader (this task)."""
        self._connections.add(connection)
        ws = connection.ws
        written = trio.Event()

        async def write() -> None:
            try:
                await ws.write_loop()
            finally:
                written.set()

        try:
            with connection.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(write)
                    nursery.start_soon(self._rotate_at_age, connection)
                    task_status.started()
                    try:
                        while True:
                            for text in await ws.receive():
                                self._route_safely(connection, text)
                    except HolySheepError:
                        pass  # ws.error says why
                    # The writer still sends what was queued (the answer to a close frame).
                    with trio.move_on_after(CLOSE_WAIT):
                        await written.wait()
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
                await ws.aclose()
            self._ended(connection)

    def _ended(self, connection: _Connection) -> None:
        """A connection is gone: its responses fail, its lanes are free, the monitor hears."""
        self._connections.discard(connection)
        connection.done.set()
        error = connection.ws.error or APIConnectionError("the WebSocket connection closed")
        running = list(connection.running.items())
        connection.running.clear()
        for key, exchange in running:
            exchange.fail(error)
            lane = self._lanes.get(key)
            if lane is not None and lane.running is exchange:
                lane.running = None
        if self._current is connection:
            self._current = None
            if not self._closed and self._monitor is not None:
                logger.info("session: the connection ended: %s", error)
                # Whatever ended it, the heartbeat should look now (a protocol error too).
                report = error
                if not isinstance(error, APIConnectionError):
                    report = APIConnectionError(f"the WebSocket connection failed: {error}")
                self._monitor.report_failure(report)
        if not self._closed:
            self._dispatch()

    async def _rotate_at_age(self, connection: _Connection) -> None:
        if math.isinf(self._max_age):
            return
        await trio.sleep_until(connection.opened_at + self._max_age)
        await self._rotate(connection)

    async def _rotate(self, old: _Connection) -> None:
        """Open a fresh connection for new responses; ``old`` finishes its own, then closes."""
        if self._current is not old or self._closed:
            return
        try:
            with trio.fail_after(self._config.timeout):
                connection = await self._connect(old.url)
        except (HolySheepError, trio.TooSlowError) as exc:
            logger.info("session: opening a fresh connection failed: %s", exc)
            if self._current is old and not old.usable:
                # The old one is closing (the server's age limit): reconnect as after a drop.
                self._current = None
                if self._monitor is not None:
                    self._monitor.report_failure(
                        APIConnectionError(f"rotating the WebSocket connection failed: {exc}")
                    )
            return
        if self._current is old or self._current is None:
            self._install(connection)
        else:  # pragma: no cover - another path installed a connection meanwhile
            self._kill(connection, APIConnectionError("a newer connection took over"))

    async def _probe(self, url: str) -> None:
        """The health monitor's probe of the endpoint ``url``: a ping of the connection to it
        while healthy, else a connection attempt to it (the monitor probes the endpoints in
        order, fails over to the first that answers and back to the primary)."""
        # The monitor's first probe may run before open_health_monitor has handed it over.
        monitor = self._monitor
        state = HealthState.CONNECTING if monitor is None else monitor.state
        connection = self._current
        if connection is not None and connection.usable and connection.url == url:
            if state is not HealthState.HEALTHY:
                if connection is not self._confirmed:
                    # A connection attempt finds a fresh one up (opened on entry or by a
                    # rotation since the last probe).
                    self._confirmed = connection
                    return
                # The monitor is reconnecting with a connection it knew healthy: a forced
                # reconnect (``session.health.reconnect()``) asks for a new one.
                self._install(await self._connect(url))
                self._confirmed = self._current
                return
            try:
                await connection.ws.ping()
            except trio.Cancelled:
                if not self._closed and connection.ws.error is None:
                    # The monitor's timeout: no pong in time. The connection is dead to us.
                    timeout = self._config.timeout
                    self._kill(
                        connection,
                        APITimeoutError(
                            f"the WebSocket heartbeat got no pong within {timeout:g} s",
                            deadline="heartbeat",
                            seconds=timeout,
                        ),
                    )
                raise
            self._confirmed = connection
            return
        if state is HealthState.HEALTHY and (monitor is None or url == monitor.active_url):
            # A heartbeat of a connection that dropped: the monitor starts its reconnect cycle.
            raise APIConnectionError("the WebSocket connection dropped")
        if (
            state is HealthState.CONNECTING
            and connection is not None
            and connection.usable
            and connection is not self._confirmed
        ):
            # The session opened on a fallback endpoint: those before it failed just now, on
            # entry. The monitor's first round moves on to the one that answered.
            raise APIConnectionError(
                "the session's first connection went to a later endpoint; this one failed"
            )
        # A reconnect round's attempt, or the primary probed while a backup serves (on success
        # new responses go to the primary; the backup's connection finishes its own, then
        # closes).
        self._install(await self._connect(url))
        self._confirmed = self._current

    async def _watch_health(self) -> None:
        """Fail the queue when the connection is lost; dispatch when it is back."""
        monitor = self._monitor
        assert monitor is not None
        async with monitor.subscribe() as events:
            async for _ in events:
                if monitor.state is HealthState.LOST:
                    self._fail_waiting(self._lost_error())
                else:
                    self._dispatch()

    # ---- closing ------------------------------------------------------------------------------

    def _close_now(self) -> None:
        """Stop: waiting requests and open streams fail with ClientClosedError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._fail_waiting(ClientClosedError("the session was closed"))
        for stream in list(self._streams):
            stream._request.cancel_by_client()
        for connection in list(self._connections):
            connection.ws.close()
        if self._monitor is not None:
            self._monitor._close()

    def _close_by_client(self) -> None:
        """``Client.aclose()`` while the session's block runs: stop everything now."""
        self._close_now()
        if self._nursery is not None:
            self._nursery.start_soon(self._end_connections)

    async def _end_connections(self) -> None:
        with trio.move_on_after(CLOSE_WAIT, shield=True):
            for connection in list(self._connections):
                await connection.done.wait()
        for connection in list(self._connections):
            connection.scope.cancel()

    async def _aclose(self) -> None:
        self._close_now()
        # A polite close: the server answers our close frames (bounded).
        await self._end_connections()


class _SessionStream(ResponseStream):
    """A :class:`~holysheep_trio.ResponseStream` the session knows of while it is open (so
    that closing the session closes it)."""

    def __init__(self, session: Session, client: Client, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self._session = session

    async def __aenter__(self) -> ResponseStream:
        self._session._streams.add(self)
        try:
            return await super().__aenter__()
        except BaseException:
            self._session._streams.discard(self)
            raise

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            return await super().__aexit__(exc_type, exc, tb)
        finally:
            self._session._streams.discard(self)


def _check_options(health: object, max_age: object, max_in_flight: object, recover: object) -> None:
    if not isinstance(health, HealthConfig):
        raise TypeError(
            f"health must be a holysheep_trio.HealthConfig, got {type(health).__name__}"
        )
    if isinstance(max_age, bool) or not isinstance(max_age, int | float) or not max_age > 0:
        raise ValueError(f"max_age must be a number of seconds > 0, got {max_age!r}")
    if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
        raise ValueError(f"max_in_flight must be an int >= 1, got {max_in_flight!r}")
    if not isinstance(recover, bool):
        raise TypeError(f"recover must be a bool, got {type(recover).__name__}")


async def _first_connection(session: Session, config: HealthConfig) -> _Connection:
    """The session's first connection: to the primary endpoint, else to the fallback URLs in
    order, on the errors that make an HTTP request fall over (the client's retry policy's
    ``should_fall_over``: connection failures, timeouts, 5xx); any other refusal (a wrong key)
    raises at once. Each attempt has ``config.timeout``.

    Raises:
        HolySheepError: the last endpoint's error, or the first that does not fall over.
    """
    client = session._client
    urls = session._urls
    for index, url in enumerate(urls):
        try:
            with trio.move_on_after(config.timeout) as scope:
                connection = await session._connect(url)
            if scope.cancelled_caught:
                raise APITimeoutError(
                    f"the WebSocket connection did not open within {config.timeout:g} s",
                    deadline="connect",
                    seconds=config.timeout,
                )
        except HolySheepError as error:
            if index + 1 == len(urls) or not client._retry.should_fall_over(error):
                raise
            logger.info("session: falling over to the next endpoint after %s", type(error).__name__)
            continue
        return connection
    raise AssertionError("unreachable: a client has at least one endpoint")  # pragma: no cover


@contextlib.asynccontextmanager
async def open_session(
    client: Client,
    *,
    health: HealthConfig | None = None,
    max_age: float = DEFAULT_MAX_AGE,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    recover: bool = False,
    extra_headers: Mapping[str, str] | None = None,
) -> AsyncIterator[Session]:
    """Open a WebSocket session; see :meth:`Client.open_session
    <holysheep_trio.Client.open_session>`."""
    config = DEFAULT_HEALTH if health is None else health
    _check_options(config, max_age, max_in_flight, recover)
    if client._closed:
        raise ClientClosedError("the client is closed")
    session = Session(
        client,
        health=config,
        max_age=float(max_age),
        max_in_flight=max_in_flight,
        recover=recover,
        extra_headers=extra_headers or {},
    )
    guard = BlockGuard()
    async with guard.outer(), trio.open_nursery() as nursery:
        session._nursery = nursery
        client._sessions.add(session)
        try:
            # The first connection is made here, so that a refused upgrade (a wrong key, a
            # 503) raises its typed error from the `async with` line.
            session._install(await _first_connection(session, config))
            async with open_health_monitor(
                config, probe=session._probe, urls=session._urls
            ) as monitor:
                session._monitor = monitor
                nursery.start_soon(session._watch_health)
                # Its first probe finds the connection up: `Connected`, then `healthy`.
                await monitor.wait_healthy()
                async with guard.inner():
                    yield session
        finally:
            client._sessions.discard(session)
            await session._aclose()
            nursery.cancel_scope.cancel()
