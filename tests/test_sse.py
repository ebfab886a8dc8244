# Tests of holysheep_trio.sse: WPT conformance, chunking properties, a spec reference, limits.
from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from typing import TypeVar

import attrs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sse_vectors import WPT_VECTORS, Vector

from holysheep_trio.sse import (
    DEFAULT_MAX_EVENT_SIZE,
    ServerSentEvent,
    SSEParser,
    SSEProtocolError,
)

EventTuple = tuple[str, str, str, "int | None"]  # (event, data, id, retry)


# -- A reference parser, written from the spec text and nothing else ------------------------------
#
# WHATWG HTML, "9.2.6 Interpreting an event stream": decode the whole stream with UTF-8 decode
# (which strips one BOM and replaces errors), split it into lines at CRLF, LF or CR, and process
# the lines one by one. It works on str, where the parser under test works on bytes, and it is
# deliberately slow and literal. For max_event_size, it splits the raw bytes the same way to
# measure the lines, and checks that both splits agree.

_S = TypeVar("_S", str, bytes)


def _split_lines(stream: _S, cr: _S, lf: _S) -> tuple[list[_S], _S]:
    """Return the terminated lines and the unterminated rest."""
    lines: list[_S] = []
    start = i = 0
    while i < len(stream):
        char = stream[i : i + 1]
        if char in (cr, lf):
            lines.append(stream[start:i])
            if char == cr and stream[i + 1 : i + 2] == lf:
                i += 1
            start = i + 1
        i += 1
    return lines, stream[start:]


@attrs.frozen
class Outcome:
    events: list[EventTuple]
    failed: bool = False
    last_event_id: str = ""
    reconnection_time: int | None = None


def reference(
    body: bytes, *, last_event_id: str = "", max_event_size: int | None = None
) -> Outcome:
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    text = body.decode("utf-8", "replace")
    lines, _ = _split_lines(text, "\r", "\n")
    raw_lines, raw_rest = _split_lines(body, b"\r", b"\n")
    assert len(lines) == len(raw_lines)

    events: list[EventTuple] = []
    data = event_type = ""
    id_buffer = last_id = last_event_id
    retry: int | None = None
    reconnection_time: int | None = None
    kept = 0  # bytes of this event's data lines

    def failed() -> Outcome:
        return Outcome(events, True, last_id, reconnection_time)

    for line, raw in zip(lines, raw_lines, strict=True):
        if max_event_size is not None and kept + len(raw) > max_event_size:
            return failed()
        if line == "":
            last_id = id_buffer
            if data != "":
                if data.endswith("\n"):
                    data = data[:-1]
                events.append((event_type or "message", data, last_id, retry))
            data = event_type = ""
            retry = None
            kept = 0
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            field, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            field, value = line, ""
        if field == "event":
            event_type = value
        elif field == "data":
            data += value + "\n"
            kept += len(raw)
        elif field == "id":
            if "\0" not in value:
                id_buffer = value
        elif (
            field == "retry"
            and value
            and all(c in "0123456789" for c in value)
            and int(value) < 2**64
        ):
            retry = reconnection_time = int(value)
    # End of file: the unterminated line and event are discarded, but the line was read.
    if max_event_size is not None and kept + len(raw_rest) > max_event_size:
        return failed()
    return Outcome(events, False, last_id, reconnection_time)


# -- Helpers --------------------------------------------------------------------------------------


def as_tuples(events: Iterable[ServerSentEvent]) -> list[EventTuple]:
    return [(e.event, e.data, e.id, e.retry) for e in events]


def expected_tuples(vector: Vector) -> list[EventTuple]:
    return [(e.event, e.data, e.id, e.retry) for e in vector.events]


def run(chunks: Iterable[bytes], **kwargs: int | str) -> Outcome:
    """Feed the chunks, then close; stop at the first SSEProtocolError."""
    parser = SSEParser(**kwargs)  # type: ignore[arg-type]
    events: list[ServerSentEvent] = []
    try:
        for chunk in chunks:
            events += parser.feed(chunk)
        events += parser.close()
    except SSEProtocolError:
        return Outcome(as_tuples(events), True)
    return Outcome(as_tuples(events), False, parser.last_event_id, parser.reconnection_time)


def cut(stream: bytes, points: Sequence[int]) -> list[bytes]:
    bounds = [0, *sorted(points), len(stream)]
    return [stream[a:b] for a, b in pairwise(bounds)]


def byte_by_byte(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


# SSE-flavoured tokens: field names (right and wrong case), separators, every line ending, BOMs,
# multi-byte, truncated and invalid UTF-8, NUL, the characters that str.splitlines() would wrongly
# treat as line ends (U+0085, U+2028, VT, FF, FS), digits for retry.
TOKENS = (
    b"data",
    b"data:",
    b"data: ",
    b"event",
    b"event:",
    b"id",
    b"id:",
    b"retry",
    b"retry:",
    b"Data",
    b"dat",
    b":",
    b": ",
    b" ",
    b"\r",
    b"\n",
    b"\r\n",
    b"\n\n",
    b"\r\r",
    b"x",
    b"hello",
    b"[DONE]",
    b"0",
    b"42",
    b"007",
    b"1x",
    b"18446744073709551616",
    b"\0",
    b"\t",
    b"\xef\xbb\xbf",
    b"\xef\xbb",
    b"\xe2\x80\xa6",
    b"\xe2\x80",
    b"\xf0\x9f\x98\x80",
    b"\xff",
    b"\x80",
    b"\xc2\x85",
    b"\xe2\x80\xa8",
    b"\x0b\x0c\x1c",
)

sse_streams = st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join)
any_streams = st.one_of(sse_streams, st.binary(max_size=200))


@st.composite
def chunked(draw: st.DrawFn, streams: st.SearchStrategy[bytes] = any_streams) -> list[bytes]:
    """A stream cut at arbitrary points (repeated points give empty chunks)."""
    stream = draw(streams)
    points = draw(st.lists(st.integers(0, len(stream)), max_size=12))
    return cut(stream, points)


# -- WPT eventsource/format-* vectors -------------------------------------------------------------

VECTOR_IDS = [v.name for v in WPT_VECTORS]


def check_vector(vector: Vector, chunks: Iterable[bytes]) -> None:
    outcome = run(chunks, last_event_id=vector.last_event_id)
    assert outcome.events == expected_tuples(vector)
    assert not outcome.failed
    assert outcome.last_event_id == vector.final_last_event_id
    assert outcome.reconnection_time == vector.reconnection_time


@pytest.mark.parametrize("vector", WPT_VECTORS, ids=VECTOR_IDS)
def test_wpt_vector_whole(vector: Vector) -> None:
    check_vector(vector, [vector.body])


@pytest.mark.parametrize("vector", WPT_VECTORS, ids=VECTOR_IDS)
def test_wpt_vector_byte_by_byte(vector: Vector) -> None:
    check_vector(vector, byte_by_byte(vector.body))


@pytest.mark.parametrize("vector", WPT_VECTORS, ids=VECTOR_IDS)
@given(points=st.lists(st.integers(0, 5000), max_size=12))
def test_wpt_vector_any_chunking(vector: Vector, points: list[int]) -> None:
    check_vector(vector, cut(vector.body, [p % (len(vector.body) + 1) for p in points]))


@pytest.mark.parametrize("vector", WPT_VECTORS, ids=VECTOR_IDS)
def test_reference_passes_wpt_vector(vector: Vector) -> None:
    # The reference is only worth differential testing against if it is itself conformant.
    outcome = reference(vector.body, last_event_id=vector.last_event_id)
    assert outcome == Outcome(
        expected_tuples(vector), False, vector.final_last_event_id, vector.reconnection_time
    )


def test_every_wpt_format_file_is_ported() -> None:
    names = {v.name.split(" ")[0] for v in WPT_VECTORS}
    assert names >= {
        "format-bom",
        "format-bom-2",
        "format-comments",
        "format-data-before-final-empty-line",
        "format-field-data",
        "format-field-event",
        "format-field-event-empty",
        "format-field-id",
        "format-field-id-2",
        "format-field-id-3",
        "format-field-id-null",
        "format-field-parsing",
        "format-field-retry",
        "format-field-retry-bogus",
        "format-field-retry-empty",
        "format-field-unknown",
        "format-leading-space",
        "format-newlines",
        "format-null-character",
        "format-utf-8",
        "format-mime-*",
    }


# -- Chunking properties --------------------------------------------------------------------------


@given(chunks=chunked())
@example(chunks=[b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"])  # CR|LF cut, twice
@example(chunks=[b"data: a\r", b"\r", b"\n"])  # CR CR LF: a blank line, then LF ends nothing
@example(chunks=[b"data: 1\r\ndata: 2\r", b"\ndata: 3\r\n\r", b"\n"])  # CRLF in multi-line events
@example(chunks=[b"data: x\n", b"\n", b""])  # blank line alone in its chunk, then empty
@example(chunks=[b"\xef", b"\xbb", b"\xbfdata: bom\n\n"])  # a BOM cut in three
@example(chunks=[b"\xef\xbb", b"data: no bom\n\n", b"data: y\n\n"])  # a BOM prefix, no BOM
@example(chunks=[b"data: \xe2\x80", b"\xa6\n\n"])  # a character cut in two
@example(chunks=[b"data: \xe2\x80\n\n"])  # a truncated character: one U+FFFD
def test_any_chunking_gives_the_same_events_as_one_shot(chunks: list[bytes]) -> None:
    assert run(chunks) == run([b"".join(chunks)])


@given(stream=any_streams)
def test_byte_by_byte_gives_the_same_events_as_one_shot(stream: bytes) -> None:
    assert run(byte_by_byte(stream)) == run([stream])


@given(chunks=chunked(), last_event_id=st.sampled_from(["", "7", "\u2026"]))
@example(chunks=[b"id: 1\n\nid: 2\ndata: x\n\n"], last_event_id="0")
@example(chunks=[b"data:\r\n\r\n", b"retry: 5\n\n"], last_event_id="")
def test_matches_the_reference(chunks: list[bytes], last_event_id: str) -> None:
    assert run(chunks, last_event_id=last_event_id) == reference(
        b"".join(chunks), last_event_id=last_event_id
    )


@given(chunks=chunked())
@example(chunks=[b"data: a\n", b"\r", b"\n", b"data: b\r\r"])
def test_events_come_out_of_the_feed_that_completes_them(chunks: list[bytes]) -> None:
    # After every feed, the events returned so far are exactly those the reference finds in
    # the bytes received so far: never held back waiting for more input, never early.
    parser = SSEParser()
    received = b""
    returned: list[ServerSentEvent] = []
    for chunk in chunks:
        received += chunk
        returned += parser.feed(chunk)
        assert as_tuples(returned) == reference(received).events
    assert parser.close() == []


@given(chunks=chunked(), limit=st.integers(1, 64))
@example(chunks=[b"data: 12345\ndata: 6789\n\n"], limit=12)
@example(chunks=[b"data: 1\n\n", b"data: 123456789"], limit=8)
def test_fuzz_only_events_or_protocol_error(chunks: list[bytes], limit: int) -> None:
    # Arbitrary bytes, cut anywhere, with a small limit: the parser returns events or raises
    # SSEProtocolError (anything else propagates and fails the test), the same events as the
    # reference up to the point where the limit is crossed, and fails exactly when it does.
    outcome = run(chunks, max_event_size=limit)
    expected = reference(b"".join(chunks), max_event_size=limit)
    assert outcome.events == expected.events
    assert outcome.failed == expected.failed


# -- Field semantics ------------------------------------------------------------------------------


def events_of(body: bytes, **kwargs: int | str) -> list[EventTuple]:
    outcome = run([body], **kwargs)
    assert not outcome.failed
    return outcome.events


def test_defaults() -> None:
    parser = SSEParser()
    assert parser.last_event_id == ""
    assert parser.reconnection_time is None
    assert parser.feed(b"data: x\n\n") == [ServerSentEvent(data="x")]
    assert ServerSentEvent() == ServerSentEvent(event="message", data="", id="", retry=None)


def test_only_crlf_lf_and_cr_end_lines() -> None:
    body = "data: a\u2028b\u2029c\x85d\x0be\x0cf\x1cg\x1dh\x1ei\n\n".encode()
    assert events_of(body) == [("message", body[6:-2].decode(), "", None)]


def test_a_later_bom_is_an_ordinary_character() -> None:
    assert events_of(b"\xef\xbb\xbfdata: \xef\xbb\xbfx\n\n") == [("message", "\ufeffx", "", None)]


def test_invalid_utf8_becomes_replacement_characters() -> None:
    body = b"event: \xff\ndata: a\xc3\ndata: \xe2\x82\xac\xed\xa0\x80\n\n"
    assert events_of(body) == [("\ufffd", "a\ufffd\n\u20ac\ufffd\ufffd\ufffd", "", None)]


def test_empty_data_buffer_dispatches_nothing_but_commits_the_id() -> None:
    parser = SSEParser()
    assert parser.feed(b"id: 5\nevent: lost\nretry: 9\n\n") == []
    assert parser.last_event_id == "5"
    assert parser.reconnection_time == 9
    # The event type was reset by the blank line, and retry is per block.
    assert parser.feed(b"data: x\n\n") == [ServerSentEvent(data="x", id="5", retry=None)]


def test_id_with_nul_is_ignored_and_empty_id_resets() -> None:
    assert events_of(b"id: 1\ndata: a\n\nid: 2\0\ndata: b\n\nid\ndata: c\n\n") == [
        ("message", "a", "1", None),
        ("message", "b", "1", None),
        ("message", "c", "", None),
    ]


def test_unterminated_event_is_not_dispatched_and_its_id_not_committed() -> None:
    parser = SSEParser(last_event_id="old")
    assert parser.feed(b"id: new\ndata: x\n") == []
    assert parser.close() == []
    assert parser.last_event_id == "old"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"0", 0),
        (b"00000000000000000000000000000000000042", 42),
        (b"18446744073709551615", 2**64 - 1),
        (b"18446744073709551616", None),  # 2**64: does not fit an unsigned 64-bit integer
        (b"1" * 5000, None),  # would hit CPython's int-string conversion limit
        (b"", None),
        (b" 5", None),  # only one space is removed after the colon: "retry:  5"
        (b"5 ", None),
        (b"-5", None),
        (b"+5", None),
        (b"5.0", None),
        (b"\xd9\xa5", None),  # ARABIC-INDIC DIGIT FIVE is a digit, but not an ASCII one
    ],
)
def test_retry_accepts_ascii_digits_only(value: bytes, expected: int | None) -> None:
    parser = SSEParser()
    events = parser.feed(b"retry: " + value + b"\ndata: x\n\n")
    assert as_tuples(events) == [("message", "x", "", expected)]
    assert parser.reconnection_time == expected


def test_reconnection_time_keeps_the_last_valid_retry() -> None:
    parser = SSEParser()
    assert as_tuples(parser.feed(b"retry: 10\ndata: a\n\nretry: x\ndata: b\n\n")) == [
        ("message", "a", "", 10),
        ("message", "b", "", None),
    ]
    assert parser.reconnection_time == 10


def test_field_names_are_case_sensitive_and_unknown_fields_ignored() -> None:
    assert events_of(b"Data: a\nDATA: b\nEvent: e\nfoo: bar\nid:\0\ndata: ok\n\n") == [
        ("message", "ok", "", None)
    ]


def test_colon_splitting() -> None:
    assert events_of(b"data:a:b: c\ndata\ndata:\ndata:  two\n:comment\nevent:x:y\n\n") == [
        ("x:y", "a:b: c\n\n\n two", "", None)
    ]


# -- Inputs, lifecycle, errors --------------------------------------------------------------------


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_accepts_bytes_like_input(kind: type[bytes] | type[bytearray] | type[memoryview]) -> None:
    parser = SSEParser()
    events: list[ServerSentEvent] = []
    for chunk in (b"", b"data: a", b"b\n", b"\ndata:", b"\xe2\x80\xa6\r", b"\n\r\n"):
        events += parser.feed(kind(chunk))
    assert as_tuples(events) == [("message", "ab", "", None), ("message", "\u2026", "", None)]


@pytest.mark.parametrize(
    ("value", "kind"), [("data: x\n\n", "str"), (5, "int"), (None, "NoneType")]
)
def test_non_bytes_are_refused_with_a_clear_error(value: object, kind: str) -> None:
    with pytest.raises(TypeError, match=f"takes the bytes of the body, not {kind}$"):
        SSEParser().feed(value)  # type: ignore[arg-type]


def test_events_built_by_the_parser_are_ordinary_values() -> None:
    # The parser fills ServerSentEvent's slots directly for speed; the result must be
    # indistinguishable from a constructed one.
    parser = SSEParser()
    (event,) = parser.feed(b"event: e\nid: 1\nretry: 2\ndata: d\n\n")
    built = ServerSentEvent(event="e", data="d", id="1", retry=2)
    assert event == built
    assert hash(event) == hash(built)
    assert repr(event) == repr(built) == "ServerSentEvent(event='e', data='d', id='1', retry=2)"
    assert attrs.asdict(event) == {"event": "e", "data": "d", "id": "1", "retry": 2}
    assert attrs.evolve(event, data="z") == ServerSentEvent(event="e", data="z", id="1", retry=2)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.data = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ServerSentEvent("message", "d")  # type: ignore[call-arg]  # keyword-only


def test_close_is_idempotent_and_feed_after_close_is_refused() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\n\ndata: dropped") == [ServerSentEvent(data="x")]
    assert parser.close() == []
    assert parser.close() == []
    with pytest.raises(SSEProtocolError, match=r"feed\(\) was called after close\(\)"):
        parser.feed(b"\n\n")


def test_close_on_a_fresh_parser() -> None:
    parser = SSEParser()
    assert parser.close() == []
    parser = SSEParser()
    assert parser.feed(b"\xef\xbb") == []  # could still be a BOM
    assert parser.close() == []


def test_bom_prefix_at_the_end_counts_as_a_line() -> None:
    parser = SSEParser(max_event_size=1)
    assert parser.feed(b"\xef\xbb") == []
    with pytest.raises(SSEProtocolError, match="max_event_size=1 bytes"):
        parser.close()


@pytest.mark.parametrize("size", [0, -1])
def test_max_event_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError, match="max_event_size must be at least 1"):
        SSEParser(max_event_size=size)


def test_default_limit_is_one_mebibyte() -> None:
    assert DEFAULT_MAX_EVENT_SIZE == 1 << 20
    parser = SSEParser()
    big = b"x" * (DEFAULT_MAX_EVENT_SIZE - len(b"data: "))
    assert parser.feed(b"data: " + big + b"\n\n") == [ServerSentEvent(data=big.decode())]
    with pytest.raises(SSEProtocolError):
        parser.feed(b"data: " + big + b"x\n\n")


def test_a_line_without_end_fails_early_instead_of_buffering() -> None:
    # A 100 MB line must not be buffered: the feed that crosses the limit raises.
    parser = SSEParser(max_event_size=1 << 20)
    chunk = b"x" * (1 << 16)
    fed = 0

    def feed_100_mb() -> None:
        nonlocal fed
        for _ in range((100 << 20) // len(chunk)):
            parser.feed(chunk)
            fed += len(chunk)

    with pytest.raises(SSEProtocolError, match=r"max_event_size=1048576 bytes.*unterminated"):
        feed_100_mb()
    assert fed == 1 << 20  # the 17th chunk crossed the limit


def test_an_event_growing_past_the_limit_fails() -> None:
    parser = SSEParser(max_event_size=100)
    line = b"data: " + b"x" * 30 + b"\n"  # 36 bytes counted per line
    assert parser.feed(line * 2) == []
    with pytest.raises(SSEProtocolError, match=r"max_event_size=100 bytes.* add up to 108 bytes"):
        parser.feed(line)


def test_endless_comments_and_blank_lines_are_fine() -> None:
    parser = SSEParser(max_event_size=32)
    for _ in range(10_000):
        assert parser.feed(b": keep-alive\n") == []
        assert parser.feed(b"\n") == []
    assert parser.feed(b"data: still here\n\n") == [ServerSentEvent(data="still here")]


def test_long_comment_line_counts_while_it_is_read() -> None:
    parser = SSEParser(max_event_size=32)
    with pytest.raises(SSEProtocolError):
        parser.feed(b":" + b"c" * 32 + b"\n")


def test_error_after_events_is_raised_by_the_next_call() -> None:
    # Events completed before the offending line are not lost.
    parser = SSEParser(max_event_size=16)
    events = parser.feed(b"data: ok\n\ndata: far too long for the limit\n\n")
    assert events == [ServerSentEvent(data="ok")]
    with pytest.raises(SSEProtocolError, match="max_event_size=16") as first:
        parser.feed(b"data: more\n\n")
    with pytest.raises(SSEProtocolError, match="earlier error") as second:
        parser.close()
    assert second.value.__cause__ is first.value


def test_error_after_events_at_the_end_of_a_chunk_is_raised_by_close() -> None:
    parser = SSEParser(max_event_size=16)
    assert parser.feed(b"data: ok\n\ndata: this line is unterminated") == [
        ServerSentEvent(data="ok")
    ]
    with pytest.raises(SSEProtocolError, match="unterminated"):
        parser.close()


def test_a_failed_parser_refuses_input() -> None:
    parser = SSEParser(max_event_size=8)
    with pytest.raises(SSEProtocolError, match="max_event_size=8"):
        parser.feed(b"data: 123456789\n")
    calls: list[Callable[[], object]] = [
        lambda: parser.feed(b"data: x\n\n"),
        parser.close,
        lambda: parser.feed(b""),
    ]
    for call in calls:
        with pytest.raises(SSEProtocolError, match="cannot accept more input after an earlier"):
            call()


def test_import_is_standalone() -> None:
    code = textwrap.dedent(
        """
        import sys
        import holysheep_trio.sse
        heavy = [m for m in ("trio", "httpx2", "httpcore2", "h11", "anyio") if m in sys.modules]
        assert not heavy, heavy
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
