"""A real worker node joins the tenant control plane and runs workloads there.

The worker (tests/e2e/infra/worker.py) is a second containerd and kubelet in their own network
namespace, on the rig's bridge at 10.250.0.2. Its kubelet starts with the program's
`bootstrapKubeconfig` (a bootstrap token) and the tenant's `kubelet-config`, read with that token
as `kubeadm join` reads it: the client certificate it registers with comes from a CSR that the
tenant's controller-manager approves and signs. kube-proxy and CoreDNS are the program's
add-ons; only the test client (its namespace, service account and pods) is applied here.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from components.common.names import KUBE_PUBLIC, KUBE_SYSTEM
from components.config import ControlPlaneSettings, parse_settings
from components.host import konnectivity_server
from components.tenant import addons, upload_config
from tests.e2e.infra import InfraCluster
from tests.e2e.infra.worker import (
    E2E_CLIENT_IMAGE,
    IPTABLES_MULTI,
    XTABLES_MODULES_DIR,
    Worker,
    WorkerSettings,
    iptables_image_files,
    shared_libraries,
)
from tests.e2e.probes import RESTRICTED
from tests.e2e.tenant import (
    NODE_PORT,
    Phase,
    Tenant,
    TenantPhases,
    assert_no_failed_requests,
    component_pods,
    is_terminating,
    stack_config,
    under_load,
    wait_for,
)

# The worker joins through the NodePort; the module's last test turns konnectivity on (for
# good: test_worker_join_ingress.py turns it off), unless it is deselected.
TENANT_PHASES = TenantPhases.of(
    starts=[Phase.NODE_PORT], leaves=[Phase.NODE_PORT, Phase.NODE_PORT_KONNECTIVITY]
)
FIELD_MANAGER = "e2e-worker-join"
# pulumi-kubernetes' server-side apply field manager (a prefix: it may carry a suffix).
PROGRAM_FIELD_MANAGER = "pulumi-kubernetes"
NAMESPACE = "worker-e2e"  # in the tenant, Pod Security "restricted"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# A Service that exists only in the tenant cluster: resolving it proves the tenant's CoreDNS.
TENANT_ONLY_SERVICE = "tenant-api"
FIGURES: dict[str, Any] = {}


@dataclass
class TenantAccess:
    """The tenant control plane as the worker tests need it."""

    infra: InfraCluster
    settings: ControlPlaneSettings
    kubeconfig: Path  # admin
    ca_pem: str
    endpoint: str
    # The program's outputs; they hold secrets, so they stay out of test reports.
    outputs: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, tenant: Tenant, settings: ControlPlaneSettings) -> TenantAccess:
        """A tenant as its admin kubeconfig output reaches it, with the settings it runs."""
        admin = yaml.safe_load(tenant.kubeconfig.read_text())
        cluster = admin["clusters"][0]["cluster"]
        return cls(
            infra=tenant.infra,
            settings=settings,
            kubeconfig=tenant.kubeconfig,
            ca_pem=base64.b64decode(cluster["certificate-authority-data"]).decode(),
            endpoint=cluster["server"],
            outputs=dict(tenant.outputs),
        )

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.infra.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            input=input,
        )

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply(self, manifests: list[dict[str, Any]]) -> None:
        document = {"apiVersion": "v1", "kind": "List", "items": manifests}
        self.kubectl(
            "apply",
            "--server-side",
            f"--field-manager={FIELD_MANAGER}",
            "-f",
            "-",
            input=json.dumps(document),
        )

    def exists(self, *args: str) -> bool:
        return self.kubectl("get", *args, check=False).returncode == 0

    def applied_by_program(self, *args: str) -> bool:
        """True if the object exists and pulumi-kubernetes (server-side apply) wrote it."""
        result = self.kubectl("get", *args, "-o", "json", "--show-managed-fields", check=False)
        if result.returncode != 0:
            return False
        managers = json.loads(result.stdout)["metadata"].get("managedFields", [])
        return any(entry.get("manager", "").startswith(PROGRAM_FIELD_MANAGER) for entry in managers)


@pytest.fixture(scope="module")
def tenant_access(tenant: Tenant) -> TenantAccess:
    """The shared tenant control plane (conftest), as the worker tests need it."""
    return TenantAccess.of(tenant, parse_settings(stack_config(tenant.infra)))


# -- What a node needs: the program's objects, or the same built by its builders --------------


@pytest.fixture(scope="module")
def bootstrap_kubeconfig(tenant_access: TenantAccess) -> str:
    """The program's `bootstrapKubeconfig` output, as a user would hand it to a bare kubelet."""
    return str(tenant_access.outputs["bootstrapKubeconfig"])


@pytest.fixture(scope="module")
def tenant_addons(tenant_access: TenantAccess) -> None:
    """kube-proxy and CoreDNS are the program's (applied by its deployment, not by this test)."""
    for kind, name in (("daemonset", addons.KUBE_PROXY), ("deployment", addons.COREDNS)):
        assert tenant_access.applied_by_program(kind, name, "-n", KUBE_SYSTEM), (
            f"the program declares no {kind} {KUBE_SYSTEM}/{name} in the tenant"
        )


def as_bootstrap_user(tenant: TenantAccess, bootstrap_kubeconfig: str, *args: str) -> Any:
    """kubectl ... -o json with the node's bootstrap token, as `kubeadm join` reads the cluster."""
    with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig") as kubeconfig:
        kubeconfig.write(bootstrap_kubeconfig)
        kubeconfig.flush()
        result = subprocess.run(
            [
                str(tenant.infra.kubectl_path),
                f"--kubeconfig={kubeconfig.name}",
                *args,
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@contextlib.contextmanager
def joined_worker(
    tenant: TenantAccess, bootstrap_kubeconfig: str, figures: dict[str, Any], **settings: Any
) -> Iterator[Worker]:
    """A worker that starts with nothing but `bootstrap_kubeconfig` and the kubelet-config it
    reads with that token; on exit its Node is deleted and it stops (and must leave nothing)."""
    node = Worker(
        WorkerSettings.for_tenant(
            tenant.infra.settings,
            tenant.settings.service_cidr,
            tenant.settings.cluster_domain,
            **settings,
        )
    )
    ca_data = yaml.safe_load(bootstrap_kubeconfig)["clusters"][0]["cluster"][
        "certificate-authority-data"
    ]
    # What `kubeadm join` downloads with the token: the cluster's KubeletConfiguration.
    kubelet_config = as_bootstrap_user(
        tenant,
        bootstrap_kubeconfig,
        "get",
        "configmap",
        upload_config.KUBELET_CONFIG,
        "-n",
        KUBE_SYSTEM,
    )
    node.start(
        bootstrap_kubeconfig=bootstrap_kubeconfig,
        ca_pem=base64.b64decode(ca_data).decode(),
        tenant_kubectl=tenant.kubectl,
        cluster_kubelet_config=yaml.safe_load(kubelet_config["data"]["kubelet"]),
    )
    figures["worker kubelet start to node Ready (s)"] = round(node.timings["ready_seconds"], 1)
    figures["worker kubelet start to node registered (s)"] = round(
        node.timings["registered_seconds"], 1
    )
    figures["worker start (netns, containerd, images, kubelet) to node Ready (s)"] = round(
        node.timings["start_to_ready_seconds"], 1
    )
    try:
        yield node
    finally:
        print("\nworker figures: " + json.dumps(figures, indent=2))
        tenant.kubectl("delete", "node", node.settings.node_name, "--wait=false", check=False)
        node.stop(verify=True)


@pytest.fixture(scope="module")
def worker(
    tenant_access: TenantAccess, bootstrap_kubeconfig: str, tenant_addons: None
) -> Iterator[Worker]:
    with joined_worker(tenant_access, bootstrap_kubeconfig, FIGURES) as node:
        yield node


# -- Tests -------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_a_kubeadm_join_would_trust_the_cluster(
    tenant_access: TenantAccess, bootstrap_kubeconfig: str
) -> None:
    """kubeadm's token discovery, done by hand: anyone may read `cluster-info` (no credentials,
    CA not yet trusted); the bootstrapsigner signed it with the token (a detached HS256 JWS);
    its CA matches the pin in `joinCommand`, and its server is the endpoint."""
    token_id, token_secret = yaml.safe_load(bootstrap_kubeconfig)["users"][0]["user"][
        "token"
    ].split(".")
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    url = f"{tenant_access.endpoint}/api/v1/namespaces/{KUBE_PUBLIC}/configmaps/cluster-info"

    def signed() -> dict[str, str] | None:
        with urllib.request.urlopen(url, context=insecure, timeout=10) as response:
            data = json.load(response)["data"]
        return data if f"jws-kubeconfig-{token_id}" in data else None

    data = wait_for("the bootstrapsigner to sign cluster-info", signed, timeout=60)
    header, empty, signature = data[f"jws-kubeconfig-{token_id}"].split(".")
    assert empty == "", "not a detached JWS"
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {
        "alg": "HS256",
        "kid": token_id,
    }
    signing_input = f"{header}.{_b64url(data['kubeconfig'].encode())}".encode()
    expected = hmac.new(token_secret.encode(), signing_input, hashlib.sha256).digest()
    assert hmac.compare_digest(_b64url(expected), signature)

    cluster = yaml.safe_load(data["kubeconfig"])["clusters"][0]["cluster"]
    assert cluster["server"] == tenant_access.endpoint
    ca_pem = base64.b64decode(cluster["certificate-authority-data"])
    assert ca_pem.decode() == tenant_access.ca_pem
    spki = (
        x509.load_pem_x509_certificate(ca_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    join = str(tenant_access.outputs["joinCommand"]).split()
    host_port = tenant_access.endpoint.removeprefix("https://")
    assert join[:3] == ["kubeadm", "join", host_port]
    assert join[join.index("--token") + 1] == f"{token_id}.{token_secret}"
    pin = join[join.index("--discovery-token-ca-cert-hash") + 1]
    assert pin == "sha256:" + hashlib.sha256(spki).hexdigest()


def _node(tenant: TenantAccess, name: str) -> dict[str, Any]:
    return tenant.kubectl_json("get", "node", name)


def test_node_registers_and_becomes_ready(tenant_access: TenantAccess, worker: Worker) -> None:
    s = worker.settings
    listed = tenant_access.kubectl("get", "nodes", "-o", "wide").stdout
    print(listed)
    node = _node(tenant_access, s.node_name)
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True", conditions
    assert {"type": "InternalIP", "address": s.node_ip} in node["status"]["addresses"]
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.2"
    assert node["spec"]["podCIDR"].startswith(tenant_access.settings.pod_cidr.split(".")[0])


def test_client_certificate_was_issued_through_an_approved_csr(
    tenant_access: TenantAccess, worker: Worker
) -> None:
    s = worker.settings
    # The kubelet's only credential at start: the bootstrap token.
    bootstrap = yaml.safe_load(s.bootstrap_kubeconfig.read_text())
    assert list(bootstrap["users"][0]["user"]) == ["token"]
    requests = tenant_access.kubectl_json("get", "csr")["items"]
    issued = []
    for csr in requests:
        request = x509.load_pem_x509_csr(base64.b64decode(csr["spec"]["request"]))
        common_name = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        approved = any(
            c["type"] == "Approved" and c["status"] == "True"
            for c in csr.get("status", {}).get("conditions", [])
        )
        if common_name == f"system:node:{s.node_name}" and approved:
            issued.append(csr)
    assert len(issued) >= 1, [c["metadata"]["name"] for c in requests]
    first = issued[0]
    assert first["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
    # Posted by the bootstrap token's user, not by an admin.
    assert first["spec"]["username"].startswith("system:bootstrap:"), first["spec"]["username"]
    assert "system:bootstrappers" in first["spec"]["groups"]
    assert first["status"].get("certificate"), "approved but not signed"

    # The kubelet now uses that certificate: signed by the tenant CA, the node's identity.
    ca = x509.load_pem_x509_certificate(tenant_access.ca_pem.encode())
    current = (s.kubelet_pki_dir / "kubelet-client-current.pem").read_bytes()
    certificate = x509.load_pem_x509_certificate(current)
    certificate.verify_directly_issued_by(ca)
    subject = certificate.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        f"system:node:{s.node_name}"
    )
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    issued_serials = {
        x509.load_pem_x509_certificate(base64.b64decode(c["status"]["certificate"])).serial_number
        for c in issued
    }
    assert certificate.serial_number in issued_serials
    # The kubelet's kubeconfig did not exist at start; now it points at that certificate.
    kubeconfig = yaml.safe_load(s.kubeconfig.read_text())
    assert kubeconfig["users"][0]["user"]["client-certificate"].endswith(
        "kubelet-client-current.pem"
    )


def _pods_on(tenant: TenantAccess, node: str, *selector: str) -> list[dict[str, Any]]:
    return tenant.kubectl_json(
        "get", "pods", "-A", "--field-selector", f"spec.nodeName={node}", *selector
    )["items"]


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_kube_proxy_and_coredns_run_on_the_worker(
    tenant_access: TenantAccess, worker: Worker
) -> None:
    node = worker.settings.node_name

    def ready() -> dict[str, int] | None:
        found = {"kube-proxy": 0, "kube-dns": 0}
        for pod in _pods_on(tenant_access, node, "-n", KUBE_SYSTEM):
            app = pod["metadata"].get("labels", {}).get("k8s-app")
            if app in found and _ready(pod):
                found[app] += 1
        return found if found["kube-proxy"] == 1 and found["kube-dns"] >= 1 else None

    # The kubelet hands pods the kube-dns ClusterIP the program's kubelet-config names.
    kubelet_json = json.loads((worker.settings.config_dir / "kubelet.json").read_text())
    service = tenant_access.kubectl_json("get", "service", addons.DNS_SERVICE, "-n", KUBE_SYSTEM)
    assert kubelet_json["clusterDNS"] == [service["spec"]["clusterIP"]]
    assert kubelet_json["clusterDNS"] == [tenant_access.settings.cluster_dns_ip]

    started = time.monotonic()
    try:
        wait_for("kube-proxy and CoreDNS Ready on the worker", ready, timeout=180)
    except AssertionError:
        print(tenant_access.kubectl("get", "pods", "-A", "-o", "wide").stdout)
        print(tenant_access.kubectl("get", "events", "-n", KUBE_SYSTEM).stdout)
        raise
    FIGURES["node Ready to kube-proxy and CoreDNS Ready (s)"] = round(time.monotonic() - started, 1)


def _client_kubeconfig() -> str:
    """In-pod kubectl: the service-account token, servers by DNS name only (no env vars)."""
    ca = f"{SERVICE_ACCOUNT_DIR}/ca.crt"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kubernetes-default",
                "cluster": {
                    "server": "https://kubernetes.default.svc.cluster.local:443",
                    "certificate-authority": ca,
                },
            },
            {
                "name": "tenant-only-name",
                "cluster": {
                    "server": f"https://{TENANT_ONLY_SERVICE}.{NAMESPACE}.svc.cluster.local:443",
                    "certificate-authority": ca,
                    # The serving certificate names kubernetes.default, not this Service.
                    "tls-server-name": "kubernetes.default.svc.cluster.local",
                },
            },
        ],
        "users": [{"name": "sa", "user": {"tokenFile": f"{SERVICE_ACCOUNT_DIR}/token"}}],
        "contexts": [
            {
                "name": "kubernetes-default",
                "context": {"cluster": "kubernetes-default", "user": "sa"},
            },
            {"name": "tenant-only-name", "context": {"cluster": "tenant-only-name", "user": "sa"}},
        ],
        "current-context": "kubernetes-default",
    }
    return yaml.safe_dump(document)


RESTRICTED_CONTAINER = {
    "image": E2E_CLIENT_IMAGE,
    "imagePullPolicy": "Never",
    "env": [{"name": "HOME", "value": "/tmp"}],
    "securityContext": RESTRICTED,
    "volumeMounts": [{"name": "kubeconfig", "mountPath": "/etc/e2e", "readOnly": True}],
}


def _client_pod(name: str, node: str, containers: list[dict[str, Any]], **spec: Any) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "serviceAccountName": "e2e-client",
            "containers": [{**RESTRICTED_CONTAINER, **c} for c in containers],
            "volumes": [{"name": "kubeconfig", "configMap": {"name": "e2e-client-kubeconfig"}}],
            **spec,
        },
    }


def client_namespace_objects() -> list[dict[str, Any]]:
    """A restricted namespace with a reader service account and its in-pod kubeconfig."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": NAMESPACE,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "e2e-client", "namespace": NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "e2e-client-view"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "view",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "e2e-client", "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "e2e-client-kubeconfig", "namespace": NAMESPACE},
            "data": {"kubeconfig": _client_kubeconfig()},
        },
    ]


@pytest.fixture(scope="module")
def client_namespace(tenant_access: TenantAccess, worker: Worker) -> str:
    """The client namespace, and a Service (and its endpoints: the API's NodePort) that exists
    only in the tenant cluster."""
    address, port = tenant_access.infra.node_ip, NODE_PORT
    tenant_access.apply(
        [
            *client_namespace_objects(),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": TENANT_ONLY_SERVICE, "namespace": NAMESPACE},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": TENANT_ONLY_SERVICE,
                    "namespace": NAMESPACE,
                    "labels": {
                        "kubernetes.io/service-name": TENANT_ONLY_SERVICE,
                        "endpointslice.kubernetes.io/managed-by": FIELD_MANAGER,
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            },
        ]
    )
    wait_for(
        "the default service account",
        lambda: tenant_access.exists("serviceaccount", "default", "-n", NAMESPACE),
        timeout=60,
    )
    return NAMESPACE


def _pod_phase(tenant: TenantAccess, name: str) -> str:
    pod = tenant.kubectl_json("get", "pod", name, "-n", NAMESPACE)
    return pod.get("status", {}).get("phase", "")


def test_restricted_pod_resolves_the_api_by_name_and_lists_with_its_token(
    tenant_access: TenantAccess, worker: Worker, client_namespace: str
) -> None:
    """kubectl in a pod on the worker: DNS through the tenant's CoreDNS (kube-dns ClusterIP),
    Services through the worker's kube-proxy, the API with the pod's service-account token;
    its output read back with `kubectl logs` (apiserver -> kubelet on 10.250.0.2:10250)."""
    node = worker.settings.node_name
    args = ["--kubeconfig=/etc/e2e/kubeconfig", "-v=6"]
    pod = _client_pod(
        "client",
        node,
        [
            {
                "name": "by-tenant-only-name",
                "args": [
                    *args,
                    "--context=tenant-only-name",
                    "get",
                    "configmaps",
                    "-n",
                    NAMESPACE,
                    "-o",
                    "name",
                ],
            }
        ],
        restartPolicy="Never",
        initContainers=[
            {
                **RESTRICTED_CONTAINER,
                "name": "by-kubernetes-default",
                "args": [*args, "get", "namespaces", "-o", "name"],
            }
        ],
    )
    tenant_access.kubectl("delete", "pod", "client", "-n", NAMESPACE, "--ignore-not-found")
    created = tenant_access.kubectl("apply", "-f", "-", input=json.dumps(pod), check=False)
    # Admission by Pod Security "restricted" (a warning or a rejection would show here).
    assert created.returncode == 0 and "violate" not in created.stderr, created.stderr
    try:
        phase = wait_for(
            "the client pod to finish",
            lambda: (
                p if (p := _pod_phase(tenant_access, "client")) in ("Succeeded", "Failed") else None
            ),
            timeout=180,
        )
    except AssertionError:
        print(tenant_access.kubectl("describe", "pod", "client", "-n", NAMESPACE).stdout)
        raise
    first = tenant_access.kubectl("logs", "client", "-n", NAMESPACE, "-c", "by-kubernetes-default")
    second = tenant_access.kubectl("logs", "client", "-n", NAMESPACE, "-c", "by-tenant-only-name")
    print(first.stdout[-3000:], second.stdout[-3000:])
    assert phase == "Succeeded", first.stdout + second.stdout
    assert "namespace/kube-system" in first.stdout
    assert "https://kubernetes.default.svc.cluster.local:443/api/v1/namespaces" in first.stdout
    assert "200 OK" in first.stdout
    assert "configmap/kube-root-ca.crt" in second.stdout
    assert (
        f"https://{TENANT_ONLY_SERVICE}.{NAMESPACE}.svc.cluster.local:443/api/v1" in second.stdout
    )
    placed = tenant_access.kubectl_json("get", "pod", "client", "-n", NAMESPACE)
    assert placed["spec"]["nodeName"] == node


def _run_idle_pod(tenant: TenantAccess, name: str, node: str) -> None:
    """A client pod on `node` that only waits (the image's /pause), once it is Ready."""
    pod = _client_pod(name, node, [{"name": name, "command": ["/pause"]}])
    tenant.kubectl("apply", "-f", "-", input=json.dumps(pod))
    wait_for(
        f"the {name} pod to run",
        lambda: _ready(tenant.kubectl_json("get", "pod", name, "-n", NAMESPACE)),
        timeout=120,
    )


def test_exec_in_a_running_pod_on_the_worker(
    tenant_access: TenantAccess, worker: Worker, client_namespace: str
) -> None:
    _run_idle_pod(tenant_access, "sleeper", worker.settings.node_name)
    result = tenant_access.kubectl(
        "exec",
        "sleeper",
        "-n",
        NAMESPACE,
        "--",
        "/usr/local/bin/kubectl",
        "--kubeconfig=/etc/e2e/kubeconfig",
        "get",
        "namespace",
        "kube-system",
        "-o",
        "name",
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "namespace/kube-system"
    # stdin through the kubelet's streaming too: kubectl reads the manifest from it.
    piped = tenant_access.kubectl(
        "exec",
        "-i",
        "sleeper",
        "-n",
        NAMESPACE,
        "--",
        "/usr/local/bin/kubectl",
        "--kubeconfig=/etc/e2e/kubeconfig",
        "create",
        "--dry-run=client",
        "-o",
        "name",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "piped"}}),
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip() == "configmap/piped"


def _node_ready(tenant: TenantAccess, node: str) -> bool:
    listed = tenant.kubectl("get", "node", node, "-o", "json", check=False)
    if listed.returncode != 0:
        return False
    conditions = json.loads(listed.stdout)["status"]["conditions"]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_sleep_and_wake_keep_objects_tokens_and_the_node(
    tenant: Tenant, tenant_access: TenantAccess, worker: Worker, client_namespace: str
) -> None:
    """`suspended: true` scales etcd, the apiservers, controller-managers and schedulers to
    zero; `suspended: false` brings the same cluster back: the same objects, a service-account
    token issued before still authenticates, and the worker is Ready with its credentials."""
    infra = tenant.infra
    node = worker.settings.node_name
    _run_idle_pod(tenant_access, "dreamer", node)
    uid = tenant_access.kubectl_json("get", "pod", "dreamer", "-n", NAMESPACE)["metadata"]["uid"]
    token = tenant_access.kubectl("create", "token", "default", "-n", NAMESPACE).stdout.strip()
    components = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

    tenant.update({**tenant.config, "suspended": "true"}, figure="pulumi up: suspend")
    wait_for(
        "no control-plane pod left",
        lambda: not any(component_pods(infra, c) for c in components),
        timeout=180,
    )
    asleep = tenant_access.kubectl("get", "--raw", "/readyz", check=False, timeout=30)
    assert asleep.returncode != 0, "the API still answers while suspended"

    awake_config = {k: v for k, v in tenant.config.items() if k != "suspended"}
    started = time.monotonic()
    tenant.update(awake_config, figure="pulumi up: wake")
    FIGURES["wake: pulumi up (s)"] = round(time.monotonic() - started, 1)
    ready = tenant_access.kubectl("get", "--raw", "/readyz", check=False)
    assert ready.returncode == 0 and ready.stdout == "ok", ready.stderr
    wait_for("the worker Ready again", lambda: _node_ready(tenant_access, node), timeout=180)
    FIGURES["wake: pulumi up start to the worker Ready (s)"] = round(time.monotonic() - started, 1)
    # The same pod (it kept running on the worker), and a token of before the sleep works.
    pod = tenant_access.kubectl_json("get", "pod", "dreamer", "-n", NAMESPACE)
    assert pod["metadata"]["uid"] == uid and _ready(pod)
    whoami = subprocess.run(
        [
            str(infra.kubectl_path),
            "--kubeconfig=/dev/null",
            f"--server={tenant_access.endpoint}",
            f"--certificate-authority={tenant.ca_file}",
            f"--token={token}",
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert whoami.stdout == f"system:serviceaccount:{NAMESPACE}:default", whoami.stderr
    assert tenant.stack.preview().changed == {}
    tenant_access.kubectl("delete", "pod", "dreamer", "-n", NAMESPACE, "--wait=false")


# -- The worker's image (this host's iptables, installed by hack/install-e2e-deps.sh) ----------
# The worker's pure parts are tested in test_e2e_units.py, which `make unit` runs too.


def test_the_kube_proxy_image_gets_iptables_with_every_library() -> None:
    assert IPTABLES_MULTI.is_file(), "iptables is missing: hack/install-e2e-deps.sh installs it"
    files = {f.path: f for f in iptables_image_files()}
    assert files["/usr/sbin/iptables"].link_target == "xtables-nft-multi"
    assert files["/usr/sbin/iptables-restore"].link_target == "xtables-nft-multi"
    assert str(IPTABLES_MULTI) in files
    for library in shared_libraries(IPTABLES_MULTI):
        assert str(library) in files, library
    assert any(path.startswith(str(XTABLES_MODULES_DIR) + "/libxt_") for path in files)


def _kubelet_cut_rule(worker: Worker) -> list[str]:
    """For the rig's netns: reject what the infrastructure pods (the tenant's apiservers) send
    to the worker's kubelet, as if the node sat behind NAT."""
    return [
        "FORWARD",
        "-s",
        worker.settings.rig.cluster_cidr,
        "-d",
        f"{worker.settings.node_ip}/32",
        "-p",
        "tcp",
        "--dport",
        "10250",
        "-m",
        "comment",
        "--comment",
        "k8s-on-k8s e2e: apiservers cannot reach the worker kubelet",
        "-j",
        "REJECT",
    ]


def _iptables(action: str, rule: list[str]) -> int:
    return subprocess.run(["iptables", action, *rule], capture_output=True, check=False).returncode


def every_proxy_server_holds_an_agent(infra: InfraCluster) -> bool:
    """The proxy-server's /readyz answers 200 once an agent holds a tunnel to it; a request
    through an apiserver whose server has none fails ("No agent available")."""
    for pod in component_pods(infra, "kube-apiserver"):
        if is_terminating(pod):
            continue
        url = f"http://{pod['status'].get('podIP')}:{konnectivity_server.HEALTH_PORT}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status != 200:
                    return False
        except OSError:
            return False
    return True


def _wait_for_the_tunnels(infra: InfraCluster, access: TenantAccess) -> None:
    """What a user waits for after konnectivity changes: every apiserver's proxy-server holds
    an agent, then `kubectl logs` of the idle pod goes through."""
    wait_for(
        "every apiserver's proxy-server to hold an agent",
        lambda: every_proxy_server_holds_an_agent(infra),
        timeout=120,
    )

    def logs_work() -> bool:
        logs = access.kubectl("logs", "tunnel-proof", "-n", NAMESPACE, check=False)
        return logs.returncode == 0

    wait_for("kubectl logs through the tunnel", logs_work, timeout=120, interval=2)


def test_logs_and_exec_go_through_konnectivity_when_the_node_is_unreachable(
    tenant: Tenant, tenant_access: TenantAccess, worker: Worker, client_namespace: str
) -> None:
    """The last test of the module: it turns konnectivity on for the shared tenant.

    With the apiservers cut off from the worker's kubelet, `kubectl logs` fails; after
    `konnectivity: true` is applied (same keys: a change, not a new cluster), the agent on the
    worker opens the tunnel and logs and exec work again through it."""
    infra = tenant.infra
    node = worker.settings.node_name
    _run_idle_pod(tenant_access, "tunnel-proof", node)
    cut_rule = _kubelet_cut_rule(worker)
    assert _iptables("-I", cut_rule) == 0
    try:
        cut = tenant_access.kubectl("logs", "tunnel-proof", "-n", NAMESPACE, check=False)
        assert cut.returncode != 0, "logs still work: the cut did not take"

        config = {**tenant.config, "konnectivity": "true"}
        started = time.monotonic()
        figure = "konnectivity on"
        with under_load(tenant, figure) as loads:
            tenant.update(config, figure=f"pulumi up: {figure}")
        assert_no_failed_requests(loads, figure, tenant.infra)
        # `pulumi up` waited for the rollout: every apiserver runs the proxy-server.
        listed = [p for p in component_pods(infra, "kube-apiserver") if not is_terminating(p)]
        assert len(listed) == 2 and all(len(p["spec"]["containers"]) == 2 for p in listed)

        def agent_ready_on_the_worker() -> bool:
            listed = tenant_access.kubectl_json(
                "get", "pods", "-n", KUBE_SYSTEM, "-l", "k8s-app=konnectivity-agent"
            )["items"]
            return any(p["spec"].get("nodeName") == node and _ready(p) for p in listed)

        wait_for("the konnectivity agent on the worker", agent_ready_on_the_worker, timeout=180)

        _wait_for_the_tunnels(infra, tenant_access)
        FIGURES["konnectivity on to logs through the tunnel (s)"] = round(
            time.monotonic() - started, 1
        )
        exec_result = tenant_access.kubectl(
            "exec",
            "tunnel-proof",
            "-n",
            NAMESPACE,
            "--",
            "/usr/local/bin/kubectl",
            "version",
            "--client",
            "-o",
            "json",
            check=False,
        )
        assert exec_result.returncode == 0, exec_result.stderr
        assert json.loads(exec_result.stdout)["clientVersion"]["gitVersion"] == "v1.37.2"
        # The cut is still in place: the kubelet was reached through the agent only.
        assert _iptables("-C", cut_rule) == 0
    finally:
        _iptables("-D", cut_rule)


def test_renewal_keeps_logs_going_through_konnectivity(
    tenant: Tenant, tenant_access: TenantAccess, worker: Worker, client_namespace: str
) -> None:
    """Every leaf due at once with konnectivity on: the proxy-server's client certificate and
    the apiserver's serving certificate (which the agents trust) are issued anew, the apiservers
    roll, the agents reconnect, and logs go through the tunnel again while the kubelet is still
    cut off from the apiservers. The API is measured under load meanwhile."""
    infra = tenant.infra
    cut_rule = _kubelet_cut_rule(worker)
    assert _iptables("-I", cut_rule) == 0
    try:
        validity = tenant.config.get("certificateValidityHours", "8760")
        figure = "every leaf renewed, konnectivity on"
        with under_load(tenant, figure) as loads:
            tenant.update({**tenant.config, "certificateRenewalHours": validity})
        assert_no_failed_requests(loads, figure, tenant.infra)
        started = time.monotonic()
        _wait_for_the_tunnels(infra, tenant_access)
        FIGURES["renewal to logs through the tunnel again (s)"] = round(
            time.monotonic() - started, 1
        )
        assert _iptables("-C", cut_rule) == 0
        restored = {k: v for k, v in tenant.config.items() if k != "certificateRenewalHours"}
        tenant.update(restored)
    finally:
        _iptables("-D", cut_rule)
