# open_simulator(workers=N): processes on one port, summed stats, FIFO faults, clean shutdown.
"""These tests start real processes, so they run in real time: each is bounded by a deadline
and polls for what it waits on; none measures time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import pytest
import trio

from holysheep_trio.simulator import Simulator, SimulatorStats, _workers, open_simulator

API_KEY = "sk-test-workers"
AUTH = {"authorization": f"Bearer {API_KEY}"}
CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}], "stream": True}
DEADLINE = 60  # bounds a hang of a child process; nothing is timed against it

pytestmark = pytest.mark.skipif(not _workers.HAS_REUSEPORT, reason="needs SO_REUSEPORT")


@pytest.fixture
async def pool() -> AsyncIterator[Simulator]:
    with trio.fail_after(DEADLINE):
        async with open_simulator(api_key=API_KEY, profile="fast", workers=2) as sim:
            yield sim
            assert sim.stats().internal_errors == 0


def worker_pids(sim: Simulator) -> list[int]:
    return [worker.process.pid for worker in sim._pool.workers]  # type: ignore[attr-defined]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: its parent has not reaped it yet.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def poll(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(DEADLINE):
        while not predicate():  # noqa: ASYNC110 - the condition is another process's state
            await trio.sleep(0.02)


async def fresh_post(sim: Simulator, path: str, body: Any, **headers: str) -> httpx2.Response:
    """One request on a new connection, so the kernel picks a worker for it."""
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=DEADLINE) as http:
        return await http.post(path, json=body, headers=headers)


async def fresh_get(sim: Simulator, path: str) -> httpx2.Response:
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=DEADLINE) as http:
        return await http.get(path)


def test_combined_stats_add_up() -> None:
    one = SimulatorStats(requests={"a": 1}, max_concurrent={"a": 2}, connections_accepted=3)
    two = SimulatorStats(requests={"a": 4, "b": 1}, max_concurrent={"a": 1}, faults_served={"x": 1})
    total = SimulatorStats.combined([one, two])
    assert total.requests == {"a": 5, "b": 1}
    assert total.max_concurrent == {"a": 3}  # an upper bound
    assert total.connections_accepted == 3
    assert total.faults_served == {"x": 1}
    assert total.workers == 2
    assert SimulatorStats.combined([]).workers == 0
    assert SimulatorStats.from_json(total.to_json()) == total


async def test_workers_share_the_port_and_stats_add_up(pool: Simulator) -> None:
    assert pool.workers == 2
    assert "workers=2" in repr(pool)
    assert API_KEY not in repr(pool)
    answered_by = set()
    for _ in range(24):
        response = await fresh_post(pool, "/chat/completions", CHAT)
        assert response.status_code == 200
        answered_by.add(response.headers["x-simulator-worker"])
    assert answered_by == {"0", "1"}  # the kernel spread the connections
    stats = pool.stats()
    assert stats.workers == 2
    assert stats.requests["gpt-4.1"] == 24
    assert stats.connections_accepted == 24
    assert stats.completion_tokens["gpt-4.1"] == 24 * 64  # fast: 64-token replies
    over_http = SimulatorStats.from_json((await fresh_get(pool, "/simulator/stats")).json())
    assert over_http.workers == 2
    assert over_http.requests == stats.requests
    assert over_http.completion_tokens == stats.completion_tokens
    pool.reset_stats()
    assert sum(pool.stats().requests.values()) == 0


async def test_queued_faults_stay_fifo_across_workers(pool: Simulator) -> None:
    pool.inject_faults("status=503", "status=502", "", "status=429")
    pool.inject_faults("status=500", model="deepseek-v3.2")
    statuses = [(await fresh_post(pool, "/chat/completions", CHAT)).status_code for _ in range(5)]
    assert statuses == [503, 502, 200, 429, 200]
    deepseek = {**CHAT, "model": "deepseek-v3.2"}
    assert (await fresh_post(pool, "/chat/completions", deepseek)).status_code == 500
    assert (await fresh_post(pool, "/chat/completions", deepseek)).status_code == 200
    pool.inject_faults("status=503", "status=503")
    pool.clear_faults()
    assert (await fresh_post(pool, "/chat/completions", CHAT)).status_code == 200
    assert pool.stats().faults_served == {"status": 4}


async def test_the_models_fault_reaches_every_worker(pool: Simulator) -> None:
    pool.set_models_fault("status=503")
    assert [(await fresh_get(pool, "/models")).status_code for _ in range(8)] == [503] * 8
    pool.set_models_fault(None)
    assert [(await fresh_get(pool, "/models")).status_code for _ in range(8)] == [200] * 8


async def test_websocket_mode_and_its_faults_work_in_a_pool(pool: Simulator) -> None:
    from test_simulator_websocket import API_KEY as WS_KEY  # the tiny client lives there
    from test_simulator_websocket import Client, check_response

    assert WS_KEY != API_KEY
    pool.inject_faults("status=503", endpoint="websocket")
    answer = await Client.open(pool, key=API_KEY)
    assert not isinstance(answer, Client)
    assert answer.status == 503
    client = await Client.open(pool, key=API_KEY)
    assert isinstance(client, Client)
    await client.send(model="gpt-4.1", input="hi", stream_id="a")
    check_response(await client.until_terminal(), "a")
    await client.aclose()
    await poll(lambda: pool.stats().open_websockets == 0)
    stats = pool.stats()
    assert (stats.websocket_connections, stats.websocket_responses) == (1, 1)


async def test_leaving_stops_every_worker() -> None:
    with trio.fail_after(DEADLINE):
        async with open_simulator(api_key=API_KEY, profile="fast", workers=3) as sim:
            pids = worker_pids(sim)
            assert len(pids) == 3
            assert all(alive(pid) for pid in pids)
    assert not any(alive(pid) for pid in pids)


async def test_workers_exit_when_the_controller_is_killed() -> None:
    script = (
        "import sys, trio\n"
        "from holysheep_trio.simulator import open_simulator\n"
        "async def main():\n"
        "    async with open_simulator(profile='fast', workers=2) as sim:\n"
        "        pids = [w.process.pid for w in sim._pool.workers]\n"
        "        print(' '.join(map(str, pids)), flush=True)\n"
        "        await trio.sleep_forever()\n"
        "trio.run(main)\n"
    )
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", script], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(DEADLINE):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(4096)
                assert chunk, "the controller exited early"
                line += chunk
        pids = [int(pid) for pid in line.split()]
        assert all(alive(pid) for pid in pids)
        process.send_signal(signal.SIGKILL)  # no clean-up code runs in the controller
        await process.wait()
        # The workers see their standard input close and leave by themselves.
        await poll(lambda: not any(alive(pid) for pid in pids))
    finally:
        process.kill()
        await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


async def test_a_busy_port_is_an_os_error() -> None:
    with trio.fail_after(DEADLINE):
        async with open_simulator(api_key=API_KEY, profile="fast") as single:
            with pytest.raises(OSError, match="in use"):
                async with open_simulator(profile="fast", port=single.port, workers=2):
                    pass  # pragma: no cover
        async with open_simulator(api_key=API_KEY, profile="fast", workers=2) as first:
            with pytest.raises(OSError, match="in use"):
                async with open_simulator(profile="fast", port=first.port, workers=2):
                    pass  # pragma: no cover


async def test_no_reuseport_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_workers, "HAS_REUSEPORT", False)
    with pytest.raises(RuntimeError, match="SO_REUSEPORT"):
        async with open_simulator(workers=2):
            pass  # pragma: no cover
    async with open_simulator(profile="fast", workers=1) as sim:  # one process needs none
        assert sim.workers == 1


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
async def test_workers_must_be_a_whole_number(workers: Any) -> None:
    with pytest.raises(ValueError, match="workers"):
        async with open_simulator(workers=workers):
            pass  # pragma: no cover


async def test_a_pool_keeps_the_options() -> None:
    async with open_simulator(
        api_key=API_KEY,
        profile="fast",
        workers=2,
        capacity={"gpt-4.1": 1},
        reply_tokens=3,
        snapshots=False,
    ) as sim:
        body = {"model": "gpt-4.1", "input": "hi"}
        reply = (await fresh_post(sim, "/responses", body)).json()
        assert reply["model"] == "gpt-4.1"  # no snapshot name
        assert reply["usage"]["output_tokens"] == 3
        assert json.dumps(reply).count("output_text") >= 1
