# The library's deadlines (connect, first token, idle, total) and the seed's total-deadline rule.
"""Deadlines of a chat request.

A caller can always put ``trio.fail_after`` around anything; these are the deadlines only the
library can measure, because they are about events inside the stream:

- ``connect``: opening the TCP (and TLS) connection.
- ``first_token``: from the start of an attempt to its first content or tool-call delta.
- ``idle``: the longest silence between two SSE events that carry data (from the response
  headers on). Comments such as ``: ping`` are *not* progress: a server that only sends
  keep-alives still times out.
- ``total``: the whole request, all retries included. The default (``"auto"``) is the seed's
  rule when ``max_tokens`` is known: first-token prior + ``max_tokens`` / 45 tokens/s + 5 s,
  at least 60 s; without ``max_tokens`` there is no total deadline (the idle deadline still
  bounds a silent server).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

__all__ = ["TTFT_PRIORS_MS", "UNKNOWN_MODEL_TTFT_MS", "Timeouts", "expected_total_seconds"]

#: Average time to first token in ms per model, from the seed's router (its "avg" column).
TTFT_PRIORS_MS: Mapping[str, float] = {
    "gpt-4.1": 850.0,
    "claude-sonnet-4.5": 920.0,
    "gemini-2.5-flash": 180.0,
    "deepseek-v3.2": 220.0,
}
#: Prior for models the seed does not know: a little above the slowest known one, so the rule
#: errs on the generous side (the 60 s floor dominates for short replies anyway).
UNKNOWN_MODEL_TTFT_MS = 1000.0
#: The seed's streaming speed estimate, tokens per second.
TOKENS_PER_SECOND = 45.0
#: The seed's safety margin and floor, seconds.
MARGIN_SECONDS = 5.0
MINIMUM_TOTAL_SECONDS = 60.0


def expected_total_seconds(model: str, max_tokens: int) -> float:
    """The seed's total deadline for a reply of at most ``max_tokens`` tokens.

    ``max(prior + max_tokens / 45 + 5, 60)`` seconds, where ``prior`` is the model's average
    time to first token (:data:`TTFT_PRIORS_MS`, else :data:`UNKNOWN_MODEL_TTFT_MS`).
    """
    prior = TTFT_PRIORS_MS.get(model, UNKNOWN_MODEL_TTFT_MS) / 1000.0
    expected = prior + max(0, max_tokens) / TOKENS_PER_SECOND + MARGIN_SECONDS
    return max(expected, MINIMUM_TOTAL_SECONDS)


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None or value == "auto":
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"Timeouts.{attribute.name} must be a positive number or None")


@attrs.frozen(kw_only=True)
class Timeouts:
    """The library's deadlines, in seconds (None disables one).

    Defaults and why:

    - ``connect=10``: a healthy endpoint connects in well under a second; 10 s tolerates a slow
      TLS handshake on a bad network and still fails fast enough to try a fallback URL.
    - ``first_token=60``: the seed's models answer in ~0.2-1.4 s (p95), but long prompts and
      queueing at peak can take tens of seconds; a minute is the point where a retry is more
      useful than more waiting. Raise it (and ``idle``, which also covers the silence before
      the first token) for reasoning models that think silently.
    - ``idle=60``: while streaming, tokens arrive every ~20 ms; a minute without a single data
      event means the stream is dead, even if keep-alive comments still arrive.
    - ``total="auto"``: the seed's rule (see :func:`expected_total_seconds`) when ``max_tokens``
      is given, else no total deadline.
    """

    connect: float | None = attrs.field(default=10.0, validator=_positive_or_none)
    first_token: float | None = attrs.field(default=60.0, validator=_positive_or_none)
    idle: float | None = attrs.field(default=60.0, validator=_positive_or_none)
    total: float | Literal["auto"] | None = attrs.field(default="auto", validator=_positive_or_none)

    def total_for(self, model: str, max_tokens: int | None) -> float | None:
        """The total deadline in seconds for a request, resolving ``"auto"``."""
        if self.total == "auto":
            return None if max_tokens is None else expected_total_seconds(model, max_tokens)
        return self.total
