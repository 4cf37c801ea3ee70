"""The tenant control plane on a real infrastructure cluster, deployed as the tenant user.

The program is rendered under the mock runtime (real certificates), applied with server-side
apply by a user that holds only the `admin` role in the tenant namespace, and then used through
its own `kubeconfig` output.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.deploy import Deployment, render, server_side_apply
from tests.e2e.infra import InfraCluster
from tests.harness import MockState

NODE_PORT = 31443
CLUSTER = "e2e"
FIGURES: dict[str, Any] = {}


def stack_config(infra: InfraCluster) -> dict[str, str]:
    return {
        "clusterName": CLUSTER,
        "namespace": infra.namespace,
        # Nodes and clients reach the API on the rig node's address, so that is the API host.
        "apiHost": infra.node_ip,
        "exposure": "nodePort",
        "nodePort": str(NODE_PORT),
        "etcdReplicas": "3",
        "etcdStorageSize": "1Gi",
        "etcdStorageClass": infra.settings.storage_class,
    }


@dataclass
class Tenant:
    infra: InfraCluster
    state: MockState
    deployment: Deployment
    kubeconfig: Path
    ca_file: Path

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.infra.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )


def pods(infra: InfraCluster) -> list[dict[str, Any]]:
    return infra.kubectl_json("get", "pods", "-n", infra.namespace, tenant=True)["items"]


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_for(description: str, check: Any, timeout: float, interval: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {description}; last: {last}")


def expected_pod_count(config: dict[str, str]) -> int:
    return int(config["etcdReplicas"]) + 2 + 2 + 2  # etcd + apiserver + kcm + scheduler


def all_pods_ready(infra: InfraCluster, count: int) -> bool:
    current = pods(infra)
    return len(current) == count and all(is_ready(p) for p in current)


def describe_pods(infra: InfraCluster) -> str:
    lines = []
    for pod in pods(infra):
        statuses = pod.get("status", {}).get("containerStatuses", [])
        states = [
            json.dumps(s.get("state")) + f" restarts={s.get('restartCount')}" for s in statuses
        ]
        lines.append(f"{pod['metadata']['name']}: ready={is_ready(pod)} {' '.join(states)}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def tenant(infra_cluster: InfraCluster) -> Iterator[Tenant]:
    state = MockState()
    config = stack_config(infra_cluster)
    deployment = render(config, state)
    workdir = Path(tempfile.mkdtemp(prefix="tenant-"))
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(deployment.run.outputs["kubeconfig"])
    kubeconfig.chmod(0o600)
    ca_file = workdir / "ca.crt"
    ca_file.write_text(deployment.run.outputs["clusterCaCertificate"])

    started = time.monotonic()
    server_side_apply(
        infra_cluster.kubectl_path, infra_cluster.tenant_kubeconfig, deployment.manifests
    )
    try:
        wait_for(
            "every tenant control plane pod to be Ready",
            lambda: all_pods_ready(infra_cluster, expected_pod_count(config)),
            timeout=420,
        )
    except AssertionError:
        print(describe_pods(infra_cluster))
        raise
    FIGURES["apply to all pods Ready (s)"] = round(time.monotonic() - started, 1)
    yield Tenant(infra_cluster, state, deployment, kubeconfig, ca_file)
    print("\nfigures: " + json.dumps(FIGURES, indent=2))


def client_context(tenant: Tenant) -> ssl.SSLContext:
    kubeconfig = yaml.safe_load(tenant.kubeconfig.read_text())
    user = kubeconfig["users"][0]["user"]
    workdir = tenant.kubeconfig.parent
    (workdir / "admin.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
    (workdir / "admin.key").write_bytes(base64.b64decode(user["client-key-data"]))
    context = ssl.create_default_context(cafile=str(tenant.ca_file))
    context.load_cert_chain(str(workdir / "admin.crt"), str(workdir / "admin.key"))
    return context


def get(url: str, context: ssl.SSLContext) -> tuple[int, str]:
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return response.status, response.read().decode()


def test_every_pod_is_ready_and_runs_restricted(tenant: Tenant) -> None:
    namespace = tenant.infra.kubectl_json("get", "namespace", tenant.infra.namespace)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    names = sorted(p["metadata"]["name"] for p in pods(tenant.infra))
    assert [n for n in names if n.startswith("e2e-etcd-")] == [
        "e2e-etcd-0",
        "e2e-etcd-1",
        "e2e-etcd-2",
    ]
    for prefix in ("e2e-apiserver-", "e2e-controller-manager-", "e2e-scheduler-"):
        assert sum(n.startswith(prefix) for n in names) == 2, names


def test_readyz_through_the_node_port(tenant: Tenant) -> None:
    endpoint = tenant.deployment.run.outputs["endpoint"]
    assert endpoint == f"https://{tenant.infra.node_ip}:{NODE_PORT}"
    status, body = get(f"{endpoint}/readyz", client_context(tenant))
    assert (status, body) == (200, "ok")


def test_readyz_through_the_service_inside_the_infrastructure_cluster(tenant: Tenant) -> None:
    service = tenant.infra.kubectl_json(
        "get", "service", "-n", tenant.infra.namespace, f"{CLUSTER}-apiserver", tenant=True
    )
    cluster_ip = service["spec"]["clusterIP"]
    # The serving cert names the Service, not its IP: verify the name, dial the IP.
    context = client_context(tenant)
    context.check_hostname = False
    status, body = get(f"https://{cluster_ip}:6443/readyz", context)
    assert (status, body) == (200, "ok")


def test_kubeconfig_output_lists_creates_and_reads(tenant: Tenant) -> None:
    namespaces = json.loads(tenant.kubectl("get", "namespaces", "-o", "json").stdout)["items"]
    assert {"default", "kube-system", "kube-public"} <= {n["metadata"]["name"] for n in namespaces}
    tenant.kubectl(
        "create",
        "configmap",
        "e2e-proof",
        "-n",
        "default",
        "--from-literal=written=before-etcd-restart",
    )
    read = json.loads(
        tenant.kubectl("get", "configmap", "e2e-proof", "-n", "default", "-o", "json").stdout
    )
    assert read["data"] == {"written": "before-etcd-restart"}


def test_controller_manager_and_scheduler_hold_their_leases(tenant: Tenant) -> None:
    def holders() -> dict[str, str] | None:
        found = {}
        for lease in ("kube-controller-manager", "kube-scheduler"):
            result = tenant.kubectl(
                "get", "lease", "-n", "kube-system", lease, "-o", "json", check=False
            )
            if result.returncode != 0:
                return None
            found[lease] = json.loads(result.stdout)["spec"].get("holderIdentity", "")
        return found if all(found.values()) else None

    found = wait_for("both leader leases", holders, timeout=120)
    assert found["kube-controller-manager"].startswith(f"{CLUSTER}-controller-manager-")
    assert found["kube-scheduler"].startswith(f"{CLUSTER}-scheduler-")


def test_controller_manager_signs_service_account_tokens(tenant: Tenant) -> None:
    # The token controller and service-account controller run: default SA exists in a new ns.
    tenant.kubectl("create", "namespace", "e2e-sa-proof")
    wait_for(
        "the default service account",
        lambda: (
            tenant.kubectl("get", "sa", "default", "-n", "e2e-sa-proof", check=False).returncode
            == 0
        ),
        timeout=60,
    )
    token = tenant.kubectl("create", "token", "default", "-n", "e2e-sa-proof").stdout.strip()
    assert token.count(".") == 2


def test_etcd_data_survives_deleting_every_etcd_pod(tenant: Tenant) -> None:
    infra = tenant.infra
    before = {
        p["metadata"]["name"]: p["metadata"]["uid"]
        for p in pods(infra)
        if p["metadata"]["name"].startswith("e2e-etcd-")
    }
    infra.kubectl("delete", "pod", "-n", infra.namespace, *before, "--wait=true", tenant=True)

    def members_back() -> bool:
        current = {
            p["metadata"]["name"]: p
            for p in pods(infra)
            if p["metadata"]["name"].startswith("e2e-etcd-")
        }
        return set(current) == set(before) and all(
            is_ready(p) and p["metadata"]["uid"] != before[name] for name, p in current.items()
        )

    started = time.monotonic()
    wait_for("the etcd members to come back", members_back, timeout=300)
    wait_for(
        "the tenant API to answer again",
        lambda: (
            tenant.kubectl("get", "configmap", "e2e-proof", "-n", "default", check=False).returncode
            == 0
        ),
        timeout=120,
    )
    FIGURES["etcd pods deleted to data readable (s)"] = round(time.monotonic() - started, 1)
    read = json.loads(
        tenant.kubectl("get", "configmap", "e2e-proof", "-n", "default", "-o", "json").stdout
    )
    assert read["data"] == {"written": "before-etcd-restart"}


def generations(infra: InfraCluster) -> dict[str, Any]:
    kinds = (
        "secrets,configmaps,services,deployments,statefulsets,poddisruptionbudgets,networkpolicies"
    )
    listed = infra.kubectl_json("get", kinds, "-n", infra.namespace, tenant=True)["items"]
    return {
        f"{item['kind']}/{item['metadata']['name']}": (
            item["metadata"].get("generation")
            if item["kind"] in ("Deployment", "StatefulSet", "PodDisruptionBudget")
            else item["metadata"]["resourceVersion"]
        )
        for item in listed
        if item["kind"] != "ConfigMap" or item["metadata"]["name"] != "kube-root-ca.crt"
    }


def test_applying_the_same_program_again_changes_nothing(tenant: Tenant) -> None:
    infra = tenant.infra
    again = render(stack_config(infra), tenant.state)
    assert again.manifests == tenant.deployment.manifests
    diff = subprocess.run(
        [
            str(infra.kubectl_path),
            f"--kubeconfig={infra.tenant_kubeconfig}",
            "diff",
            "--server-side",
            "--field-manager=pulumi-kubernetes",
            "-f",
            "-",
        ],
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": again.manifests}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert diff.returncode == 0, diff.stdout + diff.stderr
    before = generations(infra)
    server_side_apply(infra.kubectl_path, infra.tenant_kubeconfig, again.manifests)
    assert generations(infra) == before


def test_memory_of_the_tenant_control_plane(tenant: Tenant) -> None:
    infra = tenant.infra

    def usage() -> dict[str, int] | None:
        summary = json.loads(
            infra.kubectl(
                "get", "--raw", f"/api/v1/nodes/{infra.node_name}/proxy/stats/summary"
            ).stdout
        )
        found = {
            pod["podRef"]["name"]: pod.get("memory", {}).get("workingSetBytes", 0)
            for pod in summary["pods"]
            if pod["podRef"]["namespace"] == infra.namespace
        }
        # The kubelet reports a new pod's memory only after its first stats pass.
        return found if len(found) == 9 and all(found.values()) else None

    found = wait_for("memory figures of all 9 tenant pods", usage, timeout=90, interval=5)
    FIGURES["tenant pods working set (MiB)"] = {
        name: round(value / 2**20, 1) for name, value in sorted(found.items())
    }
    FIGURES["tenant pods working set total (MiB)"] = round(sum(found.values()) / 2**20, 1)
