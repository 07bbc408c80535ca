"""The ``callboard`` commands against a live cluster: over a node's API and over Redis."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from callboard.cli import nodes, serve, sessions
from tests.integration.multiprocess.conftest import Cluster, MakeCluster
from tests.support.redis_server import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.redis


async def invoke(command: click.Command, *args: str) -> Result:
    """Run a subcommand as the CLI would (it calls asyncio.run, so in a thread of its own)."""
    return await asyncio.to_thread(CliRunner().invoke, command, list(args), catch_exceptions=False)


def sources(cluster: Cluster) -> dict[str, list[str]]:
    return {
        "api": ["--api", cluster.nodes["b"].url],
        "redis": ["--redis-url", cluster.redis_url, "--key-prefix", cluster.prefix],
    }


async def test_sessions_and_nodes_over_api_and_redis_agree(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster(("a", "b"))
    a = cluster.clients["a"]
    sids = [(await a.start_session(call))["session_id"] for call in ("call-1", "call-2")]
    outputs: dict[str, Any] = {}
    for name, source in sources(cluster).items():
        listed = await invoke(sessions.command, "list", *source, "--json")
        assert listed.exit_code == 0, listed.output
        stable = ("session_id", "call_id", "node_id", "session_started_at")  # metrics move on
        outputs[name] = [{k: s[k] for k in stable} for s in json.loads(listed.stdout)]
        assert [s["session_id"] for s in outputs[name]] == sids
        table = await invoke(sessions.command, "list", *source, "--call-id", "call-2")
        assert table.exit_code == 0 and "call-2" in table.stdout and "call-1" not in table.stdout
        got = await invoke(sessions.command, "get", *source, "call-1", sids[0], "--json")
        assert json.loads(got.stdout)["node_id"] == "node-a"
        node_list = await invoke(nodes.command, "list", *source, "--json")
        assert [n["node_id"] for n in json.loads(node_list.stdout)] == ["node-a", "node-b"]
        node_table = await invoke(nodes.command, "list", *source)
        assert "node-a" in node_table.stdout and "2 nodes" in node_table.stdout
    assert outputs["api"] == outputs["redis"]


@pytest.mark.parametrize("source_name", ["api", "redis"])
async def test_close_from_the_command_line(make_cluster: MakeCluster, source_name: str) -> None:
    cluster = await make_cluster(("a", "b"))
    a = cluster.clients["a"]
    sid = (await a.start_session("call-1"))["session_id"]
    closed = await invoke(sessions.command, "close", *sources(cluster)[source_name], "call-1", sid)
    assert closed.exit_code == 0, closed.output
    assert "node-a" in closed.stdout

    async def gone() -> bool:
        return await a.get_session("call-1", sid) is None

    await wait_until(gone, timeout=3)
    missing = await invoke(sessions.command, "close", *sources(cluster)[source_name], "call-1", sid)
    assert missing.exit_code == 1 and "no session" in missing.stderr
    missing = await invoke(sessions.command, "get", *sources(cluster)[source_name], "call-1", sid)
    assert missing.exit_code == 1


async def test_cli_errors_are_clear() -> None:
    no_source = await invoke(sessions.command, "list")
    assert no_source.exit_code == 2 and "--api URL" in no_source.stderr
    unreachable = await invoke(nodes.command, "list", "--api", "http://127.0.0.1:9")
    assert unreachable.exit_code == 1 and "did not answer" in unreachable.stderr
    too_close = await invoke(serve.command, "--ttl", "3", "--maintenance-interval", "2")
    assert too_close.exit_code == 2 and "ttl/3" in too_close.stderr
    bad_agent = await invoke(serve.command, "--agent", "no_such_module:create")
    assert bad_agent.exit_code == 2 and "no_such_module" in bad_agent.stderr


async def test_serve_help_documents_the_environment() -> None:
    result = await invoke(serve.command, "--help")
    for var in (
        "CALLBOARD_REDIS_URL",
        "CALLBOARD_KEY_PREFIX",
        "CALLBOARD_NODE_ID",
        "CALLBOARD_TTL",
        "CALLBOARD_API_TOKEN",
    ):
        assert var in result.stdout


async def test_serve_reports_a_taken_port_and_an_unreachable_registry() -> None:
    serve_argv = [sys.executable, "-c", "from callboard.cli import main; main()", "serve"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            *serve_argv, "--port", str(port), stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1 and b"cannot listen on" in err and b"Traceback" not in err
    proc = await asyncio.create_subprocess_exec(
        *serve_argv,
        "--port",
        str(free_port()),
        "--redis-url",
        "redis://user:hunter2@127.0.0.1:9/0",
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1 and b"registry unreachable" in err and b"Traceback" not in err
    assert b"hunter2" not in err
