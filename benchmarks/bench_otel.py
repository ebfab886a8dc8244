# Benchmark: the client's CPU per paced chunk with OpenTelemetry on vs off, same run.
"""OpenTelemetry overhead benchmark (issue: OpenTelemetry GenAI metrics and spans).

Run with ``.venv/bin/python benchmarks/bench_otel.py`` (``--quick`` for a short run).

Same method as ``benchmarks/bench_client.py`` (b): the simulator runs in a separate process
(paced profile, loopback); 100 concurrent streams paced at 50 tokens/s, one chunk per token;
every measured run is a fresh worker process, so its CPU time (``time.process_time``: every
thread of the process, the SDK's export threads included) is its own. Readers, alternated run
by run so that drift in machine load hits both alike:

- ``off``: ``hs.open_client(...)`` without telemetry.
- ``on``: the same with ``telemetry=hs.otel.Telemetry(...)`` over the OpenTelemetry SDK as an
  application would set it up: a ``BatchSpanProcessor`` and a ``PeriodicExportingMetricReader``
  (every 5 s, more often than the 60 s default) whose exporters accept and drop everything, so
  the SDK's work is measured and no network's. Shutting the providers down (the last flush) is
  inside the measurement.
- ``on-no-chunk-times``: ``on`` with ``Telemetry(time_per_output_chunk=False)``: everything but
  the one histogram measurement per chunk.

Target from the issue: ``on`` costs < 10 % more client CPU per chunk than ``off``. Results are
medians; the machine is shared, so compare the ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

API_KEY = "sk-bench-not-a-secret"
#: Telemetry off; on; on without the per-chunk histogram (Telemetry(time_per_output_chunk=False)).
READERS = ("off", "on", "on-no-chunk-times")
MODEL = "bench-model"

SERVER = """
import sys, trio
from holysheep_trio.simulator import ModelProfile, Profile, open_simulator

async def main():
    model = ModelProfile(name="bench-model", ttft_mean_ms=1, ttft_p95_ms=2, tokens_per_second=50)
    profile = Profile.from_models("paced", [model], delays=True)
    key = sys.argv[1]
    async with open_simulator(api_key=key, profile=profile, port=0, reply_tokens="max") as sim:
        print(sim.base_url, flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, API_KEY], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit(f"the simulator did not start (got {url!r})")
    return proc, url


# -- workers (each runs in its own process) ---------------------------------------------------


def sdk_telemetry(*, time_per_output_chunk: bool) -> tuple[Any, Any]:
    """A Telemetry over the SDK with exporters that drop everything, and the providers."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        MetricsData,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    import holysheep_trio as hs

    class DropSpans(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    class DropMetrics(MetricExporter):
        def export(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            pass

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(DropSpans()))
    reader = PeriodicExportingMetricReader(DropMetrics(), export_interval_millis=5_000)
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry = hs.otel.Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        time_per_output_chunk=time_per_output_chunk,
    )
    return telemetry, (tracer_provider, meter_provider)


async def read(url: str, streams: int, tokens: int, telemetry: Any) -> int:
    import trio

    import holysheep_trio as hs

    count = 0
    messages = [{"role": "user", "content": "benchmark"}]
    async with hs.open_client(api_key=API_KEY, base_url=url, telemetry=telemetry) as client:

        async def one() -> None:
            nonlocal count
            async with client.stream_chat(
                model=MODEL, messages=messages, max_tokens=tokens
            ) as stream:
                async for chunk in stream:
                    if chunk.text:
                        count += 1

        async with trio.open_nursery() as nursery:
            for _ in range(streams):
                nursery.start_soon(one)
    return count


def worker(reader: str, url: str, streams: int, tokens: int) -> None:
    import trio

    telemetry: Any = None
    providers: Any = ()
    if reader != "off":
        telemetry, providers = sdk_telemetry(time_per_output_chunk=reader == "on")
    # One warm-up stream (imports, first connection, the first span) outside the measurement.
    trio.run(read, url, 1, 5, telemetry)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    chunks = trio.run(read, url, streams, tokens, telemetry)
    for provider in providers:
        provider.shutdown()  # the last export is part of the cost
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(json.dumps({"chunks": chunks, "cpu": cpu, "wall": wall}))


def measure(reader: str, url: str, streams: int, tokens: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", reader, url, str(streams), str(tokens)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    expected = streams * tokens
    if result["chunks"] != expected:
        raise SystemExit(f"{reader}: read {result['chunks']} chunks, expected {expected}")
    return result


# -- driver ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, shorter streams")
    parser.add_argument("--runs", type=int, help="runs per reader (default 5, quick 3)")
    parser.add_argument("--worker", nargs=4, metavar=("READER", "URL", "STREAMS", "TOKENS"))
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args()
    if args.worker:
        reader, url, streams, tokens = args.worker
        worker(reader, url, int(streams), int(tokens))
        return

    runs, tokens = (3, 100) if args.quick else (5, 200)
    runs = args.runs or runs
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores")
    print(
        f"100 concurrent streams x {tokens} tokens at 50 tokens/s; client CPU per chunk,"
        f" median of {runs} runs per reader, alternated"
    )
    proc, url = start_server()
    try:
        results: dict[str, list[dict[str, Any]]] = {reader: [] for reader in READERS}
        for _ in range(runs):
            for reader in READERS:
                results[reader].append(measure(reader, url, 100, tokens))
    finally:
        proc.kill()
        proc.wait()
    per_chunk = {
        reader: statistics.median(x["cpu"] / x["chunks"] * 1e6 for x in results[reader])
        for reader in READERS
    }
    for reader in READERS:
        ratio = per_chunk[reader] / per_chunk["off"]
        print(
            f"  telemetry {reader:<18} {per_chunk[reader]:6.1f} us CPU per chunk"
            f"   {reader}/off = {ratio:.3f} ({(ratio - 1) * 100:+.1f} %)"
        )
    ratio = per_chunk["on"] / per_chunk["off"]
    print(f"target: on/off < 1.10: {ratio:.3f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
