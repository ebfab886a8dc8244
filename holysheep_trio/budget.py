# Budgets that are never overshot: reserve the worst case before sending, settle to the bill.
"""Daily and monthly spending limits: :func:`open_budget`, :class:`Budget`, :class:`Reservation`.

The life of one budgeted request (the client's request lifecycle drives it)::

    reservation = await budget.reserve(model=..., prompt_bound=..., max_output_tokens=...,
                                       expires_in=...)      # before anything is sent
    try:
        ...                                                 # attempt; before a retry:
        await reservation.retry(AttemptBill(...))           # earlier attempt's cost is spent
        ...
    finally:
        await reservation.settle(AttemptBill(...) or None)  # exactly once, however it ended

- **Reserve** holds the request's worst-case cost -- ``prompt_bound`` tokens at the input price
  plus ``max_output_tokens`` (else the model's :attr:`~holysheep_trio.ModelPrice.
  max_output_tokens`) at the output price -- atomically against both periods. It refuses with
  :class:`~holysheep_trio.BudgetExceededError` only if ``spent + needed > limit`` (no room even
  if everything in flight cost nothing); if the request does not fit only because others hold
  reservations, it waits (FIFO within the process; cross-process by polling) and decides again.
- **Settle** commits the real cost (:func:`attempt_charge`) and releases the rest.

Invariant: when every request's real cost is at most its reservation, the committed spend of
a period never exceeds its limit, whatever the concurrency -- each grant checks
``spent + reserved + needed <= limit`` in one transaction, and settling replaces a reservation
by a cost no larger. The pure pieces (money arithmetic, :func:`attempt_charge`, the admission
rule in :func:`holysheep_trio.ledger.decide`, the calendar) are tested without trio.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from types import MappingProxyType
from typing import Any, Final, Literal

import attrs
import trio

from .errors import BudgetExceededError, ConfigurationError, LedgerError, UnknownPriceError
from .ledger import (
    Calendar,
    Charge,
    Hold,
    HoldRequest,
    Ledger,
    LedgerReport,
    Limits,
    SettleRequest,
    Totals,
    UsageTotals,
    day_end,
    decide,
    month_end,
    open_ledger,
    utc_now,
    zone_named,
)
from .models import Usage
from .prices import DEFAULT_PRICES, ModelPrice, format_usd

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_RESERVATION_EXPIRY",
    "LEDGER_WRITE_TIMEOUT",
    "MAX_USD",
    "PICODOLLARS",
    "AttemptBill",
    "Budget",
    "BudgetReport",
    "CancelledPolicy",
    "ModelUsage",
    "PeriodReport",
    "Rates",
    "Reservation",
    "attempt_charge",
    "build_report",
    "from_picodollars",
    "open_budget",
    "read_usage",
    "to_picodollars",
    "worst_case",
]

#: Picodollars per US dollar: the ledgers' integer unit.
PICODOLLARS: Final = 10**12
#: Seconds after which a reservation whose owner never settled it counts as spent, when the
#: caller gives no ``expires_in`` (the client passes its total deadline plus a margin).
DEFAULT_RESERVATION_EXPIRY: Final = 3600.0
#: Seconds between two looks at a shared (SQLite) ledger while waiting for room.
DEFAULT_POLL_INTERVAL: Final = 0.05
#: Bound on a ledger write made during clean-up (a settlement, a retry's charge). Longer than
#: SQLite's own busy timeout (10 s), so a lock held too long surfaces as SQLite's error.
LEDGER_WRITE_TIMEOUT: Final = 15.0
#: The largest limit, and the largest single reservation, in USD: every sum of a period then
#: stays far inside SQLite's 64-bit integers (9.2 x 10^18 picodollars).
MAX_USD: Final = 1_000_000.0
_MAX_PICODOLLARS: Final = int(MAX_USD) * PICODOLLARS

CancelledPolicy = Literal["reserved", "received"]
_POLICIES: Final = ("reserved", "received")


# --------------------------------------------------------------------------- pure pieces


def to_picodollars(usd: float, *, round_up: bool) -> int:
    """``usd`` as integer picodollars, rounded up (costs) or down (limits).

    Converted through the float's shortest decimal form, so ``0.1`` is exactly 10¹¹.

    Raises:
        ValueError: ``usd`` is negative, infinite or not a number.
    """
    if (
        isinstance(usd, bool)
        or not isinstance(usd, int | float)
        or not math.isfinite(usd)
        or usd < 0
    ):
        raise ValueError(f"an amount of USD must be a finite number >= 0, got {usd!r}")
    exact = Decimal(repr(float(usd))) * PICODOLLARS
    return int(exact.to_integral_value(rounding=ROUND_CEILING if round_up else ROUND_FLOOR))


def from_picodollars(amount: int) -> float:
    """Picodollars as USD."""
    return amount / PICODOLLARS


@attrs.frozen(kw_only=True)
class Rates:
    """A :class:`~holysheep_trio.ModelPrice` in integer picodollars per token.

    Attributes:
        input: Picodollars per prompt token (USD per million tokens x 10⁶, rounded up).
        output: Picodollars per completion token.
        max_output_tokens: The model's maximum output, if known.
    """

    input: int
    output: int
    max_output_tokens: int | None = None

    @classmethod
    def from_price(cls, price: ModelPrice) -> Rates:
        """Convert a price (USD per million tokens), rounding a fraction of a picodollar up."""
        return cls(
            input=_per_token(price.input_per_mtok),
            output=_per_token(price.output_per_mtok),
            max_output_tokens=price.max_output_tokens,
        )

    def cost(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Picodollars for the given tokens."""
        return max(0, prompt_tokens) * self.input + max(0, completion_tokens) * self.output


def _per_token(usd_per_million: float) -> int:
    # USD per 10⁶ tokens x 10¹² picodollars per USD / 10⁶ = picodollars per token.
    exact = Decimal(repr(float(usd_per_million))) * 10**6
    return int(exact.to_integral_value(rounding=ROUND_CEILING))


def worst_case(rates: Rates, *, prompt_bound: int, max_output_tokens: int) -> int:
    """The most one attempt can cost, in picodollars: the reservation's amount."""
    return rates.cost(prompt_bound, max_output_tokens)


@attrs.frozen(kw_only=True)
class AttemptBill:
    """What the request lifecycle knows about one attempt, for its settlement.

    Attributes:
        billable: The request was (possibly) sent and not refused with a non-2xx status: the
            server may have billed it. False for a request refused with an HTTP error or that
            failed before it was sent.
        completed: The stream was read to its natural end.
        usage: The server's usage, when it came.
        completion_tokens: Output tokens received so far (content pieces counted).
    """

    billable: bool
    completed: bool
    usage: Usage | None = None
    completion_tokens: int = 0


def attempt_charge(
    bill: AttemptBill | None,
    *,
    rates: Rates,
    prompt_bound: int,
    held: int,
    cancelled: CancelledPolicy,
) -> Charge | None:
    """What one attempt costs (pure): the settlement policy.

    - not billable (or no attempt): nothing;
    - the server's ``usage`` came: its tokens at the model's prices;
    - completed without usage: ``prompt_bound`` plus the completion tokens received;
    - cut short (billable, not completed, no usage -- a ``break``, a cancellation, an error
      after sending, a hedging loser): with ``cancelled="reserved"`` the whole amount ``held``
      for the attempt, since the server may have generated (and billed) more than we read;
      with ``"received"`` ``prompt_bound`` plus the tokens received.

    Args:
        bill: The attempt's facts, or None when no attempt was made.
        rates: The model's prices.
        prompt_bound: The request's prompt bound.
        held: Picodollars reserved for the attempt (its worst case).
        cancelled: The policy for attempts cut short.

    Returns:
        The charge, or None when the attempt cost nothing.
    """
    if bill is None or not bill.billable:
        return None
    received = max(0, bill.completion_tokens)
    if bill.usage is not None:
        usage = bill.usage
        return Charge(
            cost=rates.cost(usage.prompt_tokens, usage.completion_tokens),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
    if bill.completed:
        return Charge(
            cost=rates.cost(prompt_bound, received),
            prompt_tokens=prompt_bound,
            completion_tokens=received,
        )
    cost = held if cancelled == "reserved" else rates.cost(prompt_bound, received)
    return Charge(cost=cost, prompt_tokens=prompt_bound, completion_tokens=received, cancelled=True)


# --------------------------------------------------------------------------- reports


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class ModelUsage:
    """One model's usage in a period.

    Attributes:
        requests: Requests settled.
        prompt_tokens: Prompt tokens counted (the server's, else our bound).
        completion_tokens: Completion tokens counted (the server's, else those received).
        cost: USD counted as spent.
        cancelled: Requests cut short (a break, a cancellation, an error after sending).
        expired: Reservations whose owner never settled them (e.g. a killed process), counted
            as spent at their reserved amount.
    """

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cancelled: int = 0
    expired: int = 0

    @classmethod
    def from_totals(cls, totals: UsageTotals) -> ModelUsage:
        """From a ledger's integer totals."""
        return cls(
            requests=totals.requests,
            prompt_tokens=totals.prompt_tokens,
            completion_tokens=totals.completion_tokens,
            cost=from_picodollars(totals.cost),
            cancelled=totals.cancelled,
            expired=totals.expired,
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class PeriodReport:
    """One budget period (today or this month) in a :class:`BudgetReport`.

    Attributes:
        period: ``"2026-12-04"`` (a day) or ``"2026-12"`` (a month), local to the budget's zone.
        limit: The limit in USD, or None when unlimited.
        spent: USD committed (expired reservations included).
        reserved: USD held by requests in flight.
        remaining: USD a new request could reserve now (``limit - spent - reserved``, at least
            0), or None when unlimited.
        percent_used: ``spent / limit`` in percent, or None when unlimited.
        resets_at: When the period ends, aware, in the budget's zone.
        models: Usage per model in the period.
    """

    period: str
    limit: float | None
    spent: float
    reserved: float
    remaining: float | None
    percent_used: float | None
    resets_at: datetime
    models: Mapping[str, ModelUsage] = attrs.field(factory=dict, converter=_frozen, hash=False)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready data (``resets_at`` as ISO 8601)."""
        return {
            "period": self.period,
            "limit": self.limit,
            "spent": self.spent,
            "reserved": self.reserved,
            "remaining": self.remaining,
            "percent_used": self.percent_used,
            "resets_at": self.resets_at.isoformat(),
            "models": {model: usage.to_json() for model, usage in self.models.items()},
        }


@attrs.frozen(kw_only=True)
class BudgetReport:
    """A snapshot of a budget (``await budget.report()``, ``holysheep-trio usage``).

    Attributes:
        daily: Today.
        monthly: This month.
        models: Usage per model this month (the same as ``monthly.models``).
        timezone: The zone the periods are local to.
        ledger: Where the numbers come from (``"memory://"``, ``"sqlite:///usage.db"``).
        in_flight: Reservations held right now, in every process sharing the ledger.
    """

    daily: PeriodReport
    monthly: PeriodReport
    models: Mapping[str, ModelUsage] = attrs.field(converter=_frozen, hash=False)
    timezone: str
    ledger: str
    in_flight: int = 0

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready data (what ``holysheep-trio usage --json`` prints)."""
        return {
            "ledger": self.ledger,
            "timezone": self.timezone,
            "in_flight": self.in_flight,
            "daily": self.daily.to_json(),
            "monthly": self.monthly.to_json(),
        }


def _period_report(
    *,
    period: str,
    limit: int | None,
    spent: int,
    reserved: int,
    resets_at: datetime,
    models: Mapping[str, UsageTotals],
) -> PeriodReport:
    return PeriodReport(
        period=period,
        limit=None if limit is None else from_picodollars(limit),
        spent=from_picodollars(spent),
        reserved=from_picodollars(reserved),
        remaining=None if limit is None else from_picodollars(max(0, limit - spent - reserved)),
        percent_used=None if not limit else 100.0 * spent / limit,
        resets_at=resets_at,
        models={model: ModelUsage.from_totals(usage) for model, usage in sorted(models.items())},
    )


def build_report(
    found: LedgerReport, *, calendar: Calendar, limits: Limits | None, ledger: str, timezone: str
) -> BudgetReport:
    """A :class:`BudgetReport` from a ledger's raw report (pure).

    Args:
        found: What the ledger holds.
        calendar: The budget's zone (for ``resets_at``).
        limits: The limits to report against; None: those recorded in the ledger, if any.
        ledger: The ledger's URL.
        timezone: The zone's name.
    """
    if limits is None:
        limits = found.limits or Limits()
    totals = found.totals
    daily = _period_report(
        period=totals.day,
        limit=limits.daily,
        spent=totals.day_spent,
        reserved=totals.day_reserved,
        resets_at=day_end(totals.day, calendar.zone),
        models=found.day_models,
    )
    monthly = _period_report(
        period=totals.month,
        limit=limits.monthly,
        spent=totals.month_spent,
        reserved=totals.month_reserved,
        resets_at=month_end(totals.month, calendar.zone),
        models=found.month_models,
    )
    return BudgetReport(
        daily=daily,
        monthly=monthly,
        models=monthly.models,
        timezone=timezone,
        ledger=ledger,
        in_flight=found.live,
    )


# --------------------------------------------------------------------------- the budget


class _Waiter:
    __slots__ = ("turn",)

    def __init__(self) -> None:
        #: Set once, when this waiter reaches the head of the queue.
        self.turn = trio.Event()


class Budget:
    """Daily and monthly limits over a ledger. Create it with :func:`open_budget`.

    Give it to ``open_client(budget=...)`` and every request of the client is budgeted; the
    request lifecycle calls :meth:`reserve`, :meth:`Reservation.retry` and
    :meth:`Reservation.settle`. :meth:`would_fit` is a cheap synchronous query for routers.
    """

    def __init__(
        self,
        *,
        ledger: Ledger,
        calendar: Calendar,
        limits: Limits,
        timezone: str,
        prices: Mapping[str, ModelPrice],
        cancelled: CancelledPolicy,
        reservation_expiry: float,
        poll_interval: float,
        snapshot: Totals,
    ) -> None:
        self._ledger = ledger
        self._calendar = calendar
        self._limits = limits
        self._timezone = timezone
        self._prices = prices
        self._rates: dict[str, Rates] = {}
        self._cancelled: CancelledPolicy = cancelled
        self._reservation_expiry = reservation_expiry
        self._poll_interval = poll_interval
        self._snapshot = snapshot
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._waiters: deque[_Waiter] = deque()
        # Set (and replaced) whenever this process releases room, to wake the head waiter.
        self._changed = trio.Event()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<Budget daily={self.daily!r} monthly={self.monthly!r} ledger={self._ledger.url!r}"
            f" waiting={len(self._waiters)}>"
        )

    @property
    def daily(self) -> float | None:
        """The daily limit in USD, or None."""
        limit = self._limits.daily
        return None if limit is None else from_picodollars(limit)

    @property
    def monthly(self) -> float | None:
        """The monthly limit in USD, or None."""
        limit = self._limits.monthly
        return None if limit is None else from_picodollars(limit)

    @property
    def timezone(self) -> str:
        """The IANA zone the day and month are local to."""
        return self._timezone

    @property
    def prices(self) -> Mapping[str, ModelPrice]:
        """The price table."""
        return self._prices

    @property
    def cancelled(self) -> CancelledPolicy:
        """How a stream cut short is counted: ``"reserved"`` or ``"received"``."""
        return self._cancelled

    @property
    def ledger(self) -> Ledger:
        """The ledger the numbers live in."""
        return self._ledger

    @property
    def waiting(self) -> int:
        """Requests of this process waiting for room now."""
        return len(self._waiters)

    # ---- prices --------------------------------------------------------------------------

    def _rates_for(self, model: str) -> Rates:
        rates = self._rates.get(model)
        if rates is None:
            price = self._prices.get(model)
            if price is None:
                raise UnknownPriceError(
                    f"the budget has no price for model {model!r}:"
                    " add it to open_budget(prices=...)",
                    model=model,
                )
            rates = self._rates[model] = Rates.from_price(price)
        return rates

    def _output_tokens(self, model: str, rates: Rates, max_output_tokens: int | None) -> int:
        if max_output_tokens is not None:
            if isinstance(max_output_tokens, bool) or not isinstance(max_output_tokens, int):
                raise TypeError("max_output_tokens must be an int or None")
            return max(0, max_output_tokens)
        if rates.max_output_tokens is None:
            raise UnknownPriceError(
                f"model {model!r} has no max_output_tokens in the budget's prices: set max_tokens"
                " on the request, or add max_output_tokens to its ModelPrice",
                model=model,
            )
        return rates.max_output_tokens

    def _amount(self, model: str, prompt_bound: int, max_output_tokens: int | None) -> int:
        if isinstance(prompt_bound, bool) or not isinstance(prompt_bound, int) or prompt_bound < 0:
            raise ValueError(f"prompt_bound must be an int >= 0, got {prompt_bound!r}")
        rates = self._rates_for(model)
        output = self._output_tokens(model, rates, max_output_tokens)
        amount = worst_case(rates, prompt_bound=prompt_bound, max_output_tokens=output)
        if amount > _MAX_PICODOLLARS:
            raise ValueError(
                f"a request to {model} with prompt_bound={prompt_bound} and {output} output"
                f" tokens could cost more than ${MAX_USD:,.0f}"
            )
        return amount

    def worst_case(
        self, *, model: str, prompt_bound: int, max_output_tokens: int | None = None
    ) -> float:
        """The USD a request would reserve: its worst-case cost.

        Raises:
            UnknownPriceError: No price (or no maximum output) for the model.
        """
        return from_picodollars(self._amount(model, prompt_bound, max_output_tokens))

    # ---- the cheap query -----------------------------------------------------------------

    def would_fit(
        self, model: str, prompt_bound: int, max_output_tokens: int | None = None
    ) -> bool:
        """Whether a reservation of this size would be granted now, without waiting.

        Synchronous and cheap: it reads the totals this process saw last (other processes'
        activity since then is not seen), so it is a hint for choosing a model; only
        :meth:`reserve` decides. A model without a price never fits.
        """
        try:
            amount = self._amount(model, prompt_bound, max_output_tokens)
        except UnknownPriceError:
            return False
        snapshot = self._snapshot
        now = self._calendar.periods(self._calendar.now())
        same_day = snapshot.day == now.day
        same_month = snapshot.month == now.month
        current = Totals(
            day=now.day,
            month=now.month,
            day_spent=snapshot.day_spent if same_day else 0,
            day_reserved=snapshot.day_reserved if same_day else 0,
            month_spent=snapshot.month_spent if same_month else 0,
            month_reserved=snapshot.month_reserved if same_month else 0,
        )
        return decide(self._limits, current, amount)[0] == "granted"

    def _remember(self, totals: Totals) -> None:
        # A retry holds in its own (maybe older) periods: keep the newest periods seen.
        if (totals.day, totals.month) >= (self._snapshot.day, self._snapshot.month):
            self._snapshot = totals

    def _released(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # ---- reserving -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError("the budget is closed (its open_budget block was left)")

    async def reserve(
        self,
        *,
        model: str,
        prompt_bound: int,
        max_output_tokens: int | None,
        expires_in: float | None,
    ) -> Reservation:
        """Reserve the worst-case cost of one request before anything is sent.

        Reserves ``prompt_bound`` tokens at the input price plus ``max_output_tokens`` (else
        the model's ``ModelPrice.max_output_tokens``) at the output price, atomically against
        both periods. If it does not fit only because other requests hold reservations, waits
        (FIFO among this process's requests) for them to settle and decides again; the wait is
        cancellable, and a cancelled wait holds nothing.

        Args:
            model: The model.
            prompt_bound: An upper bound on the prompt tokens (``_tokens.prompt_token_bound``).
            max_output_tokens: The request's ``max_tokens``, or None.
            expires_in: Seconds after which the reservation counts as spent if its owner never
                settled it (the request's total deadline plus a margin), or None for
                :data:`DEFAULT_RESERVATION_EXPIRY`.

        Returns:
            The :class:`Reservation`; settle it exactly once when the request ends.

        Raises:
            UnknownPriceError: No price (or no maximum output) for the model.
            BudgetExceededError: ``spent + needed > limit`` for a period; nothing reserved.
            LedgerError: The ledger failed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        amount = self._amount(model, prompt_bound, max_output_tokens)
        rates = self._rates_for(model)
        output = self._output_tokens(model, rates, max_output_tokens)
        lifetime = self._expiry(expires_in)
        request = HoldRequest(
            reservation_id=secrets.token_hex(16),
            owner=self._owner,
            model=model,
            amount=amount,
            expires_in=lifetime,
            limits=self._limits,
        )
        hold = await self._acquire(lambda: self._ledger.hold(request), new=True)
        if hold.verdict != "granted":
            raise self._exceeded(hold, amount, model)
        return Reservation(
            self,
            reservation_id=request.reservation_id,
            model=model,
            rates=rates,
            prompt_bound=prompt_bound,
            max_output_tokens=output,
            amount=amount,
            expires_at=trio.current_time() + lifetime,
            day=hold.totals.day,
            month=hold.totals.month,
        )

    def _expiry(self, expires_in: float | None) -> float:
        if expires_in is None:
            return self._reservation_expiry
        if not (isinstance(expires_in, int | float) and expires_in > 0):
            raise ValueError(f"expires_in must be a number > 0 or None, got {expires_in!r}")
        return float(expires_in)

    async def _acquire(
        self,
        attempt: Callable[[], Awaitable[Hold]],
        *,
        new: bool,
        initial: Hold | None = None,
    ) -> Hold:
        """Hold room, waiting FIFO while it does not fit only because of reservations.

        Returns:
            A ``"granted"`` or ``"exceeded"`` hold.
        """
        hold = initial
        changed = self._changed
        if hold is None and not self._waiters:
            hold = await attempt()
            self._remember(hold.totals)
            if hold.verdict != "wait":
                return hold
        waiter = _Waiter()
        self._waiters.append(waiter)
        if self._waiters[0] is waiter:
            waiter.turn.set()
        try:
            while True:
                if not waiter.turn.is_set():
                    await waiter.turn.wait()
                    hold = None  # others went first: look again at once
                if hold is not None:
                    with trio.move_on_after(self._wait_time(hold, new=new)):
                        await changed.wait()
                changed = self._changed
                hold = await attempt()
                self._remember(hold.totals)
                if hold.verdict != "wait":
                    return hold
        finally:
            head = self._waiters[0] is waiter
            self._waiters.remove(waiter)
            if head and self._waiters:
                self._waiters[0].turn.set()

    def _wait_time(self, hold: Hold, *, new: bool) -> float:
        """Seconds until the verdict may change without this process releasing room."""
        now = self._calendar.now()
        delays = [math.inf]
        if self._ledger.shared:
            delays.append(self._poll_interval)
        if hold.wake_at is not None:
            delays.append(hold.wake_at - now.timestamp())
        if new:  # a new reservation may fit in the next day (or month)
            # Timestamps, not datetime subtraction: two datetimes of the same zone subtract
            # as wall-clock times, an hour off across a DST change.
            delays.append(
                day_end(hold.totals.day, self._calendar.zone).timestamp() - now.timestamp()
            )
        return max(0.0, min(delays))

    def _exceeded(self, hold: Hold, needed: int, model: str) -> BudgetExceededError:
        totals = hold.totals
        zone = self._calendar.zone
        if hold.period == "daily":
            limit, spent, reserved = self._limits.daily, totals.day_spent, totals.day_reserved
            resets_at = day_end(totals.day, zone)
        else:
            limit, spent = self._limits.monthly, totals.month_spent
            reserved, resets_at = totals.month_reserved, month_end(totals.month, zone)
        assert limit is not None  # only a period with a limit refuses
        usd = from_picodollars
        period = hold.period or "monthly"
        return BudgetExceededError(
            f"{period} budget exceeded: {format_usd(usd(spent))} spent +"
            f" {format_usd(usd(needed))} needed > {format_usd(usd(limit))} limit"
            f" (resets at {resets_at.isoformat()})",
            period=period,
            limit=usd(limit),
            spent=usd(spent),
            reserved=usd(reserved),
            needed=usd(needed),
            resets_at=resets_at,
            model=model,
        )

    # ---- reports -------------------------------------------------------------------------

    async def report(self) -> BudgetReport:
        """Today and this month: limits, spent, reserved, remaining, usage per model.

        Raises:
            LedgerError: The ledger cannot be read.
        """
        self._check_open()
        found = await self._ledger.report()
        self._remember(found.totals)
        return build_report(
            found,
            calendar=self._calendar,
            limits=self._limits,
            ledger=self._ledger.url,
            timezone=self._timezone,
        )


class Reservation:
    """One request's hold on a budget, from before it is sent until it is settled.

    Created by :meth:`Budget.reserve`. One reservation per request, held across its retries:
    call :meth:`retry` before each retry and :meth:`settle` exactly once at the end.
    """

    def __init__(
        self,
        budget: Budget,
        *,
        reservation_id: str,
        model: str,
        rates: Rates,
        prompt_bound: int,
        max_output_tokens: int,
        amount: int,
        expires_at: float,
        day: str,
        month: str,
    ) -> None:
        self._budget = budget
        self._id = reservation_id
        self._model = model
        self._rates = rates
        self._prompt_bound = prompt_bound
        self._max_output_tokens = max_output_tokens
        self._amount = amount
        self._expires_at = expires_at
        self._day = day
        self._month = month
        self._held = amount  # held for the attempt in flight (0 after a failed re-hold)
        self._attempt_open = True  # an attempt may be running on the held room
        self._charged = 0
        self._settled = False

    def __repr__(self) -> str:
        return (
            f"<Reservation model={self._model!r} amount=${from_picodollars(self._amount):.6f}"
            f" settled={self._settled}>"
        )

    @property
    def model(self) -> str:
        """The model."""
        return self._model

    @property
    def amount(self) -> float:
        """USD held for one attempt (the worst case)."""
        return from_picodollars(self._amount)

    @property
    def prompt_bound(self) -> int:
        """The prompt bound the reservation was made for."""
        return self._prompt_bound

    @property
    def max_output_tokens(self) -> int:
        """The completion tokens reserved for one attempt."""
        return self._max_output_tokens

    @property
    def charged(self) -> float:
        """USD committed so far for this request's earlier attempts (and, once settled, all)."""
        return from_picodollars(self._charged)

    @property
    def period(self) -> tuple[str, str]:
        """The day and month the reservation counts in."""
        return self._day, self._month

    @property
    def settled(self) -> bool:
        """Whether :meth:`settle` was called."""
        return self._settled

    def _charge_for(self, bill: AttemptBill | None) -> Charge | None:
        return attempt_charge(
            bill,
            rates=self._rates,
            prompt_bound=self._prompt_bound,
            held=self._amount,
            cancelled=self._budget._cancelled,
        )

    def _hold_request(self, amount: int, charge: Charge | None) -> HoldRequest:
        budget = self._budget
        return HoldRequest(
            reservation_id=self._id,
            owner=budget._owner,
            model=self._model,
            amount=amount,
            expires_in=max(1.0, self._expires_at - trio.current_time()),
            limits=budget._limits,
            charge=charge,
        )

    async def retry(self, previous: AttemptBill) -> None:
        """Make room for a retry of the request, after ``previous`` failed.

        If ``previous`` was billable, its cost (:func:`attempt_charge`) is committed as spend
        of this request at once, and room for another worst-case attempt is reserved again
        (which may wait FIFO, or raise). If it was not billable, the room already held
        covers the retry and nothing is written.

        Raises:
            BudgetExceededError: No room for another attempt; ``previous`` is already spent, so
                settle with ``None``.
            LedgerError: The ledger failed.
            RuntimeError: The reservation was settled.
        """
        if self._settled:
            raise RuntimeError("retry() after settle()")
        budget = self._budget
        charge = self._charge_for(previous) if self._attempt_open else None
        if charge is None and self._attempt_open:
            await trio.lowlevel.checkpoint()
            return
        initial: Hold | None = None
        if charge is not None:
            # Commit the cost and release the room in one shielded step, so "charged" and
            # the ledger never disagree; with nobody queued, ask for the new room at once.
            amount = 0 if budget._waiters else self._amount
            with _bounded_write("committing a retried attempt"):
                hold = await budget._ledger.hold(self._hold_request(amount, charge))
            self._attempt_open = False
            self._held = 0
            self._charged += charge.cost
            budget._remember(hold.totals)
            budget._released()
            if amount and hold.verdict == "granted":
                self._attempt_open = True
                self._held = self._amount
                return
            if hold.verdict == "exceeded":
                raise budget._exceeded(hold, self._amount, self._model)
            initial = hold if amount else None
        request = self._hold_request(self._amount, None)
        hold = await budget._acquire(
            lambda: budget._ledger.hold(request), new=False, initial=initial
        )
        if hold.verdict != "granted":
            raise budget._exceeded(hold, self._amount, self._model)
        self._attempt_open = True
        self._held = self._amount

    async def settle(self, last: AttemptBill | None) -> None:
        """End the request: commit its last attempt's cost and release the rest.

        Call exactly once, however the request ended. It is shielded from cancellation and
        bounded inside (:data:`LEDGER_WRITE_TIMEOUT`), so a caller need not shield it. The
        cost follows :func:`attempt_charge`; with ``last=None`` (or after a :meth:`retry` that
        raised) the last attempt costs nothing. Committed before it returns; wakes requests
        waiting for room.

        Raises:
            LedgerError: The ledger failed or took too long; the reservation will expire into
                spend.
            RuntimeError: Called twice.
        """
        if self._settled:
            raise RuntimeError("a reservation is settled exactly once")
        self._settled = True
        charge = self._charge_for(last) if self._attempt_open else None
        budget = self._budget
        with _bounded_write("settling"):
            totals = await budget._ledger.settle(
                SettleRequest(reservation_id=self._id, model=self._model, charge=charge)
            )
        if charge is not None:
            self._charged += charge.cost
        self._held = 0
        self._attempt_open = False
        budget._remember(totals)
        budget._released()


# --------------------------------------------------------------------------- opening


@contextmanager
def _bounded_write(doing: str) -> Iterator[None]:
    """Shield a clean-up write from cancellation, within :data:`LEDGER_WRITE_TIMEOUT`."""
    with trio.move_on_after(LEDGER_WRITE_TIMEOUT, shield=True) as scope:
        yield
    if scope.cancelled_caught:
        raise LedgerError(
            f"{doing} took longer than {LEDGER_WRITE_TIMEOUT:g} s; the reservation will expire"
            " into spend"
        )


def _limit(name: str, value: float | None) -> int | None:
    if value is None:
        return None
    try:
        amount = to_picodollars(value, round_up=False)
    except ValueError:
        raise ConfigurationError(
            f"{name} must be a finite number of USD >= 0 or None, got {value!r}"
        ) from None
    if amount > _MAX_PICODOLLARS:
        raise ConfigurationError(f"{name} may be at most ${MAX_USD:,.0f}, got {value!r}")
    return amount


@asynccontextmanager
async def open_budget(
    *,
    daily: float | None = None,
    monthly: float | None = None,
    ledger: str = "memory://",
    timezone: str = "UTC",
    prices: Mapping[str, ModelPrice] = DEFAULT_PRICES,
    cancelled: CancelledPolicy = "reserved",
    clock: Callable[[], datetime] | None = None,
    reservation_expiry: float = DEFAULT_RESERVATION_EXPIRY,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    key_prefix: str | None = None,
    fail_open: bool | None = None,
) -> AsyncIterator[Budget]:
    """Open a budget over a ledger; use with ``async with``. Leaving the block closes the ledger.

    Args:
        daily: USD per calendar day, or None for no daily limit.
        monthly: USD per calendar month, or None for no monthly limit.
        ledger: ``"memory://"`` (this process only), ``"sqlite:///PATH"`` (a file shared by
            the processes of this machine, surviving ``kill -9``) or
            ``"redis://HOST:PORT/DB"`` / ``"rediss://…"`` (shared by every process and
            machine that reaches the Redis server; needs the ``redis`` extra; see
            ``docs/fleet.md``).
        timezone: The IANA zone whose calendar days and months the periods are.
        prices: Model -> :class:`~holysheep_trio.ModelPrice`; a model missing here cannot be
            budgeted (:class:`~holysheep_trio.UnknownPriceError`).
        cancelled: How a stream cut short is counted: ``"reserved"`` (its whole reservation:
            the server may have billed more than we read; keeps the guarantee) or
            ``"received"`` (prompt bound plus the tokens received).
        clock: Returns the current time as an aware datetime (for tests); default: now, UTC.
        reservation_expiry: Seconds after which a reservation made without ``expires_in``
            counts as spent if never settled.
        poll_interval: Seconds between looks at a shared (SQLite, Redis) ledger while a
            request waits for room that another process may release.
        key_prefix: For a Redis ledger: the prefix of its keys, so that several budgets share
            one Redis (default: the URL's ``?key_prefix=``, else ``"holysheep"``).
        fail_open: For a Redis ledger: while Redis is unreachable, reserve in a local ledger
            of this process (seeded with the last totals seen) instead of failing every
            request with :class:`~holysheep_trio.LedgerUnavailableError`; one WARNING is
            logged per outage (default: the URL's ``?fail_open=``, else False).

    Yields:
        The :class:`Budget`.

    Raises:
        ConfigurationError: A bad limit, zone, policy, clock or ledger URL, or ``key_prefix``
            / ``fail_open`` for a ledger not in Redis.
        LedgerError: The ledger file cannot be opened or written, is corrupt, or counts days
            in another zone.
        LedgerUnavailableError: The Redis ledger is unreachable (without ``fail_open``).
    """
    limits = Limits(daily=_limit("daily", daily), monthly=_limit("monthly", monthly))
    try:
        zone = zone_named(timezone)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    if cancelled not in _POLICIES:
        raise ConfigurationError(f"cancelled must be 'reserved' or 'received', got {cancelled!r}")
    if not isinstance(prices, Mapping) or not all(
        isinstance(price, ModelPrice) for price in prices.values()
    ):
        raise ConfigurationError("prices must map model names to holysheep_trio.ModelPrice")
    for name, value in (
        ("reservation_expiry", reservation_expiry),
        ("poll_interval", poll_interval),
    ):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ConfigurationError(f"{name} must be a number of seconds > 0, got {value!r}")
    calendar = Calendar(zone=zone, clock=clock or utc_now)
    try:
        calendar.now()
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    async with open_ledger(
        ledger, calendar=calendar, key_prefix=key_prefix, fail_open=fail_open
    ) as store:
        await store.configure(limits=limits, timezone=timezone)
        # A ledger with its own clock (Redis's TIME) is the budget's clock too, so its waits
        # and hints use the periods the ledger uses, whatever this machine's clock says.
        calendar = getattr(store, "server_calendar", calendar)
        found = await store.report()
        budget = Budget(
            ledger=store,
            calendar=calendar,
            limits=limits,
            timezone=timezone,
            prices=MappingProxyType(dict(prices)),
            cancelled=cancelled,
            reservation_expiry=float(reservation_expiry),
            poll_interval=float(poll_interval),
            snapshot=found.totals,
        )
        try:
            yield budget
        finally:
            budget._closed = True


async def read_usage(
    ledger: str,
    *,
    timezone: str | None = None,
    clock: Callable[[], datetime] | None = None,
) -> BudgetReport:
    """Report a ledger file's today and this month without a budget (``holysheep-trio usage``).

    Opens the file read-only; the limits are those the last budget recorded in it.

    Args:
        ledger: ``"sqlite:///PATH"`` or ``"redis://HOST:PORT/DB?key_prefix=…"``.
        timezone: The zone to count days in; must match the file's (default: the file's).
        clock: As for :func:`open_budget`.

    Returns:
        The report.

    Raises:
        ConfigurationError: A bad URL or zone, a zone other than the file's, or ``memory://``.
        LedgerError: No such file, or it cannot be read.
    """
    now = clock or utc_now
    try:
        probe = Calendar(zone=zone_named(timezone or "UTC"), clock=now)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    async with open_ledger(ledger, calendar=probe, read_only=True) as store:
        recorded = await store.report()
    zone_name = recorded.timezone or timezone or "UTC"
    if timezone is not None and timezone != zone_name:
        raise ConfigurationError(
            f"the ledger counts days in {zone_name}; --timezone {timezone} does not match"
        )
    calendar = Calendar(zone=zone_named(zone_name), clock=now)
    async with open_ledger(ledger, calendar=calendar, read_only=True) as store:
        found = await store.report()
        url = store.url
    return build_report(found, calendar=calendar, limits=None, ledger=url, timezone=zone_name)
