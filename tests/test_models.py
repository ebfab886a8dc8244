# Tests of the value types: named constructors, shape checks, the text of a chunk, messages.
from __future__ import annotations

from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import holysheep_trio as hs

CHUNK: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1700000000,
    "model": "gpt-4.1",
    "system_fingerprint": "fp_1",
    "choices": [
        {"index": 0, "delta": {"content": "Hello"}, "logprobs": None, "finish_reason": None}
    ],
    "usage": None,
}


def test_chunk_from_json() -> None:
    chunk = hs.ChatChunk.from_json(CHUNK)
    assert chunk.id == "chatcmpl-1"
    assert chunk.model == "gpt-4.1"
    assert chunk.created == 1700000000
    assert chunk.system_fingerprint == "fp_1"
    assert chunk.text == "Hello"
    assert chunk.has_output
    assert chunk.usage is None
    assert chunk.choices == (hs.Choice(index=0, delta=hs.Delta(content="Hello")),)


def test_role_chunk_has_no_output() -> None:
    chunk = hs.ChatChunk.from_json(
        {**CHUNK, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    )
    assert chunk.text == ""
    assert not chunk.has_output
    assert chunk.choices[0].delta.role == "assistant"


def test_usage_chunk() -> None:
    payload = {
        **CHUNK,
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
    chunk = hs.ChatChunk.from_json(payload)
    assert chunk.text == ""
    assert chunk.usage == hs.Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7)
    assert hs.Usage.from_json({"prompt_tokens": 2, "completion_tokens": 3}).total_tokens == 5


def test_text_is_choice_zero() -> None:
    payload = {
        **CHUNK,
        "choices": [
            {"index": 1, "delta": {"content": "other"}},
            {"index": 0, "delta": {"content": "mine"}},
        ],
    }
    assert hs.ChatChunk.from_json(payload).text == "mine"
    assert hs.ChatChunk.from_json({"choices": [{"index": 1, "delta": {"content": "x"}}]}).text == ""


def test_tool_call_delta() -> None:
    payload = {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"ci'},
                        }
                    ]
                },
            }
        ]
    }
    chunk = hs.ChatChunk.from_json(payload)
    assert chunk.has_output
    (call,) = chunk.choices[0].delta.tool_calls
    assert call == hs.ToolCallDelta(
        index=0, id="call_1", type="function", name="get_weather", arguments='{"ci'
    )


@pytest.mark.parametrize(
    "payload",
    [
        [],
        "chunk",
        {"choices": "nope"},
        {"choices": [5]},
        {"choices": [{"delta": []}]},
        {"choices": [{"delta": {"content": 5}}]},
        {"choices": [{"index": "0", "delta": {}}]},
        {"choices": [{"index": True, "delta": {}}]},
        {"choices": [{"delta": {"tool_calls": {"a": 1}}}]},
        {"choices": [{"delta": {"tool_calls": [1]}}]},
        {"choices": [{"delta": {"tool_calls": [{"function": "f"}]}}]},
        {"choices": [], "usage": []},
        {"choices": [], "usage": {"prompt_tokens": "3"}},
        {"choices": [], "usage": {"prompt_tokens_details": 5}},
        {"choices": [], "usage": {"prompt_tokens_details": {"cached_tokens": "3"}}},
        {"choices": [], "usage": {"completion_tokens_details": {"reasoning_tokens": 1.5}}},
        {"choices": [], "usage": {"prompt_cache_hit_tokens": "9"}},
        {"choices": [{"delta": {"reasoning_content": 5}}]},
        {"choices": [{"delta": {"reasoning": {"text": "x"}}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": "0"}]}}]},
        {"id": 5},
    ],
)
def test_bad_shapes_raise_protocol_error(payload: object) -> None:
    with pytest.raises(hs.StreamProtocolError) as info:
        hs.ChatChunk.from_json(payload)
    assert info.value.kind == "parse"


def test_bad_shape_error_names_the_field_not_a_dict_repr() -> None:
    # N1: `.data` is for the offending bytes, which only the stream decoder has (see
    # test_wire.py); a direct `from_json` names the field and leaves `.data` empty.
    with pytest.raises(hs.StreamProtocolError) as info:
        hs.ChatChunk.from_json({"id": "c1", "created": 1.5, "choices": []})
    assert info.value.message == "unexpected chunk shape: 'created' is not an integer (got float)"
    assert info.value.data == b""


def test_values_are_frozen() -> None:
    chunk = hs.ChatChunk.from_json(CHUNK)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        chunk.id = "x"  # type: ignore[misc]
    assert attrs.evolve(hs.Completion(text="a"), text="b").text == "b"


def test_message_to_json() -> None:
    assert hs.Message(role="user", content="hi").to_json() == {"role": "user", "content": "hi"}
    call = hs.ToolCall(id="call_1", name="f", arguments="{}")
    assert hs.Message(role="assistant", tool_calls=(call,)).to_json() == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    assert hs.Message(role="tool", content="18C", tool_call_id="call_1", name="f").to_json() == {
        "role": "tool",
        "content": "18C",
        "name": "f",
        "tool_call_id": "call_1",
    }


# Recorded shapes of reasoning deltas: DeepSeek's `reasoning_content` (its first chunk carries
# an empty one), OpenRouter's `reasoning` plus `reasoning_details`, vLLM's `reasoning`.
DEEPSEEK_FIRST = {
    "id": "0f5c4a1e-6a7d-4c3b-9b1e-3f0e2f6c9d11",
    "object": "chat.completion.chunk",
    "created": 1737000000,
    "model": "deepseek-reasoner",
    "system_fingerprint": "fp_7e73fd9a08_prod0225",
    "choices": [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": None, "reasoning_content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ],
}
DEEPSEEK_REASONING = {
    **DEEPSEEK_FIRST,
    "choices": [
        {
            "index": 0,
            "delta": {"content": None, "reasoning_content": "Okay, the user"},
            "logprobs": None,
            "finish_reason": None,
        }
    ],
}
OPENROUTER_REASONING = {
    "id": "gen-1745312345-abc",
    "provider": "Anthropic",
    "model": "anthropic/claude-3.7-sonnet:thinking",
    "object": "chat.completion.chunk",
    "created": 1745312345,
    "choices": [
        {
            "index": 0,
            "delta": {
                "role": "assistant",
                "content": "",
                "reasoning": "Let me think",
                "reasoning_details": [
                    {
                        "type": "reasoning.text",
                        "text": "Let me think",
                        "format": "unknown",
                        "index": 0,
                    }
                ],
            },
            "finish_reason": None,
            "native_finish_reason": None,
            "logprobs": None,
        }
    ],
}


def test_deepseek_reasoning_content() -> None:
    first = hs.ChatChunk.from_json(DEEPSEEK_FIRST)
    assert first.reasoning == ""
    assert not first.has_output
    chunk = hs.ChatChunk.from_json(DEEPSEEK_REASONING)
    assert chunk.reasoning == "Okay, the user"
    assert chunk.text == ""
    assert chunk.has_output  # reasoning is progress: first-token deadline, retries, idle
    assert chunk.choices[0].delta == hs.Delta(reasoning="Okay, the user")


def test_openrouter_reasoning_and_details() -> None:
    chunk = hs.ChatChunk.from_json(OPENROUTER_REASONING)
    assert chunk.reasoning == "Let me think"  # not doubled by reasoning_details
    assert chunk.has_output
    # Without `reasoning`, the readable details are the reasoning text.
    delta = {
        "reasoning_details": [
            {"type": "reasoning.summary", "summary": "Plan: ", "format": "openai-responses-v1"},
            {"type": "reasoning.text", "text": "add them", "signature": "sig", "index": 1},
            {"type": "reasoning.encrypted", "data": "gAAAA", "id": "rs_1", "index": 2},
            "garbage",
        ]
    }
    chunk = hs.ChatChunk.from_json({"choices": [{"index": 0, "delta": delta}]})
    assert chunk.reasoning == "Plan: add them"
    # Encrypted reasoning alone carries no text, so it is not output.
    delta = {"reasoning": None, "reasoning_details": [{"type": "reasoning.encrypted", "data": "x"}]}
    chunk = hs.ChatChunk.from_json({"choices": [{"index": 0, "delta": delta}]})
    assert chunk.reasoning == ""
    assert not chunk.has_output


def test_both_reasoning_fields_give_one_text() -> None:
    # vLLM sent the same text under both names while renaming the field.
    delta = {"reasoning": "step", "reasoning_content": "step"}
    chunk = hs.ChatChunk.from_json({"choices": [{"index": 0, "delta": delta}]})
    assert chunk.reasoning == "step"


def test_usage_details_openai() -> None:
    usage = hs.Usage.from_json(
        {
            "prompt_tokens": 19,
            "completion_tokens": 10,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 4,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
    )
    assert usage.prompt_tokens_details == hs.PromptTokensDetails(cached_tokens=0, audio_tokens=0)
    assert usage.completion_tokens_details == hs.CompletionTokensDetails(
        reasoning_tokens=4,
        audio_tokens=0,
        accepted_prediction_tokens=0,
        rejected_prediction_tokens=0,
    )


def test_usage_details_deepseek_and_openrouter() -> None:
    deepseek = hs.Usage.from_json(
        {
            "prompt_tokens": 20,
            "completion_tokens": 7,
            "total_tokens": 27,
            "prompt_tokens_details": {"cached_tokens": 12},
            "prompt_cache_hit_tokens": 12,
            "prompt_cache_miss_tokens": 8,
            "completion_tokens_details": {"reasoning_tokens": 5},
        }
    )
    assert deepseek.prompt_tokens_details == hs.PromptTokensDetails(cached_tokens=12)
    assert deepseek.completion_tokens_details == hs.CompletionTokensDetails(reasoning_tokens=5)
    # Older DeepSeek deployments only send the top-level cache counts.
    older = hs.Usage.from_json(
        {
            "prompt_tokens": 13,
            "completion_tokens": 300,
            "total_tokens": 313,
            "prompt_cache_hit_tokens": 9,
            "prompt_cache_miss_tokens": 4,
        }
    )
    assert older.prompt_tokens_details == hs.PromptTokensDetails(cached_tokens=9)
    assert older.completion_tokens_details is None
    openrouter = hs.Usage.from_json(
        {
            "prompt_tokens": 1200,
            "completion_tokens": 30,
            "total_tokens": 1230,
            "cost": 0.0021,
            "is_byok": False,
            "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 50},
            "cost_details": {"upstream_inference_cost": None},
            "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": 0},
        }
    )
    assert openrouter.prompt_tokens_details == hs.PromptTokensDetails(
        cached_tokens=1000, cache_write_tokens=50
    )
    assert openrouter.completion_tokens_details == hs.CompletionTokensDetails(reasoning_tokens=0)
    # vLLM sends null details; plain usage stays equal to the old three counts.
    vllm = hs.Usage.from_json(
        {
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "total_tokens": 7,
            "prompt_tokens_details": None,
        }
    )
    assert vllm == hs.Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7)


def test_tool_call_delta_without_index() -> None:
    # Gemini's OpenAI-compatible endpoint: no `index`, an `extra_content` we ignore.
    call = {
        "extra_content": {"google": {"thought_signature": "c2ln"}},
        "function": {"arguments": '{"location":"Sydney"}', "name": "get_weather"},
        "id": "function-call-1",
        "type": "function",
    }
    assert hs.ToolCallDelta.from_json(call) == hs.ToolCallDelta(
        index=None,
        id="function-call-1",
        type="function",
        name="get_weather",
        arguments='{"location":"Sydney"}',
    )


_TEXT_OR_NONE = st.none() | st.text(max_size=5)
_REASONING_DETAILS = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["reasoning.text", "reasoning.encrypted"])},
        optional={"text": _TEXT_OR_NONE, "data": st.text(max_size=3)},
    ),
    max_size=2,
)
_DELTAS = st.fixed_dictionaries(
    {},
    optional={
        "role": _TEXT_OR_NONE | st.integers(),
        "content": _TEXT_OR_NONE | st.integers(),
        "reasoning_content": _TEXT_OR_NONE | st.integers(),
        "reasoning": _TEXT_OR_NONE | st.integers(),
        "reasoning_details": st.none() | _REASONING_DETAILS,
    },
)
_CHOICES = st.fixed_dictionaries(
    {"delta": _DELTAS | st.none()},
    optional={
        "index": st.integers(0, 3) | st.booleans(),
        "finish_reason": _TEXT_OR_NONE,
        "logprobs": st.none(),
    },
)
_CHUNKS = st.fixed_dictionaries(
    {"choices": st.lists(_CHOICES, max_size=3)},
    optional={
        "id": st.text(max_size=5) | st.none(),
        "model": st.text(max_size=5),
        "created": st.integers(0, 2**40) | st.booleans(),
        "system_fingerprint": _TEXT_OR_NONE,
        "usage": st.none(),
        "object": st.just("chat.completion.chunk"),
    },
)


@given(_CHUNKS)
@example({"choices": [{"delta": {"content": "x"}}]})  # a delta of content alone
@example({"choices": [{"delta": {"content": 1}}]})
@example({"choices": [{"delta": {"content": None}}]})
@example({"choices": [{"delta": {"tool_calls": [{"index": 0}]}}]})
def test_fast_path_builds_what_the_careful_path_builds(payload: dict[str, Any]) -> None:
    """`from_json` on a dict may take the fast path; on a read-only mapping it never does."""
    try:
        careful: hs.ChatChunk | Exception = hs.ChatChunk.from_json(MappingProxyType(payload))
    except hs.StreamProtocolError as exc:
        careful = exc
    if isinstance(careful, Exception):
        with pytest.raises(hs.StreamProtocolError):
            hs.ChatChunk.from_json(payload)
    else:
        fast = hs.ChatChunk.from_json(payload)
        assert fast == careful
        assert repr(fast) == repr(careful)
        assert hash(fast) == hash(careful)
