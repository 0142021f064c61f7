"""Waiting on conditions in tests: poll with a deadline, never a bare sleep.

The default deadline is generous (CI machines are small and busy); a condition that holds
returns at once, so only a failing test ever waits that long.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

TIMEOUT = 30.0


def wait_until(
    fn: Callable[[], T], what: str = "condition", *, timeout: float = TIMEOUT, interval: float = 0.02
) -> T:
    """Poll ``fn`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s (last: {value!r})")
        time.sleep(interval)


async def eventually(
    fn: Callable[[], T | Awaitable[T]],
    what: str = "condition",
    *,
    timeout: float = TIMEOUT,
    interval: float = 0.02,
) -> T:
    """``wait_until`` for the event loop: ``fn`` may be a plain or an async function."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s (last: {value!r})")
        await asyncio.sleep(interval)
