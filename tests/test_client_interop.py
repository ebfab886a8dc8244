# Real providers' stream variants read right end to end: errors in chunks, encodings, reasoning.
from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import trio
from trio.testing import MockClock

import holysheep_trio as hs

KEY = "sk-interop-0123456789-secret"
MESSAGES = [{"role": "user", "content": "hi"}]
BASE = "https://api.example.test/v1"
SSE = {"content-type": "text/event-stream"}


class Script(httpx2.AsyncByteStream):
    """A response body from byte strings and (float) pauses in virtual time."""

    def __init__(self, items: Sequence[bytes | float]) -> None:
        self._items = list(items)

    def __aiter__(self) -> Script:  # type: ignore[override]
        return self

    async def __anext__(self) -> bytes:
        while self._items:
            item = self._items.pop(0)
            if isinstance(item, float):
                await trio.sleep(item)
                continue
            return item
        raise StopAsyncIteration


def data(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    payload = {
        "id": "c1",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return data(payload)


DONE = b"data: [DONE]\n\n"


@asynccontextmanager
async def serving(
    responses: Sequence[Callable[[], httpx2.Response]], **kwargs: Any
) -> AsyncIterator[tuple[hs.Client, list[httpx2.Request]]]:
    """A client whose requests get the given responses in order (made fresh per request)."""
    queue = list(responses)
    seen: list[httpx2.Request] = []

    def serve(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return queue.pop(0)()

    async with (
        httpx2.AsyncClient(transport=httpx2.MockTransport(serve)) as http_client,
        hs.open_client(http_client=http_client, api_key=KEY, base_url=BASE, **kwargs) as client,
    ):
        yield client, seen


def sse(
    *items: bytes | float, headers: dict[str, str] | None = None
) -> Callable[[], httpx2.Response]:
    return lambda: httpx2.Response(200, headers={**SSE, **(headers or {})}, stream=Script(items))


# ---- errors the provider puts inside the stream ------------------------------------------

OPENROUTER_ERROR = chunk(
    {"content": ""},
    "error",
    error={"code": 502, "message": "Provider returned error: upstream disconnected"},
)


async def test_an_error_chunk_with_choices_before_output_is_raised(
    autojump_clock: MockClock,
) -> None:
    async with serving([sse(chunk({"role": "assistant"}), OPENROUTER_ERROR)] * 3) as (client, seen):
        with pytest.raises(hs.APIStreamError) as info:
            await client.chat(model="m", messages=MESSAGES)
    assert info.value.status == 502
    assert "upstream disconnected" in str(info.value)
    assert len(seen) == 3  # a 502 is retried like one


async def test_an_error_chunk_after_output_interrupts_with_the_partial(
    autojump_clock: MockClock,
) -> None:
    async with serving([sse(chunk({"content": "Hel"}), OPENROUTER_ERROR)]) as (client, _):
        with pytest.raises(hs.StreamInterruptedError) as info:
            await client.chat(model="m", messages=MESSAGES)
    assert info.value.partial.text == "Hel"
    cause = info.value.__cause__
    assert isinstance(cause, hs.APIStreamError)
    assert cause.code == "502"


async def test_vllms_flat_error_object_is_typed_by_its_code(autojump_clock: MockClock) -> None:
    flat = data(
        {
            "object": "error",
            "message": "This model's maximum context length is 4096 tokens.",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    )
    async with serving([sse(flat)]) as (client, seen):
        with pytest.raises(hs.APIStreamError) as info:
            await client.chat(model="m", messages=MESSAGES)
    assert info.value.status == 400
    assert info.value.kind == "invalid_request"
    assert "maximum context length" in str(info.value)
    assert len(seen) == 1  # a 400 is not retried


async def test_a_200_with_a_json_error_body_is_that_error(autojump_clock: MockClock) -> None:
    def rate_limited() -> httpx2.Response:
        return httpx2.Response(
            200,
            json={"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-min"}},
        )

    async with serving([rate_limited, rate_limited], retry=hs.RetryPolicy(max_retries=1)) as (
        client,
        seen,
    ):
        with pytest.raises(hs.RateLimitError) as info:
            await client.chat(model="m", messages=MESSAGES)
    assert "free-models-per-min" in str(info.value)
    assert info.value.status == 429
    assert len(seen) == 2  # retried as a 429 is


# ---- bodies compressed although we asked for identity ------------------------------------

STREAM = chunk({"role": "assistant"}) + chunk({"content": "Hello"}) + chunk({}, "stop") + DONE


@pytest.mark.parametrize(
    ("coding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda body: zlib.compressobj(wbits=-15).compress(body) + b""),
    ],
)
async def test_a_compressed_body_is_decoded(
    autojump_clock: MockClock, coding: str, compress: Callable[[bytes], bytes]
) -> None:
    if coding == "deflate" and compress is not zlib.compress:
        raw = zlib.compressobj(wbits=-15)
        body = raw.compress(STREAM) + raw.flush()
    else:
        body = compress(STREAM)
    pieces = [body[index : index + 7] for index in range(0, len(body), 7)]
    async with serving([sse(*pieces, headers={"content-encoding": coding})]) as (client, _):
        completion = await client.chat(model="m", messages=MESSAGES)
    assert completion.text == "Hello"
    assert completion.finish_reason == "stop"


async def test_an_unknown_content_encoding_is_a_clear_error_not_retried(
    autojump_clock: MockClock,
) -> None:
    async with serving([sse(b"\x0b\x02\x80", headers={"content-encoding": "br"})] * 3) as (
        client,
        seen,
    ):
        with pytest.raises(hs.StreamProtocolError, match="'br'"):
            await client.chat(model="m", messages=MESSAGES)
    assert len(seen) == 1


async def test_a_decompression_bomb_is_read_in_bounded_pieces(autojump_clock: MockClock) -> None:
    # 64 MiB of comments (not progress) then a chunk: inflated piece by piece, never at once.
    comments = (b": " + b"x" * 1022 + b"\n") * (64 * 1024)
    bomb = gzip.compress(comments + b"\n" + STREAM)
    assert len(bomb) < len(comments) // 400
    async with serving([sse(bomb, headers={"content-encoding": "gzip"})]) as (client, _):
        tracemalloc.start()
        try:
            completion = await client.chat(model="m", messages=MESSAGES)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert completion.text == "Hello"
    assert peak < 8 * 1024 * 1024  # a few pieces, never the 64 MiB


# ---- reasoning ---------------------------------------------------------------------------


async def test_deepseek_reasoning_content_is_kept(autojump_clock: MockClock) -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "total_tokens": 30,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 12},
    }
    items = [
        chunk({"role": "assistant", "content": None, "reasoning_content": ""}),
        chunk({"content": None, "reasoning_content": "Let me "}),
        chunk({"content": None, "reasoning_content": "think."}),
        chunk({"content": "Four."}),
        chunk({}, "stop"),
        data({"id": "c1", "model": "m", "choices": [], "usage": usage}),
        DONE,
    ]
    async with (
        serving([sse(*items)]) as (client, _),
        client.stream_chat(model="m", messages=MESSAGES) as stream,
    ):
        reasoning = [c.reasoning async for c in stream]
    completion = stream.completion
    assert completion.reasoning == "Let me think."
    assert completion.text == "Four."
    assert "Let me " in reasoning
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 4
    assert completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 12


async def test_openrouter_reasoning_is_kept(autojump_clock: MockClock) -> None:
    items = [
        chunk({"role": "assistant", "content": "", "reasoning": "Thinking"}),
        chunk({"content": "", "reasoning": " hard"}),
        chunk({"content": "Done"}, "stop"),
        DONE,
    ]
    async with serving([sse(*items)]) as (client, _):
        completion = await client.chat(model="m", messages=MESSAGES)
    assert completion.reasoning == "Thinking hard"
    assert completion.text == "Done"


async def test_a_model_that_thinks_longer_than_first_token_is_not_killed(
    autojump_clock: MockClock,
) -> None:
    items: list[bytes | float] = [chunk({"role": "assistant"})]
    for _ in range(10):
        items += [0.5, chunk({"reasoning_content": "hmm "})]  # 5 s of thinking
    items += [chunk({"content": "Answer"}), chunk({}, "stop"), DONE]
    async with serving([sse(*items)] * 2, timeouts=hs.Timeouts(first_token=1.0, idle=1.0)) as (
        client,
        seen,
    ):
        completion = await client.chat(model="m", messages=MESSAGES)
    assert completion.text == "Answer"
    assert completion.attempts == 1
    assert len(seen) == 1
    assert completion.ttft is not None
    assert completion.ttft < 1.0  # the first reasoning delta is the first token


# ---- tool calls without a usable index ---------------------------------------------------


async def test_tool_calls_without_index_are_not_merged(autojump_clock: MockClock) -> None:
    # Gemini's OpenAI-compatible endpoint sends each call whole, without an index.
    def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
        return {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }

    items = [
        chunk({"role": "assistant", "tool_calls": [call("c-1", "weather", '{"city":"Paris"}')]}),
        chunk({"tool_calls": [call("c-2", "weather", '{"city":"Rome"}')]}),
        chunk({}, "tool_calls"),
        DONE,
    ]
    async with serving([sse(*items)]) as (client, _):
        completion = await client.chat(model="m", messages=MESSAGES)
    assert [(c.id, c.arguments) for c in completion.tool_calls] == [
        ("c-1", '{"city":"Paris"}'),
        ("c-2", '{"city":"Rome"}'),
    ]
