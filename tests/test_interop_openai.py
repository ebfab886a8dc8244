# Interop: the official openai SDK, sync and async, reads every simulator reply without a fault.
"""The official ``openai`` SDK against the simulator: chat completions (streamed and whole,
with usage, ``n``, tools and structured output, the ``parse()`` / ``stream()`` helpers), the
Responses API (``create`` streamed and whole, ``stream()``, ``parse()``, chains), models,
every error status and retries honouring ``Retry-After``.

The sync client runs against a simulator in a background thread (the simulator is a trio
server); ``AsyncOpenAI`` runs under trio against an in-loop simulator (with a virtual clock,
so retry delays are measured exactly) and under asyncio against the threaded one. pytest turns
every warning into an error, so "no warning" is checked by every test.
"""

from __future__ import annotations

import asyncio
import enum
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import httpx2
import openai
import pydantic
import pytest
import trio
from trio.testing import MockClock

from holysheep_trio.simulator import Simulator, open_simulator

API_KEY = "sk-interop"
USER = [{"role": "user", "content": "Tell me about sheep."}]
T = TypeVar("T")


class ThreadedSimulator:
    """A simulator running ``trio.run`` in a background thread, for synchronous clients."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            async with open_simulator(api_key=API_KEY, **self._options) as sim:
                self.sim = sim
                self._token = trio.lowlevel.current_trio_token()
                self._stop = trio.Event()
                self._ready.set()
                await self._stop.wait()

        try:
            trio.run(main)
        except BaseException as exc:  # reported by stop()
            self._error = exc
            self._ready.set()

    def start(self) -> ThreadedSimulator:
        self._thread.start()
        assert self._ready.wait(30), "the simulator did not start"
        if self._error is not None:
            raise self._error
        return self

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function`` in the simulator's thread (its state is not shared across threads)."""
        return trio.from_thread.run_sync(function, *args, trio_token=self._token)

    def stop(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)
        assert not self._thread.is_alive()
        if self._error is not None:
            raise self._error
        assert self.sim.stats().internal_errors == 0


@pytest.fixture
def threaded() -> Iterator[ThreadedSimulator]:
    simulator = ThreadedSimulator(profile="fast").start()
    yield simulator
    simulator.stop()


@pytest.fixture
def sdk(threaded: ThreadedSimulator) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=threaded.sim.base_url, api_key=API_KEY, max_retries=0) as client:
        yield client


# ---- structured output and tools ----------------------------------------------------------


class Mood(str, enum.Enum):
    calm = "calm"
    curious = "curious"


class Sheep(pydantic.BaseModel):
    name: str
    age: int
    weight_kg: float
    mood: Mood
    vaccinated: bool
    nickname: str | None


class Flock(pydantic.BaseModel):
    shepherd: str
    sheep: list[Sheep]
    meadow: dict[str, int] | None = pydantic.Field(default=None)


class GetWeather(pydantic.BaseModel):
    city: str
    days: int


class FindSheep(pydantic.BaseModel):
    name: str
    near: list[str]


WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
CHAT_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA},
    },
    {
        "type": "function",
        "function": {
            "name": "count_sheep",
            "parameters": {
                "type": "object",
                "properties": {"meadow": {"type": "string"}, "exact": {"type": "boolean"}},
                "required": ["meadow", "exact"],
            },
        },
    },
]
RESPONSE_TOOLS: list[Any] = [
    {"type": "function", "name": tool["function"]["name"], **tool["function"]}
    for tool in CHAT_TOOLS
]


def check_weather_arguments(arguments: str) -> None:
    value = json.loads(arguments)
    assert isinstance(value["city"], str)
    assert value["unit"] in ("celsius", "fahrenheit")
    if "days" in value:
        assert isinstance(value["days"], int)
        assert 1 <= value["days"] <= 7


# ---- chat completions, sync ---------------------------------------------------------------


def test_streaming_with_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="gpt-4.1",
        messages=USER,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    finish_reasons = []
    usage = None
    with stream:
        for chunk in stream:
            assert chunk.model == "gpt-4.1-2025-04-14"
            assert chunk.service_tier == "default"
            if chunk.choices:
                delta = chunk.choices[0].delta
                pieces.append(delta.content or "")
                if chunk.choices[0].finish_reason:
                    finish_reasons.append(chunk.choices[0].finish_reason)
            if chunk.usage is not None:
                usage = chunk.usage
    assert finish_reasons == ["stop"]  # the reply ended by itself
    assert usage is not None
    assert usage.completion_tokens == len([piece for piece in pieces if piece])
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_whole_completion(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="claude-sonnet-4.5", messages=USER)  # type: ignore[arg-type]
    choice = completion.choices[0]
    assert completion.model == "claude-sonnet-4-5-20250929"
    assert choice.finish_reason == "stop"
    assert choice.message.content
    assert choice.message.refusal is None
    assert choice.message.annotations == []
    assert completion.usage is not None
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    capped = sdk.chat.completions.create(model="claude-sonnet-4.5", messages=USER, max_tokens=5)  # type: ignore[arg-type]
    assert capped.choices[0].finish_reason == "length"
    assert choice.message.content.startswith(capped.choices[0].message.content or "")


def test_n_choices(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="gpt-4.1", messages=USER, n=3)  # type: ignore[arg-type]
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert len({choice.message.content for choice in completion.choices}) == 3
    with sdk.chat.completions.stream(model="gpt-4.1", messages=USER, n=3) as stream:  # type: ignore[arg-type]
        streamed = stream.get_final_completion()
    assert [choice.message.content for choice in streamed.choices] == [
        choice.message.content for choice in completion.choices
    ]


def test_models_list_and_retrieve(sdk: openai.OpenAI) -> None:
    models = sdk.models.list()
    assert [model.id for model in models.data] == [
        "gpt-4.1",
        "claude-sonnet-4.5",
        "gemini-2.5-flash",
        "deepseek-v3.2",
    ]
    model = sdk.models.retrieve("deepseek-v3.2")
    assert (model.id, model.owned_by) == ("deepseek-v3.2", "deepseek")
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve("gpt-9")
    assert caught.value.code == "model_not_found"


def test_parse_with_a_pydantic_model(sdk: openai.OpenAI) -> None:
    for model in ("gpt-4.1", "gemini-2.5-flash", "deepseek-v3.2"):
        completion = sdk.chat.completions.parse(
            model=model,
            messages=USER,  # type: ignore[arg-type]
            response_format=Flock,
        )
        message = completion.choices[0].message
        assert isinstance(message.parsed, Flock)
        assert Flock.model_validate_json(message.content or "") == message.parsed


def test_parse_with_a_raw_json_schema_and_json_object(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="gpt-4.1",
        messages=USER,  # type: ignore[arg-type]
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": WEATHER_SCHEMA, "strict": True},
        },
    )
    check_weather_arguments(completion.choices[0].message.content or "")
    anything = sdk.chat.completions.create(
        model="gpt-4.1",
        messages=USER,  # type: ignore[arg-type]
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(anything.choices[0].message.content or ""), dict)


def test_stream_helper_get_final_completion(sdk: openai.OpenAI) -> None:
    with sdk.chat.completions.stream(
        model="gpt-4.1",
        messages=USER,  # type: ignore[arg-type]
        response_format=Flock,
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    assert len(deltas) > 5  # streamed in pieces
    assert isinstance(final.choices[0].message.parsed, Flock)
    assert "".join(deltas) == final.choices[0].message.content
    with sdk.chat.completions.stream(model="gemini-2.5-flash", messages=USER) as stream:  # type: ignore[arg-type]
        text = stream.get_final_completion().choices[0].message.content
    assert text


def test_tool_calls_with_the_parse_helper(sdk: openai.OpenAI) -> None:
    tools = [openai.pydantic_function_tool(GetWeather), openai.pydantic_function_tool(FindSheep)]
    completion = sdk.chat.completions.parse(
        model="gpt-4.1",
        messages=USER,  # type: ignore[arg-type]
        tools=tools,
        tool_choice="required",
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert calls
    for call in calls:
        assert call.type == "function"
        assert isinstance(call.function.parsed_arguments, (GetWeather, FindSheep))
    named = sdk.chat.completions.parse(
        model="gpt-4.1",
        messages=USER,  # type: ignore[arg-type]
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "FindSheep"}},
    )
    (call,) = named.choices[0].message.tool_calls or []
    assert isinstance(call.function.parsed_arguments, FindSheep)


def test_streamed_tool_calls_accumulate(sdk: openai.OpenAI) -> None:
    with sdk.chat.completions.stream(
        model="deepseek-v3.2",
        messages=USER,  # type: ignore[arg-type]
        tools=CHAT_TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    ) as stream:
        argument_deltas = [
            event for event in stream if event.type == "tool_calls.function.arguments.delta"
        ]
        final = stream.get_final_completion()
    assert len(argument_deltas) > 2
    (call,) = final.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    check_weather_arguments(call.function.arguments)
    assert final.choices[0].finish_reason == "tool_calls"


def test_reasoning_models_report_reasoning_tokens(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="gpt-4.1",
        messages=USER,  # type: ignore[arg-type]
        reasoning_effort="low",
    )
    assert completion.usage is not None
    details = completion.usage.completion_tokens_details
    assert details is not None
    assert 32 <= (details.reasoning_tokens or 0) <= 96


# ---- errors and retries -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (409, openai.ConflictError),
        (413, openai.APIStatusError),
        (422, openai.UnprocessableEntityError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (502, openai.InternalServerError),
        (503, openai.InternalServerError),
        (529, openai.InternalServerError),
    ],
)
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_every_error_status_maps_to_the_sdks_error(
    sdk: openai.OpenAI, status: int, error_class: type[openai.APIStatusError], api: str
) -> None:
    fault = {"x-simulator-fault": f"status={status}"}

    def call() -> object:
        if api == "chat":
            return sdk.chat.completions.create(
                model="gpt-4.1",
                messages=USER,  # type: ignore[arg-type]
                extra_headers=fault,
            )
        return sdk.responses.create(model="gpt-4.1", input="hi", extra_headers=fault)

    with pytest.raises(error_class) as caught:
        call()
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict)
    assert caught.value.message
    assert caught.value.request_id is not None
    assert caught.value.request_id.startswith("req_")


def test_the_simulators_own_errors(threaded: ThreadedSimulator) -> None:
    base_url = threaded.sim.base_url
    with (
        openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0) as wrong,
        pytest.raises(openai.AuthenticationError) as auth,
    ):
        wrong.models.list()
    assert auth.value.code == "invalid_api_key"
    assert "sk-wrong" not in str(auth.value)
    with openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0) as sdk:
        with pytest.raises(openai.NotFoundError) as missing:
            sdk.chat.completions.create(model="gpt-9", messages=USER)  # type: ignore[arg-type]
        assert missing.value.param == "model"
        with pytest.raises(openai.BadRequestError) as invalid:
            sdk.chat.completions.create(model="gpt-4.1", messages=USER, temperature=2.5)  # type: ignore[arg-type]
        assert (invalid.value.code, invalid.value.param) == (
            "decimal_above_max_value",
            "temperature",
        )
        with pytest.raises(openai.BadRequestError) as choice:
            sdk.chat.completions.create(model="gpt-4.1", messages=USER, tool_choice="auto")  # type: ignore[arg-type]
        assert (choice.value.code, choice.value.param) == ("invalid_value", "tool_choice")
        with pytest.raises(openai.APIStatusError) as large:
            sdk.models.list(extra_headers={"x-padding": "x" * (256 * 1024)})
        assert large.value.status_code == 431
        stream = sdk.chat.completions.create(
            model="gpt-4.1",
            messages=USER,  # type: ignore[arg-type]
            stream=True,
            extra_headers={"x-simulator-fault": "error_event_after=3"},
        )
        with stream, pytest.raises(openai.APIError, match="server had an error"):
            list(stream)


def test_retries_honour_retry_after(threaded: ThreadedSimulator) -> None:
    threaded.call(
        lambda: threaded.sim.inject_faults(
            "status=503;retry_after_ms=5", "status=429;retry_after=0.01"
        )
    )
    with openai.OpenAI(base_url=threaded.sim.base_url, api_key=API_KEY, max_retries=2) as sdk:
        completion = sdk.chat.completions.create(model="gpt-4.1", messages=USER)  # type: ignore[arg-type]
        assert completion.choices[0].finish_reason == "stop"
        threaded.call(
            lambda: threaded.sim.inject_faults(
                "status=503;should_retry=false", endpoint="responses"
            )
        )
        with pytest.raises(openai.InternalServerError):
            sdk.responses.create(model="gpt-4.1", input="hi")
    stats = threaded.call(threaded.sim.stats)
    assert stats.requests["gpt-4.1"] == 4  # 3 chat attempts, then 1 response not retried
    assert stats.faults_served["status"] == 3


# ---- the Responses API, sync --------------------------------------------------------------


def test_responses_create_streamed_text(sdk: openai.OpenAI) -> None:
    stream = sdk.responses.create(model="gpt-4.1", input="Hello", stream=True)
    events = []
    with stream:
        for event in stream:
            events.append(event)
    types = [event.type for event in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == deltas
    assert final.status == "completed"
    assert final.model == "gpt-4.1-2025-04-14"
    assert final.id.startswith("resp_")
    assert final.output[0].id.startswith("msg_")  # type: ignore[union-attr]
    assert final.usage is not None
    assert final.usage.output_tokens == len(
        [event for event in events if event.type == "response.output_text.delta"]
    )


def test_responses_create_whole(sdk: openai.OpenAI) -> None:
    response = sdk.responses.create(
        model="gemini-2.5-flash", input="Hello", instructions="Be brief"
    )
    assert response.status == "completed"
    assert response.output_text
    assert response.instructions == "Be brief"
    assert response.usage is not None
    assert response.usage.input_tokens_details.cached_tokens == 0


def test_responses_tools_reasoning_and_schema_parse_in_the_sdk(sdk: openai.OpenAI) -> None:
    stream = sdk.responses.create(
        model="deepseek-v3.2",
        input="Weather?",
        tools=RESPONSE_TOOLS,
        tool_choice="required",
        reasoning={"effort": "medium", "summary": "auto"},
        stream=True,
    )
    with stream:
        events = list(stream)
    final = events[-1].response  # type: ignore[union-attr]
    kinds = [item.type for item in final.output]
    assert kinds[0] == "reasoning"
    assert set(kinds[1:]) == {"function_call"}
    for item in final.output[1:]:
        assert item.id.startswith("fc_")  # type: ignore[union-attr]
        assert item.call_id.startswith("call_")  # type: ignore[union-attr]
        if item.name == "get_weather":  # type: ignore[union-attr]
            check_weather_arguments(item.arguments)  # type: ignore[union-attr]
    assert final.output[0].id.startswith("rs_")  # type: ignore[union-attr]
    assert final.usage is not None
    assert final.usage.output_tokens_details.reasoning_tokens >= 96

    with sdk.responses.stream(
        model="gpt-4.1",
        input="A flock, please.",
        text_format=Flock,
    ) as helper:
        for _ in helper:
            pass
        parsed = helper.get_final_response()
    assert isinstance(parsed.output_parsed, Flock)

    parsed_tools = sdk.responses.parse(
        model="gpt-4.1",
        input="Where is Dolly?",
        tools=[openai.pydantic_function_tool(FindSheep)],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "FindSheep"},
    )
    (call,) = parsed_tools.output
    assert isinstance(call.parsed_arguments, FindSheep)  # type: ignore[union-attr]


def test_responses_chain_with_previous_response_id(sdk: openai.OpenAI) -> None:
    first = sdk.responses.create(model="gpt-4.1", input="One")
    second = sdk.responses.create(model="gpt-4.1", input="Two", previous_response_id=first.id)
    assert first.usage is not None
    assert second.usage is not None
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.total_tokens  # the chain is billed
    unstored = sdk.responses.create(model="gpt-4.1", input="Three", store=False)
    for missing in (unstored.id, "resp_unknown"):
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.responses.create(model="gpt-4.1", input="Four", previous_response_id=missing)
        assert caught.value.code == "previous_response_not_found"
        assert caught.value.param == "previous_response_id"


def test_responses_incomplete_and_in_band_failures(sdk: openai.OpenAI) -> None:
    stream = sdk.responses.create(model="gpt-4.1", input="Hi", max_output_tokens=16, stream=True)
    with stream:
        events = list(stream)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details is not None  # type: ignore[union-attr]
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"  # type: ignore[union-attr]

    stream = sdk.responses.create(
        model="gpt-4.1",
        input="Hi",
        stream=True,
        extra_headers={"x-simulator-fault": "failed_after=3"},
    )
    with stream:
        events = list(stream)
    assert events[-1].type == "response.failed"
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.code == "server_error"

    stream = sdk.responses.create(
        model="gpt-4.1",
        input="Hi",
        stream=True,
        extra_headers={"x-simulator-fault": "error_event_after=2;status=429"},
    )
    with stream:
        events = list(stream)
    assert events[-1].type == "error"
    assert events[-1].code == "rate_limit_exceeded"  # type: ignore[union-attr]
    assert [event.sequence_number for event in events] == list(range(len(events)))


# ---- AsyncOpenAI under trio and under asyncio ---------------------------------------------


@pytest.fixture
async def sim_in_loop() -> AsyncIterator[Simulator]:
    async with open_simulator(api_key=API_KEY, profile="fast") as simulator:
        yield simulator
        assert simulator.stats().internal_errors == 0


async def test_async_client_under_trio_honours_retry_after_in_virtual_time(
    autojump_clock: MockClock,
) -> None:
    async with open_simulator(api_key=API_KEY, profile="fast") as sim:
        sim.inject_faults("status=503;retry_after=2", "status=429;retry_after_ms=1500")
        sim.inject_faults("status=502;retry_after_ms=250", endpoint="responses")
        async with openai.AsyncOpenAI(base_url=sim.base_url, api_key=API_KEY, max_retries=2) as sdk:
            start = trio.current_time()
            completion = await sdk.chat.completions.create(
                model="gemini-2.5-flash",
                messages=USER,  # type: ignore[arg-type]
            )
            # 2 s, then 1.5 s, as the headers asked (the fast profile answers at once).
            assert 3.5 <= trio.current_time() - start < 3.6
            assert completion.choices[0].finish_reason == "stop"
            start = trio.current_time()
            stream = await sdk.responses.create(model="gemini-2.5-flash", input="hi", stream=True)
            async with stream:
                events = [event async for event in stream]
            assert 0.25 <= trio.current_time() - start < 0.35
            assert events[-1].type == "response.completed"
            async with sdk.responses.stream(model="gemini-2.5-flash", input="hi") as helper:
                final = await helper.get_final_response()
            assert final.output_text
        assert sim.stats().requests["gemini-2.5-flash"] == 6


# The SDK stops reading its internal async generators at `[DONE]` without closing them; trio's
# async-generator finalizer reports each one (at whatever moment the garbage collector finds
# them) as a ResourceWarning. The Responses API has no `[DONE]`, and the same SDK reads it
# under trio with no warning at all (the test above); under asyncio nothing is reported.
SDK_DONE_WARNING = "ignore:Async generator '(openai|httpx2|httpcore2)[.]:ResourceWarning"


@pytest.mark.filterwarnings(SDK_DONE_WARNING)
async def test_async_client_under_trio_streams_chat(autojump_clock: MockClock) -> None:
    async with (
        open_simulator(api_key=API_KEY) as sim,
        openai.AsyncOpenAI(base_url=sim.base_url, api_key=API_KEY, max_retries=0) as sdk,
    ):
        stream = await sdk.chat.completions.create(
            model="deepseek-v3.2",
            messages=USER,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            reasoning_effort="low",
        )
        async with stream:
            chunks = [chunk async for chunk in stream]
        reasoning = [
            chunk.choices[0].delta.model_extra.get("reasoning_content")  # type: ignore[union-attr]
            for chunk in chunks
            if chunk.choices and chunk.choices[0].delta.model_extra
        ]
        usage = chunks[-1].usage
        assert usage is not None
        assert usage.completion_tokens_details is not None
        # DeepSeek streams its reasoning in `reasoning_content`; every piece is billed.
        assert usage.completion_tokens_details.reasoning_tokens == len([r for r in reasoning if r])


def test_async_client_under_asyncio(threaded: ThreadedSimulator) -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(
            base_url=threaded.sim.base_url, api_key=API_KEY, max_retries=0
        ) as sdk:
            stream = await sdk.chat.completions.create(
                model="gpt-4.1",
                messages=USER,  # type: ignore[arg-type]
                stream=True,
            )
            async with stream:
                texts = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
            assert "".join(text or "" for text in texts)
            parsed = await sdk.chat.completions.parse(
                model="gpt-4.1",
                messages=USER,  # type: ignore[arg-type]
                response_format=Flock,
            )
            assert isinstance(parsed.choices[0].message.parsed, Flock)
            async with sdk.responses.stream(
                model="gpt-4.1", input="hi", text_format=Flock
            ) as helper:
                final = await helper.get_final_response()
            assert isinstance(final.output_parsed, Flock)
            names = [model.id async for model in sdk.models.list()]
            assert names[0] == "gpt-4.1"

    asyncio.run(main())


async def test_async_client_under_trio_n_choices_calling_tools(sim_in_loop: Simulator) -> None:
    async with openai.AsyncOpenAI(
        base_url=sim_in_loop.base_url, api_key=API_KEY, max_retries=0
    ) as sdk:
        completion = await sdk.chat.completions.create(
            model="gpt-4.1",
            messages=USER,  # type: ignore[arg-type]
            n=2,
            tools=CHAT_TOOLS,
            tool_choice="required",
        )
    for choice in completion.choices:
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls


# ---- every event validates against the SDK's own types ------------------------------------

RESPONSE_VARIANTS: list[tuple[dict[str, Any], str]] = [
    ({}, ""),
    ({"instructions": "Be brief.", "temperature": 0.2, "top_p": 0.9}, ""),
    ({"max_output_tokens": 16}, ""),
    ({"tools": RESPONSE_TOOLS, "tool_choice": "required"}, ""),
    ({"tools": RESPONSE_TOOLS, "tool_choice": {"type": "function", "name": "count_sheep"}}, ""),
    ({"tools": RESPONSE_TOOLS, "parallel_tool_calls": False}, ""),
    ({"reasoning": {"effort": "low", "summary": "detailed"}}, ""),
    ({"reasoning": {"effort": "medium"}, "max_output_tokens": 40}, ""),
    ({"text": {"format": {"type": "json_object"}}}, ""),
    (
        {
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "w",
                    "schema": WEATHER_SCHEMA,
                    "strict": True,
                }
            }
        },
        "",
    ),
    ({"store": False, "metadata": {"run": "interop"}, "user": "u-1"}, ""),
    ({}, "failed_after=5"),
    ({"reasoning": {"effort": "low", "summary": "auto"}}, "failed_after=3"),
    ({}, "error_event_after=2;status=503"),
]


@pytest.mark.parametrize(("fields", "fault"), RESPONSE_VARIANTS)
async def test_every_responses_event_validates_against_the_sdk_types(
    sim_in_loop: Simulator, fields: dict[str, Any], fault: str
) -> None:
    events_adapter = pydantic.TypeAdapter(openai.types.responses.ResponseStreamEvent)
    headers = {"authorization": f"Bearer {API_KEY}"}
    if fault:
        headers["x-simulator-fault"] = fault
    async with httpx2.AsyncClient(base_url=sim_in_loop.base_url, headers=headers) as http:
        for stream in (True, False):
            body = {"model": "deepseek-v3.2", "input": "hi", "stream": stream, **fields}
            response = await http.post("/responses", json=body)
            if not stream:
                if not fault:
                    openai.types.responses.Response.model_validate(response.json())
                continue
            for block in response.text.split("\n\n")[:-1]:
                data = block.split("\n")[1].removeprefix("data: ")
                # Strict validation, nested response objects included.
                events_adapter.validate_json(data)


CHAT_VARIANTS: list[dict[str, Any]] = [
    {},
    {"max_tokens": 3},
    {"n": 2},
    {"tools": CHAT_TOOLS, "tool_choice": "required"},
    {"response_format": {"type": "json_object"}},
    {"reasoning_effort": "low"},
    {"reasoning_effort": "low", "n": 2, "tools": CHAT_TOOLS},
]


@pytest.mark.parametrize("fields", CHAT_VARIANTS)
@pytest.mark.parametrize("model", ["gpt-4.1", "deepseek-v3.2"])
async def test_every_chat_chunk_validates_against_the_sdk_types(
    sim_in_loop: Simulator, fields: dict[str, Any], model: str
) -> None:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    headers = {"authorization": f"Bearer {API_KEY}"}
    async with httpx2.AsyncClient(base_url=sim_in_loop.base_url, headers=headers) as http:
        body = {"model": model, "messages": USER, **fields}
        ChatCompletion.model_validate((await http.post("/chat/completions", json=body)).json())
        streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
        response = await http.post("/chat/completions", json=streamed)
        blocks = response.text.split("\n\n")[:-1]
        assert blocks[-1] == "data: [DONE]"
        for block in blocks[:-1]:
            ChatCompletionChunk.model_validate_json(block.removeprefix("data: "))
