# One HTTP attempt of the request lifecycle: send the POST, check the answer, read its events.
"""The HTTP side of an attempt (:class:`HttpExchange`), and the one translation boundary.

The request lifecycle (``_lifecycle.Request``) knows deadlines, retries and accounting, not
HTTP: each attempt talks to the server through an *exchange*. This module's is the HTTP one: it
sends the request through the client's ``httpx2.AsyncClient``, turns a non-2xx answer (or a
``200`` with a JSON error body) into its typed error, inflates a body compressed although we
asked for identity (gzip, deflate, in bounded pieces), and parses the body's server-sent events.
A WebSocket lane is another exchange with the same surface.

:func:`translate` maps transport and parser exceptions to the error tree (raise the result
``from cause_of(exc)``, which never chains an exception that may quote a header value).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Final, Protocol

import httpx2
import trio

from ._content_encoding import ContentDecoder, decoder_for
from ._transport import TrioResponseStream as _Body
from ._transport import TrioTransport, _out_of_files, _Sending
from ._wire import error_from_success_body, parse_error_body
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    HolySheepError,
    PreviousResponseNotFoundError,
    StreamProtocolError,
    error_class_for_status,
)
from .retry import parse_retry_after, parse_should_retry
from .sse import ServerSentEvent, SSEParser, SSEProtocolError

if TYPE_CHECKING:
    from .client import Client
    from .timeouts import Timeouts

__all__ = [
    "MAX_ERROR_BODY",
    "TRANSPORT_ERRORS",
    "HttpExchange",
    "cause_of",
    "http_exchange",
    "merge_headers",
    "read_bounded",
    "translate",
]

#: At most this much of an error response's body is read (the rest is discarded with the
#: connection), so a hostile or broken server cannot make us buffer without bound.
MAX_ERROR_BODY: Final = 64 * 1024
#: Closing a response of a user's httpx2 client early first reads what is already in flight
#: for this long (see _IteratorBody.aclose).
DRAIN_ON_CLOSE: Final = 0.05

logger = logging.getLogger("holysheep_trio")

#: Exceptions a transport may raise for a network failure; anything else is a bug and escapes.
TRANSPORT_ERRORS = (httpx2.HTTPError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)
#: Transport failures after which the server cannot have seen the request.
_NOT_SENT = (
    httpx2.ConnectError,
    httpx2.ConnectTimeout,
    httpx2.PoolTimeout,
    httpx2.UnsupportedProtocol,
    httpx2.LocalProtocolError,
    httpx2.InvalidURL,
)

#: What :meth:`HttpExchange.receive` returns: the events one read completed, and whether the
#: body ended with it.
Received = tuple[list[ServerSentEvent], bool]


class Body(Protocol):
    """A response body as the lifecycle reads it (``TrioResponseStream`` or _IteratorBody)."""

    async def receive_some(self) -> bytes: ...

    async def aclose(self) -> None: ...


class _IteratorBody:
    """A generator-based response body behind the ``receive_some``/``aclose`` interface.

    Used when the transport is not our ``TrioTransport`` (a user's ``http_client``, a
    ``MockTransport``). httpx2's default transport leaks httpcore2's body generators when a
    response is closed before the end of its body, even with ``aclosing``; closing the network
    stream first and then draining the iterator lets the generators unwind normally.

    Such a body cannot resume after a read was cancelled (the generator is finished by the
    cancellation): the next read raises :class:`~holysheep_trio.APIConnectionError` saying so,
    instead of reporting a truncated stream.
    """

    __slots__ = ("_cancelled", "_ended", "_iterator", "_preloaded", "_response")

    def __init__(self, response: httpx2.Response) -> None:
        self._response = response
        self._iterator = response.aiter_raw()
        self._ended = False
        self._cancelled = False
        # A transport may hand back a response whose body is already in memory (e.g. a
        # MockTransport built with `content=`); streaming it again raises StreamConsumed.
        try:
            self._preloaded: bytes | None = response.content
        except httpx2.ResponseNotRead:
            self._preloaded = None

    async def receive_some(self) -> bytes:
        if self._cancelled:
            raise APIConnectionError(
                "a read of this stream was cancelled earlier, and a response body of this"
                " http_client's transport cannot be resumed (TrioTransport's can)"
            )
        if self._preloaded is not None:
            data, self._preloaded = self._preloaded, b""
            self._ended = True
            return data
        while not self._ended:
            try:
                data = await self._iterator.__anext__()
            except StopAsyncIteration:
                self._ended = True
                break
            except trio.Cancelled:
                self._cancelled = True
                raise
            if data:
                return data
        return b""

    async def aclose(self) -> None:
        if not self._ended and not self._cancelled:
            # When the rest of the body is already on its way (an in-band error event, then the
            # end of the body), reading it to the end lets httpcore2 release the connection
            # normally: closing the network stream under a complete body would put a closed
            # socket back into its pool, and the next request would fail outside our errors.
            with trio.move_on_after(DRAIN_ON_CLOSE), contextlib.suppress(Exception):
                async for _ in self._iterator:
                    pass
                self._ended = True
        if not self._ended:
            self._ended = True
            network_stream = self._response.extensions.get("network_stream")
            if network_stream is not None:
                with contextlib.suppress(Exception):
                    await network_stream.aclose()
                # The stream is closed, so this ends at once, with an error we don't need.
                with contextlib.suppress(Exception):
                    async for _ in self._iterator:
                        pass
        await self._iterator.aclose()


def translate(exc: BaseException, *, connect_timeout: float | None) -> HolySheepError:
    """Map a transport or parser exception to our tree (the one translation boundary).

    Raise the result ``from cause_of(exc)``.
    """
    if isinstance(exc, HolySheepError):
        return exc
    if isinstance(exc, httpx2.HTTPStatusError):
        # A user's http_client with its own response hook (``raise_for_status``): the status
        # decides, as for a status we read ourselves.
        response = exc.response
        status = response.status_code
        return error_class_for_status(status)(
            f"HTTP {status} (raised by the http_client's response hook)",
            status=status,
            retry_after=parse_retry_after(response.headers),
            should_retry=parse_should_retry(response.headers),
            headers=dict(response.headers.items()),
        )
    if isinstance(exc, httpx2.ConnectTimeout | httpx2.PoolTimeout):
        return APITimeoutError(
            f"connecting timed out ({type(exc).__name__})",
            deadline="connect",
            seconds=connect_timeout,
        )
    if isinstance(exc, httpx2.TimeoutException):
        return APITimeoutError(f"the transport timed out ({type(exc).__name__})", deadline="idle")
    if isinstance(exc, httpx2.InvalidURL | httpx2.UnsupportedProtocol):
        return ConfigurationError(f"bad URL: {exc}")
    if isinstance(exc, httpx2.LocalProtocolError):
        # Not a network failure and not retried: the request itself cannot be sent. The
        # transport's text may quote a header value (the key, with a stray newline), so it is
        # not shown.
        return ConfigurationError(
            "the request cannot be sent as HTTP/1.1: a header name or value is invalid (e.g. a"
            " control character in the API key or in extra_headers); values are not shown"
        )
    if isinstance(exc, SSEProtocolError):
        return StreamProtocolError(f"bad server-sent event stream: {exc}")
    if isinstance(exc, httpx2.ConnectError) and _out_of_files(exc):
        # Not the network: the process's open-files limit (TrioTransport says which, and how
        # to raise it).
        return APIConnectionError(f"cannot open a connection: {exc}")
    detail = str(exc) or "no detail"
    return APIConnectionError(f"network error ({type(exc).__name__}): {detail}")


def cause_of(exc: BaseException) -> BaseException | None:
    """The cause to chain to the translation of ``exc``: itself, unless it may hold secrets.

    h11's ``LocalProtocolError`` quotes the header value it refused (the API key, with a stray
    newline), so it is never chained: ``raise translate(exc) from cause_of(exc)``.
    """
    return None if isinstance(exc, httpx2.LocalProtocolError) else exc


def merge_headers(base: Mapping[str, str], extra: Mapping[str, str]) -> httpx2.Headers:
    """``base`` with ``extra`` on top, names compared without case (HTTP's rule): an
    ``authorization`` of yours replaces the client's ``Authorization``, never joins it."""
    merged = httpx2.Headers(base)
    merged.update(extra)
    return merged


async def read_bounded(body: Body, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``body`` (transport errors end the read quietly)."""
    parts: list[bytes] = []
    size = 0
    try:
        while size < limit:
            data = await body.receive_some()
            if not data:
                break
            parts.append(data)
            size += len(data)
    except TRANSPORT_ERRORS:
        pass
    return b"".join(parts)[:limit]


_httpx2_logger: Final = logging.getLogger("httpx2")


def _own_transport(http_client: httpx2.AsyncClient) -> TrioTransport | None:
    """The client's TrioTransport if ``send`` would do no more than call it (and what
    :func:`._http._received_direct` says): no auth, no event hooks, no mounts (proxies), no
    redirects followed. Else None. Asked per request, as hooks can be added at any time."""
    transport = getattr(http_client, "_transport", None)
    hooks = http_client.event_hooks
    if (
        type(transport) is not TrioTransport
        or getattr(http_client, "_mounts", True)
        or http_client.auth is not None
        or hooks.get("request")
        or hooks.get("response")
        or http_client.follow_redirects
    ):
        return None
    return transport


def _refuse_if_closed(http: httpx2.AsyncClient) -> None:
    """``http.send``'s closed check, for a request sent straight to the transport."""
    if http.is_closed:
        raise RuntimeError("Cannot send a request, as the client has been closed.")


def _received_direct(
    http: httpx2.AsyncClient, sending: _Sending, response: httpx2.Response
) -> httpx2.Response:
    """What ``http.send`` does with a response, for a request sent straight to the client's
    TrioTransport (``await transport._send(sending)``, see ``HttpExchange.open``).

    That is for a client without auth, event hooks, mounts (proxies) or redirects (see
    ``_own_transport``; the default one is such a client) and a URL without credentials:
    ``send`` would only wrap the call in an auth flow (an async generator), three coroutines and
    a timer; with thousands of streams starting at once that is CPU and memory for nothing. And
    the request itself is not held while the server takes its time to answer: ``sending``
    (from ``TrioTransport._prepare``) keeps only what the transport needs. What ``send`` does
    that matters is done too: the closed check (:func:`_refuse_if_closed`), cookies a server
    sets (a load balancer's sticky session; the response's request is then a stand-in with the
    method and URL, all that cookie rules read) and httpx2's INFO log line.
    """
    if "set-cookie" in response.headers:
        response.request = sending.request
        http.cookies.extract_cookies(response)
    if _httpx2_logger.isEnabledFor(logging.INFO):
        _httpx2_logger.info(
            'HTTP Request: %s %s "%s %d %s"',
            sending.method,
            sending.url,
            response.http_version,
            response.status_code,
            response.reason_phrase,
        )
    return response


class HttpExchange:
    """One HTTP attempt: POST the request, check the answer, then parse its body as it comes.

    The lifecycle calls :meth:`open` (under the attempt's deadlines), then :meth:`receive`
    until it reports the end, and always :meth:`aclose` (shielded, bounded).

    Attributes:
        sent: Whether the server may have seen the request (False only when it surely did not:
            the connection was never made).
        status: The HTTP status of the answer, once it came.
        request_id: The server's ``x-request-id``, once the answer came.
    """

    __slots__ = (
        "_body",
        "_client",
        "_connect",
        "_content",
        "_extra_headers",
        "_parser",
        "_payload",
        "_pending",
        "_response",
        "_url",
        "request_id",
        "sent",
        "status",
    )
    #: Always the attempt's own (see ``Exchange.endpoint``).
    endpoint: Final[None] = None

    def __init__(
        self,
        client: Client,
        *,
        url: str,
        payload: bytes,
        extra_headers: Mapping[str, str],
        connect_timeout: float | None,
    ) -> None:
        self._client = client
        self._url = url
        self._payload = payload
        self._extra_headers = extra_headers
        self._connect = connect_timeout
        self._parser = SSEParser(max_event_size=client._max_event_size)
        self._response: httpx2.Response | None = None
        self._body: Body | None = None
        # The body's content coding (a server that compressed although we asked for
        # identity), and the decoded pieces of the last read still to be parsed.
        self._content: ContentDecoder | None = None
        self._pending: Iterator[bytes] | None = None
        self.sent = False
        self.status: int | None = None
        self.request_id: str | None = None

    async def open(self, deadline: float) -> bool:
        """Send the request and check the answer's head; False if ``deadline`` passed first.

        Raises:
            HolySheepError: the typed error of a refusal (a status error, a JSON error body), of
                a network failure, or of a body this client cannot read.
        """
        client = self._client
        request: httpx2.Request | None = client._http.build_request(
            "POST",
            self._url,
            content=self._payload,
            headers=merge_headers(client._request_headers(), self._extra_headers),
            timeout=httpx2.Timeout(None, connect=self._connect),
        )
        assert request is not None
        sending: _Sending | None = None
        self.sent = True  # from here on the server may see it, unless we learn otherwise
        try:
            with trio.move_on_at(deadline) as scope:
                try:
                    url = request.url
                    # A URL's user:password@ signs the request (httpx2's send adds BasicAuth).
                    direct = None if url.username or url.password else _own_transport(client._http)
                    if direct is None:
                        response = await client._http.send(
                            request, stream=True, follow_redirects=False
                        )
                    else:
                        # The request is let go before the answer is awaited (see _Sending).
                        _refuse_if_closed(client._http)
                        sending = direct._prepare(request, body=self._payload, keep=False)
                        request = None
                        # No coroutine of ours between this one and the transport's.
                        response = _received_direct(
                            client._http, sending, await direct._send(sending)
                        )
                except TRANSPORT_ERRORS as exc:
                    if isinstance(exc, _NOT_SENT):
                        self.sent = False
                    raise translate(exc, connect_timeout=self._connect) from cause_of(exc)
        finally:
            # Sent or not, this exchange will not send it again: the body (the prompt) goes.
            self._payload = b""
            # TrioTransport says whether a byte of the request was written, also when a
            # cancellation or a deadline stopped the send (while connecting, nothing was);
            # another transport can't tell, so the request may have been read.
            if sending is not None:
                self.sent = sending.sent
            elif request is not None:
                written = request.extensions.get("holysheep.sent")
                if written is not None:
                    self.sent = bool(written)
        if scope.cancelled_caught:
            return False
        self._response = response
        self.status = response.status_code
        self.request_id = response.headers.get("x-request-id")
        body = response.extensions.get("holysheep.body")
        self._body = body if body is not None else _IteratorBody(response)
        headers = response.headers
        if not 200 <= response.status_code < 300:
            raise await self._status_error(response, deadline)
        self._content = decoder_for(headers.get("content-encoding"))
        content_type = headers.get("content-type", "text/event-stream")
        if not content_type.lower().startswith("text/event-stream"):
            # Some gateways answer a failed stream request with 200 and a JSON error body.
            error = error_from_success_body(
                await self._read_bounded(MAX_ERROR_BODY, deadline),
                content_type=content_type,
                status=response.status_code,
                headers=dict(headers.items()),
                retry_after=parse_retry_after(headers),
                should_retry=parse_should_retry(headers),
            )
            if isinstance(error, APIStatusError):
                # A refusal with the status it names (a 429 in a 200): refused, as the pool,
                # the budget and the retry policy must all see it.
                self.status = error.status
            raise error
        if body is not None:
            # TrioTransport's body is all we read and close from here on; the response (its
            # headers, a wrapper of the body) would only take room for the life of the
            # stream, thousands of times over with thousands of streams.
            self._response = None
        return True

    async def receive(self) -> Received:
        """The events of the next piece of the body (waits for bytes when none are here).

        Raises:
            HolySheepError: the connection failed or the stream broke the SSE format.
        """
        if self._pending is not None:
            # A compressed read inflates in bounded pieces, one per call, so that a
            # decompression bomb never holds more than a piece's events at once.
            piece = next(self._pending, None)
            if piece is not None:
                return self._parse(piece)
            self._pending = None
        body = self._body
        if body is None:  # closed meanwhile (the client or the stream was closed)
            raise APIConnectionError("the response was closed")
        try:
            data = await body.receive_some()
        except TRANSPORT_ERRORS as exc:
            raise translate(exc, connect_timeout=None) from cause_of(exc)
        if data and self._content is None:  # the common case: _take and _parse, inline
            try:
                return self._parser.feed(data), False
            except SSEProtocolError as exc:
                raise StreamProtocolError(
                    f"bad server-sent event stream: {exc}", data=data
                ) from None
        return self._take(data)

    def readable_fd(self) -> int:
        """See :meth:`Exchange.readable_fd <holysheep_trio._lifecycle.Exchange.readable_fd>`."""
        body = self._body
        if self._pending is not None or self._content is not None or type(body) is not _Body:
            return -1
        return body.readable_fd()

    def receive_ready(self) -> Received | None:
        """See :meth:`Exchange.receive_ready <holysheep_trio._lifecycle.Exchange.receive_ready>`."""
        body = self._body
        assert type(body) is _Body, "see readable_fd()"
        try:
            data = body.read_ready()
        except TRANSPORT_ERRORS as exc:
            raise translate(exc, connect_timeout=None) from cause_of(exc)
        if data is None:
            return None
        if data:  # as in receive(): no content coding here (see readable_fd)
            try:
                return self._parser.feed(data), False
            except SSEProtocolError as exc:
                raise StreamProtocolError(
                    f"bad server-sent event stream: {exc}", data=data
                ) from None
        return self._take(data)

    async def receive_nowait(self) -> Received | None:
        """Like :meth:`receive` for bytes already here; None when nothing is (or can't tell).

        ``TrioResponseStream.receive_some_nowait`` knows (plain TCP and TLS); other bodies
        cannot tell without waiting, so for them a passed deadline is final.
        """
        if self._pending is not None:
            return await self.receive()
        receive_nowait = getattr(self._body, "receive_some_nowait", None)
        if receive_nowait is None:
            return None
        try:
            found: bytes | None = await receive_nowait()
        except TRANSPORT_ERRORS:
            return None
        return None if found is None else self._take(found)

    def _take(self, data: bytes) -> Received:
        content = self._content
        if content is None:
            return self._parse(data)
        self._pending = content.decode(data) if data else itertools.chain(content.finish(), (b"",))
        piece = next(self._pending, None)
        return ([], False) if piece is None else self._parse(piece)

    def _parse(self, data: bytes) -> Received:
        """Parse ``data`` (b"": the end of the body) into events."""
        try:
            events = self._parser.feed(data) if data else self._parser.close()
        except SSEProtocolError as exc:
            raise StreamProtocolError(f"bad server-sent event stream: {exc}", data=data) from None
        return events, not data

    async def _status_error(self, response: httpx2.Response, deadline: float) -> APIStatusError:
        body = await self._read_bounded(MAX_ERROR_BODY, deadline)
        message, error_type, code = parse_error_body(body)
        headers = response.headers
        status = response.status_code
        cls = error_class_for_status(status)
        if status == 400 and code == "previous_response_not_found":
            cls = PreviousResponseNotFoundError
        return cls(
            f"HTTP {status}: {message}",
            status=status,
            body=body.decode("utf-8", "replace"),
            error_type=error_type,
            code=code,
            retry_after=parse_retry_after(headers),
            should_retry=parse_should_retry(headers),
            headers=dict(headers.items()),
        )

    async def _read_bounded(self, limit: int, deadline: float) -> bytes:
        """Up to ``limit`` bytes of the (decoded) body within ``deadline`` (errors ignored)."""
        body = self._body
        assert body is not None
        with trio.move_on_at(deadline):
            raw = await read_bounded(body, limit)
        response = self._response
        coding = None if response is None else response.headers.get("content-encoding")
        try:
            content = decoder_for(coding)
            if content is None:
                return raw
            pieces: list[bytes] = []
            size = 0
            for piece in itertools.chain(content.decode(raw), content.finish()):
                pieces.append(piece)
                size += len(piece)
                if size >= limit:
                    break
            return b"".join(pieces)[:limit]
        except StreamProtocolError:  # a truncated or odd body: show it as it came
            return raw

    async def aclose(self) -> None:
        """Close the response (the caller shields and bounds this)."""
        body, response = self._body, self._response
        self._body = None
        self._response = None
        self._pending = None
        try:
            if body is not None:
                await body.aclose()
            if response is not None:
                await response.aclose()
        except TRANSPORT_ERRORS as exc:  # closing a broken connection may fail; it is gone
            logger.debug("closing a response failed: %s", type(exc).__name__)


def http_exchange(
    client: Client,
    *,
    path: str,
    payload: bytes,
    extra_headers: Mapping[str, str] | None,
    timeouts: Timeouts,
) -> Callable[[str], HttpExchange]:
    """The ``new_exchange`` of a request sent as ``POST {base_url}{path}`` with ``payload``."""
    return _HttpExchangeFactory(client, path, payload, dict(extra_headers or {}), timeouts.connect)


class _HttpExchangeFactory:
    """What :func:`http_exchange` returns: a slotted object, not a closure (one per stream)."""

    __slots__ = ("_client", "_connect", "_headers", "_path", "_payload")

    def __init__(
        self,
        client: Client,
        path: str,
        payload: bytes,
        headers: Mapping[str, str],
        connect: float | None,
    ) -> None:
        self._client = client
        self._path = path
        self._payload = payload
        self._headers = headers
        self._connect = connect

    def __call__(self, base_url: str) -> HttpExchange:
        return HttpExchange(
            self._client,
            url=base_url + self._path,
            payload=self._payload,
            extra_headers=self._headers,
            connect_timeout=self._connect,
        )
