# The Redis ledger: the ledger rules of _core.py ported to Lua, one atomic script per call.
"""``redis://HOST:PORT/DB``: a ledger shared by every process and machine that reaches one Redis.

- **Atomicity.** Reserve, settle, renew, report and configure are each one Lua script
  (``EVALSHA``): Redis runs a script alone, so a hold reads the totals and writes its row with
  nothing in between, across both periods. The scripts port :mod:`holysheep_trio.ledger._core`
  line by line (``sweep``, ``apply_hold``, ``apply_settle``, ``apply_renew``, ``read_report``)
  over the same primitives as the other stores; the tests run the same random scenarios
  against memory, SQLite and Redis and compare every answer.
- **Integers.** Redis's Lua has only doubles (exact to 2⁵³) and amounts are picodollars (up to
  10¹⁸ and more), so the scripts do their sums on two base-10⁹ limbs and hand Redis decimal
  strings (``HINCRBY`` is 64-bit); every total is exact to the picodollar, as in SQLite.
- **Keys.** Eight keys per budget, all under one hash tag ``{key_prefix}`` so that they live in
  one Redis Cluster slot: ``:budget:meta`` (zone, limits), ``:budget:spent`` and
  ``:budget:reserved`` (hashes over ``day:…`` / ``month:…``), ``:budget:rows`` (reservation id
  -> JSON row), ``:budget:live`` and ``:budget:tombs`` (ids by expiry), ``:budget:usage``
  (``d|DAY|MODEL|COUNTER`` and ``m|MONTH|MODEL|COUNTER``) and ``:budget:models``.
- **Clock.** A script reads "now" from Redis's ``TIME``, so every worker agrees on it whatever
  its own clock says. The day and month of that instant are computed here, in the budget's
  zone (Lua has no time zones): the script is given the day it is expected to fall in and the
  day's bounds, and answers ``stale`` with the server's time when it does not, and the call is
  made again for the right day. The budget's own clock (its waits, its hints) follows the
  server's too (:attr:`RedisLedger.server_calendar`).
- **Failures.** Unreachable Redis fails a call at once with
  :class:`~holysheep_trio.LedgerUnavailableError` (see :class:`holysheep_trio._redis.Outage`);
  with ``fail_open`` the ledger falls back to a local memory ledger seeded with the last
  totals it saw, keeps the reservations it granted there until they settle, and goes back to
  Redis as soon as it answers. Spend counted locally during an outage is not added to Redis.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import trio

from .._redis import (
    Outage,
    RedisTarget,
    call_redis,
    check_key_prefix,
    key_tag,
    logger,
    open_redis,
    parse_redis_url,
)
from ..errors import ConfigurationError, LedgerError, LedgerUnavailableError
from ._calendar import Calendar, Periods, day_end, periods_at
from ._core import (
    TOMBSTONE_SECONDS,
    Hold,
    HoldRequest,
    LedgerReport,
    Limits,
    PeriodName,
    RenewRequest,
    SettleRequest,
    Totals,
    UsageTotals,
    Verdict,
)
from ._memory import MemoryLedger

if TYPE_CHECKING:
    import coredis

__all__ = ["SCHEMA_VERSION", "RedisLedger", "open_redis_ledger"]

SCHEMA_VERSION: Final = "1"
_FAR: Final = "1e300"  # a day bound that never makes a script answer "stale"
_STALE_TRIES: Final = 3
_KEYS: Final = ("meta", "spent", "reserved", "rows", "live", "tombs", "usage", "models")
_COUNTERS: Final = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "cancelled",
    "expired",
)

# ---------------------------------------------------------------------------------- Lua

# The store primitives and the rules, shared by the scripts. KEYS are _KEYS in order; ARGV[1]
# is "now" ('' for the server's TIME), ARGV[2..5] the expected day, month and day bounds.
_PRELUDE: Final = r"""
local K_META, K_SPENT, K_RESERVED, K_ROWS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_LIVE, K_TOMBS, K_USAGE, K_MODELS = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local B = 1000000000
local ZERO = {0, 0}

-- Non-negative integers as two base-10^9 limbs {high, low}: exact far beyond 2^53.
local function num(s)
  if not s then return {0, 0} end
  local n = #s
  if n <= 9 then return {0, tonumber(s)} end
  return {tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))}
end
local function add(a, b)
  local hi, lo = a[1] + b[1], a[2] + b[2]
  if lo >= B then lo = lo - B; hi = hi + 1 end
  return {hi, lo}
end
local function sub(a, b)
  local hi, lo = a[1] - b[1], a[2] - b[2]
  if lo < 0 then lo = lo + B; hi = hi - 1 end
  return {hi, lo}
end
local function cmp(a, b)
  if a[1] ~= b[1] then if a[1] < b[1] then return -1 end return 1 end
  if a[2] ~= b[2] then if a[2] < b[2] then return -1 end return 1 end
  return 0
end
local function iszero(a) return a[1] == 0 and a[2] == 0 end
local function str(a)
  if a[1] == 0 then return string.format('%d', a[2]) end
  return string.format('%d%09d', a[1], a[2])
end
local function int(n) return string.format('%d', n) end
local function stamp(t) return string.format('%.6f', t) end

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local DAY, MONTH = ARGV[2], ARGV[3]
if now < tonumber(ARGV[4]) or now >= tonumber(ARGV[5]) then
  return {'stale', stamp(now)}
end

local function hincr(key, field, a, sign)
  if iszero(a) then return end
  if redis.call('HINCRBY', key, field, sign .. str(a)) == 0 then
    redis.call('HDEL', key, field)
  end
end

local function get(id)
  local v = redis.call('HGET', K_ROWS, id)
  if not v then return nil end
  local r = cjson.decode(v)
  return {id = id, owner = r.o, model = r.m, day = r.d, month = r.n, amount = num(r.a),
          credit = num(r.c), live = r.l == 1, created = tonumber(r.t), expires = tonumber(r.e)}
end
local function unindex(old)
  if old.live then
    hincr(K_RESERVED, 'day:' .. old.day, old.amount, '-')
    hincr(K_RESERVED, 'month:' .. old.month, old.amount, '-')
    redis.call('ZREM', K_LIVE, old.id)
  else
    redis.call('ZREM', K_TOMBS, old.id)
  end
end
local function put(r)
  local old = get(r.id)
  if old then unindex(old) end
  redis.call('HSET', K_ROWS, r.id, cjson.encode({
    o = r.owner, m = r.model, d = r.day, n = r.month, a = str(r.amount), c = str(r.credit),
    l = r.live and 1 or 0, t = stamp(r.created), e = stamp(r.expires)}))
  if r.live then
    hincr(K_RESERVED, 'day:' .. r.day, r.amount, '')
    hincr(K_RESERVED, 'month:' .. r.month, r.amount, '')
    redis.call('ZADD', K_LIVE, stamp(r.expires), r.id)
  else
    redis.call('ZADD', K_TOMBS, stamp(r.expires), r.id)
  end
end
local function delete(id)
  local old = get(id)
  if old then
    unindex(old)
    redis.call('HDEL', K_ROWS, id)
  end
end

local function spend(day, month, a)
  if not iszero(a) then
    hincr(K_SPENT, 'day:' .. day, a, '')
    hincr(K_SPENT, 'month:' .. month, a, '')
  end
end
local COUNTERS = {'requests', 'prompt_tokens', 'completion_tokens', 'cancelled', 'expired'}
local function add_usage(day, month, model, u)
  redis.call('SADD', K_MODELS, model)
  -- u.cost is a limb pair, subtracted when u.refund (a late settlement's refund)
  local cost = '0'
  if u.cost and not iszero(u.cost) then
    cost = str(u.cost)
    if u.refund then cost = '-' .. cost end
  end
  for _, scope in ipairs({'d|' .. day .. '|', 'm|' .. month .. '|'}) do
    local base = scope .. model .. '|'
    for _, name in ipairs(COUNTERS) do
      redis.call('HINCRBY', K_USAGE, base .. name, int(u[name] or 0))
    end
    redis.call('HINCRBY', K_USAGE, base .. 'cost', cost)
  end
end

local function due()
  local rows = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_LIVE, '-inf', stamp(now))) do
    rows[#rows + 1] = get(id)
  end
  return rows
end
local function sweep()
  for _, r in ipairs(due()) do
    spend(r.day, r.month, r.amount)
    add_usage(r.day, r.month, r.model, {cost = r.amount, expired = 1})
    r.credit = add(r.credit, r.amount)
    r.amount = ZERO
    r.live = false
    put(r)
  end
  local before = '(' .. stamp(now - TOMBSTONE)
  local old = redis.call('ZRANGEBYSCORE', K_TOMBS, '-inf', before)
  for _, id in ipairs(old) do redis.call('HDEL', K_ROWS, id) end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', K_TOMBS, '-inf', before) end
end

local function totals(day, month)
  return {day = day, month = month,
          ds = num(redis.call('HGET', K_SPENT, 'day:' .. day)),
          dr = num(redis.call('HGET', K_RESERVED, 'day:' .. day)),
          ms = num(redis.call('HGET', K_SPENT, 'month:' .. month)),
          mr = num(redis.call('HGET', K_RESERVED, 'month:' .. month))}
end
local function next_expiry()
  local first = redis.call('ZRANGE', K_LIVE, 0, 0, 'WITHSCORES')
  if #first == 0 then return '' end
  return first[2]
end

-- The charge of a retry or a settlement: ARGV[c .. c+4] = present, cost, prompt, completion,
-- cancelled.
local function charge_at(c)
  if ARGV[c] ~= '1' then return nil end
  return {cost = num(ARGV[c + 1]), prompt = tonumber(ARGV[c + 2]),
          completion = tonumber(ARGV[c + 3]), cancelled = ARGV[c + 4] == '1'}
end
-- _core._charge: the cost replaces a tombstone's credit (the excess added, the rest refunded);
-- ch == nil: the attempt cost nothing.
local function apply_charge(r, ch)
  local cost, prompt, completion = ZERO, 0, 0
  if ch then cost, prompt, completion = ch.cost, ch.prompt, ch.completion end
  local expired = 0
  if not iszero(r.credit) then expired = -1 end
  local difference, refund
  if cmp(cost, r.credit) >= 0 then
    difference, refund = sub(cost, r.credit), false
    spend(r.day, r.month, difference)
  else
    difference, refund = sub(r.credit, cost), true
    hincr(K_SPENT, 'day:' .. r.day, difference, '-')
    hincr(K_SPENT, 'month:' .. r.month, difference, '-')
  end
  r.credit = ZERO
  add_usage(r.day, r.month, r.model, {prompt_tokens = prompt, completion_tokens = completion,
                                      cost = difference, refund = refund, expired = expired})
end
local function totals_reply(status, period, t, wake)
  return {status, period or '', t.day, t.month, str(t.ds), str(t.dr), str(t.ms), str(t.mr),
          wake or '', stamp(now)}
end
"""

# ARGV[6..] = id, owner, model, amount, expires_in, daily limit, monthly limit ('' = none),
# then the charge (ARGV[13..17]).
_HOLD: Final = r"""
local id, owner, model = ARGV[6], ARGV[7], ARGV[8]
local amount, expires_in = num(ARGV[9]), tonumber(ARGV[10])
local LD, LM = nil, nil
if ARGV[11] ~= '' then LD = num(ARGV[11]) end
if ARGV[12] ~= '' then LM = num(ARGV[12]) end
local ch = charge_at(13)

local function decide(t, needed)
  if LD and cmp(add(t.ds, needed), LD) > 0 then return 'exceeded', 'daily' end
  if LM and cmp(add(t.ms, needed), LM) > 0 then return 'exceeded', 'monthly' end
  if LD and cmp(add(add(t.ds, t.dr), needed), LD) > 0 then return 'wait', 'daily' end
  if LM and cmp(add(add(t.ms, t.mr), needed), LM) > 0 then return 'wait', 'monthly' end
  return 'granted', nil
end
local function verdict_for(t)
  if iszero(amount) then return 'granted', nil end
  return decide(t, amount)
end

sweep()
local row = get(id)
if not row then
  if ch then
    row = {id = id, owner = owner, model = model, day = DAY, month = MONTH, amount = ZERO,
           credit = ZERO, live = false, created = now, expires = now + expires_in}
  else
    local t = totals(DAY, MONTH)
    local verdict, period = verdict_for(t)
    if verdict ~= 'granted' then return totals_reply(verdict, period, t, next_expiry()) end
    put({id = id, owner = owner, model = model, day = DAY, month = MONTH, amount = amount,
         credit = ZERO, live = true, created = now, expires = now + expires_in})
    return totals_reply('granted', nil, totals(DAY, MONTH), nil)
  end
end
if ch then apply_charge(row, ch) end
row.amount = ZERO
put(row)
local t = totals(row.day, row.month)
local verdict, period = verdict_for(t)
if verdict ~= 'granted' then return totals_reply(verdict, period, t, next_expiry()) end
row.amount = amount
row.live = true
row.expires = now + expires_in
put(row)
return totals_reply('granted', nil, totals(row.day, row.month), nil)
"""

# ARGV[6..] = id, model, then the charge (ARGV[8..12]).
_SETTLE: Final = r"""
local id, model = ARGV[6], ARGV[7]
local ch = charge_at(8)
sweep()
local row = get(id)
if not row then
  row = {id = id, owner = '', model = model, day = DAY, month = MONTH, amount = ZERO,
         credit = ZERO, live = true, created = now, expires = now}
end
if ch or not iszero(row.credit) then apply_charge(row, ch) end
local cancelled = 0
if ch and ch.cancelled then cancelled = 1 end
add_usage(row.day, row.month, row.model, {requests = 1, cancelled = cancelled})
delete(id)
return totals_reply('ok', nil, totals(DAY, MONTH), nil)
"""

# ARGV[6] = owner, then (id, seconds) pairs. Answers the ids extended.
_RENEW: Final = r"""
local owner = ARGV[6]
sweep()
local renewed = {}
for i = 7, #ARGV, 2 do
  local r = get(ARGV[i])
  if r and r.live and r.owner == owner then
    local expires = now + tonumber(ARGV[i + 1])
    if expires > r.expires then r.expires = expires end
    put(r)
    renewed[#renewed + 1] = r.id
  end
end
return {'renewed', stamp(now), renewed}
"""

# Writes nothing. Answers the totals (due reservations counted as spent), the live count,
# the meta hash and the usage per model of the day and of the month, flattened.
_REPORT: Final = r"""
local t = totals(DAY, MONTH)
local function usage(scope)
  local found, order = {}, {}
  for _, model in ipairs(redis.call('SMEMBERS', K_MODELS)) do
    local base = scope .. model .. '|'
    local v = redis.call('HMGET', K_USAGE, base .. 'requests', base .. 'prompt_tokens',
                         base .. 'completion_tokens', base .. 'cost', base .. 'cancelled',
                         base .. 'expired')
    if v[1] then
      found[model] = {v[1], v[2], v[3], num(v[4]), tonumber(v[5]), tonumber(v[6])}
      order[#order + 1] = model
    end
  end
  return found, order
end
local days, day_order = usage('d|' .. DAY .. '|')
local months, month_order = usage('m|' .. MONTH .. '|')
local function expire_into(found, order, r)
  local u = found[r.model]
  if not u then
    u = {'0', '0', '0', ZERO, 0, 0}
    found[r.model] = u
    order[#order + 1] = r.model
  end
  u[4] = add(u[4], r.amount)
  u[6] = u[6] + 1
end
local rows = due()
for _, r in ipairs(rows) do
  if r.day == DAY then
    t.ds = add(t.ds, r.amount)
    t.dr = sub(t.dr, r.amount)
    expire_into(days, day_order, r)
  end
  if r.month == MONTH then
    t.ms = add(t.ms, r.amount)
    t.mr = sub(t.mr, r.amount)
    expire_into(months, month_order, r)
  end
end
local function flat(found, order)
  local out = {}
  for _, model in ipairs(order) do
    local u = found[model]
    for _, v in ipairs({model, u[1], u[2], u[3], str(u[4]), int(u[5]), int(u[6])}) do
      out[#out + 1] = v
    end
  end
  return out
end
return {'ok', totals_reply('ok', nil, t, nil),
        int(redis.call('ZCARD', K_LIVE) - #rows),
        redis.call('HGETALL', K_META), flat(days, day_order), flat(months, month_order)}
"""

# KEYS[1] = meta; ARGV = zone, daily limit, monthly limit ('' = none), schema version.
_CONFIGURE: Final = r"""
local recorded = redis.call('HGET', KEYS[1], 'timezone')
if recorded and recorded ~= ARGV[1] then return {'zone', recorded} end
local schema = redis.call('HGET', KEYS[1], 'schema')
if schema and schema ~= ARGV[4] then return {'schema', schema} end
redis.call('HSET', KEYS[1], 'timezone', ARGV[1], 'daily_limit', ARGV[2],
           'monthly_limit', ARGV[3], 'schema', ARGV[4])
return {'ok', ''}
"""

_TOMBSTONE_LINE: Final = f"local TOMBSTONE = {int(TOMBSTONE_SECONDS)}\n"


def _script(body: str) -> str:
    return _TOMBSTONE_LINE + _PRELUDE + body


# ---------------------------------------------------------------------------------- Python


def _limit_text(value: int | None) -> str:
    return "" if value is None else str(value)


def _limit_value(text: str | None) -> int | None:
    return None if not text else int(text)


def _charge_args(request: HoldRequest | SettleRequest) -> list[str]:
    charge = request.charge
    if charge is None:
        return ["", "0", "0", "0", "0"]
    return [
        "1",
        str(charge.cost),
        str(max(0, charge.prompt_tokens)),
        str(max(0, charge.completion_tokens)),
        "1" if charge.cancelled else "0",
    ]


def _totals(reply: Sequence[Any]) -> Totals:
    return Totals(
        day=str(reply[2]),
        month=str(reply[3]),
        day_spent=int(reply[4]),
        day_reserved=int(reply[5]),
        month_spent=int(reply[6]),
        month_reserved=int(reply[7]),
    )


def _usage(flat: Sequence[Any]) -> dict[str, UsageTotals]:
    found: dict[str, UsageTotals] = {}
    for index in range(0, len(flat), 7):
        model, requests, prompt, completion, cost, cancelled, expired = flat[index : index + 7]
        found[str(model)] = UsageTotals(
            requests=int(requests),
            prompt_tokens=int(prompt),
            completion_tokens=int(completion),
            cost=int(cost),
            cancelled=int(cancelled),
            expired=int(expired),
        )
    return found


class RedisLedger:
    """A ledger in Redis, shared by every process that reaches it (module docstring).

    Create it with :func:`~holysheep_trio.ledger.open_ledger` (``"redis://HOST:PORT/DB"``).

    Args:
        client: An open coredis client.
        target: Where, and the key prefix.
        calendar: The budget's zone (and the clock used when ``server_clock`` is False).
        read_only: Only reports (the ``usage`` command).
        server_clock: Read "now" from Redis's ``TIME`` (the default). False uses the
            calendar's clock, so tests can move time.
    """

    def __init__(
        self,
        client: coredis.Redis[str],
        *,
        target: RedisTarget,
        calendar: Calendar,
        read_only: bool = False,
        server_clock: bool = True,
    ) -> None:
        self._client = client
        self._target = target
        self._calendar = calendar
        self._read_only = read_only
        self._server_clock = server_clock
        tag = key_tag(target.key_prefix)
        self._keys = [f"{tag}:budget:{name}" for name in _KEYS]
        self._hold_script = client.register_script(_script(_HOLD))
        self._settle_script = client.register_script(_script(_SETTLE))
        self._renew_script = client.register_script(_script(_RENEW))
        self._report_script = client.register_script(_script(_REPORT))
        self._configure_script = client.register_script(_CONFIGURE)
        self._outage = Outage(
            location=target.location,
            fail_open=target.fail_open,
            retry_interval=target.retry_interval,
        )
        # The server's clock minus the calendar's, as of the last answer.
        self._offset = 0.0
        # The day the server's "now" is expected in: (periods, start, end) as Unix times.
        self._period: tuple[Periods, float, float] | None = None
        self._last: Totals | None = None
        self._fallback: MemoryLedger | None = None
        self._fallback_ids: set[str] = set()
        self._limits: Limits | None = None
        self._timezone: str | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<RedisLedger {self._target.location}>"

    @property
    def url(self) -> str:
        """The URL (without credentials), with the key prefix when it is not the default."""
        url = self._target.url
        if self._target.key_prefix != parse_redis_url(url).key_prefix:
            url += f"?key_prefix={self._target.key_prefix}"
        return url

    @property
    def shared(self) -> bool:
        """True: other processes write to it, so waiters poll."""
        return True

    @property
    def server_calendar(self) -> Calendar:
        """The budget's calendar on the Redis server's clock (estimated between answers), so
        the budget's waits and hints use the periods the scripts use."""
        if not self._server_clock:
            return self._calendar
        return Calendar(zone=self._calendar.zone, clock=self._server_now)

    @property
    def outages(self) -> int:
        """How many outages began since the ledger was opened."""
        return self._outage.outages

    def _server_now(self) -> dt.datetime:
        return self._calendar.now() + dt.timedelta(seconds=self._offset)

    # ---- the clock -----------------------------------------------------------------------

    def _learn(self, server_now: float) -> None:
        if self._server_clock:
            self._offset = server_now - self._calendar.now().timestamp()

    def _period_args(self) -> list[str]:
        if not self._server_clock:
            now = self._calendar.now()
            periods = self._calendar.periods(now)
            return [repr(now.timestamp()), periods.day, periods.month, "-" + _FAR, _FAR]
        estimate = self._server_now().timestamp()
        period = self._period
        if period is None or not (period[1] <= estimate < period[2]):
            zone = self._calendar.zone
            moment = dt.datetime.fromtimestamp(estimate, dt.timezone.utc)
            periods = periods_at(moment, zone)
            previous = (dt.date.fromisoformat(periods.day) - dt.timedelta(days=1)).isoformat()
            start = day_end(previous, zone).timestamp()
            period = self._period = (periods, start, day_end(periods.day, zone).timestamp())
        periods, start, end = period
        return ["", periods.day, periods.month, repr(start), repr(end)]

    async def _run(self, script: Any, args: list[str], *, doing: str) -> list[Any]:
        """Run a ledger script for the current day, again if the day was not the server's."""
        if self._closed:
            raise LedgerError(f"ledger {self._target.location} is closed")
        for _ in range(_STALE_TRIES):
            call_args = [*self._period_args(), *args]
            reply: Any = await call_redis(
                self._outage,
                functools.partial(script, keys=self._keys, args=call_args),
                doing=doing,
                limit=self._target.timeout,
            )
            if not isinstance(reply, list) or not reply:
                raise LedgerError(f"Redis answered {doing} with {reply!r}")
            if reply[0] != "stale":
                if len(reply) == 10:  # a hold's or a settlement's totals end with "now"
                    self._learn(float(reply[9]))
                return reply
            self._learn(float(reply[1]))
            self._period = None
        raise LedgerError(f"{doing}: the Redis server's clock keeps changing days")

    # ---- fail open -----------------------------------------------------------------------

    def _local(self) -> MemoryLedger:
        """The local ledger of an outage (fail_open), seeded with the last totals seen."""
        if self._fallback is None:
            fallback = MemoryLedger(calendar=self.server_calendar)
            fallback._limits, fallback._timezone = self._limits, self._timezone
            last = self._last
            if last is not None:
                # What others had spent or held then still counts against the limits.
                store = fallback._store
                store.add_spent("day:" + last.day, last.day_spent + last.day_reserved)
                store.add_spent("month:" + last.month, last.month_spent + last.month_reserved)
            self._fallback = fallback
        return self._fallback

    def _drop_idle_fallback(self) -> None:
        if self._fallback is not None and not self._fallback_ids and not self._outage.down:
            self._fallback = None

    # ---- the ledger ----------------------------------------------------------------------

    async def configure(self, *, limits: Limits, timezone: str) -> None:
        """Record the budget's limits and zone (for the ``usage`` command); check the zone.

        Raises:
            LedgerError: The budget in Redis counts days in another zone, or has another
                schema.
            LedgerUnavailableError: Redis is unreachable (without ``fail_open``).
        """
        self._limits, self._timezone = limits, timezone
        try:
            reply: Any = await call_redis(
                self._outage,
                lambda: self._configure_script(
                    keys=self._keys[:1],
                    args=[
                        timezone,
                        _limit_text(limits.daily),
                        _limit_text(limits.monthly),
                        SCHEMA_VERSION,
                    ],
                ),
                doing="recording the limits",
                limit=self._target.timeout,
            )
        except LedgerUnavailableError:
            if not self._target.fail_open:
                raise
            return
        status, value = reply[0], reply[1]
        if status == "zone":
            raise LedgerError(
                f"the budget at {self._target.location} counts days in {value}, not"
                f" {timezone}: use timezone={value!r} or another key_prefix"
            )
        if status == "schema":
            raise LedgerError(
                f"the budget at {self._target.location} has schema version {value}; this"
                f" version of holysheep-trio reads version {SCHEMA_VERSION}"
            )

    async def exists(self) -> bool:
        """Whether a budget was ever configured under the key prefix.

        Raises:
            LedgerUnavailableError: Redis is unreachable.
        """
        found = await call_redis(
            self._outage,
            lambda: self._client.exists([self._keys[0]]),
            doing="looking for the budget",
            limit=self._target.timeout,
        )
        return bool(found)

    async def hold(self, request: HoldRequest) -> Hold:
        """See :meth:`holysheep_trio.Ledger.hold`."""
        if request.reservation_id in self._fallback_ids:
            return await self._hold_locally(request)
        limits = request.limits
        args = [
            request.reservation_id,
            request.owner,
            request.model,
            str(request.amount),
            repr(float(request.expires_in)),
            _limit_text(limits.daily),
            _limit_text(limits.monthly),
            *_charge_args(request),
        ]
        try:
            reply = await self._run(self._hold_script, args, doing="reserving")
        except LedgerUnavailableError:
            if not self._target.fail_open:
                raise
            return await self._hold_locally(request)
        self._drop_idle_fallback()
        totals = _totals(reply)
        self._last = totals
        verdict: Verdict = reply[0]
        period: PeriodName | None = reply[1] or None
        wake_at = float(reply[8]) if reply[8] else None
        return Hold(verdict=verdict, totals=totals, period=period, wake_at=wake_at)

    async def _hold_locally(self, request: HoldRequest) -> Hold:
        hold = await self._local().hold(request)
        if hold.verdict == "granted":
            self._fallback_ids.add(request.reservation_id)
        return hold

    async def settle(self, request: SettleRequest) -> Totals:
        """See :meth:`holysheep_trio.Ledger.settle`."""
        if request.reservation_id in self._fallback_ids:
            self._fallback_ids.discard(request.reservation_id)
            totals = await self._local().settle(request)
            self._drop_idle_fallback()
            return totals
        args = [request.reservation_id, request.model, *_charge_args(request)]
        try:
            reply = await self._run(self._settle_script, args, doing="settling")
        except LedgerUnavailableError:
            if not self._target.fail_open:
                raise
            # The reservation stays in Redis and expires into spend at its full amount.
            logger.debug("settling %s failed during an outage", request.reservation_id)
            return await self._local().settle(request)
        totals = _totals(reply)
        self._last = totals
        return totals

    async def renew(self, request: RenewRequest) -> frozenset[str]:
        """See :meth:`holysheep_trio.Ledger.renew`.

        Reservations granted locally during an outage are renewed in the local ledger, first.

        Raises:
            LedgerUnavailableError: Redis is unreachable (with ``fail_open`` too: the local
                renewals were made, and the caller keeps the others to renew them later).
        """
        local = tuple(lease for lease in request.leases if lease[0] in self._fallback_ids)
        remote = tuple(lease for lease in request.leases if lease[0] not in self._fallback_ids)
        renewed: set[str] = set()
        if local:
            renewed |= await self._local().renew(RenewRequest(owner=request.owner, leases=local))
        if not remote:
            return frozenset(renewed)
        args = [request.owner]
        for reservation_id, expires_in in remote:
            args += [reservation_id, repr(float(expires_in))]
        reply = await self._run(self._renew_script, args, doing="renewing reservations")
        self._learn(float(reply[1]))
        ids = reply[2] if len(reply) > 2 and isinstance(reply[2], list) else []
        return frozenset(renewed | {str(reservation_id) for reservation_id in ids})

    async def report(self) -> LedgerReport:
        """See :meth:`holysheep_trio.Ledger.report`."""
        try:
            reply = await self._run(self._report_script, [], doing="reading")
        except LedgerUnavailableError:
            if not self._target.fail_open or self._read_only:
                raise
            return await self._local().report()
        _, totals_reply, live, meta_flat, day_flat, month_flat = reply
        totals = _totals(totals_reply)
        self._learn(float(totals_reply[-1]))
        meta: Mapping[str, str] = dict(zip(meta_flat[::2], meta_flat[1::2], strict=True))
        limits = Limits(
            daily=_limit_value(meta.get("daily_limit")),
            monthly=_limit_value(meta.get("monthly_limit")),
        )
        return LedgerReport(
            totals=totals,
            day_models=_usage(day_flat),
            month_models=_usage(month_flat),
            limits=limits if "daily_limit" in meta else None,
            timezone=meta.get("timezone"),
            live=int(live),
        )

    async def aclose(self) -> None:
        """Stop using the connection (the client closes with the :func:`open_ledger` block)."""
        await trio.lowlevel.checkpoint()
        self._closed = True


@asynccontextmanager
async def open_redis_ledger(
    url: str,
    *,
    calendar: Calendar,
    read_only: bool = False,
    key_prefix: str | None = None,
    fail_open: bool | None = None,
    server_clock: bool = True,
) -> AsyncIterator[RedisLedger]:
    """Open the Redis ledger at ``url``; use with ``async with``.

    Args:
        url: ``redis://[user:password@]host[:port][/db][?key_prefix=…&fail_open=…]`` or
            ``rediss://…``.
        calendar: The zone (and, without ``server_clock``, the clock).
        read_only: Only reports; fails if no budget was ever configured under the prefix.
        key_prefix: Overrides the URL's ``key_prefix``.
        fail_open: Overrides the URL's ``fail_open``.
        server_clock: Periods from Redis's ``TIME`` (False: from the calendar, for tests).

    Raises:
        ConfigurationError: A bad URL or option, or coredis is missing.
        LedgerError: ``read_only`` and no budget under the prefix.
        LedgerUnavailableError: ``read_only`` and Redis is unreachable.
    """
    target = parse_redis_url(url)
    changes: dict[str, Any] = {}
    if key_prefix is not None:
        changes["key_prefix"] = check_key_prefix(key_prefix)
    if fail_open is not None:
        if not isinstance(fail_open, bool):
            raise ConfigurationError(f"fail_open must be True or False, got {fail_open!r}")
        changes["fail_open"] = fail_open
    if changes:
        import attrs

        target = attrs.evolve(target, **changes)
    async with open_redis(target) as client:
        ledger = RedisLedger(
            client,
            target=target,
            calendar=calendar,
            read_only=read_only,
            server_clock=server_clock,
        )
        try:
            if read_only and not await ledger.exists():
                raise LedgerError(f"no budget at {target.location}")
            yield ledger
        finally:
            await ledger.aclose()
