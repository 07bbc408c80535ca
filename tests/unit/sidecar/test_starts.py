"""sidecar/starts.py: the start requests a sidecar holds from their arrival to the app's answer.

A real registry on the in-memory store: the requester (``operator``) and this node
(``node-a``) share it, as they share Redis in a cluster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from callboard.errors import StoreUnavailableError
from callboard.registry import InMemorySessionKVStore, SessionRegistry, StartRequest
from callboard.sidecar.starts import StartDesk, start_data


@dataclass
class Desk:
    desk: StartDesk
    node: SessionRegistry
    operator: SessionRegistry
    store: InMemorySessionKVStore


@pytest.fixture
async def local() -> AsyncIterator[Desk]:
    store = InMemorySessionKVStore()
    node = SessionRegistry(store, node_id="node-a", ttl=30)
    operator = SessionRegistry(store, node_id="operator", ttl=30)
    await node.start()
    await operator.start()
    try:
        yield Desk(StartDesk(node, log_extra={"node_id": "node-a"}), node, operator, store)
    finally:
        await operator.stop()
        await node.stop()


def _request(request_id: str, requested_at: float, expires_at: float | None = None) -> StartRequest:
    return StartRequest(
        request_id=request_id,
        node_id="node-a",
        call_id="call-1",
        session_id=f"s-{request_id}",
        requested_at=requested_at,
        expires_at=expires_at,
    )


def test_the_start_requested_event_carries_what_the_app_needs() -> None:
    request = StartRequest(
        request_id="r-1",
        node_id="node-a",
        call_id="call-1",
        session_id="s-1",
        call_type="sip",
        params={"lang": "fi"},
        requested_at=100.0,
        expires_at=130.0,
    )
    assert start_data(request) == {
        "request_id": "r-1",
        "call_id": "call-1",
        "session_id": "s-1",
        "call_type": "sip",
        "params": {"lang": "fi"},
        "requested_at": 100.0,
        "expires_at": 130.0,
    }


async def test_a_re_delivered_request_is_held_once_and_pending_is_oldest_first(local: Desk) -> None:
    newer, older = _request("r-2", 200.0), _request("r-1", 100.0)
    assert local.desk.hold(newer)
    assert local.desk.hold(older)
    assert not local.desk.hold(newer)
    assert len(local.desk) == 2
    assert [r.request_id for r in local.desk.pending()] == ["r-1", "r-2"]
    local.desk.drop("r-2")
    local.desk.drop("r-unknown")  # dropping what is not held is nothing
    assert [r.request_id for r in local.desk.pending()] == ["r-1"]


async def test_expire_forgets_requests_past_their_expiry_or_past_one_ttl_without_one(local: Desk) -> None:
    local.desk.hold(_request("explicit", requested_at=0.0, expires_at=50.0))
    local.desk.hold(_request("implicit", requested_at=0.0))  # lives requested_at + ttl
    local.desk.expire(49.9, ttl=60.0)
    assert len(local.desk) == 2
    local.desk.expire(50.0, ttl=60.0)
    assert [r.request_id for r in local.desk.pending()] == ["implicit"]
    local.desk.expire(60.0, ttl=60.0)
    assert len(local.desk) == 0


async def test_lookup_finds_a_request_this_process_never_saw_in_the_store(local: Desk) -> None:
    sent = await local.operator.request_start("node-a", "call-1", session_id="s-1")
    assert await local.desk.lookup(sent.request_id, connected=True) == sent
    # Without a store connection only what is held counts.
    assert await local.desk.lookup(sent.request_id, connected=False) is None
    local.desk.hold(sent)
    assert await local.desk.lookup(sent.request_id, connected=False) == sent
    assert await local.desk.lookup("r-unknown", connected=True) is None


async def test_an_answer_reaches_the_requester_and_the_request_is_no_longer_held(local: Desk) -> None:
    sent = await local.operator.request_start("node-a", "call-1", session_id="s-1")
    local.desk.hold(sent)
    await local.desk.answer(sent, accepted=False, reason="capacity")
    assert len(local.desk) == 0
    result = await local.operator.get_start_result(sent.request_id)
    assert result is not None
    assert (result.accepted, result.reason, result.node_id) == (False, "capacity", "node-a")


async def test_draining_rejects_every_held_request(local: Desk) -> None:
    sent = [await local.operator.request_start("node-a", "call-1", session_id=f"s-{i}") for i in range(3)]
    for request in sent:
        local.desk.hold(request)
    await local.desk.reject_all("draining")
    assert len(local.desk) == 0
    for request in sent:
        result = await local.operator.get_start_result(request.request_id)
        assert result is not None
        assert (result.accepted, result.reason) == (False, "draining")


async def test_draining_goes_on_when_the_store_cannot_take_an_answer(
    local: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    for request in (_request("r-1", 1.0), _request("r-2", 2.0)):
        local.desk.hold(request)

    async def unavailable(*args: object, **kwargs: object) -> None:
        raise StoreUnavailableError("redis is away")

    monkeypatch.setattr(local.store, "set", unavailable)
    await local.desk.reject_all("draining")  # no exception: the requesters time out instead
    assert len(local.desk) == 0
    monkeypatch.undo()
    assert [await local.operator.get_start_result(r) for r in ("r-1", "r-2")] == [None, None]
