# Tests of the Responses API wire format: request bodies, decoding, the accumulator's rules.
from __future__ import annotations

import json
import math
from typing import Any

import attrs
import pytest
import responses_vectors as vectors
from hypothesis import example, given
from hypothesis import strategies as st

import holysheep_trio as hs
from holysheep_trio._responses_wire import (
    ResponseAccumulator,
    build_response_request_body,
    decode_response_data,
    decode_response_event,
    estimate_input_messages,
)
from holysheep_trio.errors import MAX_SHOWN_BYTES
from holysheep_trio.pool import estimate_tokens
from holysheep_trio.sse import ServerSentEvent, SSEParser

# --------------------------------------------------------------------------- request bodies


def test_request_body() -> None:
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    body = json.loads(
        build_response_request_body(
            model="gpt-4.1",
            input=[
                {"role": "user", "content": "hi"},
                hs.Message(role="developer", content="be brief"),
                {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
            ],
            instructions="You are terse.",
            previous_response_id="resp_1",
            store=False,
            tools=tools,
            tool_choice="required",
            max_output_tokens=64,
            params={"temperature": 0.2, "top_p": None, "reasoning": {"effort": "low"}},
        )
    )
    assert body == {
        "model": "gpt-4.1",
        "input": [
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": "be brief"},
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
        ],
        "instructions": "You are terse.",
        "previous_response_id": "resp_1",
        "store": False,
        "tools": tools,
        "tool_choice": "required",
        "max_output_tokens": 64,
        "temperature": 0.2,
        "reasoning": {"effort": "low"},
        "stream": True,
    }


def test_request_body_minimal() -> None:
    body = json.loads(build_response_request_body(model="m", input="Hello ü"))
    assert body == {"model": "m", "input": "Hello ü", "stream": True}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model": "", "input": "x"}, TypeError, "model"),
        ({"model": "m", "input": b"x"}, TypeError, "input"),
        ({"model": "m", "input": {"role": "user"}}, TypeError, "input"),
        ({"model": "m", "input": 5}, TypeError, "input"),
        ({"model": "m", "input": [5]}, TypeError, "input item"),
        ({"model": "m", "input": [{"content": "x"}]}, TypeError, "'type' or 'role'"),
        (
            {"model": "m", "input": [hs.Message(role="tool", content="x", tool_call_id="c")]},
            TypeError,
            "function_call_output",
        ),
        ({"model": "m", "input": "x", "instructions": 5}, TypeError, "instructions"),
        ({"model": "m", "input": "x", "store": "yes"}, TypeError, "store"),
        ({"model": "m", "input": "x", "tools": {"type": "function"}}, TypeError, "tools"),
        ({"model": "m", "input": "x", "tools": ["f"]}, TypeError, "tool"),
        ({"model": "m", "input": "x", "tool_choice": 1}, TypeError, "tool_choice"),
        ({"model": "m", "input": "x", "max_output_tokens": 1.5}, TypeError, "max_output_tokens"),
        ({"model": "m", "input": "x", "max_output_tokens": True}, TypeError, "max_output_tokens"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, ValueError, "at least 1"),
        ({"model": "m", "input": "x", "params": {"stream": False}}, TypeError, "'stream'"),
        ({"model": "m", "input": "x", "params": {"input": "y"}}, TypeError, "'input'"),
        ({"model": "m", "input": "x", "params": {"store": True}}, TypeError, "'store'"),
        ({"model": "m", "input": "x", "params": {"x": object()}}, TypeError, "JSON"),
        ({"model": "m", "input": "x", "params": {"temperature": math.nan}}, TypeError, "JSON"),
    ],
)
def test_request_body_rejects_bad_input(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        build_response_request_body(**kwargs)


def test_estimate_input_messages() -> None:
    messages = estimate_input_messages(
        [
            {"role": "user", "content": [{"type": "input_text", "text": "abcd" * 10}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": '{"a": 1}'},
            {"type": "function_call_output", "call_id": "c", "output": "x" * 40},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "y" * 8}]},
            {"type": "item_reference", "id": "msg_1"},
            hs.Message(role="assistant", content="z" * 4),
            "not an item",  # type: ignore[list-item]
        ],
        instructions="i" * 8,
    )
    assert [message["content"] for message in messages][1:] == [
        [{"type": "input_text", "text": "abcd" * 10}],
        '{"a": 1}',
        "x" * 40,
        [{"type": "summary_text", "text": "y" * 8}],
        "",
        "z" * 4,
    ]
    # 8 + 40 + 8 + 40 + 8 + 4 characters / 4, plus 4 per message, plus the output limit.
    assert estimate_tokens(messages, max_tokens=10) == 27 + 4 * 7 + 10
    assert estimate_input_messages("Hello") == [{"role": "user", "content": "Hello"}]


# --------------------------------------------------------------------------- decoding


def _sse(payload: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(event=str(payload.get("type", "message")), data=json.dumps(payload))


def test_decode() -> None:
    event = decode_response_event(_sse(vectors.OPENAI_TEXT[4]))
    assert isinstance(event, hs.OutputTextDelta)
    assert decode_response_event(ServerSentEvent(event="message", data="")) is None
    # Relays append the chat stream's end marker after the terminal event.
    assert decode_response_event(ServerSentEvent(event="message", data="[DONE]")) is None
    # Without a type in the data, the SSE event name is the type.
    named = decode_response_event(ServerSentEvent(event="response.queued", data="{}"))
    assert isinstance(named, hs.ResponseQueued)
    plain = decode_response_event(ServerSentEvent(event="message", data="{}"))
    assert isinstance(plain, hs.UnknownResponseEvent)
    assert plain.type == ""


@pytest.mark.parametrize("data", ['{"type": ', "nope", "[1]", '"text"', "[" * 100_000])
def test_bad_json_is_a_protocol_error(data: str) -> None:
    with pytest.raises(hs.StreamProtocolError) as info:
        decode_response_data(data)
    assert len(info.value.data) <= MAX_SHOWN_BYTES


def test_bad_shape_keeps_the_offending_bytes() -> None:
    data = json.dumps({"type": "response.output_text.delta", "delta": 5, "output_index": 0})
    with pytest.raises(hs.StreamProtocolError) as info:
        decode_response_data(data)
    assert info.value.data == data.encode()
    assert "'delta' is not a string" in info.value.message


# --------------------------------------------------------------------------- accumulation


def _run(events: list[dict[str, Any]]) -> ResponseAccumulator:
    acc = ResponseAccumulator()
    for payload in events:
        event = hs.ResponseEvent.from_json(payload)
        acc.add(event)
    return acc


@pytest.mark.parametrize("name", sorted(vectors.GOOD_STREAMS))
def test_recorded_streams_agree_with_their_terminal_response(name: str) -> None:
    events = vectors.GOOD_STREAMS[name]
    acc = _run(events)
    assert acc.done
    assert acc.mismatches() == ()
    response = acc.response(ttft=0.25, duration=1.5, attempts=2, request_id="req_9")
    terminal = hs.ResponseEvent.from_json(events[-1])
    assert isinstance(terminal, hs.ResponseCompleted | hs.ResponseIncomplete)
    expected = attrs.evolve(
        terminal.response, ttft=0.25, duration=1.5, attempts=2, request_id="req_9"
    )
    assert response == expected
    assert acc.usage == terminal.response.usage
    # One terminal event, and it is last.
    kinds = [hs.ResponseEvent.from_json(event).is_terminal for event in events]
    assert kinds.count(True) == 1
    assert kinds[-1]


@pytest.mark.parametrize("name", sorted(vectors.GOOD_STREAMS))
def test_without_the_terminal_the_stream_builds_the_same_output(name: str) -> None:
    # The items the events build are the terminal response's items: what a client shows of
    # a stream cut before its end is what the server would have said.
    events = vectors.GOOD_STREAMS[name]
    acc = _run(events[:-1])
    terminal = hs.ResponseEvent.from_json(events[-1])
    assert isinstance(terminal, hs.ResponseCompleted | hs.ResponseIncomplete)
    assert acc.response().output == terminal.response.output
    assert not acc.done


def test_text_reply() -> None:
    response = _run(vectors.OPENAI_TEXT).response()
    assert response.output_text == vectors.TEXT
    assert response.status == "completed"
    assert response.usage is not None
    assert response.usage.total_tokens == 36 + len(vectors.TEXT_PIECES)


def test_tool_calls_split_across_many_deltas() -> None:
    response = _run(vectors.OPENAI_TOOLS).response()
    assert [(call.name, call.arguments) for call in response.function_calls] == [
        ("get_weather", vectors.ARGS_PARIS),
        ("get_weather", vectors.ARGS_TOKYO),
    ]
    for call in response.function_calls:
        json.loads(call.arguments)  # complete JSON texts


def test_reasoning_reply() -> None:
    response = _run(vectors.OPENAI_REASONING).response()
    reasoning, _ = response.output
    assert isinstance(reasoning, hs.ReasoningItem)
    assert reasoning.summary == (vectors.SUMMARY,)
    assert response.output_text == vectors.ANSWER
    assert response.usage is not None
    assert response.usage.output_tokens_details == hs.OutputTokensDetails(reasoning_tokens=320)


def test_peer_reasoning_variants() -> None:
    ollama = _run(vectors.OLLAMA[:-1]).response()
    assert ollama.output[0] == hs.ReasoningItem(
        id="rs_482913",
        summary=(vectors.OLLAMA_THINKING,),
        encrypted_content=vectors.OLLAMA_THINKING,
    )
    assert ollama.function_calls[0].arguments == vectors.OLLAMA_ARGS
    for stream in (vectors.VLLM, vectors.LM_STUDIO):
        item = _run(stream).response().output[0]
        assert isinstance(item, hs.ReasoningItem)
        assert item.content == (vectors.VLLM_REASONING,)
    # xAI: reasoning_text deltas without any part event.
    deltas = [event for event in vectors.XAI if event["type"] == "response.reasoning_text.delta"]
    (partial,) = _run(vectors.XAI[:2] + deltas).response().output
    assert isinstance(partial, hs.ReasoningItem)
    assert partial.content == (vectors.XAI_REASONING,)


def test_refusal() -> None:
    (message,) = _run(vectors.OPENAI_REFUSAL).response().output
    assert isinstance(message, hs.OutputMessage)
    assert message.refusal == vectors.REFUSAL


def test_incomplete_is_not_an_error() -> None:
    acc = _run(vectors.OPENAI_INCOMPLETE)
    response = acc.response()
    assert response.status == "incomplete"
    assert response.incomplete_details == hs.IncompleteDetails(reason="max_output_tokens")
    assert response.output_text == "The answer is"
    assert acc.done


def test_response_failed_raises_with_the_partial_response() -> None:
    acc = _run(vectors.FAILED_AFTER_OUTPUT[:-1])
    with pytest.raises(hs.APIStreamError) as info:
        acc.add(hs.ResponseEvent.from_json(vectors.FAILED_AFTER_OUTPUT[-1]))
    error = info.value
    assert (error.code, error.status, error.kind) == ("server_error", 500, "server")
    assert "The model produced invalid content." in error.message
    response = acc.response()
    assert response.status == "failed"
    assert response.error == hs.ResponseError(
        code="server_error", message="The model produced invalid content."
    )
    assert response.output_text == "Once upon"
    assert acc.done


def test_error_event_raises_with_code_message_param() -> None:
    acc = _run(vectors.ERROR_EVENT[:-1])
    with pytest.raises(hs.APIStreamError) as info:
        acc.add(hs.ResponseEvent.from_json(vectors.ERROR_EVENT[-1]))
    error = info.value
    assert (error.code, error.status, error.kind) == ("rate_limit_exceeded", 429, "rate_limit")
    assert "Rate limit reached" in error.message
    assert error.param is None
    response = acc.response()
    assert response.status == "failed"
    assert response.error == hs.ResponseError(
        code="rate_limit_exceeded",
        message="Rate limit reached for gpt-4.1 on tokens per min (TPM).",
    )
    nested = ResponseAccumulator()
    with pytest.raises(hs.APIStreamError) as info:
        nested.add(
            hs.ResponseEvent.from_json(
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "code": "previous_response_not_found",
                        "message": "Previous response with id 'resp_x' not found.",
                        "param": "previous_response_id",
                    },
                }
            )
        )
    assert info.value.param == "previous_response_id"
    assert info.value.status == 404  # "not_found": an invalid request, not retried
    assert info.value.kind == "invalid_request"


def test_unknown_events_do_not_disturb_accumulation() -> None:
    acc = _run(vectors.UNKNOWN_EVENTS)
    assert acc.response().output_text == vectors.TEXT
    assert acc.mismatches() == ()


# --------------------------------------------------------------------------- protocol errors


def _added(index: int = 0, item: dict[str, Any] | None = None) -> dict[str, Any]:
    item = item or {"type": "message", "id": f"msg_{index}", "content": [], "role": "assistant"}
    return {"type": "response.output_item.added", "output_index": index, "item": item}


def _text_delta(delta: str, index: int = 0, **extra: Any) -> dict[str, Any]:
    return {"type": "response.output_text.delta", "output_index": index, "delta": delta, **extra}


@pytest.mark.parametrize(
    ("events", "match"),
    [
        ([_text_delta("x")], "output_index 0, which no response.output_item.added"),
        ([_added(0), _text_delta("x", 1)], "output_index 1"),
        (
            [
                _added(0),
                {
                    "type": "response.output_item.done",
                    "output_index": 3,
                    "item": {"type": "message"},
                },
            ],
            "output_index 3",
        ),
        (
            [{"type": "response.reasoning_summary_text.delta", "output_index": 2, "delta": "x"}],
            "output_index 2",
        ),
        ([_added(0), _added(0)], "added twice"),
        (
            [
                _added(0, {"type": "message"}),
                {"type": "response.function_call_arguments.delta", "output_index": 0, "delta": "{"},
            ],
            "a message item",
        ),
        ([_added(0, {"type": "function_call"}), _text_delta("x")], "a function call"),
        (
            [
                _added(0, {"type": "message"}) | {"sequence_number": 5},
                _text_delta("x", sequence_number=4),
            ],
            "went backwards: 4 after 5",
        ),
        ([*vectors.OPENAI_TEXT, vectors.OPENAI_TEXT[4]], "after the end of the response"),
    ],
    ids=[
        "delta-before-added",
        "delta-other-index",
        "done-unknown-index",
        "summary-unknown-index",
        "added-twice",
        "arguments-on-message",
        "text-on-function-call",
        "sequence-backwards",
        "after-terminal",
    ],
)
def test_protocol_errors(events: list[dict[str, Any]], match: str) -> None:
    with pytest.raises(hs.StreamProtocolError, match=match):
        _run(events)


def test_equal_and_missing_sequence_numbers_are_tolerated() -> None:
    events = [
        _added(0) | {"sequence_number": 3},
        _text_delta("a", sequence_number=3),  # a relay repeating a default
        _text_delta("b"),
        _text_delta("c", sequence_number=9),
    ]
    assert _run(events).response().output_text == "abc"


# --------------------------------------------------------------------------- disagreements


def _message_done(text: str) -> dict[str, Any]:
    return {
        "type": "response.output_item.done",
        "output_index": 0,
        "item": {
            "type": "message",
            "id": "msg_0",
            "content": [{"type": "output_text", "text": text}],
        },
    }


def _completed(output: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "response.completed", "response": vectors.response_object("completed", output)}


def test_deltas_that_disagree_with_done_are_reported_and_done_wins() -> None:
    acc = _run(
        [
            _added(0),
            _text_delta("Hel"),
            _text_delta("lo"),
            {"type": "response.output_text.done", "output_index": 0, "text": "Help"},
        ]
    )
    assert acc.response().output_text == "Help"
    (mismatch,) = acc.mismatches()
    assert "output[0]" in mismatch
    assert "'Help'" in mismatch
    assert "'Hello'" in mismatch


def test_terminal_response_wins_and_disagreement_is_reported() -> None:
    message = {
        "type": "message",
        "id": "msg_0",
        "content": [{"type": "output_text", "text": "Hi!"}],
    }
    acc = _run([_added(0), _text_delta("Hi"), _completed([message])])
    assert acc.response().output_text == "Hi!"
    mismatches = acc.mismatches()
    assert len(mismatches) == 1
    assert "the terminal response says 'Hi!'" in mismatches[0]


def test_item_done_that_disagrees_is_reported() -> None:
    acc = _run([_added(0), _text_delta("abc"), _message_done("abd")])
    assert acc.response().output_text == "abd"
    assert any("output_item.done says 'abd'" in m for m in acc.mismatches())


def test_a_terminal_response_without_output_keeps_the_streamed_items() -> None:
    acc = _run([_added(0), _text_delta("streamed"), _completed([])])
    assert acc.response().output_text == "streamed"
    assert acc.response().status == "completed"
    (mismatch,) = acc.mismatches()
    assert "0 output items" in mismatch


def test_items_the_stream_never_added_are_reported() -> None:
    extra = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    message = {"type": "message", "id": "msg_0", "content": [{"type": "output_text", "text": "a"}]}
    acc = _run([_added(0), _text_delta("a"), _completed([message, extra])])
    (mismatch,) = acc.mismatches()
    assert "never added" in mismatch


def test_wrong_item_type_and_ids_are_reported() -> None:
    call = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "f",
        "arguments": "",
    }
    acc = _run(
        [
            _added(0, call),
            {"type": "response.function_call_arguments.delta", "output_index": 0, "delta": "{}"},
            {
                "type": "response.function_call_arguments.done",
                "output_index": 0,
                "arguments": "{}",
                "name": "g",
            },
            _completed(
                [call | {"id": "fc_2", "call_id": "call_2", "arguments": "{}", "name": "g"}]
            ),
        ]
    )
    mismatches = " | ".join(acc.mismatches())
    assert "names 'g', the item 'f'" in mismatches
    assert "id 'fc_2'" in mismatches
    assert "call_id 'call_2'" in mismatches
    acc = _run([_added(0), _text_delta("x"), _completed([call])])
    assert "has a function_call item, the stream a message" in acc.mismatches()[0]


def test_partial_response_before_the_terminal() -> None:
    acc = _run(vectors.OPENAI_TEXT[:7])
    response = acc.response()
    assert response.status == "in_progress"
    assert response.id == vectors.OPENAI_TEXT[0]["response"]["id"]
    assert response.output_text == "In a shimmering"
    assert acc.usage is None
    assert not acc.done


# --------------------------------------------------------------------------- properties


@given(st.lists(st.text(max_size=8), max_size=20))
@example([""])
@example(["\u00e9", "\U0001f600", "\r\n"])
def test_any_split_of_text_deltas_accumulates_to_the_done_text(pieces: list[str]) -> None:
    acc = _run(vectors.text_stream(pieces))
    assert acc.mismatches() == ()
    assert acc.response().output_text == "".join(pieces)


@given(st.text(max_size=60), st.lists(st.integers(0, 60), max_size=10))
def test_any_split_of_arguments_accumulates_to_the_done_arguments(
    text: str, cuts: list[int]
) -> None:
    arguments = json.dumps({"q": text})
    points = sorted({min(cut, len(arguments)) for cut in cuts})
    pieces = [arguments[a:b] for a, b in zip([0, *points], [*points, len(arguments)], strict=True)]
    call = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "f",
        "arguments": "",
    }
    events = [
        _added(0, call),
        *[
            {"type": "response.function_call_arguments.delta", "output_index": 0, "delta": piece}
            for piece in pieces
        ],
        {
            "type": "response.function_call_arguments.done",
            "output_index": 0,
            "arguments": arguments,
        },
        _completed([call | {"arguments": arguments}]),
    ]
    acc = _run(events)
    assert acc.mismatches() == ()
    assert acc.response().function_calls[0].arguments == arguments


@given(
    name=st.sampled_from(sorted(vectors.GOOD_STREAMS)),
    cuts=st.lists(st.integers(0, 40_000), max_size=10),
    event_lines=st.booleans(),
)
def test_any_chunking_of_the_bytes_gives_the_same_response(
    name: str, cuts: list[int], event_lines: bool
) -> None:
    events = vectors.GOOD_STREAMS[name]
    raw = vectors.sse_bytes(events, event_lines=event_lines, trailer=b"data: [DONE]\n\n")
    points = sorted({min(cut, len(raw)) for cut in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    parser = SSEParser()
    acc = ResponseAccumulator()
    for piece in [*filter(None, pieces), b""]:
        for sse in parser.feed(piece) if piece else parser.close():
            event = decode_response_event(sse)
            if event is not None:
                acc.add(event)
    assert acc.done
    assert acc.response() == _run(events).response()


def test_items_that_start_with_content_and_unknown_items() -> None:
    seeded = {
        "type": "message",
        "id": "msg_0",
        "content": [
            {"type": "output_text", "text": "Hello"},
            {"type": "output_audio", "data": "AA"},
        ],
    }
    reasoning = {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "s"}],
    }
    search = {"type": "web_search_call", "id": "ws_2", "status": "in_progress"}
    acc = _run(
        [
            _added(0, seeded),
            _added(1, reasoning),
            _added(2, search),
            {"type": "response.web_search_call.completed", "output_index": 2, "item_id": "ws_2"},
            # A refusal without its content_part.added.
            {
                "type": "response.refusal.delta",
                "output_index": 0,
                "content_index": 2,
                "delta": "No",
            },
        ]
    )
    message, summary, unknown = acc.response().output
    assert isinstance(message, hs.OutputMessage)
    assert message.content == (
        hs.OutputText(text="Hello"),
        hs.UnknownContentPart(type="output_audio"),
        hs.OutputRefusal(refusal="No"),
    )
    assert summary == hs.ReasoningItem(id="rs_1", summary=("s",))
    assert unknown == hs.UnknownOutputItem(type="web_search_call", id="ws_2")
    assert acc.terminal is None


def test_argument_and_final_form_disagreements_are_reported() -> None:
    call = {
        "type": "function_call",
        "id": "fc_0",
        "call_id": "call_0",
        "name": "f",
        "arguments": "",
    }
    done_call = call | {"arguments": '{"a": 1}'}
    acc = _run(
        [
            _added(0, call),
            {"type": "response.function_call_arguments.delta", "output_index": 0, "delta": '{"a"'},
            {
                "type": "response.function_call_arguments.done",
                "output_index": 0,
                "arguments": '{"a": 1}',
            },
            {"type": "response.output_item.done", "output_index": 0, "item": done_call},
            _completed([call | {"arguments": '{"a": 2}'}]),
        ]
    )
    mismatches = " | ".join(acc.mismatches())
    assert "the deltas said '{\"a\"'" in mismatches
    assert "output_item.done and the terminal response differ" in mismatches
    assert acc.response().function_calls[0].arguments == '{"a": 2}'  # the terminal wins
    message = {"type": "message", "id": "msg_0", "content": []}
    acc = _run([_added(0), _text_delta("x"), _completed([message])])
    assert "lacks it" in acc.mismatches()[0]
