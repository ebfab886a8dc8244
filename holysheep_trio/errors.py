# The one exception tree of holysheep-trio: every failure the client can report has a type here.
"""Exceptions raised by holysheep-trio.

Every exception the library raises on purpose derives from :class:`HolySheepError`, carries a
:attr:`~HolySheepError.kind` (one of the categories below) and, when it concerns a request, the
model, the server's request id (``x-request-id``) and the attempt number. Trio's ``Cancelled``
is never translated: it passes through untouched.

The tree::

    HolySheepError
    ├── ConfigurationError              bad or missing configuration (e.g. no API key)
    │   └── UnknownPriceError           a budgeted request for a model the price table lacks
    ├── ClientClosedError               the client was closed while the stream was open
    ├── PendingQueueFullError           too many requests already wait for the connection
    ├── BudgetExceededError             the request does not fit a budget period; nothing sent
    ├── LedgerError                     the usage ledger cannot be opened, read or written
    │   └── LedgerUnavailableError      the shared store (Redis) cannot be reached; fail closed
    └── APIError                        anything that happened while talking to the API
        ├── APIStatusError              a non-2xx HTTP status (.status, .body, .retry_after)
        │   ├── BadRequestError         400
        │   │   └── PreviousResponseNotFoundError  a continuation whose previous response is gone
        │   ├── AuthenticationError     401
        │   ├── PermissionDeniedError   403
        │   ├── NotFoundError           404
        │   ├── RateLimitError          429
        │   └── ServerError             5xx
        │       └── OverloadedError     503, 529
        ├── APIConnectionError          network failure (connect, reset, truncated body)
        │   ├── APITimeoutError         a deadline fired (.deadline names which)
        │   └── ConnectionLostError     the health monitor gave up reconnecting (__cause__)
        ├── StreamProtocolError         bad SSE framing or bad JSON in a chunk (.data, truncated)
        ├── APIStreamError              an in-band error or ``response.failed`` (.code, .partial)
        └── StreamInterruptedError      any failure after output began (.partial, __cause__)

Kinds (:data:`ErrorKind`) are the seed's categories -- ``network``, ``timeout``, ``parse``,
``rate_limit``, ``authentication`` (401 and 403), ``server`` -- plus ``invalid_request`` (400,
404, 409, 422 and the other 4xx statuses, and bad configuration), ``budget`` (a budget refused
the request) and ``ledger`` (the usage ledger failed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from datetime import datetime

    from .models import Completion
    from .responses import Response

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APIStreamError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "BudgetPeriod",
    "ClientClosedError",
    "ConfigurationError",
    "ConnectionLostError",
    "DeadlineName",
    "ErrorKind",
    "HolySheepError",
    "LedgerError",
    "LedgerUnavailableError",
    "NotFoundError",
    "OverloadedError",
    "PendingQueueFullError",
    "PermissionDeniedError",
    "PreviousResponseNotFoundError",
    "RateLimitError",
    "ServerError",
    "StreamInterruptedError",
    "StreamProtocolError",
    "UnknownPriceError",
    "error_class_for_status",
    "kind_for_status",
]

ErrorKind = Literal[
    "network",
    "timeout",
    "parse",
    "rate_limit",
    "authentication",
    "server",
    "invalid_request",
    "budget",
    "ledger",
]
DeadlineName = Literal["connect", "first_token", "idle", "total", "heartbeat"]
BudgetPeriod = Literal["daily", "monthly"]

#: At most this many bytes of an offending payload are kept on an error (and shown in its text).
MAX_SHOWN_BYTES = 200


class HolySheepError(Exception):
    """Root of every exception holysheep-trio raises on purpose.

    Attributes:
        message: What went wrong, for humans. Never contains the API key.
        kind: The error category (see :data:`ErrorKind`).
        model: The model of the request, when the error concerns one.
        request_id: The server's ``x-request-id`` of the failed response, when known.
        attempt: The 1-based attempt number that failed, when the error concerns a request.
    """

    kind: ErrorKind = "network"

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        request_id: str | None = None,
        attempt: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.model = model
        self.request_id = request_id
        self.attempt = attempt

    def _context_items(self) -> list[tuple[str, object]]:
        items: list[tuple[str, object]] = []
        for name in ("model", "request_id", "attempt"):
            value = getattr(self, name)
            if value is not None:
                items.append((name, value))
        return items

    def __str__(self) -> str:
        context = ", ".join(f"{name}={value}" for name, value in self._context_items())
        return f"{self.message} ({context})" if context else self.message

    def __repr__(self) -> str:
        fields = [f"message={self.message!r}", f"kind={self.kind!r}"]
        fields += [f"{name}={value!r}" for name, value in self._context_items()]
        return f"{type(self).__name__}({', '.join(fields)})"


class ConfigurationError(HolySheepError):
    """The client's configuration is unusable (missing API key, bad URL, bad option).

    Raised when opening the client, before any request is sent.
    """

    kind: ErrorKind = "invalid_request"


class ClientClosedError(HolySheepError):
    """The client was closed (``aclose()`` or leaving ``open_client``) while a stream was open.

    Raised in the task that owns the stream, and by any request made after the client closed.
    """

    kind: ErrorKind = "network"


class PendingQueueFullError(HolySheepError):
    """A request found ``max_pending`` requests already waiting for the connection to heal.

    Raised at once, before anything is sent, by a request made while the health monitor is
    connecting or reconnecting (see :class:`~holysheep_trio.HealthConfig`): the queue of held
    requests is bounded so that an outage cannot make memory grow without limit.

    Attributes:
        max_pending: The configured bound that was reached.
    """

    kind: ErrorKind = "network"

    def __init__(
        self,
        message: str,
        *,
        max_pending: int,
        model: str | None = None,
        request_id: str | None = None,
        attempt: int | None = None,
    ) -> None:
        super().__init__(message, model=model, request_id=request_id, attempt=attempt)
        self.max_pending = max_pending


class UnknownPriceError(ConfigurationError):
    """A budgeted request names a model the budget's price table has no (complete) price for.

    Raised before anything is sent: a guessed price would make the budget wrong without anyone
    noticing. Add the model to the ``prices`` given to :func:`~holysheep_trio.open_budget`, with
    a ``max_output_tokens`` if requests to it may omit ``max_tokens``.
    """


class BudgetExceededError(HolySheepError):
    """The request's worst-case cost does not fit a budget period; nothing was sent.

    Raised only when ``spent + needed > limit`` for the period: what was already spent there
    leaves no room for this request even if every request in flight ended at no cost. (A
    request that does not fit only because others hold reservations waits for them instead.)

    Attributes:
        period: ``"daily"`` or ``"monthly"``: the period that has no room.
        limit: The period's limit, USD.
        spent: USD spent in the period so far.
        reserved: USD held by requests in flight in the period.
        needed: The worst-case cost of this request, USD.
        resets_at: When the period ends (an aware datetime in the budget's time zone).
    """

    kind: ErrorKind = "budget"

    def __init__(
        self,
        message: str,
        *,
        period: BudgetPeriod,
        limit: float,
        spent: float,
        reserved: float,
        needed: float,
        resets_at: datetime,
        model: str | None = None,
        request_id: str | None = None,
        attempt: int | None = None,
    ) -> None:
        super().__init__(message, model=model, request_id=request_id, attempt=attempt)
        self.period: BudgetPeriod = period
        self.limit = limit
        self.spent = spent
        self.reserved = reserved
        self.needed = needed
        self.resets_at = resets_at

    def _context_items(self) -> list[tuple[str, object]]:
        return [("period", self.period), *super()._context_items()]


class LedgerError(HolySheepError):
    """The usage ledger cannot be opened, read or written (corrupt, unwritable, locked too long).

    Opening a ledger checks the file, so a bad path or a corrupt file fails at
    :func:`~holysheep_trio.open_budget`, not in the middle of a run.
    """

    kind: ErrorKind = "ledger"


class LedgerUnavailableError(LedgerError):
    """The shared store behind a budget or shared limits (Redis) cannot be reached.

    Raised at once, without sending anything, by a new request whose budget ledger or shared
    limits live in an unreachable Redis: money is at stake, so the default is to fail closed.
    ``fail_open=True`` (``open_budget``, or ``?fail_open=true`` in the store's URL) falls back
    to local state instead. Calls fail at once for a second after a failure, then Redis is
    tried again; the first call that reaches it ends the outage.
    """


class APIError(HolySheepError):
    """A failure while talking to the API (HTTP status, network, stream content)."""


class APIStatusError(APIError):
    """The API answered with a non-success HTTP status.

    Attributes:
        status: The HTTP status code.
        body: The start of the response body (at most 64 KiB were read), decoded leniently.
        error_type: The ``error.type`` of an OpenAI-style error body, if any.
        code: The ``error.code`` of an OpenAI-style error body, if any.
        retry_after: Seconds the server asked us to wait (``retry-after-ms`` or
            ``retry-after``), or None.
        should_retry: The server's ``x-should-retry`` verdict, or None when absent.
        headers: The response headers (never contains request headers such as Authorization).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: str = "",
        error_type: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
        request_id: str | None = None,
        attempt: int | None = None,
    ) -> None:
        super().__init__(message, model=model, request_id=request_id, attempt=attempt)
        self.status = status
        self.body = body
        self.error_type = error_type
        self.code = code
        self.retry_after = retry_after
        self.should_retry = should_retry
        self.headers: Mapping[str, str] = dict(headers or {})
        self.kind = kind_for_status(status)

    def _context_items(self) -> list[tuple[str, object]]:
        return [("status", self.status), *super()._context_items()]


class BadRequestError(APIStatusError):
    """HTTP 400: the request is malformed or has invalid parameters."""


class PreviousResponseNotFoundError(BadRequestError):
    """400 ``previous_response_not_found``: the ``previous_response_id`` names a response the
    server no longer has.

    Over HTTP, the id is unknown or its response was not stored (``store=False``), or has
    expired. In a WebSocket session (:meth:`Client.open_session
    <holysheep_trio.Client.open_session>`) it is typically a continuation sent after a
    reconnect or a rotation: the server keeps a connection's responses in a cache of that
    connection, so a ``store=False`` response is gone with it. Nothing was generated; send the
    conversation's full input instead (``open_session(recover=True)`` does that once by itself).
    """


class AuthenticationError(APIStatusError):
    """HTTP 401: the API key is missing, wrong or revoked."""


class PermissionDeniedError(APIStatusError):
    """HTTP 403: the key may not use this model or endpoint."""


class NotFoundError(APIStatusError):
    """HTTP 404: unknown model or endpoint."""


class RateLimitError(APIStatusError):
    """HTTP 429: too many requests or tokens; :attr:`retry_after` says how long to wait."""


class ServerError(APIStatusError):
    """HTTP 5xx: the server failed."""


class OverloadedError(ServerError):
    """HTTP 503 or 529: the server (or the model behind it) is overloaded."""


class APIConnectionError(APIError):
    """The network failed: connect refused, connection reset, body cut short."""

    kind: ErrorKind = "network"


class APITimeoutError(APIConnectionError):
    """One of the library's deadlines fired.

    Attributes:
        deadline: Which deadline fired: ``"connect"``, ``"first_token"``, ``"idle"``,
            ``"total"``, or ``"heartbeat"`` (a health probe got no answer in time).
        seconds: The configured length of that deadline, in seconds, when known.
    """

    kind: ErrorKind = "timeout"

    def __init__(
        self,
        message: str,
        *,
        deadline: DeadlineName,
        seconds: float | None = None,
        model: str | None = None,
        request_id: str | None = None,
        attempt: int | None = None,
    ) -> None:
        super().__init__(message, model=model, request_id=request_id, attempt=attempt)
        self.deadline: DeadlineName = deadline
        self.seconds = seconds

    def _context_items(self) -> list[tuple[str, object]]:
        return [("deadline", self.deadline), *super()._context_items()]


class ConnectionLostError(APIConnectionError):
    """The health monitor gave up reconnecting (state ``"lost"``); the request was not sent.

    Raised at once to every request held in the pending queue when the connection is lost,
    and to every new request while it stays lost. The ``__cause__`` is the last probe error
    (e.g. an :class:`AuthenticationError` for a wrong key, or the last connection failure).

    Attributes:
        should_retry: Always False: retrying cannot help, the monitor keeps probing and a new
            request succeeds once a probe has (so :class:`~holysheep_trio.RetryPolicy` neither
            retries it nor falls over to another endpoint).
    """

    kind: ErrorKind = "network"
    should_retry: bool | None = False


class StreamProtocolError(APIError):
    """The stream broke the SSE or chunk format (bad framing, bad JSON, wrong shape).

    Attributes:
        data: The offending bytes, truncated to 200 bytes.
    """

    kind: ErrorKind = "parse"

    def __init__(
        self,
        message: str,
        *,
        data: bytes | str = b"",
        model: str | None = None,
        request_id: str | None = None,
        attempt: int | None = None,
    ) -> None:
        super().__init__(message, model=model, request_id=request_id, attempt=attempt)
        raw = data.encode("utf-8", "replace") if isinstance(data, str) else bytes(data)
        self.data = raw[:MAX_SHOWN_BYTES]

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}: {self.data!r}" if self.data else text


class APIStreamError(APIError):
    """The server reported an error inside the stream.

    A chat stream's in-band error event (``data: {"error": {...}}``), or a Responses API
    stream's ``error`` event or ``response.failed``. It is typed like an HTTP error:
    :attr:`status` comes from the event's ``code`` or ``status`` when that is an HTTP status
    number, or from a known code word (``rate_limit_exceeded`` -> 429, ``server_error`` ->
    500), and :attr:`kind` follows from it (``server`` when unknown).

    Attributes:
        status: The HTTP-like status the event carries, or None.
        error_type: The event's ``error.type``, if any.
        code: The event's ``error.code`` (as a string), if any.
        param: The request parameter the error is about (``error.param``), if any.
        partial: For a Responses API stream, the :class:`~holysheep_trio.Response`
            accumulated up to the error (status ``"failed"``, its ``error`` set); None for a
            chat stream.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        model: str | None = None,
        request_id: str | None = None,
        attempt: int | None = None,
    ) -> None:
        super().__init__(message, model=model, request_id=request_id, attempt=attempt)
        self.status = status
        self.error_type = error_type
        self.code = code
        self.param = param
        self.partial: Completion | Response | None = None
        self.kind = kind_for_status(status) if status is not None else "server"

    def _context_items(self) -> list[tuple[str, object]]:
        items = super()._context_items()
        return [("status", self.status), *items] if self.status is not None else items


class StreamInterruptedError(APIError):
    """A failure after output began; the specific error is the ``__cause__``.

    The library never restarts a stream once it delivered output (the caller would see the
    text twice), so any failure from then on surfaces as this error.

    Attributes:
        partial: What was accumulated before the failure: the
            :class:`~holysheep_trio.Completion` of a chat stream, the
            :class:`~holysheep_trio.Response` of a Responses API stream.
        kind: Taken from the cause.
    """

    def __init__(
        self,
        message: str,
        *,
        partial: Completion | Response,
        kind: ErrorKind,
        model: str | None = None,
        request_id: str | None = None,
        attempt: int | None = None,
    ) -> None:
        super().__init__(message, model=model, request_id=request_id, attempt=attempt)
        self.partial = partial
        self.kind = kind

    @classmethod
    def from_error(
        cls, error: HolySheepError, *, partial: Completion | Response
    ) -> StreamInterruptedError:
        """Wrap ``error`` (raise the result ``from error``), copying its context."""
        return cls(
            f"stream interrupted after output began: {error.message}",
            partial=partial,
            kind=error.kind,
            model=error.model,
            request_id=error.request_id,
            attempt=error.attempt,
        )


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
    503: OverloadedError,
    529: OverloadedError,
}


def kind_for_status(status: int) -> ErrorKind:
    """Map an HTTP status to an error kind.

    401 and 403 are ``authentication``, 429 ``rate_limit``, 408 ``timeout``, the other 4xx
    ``invalid_request``; 5xx and anything unexpected (1xx, 3xx) are ``server``.
    """
    if status in (401, 403):
        return "authentication"
    if status == 429:
        return "rate_limit"
    if status == 408:
        return "timeout"
    if 400 <= status < 500:
        return "invalid_request"
    return "server"


def error_class_for_status(status: int) -> type[APIStatusError]:
    """The most specific :class:`APIStatusError` subclass for an HTTP status."""
    cls = _STATUS_CLASSES.get(status)
    if cls is not None:
        return cls
    if 500 <= status < 600:
        return ServerError
    return APIStatusError


#: Secrets shorter than this are not scrubbed from messages: a one-letter test key would turn
#: every "k" of a message into "***", and no real API key is that short.
_MIN_SCRUBBED_SECRET: Final = 6


def _scrub(text: str, secrets: Any) -> str:
    """Replace every secret string in ``text`` by ``***`` (used before text enters an error)."""
    for secret in secrets:
        if secret and len(secret) >= _MIN_SCRUBBED_SECRET:
            text = text.replace(secret, "***")
    return text


def _shown_url(url: str) -> str:
    """``url`` for a message, a repr or a log line: a ``user:password@`` part, which may hold a
    credential, masked as ``***@``."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}://{authority}{slash}{path}"
