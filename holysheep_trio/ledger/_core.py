# The ledger's rules as a pure state machine over a synchronous store (one transaction per call).
"""What a reservation, a settlement and an expiry do to the ledger, free of I/O.

Amounts are integer **picodollars** (10⁻¹² USD): sums are exact in every process and in SQLite's
64-bit integers (up to about 9.2 million USD), so two processes always agree to the last digit.

State, per backend (:class:`Store`):

- ``spent`` per period key (``"day:2026-12-04"``, ``"month:2026-12"``): committed cost;
- reservation rows: ``amount`` (room held for the attempt in flight) in the day and month the
  reservation was made in, an owner and an expiry. A *live* row's amount counts as
  ``reserved``; when it expires, the amount moves to ``spent`` (we cannot know what the server
  billed a request whose process died, so never count less) and the row stays as a tombstone
  whose ``credit`` (the amount counted) is replaced by the cost of the attempt when its owner,
  alive after all, reports it late (:func:`apply_hold` of a retry, :func:`apply_settle`);
- the expiry is a lease: a live owner extends it (:func:`apply_renew`) for as long as its
  request runs, so only the rows of a dead (or stuck) owner expire;
- usage per (day, model): requests, tokens, cost (always equal, summed, to the spend) and how
  many requests were cut short or expired.

Every function here runs inside one transaction of the backend (a single trio step for memory,
``BEGIN IMMEDIATE`` for SQLite), so reserve and settle are atomic across both periods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, Protocol

import attrs

from ._calendar import Periods

__all__ = [
    "TOMBSTONE_SECONDS",
    "Charge",
    "Hold",
    "HoldRequest",
    "LedgerReport",
    "Limits",
    "RenewRequest",
    "Row",
    "SettleRequest",
    "Store",
    "Totals",
    "UsageTotals",
    "Verdict",
    "apply_hold",
    "apply_renew",
    "apply_settle",
    "decide",
    "read_report",
    "sweep",
]

#: Seconds an expired reservation's tombstone is kept for a late settlement, then dropped.
TOMBSTONE_SECONDS: Final = 86_400.0

Verdict = Literal["granted", "wait", "exceeded"]
PeriodName = Literal["daily", "monthly"]


@attrs.frozen(kw_only=True)
class Limits:
    """A budget's limits in picodollars; None: no limit for that period."""

    daily: int | None = None
    monthly: int | None = None


@attrs.frozen(kw_only=True)
class Charge:
    """The cost of one attempt, committed as spend, and the tokens it was computed from.

    Attributes:
        cost: Picodollars.
        prompt_tokens: Prompt tokens (the server's, or our bound).
        completion_tokens: Completion tokens (the server's, or those received).
        cancelled: Whether the attempt was cut short (counted in ``cancelled``).
    """

    cost: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cancelled: bool = False


@attrs.frozen(kw_only=True)
class HoldRequest:
    """Reserve room for one attempt: a new reservation, or again for a retry.

    Attributes:
        reservation_id: Chosen by the caller (unique); a new id creates a reservation.
        owner: Who holds it (host, pid and a random part), for diagnostics.
        model: The model, for the usage rows.
        amount: Picodollars to hold: the attempt's worst case. 0 only releases (always granted).
        expires_in: Seconds after which an unsettled reservation counts as spent.
        limits: The limits to check against.
        charge: For a retry: the previous attempt's cost, committed first whatever the verdict.
    """

    reservation_id: str
    owner: str
    model: str
    amount: int
    expires_in: float
    limits: Limits
    charge: Charge | None = None


@attrs.frozen(kw_only=True)
class SettleRequest:
    """End a reservation: commit the last attempt's cost and release the rest.

    Attributes:
        reservation_id: The reservation.
        model: Its model (used if the reservation is unknown, e.g. dropped long ago).
        charge: The last attempt's cost, or None when it cost nothing.
    """

    reservation_id: str
    model: str
    charge: Charge | None = None


@attrs.frozen(kw_only=True)
class RenewRequest:
    """Extend the expiry of live reservations of one owner: the lease its live owner renews.

    Attributes:
        owner: The owner the reservations were made by; rows of another owner are left alone.
        leases: ``(reservation id, seconds)`` pairs: each live row then expires no sooner than
            that many seconds from now (an expiry is never brought forward).
    """

    owner: str
    leases: tuple[tuple[str, float], ...]


@attrs.frozen(kw_only=True)
class Totals:
    """Spent and reserved picodollars of one day and its month.

    Attributes:
        day: The day key, ``"YYYY-MM-DD"``.
        month: The month key, ``"YYYY-MM"``.
        day_spent: Committed in the day.
        day_reserved: Held by live reservations made in the day.
        month_spent: Committed in the month.
        month_reserved: Held by live reservations made in the month.
    """

    day: str
    month: str
    day_spent: int = 0
    day_reserved: int = 0
    month_spent: int = 0
    month_reserved: int = 0


@attrs.frozen(kw_only=True)
class Hold:
    """The outcome of a :class:`HoldRequest`.

    Attributes:
        verdict: ``"granted"`` (the room is held), ``"wait"`` (it would fit once reservations
            of others are settled) or ``"exceeded"`` (spent plus the amount exceeds a limit).
        period: The period that refused, when not granted.
        totals: The totals of the reservation's periods after the call.
        wake_at: When not granted: the Unix time of the next expiry of a live reservation (which
            turns reserved into spent and may change the verdict), or None.
    """

    verdict: Verdict
    totals: Totals
    period: PeriodName | None = None
    wake_at: float | None = None


@attrs.frozen(kw_only=True)
class UsageTotals:
    """Usage of one model summed over a period (integers; cost in picodollars)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: int = 0
    cancelled: int = 0
    expired: int = 0

    def plus(self, other: UsageTotals) -> UsageTotals:
        """The field-wise sum."""
        return UsageTotals(
            requests=self.requests + other.requests,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost=self.cost + other.cost,
            cancelled=self.cancelled + other.cancelled,
            expired=self.expired + other.expired,
        )


@attrs.frozen(kw_only=True)
class LedgerReport:
    """What a ledger holds for the current day and month (expired reservations as spent).

    Attributes:
        totals: The current periods' totals.
        day_models: Usage per model in the day.
        month_models: Usage per model in the month.
        limits: The limits last configured on the ledger (picodollars), if recorded.
        timezone: The zone its days are counted in, if recorded.
        live: Live reservations (all periods).
    """

    totals: Totals
    day_models: Mapping[str, UsageTotals]
    month_models: Mapping[str, UsageTotals]
    limits: Limits | None = None
    timezone: str | None = None
    live: int = 0


@attrs.define(kw_only=True)
class Row:
    """A reservation row (mutable: stores write it back with :meth:`Store.put`)."""

    id: str
    owner: str
    model: str
    day: str
    month: str
    amount: int
    credit: int = 0
    live: bool = True
    created: float = 0.0
    expires: float = 0.0


class Store(Protocol):
    """The synchronous primitives a backend provides inside one transaction."""

    def spent(self, period: str) -> int:
        """Committed picodollars of a period key (``"day:..."`` or ``"month:..."``)."""
        ...

    def add_spent(self, period: str, amount: int) -> None:
        """Add to a period's committed spend."""
        ...

    def reserved(self, *, day: str | None = None, month: str | None = None) -> int:
        """Sum of the amounts of live rows of the day (or month), due ones included."""
        ...

    def get(self, reservation_id: str) -> Row | None:
        """The row, or None."""
        ...

    def put(self, row: Row) -> None:
        """Insert or replace the row."""
        ...

    def delete(self, reservation_id: str) -> None:
        """Remove the row (no error if absent)."""
        ...

    def due(self, now: float) -> list[Row]:
        """Live rows whose expiry is at or before ``now``."""
        ...

    def next_expiry(self) -> float | None:
        """The earliest expiry of a live row, or None."""
        ...

    def purge(self, before: float) -> None:
        """Drop tombstones (rows no longer live) that expired before ``before``."""
        ...

    def add_usage(self, day: str, month: str, model: str, usage: UsageTotals) -> None:
        """Add to the usage row of (day, model)."""
        ...

    def usage(self, *, day: str | None = None, month: str | None = None) -> dict[str, UsageTotals]:
        """Usage per model of a day (or a month)."""
        ...

    def live_count(self) -> int:
        """How many rows are live."""
        ...


def _day(key: str) -> str:
    return "day:" + key


def _month(key: str) -> str:
    return "month:" + key


def decide(limits: Limits, totals: Totals, needed: int) -> tuple[Verdict, PeriodName | None]:
    """Whether ``needed`` fits both periods of ``totals`` (the admission rule, pure).

    ``spent + needed > limit`` for a period is ``"exceeded"`` (checked for both periods first:
    no amount of waiting makes room there); otherwise ``spent + reserved + needed > limit``
    is ``"wait"``; otherwise ``"granted"``.
    """
    periods: tuple[tuple[PeriodName, int | None, int, int], ...] = (
        ("daily", limits.daily, totals.day_spent, totals.day_reserved),
        ("monthly", limits.monthly, totals.month_spent, totals.month_reserved),
    )
    for name, limit, spent, _ in periods:
        if limit is not None and spent + needed > limit:
            return "exceeded", name
    for name, limit, spent, reserved in periods:
        if limit is not None and spent + reserved + needed > limit:
            return "wait", name
    return "granted", None


def _totals(store: Store, day: str, month: str) -> Totals:
    return Totals(
        day=day,
        month=month,
        day_spent=store.spent(_day(day)),
        day_reserved=store.reserved(day=day),
        month_spent=store.spent(_month(month)),
        month_reserved=store.reserved(month=month),
    )


def _spend(store: Store, day: str, month: str, amount: int) -> None:
    """Add ``amount`` to the spend of a day and its month (negative: a refund)."""
    if amount:
        store.add_spent(_day(day), amount)
        store.add_spent(_month(month), amount)


def sweep(store: Store, now: float) -> None:
    """Turn every due reservation into spend (at its held amount) and drop old tombstones."""
    for row in store.due(now):
        _spend(store, row.day, row.month, row.amount)
        store.add_usage(row.day, row.month, row.model, UsageTotals(cost=row.amount, expired=1))
        row.credit += row.amount
        row.amount = 0
        row.live = False
        store.put(row)
    store.purge(now - TOMBSTONE_SECONDS)


def _charge(store: Store, row: Row, charge: Charge | None) -> None:
    """Commit an attempt's cost (``None``: it cost nothing) against its reservation's row.

    A tombstone's ``credit`` is the room the attempt held when the reservation expired, already
    counted as spent at that worst case. Its owner turned out to be alive and now reports what
    the attempt cost: the cost replaces the credit -- the excess is added, the rest refunded
    -- so the ledger ends as if the reservation had been settled in time, and its expiry is no
    longer counted. Lowering the spend to the reported cost is safe: an expiry only moved the
    amount from reserved to spent, and every grant counted both (``spent + reserved + needed
    <= limit``), so no grant relied on it being spent; the cost is trusted exactly as much as
    that of a settlement in time.
    """
    cost = 0 if charge is None else charge.cost
    difference = cost - row.credit
    expired = -1 if row.credit else 0
    row.credit = 0
    _spend(store, row.day, row.month, difference)
    store.add_usage(
        row.day,
        row.month,
        row.model,
        UsageTotals(
            prompt_tokens=0 if charge is None else charge.prompt_tokens,
            completion_tokens=0 if charge is None else charge.completion_tokens,
            cost=difference,
            expired=expired,
        ),
    )


def apply_hold(store: Store, request: HoldRequest, *, now: float, periods: Periods) -> Hold:
    """Reserve (or reserve again, for a retry) in one transaction.

    A new reservation belongs to the current ``periods``; a retry stays in the periods its
    reservation was made in, whose limits it was admitted under. A retry first commits its
    ``charge`` and releases the room it held, whatever the verdict; when refused it then holds
    nothing (and stays known, so it can be settled or tried again).
    """
    sweep(store, now)
    row = store.get(request.reservation_id)
    if row is None:
        if request.charge is not None:
            # A retry of a reservation that is gone (dropped a day after it expired): its cost
            # still counts (charged below), in the periods of now, in a row recreated for it.
            row = Row(
                id=request.reservation_id,
                owner=request.owner,
                model=request.model,
                day=periods.day,
                month=periods.month,
                amount=0,
                live=False,
                created=now,
                expires=now + request.expires_in,
            )
        else:
            totals = _totals(store, periods.day, periods.month)
            verdict, period = (
                ("granted", None)
                if request.amount == 0
                else decide(request.limits, totals, request.amount)
            )
            if verdict != "granted":
                return Hold(
                    verdict=verdict, period=period, totals=totals, wake_at=store.next_expiry()
                )
            store.put(
                Row(
                    id=request.reservation_id,
                    owner=request.owner,
                    model=request.model,
                    day=periods.day,
                    month=periods.month,
                    amount=request.amount,
                    created=now,
                    expires=now + request.expires_in,
                )
            )
            return Hold(verdict="granted", totals=_totals(store, periods.day, periods.month))
    if request.charge is not None:
        _charge(store, row, request.charge)
    row.amount = 0
    store.put(row)
    totals = _totals(store, row.day, row.month)
    verdict, period = (
        ("granted", None) if request.amount == 0 else decide(request.limits, totals, request.amount)
    )
    if verdict != "granted":
        return Hold(verdict=verdict, period=period, totals=totals, wake_at=store.next_expiry())
    row.amount = request.amount
    row.live = True
    row.expires = now + request.expires_in
    store.put(row)
    return Hold(verdict="granted", totals=_totals(store, row.day, row.month))


def apply_settle(store: Store, request: SettleRequest, *, now: float, periods: Periods) -> Totals:
    """Commit the last attempt's cost, count the request and drop the reservation."""
    sweep(store, now)
    row = store.get(request.reservation_id)
    if row is None:
        # Unknown (its tombstone was dropped): count the cost in the periods of now.
        row = Row(
            id=request.reservation_id,
            owner="",
            model=request.model,
            day=periods.day,
            month=periods.month,
            amount=0,
        )
    if request.charge is not None or row.credit:
        # A tombstone settled with no cost: its whole credit comes back (see _charge).
        _charge(store, row, request.charge)
    cancelled = 1 if request.charge is not None and request.charge.cancelled else 0
    store.add_usage(row.day, row.month, row.model, UsageTotals(requests=1, cancelled=cancelled))
    store.delete(row.id)
    return _totals(store, periods.day, periods.month)


def apply_renew(store: Store, request: RenewRequest, *, now: float) -> frozenset[str]:
    """Extend the live reservations of ``request.owner`` named in it; returns those extended.

    Due rows are swept first, so a reservation that expired stays expired (its late settlement
    is then refunded to its cost by :func:`_charge`); an expiry is never brought forward.
    """
    sweep(store, now)
    renewed: set[str] = set()
    for reservation_id, expires_in in request.leases:
        row = store.get(reservation_id)
        if row is None or not row.live or row.owner != request.owner:
            continue
        row.expires = max(row.expires, now + expires_in)
        store.put(row)
        renewed.add(reservation_id)
    return frozenset(renewed)


def read_report(
    store: Store,
    *,
    now: float,
    periods: Periods,
    limits: Limits | None = None,
    timezone: str | None = None,
) -> LedgerReport:
    """The current periods, counting due reservations as spent, without writing anything."""
    totals = _totals(store, periods.day, periods.month)
    day_models = store.usage(day=periods.day)
    month_models = store.usage(month=periods.month)
    day_spent, month_spent = totals.day_spent, totals.month_spent
    day_reserved, month_reserved = totals.day_reserved, totals.month_reserved
    for row in store.due(now):
        expired = UsageTotals(cost=row.amount, expired=1)
        if row.day == periods.day:
            day_spent += row.amount
            day_reserved -= row.amount
            day_models[row.model] = day_models.get(row.model, UsageTotals()).plus(expired)
        if row.month == periods.month:
            month_spent += row.amount
            month_reserved -= row.amount
            month_models[row.model] = month_models.get(row.model, UsageTotals()).plus(expired)
    return LedgerReport(
        totals=attrs.evolve(
            totals,
            day_spent=day_spent,
            day_reserved=day_reserved,
            month_spent=month_spent,
            month_reserved=month_reserved,
        ),
        day_models=day_models,
        month_models=month_models,
        limits=limits,
        timezone=timezone,
        live=store.live_count() - len(store.due(now)),
    )
