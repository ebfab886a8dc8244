# Tests of the token arithmetic done before sending: the budget's bound and the pool's estimate.
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from holysheep_trio import Message, pool
from holysheep_trio._tokens import (
    DEFAULT_COMPLETION_ESTIMATE,
    IMAGE_TOKEN_ALLOWANCE,
    REQUEST_OVERHEAD_TOKENS,
    TOOL_PROMPT_TOKENS,
    estimate_tokens,
    prompt_token_bound,
)
from holysheep_trio.simulator._wire import estimate_prompt_tokens

texts = st.text(max_size=300)
roles = st.sampled_from(["system", "developer", "user", "assistant"])
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": texts}), max_size=6)


def test_estimate_tokens_moved_and_still_importable_from_the_pool() -> None:
    # One function in one place; old imports keep working.
    assert pool.estimate_tokens is estimate_tokens
    assert pool.DEFAULT_COMPLETION_ESTIMATE == DEFAULT_COMPLETION_ESTIMATE
    assert estimate_tokens([{"role": "user", "content": "a" * 40}], max_tokens=100) == 114


@given(messages)
@example([{"role": "user", "content": "日本語のテキスト" * 20}])
@example([])
def test_the_bound_is_at_least_the_utf8_bytes_of_every_text(chat: list[dict[str, str]]) -> None:
    # Byte-level BPE never makes more tokens than bytes: the texts' bytes are the floor.
    texts_bytes = sum(len(message["content"].encode("utf-8")) for message in chat)
    bound = prompt_token_bound({"messages": chat})
    assert bound >= texts_bytes + REQUEST_OVERHEAD_TOKENS
    # ...and the bound is exactly the compact JSON of the prompt fields plus the overhead.
    exact = json.dumps({"messages": chat}, ensure_ascii=False, separators=(",", ":"))
    assert bound == len(exact.encode("utf-8")) + REQUEST_OVERHEAD_TOKENS


@given(messages)
def test_the_bound_covers_the_simulators_bill(chat: list[dict[str, str]]) -> None:
    # The simulator bills 3 + sum(4 + ceil(chars / 4)); the bound must never be below it, or a
    # budget test against the simulator's bill could overshoot.
    assert prompt_token_bound({"messages": chat}) >= estimate_prompt_tokens(chat)


def test_only_prompt_fields_count() -> None:
    chat = [{"role": "user", "content": "hi"}]
    base = prompt_token_bound({"messages": chat})
    assert prompt_token_bound({"messages": chat, "temperature": 0.7, "max_tokens": 99}) == base
    assert prompt_token_bound({"messages": chat, "model": "gpt-4.1", "stream": True}) == base
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    assert prompt_token_bound({"messages": chat, "response_format": schema}) > base
    assert prompt_token_bound({"messages": chat, "tool_choice": "auto"}) > base


def test_tools_add_the_hidden_tool_prompt() -> None:
    chat = [{"role": "user", "content": "weather?"}]
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    without = prompt_token_bound({"messages": chat})
    tools_bytes = len(json.dumps(tools, separators=(",", ":")).encode())
    with_tools = prompt_token_bound({"messages": chat, "tools": tools})
    # ",\"tools\":" is 9 bytes of framing
    assert with_tools == without + tools_bytes + 9 + TOOL_PROMPT_TOKENS
    assert prompt_token_bound({"messages": chat, "tools": []}) < with_tools


def test_every_image_part_gets_its_allowance() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}}
    text = {"type": "text", "text": "what is this?"}
    one = [{"role": "user", "content": [text, image]}]
    two = [{"role": "user", "content": [text, image, image]}]
    assert prompt_token_bound({"messages": one}) >= IMAGE_TOKEN_ALLOWANCE
    difference = prompt_token_bound({"messages": two}) - prompt_token_bound({"messages": one})
    assert difference == IMAGE_TOKEN_ALLOWANCE + len(json.dumps(image, separators=(",", ":"))) + 1


def test_responses_api_fields() -> None:
    request: dict[str, Any] = {
        "model": "gpt-4.1",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hello"}]},
            {"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y"}]},
        ],
        "text": {"format": {"type": "text"}},
    }
    bound = prompt_token_bound(request)
    assert bound >= len("Be brief.hello") + IMAGE_TOKEN_ALLOWANCE + REQUEST_OVERHEAD_TOKENS


def test_message_values_are_serialized_like_dicts() -> None:
    as_values = [Message(role="user", content="hi"), Message(role="assistant", content="yo")]
    as_dicts = [message.to_json() for message in as_values]
    assert prompt_token_bound({"messages": as_values}) == prompt_token_bound({"messages": as_dicts})


def test_unserializable_prompts_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="not JSON-serializable"):
        prompt_token_bound({"messages": [{"role": "user", "content": object()}]})
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(TypeError, match="not JSON-serializable"):
        prompt_token_bound({"messages": looped})
