# The pool: global and per-model concurrency, RPM/TPM token buckets, adaptive limits, metrics.
"""Admission control for chat requests: how many run at once, how fast they start, what it cost.

Every request passes through one admission step, :meth:`Pool.admit`, an async context manager
held for the stream's whole lifetime by the task that owns the response::

    async with pool.admit(model, estimated_tokens=cost) as admission:
        ...  # send the request, read the stream
        admission.report_success(prompt_tokens=..., completion_tokens=..., ttft=..., duration=...)

(or ``report_failure(kind=..., status=..., retry_after=...)`` for each failed attempt, or
``report_attempt(...)`` with the client's view of an attempt).

Admission takes, in this order:

1. one slot of the model's :class:`trio.CapacityLimiter` (its size is the model's *effective*
   limit, which the adaptive controller moves between 1 and the configured limit);
2. for a model with a :class:`RateLimit`, the model's gate, a fair (FIFO) :class:`trio.Lock`,
   behind which the request waits for any ``Retry-After`` pause (adaptive limits only) and for
   both token buckets (requests/min, tokens/min) to allow it (a model without one only waits
   out the pause);
3. one slot of the global limiter, after which the buckets are checked again and debited.

Debiting the buckets only once the global slot is held means a bucket's tokens are spent at the
moment the request is actually sent, so the server never sees a burst larger than the bucket
allows; waiting for the buckets *before* taking a global slot means a rate-limited model does not
sit on global slots other models could use.

The pure pieces — :class:`TokenBucket`, :class:`RollingWindow`, :class:`RateMeter` and
:class:`AdaptiveLimit` — take the time as an argument and are unit-tested without trio.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._fleet import Lease, LimitStore

# Token estimates live beside the wire formats; re-exported here for existing imports.
from ._tokens import DEFAULT_COMPLETION_ESTIMATE as DEFAULT_COMPLETION_ESTIMATE
from ._tokens import estimate_tokens as estimate_tokens

__all__ = [
    "DEFAULT_PER_MODEL",
    "OVERLOAD_STATUSES",
    "UNLIMITED",
    "AdaptiveLimit",
    "Admission",
    "Limits",
    "ModelStatistics",
    "Percentiles",
    "Pool",
    "PoolStatistics",
    "RateLimit",
    "RateMeter",
    "RollingWindow",
    "TokenBucket",
    "estimate_tokens",
]

#: The seed's per-model connection limits (the tutorial's ``maxConnectionsPerModel``).
DEFAULT_PER_MODEL: Mapping[str, int] = MappingProxyType(
    {"gpt-4.1": 5, "claude-sonnet-4.5": 3, "gemini-2.5-flash": 8, "deepseek-v3.2": 10}
)

#: HTTP statuses that mean "too much load": 429 Too Many Requests (RFC 6585 §4),
#: 503 Service Unavailable (RFC 9110 §15.6.4) and 529, which Anthropic-style relays use for
#: "overloaded". They shrink the model's effective limit; only 429 teaches its ceiling (see
#: :class:`AdaptiveLimit`).
OVERLOAD_STATUSES: frozenset[int] = frozenset({429, 503, 529})

#: Error kinds that mean the same when the server reports overload in-band (no HTTP status).
OVERLOAD_KINDS: frozenset[str] = frozenset({"rate_limit", "overloaded"})

#: The capacity signal: 429 is addressed to *this client* ("you sent too many requests",
#: RFC 6585 §4), so the concurrency it was answered at says something about the capacity the
#: server grants us. 503/529 say the server as a whole is unavailable or overloaded (RFC 9110
#: §15.6.4), which is often transient or caused by other clients, and is answered at any
#: concurrency: learning a ceiling from it pinned the limit to 1 under a steady 5 % of random
#: 503s (measured: 7.4x slower than not adapting at all; tests/test_pool.py replays it).
CAPACITY_STATUS: Final = 429
#: The in-band error kind of the capacity signal, when no HTTP status is known.
CAPACITY_KIND: Final = "rate_limit"

#: Multiplicative decrease of the effective limit on an overload signal.
DECREASE_FACTOR = 0.5
#: Seconds without a capacity signal after which the learned ceiling rises by one slot.
CEILING_RELAX_SECONDS = 30.0
#: Successes without a capacity signal after which the learned ceiling rises by one slot,
#: however little time they took. Time alone never relaxes a ceiling under busy traffic with
#: an occasional stray 429 (a quiet 30 s may never come); counting successes bounds what a
#: probe costs at a real capacity to one 429 per this many requests (1 %), while 30 s bounds it
#: for slow traffic. Large enough that a found capacity is not probed every few round trips.
CEILING_RELAX_SUCCESSES = 100
#: The longest Retry-After pause honoured; a larger value is clamped (a typo on the server
#: must not freeze a model for a day).
MAX_RETRY_AFTER = 600.0
# Float slack when comparing bucket levels after sleeping exactly the computed delay.
_EPSILON = 1e-9


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


def _optional_positive_int(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if value is not None:
        _positive_int(instance, attribute, value)


def _frozen_mapping(value: Mapping[Any, Any]) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a mapping, got {type(value).__name__}")
    return MappingProxyType(dict(value))


def _validate_per_model(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    assert isinstance(value, Mapping)
    for model, limit in value.items():
        if not isinstance(model, str):
            raise TypeError(f"{attribute.name} keys must be model names (str), got {model!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"{attribute.name}[{model!r}] must be an int >= 1, got {limit!r}")


def _validate_rate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    assert isinstance(value, Mapping)
    for model, rate in value.items():
        if not isinstance(model, str):
            raise TypeError(f"rate keys must be model names (str), got {model!r}")
        if not isinstance(rate, RateLimit):
            raise TypeError(f"rate[{model!r}] must be a RateLimit, got {rate!r}")


def _validate_store(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, str):
        # Checked now, so a bad URL fails where the limits are written (no coredis needed).
        from ._redis import parse_redis_url

        parse_redis_url(value)
        return
    from ._fleet import LimitStore

    if not isinstance(value, LimitStore):
        raise TypeError(
            f"store must be a redis:// URL or a LimitStore (open_limit_store), got {value!r}"
        )


@attrs.frozen(kw_only=True)
class RateLimit:
    """Requests per minute and tokens per minute allowed for one model.

    Each is a token bucket holding one minute's allowance and refilled continuously: a fresh
    pool may start ``rpm`` requests at once, then ``rpm / 60`` per second. Over any window of
    ``T`` seconds at most ``rpm * (1 + T / 60)`` requests start. The bucket starts full, so a
    fresh client may admit up to ``rpm`` requests at once and up to about ``2 * rpm`` in its
    first sliding minute (the burst plus a minute's refill): that is the token-bucket design,
    not a leak.

    Attributes:
        rpm: Requests per minute, or ``None`` for no request limit.
        tpm: Tokens (prompt + completion) per minute, or ``None`` for no token limit.
    """

    rpm: int | None = attrs.field(default=None, validator=_optional_positive_int)
    tpm: int | None = attrs.field(default=None, validator=_optional_positive_int)


#: The concurrency limit of :meth:`Limits.unlimited`: far more requests than one process can
#: have sockets for, so no request ever waits for it.
UNLIMITED: Final = 2**31 - 1


@attrs.frozen(kw_only=True)
class Limits:
    """How many requests may run at once, globally and per model, and how fast they may start.

    Attributes:
        max_concurrent: Requests in flight across all models.
        per_model: Requests in flight per model; defaults to the seed's table.
        default_per_model: The limit of any model missing from ``per_model``.
        rate: Optional :class:`RateLimit` per model.
        adaptive: Shrink a model's limit on 429/503/529 and grow it back on success, and
            let such an answer's ``Retry-After`` pause new admissions of that model. When
            False, neither happens: a ``Retry-After`` only delays the refused request's own
            retry (see :class:`~holysheep_trio.RetryPolicy`), never other requests.
        store: Where the limits are shared by several processes or machines: a
            ``"redis://HOST:PORT/DB"`` URL (optionally ``?key_prefix=…&lease_time=…&
            fail_open=true``), opened by the pool's owner, or a
            :class:`~holysheep_trio.LimitStore` from :func:`~holysheep_trio.open_limit_store`.
            Then ``max_concurrent`` and ``per_model`` also cap the whole fleet (slots held as
            leases with an expiry) and ``rate`` is one token bucket per model for the whole
            fleet; the local limits still apply in each process. None (the default): this
            process only. See ``docs/fleet.md``.
    """

    max_concurrent: int = attrs.field(default=10, validator=_positive_int)
    per_model: Mapping[str, int] = attrs.field(
        default=DEFAULT_PER_MODEL,
        converter=_frozen_mapping,
        validator=_validate_per_model,
        hash=False,
    )
    default_per_model: int = attrs.field(default=4, validator=_positive_int)
    rate: Mapping[str, RateLimit] = attrs.field(
        factory=dict, converter=_frozen_mapping, validator=_validate_rate, hash=False
    )
    adaptive: bool = True
    store: str | LimitStore | None = attrs.field(
        default=None, validator=_validate_store, eq=False, hash=False
    )

    @classmethod
    def unlimited(cls) -> Limits:
        """Limits that never make a request wait: what :func:`~holysheep_trio.open_client` uses
        when it is given none.

        Every concurrency limit is :data:`UNLIMITED` (more requests than one process can have
        sockets for), there are no rate limits and nothing adapts (so a server's
        ``Retry-After`` pauses no other request); the pool still keeps its statistics. Pass
        :class:`Limits` (the seed's table) or your own to throttle.
        """
        return cls(
            max_concurrent=UNLIMITED, per_model={}, default_per_model=UNLIMITED, adaptive=False
        )

    def limit_for(self, model: str) -> int:
        """The configured concurrency limit of ``model`` (``default_per_model`` if unknown)."""
        return self.per_model.get(model, self.default_per_model)

    def rate_for(self, model: str) -> RateLimit | None:
        """The rate limit of ``model``, or ``None``."""
        return self.rate.get(model)


# --------------------------------------------------------------------------- pure pieces


class TokenBucket:
    """A token bucket with the time passed in: ``capacity`` tokens, refilled at ``per_second``.

    The level may go negative: a request larger than the whole bucket is admitted once the
    bucket is full (so it can never wait forever) and leaves the bucket in debt, and a usage
    correction may charge more than was reserved. Debt is paid back by the refill.

    Args:
        capacity: The most tokens the bucket holds (the burst).
        per_second: Refill rate.
        now: The current time; the bucket starts full.
    """

    __slots__ = ("_level", "_updated", "capacity", "per_second")

    def __init__(self, *, capacity: float, per_second: float, now: float) -> None:
        if not (capacity > 0 and per_second > 0):
            raise ValueError("capacity and per_second must be > 0")
        self.capacity = float(capacity)
        self.per_second = float(per_second)
        self._level = self.capacity
        self._updated = now

    def level(self, now: float) -> float:
        """Tokens available at ``now`` (negative while in debt)."""
        if now > self._updated:
            self._level = min(self.capacity, self._level + (now - self._updated) * self.per_second)
            self._updated = now
        return self._level

    def delay(self, amount: float, now: float) -> float:
        """Seconds from ``now`` until ``amount`` tokens (at most ``capacity``) are available."""
        needed = min(float(amount), self.capacity)
        missing = needed - self.level(now)
        return 0.0 if missing <= _EPSILON else missing / self.per_second

    def take(self, amount: float, now: float) -> None:
        """Debit ``amount`` tokens (call when :meth:`delay` is 0; the level may go negative)."""
        self.level(now)
        self._level -= amount

    def give_back(self, amount: float, now: float) -> None:
        """Credit ``amount`` tokens (negative charges more); never above ``capacity``."""
        self.level(now)
        self._level = min(self.capacity, self._level + amount)


class RollingWindow:
    """The last ``max_samples`` values seen within ``max_age`` seconds, for percentiles.

    Memory is bounded by ``max_samples`` whatever the traffic; percentiles are computed on
    demand by sorting a copy (``O(n log n)`` per snapshot, nothing per sample).

    Args:
        max_samples: Ring size.
        max_age: Samples older than this (seconds) are ignored and dropped.
    """

    __slots__ = ("_samples", "max_age")

    def __init__(self, *, max_samples: int = 1024, max_age: float = 300.0) -> None:
        if max_samples < 1 or not max_age > 0:
            raise ValueError("max_samples must be >= 1 and max_age > 0")
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self.max_age = max_age

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, value: float, now: float) -> None:
        """Record ``value`` observed at ``now`` (times must not go backwards)."""
        self._samples.append((now, value))

    def values(self, now: float) -> list[float]:
        """The values still in the window at ``now``, oldest first."""
        horizon = now - self.max_age
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        return [value for _, value in self._samples]

    def percentiles(self, now: float) -> Percentiles:
        """p50/p95/p99 by the nearest-rank method over the window at ``now``."""
        values = sorted(self.values(now))
        if not values:
            return Percentiles(count=0)

        def rank(p: float) -> float:
            # Nearest rank: the smallest value with at least p % of the samples at or below it.
            return values[max(0, math.ceil(p * len(values)) - 1)]

        return Percentiles(count=len(values), p50=rank(0.50), p95=rank(0.95), p99=rank(0.99))


class RateMeter:
    """A sum per ``resolution``-second bucket over the last ``window`` seconds: amount/second.

    Args:
        window: Seconds covered.
        resolution: Bucket width in seconds; memory is ``window / resolution`` buckets.
        now: When measuring starts (a young meter divides by its age, not the whole window).
    """

    __slots__ = ("_buckets", "_started", "resolution", "window")

    def __init__(self, *, window: float = 60.0, resolution: float = 1.0, now: float) -> None:
        if not (window > 0 and resolution > 0 and resolution <= window):
            raise ValueError("need 0 < resolution <= window")
        self.window = window
        self.resolution = resolution
        self._started = now
        self._buckets: deque[tuple[int, float]] = deque()

    def _expire(self, now: float) -> None:
        oldest = math.floor((now - self.window) / self.resolution)
        while self._buckets and self._buckets[0][0] <= oldest:
            self._buckets.popleft()

    def add(self, amount: float, now: float) -> None:
        """Count ``amount`` at ``now`` (times must not go backwards)."""
        slot = math.floor(now / self.resolution)
        if self._buckets and self._buckets[-1][0] == slot:
            self._buckets[-1] = (slot, self._buckets[-1][1] + amount)
        else:
            self._buckets.append((slot, amount))
        self._expire(now)

    def rate(self, now: float) -> float:
        """The amount per second over the window ending at ``now``."""
        self._expire(now)
        span = min(self.window, now - self._started)
        if span <= 0:
            return 0.0
        return sum(amount for _, amount in self._buckets) / span


class AdaptiveLimit:
    """AIMD concurrency control for one model, with the time passed in.

    - **Multiplicative decrease**: an overload signal (429/503/529) from a request admitted
      since the last decrease multiplies the limit by :data:`DECREASE_FACTOR` (0.5), never
      below 1. Signals from requests admitted *before* the last decrease are the same burst
      seen late and do not shrink it again (as TCP reacts to congestion at most once per
      window of data, RFC 3168 §6.1.2).
    - **Additive increase**: each success adds ``1 / limit``, so the limit grows by about one
      slot per ``limit`` successes (one "round trip" of the pool), up to the ceiling.
    - **Quick recovery after a 503/529**: below the limit it had when the last 503/529 halved
      it, each success adds a whole slot, so the limit is back within one round trip at the
      halved level if those requests succeed. Such an answer says the server as a whole is
      unavailable, not that this client holds too many slots: halving gives relief at once,
      and a server really overloaded by us keeps answering 503 and keeps halving us; a
      random, load-independent one (a steady 5 % of answers) no longer holds the limit
      at a fraction of the configured one, as plain AIMD does (about 6 of 8 on average).
    - **Learned ceiling**, from capacity signals only (:data:`CAPACITY_STATUS`, 429, or an
      in-band ``rate_limit`` error): a 429 reported while ``n > 1`` requests of the model are
      in flight (itself included) suggests the server grants fewer than ``n``; the ceiling
      becomes the smallest such ``n - 1`` seen, so the limit stops probing above the capacity
      it found and 429s stop. The count is taken when the failure is reported, not at
      admission: requests admitted together may reach the server in any order. A 503/529
      never lowers the ceiling: it is answered at any concurrency, and learning from it pinned
      the limit to 1 under random 503s.
    - **Relaxing the ceiling**: after :data:`CEILING_RELAX_SECONDS` or
      :data:`CEILING_RELAX_SUCCESSES` successes, whichever comes first, without a fresh
      capacity signal, the ceiling rises by one (towards the configured limit), to notice when
      the server's capacity comes back or to forget a stray 429. A fresh signal is one from a
      request admitted since the last decrease, or one that lowers the ceiling; a late echo of
      an old burst (and any 503/529) does not restart the count.

    Args:
        configured: The configured limit (the maximum).
        now: The current time.
    """

    __slots__ = (
        "_credit",
        "_recover_to",
        "_relax_at",
        "_successes",
        "ceiling",
        "configured",
        "epoch",
        "limit",
    )

    def __init__(self, *, configured: int, now: float) -> None:
        self.configured = configured
        self.limit = configured
        self.ceiling = configured
        #: Bumped on every decrease; admissions remember it to recognise stale signals.
        self.epoch = 0
        self._credit = 0.0
        # The limit before the last 503/529 decrease: below it, recovery is quick. 0: none.
        self._recover_to = 0
        self._relax_at = now + CEILING_RELAX_SECONDS
        # Successes since the last fresh capacity signal (or the last relaxation).
        self._successes = 0

    def on_overload(
        self, *, admitted_epoch: int, in_flight: int, now: float, capacity: bool = True
    ) -> None:
        """An overload from a request admitted at ``admitted_epoch``, ``in_flight`` now.

        Args:
            admitted_epoch: :attr:`epoch` when the request was admitted.
            in_flight: Requests of the model in flight now, the failed one included.
            now: The current time.
            capacity: Whether it is a capacity signal (a 429, see :data:`CAPACITY_STATUS`),
                which may lower the ceiling, or a 503/529, which only halves the limit.
        """
        current = admitted_epoch == self.epoch
        if capacity:
            lowered = 1 < in_flight <= self.ceiling
            if lowered:
                self.ceiling = in_flight - 1
            if current or lowered:
                self._relax_at = now + CEILING_RELAX_SECONDS
                self._successes = 0
            # The server spoke of our share: grow back carefully, one slot per round trip.
            self._recover_to = 0
        if current:
            if not capacity:
                self._recover_to = self.limit
            self.limit = max(1, math.floor(self.limit * DECREASE_FACTOR))
            self.epoch += 1
            self._credit = 0.0
        self.limit = min(self.limit, self.ceiling)

    def on_success(self, now: float) -> None:
        """A success: grow the limit; relax the ceiling after enough time or successes."""
        self._successes += 1
        if now >= self._relax_at or self._successes >= CEILING_RELAX_SUCCESSES:
            steps = 1
            if now >= self._relax_at:
                steps += int((now - self._relax_at) // CEILING_RELAX_SECONDS)
            self.ceiling = min(self.configured, self.ceiling + steps)
            self._relax_at = now + CEILING_RELAX_SECONDS
            self._successes = 0
        if self.limit >= self.ceiling:
            self.limit = self.ceiling
            return
        if self.limit < self._recover_to:
            self.limit += 1
            return
        self._credit += 1.0 / self.limit
        if self._credit >= 1.0:
            self._credit -= 1.0
            self.limit += 1


# --------------------------------------------------------------------------- snapshots


@attrs.frozen(kw_only=True)
class Percentiles:
    """p50/p95/p99 (seconds) over a rolling window; ``None`` when the window is empty.

    Attributes:
        count: Samples in the window.
        p50: Median.
        p95: 95th percentile.
        p99: 99th percentile.
    """

    count: int
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


@attrs.frozen(kw_only=True)
class ModelStatistics:
    """One model's share of a :class:`PoolStatistics` snapshot.

    Attributes:
        model: The model name.
        active: Requests admitted and not yet finished.
        waiting: Requests waiting for admission.
        limit: The configured concurrency limit.
        effective_limit: The adaptive limit in force (equals ``limit`` when not adaptive).
        paused_for: Seconds until admissions resume after a ``Retry-After`` (0 if not paused;
            always 0 when not adaptive).
        time_to_first_token: This model's time to first token, rolling window (as the pool's).
        latency: Duration of this model's successful requests, rolling window.
    """

    model: str
    active: int
    waiting: int
    limit: int
    effective_limit: int
    paused_for: float
    time_to_first_token: Percentiles = Percentiles(count=0)
    latency: Percentiles = Percentiles(count=0)


@attrs.frozen(kw_only=True)
class PoolStatistics:
    """A frozen snapshot of a :class:`Pool` (``pool.statistics()``).

    The client admits each attempt on its own (a retry gives its slots back while it backs off
    and is admitted again), so through the client these count attempts:
    ``total == succeeded + failed_total + active``.

    Attributes:
        total: Admissions since the pool was created.
        succeeded: Admissions reported as successful.
        failed: Failed admissions by error kind (``"rate_limit"``, ``"cancelled"``, ...).
        active: Requests in flight now.
        waiting: Requests waiting for admission now.
        max_concurrent: The global limit.
        utilization: ``active / max_concurrent``.
        models: Per-model statistics, for every model seen so far.
        latency: Duration of successful requests, rolling window.
        time_to_first_token: Time to first token of every request that reported one.
        prompt_tokens: Prompt tokens reported, all requests.
        completion_tokens: Completion tokens reported, all requests (hedging losers included).
        tokens_per_second: Completion tokens per second over the last minute.
    """

    total: int
    succeeded: int
    failed: Mapping[str, int] = attrs.field(converter=_frozen_mapping, hash=False)
    active: int
    waiting: int
    max_concurrent: int
    utilization: float
    models: Mapping[str, ModelStatistics] = attrs.field(converter=_frozen_mapping, hash=False)
    latency: Percentiles
    time_to_first_token: Percentiles
    prompt_tokens: int
    completion_tokens: int
    tokens_per_second: float

    @property
    def failed_total(self) -> int:
        """All failed requests, whatever the kind."""
        return sum(self.failed.values())


# --------------------------------------------------------------------------- the engine


class _ModelState:
    """Mutable per-model internals of a :class:`Pool`."""

    __slots__ = (
        "active",
        "adaptive",
        "configured",
        "credited",
        "gate",
        "latency",
        "limiter",
        "paused_until",
        "requests",
        "tokens",
        "ttft",
        "waiting",
    )

    def __init__(
        self,
        *,
        configured: int,
        rate: RateLimit | None,
        now: float,
        window_samples: int = 1024,
        window_seconds: float = 300.0,
    ) -> None:
        self.configured = configured
        self.latency = RollingWindow(max_samples=window_samples, max_age=window_seconds)
        self.ttft = RollingWindow(max_samples=window_samples, max_age=window_seconds)
        self.limiter = trio.CapacityLimiter(configured)
        self.gate = trio.Lock()  # trio.Lock is fair: waiters get it in FIFO order
        self.adaptive = AdaptiveLimit(configured=configured, now=now)
        self.paused_until = -math.inf
        self.active = 0
        self.waiting = 0
        #: Set (and replaced) when tokens come back to a bucket, to wake the gate's waiter.
        self.credited = trio.Event()
        self.requests: TokenBucket | None = None
        self.tokens: TokenBucket | None = None
        if rate is not None and rate.rpm is not None:
            self.requests = TokenBucket(capacity=rate.rpm, per_second=rate.rpm / 60, now=now)
        if rate is not None and rate.tpm is not None:
            self.tokens = TokenBucket(capacity=rate.tpm, per_second=rate.tpm / 60, now=now)

    def delay(self, estimated_tokens: int, now: float) -> float:
        """Seconds until the pause is over and both buckets allow one more request."""
        delay = max(0.0, self.paused_until - now)
        if self.requests is not None:
            delay = max(delay, self.requests.delay(1, now))
        if self.tokens is not None:
            delay = max(delay, self.tokens.delay(estimated_tokens, now))
        return delay


class Admission:
    """The ticket of one admitted request (yielded by :meth:`Pool.admit`).

    Report what happened before leaving the ``async with`` block: :meth:`report_failure` once
    per failed attempt (a client that retries a 429 inside the same admission reports it, then
    goes on), and :meth:`report_success` at most once, last. Leaving the block without any
    report counts as a failure of kind ``"cancelled"`` (on :class:`trio.Cancelled`) or
    ``"unreported"``. :meth:`report_attempt` maps a client attempt outcome onto these.

    The TPM reservation is settled once, when the block is left: corrected to the usage
    reported if the request succeeded or its last attempt was refused with an HTTP status
    (the server generated nothing); otherwise (network failure, timeout, cancellation) kept,
    since the server may have counted it, and only increased if the usage reported exceeds it.

    Attributes:
        model: The model the slots belong to.
        estimated_tokens: Tokens reserved in the model's TPM bucket.
        admitted_at: ``trio.current_time()`` when admitted.
        waited: Seconds spent waiting for admission.
        in_flight: Requests of this model in flight when admitted, this one included.
    """

    __slots__ = (
        "_epoch",
        "_exited",
        "_failures",
        "_last_refused",
        "_pool",
        "_state",
        "_succeeded",
        "_used",
        "admitted_at",
        "estimated_tokens",
        "in_flight",
        "model",
        "waited",
    )

    def __init__(self, pool: Pool, state: _ModelState, model: str, estimated_tokens: int) -> None:
        self._pool = pool
        self._state = state
        self._exited = False
        self._succeeded = False
        self._failures = 0
        self._last_refused = False
        self._used = 0
        self._epoch = 0
        self.model = model
        self.estimated_tokens = estimated_tokens
        self.admitted_at = math.nan
        self.waited = 0.0
        self.in_flight = 0

    def __repr__(self) -> str:
        return (
            f"<Admission model={self.model!r} estimated_tokens={self.estimated_tokens}"
            f" succeeded={self._succeeded} failures={self._failures}>"
        )

    @property
    def reported(self) -> bool:
        """Whether any outcome has been reported."""
        return self._succeeded or self._failures > 0

    def _check_open(self) -> None:
        if self._exited:
            raise RuntimeError("report the outcome before leaving the admit() block")
        if self._succeeded:
            raise RuntimeError("this admission already reported its success")

    def report_success(
        self,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        ttft: float | None,
        duration: float,
    ) -> None:
        """Report a completed stream (the request's last report).

        Feeds the metrics and, when adaptive, grows the model's limit.

        Args:
            prompt_tokens: Prompt tokens used (from the stream's ``usage``).
            completion_tokens: Completion tokens used.
            ttft: Seconds from sending to the first token, if one came.
            duration: Seconds from sending to the end of the stream.

        Raises:
            RuntimeError: If a success was already reported, or the block was left.
        """
        self._check_open()
        self._succeeded = True
        self._pool._record_success(
            self,
            ttft=ttft,
            duration=duration,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    def report_failure(
        self,
        *,
        kind: str,
        status: int | None = None,
        retry_after: float | None = None,
        ttft: float | None = None,
        duration: float | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """Report a failed or cancelled attempt, with whatever usage it had so far.

        On an overload (``status`` in :data:`OVERLOAD_STATUSES`, or ``kind`` ``"rate_limit"``
        / ``"overloaded"``) with adaptive limits, the model's effective limit shrinks and
        ``retry_after`` seconds pause new admissions of the model; without, neither happens.

        Args:
            kind: Error kind, e.g. ``"rate_limit"``, ``"server"``, ``"timeout"``,
                ``"network"``, ``"cancelled"`` (a hedging loser, an abandoned stream).
            status: The HTTP status, if the server refused the request with one.
            retry_after: Seconds from the server's ``Retry-After``, if any.
            ttft: Time to first token, if a token came.
            duration: Seconds from sending to the failure.
            prompt_tokens: Prompt tokens used so far, if known.
            completion_tokens: Completion tokens received so far.

        Raises:
            RuntimeError: If a success was already reported, or the block was left.
        """
        self._check_open()
        self._failures += 1
        self._last_refused = status is not None
        self._pool._record_failure(
            self,
            kind=kind,
            status=status,
            retry_after=retry_after,
            ttft=ttft,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    def report_attempt(
        self,
        *,
        error: BaseException | None,
        completed: bool,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        ttft: float | None = None,
        duration: float = 0.0,
    ) -> None:
        """Report one attempt as the client sees it; the client's ``_report`` seam calls this.

        ``error=None`` with ``completed=True`` is a success. ``error=None`` with
        ``completed=False`` (the stream was left early: a ``break``, a hedging loser) or a
        :class:`trio.Cancelled` error is a failure of kind ``"cancelled"``. Otherwise the
        error's ``kind``, ``status`` and ``retry_after`` attributes (as on ``HolySheepError``
        subclasses) are used, the kind falling back to the exception's class name.

        Args:
            error: The attempt's error, or ``None``.
            completed: Whether the stream was read to its end.
            prompt_tokens: Prompt tokens used, if known.
            completion_tokens: Completion tokens used (or received so far).
            ttft: Time to first token, if a token came.
            duration: Seconds from sending to the end of the attempt.

        Raises:
            RuntimeError: If a success was already reported, or the block was left.
        """
        if error is None and completed:
            self.report_success(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                ttft=ttft,
                duration=duration,
            )
            return
        if error is None or isinstance(error, trio.Cancelled):
            kind = "cancelled"
            status = retry_after = None
        else:
            found_kind = getattr(error, "kind", None)
            kind = found_kind if isinstance(found_kind, str) else type(error).__name__
            found_status = getattr(error, "status", None)
            status = found_status if isinstance(found_status, int) else None
            found_retry = getattr(error, "retry_after", None)
            retry_after = float(found_retry) if isinstance(found_retry, int | float) else None
        self.report_failure(
            kind=kind,
            status=status,
            retry_after=retry_after,
            ttft=ttft,
            duration=duration,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )


class _Admitting:
    """What :meth:`Pool.admit` returns: ``async with`` it to hold a request's slots."""

    __slots__ = ("_admission", "_estimated_tokens", "_lease", "_model", "_pool")

    def __init__(self, pool: Pool, model: str, estimated_tokens: int) -> None:
        self._pool = pool
        self._model = model
        self._estimated_tokens = estimated_tokens
        self._admission: Admission | None = None
        self._lease: Lease | None = None

    async def __aenter__(self) -> Admission:
        if self._admission is not None:
            raise RuntimeError("an admission can be entered only once")
        admission, self._lease = await self._pool._enter(self._model, self._estimated_tokens)
        self._admission = admission
        return admission

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        admission = self._admission
        assert admission is not None, "__aexit__ without __aenter__"
        if not admission._exited:  # a second exit releases nothing twice
            await self._pool._exit(admission, self._lease, exc)


class Pool:
    """Concurrency limits, rate limits, adaptive limits and metrics for chat requests.

    One pool per client. The pool owns no tasks: every wait happens in the task that calls
    :meth:`admit`, so the caller's cancel scopes and deadlines apply.

    Args:
        limits: The limits; defaults to ``Limits()``.
        window_samples: Samples kept for latency/TTFT percentiles.
        window_seconds: Maximum age of those samples.
        max_pause: The longest ``Retry-After`` pause (seconds) honoured for a model, at most
            :data:`MAX_RETRY_AFTER`. The client passes its ``RetryPolicy.max_retry_after``: a
            request refuses to wait longer than that, so a longer pause would only stall the
            other requests of the model.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        window_samples: int = 1024,
        window_seconds: float = 300.0,
        max_pause: float = MAX_RETRY_AFTER,
    ) -> None:
        self._limits = Limits() if limits is None else limits
        store = self._limits.store
        #: Whether admissions take a second step in the shared store (Limits.store).
        self._shared = store is not None
        self._store: LimitStore | None = None if store is None or isinstance(store, str) else store
        self._max_pause = min(float(max_pause), MAX_RETRY_AFTER)
        self._global = trio.CapacityLimiter(self._limits.max_concurrent)
        self._models: dict[str, _ModelState] = {}
        self._latency = RollingWindow(max_samples=window_samples, max_age=window_seconds)
        self._ttft = RollingWindow(max_samples=window_samples, max_age=window_seconds)
        self._window = (window_samples, window_seconds)
        self._throughput: RateMeter | None = None
        self._total = 0
        self._succeeded = 0
        self._failed: dict[str, int] = {}
        self._active = 0
        self._waiting = 0
        self._prompt_tokens = 0
        self._completion_tokens = 0

    def __repr__(self) -> str:
        return f"<Pool active={self._active} waiting={self._waiting} limits={self._limits!r}>"

    @property
    def limits(self) -> Limits:
        """The configured limits."""
        return self._limits

    def _state(self, model: str, now: float) -> _ModelState:
        state = self._models.get(model)
        if state is None:
            state = _ModelState(
                configured=self._limits.limit_for(model),
                # With a shared store the buckets are the fleet's, in the store.
                rate=None if self._shared else self._limits.rate_for(model),
                now=now,
                window_samples=self._window[0],
                window_seconds=self._window[1],
            )
            self._models[model] = state
        return state

    def effective_limit(self, model: str) -> int:
        """The concurrency limit in force for ``model`` now (adaptive, else configured)."""
        state = self._models.get(model)
        if state is None:
            return self._limits.limit_for(model)
        return int(state.limiter.total_tokens)

    def max_admitted(self, model: str) -> int:
        """The most requests of ``model`` that can hold slots at once now.

        The model's effective limit, capped by ``limits.max_concurrent``: a request of the model
        beyond that many would wait for admission whatever other models do. A batch starts no
        more than this many requests of one model at a time (see ``docs/pool.md``).
        """
        return min(self.effective_limit(model), self._limits.max_concurrent)

    def admit(self, model: str, *, estimated_tokens: int = 0) -> _Admitting:
        """Wait for admission of one request of ``model``; hold it for the block's lifetime.

        Use as ``async with pool.admit(model, estimated_tokens=n) as admission:``. Waits (FIFO)
        for a slot of the model, for its ``Retry-After`` pause and token buckets, then for a
        global slot. Leaving the block by any path — end, exception, cancellation — returns
        both slots before the block's exit returns.

        Args:
            model: The model name; an unknown model gets ``limits.default_per_model``.
            estimated_tokens: Tokens to reserve in the model's TPM bucket (prompt estimate plus
                ``max_tokens``; see :func:`estimate_tokens`). A request larger than the whole
                bucket is admitted when the bucket is full and leaves it in debt.

        Returns:
            An async context manager whose ``__aenter__`` waits and returns the
            :class:`Admission` ticket on which to report the outcome. (A class rather than an
            ``@asynccontextmanager``: one per request, it costs no async generator.)

        Raises:
            TypeError: If ``model`` is not a string or ``estimated_tokens`` not an int.
            ValueError: If ``estimated_tokens`` is negative.
        """
        return _Admitting(self, model, estimated_tokens)

    async def _enter(self, model: str, estimated_tokens: int) -> tuple[Admission, Lease | None]:
        """``admit``'s entry: wait for both slots and take them."""
        if not isinstance(model, str):
            raise TypeError(f"model must be a str, got {type(model).__name__}")
        if isinstance(estimated_tokens, bool) or not isinstance(estimated_tokens, int):
            raise TypeError("estimated_tokens must be an int")
        if estimated_tokens < 0:
            raise ValueError("estimated_tokens must be >= 0")
        started = trio.current_time()
        state = self._state(model, started)
        admission = Admission(self, state, model, estimated_tokens)
        waited = await self._acquire(state, admission)
        lease: Lease | None = None
        if self._shared:
            try:
                lease = await self._acquire_shared(state, admission)
            except BaseException:
                self._global.release_on_behalf_of(admission)
                state.limiter.release_on_behalf_of(admission)
                raise
            waited = True
        # From here on both slots are held and must be returned on every path.
        now = trio.current_time()
        self._total += 1
        self._active += 1
        state.active += 1
        admission.admitted_at = now
        admission.waited = now - started
        admission.in_flight = state.active
        admission._epoch = state.adaptive.epoch
        if not waited:
            # A checkpoint, as every async entry is; shielded, so nothing can interrupt it
            # between taking the slots and handing them over.
            await trio.lowlevel.cancel_shielded_checkpoint()
        return admission, lease

    async def _exit(
        self, admission: Admission, lease: Lease | None, exc: BaseException | None
    ) -> None:
        """``admit``'s exit: settle the ticket and return both slots, on every path."""
        state = admission._state
        try:
            self._settle(admission, exc)
        finally:
            admission._exited = True
            self._active -= 1
            state.active -= 1
            self._global.release_on_behalf_of(admission)
            state.limiter.release_on_behalf_of(admission)
            if lease is not None:
                await self._release_shared(lease, admission)

    @asynccontextmanager
    async def open_store(self) -> AsyncIterator[None]:
        """Open the shared store named by ``Limits(store="redis://…")`` for the block's lifetime.

        Whoever owns the pool (the client) enters this around the pool's use: the store's
        connection and its lease-renewal task live in the block. Without a store, or with a
        :class:`~holysheep_trio.LimitStore` opened by the caller, it does nothing (and opens
        no nursery).

        Raises:
            ConfigurationError: coredis is missing (the ``redis`` extra).
        """
        store = self._limits.store
        if not isinstance(store, str) or self._store is not None:
            yield
            return
        from ._fleet import open_limit_store

        async with open_limit_store(store) as opened:
            self._store = opened
            try:
                yield
            finally:
                self._store = None

    async def _acquire_shared(self, state: _ModelState, admission: Admission) -> Lease | None:
        """The fleet's admission step: slots and buckets in the shared store (docs/fleet.md)."""
        store = self._store
        if store is None:
            raise ConfigurationError(
                "Limits(store=URL) is opened by the pool's owner (Pool.open_store()); open it"
                " yourself with `async with hs.open_limit_store(URL) as store:` and pass"
                " Limits(store=store)"
            )
        return await store.acquire(
            admission.model,
            max_concurrent=self._limits.max_concurrent,
            model_limit=state.configured,
            rate=self._limits.rate_for(admission.model),
            tokens=admission.estimated_tokens,
        )

    async def _release_shared(self, lease: Lease, admission: Admission) -> None:
        store = self._store
        if store is None:  # the store was closed first: the lease expires by itself
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        rate = self._limits.rate_for(lease.model)
        correction = 0
        if rate is not None and rate.tpm is not None:
            correction = self._token_correction(admission)
        await store.release(lease, rate=rate, correction=correction)

    async def _acquire(self, state: _ModelState, admission: Admission) -> bool:
        """Take the model slot, pass the gate, take the global slot (see the module docs).

        Like trio's own primitives, admission is a checkpoint whether or not it waits: this
        checks for cancellation first and takes whatever is free without blocking; the caller
        yields once (shielded) when nothing had to wait. This fast path saves two scheduler
        round trips per request (benchmarks/bench_pool.py); ``test_admission_is_a_checkpoint``
        pins its behaviour.

        Returns:
            Whether it waited (yielded to the scheduler). On any exception no slot is held.
        """
        self._waiting += 1
        state.waiting += 1
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            try:
                state.limiter.acquire_on_behalf_of_nowait(admission)
            except trio.WouldBlock:
                await state.limiter.acquire_on_behalf_of(admission)
                waited = True
            try:
                if state.requests is None and state.tokens is None:
                    waited = await self._pass_pause(state, admission) or waited
                else:
                    waited = await self._pass_gate(state, admission) or waited
            except BaseException:
                state.limiter.release_on_behalf_of(admission)
                raise
            return waited
        finally:
            self._waiting -= 1
            state.waiting -= 1

    async def _pass_pause(self, state: _ModelState, admission: Admission) -> bool:
        """No rate limit: wait out any Retry-After pause, take a global slot; whether it waited.

        No gate here: without buckets there is nothing to hand out in order but the global
        slots, and the global limiter is already FIFO.
        """
        waited = False
        while True:
            while state.paused_until > trio.current_time():
                await trio.sleep_until(state.paused_until)
                waited = True
            try:
                self._global.acquire_on_behalf_of_nowait(admission)
            except trio.WouldBlock:
                await self._global.acquire_on_behalf_of(admission)
                waited = True
            # A Retry-After may have landed while we waited for the slot.
            if state.paused_until <= trio.current_time():
                return waited
            self._global.release_on_behalf_of(admission)

    async def _pass_gate(self, state: _ModelState, admission: Admission) -> bool:
        """Rate-limited model: in FIFO order, wait for pause and buckets, take a global slot.

        Returns:
            Whether it waited (yielded to the scheduler).
        """
        waited = False
        try:
            state.gate.acquire_nowait()
        except trio.WouldBlock:
            await state.gate.acquire()
            waited = True
        try:
            while True:
                delay = state.delay(admission.estimated_tokens, trio.current_time())
                if delay > 0:
                    # Wake early when a finished request gives unused tokens back: the
                    # delay was computed from the level before that correction.
                    with trio.move_on_after(delay):
                        await state.credited.wait()
                    waited = True
                    continue
                try:
                    self._global.acquire_on_behalf_of_nowait(admission)
                except trio.WouldBlock:
                    await self._global.acquire_on_behalf_of(admission)
                    waited = True
                # Waiting for the global slot took time: a correction or a Retry-After may
                # have landed meanwhile; debit only if the gate is still open.
                now = trio.current_time()
                if state.delay(admission.estimated_tokens, now) <= 0:
                    if state.requests is not None:
                        state.requests.take(1, now)
                    if state.tokens is not None:
                        state.tokens.take(admission.estimated_tokens, now)
                    return waited
                self._global.release_on_behalf_of(admission)
        finally:
            state.gate.release()

    def _settle(self, admission: Admission, exc: BaseException | None) -> None:
        """On leaving the block: count a silent exit, settle the TPM reservation."""
        if not admission.reported:
            kind = "cancelled" if isinstance(exc, trio.Cancelled) else "unreported"
            admission._failures += 1
            self._record_failure(
                admission,
                kind=kind,
                status=None,
                retry_after=None,
                ttft=None,
                prompt_tokens=0,
                completion_tokens=0,
            )
        bucket = admission._state.tokens
        if bucket is not None:
            correction = self._token_correction(admission)
            if correction:
                bucket.give_back(correction, trio.current_time())
                if correction > 0:
                    admission._state.credited.set()
                    admission._state.credited = trio.Event()

    @staticmethod
    def _token_correction(admission: Admission) -> int:
        """Tokens to give back to the TPM bucket when the request ends (negative: charge)."""
        correction = admission.estimated_tokens - admission._used
        if not (admission._succeeded or admission._last_refused):
            # The server may have counted it: keep the reservation, charge any excess.
            correction = min(0, correction)
        return correction

    def _count_usage(
        self, admission: Admission, prompt_tokens: int, completion_tokens: int, now: float
    ) -> None:
        prompt_tokens = max(0, int(prompt_tokens))
        completion_tokens = max(0, int(completion_tokens))
        admission._used += prompt_tokens + completion_tokens
        self._prompt_tokens += prompt_tokens
        self._completion_tokens += completion_tokens
        if self._throughput is None:
            self._throughput = RateMeter(now=admission.admitted_at)
        self._throughput.add(completion_tokens, now)

    def _record_success(
        self,
        admission: Admission,
        *,
        ttft: float | None,
        duration: float,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        now = trio.current_time()
        state = admission._state
        self._count_usage(admission, prompt_tokens, completion_tokens, now)
        self._succeeded += 1
        if ttft is not None and math.isfinite(ttft) and ttft >= 0:
            self._ttft.add(ttft, now)
            state.ttft.add(ttft, now)
        if math.isfinite(duration) and duration >= 0:
            self._latency.add(duration, now)
            state.latency.add(duration, now)
        if self._limits.adaptive:
            state.adaptive.on_success(now)
            self._apply_limit(state)

    def _record_failure(
        self,
        admission: Admission,
        *,
        kind: str,
        status: int | None,
        retry_after: float | None,
        ttft: float | None,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        now = trio.current_time()
        state = admission._state
        self._count_usage(admission, prompt_tokens, completion_tokens, now)
        self._failed[kind] = self._failed.get(kind, 0) + 1
        if ttft is not None and math.isfinite(ttft) and ttft >= 0:
            self._ttft.add(ttft, now)
            state.ttft.add(ttft, now)
        if not (status in OVERLOAD_STATUSES or kind in OVERLOAD_KINDS):
            return
        if not self._limits.adaptive:
            # Non-adaptive limits promise requests wait only for the configured limits, and
            # `Limits.unlimited()` (the client's default) that none ever waits: a Retry-After
            # must not hold up unrelated requests there. The refused request's own retry
            # still honours it through the RetryPolicy.
            return
        # The status, when there is one, says which signal it is; an in-band error has only
        # its kind.
        capacity = status == CAPACITY_STATUS if status is not None else kind == CAPACITY_KIND
        state.adaptive.on_overload(
            admitted_epoch=admission._epoch, in_flight=state.active, now=now, capacity=capacity
        )
        self._apply_limit(state)
        if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
            state.paused_until = max(state.paused_until, now + min(retry_after, self._max_pause))

    @staticmethod
    def _apply_limit(state: _ModelState) -> None:
        # trio allows shrinking below the borrowed count: holders keep their slots and new
        # acquisitions wait until enough are returned.
        if state.limiter.total_tokens != state.adaptive.limit:
            state.limiter.total_tokens = state.adaptive.limit

    def statistics(self) -> PoolStatistics:
        """A frozen snapshot of the counters, per-model state and rolling metrics.

        Must be called inside ``trio.run`` (the rolling windows age by ``trio.current_time()``).
        """
        now = trio.current_time()
        models = {
            model: ModelStatistics(
                model=model,
                active=state.active,
                waiting=state.waiting,
                limit=state.configured,
                effective_limit=int(state.limiter.total_tokens),
                paused_for=max(0.0, state.paused_until - now),
                time_to_first_token=state.ttft.percentiles(now),
                latency=state.latency.percentiles(now),
            )
            for model, state in self._models.items()
        }
        return PoolStatistics(
            total=self._total,
            succeeded=self._succeeded,
            failed=self._failed,
            active=self._active,
            waiting=self._waiting,
            max_concurrent=self._limits.max_concurrent,
            utilization=self._active / self._limits.max_concurrent,
            models=models,
            latency=self._latency.percentiles(now),
            time_to_first_token=self._ttft.percentiles(now),
            prompt_tokens=self._prompt_tokens,
            completion_tokens=self._completion_tokens,
            tokens_per_second=0.0 if self._throughput is None else self._throughput.rate(now),
        )

    def counts(self) -> tuple[tuple[str, int, int, int], ...]:
        """Per model: ``(model, active, waiting, effective_limit)``, read without trio.

        Unlike :meth:`statistics`, this calls no trio function, so it may be called from any
        thread (an OpenTelemetry metric reader calls its gauge callbacks from its own). The
        model table is copied in one step (a single C call, atomic under the GIL) before its
        plain integers are read; a count may be a request behind the trio thread.
        """
        return tuple(
            (model, state.active, state.waiting, int(state.limiter.total_tokens))
            for model, state in self._models.copy().items()
        )
