# The request lifecycle every stream type shares: admit, attempt(s), first output, end, release.
"""One request, whatever its wire format: admission → attempt(s) → first output → end → release.

A :class:`Request` owns what outlives one try: the total deadline, the pending queue of a health
monitor, the budget reservation, the attempt loop (retry policy, fallback endpoints, back-off),
the time to first output, the items ready for the caller and the clean-up that runs however the
request ends (settlement, telemetry). Each try is an :class:`_Attempt`, which owns its admission
(a global slot and a slot of the model, given back by :meth:`_Attempt.release`), its
:class:`Exchange` with the server, its decoder and its own deadlines. An attempt is admitted
before it sends and released before the next one starts, so a retry or a fallback is admitted,
rate-limited and counted on its own.

How an attempt talks to the server is its :class:`Exchange`: ``_http.HttpExchange`` sends a
``POST`` and parses the body's server-sent events; a WebSocket lane is another exchange. The
lifecycle knows neither HTTP nor sockets.

What differs between wire formats is the per-attempt :class:`Decoder`: it turns one server-sent
event into an item for the caller and says what the item means (:data:`OUTPUT`,
:data:`PROGRESS`, :data:`END`, :data:`FINISH`, :data:`DROPPABLE`). Stream types
(:class:`~holysheep_trio.ChatStream`, the Responses stream) are thin shells over a Request: they
enter it, pop its ready items, fold them into their accumulator and exit it.

Deadlines (see ``docs/deadlines.md``): ``total`` covers the whole request; ``first_token`` runs
from the start of each attempt to its first output; ``idle`` is the server's silence, counted
only while we wait for bytes (never the caller's own time between two reads), and reset only by
events that are progress. Before a ``first_token`` or ``idle`` deadline is declared passed, the
exchange is asked once for events that are already there.

Cancellation: the reads are cancel-safe with :class:`~holysheep_trio.TrioTransport` (a caller's
cancel scope around one ``__anext__`` leaves the stream usable). Bodies of other transports
cannot be resumed after a cancelled read; the next read then says so (``_http._IteratorBody``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar

import attrs
import trio

from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ClientClosedError,
    DeadlineName,
    HolySheepError,
    StreamInterruptedError,
    StreamProtocolError,
    _scrub,
)
from .models import Usage
from .sse import ServerSentEvent

if TYPE_CHECKING:
    from .budget import AttemptBill, Reservation
    from .client import Client
    from .pool import Admission
    from .retry import RetryPolicy

__all__ = [
    "DROPPABLE",
    "END",
    "FINISH",
    "OUTPUT",
    "PROGRESS",
    "SECRET_HEADERS",
    "AttemptOutcome",
    "Decoder",
    "Request",
]

ItemT = TypeVar("ItemT")
T = TypeVar("T")
ItemT_co = TypeVar("ItemT_co", covariant=True)

#: Decoder flags: what a decoded event means to the lifecycle.
#: Model output (text, refusal, tool-call arguments, reasoning): the first one is the first
#: token; retries stop there.
OUTPUT: Final = 1
#: The server is making progress: pushes the idle deadline back. Keep-alives are not progress.
PROGRESS: Final = 2
#: The stream is complete (``[DONE]``, a terminal event): the body should end now.
END: Final = 4
#: The server announced a natural end (a ``finish_reason``): the body may end without END.
FINISH: Final = 8
#: Carries nothing the caller could miss (an empty delta): may be dropped before the first
#: output when the held buffer is full.
DROPPABLE: Final = 16

#: Bound on every await during clean-up (STYLE rule 6).
CLOSE_TIMEOUT: Final = 5.0
#: After the end of a stream (``[DONE]``) the body should end at once; wait this long for its
#: end (so the connection can be reused) before simply closing it. Not an error either way.
DRAIN_AFTER_END: Final = 0.25
#: Droppable items (empty deltas) held back before the first output, at most; later ones are
#: dropped: a server that streams nothing but empty chunks must not fill our memory.
MAX_HELD_ITEMS: Final = 64
#: Events that carry something (a role, a finish reason, a Responses API item, e.g. a built-in
#: tool call before any text) held before the first output, at most; beyond it (or beyond
#: ``max_event_size`` bytes in all) the stream is a protocol error, not a memory leak.
MAX_HELD_EVENTS: Final = 4096
#: Seconds added to a request's total deadline for its budget reservation's expiry: the
#: reservation of a process that died (``kill -9``) counts as spent after that long.
RESERVATION_MARGIN: Final = 60.0
#: Items decoded ahead of the caller, at most, once output began. One read may bring hundreds
#: of events (a burst, or a client that fell behind); they wait as parsed events and are
#: decoded in batches of this many as the caller reads, so a stream never holds a read's worth
#: of typed chunks (ten times the bytes they came in). It also keeps the garbage collector
#: quiet: hundreds of young chunks alive at once trigger a collection per read
#: (benchmarks/bench_client.py).
MAX_DECODE_AHEAD: Final = 16
_INF: Final = math.inf
_NO_EVENTS: Final[list[ServerSentEvent]] = []

logger = logging.getLogger("holysheep_trio")


class Decoder(Protocol[ItemT_co]):
    """Turns the events of one attempt into items; one per attempt, sans-I/O.

    Attributes:
        usage: The billed tokens, once the server sent them (in chat-completions terms).
    """

    usage: Usage | None

    def decode(self, event: ServerSentEvent) -> tuple[ItemT_co | None, int]:
        """Decode one event: the item for the caller (or None) and its flags.

        Raises:
            HolySheepError: an in-band error or a malformed event.
        """
        ...


class Exchange(Protocol):
    """How one attempt talks to the server: an HTTP response (``_http.HttpExchange``) or a
    WebSocket lane.

    The lifecycle calls :meth:`open` under the attempt's deadlines, then :meth:`receive` until
    it reports the end, and always :meth:`aclose` (shielded and bounded by the lifecycle).

    Attributes:
        sent: Whether the server may have seen the request (for the budget's settlement).
        status: The HTTP status of the answer (None before it, or when there is none).
        request_id: The server's request id, once known.
        endpoint: The endpoint the request went to when the exchange chose it (a session's
            lane: its connection's, which may have failed over while the request waited);
            None: the attempt's own.
    """

    @property
    def sent(self) -> bool: ...

    @property
    def endpoint(self) -> str | None: ...

    @property
    def status(self) -> int | None: ...

    @property
    def request_id(self) -> str | None: ...

    async def open(self, deadline: float) -> bool:
        """Send the request; False if ``deadline`` passed before the server accepted it.

        Raises:
            HolySheepError: the server refused the request, or the connection failed.
        """
        ...

    async def receive(self) -> tuple[list[ServerSentEvent], bool]:
        """The events that arrive next (waiting for them), and whether the stream ended.

        Raises:
            HolySheepError: the connection failed or the stream broke its format.
        """
        ...

    async def receive_nowait(self) -> tuple[list[ServerSentEvent], bool] | None:
        """What :meth:`receive` would return at once, or None when nothing is here."""
        ...

    def readable_fd(self) -> int:
        """A file descriptor to wait on before :meth:`receive_ready`, or -1 (use
        :meth:`receive`). The fast path of a paced read: no coroutines of the exchange's own
        while it waits (each costs time and, with thousands of streams waiting, the garbage
        collector's time too)."""
        ...

    def receive_ready(self) -> tuple[list[ServerSentEvent], bool] | None:
        """After :meth:`readable_fd`'s descriptor was readable: what :meth:`receive` would
        return now, or None when nothing complete is here yet (wait again). Never waits.

        Raises:
            HolySheepError: as :meth:`receive`.
        """
        ...

    async def aclose(self) -> None:
        """Stop reading and release the response or lane."""
        ...


class RequestObserver(Protocol):
    """Sees one request's lifecycle as it happens: the seam for telemetry.

    Every call gets ``now``, the trio clock, so durations agree with the stream's own
    (``Completion.ttft``, ``duration``). Calls must be cheap and must not raise.
    """

    def admitted(self, now: float) -> None:
        """The first attempt was admitted: the request's own clock starts (``start``)."""

    def attempt_failed(
        self, *, attempt: int, error: HolySheepError, delay: float | None, now: float
    ) -> None:
        """An attempt failed before output; ``delay`` is the back-off before the next one
        (None: no retry on this endpoint)."""

    def output(self, now: float) -> None:
        """An output piece arrived (the first one is the first token)."""

    def finished(
        self,
        *,
        error: BaseException | None,
        result: object,
        usage: Usage | None,
        base_url: str | None,
        now: float,
    ) -> None:
        """The request ended (``error`` None: normally, whether read to its end or not)."""


class Telemetry(Protocol):
    """Starts an observer per request (``open_client(telemetry=...)``).

    It may also have ``bind(client) -> Callable[[], None]``: ``open_client`` then calls it
    once the client is made and the function it returns when the client closes (how
    ``holysheep_trio.otel`` observes the client's pool and budget).
    """

    def start_request(
        self, *, operation: str, model: str, request: Mapping[str, Any], now: float
    ) -> RequestObserver | None:
        """A request is entered; return its observer (or None to ignore it)."""


#: Request headers whose values are secrets: scrubbed from every error text.
SECRET_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie"}
)


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """The values of secret headers (``Authorization``, API-key headers, cookies) to scrub.

    Both the whole value and its credentials without the scheme (``Bearer``, ``Basic``), so that
    either form is caught in a message.
    """
    found: list[str] = []
    for name, value in headers.items():
        if name.lower() in SECRET_HEADERS and value:
            found.append(value)
            _, _, credentials = value.partition(" ")
            if credentials.strip():
                found.append(credentials.strip())
    return found


@attrs.frozen(kw_only=True)
class AttemptOutcome:
    """What one finished attempt reports to the client (the seam for pools and metrics).

    Attributes:
        model: The requested model.
        base_url: The endpoint the attempt went to.
        attempt: The 1-based attempt number within the request.
        error: The failure, or None for a success or an abandoned stream.
        completed: Whether the stream was read to its end.
        usage: Billed tokens, when known.
        ttft: Seconds from the start of this attempt to its first output, if any.
        duration: Seconds from the start of this attempt to its end.
    """

    model: str
    base_url: str
    attempt: int
    error: HolySheepError | None = None
    completed: bool = False
    usage: Usage | None = None
    ttft: float | None = None
    duration: float = 0.0


class _ClosedByClient(Exception):
    """Raised by ``Request._pump`` when :meth:`Request.cancel_by_client` cancelled a read."""


class _Attempt(Generic[ItemT]):
    """One try of a request: its admission, its exchange with the server and its deadlines."""

    __slots__ = (
        "admission",
        "base_url",
        "body_ended",
        "closed",
        "completed",
        "decoder",
        "end_at",
        "eof",
        "event_index",
        "events",
        "events_at",
        "exchange",
        "failure",
        "first_output_at",
        "first_token_deadline",
        "held",
        "held_bytes",
        "idle_left",
        "number",
        "output_began",
        "output_pieces",
        "released",
        "reported",
        "saw_end",
        "saw_finish",
        "started_at",
        "ticket",
        "wait_deadline",
        "wait_fd",
        "woken_by_deadline",
    )

    def __init__(self, *, number: int, base_url: str, decoder: Decoder[ItemT]) -> None:
        self.number = number
        self.base_url = base_url
        self.decoder = decoder
        self.admission: contextlib.AbstractAsyncContextManager[Admission | None] | None = None
        self.ticket: Admission | None = None
        self.released = False
        self.exchange: Exchange | None = None
        self.closed = False  # the exchange was closed (its response, its lane)
        self.started_at = 0.0
        self.first_token_deadline = _INF
        # Seconds of server silence still allowed; counted down only while we wait for bytes.
        self.idle_left = _INF
        self.completed = False  # read to its natural end
        self.held: list[ItemT] = []
        self.held_bytes = 0
        self.output_pieces = 0
        self.output_began = False
        self.first_output_at: float | None = None
        self.saw_end = False
        self.end_at: float | None = None
        self.saw_finish = False
        # Events received but not decoded yet (events[event_index:]), from the read at
        # events_at; body_ended: that read was the last, so once they are decoded, eof.
        self.events = _NO_EVENTS
        self.event_index = 0
        self.events_at = 0.0
        self.body_ended = False
        self.eof = False
        self.failure: HolySheepError | None = None
        self.reported = False
        # While a read waits on the socket itself (Request._receive_watched): its descriptor,
        # its deadline, and whether the deadline watcher woke it.
        self.wait_fd = -1
        self.wait_deadline = _INF
        self.woken_by_deadline = False

    @property
    def accepted(self) -> bool:
        """Whether the server answered with a success status (it took the prompt)."""
        status = None if self.exchange is None else self.exchange.status
        return status is not None and 200 <= status < 300

    def bill(self) -> AttemptBill:
        """What this attempt may have cost, for the budget's settlement."""
        from .budget import AttemptBill

        exchange = self.exchange
        sent = exchange is not None and exchange.sent
        status = None if exchange is None else exchange.status
        return AttemptBill(
            # Sent and not refused with an error status: the server may have billed it.
            billable=sent and (status is None or self.accepted),
            completed=self.completed,
            usage=self.decoder.usage,
            completion_tokens=self.output_pieces,
        )

    async def release(self, exc: BaseException | None) -> None:
        """Give the admission back (shielded: it never waits, and it must not be skipped)."""
        admission = self.admission
        if admission is None or self.released:
            return
        self.released = True
        with trio.CancelScope(shield=True):
            await admission.__aexit__(
                None if exc is None else type(exc),
                exc,
                None if exc is None else exc.__traceback__,
            )


class _DeadlineWatcher:
    """Wakes the reads whose deadline passed: one per trio run, a system task.

    A read that waits on its socket registers its attempt (its descriptor and deadline); the
    watcher sleeps until the earliest deadline registered, then wakes each read whose deadline
    passed with ``trio.lowlevel.notify_closing`` on its descriptor (the socket stays open: the
    read takes any bytes already there, then reports the deadline). Registering costs a set
    insertion, and moving the watcher's wake-up only when the new deadline is the earliest.
    """

    __slots__ = ("_planned", "_scope", "_waiting")

    def __init__(self) -> None:
        self._waiting: set[_Attempt[Any]] = set()
        self._planned = _INF
        self._scope: trio.CancelScope | None = None

    def add(self, attempt: _Attempt[Any]) -> None:
        self._waiting.add(attempt)
        deadline = attempt.wait_deadline
        if deadline < self._planned:
            self._planned = deadline
            if self._scope is not None:
                self._scope.deadline = deadline

    def discard(self, attempt: _Attempt[Any]) -> None:
        self._waiting.discard(attempt)

    async def run(self) -> None:
        while True:
            with trio.CancelScope(deadline=self._planned) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            now = trio.current_time()
            planned = _INF
            for attempt in list(self._waiting):
                deadline = attempt.wait_deadline
                if deadline <= now:
                    self._waiting.discard(attempt)
                    self._wake(attempt)
                elif deadline < planned:
                    planned = deadline
            self._planned = planned

    @staticmethod
    def _wake(attempt: _Attempt[Any]) -> None:
        try:
            fd = attempt.wait_fd
            exchange = attempt.exchange
            # Only while the descriptor is still the read's: a socket someone closed meanwhile
            # (its read is woken by that close) may have had its number reused by another.
            if exchange is None or exchange.readable_fd() != fd:
                return
            attempt.woken_by_deadline = True
            trio.lowlevel.notify_closing(fd)
        except Exception:  # pragma: no cover - a system task must never raise
            logger.exception("waking a read at its deadline failed")


_WATCHER: Final[trio.lowlevel.RunVar[_DeadlineWatcher]] = trio.lowlevel.RunVar(
    "holysheep_trio deadline watcher"
)


def _deadline_watcher() -> _DeadlineWatcher:
    """This trio run's deadline watcher, started on first use."""
    try:
        return _WATCHER.get()
    except LookupError:
        watcher = _DeadlineWatcher()
        _WATCHER.set(watcher)
        trio.lowlevel.spawn_system_task(watcher.run, name="holysheep_trio deadline watcher")
        return watcher


def _no_more_attempts(base_url: str) -> Exchange:
    """What makes exchanges once the first output came: nothing (see :meth:`Request.enter`)."""
    raise RuntimeError("no attempt follows a stream's first output")


class Request(Generic[ItemT]):
    """The lifecycle of one streamed request (see the module docs).

    Args:
        client: The client whose HTTP client, pool, policy and secrets are used.
        model: The requested model.
        new_exchange: Makes the exchange of one attempt for a base URL (e.g.
            ``_http.http_exchange(...)``: a ``POST`` of the request body).
        max_tokens: The output bound, for the automatic total deadline.
        timeouts: The request's deadlines.
        extra_headers: Headers added to the request (their secrets are scrubbed from errors).
        estimated_tokens: The pool's TPM reservation (prompt estimate plus output bound).
        estimated_prompt_tokens: The prompt estimate, counted when a stream is cut short.
        new_decoder: Makes the decoder of one attempt.
        partial: The result accumulated so far, for :class:`StreamInterruptedError`.
        prompt_bound: An upper bound on the prompt tokens, for a budget reservation (asked
            only when the client has a budget).
        choices: How many choices the request asks for (``n``); ``max_tokens`` already counts
            them, and without it the budget reserves the model's maximum output per choice.
        operation: ``"chat"`` or ``"responses"``, for telemetry.
        request: The request's fields (messages or input, parameters), for telemetry (asked
            only when the client has telemetry).
        retry: The retry policy instead of the client's (a WebSocket session never re-sends a
            request the server may be running: ``RetryPolicy(max_retries=0)``).
        base_urls: The endpoints instead of the client's base URL and fallback URLs.
        client_health: Whether the client's health monitor holds the request in its pending
            queue and hears of its connection failures (False for a WebSocket session, whose
            lane exchange queues the request itself and whose own monitor watches its socket).
    """

    # One per open stream: slots keep thousands of them small (docs/benchmarks.md, "Scale").
    __slots__ = (
        "_attempt",
        "_base_urls",
        "_billed",
        "_choices",
        "_client",
        "_client_health",
        "_estimated_prompt_tokens",
        "_estimated_tokens",
        "_extra_secrets",
        "_idle",
        "_max_tokens",
        "_new_decoder",
        "_new_exchange",
        "_observer",
        "_operation",
        "_partial",
        "_prompt_bound",
        "_request_fields",
        "_reservation",
        "_retry",
        "_scope",
        "_timeouts",
        "_total_deadline",
        "_waiting",
        "attempts",
        "closed_by_client",
        "end",
        "failure",
        "model",
        "ready",
        "request_id",
        "start",
        "state",
        "ttft",
    )

    def __init__(
        self,
        client: Client,
        *,
        model: str,
        new_exchange: Callable[[str], Exchange],
        max_tokens: int | None,
        timeouts: Any,
        extra_headers: Mapping[str, str] | None,
        estimated_tokens: int,
        estimated_prompt_tokens: int,
        new_decoder: Callable[[], Decoder[ItemT]],
        partial: Callable[[], Any],
        prompt_bound: Callable[[], int] | None = None,
        choices: int = 1,
        operation: str = "chat",
        request: Callable[[], Mapping[str, Any]] | None = None,
        retry: RetryPolicy | None = None,
        base_urls: tuple[str, ...] | None = None,
        client_health: bool = True,
    ) -> None:
        self._client = client
        self.model = model
        self._new_exchange = new_exchange
        self._max_tokens = max_tokens
        self._timeouts = timeouts
        idle = timeouts.idle
        self._idle: float = _INF if idle is None else idle
        self._extra_secrets = tuple(header_secrets(extra_headers or {}))
        self._estimated_tokens = estimated_tokens
        self._estimated_prompt_tokens = estimated_prompt_tokens
        self._new_decoder = new_decoder
        self._partial = partial
        self._prompt_bound = prompt_bound
        self._choices = choices
        self._operation = operation
        self._request_fields = request
        self._retry = retry
        self._base_urls = base_urls
        self._client_health = client_health
        self._reservation: Reservation | None = None
        self._observer: RequestObserver | None = None
        #: Items decoded and ready for the caller, in *reverse* order: the next one is
        #: ``ready.pop()``. (A list: a deque costs 600 bytes more per stream, empty.)
        self.ready: list[ItemT] = []
        self.state = "new"  # new -> open -> done
        self.closed_by_client = False
        self.attempts = 0
        self.request_id: str | None = None
        self.ttft: float | None = None
        self.start = 0.0
        self.end: float | None = None
        self._total_deadline = _INF
        self._attempt: _Attempt[ItemT] | None = None
        # The attempt whose cost a retry already committed to the budget: never settled again.
        self._billed: _Attempt[ItemT] | None = None
        #: The failure that ended the stream after its output began (raised wrapped in a
        #: StreamInterruptedError, which the caller may have caught inside the block).
        self.failure: HolySheepError | None = None
        # The cancel scope of the library await in progress (entering, or reading the next
        # item), so that Client.aclose() can cancel it. Never held across the caller's own
        # code: a caller's cancel scope may open and close around any of our calls.
        self._scope: trio.CancelScope | None = None
        # The attempt whose read waits on its socket with no cancel scope of ours (see
        # _receive_watched), so that Client.aclose() can wake it.
        self._waiting: _Attempt[ItemT] | None = None

    @property
    def duration(self) -> float:
        """Seconds from the start (admission) to the end, or to now while open."""
        end = self.end if self.end is not None else trio.current_time()
        return max(0.0, end - self.start)

    # ---- entering and leaving ---------------------------------------------------------------

    async def enter(self) -> None:
        """Admit the request and run attempts up to the first output (``__aenter__``)."""
        if self.state != "new":
            raise RuntimeError("a stream can be entered only once")
        self.state = "open"
        client = self._client
        if client._closed:
            self.state = "done"
            raise ClientClosedError("the client is closed", model=self.model)
        client._streams.add(self)
        # Until the first admission, the request's clock runs from here (a request refused
        # before it, by a budget or a health check, reports the time it took to be refused).
        self.start = trio.current_time()
        telemetry = client._telemetry
        if telemetry is not None:
            fields = self._request_fields() if self._request_fields is not None else {}
            self._observer = telemetry.start_request(
                operation=self._operation,
                model=self.model,
                request=fields,
                now=trio.current_time(),
            )
        try:
            scope = self._guard()
            try:
                with scope:
                    await self._run()
            finally:
                self._scope = None
            if scope.cancelled_caught:
                raise self.closed_error()
            # No attempt follows the first output: what only attempts need (the request's
            # body, its fields, the prompt's bound) goes now, not when the stream ends. A prompt
            # is often tens of kilobytes; thousands of streams would hold one each.
            self._new_exchange = _no_more_attempts
            self._prompt_bound = None
            self._request_fields = None
        except BaseException as exc:
            if isinstance(exc, HolySheepError):
                self._tag(exc)  # e.g. a budget or health refusal, before any attempt
            outcome = await self.finish(exc)
            if outcome is exc:
                raise
            if outcome is None:  # pragma: no cover - finish swallows nothing on entry
                raise RuntimeError("stream entry was cancelled") from None
            raise outcome from None

    async def exit(self, exc: BaseException | None) -> bool:
        """Leave the block (``__aexit__``): release everything; whether to swallow ``exc``."""
        outcome = await self.finish(exc)
        if outcome is None:
            return exc is not None
        if outcome is exc:
            return False
        raise outcome from None

    async def finish(self, exc: BaseException | None) -> BaseException | None:
        """Release everything; return the exception to propagate (None: nothing to raise)."""
        self.state = "done"
        attempt = self._attempt
        try:
            if attempt is not None:
                if not attempt.reported:
                    self._account_unread(attempt)
                await self._close_response(attempt)
                if not attempt.reported:
                    self._report(attempt, error=None, completed=False)
                await attempt.release(exc)
            exc = await self._settle(attempt, exc)
        finally:
            self._client._streams.discard(self)
            if self.end is None:
                self.end = trio.current_time()
            observer = self._observer
            if observer is not None:
                self._observer = None
                observer.finished(
                    # A stream that failed after its output began ended in error, even when the
                    # caller caught the StreamInterruptedError inside the block.
                    error=exc if exc is not None else self.failure,
                    result=self._partial(),
                    usage=None if attempt is None else attempt.decoder.usage,
                    base_url=None if attempt is None else attempt.base_url,
                    now=self.end,
                )
        # A stream the client closed reports that, whether our own cancellation or a transport
        # error from the closed connection reached it first.
        if (
            self.closed_by_client
            and isinstance(exc, HolySheepError)
            and not isinstance(exc, ClientClosedError)
        ):
            return self.closed_error()
        return exc

    async def _settle(
        self, attempt: _Attempt[ItemT] | None, exc: BaseException | None
    ) -> BaseException | None:
        """Settle the budget reservation (once, however the request ended)."""
        reservation = self._reservation
        if reservation is None:
            return exc
        self._reservation = None
        try:
            # Shielded and bounded inside: committed before the stream's exit returns.
            bill = None if attempt is None or attempt is self._billed else attempt.bill()
            await reservation.settle(bill)
        except HolySheepError as error:  # the ledger failed: the caller must know
            self._tag(error)
            if exc is None:
                return error
            logger.warning("settling the budget failed after %s: %s", type(exc).__name__, error)
        return exc

    def _guard(self) -> trio.CancelScope:
        """A cancel scope for one library await, cancelled at once if the client is closed."""
        scope = trio.CancelScope()
        if self.closed_by_client:
            scope.cancel()
        self._scope = scope
        return scope

    def cancel_by_client(self) -> None:
        """``Client.aclose()``: cancel the await in progress; later calls raise."""
        self.closed_by_client = True
        if self._scope is not None:
            self._scope.cancel()
        waiting = self._waiting
        if waiting is not None:
            # Out of the watcher first: a deadline passing now must not also wake it (the
            # close wins), nor later touch a descriptor that the close is about to free.
            _deadline_watcher().discard(waiting)
            trio.lowlevel.notify_closing(waiting.wait_fd)  # wakes the read: see _receive_watched

    def closed_error(self) -> ClientClosedError:
        return ClientClosedError(
            "the client was closed while this stream was open",
            model=self.model,
            request_id=self.request_id,
            attempt=self.attempts or None,
        )

    # ---- the attempt loop -------------------------------------------------------------------

    async def _run(self) -> None:
        # An explicit total deadline covers the whole call, waiting for admission included;
        # the automatic one estimates the stream's own duration, so it starts on admission
        # (a request queued behind the caller's own limits must not time out for that).
        explicit = self._timeouts.total
        if explicit is not None and explicit != "auto":
            self._total_deadline = trio.current_time() + explicit
        client = self._client
        health = client._health if self._client_health else None
        budget = client._budget
        urls = client._base_urls if self._base_urls is None else self._base_urls
        policy = client._retry if self._retry is None else self._retry
        if budget is not None:
            await self._reserve(budget)
        url_index = 0
        endpoint_attempt = 0
        fell_over = False
        while True:
            if health is not None:
                # The pending queue: while the connection heals, requests wait here in order,
                # before admission, so that a held request holds no slot. Then they go to the
                # endpoint the monitor found healthy (a failover may have happened meanwhile),
                # unless this request already fell over past it by itself.
                await self._within_total(health.wait_ready, "waiting for the connection")
                active = health.active_url
                if not fell_over and active in urls and urls.index(active) != url_index:
                    url_index = urls.index(active)
                    endpoint_attempt = 0
            attempt = await self._admit(urls[url_index])
            endpoint_attempt += 1
            try:
                await self._try(attempt)
            except HolySheepError as error:
                self._tag(error)
                await self._close_response(attempt)
                self._report(attempt, error=error, completed=False)
                # Every attempt is admitted on its own: a back-off, a fallback or a retry
                # holds no slot of this one (and after a 429 the pool's pause applies to it).
                await attempt.release(None)
                if health is not None:
                    health.report_failure(error)
                time_left = self._total_deadline - trio.current_time()
                delay = policy.next_delay(
                    endpoint_attempt, error, time_left=None if time_left == _INF else time_left
                )
                fall_over = (
                    delay is None and url_index + 1 < len(urls) and policy.should_fall_over(error)
                )
                observer = self._observer
                if observer is not None:
                    observer.attempt_failed(
                        attempt=attempt.number,
                        error=error,
                        delay=0.0 if fall_over else delay,
                        now=trio.current_time(),
                    )
                if delay is None and not fall_over:
                    raise
                if fall_over:
                    url_index += 1
                    endpoint_attempt = 0
                    fell_over = True
                    logger.info(
                        "%s: falling over to the next endpoint after %s",
                        self.model,
                        type(error).__name__,
                    )
                else:
                    logger.info(
                        "%s: attempt %d failed with %s; retrying in %.3f s",
                        self.model,
                        self.attempts,
                        type(error).__name__,
                        delay,
                    )
                    await trio.sleep(delay or 0.0)
                reservation = self._reservation
                if reservation is not None:
                    # The failed attempt's cost becomes spend; room for another worst case is
                    # reserved again (one reservation per request, held across attempts).
                    await self._within_total(
                        functools.partial(reservation.retry, attempt.bill()),
                        "waiting for budget room",
                    )
                    # Committed: if the request ends before another attempt starts, the
                    # settlement must not charge this attempt a second time.
                    self._billed = attempt
                continue
            return

    async def _reserve(self, budget: Any) -> None:
        """Reserve the request's worst-case cost before anything is sent."""
        total = self._timeouts.total_for(self.model, self._max_tokens)
        prompt_bound = 0 if self._prompt_bound is None else self._prompt_bound()
        max_output = self._max_tokens
        if max_output is None and self._choices > 1:
            # No limit: each choice may run to the model's maximum output.
            price = budget.prices.get(self.model)
            if price is not None and price.max_output_tokens:
                max_output = price.max_output_tokens * self._choices
        self._reservation = await self._within_total(
            lambda: budget.reserve(
                model=self.model,
                prompt_bound=prompt_bound,
                max_output_tokens=max_output,
                # A reservation whose process died counts as spent after this long: the
                # request's own deadline plus a margin for the settlement.
                expires_in=None if total is None else total + RESERVATION_MARGIN,
            ),
            "waiting for budget room",
        )

    async def _within_total(self, wait: Callable[[], Awaitable[T]], what: str) -> T:
        """Await ``wait()`` within the total deadline; past it, raise the typed timeout."""
        if self._total_deadline == _INF:  # the common case; a cancel scope costs ~2 µs
            return await wait()
        with trio.move_on_at(self._total_deadline):
            return await wait()
        seconds = self._timeouts.total_for(self.model, self._max_tokens)
        error = APITimeoutError(
            f"{what} outlasted the total deadline of {seconds} s", deadline="total", seconds=seconds
        )
        self._tag(error)
        raise error

    async def _admit(self, base_url: str) -> _Attempt[ItemT]:
        """Wait for admission of a new attempt (within the total deadline) and start it."""
        client = self._client
        admission = client._admit(model=self.model, estimated_tokens=self._estimated_tokens)
        ticket = await self._within_total(
            admission.__aenter__, "waiting for admission (the client's limits)"
        )
        now = trio.current_time()
        if not self.attempts:
            self.start = now
            if self._observer is not None:
                self._observer.admitted(now)
            if self._timeouts.total == "auto":
                total = self._timeouts.total_for(self.model, self._max_tokens)
                self._total_deadline = _INF if total is None else now + total
        self.attempts += 1
        self.request_id = None
        attempt: _Attempt[ItemT] = _Attempt(
            number=self.attempts, base_url=base_url, decoder=self._new_decoder()
        )
        attempt.admission = admission
        attempt.ticket = ticket
        attempt.started_at = now
        first_token = self._timeouts.first_token
        attempt.first_token_deadline = _INF if first_token is None else now + first_token
        self._attempt = attempt
        self.ready.clear()
        return attempt

    async def _try(self, attempt: _Attempt[ItemT]) -> None:
        """One attempt, up to the first output (or the end of a stream without output)."""
        # Admission may end with a shielded checkpoint, during which Client.aclose() can run:
        # take its cancellation here, before using the (then closed) connection.
        await trio.lowlevel.checkpoint_if_cancelled()
        exchange = attempt.exchange = self._new_exchange(attempt.base_url)
        deadline, name = self._deadline(attempt, trio.current_time())
        try:
            opened = await exchange.open(deadline)
        finally:
            self.request_id = exchange.request_id
            endpoint = exchange.endpoint
            if endpoint is not None:
                attempt.base_url = endpoint
        if not opened:
            raise self._timeout(name)
        attempt.idle_left = self._idle
        while not attempt.output_began and not attempt.eof:
            if attempt.failure is not None:
                raise attempt.failure
            await self._pump(attempt)
        if attempt.failure is not None and not attempt.output_began:
            raise attempt.failure
        if not attempt.output_began:  # a stream without output: deliver what it had
            held = attempt.held
            held.reverse()  # ready is in reverse order
            self.ready.extend(held)
            held.clear()

    # ---- reading ----------------------------------------------------------------------------

    async def next_slow(self) -> ItemT:
        """The next item when none is ready: decode or read on (``__anext__``'s slow path)."""
        attempt = self._attempt
        if self.state != "open" or attempt is None or attempt.closed:
            if self.state == "new":
                raise RuntimeError("use the stream inside `async with`")
            raise StopAsyncIteration
        ready = self.ready
        try:
            while not ready:
                if attempt.events:  # decoded in batches: see MAX_DECODE_AHEAD
                    self._decode(attempt)
                    continue
                if attempt.failure is not None:
                    raise attempt.failure
                if attempt.eof:
                    # The stream ended; waiting for the end of the body was only for reuse.
                    end_at = attempt.end_at
                    self.end = end_at if end_at is not None else trio.current_time()
                    attempt.completed = True
                    await self._close_response(attempt)
                    self._report(attempt, error=None, completed=True)
                    raise StopAsyncIteration
                await self._pump(attempt)
        except HolySheepError as error:
            self._tag(error)
            self.end = trio.current_time()
            await self._close_response(attempt)
            self._report(attempt, error=error, completed=False)
            health = self._client._health if self._client_health else None
            if health is not None:
                health.report_failure(error)
            interrupted = StreamInterruptedError.from_error(error, partial=self._partial())
            self.failure = interrupted
            raise interrupted from error
        except _ClosedByClient:
            raise self.closed_error() from None
        return ready.pop()

    def _deadline(self, attempt: _Attempt[ItemT], now: float) -> tuple[float, DeadlineName]:
        deadline: float = self._total_deadline
        name: DeadlineName = "total"
        idle_at = now + attempt.idle_left
        if idle_at < deadline:
            deadline, name = idle_at, "idle"
        if not attempt.output_began and attempt.first_token_deadline < deadline:
            deadline, name = attempt.first_token_deadline, "first_token"
        return deadline, name

    def _timeout(self, name: DeadlineName) -> APITimeoutError:
        if name == "total":
            seconds = self._timeouts.total_for(self.model, self._max_tokens)
            what = "the request did not finish"
        elif name == "first_token":
            seconds = self._timeouts.first_token
            what = "no first token arrived"
        else:
            seconds = self._timeouts.idle
            what = "no data event arrived"
        return APITimeoutError(f"{what} within {seconds} s", deadline=name, seconds=seconds)

    async def _pump(self, attempt: _Attempt[ItemT]) -> None:
        """Receive the next events of the stream and decode them (see :meth:`_decode`).

        The read is bounded by the attempt's deadline: over plain TCP by the run's deadline
        watcher (:meth:`_receive_watched`), otherwise by a cancel scope
        (:meth:`_receive_scoped`). The client's cancellation raises :class:`_ClosedByClient`.
        """
        exchange = attempt.exchange
        assert exchange is not None
        waiting_since = trio.current_time()
        deadline, name = self._deadline(attempt, waiting_since)
        if attempt.saw_end:
            deadline = min(deadline, waiting_since + DRAIN_AFTER_END)
        try:
            fd = exchange.readable_fd()
            if fd >= 0:
                received = await self._receive_watched(attempt, exchange, fd, deadline)
            else:
                received = await self._receive_scoped(exchange, deadline)
        except HolySheepError:
            if attempt.saw_end:  # complete; only the end of the body was lost
                attempt.eof = True
                return
            raise
        except trio.Cancelled:
            # The caller's own cancel scope around this read: the silence so far still counts
            # against idle (a caller polling with short timeouts must not reset it).
            attempt.idle_left -= trio.current_time() - waiting_since
            raise
        if received is None:  # the deadline passed while we waited
            # Counted now: a cancellation of the caller's that lands in receive_nowait() below
            # must not leave this silence uncounted.
            now = trio.current_time()
            attempt.idle_left -= now - waiting_since
            waiting_since = now
            if attempt.saw_end:  # complete; the server just did not end the body
                attempt.eof = True
                return
            # Bytes that are already here still count (the total deadline is the caller's
            # bound on everything, so it does not ask).
            received = None if name == "total" else await exchange.receive_nowait()
            if received is None:
                raise self._timeout(name)
        events, ended = received
        now = trio.current_time()
        # The wait counts against the idle deadline; decoding an event that is progress
        # (output, the end, usage) resets it. Comments, keep-alive events such as
        # `event: ping` and empty deltas do not. All events of this read are decoded before
        # the next wait, so the order does not matter.
        attempt.idle_left -= now - waiting_since
        if ended:
            attempt.body_ended = True
        if events:
            attempt.events = events
            attempt.event_index = 0
            attempt.events_at = now
        self._decode(attempt)

    async def _receive_scoped(
        self, exchange: Exchange, deadline: float
    ) -> tuple[list[ServerSentEvent], bool] | None:
        """``exchange.receive()`` within ``deadline``; None if it passed first.

        While the caller reads (no library await in progress, ``self._scope`` is None), the
        deadline's cancel scope is also the one :meth:`cancel_by_client` cancels: one cancel
        scope per read rather than two.
        """
        scope = trio.CancelScope(deadline=deadline)
        reading = self._scope is None
        if reading:
            self._scope = scope
            if self.closed_by_client:
                scope.cancel()
        try:
            with scope:
                return await exchange.receive()
        finally:
            if reading:
                self._scope = None
        if reading and self.closed_by_client:
            raise _ClosedByClient
        return None

    async def _receive_watched(
        self, attempt: _Attempt[ItemT], exchange: Exchange, fd: int, deadline: float
    ) -> tuple[list[ServerSentEvent], bool] | None:
        """``exchange.receive()`` by way of ``wait_readable(fd)`` and ``receive_ready()``,
        within ``deadline`` without a cancel scope; None if the deadline passed first.

        A cancel scope per read costs about 5 µs (and two objects that the garbage collector
        traverses while thousands of streams wait), a tenth of a paced chunk's cost. Instead
        the read tells the run's :class:`_DeadlineWatcher` its deadline (two stores), and the
        watcher, which sleeps until the earliest one, wakes a read whose deadline passed with
        ``notify_closing`` on its socket, as :meth:`cancel_by_client` does. Cancel-safe as
        ``receive()``: a cancellation lands in ``wait_readable``, before anything is read. If
        the socket is closed by someone else, or stops being one to wait on, the scoped read
        takes over and says what happened.
        """
        reading = self._scope is None
        if reading and self.closed_by_client:
            raise _ClosedByClient
        watcher = _deadline_watcher()
        attempt.wait_fd = fd
        attempt.wait_deadline = deadline
        attempt.woken_by_deadline = False
        if reading:
            self._waiting = attempt
        watcher.add(attempt)
        try:
            while True:
                try:
                    await trio.lowlevel.wait_readable(fd)
                except trio.ClosedResourceError:
                    # The client's close wins over a deadline that passed in the same moment.
                    if reading and self.closed_by_client:
                        raise _ClosedByClient from None
                    if attempt.woken_by_deadline:
                        return None
                    break
                found = exchange.receive_ready()
                if found is not None:
                    return found
                # Nothing whole yet (a chunk's framing, a spurious wake-up). The watcher may
                # have passed our deadline meanwhile, and no longer watches this read.
                if reading and self.closed_by_client:
                    raise _ClosedByClient
                if attempt.woken_by_deadline:
                    return None
                fd = exchange.readable_fd()
                if fd < 0:
                    break
                attempt.wait_fd = fd
        finally:
            watcher.discard(attempt)
            if reading:
                self._waiting = None
        return await self._receive_scoped(exchange, deadline)

    def _decode(self, attempt: _Attempt[ItemT]) -> None:
        """Decode the events waiting in ``attempt`` into ``ready``.

        Up to the first output every event is decoded (items before it are held, and the
        first output ends the attempt loop); after it, at most :data:`MAX_DECODE_AHEAD` items
        at a time, the rest waiting for the caller's next reads. Once the events of the last
        read are all decoded, the stream is at its end.
        """
        events = attempt.events
        index = attempt.event_index
        count = len(events)
        decoder = attempt.decoder
        ready = self.ready
        now = attempt.events_at
        observer = self._observer
        while index < count:
            if attempt.saw_end or attempt.failure is not None:
                index = count
                break
            event = events[index]
            index += 1
            try:
                item, flags = decoder.decode(event)
            except HolySheepError as error:
                attempt.failure = error
                index = count
                break
            if flags & PROGRESS:
                attempt.idle_left = self._idle
            if flags & END:
                attempt.saw_end = True
                attempt.end_at = now
            if flags & FINISH:
                attempt.saw_finish = True
            if item is None:
                continue
            if flags & OUTPUT:
                attempt.output_pieces += 1
                if observer is not None:
                    observer.output(now)
            if attempt.output_began:
                ready.append(item)
                if len(ready) >= MAX_DECODE_AHEAD:
                    break
            elif flags & OUTPUT:
                attempt.output_began = True
                attempt.first_output_at = now
                if self.ttft is None:
                    self.ttft = now - self.start
                ready.extend(attempt.held)
                attempt.held.clear()
                ready.append(item)
                if len(ready) >= MAX_DECODE_AHEAD:
                    break
            elif not self._hold(attempt, item, flags, len(event.data)):
                index = count
                break
        if index < count:
            attempt.event_index = index
        else:
            attempt.events = _NO_EVENTS
            attempt.event_index = 0
            if attempt.body_ended:
                attempt.eof = True
                if not attempt.saw_end and not attempt.saw_finish and attempt.failure is None:
                    attempt.failure = APIConnectionError("the stream ended before it was complete")
        if len(ready) > 1:
            ready.reverse()  # the caller pops from the end

    def _account_unread(self, attempt: _Attempt[ItemT]) -> None:
        """A stream left early: count what already arrived but was not decoded yet.

        Decoding runs a few items ahead of the caller (:data:`MAX_DECODE_AHEAD`), so events of
        the last read may still wait, the usage chunk among them. The bill, the pool's token
        count and the telemetry must see them as if they had been read: decoded here for the
        accounting only (at most one read's events), the items dropped.
        """
        events = attempt.events
        index = attempt.event_index
        if index >= len(events):
            return
        attempt.events = _NO_EVENTS
        attempt.event_index = 0
        decoder = attempt.decoder
        observer = self._observer
        for event in events[index:]:
            if attempt.saw_end or attempt.failure is not None:
                break
            try:
                _, flags = decoder.decode(event)
            except HolySheepError:
                break  # what the caller never read can't fail its stream now
            if flags & OUTPUT:
                attempt.output_pieces += 1
                if observer is not None:
                    observer.output(attempt.events_at)
            if flags & END:
                attempt.saw_end = True

    def _hold(self, attempt: _Attempt[ItemT], item: ItemT, flags: int, size: int) -> bool:
        """Keep an item until the first output; False if the stream broke the bound."""
        held = attempt.held
        if flags & DROPPABLE:
            # Nothing the caller could miss: kept only while there are few.
            if len(held) < MAX_HELD_ITEMS:
                held.append(item)
            return True
        limit = self._client._max_event_size
        if len(held) < MAX_HELD_EVENTS and attempt.held_bytes + size <= limit:
            held.append(item)
            attempt.held_bytes += size
            return True
        attempt.failure = StreamProtocolError(
            f"more than {MAX_HELD_EVENTS} events (or {limit} bytes) before the first output"
        )
        return False

    async def _close_response(self, attempt: _Attempt[ItemT]) -> None:
        exchange = attempt.exchange
        if exchange is None or attempt.closed:
            return
        attempt.closed = True
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
            await exchange.aclose()

    # ---- accounting -------------------------------------------------------------------------

    def _tag(self, error: HolySheepError) -> None:
        """Attach the request's context to an error and scrub secrets from its text."""
        if error.model is None:
            error.model = self.model
        if error.request_id is None:
            error.request_id = self.request_id
        if error.attempt is None:
            error.attempt = self.attempts or None  # None: it failed before any attempt
        scrub_error(error, self._client._secrets() + self._extra_secrets)

    def _report(
        self, attempt: _Attempt[ItemT], *, error: HolySheepError | None, completed: bool
    ) -> None:
        attempt.reported = True
        now = trio.current_time()
        first_output_at = attempt.first_output_at
        usage = attempt.decoder.usage
        outcome = AttemptOutcome(
            model=self.model,
            base_url=attempt.base_url,
            attempt=attempt.number,
            error=error,
            completed=completed,
            usage=usage,
            ttft=None if first_output_at is None else first_output_at - attempt.started_at,
            duration=now - attempt.started_at,
        )
        ticket = attempt.ticket
        if ticket is not None and not attempt.released:
            if usage is not None:
                prompt_tokens = usage.prompt_tokens
            else:
                # Cut short before the usage (a `break`, a hedging loser): a server that
                # accepted the request bills its prompt all the same; count our estimate.
                prompt_tokens = self._estimated_prompt_tokens if attempt.accepted else 0
            ticket.report_attempt(
                error=error,
                completed=completed,
                prompt_tokens=prompt_tokens,
                # Without usage, count the output pieces received so far, one token each, as
                # the server bills them.
                completion_tokens=attempt.output_pieces
                if usage is None
                else usage.completion_tokens,
                ttft=outcome.ttft,
                duration=outcome.duration,
            )
        self._client._report(outcome)


def scrub_error(error: HolySheepError, secrets: tuple[str, ...]) -> HolySheepError:
    """Replace every secret in ``error``'s text (message, body, offending data); return it."""
    if not secrets:
        return error
    error.message = _scrub(error.message, secrets)
    error.args = (error.message,)
    if isinstance(error, APIStatusError):
        error.body = _scrub(error.body, secrets)
    if isinstance(error, StreamProtocolError) and error.data:
        text = error.data.decode("utf-8", "replace")
        scrubbed = _scrub(text, secrets)
        if scrubbed != text:
            error.data = scrubbed.encode("utf-8")
    return error
