# The batch and hedging engine: many requests in bounded memory, and hedged (raced) requests.
"""Run many requests with all-settled semantics, or race a few, over an injected callable.

The engine knows nothing of HTTP: it calls ``run_one(request)`` (for batches) or each
candidate (for :func:`race`), so it can be tested with fakes and wired to the client by
passing ``client.chat``-like callables.

- :func:`open_batch` — results as they finish, in bounded memory (a million inputs from a lazy
  iterable run in the memory of ``max_in_flight + max_parked + max_pending`` requests).
- :func:`run_batch` — every result, in input order, as a list.
- :func:`race` — hedged requests: start the first candidate; if it has no first token after
  ``hedge_delay``, start the next; the first to produce a token wins and the others are
  cancelled at once.

Keys: given ``key`` (for the client, the model) and ``key_limit`` (how many requests of a key can
run at once), a request whose key is at its limit waits aside, *parked*, instead of taking one of
the ``max_in_flight`` places, which go to other keys' requests pulled behind it: requests queued
for one saturated model never keep another model's requests from starting.

Errors: an exception of a ``catch`` type (for the client, ``HolySheepError``) becomes the
result's ``error`` and never cancels the other requests. Any other exception is a bug: the batch
is cancelled and that exception propagates, alone, from the batch.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType
from typing import Any, Final, Generic, TypeVar

import attrs
import trio

from .pool import estimate_tokens

__all__ = [
    "BatchResult",
    "Candidate",
    "ChatRequest",
    "open_batch",
    "race",
    "run_batch",
]

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")
KeyT = TypeVar("KeyT", bound=Hashable)

#: Seconds allowed to close the caller's async iterator when a batch stops (STYLE rule 6:
#: clean-up is shielded but bounded, so a stuck generator cannot hang the caller).
CLEANUP_TIMEOUT = 5.0

#: Requests a keyed batch may park per place of its window, by default (``max_parked`` is
#: ``PARKED_PER_PLACE * max_in_flight``): enough to look past a long run of one saturated key
#: for other keys' requests (a window's worth of one model at limit 1 still leaves three windows
#: of lookahead), while memory stays a fixed multiple of ``max_in_flight``.
PARKED_PER_PLACE: Final = 4

#: What ``catch`` accepts: one exception class or a tuple of them.
ExceptionTypes = type[Exception] | tuple[type[Exception], ...]

#: A hedging candidate: an async function that receives a ``first_token`` callback, calls it
#: (synchronously, any number of times) when the first token of its stream arrives, and returns
#: its result. A losing candidate is cancelled (it sees :class:`trio.Cancelled`).
Candidate = Callable[[Callable[[], None]], Awaitable[ResultT]]


def _frozen_params(value: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"params must be a mapping, got {type(value).__name__}")
    return MappingProxyType(dict(value))


def _messages(value: Iterable[Any]) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise TypeError("messages must be a sequence of messages")
    return tuple(value)


def _model(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"model must be a non-empty str, got {value!r}")


def _max_tokens(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"max_tokens must be None or an int >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class ChatRequest:
    """One chat request of a batch: the keyword arguments of ``client.chat()`` as a value.

    Attributes:
        model: The model name.
        messages: The messages (mappings or message objects, as ``chat()`` accepts them).
        max_tokens: The completion limit, or ``None``.
        params: Every other ``chat()`` keyword argument (``temperature``, ``timeouts``, ...).
    """

    model: str = attrs.field(validator=_model)
    messages: tuple[Any, ...] = attrs.field(converter=_messages, hash=False)
    max_tokens: int | None = attrs.field(default=None, validator=_max_tokens)
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_params, hash=False)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ChatRequest:
        """Build from a mapping of ``chat()`` keyword arguments.

        Args:
            mapping: Must hold ``model`` and ``messages``; ``max_tokens`` is optional; every
                other key goes to ``params``.

        Raises:
            TypeError: If ``mapping`` is not a mapping or a value has the wrong type.
            ValueError: If ``model`` or ``messages`` is missing, or ``max_tokens`` is invalid.
        """
        if not isinstance(mapping, Mapping):
            raise TypeError(f"a request must be a mapping or a ChatRequest, got {mapping!r}")
        missing = [key for key in ("model", "messages") if key not in mapping]
        if missing:
            raise ValueError(f"a chat request needs {' and '.join(missing)}")
        params = {
            key: value
            for key, value in mapping.items()
            if key not in ("model", "messages", "max_tokens")
        }
        return cls(
            model=mapping["model"],
            messages=mapping["messages"],
            max_tokens=mapping.get("max_tokens"),
            params=params,
        )

    @classmethod
    def coerce(cls, request: ChatRequest | Mapping[str, Any]) -> ChatRequest:
        """Return ``request`` if it is a :class:`ChatRequest`, else :meth:`from_mapping` it."""
        return request if isinstance(request, ChatRequest) else cls.from_mapping(request)

    def to_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``client.chat(**request.to_kwargs())``."""
        kwargs: dict[str, Any] = {"model": self.model, "messages": list(self.messages)}
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        kwargs.update(self.params)
        return kwargs

    def estimated_tokens(self) -> int:
        """Tokens to reserve against a TPM limit (see :func:`.pool.estimate_tokens`)."""
        return estimate_tokens(self.messages, max_tokens=self.max_tokens)


@attrs.frozen(kw_only=True)
class BatchResult(Generic[RequestT, ResultT]):
    """The settled outcome of one request of a batch.

    Attributes:
        index: The request's position in the input (0-based).
        request: The request itself.
        completion: The result of ``run_one`` (a ``Completion`` for the client), or ``None``.
        error: The exception it raised, or ``None``.
    """

    index: int
    request: RequestT
    completion: ResultT | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """Whether the request succeeded."""
        return self.error is None


def _model_of(request: ChatRequest | Mapping[str, Any]) -> str:
    """A batch request's model, the client's batch key (raises as :meth:`ChatRequest.coerce`)."""
    return ChatRequest.coerce(request).model


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class _Lanes(Generic[RequestT, KeyT]):
    """Which pulled requests of a batch start now and which wait aside: bookkeeping, no I/O.

    A request *starts* by taking one of ``max_in_flight`` places, which it holds until its
    result is delivered. It may start only while fewer than ``key_limit(key)`` requests of its
    key hold places and no earlier request of its key is parked; otherwise it is *parked*, in
    input order per key, holding no place. Parked requests start oldest first, as places and
    their keys' limits allow.

    The engine consults it between awaits, and a request counts against its key the moment it
    starts, before its task has run a step. (Asking the pool instead would not see a request
    started a moment ago until its task reached admission, and every parked request of a model
    would start at once the moment one slot freed.)

    Args:
        max_in_flight: Places.
        max_parked: Parked requests, at most (``add`` must only be called when
            :meth:`may_pull`).
        key_limit: How many requests of a key may hold places at once; asked at every
            decision, so a limit that moves (an adaptive one) is followed. Below 1 counts as 1:
            a key allowed none would park its requests with nothing started to wake them.
    """

    __slots__ = (
        "_key_limit",
        "_running",
        "_waiting",
        "in_flight",
        "max_in_flight",
        "max_parked",
        "parked",
    )

    def __init__(
        self, *, max_in_flight: int, max_parked: int, key_limit: Callable[[KeyT], int]
    ) -> None:
        self.max_in_flight = max_in_flight
        self.max_parked = max_parked
        self._key_limit = key_limit
        self.in_flight = 0
        self.parked = 0
        # Only keys with a request started or parked are kept: memory follows the window.
        self._running: dict[KeyT, int] = {}
        self._waiting: dict[KeyT, deque[tuple[int, RequestT]]] = {}

    def may_pull(self) -> bool:
        """Whether a newly pulled request would find a place or, failing that, a parking space.

        Pulling needs a free place (a request pulled to be parked at once could have waited in
        the input instead) and a free parking space (so parking stays bounded).
        """
        return self.in_flight < self.max_in_flight and self.parked < self.max_parked

    def _has_room(self, key: KeyT) -> bool:
        return self._running.get(key, 0) < max(1, self._key_limit(key))

    def _start(self, key: KeyT) -> None:
        self.in_flight += 1
        self._running[key] = self._running.get(key, 0) + 1

    def add(self, index: int, request: RequestT, key: KeyT) -> bool:
        """Take a request just pulled; whether it starts now (else it is parked)."""
        if key not in self._waiting and self._has_room(key):
            self._start(key)
            return True
        self._waiting.setdefault(key, deque()).append((index, request))
        self.parked += 1
        return False

    def next_startable(self) -> tuple[int, RequestT, KeyT] | None:
        """Start the oldest parked request that may start now and return it, or ``None``."""
        if self.in_flight >= self.max_in_flight:
            return None
        chosen: tuple[int, KeyT] | None = None
        for key, queue in self._waiting.items():
            oldest = queue[0][0]
            if (chosen is None or oldest < chosen[0]) and self._has_room(key):
                chosen = (oldest, key)
        if chosen is None:
            return None
        key = chosen[1]
        queue = self._waiting[key]
        index, request = queue.popleft()
        if not queue:
            del self._waiting[key]
        self.parked -= 1
        self._start(key)
        return index, request, key

    def finish(self, key: KeyT) -> None:
        """A started request of ``key`` gave its place back."""
        self.in_flight -= 1
        left = self._running[key] - 1
        if left:
            self._running[key] = left
        else:
            del self._running[key]


async def _pull(
    requests: Iterable[RequestT] | AsyncIterable[RequestT],
) -> AsyncGenerator[RequestT, None]:
    # Only ever iterated from one task, and never yields inside a nursery or cancel scope.
    if isinstance(requests, AsyncIterable):
        iterator = aiter(requests)
        try:
            while True:
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    return
                yield item
        finally:
            # The batch consumed the caller's async generator: close it when stopping early, as
            # `async for` over `contextlib.aclosing` would (STYLE rule 6).
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                    await aclose()
    else:
        for item in requests:
            yield item


def _no_key(request: object) -> None:
    return None


def open_batch(
    run_one: Callable[[RequestT], Awaitable[ResultT]],
    requests: Iterable[RequestT] | AsyncIterable[RequestT],
    *,
    max_in_flight: int,
    max_pending: int | None = None,
    catch: ExceptionTypes = Exception,
    stop_when: Callable[[], bool] | None = None,
    key: Callable[[RequestT], KeyT] | None = None,
    key_limit: Callable[[KeyT], int] | None = None,
    max_parked: int | None = None,
) -> AbstractAsyncContextManager[trio.abc.ReceiveChannel[BatchResult[RequestT, ResultT]]]:
    """Run ``run_one`` over ``requests``; receive each result as soon as it settles.

    Use as ``async with open_batch(run_one, requests, max_in_flight=10) as results:`` then
    ``async for result in results:``. Leaving the block early cancels every request in flight.

    Memory stays bounded whatever the input size: at most ``max_in_flight`` calls run at once,
    at most ``max_pending`` settled results wait for the consumer, and a finished call whose
    result finds the buffer full keeps its place until the consumer catches up — so no new
    input is pulled. With ``key``, at most ``max_parked`` more wait aside (below). Inputs pulled
    but not yet received never exceed ``max_in_flight + max_parked + max_pending``
    (``max_in_flight + max_pending`` without ``key``).

    **Keys.** With ``key`` and ``key_limit``, at most ``key_limit(key(request))`` requests of
    one key run at once (asked at every decision, so a limit that moves is followed). A
    request whose key is at its limit takes no place: it is *parked* aside, and the places go to
    requests of other keys pulled behind it, so requests queued for one saturated key (for the
    client, a model whose slots are all taken) never keep other keys from starting. Parked
    requests start in input order per key, oldest first across keys, as soon as a request of
    their key settles and a place is free. Input is pulled only while a place is free and fewer
    than ``max_parked`` requests are parked: once that many are, pulling stops until one
    starts. After ``stop_when`` turns true, parked requests still run (each request pulled gets
    its result); nothing more is pulled.

    Args:
        run_one: Runs one request and returns its result.
        requests: The requests, an iterable or an async (lazy) iterable, pulled on demand.
        max_in_flight: Calls of ``run_one`` running at once.
        max_pending: Settled results buffered for the consumer (default ``max_in_flight``).
        catch: Exceptions that become a result's ``error``; any other exception cancels the
            batch and propagates.
        stop_when: Checked before each input is pulled; once it returns true no more input is
            pulled and the batch ends when the requests pulled have settled (e.g. the client
            was closed).
        key: A request's key (for the client, its model). An exception from it is a bug: it
            cancels the batch and propagates.
        key_limit: How many requests of a key may run at once (for the client,
            ``Pool.max_admitted``); required with ``key``. Values below 1 count as 1.
        max_parked: Requests parked at most (default
            :data:`PARKED_PER_PLACE` ``* max_in_flight``); only used with ``key``.

    Yields:
        :class:`BatchResult` values in completion order (an async context manager yielding a
        :class:`trio.abc.ReceiveChannel`).

    Raises:
        ValueError: If ``max_in_flight``, ``max_pending`` or ``max_parked`` is invalid (at the
            call, not at the first result).
        TypeError: If only one of ``key`` and ``key_limit`` is given.
    """
    _check_count("max_in_flight", max_in_flight, 1)
    buffer = max_in_flight if max_pending is None else _check_count("max_pending", max_pending, 0)
    parking = (
        PARKED_PER_PLACE * max_in_flight
        if max_parked is None
        else _check_count("max_parked", max_parked, 1)
    )
    if (key is None) != (key_limit is None):
        raise TypeError("key and key_limit go together: pass both or neither")
    if key is None or key_limit is None:
        # One key for every request, never at its limit: the window alone decides.
        return _open_batch(
            run_one,
            requests,
            max_in_flight,
            buffer,
            catch,
            stop_when,
            _no_key,
            lambda _key: max_in_flight,
            parking,
        )
    return _open_batch(
        run_one, requests, max_in_flight, buffer, catch, stop_when, key, key_limit, parking
    )


@trio.as_safe_channel
async def _open_batch(
    run_one: Callable[[RequestT], Awaitable[ResultT]],
    requests: Iterable[RequestT] | AsyncIterable[RequestT],
    max_in_flight: int,
    buffer: int,
    catch: ExceptionTypes,
    stop_when: Callable[[], bool] | None,
    key: Callable[[RequestT], KeyT],
    key_limit: Callable[[KeyT], int],
    max_parked: int,
) -> AsyncGenerator[BatchResult[RequestT, ResultT], None]:
    # trio.as_safe_channel runs this generator in a task of its own, so it may yield while
    # its nursery runs (STYLE rule 5), and an error in the consumer's block comes out alone.
    send, receive = trio.open_memory_channel[BatchResult[RequestT, ResultT]](buffer)
    lanes: _Lanes[RequestT, KeyT] = _Lanes(
        max_in_flight=max_in_flight, max_parked=max_parked, key_limit=key_limit
    )
    # Wakes the feeder when a place is given back. No wake-up is lost: the feeder looks at the
    # lanes and parks with no checkpoint in between, and only other tasks give places back.
    place_freed = trio.lowlevel.ParkingLot()
    bugs: list[BaseException] = []

    def fail(bug: BaseException, workers: trio.Nursery) -> None:
        bugs.append(bug)
        workers.cancel_scope.cancel()

    async def settle(
        index: int, request: RequestT, request_key: KeyT, workers: trio.Nursery
    ) -> None:
        try:
            try:
                value = await run_one(request)
            except catch as error:
                result: BatchResult[RequestT, ResultT] = BatchResult(
                    index=index, request=request, error=error
                )
            except Exception as bug:
                fail(bug, workers)
                return
            else:
                result = BatchResult(index=index, request=request, completion=value)
            await send.send(result)
        finally:
            lanes.finish(request_key)
            place_freed.unpark_all()

    async def feed() -> None:
        # A bug cancels only this task's nursery; closing `send` then ends the consumer's loop
        # normally. Cancelling the generator's own nursery while it is suspended at `yield`
        # would deliver the cancellation into trio.as_safe_channel's driver instead.
        with send:
            async with trio.open_nursery() as workers:
                index = 0
                no_more_input = False
                pulled = _pull(requests)
                try:
                    while True:
                        # Parked requests first: they were pulled before anything still in the
                        # input.
                        try:
                            startable = lanes.next_startable() if lanes.parked else None
                        except Exception as bug:
                            fail(bug, workers)
                            break
                        if startable is not None:
                            workers.start_soon(settle, *startable, workers)
                            await trio.lowlevel.checkpoint()
                            continue
                        if not no_more_input and lanes.may_pull():
                            if stop_when is not None and stop_when():
                                no_more_input = True
                                continue
                            try:
                                request = await anext(pulled)
                            except StopAsyncIteration:
                                no_more_input = True
                                continue
                            except Exception as bug:
                                fail(bug, workers)
                                break
                            try:
                                request_key = key(request)
                                starts = lanes.add(index, request, request_key)
                            except Exception as bug:
                                fail(bug, workers)
                                break
                            if starts:
                                workers.start_soon(settle, index, request, request_key, workers)
                            index += 1
                            await trio.lowlevel.checkpoint()
                            continue
                        if no_more_input and lanes.parked == 0:
                            break  # the nursery waits for the requests still running
                        await place_freed.park()
                finally:
                    with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                        await pulled.aclose()

    with receive:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            async for result in receive:
                yield result
    if bugs:
        raise bugs[0]


async def run_batch(
    run_one: Callable[[RequestT], Awaitable[ResultT]],
    requests: Iterable[RequestT] | AsyncIterable[RequestT],
    *,
    max_in_flight: int,
    catch: ExceptionTypes = Exception,
    stop_when: Callable[[], bool] | None = None,
    key: Callable[[RequestT], KeyT] | None = None,
    key_limit: Callable[[KeyT], int] | None = None,
    max_parked: int | None = None,
) -> list[BatchResult[RequestT, ResultT]]:
    """Run ``run_one`` over every request; return every result, in input order.

    All settled: a failure becomes that result's ``error`` and never cancels the others. The
    returned list holds one result per input, so its memory grows with the input; for very
    large inputs use :func:`open_batch`.

    Args:
        run_one: Runs one request and returns its result.
        requests: The requests, an iterable or an async (lazy) iterable.
        max_in_flight: Calls of ``run_one`` running at once.
        catch: Exceptions that become a result's ``error``; any other exception cancels the
            batch and propagates.
        stop_when: As for :func:`open_batch`: once true, no more input is pulled, and the
            list holds the results of the inputs pulled so far.
        key: As for :func:`open_batch`: requests whose key is at its limit wait aside.
        key_limit: As for :func:`open_batch`; required with ``key``.
        max_parked: As for :func:`open_batch`.

    Returns:
        One :class:`BatchResult` per request pulled, ``results[i].index == i``.

    Raises:
        ValueError: If ``max_in_flight`` or ``max_parked`` is invalid.
        TypeError: If only one of ``key`` and ``key_limit`` is given.
    """
    settled: dict[int, BatchResult[RequestT, ResultT]] = {}
    async with open_batch(
        run_one,
        requests,
        max_in_flight=max_in_flight,
        catch=catch,
        stop_when=stop_when,
        key=key,
        key_limit=key_limit,
        max_parked=max_parked,
    ) as results:
        async for result in results:
            settled[result.index] = result
    return [settled[index] for index in range(len(settled))]


async def race(
    candidates: Sequence[Candidate[ResultT]],
    *,
    hedge_delay: float,
    catch: ExceptionTypes = Exception,
) -> ResultT:
    """Hedged request: the first candidate to produce a token wins, the others are cancelled.

    Starts ``candidates[0]``. Whenever ``hedge_delay`` seconds pass without a first token from
    any running candidate — or a running candidate fails — the next candidate starts. The first
    candidate to call its ``first_token`` callback (or to return without calling it) wins: the
    others are cancelled at once, and the winner runs to completion.

    Args:
        candidates: Async functions ``candidate(first_token) -> result`` (see :data:`Candidate`).
        hedge_delay: Seconds to wait for a first token before starting the next candidate.
        catch: Exceptions that count as a candidate failing; any other exception cancels the
            race and propagates.

    Returns:
        The winner's result.

    Raises:
        ValueError: If there are no candidates or ``hedge_delay`` is negative or NaN.
        Exception: The winner's error if it fails after its first token; if every candidate
            fails before producing a token, the error of the earliest-started one.
    """
    if not candidates:
        raise ValueError("race() needs at least one candidate")
    if not hedge_delay >= 0 or math.isnan(hedge_delay):
        raise ValueError(f"hedge_delay must be >= 0, got {hedge_delay!r}")
    scopes: list[trio.CancelScope] = []
    errors: dict[int, Exception] = {}
    bugs: list[BaseException] = []
    winner: int | None = None
    outcome: list[ResultT] = []
    changed = trio.Event()

    def win(index: int) -> None:
        nonlocal winner
        if winner is not None:
            return
        winner = index
        for other, scope in enumerate(scopes):
            if other != index:
                scope.cancel()
        changed.set()

    async def run(index: int, candidate: Candidate[ResultT], scope: trio.CancelScope) -> None:
        with scope:
            try:
                value = await candidate(lambda: win(index))
            except catch as error:
                errors[index] = error
                changed.set()
                return
            except Exception as bug:
                bugs.append(bug)
                nursery.cancel_scope.cancel()
                return
            win(index)
            if winner == index:
                outcome.append(value)

    async with trio.open_nursery() as nursery:
        for index, candidate in enumerate(candidates):
            if winner is not None:
                break
            scope = trio.CancelScope()
            scopes.append(scope)
            nursery.start_soon(run, index, candidate, scope)
            if index == len(candidates) - 1:
                break
            # Hedge after hedge_delay, or at once if a candidate fails; stop once one wins.
            with trio.move_on_after(hedge_delay):
                while winner is None:
                    failures = len(errors)
                    await changed.wait()
                    changed = trio.Event()
                    if len(errors) > failures:
                        break
    if bugs:
        raise bugs[0]
    if outcome:
        return outcome[0]
    if winner is not None:
        raise errors[winner]
    raise errors[min(errors)]
