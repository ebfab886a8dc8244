# The holysheep-trio command line: argparse subcommands chat, bench, models, usage and serve.
"""The ``holysheep-trio`` command (also ``python -m holysheep_trio``).

Adding a command: write ``_add_<name>(subparsers)`` that builds its parser and sets
``handler=<function(args) -> int>`` with ``set_defaults``, then append it to ``_COMMANDS``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Final

# Only cheap imports here: `main` must be running, with its Ctrl-C guard, before the heavy ones
# (trio, httpx2, rich: about 100 ms) start, or a Ctrl-C then prints a traceback (docs/cli.md).
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:  # pragma: no cover - trio depends on this backport below 3.11
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

#: 128 + SIGINT; the same as ``_commands.EXIT_INTERRUPTED``, not imported from there because
#: that module is one of the slow imports the Ctrl-C guard must cover.
_EXIT_INTERRUPTED: Final = 130
_HIGHEST_PORT: Final = 65535


def _only_interrupts(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C, possibly wrapped in exception groups (with trio's Cancelled)."""
    if isinstance(exc, BaseExceptionGroup):
        import trio  # only trio makes these groups, so it is loaded already

        leaves = exc.exceptions
        return any(_is_interrupt(leaf) for leaf in leaves) and all(
            _is_interrupt(leaf) or isinstance(leaf, trio.Cancelled) for leaf in leaves
        )
    return isinstance(exc, KeyboardInterrupt)


def _is_interrupt(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, BaseExceptionGroup) and _only_interrupts(exc)
    )


def _interrupted_exit_code(argv: Sequence[str]) -> int:
    """The exit code of a Ctrl-C: 0 for ``serve`` (its normal end), else 130.

    Read from the raw arguments, as the Ctrl-C may come before argparse has run. The command is
    the first argument that is not an option (the top-level parser has only ``--help``).
    """
    command = next((argument for argument in argv if not argument.startswith("-")), None)
    return 0 if command == "serve" else _EXIT_INTERRUPTED


# ---- serve ---------------------------------------------------------------------------------


def _port(text: str) -> int:
    """An argparse type: a TCP port number, 0-65535 (the socket layer would wrap others)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= _HIGHEST_PORT:
        raise argparse.ArgumentTypeError(f"must be between 0 and {_HIGHEST_PORT}, got {value}")
    return value


def _positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _capacity(text: str) -> int | dict[str, int | None]:
    """An argparse type: ``N`` for every model, or ``MODEL=N[,MODEL=N...]`` (``none`` lifts
    a limit), as ``open_simulator(capacity=...)`` takes them."""
    import argparse

    if "=" not in text:
        return _positive(text)
    limits: dict[str, int | None] = {}
    for item in text.split(","):
        model, _, value = (part.strip() for part in item.partition("="))
        if not model or not value:
            raise argparse.ArgumentTypeError(f"expected MODEL=N, got {item.strip()!r}")
        limits[model] = None if value.lower() == "none" else _positive(value)
    return limits


def _reply_tokens(text: str) -> int | str:
    """An argparse type: a whole number >= 1, or ``max``."""
    return "max" if text.strip().lower() == "max" else _positive(text)


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
        "--port", type=_port, default=8080, help="port to listen on, 0 for any free (%(default)s)"
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
    parser.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="processes serving the port, sharing it with SO_REUSEPORT (%(default)s)",
    )
    parser.add_argument(
        "--capacity",
        type=_capacity,
        default=None,
        metavar="N|MODEL=N,...",
        help="hidden concurrency limit per model (per worker); beyond it requests get a 429",
    )
    parser.add_argument(
        "--reply-tokens",
        type=_reply_tokens,
        default=None,
        metavar="N|max",
        help="length of text replies: exactly N tokens, or 'max' to run to max_tokens "
        "(default: natural lengths)",
    )
    parser.add_argument(
        "--no-snapshots",
        dest="snapshots",
        action="store_false",
        help="answer `model` with the requested id, not the dated snapshot",
    )
    parser.add_argument(
        "--websocket-max-age",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="age at which WebSocket connections are closed (%(default)s)",
    )
    parser.set_defaults(handler=_serve)


async def _serve_until_interrupted(args: argparse.Namespace) -> None:
    import signal

    import trio

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
            workers=args.workers,
            capacity=args.capacity,
            reply_tokens=args.reply_tokens,
            snapshots=args.snapshots,
            websocket_max_age=args.websocket_max_age,
        ) as sim:
            print(sim.base_url, flush=True)
            models = ", ".join(sim.profile.models)
            workers = f", {sim.workers} workers" if sim.workers > 1 else ""
            print(
                f"holysheep-trio simulator: profile {sim.profile.name}, models {models}{workers}; "
                "Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            async for _ in signals:
                break


def _serve(args: argparse.Namespace) -> int:
    import trio

    try:
        trio.run(_serve_until_interrupted, args)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(
            f"holysheep-trio serve: cannot listen on {args.host}:{args.port}: {reason}",
            file=sys.stderr,
        )
        return 1
    except (ValueError, RuntimeError) as exc:
        # A capacity for an unknown model, a bad age, no SO_REUSEPORT for --workers.
        print(f"holysheep-trio serve: {exc}", file=sys.stderr)
        return 1
    return 0


# ---- entry point ---------------------------------------------------------------------------


def _add_chat(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ._commands import add_chat_parser

    add_chat_parser(subparsers)


def _add_bench(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ._commands import add_bench_parser

    add_bench_parser(subparsers)


def _add_models(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ._commands import add_models_parser

    add_models_parser(subparsers)


def _add_usage(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ._commands import add_usage_parser

    add_usage_parser(subparsers)


_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_chat,
    _add_bench,
    _add_models,
    _add_usage,
    _add_serve,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand.

    Returns:
        The parser; each subcommand sets ``handler`` (``(args) -> exit code``).
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="holysheep-trio",
        description="Trio client, simulator and tools for OpenAI-compatible streaming chat APIs.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in _COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (the ``holysheep-trio`` script and ``python -m holysheep_trio``).

    Args:
        argv: Arguments without the program name. ``None`` means ``sys.argv[1:]`` and that
            this call is the whole program: then, once the command is done, Ctrl-C is ignored
            for the rest of the process, so a late one cannot change the exit code.

    Returns:
        The exit code: 0 on success, 1 on errors, 2 for bad options (argparse exits with it),
        130 on Ctrl-C, also one that comes while the modules load, except for ``serve``,
        where Ctrl-C is the normal way to stop and gives 0.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(arguments)
        handler: Callable[[argparse.Namespace], int] = args.handler
        code = handler(args)
    except BaseException as exc:
        # Ctrl-C is how a user stops a command: no traceback, also when trio delivers the
        # KeyboardInterrupt inside an ExceptionGroup or it comes while trio is still loading.
        if not _only_interrupts(exc):
            raise
        code = _interrupted_exit_code(arguments)
    if argv is None:
        _ignore_interrupts()
    return code


def _ignore_interrupts() -> None:
    # Only exiting is left. A Ctrl-C now (say the second of a quick double press) would raise
    # KeyboardInterrupt during interpreter shutdown, or, once Python has put back the default
    # action there, kill the process: exit status -2 instead of the documented code. Python
    # keeps an "ignore" set at the OS level through shutdown; a Python handler it does not.
    import contextlib
    import signal

    # ValueError: not the main thread, whose signals are not ours to set.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
