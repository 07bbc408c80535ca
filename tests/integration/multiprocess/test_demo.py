"""``callboard demo`` (``make demo``) end to end, in each of its modes: exit 0, every check held."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
import redis.asyncio as aioredis

pytestmark = pytest.mark.redis

DEMO = [sys.executable, "-c", "from callboard.cli import main; main()", "demo", "--no-live"]


async def run_demo(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *DEMO,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("CALLBOARD_")},
            "COLUMNS": "200",  # no wrapping of the narration, so claims match whole
            **(env or {}),
        },
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), time.perf_counter() - started


def assert_story(output: str) -> None:
    assert "every check passed" in output, output
    assert "✗" not in output, output
    for claim in (
        "all 3 nodes are registered",
        "is refused: 429",
        "B lists all 6 sessions",
        "C reads it from the registry",
        "node A closed the agent",
        "C and its sessions left every listing",
        "A and B drained and exited cleanly",
    ):
        assert claim in output, (claim, output)


async def test_demo_starts_its_own_redis_server() -> None:
    code, output, took = await run_demo()
    assert code == 0, output
    assert "a local redis-server on port" in output and "kill -9" in output
    assert_story(output)
    assert took < 60


async def test_demo_on_a_given_redis_cleans_up_its_keys(redis_url: str) -> None:
    code, output, _ = await run_demo(env={"CALLBOARD_REDIS_URL": redis_url})
    assert code == 0, output
    assert "over Redis at redis://127.0.0.1" in output
    assert_story(output)
    client = aioredis.from_url(redis_url)
    try:
        assert await client.keys("callboard-demo-*") == []
    finally:
        await client.aclose()


async def test_demo_says_so_when_the_given_redis_is_down() -> None:
    code, output, _ = await run_demo("--redis-url", "redis://user:secret@127.0.0.1:9/0")
    assert code == 1 and "is unreachable" in output and "Traceback" not in output, output
    assert "secret" not in output


async def test_demo_in_memory_needs_nothing() -> None:
    code, output, _ = await run_demo("--memory")
    assert code == 0, output
    assert "one in-memory store shared by 3 nodes" in output and "cut off from the store" in output
    assert_story(output)
