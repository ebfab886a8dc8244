# Tests of the health monitor: the pure rules (sync) and the trio shell under virtual time.
from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable

import attrs
import pytest
import trio
import trio.testing

import holysheep_trio as hs
from holysheep_trio.health import (
    DEFAULT_SUBSCRIPTION_BUFFER,
    HealthMachine,
    HealthMonitor,
    is_connection_failure,
)

A = "https://primary.example/v1"
B = "https://backup.example/v1"

ErrorFactory = Callable[[], BaseException]


def refused() -> BaseException:
    return hs.APIConnectionError("network error (ConnectError): connection refused")


def unauthorized() -> BaseException:
    return hs.AuthenticationError("HTTP 401: invalid key", status=401)


def forbidden() -> BaseException:
    return hs.PermissionDeniedError("HTTP 403: no access", status=403)


class Endpoints:
    """Fake endpoints behind a probe: each URL is up, down (raising a fresh error) or hanging.

    Every probe takes ``latency`` seconds of virtual time; the test changes an endpoint's
    behaviour at chosen times with :meth:`at`.
    """

    def __init__(self, *urls: str, latency: float = 0.5) -> None:
        self.latency = latency
        self.failure: dict[str, ErrorFactory | None] = dict.fromkeys(urls)
        self.hanging: set[str] = set()
        self.calls: list[tuple[float, str]] = []
        self.running = 0

    async def __call__(self, url: str) -> None:
        self.calls.append((trio.current_time(), url))
        self.running += 1
        try:
            if url in self.hanging:
                await trio.sleep_forever()
            await trio.sleep(self.latency)
            failure = self.failure[url]
            if failure is not None:
                raise failure()
        finally:
            self.running -= 1

    def down(self, url: str, failure: ErrorFactory = refused) -> None:
        self.failure[url] = failure

    def up(self, url: str) -> None:
        self.failure[url] = None
        self.hanging.discard(url)

    def at(self, nursery: trio.Nursery, when: float, change: Callable[[], None]) -> None:
        async def later() -> None:
            await trio.sleep_until(when)
            change()

        nursery.start_soon(later)

    def times(self, url: str | None = None) -> list[float]:
        return [time for time, called in self.calls if url is None or called == url]


Log = list[tuple[float, hs.HealthEvent]]


async def record(nursery: trio.Nursery, monitor: HealthMonitor, *, buffer: int = 64) -> Log:
    """Subscribe in a task of ``nursery`` and log (time, event) pairs until the monitor stops."""
    log: Log = []

    async def reader(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with monitor.subscribe(buffer=buffer) as events:
            task_status.started()
            async for event in events:
                log.append((trio.current_time(), event))

    await nursery.start(reader)
    return log


def seeded_delays(seed: int, count: int, *, base: float = 1.0, cap: float = 30.0) -> list[float]:
    """The seed's backoff, stated independently: base * 2^(n-1) plus 0-30 %, capped at 30 s."""
    draws = random.Random(seed)
    delays = []
    for attempt in range(1, count + 1):
        exponential = base * 2 ** (attempt - 1)
        jitter = draws.random() * 0.3 * exponential
        delays.append(min(exponential + jitter, cap))
    return delays


def kinds(log: Log) -> list[str]:
    return [type(event).__name__ for _, event in log]


# --------------------------------------------------------------------------- configuration


def test_config_defaults_are_the_seeds() -> None:
    config = hs.HealthConfig()
    assert (config.interval, config.timeout) == (30.0, 5.0)
    assert (config.max_attempts, config.base_delay, config.max_delay) == (5, 1.0, 30.0)
    assert config.jitter == 0.3
    assert config.hold_requests is True
    assert config.max_pending == 1000
    assert config.rng is None


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("interval", 0, ValueError),
        ("interval", -1.0, ValueError),
        ("interval", math.nan, ValueError),
        ("interval", "30", TypeError),
        ("timeout", 0.0, ValueError),
        ("timeout", True, TypeError),
        ("max_attempts", 0, ValueError),
        ("max_attempts", 2.5, TypeError),
        ("base_delay", -0.1, ValueError),
        ("base_delay", math.inf, ValueError),
        ("max_delay", 0.0, ValueError),
        ("max_delay", math.inf, ValueError),
        ("jitter", 1.5, ValueError),
        ("jitter", -0.1, ValueError),
        ("max_pending", 0, ValueError),
        ("max_pending", None, TypeError),
        ("rng", 42, TypeError),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=field):
        hs.HealthConfig(**{field: value})  # type: ignore[arg-type]


def test_config_is_frozen_and_rng_is_not_part_of_equality() -> None:
    config = hs.HealthConfig(rng=random.Random(1))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.interval = 1.0  # type: ignore[misc]
    assert config == hs.HealthConfig(rng=random.Random(2)) == hs.HealthConfig()
    assert hash(config) == hash(hs.HealthConfig())
    assert "rng" not in repr(config)
    # Infinite interval and timeout are allowed: probe only on demand, no probe deadline.
    hs.HealthConfig(interval=math.inf, timeout=math.inf)


class _FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_backoff_is_the_seeds_rule() -> None:
    low = hs.HealthConfig(rng=_FixedRandom(0.0))
    high = hs.HealthConfig(rng=_FixedRandom(0.999999))
    assert [low.backoff(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert [round(high.backoff(n), 3) for n in range(1, 6)] == [1.3, 2.6, 5.2, 10.4, 20.8]
    # The cap applies to the sum, jitter included (seed: Math.min(exp + jitter, 30000)).
    capped = hs.HealthConfig(max_delay=20.0, rng=_FixedRandom(0.999999))
    assert capped.backoff(5) == 20.0
    # A seeded rng reproduces the same delays as the rule stated independently.
    seeded = hs.HealthConfig(rng=random.Random(7))
    assert [seeded.backoff(n) for n in range(1, 8)] == pytest.approx(seeded_delays(7, 7))


def test_backoff_edge_cases() -> None:
    config = hs.HealthConfig()
    assert config.backoff(10_000) == 30.0  # no OverflowError
    assert hs.HealthConfig(base_delay=0.0).backoff(3) == 0.0
    assert hs.HealthConfig(jitter=0.0).backoff(2) == 2.0
    with pytest.raises(ValueError, match="attempt"):
        config.backoff(0)


# --------------------------------------------------------------------------- values and errors


def test_events_are_frozen_values_with_scrubbed_urls() -> None:
    event = hs.Reconnected(attempts=2, url="https://user:hunter2secret@relay.example/v1")
    assert event.dropped == 0
    assert "hunter2secret" not in repr(event)
    assert event.url == "https://user:hunter2secret@relay.example/v1"  # the value is intact
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.attempts = 3  # type: ignore[misc]
    assert attrs.evolve(event, dropped=4).dropped == 4
    for cls in (hs.Connected, hs.Reconnecting, hs.Reconnected, hs.ConnectionLost, hs.FailedBack):
        assert issubclass(cls, hs.HealthEvent)
    assert hs.ConnectionLost(error=refused()).permanent is True


def test_state_is_a_str_enum() -> None:
    assert [state.value for state in hs.HealthState] == [
        "connecting",
        "healthy",
        "reconnecting",
        "lost",
    ]
    assert hs.HealthState.HEALTHY == "healthy"
    assert str(hs.HealthState.LOST) == "lost"


def test_error_tree_and_retry_policy() -> None:
    assert issubclass(hs.PendingQueueFullError, hs.HolySheepError)
    assert not issubclass(hs.PendingQueueFullError, hs.APIError)
    assert issubclass(hs.ConnectionLostError, hs.APIConnectionError)
    lost = hs.ConnectionLostError("lost")
    assert lost.kind == "network"
    # Retrying cannot help (the monitor heals the connection), nor can another endpoint.
    policy = hs.RetryPolicy()
    assert policy.next_delay(1, lost) is None
    assert policy.should_fall_over(lost) is False
    full = hs.PendingQueueFullError("full", max_pending=3)
    assert full.max_pending == 3
    assert policy.next_delay(1, full) is None
    timeout = hs.APITimeoutError("slow", deadline="heartbeat", seconds=5.0)
    assert "deadline=heartbeat" in str(timeout)


def test_is_connection_failure() -> None:
    assert is_connection_failure(refused())
    assert is_connection_failure(hs.APITimeoutError("x", deadline="connect"))
    assert is_connection_failure(ConnectionResetError())
    assert is_connection_failure(trio.BrokenResourceError())
    assert not is_connection_failure(hs.APITimeoutError("x", deadline="idle"))
    assert not is_connection_failure(hs.APITimeoutError("x", deadline="first_token"))
    assert not is_connection_failure(hs.RateLimitError("x", status=429))
    assert not is_connection_failure(hs.ServerError("x", status=500))
    assert not is_connection_failure(hs.ConnectionLostError("x"))
    assert not is_connection_failure(ValueError("bug"))
    interrupted = hs.StreamInterruptedError("cut", partial=hs.Completion(), kind="network")
    assert not is_connection_failure(interrupted)
    interrupted.__cause__ = refused()
    assert is_connection_failure(interrupted)


# --------------------------------------------------------------------------- the pure machine


def _drive(machine: HealthMachine, results: dict[str, BaseException | None]) -> list[object]:
    """One step of the machine with fixed probe results; returns its events."""
    events: list[object] = list(machine.begin_step())
    while (url := machine.next_probe()) is not None:
        events += machine.probe_finished(url, results[url])
    return events


def test_machine_counts_rounds_made_while_lost() -> None:
    config = hs.HealthConfig(max_attempts=2, jitter=0.0)
    machine = HealthMachine(config, [A])
    assert machine.wait_time() == 0.0
    assert _drive(machine, {A: None}) == [hs.Connected(url=A)]
    assert machine.wait_time() == 30.0
    error = refused()
    assert _drive(machine, {A: error}) == [hs.Reconnecting(attempt=1, delay=1.0, error=error)]
    assert machine.wait_time() == 1.0
    assert _drive(machine, {A: error}) == [hs.Reconnecting(attempt=2, delay=2.0, error=error)]
    assert _drive(machine, {A: error}) == [hs.ConnectionLost(error=error, permanent=True)]
    assert machine.state is hs.HealthState.LOST
    assert machine.wait_time() == 30.0  # max_delay
    assert _drive(machine, {A: error}) == []
    assert _drive(machine, {A: None}) == [hs.Reconnected(attempts=4, url=A)]
    assert machine.state is hs.HealthState.HEALTHY


def test_machine_round_success_beats_auth_and_auth_beats_other_errors() -> None:
    machine = HealthMachine(hs.HealthConfig(), [A, B])
    auth = unauthorized()
    assert _drive(machine, {A: auth, B: None}) == [hs.Connected(url=B)]
    assert machine.active_url == B
    # Heartbeat on the backup: B fails -> a cycle. The round then fails on both endpoints,
    # one with a refused key: that decides (no retries), whatever the order.
    down = refused()
    events = _drive(machine, {B: down})
    assert kinds([(0.0, event) for event in events]) == ["Reconnecting"]  # type: ignore[misc]
    assert _drive(machine, {A: auth, B: refused()}) == [hs.ConnectionLost(error=auth)]
    assert machine.last_error is auth


def test_machine_rejects_no_urls() -> None:
    with pytest.raises(hs.ConfigurationError):
        HealthMachine(hs.HealthConfig(), [])


def test_machine_takes_checks_while_healthy_and_defers_those_made_during_a_step() -> None:
    machine = HealthMachine(hs.HealthConfig(), [A])
    assert machine.request_check() is False  # connecting: ignored
    _drive(machine, {A: None})
    assert machine.wait_time() == 30.0
    assert machine.request_check() is True  # healthy, between steps: probe now
    assert machine.wait_time() == 0.0
    _drive(machine, {A: None})
    assert machine.wait_time() == 30.0
    machine.begin_step()
    # A heartbeat is under way: its probe may have begun before the failure, so another step
    # follows as soon as this one ends (the driver is not waiting: nothing to wake).
    assert machine.request_check() is False
    assert machine.next_probe() == A
    machine.probe_finished(A, None)
    assert machine.next_probe() is None
    assert machine.wait_time() == 0.0
    _drive(machine, {A: None})
    assert machine.wait_time() == 30.0  # one extra step, not more


def test_a_check_deferred_by_a_step_that_ended_in_an_outage_keeps_the_backoff() -> None:
    machine = HealthMachine(hs.HealthConfig(jitter=0.0), [A])
    _drive(machine, {A: None})
    machine.begin_step()
    assert machine.request_check() is False
    assert machine.next_probe() == A
    machine.probe_finished(A, refused())
    assert machine.next_probe() is None
    assert machine.state is hs.HealthState.RECONNECTING
    assert machine.wait_time() == 1.0  # the cycle's own delay, not an extra probe now


def test_a_failure_during_the_primarys_probe_is_checked_after_it() -> None:
    # On a backup, a heartbeat pings it, then tries the primary; a failure of the backup's
    # connection reported meanwhile must not wait for the next heartbeat.
    machine = HealthMachine(hs.HealthConfig(), [A, B])
    _drive(machine, {A: refused(), B: None})
    assert machine.active_url == B
    machine.begin_step()
    assert machine.next_probe() == B
    machine.probe_finished(B, None)
    assert machine.next_probe() == A  # the primary, for a fail-back
    assert machine.request_check() is False  # the backup's connection failed meanwhile
    machine.probe_finished(A, refused())
    assert machine.next_probe() is None
    assert machine.wait_time() == 0.0
    events = _drive(machine, {B: refused()})
    assert [type(event) for event in events] == [hs.Reconnecting]


# --------------------------------------------------------------------------- the monitor


async def test_exact_event_sequence_and_delays_with_seeded_jitter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = hs.HealthConfig(rng=random.Random(7))
    endpoints = Endpoints(A)
    d = seeded_delays(7, 5)
    t0 = trio.current_time()
    # A goes down at 40 s: the heartbeat of 61.0 (30 s after the one that ended at 31.0)
    # fails at 61.5; attempts probe after each delay (0.5 s each); A is back before the
    # third attempt, which succeeds.
    fail_at = t0 + 61.5
    attempt_starts = [fail_at + d[0]]
    attempt_starts.append(attempt_starts[0] + 0.5 + d[1])
    attempt_starts.append(attempt_starts[1] + 0.5 + d[2])
    async with (
        trio.open_nursery() as nursery,
        hs.open_health_monitor(config, probe=endpoints, urls=[A]) as monitor,
    ):
        log = await record(nursery, monitor)
        assert monitor.state is hs.HealthState.CONNECTING
        endpoints.at(nursery, t0 + 40.0, lambda: endpoints.down(A))
        endpoints.at(nursery, attempt_starts[2] - 0.1, lambda: endpoints.up(A))
        await monitor.wait_healthy()
        assert trio.current_time() == pytest.approx(t0 + 0.5)
        await trio.sleep_until(attempt_starts[2] + 0.5 + 100.0)
        assert monitor.state is hs.HealthState.HEALTHY

    times = [time - t0 for time, _ in log]
    events = [event for _, event in log]
    assert kinds(log) == [
        "Connected",
        "Reconnecting",
        "Reconnecting",
        "Reconnecting",
        "Reconnected",
    ]
    assert events[0] == hs.Connected(url=A)
    for attempt, event in enumerate(events[1:4], start=1):
        assert isinstance(event, hs.Reconnecting)
        assert event.attempt == attempt
        assert event.delay == pytest.approx(d[attempt - 1])
        assert isinstance(event.error, hs.APIConnectionError)
    assert events[4] == hs.Reconnected(attempts=3, url=A)
    expected_times = [0.5, 61.5, attempt_starts[0] + 0.5 - t0, attempt_starts[1] + 0.5 - t0]
    expected_times.append(attempt_starts[2] + 0.5 - t0)
    assert times == pytest.approx(expected_times)
    # Probes: start, heartbeats every 30 s after the previous ended, attempts, heartbeats again.
    probes = [time - t0 for time in endpoints.times()]
    after = attempt_starts[2] + 0.5 - t0
    attempts = [start - t0 for start in attempt_starts]
    heartbeats = [after + 30.0, after + 60.5, after + 91.0]
    assert probes == pytest.approx([0.0, 30.5, 61.0, *attempts, *heartbeats])


async def test_lost_after_max_attempts_then_probes_at_max_delay_and_heals(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = hs.HealthConfig(interval=10.0, max_attempts=3, jitter=0.0, max_delay=10.0)
    endpoints = Endpoints(A)
    t0 = trio.current_time()
    async with (
        trio.open_nursery() as nursery,
        hs.open_health_monitor(config, probe=endpoints, urls=[A]) as monitor,
    ):
        log = await record(nursery, monitor)
        endpoints.at(nursery, t0 + 5.0, lambda: endpoints.down(A))
        endpoints.at(nursery, t0 + 45.0, lambda: endpoints.up(A))
        await trio.sleep_until(t0 + 19.6)
        assert monitor.state is hs.HealthState.LOST
        await monitor.wait_healthy()
        assert trio.current_time() == pytest.approx(t0 + 51.0)

    # 0-0.5 connect; heartbeat 10.5-11 fails; attempts at 12 (1 s), 14.5 (2 s), 19 (4 s);
    # lost at 19.5; then a probe every max_delay: 29.5, 40, 50.5 (succeeds: 6 rounds).
    assert [time - t0 for time in endpoints.times()][:8] == pytest.approx(
        [0.0, 10.5, 12.0, 14.5, 19.0, 29.5, 40.0, 50.5]
    )
    assert kinds(log) == [
        "Connected",
        "Reconnecting",
        "Reconnecting",
        "Reconnecting",
        "ConnectionLost",
        "Reconnected",
    ]
    assert [event.delay for _, event in log if isinstance(event, hs.Reconnecting)] == [1, 2, 4]
    lost = log[4][1]
    assert isinstance(lost, hs.ConnectionLost)
    assert lost.permanent is True
    assert isinstance(lost.error, hs.APIConnectionError)
    assert log[4][0] - t0 == pytest.approx(19.5)
    assert log[5] == (pytest.approx(t0 + 51.0), hs.Reconnected(attempts=6, url=A))


@pytest.mark.parametrize("failure", [unauthorized, forbidden])
async def test_a_refused_key_is_permanent_at_once(
    autojump_clock: trio.testing.MockClock, failure: ErrorFactory
) -> None:
    config = hs.HealthConfig(interval=10.0, max_delay=20.0)
    endpoints = Endpoints(A)
    t0 = trio.current_time()
    async with (
        trio.open_nursery() as nursery,
        hs.open_health_monitor(config, probe=endpoints, urls=[A]) as monitor,
    ):
        log = await record(nursery, monitor)
        endpoints.at(nursery, t0 + 5.0, lambda: endpoints.down(A, failure))
        await trio.sleep_until(t0 + 11.1)
        assert monitor.state is hs.HealthState.LOST
        with pytest.raises(hs.ConnectionLostError) as caught:
            await monitor.wait_ready()
        assert isinstance(caught.value.__cause__, hs.AuthenticationError | hs.PermissionDeniedError)
        await trio.sleep_until(t0 + 60.0)

    assert kinds(log) == ["Connected", "ConnectionLost"]
    lost = log[1][1]
    assert isinstance(lost, hs.ConnectionLost)
    assert type(lost.error) is type(failure())
    assert lost.permanent is True
    # No retries: after the failed heartbeat (10.5-11) the next probes come every max_delay.
    assert [time - t0 for time in endpoints.times()] == pytest.approx([0.0, 10.5, 31.0, 51.5])


async def test_held_requests_go_out_in_arrival_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    endpoints = Endpoints(A, latency=4.0)
    released: list[tuple[float, str]] = []
    t0 = trio.current_time()
    async with hs.open_health_monitor(hs.HealthConfig(), probe=endpoints, urls=[A]) as monitor:

        async def request(name: str, then: str | None = None) -> None:
            await monitor.wait_ready()
            released.append((trio.current_time(), name))
            if then is not None:
                # Arrives while the queue drains: it must wait behind every earlier request.
                nursery.start_soon(request, then)

        async with trio.open_nursery() as nursery:
            for index in range(20):
                nursery.start_soon(request, f"r{index}", "late" if index == 0 else None)
                await trio.testing.wait_all_tasks_blocked()
                assert monitor.statistics().pending == index + 1
            assert monitor.state is hs.HealthState.CONNECTING

    assert [name for _, name in released] == [f"r{index}" for index in range(20)] + ["late"]
    assert {time - t0 for time, _ in released} == {4.0}
    assert monitor.statistics().pending == 0


async def test_the_healthy_fast_path_does_not_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    endpoints = Endpoints(A)
    async with hs.open_health_monitor(hs.HealthConfig(), probe=endpoints, urls=[A]) as monitor:
        await monitor.wait_healthy()
        with trio.testing.assert_no_checkpoints():
            for _ in range(100):
                await monitor.wait_ready()


async def test_pending_queue_bound(autojump_clock: trio.testing.MockClock) -> None:
    endpoints = Endpoints(A, latency=10.0)
    config = hs.HealthConfig(max_pending=3, timeout=30.0)
    t0 = trio.current_time()
    released: list[int] = []
    async with (
        hs.open_health_monitor(config, probe=endpoints, urls=[A]) as monitor,
        trio.open_nursery() as nursery,
    ):
        scopes = []
        for index in range(3):
            scope = trio.CancelScope()
            scopes.append(scope)

            async def request(index: int = index, scope: trio.CancelScope = scope) -> None:
                with scope:
                    await monitor.wait_ready()
                    released.append(index)

            nursery.start_soon(request)
            await trio.testing.wait_all_tasks_blocked()
        with (
            trio.testing.assert_no_checkpoints(),
            pytest.raises(hs.PendingQueueFullError) as caught,
        ):
            await monitor.wait_ready()
        assert caught.value.max_pending == 3
        assert trio.current_time() == t0
        # A cancelled waiter makes room for one more.
        scopes[1].cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert monitor.statistics().pending == 2

        async def last() -> None:
            await monitor.wait_ready()
            released.append(3)

        nursery.start_soon(last)
        await trio.testing.wait_all_tasks_blocked()
        assert monitor.statistics().pending == 3
    assert released == [0, 2, 3]


async def test_cancelled_and_timed_out_waiters_leave_the_queue_consistent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    endpoints = Endpoints(A, latency=10.0)
    released: list[str] = []
    timed_out: list[float] = []
    t0 = trio.current_time()
    config = hs.HealthConfig(timeout=30.0)
    async with (
        hs.open_health_monitor(config, probe=endpoints, urls=[A]) as monitor,
        trio.open_nursery() as nursery,
    ):

        async def request(name: str, deadline: float | None = None) -> None:
            try:
                with trio.fail_after(deadline if deadline is not None else math.inf):
                    await monitor.wait_ready()
            except trio.TooSlowError:
                timed_out.append(trio.current_time() - t0)
                return
            released.append(name)

        cancel_me = trio.CancelScope()

        async def cancelled() -> None:
            with cancel_me:
                await request("cancelled")

        for start in (
            lambda: request("a"),
            cancelled,
            lambda: request("slow", 3.0),
            lambda: request("b"),
            lambda: request("c"),
        ):
            nursery.start_soon(start)
            await trio.testing.wait_all_tasks_blocked()
        assert monitor.statistics().pending == 5
        cancel_me.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert monitor.statistics().pending == 4
        await trio.sleep_until(t0 + 4.0)
        assert timed_out == [3.0]
        assert monitor.statistics().pending == 3
    assert released == ["a", "b", "c"]


async def test_lost_fails_held_and_new_requests_with_the_last_probe_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = hs.HealthConfig(interval=10.0, max_attempts=2, jitter=0.0, max_delay=10.0)
    endpoints = Endpoints(A)
    t0 = trio.current_time()
    failures: list[tuple[float, BaseException]] = []
    async with (
        trio.open_nursery() as outer,
        hs.open_health_monitor(config, probe=endpoints, urls=[A]) as monitor,
    ):
        log = await record(outer, monitor)
        endpoints.at(outer, t0 + 5.0, lambda: endpoints.down(A))
        await trio.sleep_until(t0 + 11.1)  # the heartbeat failed at 11.0
        assert monitor.state is hs.HealthState.RECONNECTING

        async def request() -> None:
            try:
                await monitor.wait_ready()
            except hs.ConnectionLostError as error:
                failures.append((trio.current_time(), error))

        # (A deadline, so that a waiter that is never failed fails the test, not hangs it.)
        with trio.fail_after(100.0):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(request)
        # Attempts at 12 and 14.5, lost at 15: every held request failed at that moment.
        lost = log[-1][1]
        assert isinstance(lost, hs.ConnectionLost)
        assert [time - t0 for time, _ in failures] == pytest.approx([15.0] * 3)
        assert {id(error.__cause__) for _, error in failures} == {id(lost.error)}
        assert monitor.statistics().pending == 0
        # A new request fails at once, without waiting.
        with (
            trio.testing.assert_no_checkpoints(),
            pytest.raises(hs.ConnectionLostError) as caught,
        ):
            await monitor.wait_ready()
        assert caught.value.__cause__ is lost.error
        # After the next lost probe fails differently, the cause is that newer error.
        endpoints.down(A, lambda: hs.ServerError("HTTP 502", status=502))
        await trio.sleep_until(t0 + 25.6)
        with pytest.raises(hs.ConnectionLostError) as caught:
            await monitor.wait_ready()
        assert isinstance(caught.value.__cause__, hs.ServerError)
        assert monitor.statistics().last_error is caught.value.__cause__


async def test_without_hold_requests_nothing_waits_or_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = hs.HealthConfig(hold_requests=False, max_attempts=1, jitter=0.0)
    endpoints = Endpoints(A, latency=2.0)
    endpoints.down(A)
    t0 = trio.current_time()
    async with hs.open_health_monitor(config, probe=endpoints, urls=[A]) as monitor:
        assert monitor.state is hs.HealthState.CONNECTING
        with trio.testing.assert_no_checkpoints():
            await monitor.wait_ready()
        await trio.sleep_until(t0 + 2.5)
        assert monitor.state is hs.HealthState.RECONNECTING
        with trio.testing.assert_no_checkpoints():
            await monitor.wait_ready()
        await trio.sleep_until(t0 + 10.0)
        assert monitor.state is hs.HealthState.LOST
        with trio.testing.assert_no_checkpoints():
            await monitor.wait_ready()


async def test_failover_and_failback(autojump_clock: trio.testing.MockClock) -> None:
    config = hs.HealthConfig(rng=random.Random(3))
    delay = seeded_delays(3, 1)[0]
    endpoints = Endpoints(A, B)
    t0 = trio.current_time()
    async with (
        trio.open_nursery() as nursery,
        hs.open_health_monitor(config, probe=endpoints, urls=[A, B]) as monitor,
    ):
        log = await record(nursery, monitor)
        assert monitor.urls == (A, B)
        endpoints.at(nursery, t0 + 5.0, lambda: endpoints.down(A))
        endpoints.at(nursery, t0 + 100.0, lambda: endpoints.up(A))
        await trio.sleep_until(t0 + 31.0 + delay + 1.1)
        assert monitor.active_url == B
        assert monitor.state is hs.HealthState.HEALTHY
        await trio.sleep_until(t0 + 200.0)
        assert monitor.active_url == A

    # Heartbeat 30.5-31 fails; attempt 1 after `delay`: A fails, B answers -> Reconnected(B).
    switched = t0 + 31.0 + delay + 1.0
    assert kinds(log) == ["Connected", "Reconnecting", "Reconnected", "FailedBack"]
    assert log[2] == (pytest.approx(switched), hs.Reconnected(attempts=1, url=B))
    # While on B, each heartbeat probes B and then the primary; A is back at 100.
    expected = [
        (0.0, A),
        (30.5, A),
        (31.0 + delay, A),
        (31.5 + delay, B),
    ]
    start = switched - t0
    while True:
        beat = start + 30.0
        expected += [(beat, B), (beat + 0.5, A)]
        start = beat + 1.0
        if beat + 0.5 >= 100.0:
            break
    actual = [(time - t0, url) for time, url in endpoints.calls][: len(expected)]
    assert [url for _, url in actual] == [url for _, url in expected]
    assert [time for time, _ in actual] == pytest.approx([time for time, _ in expected])
    assert log[3] == (pytest.approx(t0 + start), hs.FailedBack(url=A))
    # Back on the primary: heartbeats probe A alone.
    assert [url for _, url in endpoints.calls[len(expected) :]] == [A] * (
        len(endpoints.calls) - len(expected)
    )


async def test_a_primary_down_at_start_connects_to_the_backup(
    autojump_clock: trio.testing.MockClock,
) -> None:
    endpoints = Endpoints(A, B)
    endpoints.down(A)
    async with (
        trio.open_nursery() as nursery,
        hs.open_health_monitor(hs.HealthConfig(), probe=endpoints, urls=[A, B]) as monitor,
    ):
        log = await record(nursery, monitor)
        await monitor.wait_healthy()
        assert monitor.active_url == B
    assert [event for _, event in log] == [hs.Connected(url=B)]


async def test_a_reported_connection_failure_probes_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    endpoints = Endpoints(A)
    t0 = trio.current_time()
    async with hs.open_health_monitor(hs.HealthConfig(), probe=endpoints, urls=[A]) as monitor:
        await monitor.wait_healthy()
        await trio.sleep_until(t0 + 2.0)
        # Not connection failures: no probe.
        monitor.report_failure(hs.RateLimitError("slow down", status=429))
        monitor.report_failure(hs.APITimeoutError("slow model", deadline="first_token"))
        await trio.sleep_until(t0 + 3.0)
        assert endpoints.times() == [t0]
        endpoints.down(A)
        monitor.report_failure(refused())
        monitor.report_failure(refused())  # a probe is already due: coalesced
        await trio.sleep_until(t0 + 3.6)
        assert [time - t0 for time in endpoints.times()] == [0.0, 3.0]
        assert monitor.state is hs.HealthState.RECONNECTING
        # During a cycle a report changes nothing: the attempt keeps its backoff.
        monitor.report_failure(refused())
        await trio.sleep_until(t0 + 4.0)
        assert [time - t0 for time in endpoints.times()] == [0.0, 3.0]


async def test_reconnect_forces_a_new_cycle(autojump_clock: trio.testing.MockClock) -> None:
    config = hs.HealthConfig(base_delay=10.0, max_delay=60.0, max_attempts=2, jitter=0.0)
    endpoints = Endpoints(A)
    t0 = trio.current_time()
    async with (
        trio.open_nursery() as nursery,
        hs.open_health_monitor(config, probe=endpoints, urls=[A]) as monitor,
    ):
        log = await record(nursery, monitor)
        await monitor.wait_healthy()
        # From healthy: an immediate round; reconnect() returns when it has finished.
        await trio.sleep_until(t0 + 3.0)
        await monitor.reconnect()
        assert trio.current_time() == pytest.approx(t0 + 3.5)
        await trio.testing.wait_all_tasks_blocked()  # the recorder has caught up
        assert [event for _, event in log[1:]] == [
            hs.Reconnecting(attempt=1, delay=0.0, error=None),
            hs.Reconnected(attempts=1, url=A),
        ]
        # During a backoff: the probe happens now instead of after the 10 s delay.
        endpoints.down(A)
        monitor.report_failure(refused())
        await trio.sleep_until(t0 + 5.0)  # probe 3.5-4.0 failed: attempt 1 in 10 s
        assert monitor.state is hs.HealthState.RECONNECTING
        endpoints.up(A)
        await monitor.reconnect()
        assert trio.current_time() == pytest.approx(t0 + 5.5)
        assert monitor.state is hs.HealthState.HEALTHY
        # From lost: a fresh cycle with all attempts (requests are held again meanwhile).
        endpoints.down(A)
        monitor.report_failure(refused())
        await trio.sleep_until(t0 + 40.0)  # 5.5-6 failed; attempts 16, 36.5: lost at 37
        assert monitor.state is hs.HealthState.LOST
        await monitor.reconnect()
        assert trio.current_time() == pytest.approx(t0 + 40.5)
        assert monitor.state is hs.HealthState.RECONNECTING
        await trio.testing.wait_all_tasks_blocked()
        assert log[-1][1] == hs.Reconnecting(attempt=2, delay=20.0, error=log[-1][1].error)  # type: ignore[attr-defined]
        assert log[-2][1] == hs.Reconnecting(attempt=1, delay=0.0, error=None)
    assert [time - t0 for time in endpoints.times()][:7] == pytest.approx(
        [0.0, 3.0, 3.5, 5.0, 5.5, 16.0, 36.5]
    )


async def test_a_slow_subscriber_gets_drop_counts_and_never_blocks_the_monitor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = hs.HealthConfig(max_attempts=3, jitter=0.0, max_delay=1000.0)
    endpoints = Endpoints(A)
    endpoints.down(A)
    t0 = trio.current_time()
    async with (
        trio.open_nursery() as nursery,
        hs.open_health_monitor(config, probe=endpoints, urls=[A]) as monitor,
    ):
        fast = await record(nursery, monitor)
        async with monitor.subscribe(buffer=2) as slow:
            # Connect fails at 0.5; attempts 1.5-2, 4-4.5, 8.5-9: 3 Reconnecting, 1 lost.
            await trio.sleep_until(t0 + 50.0)
            assert monitor.state is hs.HealthState.LOST
            got = [await anext(slow), await anext(slow)]
            endpoints.up(A)
            await monitor.reconnect()
            got += [await anext(slow), await anext(slow)]
    # The fast subscriber saw all six events in time, undisturbed by the slow one.
    assert kinds(fast) == ["Reconnecting"] * 3 + ["ConnectionLost", "Reconnecting", "Reconnected"]
    assert [time - t0 for time, _ in fast][:4] == pytest.approx([0.5, 2.0, 4.5, 9.0])
    # The slow one kept the last two of the first four; the first it read says two were lost.
    assert isinstance(got[0], hs.Reconnecting)
    assert got[0].attempt == 3
    assert got[0].dropped == 2
    assert isinstance(got[1], hs.ConnectionLost)
    assert got[1].dropped == 0
    # Having caught up, it lost nothing more.
    assert got[2:] == [
        hs.Reconnecting(attempt=1, delay=0.0, error=None),
        hs.Reconnected(attempts=1, url=A),
    ]


async def test_subscriptions_end_quietly_when_the_monitor_stops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    endpoints = Endpoints(A)
    ended: list[list[hs.HealthEvent]] = []
    reader_done = trio.Event()
    async with trio.open_nursery() as nursery:
        async with hs.open_health_monitor(hs.HealthConfig(), probe=endpoints, urls=[A]) as monitor:

            async def reader(
                *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
            ) -> None:
                seen: list[hs.HealthEvent] = []
                async with monitor.subscribe() as events:
                    task_status.started()
                    async for event in events:
                        seen.append(event)
                ended.append(seen)
                reader_done.set()

            await nursery.start(reader)
            await monitor.wait_healthy()
            assert monitor.statistics().subscribers == 1
            assert ended == []
        assert monitor.statistics().subscribers == 0
        with trio.fail_after(100.0):  # the reader ends by itself, without a cancellation
            await reader_done.wait()
    assert ended == [[hs.Connected(url=A)]]
    # Subscribing to a stopped monitor ends at once.
    async with monitor.subscribe() as events:
        assert [event async for event in events] == []
    with pytest.raises(ValueError, match="buffer"):
        monitor.subscribe(buffer=0)
    assert DEFAULT_SUBSCRIPTION_BUFFER >= 1


async def test_no_task_survives_the_block_and_waiters_learn_it_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    endpoints = Endpoints(A)
    endpoints.hanging.add(A)
    outcomes: list[str] = []
    t0 = trio.current_time()
    nurseries_before = list(trio.lowlevel.current_task().child_nurseries)
    async with trio.open_nursery() as nursery:
        async with hs.open_health_monitor(hs.HealthConfig(), probe=endpoints, urls=[A]) as monitor:

            async def request() -> None:
                try:
                    await monitor.wait_ready()
                except hs.ClientClosedError:
                    outcomes.append("request closed")

            async def healthy() -> None:
                try:
                    await monitor.wait_healthy()
                except hs.ClientClosedError:
                    outcomes.append("wait_healthy closed")

            nursery.start_soon(request)
            nursery.start_soon(healthy)
            await trio.sleep(1.0)
            assert endpoints.running == 1  # the first probe hangs (its timeout is 5 s)
        assert trio.current_time() == t0 + 1.0  # leaving did not wait for the probe
        assert endpoints.running == 0
        assert monitor.closed
        # The monitor's nursery is gone; only ours is left.
        assert trio.lowlevel.current_task().child_nurseries == [*nurseries_before, nursery]
    assert sorted(outcomes) == ["request closed", "wait_healthy closed"]
    calls = len(endpoints.calls)
    await trio.sleep(1000.0)
    assert len(endpoints.calls) == calls
    with pytest.raises(hs.ClientClosedError):
        await monitor.wait_ready()
    with pytest.raises(hs.ClientClosedError):
        await monitor.reconnect()
    monitor.report_failure(refused())  # harmless


async def test_a_probe_without_an_answer_times_out(autojump_clock: trio.testing.MockClock) -> None:
    config = hs.HealthConfig(timeout=5.0, jitter=0.0)
    endpoints = Endpoints(A)
    t0 = trio.current_time()
    async with (
        trio.open_nursery() as nursery,
        hs.open_health_monitor(config, probe=endpoints, urls=[A]) as monitor,
    ):
        log = await record(nursery, monitor)
        endpoints.at(nursery, t0 + 10.0, lambda: endpoints.hanging.add(A))
        await trio.sleep_until(t0 + 36.0)
    # The heartbeat at 30.5 got no answer; at 35.5 it failed with our heartbeat deadline.
    reconnecting = log[1]
    assert reconnecting[0] == pytest.approx(t0 + 35.5)
    error = reconnecting[1].error  # type: ignore[attr-defined]
    assert isinstance(error, hs.APITimeoutError)
    assert error.deadline == "heartbeat"
    assert error.seconds == 5.0


async def test_socket_errors_count_as_connection_failures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def probe(url: str) -> None:
        await trio.sleep(0.5)
        raise ConnectionResetError("reset by peer")

    async with (
        trio.open_nursery() as nursery,
        hs.open_health_monitor(hs.HealthConfig(), probe=probe, urls=[A]) as monitor,
    ):
        log = await record(nursery, monitor)
        await trio.sleep(1.0)
    event = log[0][1]
    assert isinstance(event, hs.Reconnecting)
    assert isinstance(event.error, hs.APIConnectionError)
    assert isinstance(event.error.__cause__, ConnectionResetError)


async def test_a_bug_in_the_probe_escapes_as_itself(autojump_clock: trio.testing.MockClock) -> None:
    async def probe(url: str) -> None:
        await trio.sleep(0.5)
        raise KeyError("bug")

    with pytest.raises(KeyError, match="bug"):
        async with hs.open_health_monitor(hs.HealthConfig(), probe=probe, urls=[A]):
            await trio.sleep(10.0)


async def test_an_error_in_the_block_passes_through(autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(ValueError, match="mine"):
        async with hs.open_health_monitor(hs.HealthConfig(), probe=Endpoints(A), urls=[A]):
            raise ValueError("mine")


async def test_bad_arguments() -> None:
    with pytest.raises(hs.ConfigurationError):
        async with hs.open_health_monitor(hs.HealthConfig(), probe=Endpoints(A), urls=[]):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="HealthConfig"):
        async with hs.open_health_monitor(
            {"interval": 1.0},  # type: ignore[arg-type]
            probe=Endpoints(A),
            urls=[A],
        ):
            pass  # pragma: no cover


async def test_one_log_line_per_state_change_without_credentials(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    secret_url = "https://user:hunter2secret@relay.example/v1"
    config = hs.HealthConfig(interval=10.0, max_attempts=2, jitter=0.0, max_delay=10.0)
    endpoints = Endpoints(secret_url)
    t0 = trio.current_time()
    caplog.set_level(logging.INFO, logger="holysheep_trio")
    async with (
        trio.open_nursery() as nursery,
        hs.open_health_monitor(config, probe=endpoints, urls=[secret_url]) as monitor,
    ):
        endpoints.at(nursery, t0 + 5.0, lambda: endpoints.down(secret_url))
        endpoints.at(nursery, t0 + 20.0, lambda: endpoints.up(secret_url))
        await trio.sleep_until(t0 + 40.0)
        assert monitor.state is hs.HealthState.HEALTHY
    records = [r for r in caplog.records if r.name == "holysheep_trio"]
    # connected; reconnecting (attempt 2 is no state change: not logged at INFO); lost;
    # reconnected.
    assert [r.levelno for r in records] == [
        logging.INFO,
        logging.INFO,
        logging.WARNING,
        logging.INFO,
    ]
    messages = [r.getMessage() for r in records]
    assert "connected" in messages[0]
    assert "reconnecting" in messages[1]
    assert "lost" in messages[2]
    assert "reconnected" in messages[3]
    assert all("hunter2secret" not in message for message in messages)
    assert "***@relay.example" in messages[0]


async def test_statistics_and_repr(autojump_clock: trio.testing.MockClock) -> None:
    endpoints = Endpoints(A)
    async with hs.open_health_monitor(hs.HealthConfig(), probe=endpoints, urls=[A]) as monitor:
        await trio.testing.wait_all_tasks_blocked()  # the first probe is under way
        stats = monitor.statistics()
        assert stats.state is hs.HealthState.CONNECTING
        assert (stats.probes, stats.failed_probes, stats.pending) == (1, 0, 0)
        await monitor.wait_healthy()
        endpoints.down(A)
        await trio.sleep(30.6)
        stats = monitor.statistics()
        assert (stats.probes, stats.failed_probes) == (2, 1)
        assert isinstance(stats.last_error, hs.APIConnectionError)
        assert stats.state is hs.HealthState.RECONNECTING
        assert "state=reconnecting" in repr(monitor)
        assert monitor.config == hs.HealthConfig()


async def test_reconnect_waiting_on_a_round_in_progress_learns_the_monitor_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    endpoints = Endpoints(A)
    outcome: list[str] = []
    with trio.fail_after(100.0):  # a reconnect() that is never woken fails the test
        async with (
            trio.open_nursery() as nursery,
            hs.open_health_monitor(
                hs.HealthConfig(timeout=60.0), probe=endpoints, urls=[A]
            ) as monitor,
        ):
            await monitor.wait_healthy()
            endpoints.hanging.add(A)

            async def force() -> None:
                try:
                    await monitor.reconnect()
                except hs.ClientClosedError:
                    outcome.append("closed")

            nursery.start_soon(force)
            await trio.sleep(1.0)  # the forced round's probe hangs
            assert monitor.state is hs.HealthState.RECONNECTING
    assert outcome == ["closed"]


async def test_concurrent_reconnects_share_one_forced_round(
    autojump_clock: trio.testing.MockClock,
) -> None:
    endpoints = Endpoints(A)
    returned: list[float] = []
    t0 = trio.current_time()
    async with hs.open_health_monitor(hs.HealthConfig(), probe=endpoints, urls=[A]) as monitor:
        await monitor.wait_healthy()
        await trio.sleep_until(t0 + 3.0)

        async def force() -> None:
            await monitor.reconnect()
            returned.append(trio.current_time() - t0)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(force)
    assert returned == pytest.approx([3.5] * 3)
    assert [time - t0 for time in endpoints.times()] == pytest.approx([0.0, 3.0])


async def test_aclose_stops_the_monitor_but_not_the_block(
    autojump_clock: trio.testing.MockClock,
) -> None:
    endpoints = Endpoints(A, latency=3.0)
    outcome: list[str] = []
    t0 = trio.current_time()
    async with hs.open_health_monitor(hs.HealthConfig(), probe=endpoints, urls=[A]) as monitor:
        async with trio.open_nursery() as nursery:

            async def request() -> None:
                try:
                    await monitor.wait_ready()
                except hs.ClientClosedError:
                    outcome.append("closed")

            nursery.start_soon(request)
            await trio.sleep(1.0)
            await monitor.aclose()
            await monitor.aclose()  # idempotent
        assert outcome == ["closed"]
        assert monitor.closed
        await trio.sleep(100.0)  # the block goes on; the monitor task does not
        assert endpoints.running == 0
        assert endpoints.times() == [t0]
