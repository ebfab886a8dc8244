# Benchmark: 10 to 10,000 concurrent paced streams, our client vs the openai SDK, same run.
"""Scale benchmark.

Run with ``.venv/bin/python benchmarks/bench_scale.py`` (``--quick`` for a short run).

N = 10, 100, 1,000 and 10,000 concurrent chat streams against the simulator
(:mod:`holysheep_trio.simulator`) with 2 worker processes on one port (``--workers``), in child
processes on 127.0.0.1; each stream gets one content chunk per token, paced by the simulator,
time to first token about 1 ms. Every measured run is a fresh worker process that opens all N
streams at once under ``trio.run`` and reads them to the end (the same approach as
``bench_client.py``). It reports, for the whole run, connections and client set-up included:

- wall time, from before the client is opened to the last chunk of the last stream, and when
  the last of the N streams got its first chunk ("all streaming");
- client CPU per chunk: ``time.process_time()`` of the worker divided by the chunks read, and
  "steady": the same from the moment the last stream got its first chunk until the first
  stream ended, when every stream is open and no CPU goes to starting or ending one, so that
  the cost per chunk can be compared across N (the runs differ in tokens per stream, and so in
  how many chunks carry each stream's start and end); ``n/a`` when fewer than a tenth of the
  chunks came in that window;
- of which GC: the share of the client's CPU spent in CPython's cyclic garbage collector
  (``gc.callbacks``), which now and then traverses every object of every open stream, over
  the whole run and in the steady window;
- RSS per stream: peak RSS (``ru_maxrss``) minus the RSS just before the run, divided by N;
- errors: streams that failed, by exception type (a run with errors is reported, not stopped).

Pacing: each stream runs at ``min(--rate, max(--min-rate, --load / N))`` tokens/s: 50 tokens/s
at N = 10 and 100, 5 tokens/s at N = 1,000 (5,000 chunks/s in all) and at N = 10,000 (50,000
chunks/s). A second N = 10,000 case runs at 0.5 tokens/s (``10000@0.5`` in ``--sizes``), the
5,000 chunks/s of N = 1,000: at 5 tokens/s, 10,000 streams need more CPU than this machine has
for the simulator and the client together. A run reads at most ``--max-chunks`` (200,000)
chunks: ``--tokens`` (50) per stream, fewer at N = 10,000 (20: 4 s of pacing at 5 tokens/s,
40 s at 0.5). At N = 10,000 each reader runs once (``--runs`` sets it), elsewhere 3 times.
The driver reads the CPU time of the simulator's processes (its controller and workers) from
``/proc`` around each run and prints their share of one core, and the client's, so the reader
sees who was short of CPU: this machine has 2 cores for both.

Readers, both under ``trio.run``, both allowed N connections at once:

- ``holysheep``: ``hs.open_client(...).stream_chat(...)`` with ``Limits(max_concurrent=N,
  default_per_model=N, adaptive=False)`` (the default admits 10 requests, 4 of an unknown
  model) and an ``httpx2.AsyncClient`` on our ``TrioTransport(max_connections=N)``, which is
  what ``open_client`` builds by default except for its 100 connections.
- ``openai``: ``openai.AsyncOpenAI(max_retries=0, http_client=openai.DefaultAsyncHttpxClient(
  limits=httpx2.Limits(max_connections=N, max_keepalive_connections=N)))``: an
  ``httpx2.AsyncClient`` on httpx2's default transport (httpcore2 on anyio) with the SDK's own
  timeouts. (The SDK's default client allows 1,000 connections; a plain ``httpx2.AsyncClient``
  would queue beyond 100.) If it cannot open that many streams, the errors column says how
  many failed and why; a run that does not finish in time is reported as such.

Readers take turns within each N, so drift in the load of this shared machine hits both alike;
the results are medians. A full run takes about 9 minutes on 2 cores, ``--quick`` (one run of
each, at most 50,000 chunks per run) about 4.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

API_KEY = "sk-bench-not-a-secret"
READERS = ("holysheep", "openai")
# Numbers of streams, each with the rate of rate_for() or its own: 10,000 streams at 5 tokens/s
# (50,000 chunks/s, more than this 2-core machine can serve and read) and at 0.5 tokens/s
# (5,000 chunks/s, the load of N = 1,000), to see the client at 10,000 streams both ways.
CASES: tuple[tuple[int, float | None], ...] = (
    (10, None),
    (100, None),
    (1000, None),
    (10_000, None),
    (10_000, 0.5),
)
TOKENS = 50
MAX_RATE = 50.0  # tokens/s of one stream
MIN_RATE = 5.0  # tokens/s of one stream, however many there are
MAX_LOAD = 5000.0  # chunks/s over all streams, unless MIN_RATE asks for more
MAX_CHUNKS = 200_000  # per run: fewer tokens per stream beyond it
WORKERS = 2  # simulator processes on the port
SCALE_RUNS_FROM = 10_000  # from this N on, each reader runs once unless --runs says otherwise

# The simulator runs as `python -c SERVER KEY WORKERS RATE...`: one model per rate, named by
# `model_name`. It prints its base URL and serves until killed, or until its parent dies.
SERVER = """
import ctypes, sys, trio
from holysheep_trio.simulator import ModelProfile, Profile, open_simulator

try:  # Linux: die with the driver even if it is killed without clean-up (prctl PR_SET_PDEATHSIG)
    ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)
except (AttributeError, OSError):
    pass
models = [
    ModelProfile(name=f"scale-{rate:g}tps", ttft_mean_ms=1, ttft_p95_ms=2, tokens_per_second=rate)
    for rate in map(float, sys.argv[3:])
]
profile = Profile.from_models("scale", models, delays=True)

async def main():
    async with open_simulator(
        api_key=sys.argv[1], profile=profile, port=0, reply_tokens="max", workers=int(sys.argv[2])
    ) as sim:
        print(sim.base_url, flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


def model_name(rate: float) -> str:
    return f"scale-{rate:g}tps"


def rate_for(streams: int, max_rate: float, min_rate: float, max_load: float) -> float:
    """Tokens/s of each of ``streams`` streams, rounded to 0.1."""
    return min(max_rate, max(min_rate, round(max_load / streams, 1)))


def tokens_for(streams: int, tokens: int, max_chunks: int) -> int:
    """Tokens per stream: ``tokens``, fewer when a run would read more than ``max_chunks``."""
    return max(1, min(tokens, max_chunks // streams))


def raise_open_files_limit(needed: int) -> int:
    """Raise the soft limit of open files to ``needed`` if the hard limit allows; return it.

    Children inherit it, so the driver's call also covers the simulator. (Our client raises its
    own as its pool grows; the openai SDK does not, so the worker raises it for both alike.)
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def files_needed(streams: int) -> int:
    # One socket per stream in the client, plus the interpreter's own files, with room to spare
    # (the simulator's workers share their side of the sockets between them).
    return streams + 256


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of another process, from ``/proc`` (``None`` elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime are fields 14 and 15 of proc(5); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (the simulator's controller and its workers)."""
    parents: dict[int, list[int]] = collections.defaultdict(list)
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as file:
                    ppid = int(file.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents[ppid].append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def cpu_of(pids: list[int]) -> float | None:
    seconds = [process_cpu_seconds(pid) for pid in pids]
    return None if None in seconds else sum(s for s in seconds if s is not None)


def current_rss_kib() -> int:
    """The resident set size of this process now (``VmRSS``), else its peak so far."""
    try:
        with open("/proc/self/status", encoding="ascii") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def start_server(rates: list[float], workers: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, API_KEY, str(workers), *map(str, rates)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        proc.wait()
        raise SystemExit(f"the simulator did not start (got {url!r})")
    return proc, url


# -- workers (each runs in its own process) ---------------------------------------------------


#: CPU seconds in CPython's cyclic GC so far, and the start of the collection in progress.
GC_SECONDS = [0.0, 0.0]


class Tally:
    """What a reader counts: chunks, errors, and the steady window: from the moment the last
    stream got its first chunk until the first stream ended."""

    def __init__(self, streams: int) -> None:
        self.streams = streams
        self.count = 0
        self.started = 0
        self.all_streaming = 0.0
        # CPU time, GC time and chunks when the last stream got its first chunk, and when the
        # first stream ended: in between, every stream is open and the CPU goes to chunks, not
        # to starting or ending streams.
        self.then: tuple[float, float, int] | None = None
        self.first_done: tuple[float, float, int] | None = None
        self.errors: collections.Counter[str] = collections.Counter()

    def chunk(self, first: bool) -> None:
        self.count += 1
        if first:
            self.started += 1
            if self.started == self.streams:
                self.all_streaming = time.perf_counter()
                self.then = (time.process_time(), GC_SECONDS[0], self.count)

    def done(self) -> None:
        if self.first_done is None:
            self.first_done = (time.process_time(), GC_SECONDS[0], self.count)

    def outcome(self) -> dict[str, Any]:
        steady = None
        then, first_done = self.then, self.first_done
        if then is not None and first_done is not None:
            chunks = first_done[2] - then[2]
            cpu = first_done[0] - then[0]
            if chunks >= max(100, self.count // 10) and cpu > 0:
                steady = {
                    "cpu_per_chunk": cpu / chunks,
                    "gc_share": (first_done[1] - then[1]) / cpu,
                }
        return {
            "chunks": self.count,
            "all_streaming_at": self.all_streaming or None,
            "steady": steady,
            "errors": dict(self.errors),
        }


async def read_holysheep(url: str, model: str, streams: int, tokens: int) -> dict[str, Any]:
    import httpx2
    import trio

    import holysheep_trio as hs
    from holysheep_trio import TrioTransport

    tally = Tally(streams)
    messages = [{"role": "user", "content": "benchmark"}]
    limits = hs.Limits(max_concurrent=streams, default_per_model=streams, adaptive=False)
    # What open_client builds by default, with room for N connections instead of 100.
    http_client = httpx2.AsyncClient(
        transport=TrioTransport(max_connections=streams, max_keepalive_connections=streams),
        follow_redirects=False,
    )
    async with (
        http_client,
        hs.open_client(
            api_key=API_KEY, base_url=url, http_client=http_client, limits=limits
        ) as client,
    ):

        async def one() -> None:
            first = True
            try:
                async with client.stream_chat(
                    model=model, messages=messages, max_tokens=tokens
                ) as stream:
                    async for chunk in stream:
                        if chunk.text:
                            tally.chunk(first)
                            first = False
            except Exception as exc:
                tally.errors[type(exc).__name__] += 1
            finally:
                tally.done()

        async with trio.open_nursery() as nursery:
            for _ in range(streams):
                nursery.start_soon(one)
    return tally.outcome()


async def read_openai(url: str, model: str, streams: int, tokens: int) -> dict[str, Any]:
    import httpx2
    import openai
    import trio

    tally = Tally(streams)
    limits = httpx2.Limits(max_connections=streams, max_keepalive_connections=streams)
    http_client = openai.DefaultAsyncHttpxClient(limits=limits)
    async with openai.AsyncOpenAI(
        base_url=url, api_key=API_KEY, max_retries=0, http_client=http_client
    ) as client:

        async def one() -> None:
            first = True
            try:
                stream = await client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": "benchmark"}],
                    max_tokens=tokens,
                    stream=True,
                )
                async with stream:
                    async for chunk in stream:
                        if chunk.choices and chunk.choices[0].delta.content:
                            tally.chunk(first)
                            first = False
            except Exception as exc:
                tally.errors[type(exc).__name__] += 1
            finally:
                tally.done()

        async with trio.open_nursery() as nursery:
            for _ in range(streams):
                nursery.start_soon(one)
    return tally.outcome()


READER_FUNCTIONS = {"holysheep": read_holysheep, "openai": read_openai}


def worker(reader: str, url: str, model: str, streams: int, tokens: int) -> None:
    import ctypes

    import trio

    # Linux: die with the driver even if it is killed without clean-up (PR_SET_PDEATHSIG).
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)
    raise_open_files_limit(files_needed(streams))
    run = READER_FUNCTIONS[reader]
    # One warm-up stream (imports, first connection) outside the measurement.
    trio.run(run, url, model, 1, 3)
    baseline_kib = current_rss_kib()
    # CPython's cyclic garbage collector: how much of the client's CPU it takes (it traverses
    # every object of every open stream now and then, so its share grows with N).
    in_gc = GC_SECONDS

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            in_gc[1] = time.process_time()
        else:
            in_gc[0] += time.process_time() - in_gc[1]

    gc.callbacks.append(on_gc)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    outcome = trio.run(run, url, model, streams, tokens)
    cpu_end, wall_end = time.process_time(), time.perf_counter()
    gc.callbacks.remove(on_gc)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    all_streaming_at = outcome["all_streaming_at"]
    steady = outcome["steady"]
    result = {
        "chunks": outcome["chunks"],
        "cpu": cpu_end - cpu0,
        "gc_cpu": in_gc[0],
        "wall": wall_end - wall0,
        "all_streaming": None if all_streaming_at is None else all_streaming_at - wall0,
        # While every stream is open: the CPU per chunk of streams alone, no start or end in
        # it (None when too few chunks came in that window to say).
        "steady_cpu_per_chunk": None if steady is None else steady["cpu_per_chunk"],
        "steady_gc_share": None if steady is None else steady["gc_share"],
        "baseline_rss_kib": baseline_kib,
        "peak_rss_kib": peak_kib,
        "errors": outcome["errors"],
    }
    print(json.dumps(result))


def measure(
    reader: str,
    url: str,
    server_pids: list[int],
    model: str,
    streams: int,
    tokens: int,
    timeout: float,
) -> dict[str, Any]:
    server_cpu0 = cpu_of(server_pids)
    started = time.perf_counter()
    command = [sys.executable, __file__, "--worker", reader, url, model, str(streams), str(tokens)]
    try:
        # run() kills the worker when the timeout expires, or on any exception
        out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"streams": streams, "timed_out": timeout}
    server_cpu1 = cpu_of(server_pids)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    expected = streams * tokens
    if not result["errors"] and result["chunks"] != expected:
        raise SystemExit(f"{reader}, N={streams}: read {result['chunks']} chunks, not {expected}")
    # Over the worker's whole life; its start-up and 3-token warm-up cost the server ~nothing.
    result["server_cpu"] = (
        None if server_cpu0 is None or server_cpu1 is None else server_cpu1 - server_cpu0
    )
    result["process_wall"] = time.perf_counter() - started
    result["streams"] = streams
    return result


# -- driver ------------------------------------------------------------------------------------


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    med = statistics.median
    finished = [r for r in results if "timed_out" not in r]
    errors: collections.Counter[str] = collections.Counter()
    for r in finished:
        errors.update(r["errors"])
    if not finished:
        return {"timed_out": results[0]["timed_out"], "runs": len(results)}
    server = [r["server_cpu"] for r in finished]
    streaming = [r["all_streaming"] for r in finished if r["all_streaming"] is not None]
    steady = [r["steady_cpu_per_chunk"] for r in finished if r["steady_cpu_per_chunk"] is not None]
    steady_gc = [r["steady_gc_share"] for r in finished if r["steady_gc_share"] is not None]
    return {
        "runs": len(results),
        "timed_out_runs": len(results) - len(finished),
        "wall_s": med([r["wall"] for r in finished]),
        "all_streaming_s": med(streaming) if streaming else None,
        "cpu_us_per_chunk": med([r["cpu"] / max(r["chunks"], 1) * 1e6 for r in finished]),
        "steady_cpu_us_per_chunk": med(steady) * 1e6 if steady else None,
        "client_load": med([r["cpu"] / r["wall"] for r in finished]),
        "gc_share": med([r["gc_cpu"] / r["cpu"] for r in finished if r["cpu"]]),
        "steady_gc_share": med(steady_gc) if steady_gc else None,
        "rss_kib_per_stream": med(
            [(r["peak_rss_kib"] - r["baseline_rss_kib"]) / r["streams"] for r in finished]
        ),
        "peak_rss_mib": med([r["peak_rss_kib"] / 1024 for r in finished]),
        # The simulator's CPU seconds per second of the run (all its processes): its share of
        # one core. Over the worker's whole life, which is a little longer than `wall`.
        "server_load": None
        if None in server
        else med([s / r["process_wall"] for s, r in zip(server, finished, strict=True)]),
        "errors": dict(errors),
    }


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def micros(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def case_label(streams: int, rate: float | None) -> str:
    """How a case is named in the JSON and in ``--sizes``: ``1000``, or ``10000@0.5``."""
    return str(streams) if rate is None else f"{streams}@{rate:g}"


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def errors_text(summary: dict[str, Any]) -> str:
    if "timed_out" in summary:
        return f"did not finish within {summary['timed_out']:.0f} s"
    parts = [f"{count:,} {name}" for name, count in sorted(summary["errors"].items())]
    if summary["timed_out_runs"]:
        parts.append(f"{summary['timed_out_runs']} of {summary['runs']} runs timed out")
    return ", ".join(parts) or "0"


def on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so that the `finally` clauses kill the children


def parse_cases(text: str) -> list[tuple[int, float | None]]:
    """``10,100,10000@0.5``: numbers of streams, each with its own tokens/s after ``@``."""
    cases: list[tuple[int, float | None]] = []
    for item in text.split(","):
        streams, _, rate = item.partition("@")
        cases.append((int(streams), float(rate) if rate else None))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run of each, smaller runs")
    parser.add_argument("--runs", type=int, help="runs of each reader at each N (default 3)")
    parser.add_argument("--tokens", type=int, default=TOKENS, help="content chunks per stream")
    parser.add_argument("--rate", type=float, default=MAX_RATE, help="tokens/s of one stream")
    parser.add_argument(
        "--min-rate", type=float, default=MIN_RATE, help="tokens/s of one stream, at least"
    )
    parser.add_argument(
        "--load", type=float, default=MAX_LOAD, help="cap on tokens/s over all streams"
    )
    parser.add_argument(
        "--max-chunks", type=int, help=f"chunks per run, at most (default {MAX_CHUNKS:,})"
    )
    parser.add_argument("--workers", type=int, default=WORKERS, help="simulator processes")
    parser.add_argument(
        "--sizes",
        type=parse_cases,
        default=list(CASES),
        help="comma-separated numbers of concurrent streams, N@RATE for a rate of its own"
        f" (default {','.join(case_label(*case) for case in CASES)})",
    )
    parser.add_argument("--worker", nargs=5, metavar=("READER", "URL", "MODEL", "N", "TOKENS"))
    parser.add_argument("--json", help="also write the raw results and medians to this file")
    args = parser.parse_args()
    if args.worker:
        reader, url, model, streams, tokens = args.worker
        worker(reader, url, model, int(streams), int(tokens))
        return

    signal.signal(signal.SIGTERM, on_sigterm)
    max_chunks = args.max_chunks or (50_000 if args.quick else MAX_CHUNKS)
    cases = [
        (n, rate if rate is not None else rate_for(n, args.rate, args.min_rate, args.load))
        for n, rate in args.sizes
    ]
    labels = {
        case: case_label(case[0], spec) for case, (_, spec) in zip(cases, args.sizes, strict=True)
    }
    runs = {
        case: args.runs or (1 if args.quick or case[0] >= SCALE_RUNS_FROM else 3) for case in cases
    }
    tokens = {case: tokens_for(case[0], args.tokens, max_chunks) for case in cases}
    nofile = raise_open_files_limit(files_needed(max(n for n, _ in cases)))
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores, "
        f"open files limit {nofile}; simulator: {args.workers} worker processes; "
        f"at most {max_chunks:,} chunks per run",
        flush=True,
    )
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    summary: dict[tuple[int, float], dict[str, dict[str, Any]]] = {}
    started = time.perf_counter()
    proc, url = start_server(sorted({rate for _, rate in cases}), args.workers)
    try:
        server_pids = descendants(proc.pid)
        for case in cases:
            streams, rate = case
            paced = tokens[case] / rate
            # A run this slow is broken, not slow: stop it (and say so). Set-up grows with N.
            timeout = 60 + 5 * paced + streams * 0.02
            results: dict[str, list[dict[str, Any]]] = {reader: [] for reader in READERS}
            for _ in range(runs[case]):
                for reader in READERS:
                    results[reader].append(
                        measure(
                            reader,
                            url,
                            server_pids,
                            model_name(rate),
                            streams,
                            tokens[case],
                            timeout,
                        )
                    )
            raw[labels[case]] = results
            summary[case] = {reader: summarize(results[reader]) for reader in READERS}
            for reader in READERS:
                s = summary[case][reader]
                head = (
                    f"  N={streams:<6} {tokens[case]} tokens at {rate:g} tokens/s"
                    f" (paced {paced:.1f} s) {reader:<10}"
                )
                if "timed_out" in s:
                    print(f"{head} {errors_text(s)}", flush=True)
                    continue
                print(
                    f"{head} wall {s['wall_s']:6.2f} s"
                    f"  all streaming {seconds(s['all_streaming_s']):>5} s"
                    f"  CPU {s['cpu_us_per_chunk']:6.1f} us/chunk"
                    f" (steady {micros(s['steady_cpu_us_per_chunk'])})"
                    f"  RSS {s['rss_kib_per_stream']:6.1f} KiB/stream"
                    f"  client {percent(s['client_load'])} / simulator"
                    f" {percent(s['server_load'])} of a core"
                    f"  GC {percent(s['gc_share'])} of the client's CPU"
                    f" (steady {percent(s['steady_gc_share'])})"
                    f"  errors {errors_text(s)}",
                    flush=True,
                )
    finally:
        proc.kill()
        proc.wait()

    print(f"\n{time.perf_counter() - started:.0f} s in all\n")
    print(
        "| N | tokens at tokens/s | client | runs | wall s | all streaming after s "
        "| client CPU µs/chunk: all / steady | of which GC: all / steady | RSS KiB/stream "
        "| CPU: client / simulator | errors |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for case in cases:
        streams, rate = case
        for reader in READERS:
            s = summary[case][reader]
            name = "**holysheep-trio**" if reader == "holysheep" else reader
            head = f"| {streams:,} | {tokens[case]} at {rate:g} | {name} | {s['runs']}"
            if "timed_out" in s:
                print(f"{head} | | | | | | | {errors_text(s)} |")
                continue
            print(
                f"{head} | {s['wall_s']:.2f} | {seconds(s['all_streaming_s'])} "
                f"| {s['cpu_us_per_chunk']:.1f} / {micros(s['steady_cpu_us_per_chunk'])} "
                f"| {percent(s['gc_share'])} / {percent(s['steady_gc_share'])} "
                f"| {s['rss_kib_per_stream']:.1f} "
                f"| {percent(s['client_load'])} / {percent(s['server_load'])} "
                f"| {errors_text(s)} |"
            )
    print("\nours / openai (below 1 is better for holysheep-trio):\n")
    print("| N | tokens/s | wall | client CPU per chunk | steady | RSS per stream |")
    print("|---:|---:|---:|---:|---:|---:|")
    ratios: dict[str, dict[str, float | None]] = {}
    keys = ("wall_s", "cpu_us_per_chunk", "steady_cpu_us_per_chunk", "rss_kib_per_stream")
    for case in cases:
        streams, rate = case
        ours, theirs = summary[case]["holysheep"], summary[case]["openai"]
        if "timed_out" in ours or "timed_out" in theirs:
            print(f"| {streams:,} | {rate:g} | n/a | n/a | n/a | n/a |")
            continue
        ratio = {
            key: ours[key] / theirs[key] if ours[key] is not None and theirs[key] else None
            for key in keys
        }
        ratios[labels[case]] = ratio
        shown = ["n/a" if ratio[key] is None else f"{ratio[key]:.2f}x" for key in keys]
        print(f"| {streams:,} | {rate:g} | {' | '.join(shown)} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(
                {
                    "python": platform.python_version(),
                    "tokens": {labels[case]: t for case, t in tokens.items()},
                    "rates": {labels[case]: case[1] for case in cases},
                    "runs": {labels[case]: r for case, r in runs.items()},
                    "workers": args.workers,
                    "raw": raw,
                    "median": {labels[case]: s for case, s in summary.items()},
                    "ratio": ratios,
                },
                file,
                indent=2,
            )


if __name__ == "__main__":
    main()
