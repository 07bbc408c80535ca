"""Write the schemas the offline manifest validation uses (``schemas/``).

    .venv/bin/python -m tests.e2e.chart.refresh_schemas

- ``schemas/kubernetes.json``: fetched from a real kube-apiserver (the local control plane
  of the e2e tier, started for the purpose, or ``$KUBECONFIG``'s cluster), trimmed to the
  kinds of :data:`~tests.e2e.chart.k8s_schemas.KINDS`.
- ``schemas/crds/``: the ServiceMonitor and ScaledObject CRDs from the prometheus-operator
  and KEDA Go modules, downloaded through the Go module proxy (``go mod download``).

Run it after bumping the Kubernetes version of ``tests/k8s`` or the versions below.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.chart.k8s_schemas import CRD_DIR, KINDS, KUBERNETES_SCHEMAS, strip_descriptions, trim
from tests.support import kube as kh

#: Go module, version, CRD file inside the module.
CRD_SOURCES = (
    (
        "github.com/prometheus-operator/prometheus-operator",
        "v0.85.0",
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
    ),
    ("github.com/kedacore/keda/v2", "v2.21.0", "config/crd/bases/keda.sh_scaledobjects.yaml"),
)


def fetch_kubernetes(kube: kh.KubeEnv) -> dict[str, Any]:
    documents = {
        path: json.loads(kube.kubectl("get", "--raw", f"/openapi/v3/{path}").stdout)
        for path in sorted(set(KINDS.values()))
    }
    version = json.loads(kube.kubectl("get", "--raw", "/version").stdout)["gitVersion"]
    return {"version": version, **trim(documents)}


def write_kubernetes() -> None:
    existing = kh.existing_kubeconfig()
    if existing:
        trimmed = fetch_kubernetes(kh.for_existing_cluster(existing))
    else:
        with kh.local_control_plane() as kube:
            trimmed = fetch_kubernetes(kube)
    KUBERNETES_SCHEMAS.write_text(json.dumps(trimmed, indent=1, sort_keys=True) + "\n")
    print(f"wrote {KUBERNETES_SCHEMAS} ({trimmed['version']}, {len(trimmed['schemas'])} schemas)")


def write_crds() -> None:
    go = os.environ.get("GO") or "/usr/local/go/bin/go"
    CRD_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([go, "mod", "init", "local/crds"], cwd=tmp, check=True, capture_output=True)
        for module, version, path in CRD_SOURCES:
            out = subprocess.run(
                [go, "mod", "download", "-json", f"{module}@{version}"],
                cwd=tmp,
                check=True,
                capture_output=True,
                text=True,
            )
            source = Path(json.loads(out.stdout)["Dir"]) / path
            crd = strip_descriptions(yaml.safe_load(source.read_text()))
            crd["metadata"] = {"name": crd["metadata"]["name"]}
            target = CRD_DIR / f"{crd['metadata']['name']}.yaml"
            header = (
                f"# {module}@{version} {path}, descriptions removed (tests/e2e/chart/refresh_schemas.py)\n"
            )
            target.write_text(header + yaml.safe_dump(crd, sort_keys=False))
            print(f"wrote {target}")


if __name__ == "__main__":
    write_crds()
    write_kubernetes()
