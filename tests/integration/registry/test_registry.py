"""SessionRegistry registry.py: the SessionRegistry lifecycle, over every backend.

Several registries sharing one backend play several nodes (see ``tests/integration/conftest.py``).
"""

from __future__ import annotations

import pytest

from callboard.registry import SessionRegistry
from tests.integration.conftest import Cluster


async def test_stop_removes_node_record(cluster: Cluster) -> None:
    a = await cluster.node("node-a")
    b = await cluster.node("node-b")
    await a.stop()
    assert [n.node_id for n in await b.list_nodes()] == ["node-b"]


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="ttl must be > 0"):
        SessionRegistry(ttl=0)
    with pytest.raises(ValueError, match="node_id"):
        SessionRegistry(node_id="bad/id")
    assert SessionRegistry().node_id
