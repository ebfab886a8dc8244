# Benchmark: how many chunks/s the simulator pushes on one stream, with and without pre-encoding.
"""Throughput of the simulator's ``fast`` profile on one stream, over loopback.

The simulator runs in this process (trio); a minimal blocking-socket reader runs in a child
process, sends one streamed ``POST /v1/chat/completions`` with a large ``max_tokens`` and counts
content events until the server closes. Two server variants, measured in the same run:

* ``fast``: the ``fast`` profile (no delays, pre-encoded chunk bytes, many chunks per write);
* ``fast, unencoded``: the same profile with ``pre_encoded=False`` (``json.dumps`` per chunk,
  still many chunks per write) -- the reference path that the pre-encoded one must equal;
* ``responses``: the ``fast`` profile answering ``POST /v1/responses`` (one
  ``response.output_text.delta`` event per token, dicts encoded per event, sequence numbers
  stamped as sent), for the clients' Responses API benchmarks to know their ceiling.

Reports the median chunks/s over several runs and the ratio between the two; the issue asks for
at least 100,000 chunks/s on one stream with ``fast``. Usage::

    .venv/bin/python benchmarks/bench_simulator.py [--quick] [--runs N] [--tokens N]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time

import attrs
import trio

from holysheep_trio.simulator import Profile, fast_profile, open_simulator

API_KEY = "sk-bench"
MARKERS = {"chat": b'"delta":{"content":', "responses": b"event: response.output_text.delta\n"}
TARGET_CHUNKS_PER_SECOND = 100_000


def read_stream(host: str, port: int, tokens: int, api: str) -> None:
    """The child process: one request, count content events until EOF, print the result."""
    if api == "chat":
        path = "/v1/chat/completions"
        fields = {"messages": [{"role": "user", "content": "benchmark"}], "max_tokens": tokens}
    else:
        path = "/v1/responses"
        fields = {"input": "benchmark", "max_output_tokens": tokens}
    body = json.dumps({"model": "deepseek-v3.2", "stream": True, **fields}).encode()
    marker = MARKERS[api]
    request = (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\n"
        f"authorization: Bearer {API_KEY}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body
    count = 0
    tail = b""
    with socket.create_connection((host, port)) as sock:
        start = time.perf_counter()
        sock.sendall(request)
        while data := sock.recv(1 << 20):
            # Keep a marker-sized tail so a marker cut by a read boundary is still counted once.
            window = tail + data
            count += window.count(marker)
            tail = window[-(len(marker) - 1) :]
        elapsed = time.perf_counter() - start
    print(json.dumps({"chunks": count, "seconds": elapsed}))


async def measure(profile: Profile, tokens: int, api: str = "chat") -> float:
    """One run: chunks/s that the reader saw."""
    async with open_simulator(api_key=API_KEY, profile=profile, reply_tokens="max") as sim:
        result = await trio.run_process(
            [sys.executable, __file__, "--reader", sim.host, str(sim.port), str(tokens), api],
            capture_stdout=True,
        )
        report = json.loads(result.stdout)
        if report["chunks"] != tokens:
            raise RuntimeError(f"expected {tokens} content chunks, the reader saw {report}")
        if sim.stats().completion_tokens["deepseek-v3.2"] != tokens:
            raise RuntimeError("the simulator billed a different number of tokens")
        return float(report["chunks"]) / float(report["seconds"])


async def run(runs: int, tokens: int) -> bool:
    variants = {
        "fast": (fast_profile(), "chat"),
        "fast, unencoded": (attrs.evolve(fast_profile(), pre_encoded=False), "chat"),
        "responses": (fast_profile(), "responses"),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    await measure(fast_profile(), min(tokens, 10_000))  # warm-up
    for _ in range(runs):
        for name, (profile, api) in variants.items():  # interleaved, so drift hits all alike
            rates[name].append(await measure(profile, tokens, api))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"one stream, {tokens:,} content chunks (or delta events), median of {runs} runs, per s:")
    for name, values in rates.items():
        spread = f"min {min(values):,.0f}, max {max(values):,.0f}"
        print(f"  {name:<16} {medians[name]:>12,.0f}   ({spread})")
    ratio = medians["fast"] / medians["fast, unencoded"]
    print(f"  pre-encoding speed-up: {ratio:.2f}x")
    ok = medians["fast"] >= TARGET_CHUNKS_PER_SECOND
    verdict = "PASS" if ok else "FAIL"
    print(f"  target >= {TARGET_CHUNKS_PER_SECOND:,} chunks/s on one stream: {verdict}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 runs of 100,000 chunks")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=300_000)
    parser.add_argument(
        "--reader", nargs=4, metavar=("HOST", "PORT", "TOKENS", "API"), help="internal"
    )
    args = parser.parse_args()
    if args.reader:
        host, port, tokens, api = args.reader
        read_stream(host, int(port), int(tokens), api)
        return 0
    runs, tokens = (3, 100_000) if args.quick else (args.runs, args.tokens)
    return 0 if trio.run(run, runs, tokens) else 1


if __name__ == "__main__":
    raise SystemExit(main())
