# Benchmark: what sharing a budget and limits through Redis costs per request, and at scale.
"""The fleet's costs, measured against the one-process peers in the same run.

1. **Per request, sequential.** The work a budgeted, admitted request adds before it is sent
   (``pool.admit`` entered + ``budget.reserve``) and after it ends (``settle`` + leaving the
   admission), with the limits and the ledger in Redis on loopback (one Lua script each), against
   the local pool with a memory ledger and with an SQLite ledger. Medians of the per-request
   times of interleaved rounds, in µs; the target for Redis is below 1 ms before sending.
2. **Throughput of a shared limit.** Admissions per second (admit + release, 16 at a time per
   process) against one fleet-wide limit, from one process alone and from four processes at
   once (their sum), medians of a few rounds: what four workers gain, given that every
   admission is a round trip to the same Redis.

Starts its own ``redis-server`` (from PATH: ``apt-get install redis-server``) on a free
loopback port, without persistence.

Usage::

    .venv/bin/python benchmarks/bench_fleet.py [--quick]     # about 40 s; --quick about 15 s
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio

import holysheep_trio as hs
from holysheep_trio.pool import Pool

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4.1"
REQUEST = {"model": MODEL, "prompt_bound": 200, "max_output_tokens": 100, "expires_in": 60.0}
USAGE = hs.Usage(prompt_tokens=150, completion_tokens=80, total_tokens=230)
DONE = hs.AttemptBill(billable=True, completed=True, usage=USAGE, completion_tokens=80)


# --------------------------------------------------------------------------- redis-server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Redis:
    """A throw-away redis-server on a free loopback port."""

    def __init__(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            sys.exit("redis-server is not on PATH: apt-get install redis-server")
        self.directory = tempfile.mkdtemp(prefix="bench-redis-")
        self.port = _free_port()
        self.process = subprocess.Popen(
            [
                *(executable, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        sys.exit("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


# --------------------------------------------------------------------------- per request

Step = Callable[[], Awaitable[tuple[float, float]]]


@asynccontextmanager
async def setup(kind: str, redis_url: str, directory: str) -> AsyncIterator[Step]:
    """One request's budget and admission work, timed: (before sending, after)."""
    async with AsyncExitStack() as stack:
        if kind == "redis":
            store = await stack.enter_async_context(
                hs.open_limit_store(redis_url, key_prefix="bench")
            )
            ledger, options = redis_url, {"key_prefix": "bench"}
        else:
            store = None
            ledger = "memory://" if kind == "memory" else f"sqlite:///{directory}/usage.db"
            options = {}
        budget = await stack.enter_async_context(
            hs.open_budget(daily=10**5, ledger=ledger, **options)  # type: ignore[arg-type]
        )
        pool = Pool(hs.Limits(max_concurrent=64, per_model={}, default_per_model=64, store=store))

        async def step() -> tuple[float, float]:
            start = time.perf_counter()
            admit = pool.admit(MODEL, estimated_tokens=300)
            admission = await admit.__aenter__()
            reservation = await budget.reserve(**REQUEST)  # type: ignore[arg-type]
            sent = time.perf_counter()
            await reservation.settle(DONE)
            admission.report_success(prompt_tokens=150, completion_tokens=80, ttft=0, duration=0)
            await admit.__aexit__(None, None, None)
            return sent - start, time.perf_counter() - sent

        yield step


async def per_request_section(quick: bool, redis_url: str) -> None:
    rounds, requests = (5, 100) if quick else (11, 300)
    kinds = ["memory", "sqlite", "redis"]
    before: dict[str, list[float]] = {kind: [] for kind in kinds}
    after: dict[str, list[float]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as directory:
        async with AsyncExitStack() as stack:
            steps = {
                kind: await stack.enter_async_context(setup(kind, redis_url, directory))
                for kind in kinds
            }
            for _ in range(rounds):
                for kind in kinds:  # interleaved, so load on the machine hits all alike
                    for _ in range(requests):
                        first, second = await steps[kind]()
                        before[kind].append(first)
                        after[kind].append(second)
    print("## Per request, one at a time (medians, µs)")
    print(f"{'limits + ledger':<34}{'admit+reserve':>15}{'settle+release':>16}{'total':>10}")
    labels = {
        "memory": "local pool + memory://",
        "sqlite": "local pool + sqlite:///",
        "redis": "Redis limits + redis:// (loopback)",
    }
    for kind in kinds:
        first = statistics.median(before[kind]) * 1e6
        second = statistics.median(after[kind]) * 1e6
        total = statistics.median([a + b for a, b in zip(before[kind], after[kind], strict=True)])
        print(f"{labels[kind]:<34}{first:>15.0f}{second:>16.0f}{total * 1e6:>10.0f}")
    redis_before = statistics.median(before["redis"]) * 1e3
    verdict = "below" if redis_before < 1 else "ABOVE"
    print(f"Redis before sending: {redis_before:.3f} ms at the median ({verdict} the 1 ms target)")
    print()


# --------------------------------------------------------------------------- throughput

CHILD = """
import json, sys, time
import trio
import holysheep_trio as hs
from holysheep_trio.pool import Pool

URL, PREFIX, SECONDS, START = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])

async def main():
    async with hs.open_limit_store(URL, key_prefix=PREFIX) as store:
        limits = hs.Limits(max_concurrent=64, per_model={}, default_per_model=64,
                           rate={"gpt-4.1": hs.RateLimit(rpm=10**9)}, store=store)
        pool = Pool(limits)
        done = 0
        await trio.sleep(max(0.0, START - time.time()))  # all processes start together
        end = time.monotonic() + SECONDS

        async def worker():
            nonlocal done
            while time.monotonic() < end:
                async with pool.admit("gpt-4.1", estimated_tokens=10) as admission:
                    admission.report_success(prompt_tokens=5, completion_tokens=5, ttft=0,
                                             duration=0)
                done += 1

        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(worker)
    print(json.dumps({"per_second": done / SECONDS}))

trio.run(main)
"""


async def _processes(url: str, count: int, seconds: float, label: str) -> float:
    with tempfile.TemporaryDirectory() as directory:
        script = Path(directory) / "child.py"
        script.write_text(CHILD)
        start = time.time() + 1.5  # time for every interpreter to start
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        results: list[float] = []

        async def one() -> None:
            done = await trio.run_process(
                [sys.executable, str(script), url, label, str(seconds), str(start)],
                capture_stdout=True,
                env=env,
            )
            results.append(json.loads(done.stdout)["per_second"])

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
    return sum(results)


async def throughput_section(quick: bool, redis_url: str) -> None:
    rounds, seconds = (1, 2.0) if quick else (3, 3.0)
    alone: list[float] = []
    four: list[float] = []
    for index in range(rounds):
        alone.append(await _processes(redis_url, 1, seconds, f"alone-{index}"))
        four.append(await _processes(redis_url, 4, seconds, f"four-{index}"))
    one, many = statistics.median(alone), statistics.median(four)
    cores = os.cpu_count() or 1
    print(f"## One shared limit (RPM + caps in Redis), admissions per second ({cores} cores)")
    print(f"{'processes':<34}{'admissions/s':>15}")
    print(f"{'1 process alone':<34}{one:>15,.0f}")
    print(f"{'4 processes, one shared limit':<34}{many:>15,.0f}")
    print(f"ratio 4 processes / 1: {many / one:.2f}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds")
    args = parser.parse_args()
    redis = Redis()
    try:
        print(
            f"python {sys.version.split()[0]}, trio {trio.__version__}; redis-server on"
            f" 127.0.0.1 (loopback), started by this benchmark"
        )
        trio.run(per_request_section, args.quick, redis.url)
        trio.run(throughput_section, args.quick, redis.url)
    finally:
        redis.close()


if __name__ == "__main__":
    main()
