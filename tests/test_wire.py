# Tests of the wire format: request bodies, event decoding, in-band errors, the accumulator.
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import holysheep_trio as hs
from holysheep_trio._wire import (
    DONE,
    CompletionAccumulator,
    build_request_body,
    decode_chunk_data,
    decode_data,
    decode_event,
    error_from_success_body,
    learn_template,
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


# --- Provider variants (recorded shapes) ---------------------------------------------------

# OpenRouter's documented mid-stream failure: a top-level `error` next to `choices` whose
# finish_reason is "error" ("Streaming" guide, "Handling Errors During Streaming").
OPENROUTER_MID_STREAM_ERROR = {
    "id": "cmpl-abc123",
    "object": "chat.completion.chunk",
    "created": 1234567890,
    "model": "gpt-3.5-turbo",
    "provider": "openai",
    "error": {"code": "server_error", "message": "Provider disconnected unexpectedly"},
    "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
}


@pytest.mark.parametrize(
    ("payload", "status", "kind", "code", "message"),
    [
        (OPENROUTER_MID_STREAM_ERROR, 500, "server", "server_error", "Provider disconnected"),
        (
            # The same with OpenRouter's numeric code and the usage it carries.
            {
                "id": "gen-1",
                "error": {"code": 502, "message": "Provider returned error"},
                "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "cost": 0.001},
            },
            502,
            "server",
            "502",
            "Provider returned error",
        ),
        (
            # The error only on the choice.
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {},
                        "finish_reason": "error",
                        "error": {"code": 429, "message": "Rate limit exceeded upstream"},
                    }
                ]
            },
            429,
            "rate_limit",
            "429",
            "Rate limit exceeded upstream",
        ),
        (
            {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "error"}]},
            None,
            "server",
            None,
            "finish_reason 'error'",
        ),
        (
            # vLLM's error object as a data event.
            {
                "object": "error",
                "message": "This model's maximum context length is 4096 tokens.",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
            400,
            "invalid_request",
            "400",
            "maximum context length",
        ),
        (
            {
                "object": "error",
                "message": "Internal worker died",
                "type": "InternalServerError",
                "code": 503,
            },
            503,
            "server",
            "503",
            "Internal worker died",
        ),
        (
            {"object": "error", "message": "boom", "type": "BadRequestError", "code": None},
            400,
            "invalid_request",
            None,
            "boom",
        ),
        # Mistral's flat error without a code.
        ({"object": "error", "message": "Service unavailable"}, None, "server", None, "Service"),
    ],
    ids=[
        "openrouter",
        "openrouter-numeric",
        "choice-error",
        "bare-finish-error",
        "vllm-400",
        "vllm-503",
        "vllm-type-only",
        "mistral",
    ],
)
def test_errors_inside_chunks(
    payload: dict[str, Any], status: int | None, kind: str, code: str | None, message: str
) -> None:
    with pytest.raises(hs.APIStreamError) as info:
        decode_event(_event(json.dumps(payload)))
    error = info.value
    assert (error.status, error.kind, error.code) == (status, kind, code)
    assert message in error.message


def test_in_band_error_keeps_param() -> None:
    payload = {"error": {"message": "bad", "type": "invalid_request_error", "param": "messages"}}
    with pytest.raises(hs.APIStreamError) as info:
        decode_data(json.dumps(payload))
    assert (info.value.param, info.value.status) == ("messages", 400)


def test_null_or_empty_error_field_is_not_an_error() -> None:
    for error in (None, {}):
        data = json.dumps({"error": error, "choices": [{"index": 0, "delta": {"content": "a"}}]})
        chunk = decode_data(data)
        assert isinstance(chunk, hs.ChatChunk)
        assert chunk.text == "a"


@pytest.mark.parametrize(
    ("body", "cls", "status", "message"),
    [
        (
            b'{"error":{"code":429,"message":"Rate limit exceeded: free-models-per-day",'
            b'"metadata":{"headers":{"X-RateLimit-Limit":"50"}}}}',
            hs.RateLimitError,
            429,
            "free-models-per-day",
        ),
        (
            b'{"error":{"message":"This model\'s maximum context length is 8192 tokens.",'
            b'"type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}',
            hs.BadRequestError,
            400,
            "maximum context length",
        ),
        (
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            hs.OverloadedError,
            503,
            "Overloaded",
        ),
        (
            b'{"object":"error","message":"The model `x` does not exist.",'
            b'"type":"NotFoundError","param":null,"code":404}',
            hs.NotFoundError,
            404,
            "does not exist",
        ),
        (b'{"error":{"message":"quota","status":401}}', hs.AuthenticationError, 401, "quota"),
    ],
    ids=["openrouter-429", "openai-400", "anthropic-529", "vllm-404", "status-field"],
)
def test_json_error_body_in_a_success_response(
    body: bytes, cls: type[hs.APIStatusError], status: int, message: str
) -> None:
    error = error_from_success_body(
        body,
        content_type="application/json",
        headers={"retry-after": "3"},
        retry_after=3.0,
        should_retry=None,
    )
    assert type(error) is cls
    assert isinstance(error, hs.APIStatusError)
    assert error.status == status
    assert message in error.message
    assert "HTTP 200" in error.message
    assert error.retry_after == 3.0
    assert error.headers == {"retry-after": "3"}
    assert error.body == body.decode()


def test_json_error_body_without_a_status_keeps_the_http_status() -> None:
    error = error_from_success_body(
        b'{"error": "upstream exploded"}', content_type="application/json"
    )
    assert type(error) is hs.APIStatusError
    assert error.status == 200
    assert error.kind == "server"
    assert "upstream exploded" in error.message
    assert not hs.RetryPolicy().is_retryable(error)
    limited = error_from_success_body(b'{"error": {"code": 429}}', content_type=None)
    assert hs.RetryPolicy().is_retryable(limited)


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>502 Bad Gateway</body></html>",
        b'{"id": "chatcmpl-1", "object": "chat.completion", "choices": []}',
        b"",
        b"\xff\xfe{",
    ],
)
def test_a_success_body_that_is_no_error_is_a_protocol_error(body: bytes) -> None:
    error = error_from_success_body(body, content_type="text/html; charset=utf-8")
    assert isinstance(error, hs.StreamProtocolError)
    assert "text/html" in error.message
    assert error.data == body[:MAX_SHOWN_BYTES]


def _accumulate(chunks: list[dict[str, Any]]) -> hs.Completion:
    acc = CompletionAccumulator()
    for payload in chunks:
        item = decode_data(json.dumps(payload))
        assert isinstance(item, hs.ChatChunk)
        acc.add(item)
    return acc.completion()


def _delta_chunk(**delta: Any) -> dict[str, Any]:
    return {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": delta}]}


def test_accumulator_reasoning() -> None:
    completion = _accumulate(
        [
            _delta_chunk(role="assistant", content=None, reasoning_content=""),
            _delta_chunk(content=None, reasoning_content="Okay, "),
            _delta_chunk(content=None, reasoning_content="9.11 < 9.8."),
            _delta_chunk(content="9.8", reasoning_content=None),
        ]
    )
    assert completion.reasoning == "Okay, 9.11 < 9.8."
    assert completion.text == "9.8"
    assert _accumulate([_delta_chunk(content="hi")]).reasoning is None


def _call(**fields: Any) -> dict[str, Any]:
    function = {k: v for k, v in fields.items() if k in ("name", "arguments")}
    entry = {k: v for k, v in fields.items() if k not in ("name", "arguments")}
    return {**entry, "function": function}


def test_gemini_tool_calls_without_index() -> None:
    # Two complete calls in one delta, neither with an index.
    completion = _accumulate(
        [
            {
                "choices": [
                    {
                        "delta": {
                            "role": "assistant",
                            "tool_calls": [
                                {
                                    "extra_content": {"google": {"thought_signature": "c2ln"}},
                                    **_call(
                                        id="function-call-1",
                                        type="function",
                                        name="get_weather",
                                        arguments='{"location":"Sydney"}',
                                    ),
                                },
                                _call(
                                    id="function-call-2",
                                    type="function",
                                    name="get_weather",
                                    arguments='{"location":"Paris"}',
                                ),
                            ],
                        },
                        "finish_reason": "stop",
                        "index": 0,
                    }
                ],
                "model": "gemini-2.5-flash",
                "object": "chat.completion.chunk",
            }
        ]
    )
    assert completion.tool_calls == (
        hs.ToolCall(id="function-call-1", name="get_weather", arguments='{"location":"Sydney"}'),
        hs.ToolCall(id="function-call-2", name="get_weather", arguments='{"location":"Paris"}'),
    )


def test_indexless_fragments_follow_the_latest_id() -> None:
    completion = _accumulate(
        [
            _delta_chunk(tool_calls=[_call(id="call_a", name="f", arguments='{"x"')]),
            _delta_chunk(tool_calls=[_call(arguments=": 1}")]),
            _delta_chunk(tool_calls=[_call(id="call_b", name="g", arguments="")]),
            _delta_chunk(tool_calls=[_call(arguments="{}")]),
        ]
    )
    assert completion.tool_calls == (
        hs.ToolCall(id="call_a", name="f", arguments='{"x": 1}'),
        hs.ToolCall(id="call_b", name="g", arguments="{}"),
    )


def test_every_call_at_index_zero_with_distinct_ids() -> None:
    completion = _accumulate(
        [
            _delta_chunk(tool_calls=[_call(index=0, id="call_1", type="function", name="a")]),
            _delta_chunk(tool_calls=[_call(index=0, arguments='{"q": 1}')]),
            _delta_chunk(tool_calls=[_call(index=0, id="call_2", type="function", name="b")]),
            _delta_chunk(tool_calls=[_call(index=0, arguments='{"q": 2}')]),
            # A server that repeats the id on every fragment continues the same call.
            _delta_chunk(tool_calls=[_call(index=0, id="call_2", arguments="")]),
        ]
    )
    assert completion.tool_calls == (
        hs.ToolCall(id="call_1", name="a", arguments='{"q": 1}'),
        hs.ToolCall(id="call_2", name="b", arguments='{"q": 2}'),
    )


def test_id_arriving_after_the_first_fragment_does_not_split_the_call() -> None:
    completion = _accumulate(
        [
            _delta_chunk(tool_calls=[_call(index=0, name="f", arguments="{")]),
            _delta_chunk(tool_calls=[_call(index=0, id="call_late", arguments="}")]),
        ]
    )
    assert completion.tool_calls == (hs.ToolCall(id="call_late", name="f", arguments="{}"),)


# --- decode_chunk_data: the hot path, pinned to decode_data ------------------------------------


def _outcome(decode: Any, data: str) -> object:
    """What decoding ``data`` gives: the value, or the error's type, text and offending bytes."""
    try:
        return decode(data)
    except hs.HolySheepError as exc:
        return (type(exc), str(exc), getattr(exc, "data", None), getattr(exc, "status", None))


_SCALARS = st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=4)
_CHUNK_DELTAS = st.fixed_dictionaries(
    {},
    optional={
        "role": st.none() | st.just("assistant") | st.integers(),
        "content": st.none() | st.text(max_size=4) | st.integers(),
        "refusal": st.none() | st.text(max_size=3),
        "reasoning_content": st.none() | st.text(max_size=3),
        "tool_calls": st.just([{"index": 0, "id": "c", "function": {"arguments": "{"}}]),
    },
)
_CHUNK_PAYLOADS = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=3) | st.integers(),
        "object": st.sampled_from(["chat.completion.chunk", "error"]),
        "model": st.text(max_size=3),
        "created": st.integers(0, 9) | st.none(),
        "choices": st.lists(
            st.fixed_dictionaries(
                {"delta": _CHUNK_DELTAS | st.none() | st.integers()},
                optional={
                    "index": st.integers(0, 2),
                    "finish_reason": st.sampled_from([None, "stop", "error", "length"]),
                },
            ),
            max_size=2,
        )
        | _SCALARS,
        "usage": st.none() | st.just({"prompt_tokens": 1, "completion_tokens": 2}),
        "error": st.none() | st.just("") | st.just({"message": "boom", "code": 429}),
        "message": st.text(max_size=3),
    },
)


@given(
    payload=_CHUNK_PAYLOADS,
    before=st.sampled_from(["", " ", "\n", "\ufeff"]),
    after=st.sampled_from(["", " ", "x", "]", "\t"]),
    compact=st.booleans(),
)
@example(
    payload={"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}]},
    before="",
    after="",
    compact=True,
)
@example(payload={"choices": [{"delta": {"content": "x"}}]}, before="", after=" ", compact=True)
@example(payload={"choices": [{"delta": {"content": 1}}]}, before="", after="", compact=True)
@example(payload={"object": "error", "message": "m"}, before="", after="", compact=True)
def test_decode_chunk_data_agrees_with_decode_data(
    payload: dict[str, Any], before: str, after: str, compact: bool
) -> None:
    data = before + json.dumps(payload, separators=(",", ":") if compact else None) + after
    assert _outcome(decode_chunk_data, data) == _outcome(decode_data, data)


@given(st.text(max_size=30))
@example("[DONE]")
@example("")
@example("{")
@example("[" * 100_000)
@example('{"a": [' * 50_000)
@example("null")
@example('"text"')
@example("NaN")
@example('{"choices": [{"index": 0, "delta": {"content": "\\ud800"}}]}')
def test_decode_chunk_data_agrees_on_any_text(data: str) -> None:
    assert _outcome(decode_chunk_data, data) == _outcome(decode_data, data)


# --- the accumulator keeps text, not pieces ----------------------------------------------------


@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=()), max_size=6),
        max_size=40,
    )
)
@example(["a\r\n", "\r", "\n", "\ud800", "😀", "\x00", "\u2028"])
def test_accumulated_text_is_every_piece_joined(pieces: list[str]) -> None:
    acc = CompletionAccumulator()
    for piece in pieces:
        for field in ("content", "refusal", "reasoning_content"):
            item = decode_data(json.dumps({"choices": [{"delta": {field: piece}}]}))
            assert isinstance(item, hs.ChatChunk)
            acc.add(item)
        call = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": piece}}
        item = decode_data(json.dumps({"choices": [{"delta": {"tool_calls": [call]}}]}))
        assert isinstance(item, hs.ChatChunk)
        acc.add(item)
    completion = acc.completion()
    joined = "".join(pieces)
    assert completion.text == acc.text == joined
    assert completion.refusal == (joined or None)
    assert completion.reasoning == (joined or None)
    assert acc.reasoning == joined
    assert completion.tool_calls == (
        (hs.ToolCall(id="call_1", name="f", arguments=joined),) if pieces else ()
    )


def test_accumulator_is_slotted() -> None:
    # One per stream: no __dict__ (docs/benchmarks.md, "Scale").
    assert not hasattr(CompletionAccumulator(), "__dict__")


# --- the stream's chunk template: pinned to decode_chunk_data ---------------------------------


def _decoder_outcomes(datas: list[str]) -> list[object]:
    """What one stream's decoder gives for each event's data (templates learned as it goes)."""
    from holysheep_trio.client import _ChatDecoder

    decoder = _ChatDecoder()
    found: list[object] = []
    for data in datas:
        try:
            found.append(decoder.decode(ServerSentEvent(data=data))[0])
        except hs.HolySheepError as exc:
            found.append((type(exc), str(exc), getattr(exc, "data", None)))
    return found


def _plain_outcomes(datas: list[str]) -> list[object]:
    found: list[object] = []
    for data in datas:
        outcome = _outcome(decode_chunk_data, data)
        if isinstance(outcome, tuple):
            outcome = outcome[:3]
        found.append(None if outcome is DONE else outcome)
    return found


_ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=()), max_size=6)
_HEADS = st.fixed_dictionaries(
    {
        "id": _ANY_TEXT,
        "object": st.just("chat.completion.chunk"),
        "created": st.integers(0, 2**40),
        "model": _ANY_TEXT,
    },
    optional={
        "system_fingerprint": st.none() | _ANY_TEXT,
        "service_tier": _ANY_TEXT,
        'x"content': _ANY_TEXT,  # a key that ends like the one the template looks for
        "content": _ANY_TEXT,  # the same name outside the delta
    },
)
_TAILS = st.fixed_dictionaries(
    {}, optional={"logprobs": st.none(), "finish_reason": st.none(), "obfuscation": _ANY_TEXT}
)


@st.composite
def _streams(draw: st.DrawFn) -> list[str]:
    """One stream's event data: a head shared by its chunks, text deltas, and oddities."""
    head = draw(_HEADS)
    compact = draw(st.booleans())
    ascii_only = draw(st.booleans())
    datas = []
    for _ in range(draw(st.integers(1, 8))):
        choice: dict[str, Any] = {"index": 0, "delta": {"content": draw(_ANY_TEXT)}}
        choice.update(draw(_TAILS))
        payload = {**head, "choices": [choice]}
        kind = draw(st.sampled_from(["text"] * 4 + ["role", "finish", "usage", "error", "raw"]))
        if kind == "role":
            choice["delta"]["role"] = "assistant"
        elif kind == "finish":
            choice["finish_reason"] = draw(st.sampled_from(["stop", "error", "length"]))
        elif kind == "usage":
            payload["usage"] = {"prompt_tokens": 1, "completion_tokens": 2}
        elif kind == "error":
            payload["error"] = {"message": "boom", "code": 429}
        separators = (",", ":") if compact else None
        data = json.dumps(payload, separators=separators, ensure_ascii=ascii_only)
        if kind == "raw":  # the template's text around something that is not one string
            data = data.replace(
                '"content":"',
                draw(
                    st.sampled_from(
                        [
                            '"content":"a","content":"',
                            '"content":"\\u',
                            '"content":"\x01',
                            '"content":1,"x":"',
                        ]
                    )
                ),
                1,
            )
        datas.append(data)
    return datas


@given(_streams())
@example(
    [
        '{"id":"a","object":"chat.completion.chunk","created":1,"model":"m","choices":'
        '[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}'
    ]
    * 2
    + [
        '{"id":"a","object":"chat.completion.chunk","created":1,"model":"m","choices":'
        '[{"index":0,"delta":{"content":"x","content":"y"},"finish_reason":null}]}',
        '{"id":"a","object":"chat.completion.chunk","created":1,"model":"m","choices":'
        '[{"index":0,"delta":{"content":"\\n\\"\\\\\\u2603"},"finish_reason":null}]}',
        '{"id":"a","object":"chat.completion.chunk","created":1,"model":"m","choices":'
        '[{"index":0,"delta":{"content":"unterminated},"finish_reason":null}]}',
    ]
)
def test_a_streams_template_decodes_every_chunk_as_decode_chunk_data(datas: list[str]) -> None:
    assert _decoder_outcomes(datas) == _plain_outcomes(datas)


def _chunk_text(content: str, **extra: Any) -> str:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": None}
    return json.dumps(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 7,
            "model": "m",
            "choices": [choice],
            **extra,
        },
        separators=(",", ":"),
    )


def test_the_template_is_used_once_learned() -> None:
    from holysheep_trio.client import _ChatDecoder

    decoder = _ChatDecoder()
    for word in ("a", "b\n", "c\u2603"):
        item, _ = decoder.decode(ServerSentEvent(data=_chunk_text(word)))
        assert isinstance(item, hs.ChatChunk)
        assert item.text == word
    assert decoder._template is not None
    assert decoder._hits == 2


def test_a_template_that_never_matches_is_given_up_after_a_few(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Per-chunk padding (OpenAI's `obfuscation`) changes the text around every content.
    from holysheep_trio import client
    from holysheep_trio.client import _TEMPLATE_LEARNINGS, _ChatDecoder

    calls: list[str] = []

    def counted(data: str, chunk: hs.ChatChunk) -> Any:
        calls.append(data)
        return learn_template(data, chunk)

    monkeypatch.setattr(client, "learn_template", counted)
    decoder = _ChatDecoder()
    for n in range(20):
        item, _ = decoder.decode(ServerSentEvent(data=_chunk_text("w", obfuscation="x" * n)))
        assert isinstance(item, hs.ChatChunk)
        assert item.text == "w"
    assert decoder._hits == 0
    # The first template, then one per chunk until the chances are used up.
    assert len(calls) == _TEMPLATE_LEARNINGS + 1


@pytest.mark.parametrize("shape", ["top_level_key_after", "escaped_duplicate_key"])
@pytest.mark.parametrize("first", [0, 1])
def test_a_template_whose_literal_is_not_the_content_is_refused(shape: str, first: int) -> None:
    # The last `"content":"..."` literal is not where the delta's content comes from, and the
    # first chunk's content equals a probe: one probe alone would have been fooled (found by
    # review).
    from holysheep_trio._wire import _PROBE_TEXTS

    probe = json.dumps(_PROBE_TEXTS[first])

    def data(content: str) -> str:
        if shape == "top_level_key_after":
            return (
                '{"id":"a","created":1,"model":"m","choices":[{"index":0,"delta":{"content":'
                + probe
                + "}}],"
                + '"content":'
                + json.dumps(content)
                + "}"
            )
        return (
            '{"id":"a","created":1,"model":"m","choices":[{"index":0,"delta":{"content":'
            + json.dumps(content)
            + ',"cont\\u0065nt":'
            + probe
            + "}}]}"
        )

    datas = [data(_PROBE_TEXTS[first]), data("hello"), data("world")]
    assert _decoder_outcomes(datas) == _plain_outcomes(datas)
