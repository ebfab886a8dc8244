# Several simulator processes on one port (SO_REUSEPORT): the worker pool and its control plane.
"""``open_simulator(workers=N)``: N worker processes share one listening port.

Each worker is a Python process running :func:`worker_entry`: a whole simulator that binds the
public port with ``SO_REUSEPORT`` (the kernel spreads new connections over the workers) and a
private control port on 127.0.0.1. The process that called ``open_simulator`` serves no traffic;
it is the *controller*:

- **Statistics.** ``sim.stats()`` asks every worker for its snapshot over its control port and
  adds them up (:meth:`SimulatorStats.combined`); ``GET /simulator/stats`` on the public port
  reaches one worker, which asks the controller for the same sum. ``reset_stats()`` reaches every
  worker before it returns.
- **Faults.** ``inject_faults`` queues in the controller, then tells every worker (before it
  returns) that a queue has faults; a worker whose request finds that flag set asks the
  controller for the next fault, so the queues stay FIFO across workers. Requests on keys with
  nothing queued never leave their worker. ``set_models_fault`` and ``clear_faults`` reach every
  worker before they return.
- **Lifetime.** Each worker runs in its own session (process group): a Ctrl-C in a terminal
  reaches the controller only, which stops the workers in order. A worker exits when its
  standard input closes, so a controller that dies, even by ``kill -9``, leaves no worker behind;
  leaving ``open_simulator`` closes their input, waits briefly, then kills the process groups
  that are left.

The control protocol is one JSON line each way per TCP connection, with a random token; it is
private to one pool.
"""

from __future__ import annotations

import json
import os
import pickle
import secrets
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ._faults import FaultPlan, parse_faults
from ._profiles import ModelProfile, Profile
from ._stats import SimulatorStats

#: Whether this platform can share one port between processes.
HAS_REUSEPORT = hasattr(socket, "SO_REUSEPORT") and sys.platform != "win32"
# How long the controller waits for a worker to start, answer, or stop.
_START_TIMEOUT = 60.0
_CALL_TIMEOUT = 30.0
_STOP_TIMEOUT = 5.0
_MAX_LINE = 16 * 1024 * 1024
# Not `-m` on this module: its classes must be this module's, not `__main__`'s, for pickle.
_WORKER_COMMAND = "from holysheep_trio.simulator._workers import worker_entry; worker_entry()"


@attrs.frozen(kw_only=True)
class WorkerConfig:
    """What a worker needs to serve: everything ``open_simulator`` was given, resolved."""

    api_key: str
    profile_name: str
    models: tuple[ModelProfile, ...]
    delays: bool
    pre_encoded: bool
    reply_tokens: int | str | None
    host: str
    port: int
    seed: int
    snapshots: bool
    websocket_max_age: float
    index: int
    token: str
    controller_port: int

    @classmethod
    def build(cls, profile: Profile, **fields: Any) -> WorkerConfig:
        return cls(
            profile_name=profile.name,
            models=tuple(profile.models.values()),
            delays=profile.delays,
            pre_encoded=profile.pre_encoded,
            reply_tokens=profile.reply_tokens,
            **fields,
        )

    def profile(self) -> Profile:
        return Profile.from_models(
            self.profile_name,
            list(self.models),
            delays=self.delays,
            pre_encoded=self.pre_encoded,
            reply_tokens=self.reply_tokens,  # type: ignore[arg-type]
        )


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket bound with ``SO_REUSEPORT``, so several processes share it.

    Raises:
        RuntimeError: The platform has no ``SO_REUSEPORT``.
        OSError: The address cannot be bound.
    """
    if not HAS_REUSEPORT:
        raise RuntimeError(
            "workers > 1 needs SO_REUSEPORT to share one port between processes, and this "
            f"platform ({sys.platform}) does not have it; run one simulator per port instead"
        )
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


# ---- the control protocol -------------------------------------------------------------------


def _line(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


Handler = Callable[[dict[str, Any]], Awaitable[Any]]


async def _serve_control(listener: trio.SocketListener, token: str, handle: Handler) -> None:
    """Answer control requests: one JSON line in, one JSON line out, per connection."""

    async def one(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            with trio.move_on_after(_CALL_TIMEOUT):
                while not data.endswith(b"\n") and len(data) < _MAX_LINE:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    data += chunk
            try:
                request = json.loads(data)
                if not isinstance(request, dict) or request.get("token") != token:
                    return
                reply = await handle(request)
            except (ValueError, KeyError, TypeError) as exc:
                reply = {"error": str(exc)}
            await stream.send_all(_line(reply))

    await trio.serve_listeners(one, [listener])


async def _call(port: int, token: str, request: Mapping[str, Any]) -> Any:
    """One control request from trio code."""
    with trio.fail_after(_CALL_TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(_line({**request, "token": token}))
            data = b""
            while not data.endswith(b"\n"):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise ConnectionError("a simulator worker closed its control connection")
                data += chunk
    return json.loads(data)


def _call_blocking(port: int, token: str, request: Mapping[str, Any]) -> Any:
    """One control request from synchronous code (``sim.stats()``): loopback, bounded."""
    with socket.create_connection(("127.0.0.1", port), timeout=_CALL_TIMEOUT) as sock:
        sock.sendall(_line({**request, "token": token}))
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("a simulator worker closed its control connection")
            data += chunk
    return json.loads(data)


def _fault_key(endpoint: str, model: str | None) -> str:
    return f"{endpoint}\n{model or ''}"


# ---- the worker side --------------------------------------------------------------------------


class RemoteFaults:
    """A worker's view of the controller's fault queues: which keys may hold faults.

    Args:
        port: The controller's control port.
        token: The pool's token.
    """

    def __init__(self, port: int, token: str) -> None:
        self._port = port
        self._token = token
        self.pending: set[str] = set()

    async def take(self, endpoint: str, model: str | None) -> FaultPlan | None:
        """The next queued fault for a request, or ``None`` (then the local rules apply)."""
        if not self.pending:
            return None
        for key in (_fault_key(endpoint, model), _fault_key(endpoint, None)):
            if key in self.pending:
                reply = await _call(self._port, self._token, {"op": "pop_fault", "key": key})
                if not reply.get("more"):
                    self.pending.discard(key)
                if reply.get("spec") is not None:
                    return parse_faults(reply["spec"])
        return None

    async def stats_all(self) -> SimulatorStats:
        """Every worker's statistics, summed by the controller."""
        reply = await _call(self._port, self._token, {"op": "stats_all"})
        return SimulatorStats.from_json(reply)


def _worker_handler(sim: Any, remote: RemoteFaults) -> Handler:
    async def handle(request: dict[str, Any]) -> Any:
        op = request["op"]
        if op == "stats":
            return sim.stats().to_json()
        if op == "reset_stats":
            sim.reset_stats()
        elif op == "pending":
            remote.pending.update(request["keys"])
        elif op == "clear_faults":
            remote.pending.clear()
        elif op == "models_fault":
            sim.set_models_fault(request["spec"])
        else:
            raise ValueError(f"unknown control operation {op!r}")
        return {"ok": True}

    return handle


async def _worker_main(config: WorkerConfig) -> None:
    from ._server import serve_simulator  # the server imports this module

    try:
        sock = reuseport_socket(config.host, config.port)
    except OSError as exc:
        # Told to the controller, which raises it: no traceback on this process's stderr.
        reply = {"errno": exc.errno, "error": exc.strerror or str(exc)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        return
    control = trio.socket.socket()
    await control.bind(("127.0.0.1", 0))
    control.listen(64)
    control_listener = trio.SocketListener(control)
    remote = RemoteFaults(config.controller_port, config.token)
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(
            serve_simulator,
            sock,
            {
                "api_key": config.api_key,
                "profile": config.profile(),
                "host": config.host,
                "seed": config.seed * 1_000 + config.index,
                "snapshots": config.snapshots,
                "websocket_max_age": config.websocket_max_age,
                "remote": remote,
                "worker": config.index,
            },
        )
        nursery.start_soon(
            _serve_control, control_listener, config.token, _worker_handler(sim, remote)
        )
        port = sock.getsockname()[1]
        sys.stdout.write(json.dumps({"port": port, "control": control.getsockname()[1]}) + "\n")
        sys.stdout.flush()
        # The controller closes our standard input to stop us, or by dying: either way, go.
        await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
        nursery.cancel_scope.cancel()


def worker_entry() -> None:
    """A worker process: read the config line from standard input, then serve."""
    # SIGINT belongs to the controller (a terminal's Ctrl-C reaches the foreground group only,
    # and we run in our own session); SIGTERM stops us quietly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = pickle.loads(bytes.fromhex(sys.stdin.buffer.readline().decode().strip()))
    assert isinstance(config, WorkerConfig)
    trio.run(_worker_main, config)


# ---- the controller side ----------------------------------------------------------------------


@attrs.define
class _Worker:
    process: trio.Process
    port: int
    control: int


class WorkerPool:
    """The controller's handle on its workers (private; the public face is ``Simulator``).

    Args:
        token: The pool's token.
    """

    def __init__(self, token: str, models: list[str]) -> None:
        self.token = token
        self.workers: list[_Worker] = []
        self._models = models
        self._queues: dict[str, deque[str]] = {}

    # -- fault queues, FIFO across workers
    def queue(self, endpoint: str, model: str | None, specs: list[str]) -> None:
        key = _fault_key(endpoint, model)
        self._queues.setdefault(key, deque()).extend(specs)
        self._broadcast({"op": "pending", "keys": [key]})

    def clear(self) -> None:
        self._queues.clear()
        self._broadcast({"op": "clear_faults"})

    def models_fault(self, spec: str | None) -> None:
        self._broadcast({"op": "models_fault", "spec": spec})

    def _pop(self, key: str) -> dict[str, Any]:
        queue = self._queues.get(key)
        spec = queue.popleft() if queue else None
        return {"spec": spec, "more": bool(queue)}

    # -- statistics
    def stats(self) -> SimulatorStats:
        return SimulatorStats.combined(
            [
                SimulatorStats.from_json(_call_blocking(w.control, self.token, {"op": "stats"}))
                for w in self.workers
            ]
        )

    async def stats_async(self) -> SimulatorStats:
        snapshots: list[SimulatorStats] = []

        async def one(worker: _Worker) -> None:
            reply = await _call(worker.control, self.token, {"op": "stats"})
            snapshots.append(SimulatorStats.from_json(reply))

        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                nursery.start_soon(one, worker)
        return SimulatorStats.combined(snapshots)

    def reset_stats(self) -> None:
        self._broadcast({"op": "reset_stats"})

    def _broadcast(self, request: Mapping[str, Any]) -> None:
        # Blocking on purpose: when the caller's method returns, every worker knows.
        for worker in self.workers:
            _call_blocking(worker.control, self.token, request)

    async def handle(self, request: dict[str, Any]) -> Any:
        op = request["op"]
        if op == "pop_fault":
            return self._pop(str(request["key"]))
        if op == "stats_all":
            return (await self.stats_async()).to_json()
        raise ValueError(f"unknown control operation {op!r}")


async def _start_worker(
    config: WorkerConfig, stderr: int | None
) -> tuple[trio.Process, dict[str, int]]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", _WORKER_COMMAND],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        # Its own session and process group: a terminal's Ctrl-C goes to the controller only,
        # and a last-resort kill reaches anything the worker started.
        start_new_session=True,
    )
    try:
        assert process.stdin is not None
        assert process.stdout is not None
        await process.stdin.send_all(pickle.dumps(config).hex().encode() + b"\n")
        line = b""
        with trio.fail_after(_START_TIMEOUT):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    code = await process.wait()
                    raise OSError(
                        f"simulator worker {config.index} exited with code {code} before "
                        f"listening on {config.host}:{config.port}"
                    )
                line += chunk
        ports = json.loads(line)
        if "error" in ports:
            await process.wait()
            raise OSError(ports["errno"], ports["error"])
        return process, ports
    except BaseException:
        _kill(process)
        with trio.CancelScope(shield=True):
            await process.wait()
        raise


def _kill(process: trio.Process) -> None:
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            process.kill()


async def _stop(workers: list[_Worker]) -> None:
    """Close every worker's input (they stop), wait briefly, then kill what is left."""
    for worker in workers:
        if worker.process.stdin is not None:
            await trio.aclose_forcefully(worker.process.stdin)
    with trio.move_on_after(_STOP_TIMEOUT):
        for worker in workers:
            await worker.process.wait()
    for worker in workers:
        _kill(worker.process)
        await worker.process.wait()
        if worker.process.stdout is not None:
            await trio.aclose_forcefully(worker.process.stdout)


@asynccontextmanager
async def open_worker_pool(
    *,
    workers: int,
    profile: Profile,
    api_key: str,
    host: str,
    port: int,
    seed: int,
    snapshots: bool,
    websocket_max_age: float,
) -> AsyncIterator[tuple[WorkerPool, int]]:
    """Start ``workers`` worker processes on one port; yields the pool and the port.

    Raises:
        RuntimeError: No ``SO_REUSEPORT`` on this platform.
        OSError: A worker could not bind or start.
    """
    if not HAS_REUSEPORT:
        reuseport_socket(host, port)  # raises the clear error
    if port:
        # SO_REUSEPORT would let the workers join another pool that holds this port: a plain
        # bind first fails, as a single simulator's does, when anything listens there.
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    token = secrets.token_hex(16)
    pool = WorkerPool(token, list(profile.models))
    control = trio.socket.socket()
    await control.bind(("127.0.0.1", 0))
    control.listen(64)
    started: list[_Worker] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve_control, trio.SocketListener(control), token, pool.handle)

            def config(index: int, bound_port: int) -> WorkerConfig:
                return WorkerConfig.build(
                    profile,
                    api_key=api_key,
                    host=host,
                    port=bound_port,
                    seed=seed,
                    snapshots=snapshots,
                    websocket_max_age=websocket_max_age,
                    index=index,
                    token=token,
                    controller_port=control.getsockname()[1],
                )

            try:
                # The first worker picks the port (when 0 was asked), the others join it.
                process, ports = await _start_worker(config(0, port), None)
                started.append(_Worker(process, ports["port"], ports["control"]))
                bound = ports["port"]

                async def start(index: int) -> None:
                    process, ports = await _start_worker(config(index, bound), None)
                    started.append(_Worker(process, ports["port"], ports["control"]))

                async with trio.open_nursery() as starting:
                    for index in range(1, workers):
                        starting.start_soon(start, index)
                pool.workers = sorted(started, key=lambda w: w.process.pid)
                yield pool, bound
            finally:
                with trio.CancelScope(shield=True):
                    await _stop(started)
                nursery.cancel_scope.cancel()
    finally:
        control.close()
