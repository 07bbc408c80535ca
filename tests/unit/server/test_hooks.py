"""The authorization hooks (Vision Agents' ServeOptions names): FastAPI dependencies per call."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import Header, HTTPException

from callboard import ConfigurationError
from callboard.server import AuthorizationHooks, ServerSettings
from callboard.server.hooks import allow_all
from tests.unit.server.conftest import MakeNode


def deny_close(call_id: str) -> None:
    """Refuses every close (named by import path in a test below)."""
    raise HTTPException(403, f"closing {call_id} is not allowed here")


async def tenant_only(call_id: str, x_tenant: Annotated[str | None, Header()] = None) -> None:
    """Calls are named after their tenant: call ``acme-1`` belongs to tenant ``acme``."""
    if x_tenant is None or not call_id.startswith(f"{x_tenant}-"):
        raise HTTPException(403, f"tenant {x_tenant!r} may not see call {call_id!r}")


async def test_g11_a_hook_that_denies_gives_403_with_its_message(make_node: MakeNode) -> None:
    def no_starts(call_id: str) -> None:
        raise HTTPException(403, f"no agents for {call_id}")

    a = await make_node(hooks=AuthorizationHooks(can_start_session=no_starts))
    response = await a.client.post("/calls/call-1/sessions")
    assert response.status_code == 403
    assert response.json() == {"detail": "no agents for call-1"}
    assert a.factory.created == []  # refused before any agent was built
    assert not a.launcher.sessions


async def test_g11_a_hook_reads_a_header(make_node: MakeNode) -> None:
    a = await make_node(hooks=AuthorizationHooks(can_view_session=tenant_only, can_view_metrics=tenant_only))
    started = (await a.client.post("/calls/acme-1/sessions")).json()
    path = f"/calls/acme-1/sessions/{started['session_id']}"
    assert (await a.client.get(path, headers={"X-Tenant": "acme"})).status_code == 200
    assert (await a.client.get(f"{path}/metrics", headers={"X-Tenant": "acme"})).status_code == 200
    for headers in ({"X-Tenant": "globex"}, {}):
        for url in (path, f"{path}/metrics", "/calls/acme-1/sessions"):
            denied = await a.client.get(url, headers=headers)
            assert denied.status_code == 403, (url, headers)
            assert "may not see call 'acme-1'" in denied.json()["detail"]


async def test_each_route_asks_its_hook_with_the_call_id(make_node: MakeNode) -> None:
    asked: list[tuple[str, str]] = []

    def recorder(name: str) -> object:
        def hook(call_id: str) -> None:
            asked.append((name, call_id))

        return hook

    hooks = AuthorizationHooks(
        can_start_session=recorder("start"),
        can_close_session=recorder("close"),
        can_view_session=recorder("view"),
        can_view_metrics=recorder("metrics"),
    )
    a = await make_node(hooks=hooks)
    sid = (await a.client.post("/calls/c-1/sessions")).json()["session_id"]
    await a.client.get(f"/calls/c-1/sessions/{sid}")
    await a.client.get("/calls/c-1/sessions")
    await a.client.get(f"/calls/c-1/sessions/{sid}/metrics")
    await a.client.get("/sessions?call_id=c-1")
    await a.client.post(f"/calls/c-1/sessions/{sid}/close")
    await a.client.delete(f"/calls/c-1/sessions/{sid}")
    assert asked == [
        ("start", "c-1"),
        ("view", "c-1"),
        ("view", "c-1"),
        ("metrics", "c-1"),
        ("view", "c-1"),
        ("close", "c-1"),
        ("close", "c-1"),
    ]


async def test_a_call_hook_makes_the_cluster_listing_name_a_call(make_node: MakeNode) -> None:
    a = await make_node(hooks=AuthorizationHooks(can_view_session=tenant_only))
    await a.client.post("/calls/acme-1/sessions")
    await a.client.post("/calls/globex-1/sessions")
    assert (await a.client.get("/sessions", headers={"X-Tenant": "acme"})).status_code == 422
    mine = await a.client.get("/sessions?call_id=acme-1", headers={"X-Tenant": "acme"})
    assert mine.status_code == 200 and [s["call_id"] for s in mine.json()["items"]] == ["acme-1"]
    theirs = await a.client.get("/sessions?call_id=globex-1", headers={"X-Tenant": "acme"})
    assert theirs.status_code == 403


async def test_defaults_allow_all_and_keep_the_listing_open(make_node: MakeNode) -> None:
    assert AuthorizationHooks() == AuthorizationHooks(allow_all, allow_all, allow_all, allow_all)
    a = await make_node()
    assert (await a.client.post("/calls/c-1/sessions")).status_code == 201
    assert len((await a.client.get("/sessions")).json()["items"]) == 1
    spec = (await a.client.get("/openapi.json")).json()
    listing = {p["name"]: p["required"] for p in spec["paths"]["/sessions"]["get"]["parameters"]}
    assert listing["call_id"] is False


async def test_hooks_by_import_path_from_the_settings(make_node: MakeNode) -> None:
    settings = ServerSettings(can_close_session=f"{__name__}:deny_close")
    a = await make_node(settings=settings)
    sid = (await a.client.post("/calls/c-1/sessions")).json()["session_id"]
    denied = await a.client.delete(f"/calls/c-1/sessions/{sid}")
    assert denied.status_code == 403 and denied.json() == {"detail": "closing c-1 is not allowed here"}
    assert a.launcher.get_session(sid) is not None


def test_a_bad_hook_path_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="--can-view-metrics"):
        AuthorizationHooks.from_settings(ServerSettings(can_view_metrics="callboard.nope:hook"))
