"""Fixtures of the chart tests: Helm, rendering, the offline schema validator.

Rendering needs only the helm binary (``.cache/k8s-tools/bin/helm``, built by
``make k8s-tools``, else ``helm`` on PATH); the install and autoscaling tests use the real
API server of ``kube_env``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import kube as kh

from .k8s_schemas import ManifestValidator

CHART = kh.REPO_ROOT / "charts" / "callboard"
VALUES_DIR = Path(__file__).resolve().parent / "values"
#: The values sets rendered and validated: the defaults plus every file in values/.
VALUE_SETS = ["default", *sorted(p.stem for p in VALUES_DIR.glob("*.yaml"))]

Render = Callable[..., list[dict[str, Any]]]


class HelmError(RuntimeError):
    pass


@pytest.fixture(scope="session")
def helm_bin() -> str:
    built = kh.tools_dir() / "helm"
    if os.access(built, os.X_OK):
        return str(built)
    found = shutil.which("helm")
    if found:
        return found
    pytest.fail("no helm: run `make k8s-tools` (builds .cache/k8s-tools/bin/helm) or put helm on PATH")


def run_helm(helm_bin: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [helm_bin, *args], capture_output=True, text=True, cwd=kh.REPO_ROOT, timeout=120, check=False
    )
    if check and proc.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def values_args(value_set: str) -> list[str]:
    return [] if value_set == "default" else ["-f", str(VALUES_DIR / f"{value_set}.yaml")]


@pytest.fixture(scope="session")
def render(helm_bin: str) -> Render:
    """``render(*helm_args, release="cb", namespace="ns")``: the objects of ``helm template``."""

    def render(
        *args: str, release: str = "cb", namespace: str = "ns", crds: bool = False
    ) -> list[dict[str, Any]]:
        extra = ["--include-crds"] if crds else []
        out = run_helm(
            helm_bin, "template", release, str(CHART), "--namespace", namespace, *extra, *args
        ).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    return render


@pytest.fixture(scope="session")
def validator() -> ManifestValidator:
    return ManifestValidator()


def find(docs: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, (
        f"{len(matches)} {kind} {name or ''} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    )
    return matches[0]


def containers(docs: Sequence[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(deployment name, pod spec, container) of every container of every Deployment."""
    out = []
    for d in docs:
        if d["kind"] == "Deployment":
            spec = d["spec"]["template"]["spec"]
            for c in spec.get("initContainers", []) + spec["containers"]:
                out.append((d["metadata"]["name"], spec, c))
    return out


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """name -> value (or the valueFrom mapping) of a container's env."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
