"""The vendored schemas of the offline validation are what the real API server serves."""

from __future__ import annotations

import json

from tests.support.kube import KubeEnv

from .conftest import VALUE_SETS, Render, values_args
from .k8s_schemas import KUBERNETES_SCHEMAS, ManifestValidator
from .refresh_schemas import fetch_kubernetes


def test_vendored_kubernetes_schemas_match_the_api_server(kube_env: KubeEnv, render: Render) -> None:
    vendored = json.loads(KUBERNETES_SCHEMAS.read_text())
    live = fetch_kubernetes(kube_env)
    if vendored["version"] == live["version"]:
        assert vendored["kinds"] == live["kinds"]
        assert vendored["schemas"] == live["schemas"], (
            "stale: run `python -m tests.e2e.chart.refresh_schemas`"
        )
        return
    # Another cluster ($KUBECONFIG): the chart must be valid against its schemas as well.
    validator = ManifestValidator(live)
    errors = [
        e for value_set in VALUE_SETS for d in render(*values_args(value_set)) for e in validator.errors(d)
    ]
    assert errors == [], f"invalid for {live['version']}"
