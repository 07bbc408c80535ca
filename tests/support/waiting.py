"""The one way tests wait: poll a check until it returns something true, with a deadline.

State that lives in another task or process (a sidecar, a Redis, a Kubernetes API) is
reached by polling, never by sleeping a fixed time: a test waits exactly as long as the
state takes, and fails with what it saw last when it never comes. :func:`wait_until` is
for async tests (the check may be sync or async); :func:`wait_for` is the same for
synchronous code (the kubectl-driven smoke test, fixture set-up of servers).

Two options cover the waits that must not fail the test: ``fail=False`` returns the last
(false) value at the deadline, for a state that may rightly never come (a fixed node that
never answers a withdrawn request); ``ignore`` names exceptions that count as "not yet"
(a server that refuses connections while it starts).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

__all__ = ["wait_for", "wait_until"]

#: Exception types a check may raise that mean "not yet" (see ``ignore``).
Ignored = tuple[type[BaseException], ...]


def _at_deadline(timeout: float, what: str, last: object, *, fail: bool) -> Any:
    """What a wait gives at its deadline: a failed test, or (``fail=False``) a false value.

    An ignored exception seen last stands for False: the caller gets a plain "no".
    """
    if fail:
        pytest.fail(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})", pytrace=False)
    return False if isinstance(last, BaseException) else last


async def wait_until(
    check: Callable[[], object | Awaitable[object]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
    fail: bool = True,
    ignore: Ignored = (),
) -> Any:
    """Poll ``check`` (sync or async) until it returns something true, and return that.

    At the deadline it fails the test, naming ``what`` and the last value seen; with
    ``fail=False`` it returns that last value instead. A check that raises one of
    ``ignore`` counts as false.
    """
    deadline = time.monotonic() + timeout
    while True:
        result: object = None
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
        except ignore as err:
            result = err
        else:
            if result:
                return result
        if time.monotonic() > deadline:
            return _at_deadline(timeout, what, result, fail=fail)
        await asyncio.sleep(interval)


def wait_for(
    check: Callable[[], object],
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
    what: str = "condition",
    fail: bool = True,
    ignore: Ignored = (),
) -> Any:
    """:func:`wait_until` for synchronous code: blocks the thread between polls."""
    deadline = time.monotonic() + timeout
    while True:
        result: object = None
        try:
            result = check()
        except ignore as err:
            result = err
        else:
            if result:
                return result
        if time.monotonic() > deadline:
            return _at_deadline(timeout, what, result, fail=fail)
        time.sleep(interval)
