# The simulator's side of the Responses API: requests in, typed events out, stored responses (pure).
"""``POST /v1/responses``: request validation, the event generator and the response store.

:class:`ResponseBuilder` walks a :class:`~._reply.Reply` and yields the Responses API's
events as plain dicts, in the order OpenAI sends them (``response.created``,
``response.in_progress``, then per output item ``output_item.added``, its parts and deltas,
``output_item.done``, and one terminal event). Sequence numbers are stamped when an event is
*sent* (:meth:`ResponseBuilder.emit`), so whatever a fault injects is numbered in order too.
The SSE framing (``event:`` + ``data:`` lines) is one encoder over those dicts; a WebSocket
transport sends the same dicts as bare JSON frames.
"""

from __future__ import annotations

import copy
import json
import math
import secrets
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from ._frames import UnitFrames
from ._profiles import ModelProfile, ReplyTokens
from ._reply import Reply, ReplySpec, Tool, plan_reply, request_seed
from ._wire import (
    RequestError,
    check_bool,
    check_function_tool,
    check_integer,
    check_range,
    check_reasoning_effort,
    check_schema_format,
    check_tool_choice,
    error_object,
    parse_json_body,
    require_model,
)

#: The API's smallest ``max_output_tokens``.
MIN_OUTPUT_TOKENS = 16
#: Stored responses kept for ``previous_response_id``; the oldest are forgotten first.
MAX_STORED_RESPONSES = 10_000
# Prompt caching: a chained prefix this long or longer is served from the cache, in blocks.
_CACHE_MINIMUM = 1024
_CACHE_BLOCK = 128
_ROLES = frozenset({"user", "assistant", "system", "developer"})
_SUMMARIES = frozenset({"auto", "concise", "detailed"})
# Request fields that decide the reply (never `stream`).
_SEED_FIELDS = (
    "instructions",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "previous_response_id",
)
MALFORMED = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",\n\n'


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def new_id(prefix: str) -> str:
    """An id as OpenAI writes them: a prefix and 48 hex digits (``resp_``, ``msg_``, ``fc_``)."""
    return f"{prefix}_{secrets.token_hex(24)}"


def _input_items(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return ({"role": "user", "content": value},)
    if not isinstance(value, list):
        raise RequestError(
            400,
            "Invalid type for 'input': expected a string or an array of input items.",
            param="input",
            code="invalid_type",
        )
    for index, item in enumerate(value):
        param = f"input[{index}]"
        if not isinstance(item, dict):
            raise RequestError(
                400, f"'{param}' must be an object.", param=param, code="invalid_type"
            )
        role = item.get("role")
        kind = item.get("type")
        if role is not None or kind in (None, "message"):
            if role not in _ROLES:
                raise RequestError(
                    400,
                    f"Invalid value for '{param}.role': {role!r}; expected one of "
                    f"{', '.join(sorted(_ROLES))}.",
                    param=f"{param}.role",
                    code="invalid_value",
                )
            content = item.get("content")
            if not isinstance(content, (str, list)):
                raise RequestError(
                    400,
                    f"Invalid type for '{param}.content': expected a string or an array.",
                    param=f"{param}.content",
                    code="invalid_type",
                )
        elif not isinstance(kind, str):
            raise RequestError(
                400, f"'{param}.type' must be a string.", param=f"{param}.type", code="invalid_type"
            )
        elif kind == "function_call_output" and not isinstance(item.get("call_id"), str):
            raise RequestError(
                400,
                f"Missing required parameter: '{param}.call_id'.",
                param=f"{param}.call_id",
                code="missing_required_parameter",
            )
    return tuple(value)


def _item_text(item: Mapping[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            if isinstance(part, dict) and isinstance(part.get("text"), str)
            # Parts without text (images, files) count as their JSON.
            else _dumps(part)
            for part in content
        )
    kind = item.get("type")
    if kind == "function_call_output":
        output = item.get("output")
        return output if isinstance(output, str) else _dumps(output)
    if kind == "function_call":
        return f"{item.get('name', '')}{item.get('arguments', '')}"
    return _dumps(item)


def estimate_input_tokens(
    items: tuple[Any, ...], instructions: str | None, extra: list[Any]
) -> int:
    """The input-token estimate of one request, as for chat: ``3 + Σ (4 + ceil(len / 4))``.

    Counts each input item's text, the instructions as one more item, and the JSON of tool
    definitions and the text format (the model reads them too).
    """
    total = 3
    for item in items:
        total += 4 + math.ceil(len(_item_text(item)) / 4)
    if instructions:
        total += 4 + math.ceil(len(instructions) / 4)
    if extra:
        total += math.ceil(len(_dumps(extra)) / 4)
    return total


def _tools(value: Any) -> tuple[tuple[Tool, ...], list[dict[str, Any]]]:
    """The function tools, and every tool as echoed in the response object."""
    if value is None:
        return (), []
    if not isinstance(value, list):
        raise RequestError(400, "'tools' must be an array.", param="tools", code="invalid_type")
    tools: list[Tool] = []
    echoed: list[dict[str, Any]] = []
    for index, tool in enumerate(value):
        param = f"tools[{index}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise RequestError(
                400,
                f"Missing required parameter: '{param}.type'.",
                param=f"{param}.type",
                code="missing_required_parameter",
            )
        if tool["type"] != "function":
            echoed.append(dict(tool))  # built-in tools: echoed, never called by the simulator
            continue
        checked = check_function_tool(tool.get("name"), tool.get("parameters"), param)
        tools.append(checked)
        echoed.append(
            {
                "type": "function",
                "name": checked.name,
                "description": tool.get("description"),
                "parameters": checked.parameters,
                # The Responses API makes function tools strict unless told otherwise.
                "strict": tool.get("strict", True),
            }
        )
    return tuple(tools), echoed


def _text_config(value: Any) -> tuple[Any, dict[str, Any]]:
    if value is None:
        return check_schema_format(None, "text.format"), {"type": "text"}
    if not isinstance(value, dict):
        raise RequestError(400, "'text' must be an object.", param="text", code="invalid_type")
    raw = value.get("format")
    checked = check_schema_format(raw, "text.format")
    return checked, dict(raw) if isinstance(raw, dict) else {"type": "text"}


@attrs.frozen(kw_only=True)
class ResponsesRequest:
    """A validated ``POST /v1/responses`` body.

    Attributes:
        model: The requested model id.
        stream: Whether to stream events.
        store: Whether the response is kept for ``previous_response_id`` (default true).
        previous_response_id: The response this one continues, or ``None``.
        max_output_tokens: The cap on output tokens, reasoning included.
        input_tokens: The estimate of this request's own input (the chain comes on top).
        spec: What the reply must be.
        echo: Request fields the response object repeats.
    """

    model: str
    stream: bool
    store: bool
    previous_response_id: str | None
    max_output_tokens: int | None
    input_tokens: int
    spec: ReplySpec
    echo: Mapping[str, Any]

    @classmethod
    def from_body(cls, body: bytes, *, reply_tokens: ReplyTokens = None) -> ResponsesRequest:
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
        return cls.from_payload(parse_json_body(body), reply_tokens=reply_tokens)

    @classmethod
    def from_payload(
        cls, payload: Mapping[str, Any], *, reply_tokens: ReplyTokens = None
    ) -> ResponsesRequest:
        """Validate a decoded request (an HTTP body, or a WebSocket ``response.create``).

        Args:
            payload: The JSON object.
            reply_tokens: The text length override (header or profile).

        Returns:
            The request.

        Raises:
            RequestError: As :meth:`from_body`, for everything but the JSON syntax.
        """
        model = require_model(payload)
        items = _input_items(payload.get("input"))
        instructions = payload.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise RequestError(
                400,
                "Invalid type for 'instructions': expected a string.",
                param="instructions",
                code="invalid_type",
            )
        stream = check_bool(payload, "stream", False)
        store = check_bool(payload, "store", True)
        previous = payload.get("previous_response_id")
        if previous is not None and not isinstance(previous, str):
            raise RequestError(
                400,
                "Invalid type for 'previous_response_id': expected a string.",
                param="previous_response_id",
                code="invalid_type",
            )
        max_output = check_integer(payload, "max_output_tokens", MIN_OUTPUT_TOKENS)
        temperature = check_range(payload, "temperature", 0, 2)
        top_p = check_range(payload, "top_p", 0, 1)
        tools, echoed_tools = _tools(payload.get("tools"))
        raw_choice = payload.get("tool_choice")
        mode, forced = check_tool_choice(
            raw_choice, tools, function_name=lambda choice: choice.get("name")
        )
        parallel = check_bool(payload, "parallel_tool_calls", True)
        output_format, echoed_format = _text_config(payload.get("text"))
        reasoning = payload.get("reasoning")
        if reasoning is not None and not isinstance(reasoning, dict):
            raise RequestError(
                400, "'reasoning' must be an object.", param="reasoning", code="invalid_type"
            )
        reasoning = reasoning or {}
        effort = check_reasoning_effort(reasoning.get("effort"), "reasoning.effort")
        summary = reasoning.get("summary")
        if summary is not None and summary not in _SUMMARIES:
            raise RequestError(
                400,
                f"Invalid value: {_dumps(summary)}. Supported values are: 'auto', 'concise' and "
                "'detailed'.",
                param="reasoning.summary",
                code="invalid_value",
            )
        material = {"model": model, "input": payload.get("input")}
        material.update({key: payload[key] for key in _SEED_FIELDS if key in payload})
        last = items[-1] if items else {}
        spec = ReplySpec(
            seed=request_seed(material),
            max_tokens=max_output,
            reply_tokens=reply_tokens,
            tools=tools,
            tool_choice=mode,
            forced_tool=forced,
            parallel_tool_calls=parallel,
            output_format=output_format,
            reasoning_effort=effort,
            reasoning_shown="summary" if summary is not None and effort else "hidden",
            answers_tool_output=last.get("type") == "function_call_output",
        )
        extra = [part for part in (payload.get("tools"), payload.get("text")) if part]
        echo = {
            "instructions": instructions,
            "max_output_tokens": max_output,
            "parallel_tool_calls": parallel,
            "previous_response_id": previous,
            "reasoning": {"effort": effort, "summary": summary},
            "store": store,
            "temperature": 1.0 if temperature is None else temperature,
            "text": {"format": echoed_format, "verbosity": "medium"},
            "tool_choice": "auto" if raw_choice is None else raw_choice,
            "tools": echoed_tools,
            "top_p": 1.0 if top_p is None else top_p,
            "user": payload.get("user") if isinstance(payload.get("user"), str) else None,
            "metadata": payload.get("metadata")
            if isinstance(payload.get("metadata"), dict)
            else {},
        }
        return cls(
            model=model,
            stream=stream,
            store=store,
            previous_response_id=previous,
            max_output_tokens=max_output,
            input_tokens=estimate_input_tokens(items, instructions, extra),
            spec=spec,
            echo=echo,
        )

    @property
    def max_tokens(self) -> int | None:
        """``max_output_tokens`` under the name chat requests use."""
        return self.max_output_tokens

    def plan(self, model: ModelProfile) -> Reply:
        """The reply."""
        return plan_reply(self.spec, model)


def previous_not_found(response_id: str) -> RequestError:
    """The API's 400 for an unknown (or unstored, or forgotten) ``previous_response_id``."""
    return RequestError(
        400,
        f"Previous response with id '{response_id}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


class ResponseStore:
    """Stored responses for ``previous_response_id``: the tokens of each conversation so far.

    Only the token count is kept, so memory stays small whatever the replies said; the oldest
    entries go first beyond ``limit``.

    Args:
        limit: How many responses to keep.
    """

    def __init__(self, limit: int = MAX_STORED_RESPONSES) -> None:
        self._limit = limit
        self._context: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._context)

    def put(self, response_id: str, context_tokens: int) -> None:
        """Keep a response: ``context_tokens`` is its input (chain included) plus its output."""
        self._context[response_id] = context_tokens
        while len(self._context) > self._limit:
            self._context.popitem(last=False)

    def context_tokens(self, response_id: str) -> int | None:
        """The tokens a continuation of ``response_id`` carries, or ``None`` if unknown."""
        tokens = self._context.get(response_id)
        if tokens is not None:
            self._context.move_to_end(response_id)
        return tokens

    def clear(self) -> None:
        """Forget every stored response."""
        self._context.clear()


def cached_tokens(chained_tokens: int) -> int:
    """The part of a chained prefix served from the prompt cache: whole blocks of 128 tokens
    once the prefix reaches 1,024, as OpenAI's prompt caching does."""
    if chained_tokens < _CACHE_MINIMUM:
        return 0
    return chained_tokens // _CACHE_BLOCK * _CACHE_BLOCK


class ResponseBuilder:
    """The events of one response, and the response object they describe.

    Args:
        request: The validated request.
        reply: The planned reply.
        model_name: The name answered in ``model`` (the dated snapshot).
        input_tokens: Input tokens billed, the chain included.
        cached_tokens: Of those, the ones served from the prompt cache.
        response_id: The ``resp_`` id.
        now: The wall clock, for ``created_at`` and ``completed_at``.
    """

    def __init__(
        self,
        *,
        request: ResponsesRequest,
        reply: Reply,
        model_name: str,
        input_tokens: int,
        cached_tokens: int = 0,
        response_id: str | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.request = request
        self.reply = reply
        self.id = response_id or new_id("resp")
        self._model_name = model_name
        self._input_tokens = input_tokens
        self._cached_tokens = cached_tokens
        self._now = now
        self._created_at = int(now())
        self._sequence = 0
        # What has been sent of each output item, for the snapshot of a failed response.
        self._sent: dict[int, dict[str, Any]] = {}
        self._sent_pieces: defaultdict[tuple[int, str, int], list[str]] = defaultdict(list)
        self.final: dict[str, Any] | None = None

    # ---- the response object ----------------------------------------------------------

    def snapshot(self, status: str, output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The response object in ``status``, with ``output`` (empty by default)."""
        echo = self.request.echo
        return {
            "id": self.id,
            "object": "response",
            "created_at": self._created_at,
            "status": status,
            "background": False,
            "completed_at": None,
            "error": None,
            "incomplete_details": None,
            "instructions": echo["instructions"],
            "max_output_tokens": echo["max_output_tokens"],
            "max_tool_calls": None,
            "model": self._model_name,
            "output": output or [],
            "parallel_tool_calls": echo["parallel_tool_calls"],
            "previous_response_id": echo["previous_response_id"],
            "prompt_cache_key": None,
            "reasoning": copy.deepcopy(echo["reasoning"]),
            "safety_identifier": None,
            "service_tier": "default",
            "store": echo["store"],
            "temperature": echo["temperature"],
            "text": copy.deepcopy(echo["text"]),
            "tool_choice": copy.deepcopy(echo["tool_choice"]),
            "tools": copy.deepcopy(echo["tools"]),
            "top_logprobs": 0,
            "top_p": echo["top_p"],
            "truncation": "disabled",
            "usage": None,
            "user": echo["user"],
            "metadata": copy.deepcopy(echo["metadata"]),
        }

    def usage(self) -> dict[str, Any]:
        """The ``usage`` object of the whole reply."""
        output = self.reply.output_tokens
        return {
            "input_tokens": self._input_tokens,
            "input_tokens_details": {"cached_tokens": self._cached_tokens, "cache_write_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": self.reply.reasoning_tokens},
            "total_tokens": self._input_tokens + output,
        }

    @property
    def context_tokens(self) -> int:
        """What a continuation of this response carries: its input and its output."""
        return self._input_tokens + self.reply.output_tokens

    # ---- events -------------------------------------------------------------------------

    def events(self) -> Iterator[tuple[dict[str, Any], bool]]:
        """Every event, in order, as ``(event, is_unit)``; sequence numbers come at
        :meth:`emit`. After the last one, :attr:`final` is the terminal response object."""
        reply = self.reply
        yield {"type": "response.created", "response": self.snapshot("in_progress")}, False
        yield {"type": "response.in_progress", "response": self.snapshot("in_progress")}, False
        output: list[dict[str, Any]] = []
        if self.request.spec.reasoning_effort is not None:
            yield from self._reasoning(len(output), output)
        if reply.has_message:
            yield from self._message(len(output), output)
        for position, call in enumerate(reply.calls):
            cut = reply.capped and position == len(reply.calls) - 1
            yield from self._call(len(output), call.call_id, call.name, call.pieces, cut, output)
        status = "incomplete" if reply.capped else "completed"
        final = self.snapshot(status, output)
        final["completed_at"] = int(self._now()) if not reply.capped else None
        final["usage"] = self.usage()
        if reply.capped:
            final["incomplete_details"] = {"reason": "max_output_tokens"}
        self.final = final
        yield {"type": f"response.{status}", "response": final}, False

    def _reasoning(
        self, index: int, output: list[dict[str, Any]]
    ) -> Iterator[tuple[dict[str, Any], bool]]:
        item_id = new_id("rs")
        added = {"id": item_id, "type": "reasoning", "summary": []}
        yield {"type": "response.output_item.added", "output_index": index, "item": added}, False
        summary = []
        pieces = self.reply.reasoning_pieces
        if pieces:
            where = {"item_id": item_id, "output_index": index, "summary_index": 0}
            yield (
                {
                    "type": "response.reasoning_summary_part.added",
                    **where,
                    "part": {"type": "summary_text", "text": ""},
                },
                False,
            )
            for piece in pieces:
                yield (
                    {"type": "response.reasoning_summary_text.delta", **where, "delta": piece},
                    True,
                )
            text = "".join(pieces)
            yield {"type": "response.reasoning_summary_text.done", **where, "text": text}, False
            part = {"type": "summary_text", "text": text}
            yield {"type": "response.reasoning_summary_part.done", **where, "part": part}, False
            summary.append(dict(part))
        done = {"id": item_id, "type": "reasoning", "summary": summary}
        output.append(done)
        yield {"type": "response.output_item.done", "output_index": index, "item": done}, False

    def _message(
        self, index: int, output: list[dict[str, Any]]
    ) -> Iterator[tuple[dict[str, Any], bool]]:
        reply = self.reply
        item_id = new_id("msg")
        added = {
            "id": item_id,
            "type": "message",
            "status": "in_progress",
            "content": [],
            "role": "assistant",
        }
        yield {"type": "response.output_item.added", "output_index": index, "item": added}, False
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        empty = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        yield {"type": "response.content_part.added", **where, "part": empty}, False
        source = reply.text_source()
        pieces: list[str] = []
        remaining = reply.message_length
        while remaining:
            batch = source.take_text(min(remaining, 256))
            remaining -= len(batch)
            for piece in batch:
                pieces.append(piece)
                yield (
                    {
                        "type": "response.output_text.delta",
                        **where,
                        "delta": piece,
                        "logprobs": [],
                    },
                    True,
                )
        text = "".join(pieces)
        yield {"type": "response.output_text.done", **where, "text": text, "logprobs": []}, False
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
        yield {"type": "response.content_part.done", **where, "part": part}, False
        done = {
            "id": item_id,
            "type": "message",
            "status": "incomplete" if reply.capped else "completed",
            "content": [dict(part)],
            "role": "assistant",
        }
        output.append(done)
        yield {"type": "response.output_item.done", "output_index": index, "item": done}, False

    def _call(
        self,
        index: int,
        call_id: str,
        name: str,
        pieces: tuple[str, ...],
        cut: bool,
        output: list[dict[str, Any]],
    ) -> Iterator[tuple[dict[str, Any], bool]]:
        item_id = new_id("fc")
        added = {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "arguments": "",
            "call_id": call_id,
            "name": name,
        }
        yield {"type": "response.output_item.added", "output_index": index, "item": added}, False
        where = {"item_id": item_id, "output_index": index}
        for piece in pieces:
            yield {"type": "response.function_call_arguments.delta", **where, "delta": piece}, True
        arguments = "".join(pieces)
        # The API names the function here too (newer than some SDKs' types, which ignore it).
        done_event = {
            "type": "response.function_call_arguments.done",
            **where,
            "name": name,
            "arguments": arguments,
        }
        yield done_event, False
        done = {**added, "status": "incomplete" if cut else "completed", "arguments": arguments}
        output.append(done)
        yield {"type": "response.output_item.done", "output_index": index, "item": done}, False

    def emit(self, event: dict[str, Any]) -> dict[str, Any]:
        """Stamp the next sequence number on an event about to be sent, and remember what it
        adds to the output (for :meth:`failed_event`)."""
        event["sequence_number"] = self._sequence
        self._sequence += 1
        kind = event["type"]
        index: int = event.get("output_index", -1)
        if kind == "response.output_text.delta":
            # Pieces in lists, joined only if a failure needs them: `+=` on a string inside a
            # dict copies it each time, quadratic over a long reply.
            self._sent_pieces[(index, "content", event["content_index"])].append(event["delta"])
        elif kind == "response.function_call_arguments.delta":
            self._sent_pieces[(index, "arguments", 0)].append(event["delta"])
        elif kind == "response.reasoning_summary_text.delta":
            self._sent_pieces[(index, "summary", event["summary_index"])].append(event["delta"])
        elif kind in ("response.output_item.added", "response.output_item.done"):
            self._sent[event["output_index"]] = copy.deepcopy(event["item"])
            if kind == "response.output_item.done":
                for key in [key for key in self._sent_pieces if key[0] == index]:
                    del self._sent_pieces[key]
        elif kind == "response.content_part.added" and index in self._sent:
            self._sent[index]["content"].append(dict(event["part"]))
        elif kind == "response.reasoning_summary_part.added" and index in self._sent:
            self._sent[index]["summary"].append(dict(event["part"]))
        return event

    def _sent_output(self) -> list[dict[str, Any]]:
        output = copy.deepcopy([self._sent[index] for index in sorted(self._sent)])
        by_index = dict(zip(sorted(self._sent), output, strict=True))
        for (index, where, position), pieces in self._sent_pieces.items():
            item = by_index[index]
            if where == "arguments":
                item["arguments"] += "".join(pieces)
            else:
                item[where][position]["text"] += "".join(pieces)
        return output

    def error_event(self, status: int) -> dict[str, Any]:
        """An in-band ``error`` event typed like the HTTP error ``status`` (unstamped)."""
        error = error_object(status)["error"]
        return {
            "type": "error",
            "code": error["code"] or error["type"],
            "message": error["message"],
            "param": None,
        }

    def failed_event(self) -> dict[str, Any]:
        """``response.failed`` with what was sent so far (unstamped)."""
        response = self.snapshot("failed", self._sent_output())
        response["error"] = {
            "code": "server_error",
            "message": "The model failed to generate a response. Please try again.",
        }
        return {"type": "response.failed", "response": response}


def sse(event: Mapping[str, Any]) -> bytes:
    """One event in the Responses API's SSE framing: an ``event:`` line and a ``data:`` line."""
    return f"event: {event['type']}\ndata: {_dumps(event)}\n\n".encode()


class ResponseFrames(UnitFrames[dict[str, Any]]):
    """A streamed response as SSE bytes, for the server's pacing loop.

    ``response.created`` and ``response.in_progress`` go out at once, before the time to
    first token, as the API sends them.
    """

    def __init__(self, builder: ResponseBuilder) -> None:
        self.builder = builder
        super().__init__(
            builder.events(),
            units=builder.reply.units,
            encode=self._encode_events,
            head_frames=2,
        )
        self.hidden_tokens = self.billed_hidden = builder.reply.reasoning_hidden

    def _encode_events(self, events: list[dict[str, Any]]) -> bytes:
        emit = self.builder.emit
        return b"".join([sse(emit(event)) for event in events])

    def error_event(self, status: int) -> bytes:
        return sse(self.builder.emit(self.builder.error_event(status)))

    def failed_event(self) -> bytes:
        return sse(self.builder.emit(self.builder.failed_event()))

    def malformed(self) -> bytes:
        return MALFORMED

    def oversized(self, size: int) -> bytes:
        # An event type no client knows: clients must skip unknown types (the API adds new
        # ones), so the stream stays valid while its size tests the client's event limit.
        padding = {"type": "response.simulator.padding", "padding": "x" * size}
        return sse(self.builder.emit(padding))


def whole_response(builder: ResponseBuilder) -> dict[str, Any]:
    """The response object of a non-streamed request (every event generated, none sent)."""
    for _ in builder.events():
        pass
    assert builder.final is not None
    return builder.final
