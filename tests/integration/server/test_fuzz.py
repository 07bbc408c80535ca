"""Property-based fuzz of the node API from its own OpenAPI document: no input gives a 5xx.

Schemathesis builds Hypothesis strategies from the served OpenAPI document (valid and
invalid requests for every operation); each generated request goes to the app in-process
(ASGI), over a launcher with the simulated agent and a real Redis. Every response must be
below 500 and conform to the document (status codes, content types, body schemas).
State piles up between examples (sessions started, closed, limits hit), as on a live node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

from callboard.demo.agent import create_agent, join_call
from callboard.launcher import AgentLauncher
from callboard.registry import RedisSessionKVStore, SessionRegistry
from callboard.server import create_app

pytestmark = pytest.mark.redis

#: Generated requests per run: enough to hit every operation in both modes many times
#: and still finish in a few seconds.
EXAMPLES = 300


def _cases() -> st.SearchStrategy[Any]:
    """Strategies for every operation, from the app's OpenAPI (it needs no running node)."""
    document = create_app(AgentLauncher(create_agent, join_call)).openapi()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    return st.one_of([op.as_strategy(generation_mode=mode) for op in operations for mode in GenerationMode])


CASES = _cases()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    registry = SessionRegistry(RedisSessionKVStore(url=redis_url), node_id="fuzz-node", ttl=30.0)
    launcher = AgentLauncher(
        create_agent, join_call, max_concurrent_sessions=25, max_sessions_per_call=3, registry=registry
    )
    app = create_app(launcher)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http,
    ):
        yield http


def _request(case: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url="http://testserver")
    kwargs.pop("cookies", None)  # the API reads none; per-request cookies are deprecated in httpx
    if "data" in kwargs:
        kwargs["content"] = kwargs.pop("data")
    return kwargs


@given(case=CASES)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
async def test_no_request_gets_a_server_error(client: httpx.AsyncClient, case: Any) -> None:
    response = await client.request(**_request(case))
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text)
    case.validate_response(response)


#: What each step may answer on a session that was started (and maybe closed) before: a
#: local close is immediate but its record leaves the registry a moment later.
ALLOWED = {
    "get": {200, 404},
    "metrics": {200, 404},
    "delete": {202, 404},
    "close": {202, 404},
    "wrong-call": {404},
    "list": {200},
}


@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["start", *ALLOWED]), st.integers(min_value=0, max_value=5)),
        min_size=1,
        max_size=12,
    )
)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_sequences_on_live_sessions_never_fail(
    client: httpx.AsyncClient, steps: list[tuple[str, int]]
) -> None:
    """The generated fuzz rarely guesses a live session id; these sequences use real ones."""
    live: list[tuple[str, str]] = []
    for step, pick in steps:
        if step == "start" or not live:
            response = await client.post(f"/calls/call-{pick % 3}/sessions")
            assert response.status_code in (201, 429), response.text
            if response.status_code == 201:
                live.append((response.json()["call_id"], response.json()["session_id"]))
            continue
        call_id, session_id = live[pick % len(live)]
        path = f"/calls/{call_id}/sessions/{session_id}"
        if step == "get":
            response = await client.get(path)
        elif step == "metrics":
            response = await client.get(f"{path}/metrics")
        elif step == "delete":
            response = await client.delete(path)
        elif step == "close":
            response = await client.post(f"{path}/close")
        elif step == "wrong-call":
            response = await client.get(f"/calls/other-{call_id}/sessions/{session_id}")
        else:
            response = await client.get(f"/sessions?call_id={call_id}")
        assert response.status_code in ALLOWED[step], (step, response.status_code, response.text)
        if step == "get" and response.status_code == 200:
            assert response.json()["session_id"] == session_id and response.json()["node_id"] == "fuzz-node"
        if step == "list":
            assert all(s["call_id"] == call_id for s in response.json()["items"])
