"""Tenants at the other supported releases, and moving one between releases, through `pulumi up`.

A tenant at v1.36.1 (its paired etcd, 3 members, 2 apiservers) moves by patch to v1.36.3, back to
v1.36.1 and up again, then a v1.36.3 worker joins and runs a pod, then the tenant moves by minor
to v1.37.2, the rig's release: kubeadm's order (etcd, then the apiservers, then the
controller-manager and scheduler, add-ons after), taken from the engine's steps. Each move runs
while clients send requests to the tenant API (none may fail); after it the data written before
is intact, the worker (one minor behind the control plane, as the skew policy allows) is still
Ready and a new pod runs on it, and the add-ons move to the new release.

Runs after test_destroy.py: the shared tenant is gone and its namespace empty. Every tenant here
is a new stack in that namespace (same cluster name, so the shared helpers apply), destroyed with
its etcd volumes before the next. The binaries and images of each release come from
`hack/build-binaries.sh <version>` (`make e2e` builds them); a missing one fails the test.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from collections.abc import Iterator
from typing import Any

import pytest

from components.common.versions import DEFAULT_RELEASE, find_release
from components.config import parse_settings
from tests.e2e.infra import InfraCluster
from tests.e2e.infra.worker import E2E_CLIENT_IMAGE, Worker
from tests.e2e.probes import RESTRICTED
from tests.e2e.tenant import (
    CLUSTER,
    Tenant,
    all_pods_ready,
    assert_no_failed_requests,
    component_pods,
    delete_etcd_claims,
    deploy_tenant,
    describe_pods,
    expected_pod_count,
    is_ready,
    is_terminating,
    stack_config,
    under_load,
    wait_for,
)
from tests.e2e.test_worker_join import TenantAccess, joined_worker

PATCH_FROM = "v1.36.1"
PATCH_TO = "v1.36.3"
MINOR_TO = DEFAULT_RELEASE.version
RELEASES = (PATCH_FROM, PATCH_TO)
NAMESPACE = "releases-e2e"  # in the tenant, Pod Security "restricted"
DATA = "written-before-the-moves"
# The engine's resources of each phase of an upgrade, in kubeadm's order.
UPGRADE_PHASES = {
    "etcd": f"{CLUSTER}-etcd-statefulset",
    "apiservers": f"{CLUSTER}-apiserver-deployment",
    "controller-manager": f"{CLUSTER}-controller-manager-deployment",
    "scheduler": f"{CLUSTER}-scheduler-deployment",
}
PHASE_COMPONENTS = {
    "etcd": "etcd",
    "apiservers": "kube-apiserver",
    "controller-manager": "kube-controller-manager",
    "scheduler": "kube-scheduler",
}
RELEASE_FIGURES: dict[str, Any] = {}


def release_config(infra: InfraCluster, version: str) -> dict[str, str]:
    return {**stack_config(infra), "kubernetesVersion": version}


@pytest.fixture(scope="module", autouse=True)
def release_images(infra_cluster: InfraCluster) -> Iterator[None]:
    for version in RELEASES:
        bin_dir = infra_cluster.settings.release_bin_dir(version)
        missing = [
            name
            for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
            if not (bin_dir / name).is_file()
        ]
        assert not missing, f"{bin_dir} lacks {missing}: run hack/build-binaries.sh {version}"
        infra_cluster.import_release_images(version)
    yield
    print("\nrelease figures: " + json.dumps(RELEASE_FIGURES, indent=2))


def running_versions(tenant: Tenant) -> dict[str, set[str]]:
    """The image tag of every running (not terminating) control-plane pod, by component."""
    versions: dict[str, set[str]] = {}
    for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        for pod in component_pods(tenant.infra, component):
            if is_terminating(pod):
                continue
            for container in pod["spec"]["containers"]:
                if container["name"] == component or container["name"] == "etcd":
                    tag = container["image"].rsplit(":", 1)[-1]
                    versions.setdefault(component, set()).add(tag)
    return versions


def expected_versions(version: str) -> dict[str, set[str]]:
    release = find_release(version)
    assert release is not None
    return {
        "etcd": {release.etcd_image_tag},
        "kube-apiserver": {version},
        "kube-controller-manager": {version},
        "kube-scheduler": {version},
    }


def served_version(tenant: Tenant) -> str:
    return str(json.loads(tenant.kubectl("get", "--raw", "/version").stdout)["gitVersion"])


def assert_at(tenant: Tenant, version: str) -> None:
    """Every control-plane pod runs `version` (and its etcd), and the API says so."""
    wait_for(
        f"only {version} pods left",
        lambda: running_versions(tenant) == expected_versions(version),
        timeout=120,
    )
    assert all_pods_ready(tenant.infra, expected_pod_count(tenant.config)), describe_pods(
        tenant.infra
    )
    assert served_version(tenant) == version


def assert_data_intact(tenant: Tenant) -> None:
    config_map = json.loads(tenant.kubectl("get", "configmap", DATA, "-o", "json").stdout)
    secret = json.loads(tenant.kubectl("get", "secret", DATA, "-o", "json").stdout)
    assert config_map["data"] == {"k": "v"}
    assert secret["data"] == {"k": "dg=="}


def move(tenant: Tenant, version: str, figure: str) -> dict[str, tuple[float, float]]:
    """`pulumi up` with another kubernetesVersion under load: no request may fail, no durable
    object is replaced, a preview afterwards has nothing to do."""
    with under_load(tenant, figure) as loads:
        operation = tenant.update(
            {**tenant.config, "kubernetesVersion": version}, figure=f"pulumi up: {figure}"
        )
    assert_no_failed_requests(loads, figure, tenant.infra)
    replaced = operation.named("replace")
    assert not replaced, f"{figure} replaced {sorted(replaced)}"
    assert_at(tenant, version)
    assert_data_intact(tenant)
    assert tenant.stack.preview().changed == {}
    # Which resource of each phase the engine changed, from when to when.
    phases: dict[str, tuple[float, float]] = {}
    for phase, name in UPGRADE_PHASES.items():
        if name in operation.step_times:
            began, ended = operation.step_times[name]
            assert ended is not None, f"{name} never finished"
            phases[phase] = (round(began, 1), round(ended, 1))
    assert_kubeadm_order(tenant, operation.started_at, phases)
    RELEASE_FIGURES[figure] = {
        "pulumi up (s)": round(operation.seconds, 1),
        "phases (start, end in s)": phases,
        **{name: load.report.as_figure() for name, load in loads.items()},
    }
    return phases


def _epoch(timestamp: str) -> float:
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def ready_since(pod: dict[str, Any]) -> float:
    """When the pod last became Ready (the API keeps whole seconds)."""
    for condition in pod["status"].get("conditions", []):
        if condition["type"] == "Ready" and condition["status"] == "True":
            return _epoch(condition["lastTransitionTime"])
    raise AssertionError(f"{pod['metadata']['name']} is not Ready")


def assert_kubeadm_order(
    tenant: Tenant, started_at: float, phases: dict[str, tuple[float, float]]
) -> None:
    """What the pods say (one second of slack: the API keeps whole seconds): each phase's step
    lasted until every pod of it was Ready (its wait covered the rollout), and each phase's pods
    were created only after the phase before it was done."""

    def current(phase: str) -> list[dict[str, Any]]:
        pods = component_pods(tenant.infra, PHASE_COMPONENTS[phase])
        return [pod for pod in pods if not is_terminating(pod)]

    for phase, (_, ended) in phases.items():
        done = started_at + ended
        late = {
            pod["metadata"]["name"]: round(ready_since(pod) - done, 1)
            for pod in current(phase)
            if ready_since(pod) > done + 1
        }
        assert not late, f"{phase}: pods Ready after its step ended (s): {late}"
    for phase, before in (
        ("apiservers", "etcd"),
        ("controller-manager", "apiservers"),
        ("scheduler", "apiservers"),
    ):
        if phase not in phases or before not in phases:
            continue
        after = started_at + phases[before][1]
        early = {
            pod["metadata"]["name"]: round(after - _epoch(pod["metadata"]["creationTimestamp"]), 1)
            for pod in current(phase)
            if _epoch(pod["metadata"]["creationTimestamp"]) < after - 1
        }
        assert not early, f"{phase}: pods created before {before} was done (s): {early}"


def idle_pod(name: str, node: str) -> dict[str, Any]:
    container = {
        "name": name,
        "image": E2E_CLIENT_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["/pause"],
        "securityContext": RESTRICTED,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "containers": [container]},
    }


def run_idle_pod(tenant: Tenant, name: str, node: str) -> None:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
        },
    }
    tenant.kubectl("apply", "-f", "-", input=json.dumps(namespace))
    tenant.kubectl("apply", "-f", "-", input=json.dumps(idle_pod(name, node)))
    wait_for(
        f"pod {name} running on {node}",
        lambda: is_ready(tenant_object(tenant, "pod", name, "-n", NAMESPACE)),
        timeout=120,
    )


def tenant_object(tenant: Tenant, *args: str) -> dict[str, Any]:
    return dict(json.loads(tenant.kubectl("get", *args, "-o", "json").stdout))


def node_version(tenant: Tenant, node: str) -> str:
    return str(tenant_object(tenant, "node", node)["status"]["nodeInfo"]["kubeletVersion"])


def addons_of(tenant: Tenant, node: str) -> dict[str, set[str]]:
    """The image tags of the Ready kube-proxy and CoreDNS pods on `node`, by k8s-app."""
    listed = tenant_object(
        tenant, "pods", "-n", "kube-system", f"--field-selector=spec.nodeName={node}"
    )
    tags: dict[str, set[str]] = {}
    for pod in listed["items"]:
        app = pod["metadata"].get("labels", {}).get("k8s-app")
        if app in ("kube-proxy", "kube-dns") and is_ready(pod):
            image = pod["spec"]["containers"][0]["image"]
            tags.setdefault(app, set()).add(image.rsplit(":", 1)[-1])
    return tags


def destroy_with_data(tenant: Tenant, label: str) -> None:
    tenant.destroy(figure=f"pulumi destroy ({label})")
    infra = tenant.infra
    delete_etcd_claims(infra)
    wait_for(
        "the tenant's pods and volumes to be gone",
        lambda: (
            not infra.kubectl_json("get", "pods,pvc", "-n", infra.namespace, tenant=True)["items"]
        ),
        timeout=180,
    )
    infra.recycle_released_volumes()


@contextlib.contextmanager
def release_tenant(infra: InfraCluster, version: str) -> Iterator[Tenant]:
    """A new stack at `version`; destroyed, with its etcd volumes, on exit."""
    # The volumes whose claims an earlier module deleted are emptied and offered again.
    infra.recycle_released_volumes()
    tenant = deploy_tenant(infra, release_config(infra, version), label=version)
    try:
        yield tenant
    finally:
        destroy_with_data(tenant, version)


@contextlib.contextmanager
def release_worker(tenant: Tenant, version: str, node_name: str) -> Iterator[Worker]:
    """A worker whose kubelet and kube-proxy are `version`'s, joined with the bootstrap token."""
    tenant_access = TenantAccess.of(tenant, parse_settings(tenant.config))
    with joined_worker(
        tenant_access,
        str(tenant_access.outputs["bootstrapKubeconfig"]),
        RELEASE_FIGURES,
        release=version,
        node_name=node_name,
    ) as node:
        assert node_version(tenant, node_name) == version
        yield node


# One tenant from v1.36.1 to v1.36.3 and back, up again, then to v1.37.2.


@pytest.fixture(scope="module")
def tenant_at_release(infra_cluster: InfraCluster) -> Iterator[Tenant]:
    with release_tenant(infra_cluster, PATCH_FROM) as tenant:
        yield tenant


@pytest.fixture(scope="module")
def release_node(tenant_at_release: Tenant) -> Iterator[Worker]:
    with release_worker(tenant_at_release, PATCH_TO, "tenant-worker-v1-36") as node:
        yield node


def test_it_boots_at_an_older_patch_with_its_paired_etcd(tenant_at_release: Tenant) -> None:
    assert_at(tenant_at_release, PATCH_FROM)
    tenant_at_release.kubectl("create", "configmap", DATA, "--from-literal=k=v")
    tenant_at_release.kubectl("create", "secret", "generic", DATA, "--from-literal=k=v")
    assert_data_intact(tenant_at_release)


def test_a_patch_upgrade_and_its_rollback_go_through_pulumi_up_under_load(
    tenant_at_release: Tenant,
) -> None:
    move(tenant_at_release, PATCH_TO, f"patch upgrade {PATCH_FROM} to {PATCH_TO}")
    move(tenant_at_release, PATCH_FROM, f"patch rollback {PATCH_TO} to {PATCH_FROM}")
    move(tenant_at_release, PATCH_TO, f"patch upgrade again {PATCH_FROM} to {PATCH_TO}")


def test_a_worker_of_the_release_joins_and_runs_a_pod(
    tenant_at_release: Tenant, release_node: Worker
) -> None:
    run_idle_pod(tenant_at_release, "before-the-minor-upgrade", release_node.settings.node_name)


def test_a_minor_upgrade_goes_in_kubeadm_order_without_a_failed_request(
    tenant_at_release: Tenant, release_node: Worker
) -> None:
    figure = f"minor upgrade {PATCH_TO} to {MINOR_TO}"
    phases = move(tenant_at_release, MINOR_TO, figure)
    assert set(phases) == set(UPGRADE_PHASES), phases
    # kubeadm's order: etcd done before the apiservers start, the apiservers done before the
    # controller-manager and the scheduler start (by the engine's steps; move() checks the
    # pods too).
    assert phases["etcd"][1] <= phases["apiservers"][0], phases
    for component in ("controller-manager", "scheduler"):
        assert phases["apiservers"][1] <= phases[component][0], phases
    # The worker, now one minor behind, stays Ready; its pod runs on, and a new one starts.
    node = release_node.settings.node_name
    assert is_ready(tenant_object(tenant_at_release, "node", node))
    assert node_version(tenant_at_release, node) == PATCH_TO
    assert is_ready(
        tenant_object(tenant_at_release, "pod", "before-the-minor-upgrade", "-n", NAMESPACE)
    )
    run_idle_pod(tenant_at_release, "after-the-minor-upgrade", node)
    # Add-ons after: kube-proxy and CoreDNS move to the new release's images.
    wanted = {"kube-proxy": {MINOR_TO}, "kube-dns": {DEFAULT_RELEASE.coredns_version}}
    wait_for(
        "the add-ons of the new release Ready on the worker",
        lambda: addons_of(tenant_at_release, node) == wanted,
        timeout=180,
    )
