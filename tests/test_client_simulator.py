# Integration tests of the client against the simulator over loopback: every fault, every exit.
from __future__ import annotations

import contextlib
import gc
import logging
import sys
import traceback
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import pytest
import trio
from trio.testing import MockClock

import holysheep_trio as hs
from holysheep_trio.simulator import Simulator, open_simulator

KEY = "sk-test-0123456789-secret"
MESSAGES = [{"role": "user", "content": "Tell me about trio."}]


@pytest.fixture
async def sim(autojump_clock: MockClock) -> AsyncIterator[Simulator]:
    async with open_simulator(api_key=KEY, profile="fast", snapshots=False) as simulator:
        yield simulator


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll in virtual time until ``condition()``: the server notices closed sockets async."""
    for _ in range(200):
        if condition():
            return
        await trio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def no_open_connections(sim: Simulator) -> None:
    await wait_for(lambda: sim.stats().open_connections == 0, "open_connections == 0")


def client_for(sim: Simulator, **kwargs: Any) -> Any:
    return hs.open_client(api_key=KEY, base_url=sim.base_url, **kwargs)


async def reference_text(sim: Simulator, max_tokens: int) -> str:
    async with client_for(sim) as client:
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=max_tokens)
    return completion.text


# ---- the happy path and connection reuse ------------------------------------------------


async def test_stream_yields_chunks_and_a_completion(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    async with client_for(sim) as client:
        texts = []
        async with client.stream_chat(model="gpt-4.1", messages=MESSAGES, max_tokens=12) as stream:
            async for chunk in stream:
                assert isinstance(chunk, hs.ChatChunk)
                texts.append(chunk.text)
        completion = stream.completion
    assert completion.text == "".join(texts)
    assert completion.text
    assert completion.finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 12
    assert completion.attempts == 1
    assert completion.model == "gpt-4.1"
    assert completion.request_id is not None
    assert completion.request_id.startswith("req_")
    assert completion.ttft is not None
    assert 0 <= completion.ttft <= completion.duration
    assert sim.stats().completion_tokens["gpt-4.1"] == 12
    await no_open_connections(sim)


async def test_two_sequential_streams_share_one_connection(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    async with client_for(sim) as client:
        for _ in range(2):
            async with client.stream_chat(model="gpt-4.1", messages=MESSAGES, max_tokens=5) as s:
                async for _chunk in s:
                    pass
            assert s.completion.finish_reason == "length"
        assert sim.stats().connections_accepted == 1
        assert sim.stats().open_connections == 1  # kept alive in the pool
    await no_open_connections(sim)


async def test_chat_takes_message_values(autojump_clock: MockClock, sim: Simulator) -> None:
    async with client_for(sim) as client:
        completion = await client.chat(
            model="deepseek-v3.2",
            messages=[hs.Message(role="system", content="Be brief."), *MESSAGES],
            max_tokens=3,
            temperature=0.2,
        )
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3
    assert sim.stats().requests["deepseek-v3.2"] == 1


async def test_realistic_profile_ttft(autojump_clock: MockClock) -> None:
    async with open_simulator(api_key=KEY, profile="realistic") as sim:  # noqa: SIM117 - sim is needed by the next line
        async with client_for(sim) as client:
            completion = await client.chat(
                model="gemini-2.5-flash", messages=MESSAGES, max_tokens=9
            )
    assert completion.ttft is not None
    assert 0.01 < completion.ttft < 5
    assert completion.duration >= completion.ttft + 8 / 60  # ~45 tok/s for the other 8 tokens


# ---- ownership: every exit path closes the response ---------------------------------------


async def test_break_closes_the_connection(autojump_clock: MockClock, sim: Simulator) -> None:
    async with client_for(sim) as client:
        async with client.stream_chat(model="gpt-4.1", messages=MESSAGES, max_tokens=50) as s:
            async for _chunk in s:
                break
        await no_open_connections(sim)
        assert s.completion.finish_reason is None
        # the client still works afterwards, on a fresh connection
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
        assert completion.finish_reason == "length"
    await no_open_connections(sim)


async def test_exception_in_the_block_closes_the_connection(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    async with client_for(sim) as client:

        async def fail_inside() -> None:
            async with client.stream_chat(model="gpt-4.1", messages=MESSAGES, max_tokens=50) as s:
                async for _chunk in s:
                    raise KeyError("user code failed")

        with pytest.raises(KeyError):
            await fail_inside()
        await no_open_connections(sim)


async def test_callers_cancel_scope_closes_the_connection(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    async with client_for(sim) as client:
        with trio.move_on_after(5) as scope:
            async with client.stream_chat(
                model="gpt-4.1",
                messages=MESSAGES,
                max_tokens=50,
                extra_headers={"X-Simulator-Fault": "stall_after=2;seconds=30"},
            ) as s:
                async for _chunk in s:
                    pass
        assert scope.cancelled_caught
        assert trio.current_time() == pytest.approx(5, abs=0.5)
        await no_open_connections(sim)


async def test_callers_fail_after_raises_too_slow(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    async with client_for(sim) as client:
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(3):
                await client.chat(
                    model="gpt-4.1",
                    messages=MESSAGES,
                    max_tokens=10,
                    extra_headers={"X-Simulator-Fault": "slow_headers=20"},
                )
        await no_open_connections(sim)


async def test_aclose_cancels_open_streams(autojump_clock: MockClock, sim: Simulator) -> None:
    errors: list[BaseException] = []
    async with client_for(sim) as client:

        async def consume() -> None:
            try:
                async with client.stream_chat(
                    model="gpt-4.1",
                    messages=MESSAGES,
                    max_tokens=50,
                    extra_headers={"X-Simulator-Fault": "stall_after=3;seconds=1000"},
                ) as stream:
                    async for _chunk in stream:
                        pass
            except hs.ClientClosedError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            nursery.start_soon(consume)
            await wait_for(lambda: sim.stats().active["gpt-4.1"] == 2, "two active streams")
            await client.aclose()
        assert client.closed
        with pytest.raises(hs.ClientClosedError):
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
    assert len(errors) == 2
    assert all(error.model == "gpt-4.1" for error in errors)
    assert trio.current_time() < 100
    await no_open_connections(sim)


async def test_leaving_open_client_cancels_streams_of_other_tasks(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    errors: list[BaseException] = []

    async def consume(client: hs.Client, task_status: Any) -> None:
        try:
            async with client.stream_chat(
                model="gpt-4.1",
                messages=MESSAGES,
                max_tokens=50,
                extra_headers={"X-Simulator-Fault": "stall_after=3;seconds=1000"},
            ) as stream:
                task_status.started()
                async for _chunk in stream:
                    pass
        except hs.ClientClosedError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery, client_for(sim) as client:
        await nursery.start(consume, client)
    assert len(errors) == 1
    await no_open_connections(sim)


# ---- retries, Retry-After, fallback -------------------------------------------------------


async def test_two_503_then_success(autojump_clock: MockClock, sim: Simulator) -> None:
    sim.inject_faults("status=503", "status=503")
    expected = await reference_text(sim, 6)
    sim.inject_faults("status=503", "status=503")
    start = trio.current_time()
    async with client_for(sim) as client:
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=6)
    assert completion.attempts == 3
    assert completion.text == expected
    # backoff 0.5 then 1.0, minus up to 25 % jitter each
    assert 0.375 + 0.75 <= trio.current_time() - start <= 0.5 + 1.0 + 0.1
    assert sim.stats().faults_served["status"] == 4


async def test_retries_spent_raises_the_last_error(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    sim.inject_faults("status=500", "status=502", "status=529")
    async with client_for(sim) as client:
        with pytest.raises(hs.OverloadedError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=6)
    assert info.value.status == 529
    assert info.value.attempt == 3
    assert info.value.kind == "server"
    assert info.value.request_id is not None


async def test_429_retry_after_is_honoured(autojump_clock: MockClock, sim: Simulator) -> None:
    sim.inject_faults("status=429;retry_after=2")
    start = trio.current_time()
    async with client_for(sim) as client:
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=3)
    assert completion.attempts == 2
    assert 2.0 <= trio.current_time() - start < 2.1


async def test_429_retry_after_ms_wins(autojump_clock: MockClock, sim: Simulator) -> None:
    sim.inject_faults("status=429;retry_after=9;retry_after_ms=500")
    start = trio.current_time()
    async with client_for(sim) as client:
        await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=3)
    assert 0.5 <= trio.current_time() - start < 0.6


async def test_429_error_when_retries_spent(autojump_clock: MockClock, sim: Simulator) -> None:
    sim.inject_faults(*["status=429;retry_after=1"] * 3)
    async with client_for(sim) as client:
        with pytest.raises(hs.RateLimitError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=3)
    assert info.value.retry_after == 1.0
    assert info.value.kind == "rate_limit"
    assert info.value.attempt == 3


async def test_should_retry_false_is_obeyed(autojump_clock: MockClock, sim: Simulator) -> None:
    sim.inject_faults("status=503;should_retry=false")
    async with client_for(sim) as client:
        with pytest.raises(hs.OverloadedError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=3)
    assert info.value.attempt == 1
    assert info.value.should_retry is False


async def test_retry_never_sleeps_past_the_total_deadline(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    sim.inject_faults("status=429;retry_after=50")
    async with client_for(sim, timeouts=hs.Timeouts(total=10)) as client:
        with pytest.raises(hs.RateLimitError):
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=3)
    assert trio.current_time() < 1


@pytest.mark.parametrize(
    ("fault", "cls", "kind"),
    [
        ("status=400", hs.BadRequestError, "invalid_request"),
        ("status=401", hs.AuthenticationError, "authentication"),
        ("status=403", hs.PermissionDeniedError, "authentication"),
        ("status=404", hs.NotFoundError, "invalid_request"),
    ],
)
async def test_client_errors_are_not_retried(
    autojump_clock: MockClock, sim: Simulator, fault: str, cls: type[hs.APIStatusError], kind: str
) -> None:
    sim.inject_faults(fault)
    async with client_for(sim) as client:
        with pytest.raises(cls) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=3)
    assert info.value.kind == kind
    assert info.value.attempt == 1
    assert info.value.body
    assert sim.stats().total_requests == 1


async def test_wrong_key_and_unknown_model(autojump_clock: MockClock, sim: Simulator) -> None:
    async with hs.open_client(api_key="sk-wrong", base_url=sim.base_url) as client:
        with pytest.raises(hs.AuthenticationError) as auth:
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=3)
    assert auth.value.error_type == "invalid_request_error"
    async with client_for(sim) as client:
        with pytest.raises(hs.NotFoundError):
            await client.chat(model="no-such-model", messages=MESSAGES, max_tokens=3)
        with pytest.raises(hs.BadRequestError, match="valid faults"):
            await client.chat(
                model="gpt-4.1",
                messages=MESSAGES,
                max_tokens=3,
                extra_headers={"X-Simulator-Fault": "explode"},
            )


async def test_fallback_after_5xx(autojump_clock: MockClock) -> None:
    async with (
        open_simulator(api_key=KEY, profile="fast") as primary,
        open_simulator(api_key=KEY, profile="fast") as backup,
    ):
        primary.inject_faults("status=502", "status=502", "status=502")
        async with hs.open_client(
            api_key=KEY, base_url=primary.base_url, fallback_urls=[backup.base_url]
        ) as client:
            completion = await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=4)
        assert completion.attempts == 4
        assert primary.stats().total_requests == 3
        assert backup.stats().total_requests == 1


async def test_fallback_after_connection_refused(autojump_clock: MockClock, sim: Simulator) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now: connections are refused
    async with hs.open_client(
        api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", fallback_urls=[sim.base_url]
    ) as client:
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=4)
    assert completion.attempts == 4
    assert completion.finish_reason == "length"


async def test_connection_refused_without_fallback(autojump_clock: MockClock) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    async with hs.open_client(
        api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", retry=hs.RetryPolicy(max_retries=0)
    ) as client:
        with pytest.raises(hs.APIConnectionError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=4)
    assert type(info.value) is hs.APIConnectionError
    assert info.value.kind == "network"
    # The transport's error names a stand-in request: the method and URL, no headers (the
    # request itself, with the key, is not kept while a request is on its way).
    cause = info.value.__cause__
    assert isinstance(cause, httpx2.ConnectError)
    assert cause.request.method == "POST"
    assert str(cause.request.url) == f"http://127.0.0.1:{port}/v1/chat/completions"
    assert "authorization" not in cause.request.headers


async def test_an_unsendable_request_leaves_no_key_in_the_error_chain(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    # A header value h11 refuses (a line break) fails before a connection is taken; nothing
    # the error chains (cause, context) may carry the request's headers with the key.
    async with client_for(sim) as client:
        with pytest.raises(hs.HolySheepError) as info:
            await client.chat(
                model="gpt-4.1", messages=MESSAGES, max_tokens=2, extra_headers={"x-trace": "a\nb"}
            )
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [info.value]
    while pending:
        current = pending.pop()
        if current is None or current in seen:
            continue
        seen.append(current)
        assert KEY not in str(current) + repr(current)
        request = getattr(current, "_request", None)
        if isinstance(request, httpx2.Request):
            assert "authorization" not in request.headers
        pending += [current.__cause__, current.__context__]
    assert sim.stats().requests["gpt-4.1"] == 0


async def test_an_open_stream_does_not_hold_its_prompt(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    """Attempts end at the first output: the messages and the request body go then, not when
    the stream ends (a prompt of tens of kilobytes, thousands of streams)."""

    class Text(str):
        pass

    content = Text("a long prompt " * 1000)
    alive = weakref.ref(content)
    messages: list[dict[str, Any]] | None = [{"role": "user", "content": content}]
    del content
    async with client_for(sim) as client:
        assert messages is not None
        stream = client.stream_chat(model="gpt-4.1", messages=messages, max_tokens=5)
        body = stream._request._new_exchange._payload  # type: ignore[attr-defined]
        assert b"a long prompt" in body
        messages = None
        async with stream:
            gc.collect()
            assert alive() is None
            assert sys.getrefcount(body) == 2  # this frame's name and the call's argument
            text = "".join([chunk.text async for chunk in stream])
        assert text == stream.completion.text


async def test_a_request_is_not_held_while_its_answer_is_awaited(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    """With thousands of streams starting at once, each one's httpx2.Request (headers, URL,
    extensions: about 2 KiB) would be held for as long as the server takes to answer."""

    def requests_alive() -> list[httpx2.Request]:
        gc.collect()
        return [
            o
            for o in gc.get_objects()
            if isinstance(o, httpx2.Request) and str(o.url).startswith(sim.base_url)
        ]

    async with client_for(sim) as client:
        texts: list[str] = []

        async def one() -> None:
            async with client.stream_chat(
                model="gpt-4.1",
                messages=MESSAGES,
                max_tokens=3,
                extra_headers={"X-Simulator-Fault": "slow_headers=5"},
            ) as stream:
                texts.extend([chunk.text async for chunk in stream])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            await trio.sleep(1.0)  # sent; the head comes after 5 s
            assert sim.stats().requests["gpt-4.1"] == 1
            assert requests_alive() == []
        assert "".join(texts)


# ---- faults after output began: StreamInterruptedError ------------------------------------


async def _interrupted(
    sim: Simulator, fault: str, timeouts: hs.Timeouts | None = None
) -> tuple[hs.StreamInterruptedError, list[str]]:
    texts: list[str] = []
    async with client_for(sim, timeouts=timeouts) as client:

        async def consume() -> None:
            async with client.stream_chat(
                model="gpt-4.1",
                messages=MESSAGES,
                max_tokens=20,
                extra_headers={"X-Simulator-Fault": fault},
            ) as stream:
                async for chunk in stream:
                    texts.append(chunk.text)

        with pytest.raises(hs.StreamInterruptedError) as info:
            await consume()
    await no_open_connections(sim)
    return info.value, texts


async def test_disconnect_mid_stream(autojump_clock: MockClock, sim: Simulator) -> None:
    error, texts = await _interrupted(sim, "disconnect_after=3")
    assert isinstance(error.__cause__, hs.APIConnectionError)
    assert error.kind == "network"
    assert error.partial.text == "".join(texts)
    assert len([t for t in texts if t]) == 3
    assert error.partial.finish_reason is None
    assert error.attempt == 1
    assert error.request_id is not None


async def test_malformed_chunk_mid_stream(autojump_clock: MockClock, sim: Simulator) -> None:
    error, texts = await _interrupted(sim, "malformed_after=2")
    assert isinstance(error.__cause__, hs.StreamProtocolError)
    assert error.kind == "parse"
    assert error.__cause__.data
    assert error.partial.text == "".join(texts)


async def test_error_event_mid_stream(autojump_clock: MockClock, sim: Simulator) -> None:
    error, _ = await _interrupted(sim, "error_event_after=2;status=429")
    cause = error.__cause__
    assert isinstance(cause, hs.APIStreamError)
    assert cause.status == 429
    assert error.kind == "rate_limit"


async def test_stall_mid_stream_fires_idle(autojump_clock: MockClock, sim: Simulator) -> None:
    start = trio.current_time()
    error, _ = await _interrupted(sim, "stall_after=2;seconds=100", hs.Timeouts(idle=5))
    cause = error.__cause__
    assert isinstance(cause, hs.APITimeoutError)
    assert cause.deadline == "idle"
    assert error.kind == "timeout"
    assert 5 <= trio.current_time() - start < 6


async def test_keepalives_are_not_progress(autojump_clock: MockClock, sim: Simulator) -> None:
    start = trio.current_time()
    error, _ = await _interrupted(sim, "keepalive_after=2;every=1", hs.Timeouts(idle=5))
    cause = error.__cause__
    assert isinstance(cause, hs.APITimeoutError)
    assert cause.deadline == "idle"
    assert 5 <= trio.current_time() - start < 6


async def test_total_deadline_mid_stream(autojump_clock: MockClock, sim: Simulator) -> None:
    start = trio.current_time()
    error, _ = await _interrupted(sim, "stall_after=2;seconds=100", hs.Timeouts(total=3))
    cause = error.__cause__
    assert isinstance(cause, hs.APITimeoutError)
    assert cause.deadline == "total"
    assert 3 <= trio.current_time() - start < 3.5


async def test_short_stall_is_fine(autojump_clock: MockClock, sim: Simulator) -> None:
    expected = await reference_text(sim, 6)
    async with client_for(sim, timeouts=hs.Timeouts(idle=5)) as client:
        completion = await client.chat(
            model="gpt-4.1",
            messages=MESSAGES,
            max_tokens=6,
            extra_headers={"X-Simulator-Fault": "stall_after=2;seconds=4"},
        )
    assert completion.text == expected


# ---- faults before the first token: retried invisibly or raised as they are --------------


async def test_disconnect_before_first_token_is_retried(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    sim.inject_faults("disconnect_after=0")
    async with client_for(sim) as client:
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=5)
    assert completion.attempts == 2
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5


async def test_error_event_before_first_token_is_retried(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    sim.inject_faults("error_event_after=0;status=503")
    async with client_for(sim) as client:
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=5)
    assert completion.attempts == 2


async def test_first_token_timeout_is_retried(autojump_clock: MockClock, sim: Simulator) -> None:
    sim.inject_faults("slow_headers=30")
    start = trio.current_time()
    async with client_for(sim, timeouts=hs.Timeouts(first_token=4)) as client:
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=5)
    assert completion.attempts == 2
    assert 4 <= trio.current_time() - start < 6
    assert completion.ttft is not None
    assert completion.ttft >= 4  # the caller waited through the failed attempt


async def test_keepalives_before_first_token_fire_first_token(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    sim.inject_faults(*["keepalive_after=0;every=1"] * 3)
    async with client_for(sim, timeouts=hs.Timeouts(first_token=3, idle=30)) as client:
        with pytest.raises(hs.APITimeoutError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=5)
    assert info.value.deadline == "first_token"
    assert info.value.attempt == 3
    await no_open_connections(sim)


async def test_malformed_before_first_token_is_raised(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    sim.inject_faults("malformed_after=0")
    async with client_for(sim) as client:
        with pytest.raises(hs.StreamProtocolError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=5)
    assert info.value.attempt == 1
    assert info.value.kind == "parse"


async def test_oversized_event_is_a_protocol_error(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    sim.inject_faults("oversized_event;size=2097152")
    async with client_for(sim, max_event_size=1 << 20) as client:
        with pytest.raises(hs.StreamProtocolError):
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=5)
    await no_open_connections(sim)


async def test_a_2_mib_event_is_read_by_default(autojump_clock: MockClock, sim: Simulator) -> None:
    # A delta may carry a base64 image: the default bound (16 MiB) takes it.
    sim.inject_faults("oversized_event;size=2097152")
    async with (
        client_for(sim) as client,
        client.stream_chat(model="gpt-4.1", messages=MESSAGES, max_tokens=5) as stream,
    ):
        chunks = [chunk async for chunk in stream]
    assert chunks
    assert stream.completion.finish_reason is not None


async def test_max_event_size_is_validated() -> None:
    with pytest.raises(ValueError, match="max_event_size"):
        async with hs.open_client(api_key=KEY, max_event_size=0):
            pass  # pragma: no cover


async def test_drip_gives_the_same_text(autojump_clock: MockClock, sim: Simulator) -> None:
    expected = await reference_text(sim, 8)
    async with client_for(sim) as client:
        completion = await client.chat(
            model="gpt-4.1",
            messages=MESSAGES,
            max_tokens=8,
            extra_headers={"X-Simulator-Fault": "drip"},
        )
    assert completion.text == expected
    assert completion.finish_reason == "length"


# ---- httpx2's default transport (a user's http_client) is clean too ----------------------


@pytest.mark.parametrize(
    "fault", ["", "malformed_after=2", "error_event_after=2", "disconnect_after=2", "break"]
)
async def test_users_http_client_with_default_transport(
    autojump_clock: MockClock, sim: Simulator, fault: str
) -> None:
    async with httpx2.AsyncClient() as http_client:
        async with hs.open_client(
            api_key=KEY, base_url=sim.base_url, http_client=http_client
        ) as client:
            headers = {"X-Simulator-Fault": fault} if fault and fault != "break" else {}
            try:
                async with client.stream_chat(
                    model="gpt-4.1", messages=MESSAGES, max_tokens=10, extra_headers=headers
                ) as stream:
                    async for _chunk in stream:
                        if fault == "break":
                            break
            except hs.StreamInterruptedError:
                assert fault not in ("", "break")
            else:
                assert fault in ("", "break")
        assert not http_client.is_closed  # never close a client we did not create
    await no_open_connections(sim)


async def test_users_http_client_cancelled_mid_stream(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    async with (
        httpx2.AsyncClient() as http_client,
        hs.open_client(api_key=KEY, base_url=sim.base_url, http_client=http_client) as client,
    ):
        with trio.move_on_after(2) as scope:
            await client.chat(
                model="gpt-4.1",
                messages=MESSAGES,
                max_tokens=10,
                extra_headers={"X-Simulator-Fault": "stall_after=2;seconds=50"},
            )
        assert scope.cancelled_caught
    await no_open_connections(sim)


# ---- the key never leaks ------------------------------------------------------------------


async def test_key_appears_in_no_error_text_or_log(
    autojump_clock: MockClock, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    failures: list[BaseException] = []
    faults = [
        "status=401",
        "status=429;retry_after=0",
        "status=500",
        "disconnect_after=2",
        "malformed_after=2",
        "error_event_after=2",
        "oversized_event",
    ]
    async with client_for(
        sim, retry=hs.RetryPolicy(max_retries=1), max_event_size=1 << 20
    ) as client:
        for fault in faults:
            with pytest.raises(hs.HolySheepError) as info:
                await client.chat(
                    model="gpt-4.1",
                    messages=MESSAGES,
                    max_tokens=5,
                    extra_headers={"X-Simulator-Fault": fault},
                )
            failures.append(info.value)
        with pytest.raises(hs.APITimeoutError) as timeout:
            await client.chat(
                model="gpt-4.1",
                messages=MESSAGES,
                max_tokens=5,
                timeouts=hs.Timeouts(first_token=1),
                extra_headers={"X-Simulator-Fault": "slow_headers=5"},
            )
        failures.append(timeout.value)
        assert KEY not in repr(client)
    for failure in failures:
        text = "".join(traceback.format_exception(failure))
        assert KEY not in text
        assert KEY not in str(failure)
        assert KEY not in repr(failure)
        if isinstance(failure, hs.StreamInterruptedError):
            assert KEY not in repr(failure.partial)
    assert KEY not in caplog.text
    assert {type(f) for f in failures} >= {
        hs.AuthenticationError,
        hs.RateLimitError,
        hs.ServerError,
        hs.StreamInterruptedError,
        hs.StreamProtocolError,
        hs.APITimeoutError,
    }


# ---- cancel scopes that do not nest with the stream, and close races ----------------------


async def test_a_deadline_around_entering_only_works(sim: Simulator) -> None:
    # A caller's cancel scope may open and close between our calls (STYLE rule 7): the
    # stream must not hold a scope of its own across the caller's code.
    async with client_for(sim) as client, contextlib.AsyncExitStack() as stack:
        with trio.fail_after(5):
            stream = await stack.enter_async_context(
                client.stream_chat(model="gpt-4.1", messages=MESSAGES, max_tokens=5)
            )
        texts = [chunk.text async for chunk in stream]
        with trio.fail_after(5):
            await stack.aclose()
    assert "".join(texts) == stream.completion.text
    assert stream.completion.usage is not None
    assert stream.completion.usage.completion_tokens == 5
    await no_open_connections(sim)


@pytest.mark.parametrize("checkpoints", range(6))
async def test_aclose_racing_a_starting_stream_raises_client_closed(
    sim: Simulator, checkpoints: int
) -> None:
    # Whatever the interleaving, a stream the client closes raises ClientClosedError, never
    # httpx2's "the client has been closed" RuntimeError.
    raised: list[BaseException] = []

    async def chat(client: hs.Client) -> None:
        try:
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=5)
        except hs.HolySheepError as error:
            raised.append(error)

    async with client_for(sim) as client, trio.open_nursery() as nursery:
        nursery.start_soon(chat, client)
        for _ in range(checkpoints):
            await trio.lowlevel.checkpoint()
        await client.aclose()
    assert len(raised) <= 1
    for error in raised:
        assert isinstance(error, hs.ClientClosedError)
    await no_open_connections(sim)


async def test_aclose_during_iteration_raises_client_closed(sim: Simulator) -> None:
    slow = {"X-Simulator-Fault": "stall_after=2;seconds=30"}
    async with client_for(sim) as client:
        async with trio.open_nursery() as nursery:
            got: list[BaseException] = []

            async def read() -> None:
                try:
                    async with client.stream_chat(
                        model="gpt-4.1", messages=MESSAGES, max_tokens=5, extra_headers=slow
                    ) as stream:
                        async for _ in stream:
                            pass
                except hs.HolySheepError as error:
                    got.append(error)

            nursery.start_soon(read)
            await trio.sleep(1)
            await client.aclose()
        assert len(got) == 1
        assert isinstance(got[0], hs.ClientClosedError)
    await no_open_connections(sim)


async def test_users_default_transport_survives_in_band_errors(sim: Simulator) -> None:
    # After an in-band error event the rest of the body is already on its way; closing the
    # network stream under it used to put a closed socket back into httpcore2's pool, and the
    # next request failed with a ValueError from outside our error tree.
    fault = {"X-Simulator-Fault": "error_event_after=2;status=500"}
    async with httpx2.AsyncClient() as users, client_for(sim, http_client=users) as client:
        for _ in range(3):
            with pytest.raises(hs.StreamInterruptedError):
                await client.chat(
                    model="gpt-4.1", messages=MESSAGES, max_tokens=20, extra_headers=fault
                )
            completion = await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=5)
            assert completion.finish_reason == "length"
    await no_open_connections(sim)


# ---- memory per open stream ------------------------------------------------------------------

#: The budget of one open stream in the client (Python allocations while it streams), what
#: docs/benchmarks.md's "Scale" section measures as RSS with 10,000 streams: 16 KiB.
STREAM_BUDGET = 16 * 1024


async def test_an_open_stream_costs_less_than_its_budget(autojump_clock: MockClock) -> None:
    import gc
    import tracemalloc

    from holysheep_trio.simulator import ModelProfile, Profile

    slow = ModelProfile(name="slow", ttft_mean_ms=1, ttft_p95_ms=2, tokens_per_second=0.5)
    profile = Profile.from_models("slow", [slow], delays=True)
    streams = 40
    limits = hs.Limits(max_concurrent=streams, default_per_model=streams, adaptive=False)
    async with (
        open_simulator(api_key=KEY, profile=profile, reply_tokens="max") as sim,
        client_for(sim, limits=limits) as client,
    ):
        streaming = 0
        all_streaming = trio.Event()

        async def one() -> None:
            nonlocal streaming
            async with client.stream_chat(model="slow", messages=MESSAGES, max_tokens=20) as s:
                async for _ in s:
                    streaming += 1
                    if streaming == streams:
                        all_streaming.set()
                    await trio.sleep_forever()

        async with trio.open_nursery() as warm_up:  # one-time allocations (imports, the pool)
            warm_up.start_soon(one)
            await wait_for(lambda: streaming == 1, "the warm-up stream")
            warm_up.cancel_scope.cancel()
        streaming = 0
        gc.collect()
        tracemalloc.start(64)
        try:
            before = tracemalloc.take_snapshot()
            async with trio.open_nursery() as nursery:
                for _ in range(streams):
                    nursery.start_soon(one)
                await all_streaming.wait()
                gc.collect()
                after = tracemalloc.take_snapshot()
                nursery.cancel_scope.cancel()
        finally:
            tracemalloc.stop()
    # The simulator runs in this process: leave out what its tasks allocate.
    ours = [tracemalloc.Filter(False, "*/holysheep_trio/simulator/*", all_frames=True)]
    growth = sum(
        stat.size_diff
        for stat in after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename")
    )
    assert 0 < growth / streams <= STREAM_BUDGET, f"{growth / streams:.0f} bytes per stream"


async def test_a_stream_keeps_its_body_not_the_httpx2_response(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    # The response's headers and wrappers are not needed once the body streams (one per
    # stream, thousands of times over); closing still hands the connection back.
    async with client_for(sim) as client:
        for _ in range(2):
            async with client.stream_chat(
                model="gpt-4.1", messages=MESSAGES, max_tokens=3
            ) as stream:
                assert not hasattr(stream, "__dict__")  # slotted: one per stream
                attempt = stream._request._attempt
                assert attempt is not None
                exchange = attempt.exchange
                assert exchange._response is None  # type: ignore[union-attr]
                assert exchange._body is not None  # type: ignore[union-attr]
                assert exchange.status == 200  # type: ignore[union-attr]
                async for _ in stream:
                    pass
            stats = client._http._transport.statistics()  # type: ignore[attr-defined]
            assert (stats.open_connections, stats.connections_created) == (1, 1)
    await no_open_connections(sim)


async def test_a_stream_does_not_keep_its_request_or_prompt(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    # The httpx2 request holds the body (the whole prompt) and the headers (the key): once the
    # answer streams, nothing of ours keeps it, thousands of streams over.
    import gc

    import httpx2

    prompt = "a long prompt " * 2000
    async with (
        client_for(sim) as client,
        client.stream_chat(
            model="gpt-4.1", messages=[{"role": "user", "content": prompt}], max_tokens=3
        ) as stream,
    ):
        await stream.__anext__()
        gc.collect()
        kept = [o for o in gc.get_objects() if isinstance(o, httpx2.Request)]
        # The simulator runs in this process but reads requests with h11, not httpx2.
        assert kept == []
        async for _ in stream:
            pass
    await no_open_connections(sim)


# ---- the client's own HTTP client: straight to its transport -------------------------------


async def test_a_plain_client_sends_straight_to_its_transport(
    autojump_clock: MockClock, sim: Simulator, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    async def no_send(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("httpx2's send was used")

    from holysheep_trio._http import _own_transport

    monkeypatch.setattr(httpx2.AsyncClient, "send", no_send)
    caplog.set_level(logging.INFO, logger="httpx2")
    async with client_for(sim) as client:
        assert _own_transport(client._http) is client._http._transport  # type: ignore[attr-defined]
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=3)
    assert completion.text
    # httpx2's own log line, as its send would have written it
    assert any(
        record.name == "httpx2" and record.getMessage().startswith("HTTP Request: POST ")
        for record in caplog.records
    )
    await no_open_connections(sim)


async def test_a_hook_added_later_is_called(autojump_clock: MockClock, sim: Simulator) -> None:
    # Whether a request may skip `send` is asked per request: a user's client can change.
    from holysheep_trio import TrioTransport

    seen: list[str] = []

    async def hook(request: httpx2.Request) -> None:
        seen.append(request.url.path)

    async with (
        httpx2.AsyncClient(transport=TrioTransport()) as http,
        client_for(sim, http_client=http) as client,
    ):
        await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
        assert seen == []
        http.event_hooks = {"request": [hook], "response": []}
        await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
        assert seen == ["/v1/chat/completions"]


async def test_sending_straight_keeps_the_cookies_a_server_sets() -> None:
    from holysheep_trio import TrioTransport
    from holysheep_trio._http import _received_direct, _refuse_if_closed

    class Transport(TrioTransport):
        async def _send(self, sending: Any) -> httpx2.Response:
            return httpx2.Response(200, headers={"set-cookie": "lb=node-2; Path=/"})

    transport = Transport()
    async with httpx2.AsyncClient() as http:
        request = http.build_request("POST", "http://127.0.0.1:9/v1/chat/completions")
        sending = transport._prepare(request, body=b"", keep=False)
        _refuse_if_closed(http)
        response = _received_direct(http, sending, await transport._send(sending))
        # The request was let go; the cookie rules read the stand-in's method and URL.
        assert response.request is not request
        assert (response.request.method, response.request.url) == ("POST", request.url)
        assert http.cookies.get("lb") == "node-2"
        # The cookie goes with the next request to that host.
        again = http.build_request("POST", "http://127.0.0.1:9/v1/chat/completions")
        assert again.headers["cookie"] == "lb=node-2"
    with pytest.raises(RuntimeError, match="closed"):
        _refuse_if_closed(http)


def test_only_a_plain_client_of_our_transport_is_sent_to_straight() -> None:
    from holysheep_trio import TrioTransport
    from holysheep_trio._http import _own_transport
    from holysheep_trio.client import _default_http_client

    assert isinstance(_own_transport(_default_http_client()), TrioTransport)

    async def hook(_: Any) -> None:
        pass

    others = [
        httpx2.AsyncClient(transport=httpx2.MockTransport(lambda r: httpx2.Response(200))),
        httpx2.AsyncClient(transport=TrioTransport(), event_hooks={"request": [hook]}),
        httpx2.AsyncClient(transport=TrioTransport(), event_hooks={"response": [hook]}),
        httpx2.AsyncClient(transport=TrioTransport(), auth=("user", "pass")),
        httpx2.AsyncClient(transport=TrioTransport(), follow_redirects=True),
        httpx2.AsyncClient(
            transport=TrioTransport(), mounts={"http://proxied": httpx2.AsyncHTTPTransport()}
        ),
    ]
    assert [_own_transport(http) for http in others] == [None] * len(others)


async def test_a_paced_read_waits_on_the_socket_itself(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    # The fast path of a read over plain TCP: wait_readable on the socket, then one read that
    # never waits (no coroutines of the exchange's own while it waits). Nothing here yet: None.
    async with (
        client_for(sim) as client,
        client.stream_chat(model="gpt-4.1", messages=MESSAGES, max_tokens=5) as stream,
    ):
        attempt = stream._request._attempt
        assert attempt is not None
        exchange = attempt.exchange
        assert exchange is not None
        fd = exchange.readable_fd()
        assert fd >= 0
        assert exchange.receive_ready() is None  # the simulator sends the next token later
        text = "".join([chunk.text async for chunk in stream])
    assert text
    assert text == stream.completion.text


async def test_credentials_in_the_url_sign_the_request_as_httpx2_does(
    autojump_clock: MockClock, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx2's send signs a request whose URL has user:password@ with Basic auth (replacing the
    # Bearer key): such a request is never sent straight to the transport.
    from holysheep_trio import _http

    def not_straight(*args: Any) -> Any:
        raise AssertionError("sent straight to the transport")

    monkeypatch.setattr(_http, "_refuse_if_closed", not_straight)
    url = sim.base_url.replace("http://", "http://user:pass-word@")
    async with hs.open_client(api_key=KEY, base_url=url) as client:
        with pytest.raises(hs.AuthenticationError):  # the simulator wants the Bearer key
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
