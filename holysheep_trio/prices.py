# Model prices in USD per million tokens, and the cost of one request's usage.
"""Prices of the models HolySheep relays, and :func:`cost`.

The output prices are the seed document's (USD per million completion tokens); the input
prices are the providers' public list prices for uncached prompt tokens (November 2026):

=====================  ===========  ============
model                  input/Mtok   output/Mtok
=====================  ===========  ============
gpt-4.1                2.00         8.00
claude-sonnet-4.5      3.00         15.00
gemini-2.5-flash       0.30         2.50
deepseek-v3.2          0.28         0.42
=====================  ===========  ============

Cached-prompt discounts and batch prices are ignored, so a cost is an upper bound for the
prompt part.

``max_output_tokens`` is the most completion tokens one request can produce; a budget reserves
it for a request that sets no ``max_tokens`` (see ``docs/budgets.md``). Sources are cited next
to each entry of :data:`DEFAULT_PRICES`; where two official pages disagree, the larger value is
kept, because a reservation must never be smaller than what the server can bill.

A model that is not in the table has no known cost (:func:`cost` returns None): guessing a
price would make a budget wrong without anyone noticing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs

from .models import Usage

__all__ = ["DEFAULT_PRICES", "ModelPrice", "cost", "format_usd"]

_TOKENS_PER_UNIT: Final = 1_000_000


def _optional_token_limit(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ModelPrice.{attribute.name} must be None or an int >= 1, got {value!r}")


def _price(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"ModelPrice.{attribute.name} must be a finite number >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class ModelPrice:
    """What one model costs, in USD per million tokens.

    Attributes:
        input_per_mtok: Price of a million prompt tokens.
        output_per_mtok: Price of a million completion tokens.
        max_output_tokens: The most completion tokens one request can produce, or None when
            unknown (then a budget needs ``max_tokens`` on every request to the model).

    Raises:
        ValueError: A price is negative, infinite or not a number, or ``max_output_tokens`` is
            not a positive int.
    """

    input_per_mtok: float = attrs.field(validator=_price)
    output_per_mtok: float = attrs.field(validator=_price)
    max_output_tokens: int | None = attrs.field(default=None, validator=_optional_token_limit)

    def cost(self, usage: Usage) -> float:
        """The cost in USD of ``usage`` at this price.

        Args:
            usage: The billed tokens of a request.

        Returns:
            ``prompt_tokens * input + completion_tokens * output``, per million tokens.
        """
        return (
            usage.prompt_tokens * self.input_per_mtok
            + usage.completion_tokens * self.output_per_mtok
        ) / _TOKENS_PER_UNIT


#: The built-in price table (see the module docstring for the sources). Read-only.
DEFAULT_PRICES: Mapping[str, ModelPrice] = MappingProxyType(
    {
        # "32,768 max output tokens": https://platform.openai.com/docs/models/gpt-4.1
        "gpt-4.1": ModelPrice(input_per_mtok=2.0, output_per_mtok=8.0, max_output_tokens=32_768),
        # "Max output: 64000 tokens":
        # https://docs.anthropic.com/en/docs/about-claude/models/overview
        "claude-sonnet-4.5": ModelPrice(
            input_per_mtok=3.0, output_per_mtok=15.0, max_output_tokens=64_000
        ),
        # "Output token limit: 65,536":
        # https://ai.google.dev/gemini-api/docs/models#gemini-2.5-flash (Vertex AI's model page
        # says 65,535; the larger value is kept).
        "gemini-2.5-flash": ModelPrice(
            input_per_mtok=0.30, output_per_mtok=2.50, max_output_tokens=65_536
        ),
        # DeepSeek-V3.2 "MAX OUTPUT": 8K in non-thinking mode (deepseek-chat), 64K in thinking
        # mode (deepseek-reasoner): https://api-docs.deepseek.com/quick_start/pricing. A relay's
        # "deepseek-v3.2" may serve either mode, so the thinking mode's 64K bounds both.
        "deepseek-v3.2": ModelPrice(
            input_per_mtok=0.28, output_per_mtok=0.42, max_output_tokens=65_536
        ),
    }
)


def cost(
    model: str, usage: Usage, *, prices: Mapping[str, ModelPrice] = DEFAULT_PRICES
) -> float | None:
    """The cost in USD of a request to ``model`` that used ``usage``.

    Args:
        model: The model name, matched exactly against the table.
        usage: The billed tokens.
        prices: The price table; :data:`DEFAULT_PRICES` unless given.

    Returns:
        The cost in USD, or None when the model is not in the table.
    """
    price = prices.get(model)
    return None if price is None else price.cost(usage)


def format_usd(amount: float | None) -> str:
    """Show a cost for humans: ``$1,234.50``, ``$0.50``, ``$0.000336``, or ``unknown``.

    Below a dollar, three significant digits are kept (in plain decimal notation), so a single
    cheap request does not show as ``$0.00``.

    Args:
        amount: USD, or None when unknown.

    Returns:
        The text.
    """
    if amount is None:
        return "unknown"
    if amount == 0:
        return "$0"
    if abs(amount) >= 1:
        return f"${amount:,.2f}"
    decimals = max(2, 2 - math.floor(math.log10(abs(amount))))
    text = f"{amount:.{decimals}f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"
