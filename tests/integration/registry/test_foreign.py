"""SessionRegistry foreign.py: sessions of Vision Agents nodes (no indexes) sharing the store.

Several registries sharing one backend play several nodes (see ``tests/integration/conftest.py``).
"""

from __future__ import annotations

import json

from tests.integration.conftest import Cluster


async def test_foreign_node_interop(cluster: Cluster) -> None:
    """A node that only knows the documented layout (a Vision Agents node) and us."""
    ours = await cluster.node("callboard-node")
    foreign = await cluster.raw_store()
    # The foreign node registers a session by writing the documented key directly.
    record = {
        "session_id": "va-sess",
        "call_id": "call-1",
        "node_id": "va-node",
        "started_at": 1.0,
        "metrics_updated_at": 1.0,
        "metrics": {},
        "some_future_field": True,
    }
    await foreign.set("sessions/call-1/va-sess", json.dumps(record).encode(), 5)
    # We list it at once and, after the foreign scan, find it by call.
    assert [s.session_id for s in await ours.list_sessions()] == ["va-sess"]
    got = await ours.get("call-1", "va-sess")
    assert got is not None and got.node_id == "va-node"
    await ours.index_foreign_sessions()
    assert [s.session_id for s in await ours.get_for_call("call-1")] == ["va-sess"]
    # We close it the documented way: the foreign node polls the flag.
    await ours.request_close("call-1", "va-sess")
    assert await foreign.get("close_requests/call-1/va-sess") == b""
    # The foreign node sees our sessions and can close them by flag.
    await ours.register("call-1", "cb-sess")
    raw = await foreign.get("sessions/call-1/cb-sess")
    assert raw is not None
    decoded = json.loads(raw)
    assert set(decoded) == {"session_id", "call_id", "node_id", "started_at", "metrics_updated_at", "metrics"}
    assert decoded["node_id"] == "callboard-node"
    await foreign.set("close_requests/call-1/cb-sess", b"", 5)
    assert await ours.get_close_requests({"cb-sess": "call-1"}) == ["cb-sess"]
    # And it finds our sessions the documented way: by key prefix.
    assert sorted(await foreign.keys("sessions/call-1/")) == [
        "sessions/call-1/cb-sess",
        "sessions/call-1/va-sess",
    ]
