"""The chaos tier: real redis-server behind a real Toxiproxy, faults injected by its API.

Every test under ``tests/chaos`` gets the ``chaos`` marker. ``toxiproxy-server`` is built by
``tests/k8s/build-tools.sh toxiproxy`` after collection when missing (outside any test's
timeout); one server runs per test session and is reset before each test.

Fixtures:

- ``toxiproxy`` (session): the :class:`ToxiproxyServer`; ``toxiproxy.client`` is the API.
- ``redis_proxy`` (function): a proxy in front of the session's (flushed) redis-server;
  ``.url`` is the Redis URL through the proxy, ``.direct_url`` the one around it (an
  observer that the fault does not touch), ``.name`` the proxy to put toxics on.
- ``make_node`` (function): ``await make_node(node_id, ttl=, interval=, **options)`` starts
  a launcher of fake agents whose registry goes through the proxy; at the end the proxy is
  healed first (a black-holed stop would wait out its budget), then every launcher stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from callboard.launcher import AgentLauncher
from callboard.registry import RedisSessionKVStore, SessionRegistry
from tests.support.fake_agents import AgentFactory, FakeAgent, fake_join
from tests.support.redis_server import RedisServer
from tests.support.toxiproxy import ToxiproxyClient, ToxiproxyServer, ensure_toxiproxy

CHAOS_DIR = Path(__file__).resolve().parent


def _is_chaos(item: pytest.Item) -> bool:
    return CHAOS_DIR in Path(str(item.path)).resolve().parents


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _is_chaos(item):
            item.add_marker(pytest.mark.chaos)


_BUILD_ERROR = pytest.StashKey[str]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build toxiproxy-server before the first chaos test runs (outside any test timeout)."""
    if session.config.option.collectonly or not any(_is_chaos(i) for i in session.items):
        return
    try:
        ensure_toxiproxy()
    except RuntimeError as exc:
        session.config.stash[_BUILD_ERROR] = str(exc)


@pytest.fixture(scope="session")
def toxiproxy(request: pytest.FixtureRequest) -> Iterator[ToxiproxyServer]:
    error = request.config.stash.get(_BUILD_ERROR, None)
    if error is not None:
        pytest.fail(error, pytrace=False)
    server = ToxiproxyServer(ensure_toxiproxy())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class RedisProxy:
    """A Toxiproxy proxy in front of the test's redis-server."""

    name: str
    url: str
    direct_url: str
    client: ToxiproxyClient
    server: RedisServer


@pytest.fixture
def redis_proxy(
    toxiproxy: ToxiproxyServer, redis_server: RedisServer, redis_url: str
) -> Iterator[RedisProxy]:
    client = toxiproxy.client
    client.reset()
    for proxy in client.list_proxies():
        client.delete_proxy(proxy.name)
    proxy = client.create_proxy("redis", upstream=f"127.0.0.1:{redis_server.port}")
    try:
        yield RedisProxy(
            name=proxy.name,
            url=f"redis://127.0.0.1:{proxy.port}/0",
            direct_url=redis_url,
            client=client,
            server=redis_server,
        )
    finally:
        client.delete_proxy(proxy.name)


class MakeNode(Protocol):
    """``await make_node(node_id, ttl=..., interval=..., **launcher_options)``: see the module docstring."""

    def __call__(
        self, node_id: str, *, ttl: float, interval: float, **kwargs: Any
    ) -> Awaitable[AgentLauncher[FakeAgent]]: ...


@pytest.fixture
async def make_node(redis_proxy: RedisProxy) -> AsyncIterator[MakeNode]:
    made: list[AgentLauncher[FakeAgent]] = []

    async def make(node_id: str, *, ttl: float, interval: float, **kwargs: Any) -> AgentLauncher[FakeAgent]:
        registry = SessionRegistry(RedisSessionKVStore(url=redis_proxy.url), node_id=node_id, ttl=ttl)
        launcher = AgentLauncher(
            AgentFactory(), fake_join, registry=registry, maintenance_interval=interval, **kwargs
        )
        await launcher.start()
        made.append(launcher)
        return launcher

    try:
        yield make
    finally:
        redis_proxy.client.heal(redis_proxy.name)
        for launcher in made:
            await launcher.stop()
