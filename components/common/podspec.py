"""Pieces every control plane pod shares: the restricted security contexts, volumes, probes.

All of them are plain dicts in the Kubernetes API's shape, so a manifest can be read, compared
and tested without the Pulumi runtime.
"""

from __future__ import annotations

import json
from typing import Any

# The UID/GID of distroless "nonroot"; the upstream images run fine as any non-root user.
NON_ROOT_ID = 65532
# Secrets are readable by the owner only; fsGroup gives the pod's group read access.
SECRET_FILE_MODE = 0o400

Manifest = dict[str, Any]


def pod_security_context() -> Manifest:
    """Pod Security "restricted", at the pod level."""
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_ID,
        "runAsGroup": NON_ROOT_ID,
        "fsGroup": NON_ROOT_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Manifest:
    """Pod Security "restricted", plus a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def secret_volume(name: str, secret_name: str) -> Manifest:
    return {"name": name, "secret": {"secretName": secret_name, "defaultMode": SECRET_FILE_MODE}}


def config_map_volume(name: str, config_map_name: str) -> Manifest:
    return {"name": name, "configMap": {"name": config_map_name, "defaultMode": 0o444}}


def empty_dir_volume(name: str, size_limit: str) -> Manifest:
    return {"name": name, "emptyDir": {"sizeLimit": size_limit}}


def mount(name: str, path: str, read_only: bool = True) -> Manifest:
    return {"name": name, "mountPath": path, "readOnly": read_only}


def https_probe(
    path: str, port: int, *, period: int = 10, failures: int = 3, timeout: int = 15
) -> Manifest:
    """An HTTPS probe to the pod IP (the default host), as the kubelet sends it."""
    return {
        "httpGet": {"path": path, "port": port, "scheme": "HTTPS"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def http_probe(
    path: str, port: int, *, period: int = 10, failures: int = 3, timeout: int = 15
) -> Manifest:
    probe = https_probe(path, port, period=period, failures=failures, timeout=timeout)
    probe["httpGet"]["scheme"] = "HTTP"
    return probe


def pod_env_from_field(name: str, field_path: str) -> Manifest:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}


def resources(cpu: str, memory: str) -> Manifest:
    # Requests only: a CPU limit throttles the apiserver under load; memory is left to the
    # namespace's LimitRange where the infrastructure team sets one.
    return {"requests": {"cpu": cpu, "memory": memory}}


def spread_over_nodes(selector_labels: dict[str, str], weight: int = 100) -> Manifest:
    """Prefer one pod per node; a single-node infrastructure cluster still schedules them."""
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": weight,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": selector_labels},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    }


def pod_disruption_budget_spec(selector_labels: dict[str, str], replicas: int) -> Manifest:
    """Keep a quorum (etcd) or a serving replica during voluntary disruptions.

    One replica may always go, so a single-replica control plane never blocks a node drain.
    """
    return {
        "maxUnavailable": max(1, (replicas - 1) // 2),
        "selector": {"matchLabels": selector_labels},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }


# pulumi-kubernetes 4.25.0's own await for a StatefulSet or Deployment update can end at once:
# it may read the status the controller wrote for the previous spec, which still looks rolled
# out (fixed upstream for StatefulSets after 4.25.0; seen here on the etcd StatefulSet and on the
# controller-manager's and scheduler's Deployments). Conditions under this annotation replace
# that await, and each waits first for status.observedGeneration to reach metadata.generation,
# i.e. for the controller to have seen the new spec.
WAIT_FOR_ANNOTATION = "pulumi.com/waitFor"
ROLLED_OUT_FIELDS = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")


def rollout_wait_for(replicas: int) -> dict[str, str]:
    """The annotation that holds `pulumi up` until a StatefulSet's or Deployment's rollout is
    done: exactly `replicas` pods, all of the new spec, Ready and available (old ones gone); at
    zero, until the controller has seen the scale-down (the counts are then left out)."""
    if replicas == 0:
        conditions = ["jsonpath={.spec.replicas}=0"]
    else:
        conditions = [f"jsonpath={{.status.{field}}}={replicas}" for field in ROLLED_OUT_FIELDS]
    return {WAIT_FOR_ANNOTATION: json.dumps(conditions)}


def with_rollout_wait(metadata: Manifest, replicas: int) -> Manifest:
    """Workload metadata with `rollout_wait_for(replicas)` among its annotations."""
    annotations = {**metadata.get("annotations", {}), **rollout_wait_for(replicas)}
    return {**metadata, "annotations": annotations}


def deployment_spec(
    selector_labels: dict[str, str],
    replicas: int,
    container: Manifest,
    volumes: list[Manifest],
) -> Manifest:
    """A control plane Deployment: restricted, spread over nodes, no infrastructure API token."""
    return {
        "replicas": replicas,
        "selector": {"matchLabels": selector_labels},
        # A new replica must be Ready before an old one goes.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": {
            "metadata": {"labels": selector_labels},
            "spec": {
                # The pods talk to the tenant's API, never to the infrastructure cluster's.
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": pod_security_context(),
                "affinity": spread_over_nodes(selector_labels),
                "containers": [container],
                "volumes": volumes,
            },
        },
    }
