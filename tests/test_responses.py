# Tests of the Responses API value types: events by type, the response object, shape checks.
from __future__ import annotations

from typing import Any

import attrs
import pytest
import responses_vectors as vectors

import holysheep_trio as hs

EVENT_CLASSES = {
    "response.created": hs.ResponseCreated,
    "response.in_progress": hs.ResponseInProgress,
    "response.queued": hs.ResponseQueued,
    "response.output_item.added": hs.OutputItemAdded,
    "response.output_item.done": hs.OutputItemDone,
    "response.content_part.added": hs.ContentPartAdded,
    "response.content_part.done": hs.ContentPartDone,
    "response.output_text.delta": hs.OutputTextDelta,
    "response.output_text.done": hs.OutputTextDone,
    "response.refusal.delta": hs.RefusalDelta,
    "response.refusal.done": hs.RefusalDone,
    "response.function_call_arguments.delta": hs.FunctionCallArgumentsDelta,
    "response.function_call_arguments.done": hs.FunctionCallArgumentsDone,
    "response.reasoning_summary_part.added": hs.ReasoningSummaryPartAdded,
    "response.reasoning_summary_part.done": hs.ReasoningSummaryPartDone,
    "response.reasoning_summary_text.delta": hs.ReasoningSummaryTextDelta,
    "response.reasoning_summary_text.done": hs.ReasoningSummaryTextDone,
    "response.reasoning_text.delta": hs.ReasoningTextDelta,
    "response.reasoning_text.done": hs.ReasoningTextDone,
    "response.reasoning_part.added": hs.ContentPartAdded,
    "response.reasoning_part.done": hs.ContentPartDone,
    "response.completed": hs.ResponseCompleted,
    "response.incomplete": hs.ResponseIncomplete,
    "response.failed": hs.ResponseFailed,
    "error": hs.ResponseErrorEvent,
}


def _all_recorded_events() -> list[dict[str, Any]]:
    events = [event for stream in vectors.GOOD_STREAMS.values() for event in stream]
    return events + vectors.FAILED_AFTER_OUTPUT + vectors.ERROR_EVENT


def test_every_listed_type_is_typed() -> None:
    seen = set()
    for payload in _all_recorded_events():
        event = hs.ResponseEvent.from_json(payload)
        kind = payload["type"]
        expected = EVENT_CLASSES.get(kind, hs.UnknownResponseEvent)
        if kind == "response.done":
            expected = hs.ResponseCompleted
        assert type(event) is expected, kind
        assert event.type == kind
        assert event.sequence_number == payload.get("sequence_number")
        seen.add(kind)
    # The recorded streams cover every type but the queued event, built here.
    queued = hs.ResponseEvent.from_json(
        {"type": "response.queued", "sequence_number": 0, "response": {"status": "queued"}}
    )
    assert isinstance(queued, hs.ResponseQueued)
    assert queued.response.status == "queued"
    assert seen | {"response.queued"} >= set(EVENT_CLASSES)


def test_output_text_delta() -> None:
    payload = vectors.OPENAI_TEXT[4]
    event = hs.ResponseEvent.from_json(payload)
    assert event == hs.OutputTextDelta(
        type="response.output_text.delta",
        sequence_number=4,
        delta="In",
        item_id=vectors.MSG_ID,
        output_index=0,
        content_index=0,
    )
    assert event.is_output
    assert not event.is_terminal
    assert event.usage is None
    assert hash(event) == hash(hs.ResponseEvent.from_json(payload))


def test_is_output_and_is_terminal() -> None:
    outputs = set()
    terminals = set()
    for payload in _all_recorded_events():
        event = hs.ResponseEvent.from_json(payload)
        if event.is_output:
            outputs.add(type(event))
        if event.is_terminal:
            terminals.add(type(event))
    assert outputs == {
        hs.OutputTextDelta,
        hs.OutputTextDone,
        hs.RefusalDelta,
        hs.RefusalDone,
        hs.FunctionCallArgumentsDelta,
        hs.FunctionCallArgumentsDone,
        hs.ReasoningSummaryTextDelta,
        hs.ReasoningSummaryTextDone,
        hs.ReasoningTextDelta,
        hs.ReasoningTextDone,
    }
    assert terminals == {hs.ResponseCompleted, hs.ResponseIncomplete, hs.ResponseFailed}
    empty = hs.ResponseEvent.from_json(
        {"type": "response.output_text.delta", "output_index": 0, "delta": ""}
    )
    assert not empty.is_output  # an empty delta is no first token


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        ("completed", hs.ResponseCompleted),
        (None, hs.ResponseCompleted),
        ("incomplete", hs.ResponseIncomplete),
        ("failed", hs.ResponseFailed),
    ],
)
def test_response_done_is_the_terminal_its_status_names(status: str | None, cls: type) -> None:
    event = hs.ResponseEvent.from_json(
        {
            "type": "response.done",
            "response": vectors.response_object(status or "completed") | {"status": status},
        }
    )
    assert type(event) is cls
    assert event.type == "response.done"
    assert event.is_terminal


def test_terminal_event_carries_usage() -> None:
    event = hs.ResponseEvent.from_json(vectors.OPENAI_REASONING[-1])
    assert event.usage == hs.ResponseUsage(
        input_tokens=17,
        output_tokens=380,
        total_tokens=397,
        input_tokens_details=hs.InputTokensDetails(cached_tokens=0),
        output_tokens_details=hs.OutputTokensDetails(reasoning_tokens=320),
    )


def test_unknown_types_are_delivered_not_errors() -> None:
    payload = {
        "type": "response.code_interpreter_call_code.delta",
        "sequence_number": 9,
        "delta": "print(1)",
        "output_index": 3,
    }
    event = hs.ResponseEvent.from_json(payload)
    assert isinstance(event, hs.UnknownResponseEvent)
    assert (event.type, event.sequence_number) == ("response.code_interpreter_call_code.delta", 9)
    assert dict(event.payload) == payload
    assert not event.is_output
    hash(event)  # usable in sets, although it keeps the JSON
    # No type at all: the SSE event name is used, else "".
    assert hs.ResponseEvent.from_json({}, event_name="ping").type == "ping"
    assert hs.ResponseEvent.from_json({"sequence_number": "x"}).type == ""


@pytest.mark.parametrize(
    ("payload", "code", "message", "param", "error_type"),
    [
        (  # OpenAI's documented shape
            {
                "type": "error",
                "code": "ERR_SOMETHING",
                "message": "Something went wrong",
                "param": None,
            },
            "ERR_SOMETHING",
            "Something went wrong",
            None,
            None,
        ),
        (  # nested, as some servers send it
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": "previous_response_not_found",
                    "message": "Previous response with id 'resp_x' not found.",
                    "param": "previous_response_id",
                },
            },
            "previous_response_not_found",
            "Previous response with id 'resp_x' not found.",
            "previous_response_id",
            "invalid_request_error",
        ),
        (  # chat-style error data without a type
            {"error": {"message": "upstream failed", "code": 502}},
            "502",
            "upstream failed",
            None,
            None,
        ),
        (  # vLLM's flat error object
            {"object": "error", "message": "bad input", "type": "BadRequestError", "code": 400},
            "400",
            "bad input",
            None,
            "BadRequestError",
        ),
        ({"error": "plain"}, None, "plain", None, None),
    ],
    ids=["openai", "nested", "chat-style", "vllm", "string"],
)
def test_error_event_shapes(
    payload: dict[str, Any],
    code: str | None,
    message: str,
    param: str | None,
    error_type: str | None,
) -> None:
    event = hs.ResponseEvent.from_json(payload)
    assert isinstance(event, hs.ResponseErrorEvent)
    assert (event.code, event.message, event.param, event.error_type) == (
        code,
        message,
        param,
        error_type,
    )
    assert event.type == "error"


def test_response_object() -> None:
    response = hs.Response.from_json(vectors.OPENAI_TOOLS[-1]["response"])
    assert response.id == vectors.TOOLS_RESPONSE_ID
    assert response.status == "completed"
    assert response.model == vectors.MODEL
    assert response.created_at == 1741476542.0
    assert response.output_text == ""
    assert [call.arguments for call in response.function_calls] == [
        vectors.ARGS_PARIS,
        vectors.ARGS_TOKYO,
    ]
    call = response.function_calls[0]
    assert (call.call_id, call.name, call.status) == (
        "call_0a9XkPqR7sT2uV4wY6zB8cD",
        "get_weather",
        "completed",
    )
    reasoning = hs.Response.from_json(vectors.OPENAI_REASONING[-1]["response"])
    item, message = reasoning.output
    assert isinstance(item, hs.ReasoningItem)
    assert item.summary == (vectors.SUMMARY,)
    assert item.encrypted_content == "gAAAAABodsgE8Ay5hNnYSbKTWk"
    assert isinstance(message, hs.OutputMessage)
    assert message.text == reasoning.output_text == vectors.ANSWER
    assert message.refusal is None


def test_output_items_and_parts() -> None:
    refusal = hs.Response.from_json(vectors.OPENAI_REFUSAL[-1]["response"])
    (message,) = refusal.output
    assert isinstance(message, hs.OutputMessage)
    assert message.content == (hs.OutputRefusal(refusal=vectors.REFUSAL),)
    assert message.refusal == vectors.REFUSAL
    assert message.text == ""
    unknown = hs.Response.from_json(
        {
            "output": [
                {"type": "web_search_call", "id": "ws_1", "status": "completed"},
                {
                    "type": "message",
                    "id": "m",
                    "content": [
                        {"type": "output_audio", "data": "AAA"},
                        {"type": "output_text", "text": "x"},
                    ],
                },
            ]
        }
    )
    search, message = unknown.output
    assert search == hs.UnknownOutputItem(type="web_search_call", id="ws_1")
    assert search.payload["status"] == "completed"
    assert isinstance(message, hs.OutputMessage)
    assert message.content[0] == hs.UnknownContentPart(type="output_audio")
    assert unknown.output_text == "x"


def test_incomplete_and_failed_details() -> None:
    incomplete = hs.ResponseEvent.from_json(vectors.OPENAI_INCOMPLETE[-1])
    assert isinstance(incomplete, hs.ResponseIncomplete)
    assert incomplete.response.incomplete_details == hs.IncompleteDetails(
        reason="max_output_tokens"
    )
    failed = hs.ResponseEvent.from_json(vectors.FAILED_AFTER_OUTPUT[-1])
    assert isinstance(failed, hs.ResponseFailed)
    assert failed.response.error == hs.ResponseError(
        code="server_error", message="The model produced invalid content."
    )


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (
            {"type": "response.output_text.delta", "output_index": 0, "delta": 5},
            "'delta' is not a string",
        ),
        ({"type": "response.output_text.delta", "output_index": 0}, "'delta' is missing"),
        ({"type": "response.output_text.delta", "delta": "x"}, "'output_index' is missing"),
        ({"type": "response.output_text.delta", "delta": "x", "output_index": -1}, "not an index"),
        (
            {"type": "response.output_text.delta", "delta": "x", "output_index": True},
            "not an index",
        ),
        (
            {
                "type": "response.output_text.delta",
                "delta": "x",
                "output_index": 0,
                "sequence_number": "1",
            },
            "'sequence_number' is not an integer",
        ),
        ({"type": "response.output_text.done", "output_index": 0}, "'text' is missing"),
        ({"type": "response.refusal.done", "output_index": 0, "text": "x"}, "'refusal' is missing"),
        (
            {"type": "response.function_call_arguments.done", "output_index": 0},
            "'arguments' is missing",
        ),
        (
            {"type": "response.output_item.added", "output_index": 0, "item": []},
            "output item is not an object",
        ),
        (
            {"type": "response.output_item.added", "output_index": 0, "item": {"type": 5}},
            "'type' is not a string",
        ),
        (
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {"type": "message", "content": {}},
            },
            "'content' is not a list",
        ),
        (
            {"type": "response.content_part.added", "output_index": 0, "part": "x"},
            "content part is not an object",
        ),
        ({"type": "response.completed", "response": []}, "response is not an object"),
        (
            {"type": "response.completed", "response": {"usage": {"input_tokens": "3"}}},
            "'input_tokens'",
        ),
        (
            {"type": "response.completed", "response": {"created_at": "now"}},
            "'created_at' is not a number",
        ),
        ({"type": "response.completed", "response": {"error": "x"}}, "error is not an object"),
        (
            {
                "type": "response.completed",
                "response": {"output": [{"type": "reasoning", "summary": ["x"]}]},
            },
            "an entry of 'summary' is not an object",
        ),
        (
            {"type": "response.reasoning_summary_part.added", "output_index": 0, "part": 3},
            "'part' is not an object",
        ),
    ],
)
def test_bad_shapes_name_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(hs.StreamProtocolError) as info:
        hs.ResponseEvent.from_json(payload)
    assert info.value.message.startswith("unexpected response event shape: ")
    assert field in info.value.message
    assert info.value.kind == "parse"


def test_values_are_frozen() -> None:
    event = hs.ResponseEvent.from_json(vectors.OPENAI_TEXT[4])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.delta = "x"  # type: ignore[misc]
    response = hs.Response(id="r")
    assert attrs.evolve(response, ttft=0.5).ttft == 0.5
