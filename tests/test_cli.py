# Tests of the chat, bench and models commands: in-process against the simulator, Ctrl-C in a child.
from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from _pytest.capture import CaptureResult

from holysheep_trio import _commands, cli

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SECRET = "sk-cli-secret-do-not-print"


def build_parser() -> argparse.ArgumentParser:
    """The commands on their own parser, as cli.py registers them."""
    parser = argparse.ArgumentParser(prog="holysheep-trio")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _commands.add_chat_parser(subparsers)
    _commands.add_bench_parser(subparsers)
    _commands.add_models_parser(subparsers)
    return parser


def run_cli(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


def _wired() -> bool:
    """Whether cli.py registers these commands yet (then children run `python -m`)."""
    for action in cli.build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return "chat" in action.choices
    return False


WIRED = _wired()
# Until cli.py registers the commands, a child process registers them the same way itself.
_SHIM = (
    "import sys\n"
    "from holysheep_trio import _commands, cli\n"
    "cli._COMMANDS += [_commands.add_chat_parser, _commands.add_bench_parser,"
    " _commands.add_models_parser]\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


def child_command(*args: str) -> list[str]:
    if WIRED:
        return [sys.executable, "-m", "holysheep_trio", *args]
    return [sys.executable, "-c", _SHIM, *args]


@pytest.fixture(autouse=True)
def no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Also rich's switches, which would turn a captured stream into a "terminal".
    for name in ("HOLYSHEEP_API_KEY", "HOLYSHEEP_BASE_URL", "FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)


def stderr_lines(captured: CaptureResult[str]) -> list[str]:
    lines: list[str] = captured.err.splitlines()
    return lines


# ---- chat ----------------------------------------------------------------------------------


def test_chat_streams_the_reply_to_stdout_and_the_numbers_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run_cli(["chat", "hello", "--max-tokens", "12", "--profile", "fast"])
    captured = capsys.readouterr()
    assert code == 0
    lines = stderr_lines(captured)
    assert lines[0].startswith("holysheep-trio chat: no HOLYSHEEP_API_KEY set: using the built-in")
    assert "simulator (fast profile) at http://127.0.0.1:" in lines[0]
    summary = lines[-1]
    assert summary.startswith("holysheep-trio chat: model gpt-4.1-2025-04-14, TTFT ")
    assert "tokens/s" in summary
    assert "/ 12 out" in summary
    assert "cost $" in summary
    # stdout is the reply and nothing else: no notice, one final newline.
    assert captured.out.endswith("\n")
    assert not captured.out.endswith("\n\n")
    assert captured.out.strip()
    assert "holysheep-trio" not in captured.out
    assert len(lines) == 2


def test_chat_over_the_responses_api(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["chat", "hello", "--api", "responses", "--system", "be brief", "--max-tokens", "16"]
    code = run_cli([*argv, "--profile", "fast"])
    captured = capsys.readouterr()
    assert code == 0
    lines = stderr_lines(captured)
    assert len(lines) == 2
    summary = lines[-1]
    assert summary.startswith("holysheep-trio chat: model gpt-4.1-2025-04-14, TTFT ")
    assert "tokens/s" in summary
    assert "cost $" in summary
    assert captured.out.strip()
    assert captured.out.endswith("\n")
    assert "holysheep-trio" not in captured.out


def test_chat_over_the_responses_api_reports_incomplete_and_failures(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from holysheep_trio import simulator

    faults: list[str] = []
    original = simulator.open_simulator

    @asynccontextmanager
    async def open_with_faults(**kwargs: Any) -> AsyncIterator[simulator.Simulator]:
        async with original(reply_tokens="max", **kwargs) as sim:
            sim.inject_faults(*faults, endpoint="responses")
            yield sim

    monkeypatch.setattr(simulator, "open_simulator", open_with_faults)
    argv = ["chat", "hi", "--api", "responses", "--max-tokens", "16", "--profile", "fast"]
    assert run_cli(argv) == 0
    captured = capsys.readouterr()
    summary = stderr_lines(captured)[-1]
    assert " / 16 out, cost $" in summary
    assert summary.endswith(", status incomplete (max_output_tokens)")
    faults.append("failed_after=3")
    assert run_cli(argv) == 1
    captured = capsys.readouterr()
    assert captured.out.endswith("\n")  # the partial reply, then its own line end
    assert len(captured.out.strip()) > 0
    last = stderr_lines(captured)[-1]
    assert last.startswith("holysheep-trio chat: server error: stream interrupted after output")
    assert "Traceback" not in captured.err


def test_chat_reads_the_prompt_from_stdin_and_takes_a_system_message(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("a prompt from a pipe\n"))
    code = run_cli(
        ["chat", "-", "--system", "be brief", "--model", "deepseek-v3.2", "--profile", "fast"]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "model deepseek-v3.2" in stderr_lines(captured)[-1]
    assert captured.out.strip()


class _InterruptedStdin(io.StringIO):
    def read(self, size: int | None = -1) -> str:
        raise KeyboardInterrupt


def test_ctrl_c_while_reading_the_prompt_from_stdin_exits_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # It used to escape the guarded path and end as exit 0 with no message.
    monkeypatch.setattr(sys, "stdin", _InterruptedStdin())
    try:
        code = run_cli(["chat", "-", "--profile", "fast"])
    except KeyboardInterrupt:  # would also stop pytest itself
        pytest.fail("a Ctrl-C while reading stdin escaped the chat command")
    captured = capsys.readouterr()
    assert code == 130
    assert stderr_lines(captured) == ["holysheep-trio chat: interrupted"]
    assert captured.out == ""


@pytest.mark.parametrize("command", ["chat", "bench", "models"])
@pytest.mark.parametrize(
    "interrupt",
    [KeyboardInterrupt(), BaseExceptionGroup("trio", [KeyboardInterrupt()])],
)
def test_main_exits_130_on_ctrl_c_that_escapes_a_command(
    monkeypatch: pytest.MonkeyPatch, command: str, interrupt: BaseException
) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise interrupt

    monkeypatch.setattr(_commands, f"_{command}", interrupted)
    assert cli.main([command, "a prompt"] if command == "chat" else [command]) == 130
    # Also before argparse has run (a Ctrl-C while the modules load), from argv alone.
    assert cli._interrupted_exit_code([command, "--profile", "fast"]) == 130
    assert cli._interrupted_exit_code(["serve", "--port", "0"]) == 0
    assert cli._interrupted_exit_code(["--help"]) == 130
    assert cli._EXIT_INTERRUPTED == _commands.EXIT_INTERRUPTED


def test_after_an_interrupted_run_a_second_ctrl_c_exits_at_once() -> None:
    async def interrupted(interrupt: Any) -> int:
        return _commands.EXIT_INTERRUPTED

    previous = signal.getsignal(signal.SIGINT)
    try:
        assert _commands._run("chat", interrupted) == 130
        assert signal.getsignal(signal.SIGINT) is _commands._exit_interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def test_chat_cost_is_unknown_for_models_without_a_price() -> None:
    from holysheep_trio.models import Completion, Usage

    usage = Usage(prompt_tokens=3, completion_tokens=9, total_tokens=12)
    known = Completion(model="gpt-4.1", usage=usage, ttft=0.5, duration=1.5)
    assert _commands._chat_summary("gpt-4.1", known) == (
        "model gpt-4.1, TTFT 0.500 s, 8.0 tokens/s, tokens 3 in / 9 out, cost $0.000078"
    )
    # The server may report a dated snapshot name: the requested name is priced first.
    dated = Completion(model="gpt-4.1-2025-04-14", usage=usage, ttft=0.5, duration=1.5)
    assert _commands._chat_summary("gpt-4.1", dated).endswith("cost $0.000078")
    unknown = Completion(model="mystery", usage=usage, ttft=None, duration=1.0)
    assert _commands._chat_summary("mystery", unknown) == (
        "model mystery, TTFT n/a, tokens/s n/a, tokens 3 in / 9 out, cost unknown"
    )
    no_usage = Completion(model="gpt-4.1", ttft=0.2, duration=1.0)
    assert _commands._chat_summary("gpt-4.1", no_usage).endswith("cost unknown (no usage)")


def test_chat_unknown_model_is_one_line_with_its_kind(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["chat", "hi", "--model", "no-such-model", "--profile", "fast"])
    captured = capsys.readouterr()
    assert code == 1
    lines = stderr_lines(captured)
    assert len(lines) == 2  # the simulator notice, then the error
    assert lines[1].startswith("holysheep-trio chat: invalid_request error: HTTP 404")
    assert "no-such-model" in lines[1]
    assert "Traceback" not in captured.err
    assert captured.out == ""


@pytest.fixture
def faulty_simulator(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Faults (specs) the command's own in-process simulator applies to its next requests."""
    from holysheep_trio import simulator

    faults: list[str] = []
    original = simulator.open_simulator

    @asynccontextmanager
    async def open_with_faults(**kwargs: Any) -> AsyncIterator[simulator.Simulator]:
        async with original(**kwargs) as sim:
            sim.inject_faults(*faults)
            yield sim

    monkeypatch.setattr(simulator, "open_simulator", open_with_faults)
    return faults


def test_chat_failure_after_output_began_ends_the_line_then_reports(
    capsys: pytest.CaptureFixture[str], faulty_simulator: list[str]
) -> None:
    faulty_simulator.append("disconnect_after=3")
    code = run_cli(["chat", "hi", "--max-tokens", "20", "--profile", "fast"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.endswith("\n")  # the partial reply, then its own line end
    assert len(captured.out.strip()) > 0
    last = stderr_lines(captured)[-1]
    assert last.startswith("holysheep-trio chat: network error: stream interrupted after output")
    assert "Traceback" not in captured.err


def test_bench_counts_injected_faults(
    capsys: pytest.CaptureFixture[str], faulty_simulator: list[str], tmp_path: Path
) -> None:
    faulty_simulator.extend(["status=429;should_retry=false", "malformed_after=2"])
    out = tmp_path / "r.json"
    argv = ["bench", "--model", "gpt-4.1", "--runs", "4", "--concurrency", "1", "--json", str(out)]
    code = run_cli([*argv, "--profile", "fast"])
    captured = capsys.readouterr()
    assert code == 0
    assert "parse 1, rate_limit 1" in captured.out
    summary = json.loads(out.read_text())["models"][0]
    assert (summary["succeeded"], summary["errors"]) == (2, {"parse": 1, "rate_limit": 1})


def test_chat_network_error_with_a_key_never_shows_the_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOLYSHEEP_API_KEY", SECRET)
    # Port 9 (discard) on loopback: nothing listens there, the connection is refused.
    code = run_cli(["chat", "hi", "--base-url", "http://127.0.0.1:9/v1"])
    captured = capsys.readouterr()
    assert code == 1
    lines = stderr_lines(captured)
    assert lines[0] == (
        "holysheep-trio chat: using http://127.0.0.1:9/v1 (key from HOLYSHEEP_API_KEY)"
    )
    assert lines[-1].startswith("holysheep-trio chat: network error: ")
    assert "network error" not in lines[-1].removeprefix("holysheep-trio chat: network error")
    assert len(lines) == 2
    assert SECRET not in captured.err + captured.out
    assert "Traceback" not in captured.err


def test_chat_bad_base_url_is_a_configuration_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOLYSHEEP_BASE_URL", "ftp://example.invalid")
    code = run_cli(["chat", "hi"])
    captured = capsys.readouterr()
    assert code == 1
    assert "using ftp://example.invalid with the simulator key" in stderr_lines(captured)[0]
    assert stderr_lines(captured)[-1].startswith("holysheep-trio chat: invalid_request error:")


def test_error_lines_are_one_line_and_never_show_the_key() -> None:
    from holysheep_trio.errors import APIConnectionError, RateLimitError

    error = APIConnectionError(f"reset\n  while sending {SECRET}\r\n", model="m")
    assert _commands._error_line("chat", error, [SECRET, ""]) == (
        "holysheep-trio chat: network error: reset while sending *** (model=m)"
    )
    limited = RateLimitError("slow down", status=429)
    assert _commands._error_line("bench", limited) == (
        "holysheep-trio bench: rate_limit error: slow down (status=429)"
    )


def test_error_lines_name_the_kind_once() -> None:
    from holysheep_trio.errors import APIConnectionError, APITimeoutError

    # The client's network messages start with their kind; the line used to say it twice.
    error = APIConnectionError("network error (ConnectError): [Errno 111] Connection refused")
    assert _commands._error_line("chat", error) == (
        "holysheep-trio chat: network error: ConnectError: [Errno 111] Connection refused"
    )
    plain = APIConnectionError("network error: reset")
    assert _commands._error_line("chat", plain) == "holysheep-trio chat: network error: reset"
    other = APITimeoutError("no first token in 5 s", deadline="first_token", seconds=5)
    assert _commands._error_line("chat", other).startswith(
        "holysheep-trio chat: timeout error: no first token in 5 s"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://api.example/v1", "https://api.example/v1"),
        ("https://user:pw@api.example/v1", "https://***@api.example/v1"),
        ("http://a@b@host:8080", "http://***@host:8080"),
        ("http://host/p@th", "http://host/p@th"),
        ("not a url", "not a url"),
    ],
)
def test_urls_are_shown_without_credentials(url: str, shown: str) -> None:
    assert _commands._shown_url(url) == shown


def test_options_are_validated_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["chat", "x", "--max-tokens", "0"], ["bench", "--runs", "x"], ["chat"]):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(argv)
        assert exit_info.value.code == 2
    assert "--max-tokens" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--help"])
    help_text = capsys.readouterr().out
    for option in ("--runs", "--model", "--concurrency", "--max-tokens", "--json", "--plot"):
        assert option in help_text
    defaults = build_parser().parse_args(["bench"])
    assert (defaults.runs, defaults.concurrency, defaults.models) == (20, 4, None)
    assert defaults.profile == "realistic"


# ---- bench ---------------------------------------------------------------------------------


def test_bench_prints_a_table_and_writes_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    argv = ["bench", "--runs", "3", "--concurrency", "5", "--max-tokens", "20", "--json", str(out)]
    code = run_cli([*argv, "--profile", "fast"])
    captured = capsys.readouterr()
    assert code == 0
    lines = stderr_lines(captured)
    assert lines[0].startswith("holysheep-trio bench: no HOLYSHEEP_API_KEY set: using the built-in")
    assert lines[-1] == f"holysheep-trio bench: wrote {out}"
    # Not a terminal: no progress bar redraws, only the notice and the file line on stderr.
    assert len(lines) == 2
    for model in ("gpt-4.1", "claude-sonnet-4.5", "gemini-2.5-flash", "deepseek-v3.2"):
        assert model in captured.out
    assert "TTFT avg" in captured.out
    assert "12 runs (12 ok)" in captured.out
    assert "concurrency 5, max_tokens 20: 240 tokens" in captured.out
    assert "\x1b[" not in captured.out  # no colour codes in a pipe
    report = json.loads(out.read_text())
    assert report["version"] == 1
    assert report["interrupted"] is False
    assert report["runs_total"] == 12
    assert report["config"]["concurrency"] == 5
    assert report["target"].startswith("built-in simulator (fast profile)")
    for summary in report["models"]:
        assert summary["runs"] == summary["succeeded"] == 3
        assert summary["completion_tokens"] == 60
        assert summary["errors"] == {}
        assert set(summary["ttft"]) == {"count", "mean", "min", "max", "p50", "p95"}
    assert {run["tokens_source"] for run in report["runs"]} == {"usage"}


def test_bench_over_the_responses_api(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    argv = ["bench", "--api", "responses", "--model", "gpt-4.1", "--runs", "3"]
    code = run_cli([*argv, "--max-tokens", "20", "--json", str(out), "--profile", "fast"])
    captured = capsys.readouterr()
    assert code == 0
    assert "(Responses API)" in captured.out
    assert "3 runs (3 ok)" in captured.out
    report = json.loads(out.read_text())
    assert report["config"]["api"] == "responses"
    assert {run["tokens_source"] for run in report["runs"]} == {"usage"}
    assert report["models"][0]["succeeded"] == 3


def test_bench_reports_errors_by_kind(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code = run_cli(
        [
            *("bench", "--model", "gpt-4.1", "--model", "nope", "--model", "gpt-4.1"),
            *("--runs", "2", "--max-tokens", "5", "--profile", "fast", "--json", str(out)),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0  # some runs succeeded: errors are a result, shown in the table
    assert "invalid_request 2" in captured.out
    report = json.loads(out.read_text())
    assert [summary["model"] for summary in report["models"]] == ["gpt-4.1", "nope"]
    assert report["models"][1]["error_rate"] == 1.0
    assert report["models"][1]["errors"] == {"invalid_request": 2}


def test_bench_where_every_run_fails_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["bench", "--model", "nope", "--runs", "2", "--profile", "fast"])
    captured = capsys.readouterr()
    assert code == 1
    last = stderr_lines(captured)[-1]
    assert last.startswith("holysheep-trio bench: every run failed; first error: invalid_request")
    assert "Traceback" not in captured.err


def test_bench_plot_without_matplotlib_fails_before_running(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_commands, "plotting_available", lambda: False)
    code = run_cli(["bench", "--plot", str(tmp_path / "p.png"), "--profile", "fast"])
    captured = capsys.readouterr()
    assert code == 1
    assert stderr_lines(captured) == [
        "holysheep-trio bench: --plot needs matplotlib: pip install 'holysheep-trio[plot]'"
    ]
    assert captured.out == ""


def test_bench_unwritable_json_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "missing-dir" / "r.json"
    code = run_cli(["bench", "--runs", "1", "--profile", "fast", "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert stderr_lines(captured)[-1].startswith(f"holysheep-trio bench: cannot write {out}: ")
    assert "Traceback" not in captured.err


def test_bench_without_rich_says_which_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)
    assert run_cli(["bench", "--profile", "fast"]) == 1
    assert "pip install 'holysheep-trio[cli]'" in capsys.readouterr().err


# ---- models --------------------------------------------------------------------------------


def test_models_lists_ids_and_owners(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["models", "--profile", "fast"])
    captured = capsys.readouterr()
    assert code == 0
    assert "built-in simulator" in stderr_lines(captured)[0]
    rows = [line.split() for line in captured.out.splitlines()]
    assert rows == [
        ["gpt-4.1", "openai"],
        ["claude-sonnet-4.5", "anthropic"],
        ["gemini-2.5-flash", "google"],
        ["deepseek-v3.2", "deepseek"],
    ]


def test_models_network_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOLYSHEEP_API_KEY", SECRET)
    code = run_cli(["models", "--base-url", "http://127.0.0.1:9/v1"])
    captured = capsys.readouterr()
    assert code == 1
    assert stderr_lines(captured)[-1].startswith("holysheep-trio models: network error: ")
    assert stderr_lines(captured)[-1].count("network error") == 1
    assert SECRET not in captured.err + captured.out


async def test_list_models_maps_statuses_and_bad_bodies_to_kinds() -> None:
    from holysheep_trio.errors import HolySheepError
    from holysheep_trio.simulator import open_simulator

    async with open_simulator(api_key="sk-right", profile="fast") as sim:
        models = await _commands.list_models(api_key="sk-right", base_url=sim.base_url)
        assert [model for model, _ in models][:2] == ["gpt-4.1", "claude-sonnet-4.5"]
        with pytest.raises(HolySheepError) as wrong_key:
            await _commands.list_models(api_key="sk-wrong", base_url=sim.base_url)
        assert wrong_key.value.kind == "authentication"
        assert "sk-wrong" not in str(wrong_key.value)
        # Worded as chat and bench word status errors.
        assert wrong_key.value.message.startswith("HTTP 401: ")
        sim.inject_faults("status=503", endpoint="models")
        with pytest.raises(HolySheepError) as overloaded:
            await _commands.list_models(api_key="sk-right", base_url=sim.base_url)
        assert overloaded.value.kind == "server"
        # The stats page is JSON, but not a model list.
        with pytest.raises(HolySheepError) as not_a_list:
            await _commands.list_models(api_key="sk-right", base_url=sim.base_url + "/x")
        assert not_a_list.value.kind in ("invalid_request", "parse")
    with pytest.raises(HolySheepError) as bad_url:
        await _commands.list_models(api_key="k", base_url="localhost:8080")
    assert bad_url.value.kind == "invalid_request"


# ---- in child processes: the real entry point, another server, Ctrl-C -----------------------


async def read_until(stream: trio.abc.ReceiveStream, marker: bytes, seen: bytearray) -> None:
    # A child process runs in wall-clock time; this bounds a hang, it measures nothing.
    with trio.fail_after(60):
        while not seen or marker not in seen:
            data = await stream.receive_some(65536)
            assert data, f"the child exited before printing {marker!r}: {bytes(seen)!r}"
            seen += data


async def interrupt_child(
    args: Sequence[str], wait_for: bytes, *, on_stdout: bool = True
) -> tuple[int, str, str]:
    process = await trio.lowlevel.open_process(
        child_command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={
            key: value
            for key, value in {**os.environ, "PYTHONUNBUFFERED": "1"}.items()
            if not key.startswith("HOLYSHEEP_") and key not in ("FORCE_COLOR", "TTY_COMPATIBLE")
        },
    )
    assert process.stdout is not None
    assert process.stderr is not None
    out, err = bytearray(), bytearray()
    try:
        await read_until(
            process.stdout if on_stdout else process.stderr, wait_for, out if on_stdout else err
        )
        process.send_signal(signal.SIGINT)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:

                async def drain(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
                    while data := await stream.receive_some(65536):
                        into += data

                nursery.start_soon(drain, process.stdout, out)
                nursery.start_soon(drain, process.stderr, err)
            code = await process.wait()
    finally:
        process.kill()
        await process.stdout.aclose()
        await process.stderr.aclose()
        await process.wait()
    return code, out.decode(), err.decode()


async def test_ctrl_c_during_chat_stops_cleanly_with_130() -> None:
    # Realistic pacing (~45 tokens/s) and a long reply: still streaming when Ctrl-C comes.
    code, out, err = await interrupt_child(
        ["chat", "tell me everything", "--max-tokens", "5000"], wait_for=b""
    )
    assert code == 130
    assert out.strip()  # the partial reply stays on stdout
    assert err.splitlines()[-1] == "holysheep-trio chat: interrupted"
    assert "Traceback" not in err


async def test_ctrl_c_during_bench_prints_the_partial_table(tmp_path: Path) -> None:
    out_file = tmp_path / "partial.json"
    code, out, err = await interrupt_child(
        ["bench", "--runs", "100", "--model", "gemini-2.5-flash", "--json", str(out_file)],
        wait_for=b"built-in simulator",
        on_stdout=False,
    )
    assert code == 130
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("holysheep-trio bench: interrupted after ")
    assert "gemini-2.5-flash" in out
    report = json.loads(out_file.read_text())
    assert report["interrupted"] is True
    assert report["runs_total"] < 100


async def test_a_second_ctrl_c_after_the_report_keeps_exit_code_130(tmp_path: Path) -> None:
    # The second press lands as the process exits: it used to end it with -2 (death by SIGINT).
    process = await trio.lowlevel.open_process(
        child_command("bench", "--runs", "100", "--model", "gemini-2.5-flash"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={
            key: value
            for key, value in {**os.environ, "PYTHONUNBUFFERED": "1"}.items()
            if not key.startswith("HOLYSHEEP_")
        },
    )
    assert process.stderr is not None
    err = bytearray()
    try:
        await read_until(process.stderr, b"built-in simulator", err)
        process.send_signal(signal.SIGINT)
        await read_until(process.stderr, b"interrupted after", err)
        process.send_signal(signal.SIGINT)
        with trio.fail_after(60):
            while data := await process.stderr.receive_some(65536):
                err += data
            code = await process.wait()
    finally:
        process.kill()
        await process.stderr.aclose()
        await process.wait()
    assert code == 130
    assert b"Traceback" not in err


#: Modules whose import ends at some moment of start-up: before the slow imports, amid them
#: (trio done, the commands next), and after them (the simulator is imported inside trio.run).
_STARTUP_MOMENTS = ["holysheep_trio.cli", "trio", "holysheep_trio._commands"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["bench", "--profile", "fast"], 130),
        (["chat", "hi", "--profile", "fast"], 130),
        (["models", "--profile", "fast"], 130),
        (["serve", "--port", "0", "--profile", "fast"], 0),
    ],
)
@pytest.mark.parametrize("moment", [*_STARTUP_MOMENTS, "holysheep_trio.simulator"])
async def test_ctrl_c_at_any_moment_of_start_up_is_clean(
    args: list[str], expected: int, moment: str
) -> None:
    # `-X importtime` reports each import as it ends, on stderr: the child is then in our code,
    # past the interpreter's own start-up (a Ctrl-C there is Python's, not ours), and the
    # signal follows at once. It used to print a KeyboardInterrupt traceback and exit with -2.
    process = await trio.lowlevel.open_process(
        [sys.executable, "-X", "importtime", "-m", "holysheep_trio", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={key: value for key, value in os.environ.items() if not key.startswith("HOLYSHEEP_")},
    )
    assert process.stderr is not None
    marker = re.compile(rb"\| +" + re.escape(moment.encode()) + rb"\n")
    err = bytearray()
    try:
        with trio.fail_after(60):
            while not marker.search(err):
                data = await process.stderr.receive_some(65536)
                assert data, f"the child exited before importing {moment}: {bytes(err)!r}"
                err += data
            process.send_signal(signal.SIGINT)
            while data := await process.stderr.receive_some(65536):
                err += data
            code = await process.wait()
    finally:
        process.kill()
        await process.stderr.aclose()
        await process.wait()
    text = err.decode()
    assert "Traceback" not in text
    assert "KeyboardInterrupt" not in text
    assert code == expected


async def test_with_a_key_and_a_base_url_the_cli_talks_to_that_server() -> None:
    server = await trio.lowlevel.open_process(
        [
            *(sys.executable, "-m", "holysheep_trio", "serve", "--port", "0"),
            *("--profile", "fast", "--api-key", SECRET),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert server.stdout is not None
    try:
        seen = bytearray()
        await read_until(server.stdout, b"\n", seen)
        url = seen.decode().strip()
        env = {**os.environ, "HOLYSHEEP_API_KEY": SECRET, "HOLYSHEEP_BASE_URL": url}
        with trio.fail_after(60):
            chat = await trio.run_process(
                child_command("chat", "hi", "--max-tokens", "7"),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=env,
            )
            models = await trio.run_process(
                child_command("models"),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={**env, "HOLYSHEEP_API_KEY": ""},  # no key: the simulator's public one
            )
    finally:
        server.send_signal(signal.SIGINT)
        with trio.fail_after(60):
            await server.wait()
        await server.stdout.aclose()
    assert chat.returncode == 0, chat.stderr
    chat_err = chat.stderr.decode()
    assert chat_err.splitlines()[0] == (
        f"holysheep-trio chat: using {url} (key from HOLYSHEEP_API_KEY)"
    )
    assert "/ 7 out" in chat_err
    assert SECRET not in chat_err + chat.stdout.decode()
    # `serve` checks its own key, so the public simulator key is refused: one line, exit 1.
    assert models.returncode == 1
    models_err = models.stderr.decode()
    assert f"using {url} with the simulator key" in models_err
    assert models_err.splitlines()[-1].startswith("holysheep-trio models: authentication error")


@pytest.mark.skipif(not WIRED, reason="cli.py does not register chat/bench/models yet (lead)")
def test_cli_registers_the_commands() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["chat", "x"]).handler is _commands._chat
    assert parser.parse_args(["bench"]).handler is _commands._bench
    assert parser.parse_args(["models"]).handler is _commands._models
