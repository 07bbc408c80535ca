"""App-level concerns: bearer auth, CORS, Prometheus metrics per app, settings."""

from __future__ import annotations

import pytest

from callboard import ConfigurationError
from callboard.server import ServerSettings
from tests.unit.server.conftest import MakeNode


async def test_auth_is_off_by_default(make_node: MakeNode) -> None:
    a = await make_node()
    assert (await a.client.get("/sessions")).status_code == 200
    spec = (await a.client.get("/openapi.json")).json()
    assert "securitySchemes" not in spec.get("components", {})


async def test_bearer_token_guards_everything_but_probes(make_node: MakeNode) -> None:
    a = await make_node(settings=ServerSettings(auth_token="s3cret"))
    for path in ("/sessions", "/nodes", "/metrics", "/calls/call-1/sessions/x"):
        response = await a.client.get(path)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"] == "Bearer"
    wrong = await a.client.get("/sessions", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert (await a.client.post("/calls/call-1/sessions")).status_code == 401
    assert a.factory.created == []
    ok = await a.client.get("/sessions", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    started = await a.client.post("/calls/call-1/sessions", headers={"Authorization": "Bearer s3cret"})
    assert started.status_code == 201
    assert (await a.client.get("/health")).status_code == 200
    assert (await a.client.get("/ready")).status_code == 200
    spec = (await a.client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_no_cors_headers_unless_configured(make_node: MakeNode) -> None:
    a = await make_node()
    response = await a.client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


async def test_cors_never_allows_credentials(make_node: MakeNode) -> None:
    a = await make_node(settings=ServerSettings(cors_origins=("https://app.example.com",)))
    preflight = await a.client.options(
        "/calls/call-1/sessions",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-credentials" not in preflight.headers
    other = await a.client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers

    b = await make_node("node-b", settings=ServerSettings(cors_origins=("*",)))
    wildcard = await b.client.get("/health", headers={"Origin": "https://any.example", "Cookie": "x=1"})
    assert wildcard.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in wildcard.headers


async def test_prometheus_metrics_are_per_app(make_node: MakeNode) -> None:
    a = await make_node("node-a", max_concurrent_sessions=4)
    b = await make_node("node-b")
    await a.client.post("/calls/call-1/sessions")
    await a.client.post("/calls/call-2/sessions")
    await a.client.get("/calls/call-1/sessions/unknown")
    text_a = (await a.client.get("/metrics")).text
    text_b = (await b.client.get("/metrics")).text
    assert "callboard_sessions_active 2.0" in text_a
    assert "callboard_node_capacity 4.0" in text_a and "callboard_node_free_slots 2.0" in text_a
    assert "callboard_sessions_started_total 2.0" in text_a
    assert 'route="/calls/{call_id}/sessions",status="201"} 2.0' in text_a
    assert 'route="/calls/{call_id}/sessions/{session_id}",status="404"} 1.0' in text_a
    assert "unknown" not in text_a  # route templates, never raw ids
    assert "callboard_sessions_active 0.0" in text_b
    assert 'status="201"' not in text_b


async def test_metrics_count_closes_by_reason(make_node: MakeNode) -> None:
    a = await make_node()
    sid = (await a.client.post("/calls/call-1/sessions")).json()["session_id"]
    session = a.launcher.get_session(sid)
    assert session is not None
    await a.client.delete(f"/calls/call-1/sessions/{sid}")
    await session.wait()
    assert 'callboard_sessions_closed_total{reason="closed"} 1.0' in (await a.client.get("/metrics")).text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"auth_token": "  "},
        {"cors_origins": ("app.example.com",)},
        {"cors_origins": ("https://app.example.com/path",)},
        {"default_page_size": 0},
        {"default_page_size": 2000},
        {"ready_timeout": 0},
    ],
)
def test_bad_settings_are_configuration_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        ServerSettings(**kwargs)  # type: ignore[arg-type]
