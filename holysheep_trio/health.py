# Connection health: heartbeat probes, reconnect with backoff, failover, events, pending queue.
"""Connection health: a heartbeat, reconnection with backoff, health events and a pending queue.

The seed's resilient connection (a heartbeat every 30 s with a 5 s deadline, reconnection with
exponential backoff and jitter, ``reconnecting`` / ``reconnected`` / ``connectionLost`` events,
and messages held while disconnected and sent in order afterwards) in trio form:

- :func:`open_health_monitor` owns one background task that probes the endpoints. The probe is
  injected (an async callable ``probe(url)`` that raises on failure), so the same machinery
  serves HTTP (``GET {url}/models``) and a WebSocket session (a ping);
- :attr:`HealthMonitor.state` is a :class:`HealthState` anyone can read or wait on;
- :meth:`HealthMonitor.subscribe` delivers :class:`HealthEvent` values through a bounded buffer
  per subscriber instead of callbacks;
- :meth:`HealthMonitor.wait_ready` is the pending queue every request passes before it is
  sent: free while healthy, FIFO while (re)connecting, failing fast once the connection is lost.

The decisions (which endpoint to probe next, after how long, which event follows) are made by
:class:`HealthMachine`, a pure state machine without I/O or clock; the monitor is the thin trio
shell that sleeps, probes and feeds it the results.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import attrs
import trio

from ._groups import BlockGuard
from .errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    ConnectionLostError,
    HolySheepError,
    PendingQueueFullError,
    PermissionDeniedError,
    StreamInterruptedError,
    _shown_url,
)

__all__ = [
    "DEFAULT_SUBSCRIPTION_BUFFER",
    "Connected",
    "ConnectionLost",
    "FailedBack",
    "HealthConfig",
    "HealthEvent",
    "HealthMachine",
    "HealthMonitor",
    "HealthState",
    "HealthStatistics",
    "Probe",
    "Reconnected",
    "Reconnecting",
    "is_connection_failure",
    "open_health_monitor",
]

logger = logging.getLogger("holysheep_trio")

#: The probe: an async callable given an endpoint URL, returning None when the endpoint is
#: healthy and raising (a :class:`~holysheep_trio.HolySheepError`) when it is not.
Probe = Callable[[str], Awaitable[None]]

#: Events a subscriber may have unread before the oldest are dropped (see
#: :meth:`HealthMonitor.subscribe`).
DEFAULT_SUBSCRIPTION_BUFFER: Final = 64

#: Errors of a probe that count as "the endpoint refused us", which no retry fixes: a wrong or
#: revoked key (401) or a key without access (403).
_AUTH_ERRORS: Final = (AuthenticationError, PermissionDeniedError)
#: Exceptions a probe that talks to a socket itself (a WebSocket ping) may raise for a network
#: failure; they are wrapped in APIConnectionError. Anything else a probe raises is a bug and
#: escapes the monitor.
_NETWORK_ERRORS: Final = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
_CONNECTION_FAILURES: Final = (APIConnectionError, *_NETWORK_ERRORS)


# ---- configuration --------------------------------------------------------------------------


def _positive_number(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{attribute.name} must be a number, got {value!r}")
    if not value > 0:  # also rejects NaN
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _finite_positive_number(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    _positive_number(instance, attribute, value)
    assert isinstance(value, int | float)
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be finite, got {value!r}")


def _non_negative_finite_number(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{attribute.name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def _fraction(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{attribute.name} must be a number, got {value!r}")
    if not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be between 0 and 1, got {value!r}")


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


def _optional_random(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, random.Random):
        raise TypeError(f"{attribute.name} must be a random.Random or None, got {value!r}")


@attrs.frozen(kw_only=True)
class HealthConfig:
    """How the health monitor probes, reconnects and holds requests. The defaults are the seed's.

    Attributes:
        interval: Seconds between heartbeat probes while healthy, counted from the end of the
            previous probe (``math.inf``: probe only at start, on a reported failure and on
            :meth:`HealthMonitor.reconnect`).
        timeout: Seconds one probe may take; a slower one fails with
            :class:`~holysheep_trio.APITimeoutError` (``deadline="heartbeat"``).
        max_attempts: Reconnect attempts before the connection is declared lost.
        base_delay: Backoff before reconnect attempt 1, in seconds; doubled for each further
            attempt (see :meth:`backoff`).
        max_delay: Cap of the backoff, and the period of the probes once the connection is
            lost, in seconds.
        jitter: Fraction of the backoff randomly *added* (0.3: plus 0-30 %).
        hold_requests: Whether requests made while connecting or reconnecting wait in the
            pending queue (and fail at once while the connection is lost). When False the
            monitor only observes: requests are never held nor failed by it.
        max_pending: Bound on the requests held at once; one more raises
            :class:`~holysheep_trio.PendingQueueFullError` at once.
        rng: Source of the jitter (default: the :mod:`random` module); pass a seeded
            :class:`random.Random` for reproducible delays. Not part of equality.
    """

    interval: float = attrs.field(default=30.0, validator=_positive_number)
    timeout: float = attrs.field(default=5.0, validator=_positive_number)
    max_attempts: int = attrs.field(default=5, validator=_positive_int)
    base_delay: float = attrs.field(default=1.0, validator=_non_negative_finite_number)
    max_delay: float = attrs.field(default=30.0, validator=_finite_positive_number)
    jitter: float = attrs.field(default=0.3, validator=_fraction)
    hold_requests: bool = True
    max_pending: int = attrs.field(default=1000, validator=_positive_int)
    rng: random.Random | None = attrs.field(
        default=None, validator=_optional_random, eq=False, repr=False
    )

    def backoff(self, attempt: int) -> float:
        """The delay before reconnect attempt ``attempt`` (1-based), jitter included.

        The seed's rule (``calculateBackoff``): ``exponential = base_delay * 2 ** (attempt -
        1)``, plus ``random() * jitter * exponential``, and the *sum* capped at ``max_delay``:
        ``min(exponential + jitter_part, max_delay)``. With the defaults: 1-1.3 s, 2-2.6 s,
        4-5.2 s, 8-10.4 s, 16-20.8 s.
        """
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt!r}")
        # One draw per attempt, capped or not, as in the seed: a seeded rng gives the same
        # delays whatever the cap.
        fraction = (self.rng or random).random()
        # 2.0 ** 1100 raises OverflowError; an exponent whose result reaches the cap gives the
        # cap anyway, so the exponent is clamped before it could overflow (and inf * 0 jitter,
        # a NaN, never happens).
        exponential = self.base_delay * 2.0 ** min(attempt - 1, 1000)
        if exponential >= self.max_delay:
            return self.max_delay
        return min(exponential + fraction * self.jitter * exponential, self.max_delay)


# ---- states and events ----------------------------------------------------------------------


class HealthState(str, enum.Enum):
    """The connection's health; a ``str`` enum, so ``state == "healthy"`` works."""

    #: The first probe has not answered yet.
    CONNECTING = "connecting"
    #: The last probe succeeded; requests go out at once.
    HEALTHY = "healthy"
    #: A probe failed; reconnect attempts are under way (requests wait when held).
    RECONNECTING = "reconnecting"
    #: ``max_attempts`` failed, or the key was refused; probes continue every ``max_delay``.
    LOST = "lost"

    def __str__(self) -> str:
        return self.value


def _url_repr(url: str) -> str:
    return repr(_shown_url(url))


@attrs.frozen(kw_only=True)
class HealthEvent:
    """Base of the health events a subscription delivers.

    Attributes:
        dropped: How many events this subscriber lost just before this one because its buffer
            was full (always 0 for a subscriber that keeps up).
    """

    dropped: int = 0


@attrs.frozen(kw_only=True)
class Connected(HealthEvent):
    """The first probe at start succeeded (state ``connecting`` -> ``healthy``).

    Attributes:
        url: The endpoint that answered (the primary unless it was down at start).
    """

    url: str = attrs.field(repr=_url_repr)


@attrs.frozen(kw_only=True)
class Reconnecting(HealthEvent):
    """Reconnect attempt ``attempt`` will probe after ``delay`` seconds (the seed's
    ``reconnecting``).

    Attributes:
        attempt: The 1-based attempt number within this outage (or forced cycle).
        delay: Seconds until the attempt's probe, jitter included.
        error: The probe failure that led here, or None for a cycle forced by
            :meth:`HealthMonitor.reconnect`.
    """

    attempt: int
    delay: float
    error: BaseException | None


@attrs.frozen(kw_only=True)
class Reconnected(HealthEvent):
    """A reconnect attempt succeeded (state -> ``healthy``; the seed's ``reconnected``).

    Attributes:
        attempts: How many probe rounds this outage took, the successful one included (the
            rounds made after the connection was lost count too).
        url: The endpoint reached; requests go there from now on (a backup after a failover).
    """

    attempts: int
    url: str = attrs.field(repr=_url_repr)


@attrs.frozen(kw_only=True)
class ConnectionLost(HealthEvent):
    """The monitor gave up its reconnect cycle (state -> ``lost``; the seed's ``connectionLost``).

    Held and new requests fail with :class:`~holysheep_trio.ConnectionLostError` from now on.
    The monitor keeps probing every ``max_delay`` seconds and reports a later success with
    :class:`Reconnected`.

    Attributes:
        error: The last probe error (an authentication error for a refused key).
        permanent: True: the reconnect cycle is over (``max_attempts`` failed, or the key was
            refused, which no retry fixes). The monitor always sets it; the field keeps the
            seed's ``{error, permanent}`` payload.
    """

    error: BaseException
    permanent: bool = True


@attrs.frozen(kw_only=True)
class FailedBack(HealthEvent):
    """The primary endpoint answers again while a backup was in use; requests go to it again.

    Attributes:
        url: The primary endpoint.
    """

    url: str = attrs.field(repr=_url_repr)


@attrs.frozen(kw_only=True)
class HealthStatistics:
    """A snapshot of a :class:`HealthMonitor` (from :meth:`HealthMonitor.statistics`).

    Attributes:
        state: The current state.
        active_url: The endpoint requests should go to.
        pending: Requests waiting in the pending queue.
        subscribers: Open subscriptions.
        probes: Probes made so far.
        failed_probes: Probes that failed so far.
        last_error: The last probe error, or None if none failed yet.
    """

    state: HealthState
    active_url: str = attrs.field(repr=_url_repr)
    pending: int
    subscribers: int
    probes: int
    failed_probes: int
    last_error: BaseException | None


def is_connection_failure(error: BaseException) -> bool:
    """Whether a request's failure says something about the connection (worth a probe now).

    True for connection errors (refused, reset, cut short) and ``connect`` / ``heartbeat``
    timeouts, also when they interrupted a stream (the ``__cause__`` of a
    :class:`~holysheep_trio.StreamInterruptedError`), and for raw socket errors; False for HTTP
    statuses, in-band errors, and ``first_token`` / ``idle`` / ``total`` timeouts (a slow model
    is not a dead connection).
    """
    if isinstance(error, StreamInterruptedError):
        cause = error.__cause__
        return cause is not None and is_connection_failure(cause)
    if isinstance(error, ConnectionLostError):
        return False  # raised by the monitor itself, not by a connection
    if isinstance(error, APITimeoutError):
        return error.deadline in ("connect", "heartbeat")
    return isinstance(error, _CONNECTION_FAILURES)


# ---- the pure state machine -----------------------------------------------------------------


class _Step(enum.Enum):
    CONNECT = "connect"  # the first round at start
    HEARTBEAT = "heartbeat"  # healthy: the active endpoint, then the primary when on a backup
    ATTEMPT = "attempt"  # a reconnect attempt: a round
    LOST = "lost"  # a probe round while lost


class HealthMachine:
    """The health rules as a pure state machine: no I/O, no clock, no trio.

    The driver repeats: wait :meth:`wait_time` seconds (or less, once :meth:`request_check` or
    :meth:`force_reconnect` returned True), call :meth:`begin_step`, then probe each URL
    :meth:`next_probe` names, in turn, reporting each result to :meth:`probe_finished`, until
    it names none. Those calls return the events to publish, in order.

    A *round* probes the endpoints in preference order (primary first) and stops at the first
    that answers: the connect step at start, each reconnect attempt and each probe while lost
    are rounds. A heartbeat probes only the active endpoint, then, while that is a backup and
    it answered, the primary (to fail back).

    Args:
        config: The :class:`HealthConfig` (its ``rng`` draws the jitter).
        urls: The endpoints, primary first; at least one.
    """

    def __init__(self, config: HealthConfig, urls: Sequence[str]) -> None:
        if not urls:
            raise ConfigurationError("the health monitor needs at least one endpoint URL")
        self._config = config
        self._urls: tuple[str, ...] = tuple(urls)
        self.state = HealthState.CONNECTING
        #: Index of the endpoint requests go to.
        self.active_index = 0
        #: Probe rounds in the current cycle (an outage, or a cycle forced by reconnect()).
        self.attempt = 0
        #: The last probe error (None until one fails).
        self.last_error: BaseException | None = None
        #: Whether the step in progress was forced by force_reconnect().
        self.forced = False
        self._wait = 0.0  # the connect step starts at once
        self._in_step = False
        self._check_requested = False
        # A failure reported while a step of a healthy monitor was under way: that step's
        # probes may have begun before it (or not looked at it: the primary's attempt while a
        # backup serves), so another step follows at once if the state is still healthy.
        self._check_after_step = False
        self._force_requested = False
        self._step = _Step.CONNECT
        self._to_probe: deque[str] = deque()
        self._round_last_error: BaseException | None = None
        self._round_auth_error: BaseException | None = None

    @property
    def urls(self) -> tuple[str, ...]:
        """The endpoints, primary first."""
        return self._urls

    @property
    def active_url(self) -> str:
        """The endpoint requests should go to."""
        return self._urls[self.active_index]

    @property
    def in_step(self) -> bool:
        """Whether a step has begun and still has probes to report."""
        return self._in_step

    def wait_time(self) -> float:
        """Seconds to wait before the next step (0 when a check or reconnect was requested)."""
        if self._check_requested or self._force_requested:
            return 0.0
        return self._wait

    def request_check(self) -> bool:
        """A request's connection failed: probe now. True if the driver should stop waiting
        (healthy, between steps); during a step of a healthy monitor, the next step begins as
        soon as this one ends, unless it ended healthy no more; ignored otherwise (a cycle is
        under way).
        """
        if self.state is not HealthState.HEALTHY:
            return False
        if self._in_step:
            self._check_after_step = True
            return False
        self._check_requested = True
        return True

    def force_reconnect(self) -> bool:
        """Start a new reconnect cycle at attempt 1, without delay, once the current step (if
        any) ends. Always accepted; returns True.
        """
        self._force_requested = True
        return True

    def begin_step(self) -> list[HealthEvent]:
        """Start the next step; returns the events it begins with."""
        assert not self._in_step, "begin_step() while a step is in progress"
        self._in_step = True
        self._check_requested = False
        self._round_last_error = None
        self._round_auth_error = None
        self.forced = self._force_requested
        if self._force_requested:
            self._force_requested = False
            self.state = HealthState.RECONNECTING
            self.attempt = 1
            self._step = _Step.ATTEMPT
            self._to_probe = deque(self._urls)
            return [Reconnecting(attempt=1, delay=0.0, error=None)]
        if self.state is HealthState.HEALTHY:
            self._step = _Step.HEARTBEAT
            self._to_probe = deque([self.active_url])
        else:
            if self.state is HealthState.LOST:
                self.attempt += 1
            self._step = {
                HealthState.CONNECTING: _Step.CONNECT,
                HealthState.RECONNECTING: _Step.ATTEMPT,
                HealthState.LOST: _Step.LOST,
            }[self.state]
            self._to_probe = deque(self._urls)
        return []

    def next_probe(self) -> str | None:
        """The next URL to probe in this step, or None when the step is over."""
        if self._to_probe:
            return self._to_probe[0]
        self._in_step = False
        if self._check_after_step:
            self._check_after_step = False
            if self.state is HealthState.HEALTHY:
                self._check_requested = True
        return None

    def probe_finished(self, url: str, error: BaseException | None) -> list[HealthEvent]:
        """Report the result of probing ``url`` (None: it answered); returns the events."""
        assert self._in_step, "probe_finished() outside a step"
        assert self._to_probe[0] == url, "probe_finished() for a URL that was not next"
        self._to_probe.popleft()
        if error is not None:
            self.last_error = error
        if self._step is _Step.HEARTBEAT:
            return self._heartbeat_finished(url, error)
        return self._round_probe_finished(url, error)

    # -- internals --

    def _heartbeat_finished(self, url: str, error: BaseException | None) -> list[HealthEvent]:
        if url == self.active_url:
            if error is not None:
                return self._outage(error)
            self._wait = self._config.interval
            if self.active_index != 0:
                self._to_probe.append(self._urls[0])
            return []
        # The primary, probed while a backup is active.
        if error is not None:
            return []
        self.active_index = 0
        return [FailedBack(url=self._urls[0])]

    def _round_probe_finished(self, url: str, error: BaseException | None) -> list[HealthEvent]:
        if error is None:
            self._to_probe.clear()
            self.active_index = self._urls.index(url)
            step, attempts = self._step, self.attempt
            self.state = HealthState.HEALTHY
            self.attempt = 0
            self._wait = self._config.interval
            if step is _Step.CONNECT:
                return [Connected(url=url)]
            return [Reconnected(attempts=attempts, url=url)]
        self._round_last_error = error
        if self._round_auth_error is None and isinstance(error, _AUTH_ERRORS):
            self._round_auth_error = error
        if self._to_probe:
            return []
        # Every endpoint failed. A refused key decides the round: it does not fix itself.
        failure = self._round_auth_error or self._round_last_error
        self.last_error = failure
        if self._step is _Step.CONNECT:
            return self._outage(failure)
        if self._step is _Step.LOST:
            self._wait = self._config.max_delay
            return []
        if isinstance(failure, _AUTH_ERRORS) or self.attempt >= self._config.max_attempts:
            return self._lose(failure)
        return self._next_attempt(failure)

    def _outage(self, error: BaseException) -> list[HealthEvent]:
        self.attempt = 0
        if isinstance(error, _AUTH_ERRORS):
            return self._lose(error)
        return self._next_attempt(error)

    def _next_attempt(self, error: BaseException) -> list[HealthEvent]:
        self.state = HealthState.RECONNECTING
        self.attempt += 1
        delay = self._config.backoff(self.attempt)
        self._wait = delay
        return [Reconnecting(attempt=self.attempt, delay=delay, error=error)]

    def _lose(self, error: BaseException) -> list[HealthEvent]:
        self.state = HealthState.LOST
        self.last_error = error
        self._wait = self._config.max_delay
        return [ConnectionLost(error=error, permanent=True)]


# ---- the trio shell -------------------------------------------------------------------------


class _Waiter:
    """One request held in the pending queue."""

    __slots__ = ("event", "verdict", "woken")

    def __init__(self) -> None:
        self.event = trio.Event()
        #: None: go. An exception: raise it.
        self.verdict: BaseException | None = None
        self.woken = False


class _Subscription:
    """The async iterator :meth:`HealthMonitor.subscribe` yields: a bounded drop-oldest buffer."""

    __slots__ = ("_buffer", "_dropped", "_ended", "_lot", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._buffer: deque[HealthEvent] = deque()
        self._dropped = 0
        self._ended = False
        self._lot = trio.lowlevel.ParkingLot()

    def push(self, event: HealthEvent) -> None:
        if len(self._buffer) >= self._size:
            self._buffer.popleft()
            self._dropped += 1
        self._buffer.append(event)
        self._lot.unpark_all()

    def end(self) -> None:
        self._ended = True
        self._lot.unpark_all()

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> HealthEvent:
        await trio.lowlevel.checkpoint()
        while True:
            if self._buffer:
                event = self._buffer.popleft()
                if self._dropped:
                    event = attrs.evolve(event, dropped=self._dropped)
                    self._dropped = 0
                return event
            if self._ended:
                raise StopAsyncIteration
            await self._lot.park()


def _describe(error: BaseException | None) -> str:
    """One short line for a log: the error's type and message (errors are already scrubbed)."""
    if error is None:
        return "forced"
    text = " ".join(str(error).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class HealthMonitor:
    """The health of a connection to one or more endpoints; made by :func:`open_health_monitor`.

    Read :attr:`state`, wait with :meth:`wait_healthy`, watch with :meth:`subscribe`, force a
    new cycle with :meth:`reconnect`. The request lifecycle calls :meth:`wait_ready` before
    sending and :meth:`report_failure` when a request's connection failed.
    """

    def __init__(self, config: HealthConfig, *, probe: Probe, urls: Sequence[str]) -> None:
        if not isinstance(config, HealthConfig):
            raise TypeError(
                f"config must be a holysheep_trio.HealthConfig, got {type(config).__name__}"
            )
        self._config = config
        self._probe = probe
        self._machine = HealthMachine(config, urls)
        self._hold = config.hold_requests
        self._closed = False
        self._queue: deque[_Waiter] = deque()
        # True while a released waiter has not resumed yet: until it has, later arrivals queue
        # behind it, so release order is arrival order.
        self._baton = False
        self._gate_open = not self._hold
        self._healthy = trio.Event()
        self._subscribers: set[_Subscription] = set()
        self._wake_scope: trio.CancelScope | None = None
        # reconnect() callers wait on one of these: the next forced round, or the one under way.
        self._force_done: trio.Event | None = None
        self._forcing: trio.Event | None = None
        self._probes = 0
        self._failed_probes = 0
        # The monitor task's own scope: aclose() cancels the task, not the caller's block.
        self._run_scope = trio.CancelScope()

    def __repr__(self) -> str:
        return (
            f"<HealthMonitor state={self.state.value} "
            f"active_url={_shown_url(self.active_url)!r} pending={len(self._queue)}>"
        )

    # ---- reading the state --------------------------------------------------------------

    @property
    def state(self) -> HealthState:
        """The current :class:`HealthState`."""
        return self._machine.state

    @property
    def active_url(self) -> str:
        """The endpoint requests should go to: the primary, or the backup failed over to."""
        return self._machine.active_url

    @property
    def urls(self) -> tuple[str, ...]:
        """The endpoints the monitor probes, primary first."""
        return self._machine.urls

    @property
    def config(self) -> HealthConfig:
        """The configuration."""
        return self._config

    @property
    def closed(self) -> bool:
        """Whether the monitor has stopped (its ``async with`` block was left)."""
        return self._closed

    def statistics(self) -> HealthStatistics:
        """A snapshot of the state, the queue and the probe counters."""
        return HealthStatistics(
            state=self.state,
            active_url=self.active_url,
            pending=len(self._queue),
            subscribers=len(self._subscribers),
            probes=self._probes,
            failed_probes=self._failed_probes,
            last_error=self._machine.last_error,
        )

    async def wait_healthy(self) -> None:
        """Wait until the state is ``healthy`` (return at once if it is).

        Waits through ``lost`` too, since probes continue; wrap it in ``trio.fail_after`` to
        bound the wait.

        Raises:
            ClientClosedError: the monitor stopped before the connection was healthy.
        """
        await trio.lowlevel.checkpoint()
        while True:
            if self._closed:
                raise ClientClosedError("the health monitor stopped")
            if self._machine.state is HealthState.HEALTHY:
                return
            await self._healthy.wait()

    def subscribe(
        self, *, buffer: int = DEFAULT_SUBSCRIPTION_BUFFER
    ) -> AbstractAsyncContextManager[AsyncIterator[HealthEvent]]:
        """Receive the health events from now on; use with ``async with``, iterate the result.

        ::

            async with monitor.subscribe() as events:
                async for event in events:
                    ...

        A subscriber that reads slowly never slows the monitor: at most ``buffer`` events wait
        for it; when one more arrives the oldest is dropped, and the next event it receives
        carries the number dropped in :attr:`HealthEvent.dropped`. The iteration ends quietly
        once the monitor stops (after the events still buffered).

        Args:
            buffer: Events kept for this subscriber before the oldest are dropped (>= 1).
        """
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ValueError(f"buffer must be an int >= 1, got {buffer!r}")
        return self._subscription(buffer)

    @asynccontextmanager
    async def _subscription(self, size: int) -> AsyncIterator[AsyncIterator[HealthEvent]]:
        subscription = _Subscription(size)
        if self._closed:
            subscription.end()
        else:
            self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)
            subscription.end()

    # ---- acting on the connection ----------------------------------------------------------

    async def reconnect(self) -> None:
        """Force a new reconnect cycle now and wait until its first probe round has finished.

        The state becomes ``reconnecting`` (``Reconnecting(attempt=1, delay=0.0, error=None)``)
        and every endpoint is probed at once, primary first; on success the state is
        ``healthy`` again (``Reconnected(attempts=1)``), on failure the cycle goes on as after
        any failed probe, with all ``max_attempts`` available again (also from ``lost``). A
        probe already under way is not interrupted: the forced round follows it.

        Raises:
            ClientClosedError: the monitor stopped (before or while waiting).
        """
        if self._closed:
            raise ClientClosedError("the health monitor stopped")
        if self._force_done is None:
            self._force_done = trio.Event()
        done = self._force_done
        self._machine.force_reconnect()
        self._wake()
        await done.wait()
        if self._closed:
            raise ClientClosedError("the health monitor stopped")

    def report_failure(self, error: BaseException) -> None:
        """Tell the monitor a request's connection failed, so that it probes now.

        Cheap and safe to call for every failed attempt: only connection failures count (see
        :func:`is_connection_failure`), and only while healthy with no probe under way (during
        a cycle the monitor is already probing).
        """
        if self._closed or not is_connection_failure(error):
            return
        if self._machine.request_check():
            logger.debug("health: a request's connection failed; probing now")
            self._wake()

    async def wait_ready(self) -> None:
        """Wait until a request may be sent: the pending queue. Call it before each send.

        While healthy (and with ``hold_requests=False`` always) it returns at once without a
        checkpoint. While ``connecting`` or ``reconnecting`` the request waits, first in first
        out, until the state is healthy again; the caller's cancel scopes and deadlines apply
        while it waits, and a cancelled waiter leaves the queue.

        Raises:
            PendingQueueFullError: ``max_pending`` requests already wait (raised at once).
            ConnectionLostError: the state is, or becomes while waiting, ``lost``; its
                ``__cause__`` is the last probe error.
            ClientClosedError: the monitor stopped.
        """
        if self._gate_open:
            return
        await self._wait_in_queue()

    async def aclose(self) -> None:
        """Stop the monitor now, before its ``async with`` block ends. Idempotent.

        As leaving the block does: the monitor task stops (a probe under way is cancelled),
        held requests and later ones raise :class:`~holysheep_trio.ClientClosedError`,
        subscriptions end, ``wait_healthy()`` and ``reconnect()`` raise. The block itself goes
        on.
        """
        self._close()
        await trio.lowlevel.checkpoint()

    # ---- the pending queue -----------------------------------------------------------------

    async def _wait_in_queue(self) -> None:
        if self._closed:
            raise ClientClosedError("the health monitor stopped")
        if self._machine.state is HealthState.LOST:
            raise self._lost_error()
        if len(self._queue) >= self._config.max_pending:
            raise PendingQueueFullError(
                f"{len(self._queue)} requests already wait for the connection "
                f"(state {self._machine.state.value}, max_pending={self._config.max_pending})",
                max_pending=self._config.max_pending,
            )
        waiter = _Waiter()
        self._queue.append(waiter)
        self._update_gate()
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.woken:
                # Released just as it was cancelled: pass the turn on (cannot happen with
                # trio.Event today, which never raises after waking a task; kept for safety).
                if waiter.verdict is None:
                    self._baton = False
                    self._release_next()
            else:
                self._queue.remove(waiter)
            self._update_gate()
            raise
        if waiter.verdict is not None:
            raise waiter.verdict
        self._baton = False
        self._release_next()
        self._update_gate()

    def _release_next(self) -> None:
        """Wake the head of the queue if healthy and no released waiter is still resuming."""
        if self._baton or not self._queue or self._machine.state is not HealthState.HEALTHY:
            return
        waiter = self._queue.popleft()
        waiter.woken = True
        self._baton = True
        waiter.event.set()

    def _fail_waiters(self, make_error: Callable[[], BaseException]) -> None:
        while self._queue:
            waiter = self._queue.popleft()
            waiter.woken = True
            waiter.verdict = make_error()
            waiter.event.set()

    def _lost_error(self) -> ConnectionLostError:
        cause = self._machine.last_error
        error = ConnectionLostError(
            f"the connection is lost ({_describe(cause)}); the health monitor probes again "
            f"every {self._config.max_delay:g} s"
        )
        error.__cause__ = cause
        return error

    def _update_gate(self) -> None:
        self._gate_open = not self._hold or (
            not self._closed
            and self._machine.state is HealthState.HEALTHY
            and not self._queue
            and not self._baton
        )

    # ---- the monitor task ------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wake_scope is not None:
            self._wake_scope.cancel()

    async def _sleep(self, seconds: float) -> None:
        with trio.CancelScope(deadline=trio.current_time() + seconds) as scope:
            self._wake_scope = scope
            await trio.sleep_forever()
        self._wake_scope = None

    async def _probe_once(self, url: str) -> BaseException | None:
        self._probes += 1
        error: BaseException | None = None
        with trio.move_on_after(self._config.timeout) as scope:
            try:
                await self._probe(url)
            except HolySheepError as exc:
                error = exc
            except _NETWORK_ERRORS as exc:
                error = APIConnectionError(f"health probe failed: {type(exc).__name__}")
                error.__cause__ = exc
        if scope.cancelled_caught:
            error = APITimeoutError(
                f"health probe got no answer within {self._config.timeout:g} s",
                deadline="heartbeat",
                seconds=self._config.timeout,
            )
        if error is not None:
            self._failed_probes += 1
        return error

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        machine = self._machine
        task_status.started()
        try:
            with self._run_scope:
                await self._loop(machine)
        finally:
            self._close()

    async def _loop(self, machine: HealthMachine) -> None:
        """Sleep, probe, apply the results; forever (until cancelled)."""
        while True:
            await self._sleep(machine.wait_time())
            events = machine.begin_step()
            if machine.forced:
                self._forcing, self._force_done = self._force_done, None
            self._apply(events)
            while (url := machine.next_probe()) is not None:
                error = await self._probe_once(url)
                if error is not None:
                    logger.debug(
                        "health: probe of %s failed: %s", _shown_url(url), _describe(error)
                    )
                self._apply(machine.probe_finished(url, error))
            if self._forcing is not None:
                self._forcing.set()
                self._forcing = None

    def _apply(self, events: list[HealthEvent]) -> None:
        """Bring the queue, the healthy event and the gate in line with the machine's state,
        then log and publish the events."""
        state = self._machine.state
        if state is HealthState.HEALTHY:
            self._healthy.set()
            self._release_next()
        elif self._healthy.is_set():
            self._healthy = trio.Event()
        if state is HealthState.LOST:
            self._fail_waiters(self._lost_error)
        self._update_gate()
        for event in events:
            self._log(event)
            for subscription in self._subscribers:
                subscription.push(event)

    def _log(self, event: HealthEvent) -> None:
        config = self._config
        if isinstance(event, Connected):
            logger.info("health: connected to %s", _shown_url(event.url))
        elif isinstance(event, Reconnecting):
            level = logging.INFO if event.attempt == 1 else logging.DEBUG
            logger.log(
                level,
                "health: reconnecting (%s); attempt %d of %d in %.3f s",
                _describe(event.error),
                event.attempt,
                config.max_attempts,
                event.delay,
            )
        elif isinstance(event, Reconnected):
            logger.info(
                "health: reconnected to %s after %d attempt(s)",
                _shown_url(event.url),
                event.attempts,
            )
        elif isinstance(event, ConnectionLost):
            logger.warning(
                "health: connection lost (%s); requests fail until a probe succeeds "
                "(probing every %g s)",
                _describe(event.error),
                config.max_delay,
            )
        elif isinstance(event, FailedBack):
            logger.info("health: the primary %s answers again; failing back", _shown_url(event.url))

    def _close(self) -> None:
        """Stop serving: held requests fail, subscriptions end, waiters wake. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._run_scope.cancel()
        self._fail_waiters(lambda: ClientClosedError("the health monitor stopped"))
        self._update_gate()
        self._healthy.set()  # wait_healthy() sees `closed` and raises
        for done in (self._force_done, self._forcing):
            if done is not None:
                done.set()
        for subscription in list(self._subscribers):
            subscription.end()
        self._subscribers.clear()


@asynccontextmanager
async def open_health_monitor(
    config: HealthConfig, *, probe: Probe, urls: Sequence[str]
) -> AsyncIterator[HealthMonitor]:
    """Start a health monitor; use with ``async with``. Leaving the block stops it.

    The monitor's task probes at once (state ``connecting``), then every ``config.interval``
    while healthy, and reconnects with backoff when a probe fails (see :class:`HealthConfig`).
    It runs in a nursery this context manager owns, so no task outlives the block; leaving
    the block fails the requests still held (:class:`~holysheep_trio.ClientClosedError`) and
    ends the subscriptions.

    Args:
        config: The :class:`HealthConfig`.
        probe: ``await probe(url)`` returns when the endpoint ``url`` is healthy and raises a
            :class:`~holysheep_trio.HolySheepError` when it is not (a 401/403 as
            :class:`~holysheep_trio.AuthenticationError` /
            :class:`~holysheep_trio.PermissionDeniedError`, which ends the reconnect cycle at
            once). It runs under ``config.timeout``; socket errors (``OSError``, trio's broken
            or closed resource errors) count as connection failures, and anything else it
            raises is a bug that stops the monitor and leaves the block. While the state is
            ``healthy`` and ``url`` is :attr:`HealthMonitor.active_url`, the call is a
            heartbeat of the live connection; otherwise it is a connection attempt.
        urls: The endpoints, primary first: the monitor fails over to the next that answers
            and fails back to the primary when it answers again.

    Yields:
        The :class:`HealthMonitor`.

    Raises:
        ConfigurationError: ``urls`` is empty.
        TypeError: ``config`` is not a :class:`HealthConfig`.
    """
    monitor = HealthMonitor(config, probe=probe, urls=urls)
    # What the caller's block raises comes out as it was; a bug of the monitor task as that
    # one exception (see _groups.BlockGuard).
    guard = BlockGuard()
    async with guard.outer(), trio.open_nursery() as nursery:
        await nursery.start(monitor._run)
        try:
            async with guard.inner():
                yield monitor
        finally:
            monitor._close()
            nursery.cancel_scope.cancel()
