# Fleet tests: worker processes sharing one Redis budget, rate limit and concurrency cap.
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import RedisServer

import holysheep_trio as hs
from holysheep_trio._tokens import prompt_token_bound
from holysheep_trio.budget import Rates, from_picodollars
from holysheep_trio.pool import Pool
from holysheep_trio.simulator import ModelProfile, Profile, Simulator, open_simulator

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4.1"
MESSAGES = [{"role": "user", "content": "Count to ten, slowly."}]
MAX_TOKENS = 8
ONE = 0.01  # the budget workers' worst case: 1000 prompt tokens at $2/M + 1000 at $8/M
# Requests that last about 50 ms, so that those of four processes overlap.
SLOW = Profile.from_models(
    "fleet",
    [
        ModelProfile(
            name=MODEL,
            ttft_mean_ms=40,
            ttft_p95_ms=60,
            tokens_per_second=800,
            natural_length=MAX_TOKENS,
            natural_length_spread=0,
        )
    ],
)
_prefixes = iter(range(10**9))


def prefix() -> str:
    return f"fleet-{os.getpid()}-{next(_prefixes)}"


WORKER = textwrap.dedent(
    """
    import json, random, sys
    import trio
    import holysheep_trio as hs
    from holysheep_trio.pool import Pool

    C = json.loads(sys.argv[1])
    MESSAGES = [{"role": "user", "content": "Count to ten, slowly."}]
    SMALL = dict(model="gpt-4.1", prompt_bound=1000, max_output_tokens=1000)

    def limits(store):
        rate = {"gpt-4.1": hs.RateLimit(rpm=C["rpm"])} if C.get("rpm") else {}
        return hs.Limits(max_concurrent=C["max_concurrent"], per_model={},
                         default_per_model=C["max_concurrent"], rate=rate, adaptive=False,
                         store=store)

    async def chat():
        done = 0
        async with hs.open_limit_store(C["redis"], key_prefix=C["prefix"]) as store:
            async with hs.open_client(api_key=C["api_key"], base_url=C["base_url"],
                                      limits=limits(store)) as client:
                async def one():
                    nonlocal done
                    await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=8)
                    done += 1
                async with trio.open_nursery() as nursery:
                    for _ in range(C["requests"]):
                        nursery.start_soon(one)
        return {"done": done}

    async def chat_budget():
        done = refused = 0
        async with hs.open_budget(daily=C["limit"], ledger=C["redis"], key_prefix=C["prefix"],
                                  poll_interval=0.01) as budget:
            async with hs.open_client(api_key=C["api_key"], base_url=C["base_url"],
                                      budget=budget) as client:
                async def one():
                    nonlocal done, refused
                    try:
                        await client.chat(model="gpt-4.1", messages=MESSAGES,
                                          max_tokens=C["max_tokens"])
                    except hs.BudgetExceededError:
                        refused += 1
                        return
                    done += 1
                async with trio.open_nursery() as nursery:
                    for _ in range(C["requests"]):
                        nursery.start_soon(one)
        return {"done": done, "refused": refused}

    async def budget():
        rng = random.Random(C["seed"])
        granted = refused = 0
        async with hs.open_budget(daily=C["limit"], ledger=C["redis"], key_prefix=C["prefix"],
                                  poll_interval=0.01) as budget:
            async def one(bill):
                nonlocal granted, refused
                try:
                    reservation = await budget.reserve(**SMALL, expires_in=60)
                except hs.BudgetExceededError:
                    refused += 1
                    return
                granted += 1
                await trio.sleep(rng.random() * 0.01)
                await reservation.settle(bill)
            async with trio.open_nursery() as nursery:
                for _ in range(C["requests"]):
                    usage = hs.Usage(prompt_tokens=rng.randint(0, 1000), completion_tokens=500)
                    nursery.start_soon(one, rng.choice([
                        hs.AttemptBill(billable=True, completed=False, completion_tokens=3),
                        hs.AttemptBill(billable=False, completed=False),
                        hs.AttemptBill(billable=True, completed=True, usage=usage),
                    ]))
        return {"granted": granted, "refused": refused}

    async def hold():
        async with hs.open_budget(daily=1, ledger=C["redis"], key_prefix=C["prefix"]) as budget:
            for _ in range(2):
                done = await budget.reserve(**SMALL, expires_in=60)
                await done.settle(hs.AttemptBill(billable=True, completed=False))
            held = [await budget.reserve(**SMALL, expires_in=C["expires_in"]) for _ in range(3)]
            async with hs.open_limit_store(C["redis"], key_prefix=C["prefix"],
                                           lease_time=C["lease_time"]) as store:
                pool = Pool(limits(store))
                slots = []
                for _ in range(C["max_concurrent"]):
                    slot = pool.admit("gpt-4.1")
                    await slot.__aenter__()
                    slots.append(slot)
                print(json.dumps({"ready": True, "held": len(held), "slots": len(slots)}),
                      flush=True)
                await trio.sleep_forever()

    MODES = {"chat": chat, "chat_budget": chat_budget, "budget": budget, "hold": hold}
    print(json.dumps(trio.run(MODES[C["mode"]])), flush=True)
    """
)


def _command(tmp_path: Path, config: dict[str, Any]) -> list[str]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return [sys.executable, str(script), json.dumps(config)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


async def run_workers(tmp_path: Path, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one worker process per config at once; their last lines of output, parsed."""
    results: list[dict[str, Any]] = []

    async def worker(config: dict[str, Any]) -> None:
        done = await trio.run_process(
            _command(tmp_path, config),
            capture_stdout=True,
            capture_stderr=True,
            env=_env(),
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        results.append(json.loads(done.stdout.decode().strip().splitlines()[-1]))

    with trio.fail_after(180):  # a guard against a hang, not a speed assertion
        async with trio.open_nursery() as nursery:
            for config in configs:
                nursery.start_soon(worker, config)
    return results


def bill(sim: Simulator) -> float:
    """What the simulator served, priced exactly as the budget prices it (USD)."""
    stats = sim.stats()
    total = 0
    for model, prompt in stats.prompt_tokens.items():
        rates = Rates.from_price(hs.DEFAULT_PRICES[model])
        total += rates.cost(prompt, stats.completion_tokens.get(model, 0))
    return from_picodollars(total)


# --------------------------------------------------------------------------- one budget


async def test_four_processes_share_one_redis_budget_without_overshoot(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """4 processes x 250 concurrent reservations against one budget that fits five and a half:
    what is committed never passes the limit, and no refusal was needless."""
    name = prefix()
    limit = 5.5 * ONE
    base = {"mode": "budget", "redis": redis_server.url, "prefix": name, "limit": limit}
    configs = [{**base, "requests": 250, "seed": seed} for seed in range(4)]
    results = await run_workers(tmp_path, configs)
    granted = sum(result["granted"] for result in results)
    assert granted + sum(result["refused"] for result in results) == 1000
    async with hs.open_budget(daily=limit, ledger=redis_server.url, key_prefix=name) as budget:
        report = await budget.report()
    assert report.daily.spent <= limit  # never overshot
    assert limit - report.daily.spent < ONE  # and nobody was refused who would have fit
    assert report.daily.reserved == 0
    assert report.models["gpt-4.1"].requests == granted


async def test_four_clients_bill_no_more_than_their_shared_redis_budget(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The same through the client: the simulator's bill is at most the limit, and the limit
    minus the bill is less than one request's reservation."""
    name = prefix()
    bound = prompt_token_bound({"messages": MESSAGES})
    one = from_picodollars(Rates.from_price(hs.DEFAULT_PRICES[MODEL]).cost(bound, 200))
    limit = 5.5 * one
    async with open_simulator(profile="fast") as sim:
        base = {
            "mode": "chat_budget",
            "redis": redis_server.url,
            "prefix": name,
            "limit": limit,
            "max_tokens": 200,
            "requests": 250,
            "api_key": sim.api_key,
            "base_url": sim.base_url,
        }
        results = await run_workers(tmp_path, [base] * 4)
        served = bill(sim)
        assert sum(result["done"] for result in results) == sim.stats().requests[MODEL]
    assert served <= limit
    assert limit - served < one


# --------------------------------------------------------------------------- shared limits


@asynccontextmanager
async def sampled(sim: Simulator) -> AsyncIterator[list[tuple[float, int]]]:
    """(time, requests so far) as the simulator saw them, every 2 ms while the block runs."""
    samples: list[tuple[float, int]] = []

    async def sample() -> None:
        while True:
            samples.append((trio.current_time(), sim.stats().requests.get(MODEL, 0)))
            await trio.sleep(0.002)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        yield samples
        nursery.cancel_scope.cancel()
    samples.append((trio.current_time(), sim.stats().requests.get(MODEL, 0)))


async def test_four_processes_share_one_rate_limit(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """rpm=600 shared by 4 processes sending 160 requests each: the simulator never sees more
    requests in a window of T seconds than the bucket allows (600 + 10 T, plus a little for the
    time between admission and arrival), and the 40 beyond the burst wait (4 s). Four local
    buckets would have let all 640 through at once."""
    rpm = 600
    async with open_simulator(profile="fast") as sim:
        base = {
            "mode": "chat",
            "redis": redis_server.url,
            "prefix": prefix(),
            "rpm": rpm,
            "max_concurrent": 1000,
            "requests": 160,
            "api_key": sim.api_key,
            "base_url": sim.base_url,
        }
        async with sampled(sim) as samples:
            results = await run_workers(tmp_path, [base] * 4)
    assert sum(result["done"] for result in results) == 640
    slack = 2.0  # seconds between a debit in Redis and the request's arrival, at most (a loaded CI)
    for index, (start, before) in enumerate(samples):
        for end, after in samples[index + 1 :]:
            allowed = rpm + rpm / 60 * (end - start + slack)
            assert after - before <= allowed, (end - start, after - before)
    first = next(time for time, count in samples if count > 0)
    assert samples[-1][0] - first >= (640 - rpm) * 60 / rpm - slack  # the 40 waited


async def test_a_fleet_wide_cap_of_eight_across_four_processes(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with open_simulator(profile=SLOW) as sim:
        base = {
            "mode": "chat",
            "redis": redis_server.url,
            "prefix": prefix(),
            "max_concurrent": 8,
            "requests": 40,
            "api_key": sim.api_key,
            "base_url": sim.base_url,
        }
        results = await run_workers(tmp_path, [base] * 4)
        stats = sim.stats()
    assert sum(result["done"] for result in results) == 160
    assert stats.max_concurrent[MODEL] <= 8  # each process alone would have allowed 8
    assert stats.max_concurrent[MODEL] >= 5  # and the cap was used, not just respected


async def test_limits_with_a_store_url_through_the_client(redis_server: RedisServer) -> None:
    url = f"{redis_server.url}?key_prefix={prefix()}"
    limits = hs.Limits(max_concurrent=2, per_model={}, default_per_model=2, store=url)
    async with (
        open_simulator(profile=SLOW) as sim,
        hs.open_client(api_key=sim.api_key, base_url=sim.base_url, limits=limits) as client,
    ):
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(
                    lambda: client.chat(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
                )
        assert sim.stats().max_concurrent[MODEL] <= 2


async def test_two_pools_share_one_cap_and_give_slots_back(redis_server: RedisServer) -> None:
    name = prefix()
    async with (
        hs.open_limit_store(redis_server.url, key_prefix=name) as first,
        hs.open_limit_store(redis_server.url, key_prefix=name) as second,
    ):
        pools = [
            Pool(hs.Limits(max_concurrent=3, per_model={}, store=store))
            for store in (first, second)
        ]
        active = peak = 0

        async def one(pool: Pool) -> None:
            nonlocal active, peak
            async with pool.admit(MODEL) as admission:
                active += 1
                peak = max(peak, active)
                await trio.sleep(0.01)
                active -= 1
                admission.report_success(prompt_tokens=1, completion_tokens=1, ttft=0, duration=0)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for index in range(30):
                    nursery.start_soon(one, pools[index % 2])
        assert peak == 3
        assert first.held == second.held == 0
        # Cancelled while waiting for a fleet slot: nothing is held, the local slots are back.
        async with AsyncExitStack() as stack:
            for _ in range(3):
                await stack.enter_async_context(pools[0].admit(MODEL))
            with trio.move_on_after(0.05) as scope:
                async with pools[1].admit(MODEL):
                    pass  # pragma: no cover
            assert scope.cancelled_caught
            assert pools[1].statistics().active == 0
        assert first.held == 0


def test_a_store_is_a_url_or_an_opened_store() -> None:
    with pytest.raises(hs.ConfigurationError, match="redis://"):
        hs.Limits(store="http://localhost:6379")
    with pytest.raises(TypeError, match="LimitStore"):
        hs.Limits(store=42)  # type: ignore[arg-type]
    assert hs.Limits(store="redis://localhost/0").store == "redis://localhost/0"


async def test_a_store_url_needs_its_owner_to_open_it() -> None:
    pool = Pool(hs.Limits(store="redis://127.0.0.1:1/0"))
    with pytest.raises(hs.ConfigurationError, match="open_limit_store"):
        async with pool.admit(MODEL):
            pass  # pragma: no cover
    assert pool.statistics().active == 0
    async with Pool(hs.Limits()).open_store():  # without a store: nothing to open
        pass


async def test_pool_open_store_opens_a_url(redis_server: RedisServer) -> None:
    url = f"{redis_server.url}?key_prefix={prefix()}&lease_time=5"
    pool = Pool(hs.Limits(max_concurrent=1, store=url))
    async with pool.open_store(), pool.admit(MODEL):
        with trio.move_on_after(0.05) as scope:
            async with pool.admit(MODEL):
                pass  # pragma: no cover
        assert scope.cancelled_caught


# --------------------------------------------------------------------------- kill -9


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs kill -9")
async def test_a_killed_worker_loses_no_settled_spend_and_its_holds_and_slots_expire(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    name = prefix()
    config = {
        "mode": "hold",
        "redis": redis_server.url,
        "prefix": name,
        "max_concurrent": 8,
        "lease_time": 3.0,
        "expires_in": 3.0,
    }
    with trio.fail_after(60):
        process = await trio.lowlevel.open_process(
            _command(tmp_path, config),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_env(),
        )
        try:
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, "the worker ended before it was ready"
                line += chunk
            assert json.loads(line) == {"ready": True, "held": 3, "slots": 8}
            process.send_signal(signal.SIGKILL)  # kill -9: no clean-up at all
        finally:
            await process.wait()
            await process.stdout.aclose()  # type: ignore[union-attr]
    assert process.returncode == -signal.SIGKILL
    async with (
        hs.open_budget(daily=1, ledger=redis_server.url, key_prefix=name) as budget,
        hs.open_limit_store(redis_server.url, key_prefix=name, lease_time=3.0) as store,
    ):
        report = await budget.report()
        assert report.daily.spent == pytest.approx(2 * ONE)  # settled spend is kept
        assert report.daily.reserved == pytest.approx(3 * ONE)  # the dead holds, for now
        pool = Pool(hs.Limits(max_concurrent=8, per_model={}, default_per_model=8, store=store))
        with trio.move_on_after(0.2) as scope:  # the dead worker's slots are still leased
            async with pool.admit(MODEL):
                pass  # pragma: no cover
        assert scope.cancelled_caught
        with trio.fail_after(30):  # then they expire, and the others proceed
            async with AsyncExitStack() as stack:
                for _ in range(8):
                    await stack.enter_async_context(pool.admit(MODEL))
            # Polling is all there is: the state is Redis's, changed by its clock alone.
            while (report := await budget.report()).daily.reserved:  # noqa: ASYNC110
                await trio.sleep(0.1)
        assert report.daily.spent == pytest.approx(5 * ONE)  # expired at the reserved amount
        assert report.models[MODEL].expired == 3
        assert report.models[MODEL].requests == 2


# --------------------------------------------------------------------------- Redis down


async def test_shared_limits_fail_closed_while_redis_is_down_then_recover(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{own_redis_server.url}?retry_interval=0.2"
    async with hs.open_limit_store(url, key_prefix=prefix()) as store:
        pool = Pool(hs.Limits(max_concurrent=4, store=store))
        async with pool.admit(MODEL):
            own_redis_server.stop()  # the release cannot reach Redis: the lease expires
        with pytest.raises(hs.LedgerUnavailableError, match="unreachable"):
            async with pool.admit(MODEL):
                pass  # pragma: no cover
        assert pool.statistics().active == 0  # the local slots came back
        own_redis_server.start()
        await trio.sleep(0.25)
        async with pool.admit(MODEL):
            assert store.held == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1


async def test_shared_limits_fail_open_on_the_local_limits(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{own_redis_server.url}?retry_interval=0.2&fail_open=true"
    async with hs.open_limit_store(url, key_prefix=prefix()) as store:
        pool = Pool(hs.Limits(max_concurrent=2, per_model={}, store=store))
        own_redis_server.stop()
        for _ in range(5):
            async with pool.admit(MODEL):  # admitted on the local limits
                assert store.held == 0
        async with pool.admit(MODEL), pool.admit(MODEL):
            with trio.move_on_after(0.05) as scope:  # the local cap still holds
                async with pool.admit(MODEL):
                    pass  # pragma: no cover
            assert scope.cancelled_caught
        own_redis_server.start()
        await trio.sleep(0.25)
        async with pool.admit(MODEL):
            assert store.held == 1  # back on the fleet's slots
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "fail_open=True" in warnings[0].getMessage()


async def test_leases_are_renewed_while_held(redis_server: RedisServer) -> None:
    name = prefix()
    async with (
        hs.open_limit_store(redis_server.url, key_prefix=name, lease_time=1.0) as first,
        hs.open_limit_store(redis_server.url, key_prefix=name, lease_time=1.0) as second,
    ):
        holder = Pool(hs.Limits(max_concurrent=1, store=first))
        other = Pool(hs.Limits(max_concurrent=1, store=second))
        async with holder.admit(MODEL):
            with trio.move_on_after(2.5) as scope:  # 2.5 lease times: renewed meanwhile
                async with other.admit(MODEL):
                    pass  # pragma: no cover
            assert scope.cancelled_caught
        with trio.fail_after(5):
            async with other.admit(MODEL):
                pass
