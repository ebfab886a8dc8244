# Tests of TrioTransport against small trio + h11 (or raw socket) servers on 127.0.0.1.
from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import itertools
import json
import socket
import ssl
import struct
import subprocess
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import h11
import httpx2
import pytest
import trio
import trio.testing
from hypothesis import example, given
from hypothesis import strategies as st

from holysheep_trio import _transport
from holysheep_trio._transport import (
    TransportStatistics,
    TrioResponseStream,
    TrioTransport,
    _ChunkedDecoder,
    _ContentLengthDecoder,
)

Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def start_server(nursery: trio.Nursery, handler: Handler) -> str:
    """Serve ``handler`` on 127.0.0.1 (a free port) in ``nursery``; return the base URL."""
    listeners = await nursery.start(functools.partial(trio.serve_tcp, host="127.0.0.1"), handler, 0)
    port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@attrs.define
class Peer:
    """The server's view of one connection: an h11 state machine over a trio stream."""

    stream: trio.abc.Stream
    conn: h11.Connection = attrs.field(factory=lambda: h11.Connection(h11.SERVER))

    async def read_request(self) -> tuple[h11.Request, bytes] | None:
        """Return the next request and its body, or None if the client closed the connection."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        request: h11.Request | None = None
        body = b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return None
                if not data and request is None:
                    return None
                self.conn.receive_data(bytes(data))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, body
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def send(self, *events: h11.Event) -> None:
        await self.stream.send_all(b"".join(self.conn.send(event) or b"" for event in events))

    async def respond(self, body: bytes, *, headers: list[tuple[str, str]] | None = None) -> None:
        headers = [("Content-Length", str(len(body))), *(headers or [])]
        await self.send(
            h11.Response(status_code=200, headers=headers),
            h11.Data(data=body),
            h11.EndOfMessage(),
        )

    async def wait_closed(self) -> bytes:
        """Wait for the client to close the connection; return anything it sent first."""
        received = b""
        with contextlib.suppress(trio.BrokenResourceError):
            while data := await self.stream.receive_some(65536):
                received += data
        return received


async def echo_server(stream: trio.SocketStream) -> None:
    """Answer every request on the connection with a JSON summary of it (keep-alive)."""
    peer = Peer(stream)
    while (got := await peer.read_request()) is not None:
        request, body = got
        summary = {
            "method": request.method.decode(),
            "target": request.target.decode(),
            "body": body.decode(),
            "headers": {k.decode(): v.decode() for k, v in request.headers},
        }
        await peer.respond(json.dumps(summary).encode(), headers=[("X-Reply", "yes")])


def reset(stream: trio.SocketStream) -> None:
    """Close abortively: SO_LINGER 0 makes the kernel send RST instead of FIN."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


async def read_head(stream: trio.abc.ReceiveStream) -> bytes:
    """Read up to the end of a request head and return it (what follows is left unread)."""
    received = b""
    while b"\r\n\r\n" not in received:
        data = await stream.receive_some(1)  # byte by byte: nothing of the body is taken
        if not data:
            break
        received += data
    return received


def client_for(transport: TrioTransport, **kwargs: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=transport, **kwargs)


def stats(transport: TrioTransport) -> tuple[int, int, int]:
    s = transport.statistics()
    return s.open_connections, s.idle_connections, s.connections_created


# --- basic exchanges -----------------------------------------------------------------------------


async def test_content_length_body_and_extensions(nursery: trio.Nursery) -> None:
    url = await start_server(nursery, echo_server)
    transport = TrioTransport()
    async with client_for(transport) as client:
        response = await client.post(f"{url}/v1/chat?x=1", json={"model": "m"})
        assert response.status_code == 200
        assert response.headers["x-reply"] == "yes"
        assert response.http_version == "HTTP/1.1"
        assert response.reason_phrase == ""
        assert isinstance(response.extensions["holysheep.body"], TrioResponseStream)
        summary = response.json()
        assert summary["method"] == "POST"
        assert summary["target"] == "/v1/chat?x=1"
        assert json.loads(summary["body"]) == {"model": "m"}
        assert summary["headers"]["host"] == url.removeprefix("http://")
        assert summary["headers"]["content-length"] == str(len(summary["body"]))
        assert transport.statistics() == TransportStatistics(
            open_connections=1, idle_connections=1, connections_created=1
        )
    assert stats(transport) == (0, 0, 1)


async def test_keep_alive_reuses_one_connection(nursery: trio.Nursery) -> None:
    accepted = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        await echo_server(stream)

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        for _ in range(3):
            async with client.stream("GET", url) as response:
                await response.aread()
        assert stats(transport) == (1, 1, 1)
    assert accepted == 1


async def test_streamed_request_body_is_sent(nursery: trio.Nursery) -> None:
    url = await start_server(nursery, echo_server)

    async def parts() -> Any:
        yield b"ab"
        yield b"cd"

    async with client_for(TrioTransport()) as client:
        response = await client.post(url, content=parts())
    assert response.json()["body"] == "abcd"


async def test_chunked_body_arrives_piece_by_piece(nursery: trio.Nursery) -> None:
    pieces = [b"data: one\n\n", b"data: two\n\n", b"data: three\n\n"]
    go_on = trio.Semaphore(0)

    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        await peer.read_request()
        await peer.send(h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")]))
        for piece in pieces:
            await peer.send(h11.Data(data=piece))
            await go_on.acquire()  # the next piece only once the client has this one
        await peer.send(h11.EndOfMessage())
        await peer.read_request()

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client, client.stream("GET", url) as response:
        body = response.extensions["holysheep.body"]
        received = []
        while chunk := await body.receive_some():
            assert type(chunk) is bytes
            received.append(chunk)
            go_on.release()
        assert received == pieces
        assert await body.receive_some() == b""
        assert stats(transport) == (1, 1, 1)  # back in the pool at the end of the body


async def test_aiter_raw_gives_the_same_chunks(nursery: trio.Nursery) -> None:
    pieces = [b"a" * 10, b"b" * 20, b"c" * 30]
    go_on = trio.Semaphore(0)

    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        await peer.read_request()
        await peer.send(h11.Response(status_code=200, headers=[("Content-Length", "60")]))
        for piece in pieces:
            await peer.send(h11.Data(data=piece))
            await go_on.acquire()
        await peer.send(h11.EndOfMessage())
        await peer.wait_closed()

    url = await start_server(nursery, handler)
    async with client_for(TrioTransport()) as client, client.stream("GET", url) as response:
        received = []
        async with contextlib.aclosing(response.aiter_raw()) as raw:
            async for chunk in raw:
                received.append(chunk)
                go_on.release()
        assert received == pieces


async def test_large_body_arrives_in_bounded_reads(nursery: trio.Nursery) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB

    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        await peer.read_request()
        await peer.respond(payload)
        await peer.read_request()

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport, timeout=None) as client:
        async with client.stream("GET", url) as response:
            body = response.extensions["holysheep.body"]
            chunks = [chunk async for chunk in body]
        assert b"".join(chunks) == payload
        assert max(map(len, chunks)) <= 65536  # one socket read each, never the whole body
        assert stats(transport) == (1, 1, 1)


async def test_response_stream_iterates_without_generators(nursery: trio.Nursery) -> None:
    url = await start_server(nursery, echo_server)
    async with client_for(TrioTransport()) as client, client.stream("GET", url) as response:
        body = response.extensions["holysheep.body"]
        assert body.__aiter__() is body
        chunks = [chunk async for chunk in body]
        assert json.loads(b"".join(chunks))["method"] == "GET"
        with pytest.raises(StopAsyncIteration):
            await body.__anext__()


async def test_informational_response_is_skipped(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        await peer.read_request()
        await peer.send(h11.InformationalResponse(status_code=103, headers=[("Link", "</a>")]))
        await peer.respond(b"ok")
        await peer.wait_closed()

    url = await start_server(nursery, handler)
    async with client_for(TrioTransport()) as client:
        response = await client.get(url)
    assert (response.status_code, response.content) == (200, b"ok")


async def test_unread_empty_body_still_returns_the_connection(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        while await peer.read_request():
            await peer.send(h11.Response(status_code=204, headers=[]), h11.EndOfMessage())

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        for _ in range(2):
            async with client.stream("GET", url) as response:
                assert response.status_code == 204  # and close without reading the body
        assert stats(transport) == (1, 1, 1)


# --- connection reuse rules ----------------------------------------------------------------------


async def test_connection_close_response_is_not_reused(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        await peer.read_request()
        await peer.respond(b"bye", headers=[("Connection", "close")])

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        assert (await client.get(url)).content == b"bye"
        assert (await client.get(url)).content == b"bye"
        assert stats(transport) == (0, 0, 2)


async def test_bytes_after_the_response_make_the_connection_unusable(
    nursery: trio.Nursery,
) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        await peer.read_request()
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
        await peer.wait_closed()

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        assert (await client.get(url)).content == b"ok"
        assert stats(transport) == (0, 0, 1)


async def test_idle_connection_closed_by_server_is_replaced(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[bool] = []
    real_check = _transport._socket_is_readable

    def spy(sock: Any) -> bool:
        checks.append(real_check(sock))
        return checks[-1]

    monkeypatch.setattr(_transport, "_socket_is_readable", spy)
    closed = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        await peer.read_request()
        await peer.respond(b"once")  # keep-alive as far as the client knows...
        await stream.aclose()  # ...but the server closes the idle connection
        closed.set()

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        assert (await client.get(url)).content == b"once"
        assert stats(transport) == (1, 1, 1)
        await closed.wait()
        assert (await client.get(url)).content == b"once"
        assert stats(transport) == (1, 1, 2)
    assert checks == [True]  # found dead before use, not by the retry rule


async def test_request_read_by_the_server_on_a_reused_connection_is_not_resent(
    nursery: trio.Nursery,
) -> None:
    # The server reads the second request on a kept-alive connection, then closes without a
    # word: it may have acted on it (billed it), so the transport must not send it again.
    bodies: list[bytes] = []
    accepted = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        peer = Peer(stream)
        while (got := await peer.read_request()) is not None:
            bodies.append(got[1])
            if len(bodies) > 1:
                return  # read, then close without answering
            await peer.respond(b"fine")

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        assert (await client.post(url, content=b"first")).content == b"fine"
        assert stats(transport) == (1, 1, 1)
        with pytest.raises(httpx2.RemoteProtocolError, match="without sending a response") as info:
            await client.post(url, content=b"second")
        assert info.value.request.url == url
    assert bodies == [b"first", b"second"]  # seen once: never resent
    assert accepted == 1
    assert stats(transport) == (0, 0, 1)


async def test_request_is_resent_only_when_nothing_of_it_was_written(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Blind the idle check, so that the request really is sent into a connection the server
    # has reset: the first send fails with no byte accepted, so the server cannot have seen it.
    monkeypatch.setattr(_transport, "_socket_is_readable", lambda sock: False)
    bodies: list[bytes] = []
    accepted = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        peer = Peer(stream)
        while (got := await peer.read_request()) is not None:
            bodies.append(got[1])
            await peer.respond(b"fine")
            if accepted == 1:  # reset the first connection (SO_LINGER 0: RST, not FIN)
                reset(stream)
                return

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        await client.post(url, content=b"first")
        (idle,) = transport._connections
        await trio.lowlevel.wait_readable(idle.socket)  # the reset has arrived
        assert (await client.post(url, json={"n": 2})).content == b"fine"
        assert stats(transport) == (1, 1, 2)
    assert bodies == [b"first", b'{"n":2}']  # the resent request carried its body
    assert accepted == 2


async def test_fresh_connection_closed_without_response_is_not_retried(
    nursery: trio.Nursery,
) -> None:
    accepted = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        await Peer(stream).read_request()  # then close without a word

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        with pytest.raises(httpx2.RemoteProtocolError, match="without sending a response") as info:
            await client.get(url)
        assert info.value.request.url == url
    assert accepted == 1
    assert stats(transport) == (0, 0, 1)


async def test_idle_connection_expires_on_the_trio_clock(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    url = await start_server(nursery, echo_server)
    transport = TrioTransport(keepalive_expiry=10.0)
    async with client_for(transport) as client:
        await client.get(url)
        await trio.sleep(9.0)
        await client.get(url)
        assert stats(transport) == (1, 1, 1)
        await trio.sleep(11.0)
        await client.get(url)
        assert stats(transport) == (1, 1, 2)


async def test_max_keepalive_connections_closes_the_extras(nursery: trio.Nursery) -> None:
    url = await start_server(nursery, echo_server)
    transport = TrioTransport(max_keepalive_connections=1)
    async with client_for(transport) as client:
        async with client.stream("GET", url) as first, client.stream("GET", url) as second:
            await first.aread()
            await second.aread()
        assert stats(transport) == (1, 1, 2)


async def test_max_connections_makes_requests_wait_then_pool_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    url = await start_server(nursery, echo_server)
    transport = TrioTransport(max_connections=1)
    async with client_for(transport, timeout=httpx2.Timeout(5.0, pool=3.0)) as client:
        async with client.stream("GET", url) as first:
            start = trio.current_time()
            with pytest.raises(httpx2.PoolTimeout):
                await client.get(url)
            assert trio.current_time() - start == pytest.approx(3.0)
            await first.aread()

        order: list[str] = []

        async def get(name: str) -> None:
            await client.get(url)
            order.append(name)

        async with client.stream("GET", url) as held, trio.open_nursery() as waiters:
            for name in ("a", "b", "c"):
                waiters.start_soon(get, name)
                await trio.sleep(0.1)  # queue them in a known order
            await held.aread()  # the end of the body hands the connection to "a"
        assert order == ["a", "b", "c"]
        assert stats(transport) == (1, 1, 1)


async def test_waiters_for_other_origins_are_served_in_order(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    url_a = await start_server(nursery, echo_server)
    url_b = await start_server(nursery, echo_server)
    transport = TrioTransport(max_connections=1)
    order: list[str] = []
    async with client_for(transport) as client:

        async def get(name: str, url: str) -> None:
            await client.get(url)
            order.append(name)

        async with client.stream("GET", url_a) as held, trio.open_nursery() as waiters:
            for name, url in (("b1", url_b), ("a1", url_a), ("b2", url_b)):
                waiters.start_soon(get, name, url)
                await trio.sleep(0.1)
            await held.aread()
        assert order == ["b1", "a1", "b2"]
        assert stats(transport) == (1, 1, 4)  # each hand-over to another origin reconnects


@pytest.mark.parametrize("grant", ["slot", "connection"])
async def test_waiter_cancelled_as_it_is_served_gives_back_what_it_got(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, grant: str
) -> None:
    # A waiter's cancellation (a caller's deadline, a losing hedge) and the release that serves
    # it land in the same tick: the cancellation is delivered first, then the release hands the
    # waiter a slot (an unread body closes its connection) or the connection itself (a body
    # read to its end). The waiter must give it back, or the pool shrinks for good.
    url = await start_server(nursery, echo_server)
    transport = TrioTransport(max_connections=1)
    with trio.fail_after(600):  # a lost slot would make a later request wait forever
        async with client_for(transport) as client:
            for _ in range(3):
                response = await client.send(client.build_request("GET", url), stream=True)
                body = response.extensions["holysheep.body"]
                assert body._leftover  # the whole body came with the head: no read to wait for
                waiter_scope = trio.CancelScope()

                async def wait_for_the_pool(scope: trio.CancelScope = waiter_scope) -> None:
                    with scope:
                        await client.get(url)

                async with trio.open_nursery() as waiters:
                    waiters.start_soon(wait_for_the_pool)
                    await trio.testing.wait_all_tasks_blocked()
                    assert len(transport._waiters) == 1
                    waiter_scope.cancel()  # no checkpoint from here to the release
                    if grant == "slot":
                        await response.aclose()
                    else:
                        assert await body.receive_some()  # the end of the body releases
                assert waiter_scope.cancelled_caught
                assert not transport._waiters
                open_connections, idle, _ = stats(transport)
                assert open_connections == idle <= 1
            for _ in range(3):
                assert (await client.get(url)).status_code == 200
            created = 1 if grant == "connection" else 4
            assert stats(transport) == (1, 1, created)


async def test_connection_handed_over_dead_is_replaced_before_writing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # Like an idle connection, one handed straight to a waiter is checked before the request
    # is written: here the server closed it before its body was even read.
    accepted = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        peer = Peer(stream)
        while await peer.read_request():
            await peer.respond(b"ok")
            if accepted == 1:
                await stream.aclose()
                return

    url = await start_server(nursery, handler)
    transport = TrioTransport(max_connections=1)
    async with client_for(transport) as client:
        response = await client.send(client.build_request("GET", url), stream=True)
        body = response.extensions["holysheep.body"]
        (connection,) = transport._connections
        await trio.lowlevel.wait_readable(connection.socket)  # the server's FIN is here
        result: list[int] = []

        async def get() -> None:
            result.append((await client.get(url)).status_code)

        async with trio.open_nursery() as waiters:
            waiters.start_soon(get)
            await trio.testing.wait_all_tasks_blocked()
            assert await body.receive_some() == b"ok"  # hands the connection to the waiter
        assert result == [200]
        assert stats(transport) == (1, 1, 2)
    assert accepted == 2


async def test_full_pool_evicts_an_idle_connection_of_another_origin(
    nursery: trio.Nursery,
) -> None:
    url_a = await start_server(nursery, echo_server)
    url_b = await start_server(nursery, echo_server)
    transport = TrioTransport(max_connections=1)
    async with client_for(transport) as client:
        await client.get(url_a)
        await client.get(url_b)
        assert stats(transport) == (1, 1, 2)


# --- failures ------------------------------------------------------------------------------------


async def test_server_closing_mid_body_raises(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        await peer.read_request()
        await peer.send(h11.Response(status_code=200, headers=[("Content-Length", "100")]))
        await stream.send_all(b"0123456789")

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client, client.stream("GET", url) as response:
        with pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)) as info:
            await response.aread()
        assert info.value.request.url == url
    assert stats(transport) == (0, 0, 1)


async def test_server_closing_mid_chunked_body_raises(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        await peer.read_request()
        await peer.send(h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")]))
        await stream.send_all(b"5\r\nhello\r\n")

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client, client.stream("GET", url) as response:
        body = response.extensions["holysheep.body"]
        assert await body.receive_some() == b"hello"
        with pytest.raises(httpx2.RemoteProtocolError):
            await body.receive_some()
        with pytest.raises(httpx2.ReadError, match="closed"):
            await body.receive_some()
    assert stats(transport) == (0, 0, 1)


async def test_garbage_status_line_is_a_protocol_error(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await Peer(stream).read_request()
        await stream.send_all(b"SMTP READY PLEASE\r\n\r\n")

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        with pytest.raises(httpx2.RemoteProtocolError):
            await client.get(url)
    assert stats(transport) == (0, 0, 1)


async def test_switching_protocols_is_refused_not_looped_on(nursery: trio.Nursery) -> None:
    # A 101 makes h11 pause the connection for the new protocol; the transport must fail
    # clearly instead of asking h11 for the next event forever.
    async def handler(stream: trio.SocketStream) -> None:
        await Peer(stream).read_request()
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        await trio.sleep_forever()

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        with pytest.raises(httpx2.RemoteProtocolError, match="switched protocols"):
            await client.get(url, headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert stats(transport) == (0, 0, 1)
    nursery.cancel_scope.cancel()


async def test_connect_refused_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed at once: nobody listens there
    transport = TrioTransport()
    async with client_for(transport) as client:
        with pytest.raises(httpx2.ConnectError) as info:
            await client.get(f"http://127.0.0.1:{port}/")
        assert info.value.request.url.port == port
        # one line that names the cause once, not trio's group text twice
        message = str(info.value)
        assert "sub-exception" not in message
        assert message.count(f"all attempts to connect to 127.0.0.1:{port}") == 1
        assert "refused" in message.lower() or "errno" in message.lower()
    assert stats(transport) == (0, 0, 0)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_an_ip_address_is_connected_to_directly_a_name_through_trio(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One address leaves happy eyeballs nothing to race: no trio.open_tcp_stream (its nursery
    # and task cost ~6 KiB per connection being made). A host name still goes through it.
    url = await start_server(nursery, echo_server)
    port = int(url.rsplit(":", 1)[1])
    through_trio: list[str] = []
    real = trio.open_tcp_stream

    async def recording(host: str, port: int) -> trio.SocketStream:
        through_trio.append(host)
        return await real(host, port)

    monkeypatch.setattr(trio, "open_tcp_stream", recording)
    transport = TrioTransport()
    async with client_for(transport) as client:
        assert (await client.get(url)).status_code == 200
        assert through_trio == []
        assert (await client.get(f"http://localhost:{port}/")).status_code == 200
    assert through_trio == ["localhost"]
    nursery.cancel_scope.cancel()


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
async def test_an_ipv6_address_is_connected_to_directly(nursery: trio.Nursery) -> None:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, host="::1"), echo_server, 0)
    port = listeners[0].socket.getsockname()[1]
    transport = TrioTransport()
    async with client_for(transport) as client:
        reply = (await client.get(f"http://[::1]:{port}/")).json()
        assert reply["headers"]["host"] == f"[::1]:{port}"
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            closed = probe.getsockname()[1]
        with pytest.raises(httpx2.ConnectError) as info:
            await client.get(f"http://[::1]:{closed}/")
        # trio's words for it, the address in brackets
        assert str(info.value).count(f"all attempts to connect to [::1]:{closed} failed") == 1
    nursery.cancel_scope.cancel()


async def test_h11_state_is_not_kept_while_our_decoder_reads_the_body(
    nursery: trio.Nursery,
) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        while await peer.read_request():
            await peer.respond(b"a body of some length")

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        for _ in range(2):  # the second request gets a fresh state machine on the same socket
            async with client.stream("GET", url) as response:
                body = response.extensions["holysheep.body"]
                connection = body._connection
                assert connection is not None
                assert connection.h11 is None
                assert await response.aread() == b"a body of some length"
            assert stats(transport) == (1, 1, 1)
    nursery.cancel_scope.cancel()


async def test_connect_timeout(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never_connects(host: str, port: int) -> trio.SocketStream:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    monkeypatch.setattr(_transport, "_open_tcp_stream", never_connects)
    transport = TrioTransport()
    async with client_for(transport, timeout=httpx2.Timeout(30.0, connect=2.0)) as client:
        with pytest.raises(httpx2.ConnectTimeout):
            await client.get("http://127.0.0.1:9/")
    assert trio.current_time() == pytest.approx(2.0)
    assert stats(transport) == (0, 0, 0)


async def test_read_timeout_waiting_for_the_response(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await Peer(stream).read_request()
        await trio.sleep_forever()

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport, timeout=httpx2.Timeout(30.0, read=4.0)) as client:
        start = trio.current_time()
        with pytest.raises(httpx2.ReadTimeout):
            await client.get(url)
        assert trio.current_time() - start == pytest.approx(4.0)
    assert stats(transport) == (0, 0, 1)


async def test_read_timeout_applies_to_each_body_read(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        await peer.read_request()
        await peer.send(h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")]))
        for _ in range(3):
            await trio.sleep(3.0)  # each gap is below the read timeout...
            await peer.send(h11.Data(data=b"tick"))
        await trio.sleep_forever()  # ...until this one

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport, timeout=httpx2.Timeout(30.0, read=4.0)) as client:
        async with client.stream("GET", url) as response:
            body = response.extensions["holysheep.body"]
            for _ in range(3):
                assert await body.receive_some() == b"tick"
            with pytest.raises(httpx2.ReadTimeout):
                await body.receive_some()
        assert trio.current_time() == pytest.approx(13.0)
    assert stats(transport) == (0, 0, 1)


async def test_write_timeout(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()  # never reads: the kernel buffers fill up

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport, timeout=httpx2.Timeout(30.0, write=1.0)) as client:
        with pytest.raises(httpx2.WriteTimeout):
            await client.post(url, content=b"x" * 50_000_000)
    assert stats(transport) == (0, 0, 1)


EARLY_REPLY = (
    b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large"
)


async def test_response_sent_during_the_upload_is_returned(nursery: trio.Nursery) -> None:
    # The server answers 413 after the head and closes without reading the body: the upload
    # fails (the unread body makes the close a reset), but the answer is in our buffer.
    async def handler(stream: trio.SocketStream) -> None:
        await read_head(stream)
        await stream.send_all(EARLY_REPLY)
        reset(stream)

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        response = await client.post(url, content=b"x" * 32_000_000)
        assert (response.status_code, response.content) == (413, b"too large")
        assert stats(transport) == (0, 0, 1)  # a connection whose write failed is not reused


async def test_early_response_connection_is_not_reused_even_if_it_says_keep_alive(
    nursery: trio.Nursery,
) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await read_head(stream)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nno")
        reset(stream)

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        response = await client.post(url, content=b"x" * 32_000_000)
        assert (response.status_code, response.content) == (400, b"no")
        assert stats(transport) == (0, 0, 1)


async def test_upload_cut_off_without_a_response_is_a_write_error(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await read_head(stream)
        reset(stream)

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        with pytest.raises(httpx2.WriteError, match="while the request was sent") as info:
            await client.post(url, content=b"x" * 32_000_000)
        assert info.value.request.url == url
    assert stats(transport) == (0, 0, 1)


@pytest.mark.parametrize("size", [20_000, 90_000])
async def test_large_response_head_arriving_in_pieces_is_accepted(
    nursery: trio.Nursery, size: int
) -> None:
    # Over 64 KiB (one socket read), the head arrives in several reads and h11 holds it
    # incomplete; its default bound (16 KiB) would refuse it.
    value = "v" * size

    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        while await peer.read_request():
            await peer.respond(b"ok", headers=[("X-Large", value)])

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        for _ in range(2):  # and again on the reused connection
            response = await client.get(url)
            assert (response.headers["x-large"], response.content) == (value, b"ok")
        assert stats(transport) == (1, 1, 1)


async def test_response_head_over_100_kib_is_a_clear_protocol_error(
    nursery: trio.Nursery,
) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await Peer(stream).read_request()
        await stream.send_all(b"HTTP/1.1 200 OK\r\nX-Large: " + b"v" * 300_000 + b"\r\n\r\n")
        await Peer(stream).wait_closed()

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        with pytest.raises(
            httpx2.RemoteProtocolError, match="response head is larger than 102400 bytes"
        ) as info:
            await client.get(url)
        assert info.value.request.url == url
    assert stats(transport) == (0, 0, 1)


async def test_transport_closed_during_a_connect_does_not_use_the_new_socket(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal requests
        peer = Peer(stream)
        while await peer.read_request():
            requests += 1
            await peer.respond(b"ok")

    url = await start_server(nursery, handler)
    real_open_tcp_stream = _transport._open_tcp_stream
    connecting, may_connect = trio.Event(), trio.Event()
    opened: list[trio.SocketStream] = []

    async def slow_open_tcp_stream(host: str, port: int) -> trio.SocketStream:
        connecting.set()
        await may_connect.wait()
        opened.append(await real_open_tcp_stream(host, port))
        return opened[-1]

    monkeypatch.setattr(_transport, "_open_tcp_stream", slow_open_tcp_stream)
    transport = TrioTransport()
    outcome: list[BaseException] = []

    async def get() -> None:
        try:
            await client_for(transport).get(url)
        except Exception as exc:
            outcome.append(exc)

    async with trio.open_nursery() as requesters:
        requesters.start_soon(get)
        await connecting.wait()
        await transport.aclose()  # while the request connects
        may_connect.set()
    (error,) = outcome
    assert isinstance(error, RuntimeError)
    assert "closed while the request connected" in str(error)
    assert opened[0].socket.fileno() == -1  # closed, not left to the garbage collector
    assert requests == 0
    assert stats(transport) == (0, 0, 0)


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r", "\t", " "])
async def test_header_value_never_appears_in_the_error(nursery: trio.Nursery, ending: str) -> None:
    # A key read from a file with its line ending: h11 refuses the header and its message
    # quotes the value; ours names the header only, with no chained h11 error.
    url = await start_server(nursery, echo_server)
    secret = "sk-very-secret-0123456789"
    transport = TrioTransport()
    async with client_for(transport) as client:
        with pytest.raises(httpx2.LocalProtocolError) as info:
            await client.get(url, headers={"Authorization": f"Bearer {secret}{ending}"})
        error = info.value
        assert "'authorization'" in str(error).lower()
        assert error.request.url == url
        assert error.__cause__ is None
        assert error.__context__ is None
        shown = "".join(traceback.format_exception(error)) + repr(error) + str(error)
        assert secret not in shown
        assert "sk-very" not in shown
        assert stats(transport) == (0, 0, 0)  # refused before a connection was taken
        assert (await client.get(url)).status_code == 200


def test_invalid_header_name_is_reported_without_showing_it() -> None:
    request = httpx2.Request("GET", "http://127.0.0.1/", headers={"Bad Name sk-1": "v"})
    try:
        h11.Request(method="GET", target="/", headers=request.headers.raw)
    except h11.LocalProtocolError as exc:
        message = _transport._unsendable_request_message(request.headers.raw, exc)
    assert message == "a request header name is not a valid HTTP token (RFC 9110 §5.1)"


def test_other_h11_refusals_keep_h11_text_unless_it_holds_a_value() -> None:
    request = httpx2.Request("GET", "http://127.0.0.1/", headers={"X-Token": "secret"})
    safe = _transport._unsendable_request_message(
        request.headers.raw, h11.LocalProtocolError("bad thing")
    )
    assert safe == "the request cannot be encoded as HTTP/1.1: bad thing"
    for text in ("saw 'secret'", "saw b'secret'"):
        message = _transport._unsendable_request_message(
            request.headers.raw, h11.LocalProtocolError(text)
        )
        assert message == "the request cannot be encoded as HTTP/1.1"


async def test_unsupported_scheme() -> None:
    request = httpx2.Request("GET", "ftp://127.0.0.1/")
    with pytest.raises(httpx2.UnsupportedProtocol):
        await TrioTransport().handle_async_request(request)


def test_module_has_no_async_generators() -> None:
    # The point of this transport: nothing that trio could report as an unfinalized generator.
    functions = [
        member
        for _, cls in inspect.getmembers(_transport, inspect.isclass)
        if cls.__module__ == _transport.__name__
        for _, member in inspect.getmembers(cls, inspect.isfunction)
    ]
    functions += [f for _, f in inspect.getmembers(_transport, inspect.isfunction)]
    assert len(functions) > 20
    assert not [f.__qualname__ for f in functions if inspect.isasyncgenfunction(f)]


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        TrioTransport(max_connections=0)
    with pytest.raises(ValueError, match="max_keepalive_connections"):
        TrioTransport(max_keepalive_connections=-1)
    with pytest.raises(ValueError, match="keepalive_expiry"):
        TrioTransport(keepalive_expiry=-1.0)


# --- early close and cancellation ----------------------------------------------------------------


def endless_stream_handler(server_saw_close: trio.Event) -> Handler:
    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        await peer.read_request()
        await peer.send(h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")]))
        try:
            while True:
                await peer.send(h11.Data(data=b"data: token\n\n"))
                await trio.sleep(0.01)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            server_saw_close.set()

    return handler


@pytest.mark.parametrize("how", ["receive_some", "aiter_raw"])
async def test_early_close_closes_the_socket(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, how: str
) -> None:
    server_saw_close = trio.Event()
    url = await start_server(nursery, endless_stream_handler(server_saw_close))
    transport = TrioTransport()
    async with client_for(transport) as client:
        async with client.stream("GET", url) as response:
            if how == "receive_some":
                assert await response.extensions["holysheep.body"].receive_some()
            else:
                async with contextlib.aclosing(response.aiter_raw()) as raw:
                    async for _chunk in raw:
                        break
        assert stats(transport) == (0, 0, 1)
        with trio.fail_after(60):
            await server_saw_close.wait()
        await response.aclose()  # idempotent
    gc.collect()  # an unclosed socket or generator would warn now, and warnings are errors


async def test_cancel_mid_body_closes_the_connection(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server_saw_close = trio.Event()
    url = await start_server(nursery, endless_stream_handler(server_saw_close))
    transport = TrioTransport()
    async with client_for(transport) as client:
        with trio.move_on_after(1.0) as scope:
            async with client.stream("GET", url) as response:
                body = response.extensions["holysheep.body"]
                while await body.receive_some():
                    pass
        assert scope.cancelled_caught
        assert stats(transport) == (0, 0, 1)
        with trio.fail_after(60):
            await server_saw_close.wait()


async def test_cancel_while_waiting_for_the_response_closes_the_connection(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    saw_eof = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        await peer.read_request()
        await peer.wait_closed()
        saw_eof.set()

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        with trio.move_on_after(1.0):
            await client.get(url)
        assert stats(transport) == (0, 0, 1)
        with trio.fail_after(60):
            await saw_eof.wait()


async def test_transport_aclose_closes_idle_and_busy_connections(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server_saw_close = trio.Event()
    streaming_url = await start_server(nursery, endless_stream_handler(server_saw_close))
    url = await start_server(nursery, echo_server)
    transport = TrioTransport()
    client = client_for(transport)
    response = await client.send(client.build_request("GET", streaming_url), stream=True)
    await client.get(url)  # a second connection, left idle
    assert stats(transport) == (2, 1, 2)
    await transport.aclose()
    await transport.aclose()
    assert stats(transport) == (0, 0, 2)
    with pytest.raises(httpx2.ReadError):
        await response.aread()
    with trio.fail_after(60):
        await server_saw_close.wait()
    with pytest.raises(RuntimeError, match="closed"):
        await client.get(url)
    await response.aclose()
    await client.aclose()


# --- https ---------------------------------------------------------------------------------------

trustme = pytest.importorskip("trustme")


async def start_tls_server(nursery: trio.Nursery, handler: Handler, ca: Any) -> str:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)

    async def tls_handler(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server_context, server_side=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError:
            return  # the client refused our certificate
        await handler(tls)  # type: ignore[arg-type]

    url = await start_server(nursery, tls_handler)
    return url.replace("http://127.0.0.1", "https://localhost")


async def test_https_with_a_trusted_ca(nursery: trio.Nursery) -> None:
    ca = trustme.CA()
    url = await start_tls_server(nursery, echo_server, ca)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    transport = TrioTransport(verify=client_context)
    async with client_for(transport) as client:
        for _ in range(2):
            response = await client.get(f"{url}/secure")
            assert response.json()["target"] == "/secure"
        assert stats(transport) == (1, 1, 1)
    assert client_context.check_hostname


async def test_https_verification_is_off_only_when_asked(nursery: trio.Nursery) -> None:
    url = await start_tls_server(nursery, echo_server, trustme.CA())
    async with client_for(TrioTransport(verify=False)) as client:
        assert (await client.get(url)).status_code == 200


async def test_https_rejects_an_untrusted_certificate_by_default(nursery: trio.Nursery) -> None:
    url = await start_tls_server(nursery, echo_server, trustme.CA())
    transport = TrioTransport()
    async with client_for(transport) as client:
        with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(url)
    assert stats(transport) == (0, 0, 0)


# --- the body decoders (sans-I/O) ----------------------------------------------------------------

TOKEN_CHARS = "abcXYZ019!#$%&'*+-.^_`|~"
tokens = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=6)
quoted_strings = st.text(alphabet='ab ;=,\t\\"', max_size=6).map(
    lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
)
# chunk-ext = *( ";" chunk-ext-name [ "=" chunk-ext-val ] ), as both h11 and we accept it


def format_extensions(pairs: list[tuple[str, str | None]]) -> str:
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in pairs)


extensions = st.lists(st.tuples(tokens, st.none() | tokens | quoted_strings), max_size=3).map(
    format_extensions
)
trailer_fields = st.lists(
    st.tuples(tokens, st.text(alphabet="ab19 ;:=,", max_size=12).map(str.strip)), max_size=3
)


@attrs.frozen
class ChunkedWire:
    body: bytes
    wire: bytes
    spans: tuple[tuple[int, int], ...]  # (wire offset, length) of each chunk's data

    def body_before(self, offset: int) -> bytes:
        """Return the body bytes that lie in ``wire[:offset]``: all a decoder may return."""
        return b"".join(self.wire[start : min(start + size, offset)] for start, size in self.spans)


@st.composite
def chunked_wires(draw: st.DrawFn) -> ChunkedWire:
    """A chunked body: random chunk sizes, hex case, leading zeros, extensions and trailers."""
    pieces = draw(st.lists(st.binary(min_size=1, max_size=300), max_size=8))
    wire = b""
    spans = []

    def size_line(size: int) -> bytes:
        digits = "0" * draw(st.integers(0, 2)) + f"{size:x}"
        digits = "".join(draw(st.sampled_from([c.lower(), c.upper()])) for c in digits)
        whitespace = draw(st.sampled_from(["", " ", "\t "]))  # h11 allows it only at the end
        return f"{digits}{draw(extensions)}{whitespace}\r\n".encode()

    for piece in pieces:
        wire += size_line(len(piece))
        spans.append((len(wire), len(piece)))
        wire += piece + b"\r\n"
    wire += size_line(0)
    wire += b"".join(f"{name}: {value}\r\n".encode() for name, value in draw(trailer_fields))
    wire += b"\r\n"
    return ChunkedWire(body=b"".join(pieces), wire=wire, spans=tuple(spans))


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """Cut ``data`` at ``points``: non-empty segments, like TCP reads."""
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def h11_decode(head: bytes, wire: bytes) -> tuple[bytes, bytes]:
    """Return the body h11 decodes from ``head + wire``, and the bytes it leaves after it."""
    connection = h11.Connection(h11.CLIENT)
    connection.send(h11.Request(method="GET", target="/", headers=[("Host", "example")]))
    connection.send(h11.EndOfMessage())
    connection.receive_data(head + wire)
    body = b""
    while True:
        event = connection.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return body, connection.trailing_data[0]
        else:
            assert isinstance(event, h11.Response), event


def feed_all(decoder: _ChunkedDecoder, segments: list[bytes]) -> bytes:
    return b"".join(decoder.feed(segment) for segment in segments)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@given(
    message=chunked_wires(),
    extra=st.binary(max_size=20),
    points=st.lists(st.integers(min_value=0)),
)
@example(
    message=ChunkedWire(body=b"hello", wire=b"5\r\nhello\r\n0\r\n\r\n", spans=((3, 5),)),
    extra=b"",
    points=list(range(16)),  # byte by byte
)
def test_chunked_decoder_any_segmentation_gives_the_body(
    message: ChunkedWire, extra: bytes, points: list[int]
) -> None:
    decoder = _ChunkedDecoder()
    decoded = b""
    fed = 0
    for segment in cut(message.wire + extra, points):
        assert not decoder.at_end
        decoded += decoder.feed(segment)
        fed += len(segment)
        # Every body byte a read completes is returned at once, nothing held back.
        assert decoded == message.body_before(fed)
        if fed >= len(message.wire):
            break
    assert decoder.at_end
    assert decoded == message.body
    assert decoder.extra == (message.wire + extra)[len(message.wire) : fed]
    decoder.close()  # at the end: no error
    assert h11_decode(CHUNKED_HEAD, message.wire + extra) == (message.body, extra)


@given(
    body=st.binary(max_size=500),
    extra=st.binary(max_size=20),
    points=st.lists(st.integers(min_value=0)),
)
def test_content_length_decoder_any_segmentation_gives_the_body(
    body: bytes, extra: bytes, points: list[int]
) -> None:
    decoder = _ContentLengthDecoder(len(body))
    decoded = b""
    for segment in cut(body + extra, points):
        decoded += decoder.feed(segment)
        assert decoded == body[: len(decoded)]
    decoder.close()
    assert (decoded, decoder.extra, decoder.at_end) == (body, extra, True)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    assert h11_decode(head, body + extra) == (body, extra)


def test_content_length_decoder_passes_reads_through_without_copying() -> None:
    decoder = _ContentLengthDecoder(10)
    first, last = b"01234", b"56789"
    assert (decoder.feed(first) is first, decoder.at_end) == (True, False)
    assert (decoder.feed(last) is last, decoder.at_end) == (True, True)
    assert decoder.feed(b"more") == b""  # after the end: not body
    assert decoder.extra == b"more"


def test_empty_content_length_body_is_at_its_end_before_any_input() -> None:
    decoder = _ContentLengthDecoder(0)
    assert decoder.at_end
    decoder.close()


def test_chunked_decoder_joins_the_chunks_of_one_read() -> None:
    decoder = _ChunkedDecoder()
    wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (b"data: 1\n\n", b"data: 22\n\n"))
    out = decoder.feed(wire + b"3\r\nabc")
    assert type(out) is bytes
    assert out == b"data: 1\n\ndata: 22\n\nabc"
    assert decoder.feed(b"\r\n0\r\nX-Sum: 1\r\n\r\nEXTRA") == b""
    assert (decoder.at_end, decoder.extra) == (True, b"EXTRA")
    assert decoder.feed(b"MORE") == b""  # after the end: not body
    assert decoder.extra == b"EXTRAMORE"


def test_chunked_decoder_accepts_bare_lf_in_trailers_like_h11() -> None:
    wire = b"1\r\na\r\n0\r\nX-Sum: 1\n\n"
    decoder = _ChunkedDecoder()
    assert decoder.feed(wire) == b"a"
    assert decoder.at_end
    assert h11_decode(CHUNKED_HEAD, wire) == (b"a", b"")


def test_chunked_decoder_accepts_whitespace_before_an_extension() -> None:
    # RFC 9112 §7.1.1: chunk-ext = *( BWS ";" ... ); h11 refuses it, which is stricter than needed.
    decoder = _ChunkedDecoder()
    assert decoder.feed(b"1 ;name=value\r\na\r\n0\t;x\r\n\r\n") == b"a"
    assert decoder.at_end


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"g\r\n", "illegal chunk header"),
        (b"-5\r\nhello\r\n0\r\n\r\n", "illegal chunk header"),
        (b"+5\r\nhello\r\n0\r\n\r\n", "illegal chunk header"),
        (b"0x5\r\nhello\r\n0\r\n\r\n", "illegal chunk header"),
        (b" 5\r\nhello\r\n0\r\n\r\n", "illegal chunk header"),
        (b"5_0\r\n", "illegal chunk header"),
        (b"\r\n", "illegal chunk header"),  # no size at all
        (b"5\nhello\r\n0\r\n\r\n", "illegal chunk header"),  # bare LF: no line end here
        (b"1" * 21 + b"\r\n", "illegal chunk header"),  # beyond 20 hex digits: overflow
        (b"5\r\nhelloXY0\r\n\r\n", "malformed chunk footer"),
        (b"5\r\nhello\rX0\r\n\r\n", "malformed chunk footer"),
        (b"5\r\nhello\n0\r\n\r\n", "malformed chunk footer"),
    ],
)
@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_chunked_decoder_refuses_malformed_framing(
    wire: bytes, message: str, byte_by_byte: bool
) -> None:
    segments = cut(wire, list(range(len(wire))) if byte_by_byte else [])
    with pytest.raises(httpx2.RemoteProtocolError, match=message):
        feed_all(_ChunkedDecoder(), segments)
    with pytest.raises(h11.RemoteProtocolError):  # h11 refuses the same bytes
        h11_decode(CHUNKED_HEAD, wire)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"5;" + b"x" * 4096 + b"\r\n", "chunk-size line too long"),  # complete, too long
        (b"5;" + b"x" * 4096, "chunk-size line too long"),  # no end yet and already too long
        (b"0\r\nX: " + b"x" * 16384 + b"\r\n", "trailer line too long"),
        (b"0\r\nX: " + b"x" * 16384, "trailer line too long"),
    ],
)
def test_chunked_decoder_bounds_its_lines(wire: bytes, message: str) -> None:
    with pytest.raises(httpx2.RemoteProtocolError, match=message):
        _ChunkedDecoder().feed(wire)


def test_chunked_decoder_refuses_cr_inside_an_extension() -> None:
    # Neither token nor quoted-string may hold a CR (RFC 9110 §5.6.2, §5.6.4); h11 lets it by.
    with pytest.raises(httpx2.RemoteProtocolError, match="illegal chunk header"):
        _ChunkedDecoder().feed(b"5;a\rb\r\nhello\r\n0\r\n\r\n")


def test_chunked_decoder_waits_for_a_line_at_its_bound() -> None:
    decoder = _ChunkedDecoder()
    line = b"1;" + b"x" * 4094  # 4096 bytes: the longest size line allowed
    assert decoder.feed(line + b"\r") == b""
    assert decoder.feed(b"\na\r\n0\r\nX: " + b"y" * 16380 + b"\r") == b"a"
    assert decoder.feed(b"\n\r\n") == b""
    assert decoder.at_end


@pytest.mark.parametrize(
    ("decoder", "wire", "message"),
    [
        (_ContentLengthDecoder(10), b"01234", "received 5 bytes, expected 10"),
        (_ChunkedDecoder(), b"5\r\nhello\r\n", r"\(incomplete chunked read\)"),
        (_ChunkedDecoder(), b"5\r\nhello\r\n0\r\n", r"\(incomplete chunked read\)"),
    ],
)
def test_eof_before_the_end_of_the_body(
    decoder: _ContentLengthDecoder | _ChunkedDecoder, wire: bytes, message: str
) -> None:
    decoder.feed(wire)
    with pytest.raises(
        httpx2.RemoteProtocolError,
        match="peer closed connection without sending complete message body.*" + message,
    ):
        decoder.close()


# Each response head, read after a request of the given method, with the framing h11 picks.
FRAMINGS = [
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 5),
    ("GET", b"HTTP/1.1 404 Not Found\r\nContent-Length: 007\r\n\r\n", 7),
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0),
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", 5),
    ("GET", b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", 3),
    ("POST", b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n", "chunked"),
    (
        "GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: Chunked\r\n\r\n",
        "chunked",
    ),
    (
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        "chunked",
    ),
    ("GET", b"HTTP/1.1 200 OK\r\n\r\n", None),  # read until close: h11's
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", None),  # empty by rule: h11's
    ("HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", None),
    ("GET", b"HTTP/1.1 204 No Content\r\n\r\n", None),
    ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", None),
    ("CONNECT", b"HTTP/1.1 200 OK\r\n\r\n", None),  # a switched protocol: h11's
]


@pytest.mark.parametrize(("method", "head", "framing"), FRAMINGS)
def test_body_decoder_takes_the_framing_h11_would_use(
    method: str, head: bytes, framing: int | str | None
) -> None:
    connection = h11.Connection(h11.CLIENT)
    target = "example:443" if method == "CONNECT" else "/"
    connection.send(h11.Request(method=method, target=target, headers=[("Host", "example")]))
    connection.send(h11.EndOfMessage())
    connection.receive_data(head)
    response = connection.next_event()
    assert isinstance(response, h11.Response)
    decoder = _transport._body_decoder(connection, method, response)
    reader = connection._reader  # h11's choice (private, read in this test only)
    if framing == "chunked":
        assert isinstance(decoder, _ChunkedDecoder)
        assert type(reader).__name__ == "ChunkedReader"
    elif isinstance(framing, int):
        assert isinstance(decoder, _ContentLengthDecoder)
        assert decoder._length == framing
        assert type(reader).__name__ == "ContentLengthReader"
        assert reader._length == framing  # type: ignore[union-attr]
    else:
        assert decoder is None


# --- the body decoders on the wire ---------------------------------------------------------------


async def test_small_chunks_of_one_read_come_back_in_one_receive_some(
    nursery: trio.Nursery,
) -> None:
    events = [b'data: {"n":%d}\n\n' % n for n in range(50)]
    got_head, sent = trio.Event(), trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        await peer.read_request()
        await peer.send(h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")]))
        await got_head.wait()
        await stream.send_all(b"".join(b"%x;n=1\r\n%s\r\n" % (len(e), e) for e in events))
        sent.set()
        await stream.send_all(b"0\r\nX-Checksum: 1\r\n\r\n")
        await peer.read_request()

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client, client.stream("GET", url) as response:
        got_head.set()
        await sent.wait()  # all 50 chunks wait in the socket: one read takes them
        body = response.extensions["holysheep.body"]
        assert await body.receive_some() == b"".join(events)
        assert await body.receive_some() == b""
        assert stats(transport) == (1, 1, 1)


async def test_connection_is_reused_after_a_chunked_body_with_trailers(
    nursery: trio.Nursery,
) -> None:
    accepted = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        peer = Peer(stream)
        while (got := await peer.read_request()) is not None:
            await peer.send(
                h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")]),
                h11.Data(data=got[0].target),
                h11.Data(data=b"!"),
                h11.EndOfMessage(headers=[("X-Checksum", "abc"), ("X-Other", "1")]),
            )

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        for path in ("/a", "/bb", "/ccc"):
            assert (await client.get(url + path)).content == path.encode() + b"!"
            assert stats(transport) == (1, 1, 1)
    assert accepted == 1


async def test_bytes_after_a_chunked_body_make_the_connection_unusable(
    nursery: trio.Nursery,
) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await Peer(stream).read_request()
        await stream.send_all(CHUNKED_HEAD + b"2\r\nok\r\n0\r\n\r\nEXTRA")
        await Peer(stream).wait_closed()

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        assert (await client.get(url)).content == b"ok"
        assert stats(transport) == (0, 0, 1)


async def test_body_read_until_close_is_left_to_h11(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await Peer(stream).read_request()
        await stream.send_all(b"HTTP/1.1 200 OK\r\n\r\nuntil ")
        await stream.send_all(b"the end")
        await stream.aclose()

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        assert (await client.get(url)).content == b"until the end"
        assert stats(transport) == (0, 0, 1)


async def test_head_response_has_no_body_and_keeps_the_connection(
    nursery: trio.Nursery,
) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        while await peer.read_request():
            await peer.send(
                h11.Response(status_code=200, headers=[("Content-Length", "5")]),
                h11.EndOfMessage(),
            )

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        for _ in range(2):
            response = await client.head(url)
            assert (response.headers["content-length"], response.content) == ("5", b"")
        assert stats(transport) == (1, 1, 1)


async def test_malformed_chunk_on_the_wire_is_a_protocol_error(nursery: trio.Nursery) -> None:
    got_head = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        await Peer(stream).read_request()
        await stream.send_all(CHUNKED_HEAD)
        await got_head.wait()  # the head alone first, so that the bad chunk comes in a read
        await stream.send_all(b"zz\r\n")
        await Peer(stream).wait_closed()

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client, client.stream("GET", url) as response:
        got_head.set()
        body = response.extensions["holysheep.body"]
        with pytest.raises(httpx2.RemoteProtocolError, match="illegal chunk header") as info:
            await body.receive_some()
        assert info.value.request.url == url
        with pytest.raises(httpx2.ReadError, match="closed"):
            await body.receive_some()
    assert stats(transport) == (0, 0, 1)


@pytest.mark.parametrize(
    ("wire", "reused"),
    [
        (b"0\r\n\r\n", True),  # an empty body, already complete: the connection goes back
        (b"2\r\nok\r\n0\r\n\r\n", False),  # an unread body byte: closed, never drained
        (b"zz\r\n", False),  # malformed: closed
    ],
)
async def test_closing_an_unread_chunked_body_that_came_with_the_head(
    nursery: trio.Nursery, wire: bytes, reused: bool
) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        while await peer.read_request():
            await stream.send_all(CHUNKED_HEAD + wire)
            peer.conn = h11.Connection(h11.SERVER)  # we spoke for it: start afresh

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        async with client.stream("GET", url) as response:
            assert response.status_code == 200  # and close without reading the body
        assert stats(transport) == ((1, 1, 1) if reused else (0, 0, 1))


async def test_read_timeout_in_a_body_read_until_close(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await Peer(stream).read_request()
        await stream.send_all(b"HTTP/1.1 200 OK\r\n\r\nsome")
        await trio.sleep_forever()

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport, timeout=httpx2.Timeout(30.0, read=4.0)) as client:
        async with client.stream("GET", url) as response:
            body = response.extensions["holysheep.body"]
            assert await body.receive_some() == b"some"
            with pytest.raises(httpx2.ReadTimeout):
                await body.receive_some()
        assert stats(transport) == (0, 0, 1)


@pytest.mark.parametrize(
    ("request_headers", "status_line"),
    [
        ({"Connection": "close"}, b"HTTP/1.1 200 OK"),  # our request asked to close
        ({}, b"HTTP/1.0 200 OK"),  # an HTTP/1.0 response: no keep-alive
    ],
)
async def test_decoded_body_without_keep_alive_closes_the_connection(
    nursery: trio.Nursery, request_headers: dict[str, str], status_line: bytes
) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await Peer(stream).read_request()
        await stream.send_all(status_line + b"\r\nContent-Length: 2\r\n\r\nok")
        await Peer(stream).wait_closed()

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client:
        assert (await client.get(url, headers=request_headers)).content == b"ok"
        assert stats(transport) == (0, 0, 1)


# --- cancel-safe reads and reads without waiting -------------------------------------------------

PART_ONE, PART_TWO = b"data: one\n\n", b"data: two\n\n"
# Each framing's response on the wire, in three stages the server sends one at a time. The
# cuts fall inside chunk data and inside a chunk-size line, so that reads stop mid-frame.
STAGED_RESPONSES = {
    "content-length": [
        b"HTTP/1.1 200 OK\r\nContent-Length: 22\r\n\r\n" + PART_ONE[:6],
        PART_ONE[6:],
        PART_TWO,
    ],
    "chunked": [
        CHUNKED_HEAD + b"b\r\n" + PART_ONE[:6],
        PART_ONE[6:] + b"\r\nb",
        b"\r\n" + PART_TWO + b"\r\n0\r\n\r\n",
    ],
    "until-close": [b"HTTP/1.1 200 OK\r\n\r\n" + PART_ONE[:6], PART_ONE[6:], PART_TWO],
}
# The body bytes the client holds once each stage has arrived.
BODY_AFTER_STAGE = [PART_ONE[:6], PART_ONE, PART_ONE + PART_TWO]


def staged_handler(framing: str, gates: list[trio.Event]) -> Handler:
    """Send the framing's stages, each after its gate; then serve keep-alive requests."""

    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        await peer.read_request()
        for stage, gate in zip(STAGED_RESPONSES[framing], [None, *gates], strict=True):
            if gate is not None:
                await gate.wait()
            await stream.send_all(stage)
        if framing == "until-close":
            await stream.aclose()
            return
        peer.conn = h11.Connection(h11.SERVER)  # we spoke for it: start afresh
        while await peer.read_request():
            await peer.respond(b"again")

    return handler


@pytest.fixture(params=["http", "https"])
async def staged_server(
    request: pytest.FixtureRequest, nursery: trio.Nursery
) -> Callable[[Handler], Awaitable[tuple[str, TrioTransport]]]:
    """Start a server with a handler, over TLS or not; return its URL and a transport for it."""

    async def start(handler: Handler) -> tuple[str, TrioTransport]:
        if request.param == "http":
            return await start_server(nursery, handler), TrioTransport()
        ca = trustme.CA()
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        return await start_tls_server(nursery, handler, ca), TrioTransport(verify=client_context)

    return start


async def read_until(body: TrioResponseStream, expected: bytes, received: bytes) -> bytes:
    while len(received) < len(expected):
        data = await body.receive_some()
        assert data
        received += data
    assert received == expected
    return received


@pytest.mark.parametrize("framing", list(STAGED_RESPONSES))
async def test_a_cancelled_read_leaves_the_stream_usable(
    staged_server: Callable[[Handler], Awaitable[tuple[str, TrioTransport]]],
    autojump_clock: trio.testing.MockClock,
    framing: str,
) -> None:
    gates = [trio.Event(), trio.Event()]
    url, transport = await staged_server(staged_handler(framing, gates))
    async with client_for(transport, timeout=httpx2.Timeout(30.0, read=4.0)) as client:
        async with client.stream("GET", url) as response:
            body = response.extensions["holysheep.body"]
            received = b""
            for expected, gate in zip(BODY_AFTER_STAGE, [*gates, None], strict=True):
                received = await read_until(body, expected, received)
                if gate is None:
                    break
                # Nothing more is coming until the gate opens: each of these interrupts a read
                # that is waiting for bytes, and the stream must carry on afterwards.
                with trio.CancelScope() as scope:
                    scope.cancel()  # already cancelled when the read starts
                    await body.receive_some()
                assert scope.cancelled_caught
                with trio.move_on_after(1.0) as scope:  # cancelled while the read waits
                    await body.receive_some()
                assert scope.cancelled_caught
                with pytest.raises(httpx2.ReadTimeout):  # the read timeout is no harm either
                    await body.receive_some()
                gate.set()
            assert await body.receive_some() == b""
        if framing == "until-close":
            assert stats(transport) == (0, 0, 1)
        else:  # the body ended cleanly: the connection is reused
            assert stats(transport) == (1, 1, 1)
            assert (await client.get(url)).content == b"again"
            assert stats(transport) == (1, 1, 1)


async def wait_for_bytes(body: TrioResponseStream) -> None:
    """Wait until the server's next bytes are in the client's socket (not read yet)."""
    connection = body._connection
    assert connection is not None
    await trio.lowlevel.wait_readable(connection.socket)


async def arrived(body: TrioResponseStream) -> bytes | None:
    """``receive_some_nowait()`` once the server's next bytes are here: over TLS, a record may
    come in several TCP segments, and a partial one is rightly kept back (None) until the rest
    is in."""
    for _ in range(100):
        await wait_for_bytes(body)
        found = await body.receive_some_nowait()
        if found is not None:
            return found
    return None


@pytest.mark.parametrize("framing", list(STAGED_RESPONSES))
async def test_receive_some_nowait_returns_what_has_arrived(
    staged_server: Callable[[Handler], Awaitable[tuple[str, TrioTransport]]],
    autojump_clock: trio.testing.MockClock,
    framing: str,
) -> None:
    gates = [trio.Event(), trio.Event()]
    url, transport = await staged_server(staged_handler(framing, gates))
    async with client_for(transport) as client:
        async with client.stream("GET", url) as response:
            body = response.extensions["holysheep.body"]
            start = trio.current_time()
            # The first body bytes came with the head.
            assert await body.receive_some_nowait() == PART_ONE[:6]
            assert await body.receive_some_nowait() is None
            gates[0].set()
            assert await arrived(body) == PART_ONE[6:]
            assert await body.receive_some_nowait() is None
            gates[1].set()
            assert await arrived(body) == PART_TWO
            if framing == "until-close":  # the end is the server's close, not yet seen
                assert await arrived(body) == b""
            assert await body.receive_some_nowait() == b""
            assert await body.receive_some_nowait() == b""
            assert await body.receive_some() == b""
            assert trio.current_time() == start  # never waited on the clock
        if framing == "until-close":
            assert stats(transport) == (0, 0, 1)
        else:
            assert stats(transport) == (1, 1, 1)
            assert (await client.get(url)).content == b"again"


async def test_receive_some_nowait_after_a_failure_or_close(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await Peer(stream).read_request()
        await stream.send_all(CHUNKED_HEAD + b"zz\r\n")
        await Peer(stream).wait_closed()

    url = await start_server(nursery, handler)
    transport = TrioTransport()
    async with client_for(transport) as client, client.stream("GET", url) as response:
        body = response.extensions["holysheep.body"]
        with pytest.raises(httpx2.RemoteProtocolError, match="illegal chunk header") as info:
            await body.receive_some_nowait()
        assert info.value.request.url == url
        with pytest.raises(httpx2.ReadError, match="closed"):
            await body.receive_some_nowait()
    assert stats(transport) == (0, 0, 1)


class SplitRecordStream(trio.abc.Stream):
    """A server-side transport under trio.SSLStream that can send one write in two halves."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self.split_next = False
        self.half_sent = trio.Event()
        self.send_rest = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.split_next:
            self.split_next = False
            half = len(data) // 2
            await self.inner.send_all(data[:half])
            self.half_sent.set()
            await self.send_rest.wait()
            data = data[half:]
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_receive_some_nowait_keeps_a_partial_tls_record(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    split: list[SplitRecordStream] = []
    may_send = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        split.append(SplitRecordStream(stream))
        tls = trio.SSLStream(split[0], server_context, server_side=True)
        peer = Peer(tls)
        await peer.read_request()
        await peer.send(h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")]))
        await may_send.wait()
        split[0].split_next = True  # one TLS record holding this chunk, sent in two halves
        await peer.send(h11.Data(data=PART_ONE), h11.EndOfMessage())
        await Peer(tls).wait_closed()

    url = (await start_server(nursery, handler)).replace("http://127.0.0.1", "https://localhost")
    transport = TrioTransport(verify=client_context)
    async with client_for(transport) as client, client.stream("GET", url) as response:
        body = response.extensions["holysheep.body"]
        assert await body.receive_some_nowait() is None
        may_send.set()
        await split[0].half_sent.wait()
        await wait_for_bytes(body)
        # Half a record: the bytes are taken from the socket and kept, but none is body yet.
        assert await body.receive_some_nowait() is None
        split[0].send_rest.set()
        await wait_for_bytes(body)
        assert await body.receive_some_nowait() == PART_ONE
        assert await body.receive_some() == b""
        assert stats(transport) == (1, 1, 1)


async def test_response_sent_during_the_upload_is_returned_over_tls(nursery: trio.Nursery) -> None:
    # Over TLS too: the failed write must not break the TLS stream for reading.
    ca = trustme.CA()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def handler(tls: trio.SSLStream[trio.SocketStream]) -> None:
        await read_head(tls)
        await tls.send_all(EARLY_REPLY)
        reset(tls.transport_stream)

    url = await start_tls_server(nursery, handler, ca)  # type: ignore[arg-type]
    transport = TrioTransport(verify=client_context)
    async with client_for(transport) as client:
        response = await client.post(url, content=b"x" * 32_000_000)
        assert (response.status_code, response.content) == (413, b"too large")
        assert stats(transport) == (0, 0, 1)


# --- the open-files limit ------------------------------------------------------------------------

# Run in a child process (the limit is the process's): set RLIMIT_NOFILE to SOFT and HARD, then
# open N connections at once to a listener that never accepts (the kernel completes them from
# its backlog, so the server side holds no descriptor) and report what happened.
_OPEN_MANY = """
import json, logging, resource, socket, sys
import httpx2, trio
from holysheep_trio import TrioTransport

logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")

soft, hard, count = map(int, sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4096)
url = "http://127.0.0.1:%d/" % listener.getsockname()[1]

async def main():
    transport = TrioTransport(max_connections=count)
    errors = []
    async with httpx2.AsyncClient(transport=transport) as client:
        async def one():
            try:
                await client.get(url)
            except httpx2.ConnectError as exc:
                errors.append(str(exc))

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
            while transport.statistics().connections_created + len(errors) < count:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    created = transport.statistics().connections_created
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    print(json.dumps({"created": created, "errors": errors, "soft": limit}))

trio.run(main)
"""


def _open_many(soft: int, hard: int, count: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_MANY, str(soft), str(hard), str(count)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    result["log"] = done.stderr.splitlines()
    return result


def _hard_open_files_limit() -> int:
    if sys.platform == "win32":
        return 0
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return sys.maxsize if hard == resource.RLIM_INFINITY else hard


@pytest.mark.skipif(sys.platform == "win32", reason="no RLIMIT_NOFILE")
@pytest.mark.skipif(_hard_open_files_limit() < 1024, reason="hard open-files limit below 1024")
def test_the_soft_open_files_limit_is_raised_when_the_pool_needs_it() -> None:
    result = _open_many(soft=64, hard=_hard_open_files_limit(), count=300)
    assert result["errors"] == []
    assert result["created"] == 300
    assert result["soft"] == 300 + _transport._FILES_HEADROOM  # what max_connections needs
    assert result["log"] == []


@pytest.mark.skipif(sys.platform == "win32", reason="no RLIMIT_NOFILE")
def test_a_hard_limit_too_low_is_said_clearly() -> None:
    result = _open_many(soft=64, hard=64, count=100)
    assert 0 < result["created"] < 64
    assert result["soft"] == 64
    message = result["errors"][0]
    assert message.startswith("too many open files: this process may have 64 (hard limit 64)")
    assert "ulimit -n" in message
    assert "Errno 24" in message  # the OS's own words, last
    # Said once beforehand too, as the pool grew into the limit.
    assert result["log"] == [
        "holysheep_trio WARNING TrioTransport(max_connections=100) needs up to 356 open files,"
        " but this process may open only 64 (RLIMIT_NOFILE, the hard limit): connections beyond"
        " about 32 will fail with 'too many open files'; raise the limit (ulimit -n, up to the"
        " hard limit, which the administrator sets) or admit fewer streams at once (Limits,"
        " max_connections)"
    ]


def test_equal_pool_keys_and_urls_are_held_once_and_the_table_is_bounded() -> None:
    transport = TrioTransport()
    url = "http://127.0.0.1:8000/v1/chat/completions"
    first = transport._prepare(httpx2.Request("POST", url), body=b"", keep=False)
    second = transport._prepare(httpx2.Request("POST", url), body=b"", keep=False)
    assert first.key is second.key
    assert first.url is second.url
    for n in range(2000):
        transport._share(f"http://127.0.0.1:{n}/")
    assert len(transport._shared) == 1024
    unshared = "".join(["http://elsewhere/", "x"])
    assert transport._share(unshared) is unshared
    assert len(transport._shared) == 1024
