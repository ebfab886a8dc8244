# The retry policy: a pure decision "retry after how long, or not at all", tested without I/O.
"""Retry policy: which failures are retried, and after how long.

Pure: no I/O and no clock of its own. :meth:`RetryPolicy.next_delay` is given the failed attempt
number, the error and the time left before the total deadline, and answers with a delay in
seconds or None ("do not retry"). Randomness (jitter) comes from an injectable
:class:`random.Random`; the current time for HTTP-date ``Retry-After`` values is injectable too.

The defaults follow the official OpenAI SDKs: 2 retries, backoff ``min(0.5 * 2**n, 8)`` seconds
minus up to 25 % jitter, ``retry-after-ms`` then ``retry-after`` honoured up to 60 s (a longer
one is not retried),
``x-should-retry`` obeyed, and retried: connection errors, 408, 409, 429 and 5xx. We also retry
a ``connect`` or ``first_token`` timeout (nothing was delivered yet, so a retry is invisible).
"""

from __future__ import annotations

import datetime
import email.utils
import math
import random
import re
import time
from collections.abc import Callable, Mapping

import attrs

from .errors import (
    APIConnectionError,
    APIStatusError,
    APIStreamError,
    APITimeoutError,
    ServerError,
)

__all__ = ["RetryPolicy", "parse_retry_after"]

_DEFAULT_RETRY_STATUSES = frozenset({408, 409, 429})

# RFC 9110 section 5.6.7: asctime-date = day-name SP month SP ( 2DIGIT / ( SP DIGIT ) ) SP
# time-of-day SP year, e.g. "Sun Nov  6 08:49:37 1994". The only HTTP-date form without a zone.
_ASCTIME_DATE = re.compile(r"[A-Z][a-z]{2} [A-Z][a-z]{2} (?:\d{2}| \d) \d{2}:\d{2}:\d{2} \d{4}")


def parse_should_retry(headers: Mapping[str, str]) -> bool | None:
    """The server's ``x-should-retry`` verdict (as the official SDKs read it), or None."""
    return {"true": True, "false": False}.get(headers.get("x-should-retry", "").strip().lower())


def parse_retry_after(
    headers: Mapping[str, str], *, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds to wait according to the response headers, or None when they don't say.

    ``retry-after-ms`` (milliseconds, a number; OpenAI's extension) wins over ``retry-after``,
    which is either a number of seconds or an HTTP date (RFC 9110 section 10.2.3) in any of the
    three forms recipients must accept (section 5.6.7): IMF-fixdate
    (``Sun, 06 Nov 1994 08:49:37 GMT``), RFC 850 (``Sunday, 06-Nov-94 08:49:37 GMT``) and asctime
    (``Sun Nov  6 08:49:37 1994``, read as GMT). Negative, non-finite and unparseable values are
    ignored. A date in the past gives 0.

    Args:
        headers: Response headers; keys are matched case-insensitively when ``headers`` is a
            plain dict with lower-case keys or an ``httpx2.Headers``.
        now: Returns the current Unix time, for HTTP dates (injectable for tests).
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            date = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if date.tzinfo is None:
            # An HTTP date is always GMT (RFC 9110 section 5.6.7), and recipients MUST accept
            # the obsolete asctime form, which names no zone. Anything else without a zone
            # (e.g. an IMF-fixdate missing its "GMT") is not an HTTP date.
            if _ASCTIME_DATE.fullmatch(raw.strip()) is None:
                return None
            date = date.replace(tzinfo=datetime.timezone.utc)
        return max(0.0, date.timestamp() - now())
    if math.isfinite(value) and value >= 0:
        return value
    return None


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """When and how long to wait before retrying a failed attempt.

    Retries only ever happen before the first token of a stream: once output was delivered a
    failure raises :class:`~holysheep_trio.StreamInterruptedError` instead (the client enforces
    this; the policy is only asked before output began).

    Attributes:
        max_retries: Retries per endpoint after the first attempt (0 disables retries).
        initial_delay: Backoff before the first retry, in seconds.
        max_delay: Cap of the exponential backoff, in seconds.
        jitter: Fraction (0..1) of the backoff that is randomly taken off.
        max_retry_after: The longest ``Retry-After`` we wait for, in seconds. When the server
            asks for longer, the request is not retried: its error (e.g. the
            :class:`~holysheep_trio.RateLimitError`) is raised at once, since retrying
            earlier than asked would only be refused again. The client's pool never pauses a
            model for longer than this either.
        retry_statuses: HTTP statuses (besides 5xx) that are retried.
        retry_server_errors: Whether 5xx statuses are retried.
    """

    max_retries: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    initial_delay: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    max_delay: float = attrs.field(default=8.0, validator=attrs.validators.ge(0))
    jitter: float = attrs.field(
        default=0.25, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )
    max_retry_after: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    retry_statuses: frozenset[int] = _DEFAULT_RETRY_STATUSES
    retry_server_errors: bool = True

    def is_retryable_status(self, status: int | None) -> bool:
        """Whether an HTTP (or in-band) status is retried."""
        if status is None:
            return False
        return status in self.retry_statuses or (self.retry_server_errors and 500 <= status <= 599)

    def is_retryable(self, error: BaseException) -> bool:
        """Whether ``error`` may be retried at all (ignoring the retry budget).

        An ``x-should-retry`` header wins; then: connection errors, ``connect`` and
        ``first_token`` timeouts, the statuses in :attr:`retry_statuses` and 5xx (HTTP or in-band).
        """
        should_retry = getattr(error, "should_retry", None)
        if should_retry is not None:
            return bool(should_retry)
        if isinstance(error, APITimeoutError):
            return error.deadline in ("connect", "first_token")
        if isinstance(error, APIConnectionError):
            return True
        if isinstance(error, APIStatusError | APIStreamError):
            return self.is_retryable_status(error.status)
        return False

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        """The backoff before retry number ``retry_number`` (1-based), jitter included."""
        base = min(self.initial_delay * 2.0 ** (retry_number - 1), self.max_delay)
        fraction = (rng or random).random()
        return base * (1.0 - self.jitter * fraction)

    def next_delay(
        self,
        attempt: int,
        error: BaseException,
        *,
        time_left: float | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up now.

        Args:
            attempt: The 1-based number of the attempt that just failed on this endpoint.
            error: The failure of that attempt (a :class:`~holysheep_trio.HolySheepError`).
            time_left: Seconds until the total deadline, or None without one. A retry that
                would sleep past it is not made (the caller fails at once instead).
            rng: Source of jitter (default: the ``random`` module).

        Returns:
            The delay, or None when the error is not retryable, the retries are spent, the
            server's ``Retry-After`` exceeds :attr:`max_retry_after`, or the delay would outlast
            the total deadline.
        """
        if attempt > self.max_retries or not self.is_retryable(error):
            return None
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after >= 0:
            if retry_after > self.max_retry_after:
                return None  # the server asks for more than we wait: report it now
            delay = float(retry_after)
        else:
            delay = self.backoff(attempt, rng)
        if time_left is not None and delay >= time_left:
            return None
        return delay

    def should_fall_over(self, error: BaseException) -> bool:
        """Whether to try the next fallback URL after this endpoint's retries are spent.

        Only for connection errors (a ``connect`` timeout included) and 5xx, and never when
        the server said ``x-should-retry: false``.
        """
        if getattr(error, "should_retry", None) is False:
            return False
        if isinstance(error, APITimeoutError):
            return error.deadline == "connect"
        return isinstance(error, APIConnectionError | ServerError)
