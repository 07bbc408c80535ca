"""The work queue and pulse primitives of the operator's loops."""

from __future__ import annotations

import asyncio

from callboard._aio import Pulse, WorkQueue


async def test_work_queue_dedupes_and_requeues_keys_added_while_processing() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    q.add("a")
    assert len(q) == 1
    key = await q.get()
    assert q.busy("a")
    q.add("a")  # changed while a worker holds it
    assert len(q) == 0
    q.done(key)
    assert len(q) == 1 and await q.get() == "a"
    q.done("a")
    assert not q.busy("a")


async def test_pulse_wakes_current_waiters() -> None:
    pulse = Pulse()
    waiter = asyncio.create_task(pulse.wait(5.0))
    await asyncio.sleep(0)
    pulse.fire()
    assert await waiter is True
    assert await pulse.wait(0.01) is False
