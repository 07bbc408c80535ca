"""The leader Lease renewed from a thread of its own, so the operator's event loop cannot starve it.

Everything else the operator does shares one event loop: kopf's start-up and first lists, the
runtime's start, a burst of placements. Each of those has held that loop for longer than the
renew deadline on a loaded machine, and a renewal that waits for the loop misses the deadline:
the operator steps down (exit 1) although nothing was wrong with the API server. The term
is a property of the API server's clock and the renewals, not of how busy the operator is.

:class:`ThreadedLease` runs a :class:`~callboard.kube.k8s.lease.LeaderLease` (all of its
timing and G8 logic, unchanged) on a daemon thread with its own event loop and its own API
client (a connection pool of its own). The renewals start the moment the lease is acquired,
before anything else runs. The main loop talks to it through
:func:`asyncio.run_coroutine_threadsafe`. The GIL hands the thread its turn every few
milliseconds however busy the main thread is, so only a process that is stopped (SIGSTOP, a
frozen VM) misses its deadline, and then it should.

:meth:`ThreadedLease.valid` stays what the write guards need: a read of two fields the renewal
thread writes (a bool and a float, atomic under the GIL), no call, no lock. When the thread
gives up (another holder, or no renewal within the deadline) ``valid()`` is already False;
:attr:`ThreadedLease.lost` is then set on the main loop, as soon as that loop runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Self, TypeVar

from callboard.kube.k8s.client import KubeApi
from callboard.kube.k8s.lease import LeaderLease
from callboard.kube.settings import LeaderSettings

__all__ = ["ThreadedLease"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds :meth:`ThreadedLease.__aexit__` waits for the thread: its last act is the release
#: (bounded to 2 s by :meth:`LeaderLease.release`) and closing its client.
STOP_TIMEOUT = 5.0


class ThreadedLease:
    """A :class:`LeaderLease` on a thread with its own event loop and API client.

    ``api`` builds the lease's client; it is called and opened on the thread, because an
    aiohttp session belongs to the loop it was made on. Use as an async context manager
    (starts and stops the thread), then :meth:`acquire`; renewals run until :meth:`release`
    or until the lease is lost (:attr:`lost`).
    """

    def __init__(self, api: Callable[[], KubeApi], settings: LeaderSettings, *, identity: str) -> None:
        self._make_api = api
        self._settings = settings
        self.identity = identity
        self.lost = asyncio.Event()
        """Set on the caller's loop once the renewal thread gave the lease up."""
        self._lease: LeaderLease | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._caller: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._keeping: asyncio.Task[None] | None = None
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def __aenter__(self) -> Self:
        self._caller = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="lease-renewal", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(self._ready)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._thread is None:
            return
        if self._alive() and self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed in the meantime
                self._loop.call_soon_threadsafe(self._stopping.set)
        await asyncio.to_thread(self._thread.join, STOP_TIMEOUT)
        if self._thread.is_alive():
            logger.warning("the lease renewal thread did not stop within %.0fs", STOP_TIMEOUT)

    # -- what the operator uses ------------------------------------------------------------

    @property
    def held(self) -> bool:
        return self._lease is not None and self._lease.held

    def valid(self) -> bool:
        """Whether this replica may still act (:meth:`LeaderLease.valid`): cheap, no call."""
        return self._lease is not None and self._lease.valid()

    @property
    def transitions(self) -> int:
        """The term's fencing token (:attr:`LeaderLease.transitions`)."""
        return 0 if self._lease is None else self._lease.transitions

    async def acquire(self) -> None:
        """Wait until this replica holds the lease; its renewals run from then on."""
        await self._call(self._acquire_and_keep)

    async def advance(self, at_least: int) -> int:
        """:meth:`LeaderLease.advance`, on the renewal thread (one writer of the Lease)."""
        return await self._call(lambda lease: lease.advance(at_least))

    async def release(self) -> None:
        """Stop renewing and hand the lease over at once (:meth:`LeaderLease.release`)."""
        if self._alive():
            await self._call(self._stop_and_release)

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the caller, or logged: never silent
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                logger.exception("the lease renewal thread failed")
                self._give_up()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        async with self._make_api() as api:
            self._lease = LeaderLease(api, self._settings, identity=self.identity)
            self._loop = asyncio.get_running_loop()
            self._ready.set_result(None)
            try:
                await self._stopping.wait()
            finally:
                await self._stop_and_release(self._lease)

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._loop is not None

    async def _call(self, work: Callable[[LeaderLease], Coroutine[Any, Any, T]]) -> T:
        assert self._loop is not None and self._lease is not None, "use ThreadedLease in `async with`"
        lease = self._lease
        future = asyncio.run_coroutine_threadsafe(work(lease), self._loop)
        return await asyncio.wrap_future(future)

    async def _acquire_and_keep(self, lease: LeaderLease) -> None:
        await lease.acquire()
        self._keeping = asyncio.create_task(self._keep(lease), name="lease-renewal")

    async def _keep(self, lease: LeaderLease) -> None:
        try:
            await lease.keep()
        except asyncio.CancelledError:
            raise  # released: not lost
        except Exception:
            logger.exception("renewing the leader lease failed: stepping down")
            lease.held = False
        self._give_up()

    async def _stop_and_release(self, lease: LeaderLease) -> None:
        keeping, self._keeping = self._keeping, None
        if keeping is not None:
            keeping.cancel()
            await asyncio.gather(keeping, return_exceptions=True)
        await lease.release()

    def _give_up(self) -> None:
        if self._caller is not None and not self._caller.is_closed():
            self._caller.call_soon_threadsafe(self.lost.set)
