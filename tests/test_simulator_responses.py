# The simulator's Responses API and the reply generator it shares with chat: events, tools, JSON.
from __future__ import annotations

import json
import random
import re
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Literal

import attrs
import httpx2
import pydantic
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from holysheep_trio.simulator import Simulator, fast_profile, open_simulator
from holysheep_trio.simulator._reply import ReplySpec, Tool, plan_reply
from holysheep_trio.simulator._responses import (
    ResponseBuilder,
    ResponseFrames,
    ResponsesRequest,
    ResponseStore,
    cached_tokens,
)
from holysheep_trio.simulator._schema import split_pieces, value_for_schema
from holysheep_trio.simulator._wire import (
    ChatFrames,
    ChatRequest,
    ChatTextFrames,
    ChunkEncoder,
)

API_KEY = "sk-test-responses"
AUTH = {"authorization": f"Bearer {API_KEY}"}
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "hourly": {"type": "boolean"},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "name": "get_weather", "parameters": WEATHER},
    {
        "type": "function",
        "name": "count_sheep",
        "parameters": {
            "type": "object",
            "properties": {"meadow": {"type": "string"}, "exact": {"type": "boolean"}},
            "required": ["meadow"],
        },
    },
]
CHAT_TOOLS = [
    {"type": "function", "function": {"name": tool["name"], "parameters": tool["parameters"]}}
    for tool in TOOLS
]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with open_simulator(api_key=API_KEY, profile="fast") as simulator:
        yield simulator
        assert simulator.stats().internal_errors == 0


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=None) as http:
        yield http


def parse_events(body: bytes) -> list[dict[str, Any]]:
    """Split a Responses API event stream; asserts the framing is what OpenAI sends."""
    assert body.endswith(b"\n\n")
    events = []
    for block in body.decode().split("\n\n")[:-1]:
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ")
        assert data_line.startswith("data: ")
        event = json.loads(data_line[len("data: ") :])
        assert event["type"] == event_line[len("event: ") :]
        events.append(event)
    return events


async def stream_response(
    client: httpx2.AsyncClient, fault: str | None = None, **body: Any
) -> list[dict[str, Any]]:
    payload = {"model": "gpt-4.1", "input": "Tell me about sheep.", "stream": True, **body}
    headers = {"x-simulator-fault": fault} if fault else {}
    response = await client.post("/responses", json=payload, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert b"[DONE]" not in response.content
    return parse_events(response.content)


def check_invariants(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What holds for every complete stream; returns the terminal response."""
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    terminals = [
        event
        for event in events
        if event["type"] in ("response.completed", "response.incomplete", "response.failed")
    ]
    assert terminals == [events[-1]]  # one terminal event, and it is last
    final: dict[str, Any] = events[-1]["response"]
    assert final["id"].startswith("resp_")
    assert all(event["response"]["id"] == final["id"] for event in events if "response" in event)
    assert events[0]["type"] == "response.created"
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["output"] == []
    assert events[1]["type"] == "response.in_progress"
    # Rebuild the output from the deltas; it must equal the terminal response's output.
    items: dict[int, dict[str, Any]] = {}
    for event in events:
        kind = event["type"]
        if kind == "response.output_item.added":
            assert event["output_index"] not in items
            items[event["output_index"]] = {"item": event["item"], "text": "", "summary": ""}
        elif kind in ("response.output_text.delta", "response.function_call_arguments.delta"):
            items[event["output_index"]]["text"] += event["delta"]
        elif kind == "response.reasoning_summary_text.delta":
            items[event["output_index"]]["summary"] += event["delta"]
        elif kind == "response.output_text.done":
            assert event["text"] == items[event["output_index"]]["text"]
        elif kind == "response.function_call_arguments.done":
            assert event["arguments"] == items[event["output_index"]]["text"]
        elif kind == "response.reasoning_summary_text.done":
            assert event["text"] == items[event["output_index"]]["summary"]
        elif kind == "response.output_item.done":
            items[event["output_index"]]["done"] = event["item"]
    assert sorted(items) == list(range(len(items)))
    assert final["output"] == [items[index]["done"] for index in sorted(items)]
    for index, seen in items.items():
        item = final["output"][index]
        if item["type"] == "message":
            assert item["id"].startswith("msg_")
            assert item["content"][0]["text"] == seen["text"]
        elif item["type"] == "function_call":
            assert item["id"].startswith("fc_")
            assert item["call_id"].startswith("call_")
            assert item["arguments"] == seen["text"]
        else:
            assert item["type"] == "reasoning"
            assert item["id"].startswith("rs_")
            assert "".join(part["text"] for part in item["summary"]) == seen["summary"]
    usage = final["usage"]
    units = len([event for event in events if event["type"].endswith(".delta")])
    reasoning = usage["output_tokens_details"]["reasoning_tokens"]
    summary_units = len(
        [event for event in events if event["type"] == "response.reasoning_summary_text.delta"]
    )
    assert usage["output_tokens"] == units + reasoning - summary_units
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert set(usage["input_tokens_details"]) >= {"cached_tokens"}
    return final


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"].removeprefix("response.") for event in events]


# ---- text ----------------------------------------------------------------------------------


async def test_a_text_reply_streams_in_the_apis_event_order(
    sim: Simulator, client: httpx2.AsyncClient
) -> None:
    events = await stream_response(client)
    deltas = [event for event in events if event["type"] == "response.output_text.delta"]
    assert types(events) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        *["output_text.delta"] * len(deltas),
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    final = check_invariants(events)
    assert len(deltas) == 64  # the fast profile's natural length
    assert final["status"] == "completed"
    assert final["model"] == "gpt-4.1-2025-04-14"
    assert final["incomplete_details"] is None
    assert final["output"][0]["status"] == "completed"
    message = events[2]["item"]
    assert message == {
        "id": message["id"],
        "type": "message",
        "status": "in_progress",
        "content": [],
        "role": "assistant",
    }
    for delta in deltas:
        assert set(delta) == {
            "type",
            "item_id",
            "output_index",
            "content_index",
            "delta",
            "logprobs",
            "sequence_number",
        }
        assert delta["item_id"] == message["id"]
    stats = sim.stats()
    assert stats.requests["gpt-4.1"] == 1
    assert stats.requests_by_endpoint["responses"] == 1
    assert stats.completion_tokens["gpt-4.1"] == 64
    assert stats.prompt_tokens["gpt-4.1"] == final["usage"]["input_tokens"]


async def test_a_whole_response_is_the_streams_terminal_response(
    client: httpx2.AsyncClient,
) -> None:
    streamed = check_invariants(await stream_response(client, instructions="Be brief."))
    response = await client.post(
        "/responses",
        json={"model": "gpt-4.1", "input": "Tell me about sheep.", "instructions": "Be brief."},
    )
    assert response.headers["content-type"] == "application/json"
    whole = response.json()
    assert whole["object"] == "response"
    assert whole["instructions"] == "Be brief."

    def without_ids(response: dict[str, Any]) -> dict[str, Any]:
        copy = {key: value for key, value in response.items() if key not in ("id",)}
        copy["output"] = [{**item, "id": None} for item in response["output"]]
        copy["created_at"] = copy["completed_at"] = None
        return copy

    assert without_ids(whole) == without_ids(streamed)


async def test_input_items_and_instructions_count_as_input_tokens(
    client: httpx2.AsyncClient,
) -> None:
    async def input_tokens(**body: Any) -> int:
        response = await client.post("/responses", json={"model": "gpt-4.1", **body})
        assert response.status_code == 200, response.text
        tokens: int = response.json()["usage"]["input_tokens"]
        return tokens

    base = await input_tokens(input="abcd")
    assert base == 3 + 4 + 1
    assert await input_tokens(input=[{"role": "user", "content": "abcd"}]) == base
    parts = [{"role": "user", "content": [{"type": "input_text", "text": "abcd"}]}]
    assert await input_tokens(input=parts) == base
    assert await input_tokens(input="abcd", instructions="x" * 8) == base + 4 + 2
    with_tools = await input_tokens(input="abcd", tools=TOOLS)
    assert with_tools > base + 50


# ---- tool calls ----------------------------------------------------------------------------


def check_weather(arguments: str) -> None:
    value = json.loads(arguments)
    assert set(value) >= {"city", "unit", "days"}
    assert set(value) <= set(WEATHER["properties"])  # type: ignore[arg-type]
    assert isinstance(value["city"], str)
    assert len(value["city"]) >= 2
    assert value["unit"] in ("celsius", "fahrenheit")
    assert isinstance(value["days"], int)
    assert not isinstance(value["days"], bool)
    assert 1 <= value["days"] <= 7


async def test_a_required_tool_call_streams_its_arguments_in_pieces(
    client: httpx2.AsyncClient,
) -> None:
    events = await stream_response(client, tools=TOOLS, tool_choice="required")
    final = check_invariants(events)
    assert {item["type"] for item in final["output"]} == {"function_call"}
    for index, item in enumerate(final["output"]):
        pieces = [
            event
            for event in events
            if event["type"] == "response.function_call_arguments.delta"
            and event["output_index"] == index
        ]
        assert len(pieces) > 3  # streamed in pieces
        if item["name"] == "get_weather":
            check_weather(item["arguments"])
        else:
            assert isinstance(json.loads(item["arguments"])["meadow"], str)
        assert item["status"] == "completed"
    assert types(events)[2:5] == [
        "output_item.added",
        "function_call_arguments.delta",
        "function_call_arguments.delta",
    ]
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["name"] == final["output"][0]["name"]


async def test_a_named_tool_choice_calls_exactly_that_function(client: httpx2.AsyncClient) -> None:
    for seed in range(10):
        events = await stream_response(
            client,
            input=f"question {seed}",
            tools=TOOLS,
            tool_choice={"type": "function", "name": "get_weather"},
        )
        (call,) = check_invariants(events)["output"]
        assert call["name"] == "get_weather"
        check_weather(call["arguments"])


async def test_auto_tool_choice_is_seeded_per_request(client: httpx2.AsyncClient) -> None:
    outcomes = []
    for seed in range(16):
        response = await client.post(
            "/responses",
            json={"model": "gpt-4.1", "input": f"question {seed}", "tools": TOOLS},
        )
        kinds = {item["type"] for item in response.json()["output"]}
        outcomes.append(kinds)
        again = await client.post(
            "/responses",
            json={"model": "gpt-4.1", "input": f"question {seed}", "tools": TOOLS},
        )
        assert {item["type"] for item in again.json()["output"]} == kinds
    assert {"message"} in outcomes
    assert {"function_call"} in outcomes
    # Answering a tool result, "auto" replies in text: tool loops end.
    for seed in range(8):
        result = [
            {"role": "user", "content": f"question {seed}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        ]
        response = await client.post(
            "/responses", json={"model": "gpt-4.1", "input": result, "tools": TOOLS}
        )
        assert [item["type"] for item in response.json()["output"]] == ["message"]


async def test_parallel_tool_calls_false_makes_one_call(client: httpx2.AsyncClient) -> None:
    counts = set()
    for seed in range(12):
        body = {"input": f"q{seed}", "tools": TOOLS, "tool_choice": "required"}
        parallel = check_invariants(await stream_response(client, **body))
        counts.add(len(parallel["output"]))
        single = check_invariants(await stream_response(client, parallel_tool_calls=False, **body))
        assert len(single["output"]) == 1
        assert single["parallel_tool_calls"] is False
    assert counts == {1, 2}  # "one or more" when parallel calls are allowed


async def test_chat_tool_calls_stream_as_tool_call_deltas(client: httpx2.AsyncClient) -> None:
    body = {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": CHAT_TOOLS,
        "tool_choice": "required",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = await client.post("/chat/completions", json=body)
    chunks = [
        json.loads(line[6:]) for line in response.text.split("\n\n") if line.startswith("data: {")
    ]
    role = chunks[0]["choices"][0]["delta"]
    assert role == {"role": "assistant", "content": None, "refusal": None}
    calls: dict[int, dict[str, str]] = {}
    argument_deltas = 0
    for chunk in chunks[1:-2]:
        (piece,) = chunk["choices"][0]["delta"]["tool_calls"]
        if "id" in piece:
            assert piece["id"].startswith("call_")
            assert piece["type"] == "function"
            calls[piece["index"]] = {"name": piece["function"]["name"], "arguments": ""}
        else:
            calls[piece["index"]]["arguments"] += piece["function"]["arguments"]
            argument_deltas += 1
    assert sorted(calls) == list(range(len(calls)))
    for call in calls.values():
        if call["name"] == "get_weather":
            check_weather(call["arguments"])
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == argument_deltas
    whole = await client.post("/chat/completions", json={**body, "stream": False})
    message = whole.json()["choices"][0]["message"]
    assert message["content"] is None
    assert [call["function"]["arguments"] for call in message["tool_calls"]] == [
        call["arguments"] for call in calls.values()
    ]
    assert whole.json()["choices"][0]["finish_reason"] == "tool_calls"


# ---- structured output ---------------------------------------------------------------------


class Shepherd(pydantic.BaseModel):
    name: str
    years: int
    rating: float


class Flock(pydantic.BaseModel):
    shepherd: Shepherd
    sheep: list[str]
    kind: Literal["merino", "suffolk"]
    counted: bool
    note: str | None


def strict_schema() -> dict[str, Any]:
    schema = Flock.model_json_schema()
    for definition in [schema, *schema.get("$defs", {}).values()]:
        definition["additionalProperties"] = False
    return schema


async def test_responses_json_schema_output_is_valid_json_for_the_schema(
    client: httpx2.AsyncClient,
) -> None:
    text = {"format": {"type": "json_schema", "name": "flock", "schema": strict_schema()}}
    for seed in range(8):
        events = await stream_response(client, input=f"flock {seed}", text=text)
        final = check_invariants(events)
        deltas = [e for e in events if e["type"] == "response.output_text.delta"]
        assert len(deltas) > 5
        Flock.model_validate_json(final["output"][0]["content"][0]["text"])
        assert final["text"]["format"]["name"] == "flock"
    events = await stream_response(client, text={"format": {"type": "json_object"}})
    value = json.loads(check_invariants(events)["output"][0]["content"][0]["text"])
    assert isinstance(value, dict)


async def test_chat_response_format_gives_valid_json(client: httpx2.AsyncClient) -> None:
    body = {
        "model": "deepseek-v3.2",
        "messages": [{"role": "user", "content": "a flock"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "flock", "schema": strict_schema(), "strict": True},
        },
        "stream": True,
    }
    response = await client.post("/chat/completions", json=body)
    pieces = [
        json.loads(line[6:])["choices"][0]["delta"].get("content")
        for line in response.text.split("\n\n")
        if line.startswith("data: {")
    ]
    text = "".join(piece or "" for piece in pieces)
    Flock.model_validate_json(text)
    assert len([piece for piece in pieces if piece]) > 5
    whole = await client.post("/chat/completions", json={**body, "stream": False})
    assert whole.json()["choices"][0]["message"]["content"] == text


async def test_json_cut_by_max_tokens_says_so(client: httpx2.AsyncClient) -> None:
    body = {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "a flock"}],
        "response_format": {"type": "json_object"},
        "max_tokens": 3,
    }
    response = await client.post("/chat/completions", json=body)
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert response.json()["usage"]["completion_tokens"] == 3
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice["message"]["content"])


# ---- reasoning -----------------------------------------------------------------------------


async def test_a_reasoning_reply_with_a_summary(client: httpx2.AsyncClient) -> None:
    events = await stream_response(
        client, model="deepseek-v3.2", reasoning={"effort": "high", "summary": "auto"}
    )
    final = check_invariants(events)
    summary = len([e for e in events if e["type"] == "response.reasoning_summary_text.delta"])
    assert types(events)[:5] == [
        "created",
        "in_progress",
        "output_item.added",
        "reasoning_summary_part.added",
        "reasoning_summary_text.delta",
    ]
    after = types(events)[4 + summary :]
    assert after[:4] == [
        "reasoning_summary_text.done",
        "reasoning_summary_part.done",
        "output_item.done",
        "output_item.added",
    ]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert 16 <= summary <= 40
    reasoning = final["usage"]["output_tokens_details"]["reasoning_tokens"]
    assert 256 <= reasoning <= 640
    assert final["reasoning"] == {"effort": "high", "summary": "auto"}


async def test_hidden_reasoning_has_an_item_but_no_summary_events(
    sim: Simulator, client: httpx2.AsyncClient
) -> None:
    events = await stream_response(client, reasoning={"effort": "low"})
    final = check_invariants(events)
    assert types(events)[2:5] == ["output_item.added", "output_item.done", "output_item.added"]
    assert final["output"][0] == {
        "id": final["output"][0]["id"],
        "type": "reasoning",
        "summary": [],
    }
    reasoning = final["usage"]["output_tokens_details"]["reasoning_tokens"]
    assert 32 <= reasoning <= 96
    # Hidden reasoning is billed, before the first visible token.
    assert sim.stats().completion_tokens["gpt-4.1"] == final["usage"]["output_tokens"]


async def test_reasoning_takes_time_before_the_first_token(autojump_clock: MockClock) -> None:
    async with (
        open_simulator(api_key=API_KEY) as sim,
        httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=None) as http,
    ):
        body = {"model": "gemini-2.5-flash", "input": "hi", "stream": True}
        times: dict[str, float] = {}
        for effort in (None, "high"):
            start = trio.current_time()
            payload = {**body, "reasoning": {"effort": effort}}
            async with http.stream("POST", "/responses", json=payload) as response:
                async for line in response.aiter_lines():
                    if line.startswith("event: response.created"):
                        times[f"{effort}-created"] = trio.current_time() - start
                    if line.startswith("event: response.output_text.delta"):
                        times.setdefault(f"{effort}-first", trio.current_time() - start)
        # `response.created` goes out at once; thinking 256-640 tokens at ~45/s comes on top.
        assert times["None-created"] == times["high-created"] == 0
        assert times["high-first"] - times["None-first"] > 256 / 45 / 2


async def test_chat_reasoning_effort_streams_deepseek_reasoning_content(
    client: httpx2.AsyncClient,
) -> None:
    body = {
        "model": "deepseek-v3.2",
        "messages": [{"role": "user", "content": "think"}],
        "reasoning_effort": "low",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = await client.post("/chat/completions", json=body)
    chunks = [
        json.loads(line[6:]) for line in response.text.split("\n\n") if line.startswith("data: {")
    ]
    reasoning = [
        chunk["choices"][0]["delta"]["reasoning_content"]
        for chunk in chunks
        if chunk["choices"] and "reasoning_content" in chunk["choices"][0]["delta"]
    ]
    content = [
        chunk["choices"][0]["delta"]["content"]
        for chunk in chunks[1:]
        if chunk["choices"] and "content" in chunk["choices"][0]["delta"]
    ]
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == len(reasoning)
    assert usage["completion_tokens"] == len(reasoning) + len(content)
    first_content = next(
        i for i, c in enumerate(chunks[1:]) if "content" in c["choices"][0]["delta"]
    )
    assert first_content == len(reasoning)  # reasoning first, then the answer
    whole = await client.post("/chat/completions", json={**body, "stream": False})
    assert whole.json()["choices"][0]["message"]["reasoning_content"] == "".join(reasoning)


# ---- n > 1 ---------------------------------------------------------------------------------


async def test_chat_n_gives_n_interleaved_choices(client: httpx2.AsyncClient) -> None:
    body = {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "three ways"}],
        "n": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = await client.post("/chat/completions", json=body)
    chunks = [
        json.loads(line[6:]) for line in response.text.split("\n\n") if line.startswith("data: {")
    ]
    texts = {0: "", 1: "", 2: ""}
    finishes = {}
    order = []
    for chunk in chunks[:-1]:
        (choice,) = chunk["choices"]
        texts[choice["index"]] += choice["delta"].get("content") or ""
        order.append(choice["index"])
        if choice["finish_reason"]:
            finishes[choice["index"]] = choice["finish_reason"]
    assert order[:6] == [0, 0, 1, 1, 2, 2]  # each choice's role chunk, then a token, in turn
    assert finishes == {0: "stop", 1: "stop", 2: "stop"}
    assert len(set(texts.values())) == 3
    whole = await client.post("/chat/completions", json={**body, "stream": False})
    payload = whole.json()
    assert [choice["index"] for choice in payload["choices"]] == [0, 1, 2]
    assert [choice["message"]["content"] for choice in payload["choices"]] == list(texts.values())
    assert chunks[-1]["usage"] == payload["usage"]
    assert payload["usage"]["completion_tokens"] == 3 * 64


# ---- previous_response_id and the store ----------------------------------------------------


async def test_a_chain_carries_its_input_as_prompt_tokens(
    sim: Simulator, client: httpx2.AsyncClient
) -> None:
    first = (await client.post("/responses", json={"model": "gpt-4.1", "input": "One"})).json()
    second = (
        await client.post(
            "/responses",
            json={"model": "gpt-4.1", "input": "Two", "previous_response_id": first["id"]},
        )
    ).json()
    own = 3 + 4 + 1
    assert second["previous_response_id"] == first["id"]
    assert second["usage"]["input_tokens"] == first["usage"]["total_tokens"] + own
    assert sim.stats().prompt_tokens["gpt-4.1"] == (
        first["usage"]["input_tokens"] + second["usage"]["input_tokens"]
    )
    # A long chain is served from the prompt cache, in blocks of 128 tokens.
    response = second
    for turn in range(20):
        response = (
            await client.post(
                "/responses",
                json={
                    "model": "gpt-4.1",
                    "input": f"turn {turn}",
                    "previous_response_id": response["id"],
                },
            )
        ).json()
    details = response["usage"]["input_tokens_details"]
    assert response["usage"]["input_tokens"] > 1024
    assert details["cached_tokens"] == cached_tokens(response["usage"]["input_tokens"] - own - 1)
    assert details["cached_tokens"] % 128 == 0
    assert details["cached_tokens"] > 1024


async def test_unknown_or_unstored_previous_response_is_400(client: httpx2.AsyncClient) -> None:
    unstored = (
        await client.post("/responses", json={"model": "gpt-4.1", "input": "x", "store": False})
    ).json()
    assert unstored["store"] is False
    for missing in (unstored["id"], "resp_nope"):
        response = await client.post(
            "/responses",
            json={"model": "gpt-4.1", "input": "y", "previous_response_id": missing},
        )
        assert response.status_code == 400
        assert response.json()["error"] == {
            "message": f"Previous response with id '{missing}' not found.",
            "type": "invalid_request_error",
            "param": "previous_response_id",
            "code": "previous_response_not_found",
        }


async def test_a_failed_or_broken_stream_is_not_stored(
    sim: Simulator, client: httpx2.AsyncClient
) -> None:
    events = await stream_response(client, fault="failed_after=2")
    failed_id = events[-1]["response"]["id"]
    response = await client.post(
        "/responses", json={"model": "gpt-4.1", "input": "y", "previous_response_id": failed_id}
    )
    assert response.json()["error"]["code"] == "previous_response_not_found"
    assert len(sim.responses) == 0


def test_the_store_is_bounded_and_forgets_the_oldest() -> None:
    store = ResponseStore(limit=3)
    for index in range(5):
        store.put(f"resp_{index}", index)
    assert len(store) == 3
    assert store.context_tokens("resp_0") is None
    assert store.context_tokens("resp_2") == 2
    store.put("resp_5", 5)  # resp_2 was just used: resp_3 goes
    assert store.context_tokens("resp_3") is None
    assert store.context_tokens("resp_2") == 2
    store.clear()
    assert len(store) == 0


# ---- max_output_tokens ---------------------------------------------------------------------


async def test_max_output_tokens_makes_the_response_incomplete(
    client: httpx2.AsyncClient,
) -> None:
    events = await stream_response(client, max_output_tokens=20)
    final = check_invariants(events)
    assert events[-1]["type"] == "response.incomplete"
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete"
    assert final["usage"]["output_tokens"] == 20
    assert final["max_output_tokens"] == 20
    # Reasoning can use the whole budget: no message at all.
    events = await stream_response(
        client, max_output_tokens=16, reasoning={"effort": "medium", "summary": "auto"}
    )
    final = check_invariants(events)
    assert [item["type"] for item in final["output"]] == ["reasoning"]
    assert final["status"] == "incomplete"
    # A call cut short is incomplete too.
    fields = {f"field_{index}": {"type": "string", "minLength": 12} for index in range(8)}
    big = {"type": "object", "properties": fields, "required": list(fields)}
    events = await stream_response(
        client,
        max_output_tokens=16,
        tools=[{"type": "function", "name": "fill_form", "parameters": big}],
        tool_choice="required",
    )
    final = check_invariants(events)
    assert final["output"][-1]["status"] == "incomplete"
    assert final["usage"]["output_tokens"] == 16


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"max_output_tokens": 15}, "max_output_tokens", "integer_below_min_value"),
        ({"max_output_tokens": 10**9}, "max_output_tokens", "invalid_value"),
        ({"temperature": 2.5}, "temperature", "decimal_above_max_value"),
        ({"top_p": -0.5}, "top_p", "decimal_below_min_value"),
        ({"tool_choice": "required"}, "tool_choice", "invalid_value"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "name": "nope"}},
            "tool_choice",
            "invalid_value",
        ),
        ({"input": 42}, "input", "invalid_type"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value"),
        (
            {"text": {"format": {"type": "json_schema"}}},
            "text.format.name",
            "missing_required_parameter",
        ),
        ({"reasoning": {"effort": "huge"}}, "reasoning.effort", "invalid_value"),
        ({"reasoning": {"effort": "low", "summary": "long"}}, "reasoning.summary", "invalid_value"),
        ({"store": "yes"}, "store", "invalid_type"),
        ({"previous_response_id": 7}, "previous_response_id", "invalid_type"),
        ({"model": None}, "model", "missing_required_parameter"),
    ],
)
async def test_responses_parameters_are_validated(
    sim: Simulator, client: httpx2.AsyncClient, fields: dict[str, Any], param: str, code: str
) -> None:
    body = {"model": "gpt-4.1", "input": "hi", **fields}
    response = await client.post(
        "/responses", json={k: v for k, v in body.items() if v is not None}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert sum(sim.stats().requests.values()) == 0


async def test_unknown_model_and_capacity_apply_to_responses(
    client: httpx2.AsyncClient, autojump_clock: MockClock
) -> None:
    response = await client.post("/responses", json={"model": "gpt-9", "input": "hi"})
    assert response.status_code == 404
    async with (
        open_simulator(api_key=API_KEY, capacity=1) as sim,
        httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=None) as http,
    ):
        statuses = []

        async def one() -> None:
            reply = await http.post("/responses", json={"model": "gpt-4.1", "input": "hi"})
            statuses.append(reply.status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)
        assert sorted(statuses) == [200, 429, 429]
        assert sim.stats().max_concurrent["gpt-4.1"] == 1


# ---- faults --------------------------------------------------------------------------------


async def test_status_fault_answers_responses_with_the_error(
    sim: Simulator, client: httpx2.AsyncClient
) -> None:
    sim.inject_faults("status=503;retry_after=3", endpoint="responses")
    sim.inject_faults("status=429", endpoint="chat")  # another endpoint's queue: untouched
    response = await client.post("/responses", json={"model": "gpt-4.1", "input": "hi"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["type"] == "server_error"
    assert (await client.post("/responses", json={"model": "gpt-4.1"})).status_code == 200


async def test_disconnect_after_cuts_the_stream_after_n_deltas(
    sim: Simulator, client: httpx2.AsyncClient
) -> None:
    payload = {"model": "gpt-4.1", "input": "hi", "stream": True}
    headers = {"x-simulator-fault": "disconnect_after=5"}
    received = bytearray()

    async def read() -> None:
        async with (
            client.stream("POST", "/responses", json=payload, headers=headers) as response,
            aclosing(response.aiter_raw()) as chunks,
        ):
            async for chunk in chunks:
                received.extend(chunk)

    with pytest.raises(httpx2.TransportError):
        await read()
    events = parse_events(bytes(received))
    assert types(events)[-1] == "output_text.delta"
    assert len([e for e in events if e["type"] == "response.output_text.delta"]) == 5
    assert sim.stats().completion_tokens["gpt-4.1"] == 5


async def test_error_event_after_ends_with_an_error_event(client: httpx2.AsyncClient) -> None:
    events = await stream_response(client, fault="error_event_after=4;status=429")
    assert types(events)[-2:] == ["output_text.delta", "error"]
    assert events[-1] == {
        "type": "error",
        "code": "rate_limit_exceeded",
        "message": "Rate limit reached. Please try again later.",
        "param": None,
        "sequence_number": len(events) - 1,
    }
    events = await stream_response(client, fault="error_event_after=0")
    assert types(events) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "error",
    ]
    assert events[-1]["code"] == "server_error"


async def test_failed_after_ends_with_response_failed_and_the_partial_output(
    client: httpx2.AsyncClient,
) -> None:
    events = await stream_response(client, fault="failed_after=3")
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert types(events)[-1] == "failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "server_error"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    (message,) = failed["output"]
    assert message["status"] == "in_progress"
    assert message["content"][0]["text"] == deltas
    assert len([e for e in events if e["type"] == "response.output_text.delta"]) == 3


async def test_malformed_keepalive_and_oversized_faults_on_responses(
    client: httpx2.AsyncClient, autojump_clock: MockClock
) -> None:
    response = await client.post(
        "/responses",
        json={"model": "gpt-4.1", "input": "hi", "stream": True},
        headers={"x-simulator-fault": "malformed_after=2"},
    )
    blocks = response.text.split("\n\n")
    broken = [block for block in blocks if block.endswith('"type":"response.output_text.delta",')]
    assert len(broken) == 1
    good = "\n\n".join(block for block in blocks if block not in broken)
    check_invariants(parse_events(good.encode()))

    events = await stream_response(client, fault="oversized_event;size=100000")
    padding = [event for event in events if event["type"] == "response.simulator.padding"]
    assert len(padding[0]["padding"]) == 100_000
    assert types(events).index("simulator.padding") == 4  # right after the opening events
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    rest = [event for event in events if event not in padding]
    check_invariants([{**event, "sequence_number": index} for index, event in enumerate(rest)])

    payload = {"model": "gpt-4.1", "input": "hi", "stream": True}
    headers = {"x-simulator-fault": "keepalive_after=1;every=2"}
    pings = 0
    with trio.move_on_after(9):
        async with client.stream("POST", "/responses", json=payload, headers=headers) as reply:
            async for line in reply.aiter_lines():
                pings += line == ": ping"
    assert pings == 4


async def test_stall_after_pauses_a_response_stream(
    client: httpx2.AsyncClient, autojump_clock: MockClock
) -> None:
    payload = {"model": "gpt-4.1", "input": "hi", "stream": True}
    arrivals = []
    headers = {"x-simulator-fault": "stall_after=2;seconds=7"}
    async with client.stream("POST", "/responses", json=payload, headers=headers) as response:
        async for line in response.aiter_lines():
            if line.startswith("event: response.output_text.delta"):
                arrivals.append(trio.current_time())
    assert arrivals[2] - arrivals[1] >= 7
    assert arrivals[1] - arrivals[0] < 1


# ---- the generator, without I/O ------------------------------------------------------------


class Tree(pydantic.BaseModel):
    label: str
    children: list[Tree]


class Mixed(pydantic.BaseModel):
    level: int = pydantic.Field(ge=3, le=5)
    ratio: float = pydantic.Field(gt=0, lt=1)
    code: str = pydantic.Field(min_length=5, max_length=6)
    tags: list[str] = pydantic.Field(min_length=2, max_length=4)
    pair: tuple[int, str]
    choice: Literal["a", "b"] | None
    lookup: dict[str, int]


@pytest.mark.parametrize("model", [Flock, Tree, Mixed])
def test_schema_values_validate_against_the_model(model: type[pydantic.BaseModel]) -> None:
    schema = model.model_json_schema()
    for seed in range(60):
        model.model_validate(value_for_schema(schema, random.Random(seed)))


def test_schema_values_cover_the_keywords_tools_use() -> None:
    def value(schema: Any, seed: int = 0) -> Any:
        return value_for_schema(schema, random.Random(seed))

    assert value({"const": 7}) == 7
    assert value({"enum": ["x"]}) == "x"
    assert value({"type": "string", "format": "date"}) == "2025-04-14"
    for seed in range(30):
        assert 10 < value({"type": "integer", "exclusiveMinimum": 10, "maximum": 12}, seed) <= 12
        assert value({"type": ["null", "boolean"]}, seed) in (True, False)
        merged = value(
            {
                "allOf": [
                    {"properties": {"a": {"type": "integer"}}, "required": ["a"]},
                    {"properties": {"b": {"type": "string"}}, "required": ["b"]},
                ]
            },
            seed,
        )
        assert isinstance(merged["a"], int)
        assert isinstance(merged["b"], str)
        assert len(value({"type": "array", "items": {}, "minItems": 3}, seed)) >= 3
    # No finite instance exists: bounded anyway, rather than a server that never answers.
    endless = {
        "$defs": {
            "n": {
                "type": "object",
                "properties": {"next": {"$ref": "#/$defs/n"}},
                "required": ["next"],
            }
        },
        "$ref": "#/$defs/n",
    }
    depth = 0
    node = value(endless)
    while isinstance(node, dict):
        node = node["next"]
        depth += 1
    assert depth < 30
    value({"$ref": "#"})  # a self-reference terminates too


def test_split_pieces_rejoins_and_stays_small() -> None:
    for seed in range(20):
        text = json.dumps({"seed": seed, "words": ["café", "🐑"] * seed})
        pieces = split_pieces(text, random.Random(seed))
        assert "".join(pieces) == text
        assert all(1 <= len(piece) <= 6 for piece in pieces)


def test_plan_reply_caps_in_order_and_accounts_for_every_token() -> None:
    model = fast_profile().models["gpt-4.1"]
    natural = plan_reply(ReplySpec(seed=1), model)
    assert (natural.message_length, natural.finish_reason) == (64, "stop")
    assert plan_reply(ReplySpec(seed=1, max_tokens=64), model).finish_reason == "stop"
    capped = plan_reply(ReplySpec(seed=1, max_tokens=10), model)
    assert (capped.message_length, capped.finish_reason) == (10, "length")
    assert capped.message_text() == natural.message_text()[: len(capped.message_text())]
    exact = plan_reply(ReplySpec(seed=1, max_tokens=100, reply_tokens="max"), model)
    assert (exact.message_length, exact.finish_reason) == (100, "length")
    thinking = plan_reply(
        ReplySpec(seed=1, max_tokens=100, reasoning_effort="low", reasoning_shown="summary"),
        model,
    )
    assert thinking.output_tokens == thinking.reasoning_tokens + thinking.message_length
    assert thinking.output_tokens <= 100
    tools = (Tool(name="f", parameters=WEATHER),)
    calling = plan_reply(ReplySpec(seed=1, tools=tools, tool_choice="required"), model)
    assert calling.finish_reason == "tool_calls"
    assert not calling.has_message
    assert calling.units == sum(len(call.pieces) for call in calling.calls)
    assert plan_reply(ReplySpec(seed=1, tools=tools, tool_choice="none"), model).calls == ()
    # Same spec, same reply; another choice index, another reply.
    assert plan_reply(ReplySpec(seed=1, tools=tools, tool_choice="required"), model) == calling
    assert plan_reply(ReplySpec(seed=1), model, index=1) != natural


def test_the_chat_fast_path_is_byte_identical_to_the_generic_frames() -> None:
    model = fast_profile().models["gpt-4.1"]
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
    for include_usage in (False, True):
        request = ChatRequest.from_body(json.dumps(body).encode())
        replies = request.plan(model)
        usage = {"prompt_tokens": 1} if include_usage else None

        def encoder(include_usage: bool = include_usage) -> ChunkEncoder:
            return ChunkEncoder(
                completion_id="chatcmpl-x", created=1, model="m", include_usage=include_usage
            )

        fast = ChatTextFrames(replies[0], encoder(), usage=usage)
        generic = ChatFrames(replies, encoder(), usage=usage, reasoning_field=None)
        outputs = []
        for source in (fast, generic):
            data = source.head() + source.opening()
            sent = 0
            for limit in (1, 7, 30, 12):  # any batching
                payload, count = source.take(min(limit, source.units - sent))
                data += payload
                sent += count
            outputs.append(data + source.closing())
        assert outputs[0] == outputs[1]
        assert fast.units == generic.units == 50


def test_plan_reply_units_match_the_frames_for_every_kind() -> None:
    model = attrs.evolve(fast_profile().models["deepseek-v3.2"], natural_length_spread=10)
    specs = [
        ReplySpec(seed=2),
        ReplySpec(seed=3, reasoning_effort="low", reasoning_shown="full"),
        ReplySpec(seed=4, tools=(Tool(name="f", parameters=WEATHER),), tool_choice="required"),
        ReplySpec(seed=5, max_tokens=7),
    ]
    for spec in specs:
        replies = (plan_reply(spec, model), plan_reply(spec, model, index=1))
        frames = ChatFrames(
            replies,
            ChunkEncoder(completion_id="c", created=1, model="m", include_usage=False),
            usage=None,
            reasoning_field="reasoning_content",
        )
        frames.opening()
        sent = 0
        while sent < frames.units:
            sent += frames.take(3 if frames.units - sent >= 3 else 1)[1]
        assert sent == frames.units == sum(reply.units for reply in replies)
        assert frames.closing().endswith(b"data: [DONE]\n\n")


def _drain(source: Any, limits: list[int]) -> bytes:
    data: bytes = source.head() + source.opening()
    sent = 0
    for limit in limits:
        if sent >= source.units:
            break
        payload, count = source.take(max(1, min(limit, source.units - sent)))
        assert 1 <= count <= limit
        data += payload
        sent += count
    while sent < source.units:
        payload, count = source.take(source.units - sent)
        data += payload
        sent += count
    return data + source.closing()


_IDS = re.compile(rb"(resp|msg|fc|rs)_[0-9a-f]{48}|\"created_at\":\d+|\"completed_at\":\d+")


@given(limits=st.lists(st.integers(min_value=1, max_value=40), max_size=30))
@settings(max_examples=60)
def test_any_batching_gives_the_same_stream(limits: list[int]) -> None:
    model = fast_profile().models["deepseek-v3.2"]
    chat_body = {
        "model": "deepseek-v3.2",
        "messages": [{"role": "user", "content": "hi"}],
        "n": 2,
        "tools": CHAT_TOOLS,
        "reasoning_effort": "minimal",
    }
    request = ChatRequest.from_body(json.dumps(chat_body).encode())

    def chat() -> ChatFrames:
        encoder = ChunkEncoder(completion_id="c", created=1, model="m", include_usage=True)
        return ChatFrames(
            request.plan(model), encoder, usage={"u": 1}, reasoning_field="reasoning_content"
        )

    assert _drain(chat(), limits) == _drain(chat(), [10**6])
    body = {
        "model": "deepseek-v3.2",
        "input": "hi",
        "tools": TOOLS,
        "reasoning": {"effort": "low", "summary": "auto"},
    }
    parsed = ResponsesRequest.from_body(json.dumps(body).encode())

    def response() -> ResponseFrames:
        builder = ResponseBuilder(
            request=parsed, reply=parsed.plan(model), model_name="m", input_tokens=5
        )
        return ResponseFrames(builder)

    assert _IDS.sub(b"", _drain(response(), limits)) == _IDS.sub(b"", _drain(response(), [10**6]))
