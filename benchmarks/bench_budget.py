# Benchmark: what a budget costs per request (memory, SQLite), and overshoot against LiteLLM's.
"""What a budget costs, and whether it holds, measured against a peer in the same run.

1. **Overhead per request.** A request's budget work -- ``Budget.reserve`` before it is sent
   and ``Reservation.settle`` with the server's usage at its end -- timed for each ledger:
   ``memory://``; ``sqlite:///`` (WAL, ``synchronous=NORMAL``, one ``BEGIN IMMEDIATE``
   transaction per call in a worker thread: the library's design); the same file with
   ``synchronous=FULL`` (an fsync per commit); and, as a reference for the cost of the thread
   hop, the same SQLite transactions run inline on the event loop (which the library never
   does: it would block every other task). One at a time and 10 at a time; medians of short
   interleaved rounds, µs per request. The issue's target: SQLite adds < 1 ms per request.
2. **Overshoot.** 1,000 concurrent requests against a budget that fits 5.5 of them. Ours:
   each request reserves, "sends" (one checkpoint) and settles at its full worst case (so
   exactly 5 fit). The peer: LiteLLM's ``Router`` with a ``provider_budget_config`` limit of
   5.5 requests' cost, 1,000 concurrent ``router.acompletion`` calls with a ``mock_response``
   (no network), in LiteLLM's own virtual environment (created under ``/tmp`` on first use;
   LiteLLM is never a dependency of holysheep-trio). If it cannot be installed or run, that
   row says so and the benchmark goes on.

Usage::

    .venv/bin/python benchmarks/bench_budget.py [--quick] [--litellm-venv PATH] [--no-litellm]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

import holysheep_trio as hs
from holysheep_trio.budget import Budget
from holysheep_trio.ledger import HoldRequest, SettleRequest, SQLiteLedger

REQUEST = {"model": "gpt-4.1", "prompt_bound": 200, "max_output_tokens": 100, "expires_in": 60.0}
USAGE = hs.Usage(prompt_tokens=150, completion_tokens=80, total_tokens=230)
DONE = hs.AttemptBill(billable=True, completed=True, usage=USAGE, completion_tokens=80)
DEFAULT_VENV = Path(tempfile.gettempdir()) / "holysheep-bench-litellm"

RunOne = Callable[[], Awaitable[None]]


# --------------------------------------------------------------------------- overhead


def budgeted(budget: Budget) -> RunOne:
    async def run_one() -> None:
        reservation = await budget.reserve(**REQUEST)  # type: ignore[arg-type]
        await trio.lowlevel.checkpoint()  # the request itself
        await reservation.settle(DONE)

    return run_one


async def bare() -> None:
    await trio.lowlevel.checkpoint()


def inline_sqlite(budget: Budget) -> RunOne:
    """The same two transactions, run on the event loop itself (reference only)."""
    ledger = budget.ledger
    assert isinstance(ledger, SQLiteLedger)
    counter = iter(range(10**9))
    amount = int(budget.worst_case(model="gpt-4.1", prompt_bound=200, max_output_tokens=100) * 1e12)

    async def run_one() -> None:
        now = ledger._calendar.now()
        periods = ledger._calendar.periods(now)
        reservation_id = f"inline-{next(counter)}"
        ledger._hold_sync(
            HoldRequest(
                reservation_id=reservation_id,
                owner="bench",
                model="gpt-4.1",
                amount=amount,
                expires_in=60.0,
                limits=budget._limits,
            ),
            now.timestamp(),
            periods,
        )
        await trio.lowlevel.checkpoint()
        ledger._settle_sync(
            SettleRequest(reservation_id=reservation_id, model="gpt-4.1", charge=None),
            now.timestamp(),
            periods,
        )

    return run_one


async def timed_round(run_one: RunOne, requests: int, concurrency: int) -> float:
    """Seconds per request for ``requests`` requests, ``concurrency`` at a time."""
    per_task = requests // concurrency

    async def worker() -> None:
        for _ in range(per_task):
            await run_one()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return (time.perf_counter() - start) / (per_task * concurrency)


async def overhead_section(quick: bool) -> dict[str, Any]:
    rounds, requests = (5, 200) if quick else (15, 500)
    results: dict[str, Any] = {}
    print("## Budget work per request: reserve + settle (medians of interleaved rounds, µs)")
    print(f"{'ledger':<44}{'conc':>6}{'bare':>10}{'budgeted':>12}{'overhead':>12}")
    with tempfile.TemporaryDirectory() as directory:
        async with (
            hs.open_budget(daily=10**6, ledger="memory://") as memory,
            hs.open_budget(daily=10**6, ledger=f"sqlite:///{directory}/normal.db") as normal,
            hs.open_budget(
                daily=10**6, ledger=f"sqlite:///{directory}/full.db?synchronous=full"
            ) as full,
        ):
            variants: list[tuple[str, RunOne, tuple[int, ...]]] = [
                ("memory://", budgeted(memory), (1, 10)),
                ("sqlite:/// (worker thread; the design)", budgeted(normal), (1, 10)),
                ("sqlite:///?synchronous=full", budgeted(full), (1, 10)),
                ("sqlite:/// inline on the event loop (ref.)", inline_sqlite(normal), (1,)),
            ]
            for label, run_one, concurrencies in variants:
                for concurrency in concurrencies:
                    await timed_round(run_one, 50, concurrency)  # warm up
                    bare_times, budget_times = [], []
                    for index in range(rounds):
                        order = [(bare, bare_times), (run_one, budget_times)]
                        if index % 2:
                            order.reverse()
                        for function, sink in order:
                            sink.append(await timed_round(function, requests, concurrency))
                    bare_us = statistics.median(bare_times) * 1e6
                    budget_us = statistics.median(budget_times) * 1e6
                    overhead = budget_us - bare_us
                    results[f"{label} x{concurrency}"] = overhead
                    print(
                        f"{label:<44}{concurrency:>6}{bare_us:>10.1f}{budget_us:>12.1f}"
                        f"{overhead:>12.1f}"
                    )
    sqlite_overhead = results["sqlite:/// (worker thread; the design) x1"]
    verdict = "met" if sqlite_overhead < 1000 else "NOT met"
    print(
        f"SQLite adds {sqlite_overhead / 1000:.3f} ms per request, one at a time"
        f" (target < 1 ms: {verdict})"
    )
    print()
    return results


# --------------------------------------------------------------------------- overshoot


async def ours_overshoot(requests: int, fits: float) -> dict[str, Any]:
    async with hs.open_budget(daily=None, ledger="memory://") as probe:
        one = probe.worst_case(model="gpt-4.1", prompt_bound=200, max_output_tokens=100)
    limit = one * fits
    sent = refused = 0
    cut_short = hs.AttemptBill(billable=True, completed=False)  # counted at the worst case
    start = time.perf_counter()
    async with hs.open_budget(daily=limit, ledger="memory://") as budget:

        async def one_request() -> None:
            nonlocal sent, refused
            try:
                reservation = await budget.reserve(**REQUEST)  # type: ignore[arg-type]
            except hs.BudgetExceededError:
                refused += 1
                return
            sent += 1
            await trio.lowlevel.checkpoint()
            await reservation.settle(cut_short)

        async with trio.open_nursery() as nursery:
            for _ in range(requests):
                nursery.start_soon(one_request)
        spent = (await budget.report()).daily.spent
    return {
        "sent": sent,
        "refused": refused,
        "limit": limit,
        "spent": spent,
        "seconds": time.perf_counter() - start,
    }


LITELLM_CHILD = textwrap.dedent(
    """
    import asyncio, importlib.metadata, json, os, sys, time
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # the bundled price map: no network
    import litellm
    from litellm import Router

    REQUESTS, FITS = int(sys.argv[1]), float(sys.argv[2])
    MESSAGES = [{"role": "user", "content": "hi"}]
    REPLY = "x " * 100

    async def main():
        probe = await litellm.acompletion(
            model="openai/gpt-4.1", messages=MESSAGES, mock_response=REPLY, api_key="sk-fake")
        one = litellm.completion_cost(completion_response=probe)
        limit = one * FITS
        router = Router(
            model_list=[{"model_name": "gpt-4.1", "litellm_params": {
                "model": "openai/gpt-4.1", "api_key": "sk-fake", "mock_response": REPLY}}],
            provider_budget_config={"openai": {"budget_limit": limit, "time_period": "1d"}},
        )
        sent = refused = 0

        async def one_request():
            nonlocal sent, refused
            try:
                await router.acompletion(model="gpt-4.1", messages=MESSAGES)
                sent += 1
            except Exception:
                refused += 1

        start = time.perf_counter()
        await asyncio.gather(*[one_request() for _ in range(REQUESTS)])
        seconds = time.perf_counter() - start
        print(json.dumps({"sent": sent, "refused": refused, "limit": limit,
                          "spent": sent * one, "seconds": seconds,
                          "version": importlib.metadata.version("litellm")}))

    asyncio.run(main())
    """
)


def _litellm_python(venv: Path, install: bool) -> tuple[Path | None, str]:
    python = venv / "bin" / "python"
    if python.exists():
        check = subprocess.run(
            [str(python), "-c", "import litellm"], capture_output=True, text=True, check=False
        )
        if check.returncode == 0:
            return python, ""
    if not install:
        return None, f"no LiteLLM in {venv}"
    print(f"(installing LiteLLM into its own environment {venv}; once)", flush=True)
    made = subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, check=False
    )
    if made.returncode != 0:
        return None, f"cannot create {venv}: {made.stderr.strip()[:200]}"
    try:
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "litellm"],
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
    except subprocess.TimeoutExpired:
        return None, "pip install litellm took longer than 15 minutes"
    if pip.returncode != 0:
        lines = [line for line in pip.stderr.splitlines() if "ignored" not in line]
        return None, "pip install litellm failed: " + " / ".join(lines[-3:])[:300]
    return python, ""


def litellm_overshoot(venv: Path, requests: int, fits: float) -> dict[str, Any] | str:
    python, problem = _litellm_python(venv, install=True)
    if python is None:
        return problem
    with tempfile.TemporaryDirectory() as directory:
        script = Path(directory) / "litellm_child.py"
        script.write_text(LITELLM_CHILD)
        try:
            done = subprocess.run(
                [str(python), str(script), str(requests), str(fits)],
                capture_output=True,
                text=True,
                check=False,
                timeout=600,
                cwd=directory,
                env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            )
        except subprocess.TimeoutExpired:
            return "LiteLLM's run took longer than 10 minutes"
    if done.returncode != 0:
        return "LiteLLM's run failed: " + done.stderr.strip().splitlines()[-1][:300]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def overshoot_section(quick: bool, venv: Path | None) -> None:
    requests, fits = 1000, 5.5
    print(f"## Overshoot: {requests:,} concurrent requests, a budget that fits {fits} of them")
    print(f"{'budget':<48}{'sent':>7}{'refused':>9}{'spent / limit':>16}{'s':>8}")
    rows: list[tuple[str, dict[str, Any] | str]] = [
        ("holysheep-trio open_budget (memory)", trio.run(ours_overshoot, requests, fits))
    ]
    if venv is None:
        rows.append(("LiteLLM Router provider_budget_config", "skipped (--no-litellm)"))
    else:
        rows.append(
            ("LiteLLM Router provider_budget_config", litellm_overshoot(venv, requests, fits))
        )
    for label, result in rows:
        if isinstance(result, str):
            print(f"{label:<48}skipped: {result}")
            continue
        ratio = result["spent"] / result["limit"]
        print(
            f"{label:<48}{result['sent']:>7}{result['refused']:>9}{ratio:>15.2f}x"
            f"{result['seconds']:>8.2f}"
        )
        if "version" in result:
            print(f"  (LiteLLM {result['version']}, mock responses, no network)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument(
        "--litellm-venv",
        type=Path,
        default=DEFAULT_VENV,
        help="LiteLLM's own virtual environment, created when missing (%(default)s)",
    )
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM row")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, trio {trio.__version__}, sqlite {_sqlite_version()}")
    trio.run(overhead_section, args.quick)
    overshoot_section(args.quick, None if args.no_litellm else args.litellm_venv)


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


if __name__ == "__main__":
    main()
