# Calendar periods of a budget: the local day and month of an instant in an IANA time zone.
"""Pure period arithmetic: which day and month an instant falls in, and when they end.

A budget's day and month are *local calendar* periods in its time zone, so "today" starts at
local midnight whatever the UTC offset, and a DST day is 23 or 25 hours long. Keys are the ISO
dates ``"2026-12-04"`` and ``"2026-12"``; a period ends at the first instant of the next local
day (month). Where a zone skips midnight (some zones switch DST at 00:00), that first instant is
the transition itself: ``zoneinfo`` resolves a local time inside a gap with the offset before
it (PEP 495, ``fold=0``), which lands exactly on the transition.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

__all__ = [
    "Calendar",
    "Periods",
    "day_end",
    "month_end",
    "periods_at",
    "utc_now",
    "zone_named",
]


def utc_now() -> dt.datetime:
    """The current time, aware, in UTC (the default clock)."""
    return dt.datetime.now(dt.timezone.utc)


def zone_named(name: str) -> ZoneInfo:
    """The IANA zone ``name``.

    Raises:
        ValueError: Not a known IANA zone name.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"timezone must be an IANA zone name, got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {name!r}: {exc}") from None


@attrs.frozen
class Periods:
    """The day and month an instant falls in, as keys.

    Attributes:
        day: The local date, ``"YYYY-MM-DD"``.
        month: The local month, ``"YYYY-MM"``.
    """

    day: str
    month: str


def periods_at(moment: dt.datetime, zone: ZoneInfo) -> Periods:
    """The local day and month of ``moment`` in ``zone``.

    Raises:
        ValueError: ``moment`` is naive.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("the budget clock must return aware datetimes")
    local = moment.astimezone(zone).date()
    return Periods(day=local.isoformat(), month=local.isoformat()[:7])


def _start_of(date: dt.date, zone: ZoneInfo) -> dt.datetime:
    # Midnight with fold=0: inside a gap this is the transition instant (module docstring).
    naive = dt.datetime.combine(date, dt.time())
    return naive.replace(tzinfo=zone).astimezone(dt.timezone.utc).astimezone(zone)


def day_end(day: str, zone: ZoneInfo) -> dt.datetime:
    """The first instant after local day ``day`` (``"YYYY-MM-DD"``), aware, in ``zone``."""
    return _start_of(dt.date.fromisoformat(day) + dt.timedelta(days=1), zone)


def month_end(month: str, zone: ZoneInfo) -> dt.datetime:
    """The first instant after local month ``month`` (``"YYYY-MM"``), aware, in ``zone``."""
    year, number = int(month[:4]), int(month[5:7])
    following = dt.date(year + number // 12, number % 12 + 1, 1)
    return _start_of(following, zone)


@attrs.frozen
class Calendar:
    """A time zone and a clock: where a ledger reads "now" and its periods.

    Attributes:
        zone: The IANA zone the periods are local to.
        clock: Returns the current time as an aware datetime.
    """

    zone: ZoneInfo
    clock: Callable[[], dt.datetime] = utc_now

    def now(self) -> dt.datetime:
        """The clock's time, checked to be aware.

        Raises:
            ValueError: The clock returned a naive datetime or something else.
        """
        moment = self.clock()
        if not isinstance(moment, dt.datetime) or moment.utcoffset() is None:
            raise ValueError(f"the budget clock must return aware datetimes, got {moment!r}")
        return moment

    def periods(self, moment: dt.datetime) -> Periods:
        """The periods of ``moment`` in this calendar's zone."""
        return periods_at(moment, self.zone)
