# The `chat`, `bench`, `models` and `usage` commands of the CLI; cli.py registers them.
"""The ``chat``, ``bench``, ``models`` and ``usage`` subcommands of ``holysheep-trio``.

Each ``add_<name>_parser(subparsers)`` registers one subcommand and sets its ``handler``
(``(args) -> exit code``), as :mod:`holysheep_trio.cli` expects.

Shared behaviour (docs/cli.md):

- **Where requests go.** ``$HOLYSHEEP_API_KEY`` set: the real API at ``--base-url``, else
  ``$HOLYSHEEP_BASE_URL``, else ``https://api.holysheep.ai/v1``. No key and no URL: an
  in-process simulator on 127.0.0.1 (``--profile``, ``realistic`` by default). No key but a
  URL: that URL with the simulator's public key ``sk-simulator`` (so ``holysheep-trio serve``
  elsewhere works). The first line on stderr always says which; the key itself is never
  printed, and there is deliberately no ``--api-key`` option (it would show in ``ps``).
- **Errors** print one line, ``holysheep-trio <command>: <kind> error: <message>``, on stderr
  and exit with 1; never a traceback.
- **Ctrl-C** cancels the work cleanly (streams closed, simulator stopped), prints what was
  done so far (the partial reply, the partial benchmark table) and exits with 130, the shell's
  convention for "stopped by SIGINT", so scripts can tell an interrupted run from a complete
  one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from .bench import (
    DEFAULT_MODELS,
    DEFAULT_PROMPT,
    BenchConfig,
    BenchReport,
    BenchRun,
    plotting_available,
    run_benchmark,
    streaming_rate,
    write_plot,
)
from .errors import (
    APIConnectionError,
    APITimeoutError,
    ConfigurationError,
    HolySheepError,
    _shown_url,
)
from .prices import cost, format_usd

if TYPE_CHECKING:
    from rich.table import Table

    from .models import Usage

if sys.version_info < (3, 11):  # pragma: no cover - trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "SIMULATOR_API_KEY",
    "add_bench_parser",
    "add_chat_parser",
    "add_models_parser",
    "add_usage_parser",
    "format_usage",
    "list_models",
]

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
#: 128 + SIGINT, what shells report for a command stopped by Ctrl-C.
EXIT_INTERRUPTED: Final = 130
#: The key the embedded simulator accepts; public, not a secret (``serve`` uses it too).
SIMULATOR_API_KEY: Final = "sk-simulator"
PROG: Final = "holysheep-trio"
#: Bound on the model-list request (it is one small JSON document).
_MODELS_TIMEOUT: Final = 30.0

_Subparsers = argparse._SubParsersAction  # the type argparse gives add_subparsers() results
#: The wire formats `chat` and `bench` speak (``--api``).
API_CHOICES: Final = ("chat", "responses")


# ---- shared plumbing -----------------------------------------------------------------------


def _say(command: str, text: str) -> None:
    print(f"{PROG} {command}: {text}", file=sys.stderr, flush=True)


def _sole(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _error_line(command: str, exc: HolySheepError, secrets: Sequence[str] = ()) -> str:
    text = " ".join(str(exc).split())  # one line, whatever the server put in its message
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    # Messages that name their kind already ("network error (ConnectError): refused") would
    # read "network error: network error (...)": keep the kind once, then the rest.
    prefix = f"{exc.kind} error"
    if text.startswith(prefix):
        text = text.removeprefix(prefix).lstrip()
        if text.startswith("(") and "): " in text:
            name, _, rest = text[1:].partition("): ")
            text = f"{name}: {rest}"
        text = text.removeprefix(":").lstrip()
    return f"{PROG} {command}: {exc.kind} error: {text}"


@attrs.frozen(kw_only=True)
class _Interrupt:
    """Ctrl-C as a cancel scope: the command puts its interruptible work inside ``scope``."""

    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    @property
    def happened(self) -> bool:
        return self.scope.cancel_called


async def _with_interrupts(main: Callable[[_Interrupt], Awaitable[int]]) -> int:
    interrupt = _Interrupt()
    if threading.current_thread() is not threading.main_thread():
        # Signals reach the main thread only (an embedding application's own business).
        return await main(interrupt)
    code = EXIT_INTERRUPTED  # kept if a second Ctrl-C cancels `main` itself
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                # The first Ctrl-C cancels the work (the command then reports what it has);
                # a second one also stops that reporting.
                async for _ in signals:
                    if interrupt.scope.cancel_called:
                        nursery.cancel_scope.cancel()
                    interrupt.scope.cancel()

            nursery.start_soon(watch)
            code = await main(interrupt)
            nursery.cancel_scope.cancel()
    return code


def _exit_interrupted(signum: int, frame: FrameType | None) -> None:
    # A second Ctrl-C while the first one's report is printed (or the process exits): stop at
    # once, skipping the rest of the report, with the code the first one promised (docs/cli.md).
    # No flushing: this runs between two bytecodes, maybe inside a write to the same stream.
    os._exit(EXIT_INTERRUPTED)


def _run(command: str, main: Callable[[_Interrupt], Awaitable[int]]) -> int:
    """Run ``main`` in trio; a library error becomes one line and exit 1, Ctrl-C exit 130.

    After a Ctrl-C, a second one ends the process at once with 130 (see _exit_interrupted);
    the handler stays installed, since the command is about to exit anyway.
    """
    code = _run_in_trio(command, main)
    if code == EXIT_INTERRUPTED and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _exit_interrupted)
    return code


def _run_in_trio(command: str, main: Callable[[_Interrupt], Awaitable[int]]) -> int:
    from .cli import _only_interrupts  # imported here: cli imports this module

    try:
        return trio.run(_with_interrupts, main)
    except BaseException as raised:
        exc = _sole(raised)
        if isinstance(exc, HolySheepError):
            print(_error_line(command, exc, _secrets()), file=sys.stderr, flush=True)
            return EXIT_ERROR
        if isinstance(exc, BrokenPipeError):
            # The reader went away (`| head`): stop quietly. Python's own advice: point
            # stdout at devnull so the interpreter's final flush does not fail again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_ERROR
        if _only_interrupts(raised):
            # A Ctrl-C that arrived outside the signal receiver (start-up, shutdown).
            return EXIT_INTERRUPTED
        raise


def _secrets() -> tuple[str, ...]:
    key = os.environ.get("HOLYSHEEP_API_KEY")
    return (key,) if key else ()


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url",
        default=None,
        help="the API to talk to (default: $HOLYSHEEP_BASE_URL, else the HolySheep API with "
        "$HOLYSHEEP_API_KEY, else a built-in simulator)",
    )
    parser.add_argument(
        "--profile",
        default="realistic",
        choices=["realistic", "fast"],
        help="profile of the built-in simulator used without an API key (%(default)s)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


@attrs.frozen(kw_only=True)
class _Target:
    """Where requests go. The key is kept out of the repr."""

    api_key: str = attrs.field(repr=False)
    base_url: str | None
    description: str


@asynccontextmanager
async def _open_target(command: str, args: argparse.Namespace) -> AsyncIterator[_Target]:
    """Decide where requests go, start the simulator if needed, and say so on the first line."""
    key = os.environ.get("HOLYSHEEP_API_KEY") or None
    url = args.base_url or os.environ.get("HOLYSHEEP_BASE_URL") or None
    if key is None and url is None:
        from .simulator import open_simulator

        async with open_simulator(api_key=SIMULATOR_API_KEY, profile=args.profile) as sim:
            description = f"built-in simulator ({args.profile} profile) at {sim.base_url}"
            _say(command, f"no HOLYSHEEP_API_KEY set: using the {description}")
            yield _Target(api_key=SIMULATOR_API_KEY, base_url=sim.base_url, description=description)
        return
    if key is None:
        assert url is not None  # the first branch took the case of neither
        shown = _shown_url(url)
        _say(command, f"no HOLYSHEEP_API_KEY set: using {shown} with the simulator key")
        yield _Target(api_key=SIMULATOR_API_KEY, base_url=url, description=shown)
        return
    from .client import DEFAULT_BASE_URL

    shown = _shown_url(url or DEFAULT_BASE_URL)
    _say(command, f"using {shown} (key from HOLYSHEEP_API_KEY)")
    yield _Target(api_key=key, base_url=url, description=shown)


# ---- chat ----------------------------------------------------------------------------------


def add_chat_parser(subparsers: _Subparsers[argparse.ArgumentParser]) -> None:
    """Register ``chat``: stream one reply to stdout, then its numbers to stderr.

    Args:
        subparsers: The result of ``ArgumentParser.add_subparsers()``.
    """
    parser = subparsers.add_parser(
        "chat",
        help="stream a reply to a prompt",
        description=(
            "Stream the model's reply to stdout as it arrives; print the model, time to first "
            "token, tokens per second and cost to stderr at the end. Without HOLYSHEEP_API_KEY "
            "it talks to a built-in simulator."
        ),
    )
    parser.add_argument("prompt", help="the user message ('-' reads it from stdin)")
    parser.add_argument("--model", default="gpt-4.1", help="the model (%(default)s)")
    parser.add_argument(
        "--max-tokens", type=_positive_int, default=None, help="cap on the reply's length"
    )
    parser.add_argument("--system", default=None, help="a system message")
    _add_api_option(parser)
    _add_target_options(parser)
    parser.set_defaults(handler=_chat)


def _add_api_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api",
        choices=API_CHOICES,
        default="chat",
        help=(
            "the API: chat completions (POST /chat/completions) or the Responses API "
            "(POST /responses); default %(default)s"
        ),
    )


def _chat(args: argparse.Namespace) -> int:
    prompt: str = args.prompt
    if prompt == "-":
        # Read before trio runs (a worker thread blocked on stdin could not be cancelled), so
        # Ctrl-C here is a plain KeyboardInterrupt: the same outcome as one during the reply.
        try:
            prompt = sys.stdin.read()
        except KeyboardInterrupt:
            _say("chat", "interrupted")
            return EXIT_INTERRUPTED
    return _run("chat", lambda interrupt: _chat_main(args, prompt, interrupt))


async def _chat_main(args: argparse.Namespace, prompt: str, interrupt: _Interrupt) -> int:
    if args.api == "responses":
        return await _respond_main(args, prompt, interrupt)
    from .client import open_client

    messages = [] if args.system is None else [{"role": "system", "content": args.system}]
    messages.append({"role": "user", "content": prompt})
    params: dict[str, Any] = {}
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    ends_with_newline = True
    try:
        with interrupt.scope:
            async with (
                _open_target("chat", args) as target,
                open_client(api_key=target.api_key, base_url=target.base_url) as client,
                client.stream_chat(model=args.model, messages=messages, **params) as stream,
            ):
                async for chunk in stream:
                    text = chunk.text
                    if text:
                        sys.stdout.write(text)
                        sys.stdout.flush()
                        ends_with_newline = text.endswith("\n")
    finally:
        # Also after a failure mid-reply, so the error line starts on a line of its own.
        if not ends_with_newline:
            print(flush=True)
    if interrupt.happened:
        _say("chat", "interrupted")
        return EXIT_INTERRUPTED
    _say("chat", _chat_summary(args.model, stream.completion))
    return EXIT_OK


async def _respond_main(args: argparse.Namespace, prompt: str, interrupt: _Interrupt) -> int:
    """``chat --api responses``: the same reply through ``client.stream_response``."""
    from ._responses_stream import chat_usage
    from .client import open_client
    from .responses import OutputTextDelta, RefusalDelta

    ends_with_newline = True
    try:
        with interrupt.scope:
            async with (
                _open_target("chat", args) as target,
                open_client(api_key=target.api_key, base_url=target.base_url) as client,
                client.stream_response(
                    model=args.model,
                    input=prompt,
                    instructions=args.system,
                    max_output_tokens=args.max_tokens,
                ) as stream,
            ):
                async for event in stream:
                    # The answer and a refusal are what a reader sees; reasoning summaries
                    # and function-call arguments are not printed.
                    if isinstance(event, OutputTextDelta | RefusalDelta) and event.delta:
                        sys.stdout.write(event.delta)
                        sys.stdout.flush()
                        ends_with_newline = event.delta.endswith("\n")
    finally:
        if not ends_with_newline:
            print(flush=True)
    if interrupt.happened:
        _say("chat", "interrupted")
        return EXIT_INTERRUPTED
    response = stream.response
    usage = None if response.usage is None else chat_usage(response.usage)
    summary = _summary(
        args.model,
        model=response.model,
        ttft=response.ttft,
        duration=response.duration,
        usage=usage,
    )
    if response.status not in (None, "completed"):
        details = response.incomplete_details
        reason = "" if details is None or details.reason is None else f" ({details.reason})"
        summary += f", status {response.status}{reason}"
    _say("chat", summary)
    return EXIT_OK


def _chat_summary(requested: str, completion: Any) -> str:
    return _summary(
        requested,
        model=completion.model,
        ttft=completion.ttft,
        duration=completion.duration,
        usage=completion.usage,
    )


def _summary(
    requested: str, *, model: str, ttft: float | None, duration: float, usage: Usage | None
) -> str:
    parts = [f"model {model or requested}"]
    parts.append("TTFT n/a" if ttft is None else f"TTFT {ttft:.3f} s")
    if usage is None:
        parts += ["tokens/s unknown (no usage)", "cost unknown (no usage)"]
        return ", ".join(parts)
    rate = streaming_rate(usage.completion_tokens, ttft=ttft, duration=duration)
    parts.append("tokens/s n/a" if rate is None else f"{rate:.1f} tokens/s")
    parts.append(f"tokens {usage.prompt_tokens} in / {usage.completion_tokens} out")
    amount = cost(requested, usage)
    if amount is None and model:
        amount = cost(model, usage)
    parts.append(f"cost {format_usd(amount)}")
    return ", ".join(parts)


# ---- bench ---------------------------------------------------------------------------------


def add_bench_parser(subparsers: _Subparsers[argparse.ArgumentParser]) -> None:
    """Register ``bench``: TTFT, tokens/s and errors per model, with a progress bar and a table.

    Args:
        subparsers: The result of ``ArgumentParser.add_subparsers()``.
    """
    parser = subparsers.add_parser(
        "bench",
        help="measure TTFT, tokens/s and errors per model",
        description=(
            "Send --runs streamed requests per model, --concurrency at a time, and print time "
            "to first token (avg/min/p50/p95/max), tokens per second (from usage, not network "
            "chunks) and errors by kind. Without HOLYSHEEP_API_KEY it measures a built-in "
            "simulator."
        ),
    )
    parser.add_argument(
        "--runs", type=_positive_int, default=20, help="requests per model (%(default)s)"
    )
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        default=None,
        metavar="MODEL",
        help=f"a model to measure; repeat for several (default: {', '.join(DEFAULT_MODELS)})",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=4,
        help="requests in flight at once, over all models (%(default)s)",
    )
    parser.add_argument(
        "--max-tokens", type=_positive_int, default=100, help="max_tokens per request (%(default)s)"
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the user message")
    _add_api_option(parser)
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the report here")
    parser.add_argument(
        "--plot",
        default=None,
        metavar="PATH",
        help="also draw TTFT (an ECDF per model) and tokens/s into this PNG (needs the plot extra)",
    )
    _add_target_options(parser)
    parser.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    try:
        import rich  # noqa: F401  (only checking that the `cli` extra is there)
    except ImportError:
        _say("bench", "the progress bar and table need rich: pip install 'holysheep-trio[cli]'")
        return EXIT_ERROR
    if args.plot is not None and not plotting_available():
        _say("bench", "--plot needs matplotlib: pip install 'holysheep-trio[plot]'")
        return EXIT_ERROR
    try:
        config = BenchConfig(
            models=tuple(dict.fromkeys(args.models or DEFAULT_MODELS)),
            runs=args.runs,
            concurrency=args.concurrency,
            max_tokens=args.max_tokens,
            prompt=args.prompt,
            api=args.api,
        )
    except ValueError as exc:
        _say("bench", f"invalid_request error: {exc}")
        return EXIT_ERROR
    reports: list[BenchReport] = []
    code = _run("bench", lambda interrupt: _bench_main(args, config, interrupt, reports))
    if not reports:
        return code
    return _bench_output(args, reports[0], code)


async def _bench_main(
    args: argparse.Namespace,
    config: BenchConfig,
    interrupt: _Interrupt,
    reports: list[BenchReport],
) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from .client import open_client

    runs: list[BenchRun] = []
    total = config.runs * len(config.models)
    console = Console(stderr=True)
    # Off when stderr is not a terminal: a file or CI log gets no redraws, just the table.
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[errors]} errors"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    task = progress.add_task(f"{len(config.models)} models", total=total, errors=0)
    errors = 0

    def on_run(run: BenchRun) -> None:
        nonlocal errors
        runs.append(run)
        errors += not run.ok
        progress.update(task, advance=1, errors=errors)

    target_text = ""
    start = trio.current_time()
    with interrupt.scope:
        async with (
            _open_target("bench", args) as target,
            open_client(api_key=target.api_key, base_url=target.base_url) as client,
        ):
            target_text = target.description
            with progress:
                report = await run_benchmark(client, config, on_run=on_run, target=target_text)
            reports.append(report)
    if interrupt.happened and not reports:
        reports.append(
            BenchReport.from_runs(
                runs,
                config=config,
                wall_time=trio.current_time() - start,
                target=target_text,
                interrupted=True,
            )
        )
        return EXIT_INTERRUPTED
    return EXIT_OK


def _bench_output(args: argparse.Namespace, report: BenchReport, code: int) -> int:
    from rich.console import Console

    # A pipe or file gets a wide, plain table rather than one squeezed into 80 columns.
    # Model names and URLs are data, not rich markup or emoji codes.
    console = Console(
        highlight=False,
        markup=False,
        emoji=False,
        width=None if sys.stdout.isatty() else 160,
    )
    console.print(_report_table(report))
    console.print(_report_footer(report))
    if args.json is not None:
        try:
            Path(args.json).write_text(
                json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8"
            )
        except OSError as exc:
            _say("bench", f"cannot write {args.json}: {exc.strerror or exc}")
            return EXIT_ERROR
        _say("bench", f"wrote {args.json}")
    if args.plot is not None:
        try:
            write_plot(report, args.plot)
        except (OSError, ValueError) as exc:  # ValueError: a suffix matplotlib cannot draw
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            _say("bench", f"cannot write {args.plot}: {reason}")
            return EXIT_ERROR
        _say("bench", f"wrote {args.plot}")
    if report.interrupted:
        _say("bench", f"interrupted after {len(report.runs)} runs")
        return EXIT_INTERRUPTED
    if report.runs and report.succeeded == 0:
        first = report.runs[0]
        _say("bench", f"every run failed; first error: {first.error_kind} error: {first.error}")
        return EXIT_ERROR
    return code


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def _report_table(report: BenchReport) -> Table:
    from rich.table import Table

    title = f"holysheep-trio bench: {report.target}" if report.target else "holysheep-trio bench"
    if report.config.api == "responses":
        title += " (Responses API)"
    table = Table(title=title, title_justify="left")
    table.add_column("model")
    for name in ("runs", "ok", "TTFT avg", "min", "p50", "p95", "max", "tok/s avg", "tok/s p50"):
        table.add_column(name, justify="right")
    table.add_column("errors")
    for summary in report.models:
        ttft = summary.ttft
        rate = summary.tokens_per_second
        ttft_cells = (
            ["-"] * 5
            if ttft is None
            else [_ms(ttft.mean), _ms(ttft.min), _ms(ttft.p50), _ms(ttft.p95), _ms(ttft.max)]
        )
        rate_cells = ["-", "-"] if rate is None else [f"{rate.mean:.1f}", f"{rate.p50:.1f}"]
        errors = ", ".join(f"{kind} {count}" for kind, count in summary.errors.items())
        table.add_row(
            summary.model,
            str(summary.runs),
            str(summary.succeeded),
            *ttft_cells,
            *rate_cells,
            errors or "-",
        )
    table.caption = "TTFT in ms; tok/s = completion tokens per second after the first token"
    return table


def _report_footer(report: BenchReport) -> str:
    overall = report.tokens_per_second
    rate = "n/a" if overall is None else f"{overall:.1f}"
    return (
        f"{len(report.runs)} runs ({report.succeeded} ok) in {report.wall_time:.2f} s, "
        f"concurrency {report.config.concurrency}, max_tokens {report.config.max_tokens}: "
        f"{report.completion_tokens} tokens, {rate} tokens/s overall"
    )


# ---- models --------------------------------------------------------------------------------


def add_models_parser(subparsers: _Subparsers[argparse.ArgumentParser]) -> None:
    """Register ``models``: list the models of ``GET /v1/models``, one per line.

    Args:
        subparsers: The result of ``ArgumentParser.add_subparsers()``.
    """
    parser = subparsers.add_parser(
        "models",
        help="list the available models",
        description=(
            "List the models the API offers (GET /models): id and owner, one per line. "
            "Without HOLYSHEEP_API_KEY it asks a built-in simulator."
        ),
    )
    _add_target_options(parser)
    parser.set_defaults(handler=_models)


def _models(args: argparse.Namespace) -> int:
    return _run("models", lambda interrupt: _models_main(args, interrupt))


async def _models_main(args: argparse.Namespace, interrupt: _Interrupt) -> int:
    with interrupt.scope:
        async with _open_target("models", args) as target:
            models = await list_models(api_key=target.api_key, base_url=target.base_url)
        width = max((len(model_id) for model_id, _ in models), default=0)
        for model_id, owner in models:
            print(f"{model_id:<{width}}  {owner}".rstrip())
    return EXIT_INTERRUPTED if interrupt.happened else EXIT_OK


async def list_models(*, api_key: str, base_url: str | None) -> list[tuple[str, str]]:
    """``(id, owned_by)`` of every model ``GET {base_url}/models`` lists.

    Args:
        api_key: Sent as ``Authorization: Bearer``.
        base_url: The API root (``.../v1``); the default base URL when None.

    Returns:
        The models in the server's order.

    Raises:
        HolySheepError: with the kind of the failure (status, network, timeout, parse).
    """
    import httpx2

    from ._transport import TrioTransport
    from ._wire import parse_error_body
    from .client import DEFAULT_BASE_URL
    from .errors import StreamProtocolError, error_class_for_status

    root = (base_url or DEFAULT_BASE_URL).rstrip("/")
    if not root.startswith(("http://", "https://")):
        raise ConfigurationError(f"base URLs must start with http:// or https://, got {root!r}")
    try:
        with trio.fail_after(_MODELS_TIMEOUT):
            async with httpx2.AsyncClient(transport=TrioTransport()) as http:
                response = await http.get(
                    f"{root}/models",
                    headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
                )
    except trio.TooSlowError:
        raise APITimeoutError(
            "listing the models timed out", deadline="total", seconds=_MODELS_TIMEOUT
        ) from None
    except (httpx2.InvalidURL, httpx2.UnsupportedProtocol) as exc:
        raise ConfigurationError(f"bad base URL {root!r}: {exc}") from None
    except (httpx2.HTTPError, OSError) as exc:
        raise APIConnectionError(f"network error ({type(exc).__name__}): {exc}") from None
    body = response.content
    if not response.is_success:
        message, error_type, code = parse_error_body(body[:65536])
        raise error_class_for_status(response.status_code)(
            f"HTTP {response.status_code}: {message}",  # worded as the client words it
            status=response.status_code,
            error_type=error_type,
            code=code,
            request_id=response.headers.get("x-request-id"),
        )
    try:
        payload = json.loads(body)
        data = payload["data"]
        return [(str(item["id"]), str(item.get("owned_by", ""))) for item in data]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StreamProtocolError(
            "the model list is not an OpenAI-style JSON object", data=body
        ) from None


# ---- usage ---------------------------------------------------------------------------------


def add_usage_parser(subparsers: _Subparsers[argparse.ArgumentParser]) -> None:
    """Register ``usage``: print a budget ledger's today and this month.

    Args:
        subparsers: The result of ``ArgumentParser.add_subparsers()``.
    """
    parser = subparsers.add_parser(
        "usage",
        help="show what a budget ledger has spent",
        description=(
            "Print a budget ledger's day and month: limit, spent, reserved, remaining, and the "
            "usage per model this month. Reads the file only (nothing is sent, nothing written)."
        ),
    )
    parser.add_argument("--ledger", required=True, help="the ledger, sqlite:///PATH")
    parser.add_argument(
        "--timezone",
        default=None,
        help="the zone days are counted in; must match the ledger's (default: the ledger's)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(handler=_usage)


def _usage(args: argparse.Namespace) -> int:
    return _run("usage", lambda interrupt: _usage_main(args, interrupt))


async def _usage_main(args: argparse.Namespace, interrupt: _Interrupt) -> int:
    from .budget import read_usage

    with interrupt.scope:
        report = await read_usage(args.ledger, timezone=args.timezone)
    if interrupt.happened:
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_usage(report))
    return EXIT_OK


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> list[str]:
    """Plain text columns: the first ``left`` left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = []
    for row in (header, *rows):
        cells = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_usage(report: Any) -> str:
    """A :class:`~holysheep_trio.BudgetReport` as the ``usage`` command's tables.

    Args:
        report: The report.

    Returns:
        The text (no trailing newline).
    """

    def money(amount: float | None) -> str:
        return "-" if amount is None else format_usd(amount)

    periods = []
    for name, period in (("daily", report.daily), ("monthly", report.monthly)):
        used = "-" if period.percent_used is None else f"{period.percent_used:.1f}%"
        periods.append(
            [
                name,
                period.period,
                money(period.limit),
                money(period.spent),
                money(period.reserved),
                money(period.remaining),
                used,
                period.resets_at.strftime("%Y-%m-%d %H:%M %Z"),
            ]
        )
    lines = [
        f"ledger {report.ledger}, days in {report.timezone}, {report.in_flight} reservation(s)"
        " in flight",
        "",
        *_table(
            ["period", "", "limit", "spent", "reserved", "remaining", "used", "resets at"],
            periods,
            left=2,
        ),
        "",
    ]
    models = [
        [
            model,
            f"{usage.requests:,}",
            f"{usage.prompt_tokens:,}",
            f"{usage.completion_tokens:,}",
            format_usd(usage.cost),
            f"{usage.cancelled:,}",
            f"{usage.expired:,}",
        ]
        for model, usage in report.models.items()
    ]
    if models:
        header = ["model", "requests", "prompt tok", "completion tok", "cost", "cut short"]
        lines += _table([*header, "expired"], models)
    else:
        lines.append(f"no requests in {report.monthly.period}")
    return "\n".join(lines)
