# The simulator's side of the OpenAI chat-completions wire format: requests in, chunks out (pure).
from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import attrs

from ._frames import UnitFrames
from ._profiles import ModelProfile, ReplyTokens
from ._reply import (
    REASONING_EFFORTS,
    VOCABULARY,
    OutputFormat,
    Reply,
    ReplySpec,
    TokenSource,
    Tool,
    plan_reply,
    request_seed,
)

__all__ = ["VOCABULARY", "TokenSource"]  # re-exported: the vocabulary is part of the wire story

SYSTEM_FINGERPRINT = "fp_holysheep_sim"
SERVICE_TIER = "default"

# Fields of a request that change the reply. `stream` and `stream_options` never do, so the
# same request streamed and not streamed gives the same reply.
_SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
)
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# The API's own limit on `n` (chat completions reference).
MAX_CHOICES = 128
ToolChoiceMode = Literal["none", "auto", "required", "function"]
_TOOL_CHOICES: dict[str, ToolChoiceMode] = {"none": "none", "auto": "auto", "required": "required"}


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


def parse_json_body(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object.

    Raises:
        RequestError: 400 for malformed JSON or a body that is not an object.
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
    return payload


def require_model(payload: Mapping[str, Any]) -> str:
    """The request's ``model``: present and a non-empty string."""
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
    return model


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_range(
    payload: Mapping[str, Any], name: str, low: float, high: float, *, prefix: str = ""
) -> float | None:
    """Validate an optional number in ``[low, high]`` as the API does.

    Returns:
        The value, or ``None`` when absent or null.

    Raises:
        RequestError: 400 ``invalid_type``, or ``decimal_below_min_value`` /
            ``decimal_above_max_value`` with the API's message.
    """
    value = payload.get(name)
    param = prefix + name
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(value):
        raise RequestError(
            400,
            f"Invalid type for '{param}': expected a decimal, but got {_type_name(value)} instead.",
            param=param,
            code="invalid_type",
        )
    if value < low:
        raise RequestError(
            400,
            f"Invalid '{param}': decimal below minimum value. Expected a value >= {low:g}, but "
            f"got {value!r} instead.",
            param=param,
            code="decimal_below_min_value",
        )
    if value > high:
        raise RequestError(
            400,
            f"Invalid '{param}': decimal above maximum value. Expected a value <= {high:g}, but "
            f"got {value!r} instead.",
            param=param,
            code="decimal_above_max_value",
        )
    return float(value)


def check_integer(
    payload: Mapping[str, Any], name: str, low: int, high: int | None = None
) -> int | None:
    """Validate an optional integer in ``[low, high]`` as the API does.

    Raises:
        RequestError: 400 ``invalid_type``, ``integer_below_min_value`` or
            ``integer_above_max_value``.
    """
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(
            400,
            f"Invalid type for '{name}': expected an integer, but got {_type_name(value)} instead.",
            param=name,
            code="invalid_type",
        )
    if value < low:
        raise RequestError(
            400,
            f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, but got "
            f"{value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    if high is not None and value > high:
        raise RequestError(
            400,
            f"Invalid '{name}': integer above maximum value. Expected a value <= {high}, but got "
            f"{value} instead.",
            param=name,
            code="integer_above_max_value",
        )
    return value


def check_bool(payload: Mapping[str, Any], name: str, default: bool) -> bool:
    """Validate an optional boolean."""
    value = payload.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(
            400,
            f"Invalid type for '{name}': expected a boolean, but got {_type_name(value)} instead.",
            param=name,
            code="invalid_type",
        )
    return value


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def check_tool_choice(
    value: Any, tools: tuple[Tool, ...], *, function_name: Callable[[dict[str, Any]], Any]
) -> tuple[ToolChoiceMode, str | None]:
    """Validate ``tool_choice`` against the tools offered.

    Args:
        value: The raw ``tool_choice`` (``None`` when absent).
        tools: The validated tools.
        function_name: How to read the name out of an object choice (chat nests it under
            ``function``; the Responses API has it at the top).

    Returns:
        ``(mode, forced_tool)``.

    Raises:
        RequestError: 400 ``invalid_value`` with ``param: tool_choice``.
    """
    if value is None:
        return ("auto", None)
    if not tools:
        # The API refuses any tool_choice without tools (even "none").
        raise RequestError(
            400,
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            param="tool_choice",
            code="invalid_value",
        )
    if isinstance(value, str) and value in _TOOL_CHOICES:
        return (_TOOL_CHOICES[value], None)
    name = function_name(value) if isinstance(value, dict) else None
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(name, str):
        if name not in {tool.name for tool in tools}:
            raise RequestError(
                400,
                f"Invalid value for 'tool_choice': function '{name}' is not in 'tools'.",
                param="tool_choice",
                code="invalid_value",
            )
        return ("function", name)
    raise RequestError(
        400,
        f"Invalid value for 'tool_choice': {_dumps(value)}. Supported values are: 'none', "
        "'auto', 'required', or an object naming a function.",
        param="tool_choice",
        code="invalid_value",
    )


def check_reasoning_effort(value: Any, param: str) -> str | None:
    """Validate a reasoning effort; ``None`` and ``"none"`` mean no reasoning."""
    if value is None or value == "none":
        return None
    if value not in REASONING_EFFORTS:
        raise RequestError(
            400,
            f"Invalid value: {_dumps(value)}. Supported values are: 'none', "
            + ", ".join(f"'{effort}'" for effort in REASONING_EFFORTS)
            + ".",
            param=param,
            code="invalid_value",
        )
    return str(value)


def check_schema_format(value: Any, param: str) -> OutputFormat:
    """Validate a structured-output format object (``type`` text, json_object, json_schema).

    Args:
        value: ``{"type": ...}``; for ``json_schema`` the caller has already moved the
            schema's name and schema to the top level (the Responses API's flat form).
        param: The parameter name for errors.
    """
    if value is None:
        return OutputFormat()
    if not isinstance(value, dict):
        raise RequestError(400, f"'{param}' must be an object.", param=param, code="invalid_type")
    kind = value.get("type")
    if kind == "text":
        return OutputFormat()
    if kind == "json_object":
        return OutputFormat(kind="json_object")
    if kind == "json_schema":
        name = value.get("name")
        if not isinstance(name, str) or not name:
            raise RequestError(
                400,
                f"Missing required parameter: '{param}.name'.",
                param=f"{param}.name",
                code="missing_required_parameter",
            )
        schema = value.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise RequestError(
                400,
                f"Invalid type for '{param}.schema': expected an object.",
                param=f"{param}.schema",
                code="invalid_type",
            )
        return OutputFormat(kind="json_schema", schema=schema or {"type": "object"})
    raise RequestError(
        400,
        f"Invalid value: {_dumps(kind)}. Supported values are: 'text', 'json_object' and "
        "'json_schema'.",
        param=f"{param}.type",
        code="invalid_value",
    )


def check_function_tool(name: Any, parameters: Any, param: str) -> Tool:
    """Validate one function tool's name and parameters schema."""
    if not isinstance(name, str) or not name:
        raise RequestError(
            400,
            f"Missing required parameter: '{param}.name'.",
            param=f"{param}.name",
            code="missing_required_parameter",
        )
    if parameters is not None and not isinstance(parameters, dict):
        raise RequestError(
            400,
            f"Invalid type for '{param}.parameters': expected an object.",
            param=f"{param}.parameters",
            code="invalid_type",
        )
    return Tool(name=name, parameters=parameters)


def _chat_tools(value: Any) -> tuple[Tool, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RequestError(400, "'tools' must be an array.", param="tools", code="invalid_type")
    tools = []
    for index, tool in enumerate(value):
        param = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise RequestError(400, f"'{param}' must be an object.", param=param)
        if tool.get("type") != "function":
            continue  # custom and built-in tools: offered, never called by the simulator
        function = tool.get("function")
        if not isinstance(function, dict):
            raise RequestError(
                400,
                f"Missing required parameter: '{param}.function'.",
                param=f"{param}.function",
                code="missing_required_parameter",
            )
        tools.append(
            check_function_tool(
                function.get("name"), function.get("parameters"), f"{param}.function"
            )
        )
    return tuple(tools)


def _chat_response_format(value: Any) -> OutputFormat:
    if isinstance(value, dict) and value.get("type") == "json_schema":
        inner = value.get("json_schema")
        if not isinstance(inner, dict):
            raise RequestError(
                400,
                "Missing required parameter: 'response_format.json_schema'.",
                param="response_format.json_schema",
                code="missing_required_parameter",
            )
        return check_schema_format({"type": "json_schema", **inner}, "response_format.json_schema")
    return check_schema_format(value, "response_format")


@attrs.frozen(kw_only=True)
class ChatRequest:
    """A validated ``POST /v1/chat/completions`` body.

    Attributes:
        model: The requested model id.
        messages: The messages.
        max_tokens: ``max_completion_tokens`` or ``max_tokens``.
        stream: Whether to stream.
        include_usage: ``stream_options.include_usage``.
        n: How many choices.
        prompt_tokens: The prompt-token estimate.
        spec: What the reply must be (:mod:`._reply`).
    """

    model: str
    messages: tuple[Any, ...]
    max_tokens: int | None
    stream: bool
    include_usage: bool
    n: int
    prompt_tokens: int
    spec: ReplySpec

    @property
    def text_seed(self) -> int:
        """The seed of the reply."""
        return self.spec.seed

    @classmethod
    def from_body(cls, body: bytes, *, reply_tokens: ReplyTokens = None) -> ChatRequest:
        """Validate a request body.

        Args:
            body: The raw body bytes.
            reply_tokens: The text length override (header or profile).

        Returns:
            The request.

        Raises:
            RequestError: 400 for malformed JSON, a missing field, a value of the wrong type or
                out of range, or a ``tool_choice`` without ``tools``.
        """
        payload = parse_json_body(body)
        model = require_model(payload)
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
        check_range(payload, "temperature", 0, 2)
        check_range(payload, "top_p", 0, 1)
        n = check_integer(payload, "n", 1, MAX_CHOICES) or 1
        tools = _chat_tools(payload.get("tools"))
        mode, forced = check_tool_choice(
            payload.get("tool_choice"),
            tools,
            function_name=lambda choice: (choice.get("function") or {}).get("name"),
        )
        parallel = check_bool(payload, "parallel_tool_calls", True)
        output_format = _chat_response_format(payload.get("response_format"))
        effort = check_reasoning_effort(payload.get("reasoning_effort"), "reasoning_effort")
        material = {"model": model, "messages": messages}
        material.update({key: payload[key] for key in _SAMPLING_FIELDS if key in payload})
        last_role = messages[-1].get("role")
        spec = ReplySpec(
            seed=request_seed(material),
            max_tokens=max_tokens,
            reply_tokens=reply_tokens,
            tools=tools,
            tool_choice=mode,
            forced_tool=forced,
            parallel_tool_calls=parallel,
            output_format=output_format,
            reasoning_effort=effort,
            answers_tool_output=last_role in ("tool", "function"),
        )
        prompt_tokens = estimate_prompt_tokens(messages)
        extra = [payload[key] for key in ("tools", "response_format") if payload.get(key)]
        if extra:
            # Tool definitions and schemas are part of the prompt the model reads.
            prompt_tokens += math.ceil(len(_dumps(extra)) / 4)
        return cls(
            model=model,
            messages=tuple(messages),
            max_tokens=max_tokens,
            stream=bool(stream),
            include_usage=include_usage,
            n=n,
            prompt_tokens=prompt_tokens,
            spec=spec,
        )

    def plan(self, model: ModelProfile) -> tuple[Reply, ...]:
        """The reply of every choice."""
        spec = self.spec
        if model.reasoning_field is not None and spec.reasoning_effort is not None:
            spec = attrs.evolve(spec, reasoning_shown="full")
        return tuple(plan_reply(spec, model, index=index) for index in range(self.n))


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


def reply_text(request: ChatRequest, model: ModelProfile) -> tuple[str, int, str]:
    """The first choice's whole text, for ``stream: false``.

    Returns:
        ``(text, completion_tokens, finish_reason)``.
    """
    reply = request.plan(model)[0]
    return reply.message_text(), reply.output_tokens, reply.finish_reason


class ChunkEncoder:
    """Encodes one stream's ``data:`` events exactly as OpenAI sends them (compact JSON)."""

    def __init__(
        self, *, completion_id: str, created: int, model: str, include_usage: bool
    ) -> None:
        # Key order as OpenAI sends it.
        self._head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": SERVICE_TIER,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        self._include_usage = include_usage
        placeholder = "\x00token\x00"
        template = self._event({"content": placeholder}, None)
        prefix, _, suffix = template.partition(json.dumps(placeholder).encode())
        self._prefix = prefix
        self._suffix = suffix

    def _event(self, delta: dict[str, Any], finish_reason: str | None, index: int = 0) -> bytes:
        chunk: dict[str, Any] = dict(self._head)
        chunk["choices"] = [
            {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ]
        if self._include_usage:
            chunk["usage"] = None
        return b"data: " + _dumps(chunk).encode() + b"\n\n"

    def delta(self, delta: dict[str, Any], index: int = 0) -> bytes:
        """One event with ``delta`` for choice ``index``."""
        return self._event(delta, None, index)

    def role(self, index: int = 0, *, content: str | None = "") -> bytes:
        """The first event of a choice: the role, empty content and ``refusal: null``."""
        return self._event({"role": "assistant", "content": content, "refusal": None}, None, index)

    def content(self, token: str, index: int = 0) -> bytes:
        """One content event, encoded from a dict (the reference path)."""
        return self._event({"content": token}, None, index)

    def contents_pre_encoded(self, encoded_tokens: list[bytes]) -> bytes:
        """Many content events of choice 0 from pre-encoded tokens; byte-identical to
        :meth:`content`."""
        prefix, suffix = self._prefix, self._suffix
        return b"".join([prefix + token + suffix for token in encoded_tokens])

    def final(self, finish_reason: str, index: int = 0) -> bytes:
        """The event with an empty delta and the finish reason."""
        return self._event({}, finish_reason, index)

    def usage(self, usage: dict[str, Any]) -> bytes:
        """The extra last event of ``stream_options.include_usage``: no choices, the usage."""
        chunk: dict[str, Any] = dict(self._head)
        chunk["choices"] = []
        chunk["usage"] = usage
        return b"data: " + _dumps(chunk).encode() + b"\n\n"

    def oversized(self, size: int) -> bytes:
        """One valid content event whose content string is ``size`` bytes of ``x``."""
        return self._event({"content": "x" * size}, None)

    def failed(self, status: int) -> bytes:
        """A chunk that reports a failure in band, as OpenRouter does mid-stream: a top-level
        ``error`` next to a choice whose ``finish_reason`` is ``"error"``."""
        chunk: dict[str, Any] = dict(self._head)
        error = error_object(status)["error"]
        chunk["error"] = {"code": error["code"] or error["type"], "message": error["message"]}
        chunk["choices"] = [
            {"index": 0, "delta": {"content": ""}, "logprobs": None, "finish_reason": "error"}
        ]
        return b"data: " + _dumps(chunk).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
MALFORMED = b'data: {"choices": [\n\n'
PING = b": ping\n\n"


def usage_object(
    prompt_tokens: int,
    completion_tokens: int,
    *,
    reasoning_tokens: int = 0,
    cached_tokens: int = 0,
) -> dict[str, Any]:
    """The chat ``usage`` object, with its ``*_details`` as OpenAI sends them."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def replies_usage(prompt_tokens: int, replies: Sequence[Reply]) -> dict[str, Any]:
    """The usage of a request's choices together."""
    return usage_object(
        prompt_tokens,
        sum(reply.output_tokens for reply in replies),
        reasoning_tokens=sum(reply.reasoning_tokens for reply in replies),
    )


def is_plain_text(replies: Sequence[Reply]) -> bool:
    """Whether the pre-encoded fast path can send this reply: one choice of plain words."""
    if len(replies) != 1:
        return False
    reply = replies[0]
    return reply.json_pieces is None and not reply.calls and not reply.reasoning_pieces


class ChatTextFrames:
    """The fast path: one choice of plain words, many pre-encoded chunks per write.

    Byte-identical to :class:`ChatFrames` for the same reply (a test pins it).
    """

    def __init__(self, reply: Reply, encoder: ChunkEncoder, *, usage: dict[str, Any] | None):
        self._reply = reply
        self._encoder = encoder
        self._source = reply.text_source()
        self._usage = usage
        self.units = reply.units
        self.hidden_tokens = self.billed_hidden = reply.reasoning_hidden

    def head(self) -> bytes:
        return b""

    def opening(self) -> bytes:
        return self._encoder.role()

    def take(self, limit: int) -> tuple[bytes, int]:
        return self._encoder.contents_pre_encoded(self._source.take_encoded(limit)), limit

    def closing(self) -> bytes:
        closing = self._encoder.final(self._reply.finish_reason)
        if self._usage is not None:
            closing += self._encoder.usage(self._usage)
        return closing + DONE

    def error_event(self, status: int) -> bytes:
        return error_event(status)

    def failed_event(self) -> bytes:
        return self._encoder.failed(500)

    def malformed(self) -> bytes:
        return MALFORMED

    def oversized(self, size: int) -> bytes:
        return self._encoder.oversized(size)


class ChatFrames(UnitFrames[bytes]):
    """Any chat reply: ``n`` choices interleaved, reasoning deltas, tool calls, JSON."""

    def __init__(
        self,
        replies: Sequence[Reply],
        encoder: ChunkEncoder,
        *,
        usage: dict[str, Any] | None,
        reasoning_field: str | None,
    ) -> None:
        self._encoder = encoder
        super().__init__(
            _chat_frames(replies, encoder, usage, reasoning_field),
            units=sum(reply.units for reply in replies),
            encode=b"".join,
        )
        # Choices think in parallel: the longest hidden reasoning delays the first unit, and
        # every choice's reasoning is billed.
        self.hidden_tokens = max(reply.reasoning_hidden for reply in replies)
        self.billed_hidden = sum(reply.reasoning_hidden for reply in replies)

    def error_event(self, status: int) -> bytes:
        return error_event(status)

    def failed_event(self) -> bytes:
        return self._encoder.failed(500)

    def malformed(self) -> bytes:
        return MALFORMED

    def oversized(self, size: int) -> bytes:
        return self._encoder.oversized(size)


def _chat_frames(
    replies: Sequence[Reply],
    encoder: ChunkEncoder,
    usage: dict[str, Any] | None,
    reasoning_field: str | None,
) -> Iterator[tuple[bytes, bool]]:
    # Choices take turns, one unit each, as OpenAI interleaves `n` choices.
    turns = deque(
        _choice_frames(reply, index, encoder, reasoning_field)
        for index, reply in enumerate(replies)
    )
    while turns:
        choice = turns.popleft()
        for frame, unit in choice:
            yield frame, unit
            if unit:
                turns.append(choice)
                break
    if usage is not None:
        yield encoder.usage(usage), False
    yield DONE, False


_TEXT_BATCH = 256


def _choice_frames(
    reply: Reply, index: int, encoder: ChunkEncoder, reasoning_field: str | None
) -> Iterator[tuple[bytes, bool]]:
    yield encoder.role(index, content="" if reply.has_message else None), False
    for piece in reply.reasoning_pieces:
        yield encoder.delta({reasoning_field or "reasoning_content": piece}, index), True
    source = reply.text_source()
    remaining = reply.message_length
    while remaining:
        batch = min(remaining, _TEXT_BATCH)
        for token in source.take_text(batch):
            yield encoder.content(token, index), True
        remaining -= batch
    for position, call in enumerate(reply.calls):
        opening = {
            "index": position,
            "id": call.call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        yield encoder.delta({"tool_calls": [opening]}, index), False
        for piece in call.pieces:
            argument = {"index": position, "function": {"arguments": piece}}
            yield encoder.delta({"tool_calls": [argument]}, index), True
    yield encoder.final(reply.finish_reason, index), False


def completion_body(
    *,
    completion_id: str,
    created: int,
    model: str,
    replies: Sequence[Reply],
    prompt_tokens: int,
    reasoning_field: str | None = None,
) -> bytes:
    """The ``chat.completion`` JSON of a non-streamed reply."""
    choices = []
    for index, reply in enumerate(replies):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.message_text() if reply.has_message else None,
            "refusal": None,
            "annotations": [],
        }
        if reply.reasoning_pieces:
            message[reasoning_field or "reasoning_content"] = reply.reasoning_text()
        if reply.calls:
            message["tool_calls"] = [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in reply.calls
            ]
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }
        )
    return _dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": replies_usage(prompt_tokens, replies),
            "service_tier": SERVICE_TIER,
            "system_fingerprint": SYSTEM_FINGERPRINT,
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
