"""Names the operator shares with the cluster: the resource, annotations, labels, reasons.

Every string another program may depend on (``kubectl``, dashboards, the cluster
autoscaler, the ReplicaSet controller) lives here, in one place.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ADOPTED_LABEL",
    "API_VERSION",
    "BUSY_LABEL",
    "DEFAULT_OPERATOR_CLASS",
    "DO_NOT_DISRUPT",
    "FINALIZER",
    "GROUP",
    "KIND",
    "MANAGED_BY_LABEL",
    "PLURAL",
    "POD_DELETION_COST",
    "POOL_LABEL",
    "REPORTING_COMPONENT",
    "SAFE_TO_EVICT",
    "SESSION_ANNOTATION",
    "VERSION",
]

GROUP: Final = "callboard.dev"
VERSION: Final = "v1alpha1"
PLURAL: Final = "agentsessions"
KIND: Final = "AgentSession"
API_VERSION: Final = f"{GROUP}/{VERSION}"

#: Held by every AgentSession the operator has seen: deletion becomes a close of the session.
FINALIZER: Final = "callboard.dev/close-session"
#: The operator class of an object without ``spec.operatorClass``, and the operator's default
#: (``--operator-class``): one release needs no setting, a second one names its own class.
DEFAULT_OPERATOR_CLASS: Final = "default"

#: ``{call_id}/{session_id}`` of a session started outside Kubernetes that an object mirrors.
#: Ids never contain ``/`` (see :func:`callboard.registry.validate_id`), so the value splits.
SESSION_ANNOTATION: Final = "callboard.dev/session"
#: Set to ``"true"`` on objects the operator created for sessions started elsewhere.
ADOPTED_LABEL: Final = "callboard.dev/adopted"
#: The label of every agent pod of a pool (the chart's Deployment sets it): the operator
#: annotates only pods that carry it, whatever a node record names (G11).
POOL_LABEL: Final = "callboard.dev/pool"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"

#: The ReplicaSet controller removes pods with the lowest cost first (beta since 1.22).
POD_DELETION_COST: Final = "controller.kubernetes.io/pod-deletion-cost"
#: The cluster autoscaler never removes a node that runs a pod with this set to "false".
SAFE_TO_EVICT: Final = "cluster-autoscaler.kubernetes.io/safe-to-evict"

#: Karpenter never voluntarily disrupts (consolidates, drifts) a node with a pod that has it.
DO_NOT_DISRUPT: Final = "karpenter.sh/do-not-disrupt"
#: ``"true"`` on an agent pod while it runs sessions: the chart's PodDisruptionBudget with
#: ``maxUnavailable: 0`` selects it, so the eviction API (node drains, Cluster Autoscaler,
#: Karpenter) refuses to evict a busy pod; the other PDB selects the pods without it.
BUSY_LABEL: Final = "callboard.dev/busy"

#: ``source.component`` and ``reportingComponent`` of the Events the operator posts.
REPORTING_COMPONENT: Final = "callboard-operator"
