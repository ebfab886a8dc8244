# End-to-end budget tests through the client against the simulator, whose counts are the bill.
from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

import holysheep_trio as hs
from holysheep_trio._tokens import prompt_token_bound
from holysheep_trio.budget import Rates, from_picodollars
from holysheep_trio.simulator import Simulator, open_simulator

MODEL = "gpt-4.1"
MESSAGES = [{"role": "user", "content": "Count to ten, slowly."}]
MAX_TOKENS = 200


def bill(sim: Simulator, prices: Any = hs.DEFAULT_PRICES) -> float:
    """What the simulator served, priced exactly as the budget prices it (USD)."""
    stats = sim.stats()
    total = 0
    for model, prompt in stats.prompt_tokens.items():
        rates = Rates.from_price(prices[model])
        total += rates.cost(prompt, stats.completion_tokens.get(model, 0))
    return from_picodollars(total)


def one_reservation(budget: hs.Budget) -> float:
    bound = prompt_token_bound({"messages": MESSAGES})
    return budget.worst_case(model=MODEL, prompt_bound=bound, max_output_tokens=MAX_TOKENS)


async def test_a_thousand_concurrent_requests_and_a_budget_for_five(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_budget_for(5.5) as (budget, limit):
        async with (
            open_simulator(profile="fast") as sim,
            hs.open_client(api_key=sim.api_key, base_url=sim.base_url, budget=budget) as client,
        ):
            refused = 0

            async def one() -> None:
                nonlocal refused
                try:
                    await client.chat(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
                except hs.BudgetExceededError:
                    refused += 1

            async with trio.open_nursery() as nursery:
                for _ in range(1000):
                    nursery.start_soon(one)
            served = bill(sim)
            report = await budget.report()
        assert refused == 1000 - sim.stats().requests[MODEL]
        assert served <= limit  # the real bill never exceeds the limit
        assert limit - served < one_reservation(budget)  # and no refusal was needless
        assert report.daily.spent == pytest.approx(served, abs=1e-12)  # settled to the bill
        assert report.daily.reserved == 0


async def test_streams_cut_short_are_counted_at_least_at_the_bill(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rng = random.Random(11)
    async with open_budget_for(10_000) as (budget, _):
        async with (
            open_simulator(profile="fast") as sim,
            hs.open_client(api_key=sim.api_key, base_url=sim.base_url, budget=budget) as client,
        ):

            async def one(behaviour: str, after: int) -> None:
                with trio.CancelScope() as scope:
                    async with client.stream_chat(
                        model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS
                    ) as stream:
                        received = 0
                        async for _ in stream:
                            received += 1
                            if received == after and behaviour == "break":
                                break
                            if received == after and behaviour == "cancel":
                                scope.cancel()  # the next checkpoint leaves the block

            async with trio.open_nursery() as nursery:
                for _ in range(1000):
                    behaviour = rng.choice(["finish", "break", "cancel"])
                    nursery.start_soon(one, behaviour, rng.randint(1, MAX_TOKENS - 1))
            served = bill(sim)
            report = await budget.report()
        assert report.daily.spent >= served  # never less than what the server billed
        assert report.daily.reserved == 0
        assert report.models[MODEL].requests == 1000
        assert 0 < report.models[MODEL].cancelled < 1000


async def test_streams_that_finish_are_counted_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_budget_for(10_000) as (budget, _):
        async with (
            open_simulator(profile="fast") as sim,
            hs.open_client(api_key=sim.api_key, base_url=sim.base_url, budget=budget) as client,
        ):
            async with trio.open_nursery() as nursery:
                for _ in range(200):
                    nursery.start_soon(
                        partial(client.chat, model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
                    )
            served = bill(sim)
            report = await budget.report()
        assert report.daily.spent == pytest.approx(served, abs=1e-12)
        assert report.models[MODEL].cancelled == 0


async def test_a_refused_request_sends_nothing(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        hs.open_budget(daily=0.000001) as budget,
        open_simulator(profile="fast") as sim,
        hs.open_client(api_key=sim.api_key, base_url=sim.base_url, budget=budget) as client,
    ):
        with pytest.raises(hs.BudgetExceededError) as caught:
            await client.chat(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
        assert caught.value.period == "daily"
        assert sim.stats().requests.get(MODEL, 0) == 0
        with pytest.raises(hs.UnknownPriceError):
            await client.chat(model="no-such-model", messages=MESSAGES, max_tokens=1)
        assert sum(sim.stats().requests.values()) == 0


async def test_retries_share_one_reservation_and_refusals_cost_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_budget_for(10_000) as (budget, _):
        async with (
            open_simulator(profile="fast") as sim,
            hs.open_client(api_key=sim.api_key, base_url=sim.base_url, budget=budget) as client,
        ):
            sim.inject_faults("status=503", "status=429", model=MODEL)
            await client.chat(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
            served = bill(sim)
            report = await budget.report()
        assert sim.stats().requests[MODEL] == 3
        assert report.models[MODEL].requests == 1  # one request, one reservation
        assert report.daily.spent == pytest.approx(served, abs=1e-12)


@asynccontextmanager
async def open_budget_for(reservations: float) -> AsyncIterator[tuple[hs.Budget, float]]:
    """A memory budget whose daily limit is ``reservations`` worst cases of the test request."""
    bound = prompt_token_bound({"messages": MESSAGES})
    rates = Rates.from_price(hs.DEFAULT_PRICES[MODEL])
    limit = reservations * from_picodollars(rates.cost(bound, MAX_TOKENS))
    async with hs.open_budget(daily=limit) as budget:
        yield budget, limit


@pytest.mark.parametrize(
    "params",
    [
        {"n": 8, "max_tokens": MAX_TOKENS},  # every choice is generated and billed
        {"max_tokens": 16, "max_completion_tokens": MAX_TOKENS * 8},  # the newer name wins
    ],
)
async def test_output_multipliers_are_reserved_too(
    autojump_clock: trio.testing.MockClock, params: dict[str, Any]
) -> None:
    async with (
        open_budget_for(4.0) as (budget, limit),
        open_simulator(profile="fast", reply_tokens="max") as sim,
        hs.open_client(api_key=sim.api_key, base_url=sim.base_url, budget=budget) as client,
    ):
        # Eight times one request's output: it would not fit, so it is refused, unsent.
        with pytest.raises(hs.BudgetExceededError):
            await client.chat(model=MODEL, messages=MESSAGES, **params)
        assert bill(sim) <= limit
        assert sim.stats().requests[MODEL] == 0


async def test_a_continued_response_reserves_the_conversation_it_continues(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        hs.open_budget(daily=100.0) as budget,
        open_simulator(profile="fast") as sim,
        hs.open_client(api_key=sim.api_key, base_url=sim.base_url, budget=budget) as client,
    ):
        first = await client.create_response(model=MODEL, input="Hello", max_output_tokens=50)
        assert first.usage is not None
        reserved: list[int] = []
        real_reserve = budget.reserve

        async def spy(**kwargs: Any) -> Any:
            reserved.append(kwargs["prompt_bound"])
            return await real_reserve(**kwargs)

        budget.reserve = spy  # type: ignore[method-assign]
        await client.create_response(
            model=MODEL, input="More", previous_response_id=first.id, max_output_tokens=50
        )
        chain = first.usage.input_tokens + first.usage.output_tokens
        assert reserved[0] >= chain  # the server bills the whole conversation as input
        with pytest.raises(hs.ConfigurationError, match="did not produce"):
            await client.create_response(
                model=MODEL, input="More", previous_response_id="resp_from_elsewhere"
            )


# ---- every way of making requests is budgeted ------------------------------------------------


@pytest.mark.parametrize("how", ["batch", "open_batch"])
async def test_batches_are_budgeted(autojump_clock: trio.testing.MockClock, how: str) -> None:
    requests = [hs.ChatRequest(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)] * 40
    async with (
        open_budget_for(5.5) as (budget, limit),
        open_simulator(profile="fast") as sim,
        hs.open_client(api_key=sim.api_key, base_url=sim.base_url, budget=budget) as client,
    ):
        if how == "batch":
            results = await client.batch(requests, max_in_flight=40)
        else:
            async with client.open_batch(requests, max_in_flight=40) as channel:
                results = [result async for result in channel]
        served = bill(sim)
        report = await budget.report()
        requests_served = sim.stats().requests[MODEL]
    refused = [r for r in results if isinstance(r.error, hs.BudgetExceededError)]
    assert len(results) == 40
    assert all(r.error is None or isinstance(r.error, hs.BudgetExceededError) for r in results)
    assert len(refused) == 40 - requests_served > 0
    assert served <= limit
    assert report.daily.spent == pytest.approx(served, abs=1e-12)
    assert report.daily.reserved == 0


async def test_a_hedged_race_settles_its_loser_as_cut_short(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The first candidate stalls before its first token, so the second is started and wins;
    # the loser is cancelled and settled at least at what it may have cost, never left reserved.
    slow = {"X-Simulator-Fault": "stall_after=0;seconds=30"}
    candidates = [
        hs.ChatRequest(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=MAX_TOKENS,
            params={"extra_headers": slow},
        ),
        hs.ChatRequest(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS),
    ]
    async with (
        open_budget_for(100) as (budget, _),
        open_simulator(profile="fast") as sim,
        hs.open_client(api_key=sim.api_key, base_url=sim.base_url, budget=budget) as client,
    ):
        completion = await client.race_chat(candidates, hedge_delay=0.5)
        served = bill(sim)
        report = await budget.report()
        assert sim.stats().requests[MODEL] == 2
    assert completion.text
    assert report.daily.reserved == 0
    assert report.daily.spent >= served  # the loser's prompt was billed; it counts


async def test_waiting_for_budget_room_ends_with_the_requests_total_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_budget_for(1.5) as (budget, _),
        open_simulator(profile="fast") as sim,
        hs.open_client(api_key=sim.api_key, base_url=sim.base_url, budget=budget) as client,
        client.stream_chat(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=MAX_TOKENS,
            extra_headers={"X-Simulator-Fault": "stall_after=1;seconds=100"},
        ) as first,
    ):
        await first.__anext__()  # holds the only reservation that fits
        started = trio.current_time()
        with pytest.raises(hs.APITimeoutError) as info:
            await client.chat(
                model=MODEL,
                messages=MESSAGES,
                max_tokens=MAX_TOKENS,
                timeouts=hs.Timeouts(total=5),
            )
        assert trio.current_time() - started == pytest.approx(5)
        assert info.value.deadline == "total"
        assert "waiting for budget room" in str(info.value)
        assert sim.stats().requests[MODEL] == 1  # the second was never sent
