"""What the real-pod tests do as a user would: kubectl and helm on one release.

A :class:`Release` is one ``helm install`` of charts/callboard with the agent pool (the demo
agent image beside the real sidecar) and the bundled Redis, in a namespace that enforces
Pod Security ``restricted``. Its helpers wrap the kubectl calls the tests make and print
the latencies they measure (never asserted on: speed goes to bench/).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.kube import KubeEnv

CHART = "charts/callboard"


def _print(line: str) -> None:
    print(line, flush=True)


#: Where measured latencies go (the tests' conftest points it past pytest's capturing).
REPORT: list[Callable[[str], None]] = [_print]


def timed(what: str, started: float) -> float:
    took = time.monotonic() - started
    REPORT[0](f"[real-pods] {what}: {took:.2f}s")
    return took


@dataclass
class Release:
    kube: KubeEnv
    namespace: str
    name: str
    values_file: Path
    figures: dict[str, float] = field(default_factory=dict)

    # ---- helm

    def install(self, *extra: str) -> None:
        started = time.monotonic()
        self.kube.helm(
            "install", self.name, CHART, "-n", self.namespace, "-f", str(self.values_file),
            # The CRD is kept on uninstall: an earlier run's release (another namespace) owns it.
            "--take-ownership", "--wait", "--timeout", "6m", *extra, timeout=420,
        )  # fmt: skip
        self.figures["helm install --wait"] = timed("helm install --wait", started)

    def upgrade(self, *extra: str) -> None:
        started = time.monotonic()
        self.kube.helm(
            "upgrade", self.name, CHART, "-n", self.namespace, "-f", str(self.values_file),
            "--wait", "--timeout", "6m", *extra, timeout=420,
        )  # fmt: skip
        self.figures["helm upgrade --wait"] = timed("helm upgrade --wait", started)

    # ---- names

    @property
    def full_name(self) -> str:
        return self.name if "callboard" in self.name else f"{self.name}-callboard"

    @property
    def agent_deployment(self) -> str:
        deps = self.kubectl_json("get", "deploy", "-l", "app.kubernetes.io/component=agent")["items"]
        assert len(deps) == 1, [d["metadata"]["name"] for d in deps]
        return str(deps[0]["metadata"]["name"])

    # ---- kubectl

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120.0) -> Any:
        return self.kube.kubectl("-n", self.namespace, *args, check=check, timeout=timeout)

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def pods(self, component: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kubectl_json(
            "get", "pods", "-l", f"app.kubernetes.io/component={component}"
        )["items"]
        return items

    def running_pod_names(self, component: str) -> list[str]:
        return sorted(
            p["metadata"]["name"]
            for p in self.pods(component)
            if not p["metadata"].get("deletionTimestamp") and _ready(p)
        )

    def apply_session(self, name: str, call_id: str, **spec: Any) -> None:
        manifest = {
            "apiVersion": "callboard.dev/v1alpha1",
            "kind": "AgentSession",
            "metadata": {"name": name},
            "spec": {"callId": call_id, **spec},
        }
        self.kube.kubectl("apply", "-n", self.namespace, "-f", "-", input=json.dumps(manifest))

    def session(self, name: str) -> dict[str, Any] | None:
        proc = self.kubectl("get", "ags", name, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def wait_phase(self, name: str, phase: str, timeout: float = 90.0) -> dict[str, Any]:
        proc = self.kubectl(
            "wait", f"ags/{name}", f"--for=jsonpath={{.status.phase}}={phase}", f"--timeout={timeout:.0f}s",
            check=False, timeout=timeout + 30,
        )  # fmt: skip
        obj = self.session(name)
        assert proc.returncode == 0, (
            f"ags/{name} not {phase} within {timeout:.0f}s: {proc.stderr}\nnow: {obj}"
        )
        assert obj is not None
        return obj

    def wait_gone(self, kind_name: str, timeout: float = 120.0) -> None:
        proc = self.kubectl(
            "wait", kind_name, "--for=delete", f"--timeout={timeout:.0f}s", check=False, timeout=timeout + 30
        )
        assert proc.returncode == 0 or "NotFound" in proc.stderr, f"{kind_name} still there: {proc.stderr}"

    def agent_log(self, pod: str, *, previous: bool = False) -> list[dict[str, Any]]:
        """The demo agent's JSON lines (``kubectl logs <pod> -c agent``)."""
        args = ["logs", pod, "-c", "agent", *(["--previous"] if previous else [])]
        lines = []
        for line in self.kubectl(*args).stdout.splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines


def _ready(pod: dict[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def write_values(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path
