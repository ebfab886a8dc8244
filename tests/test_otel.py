# Tests of holysheep_trio.otel: GenAI spans and metrics from the SDK's in-memory exporters.
from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once
from trio.testing import MockClock

import holysheep_trio as hs
from holysheep_trio import otel
from holysheep_trio.pool import Pool
from holysheep_trio.simulator import ModelProfile, Profile, Simulator, open_simulator

KEY = "sk-otel-test-0123456789-secret"
WRONG_KEY = "sk-otel-wrong-9876543210-secret"
MESSAGES = [{"role": "user", "content": "Tell me about trio."}]
MODEL = "gpt-4.1"


class Recorded:
    """An SDK tracer provider and meter provider whose output stays in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)

    def telemetry(self, **kwargs: Any) -> otel.Telemetry:
        return otel.Telemetry(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **kwargs
        )

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self) -> ReadableSpan:
        spans = self.spans()
        assert len(spans) == 1, [span.name for span in spans]
        return spans[0]

    def metrics(self, data: MetricsData | None = None) -> dict[str, Any]:
        data = self.reader.get_metrics_data() if data is None else data
        found: dict[str, Any] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = metric
        return found

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    found = Recorded()
    yield found
    found.shutdown()


def paced_profile() -> Profile:
    model = ModelProfile(name=MODEL, ttft_mean_ms=200, ttft_p95_ms=300, tokens_per_second=50)
    return Profile.from_models("paced", [model], delays=True)


@pytest.fixture
async def sim(autojump_clock: MockClock) -> AsyncIterator[Simulator]:
    async with open_simulator(api_key=KEY, profile="fast") as simulator:
        yield simulator


@pytest.fixture
async def paced(autojump_clock: MockClock) -> AsyncIterator[Simulator]:
    async with open_simulator(api_key=KEY, profile=paced_profile()) as simulator:
        yield simulator


def client_for(sim: Simulator, telemetry: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("api_key", KEY)
    return hs.open_client(base_url=sim.base_url, telemetry=telemetry, **kwargs)


def port_of(sim: Simulator) -> int:
    port = urlsplit(sim.base_url).port
    assert port is not None
    return port


def points(metric: Any) -> list[Any]:
    return list(metric.data.data_points)


def one_point(metric: Any) -> Any:
    found = points(metric)
    assert len(found) == 1, [dict(point.attributes) for point in found]
    return found[0]


def exported_text(recorded: Recorded) -> str:
    """Everything exported, as text: names, attributes, events, statuses, metric points."""
    parts: list[str] = []
    for span in recorded.spans():
        parts.append(span.name)
        parts.append(repr(dict(span.attributes or {})))
        parts.append(repr(span.status.description))
        for event in span.events:
            parts.append(event.name)
            parts.append(repr(dict(event.attributes or {})))
    for metric in recorded.metrics().values():
        for point in points(metric):
            parts.append(repr(dict(point.attributes)))
    return "\n".join(parts)


def assert_no_key(recorded: Recorded) -> None:
    text = exported_text(recorded)
    for secret in (KEY, WRONG_KEY, KEY[-12:], WRONG_KEY[-12:]):
        assert secret not in text


def base_attributes(sim: Simulator, response_model: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": MODEL,
        "server.address": "127.0.0.1",
        "server.port": port_of(sim),
    }
    if response_model is not None:
        found["gen_ai.response.model"] = response_model
    return found


# ---- a finished stream --------------------------------------------------------------------


async def test_a_finished_stream_has_its_span_and_metrics(
    autojump_clock: MockClock, sim: Simulator, recorded: Recorded
) -> None:
    telemetry = recorded.telemetry()
    caller = recorded.tracer_provider.get_tracer("caller")
    async with client_for(sim, telemetry) as client:
        with caller.start_as_current_span("caller") as parent:
            async with client.stream_chat(
                model=MODEL,
                messages=MESSAGES,
                max_tokens=12,
                temperature=0.5,
                top_p=0.9,
                frequency_penalty=0.1,
                presence_penalty=0.2,
                seed=7,
                stop=["\n\n"],
                n=1,
            ) as stream:
                # The request's span is never made current: the caller's stays current.
                assert trace.get_current_span() is parent
                async for _ in stream:
                    pass
    completion = stream.completion
    assert completion.usage is not None
    assert completion.ttft is not None

    spans = recorded.spans()
    span = next(span for span in spans if span.name != "caller")
    assert span.name == f"chat {MODEL}"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "holysheep_trio"
    assert span.instrumentation_scope.schema_url == "https://opentelemetry.io/schemas/1.41.0"
    attributes = dict(span.attributes or {})
    expected = {
        **base_attributes(sim, completion.model),
        "gen_ai.request.stream": True,
        "openai.api.type": "chat_completions",
        "gen_ai.request.max_tokens": 12,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.frequency_penalty": 0.1,
        "gen_ai.request.presence_penalty": 0.2,
        "gen_ai.request.seed": 7,
        "gen_ai.request.stop_sequences": ("\n\n",),
        "gen_ai.response.id": completion.id,
        "gen_ai.response.finish_reasons": ("length",),
        "gen_ai.response.time_to_first_chunk": completion.ttft,
        "gen_ai.usage.input_tokens": completion.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": 12,
    }
    for key, value in expected.items():
        assert attributes[key] == value, key
    # The simulator answers with the dated snapshot, as OpenAI does.
    assert completion.model != MODEL
    assert "gen_ai.request.choice.count" not in attributes  # n == 1
    assert "error.type" not in attributes
    assert not any(key.startswith(("gen_ai.input", "gen_ai.output.")) for key in attributes)
    assert span.events == ()

    found = recorded.metrics()
    assert set(found) >= {
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.time_to_first_chunk",
        "gen_ai.client.operation.time_per_output_chunk",
    }
    metric_attributes = base_attributes(sim, completion.model)
    duration = found["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    point = one_point(duration)
    assert dict(point.attributes) == metric_attributes
    assert tuple(point.explicit_bounds) == otel.DURATION_BUCKETS
    assert point.count == 1
    assert span.end_time is not None
    assert span.start_time is not None
    assert point.sum == pytest.approx((span.end_time - span.start_time) / 1e9, abs=1e-6)
    # Exemplars (the SDK keeps them for sampled spans) point at the request's span, not the
    # caller's; the per-chunk histogram offers none (one measurement per chunk is costly).
    (exemplar,) = point.exemplars
    assert exemplar.span_id == span.context.span_id
    ttft = one_point(found["gen_ai.client.operation.time_to_first_chunk"])
    assert found["gen_ai.client.operation.time_to_first_chunk"].unit == "s"
    assert dict(ttft.attributes) == metric_attributes
    assert tuple(ttft.explicit_bounds) == otel.DURATION_BUCKETS
    assert ttft.count == 1
    assert ttft.sum == pytest.approx(completion.ttft, abs=1e-9)
    per_chunk = found["gen_ai.client.operation.time_per_output_chunk"]
    assert per_chunk.unit == "s"
    assert tuple(one_point(per_chunk).explicit_bounds) == otel.DURATION_BUCKETS
    assert one_point(per_chunk).count == 12 - 1  # one token per chunk: every chunk but the first
    assert not one_point(per_chunk).exemplars
    usage = found["gen_ai.client.token.usage"]
    assert usage.unit == "{token}"
    by_type = {point.attributes["gen_ai.token.type"]: point for point in points(usage)}
    assert set(by_type) == {"input", "output"}
    assert by_type["input"].sum == completion.usage.prompt_tokens
    assert by_type["output"].sum == 12
    assert tuple(by_type["input"].explicit_bounds) == otel.TOKEN_BUCKETS
    assert dict(by_type["output"].attributes) == {
        **metric_attributes,
        "gen_ai.token.type": "output",
    }
    assert_no_key(recorded)


async def test_ttft_and_chunk_times_match_the_stream(
    autojump_clock: MockClock, paced: Simulator, recorded: Recorded
) -> None:
    seen: list[float] = []
    async with (
        client_for(paced, recorded.telemetry()) as client,
        client.stream_chat(model=MODEL, messages=MESSAGES, max_tokens=8) as stream,
    ):
        async for chunk in stream:
            if chunk.has_output:
                seen.append(trio.current_time())
    completion = stream.completion
    assert completion.ttft is not None
    assert completion.ttft > 0.1  # the profile's first-token latency, in virtual time
    found = recorded.metrics()
    ttft = one_point(found["gen_ai.client.operation.time_to_first_chunk"])
    assert ttft.sum == pytest.approx(completion.ttft, abs=1e-9)
    per_chunk = one_point(found["gen_ai.client.operation.time_per_output_chunk"])
    assert per_chunk.count == len(seen) - 1 == 7
    gaps = [later - earlier for earlier, later in itertools.pairwise(seen)]
    assert per_chunk.sum == pytest.approx(sum(gaps), abs=1e-9)
    assert per_chunk.min == pytest.approx(min(gaps), abs=1e-9)
    assert per_chunk.max == pytest.approx(max(gaps), abs=1e-9)
    assert per_chunk.min > 0.01  # paced at 50 tokens/s
    duration = one_point(found["gen_ai.client.operation.duration"])
    # The span starts when the stream is entered, the request's own clock when it is admitted.
    assert duration.sum == pytest.approx(completion.duration, abs=1e-3)
    assert duration.sum >= completion.duration


# ---- streams left early ------------------------------------------------------------------


async def test_a_stream_left_by_break(
    autojump_clock: MockClock, paced: Simulator, recorded: Recorded
) -> None:
    async with (
        client_for(paced, recorded.telemetry(capture_content=True)) as client,
        client.stream_chat(model=MODEL, messages=MESSAGES, max_tokens=50) as stream,
    ):
        count = 0
        async for chunk in stream:
            count += chunk.has_output
            if count == 3:
                break
    completion = stream.completion
    span = recorded.span()
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in attributes
    assert "gen_ai.response.finish_reasons" not in attributes  # it did not finish
    assert "gen_ai.usage.output_tokens" not in attributes  # the usage never came
    output = attributes["gen_ai.output.messages"]
    assert output[0]["finish_reason"] == "incomplete"
    assert output[0]["parts"] == ({"type": "text", "content": completion.text},)
    found = recorded.metrics()
    assert "error.type" not in one_point(found["gen_ai.client.operation.duration"]).attributes
    assert one_point(found["gen_ai.client.operation.time_per_output_chunk"]).count == 2
    # Without the server's usage nothing is reported: the conventions forbid guessing.
    assert "gen_ai.client.token.usage" not in found or not points(
        found["gen_ai.client.token.usage"]
    )


async def test_a_cancelled_stream_is_recorded_as_cancelled(
    autojump_clock: MockClock, paced: Simulator, recorded: Recorded
) -> None:
    async with client_for(paced, recorded.telemetry()) as client:
        start = trio.current_time()
        with trio.move_on_after(0.5) as scope:
            async with client.stream_chat(model=MODEL, messages=MESSAGES, max_tokens=100) as s:
                async for _ in s:
                    pass
        assert scope.cancelled_caught
    span = recorded.span()
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is None
    assert attributes["error.type"] == "cancelled"
    assert attributes["gen_ai.response.time_to_first_chunk"] == s.completion.ttft
    found = recorded.metrics()
    duration = one_point(found["gen_ai.client.operation.duration"])
    assert duration.attributes["error.type"] == "cancelled"
    assert duration.sum == pytest.approx(0.5, abs=1e-6)
    assert span.end_time is not None
    assert span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 == pytest.approx(0.5, abs=1e-6)
    # error.type belongs to the duration only.
    assert (
        "error.type"
        not in one_point(found["gen_ai.client.operation.time_to_first_chunk"]).attributes
    )
    assert trio.current_time() - start == pytest.approx(0.5, abs=1e-6)


async def test_hedging_losers_are_cancelled_spans(
    autojump_clock: MockClock, paced: Simulator, recorded: Recorded
) -> None:
    request = {"model": MODEL, "messages": MESSAGES, "max_tokens": 3}
    async with client_for(paced, recorded.telemetry()) as client:
        completion = await client.race_chat([request, request], hedge_delay=0.0)
    spans = recorded.spans()
    assert len(spans) == 2
    statuses = sorted(span.status.status_code.name for span in spans)
    assert statuses == ["ERROR", "UNSET"]
    winner = next(span for span in spans if span.status.status_code is StatusCode.UNSET)
    loser = next(span for span in spans if span.status.status_code is StatusCode.ERROR)
    assert dict(winner.attributes or {})["gen_ai.response.id"] == completion.id
    assert dict(loser.attributes or {})["error.type"] == "cancelled"
    duration = recorded.metrics()["gen_ai.client.operation.duration"]
    assert sorted(point.attributes.get("error.type", "") for point in points(duration)) == [
        "",
        "cancelled",
    ]


# ---- retries and failures ------------------------------------------------------------------


async def test_a_retried_request_has_one_event_per_retry(
    autojump_clock: MockClock, sim: Simulator, recorded: Recorded
) -> None:
    sim.inject_faults("status=503")
    async with client_for(sim, recorded.telemetry()) as client:
        completion = await client.chat(model=MODEL, messages=MESSAGES, max_tokens=4)
    assert completion.attempts == 2
    span = recorded.span()
    assert span.status.status_code is StatusCode.UNSET  # a retried error is not the outcome
    assert "error.type" not in dict(span.attributes or {})
    (event,) = span.events
    assert event.name == "holysheep_trio.retry"
    attributes = dict(event.attributes or {})
    assert attributes["holysheep_trio.attempt"] == 1
    assert 0.375 <= attributes["holysheep_trio.retry.delay"] <= 0.5  # 0.5 s minus the jitter
    assert attributes["error.type"] == "server"
    assert attributes["http.response.status_code"] == 503
    assert attributes["exception.type"] == "holysheep_trio.errors.OverloadedError"
    assert "503" in attributes["exception.message"]
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.start_time <= event.timestamp <= span.end_time
    duration = one_point(recorded.metrics()["gen_ai.client.operation.duration"])
    assert "error.type" not in duration.attributes
    # The back-off is part of the operation.
    assert duration.sum >= attributes["holysheep_trio.retry.delay"]
    assert_no_key(recorded)


async def test_an_authentication_failure(
    autojump_clock: MockClock, sim: Simulator, recorded: Recorded
) -> None:
    telemetry = recorded.telemetry(capture_content=True)
    async with client_for(sim, telemetry, api_key=WRONG_KEY) as client:
        with pytest.raises(hs.AuthenticationError) as info:
            await client.chat(model=MODEL, messages=MESSAGES, max_tokens=4)
    span = recorded.span()
    attributes = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == info.value.message
    assert attributes["error.type"] == "authentication"
    assert attributes["http.response.status_code"] == 401
    assert span.events == ()  # not retried: the error is the span's own
    assert attributes["gen_ai.output.messages"][0]["finish_reason"] == "error"
    found = recorded.metrics()
    duration = one_point(found["gen_ai.client.operation.duration"])
    assert dict(duration.attributes) == {
        **base_attributes(sim),
        "error.type": "authentication",
    }
    assert "gen_ai.client.operation.time_to_first_chunk" not in found or not points(
        found["gen_ai.client.operation.time_to_first_chunk"]
    )
    assert_no_key(recorded)


async def test_a_bad_request(autojump_clock: MockClock, sim: Simulator, recorded: Recorded) -> None:
    sim.inject_faults("status=400")
    async with client_for(sim, recorded.telemetry()) as client:
        with pytest.raises(hs.BadRequestError):
            await client.chat(model=MODEL, messages=MESSAGES, max_tokens=4)
    span = recorded.span()
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "invalid_request"
    duration = one_point(recorded.metrics()["gen_ai.client.operation.duration"])
    assert duration.attributes["error.type"] == "invalid_request"


async def test_an_error_raised_in_the_block_is_the_exception_name(
    autojump_clock: MockClock, sim: Simulator, recorded: Recorded
) -> None:
    async with client_for(sim, recorded.telemetry()) as client:
        with pytest.raises(KeyError):
            async with client.stream_chat(model=MODEL, messages=MESSAGES, max_tokens=4):
                raise KeyError("the caller's bug")
    span = recorded.span()
    assert dict(span.attributes or {})["error.type"] == "KeyError"
    assert span.status.status_code is StatusCode.ERROR


# ---- the Responses API -------------------------------------------------------------------


async def test_a_responses_stream(
    autojump_clock: MockClock, sim: Simulator, recorded: Recorded
) -> None:
    telemetry = recorded.telemetry(capture_content=True)
    async with (
        client_for(sim, telemetry) as client,
        client.stream_response(
            model=MODEL,
            input="Tell me about trio.",
            instructions="Be brief.",
            max_output_tokens=16,
            temperature=0.3,
        ) as stream,
    ):
        async for _ in stream:
            pass
    response = stream.response
    assert response.usage is not None
    span = recorded.span()
    attributes = dict(span.attributes or {})
    assert span.name == f"chat {MODEL}"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["openai.api.type"] == "responses"
    assert attributes["gen_ai.request.max_tokens"] == 16
    assert attributes["gen_ai.request.temperature"] == 0.3
    assert attributes["gen_ai.response.id"] == response.id
    assert attributes["gen_ai.response.id"].startswith("resp_")
    assert attributes["gen_ai.response.model"] == response.model
    assert response.status == "incomplete"
    assert attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert attributes["gen_ai.usage.output_tokens"] == 16
    assert attributes["gen_ai.system_instructions"] == ({"type": "text", "content": "Be brief."},)
    assert attributes["gen_ai.input.messages"] == (
        {"role": "user", "parts": ({"type": "text", "content": "Tell me about trio."},)},
    )
    output = attributes["gen_ai.output.messages"]
    assert output[0]["role"] == "assistant"
    assert output[0]["finish_reason"] == "length"
    assert "".join(part["content"] for part in output[0]["parts"]) == response.output_text
    found = recorded.metrics()
    ttft = one_point(found["gen_ai.client.operation.time_to_first_chunk"])
    assert ttft.sum == pytest.approx(response.ttft, abs=1e-9)
    usage = {
        p.attributes["gen_ai.token.type"]: p.sum for p in points(found["gen_ai.client.token.usage"])
    }
    assert usage == {"input": response.usage.input_tokens, "output": 16}
    assert_no_key(recorded)


# ---- content -------------------------------------------------------------------------------


async def test_content_only_with_capture_content(
    autojump_clock: MockClock, sim: Simulator, recorded: Recorded
) -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": {"type": "object"}},
        }
    ]
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "rainy"},
        hs.Message(role="user", content="And tomorrow?"),
    ]
    for capture in (False, True):
        async with client_for(sim, recorded.telemetry(capture_content=capture)) as client:
            completion = await client.chat(
                model=MODEL, messages=messages, max_tokens=4, tools=tools
            )
    without, with_content = recorded.spans()
    assert not any(
        key.startswith(("gen_ai.input", "gen_ai.output.", "gen_ai.system", "gen_ai.tool"))
        for key in dict(without.attributes or {})
    )
    attributes = dict(with_content.attributes or {})
    assert attributes["gen_ai.input.messages"] == (
        {"role": "system", "parts": ({"type": "text", "content": "You are terse."},)},
        {"role": "user", "parts": ({"type": "text", "content": "Weather in Paris?"},)},
        {
            "role": "assistant",
            "parts": (
                {
                    "type": "tool_call",
                    "id": "call_1",
                    "name": "get_weather",
                    "arguments": {"city": "Paris"},
                },
            ),
        },
        {
            "role": "tool",
            "parts": ({"type": "tool_call_response", "id": "call_1", "response": "rainy"},),
        },
        {"role": "user", "parts": ({"type": "text", "content": "And tomorrow?"},)},
    )
    assert attributes["gen_ai.tool.definitions"] == ({"type": "function", "name": "get_weather"},)
    assert "gen_ai.system_instructions" not in attributes  # chat: system messages are history
    output = attributes["gen_ai.output.messages"]
    assert len(output) == 1
    # The schema's finish reasons: the API's "tool_calls" is "tool_call".
    assert completion.finish_reason == "tool_calls"
    assert output[0]["finish_reason"] == "tool_call"
    parts = output[0]["parts"]
    text = "".join(part["content"] for part in parts if part["type"] == "text")
    assert text == completion.text
    calls = [part for part in parts if part["type"] == "tool_call"]
    assert [(call["id"], call["name"]) for call in calls] == [
        (call.id, call.name) for call in completion.tool_calls
    ]
    assert calls
    assert_no_key(recorded)


async def test_content_is_json_where_the_api_has_no_structured_values(
    autojump_clock: MockClock, sim: Simulator, recorded: Recorded
) -> None:
    telemetry = recorded.telemetry(capture_content=True)
    telemetry._structured = False  # an opentelemetry-api older than complex attribute values
    async with client_for(sim, telemetry) as client:
        completion = await client.chat(model=MODEL, messages=MESSAGES, max_tokens=3)
    attributes = dict(recorded.span().attributes or {})
    assert json.loads(attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": MESSAGES[0]["content"]}]}
    ]
    assert json.loads(attributes["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": completion.text}],
            "finish_reason": "length",
        }
    ]


def test_content_conversion_of_media_and_responses_items() -> None:
    part = otel._content_part(
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}
    )
    assert part == {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "AAA"}
    part = otel._content_part({"type": "input_image", "image_url": "https://x.test/cat.png"})
    assert part == {"type": "uri", "modality": "image", "uri": "https://x.test/cat.png"}
    part = otel._content_part(
        {"type": "input_audio", "input_audio": {"data": "QQ", "format": "wav"}}
    )
    assert part == {"type": "blob", "modality": "audio", "mime_type": "audio/wav", "content": "QQ"}
    assert otel._content_part({"type": "custom", "x": 1}) == {"type": "custom", "x": 1}
    messages = otel._responses_input(
        [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
        ]
    )
    assert messages == [
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]},
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": {}}],
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "42"}]},
    ]


def test_request_attributes() -> None:
    found = otel._request_attributes(
        "chat",
        {
            "messages": [],
            "max_completion_tokens": 9,
            "n": 3,
            "stop": "END",
            "top_k": 40,
            "response_format": {"type": "json_schema", "json_schema": {}},
            "service_tier": "flex",
            "temperature": True,  # not a number
        },
        openai=True,
    )
    assert found == {
        "gen_ai.request.max_tokens": 9,
        "gen_ai.request.choice.count": 3,
        "gen_ai.request.stop_sequences": ("END",),
        "gen_ai.request.top_k": 40,
        "gen_ai.output.type": "json",
        "openai.request.service_tier": "flex",
    }
    found = otel._request_attributes(
        "responses",
        {"max_output_tokens": 5, "text": {"format": {"type": "text"}}, "conversation": "conv_1"},
        openai=False,
    )
    assert found == {
        "gen_ai.request.max_tokens": 5,
        "gen_ai.output.type": "text",
        "gen_ai.conversation.id": "conv_1",
    }


async def test_provider_name_is_configurable(
    autojump_clock: MockClock, sim: Simulator, recorded: Recorded
) -> None:
    async with client_for(sim, recorded.telemetry(provider_name="deepseek")) as client:
        await client.chat(model=MODEL, messages=MESSAGES, max_tokens=2)
    attributes = dict(recorded.span().attributes or {})
    assert attributes["gen_ai.provider.name"] == "deepseek"
    assert "openai.api.type" not in attributes  # openai.* goes with the openai flavour only
    duration = one_point(recorded.metrics()["gen_ai.client.operation.duration"])
    assert duration.attributes["gen_ai.provider.name"] == "deepseek"


async def test_time_per_output_chunk_can_be_turned_off(
    autojump_clock: MockClock, sim: Simulator, recorded: Recorded
) -> None:
    async with client_for(sim, recorded.telemetry(time_per_output_chunk=False)) as client:
        completion = await client.chat(model=MODEL, messages=MESSAGES, max_tokens=8)
    found = recorded.metrics()
    assert "gen_ai.client.operation.time_per_output_chunk" not in found
    ttft = one_point(found["gen_ai.client.operation.time_to_first_chunk"])
    assert ttft.sum == pytest.approx(completion.ttft, abs=1e-9)
    assert one_point(found["gen_ai.client.operation.duration"]).count == 1


# ---- gauges --------------------------------------------------------------------------------


def collect_in_another_thread(reader: InMemoryMetricReader) -> MetricsData:
    """Collect as a PeriodicExportingMetricReader does: from a thread outside trio."""
    found: list[MetricsData | None] = []
    thread = threading.Thread(target=lambda: found.append(reader.get_metrics_data()))
    thread.start()
    thread.join()
    data = found[0]
    assert data is not None
    return data


async def test_pool_and_budget_gauges_read_from_another_thread(
    autojump_clock: MockClock, sim: Simulator, recorded: Recorded
) -> None:
    telemetry = recorded.telemetry()
    async with (
        hs.open_budget(daily=5.0) as budget,
        client_for(sim, telemetry, limits=hs.Limits(), budget=budget) as client,
    ):
        async with client.stream_chat(model=MODEL, messages=MESSAGES, max_tokens=3) as stream:
            found = recorded.metrics(collect_in_another_thread(recorded.reader))
            model = {"gen_ai.request.model": MODEL}
            active = one_point(found["holysheep_trio.pool.active"])
            assert (dict(active.attributes), active.value) == (model, 1)
            assert found["holysheep_trio.pool.active"].unit == "{request}"
            # Observable gauges, as the issue names them (the SDK's last-value Gauge points).
            for name in ("active", "waiting", "effective_limit"):
                assert isinstance(found[f"holysheep_trio.pool.{name}"].data, Gauge)
            assert one_point(found["holysheep_trio.pool.waiting"]).value == 0
            assert one_point(found["holysheep_trio.pool.effective_limit"]).value == 5
            reserved = {
                p.attributes["holysheep_trio.budget.period"]: p.value
                for p in points(found["holysheep_trio.budget.reserved"])
            }
            assert reserved["daily"] > 0
            assert reserved["daily"] == reserved["monthly"]
            async for _ in stream:
                pass
        report = await budget.report()
        found = recorded.metrics(collect_in_another_thread(recorded.reader))
        assert one_point(found["holysheep_trio.pool.active"]).value == 0
        spent = {
            p.attributes["holysheep_trio.budget.period"]: p.value
            for p in points(found["holysheep_trio.budget.spent"])
        }
        assert spent == {"daily": report.daily.spent, "monthly": report.monthly.spent}
        assert spent["daily"] > 0
        limits = {
            p.attributes["holysheep_trio.budget.period"]: p.value
            for p in points(found["holysheep_trio.budget.limit"])
        }
        assert limits == {"daily": 5.0}  # no monthly limit: no point
        assert found["holysheep_trio.budget.spent"].unit == "{USD}"
    # Closed clients are no longer observed.
    found = recorded.metrics(collect_in_another_thread(recorded.reader))
    assert "holysheep_trio.pool.active" not in found
    assert telemetry._bound() == ()


def test_pool_counts_need_no_trio() -> None:
    pool = Pool(hs.Limits())
    assert pool.counts() == ()

    async def admitted() -> tuple[tuple[str, int, int, int], ...]:
        async with pool.admit(MODEL):
            return await trio.to_thread.run_sync(pool.counts)

    assert trio.run(admitted) == ((MODEL, 1, 0, 5),)


# ---- configuration ---------------------------------------------------------------------------


def test_arguments_are_checked() -> None:
    with pytest.raises(TypeError):
        otel.Telemetry(capture_content="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        otel.Telemetry(provider_name=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        otel.Telemetry(time_per_output_chunk=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="provider_name"):
        otel.Telemetry(provider_name="")


def test_the_stability_opt_in_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http, gen_ai_latest_experimental")
    telemetry = otel.Telemetry()
    assert telemetry.latest_experimental
    assert telemetry.semconv_version == "1.41.0"
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    assert not otel.Telemetry().latest_experimental
    assert "semconv=1.41.0" in repr(telemetry)


async def test_a_failing_telemetry_never_breaks_a_request(
    autojump_clock: MockClock,
    sim: Simulator,
    recorded: Recorded,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a telemetry bug")

    telemetry = recorded.telemetry()
    async with client_for(sim, telemetry) as client:
        monkeypatch.setattr(otel, "_response_attributes", broken)
        completion = await client.chat(model=MODEL, messages=MESSAGES, max_tokens=2)
        assert completion.text
        assert len(recorded.spans()) == 1  # ended all the same
        monkeypatch.setattr(otel, "_request_attributes", broken)
        completion = await client.chat(model=MODEL, messages=MESSAGES, max_tokens=2)
        assert completion.text
    assert "telemetry" in caplog.text


@pytest.fixture
def global_providers(recorded: Recorded) -> Iterator[Recorded]:
    """Install ``recorded``'s providers as the global ones; restore the unset state after."""
    saved_tracer = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    internal = metrics._internal  # type: ignore[attr-defined]
    saved_meter = (internal._METER_PROVIDER, internal._METER_PROVIDER_SET_ONCE)
    try:
        yield recorded
    finally:
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved_tracer
        internal._METER_PROVIDER, internal._METER_PROVIDER_SET_ONCE = saved_meter


async def test_none_means_the_global_providers(
    autojump_clock: MockClock, sim: Simulator, global_providers: Recorded
) -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    metrics._internal._METER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None
    metrics._internal._METER_PROVIDER = None  # type: ignore[attr-defined]
    # Made before the providers are set: the API's proxies follow them once they are.
    telemetry = otel.Telemetry()
    trace.set_tracer_provider(global_providers.tracer_provider)
    metrics.set_meter_provider(global_providers.meter_provider)
    async with client_for(sim, telemetry) as client:
        await client.chat(model=MODEL, messages=MESSAGES, max_tokens=2)
    assert global_providers.span().name == f"chat {MODEL}"
    assert points(global_providers.metrics()["gen_ai.client.operation.duration"])


# ---- the core never imports opentelemetry -------------------------------------------------

SCRIPT = """
import sys
import trio
import holysheep_trio as hs
from holysheep_trio.simulator import open_simulator

async def main():
    async with open_simulator(api_key="sk-import-check-123", profile="fast") as sim:
        async with hs.open_client(api_key="sk-import-check-123", base_url=sim.base_url) as client:
            await client.chat(model="gpt-4.1", messages=[{"role": "user", "content": "hi"}],
                              max_tokens=2)
            await client.create_response(model="gpt-4.1", input="hi", max_output_tokens=16)

trio.run(main)
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "opentelemetry")
assert not loaded, loaded
assert "holysheep_trio.otel" not in sys.modules
assert "otel" not in hs.__all__
telemetry = hs.otel.Telemetry()
assert "opentelemetry.trace" in sys.modules
print("ok")
"""


def test_the_core_never_imports_opentelemetry() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
