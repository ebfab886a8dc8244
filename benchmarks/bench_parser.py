# Benchmark: holysheep_trio.sse.SSEParser against the SSE decoders of four other libraries.
"""Throughput and conformance of SSE parsers on an OpenAI chat-completion stream.

The stream: 10,000 events, ``data: {...chat.completion.chunk...}`` with realistic fields and
some non-ASCII content, ending with ``data: [DONE]`` (about 2.5 MB). It is fed to every parser
in chunks of 16 B, 1 KiB and 64 KiB; every parser collects its events in a list. The parsers are
run in turn, in several rounds (so that noise on a shared machine hits all of them alike), each
timed run with the garbage collector paused and measured in CPU time of the process
(``time.process_time()``), so that other processes on a shared machine do not count. Reported:
the median of the runs, as events/s and MB/s, and the ratio of our parser's speed to each
peer's.

How each parser is fed -- each through its own bytes-to-events path, as its library does:

* ``holysheep-trio``: ``SSEParser().feed(chunk)`` for each chunk, then ``close()``.
* ``openai``: ``openai._streaming.SSEDecoder().iter_bytes(iter(chunks))``, what
  ``openai.Stream`` does with ``response.iter_bytes()`` (``aiter_bytes`` is the same code).
* ``httpx-sse``: an incremental UTF-8 decoder (``errors="replace"``, as httpx's
  ``Response.aiter_text()``) feeds ``httpx_sse._decoders.SSELineDecoder``, and each line, with
  ``rstrip("\\n")``, goes to ``SSEDecoder.decode`` -- what ``EventSource.aiter_sse()`` does. The
  module is loaded without running ``httpx_sse/__init__.py``, which imports httpx (this project
  uses httpx2 instead); the decoding code is the library's own.
* ``httpx2``: ``httpx2._decoders.TextDecoder`` feeds ``httpx2._sse._SSEParser`` (with httpx2's
  default 1 MiB event limit), then ``flush()`` -- what ``httpx2._sse.EventSource.__aiter__``
  does with ``response.aiter_text()``.
* ``sseclient-py``: ``sseclient.SSEClient(iter(chunks)).events()``.

The conformance part runs every web-platform-tests ``eventsource/format-*`` vector
(tests/sse_vectors.py) through every parser, whole and byte by byte, plus a few checks beyond
WPT, and prints which fail. Usage::

    .venv/bin/python benchmarks/bench_parser.py [--runs N] [--events N] [--quick]
"""

from __future__ import annotations

import argparse
import codecs
import functools
import gc
import importlib
import importlib.util
import json
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from holysheep_trio.sse import SSEParser

# The WPT vectors live next to the parser's tests (tests/sse_vectors.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
WPT_VECTORS: tuple[Any, ...] = importlib.import_module("sse_vectors").WPT_VECTORS

CHUNK_SIZES = (16, 1024, 65536)
TARGET_RATIO = 1.25

# -- The stream -----------------------------------------------------------------------------------

_WORDS = (
    "Sure",
    "!",
    " Here",
    " is",
    " a",
    " short",
    " answer",
    ":",
    " the",
    " café",
    " costs",
    " 3",
    " €",
    " —",
    " 你好",
    ".\n\n",
)


def make_stream(events: int) -> bytes:
    """An OpenAI chat-completion stream of ``events`` events, the last being ``[DONE]``."""
    head: dict[str, Any] = {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": "gpt-4o-2024-08-06",
        "service_tier": "default",
        "system_fingerprint": "fp_eb9dce56a8",
    }
    parts = []
    for index in range(events - 2):
        if index == 0:
            delta: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        else:
            delta = {"content": _WORDS[index % len(_WORDS)]}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        payload = {**head, "choices": [choice], "usage": None}
        parts.append(b"data: %s\n\n" % json.dumps(payload, ensure_ascii=False).encode())
    last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    usage = {"prompt_tokens": 19, "completion_tokens": events - 2, "total_tokens": events + 17}
    payload = {**head, "choices": [last], "usage": usage}
    parts.append(b"data: %s\n\n" % json.dumps(payload).encode())
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def cut(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


# -- The parsers ----------------------------------------------------------------------------------
# Each takes the chunks and returns the list of event objects its library produces.


def run_ours(chunks: Iterable[bytes], *, last_event_id: str = "") -> list[Any]:
    parser = SSEParser(last_event_id=last_event_id)
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.close()
    return events


def run_openai(chunks: Iterable[bytes]) -> list[Any]:
    from openai._streaming import SSEDecoder

    return list(SSEDecoder().iter_bytes(iter(chunks)))


def _httpx_sse_decoders() -> types.ModuleType:
    # httpx_sse/__init__.py imports httpx (for its connect helpers), which is not installed:
    # register a bare package object so that only the decoding modules get imported.
    if "httpx_sse._decoders" not in sys.modules:
        spec = importlib.util.find_spec("httpx_sse")
        assert spec is not None
        assert spec.submodule_search_locations is not None
        package = types.ModuleType("httpx_sse")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules.setdefault("httpx_sse", package)
    return importlib.import_module("httpx_sse._decoders")


def run_httpx_sse(chunks: Iterable[bytes]) -> list[Any]:
    decoders = _httpx_sse_decoders()
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")
    lines = decoders.SSELineDecoder()
    decoder = decoders.SSEDecoder()
    events = []
    for chunk in chunks:
        for line in lines.decode(text.decode(chunk)):
            sse = decoder.decode(line.rstrip("\n"))
            if sse is not None:
                events.append(sse)
    rest = text.decode(b"", True)
    for line in [*(lines.decode(rest) if rest else []), *lines.flush()]:
        sse = decoder.decode(line.rstrip("\n"))
        if sse is not None:
            events.append(sse)
    return events


def run_httpx2(chunks: Iterable[bytes]) -> list[Any]:
    from httpx2._config import DEFAULT_MAX_EVENT_SIZE_BYTES
    from httpx2._decoders import TextDecoder
    from httpx2._sse import _SSEParser

    decoder = TextDecoder(encoding="utf-8")
    parser = _SSEParser(DEFAULT_MAX_EVENT_SIZE_BYTES)
    events: list[Any] = []
    for chunk in chunks:
        text = decoder.decode(chunk)
        if text:
            events.extend(parser.decode(text))
    text = decoder.flush()
    if text:
        events.extend(parser.decode(text))
    events.extend(parser.flush())
    return events


def run_sseclient(chunks: Iterable[bytes]) -> list[Any]:
    from sseclient import SSEClient

    return list(SSEClient(iter(chunks)).events())


PARSERS: dict[str, Callable[[Iterable[bytes]], list[Any]]] = {
    "holysheep-trio": run_ours,
    "openai": run_openai,
    "httpx-sse": run_httpx_sse,
    "httpx2": run_httpx2,
    "sseclient-py": run_sseclient,
}
PEERS = [name for name in PARSERS if name != "holysheep-trio"]


def versions() -> str:
    from importlib.metadata import version

    packages = {"openai": "openai", "httpx-sse": "httpx-sse", "httpx2": "httpx2"}
    packages["sseclient-py"] = "sseclient-py"
    found = ", ".join(f"{name} {version(dist)}" for name, dist in packages.items())
    return f"Python {sys.version.split()[0]}; {found}"


# -- Speed ----------------------------------------------------------------------------------------


def time_once(run: Callable[[list[bytes]], list[Any]], chunks: list[bytes]) -> float:
    """CPU seconds of one run: other processes on a shared machine do not count."""
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        run(chunks)
        return time.process_time() - start
    finally:
        gc.enable()


def check_output(stream: bytes, events: int) -> None:
    """Before timing anything, make sure every parser finds the same events in the stream."""
    expected = [event.data for event in run_ours([stream])]
    if len(expected) != events or expected[-1] != "[DONE]":
        raise SystemExit("holysheep-trio parsed the benchmark stream wrongly")
    for name, run in PARSERS.items():
        for size in CHUNK_SIZES:
            got = [event.data for event in run(cut(stream, size))]
            if got != expected:
                raise SystemExit(f"{name} parsed the benchmark stream differently at {size} B")


def bench_speed(events: int, runs: int) -> bool:
    """Print the speed table; return whether the target is met at every chunk size."""
    stream = make_stream(events)
    check_output(stream, events)
    megabytes = len(stream) / 1e6
    print(f"## Speed: {events:,} events, {len(stream):,} bytes, median of {runs} runs\n")
    print("| chunk | parser | events/s | MB/s | ms | ours / peer |")
    print("|---:|---|---:|---:|---:|---:|")
    all_met = True
    verdicts = []
    for size in CHUNK_SIZES:
        chunks = cut(stream, size)
        for run in PARSERS.values():  # warm up: imports, caches
            run(chunks)
        samples: dict[str, list[float]] = {name: [] for name in PARSERS}
        for _ in range(runs):
            for name, run in PARSERS.items():
                samples[name].append(time_once(run, chunks))
        median = {name: statistics.median(times) for name, times in samples.items()}
        ours = median["holysheep-trio"]
        for name in PARSERS:
            speedup = "" if name == "holysheep-trio" else f"{median[name] / ours:.2f}x"
            print(
                f"| {size:,} B | {name} | {events / median[name]:,.0f} "
                f"| {megabytes / median[name]:.1f} | {median[name] * 1000:.1f} | {speedup} |"
            )
        fastest = min(PEERS, key=median.__getitem__)
        ratio = median[fastest] / ours
        met = ratio >= TARGET_RATIO
        all_met &= met
        verdicts.append(
            f"- {size:,} B: fastest peer {fastest}; ours is {ratio:.2f}x as fast "
            f"({'meets' if met else 'DOES NOT MEET'} the {TARGET_RATIO}x target)"
        )
    print()
    print("\n".join(verdicts))
    print()
    return all_met


# -- Conformance ----------------------------------------------------------------------------------

Event = tuple[str, str, str, Any]
Run = Callable[[Iterable[bytes]], list[Any]]


def normalise(event: Any) -> Event:
    # Representation differences are not counted as failures: None for "no event type" or "no
    # id", and a retry kept as a digit string (sseclient-py) are mapped to the spec's values.
    retry = event.retry
    if isinstance(retry, str) and retry.isascii() and retry.isdigit():
        retry = int(retry)
    return (event.event or "message", event.data, event.id or "", retry)


def outcome(run: Run, chunks: Sequence[bytes]) -> str | list[Event]:
    """The normalised events, or the name of the exception the parser raised."""
    try:
        return [normalise(event) for event in run(chunks)]
    except Exception as exc:
        return type(exc).__name__


def vector_result(name: str, vector: Any) -> str:
    if vector.last_event_id and name != "holysheep-trio":
        return "n/a"  # the peers cannot start from a previous connection's last event ID
    run: Run = PARSERS[name]
    if name == "holysheep-trio":
        run = functools.partial(run_ours, last_event_id=vector.last_event_id)
    expected = [(e.event, e.data, e.id, e.retry) for e in vector.events]
    body = vector.body
    modes = {"whole": [body], "byte by byte": [body[i : i + 1] for i in range(len(body))]}
    failures = []
    for mode, chunks in modes.items():
        got = outcome(run, chunks)
        if got != expected:
            failures.append(mode if isinstance(got, list) else f"{mode}: raises {got}")
    if not failures:
        return "pass"
    return (
        "FAIL"
        if len(failures) == 2 and "raises" not in failures[0]
        else "FAIL: " + "; ".join(failures)
    )


def delivered_promptly(name: str) -> str:
    """Is an event ended by CR CR returned before the parser is given more input?"""
    chunk = b"data: x\r\r"
    if name == "holysheep-trio":
        prompt = SSEParser().feed(chunk) != []
    elif name == "httpx-sse":
        decoders = _httpx_sse_decoders()
        decoder = decoders.SSEDecoder()
        lines = decoders.SSELineDecoder().decode(chunk.decode())
        prompt = any(decoder.decode(line) is not None for line in lines)
    elif name == "httpx2":
        from httpx2._sse import _SSEParser

        prompt = list(_SSEParser().decode(chunk.decode())) != []
    else:
        # Iterator-driven parsers: does the event come before they ask for the next chunk?
        asked_for_more = False

        def source() -> Iterator[bytes]:
            nonlocal asked_for_more
            yield chunk
            asked_for_more = True

        first = next(iter(_iterate(name, source())), None)
        prompt = first is not None and not asked_for_more
    return "pass" if prompt else "held back"


def _iterate(name: str, source: Iterator[bytes]) -> Iterable[Any]:
    if name == "openai":
        from openai._streaming import SSEDecoder

        return SSEDecoder().iter_bytes(source)
    from sseclient import SSEClient

    return SSEClient(source).events()


def bounded_memory(name: str) -> str:
    """Feed a 16 MiB line that never ends: does the parser stop with an error?"""
    chunks = [b"data: ", *[b"x" * 65536] * 256]
    result = outcome(PARSERS[name], chunks)
    return f"pass ({result})" if isinstance(result, str) else "buffers it all"


EXTRA_CHECKS: dict[str, tuple[bytes, list[Event]]] = {
    "invalid UTF-8 becomes U+FFFD": (
        b"data: \xff\xfe\n\n",
        [("message", "\ufffd\ufffd", "", None)],
    ),
    "U+2028, U+0085 are not line ends": (
        "data: a\u2028b\x85c\n\n".encode(),
        [("message", "a\u2028b\x85c", "", None)],
    ),
    "a block with only an id dispatches nothing": (
        b"id: 1\n\ndata: x\n\n",
        [("message", "x", "1", None)],
    ),
    "retry takes ASCII digits only": (b"retry: -5\ndata: x\n\n", [("message", "x", "", None)]),
}


def extra_result(check: str, name: str) -> str:
    if check == "an event ended by CR CR is returned at once":
        return delivered_promptly(name)
    if check == "a 16 MiB line without end is refused":
        return bounded_memory(name)
    body, expected = EXTRA_CHECKS[check]
    got = outcome(PARSERS[name], [body])
    if isinstance(got, str):
        return f"FAIL: raises {got}"
    return "pass" if got == expected else "FAIL"


def table(rows: dict[str, list[str]], first: str) -> None:
    print(f"| {first} | " + " | ".join(PARSERS) + " |")
    print("|---|" + "---|" * len(PARSERS))
    for label, cells in rows.items():
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()


def bench_conformance() -> None:
    print("## Conformance: web-platform-tests eventsource/format-*, whole and byte by byte\n")
    print(
        "n/a: the vector resumes from a previous connection's last event ID, which the peers\n"
        "cannot be given. FAIL without detail: wrong events in both modes.\n"
    )
    rows = {v.name: [vector_result(name, v) for name in PARSERS] for v in WPT_VECTORS}
    passed = [sum(rows[v.name][i] == "pass" for v in WPT_VECTORS) for i in range(len(PARSERS))]
    applicable = [sum(rows[v.name][i] != "n/a" for v in WPT_VECTORS) for i in range(len(PARSERS))]
    rows["**passed**"] = [f"**{p}/{a}**" for p, a in zip(passed, applicable, strict=True)]
    table(rows, "WPT vector")
    print("## Conformance beyond WPT\n")
    checks = [
        *EXTRA_CHECKS,
        "an event ended by CR CR is returned at once",
        "a 16 MiB line without end is refused",
    ]
    table({check: [extra_result(check, name) for name in PARSERS] for check in checks}, "check")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SSE parser benchmark and conformance table.")
    parser.add_argument("--runs", type=int, default=9, help="timed runs per parser and size")
    parser.add_argument("--events", type=int, default=10_000, help="events in the stream")
    parser.add_argument("--quick", action="store_true", help="3 runs of 2,000 events")
    parser.add_argument("--no-conformance", action="store_true", help="speed only")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.events = 3, 2_000
    print(f"# SSE parsers: {versions()}\n")
    print(
        "Feeding: holysheep-trio `SSEParser.feed()` per chunk, then `close()`; openai "
        "`SSEDecoder().iter_bytes(iter(chunks))`;\nhttpx-sse `SSELineDecoder` + `SSEDecoder` "
        "over an incremental UTF-8 decoder (as `aiter_sse()`);\nhttpx2 `TextDecoder` + "
        "`_SSEParser` (as `EventSource.__aiter__`); sseclient-py "
        "`SSEClient(iter(chunks)).events()`.\n"
    )
    met = bench_speed(args.events, args.runs)
    if not args.no_conformance:
        bench_conformance()
    verdict = "met" if met else "NOT MET"
    print(f"Target, {TARGET_RATIO}x the fastest peer at every chunk size: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
