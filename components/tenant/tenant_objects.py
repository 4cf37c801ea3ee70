"""Objects inside the tenant cluster: RBAC builders and one way to register a manifest.

The node-join and add-on components describe what they create as plain manifests (dicts in the
Kubernetes API's shape, built by pure functions and tested without Pulumi). `create_object` turns
one manifest into the matching pulumi-kubernetes resource, so the manifest a test reads is the
object the provider sends.
"""

from __future__ import annotations

import re
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.common.names import KUBE_SYSTEM
from components.common.podspec import Manifest

RBAC_API = "rbac.authorization.k8s.io/v1"
RBAC_GROUP = "rbac.authorization.k8s.io"
# Add-ons run on nodes that join after `pulumi up`: waiting for their pods would time out.
SKIP_AWAIT = {"pulumi.com/skipAwait": "true"}

# The groups kubeadm's node-join RBAC names (cmd/kubeadm/app/constants).
BOOTSTRAPPERS_GROUP = "system:bootstrappers:kubeadm:default-node-token"
NODES_GROUP = "system:nodes"
ANONYMOUS_USER = "system:anonymous"

# Every kind these components create, by (apiVersion, kind).
_RESOURCE_CLASSES: dict[tuple[str, str], Any] = {
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "Endpoints"): k8s.core.v1.Endpoints,
    ("discovery.k8s.io/v1", "EndpointSlice"): k8s.discovery.v1.EndpointSlice,
    (RBAC_API, "Role"): k8s.rbac.v1.Role,
    (RBAC_API, "RoleBinding"): k8s.rbac.v1.RoleBinding,
    (RBAC_API, "ClusterRole"): k8s.rbac.v1.ClusterRole,
    (RBAC_API, "ClusterRoleBinding"): k8s.rbac.v1.ClusterRoleBinding,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("apps/v1", "DaemonSet"): k8s.apps.v1.DaemonSet,
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicy",
    ): k8s.admissionregistration.v1.ValidatingAdmissionPolicy,
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicyBinding",
    ): k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding,
}


def group(name: str) -> Manifest:
    return {"kind": "Group", "apiGroup": RBAC_GROUP, "name": name}


def user(name: str) -> Manifest:
    return {"kind": "User", "apiGroup": RBAC_GROUP, "name": name}


def service_account(name: str, namespace: str) -> Manifest:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def rule(
    api_groups: list[str],
    resources: list[str],
    verbs: list[str],
    resource_names: list[str] | None = None,
) -> Manifest:
    result: Manifest = {"apiGroups": api_groups, "resources": resources, "verbs": verbs}
    if resource_names:
        result["resourceNames"] = resource_names
    return result


def metadata(name: str, namespace: str | None = None, **labels: str) -> Manifest:
    result: Manifest = {"name": name}
    if namespace is not None:
        result["namespace"] = namespace
    if labels:
        result["labels"] = dict(labels)
    return result


def role(name: str, namespace: str, rules: list[Manifest]) -> Manifest:
    return {
        "apiVersion": RBAC_API,
        "kind": "Role",
        "metadata": metadata(name, namespace),
        "rules": rules,
    }


def role_binding(name: str, namespace: str, role_name: str, subjects: list[Manifest]) -> Manifest:
    return {
        "apiVersion": RBAC_API,
        "kind": "RoleBinding",
        "metadata": metadata(name, namespace),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": role_name},
        "subjects": subjects,
    }


def cluster_role(name: str, rules: list[Manifest]) -> Manifest:
    return {
        "apiVersion": RBAC_API,
        "kind": "ClusterRole",
        "metadata": metadata(name),
        "rules": rules,
    }


def cluster_role_binding(name: str, cluster_role_name: str, subjects: list[Manifest]) -> Manifest:
    return {
        "apiVersion": RBAC_API,
        "kind": "ClusterRoleBinding",
        "metadata": metadata(name),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": cluster_role_name},
        "subjects": subjects,
    }


def config_map(name: str, namespace: str, data: Any) -> Manifest:
    """A ConfigMap; `data` may be a dict or a Pulumi output of one."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(name, namespace),
        "data": data,
    }


def node_daemonset(
    name: str, pod_labels: dict[str, str], pod_spec: Manifest, namespace: str = KUBE_SYSTEM
) -> Manifest:
    """A DaemonSet (in kube-system unless told) that runs `pod_spec` on every node, rolled node
    by node."""
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {**metadata(name, namespace, **pod_labels), "annotations": dict(SKIP_AWAIT)},
        "spec": {
            "selector": {"matchLabels": dict(pod_labels)},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {"metadata": {"labels": dict(pod_labels)}, "spec": pod_spec},
        },
    }


def _snake_case(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def create_object(
    resource_name: str, manifest: Manifest, opts: pulumi.ResourceOptions
) -> pulumi.CustomResource:
    """Register `manifest` as its pulumi-kubernetes resource.

    Top-level fields become the resource's arguments (`roleRef` -> `role_ref`); their values
    may be Pulumi outputs. Nested fields keep the API's camelCase, which the provider takes as is.
    """
    return _register(_RESOURCE_CLASSES, resource_name, manifest, opts)


def _register(
    classes: dict[tuple[str, str], Any],
    resource_name: str,
    manifest: Manifest,
    opts: pulumi.ResourceOptions,
) -> pulumi.CustomResource:
    key = (manifest["apiVersion"], manifest["kind"])
    if key not in classes:
        raise ValueError(f"no resource class for {key[0]} {key[1]}")
    arguments = {
        _snake_case(field): value
        for field, value in manifest.items()
        if field not in ("apiVersion", "kind")
    }
    resource: pulumi.CustomResource = classes[key](resource_name, **arguments, opts=opts)
    return resource
