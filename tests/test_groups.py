# BlockGuard: nurseries around a caller's block never rewrite the caller's exceptions.
from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from holysheep_trio._groups import BlockGuard

if sys.version_info < (3, 11):  # pragma: no cover - trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup


class Bug(Exception):
    pass


@asynccontextmanager
async def owner(background_bug: bool = False) -> AsyncIterator[None]:
    """An open_* context manager that owns a nursery with a background task."""

    async def background() -> None:
        if background_bug:
            raise Bug("in the background")
        await trio.sleep_forever()

    guard = BlockGuard()
    async with guard.outer(), trio.open_nursery() as nursery:
        nursery.start_soon(background)
        try:
            async with guard.inner():
                yield
        finally:
            nursery.cancel_scope.cancel()


async def test_the_blocks_exception_comes_out_as_it_was() -> None:
    error = ValueError("mine")
    with pytest.raises(ValueError, match="mine") as info:
        async with owner():
            raise error
    assert info.value is error


async def test_a_group_of_the_callers_own_is_not_unwrapped() -> None:
    group = ExceptionGroup("mine", [ValueError("inner")])
    with pytest.raises(ExceptionGroup) as info:
        async with owner():
            raise group
    assert info.value is group


async def test_nested_owners_keep_it_too() -> None:
    group = ExceptionGroup("mine", [KeyError("k")])
    with pytest.raises(ExceptionGroup) as info:
        async with owner(), owner():
            raise group
    assert info.value is group


async def test_a_background_bug_comes_out_alone() -> None:
    with pytest.raises(Bug):
        async with owner(background_bug=True):
            await trio.sleep_forever()


async def test_a_cancellation_passes_through() -> None:
    with trio.move_on_after(0.01) as scope:
        async with owner():
            await trio.sleep_forever()
    assert scope.cancelled_caught


async def _fail_with_the_background() -> None:
    async with owner(background_bug=True):
        try:
            await trio.sleep_forever()
        finally:
            raise ValueError("and the block")


async def test_two_failures_at_once_stay_a_group() -> None:
    with pytest.raises(BaseExceptionGroup) as info:
        await _fail_with_the_background()
    assert len(info.value.exceptions) == 2
