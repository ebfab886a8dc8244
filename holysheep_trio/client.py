# The streaming client: owned streams over httpx2, deadlines, retries, fallback, typed errors.
"""The client: :func:`open_client`, :class:`Client` and :class:`ChatStream`.

Ownership: ``open_client`` owns the ``httpx2.AsyncClient`` it creates (never one it was given),
a nursery for background work and a :class:`~holysheep_trio.pool.Pool` (limits, rate limits,
statistics). Each :class:`ChatStream` owns one HTTP response, its deadlines and its admission
(one global slot, one slot of its model) for exactly the lifetime of its ``async with`` block,
and reads in the caller's task: there is no per-stream background task. Between a failed
attempt and its retry the stream gives its admission back and is admitted again, so a request
sleeping through a back-off (or a ``Retry-After``) holds no slot. Every stream registers its cancel
scope with the client, so ``Client.aclose()`` can cancel it; such a stream raises
:class:`~holysheep_trio.ClientClosedError` in its own task.

Errors are translated at one boundary (:func:`_translate`); trio's ``Cancelled`` passes through.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Final, Protocol, TypeAlias

import attrs
import httpx2
import trio

from . import __version__
from . import batch as _batch
from ._wire import DONE, CompletionAccumulator, build_request_body, decode_event, parse_error_body
from .batch import BatchResult, ChatRequest
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ClientClosedError,
    ConfigurationError,
    DeadlineName,
    HolySheepError,
    StreamInterruptedError,
    StreamProtocolError,
    _scrub,
    error_class_for_status,
)
from .models import ChatChunk, Completion, Message, Usage
from .pool import Admission, Limits, Pool, PoolStatistics, estimate_tokens
from .retry import RetryPolicy, parse_retry_after
from .sse import SSEParser, SSEProtocolError
from .timeouts import Timeouts

if sys.version_info < (3, 11):  # pragma: no cover - trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = [
    "DEFAULT_BASE_URL",
    "AttemptOutcome",
    "BatchRequest",
    "ChatStream",
    "Client",
    "open_client",
]

#: One request of :meth:`Client.batch`, :meth:`Client.open_batch` or :meth:`Client.race_chat`:
#: a :class:`~holysheep_trio.ChatRequest` or a mapping of ``chat()`` keyword arguments.
BatchRequest: TypeAlias = ChatRequest | Mapping[str, Any]

DEFAULT_BASE_URL: Final = "https://api.holysheep.ai/v1"
_USER_AGENT: Final = f"holysheep-trio/{__version__}"
#: At most this much of an error response's body is read (the rest is discarded with the
#: connection), so a hostile or broken server cannot make us buffer without bound.
_MAX_ERROR_BODY: Final = 64 * 1024
#: Bound on every await during clean-up (STYLE rule 6).
_CLOSE_TIMEOUT: Final = 5.0
#: After ``data: [DONE]`` the body should end at once; wait this long for its end (so the
#: connection can be reused) before simply closing it. Not an error either way.
_DRAIN_AFTER_DONE: Final = 0.25
#: Closing a response of a user's httpx2 client early first reads what is already in flight
#: for this long (see _IteratorBody.aclose).
_DRAIN_ON_CLOSE: Final = 0.05
_INF: Final = math.inf
#: The default bound on requests a batch runs at once (see Client._batch_in_flight).
_MAX_BATCH_IN_FLIGHT: Final = 100

logger = logging.getLogger("holysheep_trio")

#: Exceptions a transport may raise for a network failure; anything else is a bug and escapes.
_TRANSPORT_ERRORS = (httpx2.HTTPError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class _Body(Protocol):
    async def receive_some(self) -> bytes: ...

    async def aclose(self) -> None: ...


class _IteratorBody:
    """A generator-based response body behind the ``receive_some``/``aclose`` interface.

    Used when the transport is not our ``TrioTransport`` (a user's ``http_client``, a
    ``MockTransport``). httpx2's default transport leaks httpcore2's body generators when a
    response is closed before the end of its body, even with ``aclosing``; closing the network
    stream first and then draining the iterator lets the generators unwind normally (issue,
    "Known traps").
    """

    __slots__ = ("_ended", "_iterator", "_preloaded", "_response")

    def __init__(self, response: httpx2.Response) -> None:
        self._response = response
        self._iterator = response.aiter_raw()
        self._ended = False
        # A transport may hand back a response whose body is already in memory (e.g. a
        # MockTransport built with `content=`); streaming it again raises StreamConsumed.
        try:
            self._preloaded: bytes | None = response.content
        except httpx2.ResponseNotRead:
            self._preloaded = None

    async def receive_some(self) -> bytes:
        if self._preloaded is not None:
            data, self._preloaded = self._preloaded, b""
            self._ended = True
            return data
        while not self._ended:
            try:
                data = await self._iterator.__anext__()
            except StopAsyncIteration:
                self._ended = True
                break
            if data:
                return data
        return b""

    async def aclose(self) -> None:
        if not self._ended:
            # When the rest of the body is already on its way (an in-band error event, then the
            # end of the body), reading it to the end lets httpcore2 release the connection
            # normally: closing the network stream under a complete body would put a closed
            # socket back into its pool, and the next request would fail outside our errors.
            with trio.move_on_after(_DRAIN_ON_CLOSE), contextlib.suppress(Exception):
                async for _ in self._iterator:
                    pass
                self._ended = True
        if not self._ended:
            self._ended = True
            network_stream = self._response.extensions.get("network_stream")
            if network_stream is not None:
                with contextlib.suppress(Exception):
                    await network_stream.aclose()
                # The stream is closed, so this ends at once, with an error we don't need.
                with contextlib.suppress(Exception):
                    async for _ in self._iterator:
                        pass
        await self._iterator.aclose()


class _Secret:
    """Holds the API key; its repr never shows it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"


@attrs.frozen(kw_only=True)
class AttemptOutcome:
    """What one finished HTTP attempt reports to the client (the seam for pools and metrics).

    Attributes:
        model: The requested model.
        base_url: The endpoint the attempt went to.
        attempt: The 1-based attempt number within the request.
        error: The failure, or None for a success or an abandoned stream.
        completed: Whether the stream was read to its end.
        usage: Billed tokens, when known.
        ttft: Seconds from the start of this attempt to its first token, if any.
        duration: Seconds from the start of this attempt to its end.
    """

    model: str
    base_url: str
    attempt: int
    error: HolySheepError | None = None
    completed: bool = False
    usage: Usage | None = None
    ttft: float | None = None
    duration: float = 0.0


def _translate(exc: BaseException, *, connect_timeout: float | None) -> HolySheepError:
    """Map a transport or parser exception to our tree (the one translation boundary)."""
    if isinstance(exc, HolySheepError):
        return exc
    if isinstance(exc, httpx2.ConnectTimeout | httpx2.PoolTimeout):
        return APITimeoutError(
            f"connecting timed out ({type(exc).__name__})",
            deadline="connect",
            seconds=connect_timeout,
        )
    if isinstance(exc, httpx2.TimeoutException):
        return APITimeoutError(f"the transport timed out ({type(exc).__name__})", deadline="idle")
    if isinstance(exc, httpx2.InvalidURL | httpx2.UnsupportedProtocol):
        return ConfigurationError(f"bad URL: {exc}")
    if isinstance(exc, SSEProtocolError):
        return StreamProtocolError(f"bad server-sent event stream: {exc}")
    detail = str(exc) or "no detail"
    return APIConnectionError(f"network error ({type(exc).__name__}): {detail}")


def _single_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside nested one-member groups; None when several failed at once.

    A group of several raised by the caller's own code inside the block comes back as that
    group, without the extra layer our nursery wrapped around it.
    """
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, BaseExceptionGroup):
        return exc if exc is not group else None
    return exc


class ChatStream:
    """One streamed chat completion; use it with ``async with``, iterate it with ``async for``.

    Entering the block waits for admission by the client's limits (see ``docs/pool.md``), then
    sends the request and waits for the first token (retrying before it if the policy allows),
    so HTTP errors are raised by the ``async with`` line. Iterating yields
    :class:`~holysheep_trio.ChatChunk` values; afterwards :attr:`completion` holds the result.
    Leaving the block by any path closes the HTTP response before the exit returns.

    Create it with :meth:`Client.stream_chat`.
    """

    def __init__(
        self,
        client: Client,
        *,
        model: str,
        body: bytes,
        max_tokens: int | None,
        timeouts: Timeouts,
        extra_headers: Mapping[str, str] | None = None,
        estimated_tokens: int = 0,
        estimated_prompt_tokens: int = 0,
    ) -> None:
        self._client = client
        self._extra_headers = dict(extra_headers or {})
        self._model = model
        self._body_bytes = body
        self._max_tokens = max_tokens
        self._timeouts = timeouts
        # The cancel scope of the library await in progress (entering, or reading the next
        # chunk), so that Client.aclose() can cancel it. Never held across the caller's own
        # code: a caller's cancel scope may open and close around any of our calls.
        self._scope: trio.CancelScope | None = None
        self._state = "new"  # new -> open -> done
        self._closed_by_client = False
        self._estimated_tokens = estimated_tokens
        self._estimated_prompt_tokens = estimated_prompt_tokens
        self._accepted = False  # the current attempt got a 2xx: the server took the prompt
        # The admission held by the current attempt, and its ticket (None between attempts).
        self._admission: contextlib.AbstractAsyncContextManager[Admission | None] | None = None
        self._ticket: Admission | None = None
        # per request
        self._start = 0.0
        self._end: float | None = None
        self._total_deadline = _INF
        self._attempts = 0
        self._ttft: float | None = None
        self._first_token_at: float | None = None
        # per attempt
        self._base_url = ""
        self._attempt_start = 0.0
        self._response: httpx2.Response | None = None
        self._body: _Body | None = None
        self._request_id: str | None = None
        self._parser = SSEParser()
        self._acc = CompletionAccumulator()
        self._held: list[ChatChunk] = []
        self._ready: deque[ChatChunk] = deque()
        self._output_chunks = 0
        self._output_began = False
        self._saw_done = False
        self._done_at: float | None = None
        self._saw_finish = False
        self._eof = False
        self._failure: HolySheepError | None = None
        self._first_token_deadline = _INF
        self._idle_deadline = _INF
        self._reported = False

    def __repr__(self) -> str:
        return f"<ChatStream model={self._model!r} state={self._state} attempts={self._attempts}>"

    @property
    def model(self) -> str:
        """The requested model."""
        return self._model

    @property
    def completion(self) -> Completion:
        """The completion accumulated so far (final once the iteration ended)."""
        end = self._end if self._end is not None else trio.current_time()
        return self._acc.completion(
            ttft=self._ttft,
            duration=max(0.0, end - self._start),
            attempts=self._attempts,
            request_id=self._request_id,
        )

    # ---- the async with protocol --------------------------------------------------------

    async def __aenter__(self) -> ChatStream:
        if self._state != "new":
            raise RuntimeError("a ChatStream can be entered only once")
        self._state = "open"
        client = self._client
        if client._closed:
            self._state = "done"
            raise ClientClosedError("the client is closed", model=self._model)
        client._streams.add(self)
        try:
            scope = self._guard()
            try:
                with scope:
                    await self._enter()
            finally:
                self._scope = None
            if scope.cancelled_caught:
                raise self._closed_error()
        except BaseException as exc:
            outcome = await self._finish(exc)
            if outcome is exc:
                raise
            if outcome is None:  # pragma: no cover - _finish swallows nothing on entry
                raise RuntimeError("stream entry was cancelled") from None
            raise outcome from None
        return self

    async def _enter(self) -> None:
        # An explicit total deadline covers the whole call, waiting for admission included;
        # the automatic one estimates the stream's own duration, so it starts on admission
        # (a request queued behind the caller's own limits must not time out for that).
        explicit = self._timeouts.total
        if explicit is not None and explicit != "auto":
            self._total_deadline = trio.current_time() + explicit
        await self._enter_admission()
        self._start = trio.current_time()
        if explicit == "auto":
            total = self._timeouts.total_for(self._model, self._max_tokens)
            self._total_deadline = _INF if total is None else self._start + total
        await self._run_attempts()

    def _guard(self) -> trio.CancelScope:
        """A cancel scope for one library await, cancelled at once if the client is closed."""
        scope = trio.CancelScope()
        if self._closed_by_client:
            scope.cancel()
        self._scope = scope
        return scope

    def _closed_error(self) -> ClientClosedError:
        return ClientClosedError(
            "the client was closed while this stream was open",
            model=self._model,
            request_id=self._request_id,
            attempt=self._attempts or None,
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        outcome = await self._finish(exc)
        if outcome is None:
            return exc is not None
        if outcome is exc:
            return False
        raise outcome from None

    async def _finish(self, exc: BaseException | None) -> BaseException | None:
        """Release everything; return the exception to propagate (None: nothing to raise)."""
        self._state = "done"
        try:
            await self._close_response()
            if not self._reported and self._attempts:
                self._report(error=None, completed=False)
            await self._exit_admission(exc)
        finally:
            self._client._streams.discard(self)
            if self._end is None:
                self._end = trio.current_time()
        # A stream the client closed reports that, whether our own cancellation or a transport
        # error from the closed connection reached it first.
        if (
            self._closed_by_client
            and isinstance(exc, HolySheepError)
            and not isinstance(exc, ClientClosedError)
        ):
            return self._closed_error()
        return exc

    async def _enter_admission(self) -> None:
        """Wait for a global slot and a slot of the model (within the total deadline)."""
        admission = self._client._admit(model=self._model, estimated_tokens=self._estimated_tokens)
        if self._total_deadline == _INF:  # the common case; a cancel scope costs ~2 µs
            ticket = await admission.__aenter__()
        else:
            with trio.move_on_at(self._total_deadline) as scope:
                ticket = await admission.__aenter__()
            if scope.cancelled_caught:
                seconds = self._timeouts.total_for(self._model, self._max_tokens)
                error = APITimeoutError(
                    "waiting for admission (the client's limits) outlasted the total deadline"
                    f" of {seconds} s",
                    deadline="total",
                    seconds=seconds,
                )
                self._tag(error)
                raise error
        self._admission = admission
        self._ticket = ticket

    async def _exit_admission(self, exc: BaseException | None) -> None:
        """Give the slots back (shielded: it never waits, and it must not be skipped)."""
        admission = self._admission
        if admission is None:
            return
        self._admission = None
        self._ticket = None
        with trio.CancelScope(shield=True):
            await admission.__aexit__(
                None if exc is None else type(exc),
                exc,
                None if exc is None else exc.__traceback__,
            )

    def _cancel_by_client(self) -> None:
        self._closed_by_client = True
        if self._scope is not None:
            self._scope.cancel()

    # ---- iteration ------------------------------------------------------------------------

    def __aiter__(self) -> ChatStream:
        if self._state == "new":
            raise RuntimeError("use the stream inside `async with client.stream_chat(...)`")
        return self

    async def __anext__(self) -> ChatChunk:
        # The accumulator sees exactly what the caller received, so a partial completion
        # (after `break` or an interruption) matches the chunks that were delivered.
        if self._closed_by_client:
            raise self._closed_error()
        if self._ready:
            chunk = self._ready.popleft()
        else:
            chunk = await self._next_slow()
        self._acc.add(chunk)
        return chunk

    async def _next_slow(self) -> ChatChunk:
        if self._state != "open" or self._response is None:
            if self._state == "new":
                raise RuntimeError("use the stream inside `async with client.stream_chat(...)`")
            raise StopAsyncIteration
        scope = self._guard()
        try:
            with scope:
                await self._fill()
        except HolySheepError as error:
            self._tag(error)
            self._failure = None
            self._end = trio.current_time()
            await self._close_response()
            self._report(error=error, completed=False)
            raise StreamInterruptedError.from_error(error, partial=self.completion) from error
        finally:
            self._scope = None
        if scope.cancelled_caught:
            raise self._closed_error()
        return self._ready.popleft()

    async def _fill(self) -> None:
        """Read until a chunk is ready; raise StopAsyncIteration at the end of the stream."""
        while not self._ready:
            if self._failure is not None:
                raise self._failure
            if self._eof:
                await self._end_of_stream()
                raise StopAsyncIteration
            await self._pump()

    async def _end_of_stream(self) -> None:
        # The stream ended at [DONE]; waiting for the end of the body is only for reuse.
        self._end = self._done_at if self._done_at is not None else trio.current_time()
        await self._close_response()
        self._report(error=None, completed=True)

    # ---- attempts -------------------------------------------------------------------------

    async def _run_attempts(self) -> None:
        client = self._client
        urls = client._base_urls
        policy = client._retry
        url_index = 0
        endpoint_attempt = 0
        while True:
            if self._admission is None:  # given back for the back-off of a retry
                await self._enter_admission()
            self._attempts += 1
            endpoint_attempt += 1
            try:
                await self._attempt(urls[url_index])
            except HolySheepError as error:
                self._tag(error)
                await self._close_response()
                self._report(error=error, completed=False)
                time_left = self._total_deadline - trio.current_time()
                delay = policy.next_delay(
                    endpoint_attempt, error, time_left=None if time_left == _INF else time_left
                )
                if delay is None:
                    if url_index + 1 < len(urls) and policy.should_fall_over(error):
                        url_index += 1
                        endpoint_attempt = 0
                        logger.info(
                            "%s: falling over to the next endpoint after %s",
                            self._model,
                            type(error).__name__,
                        )
                        continue
                    raise
                logger.info(
                    "%s: attempt %d failed with %s; retrying in %.3f s",
                    self._model,
                    self._attempts,
                    type(error).__name__,
                    delay,
                )
                # Sleep without holding slots: other requests may run meanwhile, and after a
                # 429 the pool's Retry-After pause and smaller limit apply to the retry too.
                await self._exit_admission(None)
                await trio.sleep(delay)
                continue
            return

    def _reset_attempt(self, base_url: str) -> None:
        self._base_url = base_url
        self._attempt_start = trio.current_time()
        self._request_id = None
        self._parser = SSEParser()
        self._acc = CompletionAccumulator()
        self._held = []
        self._ready.clear()
        self._output_chunks = 0
        self._output_began = False
        self._saw_done = False
        self._done_at = None
        self._saw_finish = False
        self._eof = False
        self._accepted = False
        self._failure = None
        self._reported = False
        self._first_token_at = None
        first_token = self._timeouts.first_token
        self._first_token_deadline = (
            _INF if first_token is None else self._attempt_start + first_token
        )
        self._idle_deadline = _INF

    async def _attempt(self, base_url: str) -> None:
        """One HTTP attempt, up to the first token (or the end of a stream without output)."""
        # Admission may end with a shielded checkpoint, during which Client.aclose() can run:
        # take its cancellation here, before using the (then closed) httpx2 client.
        await trio.lowlevel.checkpoint_if_cancelled()
        self._reset_attempt(base_url)
        client = self._client
        connect = self._timeouts.connect
        request = client._http.build_request(
            "POST",
            base_url + "/chat/completions",
            content=self._body_bytes,
            headers={**client._request_headers(), **self._extra_headers},
            timeout=httpx2.Timeout(None, connect=connect),
        )
        deadline, name = self._deadline()
        with trio.move_on_at(deadline) as scope:
            try:
                response = await client._http.send(request, stream=True, follow_redirects=False)
            except _TRANSPORT_ERRORS as exc:
                raise _translate(exc, connect_timeout=connect) from exc
        if scope.cancelled_caught:
            raise self._timeout(name)
        self._response = response
        self._request_id = response.headers.get("x-request-id")
        body = response.extensions.get("holysheep.body")
        self._body = body if body is not None else _IteratorBody(response)
        idle = self._timeouts.idle
        self._idle_deadline = _INF if idle is None else trio.current_time() + idle
        self._accepted = 200 <= response.status_code < 300
        if not self._accepted:
            raise await self._status_error(response)
        content_type = response.headers.get("content-type", "text/event-stream")
        if not content_type.lower().startswith("text/event-stream"):
            raise StreamProtocolError(
                f"expected a text/event-stream response, got {content_type!r}"
            )
        while not self._output_began and not self._eof:
            if self._failure is not None:
                raise self._failure
            await self._pump()
        if self._failure is not None and not self._output_began:
            raise self._failure
        if not self._output_began:  # a stream without output: deliver what it had
            self._ready.extend(self._held)
            self._held.clear()

    def _deadline(self) -> tuple[float, DeadlineName]:
        deadline: float = self._total_deadline
        name: DeadlineName = "total"
        if self._idle_deadline < deadline:
            deadline, name = self._idle_deadline, "idle"
        if not self._output_began and self._first_token_deadline < deadline:
            deadline, name = self._first_token_deadline, "first_token"
        return deadline, name

    def _timeout(self, name: DeadlineName) -> APITimeoutError:
        if name == "total":
            seconds = self._timeouts.total_for(self._model, self._max_tokens)
            what = "the request did not finish"
        elif name == "first_token":
            seconds = self._timeouts.first_token
            what = "no first token arrived"
        else:
            seconds = self._timeouts.idle
            what = "no data event arrived"
        return APITimeoutError(f"{what} within {seconds} s", deadline=name, seconds=seconds)

    async def _pump(self) -> None:
        """Receive one piece of the body and decode the events it completes."""
        body = self._body
        assert body is not None
        deadline, name = self._deadline()
        if self._saw_done:
            deadline = min(deadline, trio.current_time() + _DRAIN_AFTER_DONE)
        with trio.move_on_at(deadline) as scope:
            try:
                data = await body.receive_some()
            except _TRANSPORT_ERRORS as exc:
                if self._saw_done:  # complete; only the end of the body was lost
                    self._eof = True
                    return
                raise _translate(exc, connect_timeout=None) from exc
        if scope.cancelled_caught:
            if self._saw_done:  # complete; the server just did not end the body
                self._eof = True
                return
            raise self._timeout(name)
        try:
            events = self._parser.feed(data) if data else self._parser.close()
        except SSEProtocolError as exc:
            raise StreamProtocolError(f"bad server-sent event stream: {exc}", data=data) from None
        # Only events that carry a chunk (or [DONE]) are progress: comments, keep-alive events
        # such as `event: ping` and empty data do not push the idle deadline back.
        if events and self._decode(events):
            idle = self._timeouts.idle
            if idle is not None:
                self._idle_deadline = trio.current_time() + idle
        if not data:
            self._eof = True
            if not self._saw_done and not self._saw_finish and self._failure is None:
                self._failure = APIConnectionError("the stream ended before it was complete")

    def _decode(self, events: Iterable[Any]) -> bool:
        """Decode events into chunks; return whether any of them was progress (a chunk/[DONE])."""
        progress = False
        for event in events:
            if self._saw_done or self._failure is not None:
                return progress
            try:
                item = decode_event(event)
            except HolySheepError as error:
                self._failure = error
                return progress
            if item is None:
                continue
            progress = True
            if item is DONE:
                self._saw_done = True
                self._done_at = trio.current_time()
                continue
            assert isinstance(item, ChatChunk)
            if item.has_output:
                self._output_chunks += 1
            for choice in item.choices:
                if choice.finish_reason is not None:
                    self._saw_finish = True
            if self._output_began:
                self._ready.append(item)
            elif item.has_output:
                self._output_began = True
                now = trio.current_time()
                self._ttft = now - self._start
                self._first_token_at = now
                self._ready.extend(self._held)
                self._held.clear()
                self._ready.append(item)
            else:
                self._held.append(item)
        return progress

    async def _status_error(self, response: httpx2.Response) -> APIStatusError:
        body = await self._read_bounded(_MAX_ERROR_BODY)
        message, error_type, code = parse_error_body(body)
        headers = response.headers
        raw_should_retry = headers.get("x-should-retry", "").strip().lower()
        should_retry = {"true": True, "false": False}.get(raw_should_retry)
        status = response.status_code
        cls = error_class_for_status(status)
        return cls(
            f"HTTP {status}: {message}",
            status=status,
            body=body.decode("utf-8", "replace"),
            error_type=error_type,
            code=code,
            retry_after=parse_retry_after(headers),
            should_retry=should_retry,
            headers=dict(headers.items()),
        )

    async def _read_bounded(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the body, within the current deadlines (errors ignored)."""
        body = self._body
        assert body is not None
        parts: list[bytes] = []
        size = 0
        deadline, _ = self._deadline()
        with trio.move_on_at(deadline):
            try:
                while size < limit:
                    data = await body.receive_some()
                    if not data:
                        break
                    parts.append(data)
                    size += len(data)
            except _TRANSPORT_ERRORS:
                pass
        return b"".join(parts)[:limit]

    async def _close_response(self) -> None:
        body, response = self._body, self._response
        self._body = None
        self._response = None
        if response is None:
            return
        with trio.CancelScope(shield=True, deadline=trio.current_time() + _CLOSE_TIMEOUT):
            try:
                if body is not None:
                    await body.aclose()
                await response.aclose()
            except _TRANSPORT_ERRORS as exc:  # closing a broken connection may fail; it is gone
                logger.debug("closing a response failed: %s", type(exc).__name__)

    def _tag(self, error: HolySheepError) -> None:
        """Attach the request's context to an error and scrub the API key from its text."""
        if error.model is None:
            error.model = self._model
        if error.request_id is None:
            error.request_id = self._request_id
        if error.attempt is None:
            error.attempt = self._attempts or None  # None: it failed before any attempt
        secrets = self._client._secrets()
        if secrets:
            error.message = _scrub(error.message, secrets)
            error.args = (error.message,)
            if isinstance(error, APIStatusError):
                error.body = _scrub(error.body, secrets)

    def _report(self, *, error: HolySheepError | None, completed: bool) -> None:
        self._reported = True
        now = trio.current_time()
        first_token_at = self._first_token_at
        outcome = AttemptOutcome(
            model=self._model,
            base_url=self._base_url,
            attempt=self._attempts,
            error=error,
            completed=completed,
            usage=self._acc.usage,
            ttft=None if first_token_at is None else first_token_at - self._attempt_start,
            duration=now - self._attempt_start,
        )
        ticket = self._ticket
        if ticket is not None:
            usage = outcome.usage
            if usage is not None:
                prompt_tokens = usage.prompt_tokens
            else:
                # Cut short before the usage chunk (a `break`, a hedging loser): a server that
                # accepted the request bills its prompt all the same; count our estimate.
                prompt_tokens = self._estimated_prompt_tokens if self._accepted else 0
            ticket.report_attempt(
                error=error,
                completed=completed,
                prompt_tokens=prompt_tokens,
                # A stream cut short (a `break`, a hedging loser) has no usage chunk: count
                # the output chunks received so far, one token each, as the server bills them.
                completion_tokens=self._output_chunks if usage is None else usage.completion_tokens,
                ttft=outcome.ttft,
                duration=outcome.duration,
            )
        self._client._report(outcome)


class Client:
    """A connection to an OpenAI-compatible chat API. Create it with :func:`open_client`."""

    def __init__(
        self,
        *,
        http_client: httpx2.AsyncClient,
        owns_http_client: bool,
        api_key: str | None,
        base_urls: tuple[str, ...],
        timeouts: Timeouts,
        retry: RetryPolicy,
        limits: Limits | None = None,
    ) -> None:
        self._pool = Pool(Limits.unlimited() if limits is None else limits)
        self._http = http_client
        self._owns_http = owns_http_client
        self._api_key = None if api_key is None else _Secret(api_key)
        self._base_urls = base_urls
        self._timeouts = timeouts
        self._retry = retry
        self._streams: set[ChatStream] = set()
        self._closed = False
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Client {state} base_url={self._base_urls[0]!r} streams={len(self._streams)}>"

    @property
    def base_urls(self) -> tuple[str, ...]:
        """The primary endpoint followed by the fallback endpoints, in order."""
        return self._base_urls

    @property
    def timeouts(self) -> Timeouts:
        """The default deadlines of requests."""
        return self._timeouts

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of requests."""
        return self._retry

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    @property
    def limits(self) -> Limits:
        """The concurrency and rate limits every request is admitted under."""
        return self._pool.limits

    def statistics(self) -> PoolStatistics:
        """A frozen snapshot of the pool: counts, slots in use, latency percentiles, tokens.

        Counts are per attempt: a request retried after a 429 counts once under ``succeeded``
        and once under ``failed["rate_limit"]``. Memory is bounded (rolling windows), whatever
        the traffic. See ``docs/pool.md``.

        Returns:
            A ``PoolStatistics`` value; later traffic does not change it.
        """
        return self._pool.statistics()

    def stream_chat(
        self,
        *,
        model: str,
        messages: Iterable[Message | Mapping[str, Any]],
        timeouts: Timeouts | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> ChatStream:
        """Stream a chat completion. Use the result with ``async with``, then ``async for``.

        Args:
            model: The model name.
            messages: Dicts in the OpenAI shape or :class:`~holysheep_trio.Message` values.
            timeouts: Deadlines for this request instead of the client's.
            extra_headers: Headers added to this request (e.g. ``X-Simulator-Fault``).
            **params: Other OpenAI parameters (``max_tokens``, ``temperature``, ``tools``,
                ``stream_options``, ...). Usage is requested unless ``stream_options`` is given.

        Returns:
            A :class:`ChatStream`; entering it sends the request.

        Raises:
            TypeError: a message or parameter cannot be sent.
        """
        if not isinstance(messages, str | bytes | Mapping | Sequence):
            messages = list(messages)  # read twice below: for the body and the estimate
        body = build_request_body(model=model, messages=messages, params=params)
        max_tokens = params.get("max_tokens", params.get("max_completion_tokens"))
        max_tokens = max_tokens if isinstance(max_tokens, int) else None
        return ChatStream(
            self,
            model=model,
            body=body,
            max_tokens=max_tokens,
            timeouts=timeouts or self._timeouts,
            extra_headers=extra_headers,
            estimated_tokens=estimate_tokens(messages, max_tokens=max_tokens),
            estimated_prompt_tokens=estimate_tokens(messages, max_tokens=0),
        )

    async def chat(
        self,
        *,
        model: str,
        messages: Iterable[Message | Mapping[str, Any]],
        timeouts: Timeouts | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> Completion:
        """Run a chat completion to its end and return it.

        Streamed under the hood, so deadlines, retries and errors are those of
        :meth:`stream_chat`. Takes the same arguments.
        """
        async with self.stream_chat(
            model=model, messages=messages, timeouts=timeouts, extra_headers=extra_headers, **params
        ) as stream:
            async for _ in stream:
                pass
        return stream.completion

    # ---- many requests: batches and hedging ----------------------------------------------

    async def _run_request(self, request: BatchRequest) -> Completion:
        return await self.chat(**ChatRequest.coerce(request).to_kwargs())

    def _is_closed(self) -> bool:
        # A batch stops pulling input once the client is closed: every further request could
        # only fail with ClientClosedError.
        return self._closed

    def _batch_in_flight(self, max_in_flight: int | None) -> int:
        # Twice the global limit: the requests admitted, and as many ready for the next free
        # global slot (a request of a model at its own limit waits aside, outside this window,
        # so that other models' requests can start). Never more than _MAX_BATCH_IN_FLIGHT by
        # default: with unlimited limits (the default), twice "no limit" would start every input
        # at once, and a batch must run in bounded memory and sockets.
        if max_in_flight is not None:
            return max_in_flight
        return min(2 * self._pool.limits.max_concurrent, _MAX_BATCH_IN_FLIGHT)

    async def batch(
        self,
        requests: Iterable[BatchRequest] | AsyncIterable[BatchRequest],
        *,
        max_in_flight: int | None = None,
    ) -> list[BatchResult[BatchRequest, Completion]]:
        """Run every request with :meth:`chat`; return every result, in input order.

        All settled: a request that fails with a :class:`~holysheep_trio.HolySheepError`
        becomes its result's ``error`` and never cancels the others. Any other exception (a
        malformed request, a bug) cancels the batch and propagates, alone. Every request still
        passes the client's limits; ``max_in_flight`` only bounds how many are started. A
        request whose model already has as many requests started as the pool admits at once
        (its limit, at most ``max_concurrent``) waits aside without taking one of those places,
        so one busy model never keeps the others' requests from starting (see
        ``docs/pool.md``).

        The list holds one result per input, so memory grows with the input: for very large or
        endless inputs use :meth:`open_batch`.

        Args:
            requests: ``ChatRequest`` values or mappings of ``chat()`` keyword arguments; an
                iterable or an async (lazy) iterable, pulled as capacity frees up.
            max_in_flight: Requests started and not yet settled, at most. Default: 100, or twice the
                client's ``limits.max_concurrent``.

        Returns:
            One ``BatchResult`` per request (``.index``, ``.request`` as given,
            ``.completion`` or ``.error``), ``results[i].index == i``.

        Raises:
            ValueError: ``max_in_flight`` is not an int >= 1.
            TypeError: A request is neither a ``ChatRequest`` nor a valid mapping.
        """
        return await _batch.run_batch(
            self._run_request,
            requests,
            max_in_flight=self._batch_in_flight(max_in_flight),
            catch=HolySheepError,
            stop_when=self._is_closed,
            key=_batch._model_of,
            key_limit=self._pool.max_admitted,
        )

    def open_batch(
        self,
        requests: Iterable[BatchRequest] | AsyncIterable[BatchRequest],
        *,
        max_in_flight: int | None = None,
        max_pending: int | None = None,
    ) -> AbstractAsyncContextManager[
        trio.abc.ReceiveChannel[BatchResult[BatchRequest, Completion]]
    ]:
        """Run every request with :meth:`chat`; receive each result as soon as it settles.

        Use as ``async with client.open_batch(requests) as results:`` then
        ``async for result in results:``. Same semantics as :meth:`batch` (all settled, the
        client's limits apply, a busy model's requests wait aside), in bounded memory: at most
        ``max_in_flight`` requests run, at most ``4 * max_in_flight`` wait aside for a busy
        model, and at most ``max_pending`` settled results wait for you; while that buffer is
        full no new input is pulled, so a lazy input of a million requests runs in constant
        memory. Leaving the block early cancels the requests in flight; their slots and
        connections are released before the block's exit returns.

        Args:
            requests: ``ChatRequest`` values or mappings of ``chat()`` keyword arguments; an
                iterable or an async (lazy) iterable, pulled on demand.
            max_in_flight: Requests started and not yet settled, at most. Default: 100, or twice the
                client's ``limits.max_concurrent``.
            max_pending: Settled results buffered for the consumer. Default: ``max_in_flight``.

        Returns:
            An async context manager yielding a ``trio.abc.ReceiveChannel`` of ``BatchResult``
            values, in completion order.

        Raises:
            ValueError: ``max_in_flight`` or ``max_pending`` is invalid (at the call).
        """
        return _batch.open_batch(
            self._run_request,
            requests,
            max_in_flight=self._batch_in_flight(max_in_flight),
            max_pending=max_pending,
            catch=HolySheepError,
            stop_when=self._is_closed,
            key=_batch._model_of,
            key_limit=self._pool.max_admitted,
        )

    async def race_chat(
        self, requests: Sequence[BatchRequest], *, hedge_delay: float = 0.25
    ) -> Completion:
        """Hedged request: race the requests; the first to produce a token wins.

        Starts the first request; if it has no first token ``hedge_delay`` seconds later (or it
        failed), starts the next, and so on. The first stream to produce a token wins and is
        read to its end; the others are cancelled at once, and the tokens they used so far are
        still counted in :meth:`statistics` (as ``failed["cancelled"]``).

        Args:
            requests: The candidates, in order of preference: ``ChatRequest`` values or
                mappings of ``chat()`` keyword arguments (e.g. the same prompt on two models).
            hedge_delay: Seconds to wait for a first token before starting the next candidate.

        Returns:
            The winner's ``Completion``.

        Raises:
            HolySheepError: The winner's error if it fails after its first token; if every
                candidate fails before producing one, the first candidate's error.
            ValueError: No requests, or ``hedge_delay`` is negative or NaN.
            TypeError: A request is neither a ``ChatRequest`` nor a valid mapping.
        """
        coerced = [ChatRequest.coerce(request) for request in requests]

        def candidate(request: ChatRequest) -> _batch.Candidate[Completion]:
            async def run(first_token: Callable[[], None]) -> Completion:
                async with self.stream_chat(**request.to_kwargs()) as stream:
                    first_token()  # the stream is entered once its first token has arrived
                    async for _ in stream:
                        pass
                return stream.completion

            return run

        return await _batch.race(
            [candidate(request) for request in coerced],
            hedge_delay=hedge_delay,
            catch=HolySheepError,
        )

    async def aclose(self) -> None:
        """Cancel every open stream (they raise ClientClosedError) and release the connection.

        Idempotent. Closes the ``httpx2.AsyncClient`` only if the client created it.
        """
        if self._closed:
            return
        self._closed = True
        for stream in list(self._streams):
            stream._cancel_by_client()
        # The nursery only hosts future background tasks (health checks); its scope also
        # covers the caller's `async with` body, so it is deliberately not cancelled here.
        if self._owns_http:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + _CLOSE_TIMEOUT):
                await self._http.aclose()

    # ---- seams for the pool issue and for the security rules ---------------------------

    def _admit(
        self, *, model: str, estimated_tokens: int
    ) -> contextlib.AbstractAsyncContextManager[Admission | None]:
        """The single admission step every attempt passes, held while it talks to the server.

        The stream reports each attempt on the ticket it yields before leaving it.
        """
        return self._pool.admit(model, estimated_tokens=estimated_tokens)

    def _report(self, outcome: AttemptOutcome) -> None:
        """Where every finished attempt reports its outcome, after the pool's ticket has.

        A no-op; a seam for observability (OpenTelemetry) and tests.
        """

    def _request_headers(self) -> dict[str, str]:
        # identity: both body paths read the raw bytes (no async-generator decoders on the hot
        # path), so the server must not compress; httpx2's default asks for gzip, deflate.
        headers = {
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",
            "Content-Type": "application/json",
        }
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.value}"
        return headers

    def _secrets(self) -> tuple[str, ...]:
        return () if self._api_key is None else (self._api_key.value,)


def _check_url(url: str) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"base URLs must start with http:// or https://, got {url!r}")
    try:
        parsed = httpx2.URL(url)
    except httpx2.InvalidURL as exc:
        raise ConfigurationError(f"bad base URL {url!r}: {exc}") from None
    if not parsed.host:
        raise ConfigurationError(f"bad base URL {url!r}: no host")
    return url.rstrip("/")


def _has_own_auth(http_client: httpx2.AsyncClient) -> bool:
    """Whether a user's client already authenticates its requests (auth or a default header)."""
    return http_client.auth is not None or "authorization" in http_client.headers


def _default_http_client() -> httpx2.AsyncClient:
    from ._transport import TrioTransport

    return httpx2.AsyncClient(
        transport=TrioTransport(),
        follow_redirects=False,
        headers={"User-Agent": _USER_AGENT},
    )


@contextlib.asynccontextmanager
async def open_client(
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    fallback_urls: Iterable[str] = (),
    timeouts: Timeouts | None = None,
    retry: RetryPolicy | None = None,
    http_client: httpx2.AsyncClient | None = None,
    limits: Limits | None = None,
) -> AsyncIterator[Client]:
    """Open a client; use with ``async with``. Leaving the block closes it.

    Args:
        api_key: The API key. Default: ``$HOLYSHEEP_API_KEY``. With an ``http_client`` that
            has its own ``auth`` or ``Authorization`` header, only an explicit ``api_key`` is
            sent; otherwise the environment's key is used as without one.
        base_url: Default: ``$HOLYSHEEP_BASE_URL`` or ``https://api.holysheep.ai/v1``.
        fallback_urls: Endpoints tried in order when the primary fails with connection errors
            or 5xx after its retries. They receive the same API key.
        timeouts: The default deadlines (:class:`~holysheep_trio.Timeouts`).
        retry: The retry policy (:class:`~holysheep_trio.RetryPolicy`).
        http_client: An ``httpx2.AsyncClient`` to use instead of our own; its headers, auth,
            transport and event hooks apply. It is never closed by us.
        limits: Concurrency limits (global and per model), optional rate limits per model, and
            adaptive limits (``holysheep_trio.Limits``). Default: ``Limits.unlimited()``, no
            request ever waits (like any HTTP client), but statistics are kept. Pass
            ``Limits()`` for the seed's pool: 10 requests at once in all; gpt-4.1 5,
            claude-sonnet-4.5 3, gemini-2.5-flash 8, deepseek-v3.2 10; any other model 4;
            adaptive (shrinks on 429/503/529, grows back on success).

    Yields:
        The :class:`Client`.

    Raises:
        ConfigurationError: no API key (without ``http_client``) or a bad URL, before anything
            is opened.
        TypeError: ``limits`` is not a ``Limits``.
    """
    if limits is not None and not isinstance(limits, Limits):
        raise TypeError(f"limits must be a holysheep_trio.Limits, got {type(limits).__name__}")
    if api_key is None and (http_client is None or not _has_own_auth(http_client)):
        api_key = os.environ.get("HOLYSHEEP_API_KEY") or None
    if api_key is None and http_client is None:
        raise ConfigurationError(
            "no API key: pass open_client(api_key=...) or set HOLYSHEEP_API_KEY"
        )
    urls = (
        _check_url(base_url or os.environ.get("HOLYSHEEP_BASE_URL") or DEFAULT_BASE_URL),
        *(_check_url(url) for url in fallback_urls),
    )
    owns = http_client is None
    client = Client(
        http_client=_default_http_client() if http_client is None else http_client,
        owns_http_client=owns,
        api_key=api_key,
        base_urls=urls,
        timeouts=timeouts or Timeouts(),
        retry=retry or RetryPolicy(),
        limits=limits,
    )
    failure: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            client._nursery = nursery
            try:
                yield client
            finally:
                await client.aclose()
    except BaseExceptionGroup as group:
        # One thing failed -> raise that one exception, not a group (STYLE, trio's rule).
        failure = _single_leaf(group)
        if failure is None:
            raise
    if failure is not None:
        raise failure
