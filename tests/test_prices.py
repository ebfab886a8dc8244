# Tests of the price table and cost arithmetic (pure, no I/O).
from __future__ import annotations

import math

import attrs
import pytest

from holysheep_trio.models import Usage
from holysheep_trio.prices import DEFAULT_PRICES, ModelPrice, cost, format_usd


def test_the_seed_output_prices_are_in_the_table() -> None:
    # The seed document's output prices, USD per million completion tokens.
    assert {model: price.output_per_mtok for model, price in DEFAULT_PRICES.items()} == {
        "gpt-4.1": 8.0,
        "claude-sonnet-4.5": 15.0,
        "gemini-2.5-flash": 2.5,
        "deepseek-v3.2": 0.42,
    }
    assert all(price.input_per_mtok > 0 for price in DEFAULT_PRICES.values())


def test_cost_splits_input_and_output() -> None:
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=500_000, total_tokens=1_500_000)
    assert cost("gpt-4.1", usage) == pytest.approx(2.0 + 4.0)
    assert cost("claude-sonnet-4.5", usage) == pytest.approx(3.0 + 7.5)
    small = Usage(prompt_tokens=12, completion_tokens=40, total_tokens=52)
    assert cost("deepseek-v3.2", small) == pytest.approx((12 * 0.28 + 40 * 0.42) / 1e6)
    assert cost("gpt-4.1", Usage()) == 0


def test_unknown_models_have_no_cost() -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=10, total_tokens=20)
    assert cost("gpt-4.1-mini", usage) is None
    assert cost("GPT-4.1", usage) is None  # exact names only: a guess would skew budgets


def test_a_custom_table() -> None:
    table = {"mine": ModelPrice(input_per_mtok=1, output_per_mtok=2)}
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000, total_tokens=2_000_000)
    assert cost("mine", usage, prices=table) == 3
    assert cost("gpt-4.1", usage, prices=table) is None


@pytest.mark.parametrize("bad", [-1, math.inf, math.nan, "1", True, None])
def test_prices_must_be_finite_non_negative_numbers(bad: object) -> None:
    with pytest.raises(ValueError, match="input_per_mtok"):
        ModelPrice(input_per_mtok=bad, output_per_mtok=1)  # type: ignore[arg-type]


def test_prices_are_frozen_and_the_default_table_read_only() -> None:
    price = DEFAULT_PRICES["gpt-4.1"]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        price.input_per_mtok = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        DEFAULT_PRICES["free"] = price  # type: ignore[index]


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (None, "unknown"),
        (0.0, "$0"),
        (0.000336, "$0.000336"),
        (0.0123, "$0.0123"),
        (0.5, "$0.50"),
        (0.999, "$0.999"),
        (1.0, "$1.00"),
        (1234.5, "$1,234.50"),
        (0.0000042, "$0.0000042"),
        (0.000078, "$0.000078"),
    ],
)
def test_format_usd(amount: float | None, shown: str) -> None:
    assert format_usd(amount) == shown


def test_the_seed_models_know_their_maximum_output() -> None:
    # Sourced in prices.py; where official pages disagree the larger value is kept, since a
    # budget reserves it for requests without max_tokens.
    assert {model: price.max_output_tokens for model, price in DEFAULT_PRICES.items()} == {
        "gpt-4.1": 32_768,
        "claude-sonnet-4.5": 64_000,
        "gemini-2.5-flash": 65_536,
        "deepseek-v3.2": 65_536,
    }


def test_max_output_tokens_is_optional_and_checked() -> None:
    assert ModelPrice(input_per_mtok=1, output_per_mtok=2).max_output_tokens is None
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="max_output_tokens"):
            ModelPrice(input_per_mtok=1, output_per_mtok=2, max_output_tokens=bad)  # type: ignore[arg-type]
