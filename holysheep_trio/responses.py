# Immutable value types of the Responses API: the response object and its typed stream events.
"""Value types (attrs, frozen) of OpenAI's Responses API (``POST /v1/responses``).

- :class:`Response`: the response object, with typed output items (:class:`OutputMessage`,
  :class:`FunctionCall`, :class:`ReasoningItem`; other item types are kept as
  :class:`UnknownOutputItem`) and :class:`ResponseUsage`.
- :class:`ResponseEvent` and its subclasses: one class per streamed event type, built by
  :meth:`ResponseEvent.from_json`. An event type this library does not know becomes an
  :class:`UnknownResponseEvent`, never an error.

The shapes follow OpenAI's API reference ("Streaming events") and the official SDK's types
(``openai.types.responses``). Named constructors check the fields they read and raise
:class:`~holysheep_trio.StreamProtocolError` naming the offending field; unknown fields are
ignored, as servers add their own. Fields that OpenAI always sends but compatible servers omit
are optional here: ``sequence_number`` (LiteLLM, mlx servers), ``item_id``, ``content_index``
and ``summary_index`` (default 0), the ``name`` of ``response.function_call_arguments.done``
(Ollama). Accumulating events into a :class:`Response` is the job of
:class:`holysheep_trio._responses_wire.ResponseAccumulator`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final, TypeAlias

import attrs

from .errors import StreamProtocolError

__all__ = [
    "ContentPart",
    "ContentPartAdded",
    "ContentPartDone",
    "FunctionCall",
    "FunctionCallArgumentsDelta",
    "FunctionCallArgumentsDone",
    "IncompleteDetails",
    "InputTokensDetails",
    "OutputItem",
    "OutputItemAdded",
    "OutputItemDone",
    "OutputMessage",
    "OutputRefusal",
    "OutputText",
    "OutputTextDelta",
    "OutputTextDone",
    "OutputTokensDetails",
    "ReasoningItem",
    "ReasoningSummaryPartAdded",
    "ReasoningSummaryPartDone",
    "ReasoningSummaryTextDelta",
    "ReasoningSummaryTextDone",
    "ReasoningText",
    "ReasoningTextDelta",
    "ReasoningTextDone",
    "RefusalDelta",
    "RefusalDone",
    "Response",
    "ResponseCompleted",
    "ResponseCreated",
    "ResponseError",
    "ResponseErrorEvent",
    "ResponseEvent",
    "ResponseFailed",
    "ResponseInProgress",
    "ResponseIncomplete",
    "ResponseQueued",
    "ResponseUsage",
    "UnknownContentPart",
    "UnknownOutputItem",
    "UnknownResponseEvent",
]

_EMPTY_MAPPING: Final[Mapping[str, Any]] = MappingProxyType({})


def _bad(what: str) -> StreamProtocolError:
    # No `data`: the stream decoder attaches the offending bytes (as for chat chunks).
    return StreamProtocolError(f"unexpected response event shape: {what}")


def _str(payload: Mapping[str, Any], key: str, default: str = "") -> str:
    value = payload.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        return value
    raise _bad(f"{key!r} is not a string (got {type(value).__name__})")


def _opt_str(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _bad(f"{key!r} is not a string (got {type(value).__name__})")


def _req_str(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    if isinstance(value, str):
        return value
    if value is None:
        raise _bad(f"{key!r} is missing")
    raise _bad(f"{key!r} is not a string (got {type(value).__name__})")


def _opt_int(payload: Mapping[str, Any], key: str) -> int | None:
    value = payload.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _bad(f"{key!r} is not an integer (got {type(value).__name__})")


def _int(payload: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = _opt_int(payload, key)
    return default if value is None else value


def _index(payload: Mapping[str, Any], key: str) -> int:
    value = payload.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if value is None:
        raise _bad(f"{key!r} is missing")
    raise _bad(f"{key!r} is not an index (got {value!r})"[:200])


def _object(payload: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = payload.get(key)
    if value is None or isinstance(value, Mapping):
        return value
    raise _bad(f"{key!r} is not an object (got {type(value).__name__})")


def _list(payload: Mapping[str, Any], key: str) -> list[Any]:
    value = payload.get(key)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise _bad(f"{key!r} is not a list (got {type(value).__name__})")


def _frozen_mapping(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(payload))


# --------------------------------------------------------------------------- usage, details


@attrs.frozen(kw_only=True)
class InputTokensDetails:
    """Breakdown of the input tokens; None = not reported.

    Attributes:
        cached_tokens: Input tokens read from the prompt cache.
        cache_write_tokens: Input tokens written to the prompt cache.
    """

    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


@attrs.frozen(kw_only=True)
class OutputTokensDetails:
    """Breakdown of the output tokens; None = not reported.

    Attributes:
        reasoning_tokens: Tokens the model spent reasoning (included in ``output_tokens``).
    """

    reasoning_tokens: int | None = None


@attrs.frozen(kw_only=True)
class ResponseUsage:
    """Token counts of one response (the ``usage`` of the terminal event's response).

    Attributes:
        input_tokens: Tokens of the input (instructions, input items, chained history).
        output_tokens: Tokens generated, reasoning included.
        total_tokens: Their sum, as the server reported it.
        input_tokens_details: Cached input tokens, when reported.
        output_tokens_details: Reasoning tokens, when reported.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: InputTokensDetails | None = None
    output_tokens_details: OutputTokensDetails | None = None

    @classmethod
    def from_json(cls, payload: object) -> ResponseUsage:
        """Build from a ``usage`` object.

        Raises:
            StreamProtocolError: ``payload`` is not a usage object.
        """
        if not isinstance(payload, Mapping):
            raise _bad("usage is not an object")
        input_tokens = _int(payload, "input_tokens")
        output_tokens = _int(payload, "output_tokens")
        raw_input = _object(payload, "input_tokens_details")
        raw_output = _object(payload, "output_tokens_details")
        return cls(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=_int(payload, "total_tokens", input_tokens + output_tokens),
            input_tokens_details=None
            if raw_input is None
            else InputTokensDetails(
                cached_tokens=_opt_int(raw_input, "cached_tokens"),
                cache_write_tokens=_opt_int(raw_input, "cache_write_tokens"),
            ),
            output_tokens_details=None
            if raw_output is None
            else OutputTokensDetails(reasoning_tokens=_opt_int(raw_output, "reasoning_tokens")),
        )


@attrs.frozen(kw_only=True)
class IncompleteDetails:
    """Why a response is incomplete.

    Attributes:
        reason: ``"max_output_tokens"``, ``"content_filter"`` or another reason the server
            gives; None when it gives none.
    """

    reason: str | None = None


@attrs.frozen(kw_only=True)
class ResponseError:
    """The error of a failed response (``response.error``).

    Attributes:
        code: The error code (``"server_error"``, ``"rate_limit_exceeded"``, ...), if any.
        message: What went wrong.
    """

    code: str | None = None
    message: str = ""

    @classmethod
    def from_json(cls, payload: object) -> ResponseError:
        """Build from an ``error`` object (a numeric ``code`` is kept as its string).

        Raises:
            StreamProtocolError: ``payload`` is not an object.
        """
        if not isinstance(payload, Mapping):
            raise _bad("error is not an object")
        code = payload.get("code")
        message = payload.get("message")
        return cls(
            code=None if code is None else str(code),
            message=message if isinstance(message, str) else "",
        )


# --------------------------------------------------------------------------- content parts


@attrs.frozen(kw_only=True)
class OutputText:
    """Text written by the model (an ``output_text`` content part; annotations are not kept).

    Attributes:
        text: The text.
    """

    text: str = ""


@attrs.frozen(kw_only=True)
class OutputRefusal:
    """A refusal (a ``refusal`` content part).

    Attributes:
        refusal: The refusal text.
    """

    refusal: str = ""


@attrs.frozen(kw_only=True)
class ReasoningText:
    """Reasoning text (a ``reasoning_text`` content part: gpt-oss on vLLM, xAI, LM Studio).

    Attributes:
        text: The reasoning text.
    """

    text: str = ""


@attrs.frozen(kw_only=True)
class UnknownContentPart:
    """A content part of a type this library does not know; its ``type`` is kept as sent.

    Attributes:
        payload: The part's JSON object (read-only; not compared).
    """

    type: str
    payload: Mapping[str, Any] = attrs.field(
        default=_EMPTY_MAPPING, eq=False, hash=False, repr=False
    )


ContentPart: TypeAlias = OutputText | OutputRefusal | ReasoningText | UnknownContentPart


def content_part_from_json(payload: object) -> ContentPart:
    """Build a content part from its JSON object, by its ``type``.

    Raises:
        StreamProtocolError: the part has the wrong shape.
    """
    if not isinstance(payload, Mapping):
        raise _bad("content part is not an object")
    kind = _str(payload, "type")
    if kind == "output_text":
        return OutputText(text=_str(payload, "text"))
    if kind == "refusal":
        return OutputRefusal(refusal=_str(payload, "refusal"))
    if kind == "reasoning_text":
        return ReasoningText(text=_str(payload, "text"))
    return UnknownContentPart(type=kind, payload=_frozen_mapping(payload))


def part_text(part: ContentPart) -> str:
    """The text of a content part: its text, its refusal, or ``""`` for an unknown part."""
    if isinstance(part, OutputRefusal):
        return part.refusal
    if isinstance(part, UnknownContentPart):
        return ""
    return part.text


# --------------------------------------------------------------------------- output items


@attrs.frozen(kw_only=True)
class OutputMessage:
    """An assistant message (a ``message`` output item).

    Attributes:
        id: The item id (``msg_...``).
        role: ``"assistant"``.
        status: ``"in_progress"``, ``"completed"`` or ``"incomplete"``, when sent.
        content: Its content parts, in order.
    """

    id: str = ""
    role: str = "assistant"
    status: str | None = None
    content: tuple[ContentPart, ...] = ()

    @property
    def text(self) -> str:
        """The text of all ``output_text`` parts."""
        return "".join(part.text for part in self.content if isinstance(part, OutputText))

    @property
    def refusal(self) -> str | None:
        """The text of the ``refusal`` parts, or None when there are none."""
        refusals = [part.refusal for part in self.content if isinstance(part, OutputRefusal)]
        return "".join(refusals) if refusals else None


@attrs.frozen(kw_only=True)
class FunctionCall:
    """A call of one of your functions (a ``function_call`` output item).

    Answer it with an input item ``{"type": "function_call_output", "call_id": ...,
    "output": ...}`` in the next request.

    Attributes:
        id: The item id (``fc_...``), when sent.
        call_id: The id your answer must quote (``call_...``).
        name: The function name.
        arguments: The arguments, a complete JSON text as the model wrote it (not validated).
        status: ``"in_progress"``, ``"completed"`` or ``"incomplete"``, when sent.
    """

    id: str | None = None
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    status: str | None = None


@attrs.frozen(kw_only=True)
class ReasoningItem:
    """The model's reasoning (a ``reasoning`` output item).

    Attributes:
        id: The item id (``rs_...``).
        summary: The texts of its summary parts (OpenAI reasoning models, Ollama).
        content: The texts of its ``reasoning_text`` parts (gpt-oss on vLLM, xAI, LM Studio).
        encrypted_content: The opaque reasoning to send back with ``store=False``, if asked for.
        status: ``"in_progress"``, ``"completed"`` or ``"incomplete"``, when sent.
    """

    id: str = ""
    summary: tuple[str, ...] = ()
    content: tuple[str, ...] = ()
    encrypted_content: str | None = None
    status: str | None = None


@attrs.frozen(kw_only=True)
class UnknownOutputItem:
    """An output item of a type this library does not type (built-in tool calls, ...).

    Its ``type`` is kept as sent.

    Attributes:
        id: The item id, when sent.
        payload: The item's JSON object (read-only; not compared).
    """

    type: str
    id: str | None = None
    payload: Mapping[str, Any] = attrs.field(
        default=_EMPTY_MAPPING, eq=False, hash=False, repr=False
    )


OutputItem: TypeAlias = OutputMessage | FunctionCall | ReasoningItem | UnknownOutputItem


def _texts(payload: Mapping[str, Any], key: str) -> tuple[str, ...]:
    texts = []
    for entry in _list(payload, key):
        if not isinstance(entry, Mapping):
            raise _bad(f"an entry of {key!r} is not an object")
        texts.append(_str(entry, "text"))
    return tuple(texts)


def output_item_from_json(payload: object) -> OutputItem:
    """Build an output item from its JSON object, by its ``type``.

    Raises:
        StreamProtocolError: the item has the wrong shape.
    """
    if not isinstance(payload, Mapping):
        raise _bad("output item is not an object")
    kind = _str(payload, "type")
    if kind == "message":
        return OutputMessage(
            id=_str(payload, "id"),
            role=_str(payload, "role", "assistant"),
            status=_opt_str(payload, "status"),
            content=tuple(content_part_from_json(part) for part in _list(payload, "content")),
        )
    if kind == "function_call":
        return FunctionCall(
            id=_opt_str(payload, "id"),
            call_id=_str(payload, "call_id"),
            name=_str(payload, "name"),
            arguments=_str(payload, "arguments"),
            status=_opt_str(payload, "status"),
        )
    if kind == "reasoning":
        return ReasoningItem(
            id=_str(payload, "id"),
            summary=_texts(payload, "summary"),
            content=_texts(payload, "content"),
            encrypted_content=_opt_str(payload, "encrypted_content"),
            status=_opt_str(payload, "status"),
        )
    return UnknownOutputItem(
        type=kind, id=_opt_str(payload, "id"), payload=_frozen_mapping(payload)
    )


# --------------------------------------------------------------------------- the response


@attrs.frozen(kw_only=True)
class Response:
    """A response of the Responses API, as the server sent it or as accumulated from a stream.

    Attributes:
        id: The response id (``resp_...``).
        status: ``"completed"``, ``"incomplete"``, ``"failed"``, ``"in_progress"``,
            ``"queued"`` or ``"cancelled"``; None when no event said.
        model: The model that answered (as the server reports it).
        output: The output items, in ``output_index`` order.
        usage: Billed tokens, from the terminal event.
        incomplete_details: Why the response is incomplete (``status == "incomplete"``).
        error: Why the response failed (``status == "failed"``, or an in-band ``error``).
        previous_response_id: The response this one continues, if any.
        created_at: Unix time the response was created, when sent.
        ttft: Seconds from the start of the request (after admission, including retries) to
            the first output event; None if there was none. Filled by the client.
        duration: Seconds from the start of the request to the end of the stream (or to the
            failure, for a partial response). Filled by the client.
        attempts: How many HTTP attempts the request took (1 without retries).
        request_id: The server's ``x-request-id`` of the attempt that produced this output.
    """

    id: str = ""
    status: str | None = None
    model: str = ""
    output: tuple[OutputItem, ...] = ()
    usage: ResponseUsage | None = None
    incomplete_details: IncompleteDetails | None = None
    error: ResponseError | None = None
    previous_response_id: str | None = None
    created_at: float | None = None
    ttft: float | None = None
    duration: float = 0.0
    attempts: int = 1
    request_id: str | None = None

    @property
    def output_text(self) -> str:
        """The text of every ``output_text`` part of every message, concatenated."""
        return "".join(item.text for item in self.output if isinstance(item, OutputMessage))

    @property
    def function_calls(self) -> tuple[FunctionCall, ...]:
        """The function calls among the output items, in order."""
        return tuple(item for item in self.output if isinstance(item, FunctionCall))

    @classmethod
    def from_json(cls, payload: object) -> Response:
        """Build from a response object (the ``response`` of an event, or a whole body).

        Raises:
            StreamProtocolError: the object has the wrong shape.
        """
        if not isinstance(payload, Mapping):
            raise _bad("response is not an object")
        usage = payload.get("usage")
        error = payload.get("error")
        incomplete = _object(payload, "incomplete_details")
        created_at = payload.get("created_at")
        if created_at is not None and (
            isinstance(created_at, bool) or not isinstance(created_at, int | float)
        ):
            raise _bad(f"'created_at' is not a number (got {type(created_at).__name__})")
        return cls(
            id=_str(payload, "id"),
            status=_opt_str(payload, "status"),
            model=_str(payload, "model"),
            output=tuple(output_item_from_json(item) for item in _list(payload, "output")),
            usage=None if usage is None else ResponseUsage.from_json(usage),
            incomplete_details=None
            if incomplete is None
            else IncompleteDetails(reason=_opt_str(incomplete, "reason")),
            error=None if error is None else ResponseError.from_json(error),
            previous_response_id=_opt_str(payload, "previous_response_id"),
            created_at=None if created_at is None else float(created_at),
        )


# --------------------------------------------------------------------------- events


@attrs.frozen(kw_only=True)
class ResponseEvent:
    """Base class of the typed events of a Responses API stream.

    Every event has ``type``, the event type as sent (``"response.output_text.delta"``, ...;
    ``"response.done"`` for that alias of the terminal events), and a ``sequence_number``.
    Build events with :meth:`from_json`.

    Attributes:
        sequence_number: The event's position in the stream (from 0, increasing), or None
            when the server sends none.
    """

    #: True for the terminal events: completed, failed, incomplete (``response.done`` too).
    is_terminal: ClassVar[bool] = False

    type: str
    sequence_number: int | None = None

    @property
    def is_output(self) -> bool:
        """Whether the event carries model output: a non-empty text, refusal, arguments or
        reasoning delta, or the non-empty final text of one (servers that send no deltas).
        The first such event is the first token."""
        return False

    @property
    def usage(self) -> ResponseUsage | None:
        """The usage the event carries (terminal events), else None."""
        return None

    @classmethod
    def from_json(
        cls, payload: Mapping[str, Any], *, event_name: str | None = None
    ) -> ResponseEvent:
        """Build the typed event for a decoded ``data`` object, by its ``type``.

        Args:
            payload: The event's JSON object.
            event_name: The SSE ``event:`` name, used when the data has no ``type``.

        Returns:
            An instance of the subclass for the type; :class:`UnknownResponseEvent` for a type
            this library does not know (or none at all). ``response.done`` gives the terminal
            event that its response's ``status`` names (completed when it names none). Data
            without a ``type`` but with an ``error`` object (or vLLM's ``"object": "error"``)
            is a :class:`ResponseErrorEvent`.

        Raises:
            StreamProtocolError: a known event has the wrong shape.
        """
        kind = payload.get("type")
        if payload.get("object") == "error":
            kind = "error"  # vLLM's flat error object: its `type` is an exception name
        elif not isinstance(kind, str) or not kind:
            kind = "error" if payload.get("error") else event_name or ""
        build = _EVENT_TYPES.get(kind, UnknownResponseEvent._build)
        return build(payload, kind)


@attrs.frozen(kw_only=True)
class _ResponseStateEvent(ResponseEvent):
    """An event that carries the whole response object."""

    response: Response = attrs.field(factory=Response)

    @property
    def usage(self) -> ResponseUsage | None:
        return self.response.usage

    @classmethod
    def _build(cls, payload: Mapping[str, Any], kind: str) -> ResponseEvent:
        response = payload.get("response")
        return cls(
            type=kind,
            sequence_number=_opt_int(payload, "sequence_number"),
            response=Response() if response is None else Response.from_json(response),
        )


@attrs.frozen(kw_only=True)
class ResponseCreated(_ResponseStateEvent):
    """``response.created``: the response exists (status ``in_progress``).

    Attributes:
        response: The response so far (no output yet).
    """


@attrs.frozen(kw_only=True)
class ResponseInProgress(_ResponseStateEvent):
    """``response.in_progress``: generation started.

    Attributes:
        response: The response so far.
    """


@attrs.frozen(kw_only=True)
class ResponseQueued(_ResponseStateEvent):
    """``response.queued``: the response waits for capacity.

    Attributes:
        response: The response so far.
    """


@attrs.frozen(kw_only=True)
class ResponseCompleted(_ResponseStateEvent):
    """``response.completed`` (or ``response.done``): the response is complete. Terminal.

    Attributes:
        response: The complete response, usage included.
    """

    is_terminal: ClassVar[bool] = True


@attrs.frozen(kw_only=True)
class ResponseFailed(_ResponseStateEvent):
    """``response.failed``: the response failed; ``response.error`` says why. Terminal.

    Attributes:
        response: The failed response, with the output produced before the failure.
    """

    is_terminal: ClassVar[bool] = True


@attrs.frozen(kw_only=True)
class ResponseIncomplete(_ResponseStateEvent):
    """``response.incomplete``: the response stopped early (not an error). Terminal.

    ``response.incomplete_details.reason`` says why (e.g. ``"max_output_tokens"``).

    Attributes:
        response: The incomplete response.
    """

    is_terminal: ClassVar[bool] = True


def _build_done(payload: Mapping[str, Any], kind: str) -> ResponseEvent:
    # `response.done` (the Realtime API's name, sent by some Responses servers and relays)
    # ends the stream like the event its response's status names.
    response = payload.get("response")
    status = response.get("status") if isinstance(response, Mapping) else None
    if status == "failed":
        return ResponseFailed._build(payload, kind)
    if status == "incomplete":
        return ResponseIncomplete._build(payload, kind)
    return ResponseCompleted._build(payload, kind)


@attrs.frozen(kw_only=True)
class _OutputItemEvent(ResponseEvent):
    output_index: int
    item: OutputItem

    @classmethod
    def _build(cls, payload: Mapping[str, Any], kind: str) -> ResponseEvent:
        return cls(
            type=kind,
            sequence_number=_opt_int(payload, "sequence_number"),
            output_index=_index(payload, "output_index"),
            item=output_item_from_json(payload.get("item")),
        )


@attrs.frozen(kw_only=True)
class OutputItemAdded(_OutputItemEvent):
    """``response.output_item.added``: a new output item starts.

    Attributes:
        output_index: Its index in ``response.output``.
        item: The item as it starts (empty content, empty arguments).
    """


@attrs.frozen(kw_only=True)
class OutputItemDone(_OutputItemEvent):
    """``response.output_item.done``: an output item is complete.

    Attributes:
        output_index: Its index in ``response.output``.
        item: The complete item.
    """


@attrs.frozen(kw_only=True)
class _ContentPartEvent(ResponseEvent):
    item_id: str = ""
    output_index: int
    content_index: int = 0
    part: ContentPart

    @classmethod
    def _build(cls, payload: Mapping[str, Any], kind: str) -> ResponseEvent:
        return cls(
            type=kind,
            sequence_number=_opt_int(payload, "sequence_number"),
            item_id=_str(payload, "item_id"),
            output_index=_index(payload, "output_index"),
            content_index=_int(payload, "content_index"),
            part=content_part_from_json(payload.get("part")),
        )


@attrs.frozen(kw_only=True)
class ContentPartAdded(_ContentPartEvent):
    """``response.content_part.added``: a content part of a message (or reasoning) starts.

    vLLM's ``response.reasoning_part.added`` is read as this event too (its ``type`` is kept).

    Attributes:
        item_id: The id of the item the part belongs to.
        output_index: The item's index in ``response.output``.
        content_index: The part's index in the item's content.
        part: The part as it starts (empty text).
    """


@attrs.frozen(kw_only=True)
class ContentPartDone(_ContentPartEvent):
    """``response.content_part.done`` (or vLLM's ``response.reasoning_part.done``).

    Attributes:
        item_id: The id of the item the part belongs to.
        output_index: The item's index in ``response.output``.
        content_index: The part's index in the item's content.
        part: The complete part.
    """


@attrs.frozen(kw_only=True)
class _PartDelta(ResponseEvent):
    """A text delta of a content part: text, refusal or reasoning text."""

    delta: str
    item_id: str = ""
    output_index: int
    content_index: int = 0

    @property
    def is_output(self) -> bool:
        return bool(self.delta)

    @classmethod
    def _build(cls, payload: Mapping[str, Any], kind: str) -> ResponseEvent:
        return cls(
            type=kind,
            sequence_number=_opt_int(payload, "sequence_number"),
            delta=_req_str(payload, "delta"),
            item_id=_str(payload, "item_id"),
            output_index=_index(payload, "output_index"),
            content_index=_int(payload, "content_index"),
        )


@attrs.frozen(kw_only=True)
class OutputTextDelta(_PartDelta):
    """``response.output_text.delta``: a piece of the reply's text.

    Attributes:
        delta: The piece of text.
        item_id: The id of the message item.
        output_index: The message's index in ``response.output``.
        content_index: The part's index in the message's content.
    """


@attrs.frozen(kw_only=True)
class RefusalDelta(_PartDelta):
    """``response.refusal.delta``: a piece of a refusal.

    Attributes:
        delta: The piece of the refusal.
        item_id: The id of the message item.
        output_index: The message's index in ``response.output``.
        content_index: The part's index in the message's content.
    """


@attrs.frozen(kw_only=True)
class ReasoningTextDelta(_PartDelta):
    """``response.reasoning_text.delta``: a piece of reasoning text (vLLM, xAI, LM Studio).

    Attributes:
        delta: The piece of reasoning.
        item_id: The id of the reasoning item.
        output_index: The reasoning item's index in ``response.output``.
        content_index: The part's index in the reasoning item's content.
    """


@attrs.frozen(kw_only=True)
class _PartDone(ResponseEvent):
    """The final text of a content part."""

    _text_key: ClassVar[str] = "text"

    text: str
    item_id: str = ""
    output_index: int
    content_index: int = 0

    @property
    def is_output(self) -> bool:
        return bool(self.text)

    @classmethod
    def _build(cls, payload: Mapping[str, Any], kind: str) -> ResponseEvent:
        return cls(
            type=kind,
            sequence_number=_opt_int(payload, "sequence_number"),
            text=_req_str(payload, cls._text_key),
            item_id=_str(payload, "item_id"),
            output_index=_index(payload, "output_index"),
            content_index=_int(payload, "content_index"),
        )


@attrs.frozen(kw_only=True)
class OutputTextDone(_PartDone):
    """``response.output_text.done``: the complete text of a content part.

    Attributes:
        text: The complete text.
        item_id: The id of the message item.
        output_index: The message's index in ``response.output``.
        content_index: The part's index in the message's content.
    """


@attrs.frozen(kw_only=True)
class RefusalDone(_PartDone):
    """``response.refusal.done``: the complete refusal (read from the event's ``refusal``).

    Attributes:
        text: The complete refusal.
        item_id: The id of the message item.
        output_index: The message's index in ``response.output``.
        content_index: The part's index in the message's content.
    """

    _text_key: ClassVar[str] = "refusal"

    @property
    def refusal(self) -> str:
        """The complete refusal (the same as :attr:`text`)."""
        return self.text


@attrs.frozen(kw_only=True)
class ReasoningTextDone(_PartDone):
    """``response.reasoning_text.done``: the complete text of a reasoning part.

    LM Studio sends only this event, with the whole reasoning, and no deltas.

    Attributes:
        text: The complete reasoning text.
        item_id: The id of the reasoning item.
        output_index: The reasoning item's index in ``response.output``.
        content_index: The part's index in the reasoning item's content.
    """


@attrs.frozen(kw_only=True)
class FunctionCallArgumentsDelta(ResponseEvent):
    """``response.function_call_arguments.delta``: a piece of a function call's arguments.

    Attributes:
        delta: The piece of the arguments' JSON text.
        item_id: The id of the function-call item.
        output_index: The call's index in ``response.output``.
    """

    delta: str
    item_id: str = ""
    output_index: int

    @property
    def is_output(self) -> bool:
        return bool(self.delta)

    @classmethod
    def _build(cls, payload: Mapping[str, Any], kind: str) -> ResponseEvent:
        return cls(
            type=kind,
            sequence_number=_opt_int(payload, "sequence_number"),
            delta=_req_str(payload, "delta"),
            item_id=_str(payload, "item_id"),
            output_index=_index(payload, "output_index"),
        )


@attrs.frozen(kw_only=True)
class FunctionCallArgumentsDone(ResponseEvent):
    """``response.function_call_arguments.done``: a function call's complete arguments.

    Attributes:
        arguments: The complete arguments' JSON text.
        name: The function name (Ollama leaves it out: None then).
        item_id: The id of the function-call item.
        output_index: The call's index in ``response.output``.
    """

    arguments: str
    name: str | None = None
    item_id: str = ""
    output_index: int

    @property
    def is_output(self) -> bool:
        return bool(self.arguments)

    @classmethod
    def _build(cls, payload: Mapping[str, Any], kind: str) -> ResponseEvent:
        return cls(
            type=kind,
            sequence_number=_opt_int(payload, "sequence_number"),
            arguments=_req_str(payload, "arguments"),
            name=_opt_str(payload, "name"),
            item_id=_str(payload, "item_id"),
            output_index=_index(payload, "output_index"),
        )


@attrs.frozen(kw_only=True)
class _SummaryPartEvent(ResponseEvent):
    item_id: str = ""
    output_index: int
    summary_index: int = 0
    text: str = ""

    @classmethod
    def _build(cls, payload: Mapping[str, Any], kind: str) -> ResponseEvent:
        part = _object(payload, "part") or _EMPTY_MAPPING
        return cls(
            type=kind,
            sequence_number=_opt_int(payload, "sequence_number"),
            item_id=_str(payload, "item_id"),
            output_index=_index(payload, "output_index"),
            summary_index=_int(payload, "summary_index"),
            text=_str(part, "text"),
        )


@attrs.frozen(kw_only=True)
class ReasoningSummaryPartAdded(_SummaryPartEvent):
    """``response.reasoning_summary_part.added``: a summary part of a reasoning item starts.

    Attributes:
        item_id: The id of the reasoning item.
        output_index: The reasoning item's index in ``response.output``.
        summary_index: The part's index in the summary.
        text: The part's text as it starts (usually empty).
    """


@attrs.frozen(kw_only=True)
class ReasoningSummaryPartDone(_SummaryPartEvent):
    """``response.reasoning_summary_part.done``: a summary part is complete.

    Attributes:
        item_id: The id of the reasoning item.
        output_index: The reasoning item's index in ``response.output``.
        summary_index: The part's index in the summary.
        text: The part's complete text.
    """


@attrs.frozen(kw_only=True)
class ReasoningSummaryTextDelta(ResponseEvent):
    """``response.reasoning_summary_text.delta``: a piece of a reasoning summary.

    Attributes:
        delta: The piece of summary text.
        item_id: The id of the reasoning item.
        output_index: The reasoning item's index in ``response.output``.
        summary_index: The part's index in the summary.
    """

    delta: str
    item_id: str = ""
    output_index: int
    summary_index: int = 0

    @property
    def is_output(self) -> bool:
        return bool(self.delta)

    @classmethod
    def _build(cls, payload: Mapping[str, Any], kind: str) -> ResponseEvent:
        return cls(
            type=kind,
            sequence_number=_opt_int(payload, "sequence_number"),
            delta=_req_str(payload, "delta"),
            item_id=_str(payload, "item_id"),
            output_index=_index(payload, "output_index"),
            summary_index=_int(payload, "summary_index"),
        )


@attrs.frozen(kw_only=True)
class ReasoningSummaryTextDone(ResponseEvent):
    """``response.reasoning_summary_text.done``: the complete text of a summary part.

    Attributes:
        text: The complete summary text.
        item_id: The id of the reasoning item.
        output_index: The reasoning item's index in ``response.output``.
        summary_index: The part's index in the summary.
    """

    text: str
    item_id: str = ""
    output_index: int
    summary_index: int = 0

    @property
    def is_output(self) -> bool:
        return bool(self.text)

    @classmethod
    def _build(cls, payload: Mapping[str, Any], kind: str) -> ResponseEvent:
        return cls(
            type=kind,
            sequence_number=_opt_int(payload, "sequence_number"),
            text=_req_str(payload, "text"),
            item_id=_str(payload, "item_id"),
            output_index=_index(payload, "output_index"),
            summary_index=_int(payload, "summary_index"),
        )


@attrs.frozen(kw_only=True)
class ResponseErrorEvent(ResponseEvent):
    """An ``error`` event: the server reports an error in the stream.

    Read from OpenAI's flat shape (``code``, ``message``, ``param`` on the event), from the
    nested ``{"type": "error", "error": {...}}`` some servers send, and from a chat-style
    ``{"error": {...}}`` or vLLM's ``{"object": "error", ...}`` without a ``type``.

    Attributes:
        code: The error code, if any (a numeric code as its string).
        message: What went wrong.
        param: The request parameter concerned, if any.
        error_type: The error's ``type`` word of the nested shape, if any.
    """

    code: str | None = None
    message: str = ""
    param: str | None = None
    error_type: str | None = None

    @classmethod
    def _build(cls, payload: Mapping[str, Any], kind: str) -> ResponseEvent:
        nested = payload.get("error")
        fields: Mapping[str, Any] = nested if isinstance(nested, Mapping) else payload
        code = fields.get("code")
        message = fields.get("message")
        if not isinstance(message, str):
            message = nested if isinstance(nested, str) else "unknown error"
        param = fields.get("param")
        error_type = fields.get("type") if fields is nested else None
        if fields is not nested and payload.get("object") == "error":
            error_type = payload.get("type")  # vLLM's flat error: its exception name
        return cls(
            type="error",
            sequence_number=_opt_int(payload, "sequence_number"),
            code=None if code is None or isinstance(code, bool) else str(code),
            message=message,
            param=param if isinstance(param, str) else None,
            error_type=error_type if isinstance(error_type, str) else None,
        )


@attrs.frozen(kw_only=True)
class UnknownResponseEvent(ResponseEvent):
    """An event of a type this library does not type; delivered as is, never an error.

    Its ``type`` is kept as sent (``""`` when the data had none).

    Attributes:
        payload: The event's JSON object (read-only; not compared).
    """

    payload: Mapping[str, Any] = attrs.field(
        default=_EMPTY_MAPPING, eq=False, hash=False, repr=False
    )

    @classmethod
    def _build(cls, payload: Mapping[str, Any], kind: str) -> ResponseEvent:
        # Nothing of an unknown event is checked: a bad sequence number is dropped.
        sequence_number = payload.get("sequence_number")
        if isinstance(sequence_number, bool) or not isinstance(sequence_number, int):
            sequence_number = None
        return cls(type=kind, sequence_number=sequence_number, payload=_frozen_mapping(payload))


_Builder = Callable[[Mapping[str, Any], str], ResponseEvent]

_EVENT_TYPES: Final[dict[str, _Builder]] = {
    "response.created": ResponseCreated._build,
    "response.in_progress": ResponseInProgress._build,
    "response.queued": ResponseQueued._build,
    "response.completed": ResponseCompleted._build,
    "response.failed": ResponseFailed._build,
    "response.incomplete": ResponseIncomplete._build,
    "response.done": _build_done,
    "response.output_item.added": OutputItemAdded._build,
    "response.output_item.done": OutputItemDone._build,
    "response.content_part.added": ContentPartAdded._build,
    "response.content_part.done": ContentPartDone._build,
    "response.reasoning_part.added": ContentPartAdded._build,
    "response.reasoning_part.done": ContentPartDone._build,
    "response.output_text.delta": OutputTextDelta._build,
    "response.output_text.done": OutputTextDone._build,
    "response.refusal.delta": RefusalDelta._build,
    "response.refusal.done": RefusalDone._build,
    "response.reasoning_text.delta": ReasoningTextDelta._build,
    "response.reasoning_text.done": ReasoningTextDone._build,
    "response.function_call_arguments.delta": FunctionCallArgumentsDelta._build,
    "response.function_call_arguments.done": FunctionCallArgumentsDone._build,
    "response.reasoning_summary_part.added": ReasoningSummaryPartAdded._build,
    "response.reasoning_summary_part.done": ReasoningSummaryPartDone._build,
    "response.reasoning_summary_text.delta": ReasoningSummaryTextDelta._build,
    "response.reasoning_summary_text.done": ReasoningSummaryTextDone._build,
    "error": ResponseErrorEvent._build,
}
