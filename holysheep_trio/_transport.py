# Trio-native HTTP/1.1 transport for httpx2: h11 over trio sockets, keep-alive pool, no generators.
"""``TrioTransport``: HTTP/1.1 for ``httpx2.AsyncClient`` on trio, without anyio or httpcore2.

Why it exists: httpx2's default transport (httpcore2 on anyio) leaks an async generator whenever
a streamed response is closed before the end of its body, and spends more CPU per received
chunk (see benchmarks/bench_transport.py). This transport speaks HTTP/1.1 with h11 directly over
trio sockets, returns each socket read as one body chunk, and contains no async generator and no
background task. h11 parses the response head; Content-Length and chunked bodies are then decoded
by a small sans-I/O decoder here (``_ContentLengthDecoder``, ``_ChunkedDecoder``), which costs a
fraction of h11's per-event machinery per chunk; other bodies stay with h11. See
``docs/transport.md``.

Usage::

    async with httpx2.AsyncClient(transport=TrioTransport()) as client:
        async with client.stream("GET", url) as response:
            body = response.extensions["holysheep.body"]  # a TrioResponseStream
            while chunk := await body.receive_some():
                ...

Scope: ``http`` and ``https`` (TLS with SNI, ALPN ``http/1.1`` and certificate verification on
by default). No HTTP/2, no proxies: whoever needs them passes their own ``httpx2.AsyncClient``.

Connection reuse rules:

* A connection goes back to the pool only when its response body was read to the end, neither
  message asked to close it (h11's keep-alive rules: no ``Connection: close``, not HTTP/1.0),
  no byte came after the body, and nothing cancelled or failed the exchange.
* Before an idle connection is reused it is polled: readable means the server closed it (EOF) or
  sent bytes nobody asked for; either way it is discarded (RFC 9112 §9.5: a server may close an
  idle connection at any time).
* Retry rule: a request is sent again, once and on a fresh connection in the same pool slot,
  only when provably nothing of it was written: the first send on a *reused* connection failed
  with zero bytes accepted by the kernel (an idle connection already found dead by the poll above
  is not a retry: it is simply replaced before anything is written). Anything else, a connection
  that broke or closed after the request was written in part or in full, raises
  ``httpx2.WriteError``, ``httpx2.ReadError`` or ``httpx2.RemoteProtocolError`` with the request
  attached: the server may have read the request and acted on it, so whether to send it again
  belongs to the caller's retry policy, where it is counted (RFC 9110 §9.2.2 and RFC 9112 §9.3.1:
  no automatic retry of a non-idempotent request unless it was never applied). A fresh connection
  is never retried.
* A response sent before the request was fully written is still read: if the server answers
  (e.g. 413) and closes while the body is being sent, the write fails, and the response the
  server sent is returned if its head is complete (RFC 9112 §9.5; httpcore does the same). Such
  a connection is never reused.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import os
import re
import select
import ssl
import sys
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Final, TypeVar

import attrs
import h11
import httpx2
import trio

if sys.version_info < (3, 11):  # pragma: no cover - trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["TransportStatistics", "TrioResponseStream", "TrioTransport"]

# One read of up to this many bytes becomes one body chunk. Large, so that a burst of small SSE
# events is handed up in one piece instead of one Python round trip per event.
_RECEIVE_SIZE: Final = 65536
# Upper bound on any await during clean-up (rule 6 of STYLE.md). Closing is synchronous here, so
# this only bounds the single checkpoint in aclose().
_CLOSE_TIMEOUT: Final = 1.0
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# os.read() works on socket fds on POSIX only; elsewhere every read goes through trio's stream.
_RAW_READS: Final = sys.platform != "win32"
# File descriptors left to everything else the process opens (files, the event loop, other
# clients, listening sockets) below the soft RLIMIT_NOFILE, which the pool keeps its
# connections under (see TrioTransport._make_room_for_connections).
_FILES_HEADROOM: Final = 256
_os_read = os.read
_T = TypeVar("_T")
_os_write = os.write
logger = logging.getLogger("holysheep_trio")

_NEED_DATA: Final = h11.NEED_DATA
_Data: Final = h11.Data
_EndOfMessage: Final = h11.EndOfMessage

_PoolKey = tuple[str, str, int]

# --- body decoding (sans-I/O) --------------------------------------------------------------------

# chunk-size [ chunk-ext ] before the CRLF (RFC 9112 §7.1, §7.1.1): at most 20 hex digits like
# h11 (len(str(2**64)) == 20; no sign, no "0x", so nothing negative and no absurd size), then
# optional BWS and extensions, which are ignored. An extension may hold anything but CR and LF
# (quoted-string excludes both); trailing whitespace is tolerated, as h11 does.
_CHUNK_SIZE_LINE: Final = re.compile(rb"([0-9A-Fa-f]{1,20})[ \t]*(?:;[^\r\n]*)?")
# Bounds on the lines buffered while waiting for their end, so that a server cannot make us hold
# an unbounded line: bytes before a chunk-size line's CRLF, and before a trailer line's LF (its
# CR included). A chunk-size line is a few bytes; a trailer line gets h11's default limit on a
# head (h11.Connection's max_incomplete_event_size).
_MAX_CHUNK_SIZE_LINE: Final = 4096
_MAX_TRAILER_LINE: Final = 16384
# Bound on a response head (status line and fields) while it is incomplete, as httpcore sets
# it: h11's default (16 KiB) refuses real-world heads with many or long fields once they arrive
# in more than one read.
_MAX_HEAD_SIZE: Final = 100 * 1024
_INCOMPLETE_BODY: Final = "peer closed connection without sending complete message body"

# What a _ChunkedDecoder expects next.
_SIZE_LINE: Final = 0  # a chunk-size line: hex size, extensions, CRLF
_DATA: Final = 1  # chunk data (self._remaining bytes of it)
_DATA_END: Final = 2  # the CRLF that ends chunk data
_TRAILER: Final = 3  # trailer lines up to an empty line (after the last chunk, of size 0)
_END: Final = 4  # nothing: the body ended


class _ContentLengthDecoder:
    """Sans-I/O decoder of a body framed by ``Content-Length`` (RFC 9112 §6.2).

    ``feed(data)`` returns the body bytes in ``data``; once ``length`` bytes came, ``at_end`` is
    true and anything after them is kept in ``extra`` (bytes nobody asked for: the connection
    must not be reused). ``close()`` says the connection closed; it raises if the body is short.
    """

    __slots__ = ("_length", "_remaining", "at_end", "extra")

    def __init__(self, length: int) -> None:
        self._length = length
        self._remaining = length
        self.at_end = length == 0
        self.extra = b""

    def feed(self, data: bytes) -> bytes:
        """Return the body bytes in ``data`` (all of it but what follows the end of the body)."""
        remaining = self._remaining
        if len(data) < remaining:
            self._remaining = remaining - len(data)
            return data
        self._remaining = 0
        self.at_end = True
        self.extra += data[remaining:]
        return data[:remaining]  # the very same object when the body ends with this read

    def close(self) -> None:
        """Signal the end of input (EOF).

        Raises:
            httpx2.RemoteProtocolError: The body is incomplete (no request attached).
        """
        if not self.at_end:
            received = self._length - self._remaining
            raise httpx2.RemoteProtocolError(
                f"{_INCOMPLETE_BODY}: received {received} bytes, expected {self._length}"
            )


class _ChunkedDecoder:
    """Sans-I/O decoder of a ``Transfer-Encoding: chunked`` body (RFC 9112 §7.1).

    ``feed(data)`` returns every body byte that ``data`` completes, the data of several chunks
    joined in one ``bytes``, and a partial chunk's data as it arrives (only an incomplete
    chunk-size line, CRLF or trailer line is held back). Chunk extensions and trailer fields are
    read and ignored. Once the empty line that ends the trailer section has been read,
    ``at_end`` is true and any bytes after it are kept in ``extra`` (bytes nobody asked for: the
    connection must not be reused). ``close()`` says the connection closed; it raises if the
    body is incomplete. After an error the decoder must not be used again.
    """

    __slots__ = ("_pending", "_remaining", "_state", "at_end", "extra")

    def __init__(self) -> None:
        self._pending = b""  # input kept for the next feed: part of a line or of a CRLF
        self._state = _SIZE_LINE
        self._remaining = 0  # chunk data still to come in the current chunk
        self.at_end = False
        self.extra = b""

    def feed(self, data: bytes) -> bytes:
        """Return the body bytes that ``data`` completes (``b""`` if none).

        Raises:
            httpx2.RemoteProtocolError: Malformed framing (no request attached): a bad
                chunk-size line, chunk data not followed by CRLF, or a line longer than its
                bound.
        """
        if self._pending:
            data = self._pending + data
            self._pending = b""
        state = self._state
        remaining = self._remaining
        pieces: list[bytes] = []
        position = 0
        size = len(data)
        while position < size:
            if state == _DATA:
                end = min(position + remaining, size)
                pieces.append(data[position:end])
                remaining -= end - position
                position = end
                if not remaining:
                    state = _DATA_END
            elif state == _SIZE_LINE:
                line_end = data.find(b"\r\n", position)
                if line_end < 0:
                    # The unterminated rest may end with the CR of its CRLF: allow for it.
                    if size - position > _MAX_CHUNK_SIZE_LINE + 1:
                        raise httpx2.RemoteProtocolError("chunk-size line too long")
                    break
                if line_end - position > _MAX_CHUNK_SIZE_LINE:
                    raise httpx2.RemoteProtocolError("chunk-size line too long")
                match = _CHUNK_SIZE_LINE.fullmatch(data, position, line_end)
                if match is None:
                    line = data[position:line_end]
                    raise httpx2.RemoteProtocolError(f"illegal chunk header: {line[:64]!r}")
                remaining = int(match[1], 16)
                position = line_end + 2
                if not remaining:
                    state = _TRAILER
                    continue
                end = position + remaining
                if data.startswith(b"\r\n", end):
                    # Fast path (benchmarks/bench_transport.py): the whole chunk and its CRLF
                    # are here, as with one SSE event per read; _DATA and _DATA_END would take
                    # it in two more turns of the loop.
                    pieces.append(data[position:end])
                    position = end + 2
                    remaining = 0
                else:
                    state = _DATA
            elif state == _DATA_END:
                # Checked byte by byte as it arrives, like h11 >= 0.16 (no CRLF, no reuse).
                crlf = data[position : position + 2]
                if crlf != b"\r\n"[: len(crlf)]:
                    raise httpx2.RemoteProtocolError(
                        f"malformed chunk footer: {crlf!r} (expected b'\\r\\n')"
                    )
                if len(crlf) < 2:
                    break
                position += 2
                state = _SIZE_LINE
            elif state == _TRAILER:
                # Trailer fields end at LF with an optional CR before it, as in h11 (RFC 9112
                # §2.2 lets a recipient accept a bare LF); they are skipped, not parsed.
                line_end = data.find(b"\n", position)
                if line_end < 0:
                    if size - position > _MAX_TRAILER_LINE:
                        raise httpx2.RemoteProtocolError("trailer line too long")
                    break
                if line_end - position > _MAX_TRAILER_LINE:
                    raise httpx2.RemoteProtocolError("trailer line too long")
                if data[position:line_end] in (b"", b"\r"):  # the empty line: the end
                    state = _END
                position = line_end + 1
            else:  # _END: whatever follows is not part of this response
                break
        self._state = state
        self._remaining = remaining
        if state == _END:
            self.at_end = True
            self.extra += data[position:]
        else:
            self._pending = data[position:]
        if len(pieces) == 1:
            return pieces[0]
        return b"".join(pieces)

    def close(self) -> None:
        """Signal the end of input (EOF).

        Raises:
            httpx2.RemoteProtocolError: The body is incomplete (no request attached).
        """
        if not self.at_end:
            raise httpx2.RemoteProtocolError(f"{_INCOMPLETE_BODY} (incomplete chunked read)")


_BodyDecoder = _ContentLengthDecoder | _ChunkedDecoder


def _body_decoder(
    connection: h11.Connection, method: str, response: h11.Response
) -> _BodyDecoder | None:
    """Return our decoder for the body of ``response``, or None to leave the body to h11.

    ``connection`` has just returned ``response``. Only the two framings we decode are taken,
    chosen by the same rules as h11's own ``_body_framing`` (RFC 9112 §6.3);
    ``tests/test_transport.py`` checks that the choices agree. Everything else stays with h11:
    bodies empty by rule (a HEAD request, 204, 304), a switched protocol (CONNECT) and bodies
    read until the connection closes.
    """
    if (
        connection.their_state is not h11.SEND_BODY
        or method == "HEAD"
        or response.status_code in (204, 304)
    ):
        return None
    content_length: int | None = None
    for name, value in response.headers:  # h11 lower-cased the names and checked the values
        if name == b"transfer-encoding":
            # h11 accepts no Transfer-Encoding but "chunked", and it beats Content-Length.
            return _ChunkedDecoder()
        if name == b"content-length":
            content_length = int(value)  # h11 checked: one value of 1 to 20 digits
    return None if content_length is None else _ContentLengthDecoder(content_length)


@attrs.frozen(kw_only=True)
class TransportStatistics:
    """A snapshot of a ``TrioTransport``'s connection pool.

    Attributes:
        open_connections: Connections that exist now (in use, idle, or being opened).
        idle_connections: Open connections waiting in the pool for reuse.
        connections_created: Connections successfully opened over the transport's lifetime.
    """

    open_connections: int
    idle_connections: int
    connections_created: int


def _socket_is_readable(sock: trio.socket.SocketType) -> bool:
    """Return whether an idle socket has anything to read (EOF, reset or unexpected bytes).

    An idle HTTP/1.1 connection has nothing to say: any readable state means the server closed
    it or broke the protocol, so the connection must not carry another request. Same rule as
    httpcore's ``is_socket_readable``; ``poll`` because ``select`` fails on fds >= 1024.
    """
    fd = sock.fileno()
    if fd < 0:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)  # pragma: no cover - Windows
    return bool(readable)  # pragma: no cover - Windows


class _SocketWriter(trio.abc.Stream):
    """The socket of one connection as a trio stream that keeps account of what it wrote.

    Writes go to the trio socket directly, so that ``bytes_sent`` counts the bytes the kernel
    accepted: ``trio.SocketStream.send_all`` does not say how many went out before a failure,
    and the retry rule needs to know that none did. A write failure is kept in ``error`` instead
    of being raised; whoever writes checks it afterwards. This is what lets a response be read
    after a failed upload: under a ``trio.SSLStream`` (which wraps this object for https), a
    raised error would mark the TLS stream broken for reading too (RFC 9112 §9.5).

    With ``nowait`` set, ``receive_some`` takes only bytes already in the socket and raises
    ``trio.WouldBlock`` instead of waiting; ``trio.SSLStream`` passes that through without
    losing anything (the bytes of a partial TLS record stay in its buffer), which makes a
    non-blocking read through TLS possible (POSIX only: it reads the file descriptor).
    """

    __slots__ = ("bytes_sent", "error", "nowait", "socket", "stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.socket = stream.socket
        self.bytes_sent = 0
        self.error: BaseException | None = None
        self.nowait = False

    def write_now(self, data: bytes) -> int:
        """Write what the kernel takes of ``data`` at once, without waiting or a schedule point;
        return how many bytes it took (0 on Windows, where only :meth:`send_all` writes).

        A request fits a socket's send buffer nearly always, so the transport writes it with
        this first: ``send_all`` would yield to the scheduler once per write (trio's socket does
        so after every successful send), and with thousands of requests starting together each
        would hold its bytes and a chain of coroutines until the scheduler came back to it. A
        failure is kept in ``error``, as ``send_all`` keeps it.
        """
        if self.error is not None or not _RAW_READS:
            return 0
        fd = self.socket.fileno()
        if fd < 0:
            return 0  # closed: send_all says so
        try:
            taken = _os_write(fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self.error = exc
            return 0
        self.bytes_sent += taken
        return taken

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.error is not None or not data:
            # The connection is dead (nothing more may go out), or there is nothing to send.
            await trio.lowlevel.checkpoint()
            return
        socket = self.socket
        try:
            with memoryview(data) as view:
                total = len(view)
                sent = 0
                while sent < total:
                    with view[sent:] as remaining:
                        accepted = await socket.send(remaining)
                    sent += accepted
                    self.bytes_sent += accepted
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.error = exc

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self.nowait:
            return await self.stream.receive_some(max_bytes)
        fd = self.socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the connection was closed")
        try:
            return _os_read(fd, _RECEIVE_SIZE if max_bytes is None else max_bytes)
        except BlockingIOError:
            raise trio.WouldBlock from None
        except OSError as exc:  # as trio.SocketStream translates it
            raise trio.BrokenResourceError(exc) from exc

    async def aclose(self) -> None:
        await self.stream.aclose()


class _Connection:
    """One HTTP/1.1 connection: a trio stream, its raw socket and its h11 state machine.

    ``stream`` is what is read (a ``trio.SocketStream``, or a ``trio.SSLStream`` over
    ``writer``); ``sender`` is what the request is written to (``writer`` itself for plain TCP,
    the ``trio.SSLStream`` for TLS). Either way ``writer`` counts the bytes and keeps the error.
    """

    __slots__ = (
        "expires_at",
        "h11",
        "key",
        "read_ahead",
        "sender",
        "socket",
        "stream",
        "writer",
    )

    def __init__(self, *, key: _PoolKey, stream: trio.abc.Stream, writer: _SocketWriter) -> None:
        self.key = key
        self.stream = stream
        self.writer = writer
        self.sender: trio.abc.SendStream = writer if stream is writer.stream else stream
        self.socket = writer.socket
        # None while a response body is read by our own decoder (h11 stopped at its head); a
        # fresh state machine is made when the connection carries its next request.
        self.h11: h11.Connection | None = _new_h11_connection()
        self.expires_at = math.inf
        self.read_ahead = False

    async def receive(self) -> bytes:
        """Return the next bytes from the server (``b""`` at EOF).

        Raises:
            trio.BrokenResourceError, trio.ClosedResourceError, OSError: The socket failed or
                was closed.
        """
        if not _RAW_READS or self.stream.__class__ is not trio.SocketStream:
            # bytes() of a bytes object is that object: a copy only for a bytearray.
            return bytes(await self.stream.receive_some(_RECEIVE_SIZE))
        # Plain TCP fast path, measured in benchmarks/bench_transport.py: the same
        # try-then-wait-readable dance as trio's socket.recv, minus its per-call context
        # managers. The fd is looked up on every call because a closed fd number can be reused
        # by an unrelated file (trio's close() sets fileno() to -1).
        socket = self.socket
        if self.read_ahead:
            # The last read filled the buffer, so more is probably waiting: try before waiting.
            await trio.lowlevel.checkpoint_if_cancelled()
            fd = socket.fileno()
            if fd < 0:
                raise trio.ClosedResourceError("the connection was closed")
            try:
                data = _os_read(fd, _RECEIVE_SIZE)
            except BlockingIOError:
                pass
            else:
                self.read_ahead = len(data) == _RECEIVE_SIZE
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
        # A short read means the sender is paced (one event per segment): the next read would
        # almost always fail, so wait first (a checkpoint too) and skip the failing syscall.
        while True:
            fd = socket.fileno()
            if fd < 0:
                raise trio.ClosedResourceError("the connection was closed")
            await trio.lowlevel.wait_readable(fd)  # what trio does with the socket, one call less
            fd = socket.fileno()
            if fd < 0:  # closed by another task after we were woken
                raise trio.ClosedResourceError("the connection was closed")
            try:
                data = _os_read(fd, _RECEIVE_SIZE)
            except BlockingIOError:  # pragma: no cover - a spurious wake-up
                continue
            self.read_ahead = len(data) == _RECEIVE_SIZE
            return data

    def plain_fd(self) -> int:
        """The socket's file descriptor when a reader may wait on it and read it directly
        (plain TCP on POSIX, nothing probably waiting from a full read), else -1."""
        if not _RAW_READS or self.read_ahead or self.stream.__class__ is not trio.SocketStream:
            return -1
        return self.socket.fileno()

    def read_now(self) -> bytes | None:
        """One read of the socket that never waits (``plain_fd()`` said it may): the bytes
        (``b""`` at EOF), or None when none are there. No checkpoint.

        Raises:
            trio.ClosedResourceError, OSError: The socket was closed or failed.
        """
        fd = self.socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the connection was closed")
        try:
            data = _os_read(fd, _RECEIVE_SIZE)
        except BlockingIOError:
            return None
        self.read_ahead = len(data) == _RECEIVE_SIZE
        return data

    async def receive_nowait(self) -> bytes | None:
        """Return bytes the server already sent (``b""`` at EOF), or None if there are none.

        Never waits for the network; a checkpoint like ``receive()``, and like it cancel-safe:
        a ``trio.Cancelled`` is raised only before anything was taken from the socket.

        Raises:
            trio.BrokenResourceError, trio.ClosedResourceError, OSError: The socket failed or
                was closed.
        """
        if not _RAW_READS:  # pragma: no cover - Windows: no non-blocking read of our own
            await trio.lowlevel.checkpoint()
            return None
        if self.stream.__class__ is trio.SocketStream:
            await trio.lowlevel.checkpoint_if_cancelled()
            data = self.read_now()
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        # TLS: decrypted bytes already buffered come first; otherwise the raw socket is read
        # without waiting, and a partial TLS record stays buffered in the SSLStream.
        writer = self.writer
        writer.nowait = True
        try:
            return bytes(await self.stream.receive_some(_RECEIVE_SIZE))
        except trio.WouldBlock:
            return None
        finally:
            writer.nowait = False

    def close(self) -> None:
        # Synchronous and abortive on purpose: it cannot block or be cancelled, so clean-up is
        # bounded; HTTP/1.1 framing (not TLS close_notify) tells the server where messages end.
        self.socket.close()

    def is_reusable_now(self, now: float) -> bool:
        return now < self.expires_at and not _socket_is_readable(self.socket)


class _Waiter:
    """A request queued for a pool slot; served in arrival order (fair)."""

    __slots__ = ("connection", "event", "granted", "key")

    def __init__(self, key: _PoolKey) -> None:
        self.key = key
        self.event = trio.Event()
        self.granted = False  # a slot to open a new connection in
        self.connection: _Connection | None = None  # or an idle connection handed over


class _UnsentRequestError(Exception):
    """The first send on a reused connection failed with nothing written (the retry rule)."""


def _new_h11_connection() -> h11.Connection:
    return h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD_SIZE)


class TrioResponseStream(httpx2.AsyncByteStream):
    """The body of one HTTP/1.1 response, read straight from the connection.

    No async generator: ``__aiter__`` returns the stream itself, and ``receive_some()`` is the
    generator-free fast path (``response.extensions["holysheep.body"]`` is this object). Each
    socket read becomes one chunk: Content-Length and chunked framing are decoded by this
    module's sans-I/O decoders (every complete body byte of a read, several chunks joined in one
    ``bytes``), any other body by h11.

    Closing (``aclose()``, idempotent) returns the connection to the pool only if the body was
    read to the end and HTTP/1.1 allows reuse; otherwise the socket is closed at once. An unread
    body is never drained. Reading to the end returns the connection by itself.

    Reads are cancel-safe: a ``trio.Cancelled`` (a caller's cancel scope or deadline around one
    ``receive_some()``) or an ``httpx2.ReadTimeout`` is raised only while waiting for bytes,
    before any was taken from the connection, so the stream stays usable: the next
    ``receive_some()`` continues where the last one stopped, and the connection can still be
    reused if the body then ends cleanly. Only failures that lose or corrupt the stream's state
    (the connection broke, the server broke HTTP/1.1 framing) close the connection; every later
    call then raises ``httpx2.ReadError``. (Over TLS, a cancellation that lands while TLS itself
    must write, for a renegotiation or key update, breaks the ``trio.SSLStream``: the next read
    raises ``httpx2.ReadError``.)

    ``receive_some_nowait()`` returns body bytes that have already arrived without waiting for
    the server (for a deadline that must not fire while data is waiting): bytes buffered with
    the head, then a non-blocking read of the socket. Over TLS, decrypted bytes already buffered
    come first, then the socket is read without waiting; bytes of an incomplete TLS record are
    kept for the next read but are no body bytes yet (``None``). On Windows, where the transport
    does not read the socket itself, only bytes buffered with the head are found.

    One task reads at a time: neither method may run concurrently with the other.
    """

    __slots__ = (
        "_closed_early",
        "_connection",
        "_decoder",
        "_keep_alive",
        "_leftover",
        "_method",
        "_read_timeout",
        "_transport",
        "_url",
    )

    def __init__(
        self,
        *,
        transport: TrioTransport,
        connection: _Connection,
        request: _Sending,
        read_timeout: float | None,
        decoder: _BodyDecoder | None = None,
        keep_alive: bool = True,
    ) -> None:
        self._transport = transport
        self._connection: _Connection | None = connection
        # Not the request itself: it holds the request body (the prompt, kilobytes of it) and
        # the headers for the life of the stream, thousands of times over. Errors get a
        # stand-in with its method and URL (and so no credentials either).
        self._method = request.method
        self._url = request.url  # a str: a third of the size of the parsed URL
        self._read_timeout = read_timeout
        self._closed_early = False
        # With a decoder, h11 stops at the response head: the body bytes it already buffered
        # (read together with the head) go to the decoder instead, and whether the connection
        # may carry another request is settled now. After the head, our side of h11 is DONE
        # exactly when neither message asked to close (h11 moves it to MUST_CLOSE otherwise).
        # keep_alive=False: the exchange went wrong in a way h11 cannot see (a failed write).
        self._decoder = decoder
        h11_connection = connection.h11
        assert h11_connection is not None
        self._leftover = h11_connection.trailing_data[0] if decoder is not None else b""
        self._keep_alive = keep_alive and h11_connection.our_state is h11.DONE
        if decoder is not None:
            # h11 is done with this response: let it and its receive buffer (the first read,
            # up to 64 KiB) go now rather than at the end of the body. The next request on
            # this connection gets a fresh state machine (about 1 KiB, so not made before).
            connection.h11 = None

    @property
    def _request(self) -> httpx2.Request:
        """What the errors of the body name as their request: its method and URL."""
        return _stand_in(self._method, self._url)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        data = await self.receive_some()
        if not data:
            raise StopAsyncIteration
        return data

    async def receive_some(self) -> bytes:
        """Return the next piece of the body: every body byte that one socket read completed.

        Returns:
            Non-empty bytes, or ``b""`` once the body has ended (and on every later call).

        Raises:
            httpx2.ReadTimeout: Nothing arrived within the request's read timeout; like a
                cancellation, it leaves the stream usable (see the class docstring).
            httpx2.ReadError: The connection broke or the stream was closed before the end.
            httpx2.RemoteProtocolError: The server broke HTTP/1.1 framing (e.g. closed the
                connection in the middle of the body).
        """
        connection = self._connection
        if connection is None:
            if self._closed_early:
                raise httpx2.ReadError("the response stream is closed", request=self._request)
            return b""
        decoder = self._decoder
        if decoder is None:
            data = await self._receive_some_with_h11(connection, nowait=False)
            assert data is not None  # None only with nowait
            return data
        try:
            body = b""
            data = self._leftover
            if data:
                self._leftover = b""
                body = decoder.feed(data)
            while not decoder.at_end:
                if body:
                    return body
                if self._read_timeout is None:  # _receive() without its await: one frame less
                    try:
                        data = await connection.receive()
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                        raise httpx2.ReadError(_describe(exc), request=self._request) from exc
                else:
                    data = await self._receive(connection)
                if not data:
                    decoder.close()  # the body is incomplete, so this raises
                body = decoder.feed(data)
        except (trio.Cancelled, httpx2.ReadTimeout):
            # Only _receive() waits, and it raises these before taking any byte from the
            # connection; what came before is in the decoder: nothing is lost.
            raise
        except BaseException as exc:
            self._fail(exc)
            raise
        self._end(connection)
        return body

    def readable_fd(self) -> int:
        """A file descriptor to wait on (``trio.lowlevel.wait_readable``) before
        :meth:`read_ready`, or -1 when only :meth:`receive_some` can read on.

        The paced reader's fast path: waiting on the socket and reading it without the
        coroutines of ``receive_some`` (each a few objects that the garbage collector traverses
        while they wait, with thousands of streams at once). Only for a plain TCP body with our
        decoder, nothing left over and no read timeout.
        """
        connection = self._connection
        if (
            connection is None
            or self._decoder is None
            or self._leftover
            or self._read_timeout is not None
        ):
            return -1
        return connection.plain_fd()

    def read_ready(self) -> bytes | None:
        """After :meth:`readable_fd`'s descriptor was readable: what :meth:`receive_some` would
        return now, or None when no body byte is here yet (wait again). Never waits.

        Raises:
            httpx2.ReadError, httpx2.RemoteProtocolError: As :meth:`receive_some`.
        """
        connection = self._connection
        decoder = self._decoder
        assert connection is not None, "see readable_fd()"
        assert decoder is not None, "see readable_fd()"
        try:
            try:
                data = connection.read_now()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise httpx2.ReadError(_describe(exc), request=self._request) from exc
            if data is None:
                return None
            if not data:
                decoder.close()  # the body is incomplete, so this raises
            body = decoder.feed(data)
        except BaseException as exc:
            self._fail(exc)
            raise
        if decoder.at_end:
            self._end(connection)
            return body
        return body or None

    async def receive_some_nowait(self) -> bytes | None:
        """Return the body bytes that have already arrived, without waiting for the server.

        For a deadline on server silence: try this before declaring that nothing came. It is a
        checkpoint but never waits for the network (the read timeout does not apply), and it is
        cancel-safe like ``receive_some()``. See the class docstring for what it can find over
        TLS and on Windows.

        Returns:
            Non-empty bytes (as ``receive_some()`` would return them), ``b""`` once the body
            has ended (and on every later call), or ``None`` if no body byte is available now.

        Raises:
            httpx2.ReadError: The connection broke or the stream was closed before the end.
            httpx2.RemoteProtocolError: The server broke HTTP/1.1 framing.
        """
        connection = self._connection
        if connection is None:
            if self._closed_early:
                raise httpx2.ReadError("the response stream is closed", request=self._request)
            return b""
        decoder = self._decoder
        if decoder is None:
            return await self._receive_some_with_h11(connection, nowait=True)
        try:
            body = b""
            data: bytes | None = self._leftover
            if data:
                self._leftover = b""
                body = decoder.feed(data)
            while not decoder.at_end:
                if body:
                    return body
                data = await self._receive_nowait(connection)
                if data is None:
                    return None
                if not data:
                    decoder.close()  # the body is incomplete, so this raises
                body = decoder.feed(data)
        except trio.Cancelled:  # raised before any byte was taken, as in receive_some()
            raise
        except BaseException as exc:
            self._fail(exc)
            raise
        self._end(connection)
        return body

    def _fail(self, exc: BaseException) -> None:
        """A read failed in a way that loses or corrupts state: close the connection."""
        self._abort()
        if isinstance(exc, httpx2.RemoteProtocolError):
            exc.request = self._request  # the decoders raise it without one

    async def _receive_some_with_h11(
        self, connection: _Connection, *, nowait: bool
    ) -> bytes | None:
        h11_connection = connection.h11
        assert h11_connection is not None  # ours only with a body decoder
        chunks: list[bytes] = []
        try:
            while True:
                event = h11_connection.next_event()
                event_type = type(event)
                if event_type is _Data:
                    if event.data:  # type: ignore[union-attr]  # b"" would read as the end
                        chunks.append(event.data)  # type: ignore[union-attr]
                elif event_type is _NEED_DATA:
                    if chunks:
                        break
                    if nowait:
                        data = await self._receive_nowait(connection)
                        if data is None:
                            return None
                    else:
                        data = await self._receive(connection)
                    h11_connection.receive_data(data)
                elif event_type is _EndOfMessage:
                    self._end(connection)
                    break
                else:  # pragma: no cover - h11 yields nothing else inside a body
                    raise httpx2.RemoteProtocolError(
                        f"unexpected HTTP/1.1 event {event_type.__name__}", request=self._request
                    )
        except (trio.Cancelled, httpx2.ReadTimeout):
            # Raised before any byte was taken (see receive_some); h11 keeps what came before.
            raise
        except BaseException as exc:
            self._abort()
            # No test reaches this since the decoders took Content-Length and chunked bodies:
            # h11 raises nothing for the bodies left to it. Kept so that it never leaks out.
            if isinstance(exc, h11.RemoteProtocolError):  # pragma: no cover
                raise httpx2.RemoteProtocolError(str(exc), request=self._request) from exc
            raise
        if len(chunks) == 1:
            return bytes(chunks[0])
        return b"".join(chunks)

    async def _receive(self, connection: _Connection) -> bytes:
        # A cancel scope costs about as much as a trio checkpoint (~5 µs): only when needed.
        timeout = self._read_timeout
        try:
            if timeout is None:
                return await connection.receive()
            with trio.move_on_after(timeout) as scope:
                return await connection.receive()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise httpx2.ReadError(_describe(exc), request=self._request) from exc
        assert scope.cancelled_caught
        raise httpx2.ReadTimeout("timed out reading the response body", request=self._request)

    async def _receive_nowait(self, connection: _Connection) -> bytes | None:
        try:
            return await connection.receive_nowait()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise httpx2.ReadError(_describe(exc), request=self._request) from exc

    def _end(self, connection: _Connection) -> None:
        """The body ended: hand the connection back, reusable if HTTP/1.1 allows it."""
        self._connection = None
        decoder = self._decoder
        if decoder is None:
            h11_connection = connection.h11
            assert h11_connection is not None  # ours only with a body decoder
            reusable = (
                self._keep_alive
                and h11_connection.our_state is h11.DONE
                and h11_connection.their_state is h11.DONE
                # Bytes after the end of the response answer nothing we asked: not reusable.
                and h11_connection.trailing_data == (b"", False)
            )
            if reusable:
                h11_connection.start_next_cycle()
        else:
            # Same rule for bytes after the end. h11's state machine stopped at the response
            # head (it still expects the body), so a fresh one, made for the next request,
            # carries it: a new client h11.Connection is exactly what
            # start_next_cycle() leaves after a clean keep-alive exchange (both sides IDLE,
            # nothing buffered), and costs about 1 µs.
            reusable = self._keep_alive and not decoder.extra
        self._transport._release(connection, reusable=reusable)

    def _abort(self) -> None:
        connection = self._connection
        if connection is not None:
            self._connection = None
            self._transport._discard(connection)
            self._closed_early = True

    def _ended_unread(self, connection: _Connection) -> bool:
        """Return whether the body's end is already buffered, with no body byte before it.

        An empty body (204, Content-Length: 0, a lone last chunk) ends without any read: its end
        came with the head. Taking buffered bytes is not draining (no I/O), and it keeps such
        connections reusable; any unread body byte means close.
        """
        decoder = self._decoder
        try:
            if decoder is None:
                assert connection.h11 is not None  # ours only with a body decoder
                return type(connection.h11.next_event()) is _EndOfMessage
            leftover = self._leftover
            self._leftover = b""
            return not decoder.feed(leftover) and decoder.at_end
        except (h11.RemoteProtocolError, httpx2.RemoteProtocolError):
            return False

    async def aclose(self) -> None:
        """Release the connection: back to the pool if the body ended, else close it at once.

        Idempotent and bounded: it does no network I/O, only a shielded checkpoint.
        """
        connection = self._connection
        if connection is not None:
            if self._ended_unread(connection):
                self._end(connection)
            else:
                self._abort()
        with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
            await trio.lowlevel.checkpoint()


# What h11 accepts in a header (h11._abnf, RFC 9110 §5.1 and §5.5): a token for the name; for
# the value, visible bytes (obs-text included) with single spaces or tabs between them, nothing
# at either end, no CR, LF or NUL.
_FIELD_NAME: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE: Final = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")


def _unsendable_request_message(
    headers: list[tuple[bytes, bytes]], exc: h11.LocalProtocolError
) -> str:
    """Say why h11 refused to encode a request with ``headers``, without any header value.

    h11's own message quotes the offending value ("Illegal header value b'Bearer sk-...\\n'"):
    an API key read from a file with its line ending would end up in logs and tracebacks. The
    header *name* is shown when it is a valid token; a value never is.
    """
    for name, value in headers:
        if not _FIELD_NAME.fullmatch(name):
            return "a request header name is not a valid HTTP token (RFC 9110 §5.1)"
        if not _FIELD_VALUE.fullmatch(value):
            return (
                f"the value of the request header {name.decode('ascii')!r} is not a valid HTTP"
                " field value (RFC 9110 §5.5), e.g. it starts or ends with whitespace or holds"
                " a line break (CR, LF) or a NUL byte; the value is not shown"
            )
    text = str(exc)
    # h11's other messages are fixed texts; a value would only appear here through a future
    # change of h11, so look for any before quoting it.
    if any(
        value and (value in text.encode("latin-1", "replace") or repr(value) in text)
        for _, value in headers
    ):
        return "the request cannot be encoded as HTTP/1.1"
    return f"the request cannot be encoded as HTTP/1.1: {text}"


def _describe(exc: BaseException) -> str:
    """One line for an error and its cause, e.g. trio's "all attempts to connect to H:P failed"
    followed by what each attempt got ("[Errno 111] Connect call failed ...")."""
    text = str(exc)
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        # trio.open_tcp_stream: an OSError caused by a group of the per-address failures, whose
        # own text only repeats the OSError's; name the leaves instead.
        leaves = [str(leaf) or type(leaf).__name__ for leaf in _leaves(cause)]
        detail = "; ".join(dict.fromkeys(leaves))
    else:
        detail = "" if cause is None else str(cause)
    if detail and detail not in text:
        text = f"{text}: {detail}" if text else detail
    return text or type(exc).__name__


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


async def _open_tcp_stream(host: str, port: int) -> trio.SocketStream:
    """``trio.open_tcp_stream(host, port)``, leaner when ``host`` is an IP address.

    One address leaves nothing for happy eyeballs (RFC 8305) to race, but trio's machinery for
    it (a nursery, a task, events, a cancel scope) still costs about 6 KiB for as long as the
    connection takes, ten thousand times over when that many streams start at once
    (docs/benchmarks.md, "Scale"). So an IP address is connected to directly; a host name goes
    through trio as before (its lookup, and every address it resolves to). A failure reads as
    trio's does: ``OSError("all attempts to connect to HOST:PORT failed")`` from a group of
    the attempt's error.
    """
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return await trio.open_tcp_stream(host, port)
    address: Any
    if version == 4:
        family, address = trio.socket.AF_INET, (host, port)
    else:  # getaddrinfo resolves a scope (fe80::1%eth0) and adds flow info
        infos = await trio.socket.getaddrinfo(
            host, port, type=trio.socket.SOCK_STREAM, proto=trio.socket.IPPROTO_TCP
        )
        family, _, _, _, address = infos[0]
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        await sock.connect(address)
        # Like trio.open_tcp_stream (whose nursery's exit is a checkpoint): a cancellation that
        # came while a loopback connection completed at once is delivered here, not ignored.
        await trio.lowlevel.checkpoint_if_cancelled()
    except OSError as exc:
        sock.close()
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        message = f"all attempts to connect to {shown} failed"
        raise OSError(message) from BaseExceptionGroup(message, [exc])
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


#: What _open_files_limits() reports for "no limit".
_UNLIMITED: Final = sys.maxsize


def _open_files_limits() -> tuple[int, int] | None:
    """The soft and hard ``RLIMIT_NOFILE`` (``_UNLIMITED`` for none), or None on Windows."""
    if sys.platform == "win32":  # pragma: no cover
        return None
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinity = resource.RLIM_INFINITY
    return (_UNLIMITED if soft == infinity else soft, _UNLIMITED if hard == infinity else hard)


def _set_open_files_limit(soft: int) -> bool:
    """Set the soft ``RLIMIT_NOFILE`` (the hard one unchanged); whether the OS agreed."""
    if sys.platform == "win32":  # pragma: no cover
        return False
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    except (ValueError, OSError):  # pragma: no cover - e.g. a sandbox that refuses
        return False
    return True


def _out_of_files(exc: BaseException) -> bool:
    """Whether ``exc`` (or a cause of it, e.g. in trio's group) is EMFILE or ENFILE."""
    seen: list[BaseException] = [exc]
    while seen:
        current = seen.pop()
        if isinstance(current, OSError) and current.errno in (errno.EMFILE, errno.ENFILE):
            return True
        if isinstance(current, BaseExceptionGroup):
            seen.extend(current.exceptions)
        if current.__cause__ is not None:
            seen.append(current.__cause__)
    return False


class _Sending:
    """One request on its way through the transport: what it needs of the request.

    The transport's own client (``_http``) hands over its ``httpx2.Request`` and lets it go:
    the request (its headers, URL, extensions: about 2 KiB) would otherwise be held while the
    server takes its time to answer, ten thousand times over with ten thousand streams
    starting at once. The head (made, and so validated, before a connection is taken) is kept
    only until a byte of the request was written: it is sent again only to resend a request
    that provably never left (see the retry rule), and h11's events can be sent on any
    connection. Errors get a stand-in request with the method and URL (so no credentials
    either). A request given to :meth:`TrioTransport.handle_async_request` is kept as it is
    and named by its errors.

    Raises:
        h11.LocalProtocolError: (on construction) the head cannot be sent as HTTP/1.1.
    """

    __slots__ = ("body", "head", "key", "method", "original", "sent", "timeouts", "url")

    def __init__(
        self,
        request: httpx2.Request,
        key: _PoolKey,
        *,
        body: bytes,
        timeouts: dict[str, Any],
        keep: bool,
    ) -> None:
        url = request.url
        self.head: h11.Request | None = h11.Request(
            method=request.method, target=url.raw_path, headers=request.headers.raw
        )
        self.method = request.method
        self.url = str(url)
        self.key = key
        self.body = body
        self.timeouts = timeouts
        self.original = request if keep else None
        self.sent = False

    @property
    def request(self) -> httpx2.Request:
        """The request errors name: the caller's own, else a stand-in (method and URL)."""
        original = self.original
        return original if original is not None else _stand_in(self.method, self.url)

    def unsendable(self, exc: h11.LocalProtocolError) -> httpx2.LocalProtocolError:
        """The error for a body h11 refused to encode (no header value in it); only before a
        byte was written, while the head is here."""
        head = self.head
        assert head is not None, "h11 refuses a request before any byte of it is written"
        headers = head.headers.raw_items()
        return httpx2.LocalProtocolError(
            _unsendable_request_message(headers, exc), request=self.request
        )

    def mark_sent(self) -> None:
        """A byte of the request reached the kernel: the server may have read it."""
        self.sent = True
        self.head = None  # a resend could only repeat what may have been read
        if self.original is not None:
            self.original.extensions["holysheep.sent"] = True


def _stand_in(method: str, url: str | httpx2.URL) -> httpx2.Request:
    """What the errors of a request the transport does not hold name: its method and URL, no
    headers (they hold the API key, and an error outlives the call) and no body."""
    return httpx2.Request(method, url)


def _named(request: httpx2.Request, *, keep: bool) -> httpx2.Request:
    """What an error about ``request`` names: itself if kept, else its stand-in."""
    return request if keep else _stand_in(request.method, request.url)


def _timeout(timeouts: dict[str, Any], name: str) -> float | None:
    value = timeouts.get(name)
    return None if value is None else float(value)


class TrioTransport(httpx2.AsyncBaseTransport):
    """An ``httpx2`` transport speaking HTTP/1.1 with h11 over trio sockets.

    Use it as ``httpx2.AsyncClient(transport=TrioTransport())`` inside ``trio.run``. It needs no
    ``async with`` of its own (it starts no task); ``aclose()`` (also called by the client's)
    closes every pooled connection.

    Args:
        verify: ``True`` (default) builds the same verifying TLS context as httpx2
            (``httpx2.create_ssl_context()``); an ``ssl.SSLContext`` is used as given (its ALPN
            protocols are set to ``http/1.1``). ``False`` disables verification — only on an
            explicit request, never silently.
        max_connections: Connections open at once, over all hosts. Requests beyond it wait,
            first come first served, up to the request's ``pool`` timeout.
        max_keepalive_connections: Idle connections kept for reuse; more are closed.
        keepalive_expiry: Seconds an idle connection is kept (``trio.current_time`` clock).

    Raises:
        ValueError: A limit is out of range.
    """

    def __init__(
        self,
        *,
        verify: bool | ssl.SSLContext = True,
        max_connections: int = 1000,
        max_keepalive_connections: int = 100,
        keepalive_expiry: float = 5.0,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if max_keepalive_connections < 0:
            raise ValueError(
                f"max_keepalive_connections must be >= 0, got {max_keepalive_connections}"
            )
        if keepalive_expiry < 0:
            raise ValueError(f"keepalive_expiry must be >= 0, got {keepalive_expiry}")
        self._verify = verify
        self._ssl_context: ssl.SSLContext | None = None  # built on first https request
        # One copy of each pool key and URL text (see _shared), for the few origins in use.
        self._shared: dict[object, Any] = {}
        self._max_connections = max_connections
        self._max_keepalive = max_keepalive_connections
        self._keepalive_expiry = keepalive_expiry
        self._idle: dict[_PoolKey, list[_Connection]] = {}
        self._idle_count = 0
        self._slots_used = 0  # connections open or being opened
        self._connections: set[_Connection] = set()
        self._waiters: deque[_Waiter] = deque()
        self._created = 0
        self._closed = False
        # Connections that fit under the open-files limit as last checked: checked (and the
        # limit raised if need be) only when the pool reaches it.
        self._files_budget = 0
        self._warned_files = False

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<TrioTransport open={stats.open_connections} idle={stats.idle_connections}"
            f" max_connections={self._max_connections}>"
        )

    def statistics(self) -> TransportStatistics:
        """Return a snapshot of the pool (for tests and metrics)."""
        return TransportStatistics(
            open_connections=self._slots_used,
            idle_connections=self._idle_count,
            connections_created=self._created,
        )

    async def aclose(self) -> None:
        """Close every connection, idle or in use. Idempotent.

        Responses still being read then fail with ``httpx2.ReadError``.
        """
        self._closed = True
        for connection in list(self._connections):
            connection.close()
        self._connections.clear()
        self._idle.clear()
        self._idle_count = 0
        self._slots_used = 0
        while self._waiters:
            self._waiters.popleft().event.set()
        with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
            await trio.lowlevel.checkpoint()

    # --- the request ---------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` and return the response with its body still unread.

        Raises:
            httpx2.UnsupportedProtocol: The URL scheme is not http or https.
            httpx2.PoolTimeout, httpx2.ConnectTimeout, httpx2.WriteTimeout,
                httpx2.ReadTimeout: The matching entry of ``request.extensions["timeout"]``.
            httpx2.ConnectError, httpx2.WriteError, httpx2.ReadError,
                httpx2.RemoteProtocolError: Network or protocol failures, with ``request``
                attached. The request may have reached the server (see the retry rule in the
                module docstring).
            httpx2.LocalProtocolError: The request cannot be sent as HTTP/1.1 (e.g. a header
                value with a CR, LF or surrounding whitespace); the message names the header
                but never shows a value.
            RuntimeError: The transport is closed, or was closed while the request waited for
                a connection.
        """
        if self._closed:
            raise RuntimeError("this TrioTransport is closed")
        # Whether any byte of the request reached the kernel: a caller that gives up (a
        # cancellation, a deadline) can tell "never sent" from "maybe read by the server".
        request.extensions["holysheep.sent"] = False
        sending = self._prepare(request, body=b"", keep=True)
        sending.body = await request.aread()
        return await self._send(sending)

    def _prepare(self, request: httpx2.Request, *, body: bytes, keep: bool) -> _Sending:
        """What sending ``request`` (whose body is ``body``) takes, with its head made and so
        validated before a connection is taken: a request that cannot be sent costs none.
        ``keep``: errors name ``request`` itself (else a stand-in, see :class:`_Sending`).

        Raises:
            httpx2.UnsupportedProtocol: The URL scheme is not http or https.
            httpx2.LocalProtocolError: The head cannot be sent as HTTP/1.1 (no value shown).
        """
        url = request.url
        scheme = url.scheme
        default_port = _DEFAULT_PORTS.get(scheme)
        if default_port is None:
            raise httpx2.UnsupportedProtocol(
                f"TrioTransport supports http and https, not {scheme!r}",
                request=_named(request, keep=keep),
            )
        key: _PoolKey = self._share((scheme, url.host, url.port or default_port))
        timeouts: dict[str, Any] = request.extensions.get("timeout") or {}
        try:
            sending = _Sending(request, key, body=body, timeouts=timeouts, keep=keep)
            if not keep and not url.query and not url.userinfo:
                # Only the client's own URLs, and none that could carry a credential.
                sending.url = self._share(sending.url)
            return sending
        except h11.LocalProtocolError as exc:
            message = _unsendable_request_message(request.headers.raw, exc)
        # Raised outside the except clause, so that neither __cause__ nor __context__ holds
        # h11's error, whose text shows the offending header value (an API key).
        raise httpx2.LocalProtocolError(message, request=_named(request, keep=keep))

    def _share(self, value: _T) -> _T:
        """One object for equal pool keys and URL texts: each request would otherwise hold a
        copy of its own while it waits, ten thousand times over. Bounded: past 1,024 distinct
        values (a client of that many origins or URLs), the rest stay the request's own."""
        shared: _T | None = self._shared.get(value)
        if shared is not None:
            return shared
        if len(self._shared) < 1024:
            self._shared[value] = value
        return value

    async def _send(self, sending: _Sending) -> httpx2.Response:
        """Send a request from :meth:`_prepare` and return the response with its body still
        unread; see :meth:`handle_async_request`."""
        if self._closed:
            raise RuntimeError("this TrioTransport is closed")
        key = sending.key
        timeouts = sending.timeouts
        connection = await self._acquire(key, sending, _timeout(timeouts, "pool"))
        reused = connection is not None
        while True:
            if connection is None:
                try:
                    if len(self._connections) >= self._files_budget:
                        self._make_room_for_connections()
                    connection = await self._connect(key, sending, _timeout(timeouts, "connect"))
                except BaseException:
                    self._release_slot()
                    raise
            exchange = self._exchange(connection, sending, reused=reused)
            try:
                return await exchange
            except _UnsentRequestError:
                # The retry rule: nothing of the request was written, so the server cannot
                # have seen it; once, on a fresh connection in the same slot.
                self._forget(connection)
                reused = False
                connection = None
            except BaseException:
                self._discard(connection)
                raise

    async def _exchange(
        self, connection: _Connection, sending: _Sending, *, reused: bool
    ) -> httpx2.Response:
        h11_connection = connection.h11
        if h11_connection is None:  # the last response's body was ours to decode
            h11_connection = connection.h11 = _new_h11_connection()
        timeouts = sending.timeouts
        body = sending.body
        head = sending.head
        assert head is not None, "a request is sent again only if no byte of it was written"
        try:
            data = h11_connection.send(head)
            if body:
                data += h11_connection.send(h11.Data(data=body))
            data += h11_connection.send(h11.EndOfMessage())
            del head  # the head goes once a byte is written (see _Sending)
        except h11.LocalProtocolError as exc:
            # e.g. more body than the Content-Length header declares. h11's texts here are
            # fixed, but go through the same scrubbing as header errors, outside the clause.
            error: httpx2.LocalProtocolError | None = sending.unsendable(exc)
        else:
            error = None
        if error is not None:
            raise error

        writer = connection.writer
        sent_before = writer.bytes_sent
        write_timeout = _timeout(timeouts, "write")
        failure: BaseException | None = None
        timed_out = False
        try:
            if connection.sender is writer:
                # Plain TCP: what the kernel takes at once is written now (see write_now); a
                # cancellation that already came still stops the request before any byte.
                await trio.lowlevel.checkpoint_if_cancelled()
                taken = writer.write_now(data)
                if taken:
                    data = data[taken:]
            if not data or writer.error is not None:
                pass  # all written, or the connection failed (said below)
            elif write_timeout is None:  # no scope that never fires (see _receive_head)
                await connection.sender.send_all(data)
            else:
                with trio.move_on_after(write_timeout) as scope:
                    await connection.sender.send_all(data)
                timed_out = scope.cancelled_caught
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            failure = exc  # from trio.SSLStream itself; the writer keeps socket errors
        finally:
            if writer.bytes_sent != sent_before:
                sending.mark_sent()
        # Not kept while the answer is awaited: it holds a copy of the request body.
        del data
        if timed_out:
            raise httpx2.WriteTimeout("timed out sending the request", request=sending.request)
        failure = writer.error or failure

        read_timeout = _timeout(timeouts, "read")
        if failure is None:
            response = await self._receive_head(connection, sending, read_timeout)
        elif reused and writer.bytes_sent == sent_before:
            # The kernel took no byte of the request: provably unsent (see the retry rule).
            raise _UnsentRequestError from failure
        else:
            # The server may have answered before closing, e.g. 413 without reading the whole
            # body (RFC 9110 §15.5.14): its response is in our receive buffer, ahead of the
            # reset (RFC 9112 §9.5 asks a client to watch for it). Read it, as httpcore does;
            # the connection is dead, so this does not wait on a live server.
            try:
                response = await self._receive_head(connection, sending, read_timeout)
            except (httpx2.ReadError, httpx2.ReadTimeout, httpx2.RemoteProtocolError):
                raise httpx2.WriteError(
                    f"the connection broke while the request was sent: {_describe(failure)}",
                    request=sending.request,
                ) from failure

        stream = TrioResponseStream(
            transport=self,
            connection=connection,
            request=sending,
            read_timeout=read_timeout,
            decoder=_body_decoder(h11_connection, sending.method, response),
            keep_alive=failure is None,
        )
        return httpx2.Response(
            response.status_code,
            headers=response.headers.raw_items(),
            stream=stream,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": response.reason,
                "holysheep.body": stream,
            },
        )

    async def _receive_head(
        self, connection: _Connection, sending: _Sending, read_timeout: float | None
    ) -> h11.Response:
        """Read up to the final response head (1xx responses are skipped) and return it.

        Raises:
            httpx2.ReadTimeout: Nothing arrived for ``read_timeout`` seconds.
            httpx2.ReadError: The connection broke.
            httpx2.RemoteProtocolError: The server closed the connection before a complete
                head, sent something that is not HTTP/1.1, or a head over ``_MAX_HEAD_SIZE``.
        """
        h11_connection = connection.h11
        assert h11_connection is not None  # set by _exchange
        received_any = False
        while True:
            try:
                event = h11_connection.next_event()
            except h11.RemoteProtocolError as exc:
                if exc.error_status_hint == 431:  # h11: "Receive buffer too long"
                    message = (
                        f"the response head is larger than {_MAX_HEAD_SIZE} bytes"
                        " (the limit on a status line and header fields)"
                    )
                elif not received_any:
                    message = "the server closed the connection without sending a response"
                else:
                    message = str(exc)
                raise httpx2.RemoteProtocolError(message, request=sending.request) from exc
            if event is _NEED_DATA:
                try:
                    if read_timeout is None:
                        # No cancel scope that never fires: it would cost ~700 bytes per
                        # request for as long as the server takes to answer.
                        chunk = await connection.receive()
                    else:
                        with trio.move_on_after(read_timeout) as scope:
                            chunk = await connection.receive()
                        if scope.cancelled_caught:
                            raise httpx2.ReadTimeout(
                                "timed out waiting for the response", request=sending.request
                            )
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise httpx2.ReadError(_describe(exc), request=sending.request) from exc
                received_any = received_any or bool(chunk)
                h11_connection.receive_data(chunk)
            elif type(event) is h11.Response:
                return event
            elif type(event) is h11.ConnectionClosed:  # pragma: no cover - h11 raises instead
                raise httpx2.RemoteProtocolError(
                    "the server closed the connection without sending a response",
                    request=sending.request,
                )
            elif event is h11.PAUSED:
                # A 101 to a request with Upgrade: h11 hands the connection over to the new
                # protocol and would return PAUSED forever. We speak HTTP/1.1 only.
                raise httpx2.RemoteProtocolError(
                    "the server switched protocols (101 Switching Protocols), which this "
                    "HTTP/1.1 transport does not support",
                    request=sending.request,
                )
            # h11.InformationalResponse (1xx, RFC 9110 §15.2) is skipped: the final one follows.

    async def _connect(
        self, key: _PoolKey, sending: _Sending, connect_timeout: float | None
    ) -> _Connection:
        scheme, host, port = key
        # Looked up at call time so that tests can stand in for the network.
        open_tcp_stream = _open_tcp_stream
        try:
            with trio.move_on_after(
                math.inf if connect_timeout is None else connect_timeout
            ) as scope:
                tcp = await open_tcp_stream(host, port)
                writer = _SocketWriter(tcp)
                stream: trio.abc.Stream = tcp
                if scheme == "https":
                    try:
                        # https_compatible: many HTTPS servers close without close_notify
                        # (RFC 9110 §4.2.2 lets HTTP framing, not TLS, mark message ends).
                        stream = trio.SSLStream(
                            writer,
                            self._get_ssl_context(),
                            server_hostname=host,
                            https_compatible=True,
                        )
                        await stream.do_handshake()
                        if writer.error is not None:  # the writer keeps it instead of raising
                            raise trio.BrokenResourceError(writer.error) from writer.error
                    except BaseException:
                        tcp.socket.close()
                        raise
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if _out_of_files(exc):
                raise httpx2.ConnectError(
                    self._out_of_files_message(exc), request=sending.request
                ) from exc
            raise httpx2.ConnectError(_describe(exc), request=sending.request) from exc
        if scope.cancelled_caught:
            raise httpx2.ConnectTimeout(
                f"timed out connecting to {host}:{port}", request=sending.request
            )
        if self._closed:
            # aclose() ran while we connected: it could not close a socket it did not know of,
            # and the request must not run on a connection nobody tracks.
            tcp.socket.close()
            raise RuntimeError("this TrioTransport was closed while the request connected")
        connection = _Connection(key=key, stream=stream, writer=writer)
        self._connections.add(connection)
        self._created += 1
        return connection

    def _make_room_for_connections(self) -> None:
        """Before the pool grows past the open-files room last seen, look again, and raise the
        soft ``RLIMIT_NOFILE`` towards the hard limit if it is in the way.

        Lazily, when the pool reaches the room it had, rather than when the transport is made:
        a process that opens a few connections never has its limit touched. Then the soft limit
        goes up to what ``max_connections`` needs (plus :data:`_FILES_HEADROOM` for the rest of
        the process), at most to the hard limit, which only the administrator can raise. When
        even that is too low, connections fail with a message saying so (see
        :meth:`_out_of_files_message`) instead of a bare EMFILE.
        """
        limits = _open_files_limits()
        if limits is None:  # pragma: no cover - Windows has no such limit
            self._files_budget = self._max_connections
            return
        soft, hard = limits
        wanted = self._max_connections + _FILES_HEADROOM
        if soft < wanted and len(self._connections) + _FILES_HEADROOM >= soft:
            target = min(wanted, hard)
            if target > soft and _set_open_files_limit(target):
                logger.info(
                    "raised this process's soft open-files limit (RLIMIT_NOFILE) from %d to %d"
                    " for TrioTransport(max_connections=%d)",
                    soft,
                    target,
                    self._max_connections,
                )
                soft = target
            if soft < wanted and not self._warned_files:
                # Said once, as the pool grows into the limit, before the OS refuses a socket.
                self._warned_files = True
                logger.warning(
                    "TrioTransport(max_connections=%d) needs up to %d open files, but this"
                    " process may open only %d (RLIMIT_NOFILE%s): connections beyond about %d"
                    " will fail with 'too many open files'; raise the limit (ulimit -n, up to"
                    " the hard limit, which the administrator sets) or admit fewer streams"
                    " at once (Limits, max_connections)",
                    self._max_connections,
                    wanted,
                    soft,
                    ", the hard limit" if soft >= hard else "",
                    max(soft - _FILES_HEADROOM, soft // 2),
                )
        self._files_budget = max(soft - _FILES_HEADROOM, soft // 2)

    def _out_of_files_message(self, exc: BaseException) -> str:
        limits = _open_files_limits()
        if limits is None:  # pragma: no cover - Windows
            allowed = "only so many"
        else:
            soft, hard = limits
            allowed = f"{soft} (hard limit {'unlimited' if hard == _UNLIMITED else hard})"
        return (
            f"too many open files: this process may have {allowed} open at once"
            f" (RLIMIT_NOFILE) and this transport holds {len(self._connections)} connections;"
            " raise the limit (`ulimit -n`, up to the hard limit, or resource.setrlimit) or"
            f" admit fewer streams at once (Limits, max_connections) [{_describe(exc)}]"
        )

    def _get_ssl_context(self) -> ssl.SSLContext:
        context = self._ssl_context
        if context is None:
            verify = self._verify
            if isinstance(verify, ssl.SSLContext):
                context = verify
            else:
                # Same default as httpx2 (system CA store, SSL_CERT_FILE/SSL_CERT_DIR honoured);
                # verify=False is honoured only because the caller wrote it.
                context = httpx2.create_ssl_context(verify=verify)
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return context

    # --- the pool ------------------------------------------------------------------------------

    async def _acquire(
        self, key: _PoolKey, sending: _Sending, pool_timeout: float | None
    ) -> _Connection | None:
        """Return an idle connection for ``key``, or None with a slot reserved for a new one."""
        now = trio.current_time()
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()  # most recently used first: the least likely to be closed
            self._idle_count -= 1
            if connection.is_reusable_now(now):
                return connection
            self._discard(connection)
        if not self._waiters:
            if self._slots_used >= self._max_connections:
                self._evict_one_idle()
            if self._slots_used < self._max_connections:
                self._slots_used += 1
                return None
        waiter = _Waiter(key)
        self._waiters.append(waiter)
        try:
            with trio.move_on_after(math.inf if pool_timeout is None else pool_timeout):
                await waiter.event.wait()
        except BaseException:
            # A cancellation from outside (a caller's deadline, a losing hedge) can be delivered
            # in the same tick in which _release_slot() or _release() served this waiter: hand
            # back what it was given, or the slot is lost for good and later requests hang.
            if waiter.event.is_set():
                self._give_back(waiter)
            else:
                self._waiters.remove(waiter)
            raise
        if not waiter.event.is_set():  # the pool timeout
            self._waiters.remove(waiter)
        if self._closed:  # aclose() woke every waiter and closed every connection
            raise RuntimeError("this TrioTransport was closed while the request waited")
        handed = waiter.connection
        if handed is not None:
            if not _socket_is_readable(handed.socket):
                return handed
            # Closed by the server since it was handed over: found dead before writing, so
            # open a fresh one in the same slot (RFC 9112 §9.5).
            self._forget(handed)
            return None
        if waiter.granted:
            return None
        raise httpx2.PoolTimeout("timed out waiting for a free connection", request=sending.request)

    def _give_back(self, waiter: _Waiter) -> None:
        """Return what a waiter was served (a connection or a slot) that it will not use."""
        if waiter.connection is not None:
            # Still clean and idle: to the next waiter, or to the pool.
            self._release(waiter.connection, reusable=True)
        elif waiter.granted:
            self._release_slot()

    def _evict_one_idle(self) -> None:
        """Close the idle connection that was used longest ago, to free its slot."""
        oldest: list[_Connection] | None = None
        for connections in self._idle.values():
            if connections and (oldest is None or connections[0].expires_at < oldest[0].expires_at):
                oldest = connections
        if oldest is not None:
            self._idle_count -= 1
            self._discard(oldest.pop(0))

    def _release_slot(self) -> None:
        if self._closed:
            return
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.granted = True
            waiter.event.set()
        else:
            self._slots_used -= 1

    def _forget(self, connection: _Connection) -> None:
        """Close a connection but keep its slot, for a fresh connection in its place."""
        connection.close()
        self._connections.discard(connection)

    def _discard(self, connection: _Connection) -> None:
        """Close a connection and free its slot."""
        connection.close()
        if connection in self._connections:
            self._connections.remove(connection)
            self._release_slot()

    def _release(self, connection: _Connection, *, reusable: bool) -> None:
        """Take back a connection whose response ended; keep it for reuse if ``reusable``."""
        if self._closed or not reusable:
            self._discard(connection)
            return
        # Strictly first come, first served: the first waiter gets this connection if it is
        # for the same origin, else the slot (this connection is closed to free it).
        if self._waiters and self._waiters[0].key == connection.key:
            waiter = self._waiters.popleft()
            waiter.connection = connection
            waiter.event.set()
            return
        if self._waiters or self._idle_count >= self._max_keepalive:
            self._discard(connection)  # the slot goes to the first waiter, if any
            return
        connection.expires_at = trio.current_time() + self._keepalive_expiry
        self._idle.setdefault(connection.key, []).append(connection)
        self._idle_count += 1
