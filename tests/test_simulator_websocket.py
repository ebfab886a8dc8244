# The simulator's WebSocket mode of the Responses API over loopback sockets, with a tiny client.
from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import httpx2
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from trio.testing import MockClock
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from holysheep_trio.simulator import FaultSpecError, Simulator, open_simulator
from holysheep_trio.simulator._websocket import (
    MAX_IN_FLIGHT,
    MAX_NAMED_LANES,
    LaneScheduler,
    QueueFullError,
    valid_stream_id,
)
from holysheep_trio.simulator._wire import error_object

API_KEY = "sk-test-websocket"
AUTH = {"authorization": f"Bearer {API_KEY}"}
TERMINAL = ("response.completed", "response.incomplete", "response.failed")


@attrs.define
class Refused:
    """An upgrade the server answered with an HTTP error."""

    status: int
    headers: dict[str, str]
    body: dict[str, Any]


class Client:
    """A minimal WebSocket client on wsproto: what the tests need, nothing more."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self.events: list[Event] = []
        self.pongs: list[bytes] = []
        self.closed: CloseConnection | None = None
        self.eof = False

    @classmethod
    async def open(
        cls,
        sim: Simulator,
        *,
        key: str = API_KEY,
        headers: dict[str, str] | None = None,
        first: dict[str, Any] | None = None,
    ) -> Client | Refused:
        stream = await trio.open_tcp_stream(sim.host, sim.port)
        try:
            return await cls._handshake(stream, key=key, headers=headers, first=first)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

    @classmethod
    async def _handshake(
        cls,
        stream: trio.SocketStream,
        *,
        key: str,
        headers: dict[str, str] | None,
        first: dict[str, Any] | None,
    ) -> Client | Refused:
        ws = WSConnection(ConnectionType.CLIENT)
        extra = [(b"authorization", f"Bearer {key}".encode())]
        extra += [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
        data = ws.send(Request(host="localhost", target="/v1/responses", extra_headers=extra))
        client = cls(stream, ws)
        if first is not None:
            # Sent with the handshake, before the 101: the server must keep these bytes.
            data += cls._frame_before_accept(first)
        await stream.send_all(data)
        refusal: RejectConnection | None = None
        body = b""
        while True:
            chunk = await stream.receive_some(65536)
            ws.receive_data(chunk or None)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return client
                if isinstance(event, RejectConnection):
                    refusal = event
                    if not event.has_body:
                        break
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        break
            else:
                if chunk:
                    continue
            assert refusal is not None
            await stream.aclose()
            headers_out = {name.decode(): value.decode() for name, value in refusal.headers}
            return Refused(refusal.status_code, headers_out, json.loads(body) if body else {})

    @staticmethod
    def _frame_before_accept(event: dict[str, Any]) -> bytes:
        # A client-side frame built by a throw-away connection that is already open.
        from wsproto.connection import Connection

        return Connection(ConnectionType.CLIENT).send(TextMessage(data=json.dumps(event)))

    async def send(self, **event: Any) -> None:
        await self.send_text(json.dumps({"type": "response.create", **event}))

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(self.ws.send(BytesMessage(data=data)))

    async def ping(self, payload: bytes) -> None:
        await self.stream.send_all(self.ws.send(Ping(payload=payload)))

    async def _fill(self) -> None:
        while not self.events:
            if self.eof:
                return
            data = await self.stream.receive_some(65536)
            if not data:
                # Not fed to wsproto, which would report a 1006 close: a test wants to know
                # whether the server sent a close frame before the TCP connection ended.
                self.eof = True
                return
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, Pong):
                    self.pongs.append(bytes(event.payload))
                elif isinstance(event, Ping):
                    continue
                else:
                    self.events.append(event)

    async def next(self) -> Event | None:
        """The next message or close event; ``None`` at EOF."""
        await self._fill()
        return self.events.pop(0) if self.events else None

    async def recv(self) -> dict[str, Any]:
        event = await self.next()
        assert isinstance(event, TextMessage), event
        frame: dict[str, Any] = json.loads(event.data)
        return frame

    async def until_terminal(self, count: int = 1) -> list[dict[str, Any]]:
        """Frames until ``count`` terminal events (or error frames) arrived."""
        frames = []
        while count:
            frame = await self.recv()
            frames.append(frame)
            if frame["type"] in TERMINAL or frame["type"] == "error":
                count -= 1
        return frames

    async def aclose(self) -> None:
        if self.ws.state.name == "OPEN":
            await self.stream.send_all(self.ws.send(CloseConnection(code=1000)))
            while await self.next() is not None:
                pass
        await self.stream.aclose()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with open_simulator(api_key=API_KEY, profile="fast") as simulator:
        yield simulator
        assert simulator.stats().internal_errors == 0


async def connect(sim: Simulator, **kwargs: Any) -> Client:
    client = await Client.open(sim, **kwargs)
    assert isinstance(client, Client), client
    return client


async def refused(sim: Simulator, **kwargs: Any) -> Refused:
    answer = await Client.open(sim, **kwargs)
    assert isinstance(answer, Refused), answer
    return answer


async def wait_until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(30):
        while not predicate():  # noqa: ASYNC110 - the condition is a stats snapshot, no event
            await trio.sleep(0.01)


def check_response(frames: list[dict[str, Any]], stream_id: str | None = None) -> dict[str, Any]:
    """One response's frames: numbered from 0, one terminal last, its lane on every frame."""
    assert [frame["sequence_number"] for frame in frames] == list(range(len(frames)))
    assert frames[0]["type"] == "response.created"
    assert frames[-1]["type"] in TERMINAL
    for frame in frames:
        if stream_id is None:
            assert "stream_id" not in frame
        else:
            assert frame["stream_id"] == stream_id
    response: dict[str, Any] = frames[-1]["response"]
    text = "".join(f["delta"] for f in frames if f["type"] == "response.output_text.delta")
    done = [f["text"] for f in frames if f["type"] == "response.output_text.done"]
    assert done == [text]
    return response


def by_lane(frames: list[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    lanes: dict[str | None, list[dict[str, Any]]] = {}
    for frame in frames:
        lanes.setdefault(frame.get("stream_id"), []).append(frame)
    return lanes


# ---- the lane scheduler (pure) ---------------------------------------------------------------


def test_scheduler_runs_lanes_fifo_and_caps_the_responses_in_flight() -> None:
    scheduler: LaneScheduler[int] = LaneScheduler(max_in_flight=2)
    assert scheduler.submit("a", 1) == [("a", 1)]
    assert scheduler.submit("a", 2) == []  # the lane is busy
    assert scheduler.submit(None, 3) == [(None, 3)]
    assert scheduler.submit("b", 4) == []  # two in flight
    assert (scheduler.in_flight, scheduler.queued) == (2, 2)
    # A slot frees: the first waiting request whose lane is idle starts, in arrival order.
    assert scheduler.finish(None) == [("b", 4)]
    assert scheduler.finish("a") == [("a", 2)]
    assert scheduler.finish("b") == []
    assert scheduler.finish("a") == []
    assert (scheduler.in_flight, scheduler.queued) == (0, 0)


def test_scheduler_limits_named_lanes_and_the_queue() -> None:
    scheduler: LaneScheduler[int] = LaneScheduler(max_named_lanes=2, max_queued=1)
    assert scheduler.open_lane("a")
    assert scheduler.open_lane("b")
    assert scheduler.open_lane("a")  # known lanes stay open
    assert not scheduler.open_lane("c")
    scheduler.submit("a", 1)
    scheduler.submit("a", 2)
    with pytest.raises(QueueFullError):
        scheduler.submit("a", 3)


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", None]), st.booleans()), max_size=60))
def test_scheduler_keeps_lane_order_and_the_cap_under_any_interleaving(
    steps: list[tuple[str | None, bool]],
) -> None:
    scheduler: LaneScheduler[int] = LaneScheduler(max_in_flight=2)
    running: list[tuple[str | None, int]] = []
    started: list[tuple[str | None, int]] = []
    for number, (lane, finish) in enumerate(steps):
        if finish and running:
            done = running.pop(0)
            new = scheduler.finish(done[0])
        else:
            new = scheduler.submit(lane, number)
        running += new
        started += new
        assert len(running) == scheduler.in_flight <= 2
        assert len({lane for lane, _ in running}) == len(running)  # one per lane
    for lane in ("a", "b", "c", None):
        numbers = [number for started_lane, number in started if started_lane == lane]
        assert numbers == sorted(numbers)


@pytest.mark.parametrize(
    ("value", "valid"),
    [("a", True), ("A-z_0.9", True), ("x" * 256, True), ("", False), ("x" * 257, False),
     ("a b", False), ("é", False), ("a/b", False), (5, False), (None, False)],
)  # fmt: skip
def test_stream_id_syntax(value: object, valid: bool) -> None:
    assert valid_stream_id(value) is valid


# ---- the handshake ------------------------------------------------------------------------


async def test_one_response_is_the_sse_paths_events_as_bare_json_frames(sim: Simulator) -> None:
    body = {"model": "gpt-4.1", "input": "Tell me about sheep.", "max_output_tokens": 400}
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH) as http:
        sse = await http.post("/responses", json={**body, "stream": True})
    sse_events = [
        json.loads(line[len("data: ") :])
        for line in sse.text.splitlines()
        if line.startswith("data: ")
    ]
    http_stats = sim.stats()
    sim.reset_stats()
    client = await connect(sim)
    await client.send(**body)
    frames = await client.until_terminal()
    response = check_response(frames)
    await client.aclose()

    def shape(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(event["type"], event.get("delta", "")) for event in events]

    assert shape(frames) == shape(sse_events)  # the same generator, the same reply
    assert response["status"] == "completed"
    # Billed exactly as over HTTP: one bill for both transports.
    ws_stats = sim.stats()
    assert ws_stats.prompt_tokens == http_stats.prompt_tokens
    assert ws_stats.completion_tokens == http_stats.completion_tokens
    assert ws_stats.requests["gpt-4.1"] == 1
    assert ws_stats.requests_by_endpoint["websocket"] == 1
    assert ws_stats.requests_by_endpoint["responses"] == 0
    assert ws_stats.websocket_connections == 1
    assert ws_stats.websocket_frames_received == 1
    assert ws_stats.websocket_frames_sent == len(frames)
    assert ws_stats.websocket_responses == 1
    await wait_until(lambda: sim.stats().open_websockets == 0)
    await wait_until(lambda: sim.stats().open_connections == 0)


async def test_frames_sent_with_the_handshake_are_kept(sim: Simulator) -> None:
    first = {"type": "response.create", "model": "gpt-4.1", "input": "hi", "stream_id": "early"}
    client = await connect(sim, first=first)
    check_response(await client.until_terminal(), "early")
    await client.aclose()


async def test_pings_are_answered_and_close_is_a_handshake(sim: Simulator) -> None:
    client = await connect(sim)
    await client.ping(b"are you there")
    await client.stream.send_all(client.ws.send(CloseConnection(code=1000, reason="bye")))
    close = await client.next()
    assert isinstance(close, CloseConnection)
    assert close.code == 1000
    assert await client.next() is None  # then the server closes the TCP connection
    assert client.pongs == [b"are you there"]
    await client.stream.aclose()


@pytest.mark.parametrize(
    ("headers", "key", "status", "code"),
    [
        ({}, "sk-wrong", 401, "invalid_api_key"),
        ({"x-simulator-fault": "nonsense"}, API_KEY, 400, "invalid_simulator_fault"),
        ({"x-simulator-reply-tokens": "lots"}, API_KEY, 400, "invalid_simulator_header"),
    ],
)
async def test_a_refused_upgrade_is_an_http_error_with_a_json_body(
    sim: Simulator, headers: dict[str, str], key: str, status: int, code: str
) -> None:
    answer = await refused(sim, key=key, headers=headers)
    assert answer.status == status
    assert answer.body["error"]["code"] == code
    assert API_KEY not in json.dumps(answer.body)


async def raw_upgrade(sim: Simulator, headers: str) -> bytes:
    stream = await trio.open_tcp_stream(sim.host, sim.port)
    async with stream:
        await stream.send_all(
            f"GET /v1/responses HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\n"
            f"{headers}\r\n".encode()
        )
        answer = b""
        while data := await stream.receive_some(65536):
            answer += data
    return answer


async def test_handshakes_that_break_rfc_6455_are_refused(sim: Simulator) -> None:
    good = (
        "upgrade: websocket\r\nconnection: Upgrade\r\n"
        "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    )
    answer = await raw_upgrade(sim, good + "sec-websocket-version: 8\r\n")
    assert answer.startswith(b"HTTP/1.1 426 ")
    assert b"sec-websocket-version: 13" in answer
    answer = await raw_upgrade(
        sim, "upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"invalid_websocket_handshake" in answer
    # RFC 6455, section 1.3: the accept token of the RFC's own example key.
    stream = await trio.open_tcp_stream(sim.host, sim.port)
    async with stream:
        await stream.send_all(
            f"GET /v1/responses HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\n"
            f"{good}sec-websocket-version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(65536)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head


async def test_an_upgrade_elsewhere_is_answered_as_plain_http(sim: Simulator) -> None:
    stream = await trio.open_tcp_stream(sim.host, sim.port)
    async with stream:
        await stream.send_all(
            b"GET /v1/chat/completions HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n"
            b"connection: Upgrade\r\nsec-websocket-version: 13\r\n"
            b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        answer = b""
        while data := await stream.receive_some(65536):
            answer += data
    assert answer.startswith(b"HTTP/1.1 405 ")


# ---- lanes ----------------------------------------------------------------------------------


async def test_lanes_run_concurrently_with_interleaved_frames(autojump_clock: MockClock) -> None:
    async with open_simulator(api_key=API_KEY) as sim:  # realistic: paced tokens
        client = await connect(sim, headers={"x-simulator-reply-tokens": "20"})
        start = trio.current_time()
        for lane in ("alpha", "beta", "gamma"):
            await client.send(model="gemini-2.5-flash", input=f"hi {lane}", stream_id=lane)
        frames = await client.until_terminal(3)
        elapsed = trio.current_time() - start
        await client.aclose()
    lanes = by_lane(frames)
    assert set(lanes) == {"alpha", "beta", "gamma"}
    for lane, lane_frames in lanes.items():
        check_response(lane_frames, lane)
    # Interleaved: the lanes' frames alternate on the wire, not one response after another.
    order = [frame["stream_id"] for frame in frames]
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    assert switches > 10
    # Concurrent: three 20-token replies in about the time of one (~45 tokens/s, ~0.2 s TTFT).
    assert elapsed < 1.0


async def test_a_lane_is_fifo(autojump_clock: MockClock) -> None:
    async with open_simulator(api_key=API_KEY) as sim:
        client = await connect(sim, headers={"x-simulator-reply-tokens": "5"})
        for number in range(3):
            await client.send(model="gpt-4.1", input=f"turn {number}", stream_id="one")
        for number in range(2):
            await client.send(model="gpt-4.1", input=f"default {number}")  # the default lane
        frames = await client.until_terminal(5)
        await client.aclose()
    for lane in ("one", None):
        lane_frames = by_lane(frames)[lane]
        # Each response ends before the next one of its lane begins.
        kinds = [frame["type"] for frame in lane_frames]
        created = [i for i, kind in enumerate(kinds) if kind == "response.created"]
        completed = [i for i, kind in enumerate(kinds) if kind == "response.completed"]
        assert all(done < nxt for done, nxt in zip(completed, created[1:], strict=False))
        responses = [f["response"]["id"] for f in lane_frames if f["type"] == "response.completed"]
        assert len(set(responses)) == len(responses) == len(created)


async def test_at_most_16_responses_in_flight_then_arrival_order(
    autojump_clock: MockClock,
) -> None:
    async with open_simulator(api_key=API_KEY) as sim:
        client = await connect(sim, headers={"x-simulator-reply-tokens": "10"})
        lanes = [f"lane-{number}" for number in range(MAX_IN_FLIGHT + 4)]
        for lane in lanes:
            await client.send(model="gemini-2.5-flash", input="hi", stream_id=lane)
        frames = await client.until_terminal(len(lanes))
        await client.aclose()
        assert sim.stats().max_concurrent["gemini-2.5-flash"] == MAX_IN_FLIGHT
    created = [f["stream_id"] for f in frames if f["type"] == "response.created"]
    first_done = next(i for i, f in enumerate(frames) if f["type"] == "response.completed")
    started_before = {
        f["stream_id"] for f in frames[:first_done] if f["type"] == "response.created"
    }
    assert started_before == set(lanes[:MAX_IN_FLIGHT])
    assert created[MAX_IN_FLIGHT:] == lanes[MAX_IN_FLIGHT:]  # the queue keeps arrival order


async def test_the_33rd_named_lane_is_refused(sim: Simulator) -> None:
    client = await connect(sim, headers={"x-simulator-reply-tokens": "1"})
    for number in range(MAX_NAMED_LANES):
        await client.send(model="gpt-4.1", input="hi", stream_id=f"s{number}")
    await client.until_terminal(MAX_NAMED_LANES)
    await client.send(model="gpt-4.1", input="hi", stream_id="one-too-many")
    error = await client.recv()
    assert error == {
        "type": "error",
        "status": 400,
        "error": {
            "message": error["error"]["message"],
            "type": "invalid_request_error",
            "param": "stream_id",
            "code": "websocket_stream_limit_reached",
        },
        "stream_id": "one-too-many",
    }
    # Known lanes and the default lane still work.
    await client.send(model="gpt-4.1", input="hi", stream_id="s0")
    check_response(await client.until_terminal(), "s0")
    await client.send(model="gpt-4.1", input="hi")
    check_response(await client.until_terminal())
    await client.aclose()


@pytest.mark.parametrize("stream_id", ["", "x" * 257, "a b", "ünï", 7, ["a"]])
async def test_an_invalid_stream_id_is_refused(sim: Simulator, stream_id: object) -> None:
    client = await connect(sim)
    await client.send(model="gpt-4.1", input="hi", stream_id=stream_id)
    error = await client.recv()
    assert error["type"] == "error"
    assert error["status"] == 400
    assert error["error"]["code"] == "invalid_stream_id"
    assert error["error"]["param"] == "stream_id"
    assert "stream_id" not in error
    await client.aclose()


async def test_errors_are_nested_frames_on_their_lane(sim: Simulator) -> None:
    client = await connect(sim)
    await client.send_text("{not json")
    await client.send_text('{"type": "session.update"}')
    await client.send_bytes(b"\x00\x01")
    await client.send(model="no-such-model", input="hi", stream_id="x")
    await client.send(model="gpt-4.1", input="hi", temperature=3, stream_id="x")
    await client.send(model="gpt-4.1", input="hi", background=True)
    await client.send(model="gpt-4.1", input="hi", max_output_tokens=10**9, stream_id="y")
    errors = [await client.recv() for _ in range(7)]
    # Envelope errors come at once, in order; lanes answer in their own order.
    assert sorted(
        [(e["status"], e["error"]["code"], e.get("stream_id") or "") for e in errors]
    ) == sorted(
        [
            (400, "invalid_json", ""),
            (400, "unknown_event_type", ""),
            (400, "unsupported_frame_type", ""),
            (404, "model_not_found", "x"),
            (400, "decimal_above_max_value", "x"),
            (400, "unsupported_parameter", ""),
            (400, "invalid_value", "y"),
        ]
    )
    assert [e["error"]["code"] for e in errors[:3]] == [
        "invalid_json",
        "unknown_event_type",
        "unsupported_frame_type",
    ]
    lane_x = [e["error"]["code"] for e in errors if e.get("stream_id") == "x"]
    assert lane_x == ["model_not_found", "decimal_above_max_value"]
    assert all(e["type"] == "error" and "message" in e["error"] for e in errors)
    # The connection goes on after errors.
    await client.send(model="gpt-4.1", input="hi", stream_id="x")
    check_response(await client.until_terminal(), "x")
    await client.aclose()
    assert sim.stats().websocket_frames_received == 8


async def test_a_message_over_the_size_limit_closes_with_1009(sim: Simulator) -> None:
    client = await connect(sim)
    await client.send_text(json.dumps({"type": "response.create", "input": "x" * (9 << 20)}))
    close = await client.next()
    assert isinstance(close, CloseConnection)
    assert close.code == 1009
    await client.stream.aclose()


# ---- the per-connection cache ---------------------------------------------------------------


async def test_previous_response_id_works_in_the_connection_with_store_false(
    sim: Simulator,
) -> None:
    client = await connect(sim, headers={"x-simulator-reply-tokens": "4"})
    await client.send(model="gpt-4.1", input="first", store=False, stream_id="a")
    first = check_response(await client.until_terminal(), "a")
    await client.send(
        model="gpt-4.1", input="second", store=False, previous_response_id=first["id"],
        stream_id="a",
    )  # fmt: skip
    second = check_response(await client.until_terminal(), "a")
    chain = first["usage"]["total_tokens"]
    assert second["usage"]["input_tokens"] > chain
    assert second["previous_response_id"] == first["id"]
    # A new lane may fork from another lane's latest response.
    await client.send(
        model="gpt-4.1", input="fork", store=False, previous_response_id=second["id"],
        stream_id="b",
    )  # fmt: skip
    check_response(await client.until_terminal(), "b")
    # Only the latest response of a lane is cached: the first is gone (store=false).
    await client.send(model="gpt-4.1", input="old", previous_response_id=first["id"])
    error = await client.recv()
    assert error["error"]["code"] == "previous_response_not_found"
    assert error["error"]["param"] == "previous_response_id"
    await client.aclose()
    # After a reconnect the cache is empty: previous_response_not_found, on the lane.
    client = await connect(sim)
    await client.send(
        model="gpt-4.1", input="third", previous_response_id=second["id"], stream_id="a"
    )
    error = await client.recv()
    assert (error["status"], error["error"]["code"], error["stream_id"]) == (
        400,
        "previous_response_not_found",
        "a",
    )
    await client.aclose()


async def test_stored_responses_chain_across_connections_and_http(sim: Simulator) -> None:
    client = await connect(sim)
    await client.send(model="gpt-4.1", input="first")  # store defaults to true
    first = check_response(await client.until_terminal())
    await client.aclose()
    client = await connect(sim)
    await client.send(model="gpt-4.1", input="again", previous_response_id=first["id"])
    check_response(await client.until_terminal())
    await client.aclose()
    async with httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH) as http:
        body = {"model": "gpt-4.1", "input": "over HTTP", "previous_response_id": first["id"]}
        assert (await http.post("/responses", json=body)).status_code == 200


# ---- the age limit --------------------------------------------------------------------------


async def test_the_connection_age_limit_sends_an_error_then_closes(
    autojump_clock: MockClock,
) -> None:
    async with open_simulator(api_key=API_KEY, websocket_max_age=90) as sim:
        client = await connect(sim)
        start = trio.current_time()
        await client.send(model="gpt-4.1", input="hi")
        check_response(await client.until_terminal())
        error = await client.recv()
        assert trio.current_time() - start == pytest.approx(90, abs=0.01)
        assert error["type"] == "error"
        assert error["status"] == 400
        assert error["error"]["code"] == "websocket_connection_limit_reached"
        assert "stream_id" not in error
        close = await client.next()
        assert isinstance(close, CloseConnection)
        assert close.code == 1000
        await client.stream.send_all(client.ws.send(close.response()))
        assert await client.next() is None
        await client.stream.aclose()
        await wait_until(lambda: sim.stats().open_websockets == 0)


def test_the_age_limit_must_be_positive() -> None:
    async def main() -> None:
        async with open_simulator(websocket_max_age=0):
            pass  # pragma: no cover

    with pytest.raises(ValueError, match="websocket_max_age"):
        trio.run(main)


# ---- faults ---------------------------------------------------------------------------------


async def test_a_status_fault_refuses_the_upgrade_with_retry_after(sim: Simulator) -> None:
    answer = await refused(sim, headers={"x-simulator-fault": "status=503;retry_after=2"})
    assert answer.status == 503
    assert answer.headers["retry-after"] == "2"
    assert answer.body["error"]["type"] == "server_error"
    sim.inject_faults("status=429;retry_after_ms=250", endpoint="websocket")
    answer = await refused(sim)
    assert (answer.status, answer.headers["retry-after-ms"]) == (429, "250")
    client = await connect(sim)  # the queued fault was for one connection
    await client.aclose()
    assert sim.stats().faults_served == {"status": 2}


async def test_slow_headers_and_reset_on_the_upgrade(autojump_clock: MockClock) -> None:
    async with open_simulator(api_key=API_KEY, profile="fast") as sim:
        start = trio.current_time()
        client = await connect(sim, headers={"x-simulator-fault": "slow_headers=7"})
        assert trio.current_time() - start == pytest.approx(7, abs=0.01)
        await client.aclose()
        sim.inject_faults("reset", endpoint="websocket")
        with pytest.raises(trio.BrokenResourceError):
            await Client.open(sim)


async def test_drop_after_frames_cuts_the_connection_without_a_close_frame(
    sim: Simulator,
) -> None:
    client = await connect(sim, headers={"x-simulator-fault": "drop_after_frames=5"})
    await client.send(model="gpt-4.1", input="hi", stream_id="a")
    frames = []
    while (event := await client.next()) is not None:
        assert isinstance(event, TextMessage)  # no close frame: the TCP connection just ends
        frames.append(json.loads(event.data))
    assert len(frames) == 5
    await client.stream.aclose()
    assert sim.stats().faults_served == {"drop_after_frames": 1}
    await wait_until(lambda: sim.stats().active["gpt-4.1"] == 0)


async def test_ignore_pings_stops_answering_after_a_while(autojump_clock: MockClock) -> None:
    async with open_simulator(api_key=API_KEY, profile="fast") as sim:
        client = await connect(sim, headers={"x-simulator-fault": "ignore_pings;after=30"})
        await client.ping(b"one")
        await client.send(model="gpt-4.1", input="hi")  # a reply flushes the pong before it
        await client.until_terminal()
        assert client.pongs == [b"one"]
        await trio.sleep(31)
        await client.ping(b"two")
        await client.send(model="gpt-4.1", input="hi")
        await client.until_terminal()
        assert client.pongs == [b"one"]
        await client.aclose()
        assert sim.stats().faults_served == {"ignore_pings": 1}


async def test_frame_delay_holds_every_frame(autojump_clock: MockClock) -> None:
    async with open_simulator(api_key=API_KEY, profile="fast") as sim:
        client = await connect(
            sim, headers={"x-simulator-fault": "frame_delay=0.5", "x-simulator-reply-tokens": "3"}
        )
        start = trio.current_time()
        await client.send(model="gpt-4.1", input="hi")
        times = []
        for _ in range(11):  # 2 opening, 3 item starts, 3 deltas, 3 closing ... up to completed
            frame = await client.recv()
            times.append(trio.current_time() - start)
            if frame["type"] == "response.completed":
                break
        await client.aclose()
    assert times == pytest.approx([0.5 * (n + 1) for n in range(len(times))], abs=0.01)
    assert sim.stats().faults_served == {"frame_delay": 1}


async def test_response_faults_queued_for_responses_apply_per_response(sim: Simulator) -> None:
    sim.inject_faults(
        "error_event_after=2;status=503", "failed_after=1", "status=429;retry_after=3",
        endpoint="responses",
    )  # fmt: skip
    client = await connect(sim, headers={"x-simulator-reply-tokens": "5"})
    await client.send(model="gpt-4.1", input="one", stream_id="a")
    await client.send(model="gpt-4.1", input="two", stream_id="a")
    await client.send(model="gpt-4.1", input="three", stream_id="a")
    await client.send(model="gpt-4.1", input="four", stream_id="a")
    frames = await client.until_terminal(4)
    await client.aclose()
    errored, failed, limited, fine = [], [], [], []
    bucket = errored
    for frame in frames:
        bucket.append(frame)
        if frame["type"] == "error" and bucket is errored:
            bucket = failed
        elif frame["type"] == "response.failed":
            bucket = limited
        elif frame["type"] == "error" and bucket is limited:
            bucket = fine
    # error_event_after=2: two deltas, then a numbered error frame in the nested form.
    assert [f["type"] for f in errored].count("response.output_text.delta") == 2
    error = errored[-1]
    assert error["sequence_number"] == len(errored) - 1
    assert (error["status"], error["stream_id"]) == (503, "a")
    assert error["error"] == error_object(503)["error"]  # typed as the HTTP error of 503
    assert failed[-1]["response"]["status"] == "failed"
    assert failed[-1]["stream_id"] == "a"
    assert limited == [
        {
            "type": "error",
            "status": 429,
            "error": {**limited[0]["error"], "headers": {"retry-after": "3"}},
            "stream_id": "a",
        }
    ]
    check_response(fine, "a")
    assert sim.stats().faults_served == {"error_event_after": 1, "failed_after": 1, "status": 1}


async def test_header_stream_faults_apply_to_every_response(sim: Simulator) -> None:
    client = await connect(
        sim,
        headers={"x-simulator-fault": "malformed_after=1", "x-simulator-reply-tokens": "2"},
    )
    for _ in range(2):
        await client.send(model="gpt-4.1", input="hi")
        texts = []
        while True:
            event = await client.next()
            assert isinstance(event, TextMessage)
            texts.append(event.data)
            if '"response.completed"' in event.data:
                break
        broken = [text for text in texts if not text.endswith("}")]
        assert broken == ['{"type":"response.output_text.delta",']
    await client.aclose()


async def test_disconnect_after_and_reset_drop_the_connection_mid_response(
    sim: Simulator,
) -> None:
    sim.inject_faults("disconnect_after=3", "reset", endpoint="responses")
    client = await connect(sim, headers={"x-simulator-reply-tokens": "10"})
    await client.send(model="gpt-4.1", input="hi")
    frames = []
    while (event := await client.next()) is not None:
        assert isinstance(event, TextMessage)
        frames.append(json.loads(event.data))
    assert [f["type"] for f in frames].count("response.output_text.delta") == 3
    await client.stream.aclose()
    client = await connect(sim)
    await client.send(model="gpt-4.1", input="hi")
    with pytest.raises(trio.BrokenResourceError):
        await client.next()
    await client.stream.aclose()
    await wait_until(lambda: sim.stats().open_connections == 0)
    assert sim.stats().faults_served == {"disconnect_after": 1, "reset": 1}


async def test_websocket_only_faults_are_refused_on_http(sim: Simulator) -> None:
    for fault in ("ignore_pings", "frame_delay=1", "drop_after_frames=2"):
        with pytest.raises(FaultSpecError, match="WebSocket connections only"):
            sim.inject_faults(fault, endpoint="responses")
        async with httpx2.AsyncClient(base_url=sim.base_url, headers=AUTH) as http:
            body = {"model": "gpt-4.1", "input": "hi"}
            answer = await http.post("/responses", json=body, headers={"x-simulator-fault": fault})
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "invalid_simulator_fault"
    with pytest.raises(ValueError, match="model"):
        sim.inject_faults("ignore_pings", model="gpt-4.1", endpoint="websocket")


async def test_capacity_answers_a_429_frame_with_retry_headers(
    autojump_clock: MockClock,
) -> None:
    async with open_simulator(api_key=API_KEY, capacity={"gpt-4.1": 1}) as sim:
        client = await connect(sim, headers={"x-simulator-reply-tokens": "5"})
        await client.send(model="gpt-4.1", input="one", stream_id="a")
        await client.send(model="gpt-4.1", input="two", stream_id="b")
        frames = await client.until_terminal(2)
        await client.aclose()
    # The lanes start at once, in no set order: one is served, the other refused.
    lanes = by_lane(frames)
    refused_lane = next(lane for lane in ("a", "b") if lanes[lane][0]["type"] == "error")
    served_lane = "b" if refused_lane == "a" else "a"
    [error] = lanes[refused_lane]
    assert error["status"] == 429
    assert error["error"]["code"] == "rate_limit_exceeded"
    assert error["error"]["headers"] == {"retry-after": "1", "retry-after-ms": "100"}
    check_response(lanes[served_lane], served_lane)


async def test_leaving_the_simulator_closes_open_websockets() -> None:
    async with open_simulator(api_key=API_KEY, profile="fast") as sim:
        client = await connect(sim)
        await client.send(model="gpt-4.1", input="hi", max_output_tokens=30_000)
    # The server is gone: the client reads what was sent, then EOF (or a reset, when the
    # request was still unread in the server's socket as it closed).
    with trio.fail_after(5):
        try:
            while await client.next() is not None:
                pass
        except trio.BrokenResourceError:
            pass
    await client.stream.aclose()


# ---- the openai SDK's WebSocket client ------------------------------------------------------


def sdk_session(base_url: str) -> list[dict[str, Any]]:
    """Two lanes and a store=false chain through ``OpenAI().responses.connect()`` (blocking)."""
    openai = pytest.importorskip("openai")
    pytest.importorskip("websockets")  # the SDK's `realtime` extra
    from openai.types.responses.responses_server_event import ResponsesServerEvent
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(ResponsesServerEvent)
    client = openai.OpenAI(api_key=API_KEY, base_url=base_url, max_retries=0)
    received: list[dict[str, Any]] = []

    def until_terminal(connection: Any, count: int) -> None:
        while count:
            raw = json.loads(connection.recv_bytes())
            adapter.validate_python(raw)  # every frame is a valid event for the SDK's types
            received.append(raw)
            if raw["type"] in TERMINAL or raw["type"] == "error":
                count -= 1

    with client.responses.connect() as connection:
        connection.response.create(model="gpt-4.1", input="one", stream_id="a", store=False)
        connection.response.create(model="gpt-4.1", input="two", stream_id="b", store=False)
        until_terminal(connection, 2)
        first = next(e for e in received if e["type"] == "response.completed")
        connection.response.create(
            model="gpt-4.1",
            input="three",
            store=False,
            previous_response_id=first["response"]["id"],
            stream_id=first["stream_id"],
        )
        connection.response.create(model="no-such-model", input="four", stream_id="c")
        until_terminal(connection, 2)
    client.close()
    return received


async def test_the_openai_sdks_websocket_client_reads_every_frame() -> None:
    pytest.importorskip("websockets")
    async with open_simulator(api_key=API_KEY, profile="fast", reply_tokens=5) as sim:
        # A blocking client in a thread against the simulator in this trio run: real time,
        # bounded here; nothing is measured.
        with trio.fail_after(60):
            frames = await trio.to_thread.run_sync(sdk_session, sim.base_url)
        assert sim.stats().internal_errors == 0
        assert sim.stats().websocket_connections == 1
    lanes = by_lane([frame for frame in frames if frame["type"] != "error"])
    assert {"a", "b"} <= set(lanes)
    for lane in ("a", "b"):
        completed = [f for f in lanes[lane] if f["type"] == "response.completed"]
        assert completed
    error = next(frame for frame in frames if frame["type"] == "error")
    assert (error["status"], error["error"]["code"], error["stream_id"]) == (
        404,
        "model_not_found",
        "c",
    )
    chained = [
        f["response"]
        for f in frames
        if f["type"] == "response.completed" and f["response"]["previous_response_id"]
    ]
    assert len(chained) == 1
