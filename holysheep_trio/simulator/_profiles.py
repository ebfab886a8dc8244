# Model profiles: the data that decides how fast and how long the simulator answers each model.
from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

import attrs

# z-score of the 95th percentile of the standard normal distribution.
_Z95 = 1.6448536269514722


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


#: How long replies are: ``None`` for the natural length (seeded per request, capped by
#: ``max_tokens``), an int for exactly that many tokens (still capped), or ``"max"`` to run
#: every reply to its ``max_tokens``.
ReplyTokens: TypeAlias = int | Literal["max"] | None


def check_reply_tokens(value: object, what: str = "reply_tokens") -> None:
    """Raise ``ValueError`` unless ``value`` is a valid :data:`ReplyTokens`.

    Args:
        value: The value to check.
        what: The name used in the error message.

    Raises:
        ValueError: ``value`` is neither ``None``, ``"max"`` nor an int >= 1.
    """
    if value is None or value == "max":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be None, 'max' or an int >= 1, got {value!r}")


def _reply_tokens(instance: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    check_reply_tokens(value, attribute.name)


def _reasoning_field(instance: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in (None, "reasoning_content", "reasoning"):
        raise ValueError(
            f"{attribute.name} must be None, 'reasoning_content' or 'reasoning', got {value!r}"
        )


def _optional_capacity(instance: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be None or an int >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class ModelProfile:
    """How one simulated model answers.

    Time to first token is drawn from a lognormal distribution fitted to ``ttft_mean_ms`` and
    ``ttft_p95_ms`` (see :meth:`ttft_lognormal`); content tokens then follow at about
    ``tokens_per_second``. A text reply ends by itself after
    ``natural_length ± natural_length_spread`` tokens (uniform, seeded by the request), or
    earlier at ``max_tokens``.

    Attributes:
        name: The model id clients send in ``model`` and ``GET /v1/models`` lists.
        ttft_mean_ms: Mean time to first token, in milliseconds.
        ttft_p95_ms: 95th percentile of the time to first token, in milliseconds; at least the
            mean, and below 3.8 times the mean (a lognormal cannot fit a wider spread).
        tokens_per_second: Streaming rate after the first token.
        natural_length: Centre of the natural reply length, in tokens.
        natural_length_spread: Half-width of the uniform spread around ``natural_length``.
        max_output_tokens: The largest ``max_tokens`` accepted; larger values get a 400.
        owned_by: ``owned_by`` in ``GET /v1/models``.
        created: ``created`` (Unix seconds) in ``GET /v1/models``.
        capacity: The server's hidden concurrency limit for this model, or ``None`` for none:
            a request arriving while ``capacity`` requests of the model are being answered
            gets an HTTP 429 (``code: rate_limit_exceeded``, ``retry-after-ms:
            capacity_retry_after_ms``), as an overloaded relay answers.
        capacity_retry_after_ms: The ``retry-after-ms`` (and, rounded up to whole seconds,
            ``retry-after``) sent with such a 429.
        snapshot: The dated snapshot name answered in ``model`` (as the real API answers
            ``gpt-4.1-2025-04-14`` to a request for ``gpt-4.1``); requests may use it too.
            ``None`` answers ``name``.
        reasoning_field: On chat completions, the delta field that streams reasoning when a
            request asks for it (``reasoning_effort``): ``"reasoning_content"`` as DeepSeek
            sends it, ``"reasoning"`` as OpenRouter does, or ``None`` to keep the reasoning
            hidden (counted in ``completion_tokens_details.reasoning_tokens`` only), as OpenAI
            does.
    """

    name: str
    ttft_mean_ms: float = attrs.field(validator=_positive)
    ttft_p95_ms: float = attrs.field(validator=_positive)
    tokens_per_second: float = attrs.field(default=45.0, validator=_positive)
    natural_length: int = attrs.field(default=120, validator=_positive)
    natural_length_spread: int = attrs.field(default=60, validator=_non_negative)
    max_output_tokens: int = attrs.field(default=32_768, validator=_positive)
    owned_by: str = "holysheep"
    created: int = 1_735_689_600
    capacity: int | None = attrs.field(default=None, validator=_optional_capacity)
    capacity_retry_after_ms: int = attrs.field(default=100, validator=_non_negative)
    snapshot: str | None = None
    reasoning_field: Literal["reasoning_content", "reasoning"] | None = attrs.field(
        default=None, validator=_reasoning_field
    )

    @property
    def served_name(self) -> str:
        """The name answered in ``model``: the dated snapshot, or the name without one."""
        return self.snapshot or self.name

    def __attrs_post_init__(self) -> None:
        if self.natural_length_spread >= self.natural_length:
            raise ValueError("natural_length_spread must be smaller than natural_length")
        ratio = self.ttft_p95_ms / self.ttft_mean_ms
        # ln(p95/mean) = z*sigma - sigma^2/2 has a real root only below z^2/2.
        if not 1.0 <= ratio < math.exp(_Z95 * _Z95 / 2):
            raise ValueError(
                f"ttft_p95_ms/ttft_mean_ms must be in [1, 3.87), got {ratio:.3f} for {self.name}"
            )

    def ttft_lognormal(self) -> tuple[float, float]:
        """The ``(mu, sigma)`` of ln(TTFT in seconds), fitted to the mean and the 95th percentile.

        For a lognormal, mean = exp(mu + sigma²/2) and p95 = exp(mu + z·sigma), so
        ln(p95/mean) = z·sigma - sigma²/2; the smaller root is the one that keeps the mode
        near the mean.

        Returns:
            ``(mu, sigma)`` for :meth:`random.Random.lognormvariate`.
        """
        gap = math.log(self.ttft_p95_ms / self.ttft_mean_ms)
        sigma = _Z95 - math.sqrt(_Z95 * _Z95 - 2.0 * gap)
        mu = math.log(self.ttft_mean_ms / 1000.0) - sigma * sigma / 2.0
        return mu, sigma


def _freeze_models(models: Mapping[str, ModelProfile]) -> Mapping[str, ModelProfile]:
    return MappingProxyType(dict(models))


def _check_models(
    instance: Any, attribute: attrs.Attribute[Any], value: Mapping[str, ModelProfile]
) -> None:
    if not value:
        raise ValueError("a profile needs at least one model")
    for key, model in value.items():
        if key != model.name:
            raise ValueError(f"models key {key!r} differs from the model's name {model.name!r}")


@attrs.frozen(kw_only=True)
class Profile:
    """A set of simulated models and how the server paces them.

    Attributes:
        name: A label (``"realistic"``, ``"fast"`` or your own).
        models: Model id -> :class:`ModelProfile`; each key must equal the model's ``name``.
        delays: Whether time to first token and the token rate are simulated (with
            ``trio.sleep``, so a virtual clock drives them in tests). ``False`` answers at once.
        pre_encoded: Whether streams are written from pre-encoded chunk bytes, many chunks per
            socket write. Only takes effect with ``delays=False``; the bytes on the wire are the
            same either way (``benchmarks/bench_simulator.py`` measures the gain).
        reply_tokens: The length of text replies: ``None`` (natural, seeded per request and
            capped by ``max_tokens``), an int (exactly that many tokens, still capped) or
            ``"max"`` (every reply runs to its ``max_tokens`` and ends with ``"length"``, for
            benchmarks that need an exact length). A request's ``X-Simulator-Reply-Tokens``
            header overrides it.
    """

    name: str
    models: Mapping[str, ModelProfile] = attrs.field(
        converter=_freeze_models, validator=_check_models
    )
    delays: bool = True
    pre_encoded: bool = False
    reply_tokens: ReplyTokens = attrs.field(default=None, validator=_reply_tokens)

    @classmethod
    def from_models(
        cls,
        name: str,
        models: list[ModelProfile],
        *,
        delays: bool = True,
        pre_encoded: bool = False,
        reply_tokens: ReplyTokens = None,
    ) -> Profile:
        """Build a profile from a list of models, keyed by their names.

        Args:
            name: The profile's label.
            models: The models; names must be unique.
            delays: See :attr:`delays`.
            pre_encoded: See :attr:`pre_encoded`.
            reply_tokens: See :attr:`reply_tokens`.

        Returns:
            The profile.

        Raises:
            ValueError: Two models share a name.
        """
        by_name = {model.name: model for model in models}
        if len(by_name) != len(models):
            raise ValueError("model names must be unique")
        return cls(
            name=name,
            models=by_name,
            delays=delays,
            pre_encoded=pre_encoded,
            reply_tokens=reply_tokens,
        )


# Latency priors of the seed document (avg/p95 ms per model), HolySheep's four relayed models.
# Snapshots are the dated names the providers answer; Gemini's and DeepSeek's APIs answer the
# stable name itself, so theirs stay undated.
_SEED_MODELS = (
    ModelProfile(
        name="gpt-4.1",
        ttft_mean_ms=850,
        ttft_p95_ms=1200,
        owned_by="openai",
        snapshot="gpt-4.1-2025-04-14",
    ),
    ModelProfile(
        name="claude-sonnet-4.5",
        ttft_mean_ms=920,
        ttft_p95_ms=1350,
        owned_by="anthropic",
        snapshot="claude-sonnet-4-5-20250929",
    ),
    ModelProfile(name="gemini-2.5-flash", ttft_mean_ms=180, ttft_p95_ms=280, owned_by="google"),
    ModelProfile(
        name="deepseek-v3.2",
        ttft_mean_ms=220,
        ttft_p95_ms=350,
        owned_by="deepseek",
        reasoning_field="reasoning_content",
    ),
)


def realistic_profile() -> Profile:
    """The seed's four models with their latency priors, ~45 tokens/s, 60-180 token replies.

    Returns:
        A profile with delays on.
    """
    return Profile.from_models("realistic", list(_SEED_MODELS))


def fast_profile() -> Profile:
    """The same four models with no delays and pre-encoded chunks, for throughput benchmarks.

    ``max_tokens`` may go up to 10,000,000 so a single stream can be long enough to measure.

    Returns:
        A profile with delays off and the pre-encoded fast path on.
    """
    models = [
        attrs.evolve(model, natural_length=64, natural_length_spread=0, max_output_tokens=10**7)
        for model in _SEED_MODELS
    ]
    return Profile.from_models("fast", models, delays=False, pre_encoded=True)


#: Built-in profiles by name, as accepted by ``open_simulator(profile=...)``.
PROFILES: Mapping[str, Profile] = MappingProxyType(
    {"realistic": realistic_profile(), "fast": fast_profile()}
)
