"""Pure logic of :mod:`callboard.registry.records`: the node record as this node builds it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from callboard.errors import ConfigurationError
from callboard.registry import InMemorySessionKVStore, SessionRegistry


def test_set_node_info_changes_only_the_fields_given() -> None:
    registry = SessionRegistry(InMemorySessionKVStore(), node_id="node-a")
    registry.set_node_info(address="http://a:8080", pool="voice", pod_name="pod-a", version="1.0")
    registry.set_node_info(capacity=4)
    node = registry.node
    assert (node.address, node.capacity, node.pool, node.pod_name, node.version) == (
        "http://a:8080",
        4,
        "voice",
        "pod-a",
        "1.0",
    )


def test_set_node_info_clears_a_field_given_as_none() -> None:
    registry = SessionRegistry(InMemorySessionKVStore(), node_id="node-a")
    registry.set_node_info(address="http://a:8080", capacity=4)
    registry.set_node_info(capacity=None)
    assert (registry.node.address, registry.node.capacity) == ("http://a:8080", None)


def test_set_node_info_refuses_a_negative_capacity() -> None:
    registry = SessionRegistry(InMemorySessionKVStore(), node_id="node-a")
    with pytest.raises(ValueError, match="capacity"):
        registry.set_node_info(capacity=-1)
    assert registry.node.capacity is None


async def test_register_restores_start_time_and_metrics_in_its_one_write() -> None:
    store = InMemorySessionKVStore()
    registry = SessionRegistry(store, node_id="node-a")
    info = await registry.register("call-1", "s-1", started_at=123.0, metrics={"tokens": 7})
    assert (info.started_at, info.metrics) == (123.0, {"tokens": 7})
    assert info.metrics_updated_at is not None
    stored = await registry.get("call-1", "s-1")
    assert stored == info


async def test_register_without_metrics_leaves_them_unset() -> None:
    registry = SessionRegistry(InMemorySessionKVStore(), node_id="node-a")
    info = await registry.register("call-1", "s-1")
    assert (info.metrics, info.metrics_updated_at) == ({}, None)


@pytest.mark.parametrize(
    "build",
    [
        lambda: SessionRegistry(ttl=0),
        lambda: SessionRegistry(foreign_scan_interval=0),
        lambda: SessionRegistry().set_node_info(capacity=-1),
        lambda: InMemorySessionKVStore(cleanup_interval=0),
    ],
)
def test_bad_registry_arguments_are_configuration_errors(build: Callable[[], object]) -> None:
    with pytest.raises(ConfigurationError):  # a CallboardError, and still a ValueError
        build()


async def test_bad_per_call_limit_is_a_configuration_error() -> None:
    registry = SessionRegistry(InMemorySessionKVStore(), node_id="node-a")
    with pytest.raises(ConfigurationError, match="max_sessions_per_call"):
        await registry.register("call-1", "s-1", max_sessions_per_call=0)
