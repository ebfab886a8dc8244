# The streaming client: open_client, Client, and ChatStream over the shared request lifecycle.
"""The client: :func:`open_client`, :class:`Client` and :class:`ChatStream`.

Ownership: ``open_client`` owns the ``httpx2.AsyncClient`` it creates (never one it was given)
and a :class:`~holysheep_trio.pool.Pool` (limits, rate limits, statistics). Each
:class:`ChatStream` is a thin shell over one request lifecycle (``_lifecycle.Request``: admission,
attempts, deadlines, accounting), which holds one HTTP response and the admission of the current
attempt for exactly the lifetime of the stream's ``async with`` block and reads in the caller's
task: there is no per-stream background task. Every stream registers with the client, so
``Client.aclose()`` can cancel it; such a stream raises :class:`~holysheep_trio.ClientClosedError`
in its own task.

Errors are translated at one boundary (``_lifecycle.translate``); trio's ``Cancelled`` passes
through.
"""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import httpx2
import trio

from . import __version__
from . import batch as _batch
from ._http import (
    MAX_ERROR_BODY,
    TRANSPORT_ERRORS,
    _IteratorBody,
    cause_of,
    http_exchange,
    read_bounded,
    translate,
)
from ._lifecycle import (
    CLOSE_TIMEOUT,
    DROPPABLE,
    END,
    FINISH,
    OUTPUT,
    PROGRESS,
    AttemptOutcome,
    Request,
    Telemetry,
    header_secrets,
    scrub_error,
)
from ._responses_stream import ResponseStream
from ._responses_wire import prepare_response_request
from ._tokens import choice_count, completion_token_bound, prompt_token_bound
from ._wire import (
    DONE,
    ChunkTemplate,
    CompletionAccumulator,
    build_request_body,
    decode_chunk_data,
    decode_event,
    is_text_delta,
    learn_template,
    parse_error_body,
)
from .batch import BatchResult, ChatRequest
from .errors import ConfigurationError, HolySheepError, _shown_url, error_class_for_status
from .models import ChatChunk, Completion, Message, Usage
from .pool import Admission, Limits, Pool, PoolStatistics, estimate_tokens
from .responses import Response
from .retry import RetryPolicy, parse_retry_after
from .sse import ServerSentEvent
from .timeouts import Timeouts

if TYPE_CHECKING:
    from .budget import Budget
    from .health import HealthConfig, HealthMonitor
    from .session import Session

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_EVENT_SIZE",
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
#: The largest server-sent event accepted by default: a delta may carry a base64 image, so far
#: more than a text token, but still bounded (``open_client(max_event_size=...)``).
DEFAULT_MAX_EVENT_SIZE: Final = 16 * 1024 * 1024
_USER_AGENT: Final = f"holysheep-trio/{__version__}"
#: The default bound on requests a batch runs at once (see Client._batch_in_flight).
_MAX_BATCH_IN_FLIGHT: Final = 100
#: The most of a health check's answer (the model list) that is read.
_MAX_PROBE_BODY: Final = 1024 * 1024
#: Responses remembered for budgeted continuations (``previous_response_id``).
_MAX_CHAINS: Final = 10_000


class _Secret:
    """Holds the API key; its repr never shows it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"


_NO_FIELDS: Final[Mapping[str, Any]] = MappingProxyType({})

#: Templates a stream may learn that never match (see _ChatDecoder.decode): chunks padded
#: differently each time (OpenAI's ``obfuscation``) would otherwise cost a learning per chunk.
_TEMPLATE_LEARNINGS: Final = 4


class _ChatDecoder:
    """Decodes the events of one chat-completions attempt for the request lifecycle."""

    __slots__ = ("_hits", "_learnings", "_template", "usage")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        # The stream's text deltas differ only in their content (_wire.ChunkTemplate).
        self._template: ChunkTemplate | None = None
        self._hits = 0
        self._learnings = _TEMPLATE_LEARNINGS

    def decode(self, event: ServerSentEvent) -> tuple[ChatChunk | None, int]:
        # One call per token: plain `message` events take the stream's chunk template, else
        # decode_chunk_data (the same result as decode_event, faster), and a chunk of one
        # choice without usage, nearly all of them, gets its flags without the general loop.
        item: ChatChunk | object | None
        if event.event == "message":
            data = event.data
            template = self._template
            item = None if template is None else template.match(data)
            if item is None:
                item = decode_chunk_data(data)
                if self._learnings and type(item) is ChatChunk:
                    self._learn(data, item)
            else:
                self._hits += 1
        else:
            item = decode_event(event)
        if item is None:
            return None, 0
        if item is DONE:
            return None, PROGRESS | END
        assert isinstance(item, ChatChunk)
        choices = item.choices
        if item.usage is None and len(choices) == 1:
            choice = choices[0]
            delta = choice.delta
            flags = (
                OUTPUT | PROGRESS
                if delta.content or delta.tool_calls or delta.refusal or delta.reasoning
                else 0
            )
            if choice.finish_reason is not None:
                flags |= FINISH | PROGRESS
            elif not flags and delta.role is None:
                flags = DROPPABLE
            return item, flags
        flags = OUTPUT | PROGRESS if item.has_output else 0
        if item.usage is not None:
            self.usage = item.usage
            flags |= PROGRESS
        role = False
        for choice in choices:
            if choice.finish_reason is not None:
                flags |= FINISH | PROGRESS
            if choice.delta.role is not None:
                role = True
        if not flags and not role:
            flags = DROPPABLE
        return item, flags

    def _learn(self, data: str, chunk: ChatChunk) -> None:
        if not is_text_delta(chunk):  # a first chunk with the role, reasoning, the finish...
            return
        learned = learn_template(data, chunk)
        if learned is None:  # a text delta that gives no template: one chance less
            self._learnings -= 1
            return
        if self._template is not None and not self._hits:
            self._learnings -= 1  # the last one never matched
        self._template = learned
        self._hits = 0


class ChatStream:
    """One streamed chat completion; use it with ``async with``, iterate it with ``async for``.

    Entering the block waits for admission by the client's limits (see ``docs/pool.md``), then
    sends the request and waits for the first token (retrying before it if the policy allows),
    so HTTP errors are raised by the ``async with`` line. Iterating yields
    :class:`~holysheep_trio.ChatChunk` values; afterwards :attr:`completion` holds the result.
    Leaving the block by any path closes the HTTP response before the exit returns.

    A cancel scope of yours around one ``async for`` step (or ``__anext__``) cancels only that
    read: with the default transport the stream stays usable and the next read continues where
    it stopped. (A user's ``http_client`` with another transport cannot resume its body; the next
    read raises :class:`~holysheep_trio.StreamInterruptedError` saying so.)

    Create it with :meth:`Client.stream_chat`.
    """

    __slots__ = ("_acc", "_fields", "_request")

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
        fields: Mapping[str, Any] | None = None,
        choices: int = 1,
    ) -> None:
        self._acc = CompletionAccumulator()
        self._fields: Mapping[str, Any] = fields or {}
        # Bound methods, not closures, below: a third of the size, thousands of streams over.
        self._request: Request[ChatChunk] = Request(
            client,
            model=model,
            new_exchange=http_exchange(
                client,
                path="/chat/completions",
                payload=body,
                extra_headers=extra_headers,
                timeouts=timeouts,
            ),
            max_tokens=max_tokens,
            timeouts=timeouts,
            extra_headers=extra_headers,
            estimated_tokens=estimated_tokens,
            estimated_prompt_tokens=estimated_prompt_tokens,
            new_decoder=_ChatDecoder,
            partial=self._completion,
            prompt_bound=self._prompt_bound,
            choices=choices,
            operation="chat",
            request=self._request_fields,
        )

    def _completion(self) -> Completion:
        return self.completion

    def _prompt_bound(self) -> int:
        return prompt_token_bound(self._fields)

    def _request_fields(self) -> Mapping[str, Any]:
        return self._fields

    def __repr__(self) -> str:
        request = self._request
        return (
            f"<ChatStream model={request.model!r} state={request.state}"
            f" attempts={request.attempts}>"
        )

    @property
    def model(self) -> str:
        """The requested model."""
        return self._request.model

    @property
    def completion(self) -> Completion:
        """The completion accumulated so far (final once the iteration ended)."""
        request = self._request
        return self._acc.completion(
            ttft=request.ttft,
            duration=request.duration,
            attempts=request.attempts,
            request_id=request.request_id,
        )

    async def __aenter__(self) -> ChatStream:
        await self._request.enter()
        # Attempts are over (see Request.enter): the messages are not held for the stream.
        self._fields = _NO_FIELDS
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return await self._request.exit(exc)

    def __aiter__(self) -> ChatStream:
        if self._request.state == "new":
            raise RuntimeError("use the stream inside `async with client.stream_chat(...)`")
        return self

    async def __anext__(self) -> ChatChunk:
        # The accumulator sees exactly what the caller received, so a partial completion
        # (after `break` or an interruption) matches the chunks that were delivered.
        request = self._request
        if request.closed_by_client:
            raise request.closed_error()
        ready = request.ready
        chunk = ready.pop() if ready else await request.next_slow()
        self._acc.add(chunk)
        return chunk


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
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        budget: Budget | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._budget = budget
        self._telemetry = telemetry
        #: Set by open_client while its health monitor runs.
        self._health: HealthMonitor | None = None
        # The pool's Retry-After pause never outlasts what the retry policy would wait: a
        # longer one is refused at once by the policy, so pausing others longer only stalls them.
        self._pool = Pool(
            Limits.unlimited() if limits is None else limits, max_pause=retry.max_retry_after
        )
        self._http = http_client
        self._owns_http = owns_http_client
        self._api_key = None if api_key is None else _Secret(api_key)
        self._base_urls = base_urls
        self._timeouts = timeouts
        self._retry = retry
        self._max_event_size = max_event_size
        self._streams: set[Request[Any]] = set()
        self._sessions: set[Session] = set()  # open WebSocket sessions (open_session)
        self._closed = False
        # Responses this client produced, newest last: their billed context (see _chain_tokens).
        self._chains: collections.OrderedDict[str, int] = collections.OrderedDict()
        secrets = [] if api_key is None else [api_key]
        secrets += header_secrets(http_client.headers)
        secrets += _auth_secrets(http_client.auth)
        for url in base_urls:
            password = httpx2.URL(url).password
            if password:
                secrets.append(password)
        self._secret_values = tuple(dict.fromkeys(secrets))

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        url = _shown_url(self._base_urls[0])
        return f"<Client {state} base_url={url!r} streams={len(self._streams)}>"

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
    def budget(self) -> Budget | None:
        """The budget every request reserves against (``open_client(budget=...)``), or None."""
        return self._budget

    @property
    def health(self) -> HealthMonitor | None:
        """The health monitor (``open_client(health=...)``), or None without one.

        Its ``state``, ``wait_healthy()``, ``subscribe()`` and ``reconnect()`` are described in
        ``docs/health.md``.
        """
        return self._health

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
        # Every choice is generated (and billed) up to the limit, and max_completion_tokens
        # wins over max_tokens, as the API decides.
        max_tokens = completion_token_bound(params)
        return ChatStream(
            self,
            model=model,
            body=body,
            max_tokens=max_tokens,
            choices=choice_count(params),
            timeouts=timeouts or self._timeouts,
            extra_headers=extra_headers,
            estimated_tokens=estimate_tokens(messages, max_tokens=max_tokens),
            estimated_prompt_tokens=estimate_tokens(messages, max_tokens=0),
            fields={"messages": messages, **params},
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

    # ---- the Responses API -----------------------------------------------------------------

    def stream_response(
        self,
        *,
        model: str,
        input: str | Iterable[Mapping[str, Any] | Message],
        instructions: str | None = None,
        previous_response_id: str | None = None,
        store: bool | None = None,
        tools: Iterable[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        max_output_tokens: int | None = None,
        timeouts: Timeouts | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> ResponseStream:
        """Stream a Responses API response (``POST /responses``). Use with ``async with``.

        Iterating the stream yields typed :class:`~holysheep_trio.ResponseEvent` values;
        ``stream.response`` is the accumulated :class:`~holysheep_trio.Response` (see
        ``docs/responses.md``). Deadlines, retries, fallback endpoints, the client's limits and
        statistics apply as for :meth:`stream_chat`.

        Args:
            model: The model name.
            input: A string (one user message) or input items: dicts in the API's shape
                (messages, ``function_call_output`` items, ...) or
                :class:`~holysheep_trio.Message` values with a plain role and content.
            instructions: The system (developer) message.
            previous_response_id: Continue a response the server stored.
            store: Whether the server keeps the response (the API's default is true).
            tools: Tool definitions (``{"type": "function", "name": ..., "parameters": ...}``).
            tool_choice: ``"auto"``, ``"required"``, ``"none"`` or a tool object.
            max_output_tokens: The limit of output tokens, reasoning included (also sizes the
                automatic total deadline and the pool's token reservation).
            timeouts: Deadlines for this request instead of the client's.
            extra_headers: Headers added to this request (e.g. ``X-Simulator-Fault``).
            **params: Other API parameters (``temperature``, ``reasoning``, ``text``, ...).

        Returns:
            A :class:`~holysheep_trio.ResponseStream`; entering it sends the request.

        Raises:
            TypeError: an argument or parameter cannot be sent (at the call).
            ValueError: ``max_output_tokens`` is below 1 (at the call).
        """
        request = prepare_response_request(
            model=model,
            input=input,
            instructions=instructions,
            previous_response_id=previous_response_id,
            store=store,
            tools=tools,
            tool_choice=tool_choice,
            max_output_tokens=max_output_tokens,
            params=params,
        )
        return ResponseStream(
            self,
            model=model,
            body=request.body,
            max_output_tokens=max_output_tokens,
            timeouts=timeouts or self._timeouts,
            extra_headers=extra_headers,
            estimated_tokens=request.estimated_tokens,
            estimated_prompt_tokens=request.estimated_prompt_tokens,
            fields=request.fields,
        )

    async def create_response(
        self,
        *,
        model: str,
        input: str | Iterable[Mapping[str, Any] | Message],
        instructions: str | None = None,
        previous_response_id: str | None = None,
        store: bool | None = None,
        tools: Iterable[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        max_output_tokens: int | None = None,
        timeouts: Timeouts | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> Response:
        """Run a Responses API request to its end and return the :class:`~holysheep_trio.Response`.

        Streamed under the hood, so deadlines, retries and errors are those of
        :meth:`stream_response`. Takes the same arguments. A ``response.incomplete`` is not an
        error: the response has status ``"incomplete"`` and ``incomplete_details``.
        """
        async with self.stream_response(
            model=model,
            input=input,
            instructions=instructions,
            previous_response_id=previous_response_id,
            store=store,
            tools=tools,
            tool_choice=tool_choice,
            max_output_tokens=max_output_tokens,
            timeouts=timeouts,
            extra_headers=extra_headers,
            **params,
        ) as stream:
            async for _ in stream:
                pass
        return stream.response

    def open_session(
        self,
        *,
        health: HealthConfig | None = None,
        max_age: float = 55 * 60,
        max_in_flight: int = 16,
        recover: bool = False,
        extra_headers: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[Session]:
        """Open a WebSocket session of the Responses API; use with ``async with``.

        One long-lived socket to ``{base_url}/responses`` (``ws``/``wss``; a fallback URL's
        while the primary fails, as for HTTP requests) carries many responses:
        ``session.stream_response(...)`` and ``session.create_response(...)`` take the
        arguments of :meth:`stream_response` plus ``stream_id`` and give the same events and
        :class:`~holysheep_trio.Response`. The block owns the session's tasks (a reader
        per connection, its writer, the heartbeat); leaving it, or :meth:`aclose`, closes the
        socket and makes open streams raise :class:`~holysheep_trio.ClientClosedError`. See
        ``docs/websocket.md``.

        Args:
            health: The heartbeat and reconnect rules (a
                :class:`~holysheep_trio.HealthConfig`). Default:
                ``HealthConfig(interval=20.0, timeout=5.0)``: a ping every 20 s, answered
                within 5 s; reconnects with the health module's backoff and jitter.
            max_age: Seconds after which new responses go to a fresh connection while those
                in flight finish on the old one (the API closes a connection after 60 minutes).
            max_in_flight: Responses sent at once per connection (the API's cap is 16);
                more wait, in order, in the pending queue.
            recover: After a reconnect, a continuation whose previous response the server no
                longer has is sent once more with its lane's full input history and no
                ``previous_response_id`` (the session then keeps that history per lane).
                Without it, such a request raises
                :class:`~holysheep_trio.PreviousResponseNotFoundError`.
            extra_headers: Headers added to the upgrade request (the API key, the client's
                User-Agent and headers go there already).

        Returns:
            An async context manager yielding the :class:`~holysheep_trio.Session`.

        Raises:
            APIStatusError: on entry, the server refused the upgrade (the subclass of its
                status, with ``body`` and ``retry_after``, as over HTTP).
            APIConnectionError: on entry, the connection failed (``APITimeoutError`` when it
                did not open within ``health.timeout``).
            TypeError: ``health`` or ``recover`` has the wrong type.
            ValueError: ``max_age`` or ``max_in_flight`` is out of range.
        """
        from .session import open_session

        return open_session(
            self,
            health=health,
            max_age=max_age,
            max_in_flight=max_in_flight,
            recover=recover,
            extra_headers=extra_headers,
        )

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
            stream.cancel_by_client()
        for session in list(self._sessions):
            session._close_by_client()
        # Shielded and bounded as one (STYLE rule 6): leaving open_client by a cancellation
        # must still close the monitor and every socket, and aclose() runs only once.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
            if self._health is not None:
                await self._health.aclose()
            if self._owns_http:
                await self._http.aclose()

    # ---- seams: admission, outcomes, health checks, headers, secrets --------------------

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

    async def _probe(self, url: str) -> None:
        """The health check: ``GET {url}/models`` answered with 200 (the seed's choice).

        Raises the client's typed errors: a status error (401/403 end a reconnect cycle at
        once), or a connection error. The monitor bounds it with ``HealthConfig.timeout``.
        """
        headers = self._request_headers()
        headers["Accept"] = "application/json"
        del headers["Content-Type"]
        request = self._http.build_request("GET", url + "/models", headers=headers)
        try:
            response = await self._http.send(request, stream=True, follow_redirects=False)
        except TRANSPORT_ERRORS as exc:
            raise scrub_error(translate(exc, connect_timeout=None), self._secrets()) from (
                cause_of(exc)
            )
        body = response.extensions.get("holysheep.body") or _IteratorBody(response)
        try:
            # Read the list to its end (bounded) so that the connection can be reused.
            data = await read_bounded(body, _MAX_PROBE_BODY)
        finally:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
                await body.aclose()
                await response.aclose()
        status = response.status_code
        if status != 200:
            message, error_type, code = parse_error_body(data)
            error = error_class_for_status(status)(
                f"health check: HTTP {status}: {message}",
                status=status,
                body=data.decode("utf-8", "replace")[:MAX_ERROR_BODY],
                error_type=error_type,
                code=code,
                retry_after=parse_retry_after(response.headers),
                headers=dict(response.headers.items()),
            )
            raise scrub_error(error, self._secrets())

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

    def _remember_chain(self, response_id: str, tokens: int) -> None:
        """A finished response's input plus output tokens: what continuing it is billed."""
        chains = self._chains
        chains[response_id] = tokens
        chains.move_to_end(response_id)
        while len(chains) > _MAX_CHAINS:
            chains.popitem(last=False)

    def _chain_tokens(self, previous_response_id: object) -> int:
        """The input tokens a continuation of ``previous_response_id`` is billed beyond its own.

        Asked only for a budget's reservation. The server bills the whole conversation as
        input, so an unknown previous response cannot be bounded: refused rather than
        under-reserved.

        Raises:
            ConfigurationError: the response was not produced by this client (or it was
                forgotten: the most recent 10,000 are kept).
        """
        if previous_response_id is None:
            return 0
        tokens = self._chains.get(str(previous_response_id))
        if tokens is None:
            raise ConfigurationError(
                f"a budgeted request continues response {previous_response_id!r}, which this"
                " client did not produce: the input the server bills for it cannot be bounded."
                " Send the conversation as `input` instead of previous_response_id."
            )
        return tokens

    def _secrets(self) -> tuple[str, ...]:
        """Every secret this client sends: scrubbed from error texts (see ``_tag``)."""
        return self._secret_values


def _auth_secrets(auth: object) -> list[str]:
    """What an httpx2 auth object would send, when it says (``BasicAuth``'s header)."""
    header = getattr(auth, "_auth_header", None)
    return header_secrets({"authorization": header}) if isinstance(header, str) else []


def _check_key(key: object) -> str:
    """The API key as it can be sent: surrounding whitespace (a key file's newline) stripped.

    Raises:
        ConfigurationError: the key is empty or has a character no HTTP header may carry
            (never shown in the message).
    """
    if not isinstance(key, str):
        raise ConfigurationError(f"the API key must be a str, got {type(key).__name__}")
    stripped = key.strip()
    if not stripped:
        raise ConfigurationError("the API key is empty")
    # RFC 9110 §11.4: a token68 credential is visible ASCII; a space, a control character or a
    # non-ASCII character inside a key is a copy-and-paste accident, and h11 would refuse it
    # with the value in its message.
    if not all("!" <= character <= "~" for character in stripped):
        raise ConfigurationError(
            "the API key contains a space, a control character or a non-ASCII character,"
            " which an HTTP header cannot carry (the key is not shown)"
        )
    return stripped


def _check_url(url: str) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigurationError(
            "base URLs must start with http:// or https://, got"
            f" {(_shown_url(url) if isinstance(url, str) else url)!r}"
        )
    try:
        parsed = httpx2.URL(url)
    except httpx2.InvalidURL as exc:
        raise ConfigurationError(f"bad base URL {_shown_url(url)!r}: {exc}") from None
    if not parsed.host:
        raise ConfigurationError(f"bad base URL {_shown_url(url)!r}: no host")
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
    max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
    budget: Budget | None = None,
    health: HealthConfig | None = None,
    telemetry: Telemetry | None = None,
) -> AsyncIterator[Client]:
    """Open a client; use with ``async with``. Leaving the block closes it.

    Args:
        api_key: The API key. Default: ``$HOLYSHEEP_API_KEY``. Surrounding whitespace (a key
            file's trailing newline, a CRLF ``.env``) is stripped. With an ``http_client`` that
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
        max_event_size: The largest server-sent event accepted, in bytes (default 16 MiB); a
            larger one fails the stream with :class:`~holysheep_trio.StreamProtocolError`.
        budget: A :class:`~holysheep_trio.Budget` (from :func:`~holysheep_trio.open_budget`):
            every request reserves its worst-case cost before it is sent and settles to the
            bill when it ends (see ``docs/budgets.md``). Not closed by the client.
        health: A :class:`~holysheep_trio.HealthConfig`: a monitor task probes
            ``GET {base_url}/models``, reconnects with backoff, fails over between the base
            URL and the fallback URLs, emits events and holds requests while the connection
            heals (see ``docs/health.md``). Without it nothing runs in the background.
        telemetry: An observer of every request, e.g. ``holysheep_trio.otel.Telemetry``
            (OpenTelemetry, see ``docs/observability.md``). Without it nothing is recorded.

    Yields:
        The :class:`Client`.

    Raises:
        ConfigurationError: no API key (without ``http_client``), a key that no HTTP header
            can carry, or a bad URL, before anything is opened. The key is never shown.
        TypeError: ``limits``, ``budget`` or ``health`` has the wrong type.
        ValueError: ``max_event_size`` is smaller than 1.
    """
    if limits is not None and not isinstance(limits, Limits):
        raise TypeError(f"limits must be a holysheep_trio.Limits, got {type(limits).__name__}")
    if budget is not None:
        from .budget import Budget

        if not isinstance(budget, Budget):
            raise TypeError(f"budget must be a holysheep_trio.Budget, got {type(budget).__name__}")
    if health is not None:
        from .health import HealthConfig

        if not isinstance(health, HealthConfig):
            raise TypeError(
                f"health must be a holysheep_trio.HealthConfig, got {type(health).__name__}"
            )
    if isinstance(max_event_size, bool) or not isinstance(max_event_size, int):
        raise TypeError("max_event_size must be an int")
    if max_event_size < 1:
        raise ValueError(f"max_event_size must be at least 1 byte, got {max_event_size}")
    if api_key is None and (http_client is None or not _has_own_auth(http_client)):
        api_key = os.environ.get("HOLYSHEEP_API_KEY") or None
    if api_key is None and http_client is None:
        raise ConfigurationError(
            "no API key: pass open_client(api_key=...) or set HOLYSHEEP_API_KEY"
        )
    if api_key is not None:
        api_key = _check_key(api_key)
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
        max_event_size=max_event_size,
        budget=budget,
        telemetry=telemetry,
    )
    # A telemetry that observes the pool and the budget (holysheep_trio.otel) is bound to
    # the client while it is open; the returned function unbinds it.
    unbind: Callable[[], None] | None = None
    # Limits(store="redis://...") is opened here, for the client's lifetime (it does nothing,
    # and opens no nursery, without a URL store).
    async with client._pool.open_store():
        try:
            bind = getattr(telemetry, "bind", None)
            if bind is not None:
                unbind = bind(client)
            if health is None:
                # Nothing runs in the background, so no nursery either.
                yield client
            else:
                from .health import open_health_monitor

                async with open_health_monitor(health, probe=client._probe, urls=urls) as monitor:
                    client._health = monitor
                    yield client
        finally:
            if unbind is not None:
                unbind()
            await client.aclose()
