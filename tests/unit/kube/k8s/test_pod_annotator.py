"""Pod annotations: what they say, and when they are written."""

from __future__ import annotations

from callboard.kube.k8s.pod_annotator import PodAnnotator, annotations_for, labels_for
from callboard.kube.resource.constants import (
    BUSY_LABEL,
    DO_NOT_DISRUPT,
    POD_DELETION_COST,
    POOL_LABEL,
    SAFE_TO_EVICT,
)
from tests.support.fake_kube import FakeKube

AGENT = {POOL_LABEL: "voice"}


def test_annotation_values() -> None:
    assert annotations_for(3) == {POD_DELETION_COST: "3", SAFE_TO_EVICT: "false", DO_NOT_DISRUPT: "true"}
    assert annotations_for(0) == {POD_DELETION_COST: "0", SAFE_TO_EVICT: None, DO_NOT_DISRUPT: None}


def test_g9_a_busy_pod_carries_the_label_its_pdb_selects() -> None:
    assert labels_for(1) == {BUSY_LABEL: "true"}
    assert labels_for(0) == {BUSY_LABEL: None}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_patches_only_changes_and_at_most_once_per_interval() -> None:
    api, clock = FakeKube(), Clock()
    api.add_pod("p1", "ns", labels=AGENT)
    api.add_pod("p2", "ns", labels=AGENT)
    pods = PodAnnotator(api, min_interval=5.0, clock=clock)
    assert await pods.update({("ns", "p1"): 2, ("ns", "p2"): 0}) == 2
    assert await pods.update({("ns", "p1"): 2, ("ns", "p2"): 0}) == 0  # unchanged
    clock.now += 1
    assert await pods.update({("ns", "p1"): 3, ("ns", "p2"): 0}) == 0  # changed, but too soon
    clock.now += 5
    assert await pods.update({("ns", "p1"): 3, ("ns", "p2"): 0}) == 1  # the latest count, once due
    method, path, body = api.calls[-1]
    assert method == "PATCH"
    assert path == "/api/v1/namespaces/ns/pods/p1"
    assert body == {
        "metadata": {
            "annotations": {POD_DELETION_COST: "3", SAFE_TO_EVICT: "false", DO_NOT_DISRUPT: "true"},
            "labels": {BUSY_LABEL: "true"},
        }
    }


async def test_missing_pods_are_left_alone_for_a_while() -> None:
    api, clock = FakeKube(), Clock()  # no pod named gone
    pods = PodAnnotator(api, min_interval=0.0, clock=clock)
    assert await pods.update({("ns", "gone"): 1}) == 0
    assert pods.due({("ns", "gone"): 1}) == {}
    clock.now += 61
    assert pods.due({("ns", "gone"): 1}) == {("ns", "gone"): 1}


async def test_g11_pods_outside_the_managed_namespaces_are_never_patched() -> None:
    api, clock = FakeKube(), Clock()
    api.add_pod("agent-0", "ns", labels=AGENT)
    api.add_pod("agent-1", "elsewhere", labels=AGENT)
    pods = PodAnnotator(api, min_interval=0.0, clock=clock, namespaces=("ns",))
    counts = {("ns", "agent-0"): 2, ("elsewhere", "agent-1"): 1}
    assert await pods.update(counts) == 1
    assert [path for method, path, _ in api.calls if method == "PATCH"] == [
        "/api/v1/namespaces/ns/pods/agent-0"
    ]
    assert ("GET", "/api/v1/namespaces/elsewhere/pods/agent-1", None) not in api.calls  # not even read
    clock.now += 61  # checked again later, still refused
    assert await pods.update(counts) == 0
    assert api.pods[("elsewhere", "agent-1")]["metadata"]["annotations"] == {}


async def test_g9_a_pod_that_turns_busy_is_protected_at_once_whatever_the_interval() -> None:
    api, clock = FakeKube(), Clock()
    api.add_pod("p1", "ns", labels=AGENT)
    pods = PodAnnotator(api, min_interval=60.0, clock=clock)
    assert await pods.update({("ns", "p1"): 0}) == 1
    clock.now += 1
    assert pods.due({("ns", "p1"): 1}) == {("ns", "p1"): 1}  # 0 -> busy: not held by the interval
    assert await pods.update({("ns", "p1"): 1}) == 1
    assert api.calls[-1][2]["metadata"]["annotations"][POD_DELETION_COST] == "1"
    assert api.calls[-1][2]["metadata"]["labels"] == {BUSY_LABEL: "true"}


async def test_g9_a_busy_pod_s_cost_is_never_lowered_while_it_stays_busy() -> None:
    api, clock = FakeKube(), Clock()
    api.add_pod("p1", "ns", labels=AGENT)
    pods = PodAnnotator(api, min_interval=5.0, clock=clock)
    assert await pods.update({("ns", "p1"): 5}) == 1
    clock.now += 100
    assert pods.due({("ns", "p1"): 2}) == {}  # still busy: the cost stays 5
    assert await pods.update({("ns", "p1"): 2}) == 0
    assert await pods.update({("ns", "p1"): 1}) == 0
    assert await pods.update({("ns", "p1"): 0}) == 1  # idle: now it may fall
    assert api.calls[-1][2]["metadata"]["annotations"][POD_DELETION_COST] == "0"
    assert await pods.update({("ns", "p1"): 3}) == 1  # busy again, at once


async def test_g11_a_node_record_naming_a_pod_outside_the_pool_does_not_get_it_patched() -> None:
    """Whatever a (forged) node record says, only pods labelled with its pool are touched."""
    api, clock = FakeKube(), Clock()
    api.add_pod("agent-0", "ns", labels=AGENT)
    api.add_pod("database-0", "ns", labels={"app": "postgres"})  # not an agent pod
    api.add_pod("gpu-agent-0", "ns", labels={POOL_LABEL: "gpu"})  # another pool's agent
    pods = PodAnnotator(api, min_interval=0.0, clock=clock)
    counts = {("ns", "agent-0"): 1, ("ns", "database-0"): 3, ("ns", "gpu-agent-0"): 2}
    pools = {("ns", "agent-0"): "voice", ("ns", "database-0"): "voice", ("ns", "gpu-agent-0"): "voice"}
    assert await pods.update(counts, pools=pools) == 1
    patched = [path for method, path, _ in api.calls if method == "PATCH"]
    assert patched == ["/api/v1/namespaces/ns/pods/agent-0"]
    assert api.pods[("ns", "database-0")]["metadata"]["annotations"] == {}
    assert api.pods[("ns", "gpu-agent-0")]["metadata"]["annotations"] == {}
    clock.now += 61  # checked again later, still refused
    counts[("ns", "agent-0")] = 2
    assert await pods.update(counts, pools=pools) == 1
    assert [path for method, path, _ in api.calls if method == "PATCH"][1:] == patched
    # A record without a pool still needs the pool label on the pod.
    bare_api = FakeKube()
    bare_api.add_pod("database-0", "ns", labels={"app": "postgres"})
    bare = PodAnnotator(bare_api, min_interval=0.0, clock=clock)
    assert await bare.update({("ns", "database-0"): 1}) == 0


async def test_an_agent_pod_is_read_once_then_remembered() -> None:
    api, clock = FakeKube(), Clock()
    api.add_pod("agent-0", "ns", labels=AGENT)
    pods = PodAnnotator(api, min_interval=0.0, clock=clock)
    for count in (1, 2, 3):
        assert await pods.update({("ns", "agent-0"): count}, pools={("ns", "agent-0"): "voice"}) == 1
    assert [method for method, _, _ in api.calls] == ["GET", "PATCH", "PATCH", "PATCH"]
    # The record now names another pool: checked again, and refused.
    assert await pods.update({("ns", "agent-0"): 4}, pools={("ns", "agent-0"): "gpu"}) == 0
    assert [method for method, _, _ in api.calls][-1] == "GET"
