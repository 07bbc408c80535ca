"""callboard.kube exports exactly what ``__all__`` lists, and the CLI knows the operator."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import callboard.kube
from callboard.cli import main
from callboard.kube.autoscaling.policy import ScalingMode
from callboard.kube.settings import Settings


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in vars(callboard.kube) if not n.startswith("_")} - {"annotations"}
    modules = {n for n in public if type(getattr(callboard.kube, n)).__name__ == "module"}
    assert set(callboard.kube.__all__) == public - modules


def test_operator_command_documents_its_environment() -> None:
    result = CliRunner().invoke(main, ["operator", "--help"])
    assert result.exit_code == 0, result.output
    for var in (
        "CALLBOARD_NAMESPACES",
        "CALLBOARD_REDIS_URL",
        "CALLBOARD_KEY_PREFIX",
        "CALLBOARD_ADOPT_NAMESPACE",
    ):
        assert var in result.output


def test_bad_settings_are_a_usage_error() -> None:
    result = CliRunner().invoke(
        main, ["operator", "--namespace", "a", "--adopt-namespace", "b", "--no-leader-election"]
    )
    assert result.exit_code == 2
    assert "adoption namespace 'b' must be one of the watched namespaces" in result.output
    result = CliRunner().invoke(main, ["operator", "--start-timeout", "60", "--ttl", "30"])
    assert result.exit_code == 2 and "registry ttl must be >= the start timeout" in result.output


def test_namespaces_from_the_environment_split_on_commas(monkeypatch: object) -> None:
    from callboard import config

    environ = {"CALLBOARD_NAMESPACES": "a,b c a"}
    assert config.build(Settings, config.from_environ(Settings, environ)).namespaces == ("a", "b", "c")
    assert Settings(namespaces=("x",)).watches("x") and not Settings(namespaces=("x",)).watches("y")
    assert Settings().clusterwide and Settings().watches("anything")


def test_operator_reads_the_autoscaler_settings_the_chart_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    import callboard.kube.running.entrypoint

    seen: list[Settings] = []

    async def fake_run(settings: Settings) -> None:
        seen.append(settings)

    monkeypatch.setattr(callboard.kube.running.entrypoint, "run", fake_run)
    env = {
        "CALLBOARD_AUTOSCALE": "scale",
        "CALLBOARD_AUTOSCALE_NAMESPACE": "agents",
        "CALLBOARD_AUTOSCALE_DEPLOYMENT": "pool-default",
        "CALLBOARD_AUTOSCALE_POOL": "default",
        "CALLBOARD_AUTOSCALE_MIN": "2",
        "CALLBOARD_AUTOSCALE_MAX": "8",
        "CALLBOARD_AUTOSCALE_BUFFER": "20%",
        "CALLBOARD_AUTOSCALE_CAPACITY": "4",
    }
    result = CliRunner().invoke(main, ["operator", "--no-leader-election"], env=env)
    assert result.exit_code == 0, result.output
    [settings] = seen
    scale = settings.autoscale
    assert scale.mode is ScalingMode.SCALE
    assert (scale.namespace, scale.deployment, scale.min_replicas, scale.max_replicas) == (
        "agents",
        "pool-default",
        2,
        8,
    )
    assert scale.buffer.percent == 20

    result = CliRunner().invoke(main, ["operator"], env={**env, "CALLBOARD_AUTOSCALE_MIN": "9"})
    assert result.exit_code == 2


def test_autoscaler_is_off_unless_configured() -> None:
    assert Settings().autoscale.mode is ScalingMode.OFF
