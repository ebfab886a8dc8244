# The benchmark runner behind `holysheep-trio bench` and benchmarks/: timed streams and statistics.
"""Measure time to first token, token throughput and errors of streamed requests.

Chat completions by default; the Responses API with ``BenchConfig(api="responses")``
(``holysheep-trio bench --api responses``).

Two layers, as everywhere in this library:

- **Pure statistics** -- :class:`BenchRun` (one measured request), :class:`Distribution`,
  :class:`ModelSummary` and :class:`BenchReport` -- built from runs by
  :meth:`BenchReport.from_runs`, with no I/O, so they are unit-tested and reusable.
- **The runner** -- :func:`run_benchmark` sends ``runs`` requests per model through a
  :class:`~holysheep_trio.Client` with at most ``concurrency`` in flight, and returns a report.

What is measured, and why this way (the seed's benchmark counted network chunks as tokens and
averaged nothing else):

- **TTFT** is the client's :attr:`~holysheep_trio.Completion.ttft` (or
  :attr:`~holysheep_trio.Response.ttft`): from the start of the request (retries included) to
  the first output delta.
- **Tokens** are the server's ``usage.completion_tokens`` when it sends usage (the client asks
  for it), else the number of output deltas, which is what servers stream one token at a time;
  never network reads, which carry any number of events. :attr:`BenchRun.tokens_source` says
  which.
- **Tokens per second** of a run is its completion tokens divided by the time after the first
  token (``duration - ttft``): the streaming rate, independent of queueing before the first
  token. :attr:`BenchReport.tokens_per_second` is the aggregate: all tokens over wall time.
- **Percentiles** use the nearest-rank method (as :mod:`holysheep_trio.pool` does): the p-th
  percentile of n sorted values is the value of rank ``ceil(p/100 * n)``, always an observed
  value. With few runs, p95 is the maximum.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs
import trio

from ._responses_stream import chat_usage
from .errors import HolySheepError, StreamInterruptedError
from .responses import (
    FunctionCallArgumentsDelta,
    OutputTextDelta,
    ReasoningSummaryTextDelta,
    ReasoningTextDelta,
    RefusalDelta,
)

if TYPE_CHECKING:
    from os import PathLike

    from .client import Client
    from .models import Usage

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_PROMPT",
    "BenchConfig",
    "BenchReport",
    "BenchRun",
    "Distribution",
    "ModelSummary",
    "percentile",
    "plotting_available",
    "run_benchmark",
    "streaming_rate",
    "ttft_ecdf",
    "write_plot",
]

#: The seed's four models, benchmarked when no model is named.
DEFAULT_MODELS: Final = ("gpt-4.1", "claude-sonnet-4.5", "gemini-2.5-flash", "deepseek-v3.2")
#: A prompt whose answer is long enough to measure a streaming rate.
DEFAULT_PROMPT: Final = "Explain in a few paragraphs how structured concurrency works in Trio."
#: Version of the JSON layout written by :meth:`BenchReport.to_json`.
JSON_VERSION: Final = 1

TokensSource = Literal["usage", "deltas"]
#: The wire format a benchmark measures: chat completions or the Responses API.
Api = Literal["chat", "responses"]


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile by the nearest-rank method.

    Args:
        sorted_values: The sample, sorted ascending, not empty.
        p: The percentile, in ``(0, 100]``.

    Returns:
        The value of rank ``ceil(p / 100 * n)`` (1-based).

    Raises:
        ValueError: The sample is empty or ``p`` is out of range.
    """
    if not sorted_values:
        raise ValueError("percentile of an empty sample")
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p!r}")
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


def streaming_rate(tokens: int, *, ttft: float | None, duration: float) -> float | None:
    """Completion tokens per second after the first token: ``(tokens - 1) / (duration - ttft)``.

    The first token arrives at ``ttft``; the other ``tokens - 1`` arrive in the time after it
    (the OpenTelemetry GenAI "time per output token" convention, inverted). Dividing all
    ``tokens`` by that time would overstate the rate, by 5 % for a 20-token reply.

    Args:
        tokens: Completion tokens of the reply.
        ttft: Seconds to the first token, or None if none came.
        duration: Seconds from the start of the request to its end.

    Returns:
        The rate, or None when it cannot be measured: no first token, no tokens, or no time
        after the first token (a reply that came in one piece).
    """
    if ttft is None or tokens < 2:
        return None
    streaming = duration - ttft
    if streaming <= 0:
        return None
    return (tokens - 1) / streaming


@attrs.frozen(kw_only=True)
class Distribution:
    """Summary statistics of a non-empty sample (seconds or tokens per second).

    Attributes:
        count: Number of values.
        mean: Arithmetic mean.
        min: Smallest value.
        max: Largest value.
        p50: Median (nearest rank).
        p95: 95th percentile (nearest rank).
    """

    count: int
    mean: float
    min: float
    max: float
    p50: float
    p95: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution | None:
        """Summarize ``values``; None for an empty sample.

        Raises:
            ValueError: A value is NaN or infinite.
        """
        ordered = sorted(values)
        if not ordered:
            return None
        if not all(math.isfinite(value) for value in ordered):
            raise ValueError("a distribution needs finite values")
        # fsum is exactly rounded; the clamp keeps min <= mean <= max despite the division's
        # last-bit rounding (e.g. three equal values).
        mean = min(max(math.fsum(ordered) / len(ordered), ordered[0]), ordered[-1])
        return cls(
            count=len(ordered),
            mean=mean,
            min=ordered[0],
            max=ordered[-1],
            p50=percentile(ordered, 50),
            p95=percentile(ordered, 95),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class BenchRun:
    """One measured request.

    Attributes:
        model: The requested model.
        index: The run's number for this model, from 0.
        ttft: Seconds to the first content delta; None if none arrived.
        duration: Seconds from the start of the request to its end or failure.
        completion_tokens: Output tokens (see :attr:`tokens_source`); for a failed run, the
            tokens received before the failure.
        tokens_source: ``"usage"`` when the server reported usage, else ``"deltas"`` (counted
            output deltas).
        attempts: HTTP attempts the request took (retries included).
        error_kind: The :attr:`~holysheep_trio.HolySheepError.kind` of the failure, or None.
        error: The failure's one-line message, or None.
    """

    model: str
    index: int = 0
    ttft: float | None = None
    duration: float = 0.0
    completion_tokens: int = 0
    tokens_source: TokensSource = "usage"
    attempts: int = 1
    error_kind: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the request succeeded."""
        return self.error_kind is None

    @property
    def tokens_per_second(self) -> float | None:
        """Completion tokens per second after the first token; None if not measurable.

        Not measurable: a failed run, no first token, no tokens, or no time after the first
        token (a reply that came in one piece).
        """
        if not self.ok:
            return None
        return streaming_rate(self.completion_tokens, ttft=self.ttft, duration=self.duration)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields plus ``tokens_per_second``."""
        return {**attrs.asdict(self), "tokens_per_second": self.tokens_per_second}


def _freeze_counts(value: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(sorted(value.items())))


@attrs.frozen(kw_only=True)
class ModelSummary:
    """The statistics of one model's runs.

    Attributes:
        model: The model.
        runs: Requests made.
        succeeded: Requests that succeeded.
        errors: Failed requests by error kind, sorted by kind.
        ttft: Time to first token of the successful runs, or None if there were none.
        tokens_per_second: Per-run streaming rates of the successful runs, or None.
        completion_tokens: Output tokens of the successful runs.
    """

    model: str
    runs: int
    succeeded: int
    errors: Mapping[str, int] = attrs.field(factory=dict, converter=_freeze_counts)
    ttft: Distribution | None = None
    tokens_per_second: Distribution | None = None
    completion_tokens: int = 0

    @property
    def error_rate(self) -> float:
        """Failed requests over all requests (0 when there were none)."""
        return 0.0 if self.runs == 0 else (self.runs - self.succeeded) / self.runs

    @property
    def error_rates(self) -> dict[str, float]:
        """Failed requests of each error kind over all requests, by kind."""
        return {kind: count / self.runs for kind, count in self.errors.items()} if self.runs else {}

    @classmethod
    def of(cls, model: str, runs: Iterable[BenchRun]) -> ModelSummary:
        """Summarize the runs of ``model`` (runs of other models are ignored)."""
        mine = [run for run in runs if run.model == model]
        good = [run for run in mine if run.ok]
        rates = [rate for run in good if (rate := run.tokens_per_second) is not None]
        return cls(
            model=model,
            runs=len(mine),
            succeeded=len(good),
            errors=Counter(run.error_kind for run in mine if run.error_kind is not None),
            ttft=Distribution.of(run.ttft for run in good if run.ttft is not None),
            tokens_per_second=Distribution.of(rates),
            completion_tokens=sum(run.completion_tokens for run in good),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, with ``error_rate`` and ``error_rates`` (by kind)."""
        return {
            "model": self.model,
            "runs": self.runs,
            "succeeded": self.succeeded,
            "error_rate": self.error_rate,
            "errors": dict(self.errors),
            "error_rates": self.error_rates,
            "ttft": None if self.ttft is None else self.ttft.to_json(),
            "tokens_per_second": (
                None if self.tokens_per_second is None else self.tokens_per_second.to_json()
            ),
            "completion_tokens": self.completion_tokens,
        }


def _positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"BenchConfig.{attribute.name} must be an integer >= 1, got {value!r}")


def _max_tokens(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _positive(instance, attribute, value)


def _check_api(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in ("chat", "responses"):
        raise ValueError(f"BenchConfig.api must be 'chat' or 'responses', got {value!r}")


def _model_names(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _check_models(
    instance: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]
) -> None:
    if not value or not all(isinstance(model, str) and model for model in value):
        raise ValueError("BenchConfig.models must be one or more non-empty model names")
    if len(set(value)) != len(value):
        raise ValueError(f"BenchConfig.models has duplicates: {list(value)}")


@attrs.frozen(kw_only=True)
class BenchConfig:
    """What to measure.

    Attributes:
        models: The models, in order; each gets ``runs`` requests.
        runs: Requests per model.
        concurrency: Requests in flight at once, over all models.
        max_tokens: ``max_tokens`` of each request; None lets the model decide.
        prompt: The user message.
        system: An optional system message.
        api: ``"chat"`` (``client.stream_chat``, the default) or ``"responses"``
            (``client.stream_response``: the prompt is the ``input``, the system message the
            ``instructions``, ``max_tokens`` the ``max_output_tokens``).

    Raises:
        ValueError: A count is below 1, no (or a duplicate) model is given, or ``api`` is
            neither ``"chat"`` nor ``"responses"``.
    """

    models: tuple[str, ...] = attrs.field(
        default=DEFAULT_MODELS, converter=_model_names, validator=_check_models
    )
    runs: int = attrs.field(default=20, validator=_positive)
    concurrency: int = attrs.field(default=4, validator=_positive)
    max_tokens: int | None = attrs.field(default=100, validator=_max_tokens)
    prompt: str = DEFAULT_PROMPT
    system: str | None = None
    api: Api = attrs.field(default="chat", validator=_check_api)

    def messages(self) -> list[dict[str, str]]:
        """The request's messages in the OpenAI shape."""
        messages = [] if self.system is None else [{"role": "system", "content": self.system}]
        return [*messages, {"role": "user", "content": self.prompt}]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return {**attrs.asdict(self), "models": list(self.models)}


def _runs_tuple(value: Iterable[BenchRun]) -> tuple[BenchRun, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class BenchReport:
    """The result of a benchmark: every run and a summary per model.

    Build it with :meth:`from_runs` (which computes the summaries) or get it from
    :func:`run_benchmark`.

    Attributes:
        config: What was measured.
        runs: Every finished run, in the order they finished.
        models: One summary per configured model, in the configuration's order.
        wall_time: Seconds from the first request to the last end.
        target: Where the requests went (a base URL, or a description of the simulator).
        interrupted: Whether the benchmark was stopped before every run finished.
    """

    config: BenchConfig
    runs: tuple[BenchRun, ...] = attrs.field(converter=_runs_tuple)
    models: tuple[ModelSummary, ...]
    wall_time: float
    target: str = ""
    interrupted: bool = False

    @classmethod
    def from_runs(
        cls,
        runs: Iterable[BenchRun],
        *,
        config: BenchConfig,
        wall_time: float,
        target: str = "",
        interrupted: bool = False,
    ) -> BenchReport:
        """Compute the per-model summaries of ``runs``.

        Args:
            runs: The finished runs (a partial set after an interruption is fine).
            config: The configuration they ran with.
            wall_time: Seconds the whole benchmark took.
            target: Where the requests went.
            interrupted: Whether it was stopped early.

        Returns:
            The report.
        """
        runs = tuple(runs)
        return cls(
            config=config,
            runs=runs,
            models=tuple(ModelSummary.of(model, runs) for model in config.models),
            wall_time=wall_time,
            target=target,
            interrupted=interrupted,
        )

    @property
    def succeeded(self) -> int:
        """Successful runs over all models."""
        return sum(summary.succeeded for summary in self.models)

    @property
    def completion_tokens(self) -> int:
        """Output tokens of the successful runs, all models."""
        return sum(summary.completion_tokens for summary in self.models)

    @property
    def tokens_per_second(self) -> float | None:
        """Aggregate throughput: all successful output tokens over the wall time."""
        if self.wall_time <= 0 or self.completion_tokens == 0:
            return None
        return self.completion_tokens / self.wall_time

    def summary(self, model: str) -> ModelSummary:
        """The summary of ``model``.

        Raises:
            KeyError: The model was not benchmarked.
        """
        for summary in self.models:
            if summary.model == model:
                return summary
        raise KeyError(model)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: version, configuration, totals, summaries and every run."""
        return {
            "version": JSON_VERSION,
            "target": self.target,
            "interrupted": self.interrupted,
            "config": self.config.to_json(),
            "wall_time": self.wall_time,
            "succeeded": self.succeeded,
            "runs_total": len(self.runs),
            "completion_tokens": self.completion_tokens,
            "tokens_per_second": self.tokens_per_second,
            "models": [summary.to_json() for summary in self.models],
            "runs": [run.to_json() for run in self.runs],
        }


# ---- the runner --------------------------------------------------------------------------


#: Seconds to the first output, duration, attempts and usage of one measured request.
_Result = tuple[float | None, float, int, "Usage | None"]
#: The Responses API's delta events: one per streamed token.
_DELTAS: Final = (
    OutputTextDelta,
    RefusalDelta,
    ReasoningTextDelta,
    ReasoningSummaryTextDelta,
    FunctionCallArgumentsDelta,
)


def _one_line(text: str) -> str:
    return " ".join(text.split())


async def _stream_chat(
    client: Client, config: BenchConfig, model: str, counted: list[int]
) -> _Result:
    async with client.stream_chat(
        model=model, messages=config.messages(), max_tokens=config.max_tokens
    ) as stream:
        async for chunk in stream:
            if chunk.has_output:
                counted[0] += 1
    completion = stream.completion
    return completion.ttft, completion.duration, completion.attempts, completion.usage


async def _stream_response(
    client: Client, config: BenchConfig, model: str, counted: list[int]
) -> _Result:
    async with client.stream_response(
        model=model,
        input=config.prompt,
        instructions=config.system,
        max_output_tokens=config.max_tokens,
    ) as stream:
        async for event in stream:
            # Deltas only: a part's final text repeats them (it is output only for servers
            # that send no deltas, and then the usage counts).
            if event.is_output and isinstance(event, _DELTAS):
                counted[0] += 1
    response = stream.response
    usage = None if response.usage is None else chat_usage(response.usage)
    return response.ttft, response.duration, response.attempts, usage


async def _measure(client: Client, config: BenchConfig, model: str, index: int) -> BenchRun:
    """Run one request and measure it; a library error becomes a failed run, not an exception."""
    start = trio.current_time()
    counted = [0]  # output deltas, also those received before a failure
    stream = _stream_response if config.api == "responses" else _stream_chat
    try:
        ttft, duration, attempts, usage = await stream(client, config, model, counted)
    except HolySheepError as exc:
        partial = exc.partial if isinstance(exc, StreamInterruptedError) else None
        return BenchRun(
            model=model,
            index=index,
            ttft=None if partial is None else partial.ttft,
            duration=trio.current_time() - start,
            completion_tokens=counted[0],
            tokens_source="deltas",
            attempts=exc.attempt or 1,
            error_kind=exc.kind,
            error=_one_line(str(exc)),
        )
    return BenchRun(
        model=model,
        index=index,
        ttft=ttft,
        duration=duration,
        completion_tokens=counted[0] if usage is None else usage.completion_tokens,
        tokens_source="deltas" if usage is None else "usage",
        attempts=attempts,
    )


async def run_benchmark(
    client: Client,
    config: BenchConfig,
    *,
    on_run: Callable[[BenchRun], None] | None = None,
    target: str = "",
) -> BenchReport:
    """Send ``config.runs`` requests per model with at most ``config.concurrency`` in flight.

    Requests are interleaved across models (run 0 of every model, then run 1, ...), so every
    model sees the same load over time. A request that fails with a
    :class:`~holysheep_trio.HolySheepError` becomes a failed :class:`BenchRun`; the benchmark
    goes on. Cancellation (a caller's deadline, Ctrl-C) stops it: collect runs with ``on_run``
    and build a partial report with :meth:`BenchReport.from_runs` if you need one.

    Args:
        client: An open client.
        config: What to measure.
        on_run: Called with each run as it finishes (e.g. to advance a progress bar).
        target: Recorded in the report (where the requests go).

    Returns:
        The report.
    """
    jobs = iter([(model, index) for index in range(config.runs) for model in config.models])
    runs: list[BenchRun] = []

    async def worker() -> None:
        # Workers share one iterator; trio switches tasks only at awaits, so `next` is atomic.
        for model, index in jobs:
            run = await _measure(client, config, model, index)
            runs.append(run)
            if on_run is not None:
                on_run(run)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(min(config.concurrency, config.runs * len(config.models))):
            nursery.start_soon(worker)
    return BenchReport.from_runs(
        runs, config=config, wall_time=trio.current_time() - start, target=target
    )


# ---- the plot (optional extra `plot`) ------------------------------------------------------


def plotting_available() -> bool:
    """Whether matplotlib (the ``plot`` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def ttft_ecdf(report: BenchReport) -> dict[str, list[tuple[float, float]]]:
    """The empirical distribution of each model's time to first token, as :func:`write_plot`
    draws it.

    Returns:
        For each model with at least one successful run: points ``(seconds, fraction)`` of the
        step function "fraction of its runs whose TTFT was at most this", starting at
        ``(fastest, 0.0)`` and rising by ``1 / n`` at every run's TTFT to ``1.0``. Models
        in the report's order.
    """
    curves: dict[str, list[tuple[float, float]]] = {}
    for summary in report.models:
        values = sorted(
            run.ttft
            for run in report.runs
            if run.model == summary.model and run.ok and run.ttft is not None
        )
        if values:
            count = len(values)
            points = [(values[0], 0.0)]
            points += [(value, (rank + 1) / count) for rank, value in enumerate(values)]
            curves[summary.model] = points
    return curves


def write_plot(report: BenchReport, path: str | PathLike[str]) -> None:
    """Draw the TTFT distribution and the tokens/s of each run per model into a PNG file.

    The TTFT panel is an empirical distribution function per model (:func:`ttft_ecdf`): one
    rising step line per model, which stays readable with several models where overlapping
    histograms do not; read a percentile off the y axis (0.5 is the median, 0.95 the p95).

    Needs the ``plot`` extra (``pip install 'holysheep-trio[plot]'``, i.e. matplotlib). Uses
    matplotlib's object API without pyplot, so no GUI backend or global state is touched.

    Args:
        report: The benchmark report.
        path: The image file to write (the format follows its suffix; ``.png`` recommended).

    Raises:
        ImportError: matplotlib is not installed.
        OSError: The file cannot be written.
    """
    _figure(report).savefig(path)


def _figure(report: BenchReport) -> Any:
    """The matplotlib ``Figure`` that :func:`write_plot` saves."""
    try:
        from matplotlib.figure import Figure  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'holysheep-trio[plot]'") from exc

    figure = Figure(figsize=(11, 4.5), layout="constrained")
    ttft_axes, rate_axes = figure.subplots(1, 2)
    for model, points in ttft_ecdf(report).items():
        ttft_axes.step(
            [seconds for seconds, _ in points],
            [fraction for _, fraction in points],
            where="post",
            label=f"{model} (n={len(points) - 1})",
        )
    for summary in report.models:
        rates = [
            (run.index, rate)
            for run in report.runs
            if run.model == summary.model and (rate := run.tokens_per_second) is not None
        ]
        rates.sort()
        if rates:
            rate_axes.plot(
                [index for index, _ in rates],
                [rate for _, rate in rates],
                marker="o",
                label=summary.model,
            )
    ttft_axes.set_title("Time to first token (ECDF)")
    ttft_axes.set_xlabel("seconds")
    ttft_axes.set_ylabel("fraction of runs at most this")
    ttft_axes.set_ylim(0.0, 1.02)
    ttft_axes.grid(alpha=0.3)
    rate_axes.set_title("Tokens per second, per run")
    rate_axes.set_xlabel("run")
    rate_axes.set_ylabel("tokens/s")
    for axes in (ttft_axes, rate_axes):
        if axes.get_legend_handles_labels()[0]:
            axes.legend()
    figure.suptitle(f"holysheep-trio bench: {report.target}" if report.target else "bench")
    return figure
