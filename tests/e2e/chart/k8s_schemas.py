"""Offline validation of rendered manifests against the Kubernetes API's own schemas.

``schemas/kubernetes.json`` holds the OpenAPI v3 component schemas that a real
kube-apiserver (the version the e2e tier runs) serves under ``/openapi/v3/<group-version>``,
trimmed to what the chart's kinds reach and without descriptions; ``schemas/crds/`` holds
the CustomResourceDefinitions of the third-party kinds the chart can render (ServiceMonitor
from prometheus-operator, ScaledObject from KEDA), likewise without descriptions. Both are
written by ``refresh_schemas.py``; ``test_schemas.py`` checks the first against the live
API server.

Validation is strict like ``kubectl apply --validate=strict`` (and kubeconform ``-strict``):
an object schema with properties rejects unknown fields, unless it preserves them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
KUBERNETES_SCHEMAS = SCHEMA_DIR / "kubernetes.json"
CRD_DIR = SCHEMA_DIR / "crds"

#: apiVersion/kind -> the OpenAPI v3 document (path under /openapi/v3) that defines it.
KINDS: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "api/v1",
    ("v1", "Namespace"): "api/v1",
    ("v1", "Secret"): "api/v1",
    ("v1", "Service"): "api/v1",
    ("v1", "ServiceAccount"): "api/v1",
    ("apps/v1", "Deployment"): "apis/apps/v1",
    ("coordination.k8s.io/v1", "Lease"): "apis/coordination.k8s.io/v1",
    ("policy/v1", "PodDisruptionBudget"): "apis/policy/v1",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "apis/rbac.authorization.k8s.io/v1",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "apis/rbac.authorization.k8s.io/v1",
    ("rbac.authorization.k8s.io/v1", "Role"): "apis/rbac.authorization.k8s.io/v1",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "apis/rbac.authorization.k8s.io/v1",
    ("networking.k8s.io/v1", "NetworkPolicy"): "apis/networking.k8s.io/v1",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "apis/autoscaling/v2",
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): "apis/apiextensions.k8s.io/v1",
    ("flowcontrol.apiserver.k8s.io/v1", "FlowSchema"): "apis/flowcontrol.apiserver.k8s.io/v1",
}

_REF_PREFIX = "#/components/schemas/"
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            yield ref.removeprefix(_REF_PREFIX)
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def strip_descriptions(node: Any) -> Any:
    """The schema without prose: ``description`` keys whose value is text (a property named
    ``description`` maps to a schema object and stays)."""
    if isinstance(node, dict):
        return {
            k: strip_descriptions(v)
            for k, v in node.items()
            if not (k == "description" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def gvk_name(schemas: Mapping[str, Any], api_version: str, kind: str) -> str:
    """The component schema named by ``x-kubernetes-group-version-kind`` for a kind."""
    group, _, version = api_version.rpartition("/")
    for name, schema in schemas.items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            if (gvk.get("group", ""), gvk.get("version"), gvk.get("kind")) == (group, version, kind):
                return name
    raise KeyError(f"no schema for {api_version} {kind}")


def trim(
    documents: Mapping[str, Mapping[str, Any]], kinds: Iterable[tuple[str, str]] = KINDS
) -> dict[str, Any]:
    """From the OpenAPI v3 documents by group-version path, what validating ``kinds`` needs.

    Returns ``{"kinds": {"<apiVersion>/<kind>": schema name}, "schemas": {...}}`` with every
    schema the kinds reach through ``$ref`` and no descriptions.
    """
    index: dict[str, str] = {}
    found: dict[str, Any] = {}
    for api_version, kind in sorted(kinds):
        schemas = documents[KINDS[(api_version, kind)]]["components"]["schemas"]
        root = gvk_name(schemas, api_version, kind)
        index[f"{api_version}/{kind}"] = root
        todo = [root]
        while todo:
            name = todo.pop()
            if name in found:
                continue
            found[name] = strip_descriptions(schemas[name])
            todo.extend(_refs(found[name]))
    return {"kinds": index, "schemas": dict(sorted(found.items()))}


def _strict(node: Any) -> Any:
    """Reject unknown fields wherever a schema lists its properties (kubectl's strict mode)."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


class ManifestValidator:
    """Validates objects against the vendored schemas; :meth:`errors` lists what is wrong."""

    def __init__(self, kubernetes: Mapping[str, Any] | None = None) -> None:
        """``kubernetes``: as :func:`trim` returns it (plus ``version``); default: the vendored file."""
        vendored = kubernetes if kubernetes is not None else json.loads(KUBERNETES_SCHEMAS.read_text())
        self.kubernetes_version: str = vendored["version"]
        components = {"schemas": _strict(vendored["schemas"])}
        self._validators: dict[tuple[str, str], Any] = {}
        for key, name in vendored["kinds"].items():
            api_version, _, kind = key.rpartition("/")
            root = {"components": components, "$ref": f"{_REF_PREFIX}{name}"}
            self._validators[(api_version, kind)] = jsonschema_rs.Draft4Validator(root)
        for path in sorted(CRD_DIR.glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                # The API server checks metadata as ObjectMeta whatever the CRD says.
                schema.setdefault("properties", {})["metadata"] = {"$ref": f"{_REF_PREFIX}{_OBJECT_META}"}
                schema["properties"]["apiVersion"] = {"type": "string"}
                schema["properties"]["kind"] = {"type": "string"}
                root = {"components": components, **_strict(schema)}
                self._validators[(f"{group}/{version['name']}", kind)] = jsonschema_rs.Draft4Validator(root)

    def kinds(self) -> set[tuple[str, str]]:
        return set(self._validators)

    def errors(self, obj: Mapping[str, Any]) -> list[str]:
        key = (str(obj.get("apiVersion")), str(obj.get("kind")))
        validator = self._validators.get(key)
        name = (obj.get("metadata") or {}).get("name")
        if validator is None:
            return [f"{key[0]} {key[1]} {name}: no schema for this kind"]
        return [
            f"{key[1]} {name}: {'/'.join(str(p) for p in error.instance_path) or '(root)'}: {error.message}"
            for error in validator.iter_errors(dict(obj))
        ]
