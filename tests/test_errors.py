# Tests of the exception tree: classes by status, kinds, context in str/repr, truncation.
from __future__ import annotations

import pytest

import holysheep_trio as hs
from holysheep_trio.errors import (
    MAX_SHOWN_BYTES,
    _scrub,
    error_class_for_status,
    kind_for_status,
)


@pytest.mark.parametrize(
    ("status", "cls", "kind"),
    [
        (400, hs.BadRequestError, "invalid_request"),
        (401, hs.AuthenticationError, "authentication"),
        (403, hs.PermissionDeniedError, "authentication"),
        (404, hs.NotFoundError, "invalid_request"),
        (408, hs.APIStatusError, "timeout"),
        (409, hs.APIStatusError, "invalid_request"),
        (422, hs.APIStatusError, "invalid_request"),
        (429, hs.RateLimitError, "rate_limit"),
        (500, hs.ServerError, "server"),
        (502, hs.ServerError, "server"),
        (503, hs.OverloadedError, "server"),
        (529, hs.OverloadedError, "server"),
        (302, hs.APIStatusError, "server"),
    ],
)
def test_status_classes_and_kinds(status: int, cls: type[hs.APIStatusError], kind: str) -> None:
    assert error_class_for_status(status) is cls
    assert kind_for_status(status) == kind
    error = cls("boom", status=status)
    assert error.kind == kind
    assert isinstance(error, hs.APIError)
    assert isinstance(error, hs.HolySheepError)


def test_tree_shape() -> None:
    assert issubclass(hs.OverloadedError, hs.ServerError)
    assert issubclass(hs.APITimeoutError, hs.APIConnectionError)
    for cls in (
        hs.StreamProtocolError,
        hs.APIStreamError,
        hs.StreamInterruptedError,
        hs.APIConnectionError,
        hs.APIStatusError,
    ):
        assert issubclass(cls, hs.APIError)
    assert issubclass(hs.ConfigurationError, hs.HolySheepError)
    assert issubclass(hs.ClientClosedError, hs.HolySheepError)
    assert hs.APIConnectionError("x").kind == "network"
    assert hs.StreamProtocolError("x").kind == "parse"
    assert hs.ConfigurationError("x").kind == "invalid_request"


def test_context_in_str_and_repr() -> None:
    error = hs.RateLimitError(
        "slow down", status=429, retry_after=1.5, model="gpt-4.1", request_id="req_1", attempt=2
    )
    assert error.retry_after == 1.5
    text = str(error)
    assert "slow down" in text
    assert "status=429" in text
    assert "model=gpt-4.1" in text
    assert "request_id=req_1" in text
    assert "attempt=2" in text
    assert repr(error).startswith("RateLimitError(message='slow down', kind='rate_limit'")


def test_timeout_names_its_deadline() -> None:
    error = hs.APITimeoutError("late", deadline="first_token", seconds=3.0)
    assert error.deadline == "first_token"
    assert error.kind == "timeout"
    assert "deadline=first_token" in str(error)


def test_protocol_error_truncates_data() -> None:
    error = hs.StreamProtocolError("bad", data=b"x" * 10_000)
    assert len(error.data) == MAX_SHOWN_BYTES
    assert len(str(error)) < MAX_SHOWN_BYTES + 100
    assert hs.StreamProtocolError("bad", data="é").data == "é".encode()


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, "rate_limit"), (500, "server"), (401, "authentication"), (None, "server")],
)
def test_stream_error_kind_follows_status(status: int | None, kind: str) -> None:
    assert hs.APIStreamError("x", status=status).kind == kind


def test_interrupted_takes_kind_and_context_from_cause() -> None:
    cause = hs.APITimeoutError("idle", deadline="idle", model="m", request_id="r", attempt=1)
    partial = hs.Completion(text="abc")
    error = hs.StreamInterruptedError.from_error(cause, partial=partial)
    assert error.kind == "timeout"
    assert error.partial is partial
    assert (error.model, error.request_id, error.attempt) == ("m", "r", 1)


def test_scrub() -> None:
    assert _scrub("key sk-abc in sk-abc", ("sk-abc",)) == "key *** in ***"
    assert _scrub("nothing", ("",)) == "nothing"


def test_scrub_leaves_messages_alone_for_a_toy_key() -> None:
    # A one-letter test key must not turn "network" into "networ***".
    assert _scrub("network error", ("k",)) == "network error"
    assert _scrub("sk-123456 leaked", ("sk-123456",)) == "*** leaked"
