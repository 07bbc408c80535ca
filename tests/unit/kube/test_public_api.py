"""callboard.kube exports exactly what ``__all__`` lists, and the CLI knows the operator."""

from __future__ import annotations

from click.testing import CliRunner

import callboard.kube
from callboard.cli import main
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
    from callboard.cli.operator import _split_namespaces

    assert _split_namespaces(("a,b", "c", "a")) == ("a", "b", "c")
    assert Settings(namespaces=("x",)).watches("x") and not Settings(namespaces=("x",)).watches("y")
    assert Settings().clusterwide and Settings().watches("anything")
