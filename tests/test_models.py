# Tests of the value types: named constructors, shape checks, the text of a chunk, messages.
from __future__ import annotations

from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import given
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


_TEXT_OR_NONE = st.none() | st.text(max_size=5)
_DELTAS = st.fixed_dictionaries(
    {}, optional={"role": _TEXT_OR_NONE | st.integers(), "content": _TEXT_OR_NONE | st.integers()}
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
