"""SessionRegistry push.py: close requests, pushed and polled, over every backend.

Several registries sharing one backend play several nodes (see ``tests/integration/conftest.py``).
"""

from __future__ import annotations

import asyncio

from callboard.registry import CloseRequest
from tests.integration.conftest import Cluster


async def test_cross_node_close_is_pushed_and_polled(cluster: Cluster) -> None:
    a = await cluster.node("node-a")
    b = await cluster.node("node-b")
    await a.register("call-1", "sess-1")
    stream = a.close_requests()
    await b.request_close("call-1", "sess-1")
    if cluster.has_push:
        request = await asyncio.wait_for(stream.get(), 2)
        assert request == CloseRequest("call-1", "sess-1")
    assert await a.get_close_requests({"sess-1": "call-1", "other": "call-1"}) == ["sess-1"]
    await a.remove("call-1", "sess-1")
    assert await a.get_close_requests({"sess-1": "call-1"}) == []
    await stream.aclose()


async def test_close_of_local_session_needs_no_store(cluster: Cluster) -> None:
    a = await cluster.node("node-a")
    await a.register("call-1", "sess-1")
    async with a.close_requests() as stream:
        await a.request_close("call-1", "sess-1")
        assert await asyncio.wait_for(stream.get(), 1) == CloseRequest("call-1", "sess-1")
    assert await a.get_close_requests({"sess-1": "call-1"}) == ["sess-1"]
