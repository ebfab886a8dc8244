# Tests of the router: the seed's table, CheapestWithinLatency, fallback and budgets, end to end.
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import holysheep_trio as hs
from holysheep_trio.pool import ModelStatistics, Percentiles, PoolStatistics
from holysheep_trio.prices import cost
from holysheep_trio.router import DEFAULT_LATENCY_PRIORS, LatencyPrior
from holysheep_trio.simulator import Profile, open_simulator, realistic_profile

HELLO = [{"role": "user", "content": "Hello there"}]


def statistics(ttft: Mapping[str, tuple[int, float]]) -> PoolStatistics:
    """A pool snapshot whose models measured these (samples, p95 seconds) of TTFT."""
    models = {
        model: ModelStatistics(
            model=model,
            active=0,
            waiting=0,
            limit=1,
            effective_limit=1,
            paused_for=0.0,
            time_to_first_token=Percentiles(count=count, p50=p95, p95=p95, p99=p95),
        )
        for model, (count, p95) in ttft.items()
    }
    return PoolStatistics(
        total=0,
        succeeded=0,
        failed={},
        active=0,
        waiting=0,
        max_concurrent=1,
        utilization=0.0,
        models=models,
        latency=Percentiles(count=0),
        time_to_first_token=Percentiles(count=0),
        prompt_tokens=0,
        completion_tokens=0,
        tokens_per_second=0.0,
    )


def view(measured: Mapping[str, tuple[int, float]] | None = None) -> hs.RouterView:
    return hs.RouterView(
        prices=hs.DEFAULT_PRICES,
        priors=DEFAULT_LATENCY_PRIORS,
        statistics=None if measured is None else statistics(measured),
    )


# --------------------------------------------------------------------------- values


def test_task_defaults_are_the_seeds() -> None:
    task = hs.Task(messages=HELLO)
    assert (task.max_tokens, task.temperature, task.budget, task.latency_ms) == (
        2048,
        0.7,
        "normal",
        None,
    )
    assert task.chat_arguments("gpt-4.1") == {
        "model": "gpt-4.1",
        "messages": HELLO,
        "max_tokens": 2048,
        "temperature": 0.7,
    }
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert hs.Task(messages=HELLO, params={"tools": tools}).chat_arguments("x")["tools"] == tools
    for bad in ({"max_tokens": 0}, {"latency_ms": -1}, {"complexity": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            hs.Task(messages=HELLO, **bad)
    with pytest.raises(TypeError, match="list of messages"):
        hs.Task(messages="hello")


def test_a_route_lists_its_model_first_once() -> None:
    route = hs.Route(model="b", reason="r", candidates=["a", "b", "a", "c"])
    assert route.candidates == ("b", "a", "c")
    assert hs.Route(model="x", reason="r").candidates == ("x",)


# --------------------------------------------------------------------------- the seed's table


@pytest.mark.parametrize(
    ("task", "model", "reason"),
    [
        ({"latency_ms": 299}, "gemini-2.5-flash", "latency_ms 299 < 300"),
        # Latency wins over everything else, in the seed's order.
        ({"latency_ms": 100, "budget": "low", "complexity": 9}, "gemini-2.5-flash", "< 300"),
        ({"latency_ms": 300, "budget": "low", "complexity": 6}, "deepseek-v3.2", "cheapest"),
        ({"budget": "low", "complexity": 1}, "deepseek-v3.2", "budget 'low'"),
        ({"budget": "low", "complexity": 7}, "gemini-2.5-flash", "default"),
        ({"budget": "low", "complexity": 8}, "claude-sonnet-4.5", ">= 8"),
        ({"complexity": 8}, "claude-sonnet-4.5", "complexity 8 >= 8"),
        ({"complexity": 10, "latency_ms": 5000}, "claude-sonnet-4.5", "strongest"),
        ({"complexity": 7}, "gemini-2.5-flash", "default"),
        ({"complexity": 3, "budget": "normal"}, "gemini-2.5-flash", "default"),
        ({"complexity": 3, "budget": "high"}, "gemini-2.5-flash", "default"),
        ({}, "gemini-2.5-flash", "default"),
    ],
)
def test_seed_rules_case_by_case(task: dict[str, Any], model: str, reason: str) -> None:
    route = hs.SeedRules().choose(hs.Task(messages=HELLO, **task), view())
    assert route.model == model
    assert reason in route.reason
    assert route.candidates[0] == model
    assert route.expected_cost == pytest.approx(
        view().expected_cost(model, hs.Task(messages=HELLO, **task))
    )
    assert route.expected_ttft == DEFAULT_LATENCY_PRIORS[model].p95


def test_seed_rules_fallbacks_are_configurable() -> None:
    route = hs.SeedRules().choose(hs.Task(messages=HELLO, complexity=9), view())
    assert route.candidates == ("claude-sonnet-4.5", "gpt-4.1", "gemini-2.5-flash")
    custom = hs.SeedRules(fallbacks={"claude-sonnet-4.5": ("deepseek-v3.2",)})
    assert custom.choose(hs.Task(messages=HELLO, complexity=9), view()).candidates == (
        "claude-sonnet-4.5",
        "deepseek-v3.2",
    )


def test_expected_cost_is_the_tasks_token_mix() -> None:
    task = hs.Task(messages=[{"role": "user", "content": "x" * 400}], expected_output_tokens=50)
    # 400 characters / 4 + 4 framing = 104 prompt tokens; 50 completion tokens.
    assert view().expected_cost("gpt-4.1", task) == pytest.approx((104 * 2 + 50 * 8) / 1e6)
    assert view().expected_cost("unknown", task) is None


# ------------------------------------------------------------------- cheapest within latency


def test_cheapest_within_latency_on_priors() -> None:
    policy = hs.CheapestWithinLatency()
    easy = policy.choose(hs.Task(messages=HELLO, complexity=5, latency_ms=500), view())
    assert easy.model == "deepseek-v3.2"  # tier 6 >= 5, p95 350 <= 500, the cheapest
    assert "prior" in easy.reason
    medium = policy.choose(hs.Task(messages=HELLO, complexity=7, latency_ms=500), view())
    assert medium.model == "gemini-2.5-flash"  # DeepSeek's tier (6) is too low
    hard = policy.choose(hs.Task(messages=HELLO, complexity=9), view())
    assert hard.model == "gpt-4.1"  # cheaper than Claude, tier 9
    assert hard.candidates == ("gpt-4.1", "claude-sonnet-4.5")
    beyond = policy.choose(hs.Task(messages=HELLO, complexity=11), view())
    assert beyond.model == "claude-sonnet-4.5"
    assert "highest tier" in beyond.reason


def test_when_nothing_is_fast_enough_the_fastest_adequate_model_wins() -> None:
    route = hs.CheapestWithinLatency().choose(
        hs.Task(messages=HELLO, complexity=7, latency_ms=250), view()
    )
    assert route.model == "gemini-2.5-flash"  # 280 ms: too slow, but the fastest of tier >= 7
    assert "no model" in route.reason
    assert route.candidates == ("gemini-2.5-flash", "gpt-4.1", "claude-sonnet-4.5")


def test_measured_latency_replaces_the_prior_and_switches_the_model() -> None:
    policy = hs.CheapestWithinLatency()
    task = hs.Task(messages=HELLO, complexity=7, latency_ms=500)
    assert policy.choose(task, view()).model == "gemini-2.5-flash"
    # Gemini turns out slow (p95 900 ms over 50 samples), GPT-4.1 fast (300 ms).
    slow = {"gemini-2.5-flash": (50, 0.9), "gpt-4.1": (50, 0.3)}
    route = policy.choose(task, view(slow))
    assert route.model == "gpt-4.1"
    assert route.expected_ttft == 0.3
    assert "measured" in route.reason
    # Too few samples: the priors still decide.
    few = {"gemini-2.5-flash": (5, 0.9), "gpt-4.1": (5, 0.3)}
    assert policy.choose(task, view(few)).model == "gemini-2.5-flash"
    assert hs.CheapestWithinLatency(min_samples=5).choose(task, view(few)).model == "gpt-4.1"


def test_quality_tiers_are_configurable() -> None:
    policy = hs.CheapestWithinLatency(tiers={"deepseek-v3.2": 10, "gpt-4.1": 10})
    assert policy.choose(hs.Task(messages=HELLO, complexity=10), view()).model == "deepseek-v3.2"
    with pytest.raises(ValueError, match="at least one model"):
        hs.CheapestWithinLatency(tiers={}).choose(hs.Task(messages=HELLO), view())


# --------------------------------------------------------------------------- against the simulator


@attrs.frozen
class Always:
    """A user's own policy: one method is the whole protocol."""

    model: str
    fallbacks: tuple[str, ...] = ()

    def choose(self, task: hs.Task, view: hs.RouterView) -> hs.Route:
        return hs.Route(model=self.model, reason="always", candidates=(self.model, *self.fallbacks))


async def test_router_chat_through_the_client(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_simulator(profile="fast") as sim,
        hs.open_client(api_key=sim.api_key, base_url=sim.base_url) as client,
    ):
        router = hs.Router(client)
        task = hs.Task(messages=HELLO, complexity=9, max_tokens=8)
        result = await router.chat(task)
        assert result.model == "claude-sonnet-4.5"
        assert result.route.model == "claude-sonnet-4.5"
        assert result.completion.usage is not None
        assert result.cost == cost("claude-sonnet-4.5", result.completion.usage)
        assert result.latency >= 0
        assert dict(result.skipped) == {}
        async with router.stream_chat(hs.Task(messages=HELLO, latency_ms=100)) as stream:
            assert stream.model == "gemini-2.5-flash"
            text = "".join([chunk.text async for chunk in stream])
        assert text
        assert isinstance(Always("x"), hs.RoutingPolicy)
        mine = hs.Router(client, policy=Always("deepseek-v3.2"))
        assert (await mine.chat(hs.Task(messages=HELLO, max_tokens=4))).model == "deepseek-v3.2"
        # The pool measures per model, which is what CheapestWithinLatency reads.
        measured = client.statistics().models["claude-sonnet-4.5"]
        assert measured.time_to_first_token.count == 1
        assert measured.latency.count == 1


@pytest.mark.parametrize(
    "fault", ["status=503", "status=529", "status=500", "status=429", "disconnect_after=0"]
)
async def test_router_falls_back_before_the_first_token(
    fault: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        open_simulator(profile="fast") as sim,
        hs.open_client(
            api_key=sim.api_key, base_url=sim.base_url, retry=hs.RetryPolicy(max_retries=0)
        ) as client,
    ):
        sim.inject_faults(fault, model="gemini-2.5-flash")
        router = hs.Router(client, policy=Always("gemini-2.5-flash", ("deepseek-v3.2",)))
        result = await router.chat(hs.Task(messages=HELLO, max_tokens=4))
        assert result.model == "deepseek-v3.2"
        assert list(result.skipped) == ["gemini-2.5-flash"]
        assert sim.stats().requests["gemini-2.5-flash"] == 1


async def test_router_does_not_fall_back_for_its_own_mistakes_or_when_told_not_to(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulator(profile="fast") as sim,
        hs.open_client(
            api_key=sim.api_key, base_url=sim.base_url, retry=hs.RetryPolicy(max_retries=0)
        ) as client,
    ):
        policy = Always("gemini-2.5-flash", ("deepseek-v3.2",))
        sim.inject_faults("status=400", model="gemini-2.5-flash")
        with pytest.raises(hs.BadRequestError):
            await hs.Router(client, policy=policy).chat(hs.Task(messages=HELLO, max_tokens=4))
        sim.inject_faults("status=503", model="gemini-2.5-flash")
        with pytest.raises(hs.OverloadedError):
            await hs.Router(client, policy=policy, fallback=False).chat(
                hs.Task(messages=HELLO, max_tokens=4)
            )
        # The last candidate's error is the caller's.
        sim.inject_faults("status=503", "status=503", model=None)
        with pytest.raises(hs.OverloadedError):
            await hs.Router(client, policy=policy).chat(hs.Task(messages=HELLO, max_tokens=4))
        assert sim.stats().requests.get("deepseek-v3.2", 0) == 1


async def test_router_skips_a_model_the_budget_cannot_hold(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulator(profile="fast") as sim,
        hs.open_client(api_key=sim.api_key, base_url=sim.base_url) as client,
        hs.open_budget(daily=0.02) as budget,
    ):
        router = hs.Router(client, budget=budget)
        # Claude's worst case: 2,048 tokens at $15/M = $0.031 > $0.02; GPT-4.1's: $0.016.
        task = hs.Task(messages=HELLO, complexity=9)
        assert router.choose(task).model == "claude-sonnet-4.5"
        result = await router.chat(task)
        assert result.route.model == "claude-sonnet-4.5"
        assert result.model == "gpt-4.1"
        assert "budget" in result.skipped["claude-sonnet-4.5"]
        assert sim.stats().requests.get("claude-sonnet-4.5", 0) == 0
        # When no candidate fits, the route is kept (the budget waits or refuses).
        tiny = hs.Router(client, budget=budget, policy=Always("gpt-4.1", ("claude-sonnet-4.5",)))
        huge = hs.Task(messages=HELLO, max_tokens=100_000)
        async with tiny.stream_chat(huge) as stream:
            assert stream.model == "gpt-4.1"


def _profile(**ttft: tuple[float, float]) -> Profile:
    models = [
        attrs.evolve(
            model,
            natural_length=8,
            natural_length_spread=0,
            tokens_per_second=1000.0,
            **(
                {}
                if model.name not in ttft
                else {"ttft_mean_ms": ttft[model.name][0], "ttft_p95_ms": ttft[model.name][1]}
            ),
        )
        for model in realistic_profile().models.values()
    ]
    return Profile.from_models("custom", models)


async def test_cheapest_within_latency_follows_the_simulators_latency(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Gemini answers slowly here, GPT-4.1 fast: once measured, the choice moves.
    profile = _profile(**{"gemini-2.5-flash": (900.0, 1100.0), "gpt-4.1": (150.0, 200.0)})
    async with (
        open_simulator(profile=profile) as sim,
        hs.open_client(api_key=sim.api_key, base_url=sim.base_url) as client,
    ):
        router = hs.Router(client, policy=hs.CheapestWithinLatency())
        task = hs.Task(messages=HELLO, complexity=7, latency_ms=500, max_tokens=4)
        assert router.choose(task).model == "gemini-2.5-flash"  # priors: 280 ms
        routed = []
        for _ in range(20):  # CheapestWithinLatency's min_samples
            routed.append((await router.chat(task)).model)
            await client.chat(model="gpt-4.1", messages=HELLO, max_tokens=4)
        assert set(routed) == {"gemini-2.5-flash"}  # its prior held until it was measured
        route = router.choose(task)
        assert route.model == "gpt-4.1"
        assert "measured" in route.reason
        assert route.expected_ttft is not None
        assert route.expected_ttft < 0.5
        assert (await router.chat(task)).model == "gpt-4.1"
        gemini = client.statistics().models["gemini-2.5-flash"].time_to_first_token
        assert gemini.p95 is not None
        assert gemini.p95 > 0.5


def test_a_policy_must_return_a_route() -> None:
    class Broken:
        def choose(self, task: hs.Task, view: hs.RouterView) -> Any:
            return "gpt-4.1"

    async def scenario() -> None:
        async with (
            open_simulator(profile="fast") as sim,
            hs.open_client(api_key=sim.api_key, base_url=sim.base_url) as client,
        ):
            with pytest.raises(TypeError, match="not a Route"):
                hs.Router(client, policy=Broken()).choose(hs.Task(messages=HELLO))
            with pytest.raises(TypeError, match="choose"):
                hs.Router(client, policy=object())  # type: ignore[arg-type]

    trio.run(scenario)
    assert LatencyPrior(mean=1, p95=2).p95 == 2
