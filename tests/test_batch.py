# Tests of the batch and hedging engine: fakes under virtual time, then the real client.
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import holysheep_trio as hs
from holysheep_trio.batch import BatchResult, ChatRequest, _Lanes, open_batch, race, run_batch
from holysheep_trio.pool import Limits, Pool
from holysheep_trio.simulator import Simulator, open_simulator


class FakeError(Exception):
    """Stands in for HolySheepError: an expected, per-request failure."""


# --------------------------------------------------------------------------- ChatRequest


def test_chat_request_from_mapping_round_trips() -> None:
    kwargs = {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 50,
        "temperature": 0.2,
    }
    request = ChatRequest.from_mapping(kwargs)
    assert request.model == "gpt-4.1"
    assert request.messages == ({"role": "user", "content": "hi"},)
    assert request.max_tokens == 50
    assert request.params == {"temperature": 0.2}
    assert request.to_kwargs() == kwargs
    assert ChatRequest.coerce(request) is request
    assert ChatRequest.coerce(kwargs) == request
    assert request.estimated_tokens() == 1 + 4 + 50
    assert hash(request) == hash(ChatRequest.from_mapping(kwargs))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        request.model = "x"  # type: ignore[misc]


def test_chat_request_without_max_tokens_omits_it() -> None:
    request = ChatRequest(model="m", messages=[{"role": "user", "content": "x"}])
    assert "max_tokens" not in request.to_kwargs()


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ({"messages": []}, ValueError, "model"),
        ({"model": "m"}, ValueError, "messages"),
        ({}, ValueError, "model and messages"),
        ({"model": "", "messages": []}, TypeError, "model"),
        ({"model": 3, "messages": []}, TypeError, "model"),
        ({"model": "m", "messages": "hello"}, TypeError, "messages"),
        ({"model": "m", "messages": [], "max_tokens": 0}, ValueError, "max_tokens"),
        ({"model": "m", "messages": [], "max_tokens": "9"}, ValueError, "max_tokens"),
        (["model", "m"], TypeError, "mapping"),
    ],
)
def test_chat_request_rejects_bad_input(value: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ChatRequest.coerce(value)


# --------------------------------------------------------------------------- batches


class Recorder:
    """A fake run_one: sleeps per request, fails on some, tracks concurrency and cancellation."""

    def __init__(self, *, fail: Callable[[int], bool] = lambda i: False) -> None:
        self.fail = fail
        self.active = 0
        self.peak = 0
        self.started: list[int] = []
        self.cancelled: list[int] = []

    async def __call__(self, request: int) -> str:
        self.started.append(request)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            # Later requests finish sooner, so completion order differs from input order.
            await trio.sleep(1 + (request * 7) % 5)
        except trio.Cancelled:
            self.cancelled.append(request)
            raise
        finally:
            self.active -= 1
        if self.fail(request):
            raise FakeError(f"request {request} failed")
        return f"done {request}"


async def test_run_batch_keeps_input_order_and_settles_all(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run_one = Recorder(fail=lambda i: i % 4 == 1)
    results = await run_batch(run_one, range(40), max_in_flight=6, catch=FakeError)
    assert [r.index for r in results] == list(range(40))
    assert [r.request for r in results] == list(range(40))
    for r in results:
        if r.index % 4 == 1:
            assert not r.ok
            assert r.completion is None
            assert isinstance(r.error, FakeError)
            assert str(r.error) == f"request {r.index} failed"
        else:
            assert r.ok
            assert r.error is None
            assert r.completion == f"done {r.index}"
    assert run_one.peak == 6
    assert run_one.cancelled == []  # one failure never cancels the others


async def test_run_batch_of_nothing() -> None:
    assert await run_batch(Recorder(), [], max_in_flight=3) == []


@pytest.mark.parametrize(
    ("max_in_flight", "max_pending"), [(0, None), (1, -1), (True, None), (2, 1.5)]
)
async def test_open_batch_rejects_bad_bounds(max_in_flight: Any, max_pending: Any) -> None:
    with pytest.raises(ValueError, match="max_"):
        open_batch(Recorder(), range(3), max_in_flight=max_in_flight, max_pending=max_pending)


async def test_open_batch_yields_as_they_finish(autojump_clock: trio.testing.MockClock) -> None:
    received: list[tuple[int, float]] = []
    async with open_batch(Recorder(), range(5), max_in_flight=5) as results:
        async for result in results:
            received.append((result.index, trio.current_time()))
    # Durations 1 + (7 i mod 5): i=0 -> 1 s, 1 -> 3 s, 2 -> 5 s, 3 -> 2 s, 4 -> 4 s.
    assert received == [(0, 1.0), (3, 2.0), (1, 3.0), (4, 4.0), (2, 5.0)]


async def test_lazy_input_is_pulled_with_backpressure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pulled = 0
    consumed = 0
    worst = 0
    closed = False

    async def requests() -> AsyncIterator[int]:
        nonlocal pulled, closed
        try:
            for i in range(1_000_000):
                pulled += 1
                yield i
        finally:
            closed = True

    async def run_one(request: int) -> int:
        await trio.sleep(0.01)
        return request

    async with open_batch(run_one, requests(), max_in_flight=4, max_pending=3) as results:
        async for _ in results:
            consumed += 1
            worst = max(worst, pulled - consumed)
            await trio.sleep(1)  # a slow consumer
            if consumed == 50:
                break
    # Pulled but not yet received: at most max_in_flight + max_pending (+1 being delivered).
    assert worst <= 4 + 3 + 1
    assert pulled <= 50 + 4 + 3 + 1
    assert closed  # the caller's async generator was closed, not left to the GC


async def test_async_iterable_input_runs_to_the_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def requests() -> AsyncIterator[int]:
        for i in range(25):
            await trio.sleep(0.1)
            yield i

    results = await run_batch(Recorder(), requests(), max_in_flight=5)
    assert [r.completion for r in results] == [f"done {i}" for i in range(25)]


async def test_sync_iterable_input_is_pulled_lazily(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pulled: list[int] = []

    def requests() -> Any:
        for i in range(10_000):
            pulled.append(i)
            yield i

    async def run_one(request: int) -> int:
        await trio.sleep(1)
        return request

    async with open_batch(run_one, requests(), max_in_flight=2, max_pending=0) as results:
        first = await results.receive()
    assert first.index in (0, 1)
    assert len(pulled) <= 4


async def test_cancelling_a_batch_midway_releases_everything(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool = Pool(Limits(max_concurrent=5, per_model={"m": 5}))
    in_flight = 0
    cancelled = 0

    async def run_one(request: int) -> int:
        nonlocal in_flight, cancelled
        async with pool.admit("m", estimated_tokens=10) as admission:
            in_flight += 1
            try:
                await trio.sleep(10)
            except trio.Cancelled:
                cancelled += 1
                raise
            finally:
                in_flight -= 1
            admission.report_success(prompt_tokens=1, completion_tokens=1, ttft=1, duration=10)
        return request

    got: list[BatchResult[int, int]] = []
    with trio.move_on_after(25):
        async with open_batch(run_one, range(100), max_in_flight=8) as results:
            async for result in results:
                got.append(result)
    assert trio.current_time() == pytest.approx(25.0)  # prompt: nothing ran past the deadline
    assert len(got) == 10
    assert in_flight == 0
    assert cancelled == 5
    stats = pool.statistics()
    assert (stats.active, stats.waiting) == (0, 0)
    assert stats.failed == {"cancelled": 5}
    assert pool._global.borrowed_tokens == 0
    assert pool._models["m"].limiter.borrowed_tokens == 0


async def test_an_error_in_the_consumer_propagates_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run_one = Recorder()

    async def consume() -> None:
        async with open_batch(run_one, range(20), max_in_flight=3) as results:
            async for _ in results:
                raise KeyError("consumer")

    with pytest.raises(KeyError, match="consumer"):
        await consume()
    assert run_one.active == 0
    # Request 0 finished first (1 s); 3 had taken its slot; 1, 2, 3 were cancelled at once.
    assert sorted(run_one.cancelled) == [1, 2, 3]
    assert trio.current_time() == pytest.approx(1.0)


async def test_a_bug_in_run_one_cancels_the_batch_and_propagates_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run_one = Recorder(fail=lambda i: i == 3)
    with pytest.raises(FakeError, match="request 3"):
        # FakeError is not in `catch`: a bug, not a per-request failure.
        await run_batch(run_one, range(20), max_in_flight=4, catch=ValueError)
    assert run_one.active == 0
    assert run_one.cancelled  # the others in flight were cancelled
    assert max(run_one.started) < 10  # and nothing new started


async def test_a_failing_input_iterator_propagates(autojump_clock: trio.testing.MockClock) -> None:
    def requests() -> Any:
        yield 1
        yield 2
        raise RuntimeError("bad input")

    with pytest.raises(RuntimeError, match="bad input"):
        await run_batch(Recorder(), requests(), max_in_flight=2)


async def test_cancelled_errors_are_not_results(autojump_clock: trio.testing.MockClock) -> None:
    # A caller's deadline around the batch raises TooSlowError; nothing is swallowed.
    with pytest.raises(trio.TooSlowError), trio.fail_after(1.5):
        await run_batch(Recorder(), range(10), max_in_flight=2)


# --------------------------------------------------------------------------- keyed batches
# Requests are (model, n) pairs; key=model. A saturated model's requests must wait aside, not
# in the window.


def _model(request: tuple[str, int]) -> str:
    return request[0]


def test_lanes_park_a_saturated_key_and_start_oldest_first() -> None:
    limits = {"a": 1, "b": 2}
    lanes: _Lanes[str, str] = _Lanes(max_in_flight=3, max_parked=3, key_limit=limits.__getitem__)
    assert lanes.add(0, "a0", "a")
    assert not lanes.add(1, "a1", "a")  # a is at its limit: parked, no place taken
    assert lanes.add(2, "b2", "b")
    assert not lanes.add(3, "a3", "a")
    assert lanes.add(4, "b4", "b")
    assert (lanes.in_flight, lanes.parked) == (3, 2)
    assert not lanes.may_pull()  # every place taken
    assert lanes.next_startable() is None
    lanes.finish("b")  # a place, but not one a may use
    assert lanes.next_startable() is None
    assert lanes.may_pull()
    assert lanes.add(5, "b5", "b")  # b has room again: it starts, in the free place
    assert lanes.next_startable() is None  # every place taken
    lanes.finish("a")
    assert lanes.next_startable() == (1, "a1", "a")  # a's oldest first
    assert lanes.next_startable() is None  # a at its limit again
    limits["a"] = 0  # a limit below 1 counts as 1
    lanes.finish("a")
    assert lanes.next_startable() == (3, "a3", "a")
    for key in ("a", "b", "b"):
        lanes.finish(key)
    assert (lanes.in_flight, lanes.parked) == (0, 0)
    # Nothing is kept for idle keys.
    assert lanes._running == {}
    assert lanes._waiting == {}


def test_lanes_keep_input_order_per_key_even_when_the_key_has_room() -> None:
    limits = {"a": 1}
    lanes: _Lanes[str, str] = _Lanes(max_in_flight=4, max_parked=4, key_limit=limits.__getitem__)
    assert lanes.add(0, "a0", "a")
    assert not lanes.add(1, "a1", "a")
    limits["a"] = 3  # the limit grew (adaptive), but a1 waits: a2 must not overtake it
    assert not lanes.add(2, "a2", "a")
    assert lanes.next_startable() == (1, "a1", "a")
    assert lanes.next_startable() == (2, "a2", "a")
    assert lanes.next_startable() is None


def test_lanes_start_the_oldest_parked_request_across_keys() -> None:
    lanes: _Lanes[str, str] = _Lanes(max_in_flight=2, max_parked=4, key_limit=lambda key: 1)
    assert lanes.add(0, "a0", "a")
    assert lanes.add(1, "b1", "b")
    assert not lanes.add(2, "b2", "b")
    assert not lanes.add(3, "a3", "a")
    lanes.finish("a")
    lanes.finish("b")
    assert lanes.next_startable() == (2, "b2", "b")  # older than a3
    assert lanes.next_startable() == (3, "a3", "a")


async def test_keyed_batch_starts_other_keys_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Head-of-line blocking, with fakes and a real pool: 40 requests of a model limited to 2,
    # then 40 of another; 10 slots in all; a window of 20.
    pool = Pool(Limits(max_concurrent=10, per_model={"a": 2, "b": 10}))
    started: dict[str, list[tuple[int, float]]] = {"a": [], "b": []}

    async def run_one(request: tuple[str, int]) -> int:
        model, n = request
        async with pool.admit(model) as admission:
            started[model].append((n, trio.current_time()))
            await trio.sleep(1)
            admission.report_success(prompt_tokens=1, completion_tokens=1, ttft=0.1, duration=1)
        return n

    requests = [("a", n) for n in range(40)] + [("b", n) for n in range(40, 80)]
    results = await run_batch(
        run_one, requests, max_in_flight=20, key=_model, key_limit=pool.max_admitted
    )
    assert [r.index for r in results] == list(range(80))  # input order
    assert [r.completion for r in results] == list(range(80))
    assert started["b"][0][1] == 0.0  # b started at once ...
    assert [t for _, t in started["b"][:8]] == [0.0] * 8  # ... in every slot a left free
    assert [n for n, _ in started["a"]] == list(range(40))  # a in input order
    # a ran 2 at a time all along: 20 rounds of 1 s, not a second more.
    assert trio.current_time() == pytest.approx(20.0)

    # Without keys, the window fills with a's requests waiting for their model.
    started = {"a": [], "b": []}
    await run_batch(run_one, requests, max_in_flight=20)
    assert started["b"][0][1] >= 9.0


async def test_parking_is_bounded_and_pulling_stops_at_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A lazy input: one saturated key (1 at a time) for a long stretch, then other keys.
    pulled = 0
    received = 0
    worst = 0
    closed = False
    running: list[str] = []

    async def requests() -> AsyncIterator[tuple[str, int]]:
        nonlocal pulled, closed
        try:
            for n in range(1_000_000):
                pulled += 1
                yield ("a" if n < 100 else f"k{n % 7}", n)
        finally:
            closed = True

    async def run_one(request: tuple[str, int]) -> int:
        running.append(request[0])
        try:
            await trio.sleep(1)
        finally:
            running.remove(request[0])
        return request[1]

    async def probe() -> None:
        await trio.sleep(0.5)
        # 1 running, 5 parked; the 3 free places stay free: pulling stopped at the bound.
        assert (pulled, running) == (6, ["a"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        async with open_batch(
            run_one,
            requests(),
            max_in_flight=4,
            max_pending=2,
            key=_model,
            key_limit=lambda key: 1,
            max_parked=5,
        ) as results:
            async for result in results:
                received += 1
                worst = max(worst, pulled - received)
                if result.index == 150:
                    break
    assert worst <= 4 + 5 + 2 + 1  # in flight + parked + pending (+1 being delivered)
    assert closed
    assert running == []
    # a ran one at a time, and each a that finished made room for one more input.
    assert trio.current_time() >= 100


async def test_a_keyed_batch_ends_early_with_requests_parked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started: list[int] = []
    cancelled: list[int] = []

    async def run_one(request: tuple[str, int]) -> int:
        started.append(request[1])
        try:
            await trio.sleep(1 + request[1] % 3)
        except trio.Cancelled:
            cancelled.append(request[1])
            raise
        return request[1]

    requests = [("a", n) for n in range(10)] + [("b", n) for n in range(10, 20)]
    async with open_batch(
        run_one, requests, max_in_flight=6, key=_model, key_limit=lambda key: 2
    ) as results:
        async for _ in results:
            break  # at 1 s, with a's and b's parked
    assert trio.current_time() == pytest.approx(1.0)
    # Two of each key started; a2 may have taken a0's place before the consumer left; nothing
    # else parked ever started, and everything started but a0 was cancelled at once.
    assert {0, 1, 10, 11} <= set(started) <= {0, 1, 2, 10, 11}
    assert sorted(cancelled) == sorted(set(started) - {0})


@pytest.mark.parametrize("where", ["key", "key_limit", "run_one"])
async def test_a_bug_in_a_keyed_batch_propagates_alone(
    autojump_clock: trio.testing.MockClock, where: str
) -> None:
    started: list[int] = []

    def key(request: tuple[str, int]) -> str:
        if where == "key" and request[1] == 5:
            raise TypeError("bad request 5")
        return request[0]

    def key_limit(model: str) -> int:
        if where == "key_limit" and trio.current_time() >= 1:
            raise TypeError("bad limit")
        return 1

    async def run_one(request: tuple[str, int]) -> int:
        started.append(request[1])
        await trio.sleep(1)
        if where == "run_one" and request[1] == 0:
            raise TypeError("bug in run_one")
        return request[1]

    requests = [("a", n) for n in range(4)] + [("b", n) for n in range(4, 8)]
    with pytest.raises(TypeError, match=r"bad|bug"):
        await run_batch(
            run_one, requests, max_in_flight=3, catch=ValueError, key=key, key_limit=key_limit
        )
    assert max(started) < 5  # nothing parked started after the bug


async def test_stopping_a_keyed_batch_still_settles_what_was_parked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stop = False
    pulled = 0

    def requests() -> Any:
        nonlocal pulled
        for n in range(1000):
            pulled += 1
            yield ("a", n)

    async def run_one(request: tuple[str, int]) -> int:
        nonlocal stop
        await trio.sleep(1)
        stop = True  # e.g. the client was closed after the first request
        return request[1]

    results = await run_batch(
        run_one,
        requests(),
        max_in_flight=2,
        stop_when=lambda: stop,
        key=_model,
        key_limit=lambda key: 1,
        max_parked=3,
    )
    # 1 ran, 3 were parked when it stopped; every request pulled got its result, in order.
    assert pulled == 4
    assert [r.completion for r in results] == [0, 1, 2, 3]
    assert trio.current_time() == pytest.approx(4.0)


async def test_keys_whose_limit_is_never_reached_change_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Limits.unlimited(): every key's limit is far above the window.
    pool = Pool(Limits.unlimited())
    plain, keyed = Recorder(), Recorder()
    await run_batch(plain, range(30), max_in_flight=6)
    await run_batch(
        keyed, range(30), max_in_flight=6, key=lambda n: f"m{n % 3}", key_limit=pool.max_admitted
    )
    assert keyed.started == plain.started
    assert keyed.peak == plain.peak == 6


def test_keyed_batch_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="key and key_limit"):
        open_batch(Recorder(), range(3), max_in_flight=2, key=lambda n: n)
    with pytest.raises(TypeError, match="key and key_limit"):
        open_batch(Recorder(), range(3), max_in_flight=2, key_limit=lambda k: 1)
    with pytest.raises(ValueError, match="max_parked"):
        open_batch(Recorder(), range(3), max_in_flight=2, max_parked=0)


# --------------------------------------------------------------------------- race


class Candidate:
    """A fake stream: first token after ``ttft`` seconds, done ``rest`` seconds later."""

    def __init__(self, name: str, *, ttft: float, rest: float = 1.0, fail_before: bool = False):
        self.name = name
        self.ttft = ttft
        self.rest = rest
        self.fail_before = fail_before
        self.started_at: float | None = None
        self.cancelled_at: float | None = None
        self.tokens = 0

    async def __call__(self, first_token: Callable[[], None]) -> str:
        self.started_at = trio.current_time()
        try:
            await trio.sleep(self.ttft)
            if self.fail_before:
                raise FakeError(self.name)
            self.tokens += 1
            first_token()
            first_token()  # calling it again is harmless
            await trio.sleep(self.rest)
            self.tokens += 1
        except trio.Cancelled:
            self.cancelled_at = trio.current_time()
            raise
        return self.name


async def test_race_fast_first_candidate_never_hedges(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = Candidate("a", ttft=0.1), Candidate("b", ttft=0.1)
    assert await race([a, b], hedge_delay=0.25) == "a"
    assert b.started_at is None
    assert trio.current_time() == pytest.approx(1.1)


async def test_race_hedges_and_cancels_the_loser_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = Candidate("a", ttft=5.0), Candidate("b", ttft=0.5)
    assert await race([a, b], hedge_delay=0.25) == "b"
    assert b.started_at == pytest.approx(0.25)
    assert a.cancelled_at == pytest.approx(0.75)  # the moment b produced its first token
    assert trio.current_time() == pytest.approx(1.75)


async def test_race_first_token_wins_even_if_started_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = Candidate("a", ttft=1.0, rest=10.0)
    b = Candidate("b", ttft=2.0)
    c = Candidate("c", ttft=0.1)
    assert await race([a, b, c], hedge_delay=0.6) == "a"
    assert b.started_at == pytest.approx(0.6)
    assert b.cancelled_at == pytest.approx(1.0)
    assert c.started_at is None  # a's token came before the second hedge


async def test_race_failure_hedges_immediately(autojump_clock: trio.testing.MockClock) -> None:
    a = Candidate("a", ttft=0.1, fail_before=True)
    b = Candidate("b", ttft=0.1)
    assert await race([a, b], hedge_delay=10.0, catch=FakeError) == "b"
    assert b.started_at == pytest.approx(0.1)


async def test_race_all_fail_raises_the_first_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = Candidate("a", ttft=3.0, fail_before=True)
    b = Candidate("b", ttft=0.1, fail_before=True)
    with pytest.raises(FakeError, match="a"):
        await race([a, b], hedge_delay=1.0, catch=FakeError)


async def test_race_winner_error_after_first_token_propagates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def breaks(first_token: Callable[[], None]) -> str:
        first_token()
        await trio.sleep(1)
        raise FakeError("mid-stream")

    b = Candidate("b", ttft=0.0)
    with pytest.raises(FakeError, match="mid-stream"):
        await race([breaks, b.__call__], hedge_delay=0.5, catch=FakeError)
    assert b.started_at is None


async def test_race_returning_without_token_wins(autojump_clock: trio.testing.MockClock) -> None:
    async def empty(first_token: Callable[[], None]) -> str:
        await trio.sleep(0.1)
        return "empty"

    slow = Candidate("slow", ttft=5.0)
    assert await race([slow.__call__, empty], hedge_delay=0.1) == "empty"
    assert slow.cancelled_at == pytest.approx(0.2)


async def test_race_bug_propagates_and_cancels(autojump_clock: trio.testing.MockClock) -> None:
    async def buggy(first_token: Callable[[], None]) -> str:
        await trio.sleep(1)
        raise TypeError("bug")

    slow = Candidate("slow", ttft=5.0)
    with pytest.raises(TypeError, match="bug"):
        await race([slow.__call__, buggy], hedge_delay=0.1, catch=FakeError)
    assert slow.cancelled_at == pytest.approx(1.1)


async def test_race_losers_report_usage_so_far(autojump_clock: trio.testing.MockClock) -> None:
    # Wired like the client: each candidate holds a pool admission and reports on cancel.
    pool = Pool()

    def candidate(model: str, ttft: float) -> Callable[[Callable[[], None]], Any]:
        async def run(first_token: Callable[[], None]) -> str:
            async with pool.admit(model, estimated_tokens=100) as admission:
                start = trio.current_time()
                tokens = 0
                try:
                    await trio.sleep(ttft)
                    tokens += 1
                    first_token()
                    await trio.sleep(1)
                    tokens += 1
                except trio.Cancelled:
                    admission.report_failure(
                        kind="cancelled",
                        duration=trio.current_time() - start,
                        prompt_tokens=10,
                        completion_tokens=tokens,
                    )
                    raise
                admission.report_success(
                    prompt_tokens=10, completion_tokens=tokens, ttft=ttft, duration=1 + ttft
                )
                return model

        return run

    winner = await race(
        [candidate("slow-model", 3.0), candidate("fast-model", 0.5)], hedge_delay=0.25
    )
    assert winner == "fast-model"
    stats = pool.statistics()
    assert stats.failed == {"cancelled": 1}
    assert stats.succeeded == 1
    assert stats.prompt_tokens == 20
    assert stats.completion_tokens == 2
    assert stats.active == 0


@pytest.mark.parametrize("delay", [-1.0, float("nan")])
async def test_race_rejects_bad_arguments(delay: float) -> None:
    with pytest.raises(ValueError, match="hedge_delay"):
        await race([Candidate("a", ttft=0)], hedge_delay=delay)
    with pytest.raises(ValueError, match="candidate"):
        await race([], hedge_delay=1.0)


# --------------------------------------------------------------------------- with the simulator
# The client's public API (open_client(limits=...), client.batch, client.open_batch,
# client.race_chat, client.statistics()) over loopback, with the simulator's stats() as ground
# truth.

KEY = "sk-test-pool-0123456789"
MESSAGES = [{"role": "user", "content": "Tell me about trio."}]


async def _settled(sim: Simulator) -> None:
    # The server notices closed sockets asynchronously: poll in virtual time.
    for _ in range(500):
        if sim.stats().open_connections == 0 and not any(sim.stats().active.values()):
            return
        await trio.sleep(0.01)
    raise AssertionError(f"still open: {sim.stats()}")  # pragma: no cover


def _no_slot_held(client: hs.Client) -> None:
    stats = client.statistics()
    assert (stats.active, stats.waiting) == (0, 0)
    assert all(m.active == 0 and m.waiting == 0 for m in stats.models.values())
    assert client._pool._global.borrowed_tokens == 0
    assert all(s.limiter.borrowed_tokens == 0 for s in client._pool._models.values())


async def test_seed_scenario_through_client_batch(autojump_clock: trio.testing.MockClock) -> None:
    # The seed's scenario: 100 requests, every fifth on gpt-4.1 limited to 2, the rest on
    # deepseek-v3.2 limited to 8, global 10.
    limits = hs.Limits(max_concurrent=10, per_model={"gpt-4.1": 2, "deepseek-v3.2": 8})
    requests = [
        hs.ChatRequest(
            model="gpt-4.1" if i % 5 == 0 else "deepseek-v3.2", messages=MESSAGES, max_tokens=8
        )
        for i in range(100)
    ]
    async with open_simulator(api_key=KEY, profile="realistic", snapshots=False) as sim:
        async with hs.open_client(api_key=KEY, base_url=sim.base_url, limits=limits) as client:
            results = await client.batch(requests)
            _no_slot_held(client)
            ours = client.statistics()
        stats = sim.stats()
        assert all(r.ok for r in results)
        assert [r.index for r in results] == list(range(100))
        assert [r.request for r in results] == requests
        assert all(r.completion.model == r.request.model for r in results if r.completion)
        assert (stats.requests["gpt-4.1"], stats.requests["deepseek-v3.2"]) == (20, 80)
        # The limits are reached (the default max_in_flight keeps both models busy) and never
        # exceeded.
        assert stats.max_concurrent["gpt-4.1"] == 2
        assert stats.max_concurrent["deepseek-v3.2"] == 8
        assert stats.internal_errors == 0
        assert (ours.total, ours.succeeded, ours.failed_total, ours.active) == (100, 100, 0, 0)
        assert ours.completion_tokens == sum(stats.completion_tokens.values())
        assert ours.prompt_tokens == sum(stats.prompt_tokens.values())
        assert ours.models["gpt-4.1"].limit == 2
        await _settled(sim)


async def test_client_batch_all_settled_with_injected_faults(
    autojump_clock: trio.testing.MockClock,
) -> None:
    requests: list[Any] = [
        {"model": "gemini-2.5-flash", "messages": MESSAGES, "max_tokens": 4}
    ] * 12
    # A fault by header, carried in the request's params like any other chat() argument.
    requests[10] = hs.ChatRequest(
        model="gemini-2.5-flash",
        messages=MESSAGES,
        max_tokens=4,
        params={"extra_headers": {"X-Simulator-Fault": "status=404"}},
    )
    async with open_simulator(api_key=KEY, profile="fast") as sim:
        # The 2nd, 5th and 9th requests the server sees are refused with 400 (not retried).
        sim.inject_faults("", "status=400", "", "", "status=400", "", "", "", "status=400")
        async with hs.open_client(api_key=KEY, base_url=sim.base_url) as client:
            results = await client.batch(
                (request for request in requests),  # a lazy input
                max_in_flight=1,  # one at a time, so the server's order is the input order
            )
            stats = client.statistics()
        await _settled(sim)
    assert [r.index for r in results] == list(range(12))
    assert all(r.request is requests[r.index] for r in results)
    failed = [r.index for r in results if not r.ok]
    assert failed == [1, 4, 8, 10]
    assert [type(results[i].error) for i in failed] == [hs.BadRequestError] * 3 + [hs.NotFoundError]
    assert all(r.completion is None for r in results if not r.ok)
    assert all(r.completion is not None and r.completion.text for r in results if r.ok)
    assert stats.failed == {"invalid_request": 4}  # 404 is an invalid request too
    assert stats.succeeded == 8


async def test_client_batch_failures_never_cancel_the_others_concurrently(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def lazy() -> AsyncIterator[hs.ChatRequest]:
        for i in range(30):
            fault = {"X-Simulator-Fault": "status=400"} if i % 3 == 0 else {}
            yield hs.ChatRequest(
                model="deepseek-v3.2",
                messages=MESSAGES,
                max_tokens=6,
                params={"extra_headers": fault},
            )

    async with open_simulator(api_key=KEY, profile="realistic") as sim:
        async with hs.open_client(api_key=KEY, base_url=sim.base_url) as client:
            results = await client.batch(lazy(), max_in_flight=7)
        await _settled(sim)
        assert sim.stats().max_concurrent["deepseek-v3.2"] <= 7
    assert [r.ok for r in results] == [i % 3 != 0 for i in range(30)]


async def test_client_batch_rejects_bad_arguments() -> None:
    async with hs.open_client(api_key=KEY, base_url="http://127.0.0.1:9/v1") as client:
        with pytest.raises(ValueError, match="max_in_flight"):
            await client.batch([], max_in_flight=0)
        with pytest.raises(ValueError, match="max_pending"):
            client.open_batch([], max_pending=-1)
        assert await client.batch([]) == []
        # A malformed request is a bug in the input, not a result: it propagates, alone.
        with pytest.raises(ValueError, match="needs messages"):
            await client.batch([{"model": "gpt-4.1"}])
        with pytest.raises(TypeError, match="mapping or a ChatRequest"):
            await client.race_chat(["hello"])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="at least one"):
            await client.race_chat([])
        with pytest.raises(ValueError, match="hedge_delay"):
            await client.race_chat([{"model": "m", "messages": MESSAGES}], hedge_delay=-1)
        _no_slot_held(client)


async def test_cancelling_a_client_batch_midway_leaves_no_slot_and_no_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = hs.Limits(max_concurrent=6, per_model={"gpt-4.1": 6})
    requests = (
        hs.ChatRequest(model="gpt-4.1", messages=MESSAGES, max_tokens=30) for _ in range(1_000)
    )
    async with open_simulator(api_key=KEY, profile="realistic") as sim:
        async with hs.open_client(api_key=KEY, base_url=sim.base_url, limits=limits) as client:
            got = 0
            async with client.open_batch(requests, max_in_flight=8) as results:
                async for result in results:
                    assert result.ok
                    got += 1
                    if got == 10:
                        break
            _no_slot_held(client)
            stats = client.statistics()
            assert stats.failed.get("cancelled", 0) >= 1  # streams in flight were cut
            assert sim.stats().max_concurrent["gpt-4.1"] == 6
        await _settled(sim)
        assert sim.stats().open_connections == 0
        assert sim.stats().requests["gpt-4.1"] < 30  # the rest of the input was never sent


async def test_a_deadline_around_a_client_batch_leaves_no_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    requests = [{"model": "gpt-4.1", "messages": MESSAGES, "max_tokens": 50}] * 40
    async with open_simulator(api_key=KEY, profile="realistic") as sim:
        async with hs.open_client(api_key=KEY, base_url=sim.base_url, limits=hs.Limits()) as client:
            with trio.move_on_after(1.5) as scope:
                await client.batch(requests)
            assert scope.cancelled_caught
            assert trio.current_time() == pytest.approx(1.5, abs=0.01)
            _no_slot_held(client)
        await _settled(sim)
        assert sim.stats().max_concurrent["gpt-4.1"] == 5  # the seed's limits


async def test_race_chat_cancels_the_loser(autojump_clock: trio.testing.MockClock) -> None:
    slow = {"X-Simulator-Fault": "slow_headers=30"}
    async with open_simulator(api_key=KEY, profile="fast") as sim:
        async with hs.open_client(api_key=KEY, base_url=sim.base_url) as client:
            completion = await client.race_chat(
                [
                    {
                        "model": "gpt-4.1",
                        "messages": MESSAGES,
                        "max_tokens": 20,
                        "extra_headers": slow,
                    },
                    hs.ChatRequest(model="deepseek-v3.2", messages=MESSAGES, max_tokens=20),
                ],
                hedge_delay=0.25,
            )
            assert completion.model == "deepseek-v3.2"
            assert completion.text
            assert trio.current_time() < 1.0  # the loser was not waited for
            stats = client.statistics()
            assert stats.succeeded == 1
            assert stats.failed == {"cancelled": 1}
            _no_slot_held(client)
        await _settled(sim)
        requests = sim.stats().requests
        assert (requests["gpt-4.1"], requests["deepseek-v3.2"]) == (1, 1)


async def test_race_chat_counts_the_losers_usage_so_far(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # realistic: gpt-4.1 answers in ~0.85 s, deepseek-v3.2 in ~0.22 s. Both streams are under
    # way when deepseek's first token wins; gpt-4.1 is cut at once, mid-request.
    async with open_simulator(api_key=KEY, profile="realistic") as sim:
        async with hs.open_client(api_key=KEY, base_url=sim.base_url) as client:
            completion = await client.race_chat(
                [
                    {"model": "gpt-4.1", "messages": MESSAGES, "max_tokens": 40},
                    {"model": "deepseek-v3.2", "messages": MESSAGES, "max_tokens": 40},
                ],
                hedge_delay=0.1,
            )
            won_at = trio.current_time()
            stats = client.statistics()
        await _settled(sim)
        assert completion.model == "deepseek-v3.2"
        assert stats.failed == {"cancelled": 1}
        assert stats.total == 2
        # What the server billed, the loser included, is what the client counted.
        assert stats.completion_tokens == sum(sim.stats().completion_tokens.values())
        # The loser's prompt was billed too: without a usage chunk the client counts its
        # estimate, which for this prompt is what the server bills (4 characters a token).
        billed = sim.stats().prompt_tokens
        assert billed["gpt-4.1"] > 0
        assert stats.prompt_tokens == pytest.approx(sum(billed.values()), rel=0.25)
        assert stats.prompt_tokens > billed["deepseek-v3.2"]
        assert won_at < 0.1 + 0.35 + 40 / 30  # never waited for gpt-4.1's ~0.85 s + its tokens


async def test_race_chat_every_candidate_fails_raises_the_first_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def failing(status: int) -> dict[str, Any]:
        return {
            "model": "gpt-4.1",
            "messages": MESSAGES,
            "extra_headers": {"X-Simulator-Fault": f"status={status}"},
        }

    async with open_simulator(api_key=KEY, profile="fast") as sim:
        async with hs.open_client(api_key=KEY, base_url=sim.base_url) as client:
            with pytest.raises(hs.BadRequestError):  # one exception, not a group
                await client.race_chat([failing(400), failing(404)], hedge_delay=5.0)
            assert trio.current_time() < 1.0  # a failure hedges at once
            assert client.statistics().failed == {"invalid_request": 2}
            _no_slot_held(client)
        await _settled(sim)


async def test_default_client_batch_runs_a_bounded_number_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The default client has no limits; a batch must still bound what it starts, or a lazy
    # input of a million prompts would open a million sockets.
    pulled = 0

    async def lazy() -> AsyncIterator[dict[str, Any]]:
        nonlocal pulled
        for _ in range(250):
            pulled += 1
            yield {"model": "gpt-4.1", "messages": MESSAGES, "max_tokens": 2}

    consumed = 0
    async with open_simulator(api_key=KEY, profile="realistic") as sim:
        async with (
            hs.open_client(api_key=KEY, base_url=sim.base_url) as client,
            client.open_batch(lazy()) as results,
        ):
            async for result in results:
                assert result.ok
                consumed += 1
                # in flight + results waiting for us (+1 being pulled), never the whole input
                assert pulled - consumed <= 2 * 100 + 1
        assert sim.stats().max_concurrent["gpt-4.1"] == 100
        assert sim.stats().requests["gpt-4.1"] == 250


async def test_closing_the_client_ends_a_batch(autojump_clock: trio.testing.MockClock) -> None:
    # An endless lazy input: once the client is closed, every further request could only fail,
    # so the batch stops pulling and ends instead of settling the rest of the input as errors.
    async def endless() -> AsyncIterator[dict[str, Any]]:
        while True:
            yield {"model": "gpt-4.1", "messages": MESSAGES, "max_tokens": 2}

    results: list[BatchResult[Any, Any]] = []
    async with open_simulator(api_key=KEY, profile="fast") as sim:
        async with hs.open_client(api_key=KEY, base_url=sim.base_url) as client:
            with trio.fail_after(60):
                async with client.open_batch(endless(), max_in_flight=1) as stream:
                    async for result in stream:
                        results.append(result)
                        if len(results) == 3:
                            await client.aclose()
                        if len(results) > 50:  # the failure mode: errors forever
                            break
        await _settled(sim)
        assert sim.stats().open_connections == 0
    assert all(result.ok for result in results[:3])
    # what was in flight or already settled when the client closed, nothing more
    assert len(results) <= 3 + 2
    assert all(isinstance(r.error, hs.ClientClosedError) for r in results[3:])


async def test_a_saturated_model_does_not_hold_the_batch_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 40 requests for gpt-4.1 (2 at a time), then 40 for deepseek-v3.2, 10 in all: the default
    # window of 20 must not fill with gpt-4.1 requests waiting for their model while the global
    # slots sit idle; deepseek-v3.2 starts at once and the two models use all 10 slots.
    limits = hs.Limits(max_concurrent=10, per_model={"gpt-4.1": 2, "deepseek-v3.2": 10})
    requests = [
        hs.ChatRequest(model=model, messages=MESSAGES, max_tokens=8)
        for model in ["gpt-4.1"] * 40 + ["deepseek-v3.2"] * 40
    ]
    spans: dict[str, list[tuple[float, float]]] = {"gpt-4.1": [], "deepseek-v3.2": []}
    received: list[int] = []
    async with open_simulator(api_key=KEY, profile="realistic") as sim:
        async with (
            hs.open_client(api_key=KEY, base_url=sim.base_url, limits=limits) as client,
            client.open_batch(requests) as results,
        ):
            async for result in results:
                assert result.completion is not None, result.error
                # A completion's duration runs from its admission; we receive it at its end.
                now = trio.current_time()
                spans[result.request.model].append((now - result.completion.duration, now))
                received.append(result.index)
        stats = sim.stats()
        await _settled(sim)
    assert sorted(received) == list(range(80))
    assert min(start for start, _ in spans["deepseek-v3.2"]) < 0.01  # not after 19 s
    # The limits still hold: gpt-4.1 2 at a time; deepseek-v3.2 takes what gpt-4.1 leaves.
    assert stats.max_concurrent["gpt-4.1"] == 2
    assert stats.max_concurrent["deepseek-v3.2"] >= 8

    def peak(intervals: list[tuple[float, float]]) -> int:
        events = sorted(
            [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals]
        )
        running = best = 0
        for _, step in events:
            running += step
            best = max(best, running)
        return best

    assert peak(spans["gpt-4.1"] + spans["deepseek-v3.2"]) == 10  # every global slot used


async def test_client_batch_starts_the_second_model_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The same scenario through client.batch, watched from the pool's statistics.
    limits = hs.Limits(max_concurrent=10, per_model={"gpt-4.1": 2, "deepseek-v3.2": 10})
    requests = [
        {"model": model, "messages": MESSAGES, "max_tokens": 8}
        for model in ["gpt-4.1"] * 40 + ["deepseek-v3.2"] * 40
    ]
    samples: list[tuple[float, int, int]] = []  # (time, active in all, active deepseek-v3.2)
    async with open_simulator(api_key=KEY, profile="realistic") as sim:
        async with hs.open_client(api_key=KEY, base_url=sim.base_url, limits=limits) as client:

            async def watch() -> None:
                while True:
                    await trio.sleep(0.05)
                    stats = client.statistics()
                    deepseek = stats.models.get("deepseek-v3.2")
                    samples.append(
                        (trio.current_time(), stats.active, deepseek.active if deepseek else 0)
                    )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                results = await client.batch(requests)
                nursery.cancel_scope.cancel()
        await _settled(sim)
    assert [r.index for r in results] == list(range(80))
    assert all(r.ok and r.request is requests[r.index] for r in results)
    _, active, deepseek = samples[0]
    assert (active, deepseek) == (10, 8)  # at 0.05 s: both models running, no slot idle


async def test_closing_the_client_ends_a_batch_with_requests_waiting_aside(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # An endless input of a model limited to 1: one request runs, 4 x 20 wait aside. Closing
    # the client stops the pulling; what was pulled settles (as ClientClosedError) and the
    # batch ends.
    limits = hs.Limits(max_concurrent=10, per_model={"gpt-4.1": 1})

    async def endless() -> AsyncIterator[dict[str, Any]]:
        while True:
            yield {"model": "gpt-4.1", "messages": MESSAGES, "max_tokens": 2}

    results: list[BatchResult[Any, Any]] = []
    async with open_simulator(api_key=KEY, profile="fast") as sim:
        async with hs.open_client(api_key=KEY, base_url=sim.base_url, limits=limits) as client:
            with trio.fail_after(60):
                async with client.open_batch(endless()) as stream:
                    async for result in stream:
                        results.append(result)
                        if len(results) == 3:
                            await client.aclose()
            _no_slot_held(client)
        await _settled(sim)
        assert sim.stats().max_concurrent["gpt-4.1"] == 1
    assert all(result.ok for result in results[:3])
    assert 3 < len(results) <= 3 + 1 + 4 * 20  # in flight and waiting aside, nothing more
    assert all(isinstance(r.error, hs.ClientClosedError) for r in results[3:])
    assert sorted(r.index for r in results) == list(range(len(results)))
