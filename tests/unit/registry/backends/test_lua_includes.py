"""The Lua scripts' includes: Redis runs each script alone, so shared functions are inlined."""

from importlib import resources

import pytest

from callboard.registry.backends.redis import _lua

SCRIPTS = sorted(
    p.name.removesuffix(".lua")
    for p in resources.files("callboard.registry.backends").joinpath("lua").iterdir()
    if p.name.endswith(".lua") and not p.name.startswith("_")
)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_is_loaded_without_an_include_left(name: str) -> None:
    assert "-- include:" not in _lua(name)


@pytest.mark.parametrize("name", ["register", "remove", "heartbeat", "heartbeat_full"])
def test_the_scripts_that_move_a_node_version_get_the_one_bump_version(name: str) -> None:
    text = _lua(name)
    assert text.count("local function bump_version(key, ttl_ms)") == 1
    assert "redis.pcall('TIME')" in text
    assert "bump_version(" in text.split("local function bump_version", 1)[1].split("\nend\n", 1)[1]
