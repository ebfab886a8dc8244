# The OpenAI chat-completions wire format, free of I/O: request bodies, chunk decoding, results.
"""OpenAI chat-completions wire format (transport-independent, sans-I/O).

- :func:`build_request_body`: the JSON body of a ``POST /chat/completions``.
- :func:`decode_event`: one server-sent event -> a :class:`~holysheep_trio.ChatChunk`,
  :data:`DONE` (the ``data: [DONE]`` sentinel), or None (nothing to deliver); an in-band error
  raises :class:`~holysheep_trio.APIStreamError`, bad JSON or a bad shape raises
  :class:`~holysheep_trio.StreamProtocolError`.
- :func:`parse_error_body`: message/type/code of an OpenAI-style error body.
- :func:`error_from_success_body`: the typed error for a 2xx response whose body is not an
  event stream (a JSON error body, as some gateways answer a stream request).
- :class:`CompletionAccumulator`: chunks -> :class:`~holysheep_trio.Completion`, with tool-call
  deltas merged into complete tool calls.

Nothing here knows about HTTP or sockets, so a WebSocket transport can reuse all of it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from .errors import (
    APIStatusError,
    APIStreamError,
    HolySheepError,
    StreamProtocolError,
    error_class_for_status,
)
from .models import (
    ChatChunk,
    Completion,
    Message,
    ToolCall,
    ToolCallDelta,
    Usage,
    _fast_chunk,
    _text_chunk,
)

if TYPE_CHECKING:
    from .sse import ServerSentEvent

__all__ = [
    "DONE",
    "CompletionAccumulator",
    "build_request_body",
    "decode_chunk_data",
    "decode_data",
    "decode_event",
    "error_from_success_body",
    "parse_error_body",
    "status_for_error",
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


# Error type/code words -> the HTTP status they stand for, for errors without a number. Words
# are compared without case, "_" or "-", and checked in order. They cover OpenAI
# ("server_error", "rate_limit_exceeded", "invalid_api_key", "invalid_request_error"),
# Anthropic-style relays ("overloaded_error", "rate_limit_error", "authentication_error",
# "permission_error", "not_found_error", "api_error") and vLLM's exception names
# ("BadRequestError", "NotFoundError", "InternalServerError", "ServiceUnavailableError").
_ERROR_WORDS: tuple[tuple[str, int], ...] = (
    ("ratelimit", 429),
    ("overloaded", 503),
    ("serviceunavailable", 503),
    ("servererror", 500),
    ("apierror", 500),
    ("invalidapikey", 401),
    ("authentication", 401),
    ("unauthorized", 401),
    ("permission", 403),
    ("forbidden", 403),
    ("notfound", 404),
    ("invalidrequest", 400),
    ("badrequest", 400),
)


def status_for_error(code: object, error_type: object) -> int | None:
    """The HTTP status an error's ``code`` and ``type`` stand for, or None.

    A numeric code (``429``, ``"503"``) is the status; else the words of the code and the
    type (``rate_limit`` -> 429, ``server_error`` -> 500, ``BadRequestError`` -> 400, ...).
    """
    status = _status_of(code)
    if status is not None:
        return status
    return _status_from_words(
        code if isinstance(code, str) else None, error_type if isinstance(error_type, str) else None
    )


def _status_from_words(code: str | None, error_type: str | None) -> int | None:
    for value in (code, error_type):
        if not value:
            continue
        word = value.lower().replace("_", "").replace("-", "")
        for known, status in _ERROR_WORDS:
            if known in word:
                return status
    return None


def stream_error_from_json(payload: Mapping[str, Any]) -> APIStreamError:
    """The :class:`~holysheep_trio.APIStreamError` for an in-band ``{"error": ...}`` object.

    The status comes from ``error.status`` or a numeric ``error.code``; else from words in
    ``error.code`` and ``error.type`` (``rate_limit`` -> 429, ``overloaded`` -> 503,
    ``server_error`` -> 500, ``invalid_api_key`` -> 401, ``BadRequestError`` -> 400, ...).
    Without any, it stays None (and the error's kind is ``server``). ``error.param`` is kept.
    """
    error = payload.get("error")
    message, error_type, code, status = _error_fields(error)
    if status is None:
        status = _status_from_words(code, error_type)
    param = error.get("param") if isinstance(error, Mapping) else None
    return APIStreamError(
        f"the server sent an error event: {message}",
        status=status,
        error_type=error_type,
        code=code,
        param=param if isinstance(param, str) else None,
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


def _error_object(payload: object) -> object:
    """The error object of a decoded error body, or None when the body is not one.

    ``{"error": {...}}`` (OpenAI, OpenRouter, Anthropic's ``{"type": "error", "error": {...}}``)
    or vLLM's flat ``{"object": "error", "message": ..., "type": ..., "code": 400}``.
    """
    if not isinstance(payload, Mapping):
        return None
    error = payload.get("error")
    if error:
        return error
    if payload.get("object") == "error" and isinstance(payload.get("message"), str):
        return payload
    return None


def error_from_success_body(
    body: bytes,
    *,
    content_type: str | None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    retry_after: float | None = None,
    should_retry: bool | None = None,
) -> APIStatusError | StreamProtocolError:
    """The error to raise for a 2xx response to a stream request that is not an event stream.

    Some gateways answer a stream request that failed with ``200 OK`` and a JSON error body
    instead of an HTTP error status. Such a body is read like an HTTP error body and typed by
    the status it names: ``error.status`` or a numeric ``error.code`` (OpenRouter sends the
    HTTP status there), else the words of ``error.code`` / ``error.type`` (``rate_limit`` ->
    429, ``overloaded_error`` -> 503, ``invalid_request_error`` -> 400, ...). So
    ``{"error": {"code": 429, ...}}`` gives a :class:`~holysheep_trio.RateLimitError` with
    ``status == 429``, retried like one.

    When the body names no status, the error keeps the real HTTP status (``status``, e.g. 200):
    a plain :class:`~holysheep_trio.APIStatusError` of kind ``server``, which the retry policy
    does not retry (nothing says a retry would help). The server's message is always kept.

    Args:
        body: The start of the body (the caller bounds how much it reads).
        content_type: The response's ``Content-Type``, for the message.
        status: The HTTP status of the response.
        headers: The response headers, attached to the error.
        retry_after: The ``Retry-After`` delay the caller parsed from the headers.
        should_retry: The caller's reading of ``x-should-retry``.

    Returns:
        An :class:`~holysheep_trio.APIStatusError` (the subclass for the status) for a JSON
        error body; otherwise a :class:`~holysheep_trio.StreamProtocolError` naming the content
        type, with the start of the body as its ``data``.
    """
    text = body.decode("utf-8", "replace")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        payload = None
    error = _error_object(payload)
    if error is None:
        return StreamProtocolError(
            f"expected a text/event-stream response, got {content_type!r}", data=body
        )
    message, error_type, code, named_status = _error_fields(error)
    if named_status is None:
        named_status = _status_from_words(code, error_type)
    if named_status is None:
        what = f"the server answered HTTP {status} with an error body: {message}"
        named_status = status
    else:
        what = f"the server answered HTTP {status} with an error body ({named_status}): {message}"
    return error_class_for_status(named_status)(
        what,
        status=named_status,
        body=text,
        error_type=error_type,
        code=code,
        retry_after=retry_after,
        should_retry=should_retry,
        headers=headers,
    )


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
    return _decode_object(payload, data)


# The C scanner that json.loads runs, called directly: loads adds two whitespace regexes and
# three Python calls around it, about a third of the cost of parsing a text delta.
# (An attribute that JSONDecoder sets in __init__; typeshed does not list it.)
_scan_json: Final[Callable[[str, int], tuple[Any, int]]] = vars(json.JSONDecoder())["scan_once"]


def decode_chunk_data(data: str) -> ChatChunk | _Done | None:
    """:func:`decode_data`, faster on the usual chunk: the same results and the same errors.

    The client's hot path (one call per token). When the data is exactly one JSON object (no
    whitespace around it) it is scanned without ``json.loads``' wrapping, and a text delta is
    built by the models' fast path (``_fast_chunk``) without a second try; anything else
    (``[DONE]``, an empty or broken event, an error object, tool calls, usage) goes the way of
    :func:`decode_data`. ``tests/test_wire.py`` checks that both agree on any data.
    """
    try:
        payload, end = _scan_json(data, 0)
    except (StopIteration, ValueError, RecursionError):
        return decode_data(data)  # [DONE], empty, not JSON, or whitespace before it
    if end != len(data) or type(payload) is not dict:
        return decode_data(data)
    if not payload.get("error") and payload.get("object") != "error":
        chunk = _fast_chunk(payload)
        if chunk is not None:
            for choice in chunk.choices:
                if choice.finish_reason == "error":
                    raise _finish_reason_error(payload)
            return chunk
        return _decode_object(payload, data, fast_tried=True)
    return _decode_object(payload, data)


# json's string scanner (the C one): a JSON string literal's value and where it ends.
# (typeshed does not list it.)
_scanstring: Final[Callable[[str, int], tuple[str, int]]] = vars(json.decoder)["scanstring"]
_CONTENT_KEY: Final = '"content":"'
#: The values put into a learned template to prove it (quotes, backslashes, non-ASCII, a line
#: break). Two: a text around the literal that decodes to a constant, whatever the literal
#: holds (the content comes from elsewhere in it), could equal one of them, never both.
_PROBE_TEXTS: Final = ('probe " \\ \u2603', "another\n\u00e9 '\\\"'")


class ChunkTemplate:
    """The text of a stream's chunks around their content, learned from one of them.

    After its first chunk, a stream's text deltas differ only in their content: the id, the
    model, ``created``, the fingerprint and the JSON around them are the same bytes every time.
    :meth:`match` checks that a chunk's data is exactly that text around one JSON string, reads
    only that string (json's C string scanner) and builds the chunk with the learned fields:
    the same :class:`~holysheep_trio.ChatChunk` as :func:`decode_chunk_data`, at about half
    its cost. :func:`learn_template` proves a template before it is used (see there); data that
    does not match (another shape, a finish reason, usage, an error, per-chunk padding such as
    OpenAI's ``obfuscation``) takes :func:`decode_chunk_data` as before.
    """

    __slots__ = ("_chunk_id", "_created", "_fingerprint", "_index", "_model", "_prefix", "_suffix")

    def __init__(self, prefix: str, suffix: str, chunk: ChatChunk) -> None:
        self._prefix = prefix  # up to and with the content's opening quote
        self._suffix = suffix  # after the content's closing quote
        self._chunk_id = chunk.id
        self._model = chunk.model
        self._created = chunk.created
        self._fingerprint = chunk.system_fingerprint
        self._index = chunk.choices[0].index

    def match(self, data: str) -> ChatChunk | None:
        """The chunk of ``data`` if it is this template around one JSON string, else None."""
        prefix = self._prefix
        suffix = self._suffix
        if not data.startswith(prefix) or not data.endswith(suffix):
            return None
        start = len(prefix)
        stop = len(data) - len(suffix)
        if stop <= start:  # the two overlap: not even a closing quote between them
            return None
        try:
            content, end = _scanstring(data, start)
        except ValueError:  # not a string (an unescaped control character, no closing quote)
            return None
        if end != stop:
            return None
        return self.build(content)

    def build(self, content: str) -> ChatChunk:
        """The chunk this template makes with ``content``."""
        return _text_chunk(
            self._chunk_id, self._model, self._created, self._fingerprint, self._index, content
        )


def is_text_delta(chunk: ChatChunk) -> bool:
    """Whether ``chunk`` is one choice's content delta and nothing else (what a template makes)."""
    if chunk.usage is not None or len(chunk.choices) != 1:
        return False
    choice = chunk.choices[0]
    delta = choice.delta
    return (
        choice.finish_reason is None
        and type(delta.content) is str
        and delta.role is None
        and delta.refusal is None
        and delta.reasoning is None
        and not delta.tool_calls
    )


def learn_template(data: str, chunk: ChatChunk) -> ChunkTemplate | None:
    """A :class:`ChunkTemplate` from ``data`` (a stream event's data) and its decoded
    ``chunk``, or None when ``chunk`` is not a plain text delta or the template cannot be
    proven.

    The template is the text before and after the last ``"content":"...."`` string in
    ``data``. It is proven by decoding (:func:`decode_chunk_data`, with every check) the same
    text around two other strings (quotes, backslashes, non-ASCII): each result must be the
    chunk the template builds for that string. JSON being context-free, the decoding of that
    text around a string literal either is the template's chunk for every literal or does not
    depend on the literal at all (the content comes from elsewhere, e.g. a later duplicate
    key), and a constant cannot equal both probes; so :meth:`ChunkTemplate.match` gives what a
    full decoding would (a text that is not one string literal there does not match).
    """
    if not is_text_delta(chunk):
        return None
    at = data.rfind(_CONTENT_KEY)
    if at < 0:
        return None
    start = at + len(_CONTENT_KEY)
    try:
        content, end = _scanstring(data, start)
    except ValueError:
        return None
    if content != chunk.choices[0].delta.content:
        return None
    template = ChunkTemplate(data[:start], data[end:], chunk)
    for text in _PROBE_TEXTS:
        # The probe's literal without its opening quote (the template's prefix ends with one).
        probe = template._prefix + json.dumps(text)[1:] + template._suffix
        try:
            decoded = decode_chunk_data(probe)
        except HolySheepError:
            return None
        if decoded != template.build(text) or template.match(probe) != decoded:
            return None
    return template


def _decode_object(payload: object, data: str, *, fast_tried: bool = False) -> ChatChunk:
    """The chunk of an event's decoded JSON (``data``: its text, for errors)."""
    if not isinstance(payload, dict):
        raise StreamProtocolError("a stream event is not a JSON object", data=data)
    # An error object wins over anything else in the event: OpenRouter ends a failed stream
    # with a chunk that has both a top-level `error` and `choices` (finish_reason "error"), see
    # its "Streaming" guide, "Handling Errors During Streaming".
    if payload.get("error"):
        raise stream_error_from_json(payload)
    # vLLM (and Mistral) send their error object itself as a data event.
    if payload.get("object") == "error":
        raise stream_error_from_json({"error": payload})
    try:
        chunk = ChatChunk._from_mapping(payload) if fast_tried else ChatChunk.from_json(payload)
    except StreamProtocolError as exc:
        # The model types know which field is wrong but not the bytes it came in; the error
        # carries "the offending bytes, truncated" (errors.StreamProtocolError), as for bad JSON.
        raise StreamProtocolError(exc.message, data=data) from None
    for choice in chunk.choices:
        if choice.finish_reason == "error":
            raise _finish_reason_error(payload)
    return chunk


def _finish_reason_error(payload: Mapping[str, Any]) -> APIStreamError:
    """The error of a choice that ended with ``finish_reason: "error"`` (and no top-level one)."""
    for raw in payload["choices"]:
        error = raw.get("error") if isinstance(raw, Mapping) else None
        if error and raw.get("finish_reason") == "error":
            return stream_error_from_json({"error": error})
    return APIStreamError("the server ended the reply with finish_reason 'error'")


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


def _text_buffer() -> io.StringIO:
    # newline="\n" (the default): written as is, no newline translation either way.
    return io.StringIO()


class _ToolCallBuilder:
    __slots__ = ("arguments", "id", "name", "type")

    def __init__(self) -> None:
        self.id = ""
        self.type = "function"
        self.name = ""
        self.arguments: io.StringIO | None = None  # made on the first fragment


class CompletionAccumulator:
    """Merges the chunks of one stream into a :class:`~holysheep_trio.Completion`.

    Only choice 0 is accumulated (``n > 1`` callers read the chunks themselves). Content,
    refusal and reasoning deltas are concatenated. Tool-call fragments are merged into calls:

    - a fragment with an ``id`` not seen before starts a new call, even at an ``index`` already
      used (gateways that send every call at index 0 with distinct ids);
    - a fragment with a known ``id`` continues that call (servers that repeat the id);
    - a fragment without an ``id`` continues the call at its ``index``, or, without an index
      (Gemini's OpenAI-compatible endpoint sends none), the latest call;
    - the first non-empty ``id`` and ``name`` win, ``arguments`` fragments are concatenated.

    Calls are listed in the order they started.

    Memory: text is kept as text, not as the pieces it came in. A stream of thousands of
    one-token deltas would otherwise hold a str object (about 50 bytes of header) and a list
    slot per token, ten times the text itself, for the life of the stream; an ``io.StringIO``
    (made on the first piece) appends to one growing buffer in amortized constant time.
    """

    __slots__ = (
        "_reasoning",
        "_refusal",
        "_text",
        "_tools",
        "_tools_by_id",
        "_tools_by_index",
        "chunks",
        "finish_reason",
        "id",
        "model",
        "usage",
    )

    def __init__(self) -> None:
        self._text: io.StringIO | None = None
        self._refusal: io.StringIO | None = None
        self._reasoning: io.StringIO | None = None
        self._tools: list[_ToolCallBuilder] = []
        self._tools_by_index: dict[int, _ToolCallBuilder] = {}
        self._tools_by_id: dict[str, _ToolCallBuilder] = {}
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
            content = delta.content
            if content:
                text = self._text
                if text is None:
                    text = self._text = _text_buffer()
                text.write(content)
            if delta.refusal:
                if self._refusal is None:
                    self._refusal = _text_buffer()
                self._refusal.write(delta.refusal)
            if delta.reasoning:
                if self._reasoning is None:
                    self._reasoning = _text_buffer()
                self._reasoning.write(delta.reasoning)
            for call in delta.tool_calls:
                builder = self._tool_builder(call)
                if call.id and not builder.id:
                    builder.id = call.id
                    self._tools_by_id[call.id] = builder
                if call.type:
                    builder.type = call.type
                if call.name and not builder.name:
                    builder.name = call.name
                if call.arguments:
                    if builder.arguments is None:
                        builder.arguments = _text_buffer()
                    builder.arguments.write(call.arguments)
            if choice.finish_reason is not None:
                self.finish_reason = choice.finish_reason

    def _tool_builder(self, call: ToolCallDelta) -> _ToolCallBuilder:
        """The call a tool-call fragment belongs to (a new one when it starts a call)."""
        index = call.index
        if call.id:
            known = self._tools_by_id.get(call.id)
            if known is not None:
                return known
            at_index = None if index is None else self._tools_by_index.get(index)
            if at_index is not None and not at_index.id:
                return at_index  # the call's first fragments came without their id
            return self._new_tool(index)
        if index is not None:
            return self._tools_by_index.get(index) or self._new_tool(index)
        return self._tools[-1] if self._tools else self._new_tool(None)

    def _new_tool(self, index: int | None) -> _ToolCallBuilder:
        builder = _ToolCallBuilder()
        self._tools.append(builder)
        if index is not None:
            self._tools_by_index[index] = builder
        return builder

    @property
    def text(self) -> str:
        """The content so far."""
        return "" if self._text is None else self._text.getvalue()

    @property
    def reasoning(self) -> str:
        """The reasoning text so far."""
        return "" if self._reasoning is None else self._reasoning.getvalue()

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
                arguments="" if builder.arguments is None else builder.arguments.getvalue(),
            )
            for builder in self._tools
        )
        return Completion(
            id=self.id,
            model=self.model,
            text=self.text,
            refusal=None if self._refusal is None else self._refusal.getvalue(),
            reasoning=None if self._reasoning is None else self._reasoning.getvalue(),
            finish_reason=self.finish_reason,
            usage=self.usage,
            tool_calls=tool_calls,
            ttft=ttft,
            duration=duration,
            attempts=attempts,
            request_id=request_id,
        )
