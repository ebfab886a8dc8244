# Fleet-wide limits in Redis: concurrency caps held as leases, RPM/TPM token buckets in Lua.
"""One concurrency cap and one rate limit per model across processes and machines.

A :class:`LimitStore` (opened by :func:`open_limit_store`, or by a pool whose
``Limits(store="redis://…")`` names one) gives a :class:`~holysheep_trio.Pool` a second
admission step, after its local one, taken in **one round trip** (one Lua script):

- **Slots as leases.** ``max_concurrent`` and the model's ``per_model`` limit are caps on the
  whole fleet: each is a sorted set of lease ids scored by expiry. A script drops expired
  leases, checks both caps, and adds the lease to both. A lease lives ``lease_time`` seconds
  (default :data:`DEFAULT_LEASE_TIME`); the store's own task renews the leases of this process
  every ``lease_time / 3``, so a request may run as long as it likes, while the slots of a
  process killed with ``kill -9`` come back ``lease_time`` after its last renewal.
- **Rate limits.** A model's :class:`~holysheep_trio.RateLimit` is a token bucket in Redis, the
  same as the local one (``rpm`` / ``tpm`` tokens, refilled at a minute's allowance per minute,
  starting full), debited in the same script as the slots; a refused request learns how long
  to wait. The TPM bucket is corrected when the request ends, as locally.
- **Clock.** Every script reads Redis's ``TIME``: expiry and refill do not depend on the
  workers' clocks.
- **Waiting.** In each process, one request per model at a time asks Redis (a FIFO lock); the
  others queue behind it. A full cap is asked again when this process releases a slot, or after
  ``poll_interval``; a rate limit after the delay the script computed.
- **Failures.** As the Redis ledger: unreachable Redis fails admissions at once with
  :class:`~holysheep_trio.LedgerUnavailableError`, or with ``fail_open`` admits on the local
  limits alone and says so in one WARNING per outage. Releases are shielded and bounded; a
  release that cannot reach Redis is left to the lease's expiry.

Keys (one hash tag, so one Redis Cluster slot): ``{prefix}:limits:slots`` (all models),
``{prefix}:limits:slots:MODEL`` and ``{prefix}:limits:rate:MODEL``.
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from ._groups import BlockGuard
from ._redis import (
    Outage,
    RedisTarget,
    call_redis,
    check_key_prefix,
    key_tag,
    logger,
    open_redis,
    parse_redis_url,
)
from .errors import ConfigurationError, LedgerUnavailableError

if TYPE_CHECKING:
    import coredis

    from .pool import RateLimit

__all__ = [
    "DEFAULT_LEASE_TIME",
    "DEFAULT_POLL_INTERVAL",
    "Lease",
    "LimitStore",
    "open_limit_store",
]

#: Seconds a concurrency slot is held without renewal: how long the slots of a killed process
#: stay taken (at most).
DEFAULT_LEASE_TIME: Final = 30.0
#: Seconds between two asks of Redis while a cap is full and this process released nothing.
DEFAULT_POLL_INTERVAL: Final = 0.02
#: Bound on giving a lease back (clean-up is bounded; a lease not given back expires).
RELEASE_TIMEOUT: Final = 2.0

# KEYS: the fleet's slots, the model's slots, the model's buckets.
_LEVEL: Final = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stamp = string.format('%.6f', now)
local function level(name, capacity)
  local v = redis.call('HMGET', KEYS[3], name .. ':level', name .. ':at')
  if not v[1] then return capacity end
  local found = tonumber(v[1]) + (now - tonumber(v[2])) * capacity / 60
  if found > capacity then return capacity end
  return found
end
-- Once every bucket is full again the hash says nothing a missing one would not: let it go.
local function store(levels)
  local idle = 0
  for name, pair in pairs(levels) do
    local value, capacity = pair[1], pair[2]
    redis.call('HSET', KEYS[3], name .. ':level', string.format('%.17g', value),
               name .. ':at', stamp)
    idle = math.max(idle, (capacity - value) * 60 / capacity)
  end
  redis.call('PEXPIRE', KEYS[3], math.ceil(idle * 1000) + 1000)
end
"""

# ARGV: lease id, lease time, fleet cap, model cap, rpm, tpm ('' = none), tokens.
_ADMIT: Final = (
    _LEVEL
    + r"""
local id, lease = ARGV[1], tonumber(ARGV[2])
local cap, model_cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local rpm, tpm, tokens = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', stamp)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', stamp)
if redis.call('ZCARD', KEYS[1]) >= cap or redis.call('ZCARD', KEYS[2]) >= model_cap then
  return {'full', '0'}
end
local delay, levels = 0, {}
local function check(name, capacity, amount)
  local found = level(name, capacity)
  local missing = math.min(amount, capacity) - found
  if missing > 1e-9 then delay = math.max(delay, missing * 60 / capacity) end
  levels[name] = {found - amount, capacity}
end
if rpm then check('r', rpm, 1) end
if tpm then check('t', tpm, tokens) end
if delay > 0 then return {'rate', string.format('%.6f', delay)} end
if rpm or tpm then store(levels) end
local expires = string.format('%.6f', now + lease)
redis.call('ZADD', KEYS[1], expires, id)
redis.call('ZADD', KEYS[2], expires, id)
return {'ok', stamp}
"""
)

# ARGV: lease id, tpm ('' = none), tokens to give back (negative: charge more).
_RELEASE: Final = (
    _LEVEL
    + r"""
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local tpm, correction = tonumber(ARGV[2]), tonumber(ARGV[3])
if tpm and correction ~= 0 then
  store({t = {math.min(tpm, level('t', tpm) + correction), tpm}})
end
return 1
"""
)

# KEYS: the fleet's slots, then one model's slots per lease; ARGV: lease time, the lease ids.
_RENEW: Final = r"""
local t = redis.call('TIME')
local expires = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000 + ARGV[1])
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', expires, ARGV[i])
  redis.call('ZADD', KEYS[i], 'XX', 'CH', expires, ARGV[i])
end
return renewed
"""


@attrs.frozen(kw_only=True)
class Lease:
    """A request's slots in the fleet (from :meth:`LimitStore.acquire`).

    Attributes:
        id: The lease id (the member of the slot sets).
        model: The model.
    """

    id: str
    model: str


class LimitStore:
    """Fleet-wide concurrency caps and rate limits in Redis. Open with :func:`open_limit_store`.

    Give it to ``Limits(store=...)``; every pool using it admits its requests against the
    same caps and buckets as every other process using the same Redis and key prefix (see the
    module docs and ``docs/fleet.md``). All processes should use the same :class:`Limits`.
    """

    def __init__(
        self,
        client: coredis.Redis[str],
        *,
        target: RedisTarget,
        lease_time: float,
        poll_interval: float,
    ) -> None:
        self._client = client
        self._target = target
        self._lease_time = lease_time
        self._poll_interval = poll_interval
        tag = key_tag(target.key_prefix)
        self._prefix = f"{tag}:limits:"
        self._admit_script = client.register_script(_ADMIT)
        self._release_script = client.register_script(_RELEASE)
        self._renew_script = client.register_script(_RENEW)
        self._outage = Outage(
            location=target.location,
            fail_open=target.fail_open,
            retry_interval=target.retry_interval,
        )
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._ids = itertools.count()
        self._held: dict[str, str] = {}  # lease id -> model
        self._gates: dict[str, trio.Lock] = {}
        self._released = trio.Event()
        self._closed = False

    def __repr__(self) -> str:
        return f"<LimitStore {self._target.location} held={len(self._held)}>"

    @property
    def url(self) -> str:
        """The Redis URL, without credentials."""
        return self._target.url

    @property
    def key_prefix(self) -> str:
        """The prefix of the keys (limits under different prefixes are independent)."""
        return self._target.key_prefix

    @property
    def lease_time(self) -> float:
        """Seconds a slot lives without renewal."""
        return self._lease_time

    @property
    def fail_open(self) -> bool:
        """Whether admissions fall back to the local limits while Redis is unreachable."""
        return self._target.fail_open

    @property
    def held(self) -> int:
        """Leases this process holds now."""
        return len(self._held)

    @property
    def outages(self) -> int:
        """How many outages began since the store was opened."""
        return self._outage.outages

    def _keys(self, model: str) -> list[str]:
        return [
            self._prefix + "slots",
            f"{self._prefix}slots:{model}",
            f"{self._prefix}rate:{model}",
        ]

    async def acquire(
        self,
        model: str,
        *,
        max_concurrent: int,
        model_limit: int,
        rate: RateLimit | None,
        tokens: int,
    ) -> Lease | None:
        """Wait for a slot of the fleet and of the model, and for the model's buckets.

        Args:
            model: The model.
            max_concurrent: The fleet's cap on requests in flight.
            model_limit: The fleet's cap on requests of the model in flight.
            rate: The model's rate limit, if any.
            tokens: Tokens to take from the TPM bucket.

        Returns:
            The lease, or None when admitted on the local limits alone (``fail_open`` during
            an outage).

        Raises:
            LedgerUnavailableError: Redis is unreachable (without ``fail_open``).
        """
        if self._closed:
            raise LedgerUnavailableError(f"the limit store at {self._target.location} is closed")
        gate = self._gates.get(model)
        if gate is None:
            gate = self._gates[model] = trio.Lock()
        lease = Lease(id=f"{self._owner}:{next(self._ids)}", model=model)
        args = [
            lease.id,
            repr(self._lease_time),
            str(max_concurrent),
            str(model_limit),
            "" if rate is None or rate.rpm is None else str(rate.rpm),
            "" if rate is None or rate.tpm is None else str(rate.tpm),
            str(tokens),
        ]
        keys = self._keys(model)
        async with gate:
            while True:
                released = self._released
                try:
                    reply: Any = await call_redis(
                        self._outage,
                        lambda: self._admit_script(keys=keys, args=args),
                        doing="admitting",
                        limit=self._target.timeout,
                    )
                except LedgerUnavailableError:
                    if self._target.fail_open:
                        return None
                    raise
                status, value = reply[0], reply[1]
                if status == "ok":
                    self._held[lease.id] = model
                    return lease
                if status == "rate":
                    await trio.sleep(float(value))
                    continue
                # Full: another request of this process ending frees a slot we may take.
                with trio.move_on_after(self._poll_interval):
                    await released.wait()

    async def release(self, lease: Lease, *, rate: RateLimit | None, correction: int = 0) -> None:
        """Give a lease back and correct the TPM bucket; shielded, bounded, never raises.

        Args:
            lease: The lease.
            rate: The model's rate limit (for the TPM correction).
            correction: Tokens to give back to the TPM bucket (negative: to charge).
        """
        self._held.pop(lease.id, None)
        self._released.set()
        self._released = trio.Event()
        if self._closed:  # the connection is gone: the lease expires by itself
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        tpm = "" if rate is None or rate.tpm is None else str(rate.tpm)
        keys = self._keys(lease.model)
        with trio.move_on_after(RELEASE_TIMEOUT, shield=True):
            try:
                await call_redis(
                    self._outage,
                    lambda: self._release_script(keys=keys, args=[lease.id, tpm, str(correction)]),
                    doing="releasing",
                    limit=min(self._target.timeout, RELEASE_TIMEOUT),
                )
            except LedgerUnavailableError:
                pass  # the lease expires by itself
            except Exception:
                logger.exception("releasing a lease in %s failed", self._target.location)

    async def _renew(self) -> None:
        held = list(self._held.items())
        if not held:
            return
        keys = [self._prefix + "slots"] + [f"{self._prefix}slots:{model}" for _, model in held]
        args = [repr(self._lease_time)] + [lease_id for lease_id, _ in held]
        try:
            renewed: Any = await call_redis(
                self._outage,
                lambda: self._renew_script(keys=keys, args=args),
                doing="renewing leases",
                limit=self._target.timeout,
            )
        except LedgerUnavailableError:
            return
        if isinstance(renewed, int) and renewed < len(held):
            logger.debug("%d leases had expired before renewal", len(held) - renewed)

    async def _renew_forever(self, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        while True:
            await trio.sleep(self._lease_time / 3)
            await self._renew()


@asynccontextmanager
async def open_limit_store(
    url: str,
    *,
    key_prefix: str | None = None,
    lease_time: float | None = None,
    fail_open: bool | None = None,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
) -> AsyncIterator[LimitStore]:
    """Open fleet-wide limits in Redis; use with ``async with``. Leaving the block closes them.

    Pass the store to ``Limits(store=...)``. Its task renews this process's leases until the
    block is left (see :class:`LimitStore`).

    Args:
        url: ``redis://[user:password@]host[:port][/db]`` or ``rediss://…``, optionally with
            ``?key_prefix=…&lease_time=…&fail_open=true``.
        key_prefix: The prefix of the keys (overrides the URL's; default ``"holysheep"``).
        lease_time: Seconds a slot lives without renewal (overrides the URL's; default
            :data:`DEFAULT_LEASE_TIME`): a killed process's slots come back after at most this.
        fail_open: While Redis is unreachable, admit on the local limits alone (overrides the
            URL's; default False: fail closed with
            :class:`~holysheep_trio.LedgerUnavailableError`).
        poll_interval: Seconds between asks while a cap is full.

    Yields:
        The :class:`LimitStore`.

    Raises:
        ConfigurationError: A bad URL or option, or coredis is missing (the ``redis`` extra).
    """
    target = parse_redis_url(url)
    if key_prefix is not None:
        target = attrs.evolve(target, key_prefix=check_key_prefix(key_prefix))
    if fail_open is not None:
        if not isinstance(fail_open, bool):
            raise ConfigurationError(f"fail_open must be True or False, got {fail_open!r}")
        target = attrs.evolve(target, fail_open=fail_open)
    lease = lease_time if lease_time is not None else target.lease_time or DEFAULT_LEASE_TIME
    for name, value in (("lease_time", lease), ("poll_interval", poll_interval)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ConfigurationError(f"{name} must be a number of seconds > 0, got {value!r}")
    guard = BlockGuard()
    async with open_redis(target) as client, guard.outer():
        store = LimitStore(
            client, target=target, lease_time=float(lease), poll_interval=float(poll_interval)
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(store._renew_forever)
            try:
                async with guard.inner():
                    yield store
            finally:
                store._closed = True
                nursery.cancel_scope.cancel()
