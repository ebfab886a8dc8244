# The holysheep-trio command line: argparse subcommands chat, bench, models and serve.
"""The ``holysheep-trio`` command (also ``python -m holysheep_trio``).

Adding a command: write ``_add_<name>(subparsers)`` that builds its parser and sets
``handler=<function(args) -> int>`` with ``set_defaults``, then append it to ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence

import trio

from ._commands import add_bench_parser, add_chat_parser, add_models_parser

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:  # pragma: no cover - trio depends on this backport below 3.11
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]


def _only_interrupts(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C, possibly wrapped in exception groups (with trio's Cancelled)."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = exc.exceptions
        return any(_is_interrupt(leaf) for leaf in leaves) and all(
            _is_interrupt(leaf) or isinstance(leaf, trio.Cancelled) for leaf in leaves
        )
    return isinstance(exc, KeyboardInterrupt)


def _is_interrupt(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, BaseExceptionGroup) and _only_interrupts(exc)
    )


# ---- serve ---------------------------------------------------------------------------------


def _add_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the OpenAI-compatible simulator",
        description=(
            "Run the OpenAI-compatible streaming simulator until Ctrl-C. The first line of "
            "output is its base URL. Faults: send an X-Simulator-Fault header (see "
            "docs/simulator.md)."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port to listen on, 0 for any free (%(default)s)"
    )
    parser.add_argument(
        "--profile",
        default="realistic",
        choices=["realistic", "fast"],
        help="model profile: realistic latencies or no delays (%(default)s)",
    )
    parser.add_argument(
        "--api-key",
        default="sk-simulator",
        help="the key clients must send as 'Authorization: Bearer <key>' (default: sk-simulator)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the latency draws (0)")
    parser.set_defaults(handler=_serve)


async def _serve_until_interrupted(args: argparse.Namespace) -> None:
    from .simulator import open_simulator

    # Ctrl-C and SIGTERM end the server through a signal receiver, so shutdown is a normal
    # return, not a KeyboardInterrupt raised wherever trio happens to be.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_simulator(
            api_key=args.api_key,
            profile=args.profile,
            host=args.host,
            port=args.port,
            seed=args.seed,
        ) as sim:
            print(sim.base_url, flush=True)
            models = ", ".join(sim.profile.models)
            print(
                f"holysheep-trio simulator: profile {sim.profile.name}, models {models}; "
                "Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            async for _ in signals:
                break


def _serve(args: argparse.Namespace) -> int:
    try:
        trio.run(_serve_until_interrupted, args)
    except OSError as exc:
        print(
            f"holysheep-trio serve: cannot listen on {args.host}:{args.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    return 0


# ---- entry point ---------------------------------------------------------------------------

_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    add_chat_parser,
    add_bench_parser,
    add_models_parser,
    _add_serve,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand.

    Returns:
        The parser; each subcommand sets ``handler`` (``(args) -> exit code``).
    """
    parser = argparse.ArgumentParser(
        prog="holysheep-trio",
        description="Trio client, simulator and tools for OpenAI-compatible streaming chat APIs.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in _COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when ``None``.

    Returns:
        The exit code: 0 on success and on Ctrl-C, non-zero on errors.
    """
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except BaseException as exc:
        # Ctrl-C is how a user stops a command: exit 0 without a traceback, also when trio
        # delivers the KeyboardInterrupt inside an ExceptionGroup.
        if _only_interrupts(exc):
            return 0
        raise
