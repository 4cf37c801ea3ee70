"""`pulumi destroy` of the shared tenant, a new `pulumi up` after it, and a destroy of a tenant
whose API is already gone. The last module of the suite: it starts from whatever phase the
modules before it left the shared tenant in, and leaves it destroyed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.tenant import (
    CLUSTER,
    Phase,
    Tenant,
    TenantPhases,
    all_pods_ready,
    delete_etcd_claims,
    expected_pod_count,
    pods,
    wait_for,
)

TENANT_PHASES = TenantPhases.of(
    starts=[Phase.NODE_PORT, Phase.NODE_PORT_KONNECTIVITY, Phase.INGRESS],
    leaves=[Phase.DESTROYED],
)
# Written before the first destroy; a new stack after it must not see it.
PROOF = "e2e-before-destroy"

KINDS = (
    "pods,secrets,configmaps,services,endpoints,deployments,statefulsets,daemonsets,"
    "poddisruptionbudgets,networkpolicies,ingresses,serviceaccounts,persistentvolumeclaims"
)
# What every namespace has whatever runs in it.
NAMESPACE_DEFAULTS = {"ConfigMap/kube-root-ca.crt", "ServiceAccount/default"}


def left_in_namespace(tenant: Tenant) -> set[str]:
    listed = tenant.infra.kubectl_json("get", KINDS, "-n", tenant.infra.namespace, tenant=True)
    return {
        f"{item['kind']}/{item['metadata']['name']}" for item in listed["items"]
    } - NAMESPACE_DEFAULTS


def etcd_claims(tenant: Tenant) -> set[str]:
    return {
        f"PersistentVolumeClaim/data-{CLUSTER}-etcd-{index}"
        for index in range(int(tenant.config["etcdReplicas"]))
    }


def test_destroy_leaves_only_the_etcd_volumes(tenant: Tenant) -> None:
    tenant.kubectl("create", "configmap", PROOF, "-n", "default", "--from-literal=k=v")
    tenant.destroy(figure="pulumi destroy")
    wait_for("the tenant's pods to be gone", lambda: not pods(tenant.infra), timeout=120)
    assert left_in_namespace(tenant) == etcd_claims(tenant)


def test_a_new_up_after_a_destroy_starts_a_fresh_cluster_beside_the_kept_data(
    tenant: Tenant,
) -> None:
    """The destroyed keys cannot decrypt the kept data: a new stack starts in a new data
    directory of the same volumes, never on data it cannot read."""
    operation = tenant.update(dict(tenant.config), figure="pulumi up after a destroy")
    assert operation.changes.get("create", 0) > 0
    assert all_pods_ready(tenant.infra, expected_pod_count(tenant.config))
    # The ConfigMap written before the destroy lived in the old data.
    gone = tenant.kubectl("get", "configmap", PROOF, "-n", "default", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    # Secrets are encrypted with the new key and read back.
    tenant.kubectl("create", "secret", "generic", "after-destroy", "--from-literal=k=v")
    read = json.loads(tenant.kubectl("get", "secret", "after-destroy", "-o", "json").stdout)
    assert read["data"] == {"k": "dg=="}
    data_dirs = _etcd_data_dirs(tenant)
    assert len(data_dirs) == 2, data_dirs  # the old generation's and the new one's


def _etcd_data_dirs(tenant: Tenant) -> list[str]:
    """The data directories on the first member's volume (the rig's hostPath volume)."""
    claim = tenant.infra.kubectl_json(
        "get", "pvc", f"data-{CLUSTER}-etcd-0", "-n", tenant.infra.namespace, tenant=True
    )
    volume: Any = tenant.infra.kubectl_json("get", "pv", claim["spec"]["volumeName"])
    root = Path(volume["spec"]["hostPath"]["path"])
    return sorted(entry.name for entry in root.iterdir() if entry.name.startswith("data-"))


def test_destroy_completes_when_the_tenant_api_is_already_gone(tenant: Tenant) -> None:
    tenant.infra.kubectl(
        "scale",
        "deployment",
        f"{CLUSTER}-apiserver",
        "--replicas=0",
        "-n",
        tenant.infra.namespace,
        tenant=True,
    )
    wait_for(
        "the tenant API to stop answering",
        lambda: tenant.kubectl("get", "--raw", "/readyz", check=False).returncode != 0,
        timeout=120,
    )
    tenant.destroy(figure="pulumi destroy, tenant API unreachable")
    wait_for("the tenant's pods to be gone", lambda: not pods(tenant.infra), timeout=120)
    assert left_in_namespace(tenant) == etcd_claims(tenant)
    delete_etcd_claims(tenant.infra)
    wait_for("an empty namespace", lambda: not left_in_namespace(tenant), timeout=120)
