"""Sidecar settings: built from CALLBOARD_* variables, validated, documented in one place."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from callboard.cli import main
from callboard.config import options
from callboard.errors import ConfigurationError
from callboard.sidecar.settings import DEFAULT_PORT, SidecarSettings

ENV_VARS = options(SidecarSettings)


def test_defaults_are_documented_values() -> None:
    settings = SidecarSettings.from_env({})
    assert settings.registry.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.registry.key_prefix == "vision_agents:"
    assert (settings.registry.ttl, settings.registry.heartbeat_interval) == (30.0, 10.0)
    assert settings.api.listen == f"127.0.0.1:{DEFAULT_PORT}"
    assert (settings.api.host, settings.api.port) == ("127.0.0.1", DEFAULT_PORT)
    assert settings.node.capacity == 10
    assert settings.app.health_url is None
    assert settings.app.consumer_grace == 30.0
    assert (settings.drain.timeout, settings.drain.grace_period) == (20.0, 30.0)
    assert settings.node.node_id  # generated: host name plus a suffix
    assert settings.advertised_address is None  # loopback means nothing to other pods


def test_g9_a_drain_that_does_not_fit_the_grace_period_fails_at_start() -> None:
    with pytest.raises(ConfigurationError, match=r"CALLBOARD_DRAIN_TIMEOUT.*at most 20s"):
        SidecarSettings.from_env({"CALLBOARD_DRAIN_TIMEOUT": "25"})
    fits = SidecarSettings.from_env({"CALLBOARD_DRAIN_TIMEOUT": "600", "CALLBOARD_GRACE_PERIOD": "620"})
    assert fits.drain.shutdown.drain == 610.0
    with pytest.raises(ConfigurationError, match="leaves no time to drain"):
        SidecarSettings.from_env({"CALLBOARD_DRAIN_TIMEOUT": "0", "CALLBOARD_GRACE_PERIOD": "5"})


def test_every_variable_is_read(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")  # kubectl create secret --from-file keeps the newline
    env = {
        "CALLBOARD_REDIS_URL": "redis://redis:6380/2",
        "CALLBOARD_KEY_PREFIX": "cb:",
        "CALLBOARD_TTL": "12",
        "CALLBOARD_HEARTBEAT_INTERVAL": "3.5",
        "CALLBOARD_NODE_ID": "node-7",
        "CALLBOARD_POD_NAME": "agent-7",
        "CALLBOARD_POD_NAMESPACE": "voice",
        "CALLBOARD_POD_IP": "10.1.2.3",
        "CALLBOARD_POOL": "gpu",
        "CALLBOARD_CAPACITY": "4",
        "CALLBOARD_ADVERTISE_URL": "http://agent-7.voice:8555",
        "CALLBOARD_LISTEN": "127.0.0.2:9000",
        "CALLBOARD_PROBE_LISTEN": "0.0.0.0:9001",
        "CALLBOARD_API_TOKEN_FILE": str(token_file),
        "CALLBOARD_REPLAY_BUFFER": "64",
        "CALLBOARD_APP_HEALTH_URL": "http://127.0.0.1:8080/health",
        "CALLBOARD_APP_HEALTH_INTERVAL": "1",
        "CALLBOARD_APP_HEALTH_TIMEOUT": "0.5",
        "CALLBOARD_APP_FAILURE_THRESHOLD": "5",
        "CALLBOARD_EVENT_GRACE": "0",
        "CALLBOARD_DRAIN_TIMEOUT": "600",
        "CALLBOARD_GRACE_PERIOD": "620",
    }
    assert set(env) | {"CALLBOARD_API_TOKEN"} == {var.name for var in ENV_VARS}, (
        "the test must cover every variable"
    )
    s = SidecarSettings.from_env(env)
    assert (s.registry.redis_url, s.registry.key_prefix) == ("redis://redis:6380/2", "cb:")
    assert (s.registry.ttl, s.registry.heartbeat_interval) == (12.0, 3.5)
    assert (s.node.node_id, s.node.pod_name, s.node.namespace, s.node.pod_ip) == (
        "node-7",
        "agent-7",
        "voice",
        "10.1.2.3",
    )
    assert (s.node.pool, s.node.capacity, s.node.advertise_url) == ("gpu", 4, "http://agent-7.voice:8555")
    assert (s.api.host, s.api.port, s.api.replay_buffer) == ("127.0.0.2", 9000, 64)
    assert (s.api.probe_listen, s.api.bearer_token) == ("0.0.0.0:9001", "s3cret")
    assert SidecarSettings.from_env({"CALLBOARD_API_TOKEN": " t "}).api.bearer_token == "t"
    assert s.app == dataclasses.replace(
        s.app,
        health_url="http://127.0.0.1:8080/health",
        health_interval=1.0,
        health_timeout=0.5,
        failure_threshold=5,
        consumer_grace=0.0,
    )
    assert (s.drain.timeout, s.drain.grace_period) == (600.0, 620.0)
    assert s.advertised_address == "http://agent-7.voice:8555"


def test_node_id_defaults_to_the_pod_name() -> None:
    assert SidecarSettings.from_env({"CALLBOARD_POD_NAME": "agent-0"}).node.node_id == "agent-0"


def test_empty_variables_keep_defaults() -> None:
    assert SidecarSettings.from_env({"CALLBOARD_CAPACITY": "", "CALLBOARD_POOL": "  "}).node.capacity == 10


@pytest.mark.parametrize(
    ("env", "var"),
    [
        ({"CALLBOARD_TTL": "soon"}, "CALLBOARD_TTL"),
        ({"CALLBOARD_TTL": "nan"}, "CALLBOARD_TTL"),
        ({"CALLBOARD_TTL": "0"}, "CALLBOARD_TTL"),
        ({"CALLBOARD_TTL": "5", "CALLBOARD_HEARTBEAT_INTERVAL": "5"}, "CALLBOARD_HEARTBEAT_INTERVAL"),
        ({"CALLBOARD_CAPACITY": "0"}, "CALLBOARD_CAPACITY"),
        ({"CALLBOARD_CAPACITY": "2.5"}, "CALLBOARD_CAPACITY"),
        ({"CALLBOARD_NODE_ID": "bad/id"}, "CALLBOARD_NODE_ID"),
        ({"CALLBOARD_POD_NAME": "x" * 200}, "CALLBOARD_NODE_ID"),
        ({"CALLBOARD_LISTEN": "8555"}, "CALLBOARD_LISTEN"),
        ({"CALLBOARD_LISTEN": "127.0.0.1:70000"}, "CALLBOARD_LISTEN"),
        ({"CALLBOARD_REPLAY_BUFFER": "0"}, "CALLBOARD_REPLAY_BUFFER"),
        ({"CALLBOARD_APP_HEALTH_URL": "localhost:8080/health"}, "CALLBOARD_APP_HEALTH_URL"),
        ({"CALLBOARD_APP_HEALTH_INTERVAL": "0"}, "CALLBOARD_APP_HEALTH_INTERVAL"),
        ({"CALLBOARD_APP_HEALTH_TIMEOUT": "-1"}, "CALLBOARD_APP_HEALTH_TIMEOUT"),
        ({"CALLBOARD_APP_FAILURE_THRESHOLD": "0"}, "CALLBOARD_APP_FAILURE_THRESHOLD"),
        ({"CALLBOARD_EVENT_GRACE": "-1"}, "CALLBOARD_EVENT_GRACE"),
        ({"CALLBOARD_DRAIN_TIMEOUT": "-1"}, "CALLBOARD_DRAIN_TIMEOUT"),
        ({"CALLBOARD_PROBE_LISTEN": "probes"}, "CALLBOARD_PROBE_LISTEN"),
        ({"CALLBOARD_PROBE_LISTEN": "0.0.0.0:8555"}, "CALLBOARD_PROBE_LISTEN"),
        ({"CALLBOARD_API_TOKEN_FILE": "/nonexistent/token"}, "CALLBOARD_API_TOKEN_FILE"),
        ({"CALLBOARD_API_TOKEN": "a", "CALLBOARD_API_TOKEN_FILE": "/etc/hostname"}, "CALLBOARD_API_TOKEN"),
    ],
)
def test_bad_values_name_their_variable(env: dict[str, str], var: str) -> None:
    with pytest.raises(ConfigurationError, match=var):
        SidecarSettings.from_env(env)


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:8555", "[::]:8555", "10.0.0.9:9000", "[fd00::9]:9000", "agent:80"]
)
def test_g11_the_session_api_refuses_a_non_loopback_address(listen: str) -> None:
    with pytest.raises(ConfigurationError, match=r"CALLBOARD_LISTEN.*not a loopback address"):
        SidecarSettings.from_env({"CALLBOARD_LISTEN": listen})


@pytest.mark.parametrize("listen", ["127.0.0.1:8555", "127.0.0.2:8555", "localhost:8555", "[::1]:8555"])
def test_g11_the_node_record_never_publishes_the_session_api(listen: str) -> None:
    env = {"CALLBOARD_LISTEN": listen, "CALLBOARD_POD_IP": "10.0.0.9"}
    assert SidecarSettings.from_env(env).advertised_address is None
    given = SidecarSettings.from_env(env | {"CALLBOARD_ADVERTISE_URL": "http://agent-7:8080"})
    assert given.advertised_address == "http://agent-7:8080"  # only an address given on purpose


def test_probes_can_be_turned_off() -> None:
    assert SidecarSettings.from_env({"CALLBOARD_PROBE_LISTEN": "off"}).api.probe_listen is None
    assert SidecarSettings.from_env({}).api.probe_listen == "0.0.0.0:8556"


def test_env_vars_are_unique_prefixed_and_documented() -> None:
    names = [var.name for var in ENV_VARS]
    assert len(names) == len(set(names))
    for var in ENV_VARS:
        assert var.name.startswith("CALLBOARD_")
        assert len(var.help) > 20, f"{var.name} needs a real description"


def test_cli_help_documents_every_variable() -> None:
    result = CliRunner().invoke(main, ["sidecar", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for var in ENV_VARS:
        assert var.name in result.output


def test_cli_refuses_bad_settings_with_the_variable_name() -> None:
    result = CliRunner().invoke(main, ["sidecar"], env={"CALLBOARD_CAPACITY": "none"})
    assert result.exit_code == 2
    assert "CALLBOARD_CAPACITY" in result.output
