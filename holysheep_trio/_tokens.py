# Token counts known before a request is sent: the budget's prompt bound and the pool's estimate.
"""Token arithmetic done before anything is sent, beside the wire formats it reads.

Two different questions, two functions:

- :func:`prompt_token_bound` answers "how many prompt tokens can this request be billed *at
  most*?" for budget reservations, which must never be too small. It is the UTF-8 byte length
  of the request's prompt-bearing fields serialized as compact JSON, plus documented allowances
  for what the body does not show (see below). Byte-level BPE tokenizers (OpenAI's ``o200k`` /
  ``cl100k``, Claude's, Llama-style ones, DeepSeek's) start from one symbol per byte and only
  ever *merge* symbols, so a text never has more tokens than UTF-8 bytes; JSON escaping only
  adds bytes (``\\n`` is two), and the JSON framing of each message (``{"role":"user",
  "content":""}``, 27 bytes) outweighs the few special tokens a chat template adds per message.
- :func:`estimate_tokens` answers "about how many tokens will this request use?" for the pool's
  tokens-per-minute buckets, which are corrected by the real usage afterwards: ~4 characters
  per token, OpenAI's rule of thumb.

What the bound adds on top of the bytes:

- :data:`REQUEST_OVERHEAD_TOKENS` per request, for the reply's priming tokens (OpenAI's
  counting recipe adds 3).
- :data:`TOOL_PROMPT_TOKENS` when ``tools`` (or the legacy ``functions``) are present: some
  providers add a hidden system prompt to enable tool use; the largest one documented is
  Anthropic's, up to 530 tokens (Claude 3 Opus; 346 for the Claude 4 family), per
  https://docs.anthropic.com/en/docs/build-with-claude/tool-use (pricing section).
- :data:`IMAGE_TOKEN_ALLOWANCE` per image part: an image given by URL is a few bytes in the
  body but is billed by its size. Published formulas: OpenAI tile-based models at most
  85 + 170 x 8 tiles = 1,445 tokens (images are scaled to fit 2048 x 768); Anthropic about
  1,600 tokens at most (larger images are scaled down); Gemini 258 tokens per 768-pixel tile.
  Very large images sent to Gemini may exceed the allowance.

Not bounded (the body does not contain them): server-side state referenced by id
(``previous_response_id``, ``conversation``, stored ``prompt`` templates) and files referenced
or attached (``file_id``, PDF pages are billed as images per page).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = [
    "CHAT_PROMPT_FIELDS",
    "DEFAULT_COMPLETION_ESTIMATE",
    "IMAGE_TOKEN_ALLOWANCE",
    "REQUEST_OVERHEAD_TOKENS",
    "RESPONSES_PROMPT_FIELDS",
    "TOOL_PROMPT_TOKENS",
    "estimate_tokens",
    "prompt_token_bound",
]

#: Completion tokens reserved when a request sets no ``max_tokens``.
DEFAULT_COMPLETION_ESTIMATE = 1024

#: Fields of a chat-completions request that reach the model as prompt tokens.
CHAT_PROMPT_FIELDS: Final = (
    "messages",
    "tools",
    "tool_choice",
    "response_format",
    "functions",
    "function_call",
)
#: Fields of a Responses API request that reach the model as prompt tokens.
RESPONSES_PROMPT_FIELDS: Final = ("input", "instructions", "tools", "tool_choice", "text")

#: Tokens added to every bound: the reply's priming (OpenAI's recipe counts 3), with room.
REQUEST_OVERHEAD_TOKENS: Final = 16
#: Tokens added when the request has tools: a provider's hidden tool-use system prompt.
TOOL_PROMPT_TOKENS: Final = 600
#: Tokens added per image part, whose body bytes (a URL) say nothing about its billed size.
IMAGE_TOKEN_ALLOWANCE: Final = 4096

_IMAGE_PART_TYPES: Final = frozenset({"image_url", "input_image", "image"})
_SEPARATORS: Final = (",", ":")


def _jsonable(value: object) -> object:
    # Message and ToolCall values have a `to_json()`; anything else is the caller's bug.
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _count_images(value: object) -> int:
    """Image parts anywhere in ``value`` (content parts are nested in messages or input items)."""
    if isinstance(value, Mapping):
        found = 1 if value.get("type") in _IMAGE_PART_TYPES else 0
        return found + sum(_count_images(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(_count_images(item) for item in value)
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return _count_images(to_json())
    return 0


def prompt_token_bound(request: Mapping[str, Any]) -> int:
    """An upper bound on the prompt tokens a request can be billed, for budget reservations.

    The UTF-8 byte length of the request's prompt-bearing fields (chat completions:
    :data:`CHAT_PROMPT_FIELDS`; Responses API: :data:`RESPONSES_PROMPT_FIELDS`) serialized as
    compact JSON, plus :data:`REQUEST_OVERHEAD_TOKENS`, plus :data:`TOOL_PROMPT_TOKENS` when
    there are tools, plus :data:`IMAGE_TOKEN_ALLOWANCE` per image part. See the module
    docstring for why bytes bound tokens and what is not covered.

    Args:
        request: The request's JSON object (or the keyword arguments it is built from);
            messages may be :class:`~holysheep_trio.Message` values. Other fields (``model``,
            ``max_tokens``, ``temperature``...) are ignored.

    Returns:
        The bound, in tokens.

    Raises:
        TypeError: A prompt field is not JSON-serializable.
    """
    prompt = {
        name: request[name]
        for name in (*CHAT_PROMPT_FIELDS, *RESPONSES_PROMPT_FIELDS)
        if request.get(name) is not None
    }
    try:
        text = json.dumps(prompt, ensure_ascii=False, separators=_SEPARATORS, default=_jsonable)
    except ValueError as exc:  # circular references, NaN is allowed by default
        raise TypeError(f"the prompt is not JSON-serializable: {exc}") from None
    bound = len(text.encode("utf-8")) + REQUEST_OVERHEAD_TOKENS
    if prompt.get("tools") or prompt.get("functions"):
        bound += TOOL_PROMPT_TOKENS
    return bound + IMAGE_TOKEN_ALLOWANCE * _count_images(prompt)


def choice_count(params: Mapping[str, Any]) -> int:
    """How many choices a chat request asks for (``n``; 1 when absent or not a positive int)."""
    n = params.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def completion_token_bound(params: Mapping[str, Any]) -> int | None:
    """The most output tokens a chat request can be billed, or None when it sets no limit.

    ``max_completion_tokens`` when given (the newer name wins, as the API and the simulator
    decide), else ``max_tokens``, times ``n``: every choice is generated and billed up to the
    limit. The budget's reservation, the pool's TPM estimate and the automatic total deadline
    all use it.
    """
    limit = params.get("max_completion_tokens")
    if limit is None:
        limit = params.get("max_tokens")
    if isinstance(limit, bool) or not isinstance(limit, int):
        return None
    return max(0, limit) * choice_count(params)


def estimate_tokens(messages: Iterable[Any], *, max_tokens: int | None = None) -> int:
    """A cheap upper-ish estimate of a request's tokens: prompt characters / 4, plus completion.

    The 4-characters-per-token rule of thumb is OpenAI's for English text; each message adds 4
    tokens of framing. The estimate only sizes the TPM reservation, which is corrected by the
    real usage when the stream ends. (Budgets need a true bound: :func:`prompt_token_bound`.)

    Args:
        messages: Chat messages, as mappings (``{"role": ..., "content": ...}``) or objects with a
            ``content`` attribute; content may be a string or a list of parts with ``text``.
        max_tokens: The completion limit; ``None`` reserves
            :data:`DEFAULT_COMPLETION_ESTIMATE`.

    Returns:
        The estimated total tokens (at least 1).
    """
    characters = 0
    count = 0
    for message in messages:
        count += 1
        content = (
            message.get("content")
            if isinstance(message, Mapping)
            else getattr(message, "content", None)
        )
        if isinstance(content, str):
            characters += len(content)
        elif isinstance(content, Iterable):
            for part in content:
                text = part.get("text") if isinstance(part, Mapping) else getattr(part, "text", "")
                if isinstance(text, str):
                    characters += len(text)
    completion = DEFAULT_COMPLETION_ESTIMATE if max_tokens is None else max(0, max_tokens)
    return max(1, math.ceil(characters / 4) + 4 * count + completion)
