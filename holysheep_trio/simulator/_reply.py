# What a simulated model says, for every API: text, reasoning, tool calls, structured output (pure).
"""The reply generator shared by chat completions, the Responses API over SSE and, later, over
WebSocket frames.

A request is first normalized into a :class:`ReplySpec` (the wire formats do that), then
:func:`plan_reply` decides, from a seed, everything the model will say: hidden reasoning, shown
reasoning, a message (random words or JSON for a schema), function calls, and how it finishes.
The :class:`Reply` is a plan, not bytes: each wire format walks it to produce its own events,
and every *unit* it streams (a text token, a JSON piece, a reasoning piece, a piece of call
arguments) is one completion token, one delta, one step of pacing and one count for faults.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol

import attrs

from ._profiles import ModelProfile, ReplyTokens
from ._schema import split_pieces, value_for_schema

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

# Hidden reasoning tokens per `reasoning_effort` (uniform, seeded): thinking takes time at the
# model's token rate before the first visible token, as with real reasoning models.
REASONING_EFFORTS: Mapping[str, tuple[int, int]] = {
    "minimal": (8, 24),
    "low": (32, 96),
    "medium": (96, 256),
    "high": (256, 640),
    "xhigh": (512, 1024),
}
# Reasoning summaries are short: this many of the reasoning tokens are shown.
_SUMMARY_TOKENS = (16, 40)
# With tool_choice "auto", the chance that a reply calls tools (unless it answers a tool result).
_AUTO_CALL_CHANCE = 0.5
_MAX_PARALLEL_CALLS = 3
_ID_ALPHABET = string.ascii_letters + string.digits
# Structured output without a schema (`json_object`): an object of this shape.
_JSON_OBJECT_SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
}

FinishReason = Literal["stop", "length", "tool_calls"]
ReasoningShown = Literal["hidden", "summary", "full"]


def request_seed(material: Mapping[str, Any]) -> int:
    """A 128-bit seed from the parts of a request that decide its reply.

    Args:
        material: JSON-serializable request fields (model, messages or input, sampling
            parameters, tools, formats); never ``stream``, so the same request streamed and not
            streamed gives the same reply.

    Returns:
        The seed.
    """
    encoded = json.dumps(material, sort_keys=True, ensure_ascii=False, default=str).encode()
    return int.from_bytes(hashlib.sha256(encoded).digest()[:16], "big")


def _derived(seed: int, label: str) -> random.Random:
    # Separate streams for separate decisions: drawing a tool call never shifts the text.
    return random.Random(f"{seed}:{label}")


class TextSource(Protocol):
    """The units of a message, drawn in order; any batching gives the same text."""

    length: int

    def take_text(self, count: int) -> list[str]:
        """The next ``count`` units as text."""
        ...

    def take_encoded(self, count: int) -> list[bytes]:
        """The next ``count`` units as JSON string literals (with quotes)."""
        ...


class TokenSource:
    """Random words from :data:`VOCABULARY`, seeded; ``random.choices`` is prefix-consistent."""

    def __init__(self, seed: int, length: int) -> None:
        self._rng = random.Random(seed)
        self.length = length
        self._first = True

    def take(self, count: int) -> list[int]:
        """Draw the next ``count`` token indices."""
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


class PieceSource:
    """Fixed pieces (JSON text cut into tokens), taken in order."""

    def __init__(self, pieces: tuple[str, ...]) -> None:
        self._pieces = pieces
        self._position = 0
        self.length = len(pieces)

    def take_text(self, count: int) -> list[str]:
        """The next ``count`` pieces."""
        start = self._position
        self._position += count
        return list(self._pieces[start : self._position])

    def take_encoded(self, count: int) -> list[bytes]:
        """The next ``count`` pieces as JSON string literals."""
        return [json.dumps(piece, ensure_ascii=False).encode() for piece in self.take_text(count)]


@attrs.frozen(kw_only=True)
class Tool:
    """A function the model may call: its name and its parameters' JSON Schema."""

    name: str
    parameters: Any = None


@attrs.frozen(kw_only=True)
class OutputFormat:
    """The shape of the message: free text, any JSON object, or JSON for a schema."""

    kind: Literal["text", "json_object", "json_schema"] = "text"
    schema: Any = None


TEXT_FORMAT = OutputFormat()


@attrs.frozen(kw_only=True)
class ReplySpec:
    """What a request asks of the reply, whatever its wire format.

    Attributes:
        seed: From :func:`request_seed`.
        max_tokens: The cap on output tokens (reasoning included), or ``None``.
        reply_tokens: The text length override (:data:`ReplyTokens`).
        tools: The functions offered.
        tool_choice: ``"none"``, ``"auto"``, ``"required"``, or ``"function"`` with
            ``forced_tool`` naming it.
        forced_tool: The function a ``"function"`` choice names.
        parallel_tool_calls: Whether one reply may call several functions.
        output_format: Free text or JSON.
        reasoning_effort: A key of :data:`REASONING_EFFORTS`, or ``None`` for no reasoning.
        reasoning_shown: Whether the reasoning is hidden (counted only), summarized (a few
            tokens of it streamed) or streamed in full.
        answers_tool_output: The last input is a tool result: with ``"auto"`` the model answers
            in text rather than calling again, so tool loops end.
    """

    seed: int
    max_tokens: int | None = None
    reply_tokens: ReplyTokens = None
    tools: tuple[Tool, ...] = ()
    tool_choice: Literal["none", "auto", "required", "function"] = "auto"
    forced_tool: str | None = None
    parallel_tool_calls: bool = True
    output_format: OutputFormat = TEXT_FORMAT
    reasoning_effort: str | None = None
    reasoning_shown: ReasoningShown = "hidden"
    answers_tool_output: bool = False


@attrs.frozen(kw_only=True)
class FunctionCall:
    """One planned function call; ``pieces`` are the streamed argument units."""

    call_id: str
    name: str
    pieces: tuple[str, ...]

    @property
    def arguments(self) -> str:
        """The arguments JSON as streamed (cut short when ``max_tokens`` ran out)."""
        return "".join(self.pieces)


@attrs.frozen(kw_only=True)
class Reply:
    """Everything one reply (one chat choice, or one response) will say.

    Attributes:
        seed: The seed of the message text.
        reasoning_hidden: Reasoning tokens billed but never shown.
        reasoning_pieces: Reasoning units streamed (a summary, or all of it).
        message_length: Units of the message (0 for none).
        json_pieces: The message's units when it is JSON; ``None`` for random words.
        calls: The function calls, in order.
        has_message: Whether there is a message at all (a reply with only calls, or whose
            reasoning used up ``max_tokens``, has none).
        finish_reason: ``"stop"`` when the model ended by itself, ``"tool_calls"`` when it
            called functions, ``"length"`` when ``max_tokens`` cut it.
    """

    seed: int
    reasoning_hidden: int = 0
    reasoning_pieces: tuple[str, ...] = ()
    message_length: int = 0
    json_pieces: tuple[str, ...] | None = None
    calls: tuple[FunctionCall, ...] = ()
    has_message: bool = True
    finish_reason: FinishReason = "stop"

    @property
    def reasoning_tokens(self) -> int:
        """All reasoning tokens, hidden and shown."""
        return self.reasoning_hidden + len(self.reasoning_pieces)

    @property
    def units(self) -> int:
        """Streamed units: reasoning pieces, message units and argument pieces."""
        return (
            len(self.reasoning_pieces)
            + self.message_length
            + sum(len(call.pieces) for call in self.calls)
        )

    @property
    def output_tokens(self) -> int:
        """Completion tokens billed: hidden reasoning plus every streamed unit."""
        return self.reasoning_hidden + self.units

    @property
    def capped(self) -> bool:
        """Whether ``max_tokens`` cut the reply."""
        return self.finish_reason == "length"

    def text_source(self) -> TextSource:
        """A fresh source of the message's units, from the first."""
        if self.json_pieces is not None:
            return PieceSource(self.json_pieces)
        return TokenSource(self.seed, self.message_length)

    def message_text(self) -> str:
        """The whole message text."""
        return "".join(self.text_source().take_text(self.message_length))

    def reasoning_text(self) -> str:
        """The whole shown reasoning."""
        return "".join(self.reasoning_pieces)


def natural_length(seed: int, model: ModelProfile) -> int:
    """The length a text reply has when nothing cuts it (uniform over the profile's range)."""
    return _derived(seed, "length").randint(
        model.natural_length - model.natural_length_spread,
        model.natural_length + model.natural_length_spread,
    )


def _sub_seed(seed: int, label: str) -> int:
    digest = hashlib.sha256(f"{seed}:{label}".encode()).digest()
    return int.from_bytes(digest[:16], "big")


def choice_seed(seed: int, index: int) -> int:
    """The seed of choice ``index`` of ``n``; choice 0 keeps the request's own seed."""
    return seed if index == 0 else _sub_seed(seed, f"choice:{index}")


def plan_reply(spec: ReplySpec, model: ModelProfile, *, index: int = 0) -> Reply:
    """Decide what the model says, from the seed alone (the same spec, the same reply).

    Order of output, as reasoning models produce it: reasoning, then function calls or a
    message. ``max_tokens`` caps the total in that order; whatever it cuts ends the reply with
    ``"length"``.

    Args:
        spec: The normalized request.
        model: The model's profile (natural length).
        index: The choice index (chat ``n``): each choice has its own seed.

    Returns:
        The plan.
    """
    seed = choice_seed(spec.seed, index)
    rng = _derived(seed, "plan")
    budget = spec.max_tokens if spec.max_tokens is not None else float("inf")

    hidden, shown = _reasoning(spec, seed, rng)
    if hidden + len(shown) >= budget and (hidden or shown):
        # Reasoning used everything: no answer at all. Exactly reaching the cap counts too: a
        # model that has not answered yet was not done.
        hidden = int(min(hidden, budget))
        shown = shown[: int(budget) - hidden]
        return Reply(
            seed=seed,
            reasoning_hidden=hidden,
            reasoning_pieces=shown,
            has_message=False,
            finish_reason="length",
        )
    budget -= hidden + len(shown)

    calls = _calls(spec, seed, rng)
    if calls:
        kept: list[FunctionCall] = []
        capped = False
        for call in calls:
            if len(call.pieces) > budget:
                capped = True
                if budget >= 1:
                    kept.append(attrs.evolve(call, pieces=call.pieces[: int(budget)]))
                break
            kept.append(call)
            budget -= len(call.pieces)
        return Reply(
            seed=seed,
            reasoning_hidden=hidden,
            reasoning_pieces=shown,
            calls=tuple(kept),
            has_message=False,
            finish_reason="length" if capped else "tool_calls",
        )

    if spec.output_format.kind != "text":
        schema = (
            spec.output_format.schema
            if spec.output_format.kind == "json_schema"
            else _JSON_OBJECT_SCHEMA
        )
        text = _compact(value_for_schema(schema, _derived(seed, "json")))
        pieces = split_pieces(text, _derived(seed, "pieces"))
        capped = len(pieces) > budget
        if capped:
            pieces = pieces[: int(budget)]
        return Reply(
            seed=seed,
            reasoning_hidden=hidden,
            reasoning_pieces=shown,
            message_length=len(pieces),
            json_pieces=pieces,
            finish_reason="length" if capped else "stop",
        )

    wanted: float
    if spec.reply_tokens == "max":
        wanted = float("inf") if spec.max_tokens is not None else natural_length(seed, model)
    elif spec.reply_tokens is not None:
        wanted = spec.reply_tokens
    else:
        wanted = natural_length(seed, model)
    capped = wanted > budget
    return Reply(
        seed=seed,
        reasoning_hidden=hidden,
        reasoning_pieces=shown,
        message_length=int(min(wanted, budget)),
        finish_reason="length" if capped else "stop",
    )


def _reasoning(spec: ReplySpec, seed: int, rng: random.Random) -> tuple[int, tuple[str, ...]]:
    span = REASONING_EFFORTS.get(spec.reasoning_effort or "")
    if span is None:
        return 0, ()
    total = rng.randint(*span)
    if spec.reasoning_shown == "hidden":
        return total, ()
    count = total if spec.reasoning_shown == "full" else min(total, rng.randint(*_SUMMARY_TOKENS))
    words = TokenSource(_sub_seed(seed, "reasoning"), count).take_text(count)
    return total - count, tuple(words)


def _calls(spec: ReplySpec, seed: int, rng: random.Random) -> tuple[FunctionCall, ...]:
    if not spec.tools or spec.tool_choice == "none":
        return ()
    by_name = {tool.name: tool for tool in spec.tools}
    if spec.tool_choice == "function":
        chosen = [by_name[spec.forced_tool]] if spec.forced_tool in by_name else []
    else:
        # The draw happens whatever the choice, so "auto" and "required" pick the same tools.
        calling = rng.random() < _AUTO_CALL_CHANCE
        if spec.tool_choice == "auto" and (spec.answers_tool_output or not calling):
            return ()
        most = min(_MAX_PARALLEL_CALLS, len(spec.tools)) if spec.parallel_tool_calls else 1
        chosen = rng.sample(list(spec.tools), rng.randint(1, most))
    calls = []
    for position, tool in enumerate(chosen):
        arguments_rng = _derived(seed, f"arguments:{position}")
        schema = tool.parameters if tool.parameters is not None else {"type": "object"}
        value = value_for_schema(schema, arguments_rng)
        if not isinstance(value, dict):
            value = {}  # parameters are an object schema; a broken one still gets an object
        arguments = _compact(value)
        calls.append(
            FunctionCall(
                call_id="call_" + "".join(rng.choices(_ID_ALPHABET, k=24)),
                name=tool.name,
                pieces=split_pieces(arguments, _derived(seed, f"pieces:{position}")),
            )
        )
    return tuple(calls)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def total_units(replies: Iterable[Reply]) -> int:
    """Streamed units of several replies (chat ``n``)."""
    return sum(reply.units for reply in replies)
