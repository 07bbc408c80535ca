"""A real Kubernetes API for the e2e tests and the operator benchmark, split by job.

- :mod:`.tools`: the binaries (``tests/k8s/build-tools.sh``), which are missing, building them;
- :mod:`.pki`: the control plane's CA and certificates;
- :mod:`.control_plane`: etcd, kube-apiserver, controller-manager, scheduler and kwok as
  local processes (:func:`local_control_plane`);
- :mod:`.probes`: HTTP readiness probes and JSON calls that close every answer;
- :mod:`.env`: :class:`KubeEnv`, how tests reach the cluster (kubeconfig, kubectl, helm),
  for the local control plane or an existing cluster named by ``$KUBECONFIG``.

The e2e fixtures (``kube_env``, ``kube_api``, ``kube_namespace``) are in
``tests/e2e/conftest.py``, the real-node tier's (``real_kube``) in ``tests/e2e_real/conftest.py``;
both are built from :class:`ClusterTier` and this package.
"""

from __future__ import annotations

from tests.support.kube.control_plane import ControlPlane, local_control_plane
from tests.support.kube.env import (
    ClusterTier,
    CommandError,
    KubeEnv,
    Progress,
    StartupError,
    existing_kubeconfig,
    for_existing_cluster,
    random_suffix,
)
from tests.support.kube.probes import api_call, http_ok
from tests.support.kube.tools import ToolsError, ensure_tools, missing_tools, tools_dir
from tests.support.paths import REPO_ROOT

__all__ = [
    "REPO_ROOT",
    "ClusterTier",
    "CommandError",
    "ControlPlane",
    "KubeEnv",
    "Progress",
    "StartupError",
    "ToolsError",
    "api_call",
    "ensure_tools",
    "existing_kubeconfig",
    "for_existing_cluster",
    "http_ok",
    "local_control_plane",
    "missing_tools",
    "random_suffix",
    "tools_dir",
]
