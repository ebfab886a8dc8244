# Nurseries around a caller's block without rewriting the caller's exceptions.
"""One failure, one exception — and the caller's own exceptions exactly as they were raised.

An ``open_*`` context manager that owns a nursery runs the caller's block inside it, so trio
wraps whatever the block raises in an ``ExceptionGroup`` (strict exception groups). Unwrapping
every one-member group would also rewrite a group the caller raised on purpose. A
:class:`BlockGuard` tells the two apart: its :meth:`~BlockGuard.inner` part, entered just around
the caller's block (inside the nurseries), remembers the exception the block raised; its
:meth:`~BlockGuard.outer` part, entered outside the nurseries, re-raises that very object when
the group holds nothing else, and a failure of the background tasks as that one exception.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

if sys.version_info < (3, 11):  # pragma: no cover - trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["BlockGuard"]


class BlockGuard:
    """Keeps the exceptions of a caller's block intact across the nurseries around it.

    Use as::

        guard = BlockGuard()
        async with guard.outer(), trio.open_nursery() as nursery, guard.inner():
            yield resource  # the caller's block
    """

    __slots__ = ("_body_error",)

    def __init__(self) -> None:
        self._body_error: BaseException | None = None

    @asynccontextmanager
    async def inner(self) -> AsyncIterator[None]:
        """Enter just around the caller's block: remembers what it raises."""
        try:
            yield
        except BaseException as exc:
            self._body_error = exc
            raise

    @asynccontextmanager
    async def outer(self) -> AsyncIterator[None]:
        """Enter outside the nurseries: the block's exception comes out as it was raised."""
        failure: BaseException | None = None
        try:
            yield
        except BaseExceptionGroup as group:
            failure = self._unwrap(group)
            if failure is None:
                raise
        if failure is not None:
            # Raised outside the except clause, so that its __context__ stays the caller's.
            raise failure

    def _unwrap(self, group: BaseExceptionGroup[BaseException]) -> BaseException | None:
        """The block's own exception, or the one failure inside nested one-member groups."""
        body_error = self._body_error
        exc: BaseException = group
        while isinstance(exc, BaseExceptionGroup):
            if body_error is not None and _same(exc, body_error):
                return body_error
            if len(exc.exceptions) != 1:
                # Several things failed at once: the group itself, unless it is the outermost.
                return exc if exc is not group else None
            exc = exc.exceptions[0]
        return exc


def _same(seen: BaseException, raised: BaseException) -> bool:
    """Whether ``seen`` is ``raised``, or a copy trio made of that group on its way out.

    A nursery may pass a group from the block on as a derived copy (same message, the same
    leaf exceptions); the caller must get the very object it raised.
    """
    if seen is raised:
        return True
    if not (isinstance(seen, BaseExceptionGroup) and isinstance(raised, BaseExceptionGroup)):
        return False
    return (
        type(seen) is type(raised)
        and seen.message == raised.message
        and len(seen.exceptions) == len(raised.exceptions)
        and all(_same(a, b) for a, b in zip(seen.exceptions, raised.exceptions, strict=True))
    )
