# Benchmark: a 20-turn tool-call loop over a WebSocket session vs HTTP, and the openai SDK's.
"""WebSocket session benchmark: a tool-call loop, four ways, in the same run.

Run with ``.venv/bin/python benchmarks/bench_websocket.py`` (``--quick`` for a short run).

An agent's loop: each turn asks the model, which calls the tool ``lookup`` (``tool_choice``
names it); the tool's result goes back as a ``function_call_output`` item in the next turn.
20 turns per loop, against the simulator in a separate process (profile without delays, so the
times are the client's and the protocol's, not a model's), each measured loop a fresh worker
process (after one warm-up loop in the same process), the ways taking turns:

- ``ws-session``: ``client.open_session()`` and ``session.create_response(...,
  previous_response_id=...)``: one socket, only the new item per turn.
- ``http-previous``: ``client.create_response(..., previous_response_id=...)`` over HTTP (one
  keep-alive connection): only the new item per turn.
- ``http-history``: ``client.create_response(...)`` resending the whole conversation each turn
  (no ``previous_response_id``): the input grows by two items per turn.
- ``openai-ws``: the openai SDK's ``AsyncOpenAI.responses.connect()`` (asyncio, in its own
  process), ``connection.response.create(..., previous_response_id=...)`` and ``recv()`` until
  ``response.completed``.

Reported: end-to-end time per turn (wall time of the loop / turns) and client CPU per turn
(``time.process_time`` of the worker / turns), medians; and each way's ratio to the WebSocket
session. Every way checks that each turn called the tool.
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
from typing import Any

API_KEY = "sk-bench-not-a-secret"
MODEL = "gpt-4.1"
TURNS = 20
WAYS = ("ws-session", "http-previous", "http-history", "openai-ws")
TOOLS = [
    {
        "type": "function",
        "name": "lookup",
        "description": "Look a word up.",
        "parameters": {
            "type": "object",
            "properties": {"word": {"type": "string"}},
            "required": ["word"],
        },
    }
]
TOOL_CHOICE = {"type": "function", "name": "lookup"}
FIRST_INPUT = "Look up every word of this sentence, one per turn."

SERVER = """
import sys, trio
from holysheep_trio.simulator import open_simulator

async def main():
    async with open_simulator(api_key=sys.argv[1], profile="fast", port=0) as sim:
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


def tool_output(call_id: str, turn: int) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": f"result {turn}"}


def the_call(output: Any) -> dict[str, Any]:
    """The function_call item of a response's output (as a dict), or exit."""
    for item in output:
        as_dict = item if isinstance(item, dict) else item.model_dump()
        if as_dict.get("type") == "function_call":
            return as_dict
    raise SystemExit("a turn did not call the tool")


# -- workers (each runs in its own process) ---------------------------------------------------


async def loop_session(url: str) -> None:
    import holysheep_trio as hs

    async with (
        hs.open_client(api_key=API_KEY, base_url=url) as client,
        client.open_session() as session,
    ):
        previous: str | None = None
        items: list[dict[str, Any]] | str = FIRST_INPUT
        for turn in range(TURNS):
            response = await session.create_response(
                model=MODEL,
                input=items,
                previous_response_id=previous,
                tools=TOOLS,
                tool_choice=TOOL_CHOICE,
            )
            call = next(item for item in response.output if isinstance(item, hs.FunctionCall))
            previous = response.id
            items = [tool_output(call.call_id, turn)]


async def loop_http_previous(url: str) -> None:
    import holysheep_trio as hs

    async with hs.open_client(api_key=API_KEY, base_url=url) as client:
        previous: str | None = None
        items: list[dict[str, Any]] | str = FIRST_INPUT
        for turn in range(TURNS):
            response = await client.create_response(
                model=MODEL,
                input=items,
                previous_response_id=previous,
                tools=TOOLS,
                tool_choice=TOOL_CHOICE,
            )
            call = next(item for item in response.output if isinstance(item, hs.FunctionCall))
            previous = response.id
            items = [tool_output(call.call_id, turn)]


async def loop_http_history(url: str) -> None:
    import holysheep_trio as hs

    async with hs.open_client(api_key=API_KEY, base_url=url) as client:
        history: list[dict[str, Any]] = [{"role": "user", "content": FIRST_INPUT}]
        for turn in range(TURNS):
            response = await client.create_response(
                model=MODEL, input=history, tools=TOOLS, tool_choice=TOOL_CHOICE
            )
            call = next(item for item in response.output if isinstance(item, hs.FunctionCall))
            history.append(
                {
                    "type": "function_call",
                    "call_id": call.call_id,
                    "name": call.name,
                    "arguments": call.arguments,
                }
            )
            history.append(tool_output(call.call_id, turn))


async def loop_openai(url: str) -> None:
    import openai

    async with (
        openai.AsyncOpenAI(base_url=url, api_key=API_KEY, max_retries=0) as client,
        client.responses.connect() as connection,
    ):
        previous: str | None = None
        items: Any = FIRST_INPUT
        for turn in range(TURNS):
            kwargs: dict[str, Any] = {"previous_response_id": previous} if previous else {}
            await connection.response.create(
                model=MODEL, input=items, tools=TOOLS, tool_choice=TOOL_CHOICE, **kwargs
            )
            while True:
                event = await connection.recv()
                if event.type == "response.completed":
                    break
                if event.type in ("error", "response.failed"):
                    raise SystemExit(f"openai-ws: {event}")
            call = the_call(event.response.output)
            previous = event.response.id
            items = [tool_output(call["call_id"], turn)]


def worker(way: str, url: str) -> None:
    if way == "openai-ws":
        import asyncio

        def run() -> None:
            asyncio.run(loop_openai(url))
    else:
        import trio

        loop = {
            "ws-session": loop_session,
            "http-previous": loop_http_previous,
            "http-history": loop_http_history,
        }[way]

        def run() -> None:
            trio.run(loop, url)

    run()  # warm-up: imports, the first connection
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(json.dumps({"cpu": cpu / TURNS, "wall": wall / TURNS}))


def measure(way: str, url: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", way, url],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs instead of 7")
    parser.add_argument("--worker", nargs=2, metavar=("WAY", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    runs = 3 if args.quick else 7
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores")
    print(
        f"a {TURNS}-turn tool-call loop against the simulator (no model delays); per turn,"
        f" median of {runs} loops"
    )
    server, url = start_server()
    results: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    try:
        for _ in range(runs):
            for way in WAYS:  # interleaved: the ways share the machine's ups and downs
                results[way].append(measure(way, url))
    finally:
        server.kill()
        server.wait()
    wall = {way: statistics.median(r["wall"] for r in results[way]) for way in WAYS}
    cpu = {way: statistics.median(r["cpu"] for r in results[way]) for way in WAYS}
    base = "ws-session"
    for way in WAYS:
        print(
            f"  {way:14} {wall[way] * 1e3:7.2f} ms/turn end to end"
            f" ({wall[way] / wall[base]:4.2f}x the session)"
            f"   client CPU {cpu[way] * 1e3:6.2f} ms/turn ({cpu[way] / cpu[base]:4.2f}x)"
        )


if __name__ == "__main__":
    main()
