# Immutable value types of the chat API: messages in, chunks and completions out.
"""Value types (attrs, frozen) that cross the public API.

Chunks are built from decoded JSON with named constructors (:meth:`ChatChunk.from_json`, ...)
that check the shape and raise :class:`~holysheep_trio.StreamProtocolError` on anything
unexpected, never a bare ``KeyError`` or ``TypeError``. Its message names the offending field;
its ``data`` is left empty here, as only the decoder of the stream has the offending bytes
(:func:`holysheep_trio._wire.decode_data` attaches them). Unknown extra fields are ignored, as
OpenAI-compatible servers add their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from .errors import StreamProtocolError

__all__ = [
    "ChatChunk",
    "Choice",
    "Completion",
    "CompletionTokensDetails",
    "Delta",
    "Message",
    "PromptTokensDetails",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
]


def _bad(what: str) -> StreamProtocolError:
    # No ``data``: it is "the offending bytes" and only the decoder has those; a repr of the
    # decoded object is not them. `_wire.decode_data` re-raises with the event's data attached.
    return StreamProtocolError(f"unexpected chunk shape: {what}")


def _opt_str(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _bad(f"{key!r} is not a string (got {type(value).__name__})")


def _int(payload: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = payload.get(key, default)
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _bad(f"{key!r} is not an integer (got {type(value).__name__})")


def _opt_int(payload: Mapping[str, Any], key: str) -> int | None:
    value = payload.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _bad(f"{key!r} is not an integer (got {type(value).__name__})")


def _opt_object(payload: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = payload.get(key)
    if value is None or isinstance(value, Mapping):
        return value
    raise _bad(f"{key!r} is not an object (got {type(value).__name__})")


@attrs.frozen(kw_only=True)
class Message:
    """One chat message of a request.

    Attributes:
        role: ``"system"``, ``"developer"``, ``"user"``, ``"assistant"`` or ``"tool"``.
        content: The text, or a list of content parts (passed through as given), or None for
            an assistant message that only has tool calls.
        name: Optional participant name.
        tool_call_id: For ``role="tool"``: the id of the call this message answers.
        tool_calls: For ``role="assistant"``: the calls the model made earlier.
    """

    role: str
    content: str | list[Any] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The OpenAI wire form of the message (a new dict)."""
        body: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            body["name"] = self.name
        if self.tool_call_id is not None:
            body["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            body["tool_calls"] = [call.to_json() for call in self.tool_calls]
        return body


@attrs.frozen(kw_only=True)
class PromptTokensDetails:
    """Breakdown of the prompt tokens (``usage.prompt_tokens_details``); None = not reported.

    Attributes:
        cached_tokens: Prompt tokens read from the provider's prompt cache (billed cheaper).
        cache_write_tokens: Prompt tokens written to the cache (OpenRouter, Anthropic relays).
        audio_tokens: Audio input tokens.
    """

    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    audio_tokens: int | None = None

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> PromptTokensDetails:
        """Build from a ``prompt_tokens_details`` object; unknown fields are ignored.

        Raises:
            StreamProtocolError: a known field is not an integer.
        """
        return cls(
            cached_tokens=_opt_int(payload, "cached_tokens"),
            cache_write_tokens=_opt_int(payload, "cache_write_tokens"),
            audio_tokens=_opt_int(payload, "audio_tokens"),
        )


@attrs.frozen(kw_only=True)
class CompletionTokensDetails:
    """Breakdown of the completion tokens (``usage.completion_tokens_details``).

    Every field is None when the server did not report it.

    Attributes:
        reasoning_tokens: Tokens the model spent reasoning (included in ``completion_tokens``).
        audio_tokens: Audio output tokens.
        accepted_prediction_tokens: Predicted-output tokens that appeared in the completion.
        rejected_prediction_tokens: Predicted-output tokens that did not (still billed).
    """

    reasoning_tokens: int | None = None
    audio_tokens: int | None = None
    accepted_prediction_tokens: int | None = None
    rejected_prediction_tokens: int | None = None

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> CompletionTokensDetails:
        """Build from a ``completion_tokens_details`` object; unknown fields are ignored.

        Raises:
            StreamProtocolError: a known field is not an integer.
        """
        return cls(
            reasoning_tokens=_opt_int(payload, "reasoning_tokens"),
            audio_tokens=_opt_int(payload, "audio_tokens"),
            accepted_prediction_tokens=_opt_int(payload, "accepted_prediction_tokens"),
            rejected_prediction_tokens=_opt_int(payload, "rejected_prediction_tokens"),
        )


@attrs.frozen(kw_only=True)
class Usage:
    """Token counts the server billed for one request.

    Attributes:
        prompt_tokens: Tokens of the prompt.
        completion_tokens: Tokens generated (reasoning included).
        total_tokens: Their sum, as the server reported it.
        prompt_tokens_details: Cached (and audio) prompt tokens, when reported. DeepSeek's
            top-level ``prompt_cache_hit_tokens`` fills ``cached_tokens`` when the standard
            field is absent.
        completion_tokens_details: Reasoning (and audio, prediction) tokens, when reported.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None

    @classmethod
    def from_json(cls, payload: object) -> Usage:
        """Build from the ``usage`` object of a chunk.

        Raises:
            StreamProtocolError: ``payload`` is not a usage object.
        """
        if not isinstance(payload, Mapping):
            raise _bad("usage is not an object")
        prompt = _int(payload, "prompt_tokens")
        completion = _int(payload, "completion_tokens")
        total = _int(payload, "total_tokens", prompt + completion)
        raw_prompt = _opt_object(payload, "prompt_tokens_details")
        raw_completion = _opt_object(payload, "completion_tokens_details")
        prompt_details = None if raw_prompt is None else PromptTokensDetails.from_json(raw_prompt)
        # DeepSeek reports cache hits as `prompt_cache_hit_tokens` next to the counts (its
        # "Context Caching" guide); older deployments send no `prompt_tokens_details` at all.
        cache_hits = _opt_int(payload, "prompt_cache_hit_tokens")
        if cache_hits is not None and (
            prompt_details is None or prompt_details.cached_tokens is None
        ):
            prompt_details = attrs.evolve(
                prompt_details or PromptTokensDetails(), cached_tokens=cache_hits
            )
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            prompt_tokens_details=prompt_details,
            completion_tokens_details=(
                None
                if raw_completion is None
                else CompletionTokensDetails.from_json(raw_completion)
            ),
        )


@attrs.frozen(kw_only=True)
class ToolCallDelta:
    """A fragment of a tool call inside a streamed delta (``type`` is ``"function"``).

    Attributes:
        index: The call's position in the message, or None when the server sent none (Gemini's
            OpenAI-compatible endpoint omits it). The accumulator merges fragments by ``index``
            and ``id`` together: a fragment with a new ``id`` starts a new call even at an index
            already used (some gateways send every call at index 0), and a fragment without an
            index continues the call of the latest ``id``.
        id: The call id (on the first fragment of a call; some servers repeat it).
        name: The function name (on the first fragment).
        arguments: A piece of the arguments' JSON text.
    """

    index: int | None = None
    id: str | None = None
    type: str | None = None
    name: str | None = None
    arguments: str = ""

    @classmethod
    def from_json(cls, payload: object) -> ToolCallDelta:
        """Build from one entry of ``delta.tool_calls``.

        Raises:
            StreamProtocolError: the entry has the wrong shape.
        """
        if not isinstance(payload, Mapping):
            raise _bad("tool call delta is not an object")
        function = payload.get("function") or {}
        if not isinstance(function, Mapping):
            raise _bad("tool call function is not an object")
        return cls(
            index=_opt_int(payload, "index"),
            id=_opt_str(payload, "id"),
            type=_opt_str(payload, "type"),
            name=_opt_str(function, "name"),
            arguments=_opt_str(function, "arguments") or "",
        )


@attrs.frozen(kw_only=True)
class ToolCall:
    """A complete tool call, accumulated from its deltas.

    Attributes:
        id: The call id the tool's answer must quote.
        type: Always ``"function"`` today.
        name: The function name.
        arguments: The arguments as the model wrote them (a JSON text; not validated).
    """

    id: str
    type: str = "function"
    name: str
    arguments: str = ""

    def to_json(self) -> dict[str, Any]:
        """The OpenAI wire form, for sending the call back in an assistant message."""
        return {
            "id": self.id,
            "type": self.type,
            "function": {"name": self.name, "arguments": self.arguments},
        }


@attrs.frozen(kw_only=True)
class Delta:
    """What one chunk adds to one choice.

    Attributes:
        role: ``"assistant"`` on the first chunk.
        content: A piece of the reply text.
        refusal: A piece of a refusal.
        reasoning: A piece of the model's reasoning text, from DeepSeek's ``reasoning_content``,
            OpenRouter's (and vLLM's) ``reasoning`` or, when neither is sent, the text of
            OpenRouter's ``reasoning_details`` entries (``reasoning.text`` and
            ``reasoning.summary``; encrypted entries carry no text).
        tool_calls: Fragments of tool calls.
    """

    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    reasoning: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()

    @classmethod
    def from_json(cls, payload: object) -> Delta:
        """Build from a ``delta`` object.

        Raises:
            StreamProtocolError: the delta has the wrong shape.
        """
        if not isinstance(payload, Mapping):
            raise _bad("delta is not an object")
        raw_calls = payload.get("tool_calls")
        calls: tuple[ToolCallDelta, ...] = ()
        if raw_calls:
            if not isinstance(raw_calls, list):
                raise _bad("delta.tool_calls is not a list")
            calls = tuple(ToolCallDelta.from_json(item) for item in raw_calls)
        # Servers that send both fields (vLLM while renaming one to the other) send the same
        # text in each: take one, never both.
        reasoning_content = _opt_str(payload, "reasoning_content")
        alternative = _opt_str(payload, "reasoning")
        reasoning = reasoning_content or alternative
        if not reasoning:
            reasoning = _reasoning_details_text(payload.get("reasoning_details")) or reasoning
        return cls(
            role=_opt_str(payload, "role"),
            content=_opt_str(payload, "content"),
            refusal=_opt_str(payload, "refusal"),
            reasoning=reasoning,
            tool_calls=calls,
        )


def _reasoning_details_text(details: object) -> str | None:
    """The readable text of OpenRouter ``reasoning_details`` entries, or None.

    Entries are ``{"type": "reasoning.text", "text": ...}``, ``{"type": "reasoning.summary",
    "summary": ...}`` or ``{"type": "reasoning.encrypted", "data": ...}`` (OpenRouter's
    "Reasoning Tokens" guide). Only the first two are text; anything malformed is skipped, as
    the field is an extension the caller may not care about.
    """
    if not isinstance(details, list):
        return None
    pieces = []
    for entry in details:
        if not isinstance(entry, Mapping):
            continue
        kind = entry.get("type")
        text = entry.get("text") if kind == "reasoning.text" else None
        if kind == "reasoning.summary":
            text = entry.get("summary")
        if isinstance(text, str):
            pieces.append(text)
    return "".join(pieces) or None


@attrs.frozen(kw_only=True)
class Choice:
    """One choice of a chunk: its index, its delta and, on the last chunk, why it stopped."""

    index: int = 0
    delta: Delta = attrs.field(factory=Delta)
    finish_reason: str | None = None

    @classmethod
    def from_json(cls, payload: object) -> Choice:
        """Build from one entry of ``choices``.

        Raises:
            StreamProtocolError: the entry has the wrong shape.
        """
        if not isinstance(payload, Mapping):
            raise _bad("choice is not an object")
        delta = payload.get("delta")
        return cls(
            index=_int(payload, "index"),
            delta=Delta() if delta is None else Delta.from_json(delta),
            finish_reason=_opt_str(payload, "finish_reason"),
        )


@attrs.frozen(kw_only=True)
class ChatChunk:
    """One ``chat.completion.chunk`` of a stream.

    Attributes:
        id: The completion id (the same on every chunk of a stream).
        model: The model that produced the chunk.
        created: Unix time the completion was created.
        choices: The choices this chunk updates (empty on the final usage chunk).
        usage: Token counts, on the final chunk when usage was requested.
        system_fingerprint: The backend configuration fingerprint, if sent.
    """

    id: str = ""
    model: str = ""
    created: int = 0
    choices: tuple[Choice, ...] = ()
    usage: Usage | None = None
    system_fingerprint: str | None = None

    @property
    def text(self) -> str:
        """The content delta of choice 0, or ``""`` when this chunk has none."""
        for choice in self.choices:
            if choice.index == 0:
                return choice.delta.content or ""
        return ""

    @property
    def reasoning(self) -> str:
        """The reasoning delta of choice 0, or ``""`` when this chunk has none."""
        for choice in self.choices:
            if choice.index == 0:
                return choice.delta.reasoning or ""
        return ""

    @property
    def has_output(self) -> bool:
        """Whether the chunk carries model output: content, reasoning, a refusal or a tool call.

        Reasoning counts: a model that thinks before it answers is making progress, and what it
        delivered cannot be taken back by a retry.
        """
        for choice in self.choices:
            delta = choice.delta
            if delta.content or delta.tool_calls or delta.refusal or delta.reasoning:
                return True
        return False

    @classmethod
    def from_json(cls, payload: object) -> ChatChunk:
        """Build from a decoded ``chat.completion.chunk`` object.

        Raises:
            StreamProtocolError: the object has the wrong shape.
        """
        if type(payload) is dict:
            fast = _fast_chunk(payload)
            if fast is not None:
                return fast
        return cls._from_mapping(payload)

    @classmethod
    def _from_mapping(cls, payload: object) -> ChatChunk:
        """:meth:`from_json` without its fast path (for callers that just tried it)."""
        if not isinstance(payload, Mapping):
            raise _bad("chunk is not an object")
        raw_choices = payload.get("choices") or ()
        if not isinstance(raw_choices, list | tuple):
            raise _bad("choices is not a list")
        usage = payload.get("usage")
        return cls(
            id=_opt_str(payload, "id") or "",
            model=_opt_str(payload, "model") or "",
            created=_int(payload, "created"),
            choices=tuple(Choice.from_json(item) for item in raw_choices),
            usage=None if usage is None else Usage.from_json(usage),
            system_fingerprint=_opt_str(payload, "system_fingerprint"),
        )


# Decoding chunks is the client's hot path: one chunk per token. The careful constructors above
# cost about 25 us per chunk, half of the client's whole per-chunk budget on a fast stream
# (measured with cProfile against the simulator's `fast` profile). This fast path handles the
# shape OpenAI sends for text deltas with plain type checks and fills the frozen slots directly,
# as `sse.py` does for its events (attrs' generated __init__ calls object.__setattr__ per field).
# Anything unusual -- tool calls, usage, a wrong type -- returns None and takes the careful path,
# which also produces the error. tests/test_models.py checks both paths build equal values.
# Reasoning deltas (DeepSeek, vLLM, OpenRouter) stay on the fast path: 1.4 us instead of 4 us
# per chunk, and a reasoning model sends as many of them as text deltas.
_new: Final = object.__new__
_set_delta_role: Final = Delta.__dict__["role"].__set__
_set_delta_content: Final = Delta.__dict__["content"].__set__
_set_delta_refusal: Final = Delta.__dict__["refusal"].__set__
_set_delta_reasoning: Final = Delta.__dict__["reasoning"].__set__
_set_delta_tool_calls: Final = Delta.__dict__["tool_calls"].__set__
_set_choice_index: Final = Choice.__dict__["index"].__set__
_set_choice_delta: Final = Choice.__dict__["delta"].__set__
_set_choice_finish: Final = Choice.__dict__["finish_reason"].__set__
_set_chunk_id: Final = ChatChunk.__dict__["id"].__set__
_set_chunk_model: Final = ChatChunk.__dict__["model"].__set__
_set_chunk_created: Final = ChatChunk.__dict__["created"].__set__
_set_chunk_choices: Final = ChatChunk.__dict__["choices"].__set__
_set_chunk_usage: Final = ChatChunk.__dict__["usage"].__set__
_set_chunk_fingerprint: Final = ChatChunk.__dict__["system_fingerprint"].__set__
_EMPTY: Final[tuple[Any, ...]] = ()


def _fast_chunk(payload: dict[str, Any]) -> ChatChunk | None:
    chunk_id = payload.get("id", "")
    model = payload.get("model", "")
    created = payload.get("created", 0)
    fingerprint = payload.get("system_fingerprint")
    raw_choices = payload.get("choices")
    if (
        type(chunk_id) is not str
        or type(model) is not str
        or type(created) is not int
        or (fingerprint is not None and type(fingerprint) is not str)
        or payload.get("usage") is not None
        or type(raw_choices) is not list
    ):
        return None
    choices = []
    for raw in raw_choices:
        if type(raw) is not dict:
            return None
        raw_delta = raw.get("delta")
        index = raw.get("index", 0)
        finish = raw.get("finish_reason")
        if (
            type(raw_delta) is not dict
            or type(index) is not int
            or (finish is not None and type(finish) is not str)
        ):
            return None
        content = raw_delta.get("content")
        if type(content) is str and len(raw_delta) == 1:
            # {"content": "..."} alone: what OpenAI sends for every token after the first.
            role = refusal = reasoning = None
        else:
            if raw_delta.get("tool_calls"):
                return None
            role = raw_delta.get("role")
            refusal = raw_delta.get("refusal")
            reasoning = raw_delta.get("reasoning_content")
            alternative = raw_delta.get("reasoning")
            if (
                (content is not None and type(content) is not str)
                or (role is not None and type(role) is not str)
                or (refusal is not None and type(refusal) is not str)
                or (reasoning is not None and type(reasoning) is not str)
                or (alternative is not None and type(alternative) is not str)
            ):
                return None
            reasoning = reasoning or alternative
            # OpenRouter's `reasoning_details` only matter when there is no reasoning text.
            if not reasoning and raw_delta.get("reasoning_details"):
                return None
        delta = _new(Delta)
        _set_delta_role(delta, role)
        _set_delta_content(delta, content)
        _set_delta_refusal(delta, refusal)
        _set_delta_reasoning(delta, reasoning)
        _set_delta_tool_calls(delta, _EMPTY)
        choice = _new(Choice)
        _set_choice_index(choice, index)
        _set_choice_delta(choice, delta)
        _set_choice_finish(choice, finish)
        choices.append(choice)
    chunk: ChatChunk = _new(ChatChunk)
    _set_chunk_id(chunk, chunk_id)
    _set_chunk_model(chunk, model)
    _set_chunk_created(chunk, created)
    _set_chunk_choices(chunk, tuple(choices))
    _set_chunk_usage(chunk, None)
    _set_chunk_fingerprint(chunk, fingerprint)
    return chunk


def _text_chunk(
    chunk_id: str,
    model: str,
    created: int,
    fingerprint: str | None,
    index: int,
    content: str,
) -> ChatChunk:
    """A chunk of one choice whose delta is ``content`` alone (what ``_fast_chunk`` builds for
    ``{"delta": {"content": ...}}`` without a finish reason or usage)."""
    delta = _new(Delta)
    _set_delta_role(delta, None)
    _set_delta_content(delta, content)
    _set_delta_refusal(delta, None)
    _set_delta_reasoning(delta, None)
    _set_delta_tool_calls(delta, _EMPTY)
    choice = _new(Choice)
    _set_choice_index(choice, index)
    _set_choice_delta(choice, delta)
    _set_choice_finish(choice, None)
    chunk: ChatChunk = _new(ChatChunk)
    _set_chunk_id(chunk, chunk_id)
    _set_chunk_model(chunk, model)
    _set_chunk_created(chunk, created)
    _set_chunk_choices(chunk, (choice,))
    _set_chunk_usage(chunk, None)
    _set_chunk_fingerprint(chunk, fingerprint)
    return chunk


@attrs.frozen(kw_only=True)
class Completion:
    """The result of one chat request (streamed or not), accumulated from its chunks.

    Attributes:
        id: The completion id sent by the server.
        model: The model that answered (as the server reports it).
        text: The whole content of choice 0.
        refusal: The refusal text of choice 0, if the model refused.
        reasoning: The whole reasoning text of choice 0 (DeepSeek ``reasoning_content``,
            OpenRouter ``reasoning``), or None when the model sent none.
        finish_reason: Why generation stopped (``"stop"``, ``"length"``, ``"tool_calls"``, ...)
            or None when the stream did not finish.
        usage: Billed tokens, when the server sent them.
        tool_calls: Complete tool calls of choice 0, in index order.
        ttft: Seconds from the start of the request (after admission, including retries) to
            the first content, reasoning, refusal or tool-call delta; None if there was none.
        duration: Seconds from the start of the request to the end of the stream (or to the
            failure, for a partial completion).
        attempts: How many HTTP attempts the request took (1 without retries).
        request_id: The server's ``x-request-id`` of the attempt that produced this output.
    """

    id: str = ""
    model: str = ""
    text: str = ""
    refusal: str | None = None
    reasoning: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    ttft: float | None = None
    duration: float = 0.0
    attempts: int = 1
    request_id: str | None = None
