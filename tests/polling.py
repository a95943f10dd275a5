"""Waiting in tests for something another process or task does: poll, never hang."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")
What = str | Callable[[], str]


@overload
async def eventually(
    condition: Callable[[], Awaitable[T]],
    *,
    within: float = ...,
    every: float = ...,
    what: What = ...,
) -> T: ...


@overload
async def eventually(
    condition: Callable[[], T], *, within: float = ..., every: float = ..., what: What = ...
) -> T: ...


async def eventually(
    condition: Callable[[], Any],
    *,
    within: float = 30.0,
    every: float = 0.1,
    what: What = "the condition",
) -> Any:
    """Poll `condition` (sync or async) until it returns something truthy, and return it;
    fail with `what` (text, or a function that says what was seen) after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        found = condition()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        if time.monotonic() >= deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"{said}: not met within {within:g} s")
        await asyncio.sleep(every)
