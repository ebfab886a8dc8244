# The web-platform-tests eventsource/format-* tests, ported as data for the parser tests.
"""Conformance vectors: every ``eventsource/format-*`` test of web-platform-tests.

Each browser test serves a body from a small script and asserts on the events the page
receives. The bodies below are those scripts' output, byte for byte:

* ``resources/message.py`` answers ``message + newline + b"\\n"``, where ``message``
  defaults to ``b"data: data"`` and ``newline`` is ``b"\\n\\n"`` unless the test passes
  ``newline=none`` (then it is empty).
* ``resources/last-event-id.py`` answers ``b"data: " + Last-Event-ID + b"\\n\\n"`` when the
  request carries a Last-Event-ID header, else
  ``b"id: " + idvalue + b"\\nretry: 200\\ndata: hello\\n\\n"`` (``idvalue`` defaults to "…").
* ``resources/last-event-id2.py`` answers one of three fixed bodies.

Tests that reconnect (format-field-id, -id-2, -id-null) become one vector per connection: a
reconnection starts a new parser with the last event ID the previous one ended with, which is
what the EventSource does (it sends it as Last-Event-ID and keeps it as its last event ID
string). The expected values are the assertions of each WPT file; for the tests that assert on
timing (format-field-retry*) the expectation is the reconnection time itself.

The ``format-mime-*`` tests check the Content-Type header, which the parser never sees: their
body (the default message) is a vector here, and ``WPT_MIME_CASES`` keeps the header part for
the transport layer.
"""

from __future__ import annotations

import attrs

# Body suffix added by resources/message.py.
_NEWLINE = b"\n\n"
_TAIL = b"\n"


@attrs.frozen(kw_only=True)
class Expected:
    """One event an EventSource would dispatch."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


@attrs.frozen(kw_only=True)
class Vector:
    """A body, the parser's starting state, and what must come out of it."""

    name: str  # the WPT file (and sub-test) it comes from
    body: bytes
    events: tuple[Expected, ...]
    last_event_id: str = ""  # given to the parser: the previous connection's last event ID
    final_last_event_id: str = ""  # parser.last_event_id after close()
    reconnection_time: int | None = None  # parser.reconnection_time after close()


def _message(message: bytes, *, newline: bool = True) -> bytes:
    """The body resources/message.py sends."""
    return message + (_NEWLINE if newline else b"") + _TAIL


_LONG = b"x" * 2048  # format-comments uses 2 * 1024 "x"s

WPT_VECTORS: tuple[Vector, ...] = (
    Vector(
        # "%EF%BB%BFdata%3A1%0A%0A%EF%BB%BFdata%3A2%0A%0Adata%3A3": only the first BOM is
        # stripped; the second makes the field name "\ufeffdata", an unknown field.
        name="format-bom",
        body=_message(b"\xef\xbb\xbfdata:1\n\n\xef\xbb\xbfdata:2\n\ndata:3"),
        events=(Expected(data="1"), Expected(data="3")),
    ),
    Vector(
        name="format-bom-2",  # a double BOM: the first line is "\ufeffdata:1", ignored
        body=_message(b"\xef\xbb\xbf\xef\xbb\xbfdata:1\n\ndata:2\n\ndata:3"),
        events=(Expected(data="2"), Expected(data="3")),
    ),
    Vector(
        name="format-comments",
        body=_message(
            b"data:1\r:\0\n:\r\ndata:2\n:"
            + _LONG
            + b"\rdata:3\n:data:fail\r:"
            + _LONG
            + b"\ndata:4\n",
            newline=False,
        ),
        events=(Expected(data="1\n2\n3\n4"),),
    ),
    Vector(
        # The second block has no blank line before the end of the body: it is not dispatched
        # and its id is never committed, so the reconnection sends no Last-Event-ID.
        name="format-data-before-final-empty-line",
        body=_message(b"retry:1000\ndata:test1\n\nid:test\ndata:test2", newline=False),
        events=(Expected(data="test1", retry=1000),),
        reconnection_time=1000,
    ),
    Vector(
        name="format-field-data",
        body=_message(b"data:\n\ndata\ndata\n\ndata:test"),
        events=(Expected(data=""), Expected(data="\n"), Expected(data="test")),
    ),
    Vector(
        name="format-field-event",
        body=_message(b"event:test\ndata:x\n\ndata:x"),
        events=(Expected(event="test", data="x"), Expected(data="x")),
    ),
    Vector(
        name="format-field-event-empty",  # "event: " sets an empty type: "message" is used
        body=_message(b"event: \ndata:data"),
        events=(Expected(data="data"),),
    ),
    Vector(
        name="format-field-id (first connection)",
        body=b"id: \xe2\x80\xa6\nretry: 200\ndata: hello\n\n",
        events=(Expected(data="hello", id="\u2026", retry=200),),
        final_last_event_id="\u2026",
        reconnection_time=200,
    ),
    Vector(
        name="format-field-id (reconnection)",
        body=b"data: \xe2\x80\xa6\n\n",
        last_event_id="\u2026",
        events=(Expected(data="\u2026", id="\u2026"),),
        final_last_event_id="\u2026",
    ),
    Vector(
        name="format-field-id-2 (first connection)",
        body=b"id: \xe2\x80\xa6\nretry: 200\ndata: hello\n\n",
        events=(Expected(data="hello", id="\u2026", retry=200),),
        final_last_event_id="\u2026",
        reconnection_time=200,
    ),
    Vector(
        # The second and third connections are the same: the ID persists across reconnections.
        name="format-field-id-2 (second and third connections)",
        body=b"data: \xe2\x80\xa6\n\n",
        last_event_id="\u2026",
        events=(Expected(data="\u2026", id="\u2026"),),
        final_last_event_id="\u2026",
    ),
    Vector(
        name="format-field-id-3 persists",
        body=b"id: 1\ndata: 1\n\ndata:2\n\n",
        events=(Expected(data="1", id="1"), Expected(data="2", id="1")),
        final_last_event_id="1",
    ),
    Vector(
        name="format-field-id-3 changes and persists",
        body=b"id: 1\ndata: 1\n\nid: 2\ndata:2\n\ndata:3\n\n",
        events=(Expected(data="1", id="1"), Expected(data="2", id="2"), Expected(data="3", id="2")),
        final_last_event_id="2",
    ),
    Vector(
        name="format-field-id-3 resets",
        body=b"id: 1\ndata: 1\n\nid:\ndata:2\n\ndata:3\n\n",
        events=(Expected(data="1", id="1"), Expected(data="2"), Expected(data="3")),
        final_last_event_id="",
    ),
    Vector(
        # "last-event-id.py?idvalue=%00%00": an id containing U+0000 is ignored, so the event
        # has an empty lastEventId and the reconnection (not exercised here) sends none.
        name="format-field-id-null",
        body=b"id: \0\0\nretry: 200\ndata: hello\n\n",
        events=(Expected(data="hello", retry=200),),
        reconnection_time=200,
    ),
    Vector(
        name="format-field-parsing",
        body=_message(
            b"data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\rdata_5\ndata:3\r"
            b"data:\r\n data:32\ndata:4\n",
            newline=False,
        ),
        events=(Expected(data="\0\n 2\n1\n3\n\n4"),),
    ),
    Vector(
        name="format-field-retry",  # "03000" is decimal 3000, not octal
        body=_message(b"retry:03000\ndata:x"),
        events=(Expected(data="x", retry=3000),),
        reconnection_time=3000,
    ),
    Vector(
        name="format-field-retry-bogus",  # "1000x" is not all digits: ignored
        body=_message(b"retry:3000\nretry:1000x\ndata:x"),
        events=(Expected(data="x", retry=3000),),
        reconnection_time=3000,
    ),
    Vector(
        name="format-field-retry-empty",
        body=_message(b"retry\ndata:test"),
        events=(Expected(data="test"),),
    ),
    Vector(
        name="format-field-unknown",
        body=_message(
            b"data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test"
        ),
        events=(Expected(data="test\n\ntest"),),
    ),
    Vector(
        name="format-leading-space",  # only one U+0020 is removed, never a tab
        body=_message(b"data:\ttest\rdata: \ndata:test"),
        events=(Expected(data="\ttest\n\ntest"),),
    ),
    Vector(
        name="format-newlines",
        body=_message(b"data:test\r\ndata\ndata:test\r\n\r", newline=False),
        events=(Expected(data="test\n\ntest"),),
    ),
    Vector(
        name="format-null-character",
        body=_message(b"data:\0\n\n"),
        events=(Expected(data="\0"),),
    ),
    Vector(
        # Served as "text/event-stream;charset=windows-1252": the charset is ignored.
        name="format-utf-8",
        body=_message(b"data:ok\xe2\x80\xa6"),
        events=(Expected(data="ok\u2026"),),
    ),
    Vector(
        # format-mime-trailing-semicolon, format-mime-bogus and format-mime-valid-bogus serve
        # the default message; what they test is the Content-Type (see WPT_MIME_CASES).
        name="format-mime-* (default body)",
        body=_message(b"data: data"),
        events=(Expected(data="data"),),
    ),
)

# (WPT file, Content-Type served, whether an EventSource accepts the response).
WPT_MIME_CASES: tuple[tuple[str, str, bool], ...] = (
    ("format-mime-trailing-semicolon", "text/event-stream;", True),
    ("format-mime-valid-bogus", "text/x-bogus", False),
    ("format-mime-bogus", "x bogus", False),
    ("format-utf-8", "text/event-stream;charset=windows-1252", True),
)
