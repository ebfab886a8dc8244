# Recorded Responses API streams (OpenAI and compatible servers), as test vectors.
"""Responses API streams as servers send them, event by event.

The OpenAI streams follow the event and object shapes of the API reference ("Streaming
events") and the official SDK's types, with the extra fields real responses carry (so that
"unknown fields are ignored" is exercised). The peers' variants reproduce what their servers
emit where it differs from OpenAI:

- Ollama (``openai/responses.go``): reasoning summary deltas without a
  ``reasoning_summary_part.added``, ``function_call_arguments.done`` without ``name``.
- vLLM (gpt-oss): ``response.reasoning_part.added/done`` and ``response.reasoning_text.*``.
- LM Studio: the reasoning comes whole in one ``response.reasoning_text.done``, no deltas.
- xAI: ``response.reasoning_text.delta`` without a part event.
- LiteLLM and other relays: no ``sequence_number``; ``response.done`` as the terminal event;
  ``data: [DONE]`` after it.
"""

from __future__ import annotations

import json
from typing import Any

Event = dict[str, Any]

MODEL = "gpt-4.1-2025-04-14"


def response_object(
    status: str,
    output: list[dict[str, Any]] | None = None,
    *,
    response_id: str = "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
    usage: dict[str, Any] | None = None,
    model: str = MODEL,
    **extra: Any,
) -> dict[str, Any]:
    """A response object with the fields OpenAI sends."""
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": 1741476542,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": model,
        "output": output or [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": None,
        "service_tier": "auto",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }
    body.update(extra)
    return body


def usage(input_tokens: int, output_tokens: int, *, cached: int = 0, reasoning: int = 0) -> dict:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


def numbered(events: list[Event]) -> list[Event]:
    """The events with ``sequence_number`` 0, 1, 2, ... (as OpenAI numbers them)."""
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


def sse_bytes(events: list[Event], *, event_lines: bool = True, trailer: bytes = b"") -> bytes:
    """The stream on the wire: ``event: <type>`` and ``data: <json>`` per event."""
    out = []
    for event in events:
        data = json.dumps(event, separators=(",", ":")).encode()
        if event_lines:
            out.append(b"event: " + str(event.get("type", "message")).encode() + b"\n")
        out.append(b"data: " + data + b"\n\n")
    return b"".join(out) + trailer


# --------------------------------------------------------------------------- OpenAI: text

MSG_ID = "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b"
TEXT_PIECES = ["In", " a", " shimmering", " forest", ",", " a", " unicorn", " named", " Luna", "."]
TEXT = "".join(TEXT_PIECES)


def _message(text: str, status: str = "completed", msg_id: str = MSG_ID) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "status": status,
        "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}],
        "role": "assistant",
    }


def text_stream(pieces: list[str] = TEXT_PIECES, *, status: str = "completed") -> list[Event]:
    text = "".join(pieces)
    in_progress = response_object("in_progress")
    terminal_type = "response.completed" if status == "completed" else "response.incomplete"
    terminal = response_object(
        status,
        [_message(text, status)],
        usage=usage(36, len(pieces)),
        incomplete_details={"reason": "max_output_tokens"} if status == "incomplete" else None,
    )
    return numbered(
        [
            {"type": "response.created", "response": in_progress},
            {"type": "response.in_progress", "response": in_progress},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {
                    "id": MSG_ID,
                    "type": "message",
                    "status": "in_progress",
                    "content": [],
                    "role": "assistant",
                },
            },
            {
                "type": "response.content_part.added",
                "item_id": MSG_ID,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""},
            },
            *[
                {
                    "type": "response.output_text.delta",
                    "item_id": MSG_ID,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": piece,
                    "logprobs": [],
                    "obfuscation": "sTQx",
                }
                for piece in pieces
            ],
            {
                "type": "response.output_text.done",
                "item_id": MSG_ID,
                "output_index": 0,
                "content_index": 0,
                "text": text,
                "logprobs": [],
            },
            {
                "type": "response.content_part.done",
                "item_id": MSG_ID,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": text},
            },
            {
                "type": "response.output_item.done",
                "output_index": 0,
                "item": _message(text, status),
            },
            {"type": terminal_type, "response": terminal},
        ]
    )


OPENAI_TEXT = text_stream()
OPENAI_INCOMPLETE = text_stream(["The", " answer", " is"], status="incomplete")


# --------------------------------------------------------------------------- OpenAI: tools

ARGS_PARIS = '{"location":"Paris, France","unit":"celsius"}'
ARGS_TOKYO = '{"location":"Tokyo, Japan","unit":"celsius"}'
TOOLS_RESPONSE_ID = "resp_68a1f0e2c3d48190a0bd6e7f9c4b2a1b0c3d4e5f6a7b8c9d"


def _call(index: int, args: str, status: str) -> dict[str, Any]:
    return {
        "id": f"fc_68a1f0e3{index}d2c8190b5a4e3f2a1b0c9d8",
        "type": "function_call",
        "status": status,
        "arguments": args if status == "completed" else "",
        "call_id": f"call_{index}a9XkPqR7sT2uV4wY6zB8cD",
        "name": "get_weather",
    }


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def tools_stream() -> list[Event]:
    events: list[Event] = [
        {
            "type": "response.created",
            "response": response_object("in_progress", response_id=TOOLS_RESPONSE_ID),
        },
        {
            "type": "response.in_progress",
            "response": response_object("in_progress", response_id=TOOLS_RESPONSE_ID),
        },
    ]
    for index, args in enumerate([ARGS_PARIS, ARGS_TOKYO]):
        item_id = _call(index, args, "completed")["id"]
        events.append(
            {
                "type": "response.output_item.added",
                "output_index": index,
                "item": _call(index, args, "in_progress"),
            }
        )
        events += [
            {
                "type": "response.function_call_arguments.delta",
                "item_id": item_id,
                "output_index": index,
                "delta": piece,
                "obfuscation": "Xy",
            }
            for piece in _pieces(args, 3)  # split across many deltas
        ]
        events.append(
            {
                "type": "response.function_call_arguments.done",
                "item_id": item_id,
                "output_index": index,
                "name": "get_weather",
                "arguments": args,
            }
        )
        events.append(
            {
                "type": "response.output_item.done",
                "output_index": index,
                "item": _call(index, args, "completed"),
            }
        )
    events.append(
        {
            "type": "response.completed",
            "response": response_object(
                "completed",
                [_call(0, ARGS_PARIS, "completed"), _call(1, ARGS_TOKYO, "completed")],
                response_id=TOOLS_RESPONSE_ID,
                usage=usage(291, 46),
                tools=[
                    {
                        "type": "function",
                        "name": "get_weather",
                        "description": "Current weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"location": {"type": "string"}},
                        },
                        "strict": True,
                    }
                ],
            ),
        }
    )
    return numbered(events)


OPENAI_TOOLS = tools_stream()


# --------------------------------------------------------------------------- OpenAI: reasoning

RS_ID = "rs_6876cf02e0bc8192b74af0fb64b715ff06fa2fcced15a5ac"
SUMMARY_PIECES = [
    "**Comparing",
    " decimals**\n\n",
    "9.8",
    " is",
    " 9.80",
    ", larger",
    " than",
    " 9.11.",
]
SUMMARY = "".join(SUMMARY_PIECES)
ANSWER = "9.8 is larger than 9.11."


def reasoning_stream() -> list[Event]:
    msg_id = "msg_6876cf054f58819284ecc1058131305506fa2fcced15a5ac"
    reasoning_done = {
        "id": RS_ID,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": SUMMARY}],
        "encrypted_content": "gAAAAABodsgE8Ay5hNnYSbKTWk",
    }
    events: list[Event] = [
        {
            "type": "response.created",
            "response": response_object("in_progress", model="o4-mini-2025-04-16"),
        },
        {
            "type": "response.in_progress",
            "response": response_object("in_progress", model="o4-mini-2025-04-16"),
        },
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"id": RS_ID, "type": "reasoning", "summary": [], "encrypted_content": "gAAAA"},
        },
        {
            "type": "response.reasoning_summary_part.added",
            "item_id": RS_ID,
            "output_index": 0,
            "summary_index": 0,
            "part": {"type": "summary_text", "text": ""},
        },
        *[
            {
                "type": "response.reasoning_summary_text.delta",
                "item_id": RS_ID,
                "output_index": 0,
                "summary_index": 0,
                "delta": piece,
                "obfuscation": "a1",
            }
            for piece in SUMMARY_PIECES
        ],
        {
            "type": "response.reasoning_summary_text.done",
            "item_id": RS_ID,
            "output_index": 0,
            "summary_index": 0,
            "text": SUMMARY,
        },
        {
            "type": "response.reasoning_summary_part.done",
            "item_id": RS_ID,
            "output_index": 0,
            "summary_index": 0,
            "part": {"type": "summary_text", "text": SUMMARY},
        },
        {"type": "response.output_item.done", "output_index": 0, "item": reasoning_done},
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {
                "id": msg_id,
                "type": "message",
                "status": "in_progress",
                "content": [],
                "role": "assistant",
            },
        },
        {
            "type": "response.content_part.added",
            "item_id": msg_id,
            "output_index": 1,
            "content_index": 0,
            "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""},
        },
        *[
            {
                "type": "response.output_text.delta",
                "item_id": msg_id,
                "output_index": 1,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
            }
            for piece in _pieces(ANSWER, 4)
        ],
        {
            "type": "response.output_text.done",
            "item_id": msg_id,
            "output_index": 1,
            "content_index": 0,
            "text": ANSWER,
            "logprobs": [],
        },
        {
            "type": "response.content_part.done",
            "item_id": msg_id,
            "output_index": 1,
            "content_index": 0,
            "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ANSWER},
        },
        {
            "type": "response.output_item.done",
            "output_index": 1,
            "item": _message(ANSWER, msg_id=msg_id),
        },
        {
            "type": "response.completed",
            "response": response_object(
                "completed",
                [reasoning_done, _message(ANSWER, msg_id=msg_id)],
                model="o4-mini-2025-04-16",
                usage=usage(17, 380, reasoning=320),
                reasoning={"effort": "medium", "summary": "detailed"},
            ),
        },
    ]
    return numbered(events)


OPENAI_REASONING = reasoning_stream()


# --------------------------------------------------------------------------- OpenAI: refusal

REFUSAL = "I'm sorry, but I can't help with that."


def refusal_stream() -> list[Event]:
    part = {"type": "refusal", "refusal": REFUSAL}
    item = {
        "id": MSG_ID,
        "type": "message",
        "status": "completed",
        "content": [part],
        "role": "assistant",
    }
    return numbered(
        [
            {"type": "response.created", "response": response_object("in_progress")},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "status": "in_progress", "content": []},
            },
            {
                "type": "response.content_part.added",
                "item_id": MSG_ID,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "refusal", "refusal": ""},
            },
            *[
                {
                    "type": "response.refusal.delta",
                    "item_id": MSG_ID,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": piece,
                }
                for piece in _pieces(REFUSAL, 7)
            ],
            {
                "type": "response.refusal.done",
                "item_id": MSG_ID,
                "output_index": 0,
                "content_index": 0,
                "refusal": REFUSAL,
            },
            {
                "type": "response.content_part.done",
                "item_id": MSG_ID,
                "output_index": 0,
                "content_index": 0,
                "part": part,
            },
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {
                "type": "response.completed",
                "response": response_object("completed", [item], usage=usage(20, 10)),
            },
        ]
    )


OPENAI_REFUSAL = refusal_stream()


# --------------------------------------------------------------------------- failures

FAILED_AFTER_OUTPUT = numbered(
    [
        *[event for event in text_stream(["Once", " upon"]) if not event["type"].endswith("done")][
            :6
        ],
        {
            "type": "response.failed",
            "response": response_object(
                "failed",
                [_message("Once upon", "incomplete")],
                error={"code": "server_error", "message": "The model produced invalid content."},
            ),
        },
    ]
)

ERROR_EVENT = numbered(
    [
        {"type": "response.created", "response": response_object("in_progress")},
        {"type": "response.in_progress", "response": response_object("in_progress")},
        {
            "type": "error",
            "code": "rate_limit_exceeded",
            "message": "Rate limit reached for gpt-4.1 on tokens per min (TPM).",
            "param": None,
        },
    ]
)


# --------------------------------------------------------------------------- unknown events

UNKNOWN_EVENTS = numbered(
    [
        *[
            {key: value for key, value in event.items() if key != "sequence_number"}
            for event in OPENAI_TEXT[:4]
        ],
        {
            "type": "response.web_search_call.in_progress",
            "output_index": 5,
            "item_id": "ws_1",
        },
        {"type": "keepalive"},
        *[
            {key: value for key, value in event.items() if key != "sequence_number"}
            for event in OPENAI_TEXT[4:-1]
        ],
        {
            "type": "response.output_text.annotation.added",
            "item_id": MSG_ID,
            "output_index": 0,
            "content_index": 0,
            "annotation_index": 0,
            "annotation": {
                "type": "url_citation",
                "url": "https://example.com",
                "start_index": 0,
                "end_index": 2,
            },
        },
        {key: value for key, value in OPENAI_TEXT[-1].items() if key != "sequence_number"},
    ]
)


# --------------------------------------------------------------------------- peers

OLLAMA_THINKING = "The user wants a greeting."
OLLAMA_ARGS = '{"city":"Paris"}'


def ollama_stream() -> list[Event]:
    """Ollama: summary deltas with no part events, arguments done without a name."""
    rs_id, fc_id = "rs_482913", "fc_771204_0"
    call = {
        "id": fc_id,
        "type": "function_call",
        "status": "completed",
        "call_id": "call_n3vb0p2q",
        "name": "get_weather",
        "arguments": OLLAMA_ARGS,
    }
    reasoning = {
        "id": rs_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": OLLAMA_THINKING}],
        "encrypted_content": OLLAMA_THINKING,
    }
    base = response_object("in_progress", response_id="resp_123456", model="qwen3:8b", store=False)
    return numbered(
        [
            {"type": "response.created", "response": base},
            {"type": "response.in_progress", "response": base},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {"id": rs_id, "type": "reasoning", "summary": []},
            },
            *[
                {
                    "type": "response.reasoning_summary_text.delta",
                    "item_id": rs_id,
                    "output_index": 0,
                    "summary_index": 0,
                    "delta": piece,
                }
                for piece in _pieces(OLLAMA_THINKING, 5)
            ],
            {
                "type": "response.reasoning_summary_text.done",
                "item_id": rs_id,
                "output_index": 0,
                "summary_index": 0,
                "text": OLLAMA_THINKING,
            },
            {"type": "response.output_item.done", "output_index": 0, "item": reasoning},
            {
                "type": "response.output_item.added",
                "output_index": 1,
                "item": {**call, "status": "in_progress", "arguments": ""},
            },
            {
                "type": "response.function_call_arguments.delta",
                "item_id": fc_id,
                "output_index": 1,
                "delta": OLLAMA_ARGS,
            },
            {
                "type": "response.function_call_arguments.done",
                "item_id": fc_id,
                "output_index": 1,
                "arguments": OLLAMA_ARGS,
            },
            {"type": "response.output_item.done", "output_index": 1, "item": call},
            {
                "type": "response.completed",
                "response": {
                    **base,
                    "status": "completed",
                    "output": [reasoning, call],
                    "usage": usage(25, 14),
                },
            },
        ]
    )


OLLAMA = ollama_stream()

VLLM_REASONING = "The user says hello. Respond politely."
VLLM_ANSWER = "Hello! How can I help?"


def vllm_stream() -> list[Event]:
    """vLLM serving gpt-oss: reasoning_part and reasoning_text events."""
    rs_id, msg_id = "rs_b501b9c4c76c35c2", "msg_b6af18840c294ba1aa494d82e5892bef"
    reasoning = {
        "id": rs_id,
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": VLLM_REASONING}],
        "encrypted_content": None,
        "status": "completed",
    }
    base = response_object("in_progress", response_id="resp_7c0e4b1d", model="openai/gpt-oss-20b")
    return numbered(
        [
            {"type": "response.created", "response": base},
            {"type": "response.in_progress", "response": base},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**reasoning, "content": [], "status": "in_progress"},
            },
            {
                "type": "response.reasoning_part.added",
                "item_id": rs_id,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "reasoning_text", "text": ""},
            },
            *[
                {
                    "type": "response.reasoning_text.delta",
                    "item_id": rs_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": piece,
                }
                for piece in _pieces(VLLM_REASONING, 6)
            ],
            {
                "type": "response.reasoning_text.done",
                "item_id": rs_id,
                "output_index": 0,
                "content_index": 0,
                "text": VLLM_REASONING,
            },
            {
                "type": "response.reasoning_part.done",
                "item_id": rs_id,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "reasoning_text", "text": VLLM_REASONING},
            },
            {"type": "response.output_item.done", "output_index": 0, "item": reasoning},
            {
                "type": "response.output_item.added",
                "output_index": 1,
                "item": {
                    "id": msg_id,
                    "type": "message",
                    "status": "in_progress",
                    "content": [],
                    "role": "assistant",
                },
            },
            {
                "type": "response.content_part.added",
                "item_id": msg_id,
                "output_index": 1,
                "content_index": 0,
                "part": {"type": "output_text", "annotations": [], "text": "", "logprobs": None},
            },
            *[
                {
                    "type": "response.output_text.delta",
                    "item_id": msg_id,
                    "output_index": 1,
                    "content_index": 0,
                    "delta": piece,
                    "logprobs": [],
                }
                for piece in _pieces(VLLM_ANSWER, 5)
            ],
            {
                "type": "response.output_text.done",
                "item_id": msg_id,
                "output_index": 1,
                "content_index": 0,
                "text": VLLM_ANSWER,
                "logprobs": [],
            },
            {
                "type": "response.content_part.done",
                "item_id": msg_id,
                "output_index": 1,
                "content_index": 0,
                "part": {
                    "type": "output_text",
                    "annotations": [],
                    "text": VLLM_ANSWER,
                    "logprobs": None,
                },
            },
            {
                "type": "response.output_item.done",
                "output_index": 1,
                "item": _message(VLLM_ANSWER, msg_id=msg_id),
            },
            {
                "type": "response.completed",
                "response": {
                    **base,
                    "status": "completed",
                    "output": [reasoning, _message(VLLM_ANSWER, msg_id=msg_id)],
                    "usage": usage(70, 30, reasoning=12),
                },
            },
        ]
    )


VLLM = vllm_stream()


def lm_studio_stream() -> list[Event]:
    """LM Studio: the reasoning whole in one reasoning_text.done; then the text as usual."""
    rs_id = "rs_lmstudio_1"
    events = [
        event for event in vllm_stream() if not event["type"].startswith("response.reasoning_")
    ]
    reasoning_done = {
        "type": "response.reasoning_text.done",
        "item_id": rs_id,
        "output_index": 0,
        "content_index": 0,
        "text": VLLM_REASONING,
    }
    out: list[Event] = []
    for event in events:
        event = {key: value for key, value in event.items() if key != "sequence_number"}
        if event["type"] == "response.output_item.added" and event["output_index"] == 0:
            event = {**event, "item": {**event["item"], "id": rs_id}}
            out += [event, reasoning_done]
            continue
        if event["type"] == "response.output_item.done" and event["output_index"] == 0:
            event = {**event, "item": {**event["item"], "id": rs_id}}
        if event["type"] == "response.completed":
            output = [
                {**event["response"]["output"][0], "id": rs_id},
                event["response"]["output"][1],
            ]
            event = {**event, "response": {**event["response"], "output": output}}
        out.append(event)
    return numbered(out)


LM_STUDIO = lm_studio_stream()

XAI_REASONING = "Thinking about the question."


def xai_stream() -> list[Event]:
    """xAI: reasoning_text deltas with no part event."""
    rs_id = "rs_3f8a2b1c-4d5e-6f70-8192-a3b4c5d6e7f8"
    base = response_object("in_progress", response_id="3f8a2b1c-resp", model="grok-4")
    reasoning = {
        "id": rs_id,
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": XAI_REASONING}],
        "status": "completed",
    }
    msg = _message("42.", msg_id="msg_3f8a2b1c")
    return numbered(
        [
            {"type": "response.created", "response": base},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**reasoning, "content": [], "status": "in_progress"},
            },
            *[
                {
                    "type": "response.reasoning_text.delta",
                    "item_id": rs_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": piece,
                }
                for piece in _pieces(XAI_REASONING, 8)
            ],
            {"type": "response.output_item.done", "output_index": 0, "item": reasoning},
            {
                "type": "response.output_item.added",
                "output_index": 1,
                "item": {**msg, "status": "in_progress", "content": []},
            },
            {
                "type": "response.content_part.added",
                "item_id": msg["id"],
                "output_index": 1,
                "content_index": 0,
                "part": {"type": "output_text", "annotations": [], "text": ""},
            },
            {
                "type": "response.output_text.delta",
                "item_id": msg["id"],
                "output_index": 1,
                "content_index": 0,
                "delta": "42.",
            },
            {"type": "response.output_item.done", "output_index": 1, "item": msg},
            {
                "type": "response.completed",
                "response": {
                    **base,
                    "status": "completed",
                    "output": [reasoning, msg],
                    "usage": usage(10, 9),
                },
            },
        ]
    )


XAI = xai_stream()


def relay_stream() -> list[Event]:
    """A relay: no sequence numbers, `response.done` as the terminal event."""
    out = []
    for event in OPENAI_TEXT:
        event = {key: value for key, value in event.items() if key != "sequence_number"}
        if event["type"] == "response.completed":
            event = {**event, "type": "response.done"}
        out.append(event)
    return out


RELAY = relay_stream()

#: Every stream that ends well, by name, for the invariant tests.
GOOD_STREAMS: dict[str, list[Event]] = {
    "openai-text": OPENAI_TEXT,
    "openai-incomplete": OPENAI_INCOMPLETE,
    "openai-tools": OPENAI_TOOLS,
    "openai-reasoning": OPENAI_REASONING,
    "openai-refusal": OPENAI_REFUSAL,
    "unknown-events": UNKNOWN_EVENTS,
    "ollama": OLLAMA,
    "vllm": VLLM,
    "lm-studio": LM_STUDIO,
    "xai": XAI,
    "relay": RELAY,
}
