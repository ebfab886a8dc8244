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
- **Expiry is a lease.** A reservation whose owner never settles it (a killed process) counts
  as spent at its worst case ``expires_in`` seconds after it was made or last renewed. While
  its :func:`open_budget` block runs, the budget renews every reservation not yet settled
  (its task extends each one when half of its lifetime is left), so a live request never
  expires however long it waits in a queue or streams. If one expired all the same (the
  ledger was unreachable, the process stalled), its settlement replaces the worst case
  counted at the expiry by the cost it reports, refunding the difference.

Invariant: when every request's real cost is at most its reservation, the committed spend of
a period never exceeds its limit, whatever the concurrency -- each grant checks
``spent + reserved + needed <= limit`` in one transaction, and settling replaces a reservation
by a cost no larger. The pure pieces (money arithmetic, :func:`attempt_charge`, the admission
rule in :func:`holysheep_trio.ledger.decide`, the calendar) are tested without trio.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import secrets
import socket
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from types import MappingProxyType
from typing import Any, Final, Literal

import attrs
import trio

from ._groups import BlockGuard
from .errors import BudgetExceededError, ConfigurationError, LedgerError, UnknownPriceError
from .ledger import (
    Calendar,
    Charge,
    Hold,
    HoldRequest,
    Ledger,
    LedgerReport,
    Limits,
    RenewRequest,
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
from .ledger._core import PeriodName
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
#: Seconds after which a reservation whose owner never settled (nor renewed) it counts as spent,
#: when the caller gives no ``expires_in`` (the client passes its total deadline plus a margin).
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
# A reservation is renewed when this share of its lifetime is left; the others renewed in the
# same write are those with less than _RENEW_WITH left, so renewals come in batches.
_RENEW_AT: Final = 0.5
_RENEW_WITH: Final = 0.75
#: Seconds before a renewal that failed (the ledger unreachable, locked) is tried again.
_RENEW_RETRY: Final = 1.0

logger = logging.getLogger("holysheep_trio")

CancelledPolicy = Literal["reserved", "received"]
_POLICIES: Final = ("reserved", "received")
_INF: Final = math.inf


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


def _spent_exceeds(
    limits: Limits, totals: Totals, needed: int, periods: tuple[str, str]
) -> tuple[PeriodName, Totals] | None:
    """The period where ``spent + needed > limit``, from ``totals`` of the same periods (pure).

    Returns:
        The period and the totals known for ``periods`` (a period ``totals`` are not of counts
        as nothing spent), or None when no spend seen rules the request out.
    """
    day, month = periods
    same_day, same_month = totals.day == day, totals.month == month
    known = Totals(
        day=day,
        month=month,
        day_spent=totals.day_spent if same_day else 0,
        day_reserved=totals.day_reserved if same_day else 0,
        month_spent=totals.month_spent if same_month else 0,
        month_reserved=totals.month_reserved if same_month else 0,
    )
    verdict, period = decide(limits, known, needed)
    if verdict != "exceeded" or period is None:
        return None
    return period, known


class _Waiter:
    __slots__ = ("wake",)

    def __init__(self) -> None:
        #: Set when it reaches the head of the line (only the head asks the ledger), or when
        #: the spend seen grew (so that a request that can no longer fit leaves the line at
        #: once); replaced after each wake-up.
        self.wake = trio.Event()


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
        # The reservations to renew (not settled). Weak: one its owner dropped unsettled can
        # never be settled, so it is left to expire into spend.
        self._leases: weakref.WeakValueDictionary[str, Reservation] = weakref.WeakValueDictionary()
        # Set when a reservation is added that must be renewed before the task next wakes by
        # itself (at _lease_wake; it looks again after every renewal anyway).
        self._lease_news = trio.Event()
        self._lease_wake = math.inf
        self._renewals_failing = False

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
        seen = self._snapshot
        if (totals.day, totals.month) < (seen.day, seen.month):
            return
        self._snapshot = totals
        grew = (totals.day == seen.day and totals.day_spent > seen.day_spent) or (
            totals.month == seen.month and totals.month_spent > seen.month_spent
        )
        if grew:
            # Those behind the head check whether they can still fit (see _acquire).
            for waiter in itertools.islice(self._waiters, 1, None):
                waiter.wake.set()

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
                :data:`DEFAULT_RESERVATION_EXPIRY`. The budget renews it while its
                :func:`open_budget` block runs and the reservation is not settled, so this
                bounds only how long the room of a killed process stays held.

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
        hold = await self._acquire(
            lambda: self._ledger.hold(request), needed=amount, model=model, periods=None
        )
        if hold.verdict != "granted":
            raise self._exceeded(hold, amount, model)
        reservation = Reservation(
            self,
            reservation_id=request.reservation_id,
            model=model,
            rates=rates,
            prompt_bound=prompt_bound,
            max_output_tokens=output,
            amount=amount,
            lifetime=lifetime,
            day=hold.totals.day,
            month=hold.totals.month,
        )
        self._lease(reservation)
        return reservation

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
        needed: int,
        model: str,
        periods: tuple[str, str] | None,
        initial: Hold | None = None,
        changed: trio.Event | None = None,
    ) -> Hold:
        """Hold room, waiting FIFO while it does not fit only because of reservations.

        Args:
            attempt: One ledger hold.
            needed: The picodollars asked for.
            model: The model (for an error).
            periods: The day and month the hold counts in (a retry's own), or None for a new
                reservation (the current ones; it may also fit in the next day).
            initial: A ``"wait"`` answer already obtained.
            changed: With ``initial``: the release event as it was *before* that ledger
                write, so that a release landing during the write still wakes this wait.

        Returns:
            A ``"granted"`` or ``"exceeded"`` hold.

        Raises:
            BudgetExceededError: Before queueing behind others, or while in line: the spend
                seen already leaves no room (confirmed by a fresh read of the ledger).
        """
        hold = initial
        if changed is None or hold is None:
            changed = self._changed
        if hold is None:
            if not self._waiters:
                hold = await attempt()
                self._remember(hold.totals)
                if hold.verdict != "wait":
                    return hold
            else:
                # Only the head asks the ledger; one that can never fit must not queue.
                await self._refuse_if_exceeded(needed, model, periods)
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            while True:
                if self._waiters[0] is not waiter:
                    while self._waiters[0] is not waiter:
                        await waiter.wake.wait()
                        # Replaced before looking, so a later signal is never lost.
                        waiter.wake = trio.Event()
                        # At the head now, or the spend grew: can it still fit?
                        await self._refuse_if_exceeded(needed, model, periods)
                    hold = None  # others went first: look again at once
                if hold is not None:
                    with trio.move_on_after(self._wait_time(hold, new=periods is None)):
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
                self._waiters[0].wake.set()

    async def _refuse_if_exceeded(
        self, needed: int, model: str, periods: tuple[str, str] | None
    ) -> None:
        """Raise :class:`BudgetExceededError` if ``spent + needed > limit`` already.

        Decided from the last totals seen (those of the request's own periods only), then
        confirmed by a fresh read of the ledger: spent only grows within a period, except
        when a late settlement is refunded, and the error carries the ledger's numbers.
        """
        if periods is None:
            now = self._calendar.periods(self._calendar.now())
            periods = (now.day, now.month)
        if _spent_exceeds(self._limits, self._snapshot, needed, periods) is None:
            return
        found = await self._ledger.report()
        self._remember(found.totals)
        refused = _spent_exceeds(self._limits, found.totals, needed, periods)
        if refused is not None:
            period, totals = refused
            raise self._exceeded(
                Hold(verdict="exceeded", period=period, totals=totals), needed, model
            )

    # ---- leases --------------------------------------------------------------------------

    def _lease(self, reservation: Reservation) -> None:
        """Renew ``reservation`` until it is settled (or dropped, or the budget closed)."""
        self._leases[reservation._id] = reservation
        if reservation._renew_at(_RENEW_AT) < self._lease_wake:
            self._lease_news.set()

    async def _keep_leases(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Renew the reservations not yet settled before they expire (the budget's task)."""
        task_status.started()
        while True:
            self._lease_news = trio.Event()
            # No strong reference is kept across the wait: a dropped reservation must go.
            wake = min(
                (reservation._renew_at(_RENEW_AT) for reservation in self._leases.values()),
                default=_INF,
            )
            if wake > trio.current_time():
                self._lease_wake = wake
                with trio.move_on_at(wake):
                    await self._lease_news.wait()
                continue
            try:
                await self._renew_due()
            except LedgerError as exc:
                if not self._renewals_failing:
                    logger.warning(
                        "renewing budget reservations failed, trying again every %g s: %s",
                        _RENEW_RETRY,
                        exc,
                    )
                self._renewals_failing = True
                await trio.sleep(_RENEW_RETRY)
            else:
                self._renewals_failing = False

    async def _renew_due(self) -> None:
        """Renew, in one write, the reservations with less than ``_RENEW_WITH`` of their
        lifetime left."""
        now = trio.current_time()
        due = [
            reservation
            for reservation in self._leases.values()
            if reservation._renew_at(_RENEW_WITH) <= now
        ]
        await self._renew(due)

    async def _renew(self, reservations: Sequence[Reservation]) -> frozenset[str]:
        """Extend the reservations' expiries in one ledger write; returns the ids extended."""
        started = trio.current_time()
        renewed = await self._ledger.renew(
            RenewRequest(
                owner=self._owner,
                leases=tuple(
                    (reservation._id, reservation._lifetime) for reservation in reservations
                ),
            )
        )
        for reservation in reservations:
            if reservation._id in renewed:
                reservation._expires_at = max(
                    reservation._expires_at, started + reservation._lifetime
                )
            elif self._leases.get(reservation._id) is reservation:
                # It expired already (its settlement will be refunded to its cost), or it
                # holds nothing now; a granted retry leases it again.
                del self._leases[reservation._id]
        return renewed

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
        lifetime: float,
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
        # Seconds the reservation lives without renewal, and when it expires (trio's clock;
        # an estimate no earlier than the ledger's, which renewals keep well ahead of).
        self._lifetime = lifetime
        self._expires_at = trio.current_time() + lifetime
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
            # A retry's room is held for a whole lifetime again: it is a new attempt.
            expires_in=self._lifetime,
            limits=budget._limits,
            charge=charge,
        )

    def _renew_at(self, share: float) -> float:
        """When ``share`` of the lifetime is left before the expiry (trio's clock)."""
        return self._expires_at - share * self._lifetime

    def _held_again(self) -> None:
        """A hold was granted: the ledger's expiry is a whole lifetime from now."""
        self._attempt_open = True
        self._held = self._amount
        self._expires_at = trio.current_time() + self._lifetime
        self._budget._lease(self)

    async def renew(self, expires_in: float | None = None) -> bool:
        """Extend the reservation's expiry to ``expires_in`` seconds from now (never sooner).

        The budget renews its reservations by itself while its :func:`open_budget` block runs,
        so a request that waits or streams long keeps its room without this call; it serves to
        restart the clock with a new lifetime (e.g. the total deadline in force once the
        request is admitted, plus a margin), which later renewals and retries use too.

        Args:
            expires_in: The new lifetime in seconds, or None to keep the current one.

        Returns:
            Whether it was extended: False when it had expired already (its room was counted
            as spent; its settlement then refunds the difference to the cost it reports).

        Raises:
            ValueError: ``expires_in`` is not a number > 0.
            LedgerError: The ledger failed; the reservation keeps its current expiry.
            RuntimeError: The reservation was settled.
        """
        if self._settled:
            raise RuntimeError("renew() after settle()")
        budget = self._budget
        if expires_in is not None:
            self._lifetime = budget._expiry(expires_in)
        if self._id not in await budget._renew([self]):
            return False
        budget._lease(self)
        return True

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
        periods = (self._day, self._month)
        # Taken before the ledger write: a settlement that lands during the write must wake
        # the wait below (the event is replaced by every release).
        changed = budget._changed
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
                self._held_again()
                return
            if hold.verdict == "exceeded":
                raise budget._exceeded(hold, self._amount, self._model)
            if not amount:
                # The totals of this very write decide whether waiting in line makes sense.
                refused = _spent_exceeds(budget._limits, hold.totals, self._amount, periods)
                if refused is not None:
                    period, totals = refused
                    raise budget._exceeded(
                        Hold(verdict="exceeded", period=period, totals=totals),
                        self._amount,
                        self._model,
                    )
            initial = hold if amount else None
        request = self._hold_request(self._amount, None)
        hold = await budget._acquire(
            lambda: budget._ledger.hold(request),
            needed=self._amount,
            model=self._model,
            periods=periods,
            initial=initial,
            changed=changed,
        )
        if hold.verdict != "granted":
            raise budget._exceeded(hold, self._amount, self._model)
        self._held_again()

    async def settle(self, last: AttemptBill | None) -> None:
        """End the request: commit its last attempt's cost and release the rest.

        Call exactly once, however the request ended. It is shielded from cancellation and
        bounded inside (:data:`LEDGER_WRITE_TIMEOUT`), so a caller need not shield it. The
        cost follows :func:`attempt_charge`; with ``last=None`` (or after a :meth:`retry` that
        raised) the last attempt costs nothing. Committed before it returns; wakes requests
        waiting for room.

        If the reservation expired meanwhile (its room counted as spent at the worst case),
        the ledger replaces that by the cost settled, refunding the difference.

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
        if budget._leases.get(self._id) is self:
            del budget._leases[self._id]  # renewed no more: settled, or left to expire
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

    While the block runs, a task of the budget renews the reservations not yet settled (see
    ``expires_in`` of :meth:`Budget.reserve`); leaving the block stops it.

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
        # The budget's task renews its reservations; what the caller's block raises comes out
        # as it was, a bug of the task as that one exception (see _groups.BlockGuard).
        guard = BlockGuard()
        async with guard.outer(), trio.open_nursery() as nursery:
            await nursery.start(budget._keep_leases)
            try:
                async with guard.inner():
                    yield budget
            finally:
                budget._closed = True
                nursery.cancel_scope.cancel()


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
