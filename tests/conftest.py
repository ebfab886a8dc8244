# Shared test configuration: hypothesis profiles and the virtual clock used by loopback tests.
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from trio.testing import MockClock

# No wall-clock deadlines: this machine is shared and noisy, and tests never assert speed.
settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=300
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default")
)


@pytest.fixture
def autojump_clock() -> MockClock:
    """Virtual time that jumps ahead whenever every task is idle.

    pytest-trio's own ``autojump_clock`` jumps after 0 s of real idleness. Our integration tests
    run the client and the simulator in one trio run over real loopback sockets, where a byte
    written by one side may take a few microseconds of kernel time to become readable by the
    other; jumping in that instant would fire a virtual deadline early. A 2 ms real-time cushion
    makes the jump wait until the kernel has delivered everything in flight. It is not a sleep:
    no test waits for wall-clock time to pass to observe a timing.
    """
    return MockClock(autojump_threshold=0.002)


# --------------------------------------------------------------------------- Redis

# In CI (CI=true, or HOLYSHEEP_REQUIRE_REDIS=1 as .ci/run exports) the Redis tests must run:
# a missing or broken redis-server fails them. By hand, they skip and say how to get one.
REDIS_REQUIRED = bool(os.environ.get("CI") or os.environ.get("HOLYSHEEP_REQUIRE_REDIS"))
REDIS_HINT = "install it with `apt-get install redis-server` (Debian/Ubuntu) and run pytest again"


class RedisServer:
    """A redis-server of our own on a free loopback port (never 6379), without persistence,
    in a temporary directory; :meth:`stop` and :meth:`start` again keep the port."""

    def __init__(self, executable: str, directory: str) -> None:
        self.executable = executable
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)  # waiting for a server to start, not a test's timing
        self.stop()
        raise RuntimeError(f"redis-server did not start on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _redis_or_skip(tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    executable = shutil.which("redis-server")
    problem = None
    if executable is None:
        problem = "redis-server is not on PATH"
    elif importlib.util.find_spec("coredis") is None:
        problem = "coredis is not installed (pip install -e '.[dev]')"
    if problem is not None:
        if REDIS_REQUIRED:
            pytest.fail(f"{problem}: the Redis tests must run in CI; {REDIS_HINT}")
        pytest.skip(f"{problem}: {REDIS_HINT}")
    assert executable is not None
    server = RedisServer(executable, str(tmp_path_factory.mktemp("redis")))
    try:
        server.start()
    except RuntimeError as exc:
        if REDIS_REQUIRED:
            pytest.fail(str(exc))
        pytest.skip(f"{exc}: {REDIS_HINT}")
    return server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests keep apart by key prefix."""
    server = _redis_or_skip(tmp_path_factory)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for one test, which may stop and start it."""
    server = _redis_or_skip(tmp_path_factory)
    try:
        yield server
    finally:
        server.stop()
