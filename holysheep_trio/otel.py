# OpenTelemetry GenAI spans and metrics for every request of a client (the `otel` extra).
"""OpenTelemetry for holysheep-trio: GenAI client spans and metrics, pool and budget gauges.

Install with the ``otel`` extra (``pip install 'holysheep-trio[otel]'``: ``opentelemetry-api``
only; the SDK and the exporters are the application's choice) and give the client a
:class:`Telemetry`::

    async with hs.open_client(telemetry=hs.otel.Telemetry()) as client: ...

The core never imports this module: without ``telemetry=`` nothing is recorded and no
``opentelemetry`` module is loaded.

What is emitted follows the OpenTelemetry semantic conventions for generative AI as released in
semantic-conventions **v1.41.0** (:data:`SEMCONV_VERSION`; the GenAI conventions have status
*development*): one ``CLIENT`` span per request named ``chat {model}``, the client metrics
``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage``,
``gen_ai.client.operation.time_to_first_chunk`` and
``gen_ai.client.operation.time_per_output_chunk`` with the conventions' units, instrument types
and advisory bucket boundaries, and this library's own instruments under ``holysheep_trio.*``
(the pool's counts, the budget's totals). ``docs/observability.md`` lists every name.

Everything is measured inside the stream's own lifetime (the request lifecycle's observer seam,
``_lifecycle.RequestObserver``), so a stream left by ``break``, cancelled or failed is recorded
like a finished one. Durations are differences of trio's clock, the clock of
``Completion.ttft``; span timestamps are that clock shifted onto the wall clock once per request.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeGuard
from urllib.parse import urlsplit

import trio
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util import types as _otel_types

from . import __version__
from ._lifecycle import RequestObserver
from .errors import APIStatusError, HolySheepError
from .models import Completion, Message, ToolCall, Usage
from .responses import (
    FunctionCall,
    OutputMessage,
    OutputRefusal,
    OutputText,
    ReasoningItem,
    ReasoningText,
    Response,
    UnknownContentPart,
)

if TYPE_CHECKING:
    from .budget import Budget
    from .client import Client
    from .pool import Pool

__all__ = [
    "DURATION_BUCKETS",
    "SCHEMA_URL",
    "SEMCONV_VERSION",
    "TOKEN_BUCKETS",
    "Telemetry",
]

#: The version of the OpenTelemetry semantic conventions whose GenAI names this module emits.
SEMCONV_VERSION: Final = "1.41.0"
#: The schema URL given to the tracer and the meter.
SCHEMA_URL: Final = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
#: Advisory bucket boundaries (seconds) of the three GenAI duration histograms, as the
#: conventions specify them (gen-ai-metrics.md, "ExplicitBucketBoundaries").
DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
#: Advisory bucket boundaries of ``gen_ai.client.token.usage``, as the conventions specify them.
TOKEN_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip

#: The environment variable of the conventions' transition plan, and its GenAI value.
STABILITY_OPT_IN: Final = "OTEL_SEMCONV_STABILITY_OPT_IN"
LATEST_EXPERIMENTAL: Final = "gen_ai_latest_experimental"

#: ``error.type`` of a request ended by a trio cancellation (a caller's cancel scope, a
#: hedging loser): the pool's statistics use the same word for such attempts.
CANCELLED: Final = "cancelled"

#: Span event recorded for each attempt that failed and was retried (or fell over).
RETRY_EVENT: Final = "holysheep_trio.retry"

_INSTRUMENTATION_NAME: Final = "holysheep_trio"
# The conventions' operation name for both wire formats: the Responses API is a chat
# completion too (openai.md lists it as `openai.api.type` = "responses" of a `chat` span).
_OPERATION_NAME: Final = "chat"
_API_TYPES: Final = {"chat": "chat_completions", "responses": "responses"}
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}

# Finish reasons in the vocabulary of gen_ai.output.messages (FinishReason enum).
_OUTPUT_FINISH: Final = {"tool_calls": "tool_call", "function_call": "tool_call"}
# A Responses API `incomplete_details.reason`, in chat-completions words.
_INCOMPLETE_REASONS: Final = {"max_output_tokens": "length", "content_filter": "content_filter"}

logger = logging.getLogger("holysheep_trio.otel")
#: A context whose span is the invalid span: measurements taken in it have no exemplar. (An
#: empty context would not do: the SDK takes an empty one for "the current context".)
_NO_SPAN: Final = trace.set_span_in_context(trace.INVALID_SPAN)


def _semconv_opt_in() -> frozenset[str]:
    raw = os.environ.get(STABILITY_OPT_IN, "")
    return frozenset(value.strip() for value in raw.split(",") if value.strip())


def _complex_attributes() -> bool:
    """Whether the installed OpenTelemetry API takes structured (map and list) span values.

    The conventions record content "in structured form" where the language's API supports it
    and as a JSON string where it does not (gen-ai-spans.md, "Recording content on
    attributes"). opentelemetry-api made every attribute value an ``AnyValue`` in the same
    release that aliased ``AttributeValue`` to it.
    """
    any_value = getattr(_otel_types, "AnyValue", None)
    return any_value is not None and getattr(_otel_types, "AttributeValue", None) is any_value


class Telemetry:
    """OpenTelemetry GenAI spans and metrics for every request of the clients it is given to.

    Pass it to :func:`~holysheep_trio.open_client` (``telemetry=``). One instance may serve
    several clients; its pool and budget instruments then add up their numbers.

    Args:
        tracer_provider: Where spans go. None: the global provider (as set by
            ``opentelemetry.trace.set_tracer_provider``, also later).
        meter_provider: Where metrics go. None: the global provider.
        capture_content: Record the prompt and the completion on the span
            (``gen_ai.input.messages``, ``gen_ai.output.messages``,
            ``gen_ai.system_instructions``, ``gen_ai.tool.definitions``), the conventions'
            opt-in. Off by default: they may hold personal data.
        provider_name: ``gen_ai.provider.name``. The default, ``"openai"``, names the
            telemetry flavour of an OpenAI-compatible API (and enables the ``openai.*``
            attributes); a relay serving other vendors' models may prefer another well-known
            value, e.g. ``"deepseek"`` for a DeepSeek endpoint.
        time_per_output_chunk: Record ``gen_ai.client.operation.time_per_output_chunk`` (one
            histogram measurement per chunk). The conventions recommend it; with the Python
            SDK each measurement costs several microseconds, about as much as everything else
            this module does per request spread over a hundred chunks (see
            ``docs/observability.md``), so a high-throughput service may turn it off.

    Raises:
        TypeError: ``capture_content`` or ``time_per_output_chunk`` is not a bool, or
            ``provider_name`` not a str.
        ValueError: ``provider_name`` is empty.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        capture_content: bool = False,
        provider_name: str = "openai",
        time_per_output_chunk: bool = True,
    ) -> None:
        if not isinstance(capture_content, bool):
            raise TypeError(f"capture_content must be a bool, got {type(capture_content).__name__}")
        if not isinstance(time_per_output_chunk, bool):
            raise TypeError(
                f"time_per_output_chunk must be a bool, got {type(time_per_output_chunk).__name__}"
            )
        if not isinstance(provider_name, str):
            raise TypeError(f"provider_name must be a str, got {type(provider_name).__name__}")
        if not provider_name:
            raise ValueError("provider_name must not be empty")
        self._capture_content = capture_content
        self._per_chunk = time_per_output_chunk
        self._provider_name = provider_name
        self._openai = provider_name == "openai"
        self._structured = _complex_attributes()
        #: Read once: the opt-in values of OTEL_SEMCONV_STABILITY_OPT_IN (see the docs).
        self._opt_in = _semconv_opt_in()
        self._tracer = trace.get_tracer(
            _INSTRUMENTATION_NAME, __version__, tracer_provider, schema_url=SCHEMA_URL
        )
        meter = metrics.get_meter(
            _INSTRUMENTATION_NAME, __version__, meter_provider, schema_url=SCHEMA_URL
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self._time_to_first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description=(
                "Time to receive the first chunk, measured from when the client issues the"
                " generation request to when the first chunk is received in the response stream."
            ),
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._time_per_output_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_per_output_chunk",
            unit="s",
            description=(
                "Time per output chunk, recorded for each chunk received after the first one,"
                " measured as the time elapsed from the end of the previous chunk to the end of"
                " the current chunk."
            ),
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        # Observable gauges, as the issue names them: each callback reports the current level
        # per model, already summed over the clients bound to this Telemetry, so a gauge's
        # last-value aggregation loses nothing.
        self._bindings: list[_Binding] = []
        self._lock = threading.Lock()  # the callbacks run in a metric reader's thread
        meter.create_observable_gauge(
            "holysheep_trio.pool.active",
            callbacks=[self._observe_pool(lambda counts: counts[1])],
            unit="{request}",
            description="Requests of the model admitted by the client's pool and not finished.",
        )
        meter.create_observable_gauge(
            "holysheep_trio.pool.waiting",
            callbacks=[self._observe_pool(lambda counts: counts[2])],
            unit="{request}",
            description="Requests of the model waiting for admission by the client's pool.",
        )
        meter.create_observable_gauge(
            "holysheep_trio.pool.effective_limit",
            callbacks=[self._observe_pool(lambda counts: counts[3])],
            unit="{request}",
            description="The model's concurrency limit in force (adaptive, else configured).",
        )
        # Spent, reserved and the limit of a budget period are levels, not parts of a sum (the
        # day is part of the month): gauges.
        meter.create_observable_gauge(
            "holysheep_trio.budget.spent",
            callbacks=[self._observe_budget(0)],
            unit="{USD}",
            description="USD committed in the current period, as this process last saw it.",
        )
        meter.create_observable_gauge(
            "holysheep_trio.budget.reserved",
            callbacks=[self._observe_budget(1)],
            unit="{USD}",
            description="USD held by live reservations in the current period, as last seen.",
        )
        meter.create_observable_gauge(
            "holysheep_trio.budget.limit",
            callbacks=[self._observe_budget(2)],
            unit="{USD}",
            description="The budget's limit for the period.",
        )

    def __repr__(self) -> str:
        return (
            f"<Telemetry provider_name={self._provider_name!r}"
            f" capture_content={self._capture_content} semconv={SEMCONV_VERSION}>"
        )

    @property
    def capture_content(self) -> bool:
        """Whether prompts and completions are recorded on spans."""
        return self._capture_content

    @property
    def provider_name(self) -> str:
        """The ``gen_ai.provider.name`` of every span and metric point."""
        return self._provider_name

    @property
    def semconv_version(self) -> str:
        """The semantic-conventions version emitted (the same with or without the opt-in)."""
        return SEMCONV_VERSION

    @property
    def latest_experimental(self) -> bool:
        """Whether ``OTEL_SEMCONV_STABILITY_OPT_IN`` held ``gen_ai_latest_experimental``.

        Read when the Telemetry was created. It changes nothing yet: the transition plan of the
        GenAI conventions keeps instrumentations that already emitted v1.36.0 or older on that
        version unless the user opts in; this library never emitted an older version, so it
        emits the latest it supports, v1.41.0, either way. Once the GenAI conventions have a
        stable version, that becomes the default and this flag keeps the experimental one.
        """
        return LATEST_EXPERIMENTAL in self._opt_in

    # ---- binding to a client (its pool and budget) ----------------------------------------

    def bind(self, client: Client) -> Callable[[], None]:
        """Observe the pool and budget of ``client``; return the function that stops it.

        :func:`~holysheep_trio.open_client` calls this when it opens and the returned function
        when it closes. Not needed for spans and request metrics.
        """
        binding = _Binding(client._pool, client.budget)
        with self._lock:
            self._bindings.append(binding)

        def unbind() -> None:
            with self._lock:
                if binding in self._bindings:
                    self._bindings.remove(binding)

        return unbind

    def _bound(self) -> tuple[_Binding, ...]:
        with self._lock:
            return tuple(self._bindings)

    def _observe_pool(
        self, field: Callable[[tuple[str, int, int, int]], int]
    ) -> Callable[[metrics.CallbackOptions], Iterable[metrics.Observation]]:
        def callback(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            # Runs in the metric reader's thread: trio-free reads only (Pool.counts).
            totals: dict[str, int] = {}
            for binding in self._bound():
                for counts in binding.pool.counts():
                    totals[counts[0]] = totals.get(counts[0], 0) + field(counts)
            return [
                metrics.Observation(value, {"gen_ai.request.model": model})
                for model, value in totals.items()
            ]

        return callback

    def _observe_budget(
        self, field: int
    ) -> Callable[[metrics.CallbackOptions], Iterable[metrics.Observation]]:
        def callback(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            totals: dict[str, float] = {}
            seen: set[int] = set()
            for binding in self._bound():
                budget = binding.budget
                if budget is None or id(budget) in seen:
                    continue
                seen.add(id(budget))
                for period, values in _budget_levels(budget).items():
                    value = values[field]
                    if value is not None:
                        totals[period] = totals.get(period, 0.0) + value
            return [
                metrics.Observation(value, {"holysheep_trio.budget.period": period})
                for period, value in totals.items()
            ]

        return callback

    # ---- the request observer seam --------------------------------------------------------

    def start_request(
        self, *, operation: str, model: str, request: Mapping[str, Any], now: float
    ) -> RequestObserver | None:
        """Start the span of a request (the lifecycle calls this when a stream is entered)."""
        try:
            return _Observer(self, operation=operation, model=model, request=request, now=now)
        except Exception:  # telemetry must never break a request
            logger.exception("starting the telemetry of a request failed")
            return None

    def _base_attributes(self, model: str) -> dict[str, Any]:
        return {
            "gen_ai.operation.name": _OPERATION_NAME,
            "gen_ai.provider.name": self._provider_name,
            "gen_ai.request.model": model,
        }

    def _content(self, value: Any) -> Any:
        """A structured content value as the installed API can carry it on a span."""
        value = _without_none(value)
        if self._structured:
            return value
        return json.dumps(value, ensure_ascii=False, default=str)


class _Binding:
    __slots__ = ("budget", "pool")

    def __init__(self, pool: Pool, budget: Budget | None) -> None:
        self.pool = pool
        self.budget = budget


def _budget_levels(budget: Budget) -> dict[str, tuple[float, float, float | None]]:
    """``{period: (spent, reserved, limit)}`` from the totals the budget saw last, trio-free.

    The budget remembers the ledger's totals from its last reservation, settlement or report
    (``Budget._remember``); a period that has rolled over since reads 0, as in
    ``Budget.would_fit``. Other processes' spending shows once this one talks to the ledger.
    """
    from .budget import from_picodollars

    snapshot = budget._snapshot
    calendar = budget._calendar
    current = calendar.periods(calendar.now())  # the budget's clock: wall time, no trio
    same_day = snapshot.day == current.day
    same_month = snapshot.month == current.month
    return {
        "daily": (
            from_picodollars(snapshot.day_spent) if same_day else 0.0,
            from_picodollars(snapshot.day_reserved) if same_day else 0.0,
            budget.daily,
        ),
        "monthly": (
            from_picodollars(snapshot.month_spent) if same_month else 0.0,
            from_picodollars(snapshot.month_reserved) if same_month else 0.0,
            budget.monthly,
        ),
    }


class _Observer:
    """The span and the measurements of one request (a ``RequestObserver``)."""

    __slots__ = (
        "_admitted",
        "_first_output",
        "_gaps",
        "_last_output",
        "_model",
        "_origin",
        "_span",
        "_telemetry",
        "_wall_origin",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        operation: str,
        model: str,
        request: Mapping[str, Any],
        now: float,
    ) -> None:
        # One pairing of the two clocks per request: span timestamps are trio times shifted
        # onto the wall clock, so their differences are exactly the metrics' durations.
        self._wall_origin = time.time_ns()
        self._origin = now
        self._telemetry = telemetry
        self._model = model
        self._admitted: float | None = None
        self._first_output: float | None = None
        self._last_output = 0.0
        # Gaps between output chunks, recorded when the request ends (with the response's
        # attributes): 8 bytes per chunk, next to the chunk's text the stream keeps anyway.
        self._gaps = array("d") if telemetry._per_chunk else None
        attributes = telemetry._base_attributes(model)
        attributes["gen_ai.request.stream"] = True
        if telemetry._openai:
            attributes["openai.api.type"] = _API_TYPES.get(operation, operation)
        attributes.update(_request_attributes(operation, request, openai=telemetry._openai))
        if telemetry._capture_content:
            attributes.update(_input_content(telemetry, operation, request))
        # Parented on the caller's current span (trio tasks carry contextvars, so the context of
        # the task that entered the stream); never made current: no user code runs inside it.
        self._span = telemetry._tracer.start_span(
            f"{_OPERATION_NAME} {model}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=self._wall_origin,
            record_exception=False,
            set_status_on_exception=False,
        )

    def _ns(self, now: float) -> int:
        return self._wall_origin + round((now - self._origin) * 1e9)

    def admitted(self, now: float) -> None:
        self._admitted = now

    def attempt_failed(
        self, *, attempt: int, error: HolySheepError, delay: float | None, now: float
    ) -> None:
        # The attempt that is not retried is the request's own error, recorded on the span
        # itself when the request ends (an exception is recorded once).
        if delay is None:
            return
        attributes: dict[str, Any] = {
            "holysheep_trio.attempt": attempt,
            "holysheep_trio.retry.delay": float(delay),
            "error.type": error.kind,
            "exception.type": _qualified_name(type(error)),
            "exception.message": error.message,
        }
        if isinstance(error, APIStatusError):
            attributes["http.response.status_code"] = error.status
        self._span.add_event(RETRY_EVENT, attributes, timestamp=self._ns(now))

    def output(self, now: float) -> None:
        if self._first_output is None:
            self._first_output = now
        elif self._gaps is not None:
            self._gaps.append(now - self._last_output)
        self._last_output = now

    def finished(
        self,
        *,
        error: BaseException | None,
        result: object,
        usage: Usage | None,
        base_url: str | None,
        now: float,
    ) -> None:
        try:
            self._finish(error=error, result=result, usage=usage, base_url=base_url, now=now)
        except Exception:  # telemetry must never break a request
            logger.exception("recording the telemetry of a request failed")
            if self._span.is_recording():
                self._span.end(end_time=self._ns(now))

    def _finish(
        self,
        *,
        error: BaseException | None,
        result: object,
        usage: Usage | None,
        base_url: str | None,
        now: float,
    ) -> None:
        telemetry = self._telemetry
        span = self._span
        # What is known only now: on the span (which has the request's attributes already) and,
        # with the request's common attributes, on every metric point.
        known: dict[str, Any] = {}
        response_model = getattr(result, "model", "")
        if response_model:
            known["gen_ai.response.model"] = response_model
        if base_url is not None:
            address, port = _server(base_url)
            if address:
                known["server.address"] = address
                known["server.port"] = port
        metric_attributes = {**telemetry._base_attributes(self._model), **known}
        attributes = known.copy()
        ttft = None
        if self._first_output is not None and self._admitted is not None:
            ttft = self._first_output - self._admitted
            attributes["gen_ai.response.time_to_first_chunk"] = ttft
        attributes.update(_response_attributes(result, usage))
        if telemetry._capture_content:
            attributes["gen_ai.output.messages"] = telemetry._content(
                _output_messages(result, error)
            )
        duration_attributes = metric_attributes
        if error is not None:
            kind = _error_type(error)
            attributes["error.type"] = kind
            duration_attributes = {**metric_attributes, "error.type": kind}
            if isinstance(error, APIStatusError):
                attributes["http.response.status_code"] = error.status
            description = error.message if isinstance(error, HolySheepError) else None
            span.set_status(Status(StatusCode.ERROR, description))
        span.set_attributes(attributes)
        span.end(end_time=self._ns(now))

        # The request's own span is the context of its measurements, so that an SDK that keeps
        # exemplars links them to it (not to whatever span the caller has current).
        context = trace.set_span_in_context(span)
        telemetry._duration.record(now - self._origin, duration_attributes, context)
        if ttft is not None:
            telemetry._time_to_first_chunk.record(ttft, metric_attributes, context)
            if self._gaps is not None:
                # No exemplars per chunk: offering each one costs the SDK ~15 % more per
                # measurement, the one measurement that is taken per chunk.
                record = telemetry._time_per_output_chunk.record
                for gap in self._gaps:
                    record(gap, metric_attributes, _NO_SPAN)
        if usage is not None:
            tokens = telemetry._token_usage
            input_attributes = {**metric_attributes, "gen_ai.token.type": "input"}
            output_attributes = {**metric_attributes, "gen_ai.token.type": "output"}
            tokens.record(usage.prompt_tokens, input_attributes, context)
            tokens.record(usage.completion_tokens, output_attributes, context)


# ---- attributes ------------------------------------------------------------------------------


def _qualified_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _error_type(error: BaseException) -> str:
    """``error.type``: our error's kind, ``cancelled``, or the exception's qualified name.

    Low-cardinality as the conventions ask: the kinds are those of
    :data:`~holysheep_trio.errors.ErrorKind`.
    """
    if isinstance(error, HolySheepError):
        return error.kind
    if isinstance(error, trio.Cancelled):
        return CANCELLED
    return _qualified_name(type(error))


_servers: dict[str, tuple[str, int]] = {}


def _server(base_url: str) -> tuple[str, int]:
    """``server.address`` and ``server.port`` of an endpoint (never its user:password part)."""
    found = _servers.get(base_url)
    if found is None:
        parts = urlsplit(base_url)
        try:
            port = parts.port
        except ValueError:  # pragma: no cover - the client checked its URLs
            port = None
        found = (parts.hostname or "", port or _DEFAULT_PORTS.get(parts.scheme, 0))
        if len(_servers) < 64:  # a handful of endpoints; bounded whatever happens
            _servers[base_url] = found
    return found


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _request_attributes(
    operation: str, request: Mapping[str, Any], *, openai: bool
) -> dict[str, Any]:
    """The conventions' ``gen_ai.request.*`` (and ``openai.request.*``) attributes."""
    attributes: dict[str, Any] = {}
    if operation == "responses":
        max_tokens = request.get("max_output_tokens")
    else:
        max_tokens = request.get("max_tokens", request.get("max_completion_tokens"))
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        attributes["gen_ai.request.max_tokens"] = max_tokens
    count = request.get("n")
    if isinstance(count, int) and not isinstance(count, bool) and count != 1:
        attributes["gen_ai.request.choice.count"] = count
    for key, name in (
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
        ("frequency_penalty", "gen_ai.request.frequency_penalty"),
        ("presence_penalty", "gen_ai.request.presence_penalty"),
    ):
        value = request.get(key)
        if _number(value):
            attributes[name] = float(value)
    for key, name in (("top_k", "gen_ai.request.top_k"), ("seed", "gen_ai.request.seed")):
        value = request.get(key)
        if _number(value):
            attributes[name] = value
    stop = request.get("stop")
    if isinstance(stop, str):
        attributes["gen_ai.request.stop_sequences"] = (stop,)
    elif isinstance(stop, Sequence) and stop and all(isinstance(s, str) for s in stop):
        attributes["gen_ai.request.stop_sequences"] = tuple(stop)
    output_type = _output_type(operation, request)
    if output_type is not None:
        attributes["gen_ai.output.type"] = output_type
    conversation = request.get("conversation")
    if isinstance(conversation, Mapping):
        conversation = conversation.get("id")
    if isinstance(conversation, str) and conversation:
        attributes["gen_ai.conversation.id"] = conversation
    tier = request.get("service_tier")
    if openai and isinstance(tier, str) and tier != "auto":
        attributes["openai.request.service_tier"] = tier
    return attributes


def _output_type(operation: str, request: Mapping[str, Any]) -> str | None:
    """``gen_ai.output.type`` from the requested format (text or JSON), if one was given."""
    if operation == "responses":
        text = request.get("text")
        shape = text.get("format") if isinstance(text, Mapping) else None
    else:
        shape = request.get("response_format")
    kind = shape.get("type") if isinstance(shape, Mapping) else None
    if kind in ("json_object", "json_schema"):
        return "json"
    if kind == "text":
        return "text"
    return None


def _response_attributes(result: object, usage: Usage | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    response_id = getattr(result, "id", "")
    if response_id:
        attributes["gen_ai.response.id"] = response_id
    reason = _finish_reason(result)
    if reason is not None:
        attributes["gen_ai.response.finish_reasons"] = (reason,)
    if usage is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
        prompt = usage.prompt_tokens_details
        if prompt is not None and prompt.cached_tokens is not None:
            attributes["gen_ai.usage.cache_read.input_tokens"] = prompt.cached_tokens
        if prompt is not None and prompt.cache_write_tokens is not None:
            attributes["gen_ai.usage.cache_creation.input_tokens"] = prompt.cache_write_tokens
        completion = usage.completion_tokens_details
        if completion is not None and completion.reasoning_tokens is not None:
            attributes["gen_ai.usage.reasoning.output_tokens"] = completion.reasoning_tokens
    return attributes


def _finish_reason(result: object) -> str | None:
    """Why generation stopped, in chat-completions words; None if it did not finish."""
    if isinstance(result, Completion):
        return result.finish_reason
    if isinstance(result, Response):
        if result.status == "completed":
            return "tool_calls" if result.function_calls else "stop"
        if result.status == "incomplete":
            details = result.incomplete_details
            reason = None if details is None else details.reason
            return _INCOMPLETE_REASONS.get(reason or "", reason or "incomplete")
        if result.status == "failed":
            return "error"
    return None


# ---- content (opt-in) ------------------------------------------------------------------------
#
# The shapes are those of the conventions' JSON schemas (gen-ai-input-messages.json,
# gen-ai-output-messages.json, gen-ai-system-instructions.json, gen-ai-tool-definitions.json):
# messages of `role` and `parts`, parts typed `text`, `tool_call`, `tool_call_response`, `uri`,
# `blob`, `file`, `reasoning`, or any other `type` (the schema's generic part).


def _input_content(
    telemetry: Telemetry, operation: str, request: Mapping[str, Any]
) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if operation == "responses":
        messages = _responses_input(request.get("input"))
        instructions = request.get("instructions")
        if isinstance(instructions, str) and instructions:
            attributes["gen_ai.system_instructions"] = telemetry._content(
                [{"type": "text", "content": instructions}]
            )
    else:
        messages = [_chat_message(message) for message in _items(request.get("messages"))]
    attributes["gen_ai.input.messages"] = telemetry._content(messages)
    tools = _tool_definitions(request.get("tools"))
    if tools:
        attributes["gen_ai.tool.definitions"] = telemetry._content(tools)
    return attributes


def _without_none(value: Any) -> Any:
    """``value`` with the None members of its objects left out (optional schema fields)."""
    if isinstance(value, Mapping):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_without_none(item) for item in value]
    return value


def _items(value: Any) -> Iterator[Any]:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        yield from value


def _get(item: Any, key: str) -> Any:
    if isinstance(item, Mapping):
        return item.get(key)
    return getattr(item, key, None)


def _arguments(arguments: Any) -> Any:
    """Tool-call arguments as an object when they are JSON (the schema's ``any``)."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "".join(
        str(_get(part, "text") or "") for part in _items(value) if _get(part, "text") is not None
    )


def _chat_message(message: Any) -> dict[str, Any]:
    role = _get(message, "role")
    content = _get(message, "content")
    parts: list[dict[str, Any]] = []
    if role == "tool":
        parts.append(
            {
                "type": "tool_call_response",
                "id": _get(message, "tool_call_id"),
                "response": _text(content),
            }
        )
    elif isinstance(content, str):
        parts.append({"type": "text", "content": content})
    else:
        parts.extend(_content_part(part) for part in _items(content))
    for call in _items(_get(message, "tool_calls")):
        parts.append(_tool_call(call))
    converted: dict[str, Any] = {"role": role if isinstance(role, str) else "user", "parts": parts}
    name = _get(message, "name")
    if isinstance(name, str) and name:
        converted["name"] = name
    return converted


def _tool_call(call: Any) -> dict[str, Any]:
    if isinstance(call, ToolCall):
        name, arguments, call_id = call.name, call.arguments, call.id
    else:
        function = _get(call, "function")
        name = _get(function, "name") if function is not None else _get(call, "name")
        arguments = _get(function, "arguments") if function is not None else _get(call, "arguments")
        call_id = _get(call, "id") or _get(call, "call_id")
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": _arguments(arguments)}


def _media(url: str, modality: str) -> dict[str, Any]:
    # A data: URL carries the bytes inline (a blob); anything else is a reference (a uri).
    if url.startswith("data:") and "," in url:
        header, _, data = url.partition(",")
        mime_type = header[5:].split(";")[0] or None
        return {"type": "blob", "modality": modality, "mime_type": mime_type, "content": data}
    return {"type": "uri", "modality": modality, "uri": url}


def _content_part(part: Any) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "content": part}
    kind = _get(part, "type")
    if kind in ("text", "input_text", "output_text"):
        return {"type": "text", "content": _get(part, "text") or ""}
    if kind in ("image_url", "input_image"):
        image = _get(part, "image_url")
        url = _get(image, "url") if isinstance(image, Mapping) else image
        if isinstance(url, str):
            return _media(url, "image")
        file_id = _get(part, "file_id")
        if isinstance(file_id, str):
            return {"type": "file", "modality": "image", "file_id": file_id}
    if kind == "input_audio":
        audio = _get(part, "input_audio")
        data = _get(audio, "data")
        audio_format = _get(audio, "format")
        return {
            "type": "blob",
            "modality": "audio",
            "mime_type": f"audio/{audio_format}" if isinstance(audio_format, str) else None,
            "content": data if isinstance(data, str) else "",
        }
    if isinstance(part, Mapping):
        generic = dict(part)
        generic["type"] = kind if isinstance(kind, str) else "unknown"
        return generic
    return {"type": "unknown"}


def _responses_input(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "parts": [{"type": "text", "content": value}]}]
    messages: list[dict[str, Any]] = []
    for item in _items(value):
        kind = _get(item, "type")
        if isinstance(item, Message) or (kind in (None, "message") and _get(item, "role")):
            messages.append(_chat_message(item))
        elif kind == "function_call":
            messages.append({"role": "assistant", "parts": [_tool_call(item)]})
        elif kind == "function_call_output":
            output = _get(item, "output")
            messages.append(
                {
                    "role": "tool",
                    "parts": [
                        {
                            "type": "tool_call_response",
                            "id": _get(item, "call_id"),
                            "response": output if isinstance(output, str) else _text(output),
                        }
                    ],
                }
            )
        elif isinstance(item, Mapping):
            role = item.get("role")
            messages.append(
                {"role": role if isinstance(role, str) else "user", "parts": [_content_part(item)]}
            )
    return messages


def _tool_definitions(tools: Any) -> list[dict[str, Any]]:
    # Only the schema's required properties: definitions can be large, and the conventions do
    # not recommend the optional ones by default.
    definitions = []
    for tool in _items(tools):
        if not isinstance(tool, Mapping):
            continue
        function = tool.get("function")
        name = function.get("name") if isinstance(function, Mapping) else tool.get("name")
        definition: dict[str, Any] = {"type": tool.get("type") or "function"}
        if isinstance(name, str):
            definition["name"] = name
        definitions.append(definition)
    return definitions


def _output_messages(result: object, error: BaseException | None) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if isinstance(result, Completion):
        if result.reasoning:
            parts.append({"type": "reasoning", "content": result.reasoning})
        if result.text:
            parts.append({"type": "text", "content": result.text})
        if result.refusal:
            parts.append({"type": "refusal", "content": result.refusal})
        parts.extend(_tool_call(call) for call in result.tool_calls)
    elif isinstance(result, Response):
        for item in result.output:
            if isinstance(item, OutputMessage):
                for part in item.content:
                    if isinstance(part, OutputText):
                        parts.append({"type": "text", "content": part.text})
                    elif isinstance(part, OutputRefusal):
                        parts.append({"type": "refusal", "content": part.refusal})
                    elif isinstance(part, ReasoningText):
                        parts.append({"type": "reasoning", "content": part.text})
                    elif isinstance(part, UnknownContentPart):
                        parts.append({"type": part.type})
            elif isinstance(item, FunctionCall):
                parts.append(
                    {
                        "type": "tool_call",
                        "id": item.call_id,
                        "name": item.name,
                        "arguments": _arguments(item.arguments),
                    }
                )
            elif isinstance(item, ReasoningItem):
                text = "\n".join((*item.summary, *item.content))
                if text:
                    parts.append({"type": "reasoning", "content": text})
            else:
                parts.append({"type": item.type})
    else:
        return []
    reason = _finish_reason(result)
    if reason is None:
        # Required by the schema: a stream that did not finish ended in an error or was left
        # early by its reader.
        finish = "error" if error is not None else "incomplete"
    else:
        finish = _OUTPUT_FINISH.get(reason, reason)
    return [{"role": "assistant", "parts": parts, "finish_reason": finish}]
