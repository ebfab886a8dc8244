# Model choice: policies over prices, measured latency and the budget, with fallback on overload.
"""The router: pick a model for a task, explain why, fall back when it is overloaded.

:class:`Router` sits on the public client API (``client.stream_chat``, ``client.statistics()``)
and a budget's cheap :meth:`~holysheep_trio.Budget.would_fit` query. A *policy* is any object
with one method, ``choose(task, view) -> Route`` (:class:`RoutingPolicy`): it sees the task and
a :class:`RouterView` (prices, latency priors, the pool's measured per-model latencies, the
budget) and returns a :class:`Route` -- a model, the reason, the expected cost and time to first
token, and the fallback candidates in order. Two policies come with the library:

- :class:`SeedRules`: the seed document's table, exactly.
- :class:`CheapestWithinLatency`: the cheapest model whose quality tier meets the task's
  complexity and whose time to first token (p95, measured once there are enough samples, the
  seed's priors before) meets the task's latency.

The router then tries the route's candidates in order: one whose worst-case reservation would
not fit the budget now is skipped (when another fits), and one that fails before its first
token with an overload (429, 503, 529), another 5xx or a connection error is left for the next
(``fallback=True``, the default). Errors after the first token are the caller's: the library
never restarts a stream that delivered output.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import attrs
import trio

from ._tokens import estimate_tokens, prompt_token_bound
from .errors import (
    APIConnectionError,
    APIStreamError,
    BudgetExceededError,
    HolySheepError,
    RateLimitError,
    ServerError,
)
from .pool import Percentiles, PoolStatistics
from .prices import DEFAULT_PRICES, ModelPrice, cost

if TYPE_CHECKING:
    from .budget import Budget
    from .client import ChatStream, Client
    from .models import Completion, Message

__all__ = [
    "DEFAULT_FALLBACKS",
    "DEFAULT_LATENCY_PRIORS",
    "DEFAULT_QUALITY_TIERS",
    "CheapestWithinLatency",
    "LatencyPrior",
    "Route",
    "RoutedCompletion",
    "Router",
    "RouterView",
    "RoutingPolicy",
    "SeedRules",
    "Task",
]

logger = logging.getLogger("holysheep_trio")


@attrs.frozen(kw_only=True)
class LatencyPrior:
    """What a model's time to first token is believed to be before it is measured (seconds).

    Attributes:
        mean: Average.
        p95: 95th percentile.
    """

    mean: float
    p95: float


#: The seed document's latencies (avg/p95 ms), as seconds.
DEFAULT_LATENCY_PRIORS: Mapping[str, LatencyPrior] = MappingProxyType(
    {
        "gpt-4.1": LatencyPrior(mean=0.850, p95=1.200),
        "claude-sonnet-4.5": LatencyPrior(mean=0.920, p95=1.350),
        "gemini-2.5-flash": LatencyPrior(mean=0.180, p95=0.280),
        "deepseek-v3.2": LatencyPrior(mean=0.220, p95=0.350),
    }
)

#: The highest task complexity each model is trusted with (the seed's scale, 1-10). Derived
#: from the seed's rules: DeepSeek below 7, Gemini Flash as the default up to 7, Claude for 8
#: and up; GPT-4.1, priced between them, is trusted up to 9.
DEFAULT_QUALITY_TIERS: Mapping[str, int] = MappingProxyType(
    {
        "deepseek-v3.2": 6,
        "gemini-2.5-flash": 7,
        "gpt-4.1": 9,
        "claude-sonnet-4.5": 10,
    }
)

#: Where :class:`SeedRules` turns when its choice is overloaded or over budget: the nearest in
#: quality first.
DEFAULT_FALLBACKS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "gemini-2.5-flash": ("deepseek-v3.2", "gpt-4.1"),
        "deepseek-v3.2": ("gemini-2.5-flash", "gpt-4.1"),
        "claude-sonnet-4.5": ("gpt-4.1", "gemini-2.5-flash"),
        "gpt-4.1": ("claude-sonnet-4.5", "gemini-2.5-flash"),
    }
)

#: The seed's defaults for a task.
DEFAULT_MAX_TOKENS: Final = 2048
DEFAULT_TEMPERATURE: Final = 0.7
#: The seed's threshold under which latency decides alone (ms).
SEED_LATENCY_CRITICAL_MS: Final = 300


def _messages(value: Sequence[Any]) -> tuple[Any, ...]:
    if isinstance(value, str | bytes | Mapping):
        raise TypeError("messages must be a list of messages")
    return tuple(value)


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{attribute.name} must be a number > 0 or None, got {value!r}")


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an int >= 1, got {value!r}")


def _number(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number, got {value!r}")


@attrs.frozen(kw_only=True)
class Task:
    """A piece of work to route: the prompt and what it needs.

    Attributes:
        messages: The chat messages (dicts in the OpenAI shape or ``Message`` values).
        complexity: How hard the task is, on the seed's scale (1-10).
        latency_ms: The time to first token the task can afford, in ms; None: no requirement.
        budget: The task's budget class: ``"low"`` asks for the cheapest adequate model;
            anything else (``"normal"``, ``"high"``) does not.
        max_tokens: The completion limit (the seed's default 2048).
        temperature: Sampling temperature (the seed's default 0.7).
        expected_output_tokens: How long the answer probably is, for the expected cost;
            None: ``max_tokens``.
        params: Other chat parameters passed through (``tools``, ``response_format``...).
    """

    messages: Sequence[Message | Mapping[str, Any]] = attrs.field(converter=_messages)
    complexity: float = attrs.field(default=5, validator=_number)
    latency_ms: float | None = attrs.field(default=None, validator=_positive_or_none)
    budget: str = "normal"
    max_tokens: int = attrs.field(default=DEFAULT_MAX_TOKENS, validator=_positive_int)
    temperature: float = attrs.field(default=DEFAULT_TEMPERATURE, validator=_number)
    expected_output_tokens: int | None = attrs.field(default=None, validator=_positive_or_none)
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, hash=False)

    def chat_arguments(self, model: str) -> dict[str, Any]:
        """The keyword arguments of ``client.stream_chat`` / ``chat`` for ``model``."""
        return {
            **self.params,
            "model": model,
            "messages": list(self.messages),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }


def _candidates(value: Sequence[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class Route:
    """A policy's choice, explained.

    Attributes:
        model: The model to use.
        reason: Why, in words.
        expected_cost: USD for the task's token mix (estimated prompt tokens plus
            ``expected_output_tokens``), or None when the model has no price.
        expected_ttft: Time to first token (p95, seconds) the choice was based on, or None.
        candidates: The models to try in order, ``model`` first, then the fallbacks.
    """

    model: str
    reason: str
    expected_cost: float | None = None
    expected_ttft: float | None = None
    candidates: tuple[str, ...] = attrs.field(default=(), converter=_candidates)

    def __attrs_post_init__(self) -> None:
        rest = tuple(model for model in self.candidates if model != self.model)
        object.__setattr__(self, "candidates", (self.model, *dict.fromkeys(rest)))


@attrs.frozen(kw_only=True)
class RoutedCompletion:
    """The result of :meth:`Router.chat`.

    Attributes:
        model: The model that answered.
        cost: USD of its usage at the router's prices, or None (no usage, or no price).
        latency: Seconds from routing to the end of the answer (fallbacks included).
        completion: The :class:`~holysheep_trio.Completion`.
        route: The policy's route.
        skipped: Models passed over before ``model``, with the reason (budget, overload...).
    """

    model: str
    cost: float | None
    latency: float
    completion: Completion
    route: Route
    skipped: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen, hash=False)


class RouterView:
    """What a policy may look at: prices, latency (measured and prior), the budget.

    Built by the router for each choice; cheap and synchronous.
    """

    def __init__(
        self,
        *,
        prices: Mapping[str, ModelPrice],
        priors: Mapping[str, LatencyPrior],
        statistics: PoolStatistics | None = None,
        budget: Budget | None = None,
    ) -> None:
        self._prices = prices
        self._priors = priors
        self._statistics = statistics
        self._budget = budget

    @property
    def prices(self) -> Mapping[str, ModelPrice]:
        """Model -> price."""
        return self._prices

    @property
    def priors(self) -> Mapping[str, LatencyPrior]:
        """Model -> prior latency."""
        return self._priors

    @property
    def statistics(self) -> PoolStatistics | None:
        """The client's pool statistics, when the view came from a client."""
        return self._statistics

    @property
    def budget(self) -> Budget | None:
        """The budget, if any."""
        return self._budget

    def measured_ttft(self, model: str) -> Percentiles:
        """The pool's measured time to first token of ``model`` (count 0 when never measured)."""
        statistics = self._statistics
        found = None if statistics is None else statistics.models.get(model)
        return Percentiles(count=0) if found is None else found.time_to_first_token

    def ttft_p95(self, model: str, *, min_samples: int = 20) -> tuple[float | None, str]:
        """The p95 time to first token of ``model`` and where it comes from.

        Returns:
            ``(seconds, "measured")`` with at least ``min_samples`` samples in the pool's
            window, else ``(seconds, "prior")`` from the priors, else ``(None, "unknown")``.
        """
        measured = self.measured_ttft(model)
        if measured.count >= min_samples and measured.p95 is not None:
            return measured.p95, "measured"
        prior = self._priors.get(model)
        if prior is not None:
            return prior.p95, "prior"
        return None, "unknown"

    def expected_cost(self, model: str, task: Task) -> float | None:
        """USD for the task's expected tokens on ``model``, or None without a price."""
        price = self._prices.get(model)
        if price is None:
            return None
        prompt = estimate_tokens(task.messages, max_tokens=0)
        completion = task.expected_output_tokens or task.max_tokens
        return (prompt * price.input_per_mtok + completion * price.output_per_mtok) / 1e6

    def prompt_bound(self, task: Task) -> int:
        """The task's prompt-token bound, as a budget reserves it."""
        return prompt_token_bound({**task.params, "messages": list(task.messages)})

    def would_fit(self, model: str, task: Task) -> bool:
        """Whether the task's worst case on ``model`` fits the budget now (True without one)."""
        if self._budget is None:
            return True
        return self._budget.would_fit(model, self.prompt_bound(task), task.max_tokens)


@runtime_checkable
class RoutingPolicy(Protocol):
    """A routing policy: any object with this one method.

    ``choose`` must be synchronous and quick (it runs before every routed request) and must not
    raise for an ordinary task; it returns a :class:`Route` whose ``candidates`` list the
    fallbacks in order.
    """

    def choose(self, task: Task, view: RouterView) -> Route:
        """Pick a model for ``task`` given ``view``."""
        ...


@attrs.frozen(kw_only=True)
class SeedRules:
    """The seed document's selection table, exactly, in this order:

    1. ``latency_ms < 300`` -> ``gemini-2.5-flash``;
    2. ``budget == "low"`` and ``complexity < 7`` -> ``deepseek-v3.2``;
    3. ``complexity >= 8`` -> ``claude-sonnet-4.5``;
    4. otherwise ``gemini-2.5-flash``.

    Attributes:
        fallbacks: Model -> the models to try next (default :data:`DEFAULT_FALLBACKS`).
    """

    fallbacks: Mapping[str, tuple[str, ...]] = attrs.field(
        default=DEFAULT_FALLBACKS, converter=_frozen, hash=False
    )

    def choose(self, task: Task, view: RouterView) -> Route:
        """Apply the table to ``task``."""
        if task.latency_ms is not None and task.latency_ms < SEED_LATENCY_CRITICAL_MS:
            model = "gemini-2.5-flash"
            reason = f"latency_ms {task.latency_ms:g} < 300: latency-critical, the fastest model"
        elif task.budget == "low" and task.complexity < 7:
            model = "deepseek-v3.2"
            reason = f"budget 'low' and complexity {task.complexity:g} < 7: the cheapest model"
        elif task.complexity >= 8:
            model = "claude-sonnet-4.5"
            reason = f"complexity {task.complexity:g} >= 8: complex reasoning, the strongest model"
        else:
            model = "gemini-2.5-flash"
            reason = "default: the balance of latency, cost and quality"
        ttft, _ = view.ttft_p95(model)
        return Route(
            model=model,
            reason=reason,
            expected_cost=view.expected_cost(model, task),
            expected_ttft=ttft,
            candidates=(model, *self.fallbacks.get(model, ())),
        )


@attrs.frozen(kw_only=True)
class CheapestWithinLatency:
    """The cheapest model good enough for the task and fast enough for its latency.

    Among the models whose quality tier is at least the task's complexity, those whose time to
    first token (p95) is at most ``latency_ms`` (measured by the pool once a model has
    ``min_samples`` samples in its window, the priors before); of those, the one with the
    lowest expected cost for the task's token mix. If no model is fast enough, the fastest
    good-enough one; if none is good enough, the highest tier.

    Attributes:
        tiers: Model -> the highest complexity it is trusted with (default
            :data:`DEFAULT_QUALITY_TIERS`); only these models are candidates.
        min_samples: Measured samples needed before a measurement replaces the prior.
    """

    tiers: Mapping[str, float] = attrs.field(
        default=DEFAULT_QUALITY_TIERS, converter=_frozen, hash=False
    )
    min_samples: int = attrs.field(default=20, validator=_positive_int)

    def choose(self, task: Task, view: RouterView) -> Route:
        """Pick the cheapest adequate, fast-enough model for ``task``."""
        if not self.tiers:
            raise ValueError("CheapestWithinLatency needs at least one model in its tiers")
        qualified = [model for model, tier in self.tiers.items() if tier >= task.complexity]
        quality = f"tier >= complexity {task.complexity:g}"
        if not qualified:
            top = max(self.tiers.values())
            qualified = [model for model, tier in self.tiers.items() if tier == top]
            quality = f"no tier reaches complexity {task.complexity:g}: the highest tier"
        timing = {model: view.ttft_p95(model, min_samples=self.min_samples) for model in qualified}
        costs = {model: view.expected_cost(model, task) for model in qualified}

        def cost_key(model: str) -> tuple[float, float]:
            found = costs[model]
            ttft = timing[model][0]
            return (math.inf if found is None else found, math.inf if ttft is None else ttft)

        def speed_key(model: str) -> float:
            ttft = timing[model][0]
            return math.inf if ttft is None else ttft

        limit = task.latency_ms

        def fast_enough(model: str) -> bool:
            ttft = timing[model][0]
            return limit is None or (ttft is not None and ttft * 1000 <= limit)

        fast = [model for model in qualified if fast_enough(model)]
        if fast:
            ordered = sorted(fast, key=cost_key)
            slow = sorted((m for m in qualified if m not in fast), key=speed_key)
            model = ordered[0]
            ttft, source = timing[model]
            within = "" if limit is None else f", TTFT p95 {_ms(ttft)} ({source}) <= {limit:g} ms"
            reason = f"cheapest with {quality}{within}"
            candidates = [*ordered, *slow]
        else:
            ordered = sorted(qualified, key=speed_key)
            model = ordered[0]
            ttft, source = timing[model]
            reason = (
                f"no model with {quality} has TTFT p95 <= {limit:g} ms: the fastest,"
                f" {_ms(ttft)} ({source})"
            )
            candidates = ordered
        return Route(
            model=model,
            reason=reason,
            expected_cost=costs[model],
            expected_ttft=timing[model][0],
            candidates=candidates,
        )


def _ms(seconds: float | None) -> str:
    return "unknown" if seconds is None else f"{seconds * 1000:.0f} ms"


def _falls_back(error: HolySheepError) -> bool:
    """Whether a failure before the first token sends the router to the next candidate."""
    if isinstance(error, APIConnectionError | ServerError | RateLimitError | BudgetExceededError):
        return True
    return isinstance(error, APIStreamError) and error.kind in ("server", "rate_limit")


@attrs.define
class _Trace:
    route: Route | None = None
    skipped: dict[str, str] = attrs.field(factory=dict)


class Router:
    """Routes tasks to models with a policy, over a client (and its budget).

    Args:
        client: The :class:`~holysheep_trio.Client` requests go through.
        policy: A :class:`RoutingPolicy`; default :class:`SeedRules`.
        budget: The budget whose :meth:`~holysheep_trio.Budget.would_fit` steers the choice;
            default: the client's (``client.budget``), if it has one.
        prices: Prices for expected costs and :attr:`RoutedCompletion.cost`; default: the
            budget's, else :data:`~holysheep_trio.DEFAULT_PRICES`.
        priors: Latency priors; default :data:`DEFAULT_LATENCY_PRIORS`.
        fallback: Try the next candidate when one fails before its first token with an
            overload (429, 503, 529), another 5xx, a connection error, or a budget refusal.
    """

    def __init__(
        self,
        client: Client,
        *,
        policy: RoutingPolicy | None = None,
        budget: Budget | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        priors: Mapping[str, LatencyPrior] = DEFAULT_LATENCY_PRIORS,
        fallback: bool = True,
    ) -> None:
        chosen = SeedRules() if policy is None else policy
        if not callable(getattr(chosen, "choose", None)):
            raise TypeError("policy must have a choose(task, view) -> Route method")
        self._client = client
        self._policy = chosen
        self._budget = budget if budget is not None else getattr(client, "budget", None)
        if prices is None:
            prices = self._budget.prices if self._budget is not None else DEFAULT_PRICES
        self._prices = prices
        self._priors = priors
        self._fallback = fallback

    def __repr__(self) -> str:
        return f"<Router policy={self._policy!r} fallback={self._fallback}>"

    @property
    def policy(self) -> RoutingPolicy:
        """The routing policy."""
        return self._policy

    def view(self) -> RouterView:
        """What the policy sees now (the client's statistics are a fresh snapshot)."""
        return RouterView(
            prices=self._prices,
            priors=self._priors,
            statistics=self._client.statistics(),
            budget=self._budget,
        )

    def choose(self, task: Task) -> Route:
        """The policy's route for ``task`` (nothing is sent).

        Must be called inside ``trio.run`` (the statistics age by trio's clock).
        """
        route = self._policy.choose(task, self.view())
        if not isinstance(route, Route):
            raise TypeError(f"the policy returned {type(route).__name__}, not a Route")
        return route

    def _order(self, route: Route, task: Task, view: RouterView, trace: _Trace) -> list[str]:
        """The candidates to try: those whose reservation would not fit now are skipped,
        unless none fits (then the budget decides, waiting or refusing)."""
        candidates = list(route.candidates)
        if view.budget is None:
            return candidates
        fitting = [model for model in candidates if view.would_fit(model, task)]
        if not fitting:
            return candidates
        for model in candidates:
            if model not in fitting:
                trace.skipped[model] = "budget: its worst-case reservation would not fit now"
        return fitting

    @asynccontextmanager
    async def _open_stream(self, task: Task, trace: _Trace) -> AsyncIterator[ChatStream]:
        view = self.view()
        route = self._policy.choose(task, view)
        if not isinstance(route, Route):
            raise TypeError(f"the policy returned {type(route).__name__}, not a Route")
        trace.route = route
        candidates = self._order(route, task, view, trace)
        async with AsyncExitStack() as stack:
            for index, model in enumerate(candidates):
                try:
                    stream = await stack.enter_async_context(
                        self._client.stream_chat(**task.chat_arguments(model))
                    )
                except HolySheepError as error:
                    if not (self._fallback and index + 1 < len(candidates) and _falls_back(error)):
                        raise
                    trace.skipped[model] = f"{error.kind}: {error.message}"
                    logger.info(
                        "router: %s failed before its first token (%s); trying %s",
                        model,
                        type(error).__name__,
                        candidates[index + 1],
                    )
                    continue
                yield stream
                return

    def stream_chat(self, task: Task) -> AbstractAsyncContextManager[ChatStream]:
        """Route ``task`` and stream the answer: ``async with router.stream_chat(task) as s:``.

        Entering chooses the route and tries its candidates until one produces a first token
        (see the module docs for when it moves on). The stream's ``model`` is the one chosen.

        Returns:
            An async context manager yielding a :class:`~holysheep_trio.ChatStream`.

        Raises:
            HolySheepError: The last candidate's error (or the first that does not fall back).
        """
        return self._open_stream(task, _Trace())

    async def chat(self, task: Task) -> RoutedCompletion:
        """Route ``task`` and run it to its end.

        Returns:
            A :class:`RoutedCompletion`: the model, its cost, the latency, the completion,
            the route and what was skipped.

        Raises:
            HolySheepError: As :meth:`stream_chat`, or a failure after the first token.
        """
        started = trio.current_time()
        trace = _Trace()
        async with self._open_stream(task, trace) as stream:
            async for _ in stream:
                pass
        completion = stream.completion
        usage = completion.usage
        spent = None if usage is None else cost(stream.model, usage, prices=self._prices)
        assert trace.route is not None
        return RoutedCompletion(
            model=stream.model,
            cost=spent,
            latency=trio.current_time() - started,
            completion=completion,
            route=trace.route,
            skipped=trace.skipped,
        )
