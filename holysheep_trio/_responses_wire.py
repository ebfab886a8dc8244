# The OpenAI Responses API wire format, free of I/O: request bodies, event decoding, results.
"""Responses API wire format (transport-independent, sans-I/O).

- :func:`build_response_request_body`: the JSON body of a streaming ``POST /responses``.
- :func:`decode_response_event` / :func:`decode_response_data`: one server-sent event -> a
  typed :class:`~holysheep_trio.ResponseEvent`, or None (nothing to deliver); bad JSON or a bad
  shape raises :class:`~holysheep_trio.StreamProtocolError`. Unknown event types are delivered
  as :class:`~holysheep_trio.UnknownResponseEvent`.
- :class:`ResponseAccumulator`: events -> :class:`~holysheep_trio.Response`, checking the
  stream's order; in-band errors and ``response.failed`` raise
  :class:`~holysheep_trio.APIStreamError` after being folded in.
- :func:`estimate_input_messages`: the input as chat-like messages, for token estimates.
- :func:`prepare_response_request`: all of the above that a request needs before it is sent
  (over HTTP or a WebSocket session alike).

Nothing here knows about HTTP or sockets, so the WebSocket mode can reuse all of it.

Accumulation rules (see ``docs/responses.md``):

1. Events are folded by ``output_index`` (the item), then ``content_index`` (a content part of
   a message, or a reasoning-text part) or ``summary_index`` (a reasoning summary part).
2. An item exists once ``response.output_item.added`` named its ``output_index``; any other
   event for an unknown ``output_index`` is a :class:`~holysheep_trio.StreamProtocolError`,
   and so is a second ``added`` for the same index. Parts are created by their first event
   (``content_part.added`` is optional: Ollama sends none for reasoning summaries).
3. A part's text is its ``*.done`` text when one came, else its concatenated deltas (else the
   text the part or item started with). An item's final form is its
   ``response.output_item.done`` item when one came, else what the events built.
4. The terminal event's ``response`` is authoritative: its ``output`` becomes the response's
   output, unless it has none (some servers leave it empty), then the streamed items are used.
5. Where both a streamed form and a final form exist, they must agree: deltas vs ``*.done``,
   streamed items vs ``output_item.done``, and the stream vs the terminal response.
   Disagreements never raise; :meth:`ResponseAccumulator.mismatches` lists them (the final
   form wins, by rule 3 and 4).
6. ``sequence_number`` never goes backwards (equal numbers are tolerated: some relays repeat
   a default); events without one are not checked. An event after the terminal event is a
   :class:`~holysheep_trio.StreamProtocolError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._tokens import estimate_tokens
from ._wire import status_for_error, stream_error_from_json
from .errors import APIStreamError, StreamProtocolError
from .models import Message
from .responses import (
    ContentPart,
    ContentPartAdded,
    ContentPartDone,
    FunctionCall,
    FunctionCallArgumentsDelta,
    FunctionCallArgumentsDone,
    OutputItem,
    OutputItemAdded,
    OutputItemDone,
    OutputMessage,
    OutputRefusal,
    OutputText,
    OutputTextDelta,
    OutputTextDone,
    ReasoningItem,
    ReasoningSummaryPartAdded,
    ReasoningSummaryPartDone,
    ReasoningSummaryTextDelta,
    ReasoningSummaryTextDone,
    ReasoningText,
    ReasoningTextDelta,
    ReasoningTextDone,
    RefusalDelta,
    RefusalDone,
    Response,
    ResponseCompleted,
    ResponseCreated,
    ResponseError,
    ResponseErrorEvent,
    ResponseEvent,
    ResponseFailed,
    ResponseIncomplete,
    ResponseInProgress,
    ResponseQueued,
    ResponseUsage,
    UnknownContentPart,
    part_text,
)

if TYPE_CHECKING:
    from .sse import ServerSentEvent

__all__ = [
    "PreparedResponseRequest",
    "ResponseAccumulator",
    "build_response_request_body",
    "decode_response_data",
    "decode_response_event",
    "estimate_input_messages",
    "prepare_response_request",
]

# Named arguments of the builder, and what the client sets itself: never accepted in `params`.
_RESERVED: Final = frozenset(
    {
        "model",
        "input",
        "stream",
        "instructions",
        "previous_response_id",
        "store",
        "tools",
        "tool_choice",
        "max_output_tokens",
    }
)


def _input_item(item: object) -> dict[str, Any]:
    if isinstance(item, Message):
        if item.tool_calls or item.tool_call_id is not None:
            raise TypeError(
                "a tool-call message has no Responses API equivalent: send "
                "{'type': 'function_call_output', 'call_id': ..., 'output': ...} items instead"
            )
        return {"role": item.role, "content": item.content}
    if isinstance(item, Mapping):
        if not isinstance(item.get("type"), str) and not isinstance(item.get("role"), str):
            raise TypeError("each input item needs a string 'type' or 'role'")
        return dict(item)
    raise TypeError(f"an input item must be a dict or holysheep_trio.Message, not {type(item)!r}")


def _check_optional(name: str, value: object, types: type | tuple[type, ...]) -> None:
    if value is not None and not isinstance(value, types):
        raise TypeError(f"{name} must be {getattr(types, '__name__', types)} or None")


def build_response_request_body(
    *,
    model: str,
    input: str | Iterable[Mapping[str, Any] | Message],
    instructions: str | None = None,
    previous_response_id: str | None = None,
    store: bool | None = None,
    tools: Iterable[Mapping[str, Any]] | None = None,
    tool_choice: str | Mapping[str, Any] | None = None,
    max_output_tokens: int | None = None,
    params: Mapping[str, Any] | None = None,
) -> bytes:
    """The JSON body of a streaming Responses API request (``"stream": true``).

    Args:
        model: The model name.
        input: A string (one user message) or input items: dicts passed through (messages
            ``{"role": ..., "content": ...}``, ``function_call_output`` items, ...) or
            :class:`~holysheep_trio.Message` values with a plain role and content.
        instructions: The system (developer) message.
        previous_response_id: Continue a stored response.
        store: Whether the server keeps the response (the API's default is true).
        tools: Tool definitions (``{"type": "function", "name": ..., "parameters": ...}``).
        tool_choice: ``"auto"``, ``"required"``, ``"none"`` or a tool object.
        max_output_tokens: The limit of output tokens, reasoning included.
        params: Other API parameters (``temperature``, ``reasoning``, ``text``, ...); None
            values are left out.

    Raises:
        TypeError: an argument has the wrong type, a parameter in ``params`` is reserved (one
            of the named arguments, or ``stream``), or a value is not JSON-serializable
            (NaN and infinities included).
        ValueError: ``max_output_tokens`` is below 1.
    """
    if not isinstance(model, str) or not model:
        raise TypeError("model must be a non-empty string")
    if isinstance(input, str):
        input_json: str | list[dict[str, Any]] = input
    elif isinstance(input, bytes | Mapping) or not isinstance(input, Iterable):
        raise TypeError("input must be a string or a list of input items")
    else:
        input_json = [_input_item(item) for item in input]
    _check_optional("instructions", instructions, str)
    _check_optional("previous_response_id", previous_response_id, str)
    _check_optional("store", store, bool)
    _check_optional("tool_choice", tool_choice, (str, Mapping))
    if max_output_tokens is not None:
        if isinstance(max_output_tokens, bool) or not isinstance(max_output_tokens, int):
            raise TypeError("max_output_tokens must be an integer or None")
        if max_output_tokens < 1:
            raise ValueError("max_output_tokens must be at least 1")
    body: dict[str, Any] = {"model": model, "input": input_json}
    if tools is not None:
        if isinstance(tools, str | bytes | Mapping) or not isinstance(tools, Iterable):
            raise TypeError("tools must be a list of tool objects")
        tool_list = list(tools)
        if not all(isinstance(tool, Mapping) for tool in tool_list):
            raise TypeError("each tool must be a dict")
        body["tools"] = [dict(tool) for tool in tool_list]
    for key, value in (
        ("instructions", instructions),
        ("previous_response_id", previous_response_id),
        ("store", store),
        ("tool_choice", tool_choice),
        ("max_output_tokens", max_output_tokens),
    ):
        if value is not None:
            body[key] = value
    for key, value in (params or {}).items():
        if key in _RESERVED:
            raise TypeError(f"{key!r} cannot be passed as an extra parameter")
        if value is not None:
            body[key] = value
    body["stream"] = True
    try:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"request parameters are not JSON-serializable: {exc}") from None
    return text.encode("utf-8")


def estimate_input_messages(
    input: str | Iterable[Mapping[str, Any] | Message],
    *,
    instructions: str | None = None,
) -> list[dict[str, Any]]:
    """The input as chat-like ``{"content": ...}`` messages, for a token estimate.

    Feed the result to :func:`holysheep_trio.pool.estimate_tokens` (with
    ``max_tokens=max_output_tokens``). Messages keep their content; function calls count their
    arguments, function outputs their output, reasoning items their summary; other items
    count as an empty message.
    """
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(input, str):
        messages.append({"role": "user", "content": input})
        return messages
    items: Iterable[object] = input  # checked at run time: anything may come in
    for item in items:
        if isinstance(item, Message):
            messages.append({"content": item.content})
            continue
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        if "content" in item:
            content = item.get("content")
        elif kind == "function_call":
            content = item.get("arguments")
        elif kind == "function_call_output":
            content = item.get("output")
        elif kind == "reasoning":
            content = item.get("summary")
        else:
            content = None
        messages.append({"content": content if isinstance(content, str | list) else ""})
    return messages


@attrs.frozen
class PreparedResponseRequest:
    """A Responses API request ready to be sent (see :func:`prepare_response_request`).

    Attributes:
        body: The JSON body of the streaming ``POST /responses``.
        estimated_tokens: The pool's token reservation (input estimate plus the output bound).
        estimated_prompt_tokens: The input estimate alone.
        fields: The request's fields, for the budget's worst case.
    """

    body: bytes
    estimated_tokens: int
    estimated_prompt_tokens: int
    fields: Mapping[str, Any]


def prepare_response_request(
    *,
    model: str,
    input: str | Iterable[Mapping[str, Any] | Message],
    instructions: str | None,
    previous_response_id: str | None,
    store: bool | None,
    tools: Iterable[Mapping[str, Any]] | None,
    tool_choice: str | Mapping[str, Any] | None,
    max_output_tokens: int | None,
    params: Mapping[str, Any],
) -> PreparedResponseRequest:
    """The body, token estimates and budget fields of one Responses API request.

    Raises:
        TypeError: an argument or parameter cannot be sent.
        ValueError: ``max_output_tokens`` is below 1.
    """
    if not isinstance(input, str | bytes | Mapping | Sequence):
        input = list(input)  # read three times below: the body, the estimate, the fields
    body = build_response_request_body(
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
    messages = estimate_input_messages(input, instructions=instructions)
    return PreparedResponseRequest(
        body=body,
        estimated_tokens=estimate_tokens(messages, max_tokens=max_output_tokens),
        estimated_prompt_tokens=estimate_tokens(messages, max_tokens=0),
        fields={
            "input": input,
            "previous_response_id": previous_response_id,
            "instructions": instructions,
            "tools": tools,
            "tool_choice": tool_choice,
            "max_output_tokens": max_output_tokens,
            **params,
        },
    )


def decode_response_data(data: str, *, event_name: str | None = None) -> ResponseEvent | None:
    """Decode the data of one event of a Responses API stream.

    Returns:
        None for an empty data field and for ``[DONE]`` (relays append the chat stream's end
        marker; the Responses stream ends with its terminal event), else the typed event.

    Raises:
        StreamProtocolError: the data is not JSON, not an object, or a known event has the
            wrong shape; its ``data`` is the event's data (UTF-8, truncated).
    """
    if not data or data == "[DONE]":
        return None
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        raise StreamProtocolError("invalid JSON in a stream event", data=data) from None
    if not isinstance(payload, dict):
        raise StreamProtocolError("a stream event is not a JSON object", data=data)
    try:
        return ResponseEvent.from_json(payload, event_name=event_name)
    except StreamProtocolError as exc:
        raise StreamProtocolError(exc.message, data=data) from None


def decode_response_event(event: ServerSentEvent) -> ResponseEvent | None:
    """Decode one server-sent event of a Responses API stream.

    The data's ``type`` names the event; the SSE ``event:`` name is used only when the data
    has none.

    Raises:
        StreamProtocolError: bad JSON or a bad event shape.
    """
    name = event.event
    return decode_response_data(
        event.data, event_name=None if not name or name == "message" else name
    )


def error_for_failed_response(response: Response) -> APIStreamError:
    """The :class:`~holysheep_trio.APIStreamError` for a ``response.failed`` event.

    Typed like an in-band error by its ``error.code`` (``server_error`` -> 500,
    ``rate_limit_exceeded`` -> 429, ...).
    """
    error = response.error or ResponseError(message="no reason given")
    return APIStreamError(
        f"the response failed: {error.message}",
        status=status_for_error(error.code, None),
        code=error.code,
    )


def error_for_error_event(event: ResponseErrorEvent) -> APIStreamError:
    """The :class:`~holysheep_trio.APIStreamError` for an in-band ``error`` event."""
    return stream_error_from_json(
        {
            "error": {
                "code": event.code,
                "message": event.message,
                "param": event.param,
                "type": event.error_type,
            }
        }
    )


# --------------------------------------------------------------------------- accumulation


class _Part:
    """One text part being streamed: a content part or a summary part."""

    __slots__ = ("deltas", "done", "kind", "seed")

    def __init__(self, kind: str, seed: str = "") -> None:
        self.kind = kind  # "output_text", "refusal", "reasoning_text", "summary_text", other
        self.seed = seed  # the text the part started with (added events)
        self.deltas: list[str] = []
        self.done: str | None = None  # the final text (*.done, content_part.done)

    @property
    def streamed(self) -> str | None:
        """What the stream said of the text, or None when it said nothing."""
        if self.done is not None:
            return self.done
        if self.deltas:
            return "".join(self.deltas)
        return None

    @property
    def text(self) -> str:
        streamed = self.streamed
        return self.seed if streamed is None else streamed


class _Item:
    """One output item being streamed."""

    __slots__ = ("added", "arguments", "arguments_done", "done", "name", "parts", "summary")

    def __init__(self, added: OutputItem) -> None:
        self.added = added
        self.done: OutputItem | None = None
        self.parts: dict[int, _Part] = {}
        self.summary: dict[int, _Part] = {}
        self.arguments: list[str] = []
        self.arguments_done: str | None = None
        self.name: str | None = None
        if isinstance(added, OutputMessage):
            for index, part in enumerate(added.content):
                self.parts[index] = _Part(_part_kind(part), part_text(part))
        elif isinstance(added, ReasoningItem):
            for index, text in enumerate(added.summary):
                self.summary[index] = _Part("summary_text", text)
            for index, text in enumerate(added.content):
                self.parts[index] = _Part("reasoning_text", text)

    @property
    def kind(self) -> str:
        return _item_kind(self.added)

    def streamed_arguments(self) -> str | None:
        if self.arguments_done is not None:
            return self.arguments_done
        if self.arguments:
            return "".join(self.arguments)
        return None

    def built(self) -> OutputItem:
        """The item as the events built it (ignoring ``output_item.done``)."""
        added = self.added
        if isinstance(added, OutputMessage):
            return attrs.evolve(
                added,
                content=tuple(
                    _make_part(part.kind, part.text) for _, part in sorted(self.parts.items())
                ),
            )
        if isinstance(added, FunctionCall):
            arguments = self.streamed_arguments()
            return attrs.evolve(
                added,
                arguments=added.arguments if arguments is None else arguments,
                name=self.name or added.name,
            )
        if isinstance(added, ReasoningItem):
            return attrs.evolve(
                added,
                summary=tuple(part.text for _, part in sorted(self.summary.items())),
                content=tuple(
                    part.text
                    for _, part in sorted(self.parts.items())
                    if part.kind == "reasoning_text"
                ),
            )
        return added

    def final(self) -> OutputItem:
        return self.done if self.done is not None else self.built()

    def streamed_texts(self) -> dict[str, str]:
        """What the events said of the item's texts, keyed like :func:`_final_texts`."""
        texts: dict[str, str] = {}
        for index, part in self.parts.items():
            streamed = part.streamed
            if streamed is not None:
                texts[f"content[{index}]"] = streamed
        for index, part in self.summary.items():
            streamed = part.streamed
            if streamed is not None:
                texts[f"summary[{index}]"] = streamed
        arguments = self.streamed_arguments()
        if arguments is not None:
            texts["arguments"] = arguments
        if self.name:
            texts["name"] = self.name
        return texts


def _part_kind(part: ContentPart) -> str:
    if isinstance(part, OutputText):
        return "output_text"
    if isinstance(part, OutputRefusal):
        return "refusal"
    if isinstance(part, ReasoningText):
        return "reasoning_text"
    return part.type


def _make_part(kind: str, text: str) -> ContentPart:
    if kind == "output_text":
        return OutputText(text=text)
    if kind == "refusal":
        return OutputRefusal(refusal=text)
    if kind == "reasoning_text":
        return ReasoningText(text=text)
    return UnknownContentPart(type=kind)


def _item_kind(item: OutputItem) -> str:
    if isinstance(item, OutputMessage):
        return "message"
    if isinstance(item, FunctionCall):
        return "function_call"
    if isinstance(item, ReasoningItem):
        return "reasoning"
    return item.type


def _item_id(item: OutputItem) -> str | None:
    return item.id or None


def _final_texts(item: OutputItem) -> dict[str, str]:
    """The texts of a final item, keyed as :meth:`_Item.streamed_texts` keys them."""
    texts: dict[str, str] = {}
    if isinstance(item, OutputMessage):
        for index, part in enumerate(item.content):
            texts[f"content[{index}]"] = part_text(part)
    elif isinstance(item, FunctionCall):
        texts["arguments"] = item.arguments
        texts["name"] = item.name
    elif isinstance(item, ReasoningItem):
        for index, text in enumerate(item.summary):
            texts[f"summary[{index}]"] = text
        for index, text in enumerate(item.content):
            texts[f"content[{index}]"] = text
    return texts


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


class ResponseAccumulator:
    """Folds the events of one Responses API stream into a :class:`~holysheep_trio.Response`.

    Feed every decoded event to :meth:`add`, up to and including the terminal event (stop
    there: :attr:`done`). Read :meth:`response` at any time, also after :meth:`add` raised:
    it is the partial response then. The rules are in the module docstring and in
    ``docs/responses.md``.
    """

    def __init__(self) -> None:
        self._items: dict[int, _Item] = {}
        self._snapshot: Response | None = None  # from created / in_progress / queued
        self._terminal: ResponseEvent | None = None
        self._error: ResponseErrorEvent | None = None
        self._mismatches: list[str] = []
        self._last_sequence: int | None = None
        self.events = 0

    @property
    def done(self) -> bool:
        """Whether the terminal event (or an in-band error) was added."""
        return self._terminal is not None or self._error is not None

    @property
    def terminal(self) -> ResponseEvent | None:
        """The terminal event, once added."""
        return self._terminal

    @property
    def usage(self) -> ResponseUsage | None:
        """The usage of the terminal event (or of the latest response snapshot)."""
        if self._terminal is not None and self._terminal.usage is not None:
            return self._terminal.usage
        return None if self._snapshot is None else self._snapshot.usage

    def add(self, event: ResponseEvent) -> None:
        """Fold one event in.

        Raises:
            StreamProtocolError: the event breaks the stream's order: its ``sequence_number``
                goes backwards, it names an ``output_index`` no ``output_item.added`` announced
                (or announces one twice), it puts arguments on an item that is no function
                call (or text on one that is), or it follows the terminal event.
            APIStreamError: the event is an in-band ``error`` or ``response.failed`` (folded
                in first, so :meth:`response` shows the failure).
        """
        if self.done:
            raise StreamProtocolError(
                f"the server sent {event.type!r} after the end of the response"
            )
        sequence = event.sequence_number
        if sequence is not None:
            last = self._last_sequence
            if last is not None and sequence < last:
                raise StreamProtocolError(
                    f"sequence_number went backwards: {sequence} after {last} ({event.type!r})"
                )
            self._last_sequence = sequence
        self.events += 1
        if isinstance(event, OutputTextDelta | RefusalDelta | ReasoningTextDelta):
            self._part(event.output_index, event.content_index, event).deltas.append(event.delta)
        elif isinstance(event, FunctionCallArgumentsDelta):
            self._call(event.output_index, event).arguments.append(event.delta)
        elif isinstance(event, ReasoningSummaryTextDelta):
            self._summary(event.output_index, event.summary_index).deltas.append(event.delta)
        elif isinstance(event, OutputTextDone | RefusalDone | ReasoningTextDone):
            part = self._part(event.output_index, event.content_index, event)
            self._finish(part, event.text, f"output[{event.output_index}]", event.type)
        elif isinstance(event, FunctionCallArgumentsDone):
            self._finish_arguments(event)
        elif isinstance(event, ReasoningSummaryTextDone | ReasoningSummaryPartDone):
            part = self._summary(event.output_index, event.summary_index)
            self._finish(part, event.text, f"output[{event.output_index}]", event.type)
        elif isinstance(event, ReasoningSummaryPartAdded):
            part = self._summary(event.output_index, event.summary_index)
            part.seed = event.text
        elif isinstance(event, ContentPartAdded):
            part = self._part(event.output_index, event.content_index, event)
            part.kind = _part_kind(event.part)
            part.seed = part_text(event.part)
        elif isinstance(event, ContentPartDone):
            part = self._part(event.output_index, event.content_index, event)
            part.kind = _part_kind(event.part)
            self._finish(part, part_text(event.part), f"output[{event.output_index}]", event.type)
        elif isinstance(event, OutputItemAdded):
            if event.output_index in self._items:
                raise StreamProtocolError(
                    f"output_index {event.output_index} was added twice ({event.type!r})"
                )
            self._items[event.output_index] = _Item(event.item)
        elif isinstance(event, OutputItemDone):
            self._item(event.output_index, event).done = event.item
        elif isinstance(event, ResponseCreated | ResponseInProgress | ResponseQueued):
            self._snapshot = event.response
        elif isinstance(event, ResponseCompleted | ResponseIncomplete | ResponseFailed):
            self._terminal = event
            if isinstance(event, ResponseFailed):
                raise error_for_failed_response(event.response)
        elif isinstance(event, ResponseErrorEvent):
            self._error = event
            raise error_for_error_event(event)
        # Anything else (UnknownResponseEvent, ...) carries nothing to accumulate.

    def _item(self, output_index: int, event: ResponseEvent) -> _Item:
        item = self._items.get(output_index)
        if item is None:
            raise StreamProtocolError(
                f"{event.type!r} names output_index {output_index}, which no "
                "response.output_item.added announced"
            )
        return item

    def _part(self, output_index: int, content_index: int, event: ResponseEvent) -> _Part:
        item = self._item(output_index, event)
        if isinstance(item.added, FunctionCall):
            raise StreamProtocolError(
                f"{event.type!r} for output_index {output_index}, a function call"
            )
        part = item.parts.get(content_index)
        if part is None:
            kind = "reasoning_text" if isinstance(item.added, ReasoningItem) else "output_text"
            if isinstance(event, RefusalDelta | RefusalDone):
                kind = "refusal"
            part = item.parts[content_index] = _Part(kind)
        return part

    def _summary(self, output_index: int, summary_index: int) -> _Part:
        item = self._items.get(output_index)
        if item is None:
            raise StreamProtocolError(
                f"a reasoning summary event names output_index {output_index}, which no "
                "response.output_item.added announced"
            )
        part = item.summary.get(summary_index)
        if part is None:
            part = item.summary[summary_index] = _Part("summary_text")
        return part

    def _call(self, output_index: int, event: ResponseEvent) -> _Item:
        item = self._item(output_index, event)
        if not isinstance(item.added, FunctionCall):
            raise StreamProtocolError(
                f"{event.type!r} for output_index {output_index}, a {item.kind} item"
            )
        return item

    def _finish(self, part: _Part, text: str, where: str, what: str) -> None:
        streamed = part.streamed
        if streamed is not None and streamed != text:
            self._mismatches.append(
                f"{where}: {what} says {_short(text)}, the stream said {_short(streamed)}"
            )
        part.done = text

    def _finish_arguments(self, event: FunctionCallArgumentsDone) -> None:
        item = self._call(event.output_index, event)
        streamed = item.streamed_arguments()
        where = f"output[{event.output_index}]"
        if streamed is not None and streamed != event.arguments:
            self._mismatches.append(
                f"{where}: {event.type} says {_short(event.arguments)}, "
                f"the deltas said {_short(streamed)}"
            )
        item.arguments_done = event.arguments
        if event.name:
            known = item.name or (item.added.name if isinstance(item.added, FunctionCall) else "")
            if known and known != event.name:
                self._mismatches.append(
                    f"{where}: {event.type} names {event.name!r}, the item {known!r}"
                )
            item.name = event.name

    def mismatches(self) -> tuple[str, ...]:
        """Where the stream and its final forms disagree (empty when they agree).

        Checked: each part's deltas against its ``*.done`` text; each item as the events built
        it against its ``response.output_item.done`` item; and the streamed items against the
        terminal event's ``response.output`` (the items, their types, ids, call ids and
        texts). Texts are compared where the stream said something of them; when the stream
        added items at all, the terminal response must list the same ones. The final forms
        win in :meth:`response` either way.
        """
        found = list(self._mismatches)
        for index, item in sorted(self._items.items()):
            if item.done is not None:
                found += _compare(f"output[{index}]", "output_item.done", item, item.done)
        terminal = self._terminal
        if isinstance(terminal, ResponseCompleted | ResponseIncomplete | ResponseFailed):
            output = terminal.response.output
            for index, item in sorted(self._items.items()):
                where = f"output[{index}]"
                if index >= len(output):
                    found.append(
                        f"{where}: the terminal response has {len(output)} output items, "
                        f"the stream added this one ({item.kind})"
                    )
                    continue
                found += _compare(where, "the terminal response", item, output[index])
                if item.done is not None:
                    # The done item must agree with the terminal one as well (texts only
                    # compared above for what was streamed).
                    done_texts, final_texts = _final_texts(item.done), _final_texts(output[index])
                    if done_texts != final_texts:
                        found.append(f"{where}: output_item.done and the terminal response differ")
            for index in range(len(output)):
                if index not in self._items and self._items:
                    found.append(
                        f"output[{index}]: the terminal response has an item "
                        f"({_item_kind(output[index])}) the stream never added"
                    )
        return tuple(found)

    def response(
        self,
        *,
        ttft: float | None = None,
        duration: float = 0.0,
        attempts: int = 1,
        request_id: str | None = None,
    ) -> Response:
        """A snapshot of the response so far, as a :class:`~holysheep_trio.Response`.

        After the terminal event it is that event's response (its output, unless it had none:
        then the streamed items). Before it, or after an in-band error, it is the latest
        response snapshot (``response.created`` / ``in_progress``) with the streamed items;
        after an in-band ``error`` event its ``status`` is ``"failed"`` and its ``error`` the
        event's code and message.
        """
        streamed = tuple(item.final() for _, item in sorted(self._items.items()))
        terminal = self._terminal
        if isinstance(terminal, ResponseCompleted | ResponseIncomplete | ResponseFailed):
            base = terminal.response
            output = base.output or streamed
        else:
            base = self._snapshot or Response()
            output = streamed
        if self._error is not None and terminal is None:
            base = attrs.evolve(
                base,
                status="failed",
                error=base.error
                or ResponseError(code=self._error.code, message=self._error.message),
            )
        return attrs.evolve(
            base,
            output=output,
            ttft=ttft,
            duration=duration,
            attempts=attempts,
            request_id=request_id,
        )


def _compare(where: str, other: str, item: _Item, final: OutputItem) -> list[str]:
    """How the streamed ``item`` disagrees with a final form of it."""
    found = []
    if _item_kind(final) != item.kind:
        found.append(f"{where}: {other} has a {_item_kind(final)} item, the stream a {item.kind}")
        return found
    streamed_id, final_id = _item_id(item.added), _item_id(final)
    if streamed_id and final_id and streamed_id != final_id:
        found.append(f"{where}: {other} has id {final_id!r}, the stream {streamed_id!r}")
    if (
        isinstance(final, FunctionCall)
        and isinstance(item.added, FunctionCall)
        and item.added.call_id
        and final.call_id
        and item.added.call_id != final.call_id
    ):
        found.append(
            f"{where}: {other} has call_id {final.call_id!r}, the stream {item.added.call_id!r}"
        )
    final_texts = _final_texts(final)
    for key, text in sorted(item.streamed_texts().items()):
        if key not in final_texts:
            found.append(f"{where}.{key}: {other} lacks it, the stream said {_short(text)}")
        elif final_texts[key] != text:
            found.append(
                f"{where}.{key}: {other} says {_short(final_texts[key])}, "
                f"the stream said {_short(text)}"
            )
    return found
