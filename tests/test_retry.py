# Tests of the pure retry policy: what is retried, backoff and jitter, Retry-After parsing.
from __future__ import annotations

import random
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

import holysheep_trio as hs
from holysheep_trio.errors import error_class_for_status
from holysheep_trio.retry import parse_retry_after

NOW = 1_700_000_000.0


def _http_date(timestamp: float) -> str:
    return format_datetime(datetime.fromtimestamp(timestamp, timezone.utc), usegmt=True)


class _FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def _status(status: int, **kwargs: object) -> hs.APIStatusError:
    return error_class_for_status(status)("x", status=status, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (hs.APIConnectionError("reset"), True),
        (hs.APITimeoutError("t", deadline="connect"), True),
        (hs.APITimeoutError("t", deadline="first_token"), True),
        (hs.APITimeoutError("t", deadline="idle"), False),
        (hs.APITimeoutError("t", deadline="total"), False),
        (_status(408), True),
        (_status(409), True),
        (_status(429), True),
        (_status(500), True),
        (_status(503), True),
        (_status(529), True),
        (_status(400), False),
        (_status(401), False),
        (_status(403), False),
        (_status(404), False),
        (_status(422), False),
        (_status(500, should_retry=False), False),
        (_status(400, should_retry=True), True),
        (hs.StreamProtocolError("bad json"), False),
        (hs.APIStreamError("x", status=503), True),
        (hs.APIStreamError("x", status=400), False),
        (hs.APIStreamError("x"), False),
        (ValueError("not ours"), False),
    ],
)
def test_what_is_retried(error: BaseException, retryable: bool) -> None:
    policy = hs.RetryPolicy()
    assert policy.is_retryable(error) is retryable
    assert (policy.next_delay(1, error) is not None) is retryable


def test_backoff_schedule_without_jitter() -> None:
    policy = hs.RetryPolicy(max_retries=10)
    rng = _FixedRandom(0.0)
    delays = [policy.next_delay(n, hs.APIConnectionError("x"), rng=rng) for n in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_jitter_takes_off_at_most_a_quarter() -> None:
    policy = hs.RetryPolicy()
    assert policy.next_delay(1, hs.APIConnectionError("x"), rng=_FixedRandom(1.0)) == 0.375
    assert policy.next_delay(2, hs.APIConnectionError("x"), rng=_FixedRandom(0.5)) == 0.875


@given(st.integers(1, 2), st.floats(0, 1, exclude_max=True))
def test_delay_bounds(attempt: int, fraction: float) -> None:
    delay = hs.RetryPolicy().next_delay(attempt, _status(500), rng=_FixedRandom(fraction))
    base = min(0.5 * 2 ** (attempt - 1), 8)
    assert delay is not None
    assert 0.75 * base <= delay <= base


def test_retries_are_limited() -> None:
    policy = hs.RetryPolicy()
    error = _status(503)
    assert policy.next_delay(2, error) is not None
    assert policy.next_delay(3, error) is None
    assert hs.RetryPolicy(max_retries=0).next_delay(1, error) is None


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = hs.RetryPolicy()
    assert policy.next_delay(1, _status(429, retry_after=2.0)) == 2.0
    assert policy.next_delay(1, _status(429, retry_after=0.0)) == 0.0
    # Beyond max_retry_after the server would refuse an earlier retry again: the caller gets
    # the error at once instead of a retry that is bound to fail (or a long silent wait).
    assert policy.next_delay(1, _status(429, retry_after=3600.0)) is None
    assert policy.next_delay(1, _status(429, retry_after=60.0)) == 60.0


def test_never_sleeps_past_the_total_deadline() -> None:
    policy = hs.RetryPolicy()
    error = _status(429, retry_after=2.0)
    assert policy.next_delay(1, error, time_left=2.5) == 2.0
    assert policy.next_delay(1, error, time_left=2.0) is None
    assert policy.next_delay(1, error, time_left=0.1) is None


def test_fall_over() -> None:
    policy = hs.RetryPolicy()
    assert policy.should_fall_over(hs.APIConnectionError("x"))
    assert policy.should_fall_over(hs.APITimeoutError("x", deadline="connect"))
    assert policy.should_fall_over(_status(502))
    assert not policy.should_fall_over(_status(502, should_retry=False))
    assert not policy.should_fall_over(_status(429))
    assert not policy.should_fall_over(_status(401))
    assert not policy.should_fall_over(hs.APITimeoutError("x", deadline="idle"))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "500"}, 0.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "soon"}, None),
        (
            {
                "retry-after": format_datetime(
                    datetime.fromtimestamp(NOW + 30, timezone.utc), usegmt=True
                )
            },
            30.0,
        ),
        (
            {
                "retry-after": format_datetime(
                    datetime.fromtimestamp(NOW - 30, timezone.utc), usegmt=True
                )
            },
            0.0,
        ),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00"}, None),  # no zone: not an HTTP date
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=lambda: NOW) == expected


# 1_000_000_000 is Sun, 09 Sep 2001 01:46:40 GMT; each form below says 30 s later.
@pytest.mark.parametrize(
    "date",
    [
        "Sun, 09 Sep 2001 01:47:10 GMT",  # IMF-fixdate
        "Sunday, 09-Sep-01 01:47:10 GMT",  # obsolete RFC 850 form
        "Sun Sep  9 01:47:10 2001",  # obsolete asctime form: no zone, GMT by definition
        "Sun Sep 09 01:47:10 2001",  # asctime with a two-digit day
    ],
)
def test_parse_retry_after_accepts_every_http_date_form(date: str) -> None:
    # RFC 9110 section 5.6.7: a recipient MUST accept all three forms of HTTP-date.
    assert parse_retry_after({"retry-after": date}, now=lambda: 1_000_000_000.0) == 30.0


@given(st.text(max_size=40))
def test_parse_retry_after_never_crashes(value: str) -> None:
    result = parse_retry_after({"retry-after": value, "retry-after-ms": value}, now=lambda: NOW)
    assert result is None or result >= 0


def test_policy_validates() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        hs.RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="jitter"):
        hs.RetryPolicy(jitter=2)
