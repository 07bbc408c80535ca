"""The one waiting helper's options: what a wait gives at its deadline, and "not yet" errors.

Every wait here has a zero timeout (one poll, then the deadline) or a check that comes true
on a later poll: nothing is timed.
"""

from __future__ import annotations

import pytest

from tests.support.waiting import wait_for, wait_until


class _Countdown:
    """False (or raising ``error``) for the first ``misses`` polls, then the poll's number."""

    def __init__(self, misses: int, error: BaseException | None = None) -> None:
        self.misses = misses
        self.error = error
        self.polls = 0

    def __call__(self) -> int:
        self.polls += 1
        if self.polls <= self.misses:
            if self.error is not None:
                raise self.error
            return 0
        return self.polls


async def test_wait_until_returns_the_first_true_value() -> None:
    check = _Countdown(2)
    assert await wait_until(check, interval=0) == 3


async def test_wait_until_awaits_an_async_check() -> None:
    async def check() -> str:
        return "ready"

    assert await wait_until(check) == "ready"


async def test_wait_until_fails_the_test_at_the_deadline_naming_what_it_waited_for() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"waiting for the moon \(last: 0\)"):
        await wait_until(_Countdown(10), timeout=0, what="the moon")


async def test_wait_until_without_fail_returns_the_last_false_value_at_the_deadline() -> None:
    check = _Countdown(10)
    assert await wait_until(check, timeout=0, fail=False) == 0
    assert check.polls == 1


async def test_wait_until_counts_an_ignored_error_as_not_yet() -> None:
    check = _Countdown(2, error=ConnectionRefusedError())
    assert await wait_until(check, interval=0, ignore=(OSError,)) == 3


async def test_wait_until_lets_an_error_it_does_not_ignore_through() -> None:
    with pytest.raises(KeyError):
        await wait_until(_Countdown(1, error=KeyError("x")), ignore=(OSError,))


async def test_wait_until_reports_an_ignored_error_seen_last_as_false() -> None:
    check = _Countdown(10, error=ConnectionRefusedError())
    assert await wait_until(check, timeout=0, fail=False, ignore=(OSError,)) is False
    with pytest.raises(pytest.fail.Exception, match="ConnectionRefusedError"):
        await wait_until(check, timeout=0, ignore=(OSError,))


def test_wait_for_has_the_same_options_for_synchronous_code() -> None:
    assert wait_for(_Countdown(2), interval=0) == 3
    assert wait_for(_Countdown(10), timeout=0, fail=False) == 0
    assert wait_for(_Countdown(2, error=OSError()), interval=0, ignore=(OSError,)) == 3
    assert wait_for(_Countdown(10, error=OSError()), timeout=0, fail=False, ignore=(OSError,)) is False
    with pytest.raises(pytest.fail.Exception, match="waiting for the sun"):
        wait_for(_Countdown(10), timeout=0, what="the sun")
