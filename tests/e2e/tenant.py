"""The tenant control plane of the e2e tests: its stack config, deployment and helpers.

`deploy_tenant` renders the program under the mock runtime (real certificates), applies what it
declares for the infrastructure cluster as the tenant user (only the `admin` role in the tenant
namespace), waits for every pod, then applies what it declares inside the tenant cluster with
the program's own `kubeconfig` output. conftest.py shares one such tenant across test modules.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        """kubectl as the tenant's admin; a failure with check=True says what kubectl said."""
        result = subprocess.run(
            [str(self.infra.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result


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


def deploy_tenant(infra: InfraCluster) -> Tenant:
    state = MockState()
    config = stack_config(infra)
    deployment = render(config, state)
    workdir = Path(tempfile.mkdtemp(prefix="tenant-"))
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(deployment.run.outputs["kubeconfig"])
    kubeconfig.chmod(0o600)
    ca_file = workdir / "ca.crt"
    ca_file.write_text(deployment.run.outputs["clusterCaCertificate"])

    started = time.monotonic()
    server_side_apply(infra.kubectl_path, infra.tenant_kubeconfig, deployment.manifests)
    try:
        wait_for(
            "every tenant control plane pod to be Ready",
            lambda: all_pods_ready(infra, expected_pod_count(config)),
            timeout=420,
        )
    except AssertionError:
        print(describe_pods(infra))
        raise
    FIGURES["apply to all pods Ready (s)"] = round(time.monotonic() - started, 1)
    # What the program declares inside the tenant cluster goes through its admin kubeconfig.
    server_side_apply(infra.kubectl_path, kubeconfig, deployment.tenant_manifests)
    return Tenant(infra, state, deployment, kubeconfig, ca_file)
