# Benchmark: what one open stream holds in our client, by part (tracemalloc) and in RSS.
"""Memory per open stream.

Run with ``.venv/bin/python benchmarks/bench_memory.py`` (``--quick`` for fewer streams).

Opens N concurrent chat streams (2,000; ``--streams``) against the simulator (2 worker processes
in a child process, one token per second, so every stream stays open) with the configuration of
``bench_scale.py``, waits until every stream has its first chunk, and measures, in two fresh
worker processes:

- RSS per stream: ``VmRSS`` now minus just before the streams were opened, over N, and the peak
  (``ru_maxrss``) likewise;
- the Python objects per stream (``tracemalloc``, in a second worker: tracing inflates RSS):
  what is allocated and still alive once every stream is open, grouped by the module that
  allocated it (the library's modules, trio, httpx2, h11, the standard library, and the
  reader's own task), and the peak while the streams were starting;
- ``sys.getsizeof`` of the objects one stream is made of (slotted, so their sizes are their
  own), for one stream.

What RSS holds beyond the live objects is mostly what starting N requests at once leaves in
Python's allocator (pools and arenas that stay with the process).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

API_KEY = "sk-bench-not-a-secret"
STREAMS = 2000

SERVER = """
import ctypes, sys, trio
from holysheep_trio.simulator import ModelProfile, Profile, open_simulator
try:
    ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the driver
except (AttributeError, OSError):
    pass
model = ModelProfile(name="slow", ttft_mean_ms=1, ttft_p95_ms=2, tokens_per_second=1.0)
profile = Profile.from_models("memory", [model], delays=True)

async def main():
    async with open_simulator(
        api_key=sys.argv[1], profile=profile, port=0, reply_tokens="max", workers=2
    ) as sim:
        print(sim.base_url, flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # pragma: no cover


def open_files(streams: int) -> None:
    """Raise the soft open-files limit to what N connections need, if the hard one allows."""
    needed = streams + 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        top = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


def part_of(filename: str) -> str:
    """The part of the process a traced allocation belongs to, by the file that made it."""
    path = filename.replace(os.sep, "/")
    if "/holysheep_trio/" in path:
        return "holysheep_trio." + path.rsplit("/holysheep_trio/", 1)[1].removesuffix(".py")
    for package in ("trio", "httpx2", "h11", "attrs", "outcome", "sniffio"):
        if f"/{package}/" in path:
            return package
    if path.startswith("<attrs generated"):  # e.g. <attrs generated methods trio._core...>
        return "trio" if " trio." in path else "attrs"
    if path == __file__.replace(os.sep, "/"):
        return "the reader's task (this benchmark)"
    return "the standard library"


def worker(url: str, streams: int, trace: bool) -> None:
    import tracemalloc

    import httpx2
    import trio

    import holysheep_trio as hs
    from holysheep_trio import TrioTransport

    open_files(streams)
    messages = [{"role": "user", "content": "benchmark"}]
    result: dict[str, Any] = {"streams": streams}

    async def main() -> None:
        limits = hs.Limits(max_concurrent=streams, default_per_model=streams, adaptive=False)
        http = httpx2.AsyncClient(
            transport=TrioTransport(max_connections=streams, max_keepalive_connections=streams),
            follow_redirects=False,
        )
        async with (
            http,
            hs.open_client(api_key=API_KEY, base_url=url, http_client=http, limits=limits) as c,
        ):
            started = 0
            all_streaming = trio.Event()
            one_stream: list[Any] = []

            async def one() -> None:
                nonlocal started
                async with c.stream_chat(model="slow", messages=messages, max_tokens=60) as s:
                    first = True
                    async for _ in s:
                        if first:
                            first = False
                            started += 1
                            if not one_stream:
                                one_stream.append(s)
                            if started == streams:
                                all_streaming.set()

            # Warm up: imports, the pool, the first connection.
            async with c.stream_chat(model="slow", messages=messages, max_tokens=1) as s:
                async for _ in s:
                    pass
            gc.collect()
            if trace:
                tracemalloc.start(1)
            before = tracemalloc.take_snapshot() if trace else None
            rss0 = rss_kib()
            async with trio.open_nursery() as nursery:
                for _ in range(streams):
                    nursery.start_soon(one)
                await all_streaming.wait()
                gc.collect()
                result["rss_kib_per_stream"] = (rss_kib() - rss0) / streams
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                result["peak_rss_kib_per_stream"] = (peak - rss0) / streams
                if trace:
                    traced_peak = tracemalloc.get_traced_memory()[1]
                    after = tracemalloc.take_snapshot()
                    tracemalloc.stop()
                    parts: dict[str, int] = {}
                    for stat in after.compare_to(before, "filename"):
                        name = part_of(stat.traceback[0].filename)
                        parts[name] = parts.get(name, 0) + stat.size_diff
                    result["parts"] = {k: v / streams for k, v in parts.items()}
                    result["traced_per_stream"] = sum(parts.values()) / streams
                    result["traced_peak_per_stream"] = (traced_peak - before_size(before)) / streams
                    result["sizes"] = object_sizes(one_stream[0])
                nursery.cancel_scope.cancel()

    trio.run(main)
    print(json.dumps(result))


def before_size(snapshot: Any) -> int:
    return sum(stat.size for stat in snapshot.statistics("filename"))


def object_sizes(stream: Any) -> dict[str, int]:
    """``sys.getsizeof`` of the objects that make one open stream (each on its own)."""
    request = stream._request
    attempt = request._attempt
    exchange = attempt.exchange
    body = exchange._body
    connection = body._connection
    objects = {
        "ChatStream": stream,
        "Request (the lifecycle)": request,
        "_Attempt": attempt,
        "HttpExchange": exchange,
        "SSEParser": exchange._parser,
        "TrioResponseStream (the body)": body,
        "chunked-body decoder": body._decoder,
        "_Connection": connection,
        "trio.SocketStream": connection.stream,
        "trio socket": connection.socket,
        "CompletionAccumulator": stream._acc,
    }
    return {name: sys.getsizeof(obj) for name, obj in objects.items()}


def run_worker(url: str, streams: int, trace: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", url, str(streams)]
    if trace:
        command.append("--trace")
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 streams instead of 2,000")
    parser.add_argument("--streams", type=int, help=f"concurrent streams (default {STREAMS:,})")
    parser.add_argument("--worker", nargs=2, metavar=("URL", "N"))
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.trace)
        return
    streams = args.streams or (500 if args.quick else STREAMS)
    open_files(streams)  # the simulator's too: children inherit it
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, API_KEY], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        started = time.perf_counter()
        plain = run_worker(url, streams, trace=False)
        traced = run_worker(url, streams, trace=True)
    finally:
        proc.kill()
        proc.wait()
    print(f"{streams:,} open streams; {time.perf_counter() - started:.0f} s\n")
    print(
        f"RSS per stream: {plain['rss_kib_per_stream']:.1f} KiB once all are open"
        f" (peak {plain['peak_rss_kib_per_stream']:.1f} KiB)"
    )
    print(
        f"Python objects alive per stream (tracemalloc): {traced['traced_per_stream'] / 1024:.1f}"
        f" KiB; at the peak of starting them: {traced['traced_peak_per_stream'] / 1024:.1f} KiB\n"
    )
    print("| allocated by | bytes per open stream |")
    print("|---|---:|")
    for name, size in sorted(traced["parts"].items(), key=lambda item: -item[1]):
        if abs(size) >= 8:
            print(f"| {name} | {size:,.0f} |")
    print("\n| object of one stream | sys.getsizeof, bytes |")
    print("|---|---:|")
    for name, size in traced["sizes"].items():
        print(f"| {name} | {size} |")


if __name__ == "__main__":
    main()
