"""Smoke test of the e2e infrastructure cluster itself (not of the Pulumi program).

    hack/e2e.sh .venv/bin/pytest tests/e2e/test_infra_smoke.py -x -s

The tenant user creates, in its `restricted` namespace: a pause pod behind a headless Service,
and an etcd server on a PersistentVolumeClaim behind a ClusterIP Service that an etcdctl pod
reaches by DNS name (pod -> rig DNS -> Service IP -> kube-proxy -> pod). The cluster admin
creates an Ingress like the program's (class nginx, SSL passthrough) for the infra apiserver:
name -> rig DNS (wildcard) -> Traefik on the node IP -> by SNI, untouched -> kube-apiserver.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.e2e.images.build import ETCD_IMAGE_TAG, PAUSE_VERSION
from tests.e2e.infra import InfraCluster
from tests.e2e.infra.dns import Answer, query_a

ETCD_IMAGE = f"registry.k8s.io/etcd:{ETCD_IMAGE_TAG}"
PAUSE_IMAGE = f"registry.k8s.io/pause:{PAUSE_VERSION}"
NONROOT_UID = 65532
SMOKE_LABELS = {"rig-smoke": "true"}
# What the program's `exposure: ingress` puts on its Ingress (components/host/exposure.py).
PASSTHROUGH_ANNOTATIONS = {
    "nginx.ingress.kubernetes.io/ssl-passthrough": "true",
    "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
}
INFRA_API_INGRESS = "smoke-infra-api"


def restricted_container(name: str, image: str, command: list[str] | None = None) -> dict:
    """A container that passes the `restricted` Pod Security Standard."""
    container: dict = {
        "name": name,
        "image": image,
        "imagePullPolicy": "Never",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if command:
        container["command"] = command
    return container


def pod_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": NONROOT_UID,
        "runAsGroup": NONROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pause_pod_and_headless_service() -> list[dict]:
    labels = {"app": "smoke-pause"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "smoke-headless", "labels": SMOKE_LABELS},
            "spec": {"clusterIP": "None", "selector": labels},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "smoke-pause", "labels": {**labels, **SMOKE_LABELS}},
            "spec": {
                # hostname + subdomain: the DNS name a StatefulSet pod gets.
                "hostname": "smoke-pause-0",
                "subdomain": "smoke-headless",
                "securityContext": pod_security_context(),
                "containers": [restricted_container("pause", PAUSE_IMAGE)],
            },
        },
    ]


def etcd_on_a_volume(namespace: str) -> list[dict]:
    labels = {"app": "smoke-etcd"}
    url = f"http://smoke-etcd.{namespace}.svc.cluster.local:2379"
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "smoke-etcd-data", "labels": SMOKE_LABELS},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "smoke-etcd", "labels": SMOKE_LABELS},
            "spec": {
                "type": "NodePort",
                "selector": labels,
                "ports": [{"name": "client", "port": 2379}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "smoke-etcd", "labels": {**labels, **SMOKE_LABELS}},
            "spec": {
                "securityContext": pod_security_context(),
                "containers": [
                    {
                        **restricted_container(
                            "etcd",
                            ETCD_IMAGE,
                            [
                                "etcd",
                                "--data-dir=/data/etcd",
                                "--listen-client-urls=http://0.0.0.0:2379",
                                f"--advertise-client-urls={url}",
                            ],
                        ),
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        "readinessProbe": {"tcpSocket": {"port": 2379}, "periodSeconds": 2},
                    }
                ],
                "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": "smoke-etcd-data"}}
                ],
            },
        },
    ]


def etcdctl_client_pod(namespace: str) -> dict:
    url = f"http://smoke-etcd.{namespace}.svc.cluster.local:2379"
    script = ["etcdctl", f"--endpoints={url}", "--dial-timeout=5s", "put", "smoke", "ok"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "smoke-etcdctl", "labels": SMOKE_LABELS},
        "spec": {
            "restartPolicy": "OnFailure",
            "securityContext": pod_security_context(),
            "containers": [restricted_container("etcdctl", ETCD_IMAGE, script)],
        },
    }


def wait_for_pod(cluster: InfraCluster, name: str, condition: str, timeout: int = 180) -> None:
    result = cluster.kubectl(
        "-n",
        cluster.namespace,
        "wait",
        f"--for={condition}",
        f"pod/{name}",
        f"--timeout={timeout}s",
        tenant=True,
        check=False,
        timeout=timeout + 30,
    )
    if result.returncode != 0:
        described = cluster.kubectl("-n", cluster.namespace, "describe", "pod", name, check=False)
        pytest.fail(f"pod {name} not {condition}: {result.stderr}\n{described.stdout}")


@pytest.fixture(scope="module")
def smoke_workloads(infra_cluster: InfraCluster) -> Iterator[InfraCluster]:
    """Everything the tests look at, created once as the tenant user, deleted afterwards (the
    rig may be a long-lived one from hack/infra.sh up)."""
    namespace = infra_cluster.namespace
    manifests = pause_pod_and_headless_service() + etcd_on_a_volume(namespace)
    infra_cluster.apply({"apiVersion": "v1", "kind": "List", "items": manifests}, tenant=True)
    wait_for_pod(infra_cluster, "smoke-pause", "condition=Ready")
    wait_for_pod(infra_cluster, "smoke-etcd", "condition=Ready")
    yield infra_cluster
    infra_cluster.kubectl(
        "-n", namespace, "delete", "pod,service,pvc", "-l", "rig-smoke=true", "--wait=true",
        tenant=True,
    )  # fmt: skip
    infra_cluster.recycle_released_volumes()


def test_node_is_ready(infra_cluster: InfraCluster) -> None:
    node = infra_cluster.kubectl_json("get", "node", infra_cluster.node_name)
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == infra_cluster.node_ip


def test_teardown_check_sees_every_running_binary(infra_cluster: InfraCluster) -> None:
    """The fixture's teardown fails if leftovers() finds anything; prove it would find them."""
    found = "\n".join(infra_cluster.leftovers())
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert f"{infra_cluster.bin_dir / name}( |$)" in found
    for name in ("kubelet", "kube-proxy", "coredns", "traefik"):
        assert f"{infra_cluster.bin_dir / name}( |$)" in found
    assert "containerd --config" in found


def test_tenant_user_is_confined_to_its_namespace(infra_cluster: InfraCluster) -> None:
    namespace = infra_cluster.namespace
    assert infra_cluster.can_i("create", "deployments.apps", "-n", namespace)
    assert infra_cluster.can_i("create", "persistentvolumeclaims", "-n", namespace)
    assert not infra_cluster.can_i("create", "namespaces")
    assert not infra_cluster.can_i("create", "clusterrolebindings.rbac.authorization.k8s.io")
    assert not infra_cluster.can_i("get", "nodes")
    assert not infra_cluster.can_i("get", "pods", "-n", "kube-system")


def test_restricted_namespace_rejects_a_privileged_pod(infra_cluster: InfraCluster) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "smoke-root"},
        "spec": {"containers": [{"name": "pause", "image": PAUSE_IMAGE}]},
    }
    result = infra_cluster.kubectl(
        "-n", infra_cluster.namespace, "apply", "--dry-run=server", "-f", "-",
        input=json.dumps(pod), tenant=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "violates PodSecurity" in result.stderr


def test_tenant_pod_runs(smoke_workloads: InfraCluster) -> None:
    pod = smoke_workloads.kubectl_json("-n", smoke_workloads.namespace, "get", "pod", "smoke-pause")
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["podIP"].startswith("10.244.")


def test_rig_dns_answers_cluster_names_only(smoke_workloads: InfraCluster) -> None:
    cluster = smoke_workloads
    namespace = cluster.namespace
    kubernetes = query_a("kubernetes.default.svc.cluster.local", cluster.dns_ip)
    assert kubernetes.addresses == ("10.96.0.1",)

    service = cluster.kubectl_json("-n", namespace, "get", "service", "smoke-etcd", tenant=True)
    answer = query_a(f"smoke-etcd.{namespace}.svc.cluster.local", cluster.dns_ip)
    assert answer.addresses == (service["spec"]["clusterIP"],)

    pod = cluster.kubectl_json("-n", namespace, "get", "pod", "smoke-pause", tenant=True)
    pod_name = f"smoke-pause-0.smoke-headless.{namespace}.svc.cluster.local"
    deadline = time.monotonic() + 30  # the endpoints follow the pod's readiness
    while (answer := query_a(pod_name, cluster.dns_ip)).addresses != (pod["status"]["podIP"],):
        assert time.monotonic() < deadline, f"{pod_name}: {answer}"
        time.sleep(1)

    # No forwarding: names outside the cluster do not leave the rig.
    assert query_a("registry.k8s.io", cluster.dns_ip).rcode == "NXDOMAIN"


def test_system_resolver_uses_rig_dns(smoke_workloads: InfraCluster) -> None:
    namespace = smoke_workloads.namespace
    result = subprocess.run(
        ["getent", "hosts", f"smoke-etcd.{namespace}.svc.cluster.local"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result
    assert result.stdout.split()[0].startswith("10.96.")


def test_kubernetes_service_ip_reaches_apiserver_via_kube_proxy(
    infra_cluster: InfraCluster,
) -> None:
    nat_rules = subprocess.run(
        ["iptables", "-t", "nat", "-S", "KUBE-SERVICES"], capture_output=True, text=True, check=True
    ).stdout
    assert "10.96.0.1/32" in nat_rules, nat_rules
    context = ssl.create_default_context(cafile=str(infra_cluster.ca_cert))
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(
                "https://10.96.0.1:443/readyz", timeout=5, context=context
            ) as response:
                assert response.status == 200
                assert response.read() == b"ok"
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _etcd_health(url: str, attempts: int = 30) -> dict:
    """etcd's /health at `url`; a fresh Service answers once kube-proxy has synced its rules,
    so a refused connection is retried for a while (bounded: `attempts` seconds)."""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.URLError:
            if attempt == attempts - 1:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def test_host_reaches_pod_cluster_ip_and_node_port(smoke_workloads: InfraCluster) -> None:
    """The test runner (in the rig netns) reaches a pod directly, through its Service's
    ClusterIP (kube-proxy OUTPUT DNAT) and through a NodePort on the node IP."""
    cluster = smoke_workloads
    pod = cluster.kubectl_json("-n", cluster.namespace, "get", "pod", "smoke-etcd", tenant=True)
    service = cluster.kubectl_json(
        "-n", cluster.namespace, "get", "service", "smoke-etcd", tenant=True
    )
    node_port = service["spec"]["ports"][0]["nodePort"]
    for url in (
        f"http://{pod['status']['podIP']}:2379",
        f"http://{service['spec']['clusterIP']}:2379",
        f"http://{cluster.node_ip}:{node_port}",
    ):
        assert _etcd_health(url)["health"] == "true", url


def test_pvc_binds_to_a_static_volume(smoke_workloads: InfraCluster) -> None:
    cluster = smoke_workloads
    claim = cluster.kubectl_json(
        "-n", cluster.namespace, "get", "pvc", "smoke-etcd-data", tenant=True
    )
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == "rig-local"
    volume = cluster.kubectl_json("get", "pv", claim["spec"]["volumeName"])
    assert volume["metadata"]["name"].startswith("rig-pv-")
    # etcd, running as UID 65532, wrote its data into the volume's hostPath directory.
    path = Path(volume["spec"]["hostPath"]["path"])
    assert path.is_relative_to(cluster.state_dir)
    assert (path / "etcd" / "member").is_dir()


def test_pod_reaches_a_service_by_dns_name(smoke_workloads: InfraCluster) -> None:
    cluster = smoke_workloads
    cluster.apply(etcdctl_client_pod(cluster.namespace), tenant=True)
    wait_for_pod(cluster, "smoke-etcdctl", "jsonpath={.status.phase}=Succeeded", timeout=120)
    logs = cluster.kubectl("-n", cluster.namespace, "logs", "smoke-etcdctl", tenant=True).stdout
    assert logs.strip() == "OK"


def test_pod_reaches_the_kubernetes_service(smoke_workloads: InfraCluster) -> None:
    """No image here has an HTTP client, but etcdctl speaks gRPC over TLS + HTTP/2: the
    apiserver answering its request with an HTTP 403 proves pod -> DNS -> 10.96.0.1 ->
    kube-proxy -> kube-apiserver on the node."""
    cluster = smoke_workloads
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "smoke-kubernetes-probe", "labels": SMOKE_LABELS},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": pod_security_context(),
            "containers": [
                restricted_container(
                    "etcdctl",
                    ETCD_IMAGE,
                    [
                        "etcdctl",
                        "--endpoints=https://kubernetes.default.svc.cluster.local:443",
                        "--insecure-skip-tls-verify",
                        "--dial-timeout=5s",
                        "--command-timeout=5s",
                        "endpoint",
                        "health",
                    ],
                )
            ],
        },
    }
    cluster.apply(probe, tenant=True)
    wait_for_pod(cluster, "smoke-kubernetes-probe", "jsonpath={.status.phase}=Failed", timeout=60)
    logs = cluster.kubectl(
        "-n", cluster.namespace, "logs", "smoke-kubernetes-probe", tenant=True
    ).stdout
    assert "Addr: '10.96.0.1:443'" in logs, logs
    assert "403 (Forbidden)" in logs, logs


def test_rig_dns_answers_every_ingress_name_with_the_ingress_ip(
    infra_cluster: InfraCluster,
) -> None:
    settings = infra_cluster.settings
    for name in (settings.ingress_host("x"), settings.ingress_host("a.b"), settings.ingress_domain):
        answer = query_a(name, infra_cluster.dns_ip)
        assert answer == Answer("NOERROR", (settings.ingress_ip,)), name
    # A name that merely contains the domain is not under it: NXDOMAIN, like any other.
    assert query_a(f"x.{settings.ingress_domain}.example", infra_cluster.dns_ip).rcode == "NXDOMAIN"


def passthrough_ingress(
    *, name: str, host: str, ingress_class: str, service: str, port: int
) -> dict:
    """An Ingress as the program writes it: TLS passed through by host name to an HTTPS Service."""
    backend = {"service": {"name": service, "port": {"number": port}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": SMOKE_LABELS,
            "annotations": PASSTHROUGH_ANNOTATIONS,
        },
        "spec": {
            "ingressClassName": ingress_class,
            "rules": [
                {
                    "host": host,
                    "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
                }
            ],
        },
    }


def presented_certificate(address: str, port: int, server_name: str) -> bytes | None:
    """The certificate (DER) the server presents for this SNI, unverified; None if no handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((address, port), timeout=5) as connection,
            context.wrap_socket(connection, server_hostname=server_name) as tls,
        ):
            return tls.getpeercert(binary_form=True)
    except OSError:
        return None


def https_get(tls: ssl.SSLSocket, host: str, path: str) -> tuple[int, bytes]:
    """One HTTP/1.1 GET over an open TLS connection."""
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    response = http.client.HTTPResponse(tls)
    response.begin()
    return response.status, response.read()


def pem_file_as_der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


@pytest.fixture(scope="module")
def infra_api_ingress(infra_cluster: InfraCluster) -> Iterator[str]:
    """An Ingress for the infra apiserver (`kubernetes` in `default`), created by the cluster
    admin; yields its host once Traefik passes it through (the provider applies changes after a
    short throttle)."""
    settings = infra_cluster.settings
    host = settings.ingress_host("infra-api")
    infra_cluster.apply(
        passthrough_ingress(
            name=INFRA_API_INGRESS,
            host=host,
            ingress_class=settings.ingress_class,
            service="kubernetes",
            port=443,
        )
    )
    try:
        apiserver_certificate = pem_file_as_der(infra_cluster.pki.cert("apiserver"))
        deadline = time.monotonic() + 60
        while (
            presented_certificate(settings.ingress_ip, settings.ingress_https_port, host)
            != apiserver_certificate
        ):
            if time.monotonic() > deadline:
                logs = (settings.logs_dir / "traefik.log").read_text()[-3000:]
                pytest.fail(f"Traefik did not pass {host} through to the apiserver:\n{logs}")
            time.sleep(1)
        yield host
    finally:
        infra_cluster.kubectl(
            "-n", "default", "delete", "ingress", INFRA_API_INGRESS, "--wait=true"
        )


def test_ingress_passes_tls_through_to_the_apiserver(
    infra_cluster: InfraCluster, infra_api_ingress: str
) -> None:
    """The apiserver itself terminates TLS: its own certificate, verified against the rig CA,
    and it authenticates the admin's client certificate, which no TLS-terminating proxy could
    pass on."""
    settings = infra_cluster.settings
    host = infra_api_ingress
    assert query_a(host, infra_cluster.dns_ip).addresses == (settings.ingress_ip,)
    context = infra_cluster.admin_ssl_context()  # the rig CA, the admin's client certificate
    context.check_hostname = False  # the apiserver's certificate does not name the ingress host
    with (
        socket.create_connection((settings.ingress_ip, settings.ingress_https_port), 5) as tcp,
        context.wrap_socket(tcp, server_hostname=host) as tls,
    ):
        certificate = tls.getpeercert(binary_form=True)
        assert certificate == pem_file_as_der(infra_cluster.pki.cert("apiserver"))
        assert https_get(tls, host, "/readyz") == (200, b"ok")


def test_ingress_publishes_the_ingress_ip_in_the_status(
    infra_cluster: InfraCluster, infra_api_ingress: str
) -> None:
    deadline = time.monotonic() + 30
    while True:
        ingress = infra_cluster.kubectl_json("-n", "default", "get", "ingress", INFRA_API_INGRESS)
        addresses = ingress.get("status", {}).get("loadBalancer", {}).get("ingress", [])
        if addresses:
            break
        assert time.monotonic() < deadline, ingress
        time.sleep(1)
    assert addresses == [{"ip": infra_cluster.settings.ingress_ip}]


def test_unknown_ingress_host_does_not_reach_the_apiserver(
    infra_cluster: InfraCluster, infra_api_ingress: str
) -> None:
    """Another name of the domain reaches Traefik too (wildcard DNS), which then terminates TLS
    with its own default certificate: not the apiserver's, not from the rig CA."""
    settings = infra_cluster.settings
    host = settings.ingress_host("unknown")
    assert query_a(host, infra_cluster.dns_ip).addresses == (settings.ingress_ip,)
    presented = presented_certificate(settings.ingress_ip, settings.ingress_https_port, host)
    assert presented is not None
    assert presented != pem_file_as_der(infra_cluster.pki.cert("apiserver"))
    subject = x509.load_der_x509_certificate(presented).subject
    assert [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [
        "TRAEFIK DEFAULT CERT"
    ]
    context = ssl.create_default_context(cafile=str(infra_cluster.ca_cert))
    context.check_hostname = False
    with (
        socket.create_connection((settings.ingress_ip, settings.ingress_https_port), 5) as tcp,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(tcp, server_hostname=host)
