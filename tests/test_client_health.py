# open_client(health=...) against the simulator: heartbeat, outages, the pending queue, failover.
from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import holysheep_trio as hs
from holysheep_trio.simulator import Simulator, open_simulator

if sys.version_info < (3, 11):  # pragma: no cover - trio depends on the backport there
    from exceptiongroup import ExceptionGroup

KEY = "sk-health-0123456789-secret"
MESSAGES = [{"role": "user", "content": "ping"}]


def config(**overrides: Any) -> hs.HealthConfig:
    values: dict[str, Any] = {"interval": 30.0, "timeout": 5.0, "rng": random.Random(7)}
    values.update(overrides)
    return hs.HealthConfig(**values)


def expected_delays(count: int, **overrides: Any) -> list[float]:
    """The backoff delays a fresh config with the same seed draws, in order."""
    twin = config(**overrides)
    return [twin.backoff(attempt) for attempt in range(1, count + 1)]


@pytest.fixture
async def sim(autojump_clock: MockClock) -> AsyncIterator[Simulator]:
    async with open_simulator(api_key=KEY, profile="fast") as simulator:
        yield simulator


def probes(sim: Simulator) -> int:
    return sim.stats().requests_by_endpoint.get("models", 0)


@contextlib.asynccontextmanager
async def recording(client: hs.Client) -> AsyncIterator[list[tuple[float, hs.HealthEvent]]]:
    """Every health event with the time it arrived, until the block ends."""
    assert client.health is not None
    events: list[tuple[float, hs.HealthEvent]] = []
    async with trio.open_nursery() as nursery, client.health.subscribe() as subscription:

        async def collect() -> None:
            async for event in subscription:
                events.append((trio.current_time(), event))

        nursery.start_soon(collect)
        yield events
        nursery.cancel_scope.cancel()


async def test_without_health_nothing_runs(autojump_clock: MockClock, sim: Simulator) -> None:
    await trio.sleep(0.1)  # the simulator's own tasks are all up
    before = trio.lowlevel.current_statistics().tasks_living
    async with hs.open_client(api_key=KEY, base_url=sim.base_url) as client:
        assert client.health is None
        assert trio.lowlevel.current_statistics().tasks_living == before
        await trio.sleep(100)
    assert probes(sim) == 0


async def test_heartbeat_outage_and_recovery(autojump_clock: MockClock, sim: Simulator) -> None:
    async with hs.open_client(api_key=KEY, base_url=sim.base_url, health=config()) as client:
        assert client.health is not None
        await client.health.wait_healthy()
        assert client.health.state is hs.HealthState.HEALTHY
        assert probes(sim) == 1
        start = trio.current_time()
        async with recording(client) as events:
            sim.set_models_fault("status=503")
            await trio.sleep(36.0)  # heartbeat at 30 fails; attempts at ~31 and ~33 fail
            sim.set_models_fault(None)
            await client.health.wait_healthy()
        delays = expected_delays(3)
        kinds = [type(event) for _, event in events]
        assert kinds == [hs.Reconnecting, hs.Reconnecting, hs.Reconnecting, hs.Reconnected]
        first = events[0][1]
        assert isinstance(first, hs.Reconnecting)
        assert events[0][0] - start == pytest.approx(30.0, abs=0.2)
        assert isinstance(first.error, hs.ServerError)
        for (_, event), delay, attempt in zip(events[:3], delays, (1, 2, 3), strict=True):
            assert isinstance(event, hs.Reconnecting)
            assert (event.attempt, event.delay) == (attempt, pytest.approx(delay))
        last = events[-1][1]
        assert isinstance(last, hs.Reconnected)
        assert last.attempts == 3
        assert events[-1][0] - start == pytest.approx(30.0 + sum(delays), abs=0.5)
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
        assert completion.text


class _Order:
    """A telemetry stand-in that records the order in which requests were admitted."""

    def __init__(self) -> None:
        self.admitted: list[str] = []

    def start_request(
        self, *, operation: str, model: str, request: Mapping[str, Any], now: float
    ) -> Any:
        name = request["messages"][0]["content"]
        order = self

        class Observer:
            def admitted(self, now: float) -> None:
                order.admitted.append(name)

            def attempt_failed(self, **kwargs: Any) -> None:
                pass

            def output(self, now: float) -> None:
                pass

            def finished(self, **kwargs: Any) -> None:
                pass

        return Observer()


async def test_requests_made_while_reconnecting_wait_and_go_out_in_order(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    order = _Order()
    async with hs.open_client(
        api_key=KEY, base_url=sim.base_url, health=config(), telemetry=order
    ) as client:
        assert client.health is not None
        await client.health.wait_healthy()
        sim.set_models_fault("status=503")
        await client.health.reconnect()  # a forced cycle: its probe fails -> reconnecting
        assert client.health.state is hs.HealthState.RECONNECTING
        done: list[str] = []
        async with trio.open_nursery() as nursery:
            for index in range(5):

                async def one(name: str) -> None:
                    await client.chat(
                        model="gpt-4.1",
                        messages=[{"role": "user", "content": name}],
                        max_tokens=2,
                    )
                    done.append(name)

                nursery.start_soon(one, f"r{index}")
                await trio.sleep(0.01)
            assert client.health.statistics().pending == 5
            assert sim.stats().requests["gpt-4.1"] == 0
            sim.set_models_fault(None)
        assert order.admitted == [f"r{index}" for index in range(5)]
        assert sorted(done) == order.admitted


async def test_the_pending_queue_is_bounded(autojump_clock: MockClock, sim: Simulator) -> None:
    async with hs.open_client(
        api_key=KEY, base_url=sim.base_url, health=config(max_pending=2)
    ) as client:
        assert client.health is not None
        await client.health.wait_healthy()
        sim.set_models_fault("status=503")
        await client.health.reconnect()
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(
                    lambda: client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
                )
            await trio.sleep(0.01)
            started = trio.current_time()
            with pytest.raises(hs.PendingQueueFullError):
                await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
            assert trio.current_time() - started < 0.01  # at once
            sim.set_models_fault(None)


async def test_a_request_held_keeps_its_own_deadline(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    async with hs.open_client(api_key=KEY, base_url=sim.base_url, health=config()) as client:
        assert client.health is not None
        await client.health.wait_healthy()
        sim.set_models_fault("status=503")
        await client.health.reconnect()
        with pytest.raises(hs.APITimeoutError) as info:
            await client.chat(
                model="gpt-4.1", messages=MESSAGES, max_tokens=2, timeouts=hs.Timeouts(total=2.0)
            )
        assert info.value.deadline == "total"
        with trio.move_on_after(1.0) as scope:
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
        assert scope.cancelled_caught
        assert client.health.statistics().pending == 0


async def test_lost_then_healed(autojump_clock: MockClock, sim: Simulator) -> None:
    async with hs.open_client(
        api_key=KEY, base_url=sim.base_url, health=config(max_attempts=2)
    ) as client:
        assert client.health is not None
        await client.health.wait_healthy()
        async with recording(client) as events:
            sim.set_models_fault("status=503")
            await client.health.reconnect()
            with pytest.raises(hs.ConnectionLostError) as info:
                await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
            assert client.health.state is hs.HealthState.LOST
            assert isinstance(info.value.__cause__, hs.ServerError)
            started = trio.current_time()
            with pytest.raises(hs.ConnectionLostError):  # new requests fail at once
                await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
            assert trio.current_time() - started < 0.01
            sim.set_models_fault(None)
            await client.health.wait_healthy()  # probing goes on at max_delay
        lost = [event for _, event in events if isinstance(event, hs.ConnectionLost)]
        assert len(lost) == 1
        assert lost[0].permanent
        assert isinstance(events[-1][1], hs.Reconnected)
        await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)


async def test_a_wrong_key_is_lost_at_once_without_retries(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    async with hs.open_client(
        api_key="sk-wrong-key-000000", base_url=sim.base_url, health=config()
    ) as client:
        assert client.health is not None
        with pytest.raises(hs.ConnectionLostError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
        assert client.health.state is hs.HealthState.LOST
        assert isinstance(info.value.__cause__, hs.AuthenticationError)
        assert client.health.statistics().probes == 1
        assert sim.stats().requests["gpt-4.1"] == 0


async def test_failover_to_a_backup_and_failback(autojump_clock: MockClock) -> None:
    async with (
        open_simulator(api_key=KEY, profile="fast") as primary,
        open_simulator(api_key=KEY, profile="fast") as backup,
        hs.open_client(
            api_key=KEY,
            base_url=primary.base_url,
            fallback_urls=[backup.base_url],
            health=config(),
        ) as client,
    ):
        assert client.health is not None
        await client.health.wait_healthy()
        async with recording(client) as events:
            primary.set_models_fault("status=503")
            await client.health.reconnect()
            await client.health.wait_healthy()
            assert client.health.active_url == backup.base_url
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
            assert backup.stats().requests["gpt-4.1"] == 1
            assert primary.stats().requests["gpt-4.1"] == 0
            primary.set_models_fault(None)
            await trio.sleep(31.0)  # the next heartbeat finds the primary again
            assert client.health.active_url == primary.base_url
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
            assert primary.stats().requests["gpt-4.1"] == 1
        reconnected = [e for _, e in events if isinstance(e, hs.Reconnected)]
        assert reconnected[0].url == backup.base_url
        assert [e.url for _, e in events if isinstance(e, hs.FailedBack)] == [primary.base_url]


async def test_a_stream_connection_failure_triggers_a_probe_at_once(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    async with hs.open_client(
        api_key=KEY,
        base_url=sim.base_url,
        health=config(),
        retry=hs.RetryPolicy(max_retries=0),
    ) as client:
        assert client.health is not None
        await client.health.wait_healthy()
        assert probes(sim) == 1
        with pytest.raises(hs.APIConnectionError):
            await client.chat(
                model="gpt-4.1",
                messages=MESSAGES,
                max_tokens=2,
                extra_headers={"X-Simulator-Fault": "reset"},
            )
        await trio.sleep(0.5)  # far less than the 30 s interval
        assert probes(sim) == 2


async def _serve_until(
    stop: trio.Event, *, task_status: trio.TaskStatus[Simulator] = trio.TASK_STATUS_IGNORED
) -> None:
    async with open_simulator(api_key=KEY, profile="fast") as simulator:
        task_status.started(simulator)
        await stop.wait()


async def test_a_real_network_flap(autojump_clock: MockClock) -> None:
    stop = trio.Event()
    async with trio.open_nursery() as servers:
        first: Simulator = await servers.start(_serve_until, stop)
        port = first.port
        async with hs.open_client(
            api_key=KEY, base_url=first.base_url, health=config(interval=5.0)
        ) as client:
            assert client.health is not None
            await client.health.wait_healthy()
            async with recording(client) as events:
                stop.set()  # the server goes away: connections refused
                await trio.sleep(6.0)
                assert client.health.state is hs.HealthState.RECONNECTING
                async with open_simulator(api_key=KEY, profile="fast", port=port) as again:
                    await client.health.wait_healthy()
                    completion = await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
                    assert completion.text
                    assert again.stats().requests["gpt-4.1"] == 1
            kinds = [type(event) for _, event in events]
            assert kinds[0] is hs.Reconnecting
            first_error = events[0][1]
            assert isinstance(first_error, hs.Reconnecting)
            assert isinstance(first_error.error, hs.APIConnectionError)
            assert kinds[-1] is hs.Reconnected


async def test_no_task_is_left_after_the_client_closes(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    await trio.sleep(0.1)  # the simulator's own tasks are all up
    before = trio.lowlevel.current_statistics().tasks_living
    ended = trio.Event()
    async with hs.open_client(api_key=KEY, base_url=sim.base_url, health=config()) as client:
        assert client.health is not None
        await client.health.wait_healthy()
        assert trio.lowlevel.current_statistics().tasks_living > before
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                assert client.health is not None
                async with client.health.subscribe() as events:
                    async for _ in events:
                        pass
                ended.set()

            nursery.start_soon(watch)
            await trio.sleep(0.01)
            await client.aclose()
    assert ended.is_set()  # the subscription ended quietly
    # The simulator notices the closed connections a moment later; nothing of ours is left.
    for _ in range(100):
        if trio.lowlevel.current_statistics().tasks_living == before:
            break
        await trio.sleep(0.01)
    assert trio.lowlevel.current_statistics().tasks_living == before


async def test_the_health_argument_is_checked() -> None:
    with pytest.raises(TypeError, match="HealthConfig"):
        async with hs.open_client(api_key=KEY, health={"interval": 1}):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_the_callers_exceptions_come_out_unchanged(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    group = ExceptionGroup("mine", [ValueError("inner")])
    with pytest.raises(ExceptionGroup) as info:
        async with hs.open_client(api_key=KEY, base_url=sim.base_url, health=config()):
            raise group
    assert info.value is group


async def test_a_held_request_goes_where_the_monitor_reconnected(
    autojump_clock: MockClock,
) -> None:
    async with (
        open_simulator(api_key=KEY, profile="fast") as primary,
        open_simulator(api_key=KEY, profile="fast") as backup,
        hs.open_client(
            api_key=KEY,
            base_url=primary.base_url,
            fallback_urls=[backup.base_url],
            health=config(),
        ) as client,
    ):
        assert client.health is not None
        await client.health.wait_healthy()
        primary.set_models_fault("status=503")
        backup.set_models_fault("status=503")
        await client.health.reconnect()  # every endpoint down: reconnecting
        assert client.health.state is hs.HealthState.RECONNECTING
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
            )
            await trio.sleep(0.01)
            assert client.health.statistics().pending == 1
            backup.set_models_fault(None)  # the backup comes back first
        assert client.health.active_url == backup.base_url
        assert backup.stats().requests["gpt-4.1"] == 1
        assert primary.stats().requests["gpt-4.1"] == 0
