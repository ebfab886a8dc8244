# Client tests over httpx2.MockTransport: what the simulator cannot produce, config, headers, seams.
from __future__ import annotations

import json
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import trio
from hypothesis import example, given
from hypothesis import strategies as st
from trio.testing import MockClock

import holysheep_trio as hs
from holysheep_trio.client import AttemptOutcome, Client
from holysheep_trio.sse import ServerSentEvent

if sys.version_info < (3, 11):  # pragma: no cover - trio depends on the backport there
    from exceptiongroup import ExceptionGroup

KEY = "sk-mock-9876543210-secret"
MESSAGES = [{"role": "user", "content": "hi"}]
BASE = "https://api.example.test/v1"


class Script(httpx2.AsyncByteStream):
    """A response body from a list of byte strings and (float) pauses; no async generator."""

    def __init__(self, items: Sequence[bytes | float]) -> None:
        self._items = list(items)
        self.closed = False

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

    async def aclose(self) -> None:
        self.closed = True


def chunk(content: str | None = None, finish: str | None = None, **delta: Any) -> bytes:
    if content is not None:
        delta["content"] = content
    payload = {
        "id": "chatcmpl-m",
        "object": "chat.completion.chunk",
        "model": "gpt-4.1",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


ROLE = chunk(role="assistant", content="")
DONE = b"data: [DONE]\n\n"
SSE = {"content-type": "text/event-stream", "x-request-id": "req_mock"}


def sse_response(*items: bytes | float, status: int = 200) -> httpx2.Response:
    return httpx2.Response(status, headers=SSE, stream=Script(items))


Handler = Callable[[httpx2.Request], httpx2.Response]


@asynccontextmanager
async def mock_client(
    handler: Handler | Sequence[httpx2.Response], **kwargs: Any
) -> AsyncIterator[tuple[Client, list[httpx2.Request]]]:
    """A client over a MockTransport; a list of responses is served in order."""
    requests: list[httpx2.Request] = []
    responses = list(handler) if isinstance(handler, Sequence) else None

    def serve(request: httpx2.Request) -> httpx2.Response:
        requests.append(request)
        if responses is not None:
            return responses.pop(0)
        assert callable(handler)
        return handler(request)

    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("base_url", BASE)
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(serve)) as http_client:
        async with hs.open_client(http_client=http_client, **kwargs) as client:
            yield client, requests
        assert not http_client.is_closed


# ---- configuration -----------------------------------------------------------------------


async def test_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOLYSHEEP_API_KEY", raising=False)
    with pytest.raises(hs.ConfigurationError, match="HOLYSHEEP_API_KEY"):
        async with hs.open_client():
            pass  # pragma: no cover


async def test_environment_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOLYSHEEP_API_KEY", KEY)
    monkeypatch.setenv("HOLYSHEEP_BASE_URL", "http://127.0.0.1:9/v1/")
    async with hs.open_client() as client:
        assert client.base_urls == ("http://127.0.0.1:9/v1",)
        assert KEY not in repr(client)
    monkeypatch.delenv("HOLYSHEEP_BASE_URL")
    async with hs.open_client() as client:
        assert client.base_urls == ("https://api.holysheep.ai/v1",)


@pytest.mark.parametrize("url", ["ftp://x/v1", "api.holysheep.ai/v1", "http:///v1", ""])
async def test_bad_urls(url: str) -> None:
    with pytest.raises(hs.ConfigurationError):
        async with hs.open_client(api_key=KEY, base_url=url or "x"):
            pass  # pragma: no cover
    with pytest.raises(hs.ConfigurationError):
        async with hs.open_client(api_key=KEY, fallback_urls=[url]):
            pass  # pragma: no cover


async def test_bad_messages_fail_at_call_time() -> None:
    async with mock_client([]) as (client, _):
        with pytest.raises(TypeError, match="message"):
            client.stream_chat(model="gpt-4.1", messages=[42])  # type: ignore[list-item]


async def test_stream_must_be_entered() -> None:
    async with mock_client([sse_response(ROLE, chunk("a"), DONE)]) as (client, _):
        stream = client.stream_chat(model="gpt-4.1", messages=MESSAGES)
        with pytest.raises(RuntimeError, match="async with"):
            stream.__aiter__()
        async with stream:
            async for _ in stream:
                pass
        with pytest.raises(RuntimeError, match="once"):
            await stream.__aenter__()


# ---- the request ------------------------------------------------------------------------


async def test_request_headers_and_body() -> None:
    async with mock_client([sse_response(ROLE, chunk("a"), DONE)]) as (client, requests):
        await client.chat(
            model="gpt-4.1",
            messages=[hs.Message(role="user", content="hi")],
            max_tokens=7,
            temperature=0.5,
            extra_headers={"X-Trace": "1"},
        )
    (request,) = requests
    assert request.method == "POST"
    assert str(request.url) == BASE + "/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-trace"] == "1"
    assert KEY not in repr(request.headers)
    assert json.loads(request.content) == {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": 7,
        "temperature": 0.5,
        "stream_options": {"include_usage": True},
    }


async def test_users_client_brings_its_own_headers_and_auth() -> None:
    requests: list[httpx2.Request] = []
    hooked: list[str] = []

    def serve(request: httpx2.Request) -> httpx2.Response:
        requests.append(request)
        return sse_response(ROLE, chunk("a"), DONE)

    async def hook(request: httpx2.Request) -> None:
        hooked.append(request.url.path)

    async with httpx2.AsyncClient(
        transport=httpx2.MockTransport(serve),
        headers={"Authorization": "Bearer theirs", "X-Team": "blue"},
        event_hooks={"request": [hook]},
    ) as http_client:
        async with hs.open_client(base_url=BASE, http_client=http_client) as client:
            await client.chat(model="gpt-4.1", messages=MESSAGES)
        assert not http_client.is_closed
    assert requests[0].headers["authorization"] == "Bearer theirs"
    assert requests[0].headers["x-team"] == "blue"
    assert hooked == ["/v1/chat/completions"]


async def test_redirects_are_not_followed() -> None:
    redirect = httpx2.Response(307, headers={"location": "https://evil.example/steal"})
    async with mock_client([redirect]) as (client, requests):
        with pytest.raises(hs.APIStatusError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES)
    assert info.value.status == 307
    assert len(requests) == 1


# ---- what the stream yields -------------------------------------------------------------


async def test_role_chunk_is_held_until_the_first_token() -> None:
    responses = [sse_response(ROLE, chunk("Hi"), chunk(finish="stop"), DONE)]
    async with mock_client(responses) as (client, _):  # noqa: SIM117 - client is used next
        async with client.stream_chat(model="gpt-4.1", messages=MESSAGES) as stream:
            chunks = [c async for c in stream]
    assert [c.text for c in chunks] == ["", "Hi", ""]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert stream.completion.text == "Hi"
    assert stream.completion.finish_reason == "stop"
    assert stream.completion.request_id == "req_mock"


async def test_tool_calls_are_accumulated() -> None:
    def call(index: int, **fields: Any) -> bytes:
        function = {k: fields.pop(k) for k in ("name", "arguments") if k in fields}
        return chunk(tool_calls=[{"index": index, **fields, "function": function}])

    responses = [
        sse_response(
            chunk(role="assistant", content=None),
            call(0, id="call_1", type="function", name="get_weather", arguments=""),
            call(0, arguments='{"city":'),
            call(0, arguments=' "Paris"}'),
            chunk(finish="tool_calls"),
            DONE,
        )
    ]
    async with mock_client(responses) as (client, _):
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES, tools=[])
    assert completion.finish_reason == "tool_calls"
    assert completion.text == ""
    assert completion.tool_calls == (
        hs.ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}'),
    )
    assert completion.ttft is not None


async def test_a_stream_without_output() -> None:
    async with mock_client([sse_response(ROLE, chunk(finish="length"), DONE)]) as (client, _):
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=0)
    assert completion.text == ""
    assert completion.finish_reason == "length"
    assert completion.ttft is None


async def test_end_without_done_but_with_finish_reason_is_fine() -> None:
    async with mock_client([sse_response(ROLE, chunk("a"), chunk(finish="stop"))]) as (client, _):
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES)
    assert completion.text == "a"


async def test_truncated_stream_before_first_token_is_retried(autojump_clock: MockClock) -> None:
    responses = [sse_response(ROLE), sse_response(ROLE, chunk("ok"), DONE)]
    async with mock_client(responses) as (client, requests):
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES)
    assert completion.text == "ok"
    assert completion.attempts == 2
    assert len(requests) == 2


async def test_truncated_stream_after_output_is_interrupted() -> None:
    async with mock_client([sse_response(ROLE, chunk("a"), chunk("b"))]) as (client, _):
        with pytest.raises(hs.StreamInterruptedError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES)
    assert info.value.partial.text == "ab"
    assert type(info.value.__cause__) is hs.APIConnectionError
    assert info.value.kind == "network"


async def test_named_error_event() -> None:
    event = b'event: error\ndata: {"error": {"message": "bad", "code": 400}}\n\n'
    async with mock_client([sse_response(ROLE, event)]) as (client, _):
        with pytest.raises(hs.APIStreamError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES)
    assert info.value.status == 400
    assert info.value.kind == "invalid_request"


async def test_wrong_content_type() -> None:
    response = httpx2.Response(200, json={"choices": []})
    async with mock_client([response]) as (client, _):
        with pytest.raises(hs.StreamProtocolError, match="text/event-stream"):
            await client.chat(model="gpt-4.1", messages=MESSAGES)


async def test_error_body_is_read_with_a_bound() -> None:
    huge = Script([b"x" * 65536] * 64)  # 4 MiB
    response = httpx2.Response(500, stream=huge)
    async with mock_client([response], retry=hs.RetryPolicy(max_retries=0)) as (client, _):
        with pytest.raises(hs.ServerError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES)
    assert len(info.value.body) == 64 * 1024
    assert huge.closed


async def test_key_echoed_by_the_server_is_scrubbed() -> None:
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}"}})
    response = httpx2.Response(401, content=body.encode())
    async with mock_client([response]) as (client, _):
        with pytest.raises(hs.AuthenticationError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES)
    error = info.value
    assert "Incorrect API key provided: ***" in error.message
    for text in (str(error), repr(error), error.body, "".join(traceback.format_exception(error))):
        assert KEY not in text


async def test_transport_error_is_translated() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    async with mock_client(refuse, retry=hs.RetryPolicy(max_retries=0)) as (client, _):
        with pytest.raises(hs.APIConnectionError, match="ConnectError") as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES)
    assert isinstance(info.value.__cause__, httpx2.ConnectError)


async def test_connect_timeout_falls_over(autojump_clock: MockClock) -> None:
    def serve(request: httpx2.Request) -> httpx2.Response:
        if request.url.host == "primary.test":
            raise httpx2.ConnectTimeout("slow", request=request)
        return sse_response(ROLE, chunk("from backup"), DONE)

    async with mock_client(
        serve, base_url="https://primary.test/v1", fallback_urls=["https://backup.test/v1"]
    ) as (client, requests):
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES)
    assert completion.text == "from backup"
    assert [r.url.host for r in requests] == ["primary.test"] * 3 + ["backup.test"]
    # the same key goes to every configured host, and only to them
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in requests)


# ---- deadlines over the mock --------------------------------------------------------------


async def test_per_request_timeouts_override(autojump_clock: MockClock) -> None:
    responses = [sse_response(ROLE, chunk("a"), 10.0, chunk("b"), DONE)]
    async with mock_client(responses, timeouts=hs.Timeouts(idle=60)) as (client, _):
        with pytest.raises(hs.StreamInterruptedError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES, timeouts=hs.Timeouts(idle=2))
    cause = info.value.__cause__
    assert isinstance(cause, hs.APITimeoutError)
    assert (cause.deadline, cause.seconds) == ("idle", 2)
    assert trio.current_time() == pytest.approx(2)


async def test_auto_total_deadline_from_max_tokens(autojump_clock: MockClock) -> None:
    # gpt-4.1, max_tokens=4500: 0.85 + 100 + 5 = 105.85 s; tokens trickle in every 50 s
    responses = [sse_response(ROLE, *[x for _ in range(5) for x in (50.0, chunk("t"))], DONE)]
    async with mock_client(responses) as (client, _):
        with pytest.raises(hs.StreamInterruptedError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=4500)
    cause = info.value.__cause__
    assert isinstance(cause, hs.APITimeoutError)
    assert cause.deadline == "total"
    assert trio.current_time() == pytest.approx(105.85)
    assert info.value.partial.text == "tt"


# ---- structure: one exception, seams --------------------------------------------------------


async def test_open_client_raises_one_exception_not_a_group() -> None:
    with pytest.raises(ZeroDivisionError):
        async with hs.open_client(api_key=KEY, base_url=BASE):
            1 / 0  # noqa: B018 - the failure under test


async def test_every_attempt_reports_its_outcome(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes: list[AttemptOutcome] = []
    admissions: list[tuple[str, str, int]] = []

    @asynccontextmanager
    async def admit(self: Client, *, model: str, estimated_tokens: int) -> AsyncIterator[None]:
        admissions.append(("enter", model, estimated_tokens))
        try:
            yield
        finally:
            admissions.append(("exit", model, estimated_tokens))

    monkeypatch.setattr(Client, "_report", lambda self, outcome: outcomes.append(outcome))
    monkeypatch.setattr(Client, "_admit", admit)
    responses = [
        httpx2.Response(503, json={"error": {"message": "busy"}}),
        sse_response(ROLE, chunk("a"), chunk(finish="stop"), DONE),
    ]
    async with mock_client(responses) as (client, _):
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=10)
    assert completion.attempts == 2
    assert [(o.attempt, type(o.error), o.completed) for o in outcomes] == [
        (1, hs.OverloadedError, False),
        (2, type(None), True),
    ]
    assert outcomes[1].ttft is not None
    # Each attempt is admitted on its own: the back-off between them holds no slot.
    assert [a[0] for a in admissions] == ["enter", "exit", "enter", "exit"]
    assert admissions[0][2] >= 10


async def test_own_http_client_defaults() -> None:
    from holysheep_trio._transport import TrioTransport

    async with hs.open_client(api_key=KEY, base_url=BASE) as client:
        http_client = client._http
        assert http_client.headers["user-agent"].startswith("holysheep-trio/")
        assert "authorization" not in http_client.headers  # added per request only
        assert http_client.follow_redirects is False
        transport = http_client._transport
        assert isinstance(transport, TrioTransport)
        assert transport._verify is True  # TLS verification on by default
    assert http_client.is_closed  # we close the client we created


def test_public_names_resolve_lazily() -> None:
    import subprocess
    import sys

    for name in hs.__all__:
        assert getattr(hs, name) is not None
    assert hs.__all__ == sorted(hs.__all__)
    probe = "import sys, holysheep_trio.sse; print('trio' in sys.modules, 'httpx2' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


# ---- past defects: pinned ------------------------------------------------------------------


class FailingScript(Script):
    """A Script whose body then fails the way a dropped connection does."""

    async def __anext__(self) -> bytes:
        if not self._items:
            raise httpx2.ReadError("connection reset by peer")
        return await super().__anext__()


async def test_server_is_asked_not_to_compress() -> None:
    # Both body paths read the raw bytes, so a gzip body would be garbage to the SSE parser.
    async with mock_client([sse_response(ROLE, chunk("x", "stop"), DONE)]) as (client, requests):
        await client.chat(model="gpt-4.1", messages=MESSAGES)
    assert requests[0].headers["accept-encoding"] == "identity"


async def test_connection_lost_after_done_keeps_the_completion() -> None:
    body = FailingScript([ROLE, chunk("Hel"), chunk("lo", "stop"), DONE])
    response = httpx2.Response(200, headers=SSE, stream=body)
    async with mock_client([response]) as (client, _):
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES)
    assert (completion.text, completion.finish_reason) == ("Hello", "stop")


async def test_body_left_open_after_done_does_not_hold_the_caller(
    autojump_clock: MockClock,
) -> None:
    # The server never ends the body after [DONE]: the stream is complete all the same, its
    # duration ends at [DONE], and the caller waits only the short bounded drain.
    response = sse_response(ROLE, chunk("a", "stop"), DONE, 3600.0)
    async with mock_client([response]) as (client, _):
        start = trio.current_time()
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES)
        waited = trio.current_time() - start
    assert completion.text == "a"
    assert completion.duration == 0.0
    assert 0 < waited <= 0.25


@pytest.mark.parametrize(
    "keepalive",
    [b": ping\n\n", b"event: ping\ndata: {}\n\n", b"data:\n\n"],
    ids=["comment", "ping-event", "empty-data"],
)
async def test_keepalive_events_are_not_progress(
    autojump_clock: MockClock, keepalive: bytes
) -> None:
    pings: list[bytes | float] = [item for _ in range(100) for item in (0.1, keepalive)]
    response = sse_response(ROLE, chunk("first"), *pings)
    timeouts = hs.Timeouts(idle=0.5)
    async with mock_client([response], timeouts=timeouts) as (client, _):
        with pytest.raises(hs.StreamInterruptedError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES)
    cause = info.value.__cause__
    assert isinstance(cause, hs.APITimeoutError)
    assert cause.deadline == "idle"
    assert trio.current_time() == pytest.approx(0.5, abs=0.01)
    assert info.value.partial.text == "first"


async def test_a_group_raised_in_the_block_is_not_wrapped_again() -> None:
    # The client's nursery wraps what the block raises in a one-member group; the caller must
    # get their own group back, not that wrapper (trio may rebuild the group object itself).
    first, second = ValueError("a"), KeyError("b")
    with pytest.raises(ExceptionGroup) as info:
        async with mock_client([]) as (_client, _):
            raise ExceptionGroup("two things", [first, second])
    assert info.value.message == "two things"
    assert list(info.value.exceptions) == [first, second]


async def test_users_http_client_gets_the_environment_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOLYSHEEP_API_KEY", KEY)
    seen: list[str | None] = []

    def serve(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.headers.get("authorization"))
        return sse_response(ROLE, chunk("x", "stop"), DONE)

    transport = httpx2.MockTransport(serve)
    async with (
        httpx2.AsyncClient(transport=transport) as plain,
        hs.open_client(http_client=plain, base_url=BASE) as client,
    ):
        await client.chat(model="gpt-4.1", messages=MESSAGES)
    # A client that authenticates by itself keeps its own credentials.
    own = {"Authorization": "Bearer the-users-own"}
    async with (
        httpx2.AsyncClient(transport=transport, headers=own) as authed,
        hs.open_client(http_client=authed, base_url=BASE) as client,
    ):
        await client.chat(model="gpt-4.1", messages=MESSAGES)
    assert seen == [f"Bearer {KEY}", "Bearer the-users-own"]


# --- the chat decoder's fast flags, pinned to the general rule ----------------------------------

_DELTA_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "role": st.none() | st.just("assistant"),
        "content": st.none() | st.sampled_from(["", "x"]),
        "refusal": st.none() | st.sampled_from(["", "no"]),
        "reasoning": st.none() | st.sampled_from(["", "hm"]),
        "tool_calls": st.just([{"index": 0, "id": "c", "function": {"name": "f"}}]),
    },
)
_CHOICE = st.fixed_dictionaries(
    {"delta": _DELTA_FIELDS},
    optional={
        "index": st.integers(0, 1),
        "finish_reason": st.sampled_from([None, "stop", "length", "error"]),
    },
)
_PAYLOAD = st.fixed_dictionaries(
    {"id": st.just("chatcmpl-1"), "choices": st.lists(_CHOICE, max_size=2)},
    optional={"usage": st.none() | st.just({"prompt_tokens": 3, "completion_tokens": 1})},
)


def _reference_decode(event: ServerSentEvent) -> tuple[object, int, object]:
    """The general rule the decoder's fast path must agree with."""
    from holysheep_trio._lifecycle import DROPPABLE, END, FINISH, OUTPUT, PROGRESS
    from holysheep_trio._wire import DONE, decode_event

    try:
        item = decode_event(event)
    except hs.HolySheepError as exc:
        return type(exc), str(exc), None
    if item is None:
        return None, 0, None
    if item is DONE:
        return None, PROGRESS | END, None
    assert isinstance(item, hs.ChatChunk)
    flags = OUTPUT | PROGRESS if item.has_output else 0
    if item.usage is not None:
        flags |= PROGRESS
    role = False
    for choice in item.choices:
        if choice.finish_reason is not None:
            flags |= FINISH | PROGRESS
        if choice.delta.role is not None:
            role = True
    if not flags and not role:
        flags = DROPPABLE
    return item, flags, item.usage


def _one_choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


@given(
    payload=_PAYLOAD | st.just("[DONE]") | st.just(""),
    name=st.sampled_from(["message", "", "ping", "error"]),
)
@example(payload=_one_choice({"content": "x"}), name="message")
@example(payload=_one_choice({"reasoning": "hm"}), name="message")
@example(payload=_one_choice({"refusal": "no"}), name="message")
@example(payload=_one_choice({"role": "assistant", "content": ""}), name="message")
@example(payload=_one_choice({}), name="message")
@example(payload=_one_choice({}, "stop"), name="message")
@example(payload=_one_choice({"tool_calls": [{"index": 0, "id": "c"}]}), name="message")
def test_chat_decoder_flags_agree_with_the_general_rule(payload: object, name: str) -> None:
    from holysheep_trio.client import _ChatDecoder

    data = payload if isinstance(payload, str) else json.dumps(payload)
    event = ServerSentEvent(event=name, data=data)
    decoder = _ChatDecoder()
    got: object
    try:
        item, flags = decoder.decode(event)
    except hs.HolySheepError as exc:
        got = (type(exc), str(exc), None)
    else:
        got = (item, flags, decoder.usage)
    assert got == _reference_decode(event)


def test_running_out_of_files_is_not_called_a_network_error() -> None:
    import errno

    from holysheep_trio._http import translate

    exc = httpx2.ConnectError("too many open files: this process may have 64 open at once")
    exc.__cause__ = OSError("all attempts to connect failed")
    exc.__cause__.__cause__ = OSError(errno.EMFILE, "Too many open files")
    error = translate(exc, connect_timeout=None)
    assert isinstance(error, hs.APIConnectionError)
    assert str(error).startswith("cannot open a connection: too many open files")
    other = translate(httpx2.ConnectError("refused"), connect_timeout=None)
    assert str(other).startswith("network error (ConnectError): refused")
