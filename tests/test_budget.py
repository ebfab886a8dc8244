# Tests of budgets: money arithmetic, the settlement policy, reserving, waiting, periods, the CLI.
from __future__ import annotations

import datetime as dt
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import holysheep_trio as hs
from holysheep_trio.budget import (
    PICODOLLARS,
    Budget,
    Rates,
    attempt_charge,
    from_picodollars,
    read_usage,
    to_picodollars,
)
from holysheep_trio.cli import main

if sys.version_info < (3, 11):  # pragma: no cover - trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]
from holysheep_trio.ledger import (
    Calendar,
    Charge,
    HoldRequest,
    Limits,
    MemoryLedger,
    RenewRequest,
    SettleRequest,
    Totals,
)

UTC = dt.timezone.utc
NOON = dt.datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
# gpt-4.1: $2 / $8 per million tokens: 1,000 + 1,000 tokens cost at most $0.01.
ONE = 0.01
SMALL = {"model": "gpt-4.1", "prompt_bound": 1000, "max_output_tokens": 1000, "expires_in": None}
CUT_SHORT = hs.AttemptBill(billable=True, completed=False, completion_tokens=5)
REFUSED = hs.AttemptBill(billable=False, completed=False)


def trio_clock(start: dt.datetime) -> Callable[[], dt.datetime]:
    """A budget clock that moves with trio's (virtual, in tests) clock."""
    return lambda: start + dt.timedelta(seconds=trio.current_time())


# --------------------------------------------------------------------------- pure pieces


def test_picodollars_are_exact() -> None:
    assert to_picodollars(0.1, round_up=False) == 10**11
    assert to_picodollars(100, round_up=False) == 100 * PICODOLLARS
    assert to_picodollars(0.3, round_up=True) == 3 * 10**11
    assert from_picodollars(to_picodollars(2000.0, round_up=False)) == 2000.0
    # Ten cents ten times is a dollar, exactly (floats would say 0.9999999999999999).
    assert sum([to_picodollars(0.1, round_up=False)] * 10) == PICODOLLARS
    for bad in (-1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="USD"):
            to_picodollars(bad, round_up=False)  # type: ignore[arg-type]


def test_rates_are_picodollars_per_token() -> None:
    rates = Rates.from_price(hs.DEFAULT_PRICES["deepseek-v3.2"])
    assert (rates.input, rates.output) == (280_000, 420_000)  # $0.28 / $0.42 per million
    assert rates.cost(1_000_000, 1_000_000) == to_picodollars(0.70, round_up=True)
    odd = Rates.from_price(hs.ModelPrice(input_per_mtok=0.0000001, output_per_mtok=1e-9))
    assert (odd.input, odd.output) == (1, 1)  # fractions of a picodollar round up


RATES = Rates.from_price(hs.DEFAULT_PRICES["gpt-4.1"])
HELD = RATES.cost(1000, 1000)


@pytest.mark.parametrize(
    ("bill", "cancelled", "expected"),
    [
        (None, "reserved", None),
        (REFUSED, "reserved", None),
        (
            hs.AttemptBill(
                billable=True,
                completed=True,
                usage=hs.Usage(prompt_tokens=7, completion_tokens=9, total_tokens=16),
                completion_tokens=12,
            ),
            "reserved",
            Charge(cost=RATES.cost(7, 9), prompt_tokens=7, completion_tokens=9),
        ),
        (
            hs.AttemptBill(billable=True, completed=True, completion_tokens=12),
            "reserved",
            Charge(cost=RATES.cost(1000, 12), prompt_tokens=1000, completion_tokens=12),
        ),
        (
            CUT_SHORT,
            "reserved",
            Charge(cost=HELD, prompt_tokens=1000, completion_tokens=5, cancelled=True),
        ),
        (
            CUT_SHORT,
            "received",
            Charge(
                cost=RATES.cost(1000, 5), prompt_tokens=1000, completion_tokens=5, cancelled=True
            ),
        ),
    ],
    ids=["no-attempt", "refused", "usage", "completed-no-usage", "cut-reserved", "cut-received"],
)
def test_the_settlement_policy(
    bill: hs.AttemptBill | None, cancelled: Any, expected: Charge | None
) -> None:
    found = attempt_charge(bill, rates=RATES, prompt_bound=1000, held=HELD, cancelled=cancelled)
    assert found == expected


@given(
    st.booleans(),
    st.booleans(),
    st.integers(min_value=0, max_value=1000),
    st.sampled_from(["reserved", "received"]),
)
def test_no_attempt_without_usage_costs_more_than_its_reservation(
    billable: bool, completed: bool, received: int, cancelled: Any
) -> None:
    bill = hs.AttemptBill(billable=billable, completed=completed, completion_tokens=received)
    charge = attempt_charge(bill, rates=RATES, prompt_bound=1000, held=HELD, cancelled=cancelled)
    assert charge is None or 0 <= charge.cost <= HELD
    if charge is not None and cancelled == "reserved" and not completed:
        assert charge.cost == HELD


# --------------------------------------------------------------------------- reserving


async def test_reserve_settle_and_report(autojump_clock: trio.testing.MockClock) -> None:
    async with hs.open_budget(daily=1.0, monthly=5.0, clock=trio_clock(NOON)) as budget:
        assert (budget.daily, budget.monthly, budget.timezone) == (1.0, 5.0, "UTC")
        reservation = await budget.reserve(**SMALL)
        assert reservation.amount == pytest.approx(ONE)
        report = await budget.report()
        assert (report.daily.spent, report.daily.reserved) == (0, pytest.approx(ONE))
        usage = hs.Usage(prompt_tokens=100, completion_tokens=200, total_tokens=300)
        await reservation.settle(hs.AttemptBill(billable=True, completed=True, usage=usage))
        report = await budget.report()
    cost = (100 * 2 + 200 * 8) / 1e6
    assert report.daily.period == "2026-12-04"
    assert report.monthly.period == "2026-12"
    assert report.daily.spent == pytest.approx(cost)
    assert report.daily.reserved == 0
    assert report.daily.remaining == pytest.approx(1.0 - cost)
    assert report.daily.percent_used == pytest.approx(100 * cost)
    assert report.daily.resets_at == dt.datetime(2026, 12, 5, tzinfo=UTC)
    assert report.monthly.resets_at == dt.datetime(2027, 1, 1, tzinfo=UTC)
    assert report.models == {
        "gpt-4.1": hs.ModelUsage(
            requests=1, prompt_tokens=100, completion_tokens=200, cost=pytest.approx(cost)
        )
    }
    assert report.models is not None
    assert report.monthly.models == report.models
    assert json.loads(json.dumps(report.to_json()))["daily"]["spent"] == pytest.approx(cost)


async def test_a_request_that_cannot_fit_is_refused_with_the_facts() -> None:
    async with hs.open_budget(daily=0.025, clock=lambda: NOON) as budget:
        for _ in range(2):
            await (await budget.reserve(**SMALL)).settle(CUT_SHORT)  # $0.01 each
        with pytest.raises(hs.BudgetExceededError) as caught:
            await budget.reserve(**SMALL)
        report = await budget.report()
    error = caught.value
    assert error.kind == "budget"
    assert (error.period, error.limit, error.model) == ("daily", 0.025, "gpt-4.1")
    assert (error.spent, error.reserved, error.needed) == (
        pytest.approx(0.02),
        0,
        pytest.approx(ONE),
    )
    assert error.resets_at == dt.datetime(2026, 12, 5, tzinfo=UTC)
    assert "daily budget exceeded" in str(error)
    assert report.daily.reserved == 0  # nothing was reserved for it
    assert isinstance(error, hs.HolySheepError)


async def test_the_monthly_limit_refuses_too() -> None:
    async with hs.open_budget(daily=None, monthly=0.015, clock=lambda: NOON) as budget:
        await (await budget.reserve(**SMALL)).settle(CUT_SHORT)
        with pytest.raises(hs.BudgetExceededError) as caught:
            await budget.reserve(**SMALL)
    assert caught.value.period == "monthly"
    assert caught.value.resets_at == dt.datetime(2027, 1, 1, tzinfo=UTC)


async def test_unknown_prices_are_refused_before_anything_is_reserved() -> None:
    prices = {"mine": hs.ModelPrice(input_per_mtok=1, output_per_mtok=1)}
    async with hs.open_budget(daily=1, prices=prices) as budget:
        with pytest.raises(hs.UnknownPriceError, match=r"no price for model .gpt-4\.1."):
            await budget.reserve(**SMALL)
        # Without max_tokens, a model whose maximum output is unknown cannot be bounded.
        with pytest.raises(hs.UnknownPriceError, match="max_output_tokens"):
            await budget.reserve(
                model="mine", prompt_bound=1, max_output_tokens=None, expires_in=None
            )
        reservation = await budget.reserve(
            model="mine", prompt_bound=1, max_output_tokens=5, expires_in=None
        )
        assert reservation.max_output_tokens == 5
        assert (await budget.report()).daily.reserved == pytest.approx(6 / 1e6)
    assert issubclass(hs.UnknownPriceError, hs.ConfigurationError)


async def test_without_max_tokens_the_models_maximum_output_is_reserved() -> None:
    async with hs.open_budget(daily=10) as budget:
        reservation = await budget.reserve(
            model="claude-sonnet-4.5", prompt_bound=1000, max_output_tokens=None, expires_in=None
        )
        assert reservation.max_output_tokens == 64_000
        assert reservation.amount == pytest.approx((1000 * 3 + 64_000 * 15) / 1e6)
        assert budget.worst_case(model="gpt-4.1", prompt_bound=0) == pytest.approx(32_768 * 8e-6)


async def test_settle_exactly_once_and_retry_rules() -> None:
    async with hs.open_budget(daily=1, clock=lambda: NOON) as budget:
        reservation = await budget.reserve(**SMALL)
        # A refused attempt cost nothing and the held room covers the retry: no ledger write.
        await reservation.retry(REFUSED)
        assert reservation.charged == 0
        # A billable one is spent at once, and room for another attempt is held again.
        await reservation.retry(CUT_SHORT)
        assert reservation.charged == pytest.approx(ONE)
        report = await budget.report()
        assert (report.daily.spent, report.daily.reserved) == (
            pytest.approx(ONE),
            pytest.approx(ONE),
        )
        await reservation.settle(
            hs.AttemptBill(billable=True, completed=True, completion_tokens=10)
        )
        with pytest.raises(RuntimeError, match="exactly once"):
            await reservation.settle(None)
        with pytest.raises(RuntimeError, match="after settle"):
            await reservation.retry(REFUSED)
        report = await budget.report()
    assert report.daily.spent == pytest.approx(ONE + (1000 * 2 + 10 * 8) / 1e6)
    assert report.daily.reserved == 0
    assert report.models["gpt-4.1"].requests == 1  # one request, two attempts


async def test_a_retry_without_room_is_refused_and_its_last_bill_not_counted_twice() -> None:
    async with hs.open_budget(daily=0.015, clock=lambda: NOON) as budget:
        reservation = await budget.reserve(**SMALL)
        with pytest.raises(hs.BudgetExceededError):
            await reservation.retry(CUT_SHORT)  # $0.01 spent: no room for another $0.01
        # The lifecycle passes the same bill again at the end: it was counted by retry().
        await reservation.settle(CUT_SHORT)
        report = await budget.report()
    assert report.daily.spent == pytest.approx(ONE)
    assert report.daily.reserved == 0


# --------------------------------------------------------------------------- waiting


async def test_waiters_are_served_in_order(autojump_clock: trio.testing.MockClock) -> None:
    order: list[str] = []
    async with hs.open_budget(daily=0.035, clock=trio_clock(NOON)) as budget:
        first = await budget.reserve(**SMALL)
        second = await budget.reserve(**SMALL)
        third = await budget.reserve(**SMALL)

        async def wants(name: str, tokens: int) -> None:
            reservation = await budget.reserve(
                model="gpt-4.1", prompt_bound=tokens, max_output_tokens=tokens, expires_in=None
            )
            order.append(name)
            await trio.sleep(10)
            await reservation.settle(REFUSED)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wants, "big", 2000)  # $0.02: needs two of the three settled
            await trio.sleep(1)
            nursery.start_soon(wants, "small", 500)  # $0.005: fits now, but queues behind
            await trio.sleep(1)
            assert (order, budget.waiting) == ([], 2)
            await first.settle(REFUSED)
            await trio.sleep(1)
            assert order == []  # still no room for "big", and "small" does not jump the queue
            await second.settle(REFUSED)
            await trio.sleep(1)
            assert order == ["big", "small"]
            await third.settle(REFUSED)


async def test_a_cancelled_wait_holds_nothing_and_lets_the_next_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hs.open_budget(daily=0.015, clock=trio_clock(NOON)) as budget:
        holder = await budget.reserve(**SMALL)
        got: list[str] = []

        async def second() -> None:
            await budget.reserve(**SMALL)
            got.append("second")

        async with trio.open_nursery() as nursery:
            with trio.move_on_after(5) as scope:
                await budget.reserve(**SMALL)  # waits, then gives up
            assert scope.cancelled_caught
            nursery.start_soon(second)
            await trio.sleep(1)
            assert budget.waiting == 1
            await holder.settle(REFUSED)
        assert got == ["second"]
        assert budget.waiting == 0
        assert (await budget.report()).in_flight == 1


async def test_a_waiter_learns_when_the_room_is_spent_for_good(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hs.open_budget(daily=0.015, clock=trio_clock(NOON)) as budget:
        holder = await budget.reserve(**SMALL)
        async with trio.open_nursery() as nursery:

            async def settle_later() -> None:
                await trio.sleep(3)
                await holder.settle(CUT_SHORT)  # the whole $0.01 is spent

            nursery.start_soon(settle_later)
            with pytest.raises(hs.BudgetExceededError):
                await budget.reserve(**SMALL)
            assert trio.current_time() == pytest.approx(3)


async def test_an_expired_reservation_wakes_its_waiters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hs.open_budget(daily=0.015, clock=trio_clock(NOON)) as budget:
        # Dropped unsettled (its owner is gone): nobody can settle it, so nobody renews it.
        await budget.reserve(**{**SMALL, "expires_in": 60})
        with pytest.raises(hs.BudgetExceededError):
            await budget.reserve(**SMALL)  # waits, then the expiry turns it into spend
        assert trio.current_time() == pytest.approx(60)
        report = await budget.report()
    assert report.daily.spent == pytest.approx(ONE)
    assert report.models["gpt-4.1"].expired == 1


def test_would_fit_is_a_cheap_synchronous_hint() -> None:
    async def scenario() -> None:
        now = [NOON]
        async with hs.open_budget(daily=0.025, clock=lambda: now[0]) as budget:
            assert budget.would_fit("gpt-4.1", 1000, 1000)
            assert not budget.would_fit("no-such-model", 1, 1)
            assert not budget.would_fit("gpt-4.1", 1000, 4000)  # $0.034 > $0.025
            held = await budget.reserve(**SMALL)
            await (await budget.reserve(**SMALL)).settle(CUT_SHORT)
            assert not budget.would_fit("gpt-4.1", 1000, 1000)  # 0.01 + 0.01 + 0.01 > 0.025
            assert budget.would_fit("gpt-4.1", 100, 100)
            now[0] = NOON + dt.timedelta(days=1)  # a new day: yesterday's numbers do not count
            assert budget.would_fit("gpt-4.1", 1000, 1000)
            await held.settle(None)

    trio.run(scenario)


# --------------------------------------------------------------------------- calendar periods


async def test_midnight_starts_a_new_day(autojump_clock: trio.testing.MockClock) -> None:
    start = dt.datetime(2026, 12, 4, 23, 59, 0, tzinfo=UTC)
    async with hs.open_budget(daily=0.015, monthly=1, clock=trio_clock(start)) as budget:
        await (await budget.reserve(**SMALL)).settle(CUT_SHORT)
        with pytest.raises(hs.BudgetExceededError) as caught:
            await budget.reserve(**SMALL)
        assert caught.value.resets_at == dt.datetime(2026, 12, 5, tzinfo=UTC)
        await trio.sleep(60)
        reservation = await budget.reserve(**SMALL)  # 00:00:00 on the 5th: a fresh day
        assert reservation.period == ("2026-12-05", "2026-12")
        await reservation.settle(CUT_SHORT)
        report = await budget.report()
    assert (report.daily.period, report.daily.spent) == ("2026-12-05", pytest.approx(ONE))
    assert report.monthly.spent == pytest.approx(2 * ONE)


async def test_a_waiter_is_granted_by_midnight(autojump_clock: trio.testing.MockClock) -> None:
    start = dt.datetime(2026, 12, 4, 23, 0, 0, tzinfo=UTC)
    async with hs.open_budget(daily=0.015, clock=trio_clock(start)) as budget:
        held = await budget.reserve(**{**SMALL, "expires_in": 7200})  # today's room is taken
        reservation = await budget.reserve(**SMALL)  # waits for it, or for tomorrow
        assert trio.current_time() == pytest.approx(3600)
        assert reservation.period[0] == "2026-12-05"
        await reservation.settle(None)
        await held.settle(None)


async def test_month_end(autojump_clock: trio.testing.MockClock) -> None:
    start = dt.datetime(2026, 12, 31, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    async with hs.open_budget(
        monthly=0.015, ledger="memory://", timezone="America/New_York", clock=trio_clock(start)
    ) as budget:
        await (await budget.reserve(**SMALL)).settle(CUT_SHORT)
        with pytest.raises(hs.BudgetExceededError) as caught:
            await budget.reserve(**SMALL)
        resets_at = caught.value.resets_at
        assert resets_at == dt.datetime(2027, 1, 1, tzinfo=resets_at.tzinfo)
        assert resets_at.utcoffset() == dt.timedelta(hours=-5)
        await trio.sleep(30 * 60)
        await (await budget.reserve(**SMALL)).settle(None)
        report = await budget.report()
    assert (report.monthly.period, report.monthly.spent) == ("2027-01", 0)
    assert report.monthly.models["gpt-4.1"].requests == 1


async def test_a_dst_day_has_23_hours(autojump_clock: trio.testing.MockClock) -> None:
    # Berlin springs forward on 2026-03-29: that day ends 23 hours after it began.
    start = dt.datetime(2026, 3, 28, 23, 30, tzinfo=UTC)  # 00:30 CET on the 29th
    async with hs.open_budget(
        daily=0.015, timezone="Europe/Berlin", clock=trio_clock(start)
    ) as budget:
        await (await budget.reserve(**SMALL)).settle(CUT_SHORT)
        report = await budget.report()
        assert report.daily.period == "2026-03-29"
        assert report.daily.resets_at.isoformat() == "2026-03-30T00:00:00+02:00"
        await trio.sleep(22 * 3600)  # 23:30 CEST, still the 29th (a 24-hour day would have
        with pytest.raises(hs.BudgetExceededError):  # ended at 00:30 UTC)
            await budget.reserve(**SMALL)
        await trio.sleep(3600)  # 00:30 CEST on the 30th: 23 hours after the first request
        await (await budget.reserve(**SMALL)).settle(None)
        assert (await budget.report()).daily.period == "2026-03-30"


# --------------------------------------------------------------------------- concurrency


@pytest.mark.parametrize("ledger", ["memory", "sqlite"])
async def test_a_thousand_concurrent_requests_never_overshoot(
    ledger: str, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    url = "memory://" if ledger == "memory" else f"sqlite:///{tmp_path / 'usage.db'}"
    limit = 0.055  # about five worst cases of $0.01
    rng = random.Random(7)
    outcomes = {"granted": 0, "refused": 0}
    async with hs.open_budget(daily=limit, ledger=url, clock=trio_clock(NOON)) as budget:

        async def one(delay: float, bill: hs.AttemptBill) -> None:
            await trio.sleep(delay)
            try:
                reservation = await budget.reserve(**SMALL)
            except hs.BudgetExceededError:
                outcomes["refused"] += 1
                return
            outcomes["granted"] += 1
            await trio.sleep(rng.random())
            await reservation.settle(bill)

        async with trio.open_nursery() as nursery:
            for _ in range(1000):
                usage = hs.Usage(prompt_tokens=rng.randint(0, 1000), completion_tokens=500)
                bill = rng.choice(
                    [
                        CUT_SHORT,
                        REFUSED,
                        hs.AttemptBill(billable=True, completed=True, usage=usage),
                    ]
                )
                nursery.start_soon(one, rng.random(), bill)
        report = await budget.report()
    assert outcomes["granted"] + outcomes["refused"] == 1000
    assert outcomes["refused"] > 0
    assert report.daily.spent <= limit  # the bill never exceeds the limit
    assert limit - report.daily.spent < ONE  # and nobody was refused who would have fit
    assert report.daily.reserved == 0
    assert report.models["gpt-4.1"].requests == outcomes["granted"]


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"daily": -1}, "daily"),
        ({"monthly": float("nan")}, "monthly"),
        ({"timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"cancelled": "sometimes"}, "cancelled"),
        ({"clock": lambda: dt.datetime(2026, 1, 1)}, "aware"),
        ({"reservation_expiry": 0}, "reservation_expiry"),
        ({"prices": {"x": 1}}, "ModelPrice"),
    ],
)
async def test_bad_configuration(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(hs.ConfigurationError, match=problem):
        async with hs.open_budget(**options):
            pass  # pragma: no cover


async def test_a_closed_budget_reserves_nothing() -> None:
    async with hs.open_budget(daily=1) as budget:
        pass
    with pytest.raises(hs.LedgerError, match="closed"):
        await budget.reserve(**SMALL)
    with pytest.raises(ValueError, match="expires_in"):
        async with hs.open_budget(daily=1) as budget:
            await budget.reserve(**{**SMALL, "expires_in": -1})


# --------------------------------------------------------------------------- the usage command


async def _fill(url: str, clock: Callable[[], dt.datetime] | None = None) -> None:
    async with hs.open_budget(
        daily=100, monthly=2000, ledger=url, timezone="Europe/Berlin", clock=clock
    ) as budget:
        await (await budget.reserve(**SMALL)).settle(CUT_SHORT)
        await budget.reserve(**SMALL)  # left in flight


def test_usage_prints_the_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The command reads the real clock: so does this ledger.
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    trio.run(_fill, url)
    assert main(["usage", "--ledger", url]) == 0
    text = capsys.readouterr().out
    today = dt.datetime.now(ZoneInfo("Europe/Berlin")).date().isoformat()
    assert "days in Europe/Berlin, 1 reservation(s) in flight" in text
    assert f"daily    {today}    $100.00  $0.01     $0.01" in text
    assert "gpt-4.1" in text
    assert main(["usage", "--ledger", url, "--json", "--timezone", "Europe/Berlin"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["daily"]["limit"] == 100
    assert data["monthly"]["models"]["gpt-4.1"]["cancelled"] == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--ledger", "memory://"], "only inside its process"),
        (["--ledger", "sqlite:///{dir}/missing.db"], "ledger error: no ledger file"),
        (["--ledger", "sqlite:///{dir}/usage.db", "--timezone", "UTC"], "does not match"),
    ],
)
def test_usage_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    trio.run(_fill, f"sqlite:///{tmp_path / 'usage.db'}")
    capsys.readouterr()
    code = main(["usage", *(argument.format(dir=tmp_path) for argument in arguments)])
    assert code == 1
    error = capsys.readouterr().err
    assert message in error
    assert error.count("\n") == 1


async def test_read_usage_uses_the_recorded_zone_and_limits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    await _fill(url, lambda: NOON)
    report = await read_usage(url, clock=lambda: NOON)
    assert (report.timezone, report.daily.limit, report.monthly.limit) == (
        "Europe/Berlin",
        100,
        2000,
    )
    assert report.daily.resets_at.isoformat() == "2026-12-05T00:00:00+01:00"


async def test_settle_is_shielded_and_bounded(autojump_clock: trio.testing.MockClock) -> None:
    async with hs.open_budget(daily=1, clock=trio_clock(NOON)) as budget:
        reservation = await budget.reserve(**SMALL)
        with trio.CancelScope() as scope:
            scope.cancel()
            await reservation.settle(CUT_SHORT)  # a cancelled caller still settles
        assert (await budget.report()).daily.spent == pytest.approx(ONE)

    class Stuck(MemoryLedger):
        async def settle(self, request: SettleRequest) -> Totals:
            await trio.sleep_forever()
            raise AssertionError  # pragma: no cover

    calendar = Calendar(zone=ZoneInfo("UTC"), clock=trio_clock(NOON))
    stuck = Budget(
        ledger=Stuck(calendar=calendar),
        calendar=calendar,
        limits=Limits(daily=PICODOLLARS),
        timezone="UTC",
        prices=hs.DEFAULT_PRICES,
        cancelled="reserved",
        reservation_expiry=60,
        poll_interval=0.05,
        snapshot=Totals(day="2026-12-04", month="2026-12"),
    )
    reservation = await stuck.reserve(**SMALL)
    with pytest.raises(hs.LedgerError, match="settling took longer than 15 s"):
        await reservation.settle(None)
    assert trio.current_time() == pytest.approx(15)


async def test_amounts_stay_inside_sqlites_integers() -> None:
    with pytest.raises(hs.ConfigurationError, match="at most"):
        async with hs.open_budget(monthly=2_000_000):
            pass  # pragma: no cover
    async with hs.open_budget() as budget:
        with pytest.raises(ValueError, match="could cost more than"):
            await budget.reserve(
                model="claude-sonnet-4.5", prompt_bound=10**12, max_output_tokens=1, expires_in=1
            )


async def test_a_retry_waits_for_room_like_a_new_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hs.open_budget(daily=0.035, clock=trio_clock(NOON)) as budget:
        first = await budget.reserve(**SMALL)
        second = await budget.reserve(**SMALL)
        order: list[str] = []

        async def retry_first() -> None:
            # $0.01 spent + $0.01 held by `second` + $0.01 needed + `third`'s $0.01 > $0.035
            await first.retry(CUT_SHORT)
            order.append("first retried")

        async def third() -> None:
            reservation = await budget.reserve(**SMALL)
            order.append("third")
            await trio.sleep(5)
            await reservation.settle(REFUSED)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(third)
            await trio.sleep(1)
            nursery.start_soon(retry_first)  # nobody waits: charge and re-hold in one step
            await trio.sleep(1)
            assert order == ["third"]
            assert budget.waiting == 1
            await second.settle(REFUSED)  # room again: the retry goes on
            await trio.sleep(1)
            assert order == ["third", "first retried"]
        report = await budget.report()
        assert (report.daily.spent, report.daily.reserved) == (
            pytest.approx(ONE),
            pytest.approx(ONE),
        )
        await first.settle(REFUSED)


async def test_a_retry_queues_behind_earlier_waiters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hs.open_budget(daily=0.025, clock=trio_clock(NOON)) as budget:
        first = await budget.reserve(**SMALL)
        second = await budget.reserve(**SMALL)
        order: list[str] = []

        async def waiter() -> None:
            reservation = await budget.reserve(**SMALL)
            order.append("waiter")
            await trio.sleep(5)
            await reservation.settle(REFUSED)

        async def retry_first() -> None:
            await first.retry(CUT_SHORT)
            order.append("first retried")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(1)
            # The retry's charge is committed at once, but it queues behind the waiter.
            nursery.start_soon(retry_first)
            await trio.sleep(1)
            assert (order, budget.waiting) == ([], 2)
            assert (await budget.report()).daily.spent == pytest.approx(ONE)
            await second.settle(REFUSED)
            await trio.sleep(1)
            assert order == ["waiter"]
        assert order == ["waiter", "first retried"]
        await first.settle(None)
        assert (await budget.report()).daily.spent == pytest.approx(ONE)


# --------------------------------------------------------------------------- leases and refunds


def _bare_budget(ledger: MemoryLedger, *, daily: float, cancelled: Any = "reserved") -> Budget:
    """A budget over ``ledger`` without the task of open_budget (so nothing renews it)."""
    return Budget(
        ledger=ledger,
        calendar=ledger._calendar,
        limits=Limits(daily=to_picodollars(daily, round_up=False)),
        timezone="UTC",
        prices=hs.DEFAULT_PRICES,
        cancelled=cancelled,
        reservation_expiry=3600,
        poll_interval=0.05,
        snapshot=Totals(day="2026-12-04", month="2026-12"),
    )


async def _unreachable(self: MemoryLedger, request: RenewRequest) -> frozenset[str]:
    await trio.lowlevel.checkpoint()
    raise hs.LedgerUnavailableError("the ledger is unreachable")


USAGE = hs.Usage(prompt_tokens=100, completion_tokens=200, total_tokens=300)
WITH_USAGE = hs.AttemptBill(billable=True, completed=True, usage=USAGE)
USAGE_COST = (100 * 2 + 200 * 8) / 1e6


async def test_a_live_request_keeps_its_room_however_long_it_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hs.open_budget(daily=0.015, clock=trio_clock(NOON)) as budget:
        reservation = await budget.reserve(**{**SMALL, "expires_in": 60})
        await trio.sleep(3600)  # queued behind the client's limits, then a long stream
        report = await budget.report()
        assert (report.daily.spent, report.daily.reserved, report.in_flight) == (
            0,
            pytest.approx(ONE),
            1,
        )
        await reservation.settle(WITH_USAGE)
        # The room came back: another request fits at once.
        await (await budget.reserve(**SMALL)).settle(None)
        report = await budget.report()
    assert report.daily.spent == pytest.approx(USAGE_COST)
    assert (report.models["gpt-4.1"].expired, report.models["gpt-4.1"].requests) == (0, 2)


async def test_a_reservation_that_expired_all_the_same_is_refunded_to_its_cost(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(MemoryLedger, "renew", _unreachable)
    async with hs.open_budget(daily=0.015, clock=trio_clock(NOON)) as budget:
        reservation = await budget.reserve(**{**SMALL, "expires_in": 60})
        await trio.sleep(600)  # renewals fail: it expires, counted at its worst case
        report = await budget.report()
        assert (report.daily.spent, report.daily.reserved) == (pytest.approx(ONE), 0)
        assert report.models["gpt-4.1"].expired == 1
        with pytest.raises(hs.BudgetExceededError):
            await budget.reserve(**SMALL)
        # Its owner was alive and settles with the server's usage: that replaces the worst
        # case, so the ledger equals the bill and the room is back.
        await reservation.settle(WITH_USAGE)
        report = await budget.report()
        await (await budget.reserve(**SMALL)).settle(None)
    assert report.daily.spent == pytest.approx(USAGE_COST)
    assert report.models["gpt-4.1"] == hs.ModelUsage(
        requests=1, prompt_tokens=100, completion_tokens=200, cost=pytest.approx(USAGE_COST)
    )
    failures = [record for record in caplog.records if "renewing" in record.getMessage()]
    assert len(failures) == 1  # one warning, however many tries
    assert failures[0].levelname == "WARNING"


async def test_a_retry_holds_its_room_for_a_whole_lifetime_again(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MemoryLedger, "renew", _unreachable)  # the lifetime alone counts
    async with hs.open_budget(daily=1, clock=trio_clock(NOON)) as budget:
        reservation = await budget.reserve(**{**SMALL, "expires_in": 60})
        await trio.sleep(50)
        await reservation.retry(CUT_SHORT)  # the new attempt's room: 60 s from now
        await trio.sleep(55)
        report = await budget.report()
        assert (report.daily.spent, report.daily.reserved) == (
            pytest.approx(ONE),
            pytest.approx(ONE),
        )
        await trio.sleep(10)  # 115 s: 65 s after the retry
        report = await budget.report()
        assert (report.daily.spent, report.daily.reserved) == (pytest.approx(2 * ONE), 0)
        await reservation.settle(None)


async def test_renew_restarts_the_clock(autojump_clock: trio.testing.MockClock) -> None:
    ledger = MemoryLedger(calendar=Calendar(zone=ZoneInfo("UTC"), clock=trio_clock(NOON)))
    budget = _bare_budget(ledger, daily=1)
    reservation = await budget.reserve(**{**SMALL, "expires_in": 60})
    await trio.sleep(50)
    assert await reservation.renew(expires_in=600)  # admitted: 600 s from now
    await trio.sleep(590)
    assert (await budget.report()).daily.reserved == pytest.approx(ONE)
    await trio.sleep(20)
    report = await budget.report()
    assert (report.daily.spent, report.models["gpt-4.1"].expired) == (pytest.approx(ONE), 1)
    assert not await reservation.renew()  # expired: it stays so
    await reservation.settle(WITH_USAGE)
    report = await budget.report()
    assert (report.daily.spent, report.models["gpt-4.1"].expired) == (
        pytest.approx(USAGE_COST),
        0,
    )
    with pytest.raises(RuntimeError, match="after settle"):
        await reservation.renew()
    other = await budget.reserve(**SMALL)
    with pytest.raises(ValueError, match="expires_in"):
        await other.renew(expires_in=0)
    await other.settle(None)


async def test_the_callers_exceptions_come_out_of_open_budget_as_they_were() -> None:
    error = KeyError("mine")
    with pytest.raises(KeyError) as caught:
        async with hs.open_budget():
            raise error
    assert caught.value is error
    group = BaseExceptionGroup("mine", [ValueError(1), TypeError(2)])
    with pytest.raises(BaseExceptionGroup) as caught_group:
        async with hs.open_budget():
            raise group
    assert caught_group.value is group


# --------------------------------------------------------------------------- wake-ups


async def test_a_settlement_during_a_retrys_write_wakes_the_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class SlowAnswers(MemoryLedger):
        """A retry's charge is committed at once, but its answer comes a second later (a
        busy file, a slow network)."""

        async def hold(self, request: HoldRequest) -> hs.ledger.Hold:
            hold = await super().hold(request)
            if request.charge is not None:
                await trio.sleep(1)
            return hold

    ledger = SlowAnswers(calendar=Calendar(zone=ZoneInfo("UTC"), clock=trio_clock(NOON)))
    # Room for two worst cases: the retry's new room is there once `first` settles.
    budget = _bare_budget(ledger, daily=0.0201, cancelled="received")
    first = await budget.reserve(**SMALL)
    second = await budget.reserve(**SMALL)
    async with trio.open_nursery() as nursery:

        async def settle_meanwhile() -> None:
            await trio.sleep(0.5)  # while the retry's write is on its way back
            await first.settle(None)

        nursery.start_soon(settle_meanwhile)
        with trio.fail_after(10):
            await second.retry(CUT_SHORT)
    assert trio.current_time() == pytest.approx(1)
    await second.settle(None)


# --------------------------------------------------------------------------- refused in line


def _tokens(output: int) -> dict[str, Any]:
    """A gpt-4.1 request of ``output`` tokens ($8 per million), no prompt."""
    return {"model": "gpt-4.1", "prompt_bound": 0, "max_output_tokens": output, "expires_in": None}


async def test_a_request_that_can_never_fit_is_refused_at_once_behind_a_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hs.open_budget(daily=1.0, clock=trio_clock(NOON)) as budget:
        await (await budget.reserve(**_tokens(100_000))).settle(CUT_SHORT)  # $0.80 spent
        in_flight = await budget.reserve(**_tokens(20_000))  # $0.16 held
        served: list[str] = []
        async with trio.open_nursery() as nursery:

            async def head() -> None:  # $0.08 fits once `in_flight` settles: it waits
                await (await budget.reserve(**_tokens(10_000))).settle(None)
                served.append("head")

            nursery.start_soon(head)
            await trio.sleep(1)
            assert budget.waiting == 1
            with pytest.raises(hs.BudgetExceededError) as caught:
                await budget.reserve(**_tokens(50_000))  # $0.80 + $0.40 > $1: never fits
            assert trio.current_time() == pytest.approx(1)
            assert budget.waiting == 1
            await trio.sleep(300)
            await in_flight.settle(None)
    assert served == ["head"]
    error = caught.value
    assert (error.period, error.limit, error.model) == ("daily", 1.0, "gpt-4.1")
    assert (error.spent, error.reserved, error.needed) == (
        pytest.approx(0.80),
        pytest.approx(0.16),
        pytest.approx(0.40),
    )
    assert error.resets_at == dt.datetime(2026, 12, 5, tzinfo=UTC)


async def test_a_waiter_that_can_no_longer_fit_leaves_the_line_when_spend_grows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hs.open_budget(daily=1.0, clock=trio_clock(NOON)) as budget:
        long_stream = await budget.reserve(**_tokens(62_500))  # $0.50 held
        cut_short = await budget.reserve(**_tokens(37_500))  # $0.30 held
        events: list[tuple[str, float]] = []
        async with trio.open_nursery() as nursery:

            async def head() -> None:  # $0.30: waits for room
                reservation = await budget.reserve(**_tokens(37_500))
                events.append(("head granted", trio.current_time()))
                await reservation.settle(None)

            async def behind() -> None:  # $0.75 fits $1 now, but not after $0.30 are spent
                try:
                    await budget.reserve(**_tokens(93_750))
                except hs.BudgetExceededError as error:
                    events.append((f"behind refused: {error.spent:.2f} spent", trio.current_time()))

            nursery.start_soon(head)
            await trio.sleep(1)
            nursery.start_soon(behind)
            await trio.sleep(1)
            assert budget.waiting == 2
            await trio.sleep(8)
            await cut_short.settle(CUT_SHORT)  # t = 10: $0.30 spent for good
            await trio.sleep(10)
            await long_stream.settle(None)  # t = 20: room for the head
    assert events == [("behind refused: 0.30 spent", 10.0), ("head granted", 20.0)]


async def test_a_stale_view_of_the_spend_refuses_nothing_that_fits(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """Spent comes down when another process's late settlement is refunded: a request is
    refused only on the ledger's own numbers, never on an old view of them."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    clock = trio_clock(NOON)
    calendar = Calendar(zone=ZoneInfo("UTC"), clock=clock)

    async def until(condition: Callable[[], bool]) -> None:
        # Virtual time stands still (mock_clock without autojump): only the worker threads
        # of the SQLite ledger move on, so we wait for their answers by yielding.
        while not condition():
            await trio.lowlevel.checkpoint()

    async with (
        hs.open_budget(daily=0.025, ledger=url, clock=clock, poll_interval=1000) as budget,
        hs.ledger.open_ledger(url, calendar=calendar) as other_process,
    ):
        x = HoldRequest(
            reservation_id="x",
            owner="another process",
            model="gpt-4.1",
            amount=to_picodollars(ONE, round_up=True),
            expires_in=10,
            limits=Limits(),
        )
        assert (await other_process.hold(x)).verdict == "granted"
        first = await budget.reserve(**SMALL)
        mock_clock.jump(20)  # x expires: its $0.01 is spent
        outcomes: list[str] = []
        async with trio.open_nursery() as nursery:

            async def wants(name: str, bill: dict[str, Any]) -> None:
                try:
                    reservation = await budget.reserve(**bill)
                except hs.BudgetExceededError:
                    outcomes.append(name + " refused")
                    return
                outcomes.append(name + " granted")
                await reservation.settle(None)

            # $0.01 spent + $0.01 held + $0.01 > $0.025: waits (polling every 1000 s).
            nursery.start_soon(wants, "head", SMALL)
            await until(lambda: budget.waiting == 1)
            # The other process was alive: its late settlement gives the $0.01 back.
            await other_process.settle(SettleRequest(reservation_id="x", model="gpt-4.1"))
            # $0.02: this process last saw $0.01 spent ($0.03 > $0.025) but the ledger says 0.
            nursery.start_soon(wants, "second", _tokens(2_500))
            await until(lambda: budget.waiting == 2 or bool(outcomes))
            assert outcomes == []
            await first.settle(None)
            await until(lambda: len(outcomes) == 2)
            nursery.cancel_scope.cancel()
    assert outcomes == ["head granted", "second granted"]
