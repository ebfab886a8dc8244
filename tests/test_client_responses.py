# The Responses API client: stream_response / create_response against the simulator and peers.
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import responses_vectors as vectors
import trio
from trio.testing import MockClock

import holysheep_trio as hs
from holysheep_trio.client import Client
from holysheep_trio.pool import estimate_tokens
from holysheep_trio.simulator import Simulator, open_simulator

KEY = "sk-test-0123456789-responses"
BASE = "https://api.example.test/v1"
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
}
TOOLS = [
    {"type": "function", "name": "get_weather", "parameters": WEATHER},
    {
        "type": "function",
        "name": "count_sheep",
        "parameters": {
            "type": "object",
            "properties": {"meadow": {"type": "string"}},
            "required": ["meadow"],
        },
    },
]


@pytest.fixture
async def sim(autojump_clock: MockClock) -> AsyncIterator[Simulator]:
    async with open_simulator(api_key=KEY, profile="fast", snapshots=False) as simulator:
        yield simulator
        assert simulator.stats().internal_errors == 0


def client_for(sim: Simulator, **kwargs: Any) -> Any:
    return hs.open_client(api_key=KEY, base_url=sim.base_url, **kwargs)


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll in virtual time until ``condition()``: the server notices closed sockets async."""
    for _ in range(200):
        if condition():
            return
        await trio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def no_open_connections(sim: Simulator) -> None:
    await wait_for(lambda: sim.stats().open_connections == 0, "open_connections == 0")


async def collect(
    client: Client, **kwargs: Any
) -> tuple[list[hs.ResponseEvent], hs.ResponseStream]:
    kwargs.setdefault("model", "gpt-4.1")
    kwargs.setdefault("input", "Tell me about sheep.")
    async with client.stream_response(**kwargs) as stream:
        events = [event async for event in stream]
    return events, stream


def mismatches(stream: hs.ResponseStream) -> tuple[str, ...]:
    decoder = stream._decoder
    assert decoder is not None
    return decoder.accumulator.mismatches()


Key = tuple[str, int, int]


def streamed_texts(events: Sequence[hs.ResponseEvent]) -> dict[Key, str]:
    """Each part's concatenated deltas (checked against its ``.done`` text when both came),
    or its ``.done`` text for servers that send no deltas."""
    pieces: defaultdict[Key, list[str]] = defaultdict(list)
    done: dict[Key, str] = {}
    for event in events:
        if isinstance(event, hs.OutputTextDelta | hs.RefusalDelta | hs.ReasoningTextDelta):
            pieces["content", event.output_index, event.content_index].append(event.delta)
        elif isinstance(event, hs.FunctionCallArgumentsDelta):
            pieces["arguments", event.output_index, 0].append(event.delta)
        elif isinstance(event, hs.ReasoningSummaryTextDelta):
            pieces["summary", event.output_index, event.summary_index].append(event.delta)
        elif isinstance(event, hs.OutputTextDone | hs.RefusalDone | hs.ReasoningTextDone):
            done["content", event.output_index, event.content_index] = event.text
        elif isinstance(event, hs.FunctionCallArgumentsDone):
            done["arguments", event.output_index, 0] = event.arguments
        elif isinstance(event, hs.ReasoningSummaryTextDone):
            done["summary", event.output_index, event.summary_index] = event.text
    texts = {key: "".join(parts) for key, parts in pieces.items()}
    for key, text in done.items():
        assert texts.setdefault(key, text) == text, key
    return texts


def final_text(item: hs.OutputItem, kind: str, index: int) -> str:
    if kind == "arguments":
        assert isinstance(item, hs.FunctionCall)
        return item.arguments
    if isinstance(item, hs.ReasoningItem):
        return item.summary[index] if kind == "summary" else item.content[index]
    assert isinstance(item, hs.OutputMessage)
    part = item.content[index]
    return part.refusal if isinstance(part, hs.OutputRefusal) else getattr(part, "text", "")


def check_invariants(
    events: Sequence[hs.ResponseEvent], stream: hs.ResponseStream, *, numbered: bool = True
) -> hs.Response:
    """What holds for every complete reply; returns the accumulated response."""
    terminals = [event for event in events if event.is_terminal]
    assert terminals == [events[-1]]  # one terminal event, and it is last
    terminal = events[-1]
    assert isinstance(terminal, hs.ResponseCompleted | hs.ResponseIncomplete)
    if numbered:
        assert [event.sequence_number for event in events] == list(range(len(events)))
    response = stream.response
    # The terminal response's output; a few servers leave it empty (the streamed items count).
    final = terminal.response
    output = final.output or response.output
    assert output
    # Concatenated deltas equal the .done texts (checked inside) and the terminal output.
    for (kind, output_index, index), text in streamed_texts(events).items():
        assert final_text(output[output_index], kind, index) == text
    assert response.output == output
    assert response.status == final.status
    assert mismatches(stream) == ()
    usage = response.usage
    assert usage is not None
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert response.attempts >= 1
    assert response.ttft is None or 0 <= response.ttft <= response.duration
    first = next((event for event in events if event.is_output), None)
    assert (first is None) == (response.ttft is None)
    return response


# ---- replies of every kind, and the invariants on each ------------------------------------

REQUESTS: dict[str, dict[str, Any]] = {
    "text": {},
    "text-capped": {"max_output_tokens": 20},
    "instructions": {"instructions": "Answer in one line.", "max_output_tokens": 30},
    "input-items": {
        "input": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi! How can I help?"},
            hs.Message(role="user", content="Tell me about trio."),
        ]
    },
    "tools-required": {"tools": TOOLS, "tool_choice": "required"},
    "tool-named": {"tools": TOOLS, "tool_choice": {"type": "function", "name": "get_weather"}},
    "tools-auto": {"tools": TOOLS, "input": "What is the weather in Paris?"},
    "tool-capped": {"tools": TOOLS, "tool_choice": "required", "max_output_tokens": 16},
    "reasoning": {"reasoning": {"effort": "low", "summary": "auto"}},
    "reasoning-hidden": {"reasoning": {"effort": "medium"}, "max_output_tokens": 200},
    "json-schema": {
        "text": {"format": {"type": "json_schema", "name": "weather", "schema": WEATHER}}
    },
    "json-object": {"text": {"format": {"type": "json_object"}}, "input": "Reply in JSON."},
    "not-stored": {"store": False, "temperature": 0.2},
}


@pytest.mark.parametrize("name", sorted(REQUESTS))
async def test_every_reply_keeps_the_invariants(
    autojump_clock: MockClock, sim: Simulator, name: str
) -> None:
    async with client_for(sim) as client:
        events, stream = await collect(client, **REQUESTS[name])
    response = check_invariants(events, stream)
    assert response.id.startswith("resp_")
    assert response.request_id is not None
    assert response.request_id.startswith("req_")
    assert response.attempts == 1
    await no_open_connections(sim)


async def test_text_reply(autojump_clock: MockClock, sim: Simulator) -> None:
    async with client_for(sim) as client:
        events, stream = await collect(client, max_output_tokens=200)
    response = check_invariants(events, stream)
    assert [type(event) for event in events[:4]] == [
        hs.ResponseCreated,
        hs.ResponseInProgress,
        hs.OutputItemAdded,
        hs.ContentPartAdded,
    ]
    deltas = [event for event in events if isinstance(event, hs.OutputTextDelta)]
    assert len(deltas) > 1
    assert response.output_text == "".join(delta.delta for delta in deltas)
    assert response.status == "completed"
    assert isinstance(events[-1], hs.ResponseCompleted)
    assert response.model.startswith("gpt-4.1")
    (message,) = response.output
    assert isinstance(message, hs.OutputMessage)
    assert message.id.startswith("msg_")
    assert response.usage is not None
    assert response.usage.output_tokens == len(deltas)
    assert response.ttft is not None


async def test_create_response_returns_the_response(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    async with client_for(sim) as client:
        _, stream = await collect(client, max_output_tokens=30)
        response = await client.create_response(
            model="gpt-4.1", input="Tell me about sheep.", max_output_tokens=30
        )
    assert response.output_text == stream.response.output_text  # the simulator is seeded
    assert response.status == stream.response.status
    assert response.id != stream.response.id


async def test_tool_calls_split_across_many_deltas(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    async with client_for(sim) as client:
        events, stream = await collect(
            client, tools=TOOLS, tool_choice="required", input="Weather in Paris and sheep?"
        )
    response = check_invariants(events, stream)
    calls = response.function_calls
    assert calls
    for call in calls:
        assert call.call_id.startswith("call_")
        assert call.id.startswith("fc_")
        pieces = [
            event.delta
            for event in events
            if isinstance(event, hs.FunctionCallArgumentsDelta) and event.item_id == call.id
        ]
        assert len(pieces) > 1
        assert "".join(pieces) == call.arguments
        arguments = json.loads(call.arguments)
        tool = next(tool for tool in TOOLS if tool["name"] == call.name)
        assert set(tool["parameters"]["required"]) <= set(arguments)
    # The first token is the first arguments delta (no text in a tool-call reply).
    first = next(event for event in events if event.is_output)
    assert isinstance(first, hs.FunctionCallArgumentsDelta)
    assert response.output_text == ""


async def test_reasoning_summary_is_the_first_token(autojump_clock: MockClock) -> None:
    # A profile with delays: the reasoning summary streams before the answer, at the model's
    # rate, so the first token is measurably the first summary delta.
    async with (
        open_simulator(api_key=KEY, profile="realistic", snapshots=False) as sim,
        client_for(sim) as client,
    ):
        received: list[tuple[float, hs.ResponseEvent]] = []
        before = trio.current_time()
        async with client.stream_response(
            model="gpt-4.1",
            input="Why is the sky blue?",
            reasoning={"effort": "low", "summary": "auto"},
            max_output_tokens=300,
        ) as stream:
            start = trio.current_time()
            async for event in stream:
                received.append((trio.current_time(), event))
        events = [event for _, event in received]
        response = check_invariants(events, stream)
    reasoning = response.output[0]
    assert isinstance(reasoning, hs.ReasoningItem)
    assert reasoning.summary
    assert reasoning.summary[0]
    first = next(event for event in events if event.is_output)
    assert isinstance(first, hs.ReasoningSummaryTextDelta)
    assert response.usage is not None
    assert response.usage.output_tokens_details is not None
    assert response.usage.output_tokens_details.reasoning_tokens
    assert response.ttft is not None
    assert response.ttft > 0.1  # the realistic profile's time to first token
    assert response.ttft == pytest.approx(start - before, abs=1e-3)  # entered at the first token
    assert response.duration > response.ttft
    assert response.duration == pytest.approx(received[-1][0] - before, abs=0.3)


async def test_incomplete_is_not_an_error(autojump_clock: MockClock, sim: Simulator) -> None:
    async with client_for(sim) as client:
        response = await client.create_response(
            model="gpt-4.1",
            input="Tell me a long story.",
            max_output_tokens=16,
            extra_headers={"X-Simulator-Reply-Tokens": "max"},
        )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None
    assert response.usage.output_tokens == 16
    assert response.output_text


# ---- failures: response.failed, in-band errors, disconnects, stalls -----------------------


async def _interrupted(
    sim: Simulator, fault: str, **kwargs: Any
) -> tuple[hs.StreamInterruptedError, list[hs.ResponseEvent], hs.ResponseStream]:
    events: list[hs.ResponseEvent] = []
    streams: list[hs.ResponseStream] = []
    async with client_for(sim, **kwargs) as client:

        async def consume() -> None:
            async with client.stream_response(
                model="gpt-4.1",
                input="Tell me about sheep.",
                max_output_tokens=40,
                extra_headers={"X-Simulator-Fault": fault},
            ) as stream:
                streams.append(stream)
                async for event in stream:
                    events.append(event)

        with pytest.raises(hs.StreamInterruptedError) as info:
            await consume()
    await no_open_connections(sim)
    return info.value, events, streams[0]


def delivered_text(events: Sequence[hs.ResponseEvent]) -> str:
    return "".join(event.delta for event in events if isinstance(event, hs.OutputTextDelta))


async def test_failed_after_output(autojump_clock: MockClock, sim: Simulator) -> None:
    error, events, stream = await _interrupted(sim, "failed_after=5")
    cause = error.__cause__
    assert isinstance(cause, hs.APIStreamError)
    assert cause.code == "server_error"
    assert cause.status == 500
    assert error.kind == "server"
    partial = error.partial
    assert isinstance(partial, hs.Response)
    assert partial.status == "failed"
    assert partial.error is not None
    assert partial.error.code == "server_error"
    assert partial.output_text == delivered_text(events)
    assert len([event for event in events if isinstance(event, hs.OutputTextDelta)]) == 5
    assert cause.partial == partial
    assert stream.response == partial
    assert partial.usage is None
    assert error.attempt == 1
    assert error.request_id is not None
    assert not any(event.is_terminal for event in events)


async def test_failed_before_output_is_retried_then_raised(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    # server_error is a 5xx: retried like one, before the first output.
    sim.inject_faults("failed_after=0", endpoint="responses")
    async with client_for(sim) as client:
        response = await client.create_response(model="gpt-4.1", input="Hi", max_output_tokens=20)
        assert response.attempts == 2
        assert response.error is None
        sim.inject_faults(*["failed_after=0"] * 3, endpoint="responses")
        with pytest.raises(hs.APIStreamError) as info:
            await client.create_response(model="gpt-4.1", input="Hi", max_output_tokens=20)
    error = info.value
    assert error.code == "server_error"
    assert error.attempt == 3
    assert isinstance(error.partial, hs.Response)
    assert error.partial.status == "failed"
    assert error.partial.error is not None
    assert error.partial.attempts == 3
    assert error.partial.output_text == ""  # the message was announced, nothing written
    assert sim.stats().faults_served["failed_after"] == 4


async def test_error_event_after_output(autojump_clock: MockClock, sim: Simulator) -> None:
    error, events, _ = await _interrupted(sim, "error_event_after=3;status=429")
    cause = error.__cause__
    assert isinstance(cause, hs.APIStreamError)
    assert cause.status == 429
    assert cause.code == "rate_limit_exceeded"
    assert cause.message
    assert error.kind == "rate_limit"
    partial = error.partial
    assert isinstance(partial, hs.Response)
    assert partial.status == "failed"
    assert partial.error is not None
    assert partial.error.code == "rate_limit_exceeded"
    assert partial.output_text == delivered_text(events)
    assert cause.partial == partial


async def test_error_event_before_output(autojump_clock: MockClock, sim: Simulator) -> None:
    sim.inject_faults("error_event_after=0;status=503", endpoint="responses")
    async with client_for(sim) as client:
        response = await client.create_response(model="gpt-4.1", input="Hi")
    assert response.attempts == 2
    assert response.status == "completed"
    sim.inject_faults("error_event_after=0;status=400", endpoint="responses")
    async with client_for(sim) as client:
        stream = client.stream_response(model="gpt-4.1", input="Hi")
        with pytest.raises(hs.APIStreamError) as info:
            async with stream:
                raise AssertionError("not entered")  # pragma: no cover
    error = info.value
    assert error.status == 400
    assert error.kind == "invalid_request"
    assert error.attempt == 1  # a 400 is not retried
    assert error.param is None
    assert isinstance(error.partial, hs.Response)
    assert error.partial.status == "failed"
    assert stream.response == error.partial
    await no_open_connections(sim)


async def test_disconnect_after_output(autojump_clock: MockClock, sim: Simulator) -> None:
    error, events, _ = await _interrupted(sim, "disconnect_after=4")
    assert isinstance(error.__cause__, hs.APIConnectionError)
    assert error.kind == "network"
    partial = error.partial
    assert isinstance(partial, hs.Response)
    assert partial.status == "in_progress"  # the last snapshot: nothing said otherwise
    assert partial.output_text == delivered_text(events)
    assert len(delivered_text(events)) > 0
    assert partial.usage is None


async def test_disconnect_before_output_is_retried(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    sim.inject_faults("disconnect_after=0", endpoint="responses")
    async with client_for(sim) as client:
        response = await client.create_response(model="gpt-4.1", input="Hi", max_output_tokens=20)
    assert response.attempts == 2
    assert response.usage is not None
    assert response.usage.output_tokens == 20


async def test_stall_after_output_fires_idle(autojump_clock: MockClock, sim: Simulator) -> None:
    start = trio.current_time()
    error, events, _ = await _interrupted(
        sim, "stall_after=3;seconds=100", timeouts=hs.Timeouts(idle=5)
    )
    cause = error.__cause__
    assert isinstance(cause, hs.APITimeoutError)
    assert cause.deadline == "idle"
    assert 5 <= trio.current_time() - start < 6
    assert isinstance(error.partial, hs.Response)
    assert error.partial.output_text == delivered_text(events)


async def test_keepalives_are_not_progress(autojump_clock: MockClock, sim: Simulator) -> None:
    start = trio.current_time()
    error, _, _ = await _interrupted(sim, "keepalive_after=3;every=1", timeouts=hs.Timeouts(idle=5))
    cause = error.__cause__
    assert isinstance(cause, hs.APITimeoutError)
    assert cause.deadline == "idle"
    assert 5 <= trio.current_time() - start < 6


async def test_stall_before_output_fires_first_token_and_retries(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    sim.inject_faults("stall_after=0;seconds=100", endpoint="responses")
    start = trio.current_time()
    async with client_for(sim, timeouts=hs.Timeouts(first_token=4)) as client:
        response = await client.create_response(model="gpt-4.1", input="Hi")
    assert response.attempts == 2
    assert 4 <= trio.current_time() - start < 6
    assert response.ttft is not None
    assert response.ttft >= 4  # the caller waited through the failed attempt
    sim.inject_faults(*["stall_after=0;seconds=100"] * 3, endpoint="responses")
    async with client_for(sim, timeouts=hs.Timeouts(first_token=4)) as client:
        with pytest.raises(hs.APITimeoutError) as info:
            await client.create_response(model="gpt-4.1", input="Hi")
    assert info.value.deadline == "first_token"
    assert info.value.attempt == 3
    await no_open_connections(sim)


async def test_total_deadline(autojump_clock: MockClock, sim: Simulator) -> None:
    start = trio.current_time()
    error, _, _ = await _interrupted(
        sim, "stall_after=3;seconds=100", timeouts=hs.Timeouts(total=3)
    )
    cause = error.__cause__
    assert isinstance(cause, hs.APITimeoutError)
    assert cause.deadline == "total"
    assert 3 <= trio.current_time() - start < 3.5


async def test_malformed_event_after_output(autojump_clock: MockClock, sim: Simulator) -> None:
    error, _, _ = await _interrupted(sim, "malformed_after=2")
    cause = error.__cause__
    assert isinstance(cause, hs.StreamProtocolError)
    assert cause.data
    assert error.kind == "parse"


async def test_unknown_event_types_come_through(autojump_clock: MockClock, sim: Simulator) -> None:
    sim.inject_faults("oversized_event;size=1000", endpoint="responses")
    async with client_for(sim) as client:
        events, stream = await collect(client, max_output_tokens=20)
    unknown = [event for event in events if isinstance(event, hs.UnknownResponseEvent)]
    assert [event.type for event in unknown] == ["response.simulator.padding"]
    assert unknown[0].payload["padding"] == "x" * 1000
    check_invariants(events, stream)


async def test_caller_break_closes_the_connection(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    async with client_for(sim) as client:
        async with client.stream_response(
            model="gpt-4.1",
            input="Hi",
            max_output_tokens=500,
            extra_headers={"X-Simulator-Fault": "stall_after=5;seconds=1000"},
        ) as stream:
            async for event in stream:
                if event.is_output:
                    break
        assert stream.response.status == "in_progress"
        assert stream.response.output_text
    await no_open_connections(sim)


# ---- the lifecycle: retries, fallback, pool, aclose ----------------------------------------


async def test_retries_before_output(autojump_clock: MockClock, sim: Simulator) -> None:
    sim.inject_faults("status=503", "status=503", endpoint="responses")
    start = trio.current_time()
    async with client_for(sim) as client:
        response = await client.create_response(model="gpt-4.1", input="Hi", max_output_tokens=20)
    assert response.attempts == 3
    assert 0.375 + 0.75 <= trio.current_time() - start <= 0.5 + 1.0 + 0.1
    assert sim.stats().faults_served["status"] == 2
    # The chat endpoint's queue was not touched.
    async with client_for(sim) as client:
        completion = await client.chat(
            model="gpt-4.1", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
        )
    assert completion.attempts == 1


async def test_fallback_after_5xx(autojump_clock: MockClock) -> None:
    async with (
        open_simulator(api_key=KEY, profile="fast") as primary,
        open_simulator(api_key=KEY, profile="fast") as backup,
    ):
        primary.inject_faults("status=502", "status=502", "status=502", endpoint="responses")
        async with hs.open_client(
            api_key=KEY, base_url=primary.base_url, fallback_urls=[backup.base_url]
        ) as client:
            response = await client.create_response(
                model="gpt-4.1", input="Hi", max_output_tokens=20
            )
        assert response.attempts == 4
        assert primary.stats().total_requests == 3
        assert backup.stats().total_requests == 1


async def test_pool_admission_and_statistics(autojump_clock: MockClock, sim: Simulator) -> None:
    limits = hs.Limits(max_concurrent=1, per_model={"gpt-4.1": 1})
    sim.inject_faults("status=429", endpoint="responses")
    async with client_for(sim, limits=limits) as client:
        responses: list[hs.Response] = []

        async def one() -> None:
            responses.append(
                await client.create_response(model="gpt-4.1", input="Hi", max_output_tokens=20)
            )

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)
        stats = client.statistics()
    assert len(responses) == 3
    assert stats.succeeded == 3
    assert stats.failed == {"rate_limit": 1}
    assert stats.total == 4
    assert stats.active == 0
    model = stats.models["gpt-4.1"]
    assert model.time_to_first_token.count == 3
    # Usage counts as chat usage: input tokens as prompt, output tokens as completion.
    assert stats.completion_tokens == sum(r.usage.output_tokens for r in responses if r.usage)
    assert stats.prompt_tokens == sum(r.usage.input_tokens for r in responses if r.usage)
    assert sim.stats().max_concurrent["gpt-4.1"] == 1


async def test_token_estimate_for_admission(autojump_clock: MockClock, sim: Simulator) -> None:
    estimates: list[int] = []
    async with client_for(sim) as client:
        admit = client._admit

        def spy(*, model: str, estimated_tokens: int) -> Any:
            estimates.append(estimated_tokens)
            return admit(model=model, estimated_tokens=estimated_tokens)

        client._admit = spy  # type: ignore[method-assign]
        await client.create_response(
            model="gpt-4.1", input="x" * 400, instructions="y" * 40, max_output_tokens=100
        )
        stream = client.stream_response(
            model="gpt-4.1", input=iter([{"role": "user", "content": "z" * 80}])
        )
        async with stream:
            pass
    assert estimates[0] == estimate_tokens(
        [{"content": "y" * 40}, {"content": "x" * 400}], max_tokens=100
    )
    assert estimates[1] == estimate_tokens([{"content": "z" * 80}], max_tokens=None)


async def test_aclose_cancels_an_open_response_stream(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    errors: list[BaseException] = []
    async with client_for(sim) as client:

        async def consume() -> None:
            try:
                async with client.stream_response(
                    model="gpt-4.1",
                    input="Hi",
                    max_output_tokens=50,
                    extra_headers={"X-Simulator-Fault": "stall_after=3;seconds=1000"},
                ) as stream:
                    async for _event in stream:
                        pass
            except hs.ClientClosedError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await wait_for(lambda: sim.stats().active["gpt-4.1"] == 1, "an active stream")
            await client.aclose()
        with pytest.raises(hs.ClientClosedError):
            await client.create_response(model="gpt-4.1", input="Hi")
    assert len(errors) == 1
    assert trio.current_time() < 100
    await no_open_connections(sim)


async def test_stream_must_be_entered(autojump_clock: MockClock, sim: Simulator) -> None:
    async with client_for(sim) as client:
        stream = client.stream_response(model="gpt-4.1", input="Hi")
        assert "ResponseStream model='gpt-4.1' state=new" in repr(stream)
        assert stream.model == "gpt-4.1"
        assert stream.response.attempts == 0
        assert stream.response.output == ()
        with pytest.raises(RuntimeError, match="async with"):
            stream.__aiter__()
        async with stream:
            with pytest.raises(RuntimeError, match="only once"):
                await stream.__aenter__()


# ---- previous_response_id -------------------------------------------------------------------


async def test_previous_response_id_chains(autojump_clock: MockClock, sim: Simulator) -> None:
    async with client_for(sim) as client:
        first = await client.create_response(model="gpt-4.1", input="One", max_output_tokens=20)
        second = await client.create_response(
            model="gpt-4.1", input="Two", previous_response_id=first.id, max_output_tokens=20
        )
        assert second.previous_response_id == first.id
        assert first.usage is not None
        assert second.usage is not None
        # The chained input counts: the first response's input and output, then "Two".
        assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
        unstored = await client.create_response(
            model="gpt-4.1", input="Three", store=False, max_output_tokens=20
        )
        with pytest.raises(hs.PreviousResponseNotFoundError) as info:
            await client.create_response(
                model="gpt-4.1", input="Four", previous_response_id=unstored.id
            )
    error = info.value
    assert isinstance(error, hs.BadRequestError)
    assert error.status == 400
    assert error.code == "previous_response_not_found"
    assert error.attempt == 1
    assert unstored.id in error.message
    assert "previous_response_id" in error.body


async def test_bad_arguments_fail_at_the_call(autojump_clock: MockClock, sim: Simulator) -> None:
    async with client_for(sim) as client:
        with pytest.raises(TypeError, match="input"):
            client.stream_response(model="gpt-4.1", input={"role": "user"})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_output_tokens"):
            client.stream_response(model="gpt-4.1", input="Hi", max_output_tokens=0)
        with pytest.raises(TypeError, match="stream"):
            client.stream_response(model="gpt-4.1", input="Hi", stream=False)
        with pytest.raises(hs.BadRequestError):  # the simulator's minimum is the API's: 16
            await client.create_response(model="gpt-4.1", input="Hi", max_output_tokens=8)


# ---- peers' recorded streams over MockTransport ------------------------------------------

SSE = {"content-type": "text/event-stream", "x-request-id": "req_mock"}


class Script(httpx2.AsyncByteStream):
    """A response body from a list of byte strings and (float) pauses; no async generator."""

    def __init__(self, items: Sequence[bytes | float]) -> None:
        self._items = list(items)

    def __aiter__(self) -> Script:  # type: ignore[override]
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        while self._items:
            item = self._items.pop(0)
            if isinstance(item, float):
                await trio.sleep(item)
                continue
            return item
        raise StopAsyncIteration

    async def aclose(self) -> None:
        pass


def events_response(events: list[dict[str, Any]], *, trailer: bytes = b"") -> httpx2.Response:
    """The events on the wire, one network read per event."""
    body = vectors.sse_bytes(events, trailer=trailer)
    blocks = [block + b"\n\n" for block in body.split(b"\n\n") if block]
    return httpx2.Response(200, headers=SSE, stream=Script(blocks))


@asynccontextmanager
async def mock_client(
    responses: Sequence[httpx2.Response], **kwargs: Any
) -> AsyncIterator[tuple[Client, list[httpx2.Request]]]:
    requests: list[httpx2.Request] = []
    queue = list(responses)

    def serve(request: httpx2.Request) -> httpx2.Response:
        requests.append(request)
        return queue.pop(0)

    async with (
        httpx2.AsyncClient(transport=httpx2.MockTransport(serve)) as http_client,
        hs.open_client(api_key=KEY, base_url=BASE, http_client=http_client, **kwargs) as client,
    ):
        yield client, requests


@pytest.mark.parametrize("name", sorted(vectors.GOOD_STREAMS))
async def test_recorded_peer_streams(name: str) -> None:
    recorded = vectors.GOOD_STREAMS[name]
    trailer = b"data: [DONE]\n\n" if name == "relay" else b""
    async with mock_client([events_response(recorded, trailer=trailer)]) as (client, requests):
        events, stream = await collect(client, model="gpt-4.1", input="Hello")
    numbered = all("sequence_number" in event for event in recorded)
    response = check_invariants(events, stream, numbered=numbered)
    assert len(events) == len(recorded)
    assert [event.type for event in events] == [event.get("type", "") for event in recorded]
    expected = hs.Response.from_json(recorded[-1]["response"])
    assert response.output == expected.output
    assert response.usage == expected.usage
    assert response.request_id == "req_mock"
    (request,) = requests
    assert request.url == BASE + "/responses"
    assert json.loads(request.content)["stream"] is True


async def test_request_body_and_headers() -> None:
    async with mock_client([events_response(vectors.OPENAI_TEXT)]) as (client, requests):
        await client.create_response(
            model="gpt-4.1",
            input=[{"role": "user", "content": "Hi"}],
            instructions="Be brief.",
            previous_response_id="resp_1",
            store=False,
            tools=TOOLS,
            tool_choice="auto",
            max_output_tokens=50,
            extra_headers={"X-Trace": "t-1"},
            temperature=0.5,
            reasoning=None,
        )
    (request,) = requests
    assert request.method == "POST"
    assert request.url == BASE + "/responses"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["x-trace"] == "t-1"
    assert json.loads(request.content) == {
        "model": "gpt-4.1",
        "input": [{"role": "user", "content": "Hi"}],
        "instructions": "Be brief.",
        "previous_response_id": "resp_1",
        "store": False,
        "tools": TOOLS,
        "tool_choice": "auto",
        "max_output_tokens": 50,
        "temperature": 0.5,
        "stream": True,
    }


async def test_recorded_refusal() -> None:
    async with mock_client([events_response(vectors.OPENAI_REFUSAL)]) as (client, _):
        events, stream = await collect(client)
    check_invariants(events, stream)
    (message,) = stream.response.output
    assert isinstance(message, hs.OutputMessage)
    assert message.refusal == vectors.REFUSAL
    first = next(event for event in events if event.is_output)
    assert isinstance(first, hs.RefusalDelta)


async def test_recorded_failure_after_output() -> None:
    async with mock_client([events_response(vectors.FAILED_AFTER_OUTPUT)]) as (client, _):
        with pytest.raises(hs.StreamInterruptedError) as info:
            await client.create_response(model="gpt-4.1", input="Hi")
    cause = info.value.__cause__
    assert isinstance(cause, hs.APIStreamError)
    assert cause.code == "server_error"
    assert "invalid content" in cause.message
    partial = info.value.partial
    assert isinstance(partial, hs.Response)
    assert partial.status == "failed"
    assert partial.output_text == "Once upon"
    assert partial.attempts == 1


async def test_recorded_error_event_is_retried_then_raised() -> None:
    no_retry_after = hs.RetryPolicy(initial_delay=0, jitter=0)
    replies = [events_response(vectors.ERROR_EVENT) for _ in range(3)]
    async with mock_client(replies, retry=no_retry_after) as (client, requests):
        with pytest.raises(hs.APIStreamError) as info:
            await client.create_response(model="gpt-4.1", input="Hi")
    error = info.value
    assert len(requests) == 3  # rate_limit_exceeded is a 429: retried before output
    assert error.status == 429
    assert error.code == "rate_limit_exceeded"
    assert error.kind == "rate_limit"
    assert "TPM" in error.message
    assert isinstance(error.partial, hs.Response)
    assert error.partial.status == "failed"
    assert error.partial.error is not None
    assert error.partial.error.code == "rate_limit_exceeded"


def renumbered(events: list[dict[str, Any]], numbers: dict[int, int]) -> list[dict[str, Any]]:
    return [
        {**event, "sequence_number": numbers.get(index, event.get("sequence_number"))}
        for index, event in enumerate(events)
    ]


async def test_sequence_going_backwards_after_output() -> None:
    text = vectors.OPENAI_TEXT
    bad = renumbered(text, {6: 2})  # the third delta goes back to 2
    async with mock_client([events_response(bad)]) as (client, _):
        with pytest.raises(hs.StreamInterruptedError) as info:
            await collect(client)
    cause = info.value.__cause__
    assert isinstance(cause, hs.StreamProtocolError)
    assert "went backwards" in cause.message
    assert b'"delta":" shimmering"' in cause.data
    assert info.value.kind == "parse"
    partial = info.value.partial
    assert isinstance(partial, hs.Response)
    assert partial.output_text == "".join(vectors.TEXT_PIECES[:2])


async def test_unknown_output_index_before_output_is_not_retried() -> None:
    bad = [dict(event) for event in vectors.OPENAI_TEXT]
    bad[4] = {**bad[4], "output_index": 7}  # the first delta names an unknown item
    async with mock_client([events_response(bad)]) as (client, requests):
        with pytest.raises(hs.StreamProtocolError) as info:
            await collect(client)
    assert "output_index 7" in info.value.message
    assert info.value.attempt == 1
    assert len(requests) == 1


async def test_end_without_terminal_event() -> None:
    truncated = vectors.OPENAI_TEXT[:-1]
    async with mock_client([events_response(truncated)]) as (client, _):
        with pytest.raises(hs.StreamInterruptedError) as info:
            await collect(client)
    assert isinstance(info.value.__cause__, hs.APIConnectionError)
    assert "before it was complete" in str(info.value.__cause__)
    partial = info.value.partial
    assert isinstance(partial, hs.Response)
    assert partial.output_text == vectors.TEXT  # the output_item.done came; no terminal
    # Before any output: retried, like a disconnect.
    head = vectors.OPENAI_TEXT[:4]
    replies = [events_response(head), events_response(vectors.OPENAI_TEXT)]
    no_delay = hs.RetryPolicy(initial_delay=0, jitter=0)
    async with mock_client(replies, retry=no_delay) as (client, requests):
        response = await client.create_response(model="gpt-4.1", input="Hi")
    assert len(requests) == 2
    assert response.attempts == 2
    assert response.output_text == vectors.TEXT


async def test_a_response_without_output_ends_cleanly() -> None:
    events = vectors.numbered(
        [
            {"type": "response.created", "response": vectors.response_object("in_progress")},
            {
                "type": "response.incomplete",
                "response": vectors.response_object(
                    "incomplete",
                    incomplete_details={"reason": "content_filter"},
                    usage=vectors.usage(12, 0),
                ),
            },
        ]
    )
    async with mock_client([events_response(events)]) as (client, _):
        received, stream = await collect(client)
    assert [type(event) for event in received] == [hs.ResponseCreated, hs.ResponseIncomplete]
    response = stream.response
    assert response.status == "incomplete"
    assert response.incomplete_details == hs.IncompleteDetails(reason="content_filter")
    assert response.ttft is None


async def test_many_heartbeats_before_the_first_output_are_dropped_not_fatal() -> None:
    heartbeats = [{"type": "keepalive"}] * 100 + [
        {"type": "response.in_progress", "response": vectors.response_object("in_progress")}
    ] * 20
    events = [*vectors.OPENAI_TEXT[:4], *heartbeats, *vectors.OPENAI_TEXT[4:]]
    events = [{k: v for k, v in event.items() if k != "sequence_number"} for event in events]
    async with mock_client([events_response(events)]) as (client, _):
        received, stream = await collect(client)
    assert stream.response.output_text == vectors.TEXT
    assert isinstance(received[0], hs.ResponseCreated)
    assert received[-1].is_terminal
    assert len(received) < len(events)


async def test_heartbeat_events_are_not_progress(autojump_clock: MockClock) -> None:
    # After the first delta, a server that only repeats `keepalive` events and status
    # snapshots is silent as far as the idle deadline is concerned.
    head = vectors.sse_bytes(vectors.OPENAI_TEXT[:5])
    beats: list[bytes | float] = []
    for _ in range(10):
        beats += [1.0, vectors.sse_bytes([{"type": "keepalive"}])]
        snapshot = {"type": "response.in_progress", "response": vectors.response_object("x")}
        beats += [1.0, vectors.sse_bytes([snapshot])]
    reply = httpx2.Response(200, headers=SSE, stream=Script([head, *beats]))
    received: list[hs.ResponseEvent] = []
    start = trio.current_time()
    async with mock_client([reply], timeouts=hs.Timeouts(idle=3.5)) as (client, _):

        async def consume() -> None:
            async with client.stream_response(model="gpt-4.1", input="Hi") as stream:
                async for event in stream:
                    received.append(event)

        with pytest.raises(hs.StreamInterruptedError) as info:
            await consume()
    cause = info.value.__cause__
    assert isinstance(cause, hs.APITimeoutError)
    assert cause.deadline == "idle"
    assert 3.5 <= trio.current_time() - start < 4
    # They are delivered all the same (an unknown type is never an error).
    assert [event.type for event in received[5:]] == [
        "keepalive",
        "response.in_progress",
        "keepalive",
    ]
