"""Choosing a node: candidates, packed and spread, and the one-line explanation."""

from __future__ import annotations

from collections import Counter

import pytest

from callboard.kube.placing.policy import (
    Candidate,
    Strategy,
    Verdict,
    candidates,
    choose,
    explain,
    needs_placement,
    share_free_slots,
    spec_problem,
)
from callboard.kube.resource.constants import FINALIZER
from callboard.kube.resource.objects import AgentSessionObject
from callboard.kube.views.registry_snapshot import Snapshot
from callboard.registry import NodeInfo

NOW = 1_000_000.0


def node(node_id: str, *, capacity: int | None = 4, active: int = 0, **kw: object) -> NodeInfo:
    kw.setdefault("heartbeat_at", NOW - 1)
    return NodeInfo(node_id=node_id, capacity=capacity, active=active, **kw)  # type: ignore[arg-type]


def pick(nodes: list[NodeInfo], strategy: Strategy = Strategy.PACKED, **kw: object) -> str | None:
    found, _ = candidates(
        nodes,
        load=kw.pop("load", {}),  # type: ignore[arg-type]
        pool=kw.pop("pool", None),  # type: ignore[arg-type]
        now=NOW,
        freshness=15.0,
        exclude=kw.pop("exclude", ()),  # type: ignore[arg-type]
    )
    chosen = choose(found, strategy)
    return None if chosen is None else chosen.node_id


def test_packed_fills_the_fullest_node_with_room() -> None:
    nodes = [node("a", active=1), node("b", active=3), node("c", active=4)]
    assert pick(nodes) == "b"


def test_spread_takes_the_emptiest_node() -> None:
    nodes = [node("a", active=1), node("b", active=3), node("c", active=0, capacity=2)]
    assert pick(nodes, Strategy.SPREAD) == "a"  # 3 free beats 2 free


def test_unlimited_nodes_come_last_when_packing_and_first_when_spreading() -> None:
    nodes = [node("limited", active=1), node("unlimited", capacity=None, active=9)]
    assert pick(nodes) == "limited"
    assert pick(nodes, Strategy.SPREAD) == "unlimited"


def test_packed_among_unlimited_prefers_the_busiest() -> None:
    nodes = [node("u1", capacity=None, active=2), node("u2", capacity=None, active=5)]
    assert pick(nodes) == "u2"


def test_ties_break_on_node_id() -> None:
    assert pick([node("b"), node("a")]) == "a"
    assert pick([node("b"), node("a")], Strategy.SPREAD) == "a"


def test_load_counts_registered_sessions_and_starts_in_flight() -> None:
    # The heartbeat says 1, the registry lists 4 on a capacity-4 node: full.
    nodes = [node("a", active=1), node("b", active=0)]
    assert pick(nodes, load={"a": 4}) == "b"
    assert pick(nodes, load={"a": 4, "b": 4}) is None


@pytest.mark.parametrize(
    ("bad", "verdict"),
    [
        (node("x", heartbeat_at=NOW - 60), Verdict.STALE),
        (node("x", draining=True), Verdict.DRAINING),
        (node("x", active=4), Verdict.FULL),
        (node("x", pool="gpu"), Verdict.OTHER_POOL),
    ],
)
def test_unfit_nodes_are_skipped_with_their_verdict(bad: NodeInfo, verdict: Verdict) -> None:
    found, tally = candidates(
        [bad], load={}, pool="cpu" if verdict is Verdict.OTHER_POOL else None, now=NOW, freshness=15.0
    )
    assert found == []
    assert tally == Counter({verdict: 1})


def test_g9_a_node_the_autoscaler_marked_draining_is_no_candidate() -> None:
    snap = Snapshot.build([node("a", active=3), node("b", active=1)], [], now=NOW, drain_marked={"a"})
    found, tally = candidates(snap.nodes.values(), load={}, pool=None, now=NOW, freshness=15.0)
    assert [c.node_id for c in found] == ["b"] and tally[Verdict.DRAINING] == 1
    assert snap.drain_marked == {"a"}
    # A waiting object is not woken for a marked node: it is not in the capacity signature.
    assert {n for n, _, _ in snap.capacity_signature(freshness=15.0)} == {"b"}


def test_pool_filter_and_any_pool() -> None:
    nodes = [node("a", pool="gpu"), node("b", pool=None)]
    assert pick(nodes, pool="gpu") == "a"
    assert pick(nodes, pool="cpu") is None
    assert pick(nodes, pool=None) == "a"  # no pool requested: any node


def test_excluded_nodes_are_not_retried() -> None:
    assert pick([node("a"), node("b")], exclude={"a"}) == "b"
    assert pick([node("a")], exclude={"a"}) is None


def test_choose_nothing() -> None:
    assert choose([], Strategy.PACKED) is None
    assert choose([Candidate("a", 0, 1)], Strategy.SPREAD) == Candidate("a", 0, 1)


def test_explain() -> None:
    assert explain(Counter(), pool=None) == "no agent node is registered (any pool)"
    assert explain(Counter({Verdict.OTHER_POOL: 2}), pool="gpu") == "no agent node is in pool 'gpu'"
    text = explain(Counter({Verdict.FULL: 2, Verdict.DRAINING: 1, Verdict.OTHER_POOL: 3}), pool="gpu")
    assert text == "no agent node in pool 'gpu' can take a session: draining, full"


def test_explain_is_stable_while_only_the_counts_change() -> None:
    # Each change of the line rewrites every Pending object: sessions that start or end on
    # full nodes must not change it.
    before = explain(Counter({Verdict.FULL: 2, Verdict.STALE: 1}), pool=None)
    after = explain(Counter({Verdict.FULL: 7, Verdict.STALE: 3, Verdict.OTHER_POOL: 4}), pool=None)
    assert before == after


def test_share_free_slots_places_only_what_fits() -> None:
    free = [("gpu", 1), ("cpu", 2), ("cpu", 0)]
    assert share_free_slots(free, ["gpu", "gpu", "cpu", None, "cpu"]) == [True, False, True, True, False]
    assert share_free_slots([("cpu", None)], ["cpu"] * 5) == [True] * 5  # no limit
    assert share_free_slots([], [None]) == [False]


def agent_session(*, phase: str | None = None, finalizer: bool = True, **meta: object) -> AgentSessionObject:
    return AgentSessionObject.from_body(
        {
            "metadata": {
                "namespace": "ns",
                "name": "a1",
                "uid": "u1",
                "finalizers": [FINALIZER] if finalizer else [],
                **meta,
            },
            "spec": {"callId": "call-1"},
            "status": {"phase": phase} if phase else {},
        }
    )


@pytest.mark.parametrize("phase", [None, "Pending", "Scheduled"])
def test_objects_not_yet_running_need_placement(phase: str | None) -> None:
    assert needs_placement(agent_session(phase=phase))


@pytest.mark.parametrize("phase", ["Running", "Closing", "Lost", "Succeeded", "Failed"])
def test_objects_past_placement_do_not(phase: str) -> None:
    assert not needs_placement(agent_session(phase=phase))


def test_objects_being_deleted_are_not_placed_and_the_finalizer_is_not_waited_for() -> None:
    assert needs_placement(agent_session(finalizer=False))  # it follows the first status write
    assert not needs_placement(agent_session(deletionTimestamp="2026-01-01T00:00:00Z"))


def test_a_spec_the_registry_would_refuse_is_named() -> None:
    assert spec_problem(agent_session()) is None
    bad = AgentSessionObject.from_body({"metadata": {"name": "a1"}, "spec": {"callId": "bad id!"}})
    problem = spec_problem(bad)
    assert problem is not None
    assert "spec.callId" in problem
