"""SessionRegistry start_requests.py: start requests, answers and batched progress, over every backend.

Several registries sharing one backend play several nodes (see ``tests/integration/conftest.py``).
"""

from __future__ import annotations

import asyncio

import pytest

from callboard import InvalidValueError
from callboard.registry import StartProgress, StartRef, StartRejection
from tests.integration.conftest import Cluster


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
