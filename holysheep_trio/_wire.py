# The OpenAI chat-completions wire format, free of I/O: request bodies, chunk decoding, results.
"""OpenAI chat-completions wire format (transport-independent, sans-I/O).

- :func:`build_request_body`: the JSON body of a ``POST /chat/completions``.
- :func:`decode_event`: one server-sent event -> a :class:`~holysheep_trio.ChatChunk`,
  :data:`DONE` (the ``data: [DONE]`` sentinel), or None (nothing to deliver); an in-band error
  raises :class:`~holysheep_trio.APIStreamError`, bad JSON or a bad shape raises
  :class:`~holysheep_trio.StreamProtocolError`.
- :func:`parse_error_body`: message/type/code of an OpenAI-style error body.
- :class:`CompletionAccumulator`: chunks -> :class:`~holysheep_trio.Completion`, with tool-call
  deltas merged into complete tool calls.

Nothing here knows about HTTP or sockets, so a WebSocket transport can reuse all of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from .errors import APIStreamError, StreamProtocolError
from .models import ChatChunk, Completion, Message, ToolCall, Usage

if TYPE_CHECKING:
    from .sse import ServerSentEvent

__all__ = [
    "DONE",
    "CompletionAccumulator",
    "build_request_body",
    "decode_data",
    "decode_event",
    "parse_error_body",
    "stream_error_from_json",
]


class _Done:
    """Type of :data:`DONE`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DONE"


#: Returned by :func:`decode_event` for ``data: [DONE]``, the end of an OpenAI stream.
DONE: Final = _Done()

_RESERVED = frozenset({"model", "messages", "stream"})


def _message_json(message: object) -> dict[str, Any]:
    if isinstance(message, Message):
        return message.to_json()
    if isinstance(message, Mapping):
        if not isinstance(message.get("role"), str):
            raise TypeError("each message needs a string 'role'")
        return dict(message)
    raise TypeError(f"a message must be a dict or holysheep_trio.Message, not {type(message)!r}")


def build_request_body(
    *,
    model: str,
    messages: Iterable[Message | Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
    include_usage: bool = True,
) -> bytes:
    """The JSON body of a streaming chat-completions request.

    Args:
        model: The model name.
        messages: Dicts (passed through) or :class:`~holysheep_trio.Message` values.
        params: Other OpenAI parameters (``max_tokens``, ``temperature``, ``tools``, ...);
            None values are left out.
        include_usage: Ask for a final usage chunk (``stream_options.include_usage``), unless
            ``params`` sets ``stream_options`` itself.

    Raises:
        TypeError: a message has the wrong type, a parameter is reserved (``model``,
            ``messages``, ``stream``) or not JSON-serializable.
    """
    if not isinstance(model, str) or not model:
        raise TypeError("model must be a non-empty string")
    if isinstance(messages, str | bytes | Mapping):
        raise TypeError("messages must be a list of messages")
    body: dict[str, Any] = {
        "model": model,
        "messages": [_message_json(message) for message in messages],
        "stream": True,
    }
    for key, value in (params or {}).items():
        if key in _RESERVED:
            raise TypeError(f"{key!r} cannot be passed as an extra parameter")
        if value is not None:
            body[key] = value
    if include_usage and "stream_options" not in body:
        body["stream_options"] = {"include_usage": True}
    try:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError(f"request parameters are not JSON-serializable: {exc}") from None


def _status_of(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 100 <= value <= 599 else None
    if isinstance(value, str) and value.isdigit() and len(value) == 3:
        return int(value)
    return None


def _error_fields(error: object) -> tuple[str, str | None, str | None, int | None]:
    """(message, type, code, status) of an OpenAI-style ``error`` value, leniently."""
    if isinstance(error, str):
        return error, None, None, None
    if not isinstance(error, Mapping):
        return repr(error)[:200], None, None, None
    message = error.get("message")
    error_type = error.get("type")
    code = error.get("code")
    status = _status_of(error.get("status")) or _status_of(code)
    return (
        message if isinstance(message, str) else "unknown error",
        error_type if isinstance(error_type, str) else None,
        None if code is None else str(code),
        status,
    )


# Error type/code words -> the HTTP status they stand for, for in-band errors without a number.
# Checked in order; covers OpenAI ("server_error", "rate_limit_exceeded", "invalid_api_key"),
# Anthropic-style relays ("overloaded_error", "rate_limit_error") and common variants.
_ERROR_WORDS: tuple[tuple[str, int], ...] = (
    ("rate_limit", 429),
    ("overloaded", 503),
    ("server_error", 500),
    ("api_error", 500),
    ("invalid_api_key", 401),
    ("authentication", 401),
    ("permission", 403),
    ("not_found", 404),
    ("invalid_request", 400),
)


def stream_error_from_json(payload: Mapping[str, Any]) -> APIStreamError:
    """The :class:`~holysheep_trio.APIStreamError` for an in-band ``{"error": ...}`` object.

    The status comes from ``error.status`` or a numeric ``error.code``; else from words in
    ``error.code`` and ``error.type`` (``rate_limit`` -> 429, ``overloaded`` -> 503,
    ``server_error`` -> 500, ``invalid_api_key`` -> 401, ...). Without any, it stays None.
    """
    message, error_type, code, status = _error_fields(payload.get("error"))
    if status is None:
        words = f"{code or ''} {error_type or ''}".lower()
        for word, word_status in _ERROR_WORDS:
            if word in words:
                status = word_status
                break
    return APIStreamError(
        f"the server sent an error event: {message}",
        status=status,
        error_type=error_type,
        code=code,
    )


def parse_error_body(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, type, code) of an HTTP error body; the raw text when it is not OpenAI-style."""
    text = body.decode("utf-8", "replace")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        return text.strip()[:500] or "(empty body)", None, None
    if isinstance(payload, Mapping) and "error" in payload:
        message, error_type, code, _ = _error_fields(payload["error"])
        return message, error_type, code
    return text.strip()[:500], None, None


def decode_data(data: str) -> ChatChunk | _Done | None:
    """Decode the data of one message event.

    Returns:
        :data:`DONE` for ``[DONE]``, None for an empty data field, else the chunk.

    Raises:
        APIStreamError: the data is an in-band error object.
        StreamProtocolError: the data is not JSON or not a chunk; its ``data`` is the event's
            data (UTF-8, truncated), its message says what is wrong.
    """
    if data == "[DONE]":
        return DONE
    if not data:
        return None
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        raise StreamProtocolError("invalid JSON in a stream event", data=data) from None
    if not isinstance(payload, dict):
        raise StreamProtocolError("a stream event is not a JSON object", data=data)
    if "error" in payload and payload["error"] is not None and "choices" not in payload:
        raise stream_error_from_json(payload)
    try:
        return ChatChunk.from_json(payload)
    except StreamProtocolError as exc:
        # The model types know which field is wrong but not the bytes it came in; the error
        # carries "the offending bytes, truncated" (errors.StreamProtocolError), as for bad JSON.
        raise StreamProtocolError(exc.message, data=data) from None


def decode_event(event: ServerSentEvent) -> ChatChunk | _Done | None:
    """Decode one server-sent event of a chat-completions stream.

    Events named ``error`` are in-band errors whatever their data; other named events that
    OpenAI-compatible servers may add (e.g. ``ping``) are ignored.

    Raises:
        APIStreamError: an in-band error event.
        StreamProtocolError: bad JSON or a bad chunk shape.
    """
    name = event.event
    if name == "message" or not name:
        return decode_data(event.data)
    if name == "error":
        try:
            payload = json.loads(event.data)
        except (ValueError, RecursionError):
            payload = {"error": event.data}
        if not isinstance(payload, Mapping):
            payload = {"error": event.data}
        if "error" not in payload:
            payload = {"error": payload}
        raise stream_error_from_json(payload)
    return None


class _ToolCallBuilder:
    __slots__ = ("arguments", "id", "name", "type")

    def __init__(self) -> None:
        self.id = ""
        self.type = "function"
        self.name = ""
        self.arguments: list[str] = []


class CompletionAccumulator:
    """Merges the chunks of one stream into a :class:`~holysheep_trio.Completion`.

    Only choice 0 is accumulated (``n > 1`` callers read the chunks themselves). Tool-call
    deltas are merged by their ``index``: the first non-empty ``id``, ``type`` and ``name`` win
    and ``arguments`` fragments are concatenated.
    """

    def __init__(self) -> None:
        self._text: list[str] = []
        self._refusal: list[str] = []
        self._tools: dict[int, _ToolCallBuilder] = {}
        self.id = ""
        self.model = ""
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.chunks = 0

    def add(self, chunk: ChatChunk) -> None:
        """Fold one chunk in."""
        self.chunks += 1
        if chunk.id and not self.id:
            self.id = chunk.id
        if chunk.model and not self.model:
            self.model = chunk.model
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta.content:
                self._text.append(delta.content)
            if delta.refusal:
                self._refusal.append(delta.refusal)
            for call in delta.tool_calls:
                builder = self._tools.get(call.index)
                if builder is None:
                    builder = self._tools[call.index] = _ToolCallBuilder()
                if call.id and not builder.id:
                    builder.id = call.id
                if call.type:
                    builder.type = call.type
                if call.name and not builder.name:
                    builder.name = call.name
                if call.arguments:
                    builder.arguments.append(call.arguments)
            if choice.finish_reason is not None:
                self.finish_reason = choice.finish_reason

    @property
    def text(self) -> str:
        """The content so far."""
        return "".join(self._text)

    def completion(
        self,
        *,
        ttft: float | None = None,
        duration: float = 0.0,
        attempts: int = 1,
        request_id: str | None = None,
    ) -> Completion:
        """A snapshot of what was accumulated, as a :class:`~holysheep_trio.Completion`."""
        tool_calls = tuple(
            ToolCall(
                id=builder.id,
                type=builder.type,
                name=builder.name,
                arguments="".join(builder.arguments),
            )
            for _, builder in sorted(self._tools.items())
        )
        return Completion(
            id=self.id,
            model=self.model,
            text=self.text,
            refusal="".join(self._refusal) if self._refusal else None,
            finish_reason=self.finish_reason,
            usage=self.usage,
            tool_calls=tool_calls,
            ttft=ttft,
            duration=duration,
            attempts=attempts,
            request_id=request_id,
        )
