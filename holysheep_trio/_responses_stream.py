# The Responses API stream: typed events over the shared request lifecycle, accumulated as read.
"""The Responses API stream: :class:`ResponseStream` and the decoder of one of its attempts.

A :class:`ResponseStream` is a thin shell over one request lifecycle
(``_lifecycle.Request``), exactly as :class:`~holysheep_trio.ChatStream` is: admission,
attempts, retries before the first output, fallback endpoints, deadlines, accounting and
``Client.aclose()`` are the lifecycle's, not copied here. What differs is the per-attempt
:class:`_ResponseDecoder`: it decodes one server-sent event into a typed
:class:`~holysheep_trio.ResponseEvent`, folds it into the attempt's
:class:`~holysheep_trio._responses_wire.ResponseAccumulator` at once, and tells the lifecycle
what the event means.

Accumulating at decode time (not when the caller receives the event, as ``ChatStream`` does)
makes the stream's order rules part of the attempt: a ``sequence_number`` that goes backwards,
an event for an ``output_index`` nobody announced, an in-band ``error`` or a
``response.failed`` fail the attempt where they happen, so the lifecycle handles them like any
other failure: retried before the first output when the policy says so, else raised (as
:class:`~holysheep_trio.StreamInterruptedError` after output began). A new attempt gets a new
decoder, so a retried request's response holds only what the attempt that answered said.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from ._http import http_exchange
from ._lifecycle import DROPPABLE, END, OUTPUT, PROGRESS, Request
from ._responses_wire import ResponseAccumulator, decode_response_event
from ._tokens import prompt_token_bound
from .errors import APIStreamError, StreamInterruptedError, StreamProtocolError
from .models import CompletionTokensDetails, PromptTokensDetails, Usage
from .responses import (
    FunctionCallArgumentsDelta,
    OutputTextDelta,
    ReasoningSummaryTextDelta,
    ReasoningTextDelta,
    RefusalDelta,
    Response,
    ResponseCompleted,
    ResponseEvent,
    ResponseIncomplete,
    ResponseInProgress,
    ResponseQueued,
    ResponseUsage,
    UnknownResponseEvent,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ._lifecycle import Exchange
    from .client import Client
    from .retry import RetryPolicy
    from .sse import ServerSentEvent
    from .timeouts import Timeouts

__all__ = ["ResponseStream", "chat_usage"]

#: What an event that carries no output means to the lifecycle, by its class; any other class
#: (created, item and part events, the final texts) is progress. Output events are
#: ``OUTPUT | PROGRESS`` whatever their class (see ``ResponseEvent.is_output``).
_FLAGS: Final[dict[type[ResponseEvent], int]] = {
    # The terminal events that are not errors (response.failed raises in the accumulator).
    ResponseCompleted: END | PROGRESS,
    ResponseIncomplete: END | PROGRESS,
    # Status snapshots a server may repeat while it waits (a queued background response) are
    # not progress, like keep-alives, and like unknown event types (`keepalive`, a built-in
    # tool's status) they may be dropped rather than held without bound before the first
    # output.
    ResponseInProgress: DROPPABLE,
    ResponseQueued: DROPPABLE,
    UnknownResponseEvent: DROPPABLE,
    # Empty deltas: nothing the caller could miss.
    OutputTextDelta: DROPPABLE,
    RefusalDelta: DROPPABLE,
    ReasoningTextDelta: DROPPABLE,
    ReasoningSummaryTextDelta: DROPPABLE,
    FunctionCallArgumentsDelta: DROPPABLE,
}
_OUTPUT: Final = OUTPUT | PROGRESS


def chat_usage(usage: ResponseUsage) -> Usage:
    """A Responses API usage in chat-completions terms (for the pool, prices and budgets).

    ``input_tokens`` are prompt tokens, ``output_tokens`` (reasoning included) completion
    tokens; cached and reasoning details are carried over.
    """
    input_details = usage.input_tokens_details
    output_details = usage.output_tokens_details
    return Usage(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=None
        if input_details is None
        else PromptTokensDetails(
            cached_tokens=input_details.cached_tokens,
            cache_write_tokens=input_details.cache_write_tokens,
        ),
        completion_tokens_details=None
        if output_details is None
        else CompletionTokensDetails(reasoning_tokens=output_details.reasoning_tokens),
    )


class _ResponseDecoder:
    """Decodes and accumulates the events of one Responses API attempt (sans-I/O).

    Attributes:
        accumulator: The attempt's accumulator: every event decoded so far is folded in.
        usage: The terminal event's usage in chat-completions terms, once it came.
    """

    __slots__ = ("accumulator", "usage")

    def __init__(self) -> None:
        self.accumulator = ResponseAccumulator()
        self.usage: Usage | None = None

    def decode(self, event: ServerSentEvent) -> tuple[ResponseEvent | None, int]:
        """Decode one event, fold it in, and return it with its lifecycle flags.

        Raises:
            StreamProtocolError: bad JSON, a bad event shape, or an event that breaks the
                stream's order (its ``data`` is the event's data).
            APIStreamError: an in-band ``error`` event or ``response.failed`` (folded in
                first, so the partial response shows the failure).
        """
        item = decode_response_event(event)
        if item is None:  # an empty data field, or a relay's `[DONE]` after the terminal event
            return None, 0
        return self.fold(item, event.data)

    def fold(self, item: ResponseEvent, data: str) -> tuple[ResponseEvent, int]:
        """Fold a decoded event in and return it with its lifecycle flags (``data``: its text,
        for the errors).

        Raises:
            StreamProtocolError: the event breaks the stream's order.
            APIStreamError: an in-band ``error`` event or ``response.failed``.
        """
        if item.is_terminal:
            # Before adding: response.failed raises, and its usage is billed all the same.
            usage = item.usage
            if usage is not None:
                self.usage = chat_usage(usage)
        try:
            self.accumulator.add(item)
        except StreamProtocolError as exc:
            raise StreamProtocolError(exc.message, data=data) from None
        if item.is_output:
            return item, _OUTPUT
        return item, _FLAGS.get(type(item), PROGRESS)


class ResponseStream:
    """One streamed Responses API response; use it with ``async with``, iterate with ``async for``.

    Entering the block waits for admission by the client's limits, sends the request and waits
    for the first output event (retrying before it if the policy allows), so HTTP errors are
    raised by the ``async with`` line. Iterating yields typed
    :class:`~holysheep_trio.ResponseEvent` values (:class:`~holysheep_trio.UnknownResponseEvent`
    for types this library does not know); :attr:`response` is the accumulated
    :class:`~holysheep_trio.Response` at any time, also after a failure. Leaving the block by
    any path closes the HTTP response before the exit returns.

    Deadlines, retries, fallback endpoints, pool admission, statistics and ``Client.aclose()``
    behave exactly as for :class:`~holysheep_trio.ChatStream`: both are shells over the same
    request lifecycle. The first token is the first output event (a non-empty text, refusal,
    function-call arguments or reasoning delta: ``event.is_output``).

    Create it with :meth:`Client.stream_response <holysheep_trio.Client.stream_response>`, or
    over a WebSocket with :meth:`Session.stream_response
    <holysheep_trio.Session.stream_response>` (then no attempt is ever repeated: a request the
    server may be running is not sent twice).
    """

    def __init__(
        self,
        client: Client,
        *,
        model: str,
        body: bytes = b"",
        max_output_tokens: int | None,
        timeouts: Timeouts,
        extra_headers: Mapping[str, str] | None = None,
        estimated_tokens: int = 0,
        estimated_prompt_tokens: int = 0,
        fields: Mapping[str, Any] | None = None,
        new_exchange: Callable[[str], Exchange] | None = None,
        new_decoder: Callable[[], _ResponseDecoder] = _ResponseDecoder,
        retry: RetryPolicy | None = None,
        base_urls: tuple[str, ...] | None = None,
        client_health: bool = True,
    ) -> None:
        # The exchange of an attempt: a POST of ``body`` by default; a WebSocket lane (whose
        # decoder reads frames already parsed) for a session.
        self._client = client
        self._decoder: _ResponseDecoder | None = None
        self._make_decoder = new_decoder
        request_fields: Mapping[str, Any] = fields or {}
        if new_exchange is None:
            new_exchange = http_exchange(
                client,
                path="/responses",
                payload=body,
                extra_headers=extra_headers,
                timeouts=timeouts,
            )
        self._request: Request[ResponseEvent] = Request(
            client,
            model=model,
            new_exchange=new_exchange,
            max_tokens=max_output_tokens,
            timeouts=timeouts,
            extra_headers=extra_headers,
            estimated_tokens=estimated_tokens,
            estimated_prompt_tokens=estimated_prompt_tokens,
            new_decoder=self._new_decoder,
            partial=lambda: self.response,
            prompt_bound=lambda: (
                prompt_token_bound(request_fields)
                + client._chain_tokens(request_fields.get("previous_response_id"))
            ),
            operation="responses",
            request=lambda: request_fields,
            retry=retry,
            base_urls=base_urls,
            client_health=client_health,
        )

    def _new_decoder(self) -> _ResponseDecoder:
        # The lifecycle makes one decoder per attempt, when the attempt starts: the latest one
        # is the current attempt's, whose accumulator is the response.
        decoder = self._decoder = self._make_decoder()
        return decoder

    def __repr__(self) -> str:
        request = self._request
        return (
            f"<ResponseStream model={request.model!r} state={request.state}"
            f" attempts={request.attempts}>"
        )

    @property
    def model(self) -> str:
        """The requested model."""
        return self._request.model

    @property
    def response(self) -> Response:
        """The response accumulated so far (final once the iteration ended).

        It holds every event the client has read, which may be a few more than the loop has
        received yet (events arrive in batches). After a failure it is the partial response:
        status ``"failed"`` and its ``error`` for an in-band error or ``response.failed``, else
        the status of the last snapshot with the output streamed so far. ``ttft``,
        ``duration``, ``attempts`` and ``request_id`` are the client's measurements.
        """
        request = self._request
        decoder = self._decoder
        accumulator = ResponseAccumulator() if decoder is None else decoder.accumulator
        return accumulator.response(
            ttft=request.ttft,
            duration=request.duration,
            attempts=request.attempts,
            request_id=request.request_id,
        )

    async def __aenter__(self) -> ResponseStream:
        try:
            await self._request.enter()
        except APIStreamError as error:
            error.partial = self.response
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            return await self._request.exit(exc)
        finally:
            # A later request may continue this response (previous_response_id): the server
            # bills this response's input and output again as that request's input.
            response = self.response
            usage = response.usage
            if response.id and usage is not None:
                self._client._remember_chain(response.id, usage.input_tokens + usage.output_tokens)

    def __aiter__(self) -> ResponseStream:
        if self._request.state == "new":
            raise RuntimeError("use the stream inside `async with client.stream_response(...)`")
        return self

    async def __anext__(self) -> ResponseEvent:
        request = self._request
        if request.closed_by_client:
            raise request.closed_error()
        ready = request.ready
        if ready:
            return ready.pop()
        try:
            return await request.next_slow()
        except StreamInterruptedError as error:
            cause = error.__cause__
            if isinstance(cause, APIStreamError):
                cause.partial = error.partial
            raise
