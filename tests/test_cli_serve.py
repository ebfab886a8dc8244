# Tests of `holysheep-trio serve` in a child process: URL first, requests work, Ctrl-C is clean.
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

import httpx2
import pytest
import trio

from holysheep_trio import cli
from holysheep_trio.cli import _only_interrupts, build_parser, main

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


async def run_serve(*args: str) -> tuple[trio.Process, str]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "holysheep_trio", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = b""
    # A child process starts in wall-clock time; this bounds a hang, it measures nothing.
    with trio.fail_after(60):
        while not line.endswith(b"\n"):
            data = await process.stdout.receive_some(1)
            assert data, "serve exited before printing its URL"
            line += data
    return process, line.decode().strip()


async def finish(process: trio.Process, signal_number: int) -> tuple[int, str]:
    process.send_signal(signal_number)
    assert process.stderr is not None
    stderr = b""
    with trio.fail_after(60):
        while data := await process.stderr.receive_some(65536):
            stderr += data
        code = await process.wait()
    assert process.stdout is not None
    await process.stdout.aclose()
    await process.stderr.aclose()
    return code, stderr.decode()


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
async def test_serve_prints_the_url_answers_and_stops_cleanly(signal_number: int) -> None:
    process, url = await run_serve("--profile", "fast", "--api-key", "sk-cli-test")
    try:
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/v1")
        async with httpx2.AsyncClient(base_url=url, timeout=60) as http:
            response = await http.get("/models", headers={"authorization": "Bearer sk-cli-test"})
            assert response.status_code == 200
            assert len(response.json()["data"]) == 4
            assert (await http.get("/models")).status_code == 401
    finally:
        code, stderr = await finish(process, signal_number)
    assert code == 0
    assert "Traceback" not in stderr
    assert "sk-cli-test" not in stderr


async def test_serve_default_key_and_busy_port() -> None:
    process, url = await run_serve()
    try:
        async with httpx2.AsyncClient(base_url=url, timeout=60) as http:
            response = await http.get("/models", headers={"authorization": "Bearer sk-simulator"})
            assert response.status_code == 200
        port = url.rsplit(":", 1)[1].split("/")[0]
        busy = await trio.run_process(
            [sys.executable, "-m", "holysheep_trio", "serve", "--port", port],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert busy.returncode == 1
        assert b"cannot listen" in busy.stderr
        assert b"Traceback" not in busy.stderr
    finally:
        code, _ = await finish(process, signal.SIGINT)
    assert code == 0


def test_help_names_the_default_key(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    assert "sk-simulator" in capsys.readouterr().out
    assert build_parser().parse_args(["serve"]).profile == "realistic"


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "http"])
def test_out_of_range_ports_are_usage_errors(capsys: pytest.CaptureFixture[str], port: str) -> None:
    # 99999 used to be wrapped by the socket layer: serve printed some other port and ran.
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--port", port])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --port" in err
    assert "65535" in err or "not an integer" in err
    assert build_parser().parse_args(["serve", "--port", "65535"]).port == 65535
    assert build_parser().parse_args(["serve", "--port", "0"]).port == 0


def test_interrupts_inside_exception_groups_count_as_ctrl_c() -> None:
    assert _only_interrupts(KeyboardInterrupt())
    assert _only_interrupts(BaseExceptionGroup("g", [KeyboardInterrupt()]))
    nested = BaseExceptionGroup("g", [BaseExceptionGroup("h", [KeyboardInterrupt()])])
    assert _only_interrupts(nested)
    assert not _only_interrupts(BaseExceptionGroup("g", [KeyboardInterrupt(), ValueError()]))
    assert not _only_interrupts(ValueError())


@pytest.mark.parametrize(
    "interrupt",
    [
        KeyboardInterrupt(),
        BaseExceptionGroup("trio", [KeyboardInterrupt()]),
        BaseExceptionGroup("trio", [KeyboardInterrupt(), trio.Cancelled._create()]),
    ],
)
def test_main_exits_0_on_ctrl_c_in_any_wrapping(
    monkeypatch: pytest.MonkeyPatch, interrupt: BaseException
) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise interrupt

    monkeypatch.setattr(cli, "_serve", interrupted)
    assert main(["serve"]) == 0


def test_main_lets_real_errors_through(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise BaseExceptionGroup("trio", [KeyboardInterrupt(), ValueError("bug")])

    monkeypatch.setattr(cli, "_serve", broken)
    with pytest.raises(BaseExceptionGroup):
        main(["serve"])


async def test_ctrl_c_during_a_stream_still_exits_cleanly() -> None:
    # A fast stream of ten million tokens: the server is still writing (blocked on a full
    # socket buffer) when Ctrl-C arrives, and no real time passes waiting for a first token.
    process, url = await run_serve("--profile", "fast")
    try:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        body = (
            b'{"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}],'
            b' "stream": true, "max_tokens": 10000000}'
        )
        await stream.send_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            b"authorization: Bearer sk-simulator\r\ncontent-length: %d\r\n\r\n" % len(body) + body
        )
        with trio.fail_after(60):
            received = b""
            while b'"content":"' not in received.replace(b'"content":""', b""):
                received += await stream.receive_some(65536)
    finally:
        code, stderr = await finish(process, signal.SIGINT)
    async with stream:
        with trio.fail_after(60):
            while await stream.receive_some(65536):
                pass  # the server closed the connection on its way out
    assert code == 0
    assert "Traceback" not in stderr


def test_serve_options_parse_as_open_simulator_takes_them() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.workers, args.capacity, args.reply_tokens, args.snapshots) == (1, None, None, True)
    args = build_parser().parse_args(
        ["serve", "--workers", "3", "--capacity", "8", "--reply-tokens", "max", "--no-snapshots"]
    )
    assert (args.workers, args.capacity, args.reply_tokens, args.snapshots) == (3, 8, "max", False)
    args = build_parser().parse_args(
        ["serve", "--capacity", "gpt-4.1=2, deepseek-v3.2=none", "--reply-tokens", "12"]
    )
    assert args.capacity == {"gpt-4.1": 2, "deepseek-v3.2": None}
    assert args.reply_tokens == 12


@pytest.mark.parametrize(
    "argv",
    [
        ["--workers", "0"],
        ["--workers", "two"],
        ["--capacity", "0"],
        ["--capacity", "gpt-4.1="],
        ["--capacity", "gpt-4.1=lots"],
        ["--reply-tokens", "0"],
        ["--reply-tokens", "some"],
    ],
)
def test_bad_serve_options_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *argv])
    assert exit_info.value.code == 2
    assert "argument --" in capsys.readouterr().err


async def test_serve_applies_capacity_reply_tokens_and_snapshots() -> None:
    process, url = await run_serve(
        "--profile", "fast", "--capacity", "gpt-4.1=1", "--reply-tokens", "4", "--no-snapshots"
    )  # fmt: skip
    try:
        async with httpx2.AsyncClient(base_url=url, timeout=60) as http:
            headers = {"authorization": "Bearer sk-simulator"}
            body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
            reply = (await http.post("/chat/completions", json=body, headers=headers)).json()
            assert reply["model"] == "gpt-4.1"
            assert reply["usage"]["completion_tokens"] == 4
    finally:
        code, stderr = await finish(process, signal.SIGINT)
    assert code == 0
    assert "Traceback" not in stderr


def test_serve_reports_a_capacity_for_an_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--capacity", "gpt-9=1"]) == 1
    err = capsys.readouterr().err
    assert "gpt-9" in err
    assert "Traceback" not in err


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to find the workers")
async def test_serve_with_workers_sums_stats_and_leaves_no_orphans() -> None:
    process, url = await run_serve("--profile", "fast", "--workers", "2")
    try:
        children = {
            int(pid)
            for pid in os.listdir("/proc")
            if pid.isdigit() and _parent_of(int(pid)) == process.pid
        }
        assert len(children) == 2
        headers = {"authorization": "Bearer sk-simulator"}
        body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(6):
            async with httpx2.AsyncClient(base_url=url, timeout=60) as http:
                assert (await http.post("/chat/completions", json=body, headers=headers)).is_success
        async with httpx2.AsyncClient(base_url=url, timeout=60) as http:
            stats = (await http.get("/simulator/stats", headers=headers)).json()
        assert stats["workers"] == 2
        assert stats["requests"]["gpt-4.1"] == 6
    finally:
        code, stderr = await finish(process, signal.SIGINT)
    assert code == 0
    assert "Traceback" not in stderr
    assert "2 workers" in stderr
    assert not any(_exists(pid) for pid in children)


def _exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None
