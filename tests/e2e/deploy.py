"""Deploy the real program to a real cluster without the Pulumi engine.

The program runs under Pulumi's mock runtime (tests/harness.py, real keys and certificates);
every Kubernetes object it declares is collected with its resolved inputs and applied with
server-side apply, in dependency order, as the tenant user. That is what pulumi-kubernetes
would send; only the engine's bookkeeping is missing.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import MockState, ProgramRun, RegisteredResource, run_program

FIELD_MANAGER = "pulumi-kubernetes"

# Helm's install order, trimmed to what the program declares: what others mount or select
# comes first, so a pod never starts without its Secret.
KIND_ORDER = [
    "NetworkPolicy",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "Endpoints",
    "EndpointSlice",
    "PodDisruptionBudget",
    "DaemonSet",
    "StatefulSet",
    "Deployment",
    "Ingress",
]
INFRA_PROVIDER = "infra"


def as_manifest(value: Any) -> Any:
    """Inputs as the API expects them: the mock runtime hands numbers over as floats."""
    if isinstance(value, dict):
        return {key: as_manifest(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_manifest(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def secret_with_data(manifest: dict[str, Any]) -> dict[str, Any]:
    """stringData as data, as pulumi-kubernetes sends it: the API never stores stringData, so
    applying it again would always look like a change."""
    if manifest["kind"] != "Secret" or "stringData" not in manifest:
        return manifest
    converted = {key: value for key, value in manifest.items() if key != "stringData"}
    converted["data"] = {
        key: base64.b64encode(value.encode()).decode()
        for key, value in manifest["stringData"].items()
    }
    return converted


def manifests_of(resources: list[RegisteredResource]) -> list[dict[str, Any]]:
    manifests = [secret_with_data(as_manifest(resource.inputs)) for resource in resources]
    unknown = {m["kind"] for m in manifests} - set(KIND_ORDER)
    if unknown:
        raise ValueError(f"no apply order known for kinds {sorted(unknown)}")
    return sorted(manifests, key=lambda m: (KIND_ORDER.index(m["kind"]), m["metadata"]["name"]))


@dataclass
class Deployment:
    run: ProgramRun
    manifests: list[dict[str, Any]]  # for the infrastructure cluster (the tenant namespace)
    tenant_manifests: list[dict[str, Any]]  # for the tenant cluster, once its API answers

    @property
    def patches(self) -> frozenset[tuple[str, str, str, str]]:
        """Objects the program only patches (pulumi-kubernetes' *Patch resources)."""
        return frozenset(
            identity(secret_with_data(as_manifest(r.inputs)))
            for r in self.run.kubernetes_objects()
            if r.type.endswith("Patch")
        )


def render(config: Mapping[str, Any], state: MockState) -> Deployment:
    run = run_program(config, state=state, stack="e2e")
    infra = run.objects_through(INFRA_PROVIDER)
    tenant = [r for r in run.kubernetes_objects() if r not in infra]
    return Deployment(run, manifests_of(infra), manifests_of(tenant))


# What a request through a rolling apiserver or a reconfiguring ingress may meet once; applying
# and deleting are idempotent, so such a call is repeated.
TRANSIENT_ERRORS = ("EOF", "connection refused", "connection reset by peer", "i/o timeout")


def run_kubectl(
    argv: list[str], document: str, attempts: int = 3
) -> subprocess.CompletedProcess[str]:
    for attempt in range(1, attempts + 1):
        result = subprocess.run(
            argv, input=document, capture_output=True, text=True, check=False, timeout=120
        )
        transient = any(error in result.stderr for error in TRANSIENT_ERRORS)
        if result.returncode == 0 or not transient or attempt == attempts:
            return result
        time.sleep(3)
    raise AssertionError("unreachable")


def _kubectl_server_side(
    verb: str, kubectl: Path, kubeconfig: Path, manifests: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    document = {"apiVersion": "v1", "kind": "List", "items": manifests}
    argv = [
        str(kubectl),
        f"--kubeconfig={kubeconfig}",
        verb,
        "--server-side",
        f"--field-manager={FIELD_MANAGER}",
        "-f",
        "-",
    ]
    return run_kubectl(argv, json.dumps(document))


def server_side_apply(
    kubectl: Path, kubeconfig: Path, manifests: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    """One `kubectl apply --server-side` of every manifest, in the given order."""
    result = _kubectl_server_side("apply", kubectl, kubeconfig, manifests)
    if result.returncode != 0:
        raise AssertionError(f"kubectl apply --server-side failed: {result.stderr.strip()}")
    return result


def identity(manifest: dict[str, Any]) -> tuple[str, str, str, str]:
    metadata = manifest["metadata"]
    return (
        manifest["apiVersion"],
        manifest["kind"],
        metadata.get("namespace", ""),
        metadata["name"],
    )


def removed(
    previous: list[dict[str, Any]],
    current: list[dict[str, Any]],
    patches: frozenset[tuple[str, str, str, str]] = frozenset(),
) -> list[dict[str, Any]]:
    """What `previous` declared and `current` does not, in reverse apply order (as Pulumi
    deletes resources that left the program, after creating and updating the others). Patches
    of objects the program did not create are given up, never deleted."""
    kept = {identity(manifest) for manifest in current} | patches
    return [manifest for manifest in reversed(previous) if identity(manifest) not in kept]


def delete(kubectl: Path, kubeconfig: Path, manifests: list[dict[str, Any]]) -> None:
    if not manifests:
        return
    document = {"apiVersion": "v1", "kind": "List", "items": manifests}
    argv = [
        str(kubectl),
        f"--kubeconfig={kubeconfig}",
        "delete",
        "--ignore-not-found",
        "--wait=false",
        "-f",
        "-",
    ]
    result = run_kubectl(argv, json.dumps(document))
    if result.returncode != 0:
        raise AssertionError(f"kubectl delete failed: {result.stderr.strip()}")


def server_side_diff(
    kubectl: Path, kubeconfig: Path, manifests: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    """`kubectl diff --server-side`: exit 0 when applying would change nothing, 1 when it would."""
    return _kubectl_server_side("diff", kubectl, kubeconfig, manifests)
