# Usage ledgers behind one interface: where a budget's reservations and spend are kept.
"""The :class:`Ledger` interface and its backends: ``memory://``, ``sqlite:///PATH``, ``redis://``.

A budget (:func:`holysheep_trio.open_budget`) keeps nothing but a queue of waiters; every
number lives in its ledger, so several budgets (in several processes, with SQLite) share one.
A backend implements :class:`Ledger`: each call is **one atomic transaction** over both periods,
committed before it returns, and a call that raised changed nothing (a call that was cancelled
either completed or changed nothing). The rules themselves -- what a hold, a settlement and an
expiry do -- are written once, in :mod:`holysheep_trio.ledger._core`, over a small synchronous
:class:`~holysheep_trio.ledger._core.Store` that the memory and SQLite backends provide; a
backend that cannot run Python inside its transaction (Redis runs Lua scripts) implements the
same rules and is tested by the same tests.

A ledger reads "now" from its :class:`Calendar` -- a backend with its own clock (Redis's
``TIME``) may use that instead -- and decides which day and month a new reservation belongs to.
Amounts are integer picodollars (10⁻¹² USD).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigurationError
from ._calendar import Calendar, Periods, day_end, month_end, periods_at, utc_now, zone_named
from ._core import (
    Charge,
    Hold,
    HoldRequest,
    LedgerReport,
    Limits,
    RenewRequest,
    SettleRequest,
    Totals,
    UsageTotals,
    decide,
)
from ._memory import MemoryLedger
from ._sqlite import SQLiteLedger

__all__ = [
    "Calendar",
    "Charge",
    "Hold",
    "HoldRequest",
    "Ledger",
    "LedgerReport",
    "Limits",
    "MemoryLedger",
    "Periods",
    "RenewRequest",
    "SQLiteLedger",
    "SettleRequest",
    "Totals",
    "UsageTotals",
    "day_end",
    "decide",
    "month_end",
    "open_ledger",
    "periods_at",
    "utc_now",
    "zone_named",
]

_SYNCHRONOUS: Final = {"normal": "NORMAL", "full": "FULL"}


@runtime_checkable
class Ledger(Protocol):
    """Where a budget's reservations, spend and usage are kept; one transaction per call.

    Implementations: :class:`MemoryLedger` (``"memory://"``), :class:`SQLiteLedger`
    (``"sqlite:///PATH"``) and ``RedisLedger`` (``"redis://HOST:PORT/DB"``, in
    ``holysheep_trio.ledger._redis``, imported only when used: it needs the ``redis`` extra),
    whose ``hold`` and ``settle`` are Lua scripts over the period totals, the reservation rows
    and the usage hashes.
    """

    @property
    def url(self) -> str:
        """Where the ledger is, for messages (never with a credential)."""
        ...

    @property
    def shared(self) -> bool:
        """Whether other processes write to it too (then a budget polls while it waits)."""
        ...

    async def configure(self, *, limits: Limits, timezone: str) -> None:
        """Record the budget's limits and time zone, for reports from the ledger alone.

        Raises:
            LedgerError: The ledger counts days in another time zone, or cannot be written.
        """
        ...

    async def hold(self, request: HoldRequest) -> Hold:
        """Reserve room for one attempt, atomically against both periods.

        A new ``reservation_id`` creates a reservation in the current day and month if
        ``decide`` grants it (else nothing is written). A known one is a retry: its
        ``charge`` is committed and its held room released first, then the new amount is held
        if granted (in the reservation's own periods).

        Raises:
            LedgerError: The ledger failed; nothing was written.
        """
        ...

    async def settle(self, request: SettleRequest) -> Totals:
        """Commit the last attempt's cost, count the request, drop the reservation.

        Returns:
            The totals of the current periods afterwards.

        Raises:
            LedgerError: The ledger failed; nothing was written (the reservation will expire
                into spend).
        """
        ...

    async def renew(self, request: RenewRequest) -> frozenset[str]:
        """Extend the expiry of live reservations of one owner (a lease), atomically.

        Due reservations are expired first; a row that is not live, or of another owner, is
        left alone; an expiry is never brought forward.

        Returns:
            The ids of the reservations extended.

        Raises:
            LedgerError: The ledger failed; nothing was written.
        """
        ...

    async def report(self) -> LedgerReport:
        """The current day and month, due reservations counted as spent; writes nothing.

        Raises:
            LedgerError: The ledger cannot be read.
        """
        ...

    async def aclose(self) -> None:
        """Release the connection; idempotent."""
        ...


@asynccontextmanager
async def open_ledger(
    url: str,
    *,
    calendar: Calendar,
    read_only: bool = False,
    key_prefix: str | None = None,
    fail_open: bool | None = None,
) -> AsyncIterator[Ledger]:
    """Open the ledger at ``url``; use with ``async with``. Leaving the block closes it.

    Args:
        url: ``"memory://"``, or ``"sqlite:///PATH"`` (``sqlite:///usage.db`` is relative,
            ``sqlite:////var/lib/usage.db`` absolute), optionally with
            ``?synchronous=full``, or ``"redis://[user:password@]HOST[:PORT][/DB]"`` (or
            ``rediss://`` for TLS), optionally with ``?key_prefix=…&fail_open=true``.
        calendar: The time zone and clock.
        read_only: Open an existing ledger without writing (the ``usage`` command).
        key_prefix: For Redis: the prefix of the budget's keys (overrides the URL's).
        fail_open: For Redis: fall back to a local ledger while Redis is unreachable
            (overrides the URL's; default False: fail closed).

    Yields:
        The ledger.

    Raises:
        ConfigurationError: The URL has an unknown scheme or option, or ``key_prefix`` /
            ``fail_open`` were given for a ledger that is not in Redis.
        LedgerError: The file cannot be opened or written, is corrupt, or is not a ledger.
    """
    if isinstance(url, str) and url.startswith(("redis://", "rediss://")):
        # Imported here: coredis comes with the `redis` extra only.
        from ._redis import open_redis_ledger

        async with open_redis_ledger(
            url,
            calendar=calendar,
            read_only=read_only,
            key_prefix=key_prefix,
            fail_open=fail_open,
        ) as redis_ledger:
            yield redis_ledger
        return
    if key_prefix is not None or fail_open is not None:
        raise ConfigurationError("key_prefix and fail_open apply to redis:// ledgers only")
    ledger = _ledger_for(url, calendar=calendar, read_only=read_only)
    if isinstance(ledger, SQLiteLedger):
        await ledger.open()
    try:
        yield ledger
    finally:
        await ledger.aclose()


def _ledger_for(url: str, *, calendar: Calendar, read_only: bool) -> MemoryLedger | SQLiteLedger:
    if not isinstance(url, str):
        raise ConfigurationError(f"ledger must be a URL string, got {type(url).__name__}")
    if url in ("memory://", "memory:"):
        if read_only:
            raise ConfigurationError("a memory:// ledger exists only inside its process")
        return MemoryLedger(calendar=calendar)
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigurationError(
            f"unknown ledger {url!r}: use 'memory://', 'sqlite:///PATH' or 'redis://HOST:PORT/DB'"
        )
    if parts.netloc:
        raise ConfigurationError(
            f"bad SQLite ledger URL {url!r}: write sqlite:///relative/path or"
            " sqlite:////absolute/path"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ConfigurationError(f"the SQLite ledger URL {url!r} names no file")
    options = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(options) - {"synchronous"}
    if unknown:
        raise ConfigurationError(f"unknown SQLite ledger option(s): {', '.join(sorted(unknown))}")
    synchronous = options.get("synchronous", ["normal"])[-1].lower()
    if synchronous not in _SYNCHRONOUS:
        raise ConfigurationError(
            f"synchronous must be 'normal' or 'full', got {synchronous!r} in {url!r}"
        )
    return SQLiteLedger(
        path, calendar=calendar, synchronous=_SYNCHRONOUS[synchronous], read_only=read_only
    )
