"""SessionRegistry fencing.py: a deposed operator leader's start and close requests are
refused by the nodes, over every backend (G8).

Several registries sharing one backend play the nodes and two operator replicas (see
``tests/integration/conftest.py``); the fencing tokens are the replicas' leadership terms.
"""

from __future__ import annotations

import asyncio

import pytest

from callboard import DeposedLeaderError
from callboard.registry import SessionRegistry, StartClaim, StartRejection
from tests.integration.conftest import Cluster

OLD_TERM, NEW_TERM = 3, 4


async def test_g8_the_fence_only_ever_rises(cluster: Cluster) -> None:
    old, new = await cluster.node("op-old"), await cluster.node("op-new")
    assert await old.get_fence() is None
    assert await old.raise_fence(OLD_TERM) == OLD_TERM
    assert await new.raise_fence(NEW_TERM) == NEW_TERM
    with pytest.raises(DeposedLeaderError) as refused:  # the deposed leader's late raise
        await old.raise_fence(OLD_TERM)
    assert (refused.value.token, refused.value.fence) == (OLD_TERM, NEW_TERM)
    assert await old.get_fence() == NEW_TERM
    assert await new.raise_fence(NEW_TERM) == NEW_TERM  # the leader's periodic re-raise


async def test_g8_an_old_term_start_request_is_refused_once_a_new_term_raised_the_fence(
    cluster: Cluster,
) -> None:
    node = await cluster.node("agent-node")
    old, new = await cluster.node("op-old"), await cluster.node("op-new")
    await old.raise_fence(OLD_TERM)
    request = await old.request_start("agent-node", "call-1", fencing_token=OLD_TERM)
    [pending] = await node.pending_start_requests()
    assert pending.fencing_token == OLD_TERM
    await new.raise_fence(NEW_TERM)
    assert await node.claim_start(pending) is StartClaim.FENCED
    assert await node.commit_start(pending) is StartClaim.FENCED  # dead for every claimant
    assert await node.pending_start_requests() == []
    result = await old.get_start_result(request.request_id)
    assert result is not None and not result.accepted and result.session_id is None
    assert result.reason is not None and result.reason.startswith(f"{StartRejection.FENCED}: ")
    assert "deposed leader" in result.reason
    assert await new.get_for_call("call-1") == []
    # The new leader's own request goes through.
    fresh = await new.request_start("agent-node", "call-1", fencing_token=NEW_TERM)
    assert await node.claim_start(fresh) is StartClaim.CLAIMED
    assert await node.commit_start(fresh) is StartClaim.STARTED


async def test_g8_a_start_claimed_in_the_old_term_is_fenced_at_its_commit(cluster: Cluster) -> None:
    node = await cluster.node("agent-node")
    old, new = await cluster.node("op-old"), await cluster.node("op-new")
    await old.raise_fence(OLD_TERM)
    request = await old.request_start("agent-node", "call-1", fencing_token=OLD_TERM)
    assert await node.claim_start(request) is StartClaim.CLAIMED  # while the old term led
    await new.raise_fence(NEW_TERM)  # a new leader took over while the app prepared
    assert await node.commit_start(request) is StartClaim.FENCED
    result = await old.get_start_result(request.request_id)
    assert result is not None and not result.accepted
    assert result.reason is not None and result.reason.startswith(StartRejection.FENCED)


async def test_g8_a_start_committed_before_the_new_fence_still_starts(cluster: Cluster) -> None:
    node = await cluster.node("agent-node")
    old, new = await cluster.node("op-old"), await cluster.node("op-new")
    await old.raise_fence(OLD_TERM)
    request = await old.request_start("agent-node", "call-1", fencing_token=OLD_TERM)
    assert await node.commit_start(request) is StartClaim.STARTED
    await new.raise_fence(NEW_TERM)
    assert await node.commit_start(request) is StartClaim.STARTED  # past the point of no return


async def test_g8_a_start_request_without_a_token_is_accepted_as_before(cluster: Cluster) -> None:
    node = await cluster.node("agent-node")
    requester = await cluster.node("cli")
    await requester.raise_fence(NEW_TERM)
    request = await requester.request_start("agent-node", "call-1")  # a Vision Agents tool, the CLI
    assert request.fencing_token is None
    assert await node.claim_start(request) is StartClaim.CLAIMED
    assert await node.commit_start(request) is StartClaim.STARTED


async def _running(cluster: Cluster, node_id: str, call_id: str, session_id: str) -> SessionRegistry:
    node = await cluster.node(node_id)
    await node.register(call_id, session_id)
    return node


async def test_g8_an_old_term_close_is_neither_written_nor_pushed(cluster: Cluster) -> None:
    node = await _running(cluster, "agent-node", "call-1", "s-1")
    old, new = await cluster.node("op-old"), await cluster.node("op-new")
    stream = node.close_requests()
    await old.raise_fence(OLD_TERM)
    await new.raise_fence(NEW_TERM)
    with pytest.raises(DeposedLeaderError) as refused:
        await old.request_close("call-1", "s-1", fencing_token=OLD_TERM)
    assert (refused.value.token, refused.value.fence) == (OLD_TERM, NEW_TERM)
    assert await node.get_close_requests({"s-1": "call-1"}) == []
    if cluster.has_push:  # nothing pushed: the new leader's close arrives first and alone
        await new.request_close("call-1", "s-1", fencing_token=NEW_TERM)
        first = await asyncio.wait_for(stream.get(), 2)
        assert (first.call_id, first.session_id) == ("call-1", "s-1")
        assert stream.pending() == 0
    await stream.aclose()


async def test_g8_a_close_flag_of_the_old_term_is_ignored_after_the_new_fence(cluster: Cluster) -> None:
    node = await _running(cluster, "agent-node", "call-1", "s-1")
    old, new = await cluster.node("op-old"), await cluster.node("op-new")
    await old.raise_fence(OLD_TERM)
    await old.request_close("call-1", "s-1", fencing_token=OLD_TERM)  # in its term
    assert await node.get_close_requests({"s-1": "call-1"}) == ["s-1"]
    await new.raise_fence(NEW_TERM)  # then deposed before the node polled it
    assert await node.get_close_requests({"s-1": "call-1"}) == []
    await new.request_close("call-1", "s-1", fencing_token=NEW_TERM)  # what the leader still wants
    assert await node.get_close_requests({"s-1": "call-1"}) == ["s-1"]


async def test_g8_a_close_without_a_token_is_accepted_and_the_flag_stays_documented(
    cluster: Cluster,
) -> None:
    node = await _running(cluster, "agent-node", "call-1", "s-1")
    cli, leader = await cluster.node("cli"), await cluster.node("op-new")
    await leader.raise_fence(NEW_TERM)
    await cli.request_close("call-1", "s-1")
    assert await node.get_close_requests({"s-1": "call-1"}) == ["s-1"]
    raw = await cluster.raw_store()  # what a Vision Agents node reads: the empty flag
    assert await raw.get("close_requests/call-1/s-1") == b""


async def test_g8_a_vision_agents_node_still_sees_the_leaders_close_flag(cluster: Cluster) -> None:
    await _running(cluster, "agent-node", "call-1", "s-1")
    leader = await cluster.node("op-new")
    await leader.raise_fence(NEW_TERM)
    await leader.request_close("call-1", "s-1", fencing_token=NEW_TERM)
    raw = await cluster.raw_store()  # Vision Agents tests only that the flag exists
    assert await raw.mget(["close_requests/call-1/s-1"]) != [None]
