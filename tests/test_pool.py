# Tests of the pool: pure buckets/windows/AIMD (sync, hypothesis) and admission under trio.
from __future__ import annotations

import heapq
import math
import random
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import holysheep_trio as hs
from holysheep_trio.pool import (
    CEILING_RELAX_SECONDS,
    CEILING_RELAX_SUCCESSES,
    DEFAULT_COMPLETION_ESTIMATE,
    DEFAULT_PER_MODEL,
    UNLIMITED,
    AdaptiveLimit,
    Admission,
    Limits,
    Percentiles,
    Pool,
    PoolStatistics,
    RateLimit,
    RateMeter,
    RollingWindow,
    TokenBucket,
    estimate_tokens,
)
from holysheep_trio.simulator import open_simulator

# --------------------------------------------------------------------------- values


def test_limits_defaults_are_the_seeds() -> None:
    limits = Limits()
    assert limits.max_concurrent == 10
    assert dict(limits.per_model) == {
        "gpt-4.1": 5,
        "claude-sonnet-4.5": 3,
        "gemini-2.5-flash": 8,
        "deepseek-v3.2": 10,
    }
    assert limits.per_model == DEFAULT_PER_MODEL
    assert limits.limit_for("gpt-4.1") == 5
    # The seed's pool crashed on a model missing from its table; ours uses the default.
    assert limits.limit_for("some-new-model") == 4
    assert limits.rate_for("gpt-4.1") is None
    assert limits.adaptive is True


def test_limits_are_frozen_copies_and_hashable() -> None:
    per_model = {"a": 1}
    limits = Limits(per_model=per_model, rate={"a": RateLimit(rpm=5)})
    per_model["a"] = 99
    assert limits.limit_for("a") == 1
    with pytest.raises(TypeError):
        limits.per_model["a"] = 2  # type: ignore[index]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        limits.max_concurrent = 3  # type: ignore[misc]
    assert hash(limits) == hash(Limits(per_model={"a": 1}, rate={"a": RateLimit(rpm=5)}))
    assert limits == Limits(per_model={"a": 1}, rate={"a": RateLimit(rpm=5)})


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_concurrent": 0}, ValueError),
        ({"max_concurrent": 2.5}, TypeError),
        ({"max_concurrent": True}, TypeError),
        ({"default_per_model": -1}, ValueError),
        ({"per_model": {"a": 0}}, ValueError),
        ({"per_model": {1: 2}}, TypeError),
        ({"per_model": [("a", 1)]}, TypeError),
        ({"rate": {"a": 60}}, TypeError),
    ],
)
def test_limits_reject_bad_values(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Limits(**kwargs)


def test_rate_limit_validation() -> None:
    assert RateLimit() == RateLimit(rpm=None, tpm=None)
    with pytest.raises(ValueError, match="rpm"):
        RateLimit(rpm=0)
    with pytest.raises(TypeError, match="tpm"):
        RateLimit(tpm=1.5)  # type: ignore[arg-type]


def test_estimate_tokens() -> None:
    messages = [{"role": "user", "content": "x" * 40}]
    assert estimate_tokens(messages, max_tokens=100) == 10 + 4 + 100
    assert estimate_tokens(messages) == 10 + 4 + DEFAULT_COMPLETION_ESTIMATE
    parts = [{"role": "user", "content": [{"type": "text", "text": "y" * 8}, {"type": "image"}]}]
    assert estimate_tokens(parts, max_tokens=1) == 2 + 4 + 1

    @attrs.frozen
    class Message:
        content: str | None

    assert estimate_tokens([Message("abcd"), Message(None)], max_tokens=0) == 1 + 8
    assert estimate_tokens([], max_tokens=0) == 1


# --------------------------------------------------------------------------- token bucket


def test_token_bucket_refills_continuously_up_to_capacity() -> None:
    bucket = TokenBucket(capacity=60, per_second=1, now=0.0)
    assert bucket.level(0.0) == 60
    assert bucket.delay(60, 0.0) == 0
    bucket.take(60, 0.0)
    assert bucket.delay(1, 0.0) == pytest.approx(1.0)
    assert bucket.delay(10, 0.0) == pytest.approx(10.0)
    assert bucket.level(5.0) == pytest.approx(5.0)
    assert bucket.level(1000.0) == 60  # never above capacity


def test_token_bucket_oversized_request_waits_for_a_full_bucket_then_goes_into_debt() -> None:
    bucket = TokenBucket(capacity=100, per_second=10, now=0.0)
    bucket.take(50, 0.0)
    assert bucket.delay(500, 0.0) == pytest.approx(5.0)  # until full, not forever
    bucket.take(500, 5.0)
    assert bucket.level(5.0) == pytest.approx(-400)
    assert bucket.delay(1, 5.0) == pytest.approx(40.1)


def test_token_bucket_give_back_is_capped_and_may_charge() -> None:
    bucket = TokenBucket(capacity=100, per_second=1, now=0.0)
    bucket.take(80, 0.0)
    bucket.give_back(500, 0.0)
    assert bucket.level(0.0) == 100
    bucket.give_back(-30, 0.0)
    assert bucket.level(0.0) == 70


def test_token_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="capacity"):
        TokenBucket(capacity=0, per_second=1, now=0.0)


@given(
    capacity=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=60),
    amounts=st.lists(st.integers(1, 10), min_size=60, max_size=60),
)
def test_token_bucket_never_admits_more_than_burst_plus_rate(
    capacity: int, gaps: list[float], amounts: list[int]
) -> None:
    # Greedy clients take whenever allowed; over any window [a, b] the amount taken stays
    # within capacity + rate * (b - a) for requests no larger than the bucket.
    per_second = capacity / 60
    bucket = TokenBucket(capacity=capacity, per_second=per_second, now=0.0)
    now = 0.0
    taken: list[tuple[float, int]] = []
    for gap, amount in zip(gaps, amounts[: len(gaps)], strict=True):
        amount = min(amount, capacity)
        now += gap
        now += bucket.delay(amount, now)
        assert bucket.delay(amount, now) == 0
        bucket.take(amount, now)
        taken.append((now, amount))
    for i, (start, _) in enumerate(taken):
        total = 0
        for end, amount in taken[i:]:
            total += amount
            assert total <= capacity + per_second * (end - start) + 1e-6


# --------------------------------------------------------------------------- rolling window


def _nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


@given(
    values=st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=300),
    max_samples=st.integers(1, 100),
)
def test_rolling_window_percentiles_match_brute_force(
    values: list[float], max_samples: int
) -> None:
    window = RollingWindow(max_samples=max_samples, max_age=1e9)
    for i, value in enumerate(values):
        window.add(value, float(i))
        assert len(window) <= max_samples  # bounded, whatever the traffic
    kept = values[-max_samples:]
    result = window.percentiles(float(len(values)))
    assert result == Percentiles(
        count=len(kept),
        p50=_nearest_rank(kept, 0.50),
        p95=_nearest_rank(kept, 0.95),
        p99=_nearest_rank(kept, 0.99),
    )
    assert result.p50 is not None
    assert result.p95 is not None
    assert result.p99 is not None
    assert result.p50 <= result.p95 <= result.p99


def test_rolling_window_forgets_old_samples() -> None:
    window = RollingWindow(max_samples=10, max_age=60.0)
    assert window.percentiles(0.0) == Percentiles(count=0)
    window.add(100.0, 0.0)
    for t in range(1, 6):
        window.add(1.0, float(t))
    assert window.percentiles(10.0).p99 == 100.0
    assert window.percentiles(61.0) == Percentiles(count=5, p50=1.0, p95=1.0, p99=1.0)
    assert window.percentiles(1000.0).count == 0


def test_rolling_window_p50_of_one_to_hundred() -> None:
    window = RollingWindow(max_samples=1000)
    for v in range(1, 101):
        window.add(float(v), 0.0)
    assert window.percentiles(0.0) == Percentiles(count=100, p50=50.0, p95=95.0, p99=99.0)


# --------------------------------------------------------------------------- rate meter


def test_rate_meter_over_a_sliding_minute() -> None:
    meter = RateMeter(window=60.0, resolution=1.0, now=0.0)
    assert meter.rate(0.0) == 0.0
    for t in range(10):
        meter.add(100, float(t))
    assert meter.rate(10.0) == pytest.approx(1000 / 10)  # young meter: divide by its age
    assert meter.rate(59.5) == pytest.approx(1000 / 59.5)
    assert meter.rate(60.0) == pytest.approx(900 / 60)  # the bucket of second 0 expired
    assert meter.rate(200.0) == 0.0


@given(times=st.lists(st.floats(0, 10_000, allow_nan=False), min_size=1, max_size=200))
def test_rate_meter_memory_is_bounded(times: list[float]) -> None:
    meter = RateMeter(window=10.0, resolution=1.0, now=0.0)
    for t in sorted(times):
        meter.add(1, t)
        assert len(meter._buckets) <= 11


# --------------------------------------------------------------------------- AIMD


def test_adaptive_decreases_multiplicatively_once_per_epoch_never_below_one() -> None:
    limit = AdaptiveLimit(configured=10, now=0.0)
    epoch = limit.epoch
    limit.on_overload(admitted_epoch=epoch, in_flight=1, now=1.0)
    assert limit.limit == 5
    # The same burst, seen late: no second decrease.
    limit.on_overload(admitted_epoch=epoch, in_flight=1, now=1.0)
    assert limit.limit == 5
    for _ in range(10):
        limit.on_overload(admitted_epoch=limit.epoch, in_flight=1, now=1.0)
    assert limit.limit == 1


def test_adaptive_grows_additively_up_to_configured() -> None:
    limit = AdaptiveLimit(configured=4, now=0.0)
    limit.on_overload(admitted_epoch=0, in_flight=1, now=0.0)
    assert limit.limit == 2
    limit.on_success(0.0)
    assert limit.limit == 2  # +1/2
    limit.on_success(0.0)
    assert limit.limit == 3
    for _ in range(3):
        limit.on_success(0.0)
    assert limit.limit == 4
    for _ in range(100):
        limit.on_success(0.0)
    assert limit.limit == 4


def test_adaptive_learns_a_ceiling_and_relaxes_it_slowly() -> None:
    limit = AdaptiveLimit(configured=10, now=0.0)
    # A request refused while 4 were in flight: the server holds 3.
    limit.on_overload(admitted_epoch=0, in_flight=4, now=0.0)
    assert (limit.limit, limit.ceiling) == (3, 3)
    for _ in range(50):
        limit.on_success(1.0)
    assert limit.limit == 3  # no probing above the capacity found
    limit.on_success(CEILING_RELAX_SECONDS + 0.5)
    assert limit.ceiling == 4
    for _ in range(10):
        limit.on_success(CEILING_RELAX_SECONDS + 1)
    assert limit.limit == 4
    limit.on_success(10 * CEILING_RELAX_SECONDS)
    assert limit.ceiling == 10


def test_adaptive_learns_the_ceiling_from_429_only() -> None:
    # A 503/529 is answered at any concurrency: it halves the limit but says nothing of the
    # capacity granted to us (learning from it pinned the limit to 1).
    limit = AdaptiveLimit(configured=8, now=0.0)
    limit.on_overload(admitted_epoch=0, in_flight=4, now=0.0, capacity=False)
    assert (limit.limit, limit.ceiling) == (4, 8)
    # Quick recovery: a whole slot per success back to where the 503 found it, ...
    for expected in (5, 6, 7, 8):
        limit.on_success(0.1)
        assert limit.limit == expected
    # ... while after a 429 the learned ceiling holds and growth is additive.
    limit.on_overload(admitted_epoch=limit.epoch, in_flight=7, now=1.0, capacity=True)
    assert (limit.limit, limit.ceiling) == (4, 6)
    limit.on_success(1.1)
    assert limit.limit == 4  # +1/4


def test_adaptive_relaxes_the_ceiling_after_enough_successes() -> None:
    limit = AdaptiveLimit(configured=8, now=0.0)
    limit.on_overload(admitted_epoch=0, in_flight=4, now=0.0)
    assert limit.ceiling == 3
    for _ in range(CEILING_RELAX_SUCCESSES - 1):
        limit.on_success(1.0)
    assert (limit.limit, limit.ceiling) == (3, 3)
    # A late echo of the old burst (admitted before the decrease) that teaches nothing new
    # does not restart the count, nor does a 503.
    limit.on_overload(admitted_epoch=0, in_flight=4, now=1.0)
    limit.on_overload(admitted_epoch=0, in_flight=4, now=1.0, capacity=False)
    limit.on_success(1.0)
    assert limit.ceiling == 4  # long before CEILING_RELAX_SECONDS
    # A fresh 429 does restart it.
    limit.on_overload(admitted_epoch=limit.epoch, in_flight=4, now=2.0)
    assert limit.ceiling == 3
    for _ in range(CEILING_RELAX_SUCCESSES - 1):
        limit.on_success(2.0)
    assert limit.ceiling == 3


def _run_with_random_failures(
    *, adaptive: bool, seed: int, configured: int = 8, requests: int = 300
) -> tuple[float, float, int]:
    """A pure event simulation of a pool in front of a server with
    no capacity limit that answers 503 to a random 5 % of requests (0.05 s), else succeeds
    after 0.6 s. Returns the run's duration, the share of that time the limit was within one
    slot of ``configured``, and the final limit."""
    rng = random.Random(seed)
    control = AdaptiveLimit(configured=configured, now=0.0)
    running: list[tuple[float, int, bool, int]] = []  # (finish, index, failed, epoch)
    now = near_configured = 0.0
    started = 0
    while started < requests or running:
        while started < requests and len(running) < (control.limit if adaptive else configured):
            failed = rng.random() < 0.05
            finish = now + (0.05 if failed else 0.6)
            heapq.heappush(running, (finish, started, failed, control.epoch))
            started += 1
        finish, _, failed, epoch = heapq.heappop(running)
        if control.limit >= configured - 1:
            near_configured += finish - now
        now = finish
        if failed:
            control.on_overload(
                admitted_epoch=epoch, in_flight=len(running) + 1, now=now, capacity=False
            )
        else:
            control.on_success(now)
    return now, near_configured / now, control.limit


@pytest.mark.parametrize("seed", range(5))
def test_random_503s_do_not_pin_the_limit_down(seed: int) -> None:
    # 300 requests, a random 5 % of 503s, limit 8: adaptive must not take several times the
    # time of non-adaptive with the limit stuck at 1 (a ceiling learned from 503s would).
    fixed, _, _ = _run_with_random_failures(adaptive=False, seed=seed)
    adaptive, near_configured, final = _run_with_random_failures(adaptive=True, seed=seed)
    assert adaptive < 1.2 * fixed
    assert near_configured > 0.5
    assert final == 8


# --------------------------------------------------------------------------- admission


class Workload:
    """A fake server: counts concurrency per model and overall, like the simulator's stats()."""

    def __init__(self) -> None:
        self.active: dict[str, int] = defaultdict(int)
        self.peak: dict[str, int] = defaultdict(int)
        self.total = 0
        self.peak_total = 0

    async def request(
        self, pool: Pool, model: str, duration: float, *, estimated_tokens: int = 0
    ) -> None:
        async with pool.admit(model, estimated_tokens=estimated_tokens) as admission:
            self.active[model] += 1
            self.total += 1
            self.peak[model] = max(self.peak[model], self.active[model])
            self.peak_total = max(self.peak_total, self.total)
            try:
                await trio.sleep(duration)
            finally:
                self.active[model] -= 1
                self.total -= 1
            admission.report_success(
                prompt_tokens=10, completion_tokens=20, ttft=duration / 4, duration=duration
            )


async def test_seed_scenario_never_exceeds_limits(autojump_clock: trio.testing.MockClock) -> None:
    # The seed's example: 100 requests, every fifth on gpt-4.1 (limit 2), the rest on
    # deepseek-v3.2 (limit 8), global 10.
    pool = Pool(Limits(max_concurrent=10, per_model={"gpt-4.1": 2, "deepseek-v3.2": 8}))
    work = Workload()
    async with trio.open_nursery() as nursery:
        for i in range(100):
            model = "gpt-4.1" if i % 5 == 0 else "deepseek-v3.2"
            nursery.start_soon(work.request, pool, model, 1.0 + (i % 3) * 0.5)
    assert work.peak["gpt-4.1"] == 2
    assert work.peak["deepseek-v3.2"] == 8
    assert work.peak_total == 10
    stats = pool.statistics()
    assert (stats.total, stats.succeeded, stats.failed_total) == (100, 100, 0)
    assert (stats.active, stats.waiting, stats.utilization) == (0, 0, 0.0)
    assert stats.prompt_tokens == 1000
    assert stats.completion_tokens == 2000


async def test_global_limit_binds_across_models(autojump_clock: trio.testing.MockClock) -> None:
    pool = Pool(Limits(max_concurrent=3, per_model={"a": 3, "b": 3}))
    work = Workload()
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(work.request, pool, "ab"[i % 2], 1.0)
        await trio.sleep(0.5)
        stats = pool.statistics()
        assert (stats.active, stats.waiting, stats.utilization) == (3, 17, 1.0)
        assert sum(m.active for m in stats.models.values()) == 3
    assert work.peak_total == 3


async def test_unknown_model_gets_default_limit(autojump_clock: trio.testing.MockClock) -> None:
    pool = Pool(Limits(default_per_model=2))
    work = Workload()
    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(work.request, pool, "brand-new-model", 1.0)
    assert work.peak["brand-new-model"] == 2
    assert pool.effective_limit("brand-new-model") == 2
    assert pool.effective_limit("never-seen") == 2
    assert pool.statistics().models["brand-new-model"].limit == 2


async def test_admit_rejects_bad_arguments() -> None:
    pool = Pool()
    with pytest.raises(TypeError, match="model"):
        async with pool.admit(3, estimated_tokens=1):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="estimated_tokens"):
        async with pool.admit("m", estimated_tokens=-1):
            pass
    with pytest.raises(TypeError, match="estimated_tokens"):
        async with pool.admit("m", estimated_tokens=1.5):  # type: ignore[arg-type]
            pass


def _held(pool: Pool) -> int:
    held = int(pool._global.borrowed_tokens)
    for state in pool._models.values():
        held += int(state.limiter.borrowed_tokens)
    return held


async def test_cancellation_returns_every_slot(autojump_clock: trio.testing.MockClock) -> None:
    pool = Pool(Limits(max_concurrent=2, per_model={"m": 2}))
    work = Workload()
    with trio.move_on_after(1.5):
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(work.request, pool, "m", 10.0)
    stats = pool.statistics()
    assert (stats.active, stats.waiting) == (0, 0)
    assert _held(pool) == 0
    assert stats.failed == {"cancelled": 2}  # the two admitted; the waiting ones never started
    assert stats.total == 2
    # And the pool still works.
    await work.request(pool, "m", 1.0)
    assert pool.statistics().succeeded == 1


async def test_waiting_respects_caller_deadline(autojump_clock: trio.testing.MockClock) -> None:
    pool = Pool(Limits(per_model={"m": 1}))
    async with pool.admit("m") as first:
        with pytest.raises(trio.TooSlowError), trio.fail_after(2):
            await pool.admit("m").__aenter__()
        assert trio.current_time() == pytest.approx(2.0)
        assert pool.statistics().waiting == 0
        first.report_success(prompt_tokens=0, completion_tokens=0, ttft=None, duration=2.0)
    assert _held(pool) == 0


async def test_failure_inside_block_returns_slots_and_counts() -> None:
    pool = Pool()
    seen: list[Admission] = []

    async def failing() -> None:
        async with pool.admit("m") as admission:
            seen.append(admission)
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await failing()
    assert seen[0].in_flight == 1
    assert _held(pool) == 0
    assert pool.statistics().failed == {"unreported": 1}


async def test_nested_admissions_in_one_task_hold_separate_slots() -> None:
    # A task may hold two streams of one model at once (no trio "already borrowing" error).
    pool = Pool(Limits(per_model={"m": 2}))
    async with pool.admit("m") as outer, pool.admit("m") as inner:
        assert pool.statistics().models["m"].active == 2
        assert inner.in_flight == 2
        inner.report_success(prompt_tokens=1, completion_tokens=1, ttft=None, duration=0)
        outer.report_success(prompt_tokens=1, completion_tokens=1, ttft=None, duration=0)
    assert _held(pool) == 0


async def test_reports_failures_then_at_most_one_success_before_exit() -> None:
    pool = Pool()
    async with pool.admit("m") as admission:
        before = admission.reported
        # A failed attempt the client retries inside the same admission, then the success.
        admission.report_failure(kind="server", status=500)
        assert (before, admission.reported) == (False, True)
        admission.report_success(prompt_tokens=1, completion_tokens=2, ttft=None, duration=1)
        with pytest.raises(RuntimeError, match="already reported its success"):
            admission.report_success(prompt_tokens=0, completion_tokens=0, ttft=None, duration=0)
        with pytest.raises(RuntimeError, match="already reported its success"):
            admission.report_failure(kind="server")
    with pytest.raises(RuntimeError, match="before leaving"):
        admission.report_failure(kind="server")
    async with pool.admit("m"):
        pass  # no report: counted, not lost
    stats = pool.statistics()
    assert (stats.total, stats.succeeded) == (2, 1)
    assert stats.failed == {"server": 1, "unreported": 1}
    assert "succeeded=True failures=1" in repr(admission)


class _StatusError(Exception):
    kind = "rate_limit"
    status = 429
    retry_after = 2


@pytest.mark.parametrize(
    ("error", "completed", "expected"),
    [
        (None, True, None),
        (None, False, "cancelled"),
        (trio.Cancelled._create(), False, "cancelled"),
        (_StatusError(), False, "rate_limit"),
        (ValueError("x"), False, "ValueError"),
    ],
)
async def test_report_attempt_maps_client_outcomes(
    autojump_clock: trio.testing.MockClock,
    error: BaseException | None,
    completed: bool,
    expected: str | None,
) -> None:
    pool = Pool()
    async with pool.admit("gpt-4.1") as admission:
        admission.report_attempt(
            error=error, completed=completed, prompt_tokens=3, completion_tokens=4, ttft=0.5
        )
    stats = pool.statistics()
    assert stats.failed == ({} if expected is None else {expected: 1})
    assert stats.succeeded == (1 if expected is None else 0)
    assert (stats.prompt_tokens, stats.completion_tokens) == (3, 4)
    assert stats.time_to_first_token.count == 1
    if isinstance(error, _StatusError):
        assert stats.models["gpt-4.1"].effective_limit == 2
        assert stats.models["gpt-4.1"].paused_for == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("report", "level_after"),
    [
        # Refused with a status: nothing was generated; the whole reservation comes back.
        ({"kind": "rate_limit", "status": 429}, 1000),
        # A network failure: the server may have counted it; the reservation is kept.
        ({"kind": "network"}, 700),
        # ... unless the usage reported exceeds it.
        ({"kind": "timeout", "prompt_tokens": 200, "completion_tokens": 200}, 600),
        # Success: corrected to the actual usage.
        ({"success": 120}, 880),
    ],
)
async def test_tpm_reservation_settles_on_exit(
    autojump_clock: trio.testing.MockClock, report: dict[str, Any], level_after: float
) -> None:
    pool = Pool(Limits(rate={"m": RateLimit(tpm=1000)}, adaptive=False))
    async with pool.admit("m", estimated_tokens=300) as admission:
        if "success" in report:
            admission.report_success(
                prompt_tokens=report["success"], completion_tokens=0, ttft=None, duration=0
            )
        else:
            admission.report_failure(**report)
    bucket = pool._models["m"].tokens
    assert bucket is not None
    assert bucket.level(trio.current_time()) == pytest.approx(level_after)


# --------------------------------------------------------------------------- rate limits


async def test_rpm_window_respected(autojump_clock: trio.testing.MockClock) -> None:
    pool = Pool(Limits(max_concurrent=100, per_model={"m": 100}, rate={"m": RateLimit(rpm=60)}))
    admitted: list[float] = []

    async def one() -> None:
        async with pool.admit("m") as admission:
            admitted.append(trio.current_time())
            await trio.sleep(0.1)
            admission.report_success(prompt_tokens=1, completion_tokens=1, ttft=None, duration=0)

    async with trio.open_nursery() as nursery:
        for _ in range(120):
            nursery.start_soon(one)
    assert len(admitted) == 120
    assert max(admitted) >= 60.0 - 1e-6  # 60 at once, then 1 per second
    assert max(admitted) <= 61.0
    # Any window of T seconds holds at most rpm * (1 + T / 60) admissions.
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= 60 + (admitted[j] - start) + 1e-6


async def test_tpm_reservation_and_correction(autojump_clock: trio.testing.MockClock) -> None:
    pool = Pool(Limits(rate={"m": RateLimit(tpm=600)}))  # 600 per minute: 10 per second

    async def one(used: int) -> float:
        async with pool.admit("m", estimated_tokens=300) as admission:
            start = trio.current_time()
            admission.report_success(prompt_tokens=used, completion_tokens=0, ttft=None, duration=0)
            return start

    assert await one(300) == 0.0
    assert await one(300) == 0.0
    # The bucket is empty: the third reservation waits 30 s for 300 tokens.
    assert await one(300) == pytest.approx(30.0)
    # Actual usage was 0: the whole reservation comes back, so the next one is immediate.
    t = await one(0)
    assert t == pytest.approx(60.0)
    assert await one(0) == pytest.approx(60.0)
    # Usage above the reservation is charged: 900 used, bucket 300 - 900 = -600 in debt.
    await one(900)
    assert await one(0) == pytest.approx(60.0 + 90.0)


async def test_tpm_window_respected_by_many_tasks(autojump_clock: trio.testing.MockClock) -> None:
    pool = Pool(Limits(rate={"m": RateLimit(tpm=1000)}))
    admitted: list[float] = []

    async def one() -> None:
        async with pool.admit("m", estimated_tokens=100) as admission:
            admitted.append(trio.current_time())
            await trio.sleep(1)
            admission.report_success(prompt_tokens=50, completion_tokens=50, ttft=None, duration=1)

    async with trio.open_nursery() as nursery:
        for _ in range(30):
            nursery.start_soon(one)
    # 10 at once (1000 tokens), then one per 6 s.
    assert max(admitted) == pytest.approx(120.0)
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert (j - i + 1) * 100 <= 1000 + (1000 / 60) * (admitted[j] - start) + 1e-6


async def test_rate_waiters_are_served_in_arrival_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool = Pool(Limits(per_model={"m": 50}, max_concurrent=50, rate={"m": RateLimit(rpm=6)}))
    order: list[int] = []

    async def one(i: int) -> None:
        async with pool.admit("m") as admission:
            order.append(i)
            admission.report_success(prompt_tokens=0, completion_tokens=0, ttft=None, duration=0)

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(one, i)
            await trio.sleep(0.01)  # arrival order
    assert order == list(range(20))


async def test_rate_limited_model_does_not_hold_global_slots(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool = Pool(
        Limits(max_concurrent=2, per_model={"slow": 2, "fast": 2}, rate={"slow": RateLimit(rpm=1)})
    )
    work = Workload()
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(work.request, pool, "slow", 0.1)
        await trio.sleep(1)
        # "slow" used its one request; the next waits a minute for its bucket, without slots.
        finished_at: list[float] = []

        async def fast() -> None:
            await work.request(pool, "fast", 1.0)
            finished_at.append(trio.current_time())

        nursery.start_soon(fast)
        nursery.start_soon(fast)
    assert finished_at == [pytest.approx(2.0), pytest.approx(2.0)]


# --------------------------------------------------------------------------- adaptive limits


async def test_retry_after_pauses_new_admissions(autojump_clock: trio.testing.MockClock) -> None:
    pool = Pool()
    async with pool.admit("m") as admission:
        admission.report_failure(kind="rate_limit", status=429, retry_after=5.0)
    assert pool.statistics().models["m"].paused_for == pytest.approx(5.0)
    async with pool.admit("m") as admission:
        assert trio.current_time() == pytest.approx(5.0)
        assert admission.waited == pytest.approx(5.0)
        admission.report_success(prompt_tokens=0, completion_tokens=0, ttft=None, duration=0)
    # Another model is not paused.
    async with pool.admit("other"):
        assert trio.current_time() == pytest.approx(5.0)


@pytest.mark.parametrize(
    "limits",
    [
        Limits.unlimited(),
        Limits(adaptive=False),
        Limits(rate={"m": RateLimit(rpm=1000)}, adaptive=False),  # through the gate
    ],
    ids=["unlimited", "not-adaptive", "not-adaptive-rate-limited"],
)
async def test_retry_after_pauses_nothing_when_not_adaptive(
    autojump_clock: trio.testing.MockClock, limits: Limits
) -> None:
    # B4: non-adaptive limits (the client's default among them: "no request ever waits")
    # must not make an unrelated later request wait out another request's Retry-After.
    pool = Pool(limits)
    async with pool.admit("m") as admission:
        admission.report_failure(kind="rate_limit", status=429, retry_after=5.0)
    stats = pool.statistics()
    assert stats.models["m"].paused_for == 0.0
    assert stats.failed == {"rate_limit": 1}  # still counted
    async with pool.admit("m") as admission:
        assert trio.current_time() == 0.0
        assert admission.waited == 0.0
        admission.report_success(prompt_tokens=0, completion_tokens=0, ttft=None, duration=0)


async def test_overload_shrinks_limit_when_adaptive(autojump_clock: trio.testing.MockClock) -> None:
    for adaptive, expected in [(True, 2), (False, 5)]:
        pool = Pool(Limits(adaptive=adaptive))
        async with pool.admit("gpt-4.1") as admission:
            admission.report_failure(kind="server", status=503)
        assert pool.effective_limit("gpt-4.1") == expected
        assert pool.statistics().models["gpt-4.1"].effective_limit == expected


async def test_a_non_overload_failure_does_not_shrink(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool = Pool()
    async with pool.admit("gpt-4.1") as admission:
        admission.report_failure(kind="server", status=500, retry_after=30)
    stats = pool.statistics().models["gpt-4.1"]
    assert (stats.effective_limit, stats.paused_for) == (5, 0.0)


@pytest.mark.parametrize(("capacity", "configured"), [(3, 10), (5, 8), (1, 4), (6, 6)])
async def test_adaptive_finds_hidden_capacity_and_429s_stop(
    autojump_clock: trio.testing.MockClock, capacity: int, configured: int
) -> None:
    # A fake server that accepts `capacity` concurrent requests and answers 429 beyond.
    pool = Pool(Limits(max_concurrent=20, per_model={"m": configured}))
    server_active = 0
    server_peak = 0
    rejected_at: list[float] = []

    async def one() -> bool:
        nonlocal server_active, server_peak
        async with pool.admit("m") as admission:
            start = trio.current_time()
            if server_active >= capacity:
                await trio.sleep(0.01)
                rejected_at.append(trio.current_time())
                admission.report_failure(kind="rate_limit", status=429, duration=0.01)
                return False
            server_active += 1
            server_peak = max(server_peak, server_active)
            try:
                await trio.sleep(1.0)
            finally:
                server_active -= 1
            admission.report_success(
                prompt_tokens=1, completion_tokens=1, ttft=0.1, duration=trio.current_time() - start
            )
            return True

    async def client() -> None:
        # Retry until the request succeeds, as the client's retry policy would.
        while not await one():
            pass

    clients = 8 * capacity
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client)
    stats = pool.statistics()
    assert stats.succeeded == clients
    assert pool.effective_limit("m") == capacity
    assert server_peak == capacity
    if capacity < configured:
        assert rejected_at, "the pool should have met the hidden capacity"
        # Found in the first round trip; no more 429s for the rest of the run.
        assert max(rejected_at) < 1.0
    else:
        assert rejected_at == []
    assert trio.current_time() >= 8.0


async def test_ceiling_probes_again_after_a_quiet_spell(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool = Pool(Limits(per_model={"m": 10}))
    async with pool.admit("m") as first, pool.admit("m") as second:
        async with pool.admit("m") as third:
            third.report_failure(kind="rate_limit", status=429)
        second.report_success(prompt_tokens=0, completion_tokens=0, ttft=None, duration=0)
        first.report_success(prompt_tokens=0, completion_tokens=0, ttft=None, duration=0)
    assert pool.effective_limit("m") == 2
    await trio.sleep(CEILING_RELAX_SECONDS)
    for _ in range(10):
        async with pool.admit("m") as admission:
            admission.report_success(prompt_tokens=0, completion_tokens=0, ttft=None, duration=0)
    assert pool.effective_limit("m") == 3


async def test_admission_is_a_checkpoint() -> None:
    # The fast path (nothing to wait for) still yields once, like trio's own primitives ...
    pool = Pool()
    with trio.testing.assert_checkpoints():
        async with pool.admit("m") as admission:
            admission.report_success(prompt_tokens=0, completion_tokens=0, ttft=None, duration=0)
    rated = Pool(Limits(rate={"m": RateLimit(rpm=100, tpm=10_000)}))
    with trio.testing.assert_checkpoints():
        async with rated.admit("m", estimated_tokens=10) as admission:
            admission.report_success(prompt_tokens=0, completion_tokens=0, ttft=None, duration=0)
    # ... and a cancelled caller is refused before anything is taken.
    with trio.CancelScope() as scope:
        scope.cancel()
        async with pool.admit("m"):
            pytest.fail("admitted in a cancelled scope")  # pragma: no cover
    assert _held(pool) == 0
    assert pool.statistics().total == 1


# --------------------------------------------------------------------------- statistics


async def test_statistics_snapshot(autojump_clock: trio.testing.MockClock) -> None:
    pool = Pool(Limits(max_concurrent=4, per_model={"m": 4}))
    for i in range(1, 101):
        async with pool.admit("m") as admission:
            await trio.sleep(0.01)
            admission.report_success(
                prompt_tokens=2, completion_tokens=10, ttft=i / 1000, duration=float(i)
            )
    async with pool.admit("m") as admission:
        admission.report_failure(
            kind="cancelled", ttft=0.5, duration=1.0, prompt_tokens=2, completion_tokens=7
        )
    async with pool.admit("m") as admission:
        admission.report_failure(kind="timeout")
    stats = pool.statistics()
    assert isinstance(stats, PoolStatistics)
    assert (stats.total, stats.succeeded) == (102, 100)
    assert stats.failed == {"cancelled": 1, "timeout": 1}
    assert stats.failed_total == 2
    assert stats.latency == Percentiles(count=100, p50=50.0, p95=95.0, p99=99.0)
    assert stats.time_to_first_token.count == 101
    assert stats.time_to_first_token.p50 == pytest.approx(0.051)
    # The hedging loser's usage so far is counted.
    assert stats.prompt_tokens == 202
    assert stats.completion_tokens == 1007
    assert stats.tokens_per_second == pytest.approx(1007 / trio.current_time())
    assert stats.max_concurrent == 4
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.total = 0  # type: ignore[misc]
    assert pool.statistics() == pool.statistics()


def _models(n: int) -> Iterator[str]:
    for i in range(n):
        yield f"m{i % 3}"


async def test_statistics_memory_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    pool = Pool(window_samples=16, window_seconds=30.0)
    for model in _models(200):
        async with pool.admit(model) as admission:
            await trio.sleep(0.5)
            admission.report_success(prompt_tokens=1, completion_tokens=1, ttft=0.1, duration=0.5)
    assert len(pool._latency) <= 16
    assert len(pool._ttft) <= 16
    assert pool._throughput is not None
    assert len(pool._throughput._buckets) <= 61
    assert pool.statistics().latency.count == 16
    assert "Pool active=0" in repr(pool)


async def test_cancelled_while_waiting_for_a_bucket_frees_the_gate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool = Pool(Limits(rate={"m": RateLimit(rpm=1)}))
    async with pool.admit("m") as admission:
        admission.report_success(prompt_tokens=0, completion_tokens=0, ttft=None, duration=0)
    with trio.move_on_after(10):
        async with pool.admit("m"):
            pytest.fail("admitted before the bucket refilled")  # pragma: no cover
    assert _held(pool) == 0
    assert not pool._models["m"].gate.locked()
    assert pool.statistics().models["m"].waiting == 0
    async with pool.admit("m") as admission:
        assert trio.current_time() == pytest.approx(60.0)
        admission.report_success(prompt_tokens=0, completion_tokens=0, ttft=None, duration=0)


@pytest.mark.parametrize("rate", [None, RateLimit(rpm=1000)])
async def test_retry_after_landing_while_waiting_for_a_global_slot(
    autojump_clock: trio.testing.MockClock, rate: RateLimit | None
) -> None:
    # Checked again once the global slot is held: the pause must win over the free slot.
    limits = Limits(max_concurrent=2, rate={} if rate is None else {"m": rate})
    pool = Pool(limits)
    assert pool.limits is limits
    admitted_at: list[float] = []

    async def refused() -> None:
        async with pool.admit("m") as admission:
            await trio.sleep(1)
            admission.report_failure(kind="rate_limit", status=429, retry_after=10)

    async def other() -> None:
        async with pool.admit("other") as admission:
            await trio.sleep(30)
            admission.report_success(
                prompt_tokens=0, completion_tokens=0, ttft=None, duration=math.nan
            )

    async def waiting() -> None:
        await trio.sleep(0.5)
        async with pool.admit("m") as admission:
            admitted_at.append(trio.current_time())
            admission.report_success(prompt_tokens=0, completion_tokens=0, ttft=None, duration=0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(refused)
        nursery.start_soon(other)
        nursery.start_soon(waiting)
    assert admitted_at == [pytest.approx(11.0)]
    assert pool.statistics().latency.count == 1  # the NaN duration was not recorded


# --------------------------------------------------------------------------- through the client
# open_client(limits=...) against the simulator, with its stats() as ground truth.

KEY = "sk-test-pool-0123456789"
MESSAGES = [{"role": "user", "content": "Tell me about trio."}]


def _request(model: str = "deepseek-v3.2", **params: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, **params}


async def test_open_client_does_not_throttle_by_default() -> None:
    # Like any HTTP client (and the official SDKs), no limits unless the caller asks for them;
    # the seed's pool is one `limits=Limits()` away.
    async with hs.open_client(api_key=KEY, base_url="http://127.0.0.1:9/v1") as client:
        assert client.limits == Limits.unlimited()
        assert client.limits.limit_for("gpt-4.1") == UNLIMITED
        assert client.limits.limit_for("some-unknown-model") == UNLIMITED
        assert not client.limits.adaptive
        stats = client.statistics()
        assert isinstance(stats, PoolStatistics)
        assert (stats.total, stats.max_concurrent, stats.models) == (0, UNLIMITED, {})
    async with hs.open_client(
        api_key=KEY, base_url="http://127.0.0.1:9/v1", limits=Limits()
    ) as client:
        assert client.limits.limit_for("gpt-4.1") == 5
        assert client.statistics().max_concurrent == 10
    limits = Limits(max_concurrent=3)
    async with hs.open_client(api_key=KEY, base_url="http://127.0.0.1:9/v1", limits=limits) as c:
        assert c.limits is limits
    with pytest.raises(TypeError, match="Limits"):
        async with hs.open_client(api_key=KEY, limits={"max_concurrent": 3}):  # type: ignore[arg-type]
            pass  # pragma: no cover


@pytest.mark.parametrize(("limits", "expected"), [(None, 30), (Limits(), 5)])
async def test_default_client_lets_every_stream_run_at_once(
    autojump_clock: trio.testing.MockClock, limits: Limits | None, expected: int
) -> None:
    # 30 simultaneous gpt-4.1 streams: all reach the server at once without limits, while the
    # seed's table lets 5 through at a time.
    async with open_simulator(api_key=KEY, profile="realistic") as sim:
        async with hs.open_client(api_key=KEY, base_url=sim.base_url, limits=limits) as client:
            results = await client.batch([_request("gpt-4.1", max_tokens=3)] * 30, max_in_flight=30)
        assert all(result.ok for result in results)
        assert sim.stats().max_concurrent["gpt-4.1"] == expected


@pytest.mark.parametrize(("limits", "paused"), [(None, False), (Limits(), True)])
async def test_retry_after_pauses_the_next_request_only_when_adaptive(
    autojump_clock: trio.testing.MockClock, limits: Limits | None, paused: bool
) -> None:
    # B4: with the default limits a 429's Retry-After must not hold up the next call.
    retry = hs.RetryPolicy(max_retries=0)
    async with (
        open_simulator(api_key=KEY, profile="fast") as sim,
        hs.open_client(api_key=KEY, base_url=sim.base_url, retry=retry, limits=limits) as client,
    ):
        with pytest.raises(hs.RateLimitError) as info:
            await client.chat(
                **_request(max_tokens=3),
                extra_headers={"X-Simulator-Fault": "status=429;retry_after=2"},
            )
        assert info.value.retry_after == 2.0
        refused_at = trio.current_time()
        completion = await client.chat(**_request(max_tokens=3))
        # A completion's duration runs from its admission, when it was sent.
        admitted_at = trio.current_time() - completion.duration
    if paused:
        assert admitted_at - refused_at == pytest.approx(2.0, abs=0.01)
    else:
        assert admitted_at - refused_at < 0.01


async def test_rpm_window_through_the_client(autojump_clock: trio.testing.MockClock) -> None:
    limits = Limits(
        max_concurrent=500,
        per_model={"deepseek-v3.2": 500},
        rate={"deepseek-v3.2": RateLimit(rpm=60)},
    )
    async with open_simulator(api_key=KEY, profile="fast") as sim:
        starts: list[float] = []
        async with hs.open_client(api_key=KEY, base_url=sim.base_url, limits=limits) as client:
            requests = [_request(max_tokens=5)] * 120
            async with client.open_batch(requests, max_in_flight=200) as results:
                async for result in results:
                    # A completion's duration runs from its admission, when it was sent.
                    assert result.completion is not None
                    starts.append(trio.current_time() - result.completion.duration)
        assert sim.stats().requests["deepseek-v3.2"] == 120
    starts.sort()
    assert len(starts) == 120
    assert starts[59] < 0.01  # a full bucket: one minute's allowance at once
    for index in range(60, 120):  # then one per second, never sooner
        assert starts[index] >= index - 59 - 1e-6
    assert starts[-1] == pytest.approx(60, abs=0.05)


async def test_tpm_window_through_the_client(autojump_clock: trio.testing.MockClock) -> None:
    tpm = 2_000
    limits = Limits(
        max_concurrent=100,
        per_model={"deepseek-v3.2": 100},
        rate={"deepseek-v3.2": RateLimit(tpm=tpm)},
    )
    spans: list[tuple[float, int]] = []  # (sent at, tokens billed)
    async with open_simulator(api_key=KEY, profile="fast") as sim:
        async with hs.open_client(api_key=KEY, base_url=sim.base_url, limits=limits) as client:
            # Without max_tokens each reserves 9 + 1024 tokens; the fast profile's 64-token
            # replies use 76 and give the rest back at once.
            requests = [_request()] * 60
            async with client.open_batch(requests, max_in_flight=60) as results:
                async for result in results:
                    completion = result.completion
                    assert completion is not None
                    assert completion.usage is not None
                    sent = trio.current_time() - completion.duration
                    spans.append((sent, completion.usage.total_tokens))
            ours = client.statistics()
        billed = sum(sim.stats().prompt_tokens.values()) + sum(
            sim.stats().completion_tokens.values()
        )
    assert sum(tokens for _, tokens in spans) == billed
    assert billed == ours.prompt_tokens + ours.completion_tokens
    spans.sort()
    per_second = tpm / 60
    # Over any window of T seconds, the requests sent used at most a bucket plus T's refill
    # (3 tokens each of slack: the simulator bills a 3-token priming the estimate leaves out).
    for i, (start, _) in enumerate(spans):
        for j in range(i, len(spans)):
            window = spans[j][0] - start
            used = sum(tokens for _, tokens in spans[i : j + 1])
            assert used <= tpm + per_second * window + 3 * (j - i + 1) + 1e-6
    # ... and unused reservations came back at once: it took as long as the real usage needs
    # (a request waits until a whole reservation is free), not 60 x 1033 tokens (30 min).
    reservation = estimate_tokens(MESSAGES)
    assert spans[-1][0] <= (billed - (tpm - reservation)) / per_second + 2


async def test_tokens_given_back_wake_the_waiter_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool = Pool(Limits(rate={"m": RateLimit(tpm=100)}))
    admitted: list[float] = []

    async def request(used: int) -> None:
        async with pool.admit("m", estimated_tokens=100) as admission:
            admitted.append(trio.current_time())
            await trio.sleep(1)
            admission.report_success(prompt_tokens=0, completion_tokens=used, ttft=None, duration=1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(request, 10)
        await trio.sleep(0.5)
        nursery.start_soon(request, 10)  # needs 100 at 0.5 s: the bucket holds ~0.8
    # At 1 s A gives 90 back: the bucket holds 90 + 1.67 (1 s of refill at 100/min), so B goes
    # once the missing 8.33 have refilled, 5 s later; not at 60 s, as computed at 0.5 s.
    assert admitted[0] == 0.0
    assert admitted[1] == pytest.approx(6.0)


async def test_adaptive_limit_finds_the_simulators_hidden_capacity_and_429s_stop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The server holds 3 deepseek-v3.2 requests at a time and refuses more with a real 429
    # (retry-after-ms: 100); the client is configured for 10.
    limits = Limits(max_concurrent=20, per_model={"deepseek-v3.2": 10})
    refused_at: list[float] = []

    def record(self: hs.Client, outcome: Any) -> None:
        if isinstance(outcome.error, hs.RateLimitError):
            refused_at.append(trio.current_time())

    async with open_simulator(
        api_key=KEY, profile="realistic", capacity={"deepseek-v3.2": 3}
    ) as sim:
        async with hs.open_client(api_key=KEY, base_url=sim.base_url, limits=limits) as client:
            client._report = record.__get__(client)  # type: ignore[method-assign]
            results = await client.batch([_request(max_tokens=10)] * 24)
            first = client.statistics()
            # Found: a second batch meets no 429 at all.
            again = await client.batch([_request(max_tokens=10)] * 24)
            second = client.statistics()
        stats = sim.stats()
    assert all(r.ok for r in results + again)  # every 429 was retried, after re-admission
    assert refused_at, "the burst should have met the hidden capacity"
    assert max(refused_at) < 1.0  # found in the first round trip; then no more 429s
    assert first.failed == {"rate_limit": len(refused_at)} == second.failed
    assert stats.faults_served["capacity"] == len(refused_at)
    assert stats.max_concurrent["deepseek-v3.2"] == 3
    assert first.models["deepseek-v3.2"].effective_limit == 3
    assert second.models["deepseek-v3.2"].effective_limit == 3
    assert (second.succeeded, second.active) == (48, 0)


async def test_random_503s_cost_little_through_the_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # End to end: every 20th request answered 503 by a server with no
    # capacity limit, no retries; adaptive limits must cost about what no adaptation costs.
    fault = {"X-Simulator-Fault": "status=503"}
    requests = [
        _request(max_tokens=4, **({"extra_headers": fault} if i % 20 == 19 else {}))
        for i in range(200)
    ]
    elapsed: dict[bool, float] = {}
    async with open_simulator(api_key=KEY, profile="realistic") as sim:
        for adaptive in (False, True):
            limits = Limits(per_model={"deepseek-v3.2": 8}, max_concurrent=8, adaptive=adaptive)
            async with hs.open_client(
                api_key=KEY,
                base_url=sim.base_url,
                limits=limits,
                retry=hs.RetryPolicy(max_retries=0),
            ) as client:
                start = trio.current_time()
                results = await client.batch(requests)
                elapsed[adaptive] = trio.current_time() - start
                stats = client.statistics()
            assert sum(not r.ok for r in results) == 10
            assert stats.models["deepseek-v3.2"].effective_limit == 8
    assert elapsed[True] < 1.5 * elapsed[False]


async def test_retries_give_their_slot_back_while_backing_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = Limits(max_concurrent=1, per_model={"gpt-4.1": 1})
    finished: dict[str, float] = {}
    async with open_simulator(api_key=KEY, profile="fast") as sim:
        sim.inject_faults("status=500")  # the first request the server sees fails, retryably
        async with hs.open_client(api_key=KEY, base_url=sim.base_url, limits=limits) as client:

            async def one(name: str) -> None:
                completion = await client.chat(**_request("gpt-4.1", max_tokens=4))
                finished[name] = trio.current_time()
                assert completion.attempts == (2 if name == "a" else 1)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, "a")
                await trio.sleep(0.001)
                nursery.start_soon(one, "b")
            stats = client.statistics()
        assert sim.stats().max_concurrent["gpt-4.1"] == 1
    # b ran while a slept through its back-off (0.375-0.5 s), not after a.
    assert finished["b"] < 0.01 < finished["a"]
    assert (stats.total, stats.succeeded, stats.failed) == (3, 2, {"server": 1})


async def test_waiting_for_admission_respects_deadlines(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = Limits(max_concurrent=1)
    async with (
        open_simulator(api_key=KEY, profile="realistic") as sim,
        hs.open_client(api_key=KEY, base_url=sim.base_url, limits=limits) as client,
    ):
        async with client.stream_chat(**_request(max_tokens=500)) as holder:
            began = trio.current_time()
            # The caller's deadline.
            with trio.move_on_after(2) as scope:
                await client.chat(**_request())
            assert scope.cancelled_caught
            # The request's own, explicit total deadline covers the wait.
            with pytest.raises(hs.APITimeoutError, match="admission") as info:
                await client.chat(**_request(), timeouts=hs.Timeouts(total=3))
            assert info.value.deadline == "total"
            assert info.value.model == "deepseek-v3.2"
            assert info.value.attempt is None  # it never got to make an attempt
            assert trio.current_time() - began == pytest.approx(5, abs=0.01)
            stats = client.statistics()
            assert (stats.active, stats.waiting, stats.total) == (1, 0, 1)
            async for _ in holder:
                pass
        # The automatic total deadline (60 s for max_tokens=8) starts on admission: a request
        # queued longer than that behind the caller's own limits still runs.
        start = trio.current_time()

        async def hold() -> None:
            quiet = hs.Timeouts(idle=None)  # it holds its slot without reading for 90 s
            async with client.stream_chat(**_request(), timeouts=quiet) as stream:
                await trio.sleep(90)
                async for _ in stream:
                    pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold)
            await trio.sleep(0.001)
            completion = await client.chat(**_request(max_tokens=8))
        assert trio.current_time() - start > 90
        assert completion.usage is not None
        assert client.statistics().failed == {}  # waiting and giving up is not a failure
        assert client.statistics().succeeded == 3


async def test_a_stream_cut_short_counts_its_tokens_so_far(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(api_key=KEY, profile="realistic") as sim:
        async with hs.open_client(api_key=KEY, base_url=sim.base_url) as client:
            async with client.stream_chat(**_request("gpt-4.1", max_tokens=100)) as stream:
                received = 0
                async for chunk in stream:
                    received += chunk.has_output
                    if received == 5:
                        break
            stats = client.statistics()
        await trio.sleep(0.1)
        billed = sim.stats().completion_tokens["gpt-4.1"]
    assert stats.failed == {"cancelled": 1}
    assert 5 <= stats.completion_tokens <= billed < 100


async def test_statistics_through_the_client(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(api_key=KEY, profile="realistic") as sim:
        async with hs.open_client(api_key=KEY, base_url=sim.base_url, limits=Limits()) as client:
            requests = [_request(model, max_tokens=30) for model in ("gpt-4.1", "deepseek-v3.2")]
            results = await client.batch(requests * 10)
            stats = client.statistics()
        totals = sim.stats()
    assert all(r.ok for r in results)
    assert (stats.total, stats.succeeded, stats.failed_total) == (20, 20, 0)
    assert stats.latency.count == stats.time_to_first_token.count == 20
    for window in (stats.latency, stats.time_to_first_token):
        assert window.p50 is not None
        assert window.p95 is not None
        assert window.p99 is not None
        assert 0 < window.p50 <= window.p95 <= window.p99
    # The seed's priors: deepseek-v3.2 answers in ~0.22 s, gpt-4.1 in ~0.85 s.
    assert stats.time_to_first_token.p50 < stats.time_to_first_token.p99
    assert 0.1 < stats.time_to_first_token.p50 < 1.5
    assert stats.completion_tokens == sum(totals.completion_tokens.values())
    assert stats.prompt_tokens == sum(totals.prompt_tokens.values())
    assert stats.tokens_per_second > 0
    assert set(stats.models) == {"gpt-4.1", "deepseek-v3.2"}
    assert stats.models["gpt-4.1"].limit == 5
    assert (stats.active, stats.utilization) == (0, 0.0)


async def test_leaving_an_admission_twice_releases_its_slots_once() -> None:
    pool = Pool(Limits(max_concurrent=2, default_per_model=2))
    admitting = pool.admit("m")
    ticket = await admitting.__aenter__()
    ticket.report_success(prompt_tokens=1, completion_tokens=1, ttft=0.1, duration=0.2)
    await admitting.__aexit__(None, None, None)
    await admitting.__aexit__(None, None, None)
    stats = pool.statistics()
    assert stats.active == 0
    assert stats.models["m"].active == 0
    async with pool.admit("m"), pool.admit("m"):  # both slots are still there
        assert pool.statistics().active == 2
