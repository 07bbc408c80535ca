"""SessionRegistry start_requests.py: start requests, answers and batched progress, over every backend.

Several registries sharing one backend play several nodes (see ``tests/integration/conftest.py``).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from callboard import InvalidValueError
from callboard.registry import (
    RedisSessionKVStore,
    SessionRegistry,
    StartClaim,
    StartProgress,
    StartRef,
    StartRejection,
    StartRequest,
)
from tests.integration.conftest import Cluster
from tests.support.waiting import wait_until


async def test_start_request_accepted_through_the_registry(cluster: Cluster) -> None:
    node = await cluster.node("agent-node")
    operator = await cluster.node("operator")
    stream = node.start_requests()
    request = await operator.request_start("agent-node", "call-9", call_type="meeting", params={"lang": "fr"})
    if cluster.has_push:
        pushed = await asyncio.wait_for(stream.get(), 2)
        assert pushed == request
    assert await node.pending_start_requests() == [request]
    await node.register(request.call_id, request.session_id)
    await node.answer_start(request, accepted=True)
    result = await operator.get_start_result(request.request_id)
    assert result is not None and result.accepted and result.session_id == request.session_id
    assert await node.pending_start_requests() == []
    info = await operator.get("call-9", request.session_id)
    assert info is not None and info.node_id == "agent-node"
    await stream.aclose()


async def test_start_request_rejected_with_reason(cluster: Cluster) -> None:
    node = await cluster.node("agent-node")
    operator = await cluster.node("operator")
    request = await operator.request_start("agent-node", "call-9")
    [pending] = await node.pending_start_requests()
    await node.answer_start(pending, accepted=False, reason=StartRejection.CAPACITY)
    result = await operator.get_start_result(request.request_id)
    assert result is not None
    assert (result.accepted, result.reason, result.session_id) == (False, StartRejection.CAPACITY, None)
    assert await operator.get_for_call("call-9") == []


async def test_start_progress_reads_records_and_answers_of_many_starts_at_once(cluster: Cluster) -> None:
    node = await cluster.node("agent-node")
    operator = await cluster.node("operator")
    accepted = await operator.request_start("agent-node", "call-1")
    rejected = await operator.request_start("agent-node", "call-2")
    waiting = await operator.request_start("agent-node", "call-3")
    await node.register(accepted.call_id, accepted.session_id)
    await node.answer_start(accepted, accepted=True)
    await node.answer_start(rejected, accepted=False, reason="capacity")
    progress = await operator.get_start_progress(
        [
            StartRef(accepted.call_id, accepted.session_id, accepted.request_id),
            StartRef(rejected.call_id, rejected.session_id, rejected.request_id),
            StartRef(waiting.call_id, waiting.session_id, waiting.request_id),
            StartRef(accepted.call_id, accepted.session_id),  # no request id: the record only
        ]
    )
    live, refused, pending, by_record = progress
    assert live.live and live.session is not None and live.session.node_id == "agent-node"
    assert live.result is not None and live.result.accepted
    assert not refused.live and refused.result is not None
    assert (refused.result.accepted, refused.result.reason) == (False, "capacity")
    assert pending == StartProgress(live=False, session=None, result=None)
    assert by_record.live and by_record.result is None
    assert await operator.get_start_progress([]) == []


async def test_start_progress_counts_a_malformed_record_as_live(cluster: Cluster) -> None:
    operator = await cluster.node("operator")
    raw = await cluster.raw_store()
    await raw.set("sessions/call-1/s-1", b"not json", 30)
    await raw.set("start_results/r-1", b"[]", 30)
    [progress] = await operator.get_start_progress([StartRef("call-1", "s-1", "r-1")])
    assert progress == StartProgress(live=True, session=None, result=None)


# -- G7: expiry, one claim, withdrawal -------------------------------------------------------


async def test_g7_a_request_is_claimed_once_and_committed_by_its_claimant_only(cluster: Cluster) -> None:
    first = await cluster.node("agent-node")
    # A second process under the same node id: start() refuses it while the first listens
    # (G11), but a claim must not depend on that check: this one only connects its store.
    second = await cluster.node("agent-node", start=False)
    await second.store.start()
    cluster.raw_stores.append(second.store)  # closed by the fixture
    operator = await cluster.node("operator")
    request = await operator.request_start("agent-node", "call-1", expires_in=30)
    assert request.expires_at is not None and request.expires_at > request.requested_at
    assert await first.claim_start(request) is StartClaim.CLAIMED
    assert await first.claim_start(request) is StartClaim.CLAIMED  # a re-delivery, same claimant
    assert await second.claim_start(request) is StartClaim.TAKEN
    assert await second.commit_start(request) is StartClaim.TAKEN
    assert await first.commit_start(request) is StartClaim.STARTED
    assert await second.claim_start(request) is StartClaim.TAKEN
    assert await first.pending_start_requests() == []


async def test_g7_an_expired_request_cannot_be_claimed_or_committed(cluster: Cluster) -> None:
    node = await cluster.node("agent-node")
    operator = await cluster.node("operator")
    unclaimed = await operator.request_start("agent-node", "call-1", expires_in=0.2)
    claimed = await operator.request_start("agent-node", "call-2", expires_in=0.2)
    assert await node.claim_start(claimed) is StartClaim.CLAIMED

    async def gone() -> bool:
        return await node.pending_start_requests() == []

    assert await wait_until(gone, timeout=10.0, what="the expired requests to leave the pending list")
    assert await node.claim_start(unclaimed) is StartClaim.EXPIRED
    assert await node.commit_start(unclaimed) is StartClaim.EXPIRED
    assert await node.commit_start(claimed) is StartClaim.EXPIRED  # claimed in time, started too late


async def test_g7_a_withdrawn_request_cannot_be_claimed_or_started(cluster: Cluster) -> None:
    node = await cluster.node("agent-node")
    operator = await cluster.node("operator")
    never_seen = await operator.request_start("agent-node", "call-1")
    claimed = await operator.request_start("agent-node", "call-2")
    assert await node.claim_start(claimed) is StartClaim.CLAIMED
    assert await operator.withdraw_start(never_seen) is StartClaim.WITHDRAWN
    assert await operator.withdraw_start(claimed) is StartClaim.WITHDRAWN
    assert await node.pending_start_requests() == []
    assert await node.claim_start(never_seen) is StartClaim.WITHDRAWN
    # The node claimed it but had not started yet: it must not start now.
    assert await node.commit_start(claimed) is StartClaim.WITHDRAWN


async def test_g7_a_withdrawal_after_the_commit_says_the_session_starts(cluster: Cluster) -> None:
    node = await cluster.node("agent-node")
    operator = await cluster.node("operator")
    request = await operator.request_start("agent-node", "call-1")
    assert await node.commit_start(request) is StartClaim.STARTED  # unclaimed: claim + commit
    assert await operator.withdraw_start(request) is StartClaim.STARTED
    assert await node.commit_start(request) is StartClaim.STARTED


@pytest.mark.redis
async def test_g7_two_nodes_racing_for_one_request_have_exactly_one_winner(redis_url: str) -> None:
    nodes = [
        SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="agent-node", ttl=30) for _ in range(2)
    ]
    operator = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="operator", ttl=30)
    # The twin under the same node id only connects its store: start() would refuse it while
    # the first listens (G11), and the claim must hold even where that check cannot run.
    for registry in (nodes[0], operator):
        await registry.start()
    await nodes[1].store.start()
    try:
        wins: Counter[int] = Counter()
        for i in range(1000):
            request = await operator.request_start("agent-node", "call-1", expires_in=30)
            racers = nodes if i % 2 else nodes[::-1]  # either one sends its claim first
            claims = await asyncio.gather(*(n.claim_start(request) for n in racers))
            # The loser commits first now: it must still not start the request.
            commits = list(reversed(await asyncio.gather(*(n.commit_start(request) for n in racers[::-1]))))
            assert sorted(claims) == [StartClaim.CLAIMED, StartClaim.TAKEN]
            assert sorted(commits) == [StartClaim.STARTED, StartClaim.TAKEN]
            assert claims.index(StartClaim.CLAIMED) == commits.index(StartClaim.STARTED)
            wins[nodes.index(racers[claims.index(StartClaim.CLAIMED)])] += 1
        assert sum(wins.values()) == 1000
        print(f"1,000 races: wins per node {dict(wins)}, duplicates 0")
    finally:
        for registry in (nodes[0], operator):
            await registry.stop()
        await nodes[1].store.close()


@pytest.mark.redis
async def test_g7_start_requests_sent_while_the_subscriber_reconnects_are_reread_at_once(
    redis_url: str,
) -> None:
    node = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="agent-node", ttl=30)
    admin = RedisSessionKVStore(url=redis_url)
    stream = node.start_requests()
    await node.start()
    try:
        # A request whose push was lost while the subscriber was cut (written as the
        # documented key, without its notice); then the cut itself. redis-py reconnects and
        # resubscribes by itself inside its next read, without an error.
        request = StartRequest(request_id="r-lost", node_id="agent-node", call_id="call-1", session_id="s-1")
        await admin.set("start_requests/agent-node/r-lost", request.to_json(), 30)
        killed = await admin.client.client_kill_filter(_type="pubsub")
        assert killed >= 1
        received = await asyncio.wait_for(stream.get(), 15)  # a bare registry runs no poll cycle
        assert received == request
    finally:
        await stream.aclose()
        await node.stop()
        await admin.close()


@pytest.mark.parametrize(
    "params",
    [{"x": float("nan")}, {"x": object()}, {"blob": "x" * 70_000}],
    ids=["nan", "not-json", "too-big"],
)
async def test_g12_start_request_params_out_of_bounds_are_refused(
    cluster: Cluster, params: dict[str, object]
) -> None:
    a = await cluster.node("node-a")
    b = await cluster.node("node-b")
    with pytest.raises(InvalidValueError, match="params"):
        await a.request_start("node-b", "call-1", params=params)
    assert await b.pending_start_requests() == []
