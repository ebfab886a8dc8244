# Tests of the Redis ledger: the rules of _core.py in Lua, the server's clock, failures, the CLI.
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio
from conftest import RedisServer

import holysheep_trio as hs
from holysheep_trio.ledger import (
    Calendar,
    Charge,
    HoldRequest,
    Limits,
    SettleRequest,
    SQLiteLedger,
    periods_at,
)
from holysheep_trio.ledger._core import (
    RenewRequest,
    apply_hold,
    apply_renew,
    apply_settle,
    read_report,
)
from holysheep_trio.ledger._memory import MemoryStore

UTC = dt.timezone.utc
ROOT = Path(__file__).resolve().parent.parent
BASE = dt.datetime(2026, 12, 31, 20, 0, tzinfo=UTC)
SMALL = {"model": "gpt-4.1", "prompt_bound": 1000, "max_output_tokens": 1000, "expires_in": None}
ONE = 0.01  # SMALL's worst case: 1000 prompt tokens at $2/M + 1000 at $8/M
_prefixes = iter(range(10**9))


def prefix() -> str:
    """A key prefix of its own for each test on the shared server."""
    return f"test-{os.getpid()}-{next(_prefixes)}"


@asynccontextmanager
async def redis_ledger(
    url: str, clock: Callable[[], dt.datetime], *, key_prefix: str | None = None
) -> AsyncIterator[Any]:
    from holysheep_trio.ledger._redis import open_redis_ledger

    calendar = Calendar(zone=ZoneInfo("UTC"), clock=clock)
    async with open_redis_ledger(
        url, calendar=calendar, key_prefix=key_prefix or prefix(), server_clock=False
    ) as ledger:
        yield ledger


# --------------------------------------------------------------------------- the same rules


@pytest.mark.parametrize("scale", [1, 10**14])
@pytest.mark.parametrize("seed", range(4))
async def test_memory_sqlite_and_redis_answer_every_scenario_alike(
    redis_server: RedisServer, tmp_path: Path, seed: int, scale: int
) -> None:
    """Random holds, retries, settlements and clock jumps (across expiries, midnights and New
    Year's Eve) on the three ledgers in lockstep: the same answer to every call, the same report
    after every step. ``scale`` 10¹⁴ puts amounts near 10¹⁸ picodollars, far beyond the 2⁵³
    that Lua's numbers hold exactly."""
    rng = random.Random(seed)
    limits = Limits(daily=10_000 * scale, monthly=25_000 * scale)
    now = BASE
    memory = MemoryStore()
    sqlite = SQLiteLedger(str(tmp_path / "ledger.db"), calendar=Calendar(zone=ZoneInfo("UTC")))
    sqlite._open_sync()
    held: dict[str, int] = {}
    known: list[str] = []
    try:
        async with redis_ledger(redis_server.url, lambda: now) as redis:

            def request(reservation_id: str, amount: int, charge: Charge | None) -> HoldRequest:
                return HoldRequest(
                    reservation_id=reservation_id,
                    owner="test",
                    model="m" + reservation_id[-1],
                    amount=amount,
                    expires_in=3600,
                    limits=limits,
                    charge=charge,
                )

            async def hold(request: HoldRequest) -> hs.ledger.Hold:
                stamp, periods = now.timestamp(), periods_at(now, ZoneInfo("UTC"))
                expected = apply_hold(memory, request, now=stamp, periods=periods)
                assert sqlite._hold_sync(request, stamp, periods) == expected
                assert await redis.hold(request) == expected
                return expected

            for step in range(150):
                action = rng.choice(["reserve", "reserve", "retry", "settle", "renew", "time"])
                if action == "reserve":
                    reservation_id = f"r{step}"
                    amount = rng.randint(0, 4_000) * scale
                    if (await hold(request(reservation_id, amount, None))).verdict == "granted":
                        held[reservation_id] = amount
                        known.append(reservation_id)
                elif action == "retry" and known:
                    reservation_id = rng.choice(known)
                    cost = rng.randint(0, held.get(reservation_id, 0))
                    amount = rng.randint(0, 4_000) * scale
                    charge = Charge(cost=cost, prompt_tokens=1, completion_tokens=2)
                    verdict = (await hold(request(reservation_id, amount, charge))).verdict
                    held[reservation_id] = amount if verdict == "granted" else 0
                elif action == "settle" and known:
                    reservation_id = rng.choice(known)
                    known.remove(reservation_id)
                    amount = held.pop(reservation_id, 0)
                    cost = rng.randint(0, amount)
                    cancelled = rng.random() < 0.5
                    free = rng.random() < 0.2  # the last attempt cost nothing
                    settle = SettleRequest(
                        reservation_id=reservation_id,
                        model="m",
                        charge=None
                        if free or not (amount or cost)
                        else Charge(cost=cost, cancelled=cancelled),
                    )
                    stamp, periods = now.timestamp(), periods_at(now, ZoneInfo("UTC"))
                    expected_totals = apply_settle(memory, settle, now=stamp, periods=periods)
                    assert sqlite._settle_sync(settle, stamp, periods) == expected_totals
                    assert await redis.settle(settle) == expected_totals
                elif action == "renew" and known:
                    chosen = rng.sample([*known, "unknown"], rng.randint(1, min(4, len(known))))
                    renew = RenewRequest(
                        owner=rng.choice(["test", "test", "someone else"]),
                        leases=tuple((i, rng.randint(1, 7200) * 1.0) for i in chosen),
                    )
                    renewed = apply_renew(memory, renew, now=now.timestamp())
                    assert sqlite._renew_sync(renew, now.timestamp()) == renewed
                    assert await redis.renew(renew) == renewed
                elif action == "time":
                    now += dt.timedelta(minutes=rng.randint(1, 24 * 60))
                    for reservation_id in list(known):
                        row = memory.get(reservation_id)
                        if row is None or row.expires < now.timestamp() - 86_400:
                            known.remove(reservation_id)  # its tombstone is (about to be) gone
                            held.pop(reservation_id, None)
                stamp, periods = now.timestamp(), periods_at(now, ZoneInfo("UTC"))
                expected_report = read_report(memory, now=stamp, periods=periods)
                found = await redis.report()
                assert found.totals == expected_report.totals
                assert dict(found.day_models) == dict(expected_report.day_models)
                assert dict(found.month_models) == dict(expected_report.month_models)
                assert found.live == expected_report.live
                assert sqlite._report_sync(stamp, periods).totals == expected_report.totals
    finally:
        sqlite._db.close()  # type: ignore[union-attr]


async def test_an_expired_hold_is_spent_and_a_late_settlement_replaces_it_by_its_cost(
    redis_server: RedisServer,
) -> None:
    now = BASE
    async with redis_ledger(redis_server.url, lambda: now) as redis:

        def request(reservation_id: str) -> HoldRequest:
            return HoldRequest(
                reservation_id=reservation_id,
                owner="o",
                model="m",
                amount=500 * 10**12,  # far beyond 2^53 in picodollars
                expires_in=60,
                limits=Limits(),
            )

        for reservation_id in "abc":
            assert (await redis.hold(request(reservation_id))).verdict == "granted"
        now += dt.timedelta(seconds=61)
        report = await redis.report()  # reading counts them and writes nothing
        assert (report.totals.day_spent, report.totals.day_reserved, report.live) == (
            1500 * 10**12,
            0,
            0,
        )
        assert report.day_models["m"].expired == 3
        # Their owner was alive after all: what each reports replaces the worst case.
        for reservation_id, charge in (
            ("a", Charge(cost=700 * 10**12)),  # more: the excess is added
            ("b", Charge(cost=300 * 10**12 + 1, prompt_tokens=3, completion_tokens=4)),
            ("c", None),  # nothing: the whole worst case comes back
        ):
            await redis.settle(
                SettleRequest(reservation_id=reservation_id, model="m", charge=charge)
            )
        report = await redis.report()
        assert report.totals.day_spent == report.totals.month_spent == 1000 * 10**12 + 1
        assert report.day_models["m"] == hs.ledger.UsageTotals(
            requests=3, prompt_tokens=3, completion_tokens=4, cost=1000 * 10**12 + 1
        )


async def test_a_live_owner_renews_its_reservations_in_redis(redis_server: RedisServer) -> None:
    now = BASE
    async with redis_ledger(redis_server.url, lambda: now) as redis:
        for reservation_id, owner in (("a", "o"), ("b", "o"), ("c", "other")):
            request = HoldRequest(
                reservation_id=reservation_id,
                owner=owner,
                model="m",
                amount=500,
                expires_in=60,
                limits=Limits(),
            )
            assert (await redis.hold(request)).verdict == "granted"
        now += dt.timedelta(seconds=50)
        renew = RenewRequest(owner="o", leases=(("a", 60.0), ("c", 60.0), ("gone", 60.0)))
        assert await redis.renew(renew) == {"a"}
        now += dt.timedelta(seconds=11)
        report = await redis.report()
        assert (report.totals.day_spent, report.totals.day_reserved, report.live) == (
            1000,
            500,
            1,
        )
        now += dt.timedelta(seconds=50)  # 111 s: due, and a renewal does not revive it
        assert await redis.renew(RenewRequest(owner="o", leases=(("a", 60.0),))) == frozenset()
        report = await redis.report()
        assert (report.totals.day_spent, report.totals.day_reserved, report.live) == (1500, 0, 0)


# --------------------------------------------------------------------------- budgets on Redis


async def test_a_budget_on_redis_reserves_refuses_and_reports(redis_server: RedisServer) -> None:
    async with hs.open_budget(daily=0.055, ledger=redis_server.url, key_prefix=prefix()) as budget:
        held = [await budget.reserve(**SMALL) for _ in range(5)]
        with trio.move_on_after(0.05) as scope:  # the sixth waits for room
            await budget.reserve(**SMALL)
        assert scope.cancelled_caught
        await held[0].settle(hs.AttemptBill(billable=True, completed=False))  # all of it
        with pytest.raises(hs.BudgetExceededError, match="daily budget exceeded"):
            await budget.reserve(**{**SMALL, "max_output_tokens": 6000})
        for reservation in held[1:]:
            await reservation.settle(None)
        report = await budget.report()
    assert report.daily.spent == pytest.approx(ONE)
    assert report.daily.reserved == 0
    assert report.in_flight == 0
    assert report.models["gpt-4.1"].requests == 5
    assert report.ledger.startswith(redis_server.url)
    assert "key_prefix=test-" in report.ledger


async def test_two_budgets_share_one_redis_under_different_prefixes(
    redis_server: RedisServer,
) -> None:
    first, second = prefix(), prefix()
    async with (
        hs.open_budget(daily=0.015, ledger=redis_server.url, key_prefix=first) as a,
        hs.open_budget(daily=0.015, ledger=f"{redis_server.url}?key_prefix={second}") as b,
        hs.open_budget(daily=0.015, ledger=redis_server.url, key_prefix=first) as a_again,
    ):
        await a.reserve(**SMALL)
        await b.reserve(**SMALL)  # another budget: room of its own
        with pytest.raises(hs.BudgetExceededError):  # the same budget, in another "process"
            await a_again.reserve(**{**SMALL, "max_output_tokens": 2000})
        assert (await a_again.report()).daily.reserved == pytest.approx(ONE)


async def test_workers_with_skewed_clocks_count_the_same_day(redis_server: RedisServer) -> None:
    """Two workers whose clocks are 13 hours fast and slow (one is on tomorrow, the other on
    yesterday) reserve in the day of the Redis server's clock."""
    name = prefix()
    today = periods_at(dt.datetime.now(UTC), ZoneInfo("UTC"))

    def skewed(hours: float) -> Callable[[], dt.datetime]:
        return lambda: dt.datetime.now(UTC) + dt.timedelta(hours=hours)

    async with (
        hs.open_budget(daily=1, ledger=redis_server.url, key_prefix=name, clock=skewed(13)) as a,
        hs.open_budget(daily=1, ledger=redis_server.url, key_prefix=name, clock=skewed(-13)) as b,
    ):
        first = await a.reserve(**SMALL)
        second = await b.reserve(**SMALL)
        assert first.period == second.period == (today.day, today.month)
        report = await a.report()
        assert report.daily.period == today.day
        assert report.daily.reserved == pytest.approx(2 * ONE)
        assert a.would_fit("gpt-4.1", 1000, 1000)  # the hint uses the server's day too
        await first.settle(None)
        await second.settle(None)


async def test_one_budget_counts_days_in_one_zone(redis_server: RedisServer) -> None:
    name = prefix()
    async with hs.open_budget(daily=1, ledger=redis_server.url, key_prefix=name):
        pass
    with pytest.raises(hs.LedgerError, match="counts days in UTC"):
        async with hs.open_budget(
            daily=1, ledger=redis_server.url, key_prefix=name, timezone="Europe/Berlin"
        ):
            pass  # pragma: no cover


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://", "names no host"),
        ("redis://localhost/x", "database number"),
        ("redis://localhost/0?prefix=x", "unknown Redis URL option"),
        ("redis://localhost/0?fail_open=maybe", "fail_open"),
        ("redis://localhost/0?key_prefix={x}", "without braces"),
        ("redis://localhost/0?timeout=-1", "timeout"),
    ],
)
async def test_bad_redis_urls(url: str, problem: str) -> None:
    with pytest.raises(hs.ConfigurationError, match=problem):
        async with hs.open_budget(ledger=url):
            pass  # pragma: no cover


async def test_key_prefix_and_fail_open_are_for_redis_only() -> None:
    with pytest.raises(hs.ConfigurationError, match="redis:// ledgers only"):
        async with hs.open_budget(key_prefix="x"):
            pass  # pragma: no cover


def test_the_password_is_never_shown() -> None:
    from holysheep_trio._redis import parse_redis_url

    target = parse_redis_url("rediss://user:s3cr%3At@redis.internal:6380/2?key_prefix=a")
    assert target.password == "s3cr:t"
    assert (target.tls, target.port, target.db, target.key_prefix) == (True, 6380, 2, "a")
    assert "s3cr" not in repr(target)
    assert "s3cr" not in target.url
    assert target.url == "rediss://redis.internal:6380/2"


# --------------------------------------------------------------------------- failures


async def test_redis_down_fails_closed_then_recovers(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{own_redis_server.url}?retry_interval=0.2"
    async with hs.open_budget(daily=1, ledger=url, key_prefix=prefix()) as budget:
        await (await budget.reserve(**SMALL)).settle(None)
        held = await budget.reserve(**SMALL)
        own_redis_server.stop()
        with pytest.raises(hs.LedgerUnavailableError, match="unreachable"):
            await budget.reserve(**SMALL)
        with trio.fail_after(0.1):  # during the retry interval: at once, without the network
            with pytest.raises(hs.LedgerUnavailableError):
                await budget.reserve(**SMALL)
        with pytest.raises(hs.LedgerError):
            await held.settle(None)  # it will expire into spend
        own_redis_server.start()  # an empty Redis: everything was lost with the server
        await trio.sleep(0.25)
        await (await budget.reserve(**SMALL)).settle(None)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "new requests fail" in warnings[0].getMessage()
    assert own_redis_server.url.split("//")[1] in warnings[0].getMessage()


async def test_redis_down_at_open_fails_closed(own_redis_server: RedisServer) -> None:
    own_redis_server.stop()
    with pytest.raises(hs.LedgerUnavailableError):
        async with hs.open_budget(daily=1, ledger=own_redis_server.url):
            pass  # pragma: no cover


async def test_fail_open_keeps_serving_and_says_so_once(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{own_redis_server.url}?retry_interval=0.2"
    async with hs.open_budget(
        daily=0.035, ledger=url, key_prefix=prefix(), fail_open=True
    ) as budget:
        await (await budget.reserve(**SMALL)).settle(hs.AttemptBill(billable=True, completed=False))
        own_redis_server.stop()
        # The local ledger starts from the last totals seen: $0.01 spent of $0.035.
        local = [await budget.reserve(**SMALL) for _ in range(2)]
        with pytest.raises(hs.BudgetExceededError):
            await budget.reserve(**{**SMALL, "max_output_tokens": 3000})
        own_redis_server.start()
        await trio.sleep(0.25)
        in_redis = await budget.reserve(**SMALL)  # back on Redis (empty after its restart)
        for reservation in [*local, in_redis]:
            await reservation.settle(None)
        assert (await budget.report()).in_flight == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "fail_open=True" in warnings[0].getMessage()


async def test_renewing_during_an_outage_renews_the_local_reservations_and_says_so(
    own_redis_server: RedisServer,
) -> None:
    now = BASE
    url = f"{own_redis_server.url}?fail_open=true&retry_interval=0.2"
    async with redis_ledger(url, lambda: now) as redis:
        await redis.configure(limits=Limits(), timezone="UTC")
        held = HoldRequest(
            reservation_id="in redis",
            owner="o",
            model="m",
            amount=5,
            expires_in=60,
            limits=Limits(),
        )
        assert (await redis.hold(held)).verdict == "granted"
        own_redis_server.stop()
        local = HoldRequest(
            reservation_id="local", owner="o", model="m", amount=5, expires_in=60, limits=Limits()
        )
        assert (await redis.hold(local)).verdict == "granted"  # in the local ledger
        now += dt.timedelta(seconds=50)
        # The budget must keep the one in Redis to renew it later, not take it for expired.
        with pytest.raises(hs.LedgerUnavailableError):
            await redis.renew(RenewRequest(owner="o", leases=(("in redis", 60.0), ("local", 60.0))))
        row = redis._fallback._store.get("local")
        assert row.expires == (now + dt.timedelta(seconds=60)).timestamp()


async def test_a_cancelled_hold_either_completes_or_changes_nothing(
    redis_server: RedisServer,
) -> None:
    async with hs.open_budget(daily=1, ledger=redis_server.url, key_prefix=prefix()) as budget:
        with trio.CancelScope() as scope:
            scope.cancel()
            await budget.reserve(**SMALL)  # cancelled before anything was sent
        assert (await budget.report()).in_flight == 0
        got: list[hs.Reservation] = []
        with trio.CancelScope() as scope:
            # Cancelled while the script runs: it runs to its end and the grant is returned.
            async def cancel_soon() -> None:
                await trio.lowlevel.checkpoint()
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_soon)
                got.append(await budget.reserve(**SMALL))
        report = await budget.report()
        assert report.in_flight == len(got)
        for reservation in got:
            await reservation.settle(None)


# --------------------------------------------------------------------------- packaging, CLI


def test_importing_the_package_does_not_import_coredis() -> None:
    code = (
        "import sys, holysheep_trio as hs; hs.open_budget; hs.Limits; hs.open_client;"
        " import holysheep_trio.ledger;"
        " assert 'coredis' not in sys.modules, 'coredis imported'; print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_usage_reads_a_redis_budget(redis_server: RedisServer) -> None:
    name = prefix()

    async def fill() -> None:
        async with hs.open_budget(
            daily=100, ledger=redis_server.url, key_prefix=name, timezone="Europe/Berlin"
        ) as budget:
            await (await budget.reserve(**SMALL)).settle(
                hs.AttemptBill(billable=True, completed=False)
            )

    trio.run(fill)
    url = f"{redis_server.url}?key_prefix={name}"
    command = [sys.executable, "-m", "holysheep_trio", "usage", "--ledger", url, "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["timezone"] == "Europe/Berlin"
    assert report["daily"]["limit"] == 100
    assert report["daily"]["spent"] == pytest.approx(ONE)
    assert report["ledger"] == url
    missing = [*command[:-2], f"{redis_server.url}?key_prefix=nobody-{name}"]
    done = subprocess.run(missing, capture_output=True, text=True, env=env, check=False)
    assert done.returncode != 0
    assert "no budget" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
