# Tests of the deadline configuration and the seed's total-deadline rule.
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import holysheep_trio as hs
from holysheep_trio.timeouts import TTFT_PRIORS_MS, UNKNOWN_MODEL_TTFT_MS, expected_total_seconds


def test_defaults() -> None:
    timeouts = hs.Timeouts()
    assert (timeouts.connect, timeouts.first_token, timeouts.idle) == (10.0, 60.0, 60.0)
    assert timeouts.total == "auto"


@pytest.mark.parametrize(
    ("model", "max_tokens", "expected"),
    [
        ("gpt-4.1", 500, 60.0),  # 0.85 + 11.1 + 5 < 60 -> the floor
        ("gpt-4.1", 4500, 0.85 + 100 + 5),
        ("gemini-2.5-flash", 9000, 0.18 + 200 + 5),
        ("claude-sonnet-4.5", 2700, 0.92 + 60 + 5),
        ("deepseek-v3.2", 2700, 0.22 + 60 + 5),
        ("some-new-model", 2700, UNKNOWN_MODEL_TTFT_MS / 1000 + 60 + 5),
    ],
)
def test_seed_rule(model: str, max_tokens: int, expected: float) -> None:
    assert expected_total_seconds(model, max_tokens) == pytest.approx(expected)


@given(st.sampled_from([*TTFT_PRIORS_MS, "x"]), st.integers(0, 10**6))
def test_seed_rule_is_at_least_a_minute_and_monotonic(model: str, max_tokens: int) -> None:
    total = expected_total_seconds(model, max_tokens)
    assert total >= 60.0
    assert expected_total_seconds(model, max_tokens + 45) >= total


def test_total_for() -> None:
    assert hs.Timeouts().total_for("gpt-4.1", None) is None
    assert hs.Timeouts().total_for("gpt-4.1", 9000) == pytest.approx(0.85 + 200 + 5)
    assert hs.Timeouts(total=7).total_for("gpt-4.1", 9000) == 7
    assert hs.Timeouts(total=None).total_for("gpt-4.1", 9000) is None


@pytest.mark.parametrize("bad", [0, -1, "soon", True, float("nan")])
def test_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ValueError, match="positive"):
        hs.Timeouts(idle=bad)  # type: ignore[arg-type]
