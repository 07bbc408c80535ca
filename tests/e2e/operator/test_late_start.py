"""Late acceptance (G1, G7): an app that accepts a start after the operator's start timeout.

The operator withdraws a request when its start timeout passes and places the session on
another node; the late app's registration is refused (410), so the call never gets a second
agent from one AgentSession.
"""

from __future__ import annotations

import pytest

from .conftest import NodeFactory, OperatorFactory
from .harness import Kube

pytestmark = pytest.mark.e2e

#: Short on purpose (the harness's default is the ttl): what this test is about is the timeout.
START_TIMEOUT = 3.0


async def test_g1_an_app_that_accepts_after_the_start_timeout_never_runs_a_second_agent(
    kube: Kube, operator_factory: OperatorFactory, node_factory: NodeFactory
) -> None:
    # "late" joins the call before it registers, and takes twice the start timeout to do it;
    # being the busier node, packing asks it first.
    late = await node_factory("late", capacity=4, accept_delay=2 * START_TIMEOUT)
    assert late.app is not None
    await late.app.send(op="register", call_id="busy-call", session_id="busy-1")
    await late.app.expect("registered")
    good = await node_factory("good", capacity=4)
    await operator_factory(CALLBOARD_START_TIMEOUT=START_TIMEOUT)

    await kube.apply("greeter", "call-1")
    obj = await kube.wait_phase("greeter", "Running")
    status = obj["status"]
    assert (status["nodeId"], status["attempts"]) == ("good", 2)
    # The late app's acceptance arrives after the withdrawal and is refused.
    refused = await late.app.expect("error", op="start", timeout=6 * START_TIMEOUT)
    assert refused["error"] == "StartRequestGoneError"
    assert await late.sessions() == ["busy-1"]
    assert await good.sessions() == [status["sessionId"]]
    assert {"StartTimeout", "Started"} <= set(
        await kube.reasons("greeter", until=("StartTimeout", "Started"))
    )
