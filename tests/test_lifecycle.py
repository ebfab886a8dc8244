# The request lifecycle under unlucky timing: deadlines, admissions, held chunks, cancels, keys.
from __future__ import annotations

import json
import sys
import traceback
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import trio
from trio.testing import MockClock

import holysheep_trio as hs
from holysheep_trio import _transport
from holysheep_trio._lifecycle import MAX_DECODE_AHEAD, MAX_HELD_EVENTS, MAX_HELD_ITEMS, Request
from holysheep_trio._tokens import prompt_token_bound
from holysheep_trio.simulator import Simulator, open_simulator

if sys.version_info < (3, 11):  # pragma: no cover - trio depends on the backport there
    from exceptiongroup import ExceptionGroup

KEY = "sk-lifecycle-0123456789-secret"
MESSAGES = [{"role": "user", "content": "Tell me about trio."}]
BASE = "https://api.example.test/v1"
SSE = {"content-type": "text/event-stream"}


@pytest.fixture
async def sim(autojump_clock: MockClock) -> AsyncIterator[Simulator]:
    async with open_simulator(api_key=KEY, profile="fast") as simulator:
        yield simulator


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


class Forever(httpx2.AsyncByteStream):
    """A body that repeats one event every ``interval`` seconds until closed."""

    def __init__(self, event: bytes, interval: float) -> None:
        self.event = event
        self.interval = interval
        self.sent = 0

    def __aiter__(self) -> Forever:  # type: ignore[override]
        return self

    async def __anext__(self) -> bytes:
        await trio.sleep(self.interval)
        self.sent += 1
        return self.event


def event(delta: dict[str, Any] | None = None, finish: str | None = None) -> bytes:
    payload = {
        "id": "c",
        "model": "gpt-4.1",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


@asynccontextmanager
async def mock_client(
    responses: Sequence[httpx2.Response], **kwargs: Any
) -> AsyncIterator[hs.Client]:
    queue = list(responses)

    def serve(request: httpx2.Request) -> httpx2.Response:
        return queue.pop(0)

    async with (
        httpx2.AsyncClient(transport=httpx2.MockTransport(serve)) as http_client,
        hs.open_client(http_client=http_client, api_key=KEY, base_url=BASE, **kwargs) as client,
    ):
        yield client


# ---- idle is the server's silence, never the caller's own time ---------------------------


async def test_a_slow_consumer_does_not_trip_the_idle_deadline(autojump_clock: MockClock) -> None:
    async with (
        open_simulator(api_key=KEY, profile="realistic") as sim,
        hs.open_client(
            api_key=KEY, base_url=sim.base_url, timeouts=hs.Timeouts(idle=1.0)
        ) as client,
    ):
        async with client.stream_chat(
            model="gemini-2.5-flash", messages=MESSAGES, max_tokens=30
        ) as stream:
            texts = []
            async for chunk in stream:
                texts.append(chunk.text)
                if len(texts) in (1, 5):
                    await trio.sleep(5.0)  # the caller's own work, longer than `idle`
        assert stream.completion.finish_reason is not None
        assert stream.completion.text == "".join(texts)


async def test_empty_deltas_are_not_progress(autojump_clock: MockClock) -> None:
    body = Forever(event({}), interval=0.5)
    async with mock_client(
        [httpx2.Response(200, headers=SSE, stream=body)],
        timeouts=hs.Timeouts(first_token=None, idle=2.0),
    ) as client:
        started = trio.current_time()
        with trio.fail_after(30), pytest.raises(hs.APITimeoutError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES)
    assert info.value.deadline == "idle"
    assert 1.9 <= trio.current_time() - started <= 2.6
    assert body.sent < 10


async def test_output_resets_the_idle_deadline(autojump_clock: MockClock) -> None:
    items: list[bytes | float] = []
    for index in range(10):
        items += [1.5, event({"content": f"t{index} "})]
    items += [event(finish="stop"), DONE]
    async with mock_client(
        [httpx2.Response(200, headers=SSE, stream=Script(items))],
        timeouts=hs.Timeouts(idle=2.0),
    ) as client:
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES)
    assert completion.text.split() == [f"t{index}" for index in range(10)]


# ---- bounded decode-ahead: a read's events wait undecoded -----------------------------------


async def test_a_burst_is_decoded_at_most_max_decode_ahead_at_a_time(
    autojump_clock: MockClock,
) -> None:
    burst = b"".join(event({"content": f"t{index} "}) for index in range(10 * MAX_DECODE_AHEAD))
    items: list[bytes | float] = [event({"role": "assistant"}), burst, event(finish="stop"), DONE]
    async with (
        mock_client([httpx2.Response(200, headers=SSE, stream=Script(items))]) as client,
        client.stream_chat(model="gpt-4.1", messages=MESSAGES) as stream,
    ):
        request = stream._request
        texts = []
        async for chunk in stream:
            # One read brought the whole burst; never more than the bound typed at once.
            assert len(request.ready) < MAX_DECODE_AHEAD
            texts.append(chunk.text)
    assert texts[1:-1] == [f"t{index} " for index in range(10 * MAX_DECODE_AHEAD)]
    assert stream.completion.text == "".join(texts)
    assert stream.completion.finish_reason == "stop"


async def test_a_truncated_burst_is_delivered_before_its_error(autojump_clock: MockClock) -> None:
    burst = b"".join(event({"content": f"t{index} "}) for index in range(3 * MAX_DECODE_AHEAD))
    async with mock_client([httpx2.Response(200, headers=SSE, stream=Script([burst]))]) as client:
        texts: list[str] = []

        async def read() -> None:
            async with client.stream_chat(model="gpt-4.1", messages=MESSAGES) as stream:
                async for chunk in stream:
                    texts.append(chunk.text)

        with pytest.raises(hs.StreamInterruptedError) as info:
            await read()
    assert isinstance(info.value.__cause__, hs.APIConnectionError)
    assert "ended before it was complete" in str(info.value)
    assert texts == [f"t{index} " for index in range(3 * MAX_DECODE_AHEAD)]
    assert info.value.partial is not None
    assert info.value.partial.text == "".join(texts)


@pytest.mark.parametrize("progress_at_the_end", [True, False])
async def test_progress_late_in_a_burst_still_resets_the_idle_deadline(
    autojump_clock: MockClock, progress_at_the_end: bool
) -> None:
    # 30 s of silence, then empty deltas (not progress) and, past the decode-ahead bound, a
    # token (progress): the idle deadline of 60 s starts again from it, so 40 s of silence
    # after it are fine. Without that token the 40 s come after 30 s already spent: a timeout.
    burst = [event({})] * (3 * MAX_DECODE_AHEAD)
    if progress_at_the_end:
        burst.append(event({"content": "late"}))
    items: list[bytes | float] = [event({"content": "first "}), 30.0, b"".join(burst), 40.0]
    items += [event(finish="stop"), DONE]
    async with mock_client(
        [httpx2.Response(200, headers=SSE, stream=Script(items))],
        timeouts=hs.Timeouts(idle=60.0),
    ) as client:
        if progress_at_the_end:
            completion = await client.chat(model="gpt-4.1", messages=MESSAGES)
            assert completion.text == "first late"
            assert trio.current_time() == pytest.approx(70.0)
        else:
            with pytest.raises(hs.StreamInterruptedError) as info:
                await client.chat(model="gpt-4.1", messages=MESSAGES)
            assert isinstance(info.value.__cause__, hs.APITimeoutError)
            assert info.value.__cause__.deadline == "idle"
            assert trio.current_time() == pytest.approx(60.0)


def test_request_is_slotted() -> None:
    # One per stream: no __dict__ (docs/benchmarks.md, "Scale").
    assert "__dict__" not in dir(Request)


# ---- bounded memory before the first token ----------------------------------------------


async def test_empty_chunks_before_output_are_bounded(autojump_clock: MockClock) -> None:
    items: list[bytes | float] = [event({"role": "assistant"})]
    items += [event({})] * 5000
    items += [event({"content": "hi"}), event(finish="stop"), DONE]
    async with (
        mock_client([httpx2.Response(200, headers=SSE, stream=Script(items))]) as client,
        client.stream_chat(model="gpt-4.1", messages=MESSAGES) as stream,
    ):
        chunks = [chunk async for chunk in stream]
    assert len(chunks) <= MAX_HELD_ITEMS + 2
    assert chunks[0].choices[0].delta.role == "assistant"  # the informative one is kept
    assert stream.completion.text == "hi"
    assert stream.completion.finish_reason == "stop"


async def test_too_many_informative_chunks_before_output_is_a_protocol_error(
    autojump_clock: MockClock,
) -> None:
    items: list[bytes | float] = [event({"role": "assistant"})] * (MAX_HELD_EVENTS + 1)
    items += [event({"content": "hi"}), DONE]
    async with mock_client(
        [httpx2.Response(200, headers=SSE, stream=Script(items))],
        retry=hs.RetryPolicy(max_retries=0),
    ) as client:
        with pytest.raises(hs.StreamProtocolError, match="before the first output"):
            await client.chat(model="gpt-4.1", messages=MESSAGES)


# ---- admissions: one per attempt, fallbacks included -------------------------------------


async def test_a_fallback_attempt_is_admitted_on_its_own(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    listener.close()
    async with hs.open_client(
        api_key=KEY,
        base_url=dead,
        fallback_urls=[sim.base_url],
        retry=hs.RetryPolicy(max_retries=0),
        limits=hs.Limits(rate={"gpt-4.1": hs.RateLimit(rpm=100)}),
    ) as client:
        completion = await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=4)
        stats = client.statistics()
    assert completion.attempts == 2
    assert stats.total == stats.succeeded + stats.failed_total + stats.active == 2
    assert stats.failed == {"network": 1}


# ---- Retry-After longer than the policy waits --------------------------------------------


async def test_a_retry_after_beyond_the_policy_fails_at_once_and_pauses_no_longer(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    sim.inject_faults("status=429;retry_after=3600")
    async with hs.open_client(
        api_key=KEY, base_url=sim.base_url, limits=hs.Limits(), retry=hs.RetryPolicy()
    ) as client:
        started = trio.current_time()
        with pytest.raises(hs.RateLimitError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=4)
        assert trio.current_time() - started < 1.0  # at once, not after a back-off and a pause
        assert info.value.attempt == 1
        paused = client.statistics().models["gpt-4.1"].paused_for
        assert 0 < paused <= hs.RetryPolicy().max_retry_after
        started = trio.current_time()
        await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=4)
        assert trio.current_time() - started <= hs.RetryPolicy().max_retry_after + 1


# ---- a cancel scope around one read ------------------------------------------------------


async def test_a_cancelled_read_leaves_the_stream_usable(autojump_clock: MockClock) -> None:
    async with (
        open_simulator(api_key=KEY, profile="realistic") as slow,
        hs.open_client(api_key=KEY, base_url=slow.base_url) as client,
        client.stream_chat(model="gpt-4.1", messages=MESSAGES, max_tokens=40) as stream,
    ):
        texts = []
        cancelled = 0
        while True:
            with trio.move_on_after(0.001) as scope:
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    break
                texts.append(chunk.text)
            cancelled += scope.cancelled_caught
    assert cancelled > 0
    completion = stream.completion
    assert "".join(texts) == completion.text
    assert completion.usage is not None
    assert len([text for text in texts if text]) == completion.usage.completion_tokens
    assert completion.finish_reason is not None


async def test_a_cancelled_read_of_another_transport_says_so(autojump_clock: MockClock) -> None:
    items: list[bytes | float] = [event({"content": "a"}), 5.0, event({"content": "b"}), DONE]
    async with (
        mock_client([httpx2.Response(200, headers=SSE, stream=Script(items))]) as client,
        client.stream_chat(model="gpt-4.1", messages=MESSAGES) as stream,
    ):
        assert (await stream.__anext__()).text == "a"
        with trio.move_on_after(1.0):
            await stream.__anext__()
        with pytest.raises(hs.StreamInterruptedError) as info:
            await stream.__anext__()
    assert "cancelled" in str(info.value.__cause__)
    assert info.value.partial.text == "a"


# ---- the key never leaks -----------------------------------------------------------------


async def test_surrounding_whitespace_of_a_key_is_stripped(
    autojump_clock: MockClock, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with hs.open_client(api_key=KEY + "\n", base_url=sim.base_url) as client:
        await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
    monkeypatch.setenv("HOLYSHEEP_API_KEY", f" {KEY}\r\n")
    async with hs.open_client(base_url=sim.base_url) as client:
        await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)


@pytest.mark.parametrize("bad", [f"{KEY[:10]}\n{KEY[10:]}", f"{KEY} {KEY}", KEY + "é", "  \t"])
async def test_a_key_no_header_can_carry_is_refused_unseen(bad: str) -> None:
    with pytest.raises(hs.ConfigurationError) as info:
        async with hs.open_client(api_key=bad, base_url=BASE):
            pass  # pragma: no cover
    text = "".join(traceback.format_exception(info.value))
    assert KEY[:10] not in text
    assert KEY[10:] not in text


async def test_a_bad_extra_header_is_not_retried_and_not_shown(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    secret = "sk-extra-header-secret-42"
    async with hs.open_client(api_key=KEY, base_url=sim.base_url) as client:
        with pytest.raises(hs.ConfigurationError) as info:
            await client.chat(
                model="gpt-4.1",
                messages=MESSAGES,
                max_tokens=2,
                extra_headers={"X-Api-Key": secret + "\r\n"},
            )
    text = "".join(traceback.format_exception(info.value))
    assert secret not in text
    assert info.value.attempt == 1
    assert sim.stats().requests["gpt-4.1"] == 0


async def test_secrets_of_users_auth_and_extra_headers_are_scrubbed() -> None:
    seen: list[str] = []

    def echo(request: httpx2.Request) -> httpx2.Response:
        headers = " ".join(f"{name}: {value}" for name, value in request.headers.items())
        seen.append(headers)
        return httpx2.Response(400, json={"error": {"message": f"you sent {headers}"}})

    async with (
        httpx2.AsyncClient(
            transport=httpx2.MockTransport(echo), auth=httpx2.BasicAuth("user", "pass-word-123")
        ) as http_client,
        hs.open_client(http_client=http_client, base_url=BASE) as client,
    ):
        with pytest.raises(hs.BadRequestError) as info:
            await client.chat(
                model="gpt-4.1",
                messages=MESSAGES,
                extra_headers={"X-Api-Key": "extra-secret-value"},
            )
    basic = seen[0].split("authorization: Basic ")[1].split()[0]
    error = info.value
    for secret in (basic, "extra-secret-value"):
        assert secret in seen[0]
        assert secret not in str(error)
        assert secret not in error.body


async def test_client_repr_hides_userinfo() -> None:
    async with hs.open_client(api_key=KEY, base_url="http://me:pa55word@127.0.0.1:9/v1") as client:
        assert "pa55word" not in repr(client)
        assert "me:" not in repr(client)


# ---- open_client never rewrites the caller's exceptions ----------------------------------


async def test_a_one_member_group_from_the_block_comes_out_unchanged() -> None:
    group = ExceptionGroup("mine", [ValueError("inner")])
    with pytest.raises(ExceptionGroup) as info:
        async with hs.open_client(api_key=KEY, base_url=BASE):
            raise group
    assert info.value is group


# ---- accounting when timing is unlucky ----------------------------------------------------


async def test_a_committed_attempt_is_not_billed_again_when_its_retry_never_starts(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    prompt = [{"role": "user", "content": "hi"}]
    async with (
        hs.open_budget(daily=100.0) as budget,
        hs.open_client(
            api_key=KEY,
            base_url=sim.base_url,
            limits=hs.Limits(max_concurrent=1),
            budget=budget,
        ) as client,
    ):
        sim.inject_faults("disconnect_after=0")  # accepted, then cut: billable, retried
        holder_go = trio.Event()
        release = trio.Event()

        async def hold_the_only_slot() -> None:
            await holder_go.wait()
            async with client._pool.admit("gpt-4.1"):
                await release.wait()

        original = client._report

        def report(outcome: Any) -> None:
            if outcome.error is not None:
                holder_go.set()  # the retry will find no slot
            original(outcome)

        client._report = report  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold_the_only_slot)
            with trio.move_on_after(30) as scope:
                await client.chat(model="gpt-4.1", messages=prompt, max_tokens=10)
            release.set()
        assert scope.cancelled_caught  # gave up while the retry waited for admission
        spent = (await budget.report()).daily.spent
        once = budget.worst_case(
            model="gpt-4.1",
            prompt_bound=prompt_token_bound({"messages": prompt}),
            max_output_tokens=10,
        )
    assert spent == pytest.approx(once)  # the cut-short attempt, counted once


async def test_a_refusal_inside_a_200_costs_nothing(autojump_clock: MockClock) -> None:
    refusal = {"error": {"code": 429, "message": "slow down"}}
    async with (
        hs.open_budget(daily=100.0) as budget,
        mock_client(
            [httpx2.Response(200, json=refusal) for _ in range(3)],
            budget=budget,
            retry=hs.RetryPolicy(max_retries=2, initial_delay=0.01),
        ) as client,
    ):
        with pytest.raises(hs.RateLimitError):
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=10)
        assert client.statistics().failed == {"rate_limit": 3}
        assert (await budget.report()).daily.spent == 0


async def test_a_request_cancelled_while_connecting_costs_nothing(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never_connects(host: str, port: int) -> Any:
        await trio.sleep_forever()

    monkeypatch.setattr(_transport, "_open_tcp_stream", never_connects)
    async with (
        hs.open_budget(daily=100.0) as budget,
        hs.open_client(api_key=KEY, base_url="http://127.0.0.1:9/v1", budget=budget) as client,
    ):
        with trio.move_on_after(2) as scope:
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=100)
        assert scope.cancelled_caught
        assert (await budget.report()).daily.spent == 0  # the request never left the machine


async def _poll_with_short_timeouts(client: hs.Client) -> None:
    async with client.stream_chat(
        model="gpt-4.1",
        messages=MESSAGES,
        max_tokens=40,
        extra_headers={"X-Simulator-Fault": "stall_after=2;seconds=25"},
    ) as stream:
        while True:
            with trio.move_on_after(0.5):  # the caller polls with a short timeout
                try:
                    await stream.__anext__()
                except StopAsyncIteration:
                    return


async def test_idle_counts_across_a_callers_short_read_timeouts(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    async with hs.open_client(
        api_key=KEY, base_url=sim.base_url, timeouts=hs.Timeouts(idle=1.0)
    ) as client:
        started = trio.current_time()
        with pytest.raises(hs.StreamInterruptedError) as info:
            await _poll_with_short_timeouts(client)
    cause = info.value.__cause__
    assert isinstance(cause, hs.APITimeoutError)
    assert cause.deadline == "idle"
    assert trio.current_time() - started < 5.0


async def test_a_lower_case_authorization_replaces_the_clients(autojump_clock: MockClock) -> None:
    seen: list[list[str]] = []

    def serve(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.headers.get_list("authorization"))
        return httpx2.Response(200, headers=SSE, stream=Script([event({"content": "x"}), DONE]))

    async with (
        httpx2.AsyncClient(transport=httpx2.MockTransport(serve)) as http_client,
        hs.open_client(http_client=http_client, api_key=KEY, base_url=BASE) as client,
    ):
        await client.chat(
            model="gpt-4.1",
            messages=MESSAGES,
            extra_headers={"authorization": "Bearer sk-tenant-key-000"},
        )
    assert seen == [["Bearer sk-tenant-key-000"]]


async def test_a_status_raised_by_the_users_response_hook_is_typed_by_it(
    autojump_clock: MockClock,
) -> None:
    calls = 0

    def serve(request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        calls += 1
        return httpx2.Response(401, json={"error": {"message": "bad key"}})

    async def raise_for_status(response: httpx2.Response) -> None:
        response.raise_for_status()

    async with (
        httpx2.AsyncClient(
            transport=httpx2.MockTransport(serve), event_hooks={"response": [raise_for_status]}
        ) as http_client,
        hs.open_client(http_client=http_client, api_key=KEY, base_url=BASE) as client,
    ):
        with pytest.raises(hs.AuthenticationError) as info:
            await client.chat(model="gpt-4.1", messages=MESSAGES)
    assert info.value.kind == "authentication"
    assert calls == 1  # a 401 is not retried


async def test_a_request_refused_before_admission_reports_its_own_duration(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    async with (
        hs.open_budget(daily=0.000001) as budget,
        hs.open_client(api_key=KEY, base_url=sim.base_url, budget=budget) as client,
    ):
        await trio.sleep(10)  # the clock has run for a while before this request
        stream = client.stream_chat(model="gpt-4.1", messages=MESSAGES, max_tokens=100)
        with pytest.raises(hs.BudgetExceededError):
            await stream.__aenter__()
    assert stream.completion.duration < 1.0


class _Finished:
    """A telemetry stand-in that keeps what each request's `finished` was told."""

    def __init__(self) -> None:
        self.errors: list[BaseException | None] = []

    def start_request(self, **kwargs: Any) -> Any:
        outer = self

        class Observer:
            def admitted(self, now: float) -> None:
                pass

            def attempt_failed(self, **kwargs: Any) -> None:
                pass

            def output(self, now: float) -> None:
                pass

            def finished(self, *, error: BaseException | None, **kwargs: Any) -> None:
                outer.errors.append(error)

        return Observer()


async def test_an_interrupted_stream_caught_in_the_block_is_still_a_failure(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    telemetry = _Finished()
    async with (
        hs.open_client(api_key=KEY, base_url=sim.base_url, telemetry=telemetry) as client,
        client.stream_chat(
            model="gpt-4.1",
            messages=MESSAGES,
            max_tokens=20,
            extra_headers={"X-Simulator-Fault": "disconnect_after=3"},
        ) as stream,
    ):
        try:
            async for _ in stream:
                pass
        except hs.StreamInterruptedError:
            pass  # the documented way to keep .partial
    assert len(telemetry.errors) == 1
    assert isinstance(telemetry.errors[0], hs.StreamInterruptedError)


async def test_leaving_open_client_by_cancellation_closes_every_socket(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    with trio.move_on_after(5):
        async with hs.open_client(
            api_key=KEY, base_url=sim.base_url, health=hs.HealthConfig()
        ) as client:
            await client.chat(model="gpt-4.1", messages=MESSAGES, max_tokens=2)
            await trio.sleep_forever()
    assert client._http.is_closed
    for _ in range(100):
        if sim.stats().open_connections == 0:
            break
        await trio.sleep(0.01)
    assert sim.stats().open_connections == 0


async def test_a_stream_left_early_counts_what_already_arrived(autojump_clock: MockClock) -> None:
    # Decoding runs only a few chunks ahead of the reader: the usage chunk of the same read is
    # still waiting when the caller breaks, and the bill must see it all the same.
    from holysheep_trio.budget import Rates, from_picodollars

    usage = {"prompt_tokens": 10, "completion_tokens": 40, "total_tokens": 50}
    body = b"".join(event({"content": "x"}) for _ in range(40))
    body += (
        b"data: "
        + json.dumps({"id": "c", "model": "gpt-4.1", "choices": [], "usage": usage}).encode()
    )
    body += b"\n\n" + DONE
    response = httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    async with hs.open_budget(daily=100.0) as budget:
        async with (
            mock_client([response], budget=budget) as client,
            client.stream_chat(model="gpt-4.1", messages=MESSAGES, max_tokens=100) as stream,
        ):
            async for _ in stream:
                break
        report = await budget.report()
    rates = Rates.from_price(hs.DEFAULT_PRICES["gpt-4.1"])
    assert report.daily.spent == pytest.approx(from_picodollars(rates.cost(10, 40)), abs=1e-12)
    assert report.daily.reserved == 0


# ---- the deadline watcher: reads over plain TCP wait without a cancel scope ----------------


async def test_each_read_meets_its_own_deadline_through_the_watcher(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    from holysheep_trio._lifecycle import _WATCHER

    stalled = {"X-Simulator-Fault": "stall_after=2;seconds=100"}
    ended: dict[float, float] = {}

    async def read(idle: float) -> None:
        async with hs.open_client(
            api_key=KEY, base_url=sim.base_url, timeouts=hs.Timeouts(idle=idle)
        ) as client:
            started = trio.current_time()
            with pytest.raises(hs.StreamInterruptedError) as info:
                await client.chat(
                    model="gpt-4.1", messages=MESSAGES, max_tokens=40, extra_headers=stalled
                )
            assert isinstance(info.value.__cause__, hs.APITimeoutError)
            assert info.value.__cause__.deadline == "idle"
            ended[idle] = trio.current_time() - started

    async with trio.open_nursery() as nursery:
        for idle in (3.0, 1.0, 2.0):  # registered out of order: the watcher wakes for each
            nursery.start_soon(read, idle)
    # Each ended when its own silence reached its idle deadline (after the two chunks).
    assert ended[1.0] < ended[2.0] < ended[3.0]
    assert ended[2.0] - ended[1.0] == pytest.approx(1.0, abs=0.05)
    assert ended[3.0] - ended[2.0] == pytest.approx(1.0, abs=0.05)
    assert not _WATCHER.get()._waiting  # every read unregistered


async def test_closing_the_client_wakes_a_read_waiting_on_its_socket(
    autojump_clock: MockClock, sim: Simulator
) -> None:
    async with hs.open_client(api_key=KEY, base_url=sim.base_url) as client:
        stream_errors: list[BaseException] = []

        async def read() -> None:
            try:
                async with client.stream_chat(
                    model="gpt-4.1",
                    messages=MESSAGES,
                    max_tokens=40,
                    extra_headers={"X-Simulator-Fault": "stall_after=2;seconds=100"},
                ) as stream:
                    async for _ in stream:
                        pass
            except hs.HolySheepError as exc:
                stream_errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(5)  # the read waits on its socket, no cancel scope of ours
            started = trio.current_time()
            await client.aclose()
        assert trio.current_time() == started  # at once, not at the idle deadline
    assert [type(e) for e in stream_errors] == [hs.ClientClosedError]


def test_a_read_woken_by_framing_at_its_deadline_still_meets_it() -> None:
    # Bytes that hold no whole event (a chunk's size line) wake the read in the same scheduler
    # pass as the watcher passes its deadline: the read must report the deadline, not wait on
    # with none (the watcher no longer watches it).
    import socket

    from trio.testing import wait_all_tasks_blocked

    from holysheep_trio._lifecycle import Request, _Attempt

    class Framing:
        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        def readable_fd(self) -> int:
            return self.sock.fileno()

        def receive_ready(self) -> Any:
            try:
                data = self.sock.recv(100)
            except BlockingIOError:
                return None
            return None if data == b"x" else ([], False)

        async def receive(self) -> Any:  # pragma: no cover - not reached
            raise AssertionError

    async def trial(clock: MockClock) -> bool:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        request: Any = Request.__new__(Request)
        request._scope = None
        request.closed_by_client = False
        request._waiting = None
        attempt: Any = _Attempt.__new__(_Attempt)
        attempt.exchange = exchange = Framing(ours)
        result: list[Any] = []

        async def read() -> None:
            deadline = trio.current_time() + 1.0
            result.append(
                await request._receive_watched(attempt, exchange, ours.fileno(), deadline)
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await wait_all_tasks_blocked()
            theirs.send(b"x")  # readable at the next poll ...
            clock.jump(1.0)  # ... the pass in which the deadline passes
            await wait_all_tasks_blocked()
            met = result == [None]
            nursery.cancel_scope.cancel()
        ours.close()
        theirs.close()
        return met

    async def main() -> list[bool]:
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, MockClock)
        return [await trial(clock) for _ in range(40)]  # the order within a pass is random

    assert all(trio.run(main, clock=MockClock()))


def test_closing_the_client_at_a_reads_deadline_is_a_close() -> None:
    from holysheep_trio import _lifecycle

    deadlines: list[float] = []
    original = _lifecycle.Request._deadline

    def recorded(self: Any, attempt: Any, now: float) -> Any:
        found = original(self, attempt, now)
        deadlines.append(found[0])
        return found

    async def main() -> type[BaseException]:
        async with (
            open_simulator(api_key=KEY, profile="fast") as sim,
            hs.open_client(
                api_key=KEY, base_url=sim.base_url, timeouts=hs.Timeouts(idle=1.0)
            ) as client,
            trio.open_nursery() as nursery,
        ):

            async def close_at_the_deadline() -> None:
                await trio.sleep(0.5)
                await trio.sleep_until(deadlines[-1])
                await client.aclose()

            async with client.stream_chat(
                model="gpt-4.1",
                messages=MESSAGES,
                max_tokens=40,
                extra_headers={"X-Simulator-Fault": "stall_after=2;seconds=25"},
            ) as stream:
                await stream.__anext__()
                nursery.start_soon(close_at_the_deadline)
                try:
                    while True:
                        await stream.__anext__()
                except hs.HolySheepError as exc:
                    return type(exc)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_lifecycle.Request, "_deadline", recorded)
        outcomes = [trio.run(main, clock=MockClock(autojump_threshold=0)) for _ in range(12)]
    assert set(outcomes) == {hs.ClientClosedError}


def test_a_callers_cancel_at_the_idle_deadline_still_counts_the_silence() -> None:
    # The caller polls with its own cancel scope that ends exactly at the read's idle deadline:
    # however the two land, the silence is counted once, and the stream times out at 1 s.
    async def main() -> float:
        async with (
            open_simulator(api_key=KEY, profile="fast") as sim,
            hs.open_client(
                api_key=KEY, base_url=sim.base_url, timeouts=hs.Timeouts(idle=1.0)
            ) as client,
            trio.open_nursery() as nursery,
            client.stream_chat(
                model="gpt-4.1",
                messages=MESSAGES,
                max_tokens=40,
                extra_headers={"X-Simulator-Fault": "stall_after=2;seconds=25"},
            ) as stream,
        ):
            attempt = stream._request._attempt
            assert attempt is not None
            started = trio.current_time()

            async def cancel_at(when: float, scope: trio.CancelScope) -> None:
                await trio.sleep_until(when)
                scope.cancel()

            for _ in range(12):
                scope = trio.CancelScope()
                nursery.start_soon(cancel_at, trio.current_time() + attempt.idle_left, scope)
                try:
                    with scope:
                        await stream.__anext__()
                except hs.StreamInterruptedError as exc:
                    failure = exc.__cause__
                    break
                await trio.lowlevel.checkpoint()
            else:
                raise AssertionError("no idle timeout")
            assert isinstance(failure, hs.APITimeoutError)
            assert failure.deadline == "idle"
            return trio.current_time() - started

    ended = [trio.run(main, clock=MockClock(autojump_threshold=0)) for _ in range(8)]
    assert ended == [pytest.approx(1.0)] * 8
