"""A plain `kubeadm join`: the program's `joinCommand`, run by a real kubeadm v1.37.2.

kubeadm does its token discovery (the public `cluster-info` through the endpoint, signed with
the token, its CA pinned by the hash), reads the cluster's `kubeadm-config` and `kubelet-config`
with the token, and writes the kubelet's files: /etc/kubernetes/bootstrap-kubelet.conf,
/etc/kubernetes/pki/ca.crt, /var/lib/kubelet/config.yaml and kubeadm-flags.env. It runs in a
private mount namespace where those two directories are this test's own. kubeadm would then
have systemd start the kubelet, which this machine does not run, and wait for its TLS bootstrap
(phase `kubelet-wait-bootstrap`, skipped); the test starts the worker's kubelet with the files
kubeadm wrote instead, and the node joins. Runs after the ingress module, so through the ingress
when the whole e2e suite runs, through the NodePort when run alone.
"""

from __future__ import annotations

import base64
import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from components.config import parse_settings
from tests.e2e.infra.worker import Worker, WorkerSettings
from tests.e2e.kubeadm import KUBEADM_DIRS, in_private_mounts, kubeadm_join_argv
from tests.e2e.tenant import Phase, Tenant, TenantPhases, stack_config
from tests.e2e.test_worker_join import TenantAccess

# Whatever exposure the modules before it left (it changes nothing in the stack).
TENANT_PHASES = TenantPhases.of(
    starts=[Phase.NODE_PORT, Phase.NODE_PORT_KONNECTIVITY, Phase.INGRESS]
)
NODE_NAME = "tenant-worker-kubeadm"


@dataclass
class KubeadmJoin:
    access: TenantAccess
    result: subprocess.CompletedProcess[str]
    etc_dir: Path  # what kubeadm wrote to /etc/kubernetes
    kubelet_dir: Path  # what kubeadm wrote to /var/lib/kubelet
    worker: Worker


def _access(tenant: Tenant) -> TenantAccess:
    """The shared tenant as the stack now holds it (NodePort, or ingress after that module)."""
    outputs = dict(tenant.outputs)
    kubeconfig = Path(tempfile.mkdtemp(prefix="tenant-kubeadm-")) / "kubeconfig"
    kubeconfig.write_text(outputs["kubeconfig"])
    kubeconfig.chmod(0o600)
    cluster = yaml.safe_load(outputs["kubeconfig"])["clusters"][0]["cluster"]
    return TenantAccess(
        infra=tenant.infra,
        settings=parse_settings(stack_config(tenant.infra)),
        kubeconfig=kubeconfig,
        ca_pem=base64.b64decode(cluster["certificate-authority-data"]).decode(),
        endpoint=outputs["endpoint"],
        outputs=outputs,
    )


@pytest.fixture(scope="module")
def kubeadm_join(tenant: Tenant) -> Iterator[KubeadmJoin]:
    access = _access(tenant)
    rig = tenant.infra.settings
    settings = WorkerSettings.for_tenant(
        rig, access.settings.service_cidr, access.settings.cluster_domain, node_name=NODE_NAME
    )
    # Outside the worker's state dir, which its start wipes; under the rig's, which its teardown
    # sweeps.
    work = rig.state_dir / "kubeadm-join"
    etc_dir, kubelet_dir = work / "etc-kubernetes", work / "var-lib-kubelet"
    for directory in (etc_dir, kubelet_dir):
        directory.mkdir(parents=True, exist_ok=True)
    # Mount points must exist; only kubeadm's namespace mounts over them, so they stay empty.
    created = [path for path in KUBEADM_DIRS if not path.exists()]
    for path in created:
        path.mkdir(parents=True)
    try:
        argv = kubeadm_join_argv(
            str(access.outputs["joinCommand"]),
            rig.binary("kubeadm"),
            NODE_NAME,
            settings.containerd_socket,
        )
        result = subprocess.run(
            in_private_mounts(argv, dict(zip(KUBEADM_DIRS, (etc_dir, kubelet_dir), strict=True))),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        for path in reversed(created):
            path.rmdir()
    print(result.stdout[-4000:], result.stderr[-4000:])
    assert result.returncode == 0, result.stderr[-4000:]

    worker = Worker(settings)
    worker.start(
        bootstrap_kubeconfig=(etc_dir / "bootstrap-kubelet.conf").read_text(),
        ca_pem=(etc_dir / "pki" / "ca.crt").read_text(),
        tenant_kubectl=access.kubectl,
        cluster_kubelet_config=yaml.safe_load((kubelet_dir / "config.yaml").read_text()),
    )
    try:
        yield KubeadmJoin(access, result, etc_dir, kubelet_dir, worker)
    finally:
        access.kubectl("delete", "node", NODE_NAME, "--wait=false", check=False)
        worker.stop(verify=True)


def test_kubeadm_discovers_the_cluster_with_the_token_and_writes_the_kubelet_files(
    kubeadm_join: KubeadmJoin,
) -> None:
    access, result = kubeadm_join.access, kubeadm_join.result
    output = result.stdout + result.stderr
    # Token discovery validated the CA by the pin and read the cluster's configuration.
    assert 'Reading configuration from the "kubeadm-config" ConfigMap' in output, output
    bootstrap = yaml.safe_load((kubeadm_join.etc_dir / "bootstrap-kubelet.conf").read_text())
    assert bootstrap["clusters"][0]["cluster"]["server"] == access.endpoint
    token = shlex.split(str(access.outputs["joinCommand"]))
    assert bootstrap["users"][0]["user"]["token"] == token[token.index("--token") + 1]
    assert (kubeadm_join.etc_dir / "pki" / "ca.crt").read_text().strip() == access.ca_pem.strip()
    config = yaml.safe_load((kubeadm_join.kubelet_dir / "config.yaml").read_text())
    assert config["clusterDNS"] == [access.settings.cluster_dns_ip]
    flags = (kubeadm_join.kubelet_dir / "kubeadm-flags.env").read_text()
    # The node name differs from this machine's host name: kubeadm tells the kubelet.
    assert flags.startswith("KUBELET_KUBEADM_ARGS="), flags
    assert f"--hostname-override={NODE_NAME}" in flags, flags


def test_the_node_kubeadm_prepared_joins_and_becomes_ready(kubeadm_join: KubeadmJoin) -> None:
    node = kubeadm_join.access.kubectl_json("get", "node", NODE_NAME)
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True", conditions
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.2"
