"""One settings mechanism for every command: what a command reads is what its --help and the README say.

``callboard serve``, ``sidecar`` and ``operator`` build their settings from one typed class each
(:mod:`callboard.config`); these tests hold the three promises that makes: every variable a
command reads is in its ``--help``, a flag beats its variable which beats the default, and a
bad value is a usage error (exit code 2) that names the variable, never a traceback.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import operator
import os
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

import callboard
from callboard import config
from callboard.cli import main
from callboard.cli._options import update_readme
from callboard.errors import ConfigurationError
from callboard.kube.autoscaling.policy import Buffer, ScalingMode
from callboard.kube.settings import Settings
from callboard.server.node import ServeSettings
from callboard.sidecar.settings import SidecarSettings

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("serve", "sidecar", "operator")
SETTINGS: dict[str, type[Any]] = {"serve": ServeSettings, "sidecar": SidecarSettings, "operator": Settings}


class RecordingEnviron(dict[str, str]):
    """``os.environ`` that remembers every name looked up, however it is looked up."""

    def __init__(self, base: dict[str, str]) -> None:
        super().__init__(base)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return super().__contains__(key)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Settings each command would run with; the commands stop right there."""
    import callboard.cli.serve
    import callboard.cli.sidecar
    import callboard.kube.running.entrypoint

    seen: list[object] = []

    async def fake_run(settings: object, *args: object, **kwargs: object) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(callboard.cli.serve, "serve", fake_run)
    monkeypatch.setattr(callboard.cli.sidecar, "_run", fake_run)
    monkeypatch.setattr(callboard.kube.running.entrypoint, "run", fake_run)
    return seen


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    # Only the variables given: a CALLBOARD_* set in the developer's shell must not leak in.
    clean = {k: "" for k in os.environ if k.startswith("CALLBOARD_") or k.startswith("POD_")}
    return CliRunner().invoke(main, list(args), env=clean | (env or {}), terminal_width=200)


def help_text(command: str) -> str:
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_variable_a_command_reads_is_in_its_help(
    command: str, captured: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    environ = RecordingEnviron({k: v for k, v in os.environ.items() if not k.startswith("CALLBOARD_")})
    monkeypatch.setattr(os, "environ", environ)
    result = CliRunner().invoke(main, [command])
    assert result.exit_code == 0, result.output
    assert len(captured) == 1
    read = {name for name in environ.read if name.startswith("CALLBOARD_")}
    declared = {name for opt in config.options(SETTINGS[command]) for name in opt.env}
    assert declared & {n for n in declared if n.startswith("CALLBOARD_")} <= read, "options must be read"
    text = help_text(command)
    assert sorted(name for name in read if name not in text) == []


def _package_literals() -> Iterator[tuple[str, str]]:
    for info in pkgutil.walk_packages(callboard.__path__, "callboard."):
        module = importlib.util.find_spec(info.name)
        assert module is not None and module.origin is not None
        if not module.origin.endswith(".py"):
            continue
        tree = ast.parse(Path(module.origin).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for name in re.findall(r"\bCALLBOARD_[A-Z0-9_]*[A-Z0-9]\b", node.value):
                    yield info.name, name


def test_every_variable_named_in_the_code_is_in_some_help() -> None:
    """A variable read by a hand-written parser somewhere (as the autoscaler's once was) shows up here."""
    texts = [help_text(c) for c in (*COMMANDS, "sessions", "nodes", "demo")] + [invoke("--help").output]
    texts += [invoke(group, sub, "--help").output for group in ("sessions", "nodes") for sub in ("list",)]
    undocumented = {
        (module, name) for module, name in _package_literals() if not any(name in t for t in texts)
    }
    # The demo strips every CALLBOARD_* variable from its children's environment: a prefix, not a name.
    assert sorted(undocumented) == []


def test_operator_autoscale_variables_are_flags_too(captured: list[object]) -> None:
    text = help_text("operator")
    for opt in config.options(Settings):
        if opt.group == "autoscale":
            assert f"--{opt.flag}" in text and opt.name in text
    result = invoke(
        "operator",
        "--autoscale",
        "scale",
        "--autoscale-deployment",
        "agents",
        "--autoscale-buffer",
        "20%",
        env={"CALLBOARD_AUTOSCALE_MAX": "7", "POD_NAMESPACE": "voice"},
    )
    assert result.exit_code == 0, result.output
    (settings,) = captured
    assert isinstance(settings, Settings)
    auto = settings.autoscale
    assert (auto.mode, auto.deployment, auto.buffer) == (ScalingMode.SCALE, "agents", Buffer(percent=20))
    assert (auto.max_replicas, auto.namespace, settings.leader.namespace) == (7, "voice", "voice")


@pytest.mark.parametrize(
    ("command", "flag", "var", "env_value", "flag_value", "attr"),
    [
        ("serve", "--ttl", "CALLBOARD_TTL", "12", "9", "ttl"),
        (
            "serve",
            "--max-concurrent-sessions",
            "CALLBOARD_CAPACITY",
            "3",
            "5",
            "launcher.max_concurrent_sessions",
        ),
        (
            "serve",
            "--cors-origin",
            "CALLBOARD_CORS_ORIGINS",
            "http://a http://b",
            "http://c",
            "server.cors_origins",
        ),
        ("serve", "--no-access-log", "CALLBOARD_ACCESS_LOG", "true", "", "access_log"),
        ("sidecar", "--capacity", "CALLBOARD_CAPACITY", "4", "6", "node.capacity"),
        ("operator", "--lease-duration", "CALLBOARD_LEASE_DURATION", "30", "45", "leader.lease_duration"),
        ("operator", "--namespace", "CALLBOARD_NAMESPACES", "a,b", "c", "namespaces"),
        ("operator", "--pod-annotations", "CALLBOARD_POD_ANNOTATIONS", "off", "", "pods.enabled"),
        ("operator", "--autoscale-min", "CALLBOARD_AUTOSCALE_MIN", "2", "3", "autoscale.min_replicas"),
    ],
)
def test_flags_override_variables_which_override_defaults(
    captured: list[object], command: str, flag: str, var: str, env_value: str, flag_value: str, attr: str
) -> None:
    read = operator.attrgetter(attr)
    flag_args = [flag, flag_value] if flag_value else [flag]
    for args, env in (([], {}), ([], {var: env_value}), (flag_args, {var: env_value})):
        result = invoke(command, *args, env=env)
        assert result.exit_code == 0, result.output
    default, from_env, from_flag = (read(s) for s in captured)
    option = next(o for o in config.options(SETTINGS[command]) if var in o.env)
    assert default == option.default
    assert from_env == option.read(tuple(env_value.split()) if option.multiple else env_value) != default
    if option.boolean:
        expected_flag: object = not flag.startswith("--no-")
    else:
        expected_flag = option.read((flag_value,) if option.multiple else flag_value)
    assert from_flag == expected_flag != from_env


@pytest.mark.parametrize(
    ("command", "var", "value"),
    [
        ("serve", "CALLBOARD_PORT", "http"),
        ("serve", "CALLBOARD_IDLE_TIMEOUT", "-1"),
        ("serve", "CALLBOARD_MAX_SESSIONS_PER_CALL", "0"),
        ("serve", "CALLBOARD_ACCESS_LOG", "maybe"),
        ("serve", "CALLBOARD_TTL", "nan"),
        ("sidecar", "CALLBOARD_TTL", "soon"),
        ("sidecar", "CALLBOARD_CAPACITY", "0"),
        ("operator", "CALLBOARD_PLACEMENT", "random"),
        ("operator", "CALLBOARD_LIVENESS_PORT", "http"),
        ("operator", "CALLBOARD_AUTOSCALE_BUFFER", "lots"),
        ("operator", "CALLBOARD_AUTOSCALE", "hpa"),
        ("operator", "CALLBOARD_START_TIMEOUT", "0"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_variable(
    captured: list[object], command: str, var: str, value: str
) -> None:
    result = invoke(command, env={var: value})
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert var in result.output
    assert "Traceback" not in result.output
    assert captured == []


def test_a_bad_flag_value_names_the_flag_and_its_variable(captured: list[object]) -> None:
    result = invoke("serve", "--ttl", "soon")
    assert result.exit_code == 2
    assert "--ttl" in result.output and "CALLBOARD_TTL" in result.output


def test_build_names_the_variable_and_keeps_defaults_for_blank_values() -> None:
    with pytest.raises(ConfigurationError, match=r"CALLBOARD_TTL='x' \(--ttl\)"):
        config.build(ServeSettings, {"CALLBOARD_TTL": "x"})
    assert config.build(ServeSettings, {"CALLBOARD_TTL": "  "}) == ServeSettings()
    assert config.from_environ(ServeSettings, {"CALLBOARD_CAPACITY": "4"}) == {
        "CALLBOARD_MAX_CONCURRENT_SESSIONS": "4"
    }


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_every_default_as_the_settings_class_has_it(command: str) -> None:
    text = " ".join(help_text(command).split())
    for opt in config.options(SETTINGS[command]):
        assert f"[default: {opt.default_text}]" in text, opt.name


def test_readme_tables_are_the_generated_ones() -> None:
    readme = (ROOT / "README.md").read_text()
    assert update_readme(readme) == readme, "run: .venv/bin/python -m callboard.cli._options README.md"


def _public_classes() -> Iterator[tuple[str, str]]:
    for info in pkgutil.walk_packages(callboard.__path__, "callboard."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if not name.startswith("_") and getattr(value, "__module__", None) == info.name:
                yield name, info.name
        for name in ("ENV_VARS",):
            if name in vars(module):
                yield name, info.name


def test_every_settings_name_means_one_thing() -> None:
    defined: dict[str, set[str]] = {}
    for name, module in _public_classes():
        defined.setdefault(name, set()).add(module)
    settings_names = {n: m for n, m in defined.items() if n.endswith("Settings") or n == "ENV_VARS"}
    assert {n: sorted(m) for n, m in settings_names.items() if len(m) > 1} == {}
    assert "RegistrySettings" in settings_names and "NodeSettings" in settings_names


def test_every_command_option_comes_from_its_settings_class() -> None:
    """No hand-written option with a restated default: every option but --help is generated."""
    for command, cls in SETTINGS.items():
        cmd = main.get_command(click.Context(main), command)
        assert cmd is not None
        params = {p.name for p in cmd.params if isinstance(p, click.Option) and p.name != "help"}
        assert params == {opt.param for opt in config.options(cls)}, command


def test_groups_are_dataclasses_and_fields_are_typed() -> None:
    for cls in SETTINGS.values():
        assert dataclasses.is_dataclass(cls)
        for opt in config.options(cls):
            assert opt.name.startswith("CALLBOARD_"), opt
            assert len(opt.help) > 10, f"{opt.name} needs a real description"


def test_g9_serve_derives_its_drain_from_the_grace_period_and_refuses_one_that_does_not_fit() -> None:
    assert ServeSettings().drain == 20.0  # 30 s grace - 5 close - 3 stop - 2 margin
    assert ServeSettings(grace_period=60.0).drain == 50.0
    assert ServeSettings(drain_timeout=5.0).drain == 5.0
    with pytest.raises(ConfigurationError, match="at most 20s"):
        ServeSettings(drain_timeout=25.0)
    with pytest.raises(ConfigurationError, match="leaves no time to drain"):
        ServeSettings(grace_period=8.0)
