# Tests of the wire format: request bodies, event decoding, in-band errors, the accumulator.
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import holysheep_trio as hs
from holysheep_trio._wire import (
    DONE,
    CompletionAccumulator,
    build_request_body,
    decode_data,
    decode_event,
    parse_error_body,
)
from holysheep_trio.errors import MAX_SHOWN_BYTES
from holysheep_trio.sse import ServerSentEvent, SSEParser


def _event(data: str, event: str = "message") -> ServerSentEvent:
    return ServerSentEvent(event=event, data=data)


def _chunk(content: str | None = None, **delta: Any) -> str:
    if content is not None:
        delta["content"] = content
    return json.dumps(
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    )


def test_request_body() -> None:
    body = json.loads(
        build_request_body(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "hi"}, hs.Message(role="user", content="ü")],
            params={"max_tokens": 5, "temperature": 0.7, "top_p": None},
        )
    )
    assert body == {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "ü"}],
        "stream": True,
        "max_tokens": 5,
        "temperature": 0.7,
        "stream_options": {"include_usage": True},
    }


def test_request_body_keeps_callers_stream_options() -> None:
    body = json.loads(
        build_request_body(
            model="m", messages=[], params={"stream_options": {"include_usage": False}}
        )
    )
    assert body["stream_options"] == {"include_usage": False}
    body = json.loads(build_request_body(model="m", messages=[], include_usage=False))
    assert "stream_options" not in body


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "", "messages": []}, "model"),
        ({"model": "m", "messages": "hi"}, "list"),
        ({"model": "m", "messages": [5]}, "message"),
        ({"model": "m", "messages": [{"content": "x"}]}, "role"),
        ({"model": "m", "messages": [], "params": {"stream": False}}, "stream"),
        ({"model": "m", "messages": [], "params": {"x": object()}}, "JSON"),
    ],
)
def test_request_body_rejects_bad_input(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(TypeError, match=match):
        build_request_body(**kwargs)


def test_decode() -> None:
    assert decode_event(_event("[DONE]")) is DONE
    assert decode_event(_event("")) is None
    assert decode_event(_event("{}", event="ping")) is None
    chunk = decode_event(_event(_chunk("hi")))
    assert isinstance(chunk, hs.ChatChunk)
    assert chunk.text == "hi"


@pytest.mark.parametrize("data", ['{"choices": [', "nope", "[1]", '"text"', "[" * 100_000])
def test_bad_json_is_a_protocol_error(data: str) -> None:
    with pytest.raises(hs.StreamProtocolError) as info:
        decode_data(data)
    assert len(info.value.data) <= 200


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ('{"id": "c1", "created": 1.5, "choices": []}', "'created' is not an integer"),
        ('{"id": "c1", "choices": 5}', "choices is not a list"),
        ('{"choices": [{"delta": {"content": 5}}]}', "'content' is not a string"),
        ('{"choices": [{"index": "0"}], "note": "ü"}', "'index' is not an integer (got str)"),
        # Longer than the limit: truncated to the same 200 bytes as bad JSON.
        ('{"choices": 5, "pad": "' + "x" * 300 + '"}', "choices is not a list"),
    ],
    ids=["float-created", "int-choices", "int-content", "str-index-utf8", "long"],
)
def test_bad_shape_keeps_the_offending_bytes(data: str, field: str) -> None:
    # N1: `.data` is the event's data as UTF-8 bytes, not a repr of the decoded dict.
    with pytest.raises(hs.StreamProtocolError) as info:
        decode_event(_event(data))
    error = info.value
    assert error.data == data.encode("utf-8")[:MAX_SHOWN_BYTES]
    assert error.kind == "parse"
    assert error.message.startswith("unexpected chunk shape: ")
    assert field in error.message
    assert str(error).startswith(error.message)


@pytest.mark.parametrize(
    ("payload", "status", "kind", "code"),
    [
        ({"error": {"message": "m", "type": "server_error", "code": 500}}, 500, "server", "500"),
        ({"error": {"message": "m", "type": "rate_limit_exceeded"}}, 429, "rate_limit", None),
        ({"error": {"message": "m", "type": "overloaded_error"}}, 503, "server", None),
        (
            {"error": {"message": "m", "type": "requests", "code": "rate_limit_exceeded"}},
            429,
            "rate_limit",
            "rate_limit_exceeded",
        ),
        ({"error": {"message": "m", "type": "server_error", "code": None}}, 500, "server", None),
        ({"error": {"message": "m", "status": 401}}, 401, "authentication", None),
        ({"error": {"message": "m", "code": "context_length_exceeded"}}, None, "server", None),
        ({"error": "plain text"}, None, "server", None),
    ],
)
def test_in_band_errors(
    payload: dict[str, Any], status: int | None, kind: str, code: str | None
) -> None:
    with pytest.raises(hs.APIStreamError) as info:
        decode_event(_event(json.dumps(payload)))
    assert info.value.status == status
    assert info.value.kind == kind
    if code is not None:
        assert info.value.code == code


@pytest.mark.parametrize("data", ['{"message": "x", "code": 429}', "not json", "[1]"])
def test_named_error_events(data: str) -> None:
    with pytest.raises(hs.APIStreamError):
        decode_event(_event(data, event="error"))


def test_parse_error_body() -> None:
    body = b'{"error": {"message": "bad key", "type": "invalid_request_error", "code": "k"}}'
    assert parse_error_body(body) == ("bad key", "invalid_request_error", "k")
    assert parse_error_body(b"<html>oops</html>") == ("<html>oops</html>", None, None)
    assert parse_error_body(b"") == ("(empty body)", None, None)
    assert parse_error_body(b"\xff\xfe")[0]
    assert parse_error_body(b'{"other": 1}') == ('{"other": 1}', None, None)


def test_accumulator_text_usage_and_finish() -> None:
    acc = CompletionAccumulator()
    for data in [
        _chunk(role="assistant", content=""),
        _chunk("Hel"),
        _chunk("lo"),
        json.dumps({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        json.dumps(
            {"id": "c1", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
        ),
    ]:
        item = decode_data(data)
        assert isinstance(item, hs.ChatChunk)
        acc.add(item)
    completion = acc.completion(ttft=0.5, duration=1.0, attempts=2, request_id="req_1")
    assert completion.text == "Hello"
    assert completion.finish_reason == "stop"
    assert completion.usage == hs.Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    assert (completion.id, completion.model) == ("c1", "m")
    assert (completion.ttft, completion.duration, completion.attempts) == (0.5, 1.0, 2)
    assert completion.request_id == "req_1"
    assert completion.tool_calls == ()


def test_accumulator_merges_tool_calls() -> None:
    def call(index: int, **fields: Any) -> str:
        function = {k: v for k, v in fields.items() if k in ("name", "arguments")}
        entry = {k: v for k, v in fields.items() if k in ("id", "type")}
        return _chunk(tool_calls=[{"index": index, **entry, "function": function}])

    acc = CompletionAccumulator()
    for data in [
        call(0, id="call_a", type="function", name="weather", arguments=""),
        call(1, id="call_b", type="function", name="time", arguments='{"tz"'),
        call(0, arguments='{"city": '),
        call(0, arguments='"Paris"}'),
        call(1, arguments=': "UTC"}'),
    ]:
        item = decode_data(data)
        assert isinstance(item, hs.ChatChunk)
        acc.add(item)
    assert acc.completion().tool_calls == (
        hs.ToolCall(id="call_a", name="weather", arguments='{"city": "Paris"}'),
        hs.ToolCall(id="call_b", name="time", arguments='{"tz": "UTC"}'),
    )


def _stream_bytes(tokens: list[str]) -> bytes:
    events = [_chunk(role="assistant", content="")] + [_chunk(token) for token in tokens]
    return b"".join(f"data: {data}\n\n".encode() for data in [*events, "[DONE]"])


@given(
    st.lists(st.text(max_size=5), max_size=8),
    st.lists(st.integers(0, 400), max_size=10),
)
def test_any_chunking_gives_the_same_text(tokens: list[str], cuts: list[int]) -> None:
    raw = _stream_bytes(tokens)
    points = sorted({min(cut, len(raw)) for cut in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    parser = SSEParser()
    acc = CompletionAccumulator()
    done = False
    for piece in pieces:
        for event in parser.feed(piece):
            item = decode_event(event)
            if item is DONE:
                done = True
            elif isinstance(item, hs.ChatChunk):
                acc.add(item)
    assert done
    assert acc.text == "".join(tokens)
