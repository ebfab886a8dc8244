# The WebSocket session (Responses API's WebSocket mode) against the simulator over loopback.
from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import trio
import trio.testing

import holysheep_trio as hs
from holysheep_trio.budget import Rates, from_picodollars
from holysheep_trio.session import MAX_NAMED_LANES, error_from_frame, valid_stream_id
from holysheep_trio.simulator import Simulator, open_simulator

KEY = "sk-test-session-key"
MODEL = "gpt-4.1"
TERMINAL = (hs.ResponseCompleted, hs.ResponseIncomplete)


@asynccontextmanager
async def running(
    *, profile: str = "fast", reply_tokens: int | None = 5, **options: Any
) -> AsyncIterator[tuple[Simulator, hs.Client]]:
    sim_options = {k: v for k, v in options.items() if k == "websocket_max_age"}
    client_options = {k: v for k, v in options.items() if k != "websocket_max_age"}
    async with (
        open_simulator(
            api_key=KEY, profile=profile, reply_tokens=reply_tokens, **sim_options
        ) as sim,
        hs.open_client(api_key=KEY, base_url=sim.base_url, **client_options) as client,
    ):
        yield sim, client


def seeded(**fields: Any) -> hs.HealthConfig:
    return hs.HealthConfig(rng=random.Random(7), **fields)


async def read_all(stream: hs.ResponseStream) -> list[hs.ResponseEvent]:
    return [event async for event in stream]


# ---- lanes ------------------------------------------------------------------------------------


async def test_parallel_lanes_interleave_and_are_demultiplexed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    order: list[str] = []
    results: dict[str, hs.Response] = {}
    async with running(profile="realistic", reply_tokens=12) as (sim, client):
        async with client.open_session() as session:

            async def lane(name: str) -> None:
                async with session.stream_response(
                    model=MODEL, input=f"Tell {name} a story", stream_id=name
                ) as stream:
                    async for event in stream:
                        order.append(name)
                        assert event.sequence_number is not None
                results[name] = stream.response

            async with trio.open_nursery() as nursery:
                for name in ("a", "b", "c"):
                    nursery.start_soon(lane, name)
        # The same requests over HTTP give the same seeded replies: nothing was mixed up.
        for name in ("a", "b", "c"):
            over_http = await client.create_response(model=MODEL, input=f"Tell {name} a story")
            assert results[name].output_text == over_http.output_text
            assert results[name].status == "completed"
        assert len({response.id for response in results.values()}) == 3
        stats = sim.stats()
        assert stats.websocket_connections == 1
        assert stats.websocket_responses == 3
    # Interleaved: some lane's events came between two events of another lane.
    first_end = min(len(order) - order[::-1].index(name) for name in "abc")
    assert len(set(order[:first_end])) == 3


async def test_a_lane_runs_its_responses_one_after_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spans: dict[str, tuple[float, float]] = {}
    async with (
        running(profile="realistic", reply_tokens=8) as (_, client),
        client.open_session() as session,
    ):

        async def turn(name: str, stream_id: str | None) -> None:
            async with session.stream_response(
                model=MODEL, input=name, stream_id=stream_id
            ) as stream:
                began = trio.current_time()
                await read_all(stream)
            spans[name] = (began, trio.current_time())

        async with trio.open_nursery() as nursery:
            for name in ("a1", "a2", "a3"):
                nursery.start_soon(turn, name, "a")
                await trio.sleep(0.001)
            for name in ("d1", "d2"):
                nursery.start_soon(turn, name, None)
                await trio.sleep(0.001)
    assert spans["a1"][1] <= spans["a2"][0]
    assert spans["a2"][1] <= spans["a3"][0]
    assert spans["d1"][1] <= spans["d2"][0]
    assert spans["d1"][1] < spans["a3"][0]  # but the lanes ran side by side


async def test_more_than_max_in_flight_wait_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started: list[int] = []
    async with running(profile="realistic", reply_tokens=6) as (sim, client):
        async with client.open_session(max_in_flight=2) as session:

            async def one(index: int) -> None:
                async with session.stream_response(
                    model=MODEL, input=f"n{index}", stream_id=f"lane{index}"
                ) as stream:
                    started.append(index)
                    await read_all(stream)

            async with trio.open_nursery() as nursery:
                for index in range(6):
                    nursery.start_soon(one, index)
                    await trio.sleep(0.001)
            assert session.statistics().pending == 0
        assert sim.stats().max_concurrent[MODEL] == 2
    assert sorted(started) == list(range(6))


async def test_stream_id_is_checked_at_the_call(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (_, client), client.open_session() as session:
        for bad in ("", "a b", "x" * 257, "é"):
            with pytest.raises(ValueError, match="stream_id"):
                session.stream_response(model=MODEL, input="hi", stream_id=bad)
        with pytest.raises(TypeError):
            session.stream_response(model=MODEL, input="hi", stream_id=7)  # type: ignore[arg-type]
        assert valid_stream_id("A-z_0.9" * 36)


async def test_a_connection_has_at_most_32_named_lanes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as (sim, client), client.open_session() as session:
        for index in range(MAX_NAMED_LANES):
            await session.create_response(model=MODEL, input="hi", stream_id=f"s{index}")
        with pytest.raises(hs.BadRequestError) as caught:
            await session.create_response(model=MODEL, input="hi", stream_id="one-more")
        assert caught.value.code == "websocket_stream_limit_reached"
        assert sim.stats().websocket_responses == MAX_NAMED_LANES  # the 33rd was not sent
        # A known lane still works; a new connection starts from none.
        await session.create_response(model=MODEL, input="hi", stream_id="s0")
        await session.health.reconnect()
        await session.create_response(model=MODEL, input="hi", stream_id="one-more")


# ---- errors in frames -------------------------------------------------------------------------


async def test_error_frames_go_to_their_lane_typed_as_over_http(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as (sim, client), client.open_session() as session:
        with pytest.raises(hs.NotFoundError) as named:
            await session.create_response(model="no-such-model", input="hi", stream_id="x")
        with pytest.raises(hs.NotFoundError) as default:
            await session.create_response(model="no-such-model", input="hi")
        assert named.value.status == default.value.status == 404
        sim.inject_faults("status=429;retry_after_ms=1500", endpoint="responses")
        with pytest.raises(hs.RateLimitError) as limited:
            await session.create_response(model=MODEL, input="hi", stream_id="x")
        assert limited.value.retry_after == 1.5
        # The connection goes on.
        response = await session.create_response(model=MODEL, input="hi", stream_id="x")
        assert response.status == "completed"
        assert session.statistics().connections == 1


def test_error_frames_nested_and_flat() -> None:
    nested = {
        "type": "error",
        "status": 400,
        "error": {
            "type": "invalid_request_error",
            "code": "previous_response_not_found",
            "message": "Previous response with id 'resp_1' not found.",
            "param": "previous_response_id",
        },
    }
    error = error_from_frame(nested, "{...}")
    assert isinstance(error, hs.PreviousResponseNotFoundError)
    assert isinstance(error, hs.BadRequestError)
    assert error.status == 400
    assert error.code == "previous_response_not_found"
    flat = {"type": "error", "code": "rate_limit_exceeded", "message": "slow down"}
    limited = error_from_frame(flat, "{}")
    assert isinstance(limited, hs.RateLimitError)
    assert limited.status == 429
    unknown = error_from_frame({"type": "error", "message": "hm"}, "{}")
    assert isinstance(unknown, hs.APIStreamError)
    assert unknown.status is None
    busy = {
        "type": "error",
        "status": 503,
        "error": {"message": "busy", "headers": {"Retry-After": "3"}},
    }
    overloaded = error_from_frame(busy, "{}")
    assert isinstance(overloaded, hs.OverloadedError)
    assert overloaded.retry_after == 3.0


async def test_a_refused_upgrade_raises_the_http_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as (sim, client):
        with pytest.raises(hs.OverloadedError) as caught:
            async with client.open_session(
                extra_headers={"X-Simulator-Fault": "status=503;retry_after=2"}
            ):
                pytest.fail("the session opened")
        assert caught.value.status == 503
        assert caught.value.retry_after == 2.0
        assert "error" in caught.value.body
        assert sim.stats().open_websockets == 0
    async with (
        open_simulator(api_key=KEY, profile="fast") as sim,
        hs.open_client(api_key="sk-wrong-key-123456", base_url=sim.base_url) as client,
    ):
        with pytest.raises(hs.AuthenticationError) as refused:
            async with client.open_session():
                pytest.fail("the session opened")
        assert refused.value.status == 401
        assert "sk-wrong-key-123456" not in str(refused.value) + refused.value.body


# ---- heartbeat, reconnect, the pending queue --------------------------------------------------


async def test_heartbeat_failure_is_detected_within_interval_plus_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(profile="fast", reply_tokens=400) as (sim, client):
        # Only the first connection stops answering pings; frames keep coming, slowly.
        sim.inject_faults("ignore_pings,frame_delay=0.5", endpoint="websocket")
        config = seeded(interval=20.0, timeout=5.0)
        async with client.open_session(health=config) as session:
            connected_at = trio.current_time()
            events: list[hs.HealthEvent] = []
            async with session.health.subscribe() as subscription:
                with pytest.raises(hs.StreamInterruptedError) as caught:
                    async with session.stream_response(model=MODEL, input="long") as stream:
                        await read_all(stream)
                lost_at = trio.current_time()
                async for event in subscription:
                    events.append(event)
                    if isinstance(event, hs.Reconnected):
                        break
            assert lost_at - connected_at <= 20.0 + 5.0 + 0.1
            cause = caught.value.__cause__
            assert isinstance(cause, hs.APITimeoutError)
            assert cause.deadline == "heartbeat"
            assert caught.value.partial.output_text  # what came before is kept
            assert [type(event) for event in events] == [hs.Reconnecting, hs.Reconnected], events
            # The new connection answers pings and serves.
            response = await session.create_response(model=MODEL, input="again")
            assert response.status == "completed"
            assert session.statistics().connections == 2


async def test_an_in_flight_response_fails_with_its_partial_and_is_not_resent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(reply_tokens=50) as (sim, client):
        sim.inject_faults("drop_after_frames=7", endpoint="websocket")
        async with client.open_session(health=seeded()) as session:
            with pytest.raises(hs.StreamInterruptedError) as caught:
                async with session.stream_response(model=MODEL, input="long") as stream:
                    await read_all(stream)
            assert isinstance(caught.value.__cause__, hs.APIConnectionError)
            partial = caught.value.partial
            assert isinstance(partial, hs.Response)
            assert partial.output_text
            assert len(partial.output_text.split()) < 50
            await session.health.wait_healthy()
            assert (await session.create_response(model=MODEL, input="x")).status == "completed"
        stats = sim.stats()
        assert stats.websocket_connections == 2
        assert stats.requests[MODEL] == 2  # the interrupted one was not sent again


async def test_requests_made_while_reconnecting_go_out_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    finished: list[int] = []
    async with running(reply_tokens=5) as (sim, client):
        sim.inject_faults("drop_after_frames=1", endpoint="websocket")
        async with client.open_session(health=seeded()) as session:
            async with session.health.subscribe() as events:
                with pytest.raises(hs.APIConnectionError):
                    await session.create_response(model=MODEL, input="dropped")
                async for event in events:
                    if isinstance(event, hs.Reconnecting):
                        break
            assert session.health.state == "reconnecting"

            async def turn(index: int) -> None:
                await session.create_response(model=MODEL, input=f"turn {index}")
                finished.append(index)

            async with trio.open_nursery() as nursery:
                for index in range(4):
                    nursery.start_soon(turn, index)
                    await trio.sleep(0.01)
                await trio.sleep(0.01)
                assert session.statistics().pending == 4
        assert sim.stats().websocket_connections == 2
    assert finished == [0, 1, 2, 3]


async def test_requests_fail_fast_once_the_connection_is_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as (sim, client):
        sim.inject_faults("drop_after_frames=1", "status=401", endpoint="websocket")
        async with client.open_session(health=seeded()) as session:
            with pytest.raises(hs.APIConnectionError):
                await session.create_response(model=MODEL, input="dropped")
            with pytest.raises(hs.ConnectionLostError) as caught:
                await session.create_response(model=MODEL, input="held, then failed")
            assert isinstance(caught.value.__cause__, hs.AuthenticationError)
            assert session.health.state == "lost"
            with pytest.raises(hs.ConnectionLostError):
                await session.create_response(model=MODEL, input="at once")


# ---- rotation ---------------------------------------------------------------------------------


async def test_rotation_before_max_age_loses_no_response(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(reply_tokens=10, websocket_max_age=60.0) as (sim, client):
        # The slow link delays pongs too (one writer on the server): no heartbeat here.
        async with client.open_session(
            max_age=30.0,
            health=seeded(interval=math.inf),
            extra_headers={"X-Simulator-Fault": "frame_delay=1"},
        ) as session:
            await trio.sleep(25.0)
            async with trio.open_nursery() as nursery:
                old: list[hs.Response] = []

                async def long_turn() -> None:
                    old.append(await session.create_response(model=MODEL, input="old"))

                nursery.start_soon(long_turn)
                await trio.sleep(10.0)  # past max_age: a fresh connection took over
                new = await session.create_response(model=MODEL, input="new", stream_id="n")
            assert old[0].status == "completed"
            assert new.status == "completed"
            assert trio.current_time() < 60.0
            stats = session.statistics()
            assert stats.connections == 2
            assert stats.open_connections == 1
        assert sim.stats().websocket_connections == 2


async def test_the_servers_age_limit_triggers_a_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(websocket_max_age=10.0) as (sim, client):
        async with client.open_session(max_age=3600.0) as session:
            await session.create_response(model=MODEL, input="first")
            await trio.sleep(15.0)
            assert (await session.create_response(model=MODEL, input="second")).status == (
                "completed"
            )
            assert session.statistics().connections == 2
        assert sim.stats().websocket_connections == 2


# ---- recover ----------------------------------------------------------------------------------


async def test_a_lost_previous_response_raises_or_is_replayed_with_recover(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as (sim, client):
        async with client.open_session() as session:
            first = await session.create_response(model=MODEL, input="I am Ada.", store=False)
            # The connection's cache serves a continuation...
            await session.create_response(
                model=MODEL, input="Hi", previous_response_id=first.id, store=False
            )
            await session.health.reconnect()
            # ...but a new connection starts with an empty one.
            with pytest.raises(hs.PreviousResponseNotFoundError) as caught:
                await session.create_response(
                    model=MODEL, input="Who am I?", previous_response_id=first.id, store=False
                )
            assert caught.value.status == 400
        async with client.open_session(recover=True) as session:
            first = await session.create_response(
                model=MODEL, input="I am Ada.", store=False, stream_id="a"
            )
            plain = await session.create_response(model=MODEL, input="Who am I?", stream_id="b")
            await session.health.reconnect()
            replayed = await session.create_response(
                model=MODEL,
                input="Who am I?",
                previous_response_id=first.id,
                store=False,
                stream_id="a",
            )
            assert replayed.status == "completed"
            assert session.statistics().replays == 1
            # Sent with the lane's whole history: more input than the question alone.
            assert replayed.usage is not None
            assert plain.usage is not None
            assert replayed.usage.input_tokens > plain.usage.input_tokens
            assert sim.stats().websocket_responses == 3 + 4  # the refused one counts too


# ---- leaving early, closing -------------------------------------------------------------------


async def test_leaving_a_stream_early_keeps_its_lane_busy_until_the_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running(reply_tokens=30) as (_, client),
        client.open_session(extra_headers={"X-Simulator-Fault": "frame_delay=0.1"}) as session,
    ):
        async with session.stream_response(model=MODEL, input="long", stream_id="a") as stream:
            async for _ in stream:
                break
        left_at = trio.current_time()
        assert session.statistics().in_flight == 1
        async with session.stream_response(model=MODEL, input="next", stream_id="a") as nxt:
            created_at = trio.current_time()
            await read_all(nxt)
        stats = session.statistics()
        assert stats.frames_dropped > 20
        # About 30 more frames of 0.1 s had to pass before the lane took the next one.
        assert created_at - left_at > 2.5


async def test_closing_the_client_with_lanes_open(autojump_clock: trio.testing.MockClock) -> None:
    failures: list[BaseException] = []
    async with running(reply_tokens=200) as (sim, client):
        async with client.open_session(
            extra_headers={"X-Simulator-Fault": "frame_delay=0.1"}
        ) as session:

            async def reader(name: str | None) -> None:
                try:
                    async with session.stream_response(
                        model=MODEL, input="long", stream_id=name
                    ) as stream:
                        await read_all(stream)
                except hs.ClientClosedError as exc:
                    failures.append(exc)

            async with trio.open_nursery() as nursery:
                for name in ("a", "b", None):
                    nursery.start_soon(reader, name)
                nursery.start_soon(reader, "a")  # waiting for its lane
                await trio.sleep(1.0)
                await client.aclose()
            assert len(failures) == 4
            assert session.closed
            with pytest.raises(hs.ClientClosedError):
                await session.create_response(model=MODEL, input="after")
        await trio.sleep(3.0)
        assert sim.stats().open_websockets == 0


async def test_leaving_the_session_closes_its_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as (sim, client):
        async with client.open_session() as session:
            await session.create_response(model=MODEL, input="hi")
            assert "healthy" in repr(session)
        assert session.closed
        await trio.sleep(1.0)
        assert sim.stats().open_websockets == 0
        # The client goes on over HTTP.
        assert (await client.create_response(model=MODEL, input="hi")).status == "completed"


# ---- the client's machinery applies ------------------------------------------------------------


async def test_pool_statistics_and_budgets_apply_to_session_responses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        hs.open_budget(daily=1.0) as budget,
        running(budget=budget) as (sim, client),
        client.open_session() as session,
    ):
        for index in range(3):
            await session.create_response(model=MODEL, input=f"hello {index}", max_output_tokens=50)
        statistics = client.statistics()
        assert statistics.succeeded == 3
        assert statistics.models[MODEL].latency.count == 3
        stats = sim.stats()
        rates = Rates.from_price(hs.DEFAULT_PRICES[MODEL])
        served = from_picodollars(
            rates.cost(stats.prompt_tokens[MODEL], stats.completion_tokens[MODEL])
        )
        report = await budget.report()
        assert report.daily.spent == pytest.approx(served, abs=1e-12)
        assert report.models[MODEL].requests == 3


async def test_a_request_waits_under_its_own_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running(reply_tokens=30) as (_, client),
        client.open_session(extra_headers={"X-Simulator-Fault": "frame_delay=0.1"}) as session,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: session.create_response(model=MODEL, input="long"))
            await trio.sleep(0.05)
            with pytest.raises(hs.APITimeoutError) as caught:
                await session.create_response(
                    model=MODEL, input="waits", timeouts=hs.Timeouts(first_token=1.0)
                )
            assert caught.value.deadline == "first_token"
        assert session.statistics().pending == 0


# ---- malformed frames and unlucky timing ---------------------------------------------------


async def test_a_frame_with_a_malformed_type_fails_its_response_not_the_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running(reply_tokens=30) as (_, client),
        client.open_session(
            health=seeded(), extra_headers={"X-Simulator-Fault": "frame_delay=0.1"}
        ) as session,
    ):
        connection = session._current
        assert connection is not None
        real = connection.ws.receive
        injected = False

        async def receive() -> list[str]:
            nonlocal injected
            texts = await real()
            if texts and not injected:
                injected = True
                return [*texts, '{"type": ["response.output_text.delta"], "delta": "x"}']
            return texts

        connection.ws.receive = receive  # type: ignore[method-assign]
        with pytest.raises(hs.HolySheepError) as caught:
            async with session.stream_response(model=MODEL, input="hi") as stream:
                await read_all(stream)
        error = caught.value
        if isinstance(error, hs.StreamInterruptedError):
            error = error.__cause__  # type: ignore[assignment]
        assert isinstance(error, hs.StreamProtocolError)
        # The session goes on: a new response works (on a new connection if need be).
        await session.health.wait_healthy()
        assert (await session.create_response(model=MODEL, input="x")).status == "completed"


class _Bearer(httpx2.Auth):
    def __init__(self, key: str) -> None:
        self.key = key

    def auth_flow(self, request: httpx2.Request) -> Any:
        request.headers["Authorization"] = f"Bearer {self.key}"
        yield request


async def test_the_upgrade_is_signed_by_the_http_clients_auth(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulator(api_key=KEY, profile="fast", reply_tokens=5) as sim,
        httpx2.AsyncClient(transport=hs.TrioTransport(), auth=_Bearer(KEY)) as http_client,
        hs.open_client(base_url=sim.base_url, http_client=http_client) as client,
        client.open_session(health=seeded()) as session,
    ):
        response = await session.create_response(model=MODEL, input="hi")
    assert response.status == "completed"


async def test_a_frame_never_written_costs_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        hs.open_budget(daily=100.0) as budget,
        running(budget=budget) as (_, client),
        client.open_session(health=seeded(max_attempts=1)) as session,
    ):
        connection = session._current
        assert connection is not None

        async def broken(data: bytes) -> None:
            raise trio.BrokenResourceError("the network went away")

        # The next write fails: the request's frame never reaches the server.
        connection.ws._stream.send_all = broken  # type: ignore[method-assign]
        with pytest.raises(hs.APIConnectionError):
            await session.create_response(model=MODEL, input="hi", max_output_tokens=100)
        assert (await budget.report()).daily.spent == 0


# ---- fallback endpoints --------------------------------------------------------------------


@asynccontextmanager
async def two_endpoints(**options: Any) -> AsyncIterator[tuple[Simulator, Simulator, hs.Client]]:
    async with (
        open_simulator(api_key=KEY, profile="fast", reply_tokens=5) as primary,
        open_simulator(api_key=KEY, profile="fast", reply_tokens=5) as backup,
        hs.open_client(
            api_key=KEY, base_url=primary.base_url, fallback_urls=[backup.base_url], **options
        ) as client,
    ):
        yield primary, backup, client


async def test_a_session_opens_on_the_fallback_and_fails_back_to_the_primary(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_endpoints() as (primary, backup, client):
        primary.inject_faults("status=503", endpoint="websocket")
        async with client.open_session(health=seeded(interval=20.0)) as session:
            assert session.url == backup.base_url
            assert session.health.active_url == backup.base_url
            response = await session.create_response(model=MODEL, input="on the backup")
            assert response.status == "completed"
            assert backup.stats().websocket_responses == 1
            async with session.health.subscribe() as events:
                # The next heartbeat pings the backup, then tries the primary: it answers.
                await trio.sleep(20.5)
                assert session.url == primary.base_url
                assert session.health.active_url == primary.base_url
                failed_back = [e async for e in _until(events, hs.FailedBack)]
            assert failed_back[-1].url == primary.base_url
            response = await session.create_response(model=MODEL, input="on the primary")
            assert response.status == "completed"
            assert primary.stats().websocket_responses == 1
            assert backup.stats().websocket_responses == 1
        # Counted once open: the primary's refused upgrade is not among them.
        assert primary.stats().websocket_connections == 1
        assert backup.stats().websocket_connections == 1


async def _until(events: Any, kind: type[hs.HealthEvent]) -> AsyncIterator[hs.HealthEvent]:
    with trio.fail_after(1.0):
        async for event in events:
            yield event
            if isinstance(event, kind):
                return


async def test_a_refused_key_does_not_fall_over(autojump_clock: trio.testing.MockClock) -> None:
    async with two_endpoints() as (primary, backup, client):
        primary.inject_faults("status=401", endpoint="websocket")
        with pytest.raises(hs.AuthenticationError):
            async with client.open_session(health=seeded()):
                pass  # pragma: no cover - never entered
        assert backup.stats().websocket_connections == 0


async def test_every_endpoint_refusing_raises_the_last_ones_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_endpoints() as (primary, backup, client):
        primary.inject_faults("status=503", endpoint="websocket")
        backup.inject_faults("status=502", endpoint="websocket")
        with pytest.raises(hs.APIStatusError) as caught:
            async with client.open_session(health=seeded()):
                pass  # pragma: no cover - never entered
        assert caught.value.status == 502


async def test_a_reconnect_fails_over_to_the_backup(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        two_endpoints() as (primary, backup, client),
        client.open_session(health=seeded(interval=20.0)) as session,
    ):
        assert session.url == primary.base_url
        assert (await session.create_response(model=MODEL, input="a")).status == "completed"
        # The primary now refuses upgrades: the reconnect round moves on to the backup.
        primary.inject_faults("status=503", "status=503", endpoint="websocket")
        async with session.health.subscribe() as events:
            await session.health.reconnect()
            reconnected = [e async for e in _until(events, hs.Reconnected)]
        assert isinstance(reconnected[-1], hs.Reconnected)
        assert reconnected[-1].url == backup.base_url
        assert session.url == backup.base_url
        assert (await session.create_response(model=MODEL, input="b")).status == "completed"
        assert backup.stats().websocket_responses == 1
        assert primary.stats().websocket_responses == 1


async def test_a_fallback_connection_dropping_during_a_fail_back_attempt_is_noticed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # While the backup serves, a heartbeat pings it and then tries the primary, which hangs
    # until the probe's timeout. The backup's connection drops meanwhile: the session must
    # reconnect after that attempt, not an interval later (found by review).
    async with two_endpoints() as (primary, backup, client):
        primary.inject_faults("status=503", *["slow_headers=60"] * 4, endpoint="websocket")
        async with client.open_session(health=seeded(interval=20.0, timeout=5.0)) as session:
            assert session.url == backup.base_url
            await trio.sleep(21.0)  # the heartbeat's attempt at the primary is under way
            connection = session._current
            assert connection is not None
            assert connection.url == backup.base_url
            session._kill(connection, hs.APIConnectionError("the network dropped"))
            dropped_at = trio.current_time()
            response = await session.create_response(model=MODEL, input="after the drop")
            assert response.status == "completed"
            # The attempt at the primary (5 s), a reconnect delay (about 1 s), the round's
            # attempt at the primary (5 s), then the backup: not the next heartbeat (20 s).
            assert trio.current_time() - dropped_at < 13.0
            assert session.url == backup.base_url


async def test_a_request_queued_across_a_failover_names_the_endpoint_it_went_to(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        two_endpoints() as (primary, backup, client),
        client.open_session(health=seeded(interval=20.0)) as session,
    ):
        # Made while the primary serves, entered (and so sent) after the failover.
        stream = session.stream_response(model=MODEL, input="made before the failover")
        primary.inject_faults("status=503", "status=503", endpoint="websocket")
        async with session.health.subscribe() as events:
            await session.health.reconnect()
            async for event in events:
                if isinstance(event, hs.Reconnected):
                    break
        assert session.url == backup.base_url
        async with stream:
            async for _ in stream:
                attempt = stream._request._attempt
                assert attempt is not None
                assert attempt.base_url == backup.base_url
                break
        assert backup.stats().websocket_responses == 1
