# The WHATWG event-stream parser: bytes in, ServerSentEvent values out; sans-I/O and standalone.
"""A conformant, sans-I/O Server-Sent Events parser.

This module implements the WHATWG HTML algorithm "interpreting an event stream"
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
in the manner of h11: it does no I/O, you hand it bytes as they arrive and it hands back the
events they complete. It imports only the standard library and attrs, so it can be used with
any transport (trio, asyncio, threads, a file on disk)::

    parser = SSEParser()
    for chunk in chunks:
        for event in parser.feed(chunk):
            print(event.event, event.data)
    parser.close()

Exceptions::

    Exception
     └── SSEProtocolError   the stream broke max_event_size, or the parser was used after
                            close() or after an earlier error
"""

from __future__ import annotations

from typing import Final, NoReturn

import attrs

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "SSEParser", "SSEProtocolError", "ServerSentEvent"]

#: Default for ``SSEParser(max_event_size=...)``: 1 MiB.
DEFAULT_MAX_EVENT_SIZE: Final = 1 << 20

# The UTF-8 decode algorithm of the Encoding Standard strips one leading BOM, and the event
# stream is always UTF-8 (WHATWG HTML, "event stream interpretation").
_BOM: Final = b"\xef\xbb\xbf"

# The spec reads `retry` as an unbounded base-ten integer. Like Chromium (EventSourceParser parses
# it with ToUInt64Strict and ignores it when that fails) we ignore values of 2**64 ms or more;
# converting a megabyte of digits to a Python int would also cost seconds of CPU.
_RETRY_LIMIT: Final = 1 << 64
_RETRY_MAX_DIGITS: Final = 20  # len(str(2**64 - 1))


class SSEProtocolError(Exception):
    """The event stream cannot be parsed any further.

    Raised when an event, or a single line, grows past ``max_event_size`` (the stream is
    abandoned rather than buffered without bound), and by every later call on the same parser.
    Also raised when :meth:`SSEParser.feed` is called after :meth:`SSEParser.close`.
    """


@attrs.frozen(kw_only=True)
class ServerSentEvent:
    """One dispatched event.

    Attributes:
        event: The event type: the last ``event`` field of the event's block, or ``"message"``
            when there was none (or it was empty).
        data: The ``data`` lines of the block, joined with ``"\\n"``.
        id: The last event ID in force when the event was dispatched. It persists from one event
            to the next until an ``id`` field changes it (``id`` with an empty value resets it
            to ``""``).
        retry: The reconnection time in milliseconds set by a valid ``retry`` field inside this
            event's block, or ``None`` when the block had none.
    """

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None


# Building events is the hot spot of the parser: attrs' generated __init__ for a frozen class
# calls object.__setattr__ once per field, about 0.6 us per event, where filling the slots
# directly takes 0.25 us and all the rest of parsing a typical `data: {...}` event about 0.7 us
# (benchmarks/bench_parser.py). So the parser fills the slots itself. The result is an ordinary,
# fully initialised ServerSentEvent: tests/test_sse.py checks that it equals, hashes and prints
# like the one the constructor builds.
_new_event: Final = object.__new__
_set_event: Final = ServerSentEvent.__dict__["event"].__set__
_set_data: Final = ServerSentEvent.__dict__["data"].__set__
_set_id: Final = ServerSentEvent.__dict__["id"].__set__
_set_retry: Final = ServerSentEvent.__dict__["retry"].__set__


def _parse_retry(value: bytes) -> int | None:
    """Return the reconnection time a ``retry`` field value sets, or None to ignore the field."""
    # bytes.isdigit() is true only for a non-empty run of ASCII digits, which is the spec's
    # condition; an empty value is not "an integer in base ten" and is ignored. (WPT
    # format-field-retry-empty does not say; Chromium resets the reconnection time instead.)
    if not value.isdigit():
        return None
    if len(value) > _RETRY_MAX_DIGITS:
        value = value.lstrip(b"0")
        if len(value) > _RETRY_MAX_DIGITS:
            return None
    retry = int(value or b"0")
    return retry if retry < _RETRY_LIMIT else None


class SSEParser:
    """Incremental parser for a ``text/event-stream`` body.

    Feed it the bytes of the response body as they arrive, in chunks of any size cut anywhere
    (inside a line, a CRLF pair or a multi-byte character); each call returns the events that
    the chunk completed. Parsing follows the WHATWG HTML "interpreting an event stream"
    algorithm exactly: the stream is UTF-8 whatever the Content-Type says (invalid bytes become
    U+FFFD), one leading BOM is skipped, and lines end at CRLF, LF or CR only.

    The parser bounds its memory: see ``max_event_size``.

    Args:
        last_event_id: The last event ID to start with, e.g. the one a previous connection ended
            with (the value sent as the ``Last-Event-ID`` request header when reconnecting).
        max_event_size: The largest event, in bytes, the parser accepts. What is counted is the
            bytes of the current event's ``data`` lines, as received (field name included, line
            endings excluded), plus the bytes received so far of the line being read, whatever
            its kind. A stream that makes this count exceed the limit raises
            :class:`SSEProtocolError`. Comment lines are not kept, so an endless run of comment
            lines is fine as long as each of them is shorter than the limit.

    Raises:
        ValueError: ``max_event_size`` is smaller than 1.
    """

    __slots__ = (
        "_at_start",
        "_bom_prefix",
        "_closed",
        "_data",
        "_error",
        "_error_raised",
        "_event_type",
        "_id_buffer",
        "_last_event_id",
        "_max_event_size",
        "_pending",
        "_prefeed",
        "_reconnection_time",
        "_retry",
        "_room",
        "_skip_lf",
    )

    def __init__(
        self, *, last_event_id: str = "", max_event_size: int = DEFAULT_MAX_EVENT_SIZE
    ) -> None:
        if max_event_size < 1:
            raise ValueError(f"max_event_size must be at least 1 byte, got {max_event_size}")
        self._max_event_size = max_event_size
        # "last event ID string" of the spec: what dispatched events carry.
        self._last_event_id = last_event_id
        # "last event ID buffer": set by `id` fields, committed at each blank line. It is not
        # reset by dispatch, so the ID persists across events.
        self._id_buffer = last_event_id
        self._reconnection_time: int | None = None
        # The block (event) being read; the data buffer is kept as the raw bytes of each
        # `data` value and decoded once, at dispatch.
        self._event_type = b""
        self._data: list[bytes] = []
        self._retry: int | None = None
        # max_event_size minus the bytes of this event's data lines: how long the line being
        # read may grow.
        self._room = max_event_size
        # The bytes of the line being read, not yet terminated.
        self._pending = bytearray()
        # Rare states, all checked by _before_feed() behind the single _prefeed flag so that
        # the common path pays one attribute test per call.
        self._prefeed = True
        self._at_start = True  # the BOM may still come
        self._bom_prefix = b""  # the first bytes of the stream while they could be a BOM
        self._skip_lf = False  # the last chunk ended in CR: an LF starting the next is its pair
        self._closed = False
        self._error: SSEProtocolError | None = None
        self._error_raised = False

    @property
    def last_event_id(self) -> str:
        """The last event ID string: the ``id`` committed by the latest blank line.

        Send it as the ``Last-Event-ID`` header when reconnecting.
        """
        return self._last_event_id

    @property
    def reconnection_time(self) -> int | None:
        """The reconnection time (ms) set by the latest valid ``retry`` field, else None."""
        return self._reconnection_time

    def feed(self, data: bytes | bytearray | memoryview) -> list[ServerSentEvent]:
        """Parse the next bytes of the stream.

        Args:
            data: The next bytes of the body, of any length (empty is fine).

        Returns:
            The events whose terminating blank line is in ``data``, in stream order. An event
            is always returned by the call that receives its blank line, never later.

        Raises:
            SSEProtocolError: The stream exceeded ``max_event_size`` (see the class docs), or
                the parser was closed or has already failed. When the limit is exceeded after
                some events of ``data`` were completed, those events are returned and the error
                is raised by the next call to :meth:`feed` or :meth:`close`.
        """
        if self._prefeed:
            data = self._before_feed(data)
            if not data:
                return []
        # Fast path: a chunk without a line ending only extends the line being read.
        if 10 not in data and 13 not in data:
            pending = self._pending
            pending += data
            if len(pending) > self._room:
                return self._fail_pending([])
            return []
        return self._parse_lines(data)

    def close(self) -> list[ServerSentEvent]:
        """Signal the end of the stream.

        Per the spec, an event that was not terminated by a blank line is discarded, as is an
        unterminated last line. Calling ``close()`` again does nothing.

        Returns:
            The events still to be dispatched: always an empty list, since :meth:`feed` returns
            every event as soon as its blank line arrives. The list is there so that callers
            can handle ``close()`` like ``feed()``.

        Raises:
            SSEProtocolError: An error found by the last :meth:`feed` has not been raised yet,
                or the parser has already failed.
        """
        if self._error is not None:
            self._raise_error()
        if not self._closed:
            if len(self._bom_prefix) > self._max_event_size:
                # The stream ended after one or two bytes that could have begun a BOM: they were
                # an unterminated line after all, which counts like any other. (Raises: there
                # are no events to return first.)
                self._fail_line([], len(self._bom_prefix))
            self._closed = True
            self._prefeed = True
            self._discard_event()
        return []

    # -- internals ------------------------------------------------------------------------------

    def _before_feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """Handle the rare states (error, closed, BOM, CR at end of chunk); return what to parse."""
        if self._error is not None:
            self._raise_error()
        if self._closed:
            raise SSEProtocolError("SSEParser.feed() was called after close()")
        try:
            # Accepts exactly the bytes-like objects (not an int, which bytes() would turn into
            # zero bytes). The first call always comes here, so a wrong type is reported at once.
            chunk = bytes(memoryview(data))
        except TypeError:
            raise TypeError(
                f"SSEParser.feed() takes the bytes of the body, not {type(data).__name__}"
            ) from None
        if self._at_start:
            # The BOM may arrive split across chunks: hold its first bytes until it is known.
            head = self._bom_prefix + chunk
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._bom_prefix = head
                return b""
            self._bom_prefix = b""
            self._at_start = False
            chunk = head[len(_BOM) :] if head.startswith(_BOM) else head
        if self._skip_lf and chunk:
            # The previous chunk ended with CR, which already ended a line: an LF right after it
            # belongs to the same CRLF line ending.
            self._skip_lf = False
            if chunk[0] == 10:
                chunk = chunk[1:]
        self._prefeed = self._at_start or self._skip_lf
        return chunk

    def _parse_lines(self, data: bytes | bytearray | memoryview) -> list[ServerSentEvent]:
        """Parse a chunk that ends at least one line."""
        if type(data) is not bytes:
            data = bytes(data)
        # bytes.splitlines() splits at CRLF, LF and CR only (unlike str.splitlines(), which
        # also splits at U+2028, U+0085, ...), exactly the line endings of the spec, and yields
        # one item per line ending plus, when the chunk does not end with CR or LF, a last item
        # for the unterminated line.
        lines = data.splitlines()
        pending = self._pending
        if pending:
            # The first line of the chunk finishes the line being read. (A CRLF cut after its
            # CR never gets here: the CR ended the line and _before_feed() drops the LF.)
            lines[0] = b"".join((pending, lines[0]))
            pending.clear()
        last = data[-1]
        if last == 13:
            self._skip_lf = self._prefeed = True
        elif last != 10:
            pending += lines.pop()

        events: list[ServerSentEvent] = []
        limit = self._max_event_size
        size = limit - self._room
        data_lines = self._data
        event_type = self._event_type
        retry = self._retry
        id_buffer = self._id_buffer
        for line in lines:
            if not line:
                # A blank line dispatches the event ("dispatch the event", WHATWG HTML).
                self._last_event_id = id_buffer
                if data_lines:
                    event = _new_event(ServerSentEvent)
                    _set_event(
                        event, event_type.decode("utf-8", "replace") if event_type else "message"
                    )
                    # Decoding each block on its own gives the same text as decoding the whole
                    # stream: CR, LF and ":" are ASCII, which a UTF-8 decoder never folds into
                    # a replacement character.
                    _set_data(event, b"\n".join(data_lines).decode("utf-8", "replace"))
                    _set_id(event, id_buffer)
                    _set_retry(event, retry)
                    events.append(event)
                    data_lines = []
                event_type = b""
                retry = None
                size = 0
            elif line[:6] == b"data: ":
                # The common case, `data: value`, without the general field splitting.
                size += len(line)
                if size > limit:
                    return self._fail_line(events, size)
                data_lines.append(line[6:])
            else:
                if size + len(line) > limit:
                    return self._fail_line(events, size + len(line))
                colon = line.find(b":")
                if colon == 0:
                    continue  # a comment
                if colon > 0:
                    name = line[:colon]
                    value = line[colon + 1 :]
                    if value[:1] == b" ":
                        value = value[1:]
                else:
                    name = line
                    value = b""
                if name == b"data":
                    size += len(line)
                    data_lines.append(value)
                elif name == b"event":
                    event_type = value
                elif name == b"id":
                    if b"\0" not in value:
                        id_buffer = value.decode("utf-8", "replace")
                elif name == b"retry":
                    new_retry = _parse_retry(value)
                    if new_retry is not None:
                        retry = self._reconnection_time = new_retry
                # Any other field name is ignored, per the spec.
        self._room = limit - size
        self._data = data_lines
        self._event_type = event_type
        self._retry = retry
        self._id_buffer = id_buffer
        if len(pending) + size > limit:
            return self._fail_pending(events)
        return events

    def _fail_line(self, events: list[ServerSentEvent], size: int) -> list[ServerSentEvent]:
        return self._fail(
            events,
            f"event stream exceeded max_event_size={self._max_event_size} bytes: the current "
            f"event's data lines and the line being read add up to {size} bytes",
        )

    def _fail_pending(self, events: list[ServerSentEvent]) -> list[ServerSentEvent]:
        size = len(self._pending) + self._max_event_size - self._room
        return self._fail(
            events,
            f"event stream exceeded max_event_size={self._max_event_size} bytes: the current "
            f"event's data lines and the unterminated line being read add up to at least "
            f"{size} bytes",
        )

    def _fail(self, events: list[ServerSentEvent], message: str) -> list[ServerSentEvent]:
        """Enter the failed state; raise now, or return ``events`` and raise at the next call."""
        self._error = SSEProtocolError(message)
        self._prefeed = True
        self._discard_event()
        if events:
            return events
        self._raise_error()

    def _raise_error(self) -> NoReturn:
        error = self._error
        assert error is not None
        if not self._error_raised:
            self._error_raised = True
            raise error
        raise SSEProtocolError(
            f"SSEParser cannot accept more input after an earlier error: {error}"
        ) from error

    def _discard_event(self) -> None:
        self._pending = bytearray()
        self._data = []
        self._event_type = b""
        self._retry = None
        self._room = self._max_event_size
