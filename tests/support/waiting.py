"""The one way tests wait: poll a check until it returns something true, with a deadline.

State that lives in another task or process (a sidecar, a Redis, a Kubernetes API) is
reached by polling, never by sleeping a fixed time: a test waits exactly as long as the
state takes, and fails with what it saw last when it never comes. :func:`wait_until` is
for async tests (the check may be sync or async); :func:`wait_for` is the same for
synchronous code (the kubectl-driven smoke test).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

__all__ = ["wait_for", "wait_until"]


def _fail(timeout: float, what: str, last: object) -> None:
    pytest.fail(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})", pytrace=False)


async def wait_until(
    check: Callable[[], object | Awaitable[object]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> Any:
    """Poll ``check`` (sync or async) until it returns something true, and return that.

    Fails the test at the deadline, naming ``what`` and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            _fail(timeout, what, result)
        await asyncio.sleep(interval)


def wait_for(
    check: Callable[[], object],
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
    what: str = "condition",
) -> Any:
    """:func:`wait_until` for synchronous code: blocks the thread between polls."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            _fail(timeout, what, result)
        time.sleep(interval)
