"""The registry snapshot of one sync cycle (pure)."""

from __future__ import annotations

from callboard.kube.views.registry_snapshot import Snapshot
from callboard.registry import NodeInfo, SessionInfo


def _sessions() -> list[SessionInfo]:
    return [SessionInfo("s-1", "call-1", "n1", 1.0), SessionInfo("s-2", "call-1", "n2", 2.0)]


def test_a_snapshot_of_the_same_session_list_keeps_the_last_ones_maps_and_reads_the_nodes_again() -> None:
    sessions = _sessions()
    first = Snapshot.build([NodeInfo("n1"), NodeInfo("n2")], sessions, now=10.0)
    second = Snapshot.build(
        [NodeInfo("n1", capacity=3)], sessions, now=11.0, drain_marked=["n1"], previous=first
    )
    assert second.sessions is first.sessions and second.per_call is first.per_call
    assert second.per_node == first.per_node and second.per_node is not first.per_node
    assert second.taken_at == 11.0
    assert list(second.nodes) == ["n1"] and second.nodes["n1"].draining and second.nodes["n1"].capacity == 3


def test_a_snapshot_of_another_session_list_is_built_from_it() -> None:
    first = Snapshot.build([NodeInfo("n1")], _sessions(), now=10.0)
    changed = [*_sessions()[:1], SessionInfo("s-3", "call-2", "n1", 3.0)]
    second = Snapshot.build([NodeInfo("n1")], changed, now=11.0, previous=first)
    assert sorted(second.sessions) == [("call-1", "s-1"), ("call-2", "s-3")]
    assert second.per_node == {"n1": 2}
    assert [s.session_id for s in second.of_call("call-1")] == ["s-1"]
