# Benchmark: TrioTransport against httpx2's default transport, reading SSE-sized chunked bodies.
"""Client CPU and throughput of HTTP/1.1 transports under httpx2.AsyncClient, on loopback.

A raw trio server runs in a child process (so its CPU is not counted) and serves chunked bodies
of ~200-byte SSE events ("chunks"). The client process reads them through httpx2.AsyncClient in
three ways, measured in the same run:

* ``trio/receive_some``: TrioTransport, via ``response.extensions["holysheep.body"]``;
* ``trio/aiter_raw``: TrioTransport, via ``response.aiter_raw()`` (httpx2's generators);
* ``httpx2/aiter_raw``: httpx2's default transport (httpcore2 on anyio), via ``aiter_raw()``.

Scenarios:

* burst: one stream of 10,000 chunks written as fast as the socket takes them; chunks/s on one
  fast stream and client CPU µs per chunk.
* paced: 100 concurrent streams, each chunk flushed on its own at 50 chunks/s per stream (like a
  real model, one event per TCP segment); client CPU µs per chunk (``time.process_time``).

With ``trustme`` installed, the same is measured over https (a certificate made at run time) for
TrioTransport and httpx2's default transport.

First, without any I/O, the CPU cost of decoding chunked framing alone: h11 (``receive_data`` then
``next_event`` until ``NEED_DATA``, what the transport did before) against the transport's own
``_ChunkedDecoder.feed``, with one chunk per read (paced) and 300 chunks per read (burst).

Medians over several runs, and ratios to httpx2's default transport. Usage::

    .venv/bin/python benchmarks/bench_transport.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import attrs
import h11
import httpx2
import trio

from holysheep_trio._transport import TrioTransport, _ChunkedDecoder

# A typical chat.completion.chunk event: 200 bytes on the wire with its chunked framing.
CHUNK = (
    b'data: {"id":"chatcmpl-bench0000000000","object":"chat.completion.chunk",'
    b'"created":1767225600,"model":"bench-model",'
    b'"choices":[{"index":0,"delta":{"content":" token"},"finish_reason":null}]}\n\n'
)
FRAMED_CHUNK = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
END = b"0\r\n\r\n"


# --- decoding alone (no I/O) ---------------------------------------------------------------------


def _h11_reader() -> Callable[[bytes], int]:
    """Return a function that decodes one read of chunked body bytes with h11."""
    connection = h11.Connection(h11.CLIENT)
    connection.send(h11.Request(method="GET", target="/", headers=[("Host", "bench")]))
    connection.send(h11.EndOfMessage())
    connection.receive_data(HEAD)
    assert type(connection.next_event()) is h11.Response

    def read(data: bytes) -> int:
        connection.receive_data(data)
        size = 0
        while (event := connection.next_event()) is not h11.NEED_DATA:
            size += len(event.data)  # type: ignore[union-attr]
        return size

    return read


def _decoder_reader() -> Callable[[bytes], int]:
    """Return a function that decodes one read of chunked body bytes with _ChunkedDecoder."""
    feed = _ChunkedDecoder().feed
    return lambda data: len(feed(data))


def bench_decoders(runs: int) -> None:
    reads = 100_000  # chunks per measurement
    print(f"decode: chunked framing only, no I/O; CPU µs per chunk, median of {runs} runs")
    print()
    print("| decoder | 1 chunk per read | 300 chunks per read |")
    print("|---|---:|---:|")
    for name, make in (("h11", _h11_reader), ("TrioTransport decoder", _decoder_reader)):
        cells = []
        for per_read in (1, 300):
            data = FRAMED_CHUNK * per_read
            times = []
            for _ in range(runs):
                read = make()
                start = time.process_time()
                for _ in range(reads // per_read):
                    if read(data) != len(CHUNK) * per_read:
                        raise RuntimeError(f"{name} decoded the wrong number of bytes")
                times.append((time.process_time() - start) / reads * 1e6)
            cells.append(f"{statistics.median(times):.2f}")
        print(f"| {name} | {' | '.join(cells)} |")
    print()


# --- the server (child process) ------------------------------------------------------------------


async def _serve_connection(stream: trio.abc.Stream) -> None:
    buffer = b""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            # GET /<burst|paced>/<chunks>/<per second> HTTP/1.1
            _, mode, count_text, rate_text = head.split(b" ", 2)[1].split(b"/")
            count = int(count_text)
            if mode == b"burst":
                await stream.send_all(HEAD + FRAMED_CHUNK * count + END)
            else:
                interval = 1 / float(rate_text)
                await stream.send_all(HEAD)
                next_time = trio.current_time()
                for _ in range(count):
                    next_time += interval
                    await trio.sleep_until(next_time)
                    await stream.send_all(FRAMED_CHUNK)
                await stream.send_all(END)


async def _serve(cert_dir: str | None) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    ports = [listeners[0].socket.getsockname()[1], 0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, _serve_connection, listeners)
        if cert_dir is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(f"{cert_dir}/server.pem")
            tcp_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            ports[1] = tcp_listeners[0].socket.getsockname()[1]
            tls_listeners = [
                trio.SSLListener(listener, context, https_compatible=True)
                for listener in tcp_listeners
            ]
            nursery.start_soon(trio.serve_listeners, _serve_connection, tls_listeners)
        print(*ports, flush=True)


# --- the client ----------------------------------------------------------------------------------

Reader = Callable[[httpx2.Response], Awaitable[int]]


async def read_receive_some(response: httpx2.Response) -> int:
    body = response.extensions["holysheep.body"]
    total = 0
    while data := await body.receive_some():
        total += len(data)
    return total


async def read_aiter_raw(response: httpx2.Response) -> int:
    total = 0
    async with contextlib.aclosing(response.aiter_raw()) as raw:
        async for data in raw:
            total += len(data)
    return total


async def one_stream(client: httpx2.AsyncClient, url: str, reader: Reader, expected: int) -> None:
    async with client.stream("GET", url) as response:
        received = await reader(response)
    if received != expected:
        raise RuntimeError(f"received {received} bytes, expected {expected}")


async def run_scenario(
    *,
    base: str,
    transport: str,
    reader: Reader,
    streams: int,
    chunks: int,
    rate: float | None,
    read_timeout: float | None,
    verify: ssl.SSLContext | bool,
) -> tuple[float, float]:
    """Return (wall seconds, client CPU seconds) for ``streams`` concurrent streams."""
    mode = "burst" if rate is None else "paced"
    url = f"{base}/{mode}/{chunks}/{rate or 0}"
    pool_size = streams + 10
    http_transport = (
        TrioTransport(verify=verify, max_connections=pool_size, max_keepalive_connections=pool_size)
        if transport == "trio"
        else None
    )
    limits = httpx2.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
    timeout = httpx2.Timeout(60.0, read=read_timeout)
    async with httpx2.AsyncClient(
        transport=http_transport, limits=limits, timeout=timeout, verify=verify
    ) as client:
        # Open (and, for https, handshake) every connection first: only chunks are measured.
        async with trio.open_nursery() as nursery:
            for _ in range(streams):
                nursery.start_soon(one_stream, client, f"{base}/paced/1/1000", reader, len(CHUNK))
        wall, cpu = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as nursery:
            for _ in range(streams):
                nursery.start_soon(one_stream, client, url, reader, len(CHUNK) * chunks)
        return time.perf_counter() - wall, time.process_time() - cpu


@attrs.frozen(kw_only=True)
class Peer:
    name: str
    transport: str  # "trio" or "httpx2"
    reader: Reader
    read_timeout: float | None  # 60 s like a client's default; None: no per-read cancel scope
    https: bool = False
    reference: str = "httpx2/aiter_raw"  # the row this one's ratios are relative to


PEERS = [
    Peer(name="trio/receive_some", transport="trio", reader=read_receive_some, read_timeout=60),
    Peer(
        name="trio/receive_some, read=None",
        transport="trio",
        reader=read_receive_some,
        read_timeout=None,
    ),
    Peer(name="trio/aiter_raw", transport="trio", reader=read_aiter_raw, read_timeout=60),
    Peer(name="httpx2/aiter_raw", transport="httpx2", reader=read_aiter_raw, read_timeout=60),
    Peer(
        name="httpx2/aiter_raw, read=None",
        transport="httpx2",
        reader=read_aiter_raw,
        read_timeout=None,
    ),
]
HTTPS_PEERS = [
    Peer(
        name="https trio/receive_some",
        transport="trio",
        reader=read_receive_some,
        read_timeout=60,
        https=True,
        reference="https httpx2/aiter_raw",
    ),
    Peer(
        name="https httpx2/aiter_raw",
        transport="httpx2",
        reader=read_aiter_raw,
        read_timeout=60,
        https=True,
        reference="https httpx2/aiter_raw",
    ),
]


async def bench(
    *,
    http_base: str,
    https_base: str | None,
    client_context: ssl.SSLContext | None,
    runs: int,
    paced_seconds: float,
) -> None:
    burst_chunks = 10_000
    paced_streams, paced_rate = 100, 50.0
    paced_chunks = int(paced_seconds * paced_rate)
    paced_runs = max(1, runs - 2)
    peers = PEERS + (HTTPS_PEERS if https_base is not None else [])
    burst: dict[str, list[tuple[float, float]]] = {peer.name: [] for peer in peers}
    paced: dict[str, list[float]] = {peer.name: [] for peer in peers}

    async def run(
        peer: Peer, *, streams: int, chunks: int, rate: float | None
    ) -> tuple[float, float]:
        base = https_base if peer.https else http_base
        assert base is not None
        return await run_scenario(
            base=base,
            transport=peer.transport,
            reader=peer.reader,
            streams=streams,
            chunks=chunks,
            rate=rate,
            read_timeout=peer.read_timeout,
            verify=client_context if peer.https and client_context is not None else True,
        )

    for _ in range(runs):  # interleaved, so that machine noise hits every peer alike
        for peer in peers:
            wall, cpu = await run(peer, streams=1, chunks=burst_chunks, rate=None)
            burst[peer.name].append((burst_chunks / wall, cpu / burst_chunks * 1e6))
    for _ in range(paced_runs):  # each paced run takes paced_seconds per peer
        for peer in peers:
            _, cpu = await run(peer, streams=paced_streams, chunks=paced_chunks, rate=paced_rate)
            paced[peer.name].append(cpu / (paced_streams * paced_chunks) * 1e6)

    size = len(FRAMED_CHUNK)
    print(f"burst: 1 stream x {burst_chunks} chunks of {size} B; median of {runs} runs")
    print(
        f"paced: {paced_streams} streams x {paced_chunks} chunks at {paced_rate:g}/s each;"
        f" median of {paced_runs} runs"
    )
    if https_base is None:
        print("https rows skipped: `pip install trustme` to include them")
    print()
    print(
        "| reader | burst chunks/s | vs httpx2 | burst CPU µs/chunk | vs httpx2 "
        "| paced CPU µs/chunk | vs httpx2 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for peer in peers:
        rate = statistics.median(r for r, _ in burst[peer.name])
        burst_cpu = statistics.median(c for _, c in burst[peer.name])
        paced_cpu = statistics.median(paced[peer.name])
        ref_rate = statistics.median(r for r, _ in burst[peer.reference])
        ref_burst_cpu = statistics.median(c for _, c in burst[peer.reference])
        ref_paced_cpu = statistics.median(paced[peer.reference])
        print(
            f"| {peer.name} | {rate:,.0f} | {rate / ref_rate:.2f}x | {burst_cpu:.2f} "
            f"| {burst_cpu / ref_burst_cpu:.2f}x | {paced_cpu:.1f} "
            f"| {paced_cpu / ref_paced_cpu:.2f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cert-dir", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    args = parser.parse_args()
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(_serve, args.cert_dir)
        return
    print("Server: a raw trio HTTP/1.1 server in a child process on 127.0.0.1 (no API involved).")
    with tempfile.TemporaryDirectory() as cert_dir:
        client_context: ssl.SSLContext | None = None
        command = [sys.executable, __file__, "--serve"]
        try:
            import trustme  # optional: only for the https rows
        except ImportError:
            pass
        else:
            ca = trustme.CA()
            ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
                f"{cert_dir}/server.pem"
            )
            client_context = ssl.create_default_context()
            ca.configure_trust(client_context)
            command += ["--cert-dir", cert_dir]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            http_port, https_port = map(int, server.stdout.readline().split())
            runs, seconds = (3, 1.0) if args.quick else (5, 3.0)
            bench_decoders(runs)
            trio.run(
                functools.partial(
                    bench,
                    http_base=f"http://127.0.0.1:{http_port}",
                    https_base=f"https://127.0.0.1:{https_port}" if https_port else None,
                    client_context=client_context,
                    runs=runs,
                    paced_seconds=seconds,
                )
            )
        finally:
            server.terminate()
            server.wait(timeout=10)
            if server.stdout is not None:
                server.stdout.close()


if __name__ == "__main__":
    main()
