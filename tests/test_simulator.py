# Tests of the simulator over real loopback sockets: endpoints, profiles, faults, robustness.
from __future__ import annotations

import itertools
import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import attrs
import h11
import httpx2
import openai
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from holysheep_trio.simulator import (
    FAULT_SYNTAX,
    MAX_BODY_BYTES,
    PROFILES,
    FaultSpecError,
    ModelProfile,
    Profile,
    Simulator,
    SimulatorStats,
    fast_profile,
    open_simulator,
    realistic_profile,
)
from holysheep_trio.simulator._faults import FaultPlan, parse_faults
from holysheep_trio.simulator._wire import (
    VOCABULARY,
    ChatRequest,
    ChunkEncoder,
    TokenSource,
    estimate_prompt_tokens,
)

API_KEY = "sk-test-key-123"
AUTH = {"authorization": f"Bearer {API_KEY}"}
MODELS = ["gpt-4.1", "claude-sonnet-4.5", "gemini-2.5-flash", "deepseek-v3.2"]
USER = [{"role": "user", "content": "Say hello to the sheep."}]


def chat_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "Say hello to the sheep."}],
        "stream": True,
        "max_tokens": 8,
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with open_simulator(api_key=API_KEY, profile="fast") as simulator:
        yield simulator
        assert simulator.stats().internal_errors == 0


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[httpx2.AsyncClient]:
    # No client timeouts: faults stall for long stretches of virtual time.
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=None) as http:
        yield http


def usage_with_details(
    prompt: int, completion: int, *, reasoning: int = 0, cached: int = 0
) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def parse_stream(body: bytes) -> tuple[list[Any], list[bytes]]:
    """Split an event-stream body into decoded data payloads ("[DONE]" kept as a str) and
    comment lines; asserts the framing is what OpenAI sends."""
    assert body.endswith(b"\n\n") or not body
    payloads: list[Any] = []
    comments: list[bytes] = []
    for event in body.split(b"\n\n")[:-1]:
        if event.startswith(b":"):
            comments.append(event)
            continue
        assert event.startswith(b"data: "), event[:80]
        data = event[len(b"data: ") :]
        payloads.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return payloads, comments


def content_of(payloads: list[Any]) -> str:
    return "".join(
        chunk["choices"][0]["delta"].get("content") or ""
        for chunk in payloads
        if isinstance(chunk, dict) and chunk.get("choices")
    )


async def read_until_broken(response: httpx2.Response) -> tuple[bytes, Exception | None]:
    """Read a streamed body to its end or to the transport error that cuts it."""
    received = bytearray()
    try:
        async with aclosing(response.aiter_raw()) as chunks:
            async for chunk in chunks:
                received += chunk
    except httpx2.TransportError as exc:
        return bytes(received), exc
    return bytes(received), None


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll in virtual time (use with ``autojump_clock``) until the server caught up."""
    with trio.fail_after(30):
        while not predicate():  # noqa: ASYNC110 - the condition is a stats snapshot, no event
            await trio.sleep(0.01)


async def raw_exchange(sim: Simulator, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes; for what httpx2 cannot produce."""
    stream = await trio.open_tcp_stream(sim.host, sim.port)
    async with stream:
        await stream.send_all(request)
        received = bytearray()
        with trio.fail_after(30):
            while data := await stream.receive_some(65536):
                received += data
    return bytes(received)


async def start_raw_chat(
    sim: Simulator, body: dict[str, Any], fault: str = ""
) -> trio.SocketStream:
    """Send a chat request on a raw socket; the caller reads and leaves whenever it likes.

    (httpx2 leaks an internal async generator when a client leaves a stream early.)
    """
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
    )
    if fault:
        head += f"x-simulator-fault: {fault}\r\n"
    stream = await trio.open_tcp_stream(sim.host, sim.port)
    await stream.send_all(head.encode() + b"\r\n" + payload)
    return stream


async def receive_until(stream: trio.SocketStream, done: Callable[[bytes], bool]) -> bytes:
    received = b""
    with trio.fail_after(3600):
        while not done(received):
            data = await stream.receive_some(65536)
            assert data, "the server closed the connection"
            received += data
    return received


def parse_raw_response(raw: bytes) -> tuple[h11.Response, bytes]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    response = conn.next_event()
    assert isinstance(response, h11.Response)
    body = bytearray()
    while isinstance(event := conn.next_event(), h11.Data):
        body += event.data
    return response, bytes(body)


# ---- endpoints -----------------------------------------------------------------------------


async def test_models_lists_the_profile_models(sim: Simulator, client: httpx2.AsyncClient) -> None:
    response = await client.get("/models")
    assert response.status_code == 200
    payload = response.json()
    assert payload["object"] == "list"
    assert [model["id"] for model in payload["data"]] == MODELS
    assert all(model["object"] == "model" for model in payload["data"])
    assert {model["owned_by"] for model in payload["data"]} >= {"openai", "anthropic"}


async def test_every_response_has_a_unique_request_id(client: httpx2.AsyncClient) -> None:
    responses = [
        await client.get("/models"),
        await client.get("/nope"),
        await client.post("/chat/completions", json=chat_body(stream=False)),
        await client.post("/chat/completions", content=b"{"),
    ]
    ids = [response.headers["x-request-id"] for response in responses]
    assert all(request_id.startswith("req_") for request_id in ids)
    assert len(set(ids)) == len(ids)


async def test_stream_wire_format_with_usage(sim: Simulator, client: httpx2.AsyncClient) -> None:
    body = chat_body(max_tokens=5, stream_options={"include_usage": True})
    async with client.stream("POST", "/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["transfer-encoding"] == "chunked"
        raw = await response.aread()
    payloads, comments = parse_stream(raw)
    assert comments == []
    assert payloads[-1] == "[DONE]"
    role, *contents, final, usage, _ = payloads
    chunk_keys = [
        "id",
        "object",
        "created",
        "model",
        "service_tier",
        "system_fingerprint",
        "choices",
        "usage",
    ]
    for chunk in (role, *contents, final, usage):
        assert list(chunk) == chunk_keys
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["id"] == role["id"]
        assert chunk["id"].startswith("chatcmpl-")
        assert chunk["model"] == "gpt-4.1-2025-04-14"  # the dated snapshot, as OpenAI answers
        assert chunk["service_tier"] == "default"
    assert role["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert len(contents) == 5
    for chunk in contents:
        assert chunk["usage"] is None
        assert list(chunk["choices"][0]["delta"]) == ["content"]
        assert chunk["choices"][0]["delta"]["content"].lstrip(" ") or "\n"
        assert chunk["choices"][0]["finish_reason"] is None
    assert final["choices"][0]["delta"] == {}
    assert final["choices"][0]["finish_reason"] == "length"
    assert usage["choices"] == []
    prompt = estimate_prompt_tokens(body["messages"])
    assert usage["usage"] == usage_with_details(prompt, 5)
    stats = sim.stats()
    assert stats.requests["gpt-4.1"] == 1
    assert stats.prompt_tokens["gpt-4.1"] == prompt
    assert stats.completion_tokens["gpt-4.1"] == 5


async def test_stream_without_usage_option_has_no_usage_field(client: httpx2.AsyncClient) -> None:
    response = await client.post("/chat/completions", json=chat_body(max_tokens=3))
    payloads, _ = parse_stream(response.content)
    assert payloads[-1] == "[DONE]"
    assert len(payloads) == 1 + 3 + 1 + 1
    assert all("usage" not in chunk for chunk in payloads[:-1])


async def test_without_max_tokens_the_reply_runs_to_natural_length(
    client: httpx2.AsyncClient,
) -> None:
    response = await client.post("/chat/completions", json=chat_body(max_tokens=None))
    payloads, _ = parse_stream(response.content)
    contents = payloads[1:-2]
    assert len(contents) == fast_profile().models["gpt-4.1"].natural_length
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"


def test_max_completion_tokens_wins_unless_it_is_null() -> None:
    def max_tokens(**fields: Any) -> int | None:
        body = {key: value for key, value in chat_body().items() if key != "max_tokens"}
        return ChatRequest.from_body(json.dumps({**body, **fields}).encode()).max_tokens

    assert max_tokens(max_completion_tokens=5, max_tokens=9) == 5
    assert max_tokens(max_completion_tokens=5) == 5
    # An explicit null is "not given": max_tokens still counts (it used to be ignored).
    assert max_tokens(max_completion_tokens=None, max_tokens=9) == 9
    assert max_tokens(max_completion_tokens=None) is None


async def test_non_stream_completion(sim: Simulator, client: httpx2.AsyncClient) -> None:
    body = chat_body(stream=False, max_tokens=7)
    response = await client.post("/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    payload = response.json()
    assert payload["object"] == "chat.completion"
    choice = payload["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "length"
    prompt = estimate_prompt_tokens(body["messages"])
    assert payload["usage"] == usage_with_details(prompt, 7)
    assert payload["model"] == "gpt-4.1-2025-04-14"
    assert payload["service_tier"] == "default"
    assert choice["message"]["annotations"] == []
    assert choice["message"]["refusal"] is None
    assert sim.stats().completion_tokens["gpt-4.1"] == 7


async def test_streamed_and_whole_replies_have_the_same_text(client: httpx2.AsyncClient) -> None:
    texts = []
    for overrides in (
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"stream": False},
    ):
        body = chat_body(max_tokens=40, temperature=0.3, **overrides)
        response = await client.post("/chat/completions", json=body)
        if body["stream"]:
            texts.append(content_of(parse_stream(response.content)[0]))
        else:
            texts.append(response.json()["choices"][0]["message"]["content"])
    assert texts[0] == texts[1] == texts[2]
    assert len(texts[0]) > 40


async def test_text_depends_on_messages_model_and_sampling(client: httpx2.AsyncClient) -> None:
    async def text(**overrides: Any) -> str:
        response = await client.post("/chat/completions", json=chat_body(stream=False, **overrides))
        content: str = response.json()["choices"][0]["message"]["content"]
        return content

    base = await text(max_tokens=30)
    assert base == await text(max_tokens=30)
    assert base != await text(max_tokens=30, temperature=1.5)
    assert base != await text(max_tokens=30, model="deepseek-v3.2")
    assert base != await text(max_tokens=30, messages=[{"role": "user", "content": "other"}])
    # max_tokens truncates the same text rather than choosing another one.
    assert (await text(max_tokens=60)).startswith(base)


async def test_fast_and_reference_paths_send_the_same_text(sim: Simulator) -> None:
    slow = attrs.evolve(fast_profile(), name="fast-unencoded", pre_encoded=False)
    texts = []
    for simulator_profile in (slow, fast_profile()):
        async with (
            open_simulator(api_key=API_KEY, profile=simulator_profile, reply_tokens="max") as other,
            httpx2.AsyncClient(base_url=other.base_url, headers=AUTH, timeout=None) as http,
        ):
            response = await http.post("/chat/completions", json=chat_body(max_tokens=2000))
            payloads, _ = parse_stream(response.content)
            assert len(payloads) == 2000 + 3
            texts.append(content_of(payloads))
    assert texts[0] == texts[1]


def test_pre_encoded_chunks_are_byte_identical_to_the_reference_encoding() -> None:
    for include_usage in (False, True):
        encoder = ChunkEncoder(
            completion_id="chatcmpl-x", created=1, model="m", include_usage=include_usage
        )
        request = ChatRequest.from_body(json.dumps(chat_body(max_tokens=500)).encode())
        seed = request.text_seed
        fast = encoder.contents_pre_encoded(TokenSource(seed, 500).take_encoded(500))
        reference = b"".join(
            encoder.content(token) for token in TokenSource(seed, 500).take_text(500)
        )
        assert fast == reference
        # Every vocabulary token, including the non-ASCII ones, survives the JSON round trip.
        assert {content_of(parse_stream(encoder.content(token))[0]) for token in VOCABULARY} == set(
            VOCABULARY
        )


# ---- errors --------------------------------------------------------------------------------


def assert_openai_error(response: httpx2.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    if code is not None:
        assert error["code"] == code


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": ""}])
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/simulator/stats")],
)
async def test_wrong_or_missing_key_is_401(
    sim: Simulator, headers: dict[str, str], method: str, path: str
) -> None:
    async with httpx2.AsyncClient(headers=headers) as http:
        url = sim.base_url.removesuffix("/v1") + path
        response = await http.request(method, url, json=chat_body())
    assert_openai_error(response, 401, "invalid_api_key")
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert API_KEY not in response.text


async def test_unknown_model_is_404(client: httpx2.AsyncClient, sim: Simulator) -> None:
    response = await client.post("/chat/completions", json=chat_body(model="gpt-9"))
    assert_openai_error(response, 404, "model_not_found")
    assert sum(sim.stats().requests.values()) == 0


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe",
        b"[1, 2]",
        b"[" * 100_000,
        json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(),
        json.dumps({"model": "gpt-4.1"}).encode(),
        json.dumps({"model": "gpt-4.1", "messages": []}).encode(),
        json.dumps({"model": "gpt-4.1", "messages": ["hi"]}).encode(),
        json.dumps({"model": "gpt-4.1", "messages": [{"role": "robot"}]}).encode(),
        json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": 3}]}).encode(),
        json.dumps(chat_body(max_tokens=0)).encode(),
        json.dumps(chat_body(max_tokens="5")).encode(),
        json.dumps(chat_body(max_tokens=10**8)).encode(),
        json.dumps(chat_body(stream="yes")).encode(),
        json.dumps(chat_body(stream_options=[])).encode(),
        json.dumps(chat_body(stream_options={"include_usage": 1})).encode(),
        json.dumps(chat_body(model=7)).encode(),
    ],
)
async def test_malformed_requests_are_400(client: httpx2.AsyncClient, content: bytes) -> None:
    response = await client.post("/chat/completions", content=content)
    assert_openai_error(response, 400)
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_unknown_path_is_404_and_wrong_method_405(client: httpx2.AsyncClient) -> None:
    assert_openai_error(await client.get("/embeddings"), 404, "unknown_url")
    response = await client.get("/chat/completions")
    assert_openai_error(response, 405)
    assert response.headers["allow"] == "POST"


async def test_body_over_the_limit_is_413(sim: Simulator, autojump_clock: MockClock) -> None:
    declared = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\n"
        f"content-length: {MAX_BODY_BYTES + 1}\r\n\r\n"
    ).encode()
    response, body = parse_raw_response(await raw_exchange(sim, declared))
    assert response.status_code == 413
    assert json.loads(body)["error"]["code"] == "request_too_large"
    # A chunked body has no declared length: the server counts while reading.
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=None) as http:

        async def big_body() -> AsyncIterator[bytes]:
            for _ in range(MAX_BODY_BYTES // 65536 + 2):
                yield b" " * 65536

        try:
            too_big = await http.post("/chat/completions", content=big_body())
        except httpx2.TransportError:
            pass  # the server may close before the client finished sending: also a refusal
        else:
            assert_openai_error(too_big, 413)
    await wait_until(lambda: sim.stats().open_connections == 0)


async def test_expect_100_continue_is_answered(sim: Simulator) -> None:
    body = json.dumps(chat_body(stream=False)).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\n"
        f"expect: 100-continue\r\nconnection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream(sim.host, sim.port)
    async with stream:
        await stream.send_all(head)
        interim = await receive_until(stream, lambda data: b"\r\n\r\n" in data)
        assert interim.startswith(b"HTTP/1.1 100 ")
        await stream.send_all(body)
        rest = await receive_until(stream, lambda data: data.endswith(b"}"))
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_oversized_headers_and_garbage_get_a_4xx(sim: Simulator) -> None:
    huge = b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 300_000 + b"\r\n\r\n"
    response, _ = parse_raw_response(await raw_exchange(sim, huge))
    assert response.status_code == 431
    response, body = parse_raw_response(await raw_exchange(sim, b"NOT HTTP AT ALL\r\n\r\n"))
    assert response.status_code == 400
    assert "error" in json.loads(body)


# ---- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (429, "requests", "rate_limit_exceeded"),
        (401, "invalid_request_error", "invalid_api_key"),
        (403, "permission_error", "permission_denied"),
        (404, "invalid_request_error", "model_not_found"),
        (500, "server_error", None),
        (502, "server_error", "bad_gateway"),
        (503, "server_error", "overloaded"),
        (529, "overloaded_error", "overloaded"),
    ],
)
async def test_status_faults(
    sim: Simulator, client: httpx2.AsyncClient, status: int, kind: str, code: str | None
) -> None:
    response = await client.post(
        "/chat/completions", json=chat_body(), headers={"x-simulator-fault": f"status={status}"}
    )
    assert_openai_error(response, status)
    assert response.json()["error"]["type"] == kind
    assert response.json()["error"]["code"] == code
    assert "retry-after" not in response.headers
    stats = sim.stats()
    assert stats.faults_served == {"status": 1}
    assert stats.requests["gpt-4.1"] == 1
    assert stats.completion_tokens["gpt-4.1"] == stats.prompt_tokens["gpt-4.1"] == 0


async def test_status_fault_retry_headers(client: httpx2.AsyncClient) -> None:
    fault = "status=429;retry_after=2;retry_after_ms=500;should_retry=false"
    response = await client.post(
        "/chat/completions", json=chat_body(), headers={"x-simulator-fault": fault}
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.headers["retry-after-ms"] == "500"
    assert response.headers["x-should-retry"] == "false"
    # The connection stays usable after an error response.
    assert (await client.get("/models")).status_code == 200


async def test_disconnect_after(sim: Simulator, client: httpx2.AsyncClient) -> None:
    headers = {"x-simulator-fault": "disconnect_after=3"}
    async with client.stream(
        "POST", "/chat/completions", json=chat_body(max_tokens=10), headers=headers
    ) as response:
        assert response.status_code == 200
        raw, error = await read_until_broken(response)
    assert isinstance(error, httpx2.RemoteProtocolError)
    payloads, _ = parse_stream(raw)
    assert len(payloads) == 1 + 3  # the role chunk, then three content chunks
    stats = sim.stats()
    assert stats.faults_served == {"disconnect_after": 1}
    assert stats.completion_tokens["gpt-4.1"] == 3


async def test_disconnect_beyond_the_reply_fires_after_the_last_chunk(
    client: httpx2.AsyncClient,
) -> None:
    headers = {"x-simulator-fault": "disconnect_after=1000"}
    async with client.stream(
        "POST", "/chat/completions", json=chat_body(max_tokens=4), headers=headers
    ) as response:
        raw, error = await read_until_broken(response)
    assert error is not None
    assert len(parse_stream(raw)[0]) == 1 + 4


async def test_disconnect_on_whole_reply_and_models(client: httpx2.AsyncClient) -> None:
    headers = {"x-simulator-fault": "disconnect_after=0"}
    with pytest.raises(httpx2.RemoteProtocolError):
        await client.post("/chat/completions", json=chat_body(stream=False), headers=headers)
    with pytest.raises(httpx2.RemoteProtocolError):
        await client.get("/models", headers=headers)


async def test_stall_after(client: httpx2.AsyncClient, autojump_clock: MockClock) -> None:
    headers = {"x-simulator-fault": "stall_after=2;seconds=30"}
    arrivals = []
    async with client.stream(
        "POST", "/chat/completions", json=chat_body(max_tokens=4), headers=headers
    ) as response:
        async for line in response.aiter_lines():  # read to the end: no generator left open
            if line.startswith("data: {"):
                arrivals.append(trio.current_time())
    assert len(arrivals) == 1 + 4 + 1
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert gaps[2] >= 30  # after the role chunk and two content chunks
    assert sum(gaps) - gaps[2] < 1


async def test_keepalive_after_sends_only_pings_until_the_client_leaves(
    sim: Simulator, autojump_clock: MockClock
) -> None:
    start = trio.current_time()
    stream = await start_raw_chat(sim, chat_body(max_tokens=10), "keepalive_after=2;every=5")
    async with stream:
        received = await receive_until(stream, lambda data: data.count(b": ping\n\n") == 3)
    assert received.count(b'"content":') == 1 + 2
    assert b'finish_reason":"' not in received
    assert trio.current_time() - start >= 15
    await wait_until(lambda: sim.stats().open_connections == 0)
    assert sim.stats().active["gpt-4.1"] == 0
    assert sim.stats().faults_served == {"keepalive_after": 1}


async def test_malformed_after_sends_broken_json_then_continues(
    client: httpx2.AsyncClient,
) -> None:
    headers = {"x-simulator-fault": "malformed_after=1"}
    response = await client.post("/chat/completions", json=chat_body(max_tokens=3), headers=headers)
    events = response.content.split(b"\n\n")
    assert events[2] == b'data: {"choices": ['
    good = b"\n\n".join(events[:2] + events[3:])
    payloads, _ = parse_stream(good)
    assert len(payloads) == 1 + 3 + 1 + 1


@pytest.mark.parametrize(("spec", "status", "kind"), [
    ("error_event_after=2", 500, "server_error"),
    ("error_event_after=2;status=429", 429, "requests"),
])  # fmt: skip
async def test_error_event_after(
    client: httpx2.AsyncClient, spec: str, status: int, kind: str
) -> None:
    response = await client.post(
        "/chat/completions",
        json=chat_body(max_tokens=5),
        headers={"x-simulator-fault": spec},
    )
    assert response.status_code == 200
    payloads, _ = parse_stream(response.content)
    assert len(payloads) == 1 + 2 + 1
    error = payloads[-1]["error"]
    assert error["type"] == kind
    assert error["message"]
    assert "[DONE]" not in payloads
    # The stream ended cleanly: the connection is reused.
    assert (await client.get("/models")).status_code == 200


async def test_drip_writes_the_body_byte_by_byte(sim: Simulator) -> None:
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\n"
        "x-simulator-fault: drip\r\nconnection: close\r\ncontent-type: application/json\r\n"
    ).encode()
    body = json.dumps(chat_body(max_tokens=20)).encode()
    request += b"content-length: %d\r\n\r\n" % len(body) + body
    raw = await raw_exchange(sim, request)
    response, streamed = parse_raw_response(raw)
    assert response.status_code == 200
    payloads, _ = parse_stream(streamed)
    assert len(payloads) == 1 + 20 + 1 + 1
    # The same request without drip sends the same text.
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=None) as http:
        plain = await http.post("/chat/completions", json=chat_body(max_tokens=20))
    assert content_of(parse_stream(plain.content)[0]) == content_of(payloads)
    assert sim.stats().faults_served == {"drip": 1}


async def test_oversized_event(client: httpx2.AsyncClient) -> None:
    response = await client.post(
        "/chat/completions",
        json=chat_body(max_tokens=3),
        headers={"x-simulator-fault": "oversized_event"},
    )
    events = response.content.split(b"\n\n")
    assert len(events[1]) > 4 * 1024 * 1024
    payloads, _ = parse_stream(response.content)
    assert payloads[1]["choices"][0]["delta"]["content"] == "x" * (4 * 1024 * 1024)
    assert len(payloads) == 1 + 1 + 3 + 1 + 1


async def test_slow_headers(client: httpx2.AsyncClient, autojump_clock: MockClock) -> None:
    start = trio.current_time()
    response = await client.get("/models", headers={"x-simulator-fault": "slow_headers=12"})
    assert response.status_code == 200
    assert trio.current_time() - start >= 12


async def test_faults_combine(sim: Simulator, client: httpx2.AsyncClient) -> None:
    headers = {"x-simulator-fault": "malformed_after=1, disconnect_after=2, drip"}
    async with client.stream(
        "POST", "/chat/completions", json=chat_body(), headers=headers
    ) as response:
        raw, error = await read_until_broken(response)
    assert error is not None
    assert raw.count(b'data: {"choices": [\n\n') == 1
    assert raw.count(b'"content":') == 1 + 2
    assert sim.stats().faults_served == {"malformed_after": 1, "disconnect_after": 1, "drip": 1}


@pytest.mark.parametrize(
    "spec",
    [
        "explode",
        "status",
        "status=200",
        "status=abc",
        "status=429;retry_after=-1",
        "status=429;later=2",
        "disconnect_after=-1",
        "stall_after=2;seconds=x",
        "keepalive_after=1;every=0",
        "drip=1",
        "drip,drip",
        "slow_headers=inf",
        "oversized_event;size=0",
    ],
)
async def test_bad_fault_specs_are_400_naming_the_valid_ones(
    client: httpx2.AsyncClient, spec: str
) -> None:
    response = await client.post(
        "/chat/completions", json=chat_body(), headers={"x-simulator-fault": spec}
    )
    assert_openai_error(response, 400, "invalid_simulator_fault")
    message = response.json()["error"]["message"]
    assert all(syntax in message for syntax in FAULT_SYNTAX)
    with pytest.raises(FaultSpecError, match="valid faults"):
        parse_faults(spec)


def test_parse_faults() -> None:
    assert parse_faults("") == FaultPlan()
    plan = parse_faults(" status=429 ; retry_after=1.5 ;should_retry=TRUE, stall_after=3, drip")
    assert plan.status == 429
    assert plan.retry_after == "1.5"
    assert plan.should_retry is True
    assert plan.stall_after == 3
    assert plan.stall_seconds == 10.0
    assert plan.drip
    assert plan.names == ("status", "stall_after", "drip")
    assert parse_faults("oversized_event").oversized_event == 4 * 1024 * 1024
    assert parse_faults("oversized_event;size=10").oversized_event == 10
    merged = parse_faults("status=503,drip").merged_with(parse_faults("status=429;retry_after=1"))
    assert (merged.status, merged.retry_after, merged.drip) == (429, "1", True)


async def test_injected_faults_are_consumed_in_order(
    sim: Simulator, client: httpx2.AsyncClient
) -> None:
    sim.inject_faults("status=503", "status=503;retry_after=1")
    statuses = [
        (await client.post("/chat/completions", json=chat_body(stream=False))).status_code
        for _ in range(3)
    ]
    assert statuses == [503, 503, 200]
    assert sim.stats().faults_served == {"status": 2}


async def test_model_queue_goes_before_the_global_one(
    sim: Simulator, client: httpx2.AsyncClient
) -> None:
    sim.inject_faults("status=500")
    sim.inject_faults("status=502", "", model="deepseek-v3.2")
    sim.inject_faults("status=429", endpoint="models")

    async def status(model: str) -> int:
        body = chat_body(stream=False, model=model)
        return (await client.post("/chat/completions", json=body)).status_code

    assert await status("deepseek-v3.2") == 502
    assert await status("deepseek-v3.2") == 200  # "" queued a request without faults
    assert await status("deepseek-v3.2") == 500  # now the global queue
    assert await status("gpt-4.1") == 200
    assert (await client.get("/models")).status_code == 429
    assert (await client.get("/models")).status_code == 200
    sim.inject_faults("status=500")
    sim.clear_faults()
    assert await status("gpt-4.1") == 200


async def test_inject_faults_rejects_bad_specs(sim: Simulator) -> None:
    with pytest.raises(FaultSpecError):
        sim.inject_faults("status=503", "nonsense")
    with pytest.raises(ValueError, match="model"):
        sim.inject_faults("drip", model="gpt-9")
    with pytest.raises(ValueError, match="model"):
        sim.inject_faults("drip", model="gpt-4.1", endpoint="models")
    assert sim._take_fault("chat", None) == FaultPlan()  # nothing half-queued


async def test_header_fault_wins_over_a_queued_one(
    sim: Simulator, client: httpx2.AsyncClient
) -> None:
    sim.inject_faults("status=500,slow_headers=0")
    response = await client.post(
        "/chat/completions",
        json=chat_body(stream=False),
        headers={"x-simulator-fault": "status=429"},
    )
    assert response.status_code == 429
    assert sim.stats().faults_served == {"status": 1, "slow_headers": 1}


# ---- profiles ------------------------------------------------------------------------------


async def test_realistic_profile_pacing_is_seeded(autojump_clock: MockClock) -> None:
    async def measure(seed: int) -> tuple[float, float]:
        async with (
            open_simulator(
                api_key=API_KEY, profile="realistic", seed=seed, reply_tokens="max"
            ) as sim,
            httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=None) as http,
        ):
            start = trio.current_time()
            arrivals = []
            body = chat_body(max_tokens=91)
            async with http.stream("POST", "/chat/completions", json=body) as response:
                async for line in response.aiter_lines():  # to the end: no generator left open
                    if '"content":"' in line and '"role"' not in line:
                        arrivals.append(trio.current_time())
            assert len(arrivals) == 91
            return arrivals[0] - start, arrivals[-1] - arrivals[0]

    ttft, streaming = await measure(seed=1)
    assert 0.3 < ttft < 3.0  # gpt-4.1: mean 850 ms, p95 1200 ms
    assert 90 / 45 * 0.85 <= streaming <= 90 / 45 * 1.15  # ~45 tokens/s
    assert await measure(seed=1) == pytest.approx((ttft, streaming))
    assert (await measure(seed=2))[0] != ttft


async def test_realistic_whole_reply_takes_generation_time(autojump_clock: MockClock) -> None:
    async with (
        open_simulator(api_key=API_KEY, profile="realistic") as sim,
        httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=None) as http,
    ):
        start = trio.current_time()
        body = chat_body(stream=False, max_tokens=45, model="gemini-2.5-flash")
        response = await http.post("/chat/completions", json=body)
        assert response.status_code == 200
        assert 1.0 < trio.current_time() - start < 3.0


def test_ttft_lognormal_matches_the_seed_priors() -> None:
    for model in realistic_profile().models.values():
        mu, sigma = model.ttft_lognormal()
        assert math.exp(mu + sigma**2 / 2) * 1000 == pytest.approx(model.ttft_mean_ms)
        assert math.exp(mu + 1.6448536269514722 * sigma) * 1000 == pytest.approx(model.ttft_p95_ms)
    priors = {
        name: (m.ttft_mean_ms, m.ttft_p95_ms) for name, m in PROFILES["realistic"].models.items()
    }
    assert priors == {
        "gpt-4.1": (850, 1200),
        "claude-sonnet-4.5": (920, 1350),
        "gemini-2.5-flash": (180, 280),
        "deepseek-v3.2": (220, 350),
    }


def test_profile_validation() -> None:
    with pytest.raises(ValueError, match="ttft_p95_ms"):
        ModelProfile(name="m", ttft_mean_ms=100, ttft_p95_ms=50)
    with pytest.raises(ValueError, match="ttft_p95_ms"):
        ModelProfile(name="m", ttft_mean_ms=100, ttft_p95_ms=1000)
    with pytest.raises(ValueError, match="tokens_per_second"):
        ModelProfile(name="m", ttft_mean_ms=100, ttft_p95_ms=150, tokens_per_second=0)
    with pytest.raises(ValueError, match="natural_length_spread"):
        ModelProfile(
            name="m", ttft_mean_ms=1, ttft_p95_ms=1, natural_length=5, natural_length_spread=5
        )
    model = ModelProfile(name="m", ttft_mean_ms=100, ttft_p95_ms=150)
    with pytest.raises(ValueError, match="differs"):
        Profile(name="p", models={"other": model})
    with pytest.raises(ValueError, match="at least one"):
        Profile(name="p", models={})
    with pytest.raises(ValueError, match="unique"):
        Profile.from_models("p", [model, model])


async def test_custom_profile_and_unknown_profile_name() -> None:
    tiny = ModelProfile(
        name="tiny-1", ttft_mean_ms=10, ttft_p95_ms=20, natural_length=3, natural_length_spread=0
    )
    async with (
        open_simulator(
            api_key=API_KEY, profile=Profile.from_models("mine", [tiny], delays=False)
        ) as sim,
        httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=None) as http,
    ):
        models = (await http.get("/models")).json()["data"]
        assert [model["id"] for model in models] == ["tiny-1"]
        response = await http.post(
            "/chat/completions", json=chat_body(model="tiny-1", max_tokens=None)
        )
        assert len(parse_stream(response.content)[0]) == 1 + 3 + 1 + 1
    with pytest.raises(ValueError, match="realistic, fast"):
        async with open_simulator(profile="slow"):
            pass  # pragma: no cover


# ---- concurrency, robustness, lifecycle ----------------------------------------------------


async def test_concurrent_streams_are_counted(autojump_clock: MockClock) -> None:
    async with open_simulator(api_key=API_KEY, profile="realistic") as sim:

        async def one_stream(model: str) -> None:
            async with httpx2.AsyncClient(
                base_url=sim.base_url, headers=AUTH, timeout=None
            ) as http:
                response = await http.post("/chat/completions", json=chat_body(model=model))
                assert parse_stream(response.content)[0][-1] == "[DONE]"

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one_stream, "gpt-4.1")
            for _ in range(2):
                nursery.start_soon(one_stream, "deepseek-v3.2")
        stats = sim.stats()
        assert stats.max_concurrent["gpt-4.1"] == 5
        assert stats.max_concurrent["deepseek-v3.2"] == 2
        assert stats.max_concurrent["claude-sonnet-4.5"] == 0
        assert stats.requests["gpt-4.1"] == 5
        assert stats.active == dict.fromkeys(MODELS, 0)
        assert stats.connections_accepted == 7
        await wait_until(lambda: sim.stats().open_connections == 0)


async def test_hidden_capacity_answers_429_beyond_it(autojump_clock: MockClock) -> None:
    # Two of gpt-4.1 at a time; deepseek-v3.2 stays unlimited.
    async with open_simulator(api_key=API_KEY, profile="realistic", capacity={"gpt-4.1": 2}) as sim:
        assert sim.profile.models["gpt-4.1"].capacity == 2
        assert sim.profile.models["deepseek-v3.2"].capacity is None
        # Refused requests take no queued fault: the third fault lands on the next accepted one.
        sim.inject_faults("", "", "status=503", model="gpt-4.1")
        statuses: list[int] = []
        refusals: list[httpx2.Response] = []

        async def one_stream(model: str) -> None:
            async with httpx2.AsyncClient(
                base_url=sim.base_url, headers=AUTH, timeout=None
            ) as http:
                response = await http.post("/chat/completions", json=chat_body(model=model))
                statuses.append(response.status_code)
                if response.status_code == 429:
                    refusals.append(response)

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one_stream, "gpt-4.1")
                await trio.sleep(0.01)  # in order: the first two are accepted
            for _ in range(4):
                nursery.start_soon(one_stream, "deepseek-v3.2")
        assert sorted(statuses) == [200] * 6 + [429] * 3
        error = refusals[0].json()["error"]
        assert error["code"] == "rate_limit_exceeded"
        assert "at most 2 requests" in error["message"]
        assert refusals[0].headers["retry-after-ms"] == "100"
        assert refusals[0].headers["retry-after"] == "1"
        stats = sim.stats()
        assert stats.max_concurrent["gpt-4.1"] == 2  # refused requests never became active
        assert stats.max_concurrent["deepseek-v3.2"] == 4
        assert stats.requests["gpt-4.1"] == 5
        assert stats.faults_served == {"capacity": 3}
        # Once the accepted ones are done, there is room again (for the queued fault first).
        async with httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=None) as http:
            response = await http.post("/chat/completions", json=chat_body())
            assert response.status_code == 503
            response = await http.post("/chat/completions", json=chat_body())
            assert response.status_code == 200


async def test_capacity_for_every_model_and_validation() -> None:
    async with open_simulator(api_key=API_KEY, profile="fast", capacity=3) as sim:
        assert {m.capacity for m in sim.profile.models.values()} == {3}
    with pytest.raises(ValueError, match="unknown model"):
        async with open_simulator(api_key=API_KEY, capacity={"gpt-5": 1}):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="capacity"):
        ModelProfile(name="m", ttft_mean_ms=100, ttft_p95_ms=150, capacity=0)
    assert ModelProfile(name="m", ttft_mean_ms=100, ttft_p95_ms=150).capacity is None


async def test_keep_alive_reuses_one_connection(sim: Simulator, client: httpx2.AsyncClient) -> None:
    for _ in range(3):
        assert (await client.post("/chat/completions", json=chat_body())).status_code == 200
        assert (await client.get("/models")).status_code == 200
    assert sim.stats().connections_accepted == 1
    assert sim.stats().open_connections == 1


async def test_clients_leaving_at_any_moment_do_not_hurt_the_server(
    autojump_clock: MockClock,
) -> None:
    async with open_simulator(api_key=API_KEY, profile="realistic") as sim:
        # Mid-headers.
        stream = await trio.open_tcp_stream(sim.host, sim.port)
        await stream.send_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-le")
        await stream.aclose()
        # Mid-body.
        stream = await trio.open_tcp_stream(sim.host, sim.port)
        await stream.send_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 99\r\n\r\n{"
        )
        await stream.aclose()

        # Before the first token, mid-stream, during a stall, during a drip; while another
        # stream keeps going.
        async def leave_early(fault: str, marker: bytes) -> None:
            stream = await start_raw_chat(sim, chat_body(max_tokens=200), fault)
            async with stream:
                await receive_until(stream, lambda data: marker in data)

        async with httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=None) as http:

            async def survivor() -> None:
                response = await http.post("/chat/completions", json=chat_body(max_tokens=100))
                assert parse_stream(response.content)[0][-1] == "[DONE]"

            async with trio.open_nursery() as nursery:
                nursery.start_soon(survivor)
                nursery.start_soon(leave_early, "", b"HTTP/1.1 200")
                nursery.start_soon(leave_early, "", b'"content":"')
                nursery.start_soon(leave_early, "stall_after=1;seconds=3600", b'"content":"')
                nursery.start_soon(leave_early, "drip", b"data:")
            await wait_until(lambda: sim.stats().open_connections == 1)
            assert sim.stats().active == dict.fromkeys(MODELS, 0)
            assert (await http.get("/models")).status_code == 200
        await wait_until(lambda: sim.stats().open_connections == 0)
        assert sim.stats().internal_errors == 0


async def test_a_client_that_half_closes_still_gets_the_whole_stream(
    sim: Simulator, autojump_clock: MockClock
) -> None:
    # `send_eof()` after a complete request (what `curl --no-keepalive`-style clients and
    # shell `nc -N` do) says "no more requests", not "I left": the answer goes on to [DONE].
    stream = await start_raw_chat(sim, chat_body(max_tokens=5))
    async with stream:
        await stream.send_eof()
        received = bytearray()
        with trio.fail_after(30):
            while data := await stream.receive_some(65536):
                received += data
    response, body = parse_raw_response(bytes(received))
    assert response.status_code == 200
    payloads, _ = parse_stream(body)
    assert payloads[-1] == "[DONE]"
    assert len(payloads) == 1 + 5 + 1 + 1
    assert payloads[-2]["choices"][0]["finish_reason"] == "length"
    await wait_until(lambda: sim.stats().open_connections == 0)
    assert sim.stats().active["gpt-4.1"] == 0


async def test_a_half_closed_client_in_a_fault_silence_is_let_go(
    sim: Simulator, autojump_clock: MockClock
) -> None:
    # A stall sends nothing, so a client that left cannot be told from one that half-closed:
    # the EOF ends the answer instead of holding the connection for the whole stall.
    start = trio.current_time()
    stream = await start_raw_chat(sim, chat_body(max_tokens=5), "stall_after=2;seconds=3600")
    async with stream:
        received = await receive_until(stream, lambda data: data.count(b'"content":"') >= 2)
        await stream.send_eof()
        with trio.fail_after(30):
            while data := await stream.receive_some(65536):
                received += data
    assert b"[DONE]" not in received
    assert trio.current_time() - start < 30
    await wait_until(lambda: sim.stats().open_connections == 0)


async def test_leaving_the_simulator_closes_every_connection(autojump_clock: MockClock) -> None:
    async with open_simulator(api_key=API_KEY, profile="realistic") as sim:
        idle = await trio.open_tcp_stream(sim.host, sim.port)
        streaming = await trio.open_tcp_stream(sim.host, sim.port)
        body = json.dumps(chat_body(max_tokens=1000)).encode()
        await streaming.send_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
            + API_KEY.encode()
            + b"\r\ncontent-length: %d\r\n\r\n" % len(body)
            + body
        )
        assert await streaming.receive_some(65536)
        await wait_until(lambda: sim.stats().open_connections == 2)
    for stream in (idle, streaming):
        async with stream:
            with trio.fail_after(5):
                while await stream.receive_some(65536):
                    pass  # the rest of the reply, then EOF
    with pytest.raises(OSError, match="connect"):
        await trio.open_tcp_stream(sim.host, sim.port)


@pytest.mark.parametrize("port", [-1, 65536, 99999])
async def test_out_of_range_ports_are_refused(port: int) -> None:
    # The socket layer wraps 65536 to 0: it used to listen on some random port instead.
    with pytest.raises(ValueError, match="port must be between 0 and 65535"):
        async with open_simulator(api_key=API_KEY, port=port):
            pass  # pragma: no cover


async def test_an_error_in_the_block_propagates_unwrapped() -> None:
    with pytest.raises(KeyError, match="boom"):
        async with open_simulator(api_key=API_KEY, profile="fast"):
            raise KeyError("boom")


async def test_stats_endpoint_and_snapshot(sim: Simulator, client: httpx2.AsyncClient) -> None:
    await client.post("/chat/completions", json=chat_body(max_tokens=4))
    before = sim.stats()
    served = SimulatorStats.from_json((await client.get("/simulator/stats")).json())
    assert served == attrs.evolve(before, total_requests=before.total_requests + 1)
    assert before.to_json()["requests"]["gpt-4.1"] == 1
    with pytest.raises(ValueError, match="requests"):
        SimulatorStats.from_json({**before.to_json(), "requests": {"gpt-4.1": "1"}})
    with pytest.raises(TypeError):
        before.requests["gpt-4.1"] = 5  # type: ignore[index]
    sim.reset_stats()
    assert sim.stats().requests["gpt-4.1"] == 0
    assert sim.stats().open_connections == 1


async def test_repr_hides_the_api_key(sim: Simulator) -> None:
    assert API_KEY not in repr(sim)
    assert sim.base_url in repr(sim)
    assert sim.api_key == API_KEY
    assert sim.base_url == f"http://127.0.0.1:{sim.port}/v1"


# The openai SDK's AsyncStream breaks out of its inner `_iter_events()` generator at `[DONE]`
# without closing it (openai/_streaming.py, AsyncStream.__stream__); under trio the abandoned
# generators (and the httpx2/httpcore2 ones they wrap) are finalized with a ResourceWarning.
# That is the SDK's leak, not the simulator's: the filter names exactly those generators.
@pytest.mark.filterwarnings(
    r"ignore:Async generator '(openai|httpx2|httpcore2)\.[^']*' was garbage collected"
    ":ResourceWarning"
)
async def test_the_openai_sdk_streams_from_the_simulator_under_trio(sim: Simulator) -> None:
    async with openai.AsyncOpenAI(
        base_url=sim.base_url, api_key=API_KEY, max_retries=0
    ) as sdk_client:
        stream = await sdk_client.chat.completions.create(
            model="claude-sonnet-4.5",
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces = []
        usage = None
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
                if chunk.usage is not None:
                    usage = chunk.usage
        assert len(pieces) == 12
        assert usage is not None
        assert usage.completion_tokens == 12
        assert usage.total_tokens == usage.prompt_tokens + 12
        whole = await sdk_client.chat.completions.create(
            model="claude-sonnet-4.5",
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=12,
        )
        assert whole.choices[0].message.content == "".join(pieces)
        with pytest.raises(openai.NotFoundError):
            await sdk_client.chat.completions.create(
                model="gpt-9", messages=[{"role": "user", "content": "Hello"}]
            )
        models = await sdk_client.models.list()
        assert [model.id for model in models.data] == MODELS


def test_prompt_token_estimate_follows_the_documented_rule() -> None:
    assert estimate_prompt_tokens([{"role": "user", "content": "abcd"}]) == 3 + 4 + 1
    assert estimate_prompt_tokens([{"role": "user", "content": "abcde"}]) == 3 + 4 + 2
    parts = [{"type": "text", "text": "ab"}, {"type": "image_url", "image_url": {"url": "u"}}]
    assert estimate_prompt_tokens([{"role": "user", "content": parts}]) == 3 + 4 + 1
    calls = [{"id": "call_1"}]  # '[{"id":"call_1"}]' is 17 characters
    assert estimate_prompt_tokens([{"role": "assistant", "tool_calls": calls}]) == 3 + 4 + 5
    two = [{"role": "system", "content": ""}, {"role": "user", "content": "x" * 40}]
    assert estimate_prompt_tokens(two) == 3 + 4 + 4 + 10


async def test_a_crashing_handler_is_counted_and_hurts_no_one(
    sim: Simulator, client: httpx2.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from holysheep_trio.simulator import _server

    async def broken(self: object, request: object) -> None:
        raise RuntimeError("a simulator bug")

    monkeypatch.setattr(_server._Connection, "_models", broken)
    with pytest.raises(httpx2.RemoteProtocolError):
        await client.get("/models")
    assert (await client.post("/chat/completions", json=chat_body())).status_code == 200
    assert sim.stats().internal_errors == 1
    sim._counters.internal_errors = 0  # the fixture asserts that no other crash happened


async def test_whole_reply_faults_and_models_faults(
    sim: Simulator, client: httpx2.AsyncClient, autojump_clock: MockClock
) -> None:
    start = trio.current_time()
    headers = {"x-simulator-fault": "stall_after=0;seconds=20,drip"}
    response = await client.post("/chat/completions", json=chat_body(stream=False), headers=headers)
    assert response.status_code == 200
    assert trio.current_time() - start >= 20
    dripped = await client.get("/models", headers={"x-simulator-fault": "drip"})
    assert len(dripped.json()["data"]) == 4
    bad = await client.get("/models", headers={"x-simulator-fault": "bogus"})
    assert_openai_error(bad, 400, "invalid_simulator_fault")
    assert sim.stats().faults_served == {"stall_after": 1, "drip": 2}


async def test_query_strings_and_trailing_slashes_are_ignored(client: httpx2.AsyncClient) -> None:
    assert (await client.get("/models/?limit=3")).status_code == 200


@st.composite
def fault_specs(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    """A random valid spec and the FaultPlan fields it must produce."""
    counts = st.integers(min_value=0, max_value=10**6)
    seconds = st.integers(min_value=1, max_value=10**4)
    items: list[str] = []
    fields: dict[str, object] = {}
    if draw(st.booleans()):
        status = draw(st.integers(min_value=400, max_value=599))
        item, fields["status"] = f"status={status}", status
        if draw(st.booleans()):
            after = draw(seconds)
            item, fields["retry_after"] = f"{item};retry_after={after}", str(after)
        if draw(st.booleans()):
            retry = draw(st.booleans())
            item, fields["should_retry"] = f"{item};should_retry={str(retry).lower()}", retry
        items.append(item)
    for name in ("disconnect_after", "malformed_after", "stall_after", "keepalive_after"):
        if draw(st.booleans()):
            count = draw(counts)
            items.append(f"{name}={count}")
            fields[name] = count
    if draw(st.booleans()):
        items.append("drip")
        fields["drip"] = True
    if draw(st.booleans()):
        delay = draw(seconds)
        items.append(f"slow_headers={delay}")
        fields["slow_headers"] = float(delay)
    order = draw(st.permutations(items))
    spacing = draw(st.sampled_from([",", ", ", " ,"]))
    return spacing.join(order), fields


@settings(max_examples=100)
@given(fault_specs())
def test_any_valid_spec_parses_to_its_plan(case: tuple[str, dict[str, object]]) -> None:
    spec, fields = case
    plan = parse_faults(spec)
    assert plan == FaultPlan(**fields)  # type: ignore[arg-type]
    assert parse_faults(spec).merged_with(plan) == plan


# ---- natural endings and exact lengths -----------------------------------------------------


def finish_and_count(payloads: list[Any]) -> tuple[str, int]:
    contents = [
        chunk
        for chunk in payloads
        if isinstance(chunk, dict)
        and chunk["choices"]
        and "content" in chunk["choices"][0]["delta"]
    ]
    finishes = [
        chunk["choices"][0]["finish_reason"]
        for chunk in payloads
        if isinstance(chunk, dict) and chunk["choices"] and chunk["choices"][0]["finish_reason"]
    ]
    assert len(finishes) == 1
    return finishes[0], len(contents) - 1  # the role chunk carries content "" too


async def test_a_reply_ends_by_itself_below_max_tokens(autojump_clock: MockClock) -> None:
    async with (
        open_simulator(api_key=API_KEY) as sim,
        httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=None) as http,
    ):
        lengths = set()
        for index in range(8):
            messages = [{"role": "user", "content": f"question {index}"}]
            body = chat_body(max_tokens=1000, messages=messages)
            response = await http.post("/chat/completions", json=body)
            finish, count = finish_and_count(parse_stream(response.content)[0])
            assert finish == "stop"
            assert 60 <= count <= 180  # the realistic profile's natural lengths
            lengths.add(count)
        assert len(lengths) > 4  # seeded per request, so varied
        # The same request, capped below its natural length: cut, "length".
        capped = await http.post("/chat/completions", json=chat_body(max_tokens=10))
        assert finish_and_count(parse_stream(capped.content)[0]) == ("length", 10)
        whole = await http.post("/chat/completions", json=chat_body(max_tokens=1000, stream=False))
        choice = whole.json()["choices"][0]
        assert choice["finish_reason"] == "stop"
        assert whole.json()["usage"]["completion_tokens"] < 1000


async def test_the_reply_tokens_header_asks_for_an_exact_length(
    client: httpx2.AsyncClient,
) -> None:
    async def ask(value: str, max_tokens: int | None) -> tuple[str, int]:
        response = await client.post(
            "/chat/completions",
            json=chat_body(max_tokens=max_tokens),
            headers={"x-simulator-reply-tokens": value},
        )
        assert response.status_code == 200
        return finish_and_count(parse_stream(response.content)[0])

    assert await ask("200", None) == ("stop", 200)  # longer than the natural 64
    assert await ask("200", 500) == ("stop", 200)
    assert await ask("200", 50) == ("length", 50)  # max_tokens still caps it
    assert await ask("max", 300) == ("length", 300)  # the old exact-length behaviour
    assert await ask("MAX", None) == ("stop", 64)  # nothing to run to: the natural length
    for bad in ("0", "-3", "many", "1.5"):
        response = await client.post(
            "/chat/completions", json=chat_body(), headers={"x-simulator-reply-tokens": bad}
        )
        assert_openai_error(response, 400, "invalid_simulator_header")


@pytest.mark.parametrize("where", ["open_simulator", "profile"])
async def test_reply_tokens_option_runs_every_reply_to_max_tokens(where: str) -> None:
    profile = fast_profile()
    options: dict[str, Any] = {}
    if where == "profile":
        profile = attrs.evolve(profile, reply_tokens="max")
    else:
        options["reply_tokens"] = "max"
    async with (
        open_simulator(api_key=API_KEY, profile=profile, **options) as sim,
        httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH, timeout=None) as http,
    ):
        response = await http.post("/chat/completions", json=chat_body(max_tokens=500))
        assert finish_and_count(parse_stream(response.content)[0]) == ("length", 500)
        # The header still wins over the option.
        response = await http.post(
            "/chat/completions",
            json=chat_body(max_tokens=500),
            headers={"x-simulator-reply-tokens": "7"},
        )
        assert finish_and_count(parse_stream(response.content)[0]) == ("stop", 7)


async def test_reply_tokens_must_be_valid() -> None:
    for bad in (0, -1, "min", 2.5, True):
        with pytest.raises(ValueError, match="reply_tokens"):
            async with open_simulator(reply_tokens=bad):  # type: ignore[arg-type]
                pass  # pragma: no cover
        with pytest.raises(ValueError, match="reply_tokens"):
            attrs.evolve(fast_profile(), reply_tokens=bad)


# ---- models: snapshots and retrieval -------------------------------------------------------


async def test_models_retrieve_by_name_or_snapshot(
    sim: Simulator, client: httpx2.AsyncClient
) -> None:
    response = await client.get("/models/gpt-4.1")
    assert response.status_code == 200
    assert response.json() == {
        "id": "gpt-4.1",
        "object": "model",
        "created": 1_735_689_600,
        "owned_by": "openai",
    }
    snapshot = await client.get("/models/gpt-4.1-2025-04-14")
    assert snapshot.json()["id"] == "gpt-4.1-2025-04-14"
    missing = await client.get("/models/gpt-9")
    assert_openai_error(missing, 404, "model_not_found")
    assert missing.json()["error"]["param"] == "model"
    assert sim.stats().requests_by_endpoint["models"] == 3


async def test_replies_name_the_dated_snapshot_and_accept_it(client: httpx2.AsyncClient) -> None:
    for requested, answered in [
        ("gpt-4.1", "gpt-4.1-2025-04-14"),
        ("gpt-4.1-2025-04-14", "gpt-4.1-2025-04-14"),
        ("claude-sonnet-4.5", "claude-sonnet-4-5-20250929"),
        ("gemini-2.5-flash", "gemini-2.5-flash"),
    ]:
        response = await client.post(
            "/chat/completions", json=chat_body(model=requested, stream=False)
        )
        assert response.json()["model"] == answered


# ---- parameter validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"temperature": 2.5}, "temperature", "decimal_above_max_value"),
        ({"temperature": -0.1}, "temperature", "decimal_below_min_value"),
        ({"temperature": "hot"}, "temperature", "invalid_type"),
        ({"top_p": 1.5}, "top_p", "decimal_above_max_value"),
        ({"top_p": -1}, "top_p", "decimal_below_min_value"),
        ({"n": 0}, "n", "integer_below_min_value"),
        ({"n": 129}, "n", "integer_above_max_value"),
        ({"n": 1.5}, "n", "invalid_type"),
        ({"tool_choice": "auto"}, "tool_choice", "invalid_value"),
        ({"tool_choice": "none"}, "tool_choice", "invalid_value"),
        (
            {"tool_choice": {"type": "function", "function": {"name": "f"}}},
            "tool_choice",
            "invalid_value",
        ),
        ({"reasoning_effort": "extreme"}, "reasoning_effort", "invalid_value"),
        ({"response_format": {"type": "yaml"}}, "response_format.type", "invalid_value"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            "response_format.json_schema.name",
            "missing_required_parameter",
        ),
        ({"parallel_tool_calls": "yes"}, "parallel_tool_calls", "invalid_type"),
    ],
)
async def test_parameters_are_validated_as_the_api_does(
    sim: Simulator, client: httpx2.AsyncClient, fields: dict[str, Any], param: str, code: str
) -> None:
    response = await client.post("/chat/completions", json=chat_body(**fields))
    assert_openai_error(response, 400, code)
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert sum(sim.stats().requests.values()) == 0


async def test_range_errors_carry_the_apis_message(client: httpx2.AsyncClient) -> None:
    response = await client.post("/chat/completions", json=chat_body(temperature=3))
    assert response.json()["error"]["message"] == (
        "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3 "
        "instead."
    )
    response = await client.post("/chat/completions", json=chat_body(tool_choice="auto"))
    assert response.json()["error"]["message"] == (
        "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified."
    )


async def test_boundary_values_are_accepted(client: httpx2.AsyncClient) -> None:
    for fields in ({"temperature": 0}, {"temperature": 2}, {"top_p": 0}, {"top_p": 1}, {"n": 1}):
        response = await client.post("/chat/completions", json=chat_body(**fields))
        assert response.status_code == 200, fields


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
async def test_a_client_leaving_during_slow_headers_is_no_longer_active(
    sim: Simulator, autojump_clock: MockClock, path: str
) -> None:
    body = json.dumps({"model": "gpt-4.1", "messages": USER, "input": "hi"}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "x-simulator-fault: slow_headers=60\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream(sim.host, sim.port)
    await stream.send_all(head + body)
    await wait_until(lambda: sim.stats().active["gpt-4.1"] == 1)
    await stream.aclose()  # leaves before the headers come
    await wait_until(lambda: sim.stats().open_connections == 0)
    assert sim.stats().active["gpt-4.1"] == 0
    assert trio.current_time() < 60


# ---- health checks: /v1/models down and up on schedule, restarts on the same port --------


async def probe(http: httpx2.AsyncClient) -> int | str:
    """One health probe with a 5 s deadline: the status, or the kind of failure."""
    try:
        with trio.fail_after(5):
            return (await http.get("/models")).status_code
    except trio.TooSlowError:
        return "timeout"
    except httpx2.TransportError as exc:
        return type(exc).__name__


async def test_a_standing_models_fault_fails_every_probe_until_cleared(
    sim: Simulator, client: httpx2.AsyncClient, autojump_clock: MockClock
) -> None:
    timeline: list[tuple[float, int | str]] = []

    async def schedule() -> None:  # between probes, so no two tasks wake at the same instant
        await trio.sleep(8)
        sim.set_models_fault("status=503;retry_after=1")
        await trio.sleep(20)
        sim.set_models_fault("slow_headers=30")
        await trio.sleep(10)
        sim.set_models_fault(None)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(schedule)
        start = trio.current_time()
        for _ in range(10):
            timeline.append((round(trio.current_time() - start), await probe(client)))
            await trio.sleep(5 - (trio.current_time() - start) % 5)
    assert timeline == [
        (0, 200),
        (5, 200),
        (10, 503),
        (15, 503),
        (20, 503),
        (25, 503),
        (30, "timeout"),  # slow_headers: the probe's own deadline fires
        (40, 200),  # cleared: up again
        (45, 200),
        (50, 200),
    ]
    stats = sim.stats()
    assert stats.faults_served["status"] == 4
    assert stats.requests_by_endpoint["models"] == 10
    # Chat requests are not affected by a models fault.
    response = await client.post("/chat/completions", json=chat_body())
    assert response.status_code == 200


async def test_models_fault_applies_to_models_retrieve_and_lets_headers_win(
    sim: Simulator, client: httpx2.AsyncClient
) -> None:
    sim.set_models_fault("status=500")
    assert (await client.get("/models/gpt-4.1")).status_code == 500
    header = {"x-simulator-fault": "status=429"}
    assert (await client.get("/models", headers=header)).status_code == 429
    sim.inject_faults("status=401", endpoint="models")
    assert (await client.get("/models")).status_code == 401  # the queued one first
    assert (await client.get("/models")).status_code == 500  # then the standing one again
    with pytest.raises(FaultSpecError):
        sim.set_models_fault("status=nope")
    assert (await client.get("/models")).status_code == 500  # a bad spec changes nothing
    sim.clear_faults()  # clears the queues, not the standing fault
    assert (await client.get("/models")).status_code == 500
    sim.set_models_fault("")
    assert (await client.get("/models")).status_code == 200


@pytest.mark.parametrize("spec", ["reset", "disconnect_after=0"])
async def test_models_fault_can_break_the_connection(sim: Simulator, spec: str) -> None:
    sim.set_models_fault(spec)
    stream = await trio.open_tcp_stream(sim.host, sim.port)
    async with stream:
        head = f"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\n\r\n"
        await stream.send_all(head.encode())
        if spec == "reset":
            # RST, not FIN: the client sees "connection reset by peer", with no response.
            with pytest.raises(trio.BrokenResourceError) as caught:
                await stream.receive_some(65536)
            assert isinstance(caught.value.__cause__, ConnectionResetError)
        else:
            assert await stream.receive_some(65536) == b""  # closed without an answer
    assert sim.stats().faults_served[spec.partition("=")[0]] == 1


async def test_reset_fault_on_chat_and_responses(
    sim: Simulator, client: httpx2.AsyncClient
) -> None:
    for path, body in (("/chat/completions", chat_body()), ("/responses", {"model": "gpt-4.1"})):
        with pytest.raises(httpx2.TransportError):
            await client.post(path, json=body, headers={"x-simulator-fault": "reset"})
    assert sim.stats().faults_served["reset"] == 2
    assert sim.stats().active["gpt-4.1"] == 0


async def test_a_simulator_restarts_on_the_same_port() -> None:
    async with httpx2.AsyncClient(headers=AUTH, timeout=None) as http:
        async with open_simulator(api_key=API_KEY, profile="fast") as first:
            port = first.port
            url = f"{first.base_url}/chat/completions"
            # Keep-alive connections that the server closes first: its side goes to TIME_WAIT,
            # which only SO_REUSEADDR lets a new listener bind past.
            for _ in range(3):
                assert (await http.post(url, json=chat_body())).status_code == 200
        with pytest.raises(httpx2.ConnectError):
            await http.post(url, json=chat_body())  # down: connection refused
        async with open_simulator(api_key=API_KEY, profile="fast", port=port) as second:
            assert second.port == port
            response = await http.post(url, json=chat_body())
            assert response.status_code == 200
            assert second.stats().connections_accepted == 1


async def test_failed_after_on_chat_is_an_openrouter_style_error_chunk(
    sim: Simulator, client: httpx2.AsyncClient
) -> None:
    response = await client.post(
        "/chat/completions", json=chat_body(), headers={"x-simulator-fault": "failed_after=3"}
    )
    payloads, _ = parse_stream(response.content)
    assert "[DONE]" not in payloads
    *contents, failed = payloads
    assert len(contents) == 1 + 3
    assert failed["error"] == {
        "code": "server_error",
        "message": "The server had an error while processing your request.",
    }
    assert failed["choices"] == [
        {"index": 0, "delta": {"content": ""}, "logprobs": None, "finish_reason": "error"}
    ]
    assert sim.stats().faults_served == {"failed_after": 1}


async def test_stream_faults_count_units_of_any_reply(client: httpx2.AsyncClient) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = chat_body(n=2, max_tokens=None, tools=tools, tool_choice="none")
    response = await client.post(
        "/chat/completions", json=body, headers={"x-simulator-fault": "error_event_after=5"}
    )
    payloads, _ = parse_stream(response.content)
    units = [chunk for chunk in payloads[:-1] if chunk["choices"][0]["delta"].get("content")]
    assert len(units) == 5  # across both choices
    assert payloads[-1]["error"]["type"] == "server_error"
