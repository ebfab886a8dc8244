# Redis plumbing shared by the Redis ledger and the shared limits: URLs, connections, outages.
"""What the Redis ledger and the shared limit store have in common.

- :func:`parse_redis_url` reads ``redis://[user:password@]host[:port][/db][?options]`` (and
  ``rediss://`` for TLS) into a :class:`RedisTarget`; the options are ours (``key_prefix``,
  ``fail_open``, ``lease_time``, ``connect_timeout``, ``timeout``), never sent to Redis.
- :func:`open_redis` opens a ``coredis`` client (coredis >= 6 runs on trio natively: its
  connections are anyio tasks in a task group the client owns, so it is an async context
  manager) and makes sure one failure comes out as one exception, not an exception group.
- :class:`Outage` is the failure policy: the first failure of a call starts an outage (one
  WARNING), calls during the next :data:`RETRY_INTERVAL` seconds fail at once without touching
  the network, and the first call that succeeds after it ends the outage (one INFO).
- :func:`key_tag` puts every key of one prefix in one Redis Cluster hash slot (``{prefix}``),
  so a Lua script may touch all of them (Redis Cluster specification, "Hash tags").

``coredis`` is imported only here and in the modules that use it, and only when a ``redis://``
URL is opened: ``import holysheep_trio`` never imports it.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import trio

from ._groups import BlockGuard
from .errors import ConfigurationError, LedgerError, LedgerUnavailableError

if TYPE_CHECKING:
    import coredis

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_KEY_PREFIX",
    "RETRY_INTERVAL",
    "TIMEOUT",
    "Outage",
    "RedisTarget",
    "call_redis",
    "check_key_prefix",
    "key_tag",
    "open_redis",
    "parse_redis_url",
]

T = TypeVar("T")

logger = logging.getLogger("holysheep_trio.fleet")

#: The prefix of every key when none is given.
DEFAULT_KEY_PREFIX: Final = "holysheep"
#: Seconds to establish a connection before the store counts as unreachable.
CONNECT_TIMEOUT: Final = 1.0
#: Seconds one command (a script) may take before the store counts as unreachable.
TIMEOUT: Final = 5.0
#: Seconds after a failure during which calls fail at once, before the next try.
RETRY_INTERVAL: Final = 1.0

_SCHEMES: Final = ("redis", "rediss")
_TRUE: Final = ("1", "true", "yes", "on")
_FALSE: Final = ("0", "false", "no", "off")
_OPTIONS: Final = frozenset(
    {"key_prefix", "fail_open", "lease_time", "connect_timeout", "timeout", "retry_interval"}
)


def _seconds(name: str, text: str, url: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigurationError(f"{name} must be a number of seconds > 0 in {url}, got {text!r}")
    return value


@attrs.frozen(kw_only=True)
class RedisTarget:
    """Where a Redis store is and how to use it (from :func:`parse_redis_url`).

    Attributes:
        host: Host name or address.
        port: TCP port.
        db: Database number.
        username: ACL user, if any.
        password: Password, if any (never shown: see :attr:`url`).
        tls: ``rediss://``: TLS with the system's trust store.
        key_prefix: Prefix of every key (several budgets share one Redis under different ones).
        fail_open: Fall back to local state when Redis is unreachable (else fail closed).
        lease_time: Seconds a concurrency slot is held without renewal, or None for the default.
        connect_timeout: Seconds to connect.
        timeout: Seconds one command may take.
        retry_interval: Seconds between tries while Redis is unreachable.
    """

    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    tls: bool = False
    key_prefix: str = DEFAULT_KEY_PREFIX
    fail_open: bool = False
    lease_time: float | None = None
    connect_timeout: float = CONNECT_TIMEOUT
    timeout: float = TIMEOUT
    retry_interval: float = RETRY_INTERVAL

    @property
    def url(self) -> str:
        """The URL without credentials nor options, for messages and reports."""
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{self.db}"

    @property
    def location(self) -> str:
        """:attr:`url` with the key prefix, to tell two stores in one Redis apart."""
        return f"{self.url} (key prefix {self.key_prefix!r})"


def parse_redis_url(url: str) -> RedisTarget:
    """Read a ``redis://`` or ``rediss://`` URL with our options.

    Options (query string): ``key_prefix`` (default ``holysheep``), ``fail_open``
    (``true``/``false``), ``lease_time``, ``connect_timeout``, ``timeout``, ``retry_interval``
    (seconds).

    Raises:
        ConfigurationError: Not such a URL, or a bad option. The password is never shown.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"a Redis URL must be a string, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigurationError(f"bad Redis URL: {exc}") from None
    shown = f"{parts.scheme}://{parts.hostname or ''}"
    if parts.scheme not in _SCHEMES:
        raise ConfigurationError(f"a Redis URL starts with redis:// or rediss://, not {shown}")
    if not parts.hostname:
        raise ConfigurationError(f"the Redis URL {shown} names no host")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ConfigurationError(f"the Redis URL's path is a database number, got {path!r}")
    options = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ConfigurationError(f"unknown Redis URL option(s): {', '.join(sorted(unknown))}")
    values = {name: found[-1] for name, found in options.items()}
    prefix = values.get("key_prefix", DEFAULT_KEY_PREFIX)
    check_key_prefix(prefix)
    fail_open = values.get("fail_open", "false").lower()
    if fail_open not in _TRUE + _FALSE:
        raise ConfigurationError(f"fail_open must be true or false, got {fail_open!r}")
    return RedisTarget(
        host=parts.hostname,
        port=port,
        db=int(path or 0),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=parts.scheme == "rediss",
        key_prefix=prefix,
        fail_open=fail_open in _TRUE,
        lease_time=(
            _seconds("lease_time", values["lease_time"], shown) if "lease_time" in values else None
        ),
        connect_timeout=_seconds(
            "connect_timeout", values.get("connect_timeout", str(CONNECT_TIMEOUT)), shown
        ),
        timeout=_seconds("timeout", values.get("timeout", str(TIMEOUT)), shown),
        retry_interval=_seconds(
            "retry_interval", values.get("retry_interval", str(RETRY_INTERVAL)), shown
        ),
    )


def check_key_prefix(prefix: object) -> str:
    """Check a key prefix: a non-empty string without braces (they delimit hash tags).

    Raises:
        ConfigurationError: Not such a string.
    """
    if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
        raise ConfigurationError(
            f"key_prefix must be a non-empty string without braces, got {prefix!r}"
        )
    return prefix


def key_tag(prefix: str) -> str:
    """``{prefix}``: the hash tag that keeps all keys of one prefix in one cluster slot."""
    return "{" + prefix + "}"


def _connection_class() -> type[Any]:
    import anyio.streams.memory as memory
    import coredis

    class ClosingTCPConnection(coredis.TCPConnection):
        """coredis's TCP connection, whose memory streams are closed when connecting fails.

        coredis 6 creates a connection's anyio memory streams in ``__init__`` and closes them
        only once connected, so every failed attempt (Redis down) left six unclosed streams,
        each a ``ResourceWarning`` when collected.
        """

        async def run(self, **kwargs: Any) -> None:
            try:
                await super().run(**kwargs)
            finally:
                for value in list(vars(self).values()):
                    if isinstance(
                        value, memory.MemoryObjectSendStream | memory.MemoryObjectReceiveStream
                    ):
                        value.close()

    return ClosingTCPConnection


@asynccontextmanager
async def open_redis(target: RedisTarget) -> AsyncIterator[coredis.Redis[str]]:
    """A coredis client for ``target``; use with ``async with``. Connects on first use.

    Raises:
        ConfigurationError: The ``redis`` extra is not installed.
    """
    try:
        import coredis
        from coredis.connection import TCPLocation
        from coredis.retry import NoRetryPolicy
    except ImportError:
        raise ConfigurationError(
            "redis:// needs coredis: pip install 'holysheep-trio[redis]'"
        ) from None
    options: dict[str, Any] = {}
    if target.tls:
        options["ssl_context"] = ssl.create_default_context()
    pool: coredis.ConnectionPool[Any] = coredis.ConnectionPool(
        connection_class=_connection_class(),
        location=TCPLocation(target.host, target.port),
        db=target.db,
        username=target.username,
        password=target.password,
        connect_timeout=target.connect_timeout,
        stream_timeout=target.timeout,
        timeout=target.connect_timeout,
        decode_responses=True,
        **options,
    )
    # No retries inside coredis: a call either reaches Redis now or the outage policy
    # (`Outage`) decides, so "unreachable" is told at once.
    client: coredis.Redis[str] = coredis.Redis(
        connection_pool=pool, decode_responses=True, retry_policy=NoRetryPolicy()
    )
    guard = BlockGuard()
    async with guard.outer(), client, guard.inner():
        yield client


def _unreachable_types() -> tuple[type[BaseException], ...]:
    import anyio
    import coredis.exceptions as redis_errors

    return (
        redis_errors.ConnectionError,  # refused, reset, lost, a protocol error, loading
        redis_errors.ReadOnlyError,  # a replica being promoted: no writes for now
        anyio.BrokenResourceError,
        anyio.ClosedResourceError,
        anyio.EndOfStream,
        OSError,
        TimeoutError,
    )


def _is_unreachable(exc: BaseException) -> bool:
    import coredis.exceptions as redis_errors

    return isinstance(exc, _unreachable_types()) or (
        # A server that cannot take writes now (out of memory, no primary): unusable for now.
        isinstance(exc, redis_errors.ResponseError)
        and str(exc).split(" ", 1)[0] in ("MASTERDOWN", "LOADING", "OOM", "BUSY")
    )


class Outage:
    """The state of one store's connection: up, or down since when (see the module docs).

    Args:
        location: The store, for messages.
        fail_open: Whether callers fall back to local state during an outage (for the message).
        retry_interval: Seconds between tries while down.
    """

    def __init__(self, *, location: str, fail_open: bool, retry_interval: float) -> None:
        self._location = location
        self._fail_open = fail_open
        self._retry_interval = retry_interval
        self._down_since: float | None = None
        self._retry_at = -math.inf
        self._last_error = ""
        self.outages = 0

    @property
    def down(self) -> bool:
        """Whether an outage is under way."""
        return self._down_since is not None

    def check(self) -> None:
        """Fail at once while down and it is not yet time to try again.

        Raises:
            LedgerUnavailableError: Down, and the next try is later.
        """
        if self._down_since is not None and trio.current_time() < self._retry_at:
            raise self._error()

    def _error(self) -> LedgerUnavailableError:
        return LedgerUnavailableError(
            f"Redis at {self._location} is unreachable ({self._last_error}); failing closed"
        )

    def succeeded(self) -> None:
        """A call reached Redis: end an outage under way."""
        if self._down_since is not None:
            lasted = trio.current_time() - self._down_since
            self._down_since = None
            logger.info("Redis at %s is reachable again after %.1f s", self._location, lasted)

    def failed(self, exc: BaseException) -> LedgerUnavailableError:
        """A call could not reach Redis: start (or continue) an outage; the error to raise."""
        now = trio.current_time()
        self._last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self._retry_at = now + self._retry_interval
        if self._down_since is None:
            self._down_since = now
            self.outages += 1
            if self._fail_open:
                logger.warning(
                    "Redis at %s is unreachable (%s): falling back to local state in this"
                    " process until it is back (fail_open=True)",
                    self._location,
                    self._last_error,
                )
            else:
                logger.warning(
                    "Redis at %s is unreachable (%s): new requests fail until it is back",
                    self._location,
                    self._last_error,
                )
        return self._error()


async def call_redis(
    outage: Outage, call: Callable[[], Awaitable[T]], *, doing: str, limit: float
) -> T:
    """Run one Redis call to its end (shielded, bounded), under the outage policy.

    A script that was sent runs on the server whatever happens here, so the call is not
    abandoned on cancellation: its answer is returned, and the caller's cancellation is
    delivered at its next checkpoint (as the other ledgers do).

    Raises:
        LedgerUnavailableError: Redis is unreachable (or was, moments ago).
        LedgerError: Redis refused the call (a script error: a bug or foreign data).
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    outage.check()
    import coredis.exceptions as redis_errors

    caught: tuple[type[BaseException], ...] = (redis_errors.RedisError, *_unreachable_types())
    try:
        with trio.move_on_after(limit + 1.0, shield=True) as scope:
            result = await call()
    except caught as exc:
        if _is_unreachable(exc):
            raise outage.failed(exc) from None
        raise LedgerError(f"Redis refused {doing}: {exc}") from None
    if scope.cancelled_caught:
        raise outage.failed(TimeoutError(f"{doing} took longer than {limit:g} s"))
    outage.succeeded()
    return result
