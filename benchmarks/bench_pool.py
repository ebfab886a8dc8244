# Benchmark: the pool's admission overhead per request, and open_batch's memory at 10k vs 100k.
"""What the pool costs, measured against peers in the same run.

1. **Admission cost.** An uncontended ``admit`` + ``report_success`` + exit, minus one bare
   checkpoint: the pool's own CPU per request.
2. **Overhead on a fake request.** A stream of 20 or 100 checkpoints, each decoding a small
   JSON chunk, runs bare and inside ``Pool.admit`` + ``report_success``: one at a time, 10 at a
   time, and with rate limits configured (so the FIFO gate and both token buckets are on the
   path, though never waiting). Medians of short interleaved rounds; overhead in µs per request
   and as a percentage of the request.
3. **Overhead on a real request** — the issue's check, "below 5 % of a ``fast``-profile
   stream": ``client.chat`` against the simulator (``fast`` profile, in a child process)
   through ``open_client(limits=...)``, against the same client with its admission step
   replaced by a no-op (no limiter, no buckets, no metrics), the same way; wall clock and this
   process's CPU time (the simulator's is not counted; other processes' load hardly moves
   it). Then the pool's own CPU per request on the client's path (estimate, admit, report,
   exit) as a share of a stream. Any two ``async () -> None`` work with
   :func:`measure_overhead`::

       async def pooled_one() -> None:
           await client.chat(model="deepseek-v3.2", messages=[...], max_tokens=32)

       await measure_overhead(bare_one, pooled_one, label="simulator fast",
                              requests=1000, concurrency=10)

4. **Constant memory.** ``client.open_batch`` over a lazy input of N real requests against the
   fast simulator (in its own child process), and the engine's ``open_batch`` over N fake
   requests (each through ``Pool.admit``); results consumed and dropped, in a fresh child
   process per run; peak RSS for N = 10,000 and N = 100,000, and the RSS right after the batch.
   The peer is the seed's approach (one task per request, all started at once:
   ``Promise.allSettled(requests.map(...))``), whose memory grows with N.

Usage::

    .venv/bin/python benchmarks/bench_pool.py [--quick]     # about 2 min; --quick about 30 s
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import trio

from holysheep_trio.batch import open_batch
from holysheep_trio.pool import Limits, Pool, RateLimit, estimate_tokens

RunOne = Callable[[], Awaitable[None]]
API_KEY = "sk-bench"


def fake_stream(chunks: int) -> RunOne:
    """A stand-in for one streamed request: ``chunks`` scheduler round-trips with some work."""

    async def run_one() -> None:
        text = []
        for i in range(chunks):
            await trio.lowlevel.checkpoint()
            # About what decoding one small JSON chunk costs in pure Python.
            text.append(json.loads(f'{{"choices":[{{"delta":{{"content":" tok{i}"}}}}]}}'))

    return run_one


def pooled(pool: Pool, run_one: RunOne, model: str) -> RunOne:
    """``run_one`` inside an admission, reporting its outcome like the client will."""

    async def run() -> None:
        async with pool.admit(model, estimated_tokens=64) as admission:
            start = trio.current_time()
            await run_one()
            admission.report_success(
                prompt_tokens=16,
                completion_tokens=48,
                ttft=0.001,
                duration=trio.current_time() - start,
            )

    return run


async def _throughput(run_one: RunOne, requests: int, concurrency: int) -> tuple[float, float]:
    """Wall and CPU seconds per request for ``requests`` calls run by ``concurrency`` tasks.

    CPU time is this process's only (a simulator runs in a child process): unlike the wall
    clock, other processes' load on a shared machine hardly moves it.
    """
    per_task = max(1, requests // concurrency)

    async def worker() -> None:
        for _ in range(per_task):
            await run_one()

    start = time.perf_counter()
    cpu_start = time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    count = per_task * concurrency
    return (time.perf_counter() - start) / count, (time.process_time() - cpu_start) / count


async def _interleaved(
    bare_one: RunOne, pooled_one: RunOne, requests: int, concurrency: int, rounds: int = 20
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(wall, CPU) seconds per request of many short rounds, bare and pooled alternating (ABBA).

    Short alternating rounds mean drift and noise on a shared machine hit both sides alike,
    and medians shrug off the bursts. Throughput, not per-request latency: with several tasks,
    a request's latency includes the other tasks' turns, which any extra checkpoint exposes.
    """
    bare: list[tuple[float, float]] = []
    admitted: list[tuple[float, float]] = []
    per_round = max(concurrency, requests // (2 * rounds))
    for index in range(rounds):
        pair = [(bare_one, bare), (pooled_one, admitted)]
        if index % 2:
            pair.reverse()
        for run, out in pair:
            out.append(await _throughput(run, per_round, concurrency))
    return bare, admitted


async def measure_overhead(
    bare_one: RunOne,
    pooled_one: RunOne,
    *,
    label: str,
    requests: int,
    concurrency: int,
) -> float:
    """Print median seconds per request bare vs through a pool, and the overhead.

    Args:
        bare_one: One request without admission (``async () -> None``).
        pooled_one: The same request through a pool (keep ``concurrency`` within its limits
            so nothing waits: this measures the admission's cost, not queueing).
        label: The row's name.
        requests: Requests in all (half bare, half pooled).
        concurrency: Tasks running requests at once.

    Returns:
        The bare median, seconds.
    """
    bare, admitted = await _interleaved(bare_one, pooled_one, requests, concurrency)
    bare_median = statistics.median(wall for wall, _ in bare)
    admitted_median = statistics.median(wall for wall, _ in admitted)
    overhead = admitted_median - bare_median
    bare_cpu = statistics.median(cpu for _, cpu in bare)
    cpu_overhead = statistics.median(cpu for _, cpu in admitted) - bare_cpu
    print(
        f"{label:<34} {concurrency:>4} {bare_median * 1e6:>10.1f} {admitted_median * 1e6:>10.1f}"
        f" {overhead * 1e6:>10.1f} {overhead / bare_median * 100:>9.1f} %"
        f" {bare_cpu * 1e6:>9.1f} {cpu_overhead * 1e6:>9.1f}"
        f" {cpu_overhead / bare_cpu * 100:>7.1f} %"
    )
    return bare_median


async def admission_cost(requests: int = 20_000, rounds: int = 5) -> float:
    """Median seconds of one uncontended ``admit`` + ``report_success`` + exit, minus a bare
    checkpoint (the one scheduler round trip any trio call costs): the pool's own CPU cost.
    """
    costs: list[float] = []
    for _ in range(rounds):
        pool = Pool(Limits())
        start = time.perf_counter()
        for _ in range(requests):
            await trio.lowlevel.checkpoint()
        bare = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(requests):
            async with pool.admit("deepseek-v3.2", estimated_tokens=64) as admission:
                admission.report_success(
                    prompt_tokens=16, completion_tokens=48, ttft=0.001, duration=0.01
                )
        costs.append((time.perf_counter() - start - bare) / requests)
    return statistics.median(costs)


async def client_admission_cost(requests: int = 20_000, rounds: int = 5) -> float:
    """Like :func:`admission_cost`, but the pool work exactly as ``ChatStream`` does it per
    request: the token estimate, ``admit`` entered and left by hand (the exit shielded), and
    ``report_attempt`` with the outcome. CPU time, so other processes' load hardly moves it.
    """
    messages = [{"role": "user", "content": "Hello!"}]
    costs: list[float] = []
    for _ in range(rounds):
        pool = Pool(Limits())
        start = time.process_time()
        for _ in range(requests):
            await trio.lowlevel.checkpoint()
        bare = time.process_time() - start
        start = time.process_time()
        for _ in range(requests):
            admission = pool.admit(
                "deepseek-v3.2", estimated_tokens=estimate_tokens(messages, max_tokens=16)
            )
            ticket = await admission.__aenter__()
            ticket.report_attempt(
                error=None,
                completed=True,
                prompt_tokens=8,
                completion_tokens=16,
                ttft=0.001,
                duration=0.002,
            )
            with trio.CancelScope(shield=True):
                await admission.__aexit__(None, None, None)
        costs.append((time.process_time() - start - bare) / requests)
    return statistics.median(costs)


async def overhead_section(quick: bool) -> None:
    requests = 2_000 if quick else 10_000
    plain = Limits(max_concurrent=10, per_model={"deepseek-v3.2": 10})
    rated = Limits(
        max_concurrent=10,
        per_model={"deepseek-v3.2": 10},
        rate={"deepseek-v3.2": RateLimit(rpm=10**9, tpm=10**12)},
    )
    cost = await admission_cost(5_000 if quick else 20_000)
    print(f"## Admission cost, uncontended, beyond one checkpoint: {cost * 1e6:.1f} µs")
    print()
    print("## Admission overhead per request (medians of interleaved rounds, µs)")
    print(
        f"{'workload':<34} {'conc':>4} {'bare':>10} {'pooled':>10} {'overhead':>10}"
        f" {'overhead':>11} {'cpu bare':>9} {'cpu ovh':>9} {'cpu ovh':>9}"
    )
    for chunks in (20, 100):
        stream = fake_stream(chunks)
        for concurrency in (1, 10):
            await measure_overhead(
                stream,
                pooled(Pool(plain), stream, "deepseek-v3.2"),
                label=f"fake stream, {chunks} chunks",
                requests=requests,
                concurrency=concurrency,
            )
        await measure_overhead(
            stream,
            pooled(Pool(rated), stream, "deepseek-v3.2"),
            label=f"fake stream, {chunks} chunks, rpm+tpm",
            requests=requests,
            concurrency=10,
        )


# --- against the simulator: a real fast-profile stream over loopback ---------------------------


@contextlib.asynccontextmanager
async def fast_simulator() -> AsyncIterator[str]:
    """``holysheep-trio serve --profile fast`` in a child process; yields its base URL."""
    command = [sys.executable, "-m", "holysheep_trio", "serve", "--port", "0"]
    command += ["--profile", "fast", "--api-key", API_KEY]
    server = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert server.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            chunk = await server.stdout.receive_some(1)
            if not chunk:
                raise RuntimeError("the simulator exited before printing its URL")
            line += chunk
        yield line.decode().strip()
    finally:
        server.terminate()
        with trio.CancelScope(shield=True):
            await server.wait()
            if server.stdout is not None:
                await server.stdout.aclose()


def _no_admission(**_: object) -> contextlib.nullcontext[None]:
    return contextlib.nullcontext()


async def simulator_section(quick: bool) -> None:
    """The issue's check: admission overhead as a share of a ``fast``-profile stream.

    The simulator runs in a child process (its CPU is not counted). "pooled" is
    ``open_client(limits=...)``; "bare" is a second client whose admission step is replaced by
    a no-op, so the difference is exactly what the pool adds to a request: admission, the
    token estimate, the reports and the statistics.
    """
    from holysheep_trio.client import Client, open_client

    print()
    print(
        "## Against the simulator (fast profile, child process), µs per request;"
        " cpu: this process's CPU time"
    )
    print(
        f"{'workload':<34} {'conc':>4} {'bare':>10} {'pooled':>10} {'overhead':>10}"
        f" {'overhead':>11} {'cpu bare':>9} {'cpu ovh':>9} {'cpu ovh':>9}"
    )
    limits = Limits(max_concurrent=10, per_model={"deepseek-v3.2": 10})
    bare_medians: list[float] = []
    async with (
        fast_simulator() as base_url,
        open_client(api_key=API_KEY, base_url=base_url, limits=limits) as client,
        open_client(api_key=API_KEY, base_url=base_url) as bare_client,
    ):
        # No admission at all: what a request cost before the pool was wired in.
        bare_client._admit = _no_admission  # type: ignore[method-assign]
        for max_tokens in (16, 64):

            def chat(target: Client, max_tokens: int = max_tokens) -> RunOne:
                async def run_one() -> None:
                    await target.chat(
                        model="deepseek-v3.2",
                        messages=[{"role": "user", "content": "Hello!"}],
                        max_tokens=max_tokens,
                    )

                return run_one

            for concurrency in (1, 10):
                bare = await measure_overhead(
                    chat(bare_client),
                    chat(client),
                    label=f"simulator fast, max_tokens={max_tokens}",
                    requests=200 if quick else 1_000,
                    concurrency=concurrency,
                )
                bare_medians.append(bare)
        assert client.statistics().succeeded > 0
        assert bare_client.statistics().total == 0
    # Wall-clock differences of ~1 ms requests are within a shared machine's noise; the
    # pool's own CPU cost on the client's path, as a share of the stream, is the stable figure.
    cost = await client_admission_cost()
    print(
        f"pool work per request on the client's path: {cost * 1e6:.1f} µs of CPU ="
        f" {cost / max(bare_medians) * 100:.2f} % .. {cost / min(bare_medians) * 100:.2f} %"
        " of a fast-profile stream (target: below 5 %)"
    )


# --- memory: one child process per measurement --------------------------------------------------


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mib() -> float:
    """The resident set size now (Linux ``/proc``; the peak where that is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return _peak_rss_mib()
    return pages * resource.getpagesize() / 2**20


async def _lazy(n: int, **params: object) -> AsyncIterator[dict[str, object]]:
    for i in range(n):
        messages = [{"role": "user", "content": f"prompt {i}"}]
        yield {"model": "deepseek-v3.2", "messages": messages, **params}


async def _memory_child(kind: str, n: int) -> dict[str, float]:
    pool = Pool(Limits(max_concurrent=10))
    stream = fake_stream(5)

    async def run_one(request: dict[str, object]) -> str:
        await pooled(pool, stream, "deepseek-v3.2")()
        return "x" * 200  # a small completion

    gc.collect()
    before = _peak_rss_mib()
    start = time.perf_counter()
    received = 0
    if kind == "open_batch":
        async with open_batch(run_one, _lazy(n), max_in_flight=20, max_pending=20) as results:
            async for result in results:
                received += result.ok
    else:
        # The seed's batchStream: every request becomes a task at once, results kept until the
        # end (Promise.allSettled), gated only by the pool.
        requests = [request async for request in _lazy(n)]
        settled: list[str | None] = [None] * n

        async def one(index: int, request: dict[str, object]) -> None:
            settled[index] = await run_one(request)

        async with trio.open_nursery() as nursery:
            for index, request in enumerate(requests):
                nursery.start_soon(one, index, request)
        received = sum(value is not None for value in settled)
    assert received == n, received
    assert pool.statistics().succeeded == n
    gc.collect()
    return {
        "before": before,
        "after": _current_rss_mib(),
        "peak": _peak_rss_mib(),
        "seconds": time.perf_counter() - start,
    }


async def _client_memory_child(n: int) -> dict[str, float]:
    """``client.open_batch`` over a lazy input of ``n`` requests against the fast simulator."""
    from holysheep_trio.client import open_client

    async with (
        fast_simulator() as base_url,
        open_client(api_key=API_KEY, base_url=base_url) as client,
    ):
        # Warm up (imports, connections), so the baseline is the client at rest.
        async with client.open_batch(_lazy(50, max_tokens=16)) as results:
            async for _ in results:
                pass
        gc.collect()
        before = _peak_rss_mib()
        start = time.perf_counter()
        received = 0
        async with client.open_batch(_lazy(n, max_tokens=16)) as results:
            async for result in results:
                received += result.ok
        assert received == n, received
        assert client.statistics().succeeded == n + 50
        gc.collect()
        return {
            "before": before,
            "after": _current_rss_mib(),
            "peak": _peak_rss_mib(),
            "seconds": time.perf_counter() - start,
        }


_ENGINES = {
    "client.open_batch, simulator": "client",
    "open_batch, fake requests": "open_batch",
    "seed: all tasks at once": "all",
}


def memory_section(quick: bool) -> None:
    sizes = (10_000, 100_000)
    print()
    print("## Peak RSS of a batch (fresh child process per run, MiB)")
    print(
        f"{'engine':<30} {'requests':>9} {'baseline':>9} {'peak':>8} {'growth':>8}"
        f" {'after':>8} {'s':>7}"
    )
    peaks: dict[tuple[str, int], float] = {}
    for kind, child in _ENGINES.items():
        for n in sizes:
            if quick and child != "open_batch" and n == sizes[-1]:
                continue
            output = subprocess.run(
                [sys.executable, __file__, "--child", child, str(n)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(output.splitlines()[-1])
            peaks[child, n] = result["peak"]
            print(
                f"{kind:<30} {n:>9,} {result['before']:>9.1f} {result['peak']:>8.1f}"
                f" {result['peak'] - result['before']:>8.1f} {result['after']:>8.1f}"
                f" {result['seconds']:>7.1f}"
            )
    for child in ("client", "open_batch"):
        if (child, sizes[1]) in peaks:
            ratio = peaks[child, sizes[1]] / peaks[child, sizes[0]]
            print(f"{child} peak RSS ratio 100k / 10k: {ratio:.3f}")
    if ("all", sizes[1]) in peaks:
        seed = peaks["all", sizes[1]] / peaks["open_batch", sizes[1]]
        print(f"seed-style / open_batch peak RSS at 100k: {seed:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, n = args.child
        if kind == "client":
            print(json.dumps(trio.run(_client_memory_child, int(n))))
        else:
            print(json.dumps(trio.run(_memory_child, kind, int(n))))
        return
    print(
        f"python {sys.version.split()[0]}, trio {trio.__version__}; fake requests, then the"
        " simulator (fast profile) in a child process on 127.0.0.1"
    )
    trio.run(overhead_section, args.quick)
    trio.run(simulator_section, args.quick)
    memory_section(args.quick)


if __name__ == "__main__":
    main()
