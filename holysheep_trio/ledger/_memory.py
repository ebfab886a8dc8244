# The in-process ledger: the ledger rules over dictionaries, for one process.
from __future__ import annotations

import trio

from ._calendar import Calendar
from ._core import (
    Hold,
    HoldRequest,
    LedgerReport,
    Limits,
    RenewRequest,
    Row,
    SettleRequest,
    Totals,
    UsageTotals,
    apply_hold,
    apply_renew,
    apply_settle,
    read_report,
)

__all__ = ["MemoryLedger", "MemoryStore"]


class MemoryStore:
    """:class:`~holysheep_trio.ledger._core.Store` over dictionaries (not thread-safe)."""

    def __init__(self) -> None:
        self._spent: dict[str, int] = {}
        self._rows: dict[str, Row] = {}
        # (day, model) -> (month, usage)
        self._usage: dict[tuple[str, str], tuple[str, UsageTotals]] = {}

    def spent(self, period: str) -> int:
        return self._spent.get(period, 0)

    def add_spent(self, period: str, amount: int) -> None:
        self._spent[period] = self._spent.get(period, 0) + amount

    def reserved(self, *, day: str | None = None, month: str | None = None) -> int:
        return sum(
            row.amount
            for row in self._rows.values()
            if row.live and (row.day == day if day is not None else row.month == month)
        )

    def get(self, reservation_id: str) -> Row | None:
        return self._rows.get(reservation_id)

    def put(self, row: Row) -> None:
        self._rows[row.id] = row

    def delete(self, reservation_id: str) -> None:
        self._rows.pop(reservation_id, None)

    def due(self, now: float) -> list[Row]:
        return [row for row in self._rows.values() if row.live and row.expires <= now]

    def next_expiry(self) -> float | None:
        return min((row.expires for row in self._rows.values() if row.live), default=None)

    def purge(self, before: float) -> None:
        for row in [row for row in self._rows.values() if not row.live and row.expires < before]:
            del self._rows[row.id]

    def add_usage(self, day: str, month: str, model: str, usage: UsageTotals) -> None:
        key = (day, model)
        _, current = self._usage.get(key, (month, UsageTotals()))
        self._usage[key] = (month, current.plus(usage))

    def usage(self, *, day: str | None = None, month: str | None = None) -> dict[str, UsageTotals]:
        found: dict[str, UsageTotals] = {}
        for (row_day, model), (row_month, usage) in self._usage.items():
            if (row_day == day) if day is not None else (row_month == month):
                found[model] = found.get(model, UsageTotals()).plus(usage)
        return found

    def live_count(self) -> int:
        return sum(1 for row in self._rows.values() if row.live)


class MemoryLedger:
    """A ledger in this process's memory (``"memory://"``): fast, gone when the process ends.

    Each call is one trio step, so it is atomic without locks; it is a full checkpoint.
    """

    def __init__(self, *, calendar: Calendar) -> None:
        self._calendar = calendar
        self._store = MemoryStore()
        self._limits: Limits | None = None
        self._timezone: str | None = None

    @property
    def url(self) -> str:
        """``"memory://"``."""
        return "memory://"

    @property
    def shared(self) -> bool:
        """False: only this process changes it, so waiters need not poll."""
        return False

    async def configure(self, *, limits: Limits, timezone: str) -> None:
        """Remember the budget's limits and zone (for :meth:`report`)."""
        await trio.lowlevel.checkpoint()
        self._limits = limits
        self._timezone = timezone

    async def hold(self, request: HoldRequest) -> Hold:
        """See :meth:`holysheep_trio.Ledger.hold`."""
        await trio.lowlevel.checkpoint_if_cancelled()
        now = self._calendar.now()
        hold = apply_hold(
            self._store, request, now=now.timestamp(), periods=self._calendar.periods(now)
        )
        await trio.lowlevel.cancel_shielded_checkpoint()
        return hold

    async def settle(self, request: SettleRequest) -> Totals:
        """See :meth:`holysheep_trio.Ledger.settle`."""
        await trio.lowlevel.checkpoint_if_cancelled()
        now = self._calendar.now()
        totals = apply_settle(
            self._store, request, now=now.timestamp(), periods=self._calendar.periods(now)
        )
        await trio.lowlevel.cancel_shielded_checkpoint()
        return totals

    async def renew(self, request: RenewRequest) -> frozenset[str]:
        """See :meth:`holysheep_trio.Ledger.renew`."""
        await trio.lowlevel.checkpoint_if_cancelled()
        renewed = apply_renew(self._store, request, now=self._calendar.now().timestamp())
        await trio.lowlevel.cancel_shielded_checkpoint()
        return renewed

    async def report(self) -> LedgerReport:
        """See :meth:`holysheep_trio.Ledger.report`."""
        await trio.lowlevel.checkpoint()
        now = self._calendar.now()
        return read_report(
            self._store,
            now=now.timestamp(),
            periods=self._calendar.periods(now),
            limits=self._limits,
            timezone=self._timezone,
        )

    async def aclose(self) -> None:
        """Nothing to release."""
        await trio.lowlevel.checkpoint()
