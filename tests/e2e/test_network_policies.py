"""The host namespace's NetworkPolicies, enforced by a real implementation.

The rig runs kube-router v2.1.0's firewall (tests/e2e/infra/objects.py) from before the tenant is
deployed, so every module runs under enforcement and proves the allowed paths by working: the
apiservers reach etcd, the members reach each other, the controller-manager and scheduler reach
the apiservers (they hold their leases), a worker reaches the API and its konnectivity agent
the proxy-server through the NodePorts, the apiservers reach the worker's kubelet (the
`apiServerEgressCidrs` of the e2e stack). This module tries every rule from outside, from a pod
of another namespace and from a pod of the tenant's own namespace, with a control that shows
the same probe reaching what is open to it. Every probe goes to a port where something
listens, so a refused or unanswered connection is the policies' doing.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.infra import InfraCluster
from tests.e2e.infra.objects import NETWORK_POLICY_NAME
from tests.e2e.probes import (
    PROBE_NAMESPACE,
    VICTIM,
    VICTIM_PORT,
    Reach,
    classify,
    ensure_probe_namespace,
    idle_pod,
    pod_ip,
    probe,
    wait_ready,
)
from tests.e2e.tenant import (
    CLUSTER,
    FIGURES,
    WORKER_EGRESS_CIDR,
    Phase,
    Tenant,
    TenantPhases,
    component_pods,
    wait_for,
)

# Under nodePort the apiservers admit anyone on 6443 (the ingress module proves the opposite).
TENANT_PHASES = TenantPhases.of(starts=[Phase.NODE_PORT])
# A pod of the tenant's own namespace that wears no control-plane labels.
NEIGHBOUR = "neighbour"
WEBHOOK = "netpol-egress-probe"
WEBHOOK_NAMESPACE = "egress-probe"
# kube-router applies a changed policy asynchronously (its informers, then iptables-restore).
POLICY_PROPAGATION_SECONDS = 60


@pytest.fixture(scope="module")
def probes(tenant: Tenant) -> Iterator[InfraCluster]:
    infra = tenant.infra
    ensure_probe_namespace(infra)
    infra.apply(idle_pod(NEIGHBOUR, infra.namespace), tenant=True)
    wait_ready(infra, infra.namespace, NEIGHBOUR, tenant=True)
    yield infra
    # The namespace holds only the control plane for the modules after this one.
    infra.kubectl("-n", infra.namespace, "delete", "pod", NEIGHBOUR, "--wait=true", tenant=True)


def pod_ips(infra: InfraCluster, component: str) -> list[str]:
    ips = [p["status"]["podIP"] for p in component_pods(infra, component)]
    assert ips, f"no {component} pods"
    return ips


def _pods_with_a_firewall() -> set[tuple[str, str]]:
    """(namespace, pod) of every pod kube-router keeps a firewall chain for: the pods some
    policy selects, whose chain ends in a REJECT of whatever no policy allowed."""
    rules = subprocess.run(
        ["iptables-save", "-t", "filter"], capture_output=True, text=True, check=True
    ).stdout
    pods = set()
    for line in rules.splitlines():
        marker = "rule to REJECT traffic destined for POD name:"
        if marker in line and "-j REJECT" in line:
            name, _, namespace = line.split(marker, 1)[1].split('"', 1)[0].partition(" namespace: ")
            pods.add((namespace.strip(), name.strip()))
    return pods


def test_kube_router_keeps_a_firewall_for_every_control_plane_pod(probes: InfraCluster) -> None:
    """Every control-plane pod has its chain (the policies select them all); a pod of the same
    namespace without control-plane labels has none."""
    guarded = _pods_with_a_firewall()
    for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        pods = component_pods(probes, component)
        assert pods, f"no {component} pods"
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            key = (probes.namespace, pod["metadata"]["name"])
            assert key in guarded, f"{component} {key} not guarded by {NETWORK_POLICY_NAME}"
    assert (probes.namespace, NEIGHBOUR) not in guarded


@pytest.mark.parametrize(
    ("scheme", "port"), [("https", 2379), ("https", 2380), ("http", 2381)], ids=str
)
@pytest.mark.parametrize("source", ["another namespace", "the tenant's namespace"])
def test_nobody_but_apiservers_and_members_reaches_etcd(
    probes: InfraCluster, source: str, scheme: str, port: int
) -> None:
    for ip in pod_ips(probes, "etcd"):
        if source == "another namespace":
            reach = probe(probes, f"{scheme}://{ip}:{port}")
        else:
            reach = probe(
                probes,
                f"{scheme}://{ip}:{port}",
                pod=NEIGHBOUR,
                namespace=probes.namespace,
                tenant=True,
            )
        assert reach is Reach.BLOCKED, f"{source} -> etcd {ip}:{port}: {reach}"


def test_the_same_probe_reaches_what_is_open_to_it(probes: InfraCluster) -> None:
    """With nodePort exposure anyone may reach the apiservers on 6443, and a pod no policy
    selects answers the prober. So BLOCKED above is the policies' doing, not the probe's."""
    for ip in pod_ips(probes, "kube-apiserver"):
        assert probe(probes, f"https://{ip}:6443") is Reach.ANSWERED
    victim = pod_ip(probes, PROBE_NAMESPACE, VICTIM)
    assert probe(probes, f"http://{victim}:{VICTIM_PORT}") is Reach.ANSWERED


@pytest.mark.parametrize(
    ("component", "port"), [("kube-controller-manager", 10257), ("kube-scheduler", 10259)]
)
def test_the_controller_manager_and_scheduler_serve_nobody(
    probes: InfraCluster, component: str, port: int
) -> None:
    for ip in pod_ips(probes, component):
        assert probe(probes, f"https://{ip}:{port}") is Reach.BLOCKED, f"{component} {ip}"


def _webhook(victim_ip: str) -> dict[str, Any]:
    """A tenant admin's webhook that makes the apiservers dial an address of the
    infrastructure network: a pod of another namespace."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK},
        "webhooks": [
            {
                "name": "probe.k8s-on-k8s.test",
                "clientConfig": {"url": f"https://{victim_ip}:{VICTIM_PORT}/validate"},
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["configmaps"],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": WEBHOOK_NAMESPACE}
                },
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 3,
            }
        ],
    }


def _dry_run(tenant: Tenant) -> subprocess.CompletedProcess[str]:
    """A server-side dry run of a ConfigMap in the webhook's namespace: the apiserver that
    serves it calls the webhook."""
    return tenant.kubectl(
        "create",
        "configmap",
        "probe",
        "-n",
        WEBHOOK_NAMESPACE,
        "--from-literal=a=b",
        "--dry-run=server",
        check=False,
    )


def _apiserver_dials_the_victim(tenant: Tenant) -> Reach:
    """How far the serving apiserver's call to the webhook got, from its error."""
    result = _dry_run(tenant)
    assert result.returncode != 0 and "probe.k8s-on-k8s.test" in result.stderr, result.stderr
    return classify(result.stderr)


def _every_apiserver(tenant: Tenant, reach: Reach) -> bool:
    """Several dry runs, so that every apiserver replica is likely to have served one."""
    return all(_apiserver_dials_the_victim(tenant) is reach for _ in range(4))


def test_a_tenant_cannot_make_the_apiservers_dial_into_the_infrastructure_network(
    probes: InfraCluster, tenant: Tenant
) -> None:
    """Blocked by default; `apiServerEgressCidrs` opens exactly what it lists, through `pulumi
    up` (a NetworkPolicy update, no pod rolls), and taking it out closes it again."""
    victim_ip = pod_ip(probes, PROBE_NAMESPACE, VICTIM)
    tenant.kubectl("create", "namespace", WEBHOOK_NAMESPACE)
    tenant.kubectl("apply", "-f", "-", input=json.dumps(_webhook(victim_ip)))
    original = dict(tenant.config)
    figures = FIGURES.setdefault("network policies", {})
    try:
        # The apiservers see the new webhook through their informers, within a second or so.
        wait_for(
            "the webhook to be called",
            lambda: "probe.k8s-on-k8s.test" in _dry_run(tenant).stderr,
            timeout=30,
        )
        assert _every_apiserver(tenant, Reach.BLOCKED)

        opened = tenant.update(
            {**original, "apiServerEgressCidrs": f"{WORKER_EGRESS_CIDR},{victim_ip}/32"}
        )
        assert opened.named("update") == {f"{CLUSTER}-network-policies-apiserver"}, opened.steps
        started = time.monotonic()
        wait_for(
            "the apiservers to reach the victim (it answers plain HTTP)",
            lambda: _every_apiserver(tenant, Reach.ANSWERED),
            timeout=POLICY_PROPAGATION_SECONDS,
        )
        figures["apiServerEgressCidrs opened: pulumi up (s)"] = round(opened.seconds, 1)
        figures["then enforced after (s)"] = round(time.monotonic() - started, 1)
    finally:
        closed = tenant.update(original)
    assert closed.named("update") == {f"{CLUSTER}-network-policies-apiserver"}, closed.steps
    wait_for(
        "the apiservers to be blocked again",
        lambda: _every_apiserver(tenant, Reach.BLOCKED),
        timeout=POLICY_PROPAGATION_SECONDS,
    )
    tenant.kubectl("delete", "validatingwebhookconfiguration", WEBHOOK)
    tenant.kubectl("delete", "namespace", WEBHOOK_NAMESPACE, "--wait=false")
