# Tests of the ledgers: calendar periods, the admission rule, the rules over memory and SQLite.
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import holysheep_trio as hs
from holysheep_trio.ledger import (
    Calendar,
    Charge,
    HoldRequest,
    Limits,
    MemoryLedger,
    SettleRequest,
    SQLiteLedger,
    Totals,
    day_end,
    decide,
    month_end,
    open_ledger,
    periods_at,
)
from holysheep_trio.ledger._core import (
    TOMBSTONE_SECONDS,
    RenewRequest,
    apply_hold,
    apply_renew,
    apply_settle,
    read_report,
)
from holysheep_trio.ledger._memory import MemoryStore

UTC = dt.timezone.utc
ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- the calendar

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Santiago",  # DST changes at midnight: local midnight is skipped once a year
    "America/Havana",  # the same, in spring
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Pacific/Apia",  # skipped 2011-12-30 entirely
    "Asia/Kolkata",
    "Pacific/Chatham",
]


def test_periods_are_local_dates() -> None:
    moment = dt.datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert periods_at(moment, ZoneInfo("UTC")) == hs.ledger.Periods("2026-12-31", "2026-12")
    assert periods_at(moment, ZoneInfo("Europe/Berlin")) == hs.ledger.Periods(
        "2027-01-01", "2027-01"
    )
    assert periods_at(moment, ZoneInfo("America/New_York")).day == "2026-12-31"
    with pytest.raises(ValueError, match="aware"):
        periods_at(dt.datetime(2026, 1, 1), ZoneInfo("UTC"))


def test_dst_days_are_23_and_25_hours_long() -> None:
    berlin = ZoneInfo("Europe/Berlin")

    def length(day: str) -> float:
        start = day_end((dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat(), berlin)
        return (day_end(day, berlin).timestamp() - start.timestamp()) / 3600

    assert length("2026-03-29") == 23
    assert length("2026-10-25") == 25
    assert length("2026-06-01") == 24
    assert day_end("2026-03-28", berlin) == dt.datetime(2026, 3, 28, 23, tzinfo=UTC)


def test_a_skipped_midnight_ends_the_day_at_the_transition() -> None:
    # Chile moves its clocks from 00:00 to 01:00: the day 2026-09-06 starts at 01:00 local.
    santiago = ZoneInfo("America/Santiago")
    end = day_end("2026-09-05", santiago)
    assert (end.hour, end.minute) == (1, 0)
    assert end == dt.datetime(2026, 9, 6, 4, tzinfo=UTC)
    before = end.astimezone(UTC) - dt.timedelta(microseconds=1)
    assert periods_at(before, santiago).day == "2026-09-05"


def test_month_ends() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert month_end("2026-12", berlin) == dt.datetime(2027, 1, 1, tzinfo=berlin)
    assert month_end("2028-02", ZoneInfo("UTC")) == dt.datetime(2028, 3, 1, tzinfo=UTC)
    assert month_end("2026-10", berlin) == dt.datetime(2026, 10, 31, 23, tzinfo=UTC)


@given(
    st.datetimes(
        min_value=dt.datetime(1980, 1, 1),
        max_value=dt.datetime(2037, 12, 31),
        timezones=st.just(UTC),
    ),
    st.sampled_from(ZONES),
)
def test_every_instant_lies_in_its_periods(moment: dt.datetime, zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    periods = periods_at(moment, zone)
    assert periods.day == moment.astimezone(zone).date().isoformat()
    assert periods.month == periods.day[:7]
    for end, key, field in (
        (day_end(periods.day, zone), periods.day, "day"),
        (month_end(periods.month, zone), periods.month, "month"),
    ):
        assert end > moment
        assert getattr(periods_at(end, zone), field) > key
        last = end.astimezone(UTC) - dt.timedelta(microseconds=1)
        assert getattr(periods_at(last, zone), field) == key


# --------------------------------------------------------------------------- the admission rule


def test_decide_examples() -> None:
    limits = Limits(daily=100, monthly=1000)
    totals = Totals(day="d", month="m", day_spent=50, day_reserved=30, month_spent=500)
    assert decide(limits, totals, 20) == ("granted", None)
    assert decide(limits, totals, 21) == ("wait", "daily")  # fits once the 30 are settled
    assert decide(limits, totals, 51) == ("exceeded", "daily")
    assert decide(limits, attrs_evolve(totals, month_spent=990), 20) == ("exceeded", "monthly")
    assert decide(Limits(), totals, 10**15) == ("granted", None)


def attrs_evolve(totals: Totals, **changes: int) -> Totals:
    import attrs

    return attrs.evolve(totals, **changes)


amounts = st.integers(min_value=0, max_value=10_000)
limits_strategy = st.builds(Limits, daily=st.none() | amounts, monthly=st.none() | amounts)


@given(limits_strategy, amounts, amounts, amounts, amounts, amounts)
def test_decide_never_grants_beyond_a_limit_nor_refuses_what_fits(
    limits: Limits, day_spent: int, day_reserved: int, month_spent: int, reserved: int, needed: int
) -> None:
    totals = Totals(
        day="d",
        month="m",
        day_spent=day_spent,
        day_reserved=day_reserved,
        month_spent=month_spent,
        month_reserved=reserved,
    )
    verdict, period = decide(limits, totals, needed)
    rows = [
        ("daily", limits.daily, day_spent, day_reserved),
        ("monthly", limits.monthly, month_spent, reserved),
    ]
    if verdict == "granted":
        assert all(lim is None or s + r + needed <= lim for _, lim, s, r in rows)
    elif verdict == "exceeded":
        assert any(
            name == period and lim is not None and s + needed > lim for name, lim, s, _ in rows
        )
    else:
        assert all(lim is None or s + needed <= lim for _, lim, s, _ in rows)
        assert any(
            name == period and lim is not None and s + r + needed > lim for name, lim, s, r in rows
        )


# --------------------------------------------------------------------------- the rules, in lockstep

BASE = dt.datetime(2026, 12, 31, 20, 0, tzinfo=UTC)
LIMITS = Limits(daily=10_000, monthly=25_000)


def _sqlite_ledger(directory: str) -> SQLiteLedger:
    ledger = SQLiteLedger(
        os.path.join(directory, "ledger.db"), calendar=Calendar(zone=ZoneInfo("UTC"))
    )
    ledger._open_sync()
    return ledger


class LedgerRules(RuleBasedStateMachine):
    """Random holds, retries, settlements and clock jumps on a memory store and an SQLite file
    in lockstep: same answers, and the bill never passes a limit."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp()
        self.memory = MemoryStore()
        self.sqlite = _sqlite_ledger(self.directory)
        self.now = BASE
        self.held: dict[str, int] = {}  # reservation -> amount held for its attempt
        self.known: list[str] = []
        self.counter = 0

    def teardown(self) -> None:
        self.sqlite._db.close()  # type: ignore[union-attr]

    def _periods(self) -> hs.ledger.Periods:
        return periods_at(self.now, ZoneInfo("UTC"))

    def _hold(self, request: HoldRequest) -> hs.ledger.Hold:
        stamp, periods = self.now.timestamp(), self._periods()
        in_memory = apply_hold(self.memory, request, now=stamp, periods=periods)
        in_file = self.sqlite._hold_sync(request, stamp, periods)
        assert in_memory == in_file
        return in_memory

    def _request(self, reservation_id: str, amount: int, charge: Charge | None) -> HoldRequest:
        return HoldRequest(
            reservation_id=reservation_id,
            owner="test",
            model="m" + reservation_id[-1],
            amount=amount,
            expires_in=3600,
            limits=LIMITS,
            charge=charge,
        )

    @rule(amount=st.integers(min_value=0, max_value=4_000))
    def reserve(self, amount: int) -> None:
        self.counter += 1
        reservation_id = f"r{self.counter}"
        hold = self._hold(self._request(reservation_id, amount, None))
        if hold.verdict == "granted":
            self.held[reservation_id] = amount
            self.known.append(reservation_id)

    @precondition(lambda self: self.known)
    @rule(data=st.data(), amount=st.integers(min_value=0, max_value=4_000))
    def retry(self, data: st.DataObject, amount: int) -> None:
        reservation_id = data.draw(st.sampled_from(self.known))
        held = self.held.get(reservation_id, 0)
        cost = data.draw(st.integers(min_value=0, max_value=held))
        charge = Charge(cost=cost, prompt_tokens=1, completion_tokens=2)
        hold = self._hold(self._request(reservation_id, amount, charge))
        self.held[reservation_id] = amount if hold.verdict == "granted" else 0

    @precondition(lambda self: self.known)
    @rule(data=st.data(), cancelled=st.booleans(), free=st.booleans())
    def settle(self, data: st.DataObject, cancelled: bool, free: bool) -> None:
        reservation_id = data.draw(st.sampled_from(self.known))
        held = self.held.pop(reservation_id, 0)
        self.known.remove(reservation_id)
        cost = data.draw(st.integers(min_value=0, max_value=held))
        request = SettleRequest(
            reservation_id=reservation_id,
            model="m",
            # free: the last attempt cost nothing (refused, or never sent)
            charge=None if free or not (held or cost) else Charge(cost=cost, cancelled=cancelled),
        )
        stamp, periods = self.now.timestamp(), self._periods()
        in_memory = apply_settle(self.memory, request, now=stamp, periods=periods)
        assert in_memory == self.sqlite._settle_sync(request, stamp, periods)

    @precondition(lambda self: self.known)
    @rule(data=st.data(), minutes=st.integers(min_value=1, max_value=120))
    def renew(self, data: st.DataObject, minutes: int) -> None:
        chosen = data.draw(st.lists(st.sampled_from([*self.known, "unknown"]), max_size=4))
        owner = data.draw(st.sampled_from(["test", "test", "someone else"]))
        request = RenewRequest(owner=owner, leases=tuple((i, minutes * 60.0) for i in chosen))
        stamp = self.now.timestamp()
        renewed = apply_renew(self.memory, request, now=stamp)
        assert renewed == self.sqlite._renew_sync(request, stamp)
        assert renewed <= set(chosen) - {"unknown"}
        if owner != "test":
            assert not renewed

    @rule(minutes=st.integers(min_value=1, max_value=24 * 60))
    def time_passes(self, minutes: int) -> None:
        # Crosses expiries (an hour) and midnights, and New Year's Eve (a new month).
        self.now += dt.timedelta(minutes=minutes)
        self.memory.purge(self.now.timestamp() - TOMBSTONE_SECONDS)
        for reservation_id in list(self.known):
            if self.memory.get(reservation_id) is None:
                # Its tombstone is gone a day after it expired: its owner is taken for dead
                # (a late charge would now count again; see the test after this machine).
                self.known.remove(reservation_id)
                self.held.pop(reservation_id, None)

    @invariant()
    def same_reports_and_the_limits_hold(self) -> None:
        stamp, periods = self.now.timestamp(), self._periods()
        in_memory = read_report(self.memory, now=stamp, periods=periods)
        in_file = self.sqlite._report_sync(stamp, periods)
        assert in_memory.totals == in_file.totals
        assert dict(in_memory.month_models) == dict(in_file.month_models)
        totals = in_memory.totals
        # Every cost was at most what was held: spent plus reserved never passes a limit.
        assert totals.day_spent + totals.day_reserved <= LIMITS.daily  # type: ignore[operator]
        assert totals.month_spent + totals.month_reserved <= LIMITS.monthly  # type: ignore[operator]
        # The usage rows add up to the spend, to the picodollar.
        assert sum(usage.cost for usage in in_memory.day_models.values()) == totals.day_spent
        assert sum(usage.cost for usage in in_memory.month_models.values()) == totals.month_spent


LedgerRules.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestLedgerRules = LedgerRules.TestCase


class Rules:
    """The ledger rules over one store (memory, or an SQLite file), one transaction per call."""

    def __init__(self, kind: str, directory: str) -> None:
        self.memory = MemoryStore() if kind == "memory" else None
        self.sqlite = _sqlite_ledger(directory) if kind == "sqlite" else None
        self.periods = periods_at(BASE, ZoneInfo("UTC"))

    def hold(self, request: HoldRequest, now: float) -> hs.ledger.Hold:
        if self.sqlite is not None:
            return self.sqlite._hold_sync(request, now, self.periods)
        assert self.memory is not None
        return apply_hold(self.memory, request, now=now, periods=self.periods)

    def settle(self, request: SettleRequest, now: float) -> Totals:
        if self.sqlite is not None:
            return self.sqlite._settle_sync(request, now, self.periods)
        assert self.memory is not None
        return apply_settle(self.memory, request, now=now, periods=self.periods)

    def renew(self, request: RenewRequest, now: float) -> frozenset[str]:
        if self.sqlite is not None:
            return self.sqlite._renew_sync(request, now)
        assert self.memory is not None
        return apply_renew(self.memory, request, now=now)

    def report(self, now: float) -> hs.ledger.LedgerReport:
        if self.sqlite is not None:
            return self.sqlite._report_sync(now, self.periods)
        assert self.memory is not None
        return read_report(self.memory, now=now, periods=self.periods)

    def close(self) -> None:
        if self.sqlite is not None:
            self.sqlite._db.close()  # type: ignore[union-attr]


@pytest.fixture(params=["memory", "sqlite"])
def rules(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    found = Rules(request.param, str(tmp_path))
    yield found
    found.close()


def test_expiry_counts_the_held_amount_and_a_late_settlement_replaces_it_by_the_cost(
    rules: Rules,
) -> None:
    now = BASE.timestamp()
    request = HoldRequest(
        reservation_id="a", owner="o", model="m", amount=500, expires_in=60, limits=LIMITS
    )
    assert rules.hold(request, now).verdict == "granted"
    later = now + 61
    report = rules.report(later)  # reading counts it, writes nothing
    assert (report.totals.day_spent, report.totals.day_reserved) == (500, 0)
    assert report.day_models["m"].expired == 1
    assert rules.report(now).totals.day_reserved == 500
    # Its owner was alive after all (a long queue, a stalled process): the 300 it reports
    # replace the 500 counted at the expiry, as if it had settled in time.
    charge = Charge(cost=300, prompt_tokens=10, completion_tokens=20)
    rules.settle(SettleRequest(reservation_id="a", model="m", charge=charge), later)
    report = rules.report(later)
    assert (report.totals.day_spent, report.totals.month_spent) == (300, 300)
    assert report.day_models["m"] == hs.ledger.UsageTotals(
        requests=1, prompt_tokens=10, completion_tokens=20, cost=300
    )
    # Above what was counted at the expiry: the excess is added.
    rules.hold(attrs_hold(request, "b"), later)
    rules.settle(
        SettleRequest(reservation_id="b", model="m", charge=Charge(cost=700)), later + 3600
    )
    assert rules.report(later + 3600).totals.day_spent == 300 + 700
    # One whose attempt cost nothing (refused, never sent) gets its whole worst case back.
    rules.hold(attrs_hold(request, "c"), later)
    assert rules.report(later + 3600).totals.day_spent == 1000 + 500
    rules.settle(SettleRequest(reservation_id="c", model="m"), later + 3600)
    report = rules.report(later + 3600)
    assert report.totals.day_spent == 1000
    assert (report.day_models["m"].requests, report.day_models["m"].expired) == (3, 0)
    # A retry's charge replaces the worst case of its expired attempt the same way, and the
    # room for the next attempt is held again, live.
    rules.hold(attrs_hold(request, "d"), later)
    import attrs

    retry = attrs.evolve(request, reservation_id="d", amount=400, charge=Charge(cost=100))
    hold = rules.hold(retry, later + 3600)
    assert (hold.verdict, hold.totals.day_spent, hold.totals.day_reserved) == (
        "granted",
        1100,
        400,
    )
    report = rules.report(later + 3600)
    assert (report.live, report.day_models["m"].expired, report.day_models["m"].cost) == (
        1,
        0,
        1100,
    )


def test_a_live_owner_renews_its_reservations(rules: Rules) -> None:
    now = BASE.timestamp()
    for reservation_id, owner in (("a", "o"), ("b", "o"), ("c", "other")):
        request = HoldRequest(
            reservation_id=reservation_id,
            owner=owner,
            model="m",
            amount=500,
            expires_in=60,
            limits=LIMITS,
        )
        assert rules.hold(request, now).verdict == "granted"
    renew = RenewRequest(owner="o", leases=(("a", 60.0), ("c", 60.0), ("gone", 60.0)))
    assert rules.renew(renew, now + 50) == {"a"}  # not another owner's, nor an unknown one
    report = rules.report(now + 61)
    assert (report.totals.day_spent, report.totals.day_reserved, report.live) == (1000, 500, 1)
    # An expiry is never brought forward.
    assert rules.renew(RenewRequest(owner="o", leases=(("a", 1.0),)), now + 70) == {"a"}
    assert rules.report(now + 109).totals.day_reserved == 500
    # Once due, it is expired (swept) and stays so: its settlement will be refunded instead.
    assert rules.renew(RenewRequest(owner="o", leases=(("a", 60.0),)), now + 111) == frozenset()
    report = rules.report(now + 111)
    assert (report.totals.day_spent, report.totals.day_reserved, report.live) == (1500, 0, 0)


def test_a_charge_for_a_forgotten_reservation_counts_once_in_the_current_periods() -> None:
    store = MemoryStore()
    periods = periods_at(BASE, ZoneInfo("UTC"))
    request = HoldRequest(
        reservation_id="a", owner="o", model="m", amount=500, expires_in=60, limits=LIMITS
    )
    apply_hold(store, request, now=BASE.timestamp(), periods=periods)
    later = BASE + dt.timedelta(days=3)
    later_periods = periods_at(later, ZoneInfo("UTC"))
    import attrs

    retry = attrs.evolve(request, charge=Charge(cost=300), amount=200)
    hold = apply_hold(store, retry, now=later.timestamp(), periods=later_periods)
    assert hold.verdict == "granted"
    # The expiry counted 500 on the first day; the tombstone is gone, so the late 300 counts
    # again, once, today (never less than what may have been billed).
    assert (hold.totals.day, hold.totals.day_spent, hold.totals.day_reserved) == (
        "2027-01-03",
        300,
        200,
    )
    assert read_report(store, now=later.timestamp(), periods=periods).totals.day_spent == 500


def attrs_hold(request: HoldRequest, reservation_id: str) -> HoldRequest:
    import attrs

    return attrs.evolve(request, reservation_id=reservation_id)


def test_a_refused_new_hold_writes_nothing_and_a_refused_retry_keeps_its_charge() -> None:
    store = MemoryStore()
    now, periods = BASE.timestamp(), periods_at(BASE, ZoneInfo("UTC"))
    small = Limits(daily=1000)
    first = HoldRequest(
        reservation_id="a", owner="o", model="m", amount=800, expires_in=60, limits=small
    )
    assert apply_hold(store, first, now=now, periods=periods).verdict == "granted"
    second = attrs_hold(first, "b")
    hold = apply_hold(store, second, now=now, periods=periods)
    assert (hold.verdict, hold.period, hold.wake_at) == ("wait", "daily", now + 60)
    assert store.get("b") is None
    import attrs

    retry = attrs.evolve(first, charge=Charge(cost=600))
    hold = apply_hold(store, retry, now=now, periods=periods)
    assert (hold.verdict, hold.totals.day_spent, hold.totals.day_reserved) == ("exceeded", 600, 0)
    assert store.get("a").amount == 0  # type: ignore[union-attr]


# --------------------------------------------------------------------------- SQLite files


async def test_the_sqlite_file_uses_wal_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    calendar = Calendar(zone=ZoneInfo("UTC"))
    async with open_ledger(f"sqlite:///{path}", calendar=calendar) as ledger:
        await ledger.configure(limits=Limits(daily=10), timezone="UTC")
        request = HoldRequest(
            reservation_id="x", owner="o", model="m", amount=5, expires_in=60, limits=Limits()
        )
        assert (await ledger.hold(request)).verdict == "granted"
        await ledger.settle(SettleRequest(reservation_id="x", model="m", charge=Charge(cost=3)))
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    async with open_ledger(f"sqlite:///{path}", calendar=calendar, read_only=True) as ledger:
        report = await ledger.report()
    assert report.totals.day_spent == 3
    assert report.limits == Limits(daily=10)
    assert report.timezone == "UTC"


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a database at all, just some text" * 100,
        b"SQLite format 3\x00" + b"\xff" * 4080,  # a header, then garbage
    ],
)
async def test_a_corrupt_file_is_a_ledger_error_at_open(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "usage.db"
    path.write_bytes(content)
    with pytest.raises(hs.LedgerError, match=r"usage\.db"):
        async with hs.open_budget(daily=1, ledger=f"sqlite:///{path}"):
            pass  # pragma: no cover


async def test_a_damaged_ledger_page_is_caught_at_open(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    async with hs.open_budget(daily=1, ledger=f"sqlite:///{path}"):
        pass
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 4096
    data[2 * page : 3 * page] = b"\x0d" + b"\xee" * (page - 1)  # smash a b-tree page
    path.write_bytes(bytes(data))
    with pytest.raises(hs.LedgerError, match=r"usage\.db"):
        async with hs.open_budget(daily=1, ledger=f"sqlite:///{path}"):
            pass  # pragma: no cover


async def test_an_unwritable_place_is_a_ledger_error_at_open(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(hs.LedgerError, match="opening"):
        async with hs.open_budget(ledger=f"sqlite:///{blocker}/usage.db"):
            pass  # pragma: no cover


async def test_a_foreign_database_is_not_taken_for_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE reservations (name TEXT)")
    with pytest.raises(hs.LedgerError, match=r"other\.db"):
        async with hs.open_budget(ledger=f"sqlite:///{path}"):
            pass  # pragma: no cover
    with sqlite3.connect(tmp_path / "future.db") as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema', '99')")
    with pytest.raises(hs.LedgerError, match="schema version 99"):
        async with hs.open_budget(ledger=f"sqlite:///{tmp_path / 'future.db'}"):
            pass  # pragma: no cover


async def test_one_file_counts_days_in_one_time_zone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    async with hs.open_budget(ledger=url, timezone="Europe/Berlin"):
        pass
    with pytest.raises(hs.LedgerError, match="Europe/Berlin"):
        async with hs.open_budget(ledger=url, timezone="UTC"):
            pass  # pragma: no cover


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgres://localhost/x", "unknown ledger"),
        ("sqlite://host/x.db", "sqlite:///relative"),
        ("sqlite:///", "names no file"),
        ("sqlite:///x.db?mode=fast", "unknown SQLite ledger option"),
        ("sqlite:///x.db?synchronous=off", "synchronous"),
    ],
)
async def test_bad_ledger_urls(url: str, problem: str) -> None:
    with pytest.raises(hs.ConfigurationError, match=problem):
        async with hs.open_budget(ledger=url):
            pass  # pragma: no cover


async def test_the_memory_ledger_is_one_step_per_call() -> None:
    ledger = MemoryLedger(calendar=Calendar(zone=ZoneInfo("UTC")))
    request = HoldRequest(
        reservation_id="x", owner="o", model="m", amount=5, expires_in=60, limits=Limits()
    )
    with trio.CancelScope() as scope:
        scope.cancel()
        await ledger.hold(request)  # cancelled before it started: nothing happened
    assert (await ledger.report()).live == 0
    assert (await ledger.hold(request)).verdict == "granted"
    assert (await ledger.report()).live == 1
    assert ledger.url == "memory://"
    assert not ledger.shared


# --------------------------------------------------------------------------- several processes

CHILD = textwrap.dedent(
    """
    import json, sys
    import trio
    import holysheep_trio as hs

    URL, LIMIT, REQUESTS, MODE = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    CUT_SHORT = hs.AttemptBill(billable=True, completed=False, completion_tokens=1)

    async def main():
        granted = refused = 0
        async with hs.open_budget(daily=LIMIT, ledger=URL, poll_interval=0.01) as budget:
            async def one():
                nonlocal granted, refused
                try:
                    reservation = await budget.reserve(
                        model="gpt-4.1", prompt_bound=1000, max_output_tokens=1000,
                        expires_in=30)
                except hs.BudgetExceededError:
                    refused += 1
                    return
                granted += 1
                await trio.sleep(0)
                await reservation.settle(CUT_SHORT)  # cut short: the whole reservation

            if MODE == "hold":
                held = [await budget.reserve(model="gpt-4.1", prompt_bound=1000,
                                             max_output_tokens=1000, expires_in=30)
                        for _ in range(3)]
                for _ in range(2):
                    await one()
                print(json.dumps({"ready": True, "granted": granted}), flush=True)
                await trio.sleep_forever()
            async with trio.open_nursery() as nursery:
                for _ in range(REQUESTS):
                    nursery.start_soon(one)
        print(json.dumps({"granted": granted, "refused": refused}), flush=True)

    trio.run(main)
    """
)

# The worst case of each child's request: 1000 prompt tokens at $2/M + 1000 at $8/M.
ONE = 0.01


def _child_command(tmp_path: Path, *args: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return [sys.executable, str(script), *args]


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


async def test_two_processes_share_one_sqlite_budget_without_overshoot(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    limit = 0.055  # five and a half worst cases
    command = _child_command(tmp_path, url, str(limit), "60", "run")
    with trio.fail_after(120):  # a guard against a hang, not a speed assertion
        async with trio.open_nursery() as nursery:
            results: list[Any] = []

            async def child() -> None:
                done = await trio.run_process(
                    command, capture_stdout=True, capture_stderr=True, env=_child_env()
                )
                results.append(json.loads(done.stdout))

            nursery.start_soon(child)
            nursery.start_soon(child)
    granted = sum(result["granted"] for result in results)
    assert sum(result["granted"] + result["refused"] for result in results) == 120
    assert granted == 5
    async with hs.open_budget(daily=limit, ledger=url) as budget:
        report = await budget.report()
    assert report.daily.spent == pytest.approx(granted * ONE)
    assert report.daily.spent <= limit  # never overshot
    assert limit - report.daily.spent < ONE  # and no request was refused that would have fit
    assert report.models["gpt-4.1"].requests == 5
    assert report.models["gpt-4.1"].cancelled == 5


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs kill -9")
async def test_a_killed_process_loses_no_settled_spend_and_its_holds_expire(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    command = _child_command(tmp_path, url, "1.0", "0", "hold")
    with trio.fail_after(60):
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_child_env()
        )
        try:
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, "the child ended before it was ready"
                line += chunk
            assert json.loads(line) == {"ready": True, "granted": 2}
            process.send_signal(signal.SIGKILL)  # kill -9: no clean-up at all
        finally:
            await process.wait()
            await process.stdout.aclose()  # type: ignore[union-attr]
    assert process.returncode == -signal.SIGKILL
    # Restarted at once: the settled spend is there, the dead holds still block their room.
    async with hs.open_budget(daily=1.0, ledger=url) as budget:
        report = await budget.report()
    assert report.daily.spent == pytest.approx(2 * ONE)
    assert report.daily.reserved == pytest.approx(3 * ONE)
    assert report.in_flight == 3
    # After their expiry (30 s) they are spent at their reserved amount, never less.
    later = dt.datetime.now(UTC) + dt.timedelta(seconds=31)
    async with hs.open_budget(daily=1.0, ledger=url, clock=lambda: later) as budget:
        report = await budget.report()
        assert report.daily.spent == pytest.approx(5 * ONE)
        assert report.daily.reserved == 0
        assert report.models["gpt-4.1"].expired == 3
        assert report.models["gpt-4.1"].requests == 2
        # The next reservation turns them into committed spend for good.
        reservation = await budget.reserve(
            model="gpt-4.1", prompt_bound=1000, max_output_tokens=1000, expires_in=None
        )
        await reservation.settle(None)
        assert (await budget.report()).daily.spent == pytest.approx(5 * ONE)
    with sqlite3.connect(tmp_path / "shared.db") as db:
        assert db.execute("SELECT COUNT(*) FROM reservations WHERE live = 1").fetchone() == (0,)


async def test_a_lock_held_too_long_is_a_ledger_error_and_the_ledger_recovers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "usage.db"
    ledger = SQLiteLedger(str(path), calendar=Calendar(zone=ZoneInfo("UTC")), busy_timeout=0)
    await ledger.open()
    request = HoldRequest(
        reservation_id="x", owner="o", model="m", amount=5, expires_in=60, limits=Limits()
    )
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(hs.LedgerError, match="reserving failed: database is locked"):
            await ledger.hold(request)
        other.execute("COMMIT")
        assert (await ledger.hold(request)).verdict == "granted"
    finally:
        other.close()
        await ledger.aclose()
    await ledger.aclose()  # idempotent
    with pytest.raises(hs.LedgerError, match="closed"):
        await ledger.hold(request)


def test_switching_to_wal_waits_out_a_concurrent_opener(tmp_path: Path) -> None:
    # Two workers opening a fresh ledger together: SQLite answers the second one's switch to
    # WAL with "database is locked" at once, without its busy handler; the ledger waits.
    class Cursor:
        def fetchone(self) -> tuple[str]:
            return ("wal",)

    class Contended:
        def __init__(self) -> None:
            self.tries = 0

        def execute(self, statement: str) -> Cursor:
            self.tries += 1
            if self.tries <= 2:
                raise sqlite3.OperationalError("database is locked")
            return Cursor()

    ledger = SQLiteLedger(str(tmp_path / "x.db"), calendar=Calendar(zone=ZoneInfo("UTC")))
    db = Contended()
    assert ledger._wal_mode(db) == "wal"  # type: ignore[arg-type]
    assert db.tries == 3


async def test_many_workers_open_one_new_ledger_together(tmp_path: Path) -> None:
    calendar = Calendar(zone=ZoneInfo("UTC"))
    for index in range(40):
        url = f"sqlite:///{tmp_path / f'fresh{index}.db'}"

        async def open_one(url: str = url) -> None:
            async with open_ledger(url, calendar=calendar):
                pass

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(open_one)
