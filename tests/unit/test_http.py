"""Request limits every HTTP entry point shares: bounded bodies, finite JSON numbers (G12)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from callboard._http import DEFAULT_MAX_BODY_BYTES, NotFiniteError, finite_json

# The two fixtures, imported so this module (of callboard/_http.py) reaches both apps.
from tests.unit.server.conftest import MakeNode
from tests.unit.server.conftest import make_node as make_node
from tests.unit.sidecar.conftest import Local
from tests.unit.sidecar.conftest import local as local

NOT_FINITE = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400"]


def test_finite_json_refuses_what_is_not_json() -> None:
    assert finite_json(b'{"a": [1.5, 2, "NaN"]}') == {"a": [1.5, 2, "NaN"]}
    for number in NOT_FINITE:
        with pytest.raises(NotFiniteError):
            finite_json(b'{"a": ' + number + b"}")


@pytest.mark.parametrize("number", NOT_FINITE)
async def test_g12_sidecar_refuses_non_finite_numbers(local: Local, number: bytes) -> None:
    body = b'{"call_id": "c", "session_id": "s", "metrics": {"latency": ' + number + b"}}"
    response = await local.http.post(
        "/v1/sessions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "RequestRejected" and "finite" in response.json()["detail"]
    assert local.service.sessions() == []
    untyped = await local.http.post("/v1/sessions", content=body)  # FastAPI reads it as JSON too
    assert untyped.status_code == 422 and local.service.sessions() == []
    started = b'{"call_id": "c", "session_id": "s", "restore": true, "started_at": ' + number + b"}"
    response = await local.http.post(
        "/v1/sessions", content=started, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


@pytest.mark.parametrize("number", NOT_FINITE)
async def test_g12_node_api_refuses_non_finite_numbers(make_node: MakeNode, number: bytes) -> None:
    a = await make_node()
    body = b'{"call_type": "default", "x": ' + number + b"}"
    response = await a.client.post(
        "/calls/c-1/sessions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and "finite" in response.json()["detail"]
    assert a.factory.created == []


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_g12_sidecar_refuses_oversized_bodies(local: Local) -> None:
    metrics = b'{"metrics": {"blob": "' + b"x" * DEFAULT_MAX_BODY_BYTES + b'"}}'
    await local.http.post("/v1/sessions", json={"call_id": "c", "session_id": "s"})
    path = "/v1/calls/c/sessions/s/metrics"
    headers = {"content-type": "application/json"}
    declared = await local.http.put(path, content=metrics, headers=headers)
    assert declared.status_code == 422
    assert declared.json()["detail"] == f"request body larger than {DEFAULT_MAX_BODY_BYTES} bytes"
    streamed = await local.http.put(path, content=_chunks(metrics, 4096), headers=headers)  # chunked
    assert streamed.status_code == 422
    assert local.service.session("c", "s").info.metrics == {}
    small = await local.http.put(path, json={"metrics": {"blob": "x" * 1000}})
    assert small.status_code == 200


async def test_g12_node_api_refuses_oversized_bodies(make_node: MakeNode) -> None:
    a = await make_node()
    big = b'{"call_type": "' + b"x" * (DEFAULT_MAX_BODY_BYTES + 1) + b'"}'
    response = await a.client.post(
        "/calls/c-1/sessions", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and "larger than" in response.json()["detail"]
    bad_length = await a.client.post("/calls/c-1/sessions", headers={"content-length": "many"})
    assert bad_length.status_code in (400, 422)
    assert a.factory.created == []


async def test_oversized_strings_outside_bodies_are_422(make_node: MakeNode, local: Local) -> None:
    a = await make_node()
    long_id = "c" * 10_000
    assert (await a.client.post(f"/calls/{long_id}/sessions")).status_code == 422
    assert (await a.client.get(f"/sessions?call_id={long_id}")).status_code == 422
    await local.http.post("/v1/sessions", json={"call_id": "c", "session_id": "s"})
    ended = await local.http.delete("/v1/calls/c/sessions/s", params={"reason": "r" * 10_000})
    assert ended.status_code == 422
    assert (
        await local.http.post("/v1/start-requests/r1/reject", json={"reason": "r" * 201})
    ).status_code == 422
