"""Property-based fuzz of the sidecar's session API from its own OpenAPI document: no 5xx (G12).

As ``tests/integration/server/test_fuzz.py`` does for the node API: schemathesis builds valid
and invalid requests for every operation from the served document, and each goes to a real
``callboard sidecar`` process over a real Redis. Every answer must be below 500 and conform to
the document. The document links a registration to get, metrics and end (OpenAPI links); the
sequences test follows those links by hand with the ids the sidecar answered, so it reaches
live sessions as a real app does, with the event stream (a response that never ends) between
the steps. (Schemathesis' own state machine over a live process trips Hypothesis' replay
check, FlakyStrategyDefinition, so it is not used here.)
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from callboard.registry import InMemorySessionKVStore, SessionRegistry
from callboard.sidecar.api import create_app
from callboard.sidecar.service import SidecarService
from callboard.sidecar.settings import SidecarSettings
from tests.integration.sidecar.conftest import SidecarFactory
from tests.support.sidecar import SidecarProcess

pytestmark = pytest.mark.redis

#: Generated requests per run, as for the node API: every operation in both modes many times.
EXAMPLES = 300
#: The event stream never ends: it is fuzzed by hand (test_sequences_with_the_event_stream).
STREAMS = {"/v1/events"}


def _document() -> dict[str, Any]:
    """The session API's OpenAPI (building it needs no running sidecar)."""
    service = SidecarService(
        SidecarSettings(), registry=SessionRegistry(InMemorySessionKVStore(), node_id="n")
    )
    document: dict[str, Any] = create_app(service).openapi()
    document["paths"] = {path: ops for path, ops in document["paths"].items() if path not in STREAMS}
    return document


SCHEMA = schemathesis.openapi.from_dict(_document())
CASES = st.one_of(
    [
        result.ok().as_strategy(generation_mode=mode)
        for result in SCHEMA.get_all_operations()
        for mode in GenerationMode
    ]
)
#: Capacity above what a run registers in the stateful test, below what the plain fuzz does,
#: so both the 201 path and the 409 path are reached.
ENV = {"CALLBOARD_CAPACITY": "25"}


def _request(case: Any, base_url: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url=base_url)
    kwargs.pop("cookies", None)
    if "data" in kwargs:
        kwargs["content"] = kwargs.pop("data")
    return kwargs


@pytest.fixture
async def sidecar(sidecar_factory: SidecarFactory) -> SidecarProcess:
    return await sidecar_factory("fuzz-node", env=ENV)


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
async def test_no_request_gets_a_server_error(sidecar: SidecarProcess, case: Any) -> None:
    response = await sidecar.http.request(**_request(case, sidecar.url))
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text)
    # Schema-valid data may still be refused on its meaning (a start request that does not
    # exist, a call over its limit): a 4xx with the documented body, which the other checks cover.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])


#: What each hand-driven step may answer: a session registered before may have ended since.
ALLOWED = {"metrics": {200, 404}, "get": {200, 404}, "end": {204, 404}, "list": {200}, "events": {200}}


@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["register", *ALLOWED]), st.integers(min_value=0, max_value=5)),
        min_size=1,
        max_size=10,
    ),
    metrics=st.dictionaries(
        st.text(max_size=20),
        st.one_of(
            # within the registry's bounds (JSON's exact integers): out of them is a 422, tested apart
            st.integers(min_value=-(2**53), max_value=2**53),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=50),
        ),
        max_size=5,
    ),
)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_sequences_with_the_event_stream(
    sidecar: SidecarProcess, steps: list[tuple[str, int]], metrics: dict[str, Any]
) -> None:
    """Register, metrics, end and the event stream, in any order, on real ids: never a 5xx."""
    live: list[tuple[str, str]] = []
    for step, pick in steps:
        if step == "register" or not live:
            body = {"call_id": f"call-{pick % 3}", "session_id": f"s-{pick}", "metrics": metrics}
            response = await sidecar.http.post("/v1/sessions", json=body)
            assert response.status_code in (200, 201, 409), response.text
            if response.status_code < 300:
                live.append((body["call_id"], body["session_id"]))
            continue
        call_id, session_id = live[pick % len(live)]
        path = f"/v1/calls/{call_id}/sessions/{session_id}"
        if step == "metrics":
            response = await sidecar.http.put(f"{path}/metrics", json={"metrics": metrics})
        elif step == "get":
            response = await sidecar.http.get(path)
        elif step == "end":
            response = await sidecar.http.delete(path, params={"reason": "finished"})
        elif step == "list":
            response = await sidecar.http.get("/v1/sessions")
        else:
            response = await _first_events(sidecar, pick)
        assert response.status_code in ALLOWED[step], (step, response.status_code, response.text)


async def _first_events(sidecar: SidecarProcess, pick: int) -> httpx.Response:
    """Open the stream (resuming from a made-up id half the time), read its opening, hang up."""
    headers = {"Last-Event-ID": str(pick * 1000)} if pick % 2 else {}
    async with sidecar.http.stream("GET", "/v1/events", headers=headers) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                json.loads(line.removeprefix("data:"))  # every event is one JSON object
            if line.startswith(":"):  # the opening comment: the stream is up
                break
    return response
