# The simulator's side of the OpenAI chat-completions wire format: requests in, chunks out (pure).
from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ._profiles import ModelProfile

SYSTEM_FINGERPRINT = "fp_holysheep_sim"

# A fixed vocabulary: each token is one word with a leading space. A few non-ASCII words (2-, 3-
# and 4-byte UTF-8) and punctuation keep client decoders honest when a chunk splits a character.
_WORDS = [
    "the",
    "stream",
    "of",
    "tokens",
    "flows",
    "through",
    "a",
    "trio",
    "nursery",
    "while",
    "every",
    "task",
    "has",
    "an",
    "owner",
    "and",
    "each",
    "deadline",
    "composes",
    "with",
    "the",
    "caller",
    "so",
    "nothing",
    "leaks",
    "when",
    "a",
    "socket",
    "closes",
    "early",
    "café",
    "naïve",
    "über",
    "straße",
    "日本",
    "語",
    "🐑",
    "sheep",
    "relay",
    "model",
    "budget",
    "router",
    "limit",
    "retry",
]
VOCABULARY: tuple[str, ...] = (*(f" {word}" for word in _WORDS), ",", ".", "\n")
# The first token of a reply carries no leading space.
_FIRST: tuple[str, ...] = tuple(token.lstrip(" ") or token for token in VOCABULARY)
_ENCODED: tuple[bytes, ...] = tuple(
    json.dumps(token, ensure_ascii=False).encode() for token in VOCABULARY
)
_ENCODED_FIRST: tuple[bytes, ...] = tuple(
    json.dumps(token, ensure_ascii=False).encode() for token in _FIRST
)
_INDICES = range(len(VOCABULARY))

# Fields of a request that change the reply text. `stream` and `stream_options` never do, so the
# same request streamed and not streamed gives the same text (issue: the simulator).
_SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "stop",
)
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class RequestError(Exception):
    """A request the simulator rejects, with the HTTP status and OpenAI error fields to send."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


@attrs.frozen(kw_only=True)
class ChatRequest:
    """A validated ``POST /v1/chat/completions`` body."""

    model: str
    messages: tuple[Any, ...]
    max_tokens: int | None
    stream: bool
    include_usage: bool
    text_seed: int
    prompt_tokens: int

    @classmethod
    def from_body(cls, body: bytes) -> ChatRequest:
        """Validate a request body.

        Args:
            body: The raw body bytes.

        Returns:
            The request.

        Raises:
            RequestError: 400 for malformed JSON, a missing field or a value of the wrong type.
        """
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise RequestError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly.)",
            ) from None
        if not isinstance(payload, dict):
            raise RequestError(400, "The request body must be a JSON object.")
        model = payload.get("model")
        if model is None:
            raise RequestError(
                400,
                "Missing required parameter: 'model'.",
                param="model",
                code="missing_required_parameter",
            )
        if not isinstance(model, str) or not model:
            raise RequestError(
                400, "'model' must be a non-empty string.", param="model", code="invalid_type"
            )
        messages = payload.get("messages")
        if messages is None:
            raise RequestError(
                400,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        if not isinstance(messages, list) or not messages:
            raise RequestError(
                400, "'messages' must be a non-empty array.", param="messages", code="invalid_type"
            )
        for index, message in enumerate(messages):
            _check_message(index, message)
        # The newer name wins, but an explicit null means "not given" (OpenAI reads it so).
        max_tokens = payload.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = payload.get("max_tokens")
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            raise RequestError(
                400,
                f"Invalid 'max_tokens': {max_tokens!r}; expected an integer >= 1.",
                param="max_tokens",
                code="invalid_value",
            )
        stream = payload.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise RequestError(
                400, "'stream' must be a boolean.", param="stream", code="invalid_type"
            )
        options = payload.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise RequestError(
                400,
                "'stream_options' must be an object.",
                param="stream_options",
                code="invalid_type",
            )
        include_usage = (options or {}).get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise RequestError(
                400,
                "'stream_options.include_usage' must be a boolean.",
                param="stream_options.include_usage",
                code="invalid_type",
            )
        material = {"model": model, "messages": messages}
        material.update({key: payload[key] for key in _SAMPLING_FIELDS if key in payload})
        digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).digest()
        return cls(
            model=model,
            messages=tuple(messages),
            max_tokens=max_tokens,
            stream=bool(stream),
            include_usage=include_usage,
            text_seed=int.from_bytes(digest[:16], "big"),
            prompt_tokens=estimate_prompt_tokens(messages),
        )


def _check_message(index: int, message: Any) -> None:
    if not isinstance(message, dict):
        raise RequestError(
            400,
            f"'messages[{index}]' must be an object.",
            param=f"messages[{index}]",
            code="invalid_type",
        )
    role = message.get("role")
    if role not in _ROLES:
        raise RequestError(
            400,
            f"Invalid value for 'messages[{index}].role': {role!r}; expected one of "
            f"{', '.join(sorted(_ROLES))}.",
            param=f"messages[{index}].role",
            code="invalid_value",
        )
    content = message.get("content")
    if content is not None and not isinstance(content, (str, list)):
        raise RequestError(
            400,
            f"'messages[{index}].content' must be a string or an array.",
            param=f"messages[{index}].content",
            code="invalid_type",
        )


def estimate_prompt_tokens(messages: Sequence[Any]) -> int:
    """A deterministic prompt-token estimate: ``3 + sum(4 + ceil(len(text) / 4))``.

    ``text`` is a message's string content, or the concatenated ``text`` of its content parts
    (parts without text, such as images, count nothing), plus the compact JSON of any
    ``tool_calls``; 4 tokens per message and 3 for the reply's priming follow OpenAI's published
    counting recipe, ~4 characters per token its rule of thumb.

    Args:
        messages: Validated message objects.

    Returns:
        The number of prompt tokens billed.
    """
    total = 3
    for message in messages:
        total += 4 + math.ceil(len(_message_text(message)) / 4)
    return total


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list) and all(
        isinstance(part, dict) and isinstance(part.get("text", ""), str) for part in content
    ):
        text = "".join(part.get("text", "") for part in content)
    elif content is not None:
        text = _dumps(content)  # parts we do not know: count their JSON
    else:
        text = ""
    if message.get("tool_calls") is not None:
        text += _dumps(message["tool_calls"])
    return text


class TokenSource:
    """The reply's tokens, drawn from a RNG seeded by the request; any batching, same text."""

    def __init__(self, request: ChatRequest, model: ModelProfile) -> None:
        self._rng = random.Random(request.text_seed)
        natural = self._rng.randint(
            model.natural_length - model.natural_length_spread,
            model.natural_length + model.natural_length_spread,
        )
        self.length = request.max_tokens if request.max_tokens is not None else natural
        self.finish_reason = "length" if request.max_tokens is not None else "stop"
        self._first = True

    def take(self, count: int) -> list[int]:
        """Draw the next ``count`` token indices (``random.choices`` is prefix-consistent)."""
        return self._rng.choices(_INDICES, k=count)

    def take_text(self, count: int) -> list[str]:
        """Draw the next ``count`` tokens as text."""
        indices = self.take(count)
        tokens = [VOCABULARY[index] for index in indices]
        if tokens and self._first:
            tokens[0] = _FIRST[indices[0]]
            self._first = False
        return tokens

    def take_encoded(self, count: int) -> list[bytes]:
        """Draw the next ``count`` tokens as pre-encoded JSON strings."""
        indices = self.take(count)
        encoded = [_ENCODED[index] for index in indices]
        if encoded and self._first:
            encoded[0] = _ENCODED_FIRST[indices[0]]
            self._first = False
        return encoded


def reply_text(request: ChatRequest, model: ModelProfile) -> tuple[str, int, str]:
    """The whole reply of a request, for ``stream: false``.

    Returns:
        ``(text, completion_tokens, finish_reason)``.
    """
    source = TokenSource(request, model)
    return "".join(source.take_text(source.length)), source.length, source.finish_reason


class ChunkEncoder:
    """Encodes one stream's ``data:`` events exactly as OpenAI sends them (compact JSON)."""

    def __init__(
        self, *, completion_id: str, created: int, model: str, include_usage: bool
    ) -> None:
        self._head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        self._include_usage = include_usage
        placeholder = "\x00token\x00"
        template = self._event({"content": placeholder}, None)
        prefix, _, suffix = template.partition(json.dumps(placeholder).encode())
        self._prefix = prefix
        self._suffix = suffix

    def _event(self, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        chunk: dict[str, Any] = dict(self._head)
        chunk["choices"] = [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ]
        if self._include_usage:
            chunk["usage"] = None
        return b"data: " + _dumps(chunk).encode() + b"\n\n"

    def role(self) -> bytes:
        """The first event: the assistant role with empty content."""
        return self._event({"role": "assistant", "content": ""}, None)

    def content(self, token: str) -> bytes:
        """One content event, encoded from a dict (the reference path)."""
        return self._event({"content": token}, None)

    def contents_pre_encoded(self, encoded_tokens: list[bytes]) -> bytes:
        """Many content events from pre-encoded tokens; byte-identical to :meth:`content`."""
        prefix, suffix = self._prefix, self._suffix
        return b"".join([prefix + token + suffix for token in encoded_tokens])

    def final(self, finish_reason: str) -> bytes:
        """The event with an empty delta and the finish reason."""
        return self._event({}, finish_reason)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The extra last event of ``stream_options.include_usage``: no choices, the usage."""
        chunk: dict[str, Any] = dict(self._head)
        chunk["choices"] = []
        chunk["usage"] = usage_object(prompt_tokens, completion_tokens)
        return b"data: " + _dumps(chunk).encode() + b"\n\n"

    def oversized(self, size: int) -> bytes:
        """One valid content event whose content string is ``size`` bytes of ``x``."""
        return self._event({"content": "x" * size}, None)


DONE = b"data: [DONE]\n\n"
MALFORMED = b'data: {"choices": [\n\n'
PING = b": ping\n\n"


def usage_object(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    *,
    completion_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> bytes:
    """The ``chat.completion`` JSON of a non-streamed reply."""
    return _dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage_object(prompt_tokens, completion_tokens),
        }
    ).encode()


# status -> (type, code, message) of the OpenAI-style error body
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", "permission_denied", "You are not allowed to use this model."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    405: ("invalid_request_error", "method_not_allowed", "Method not allowed."),
    413: ("invalid_request_error", "request_too_large", "The request body is too large."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached. Please try again later."),
    431: ("invalid_request_error", "headers_too_large", "The request headers are too large."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", "bad_gateway", "Bad gateway: the upstream provider failed."),
    503: ("server_error", "overloaded", "The engine is currently overloaded."),
    529: ("overloaded_error", "overloaded", "The upstream model is overloaded."),
}


def error_object(
    status: int, message: str | None = None, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The ``{"error": {...}}`` body for a status, with realistic ``type`` and ``code``."""
    kind, default_code, default_message = _ERRORS.get(
        status,
        ("server_error" if status >= 500 else "invalid_request_error", None, "Request failed."),
    )
    return {
        "error": {
            "message": message or default_message,
            "type": kind,
            "param": param,
            "code": code if code is not None else default_code,
        }
    }


def error_body(
    status: int, message: str | None = None, *, param: str | None = None, code: str | None = None
) -> bytes:
    """:func:`error_object` as JSON bytes."""
    return _dumps(error_object(status, message, param=param, code=code)).encode()


def error_event(status: int) -> bytes:
    """An in-band ``data: {"error": ...}`` event, typed like the HTTP error of ``status``."""
    return b"data: " + _dumps(error_object(status)).encode() + b"\n\n"
