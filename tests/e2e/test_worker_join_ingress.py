"""Ingress exposure end to end: the API through a TLS-passthrough ingress, a node that joins
through it, and in-cluster clients that reach `kubernetes.default` through the node-local proxy.

The rig runs Traefik with its ingress-nginx provider (the program's Ingress and annotations, as
written) on 10.250.0.1:443, and its DNS answers every name under the rig's ingress domain with
that address, like a wildcard record. The shared tenant is switched to `exposure: ingress` (same
stack: same keys, same etcd data), a fresh worker joins with the new `bootstrapKubeconfig`, and a
restricted pod there lists objects through `kubernetes.default`, by name and by ClusterIP.
Runs after test_worker_join.py, whose worker has left.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from cryptography import x509

from components.config import parse_settings
from components.tenant import in_cluster_api
from tests.e2e.infra.worker import API_PROXY_IMAGE, Worker
from tests.e2e.probes import Reach, ensure_probe_namespace, probe
from tests.e2e.tenant import (
    CLUSTER,
    Phase,
    Tenant,
    TenantPhases,
    assert_no_failed_requests,
    component_pods,
    ingress_config,
    is_terminating,
    under_load,
    wait_for,
)
from tests.e2e.test_worker_join import (
    NAMESPACE,
    RESTRICTED_CONTAINER,
    TenantAccess,
    _client_pod,
    _pod_phase,
    _ready,
    client_namespace_objects,
    joined_worker,
)

NODE_NAME = "tenant-worker-ingress"
FIGURES: dict[str, Any] = {}


# Found at nodePort, konnectivity on or off (test_worker_join.py turns it on); left at ingress.
TENANT_PHASES = TenantPhases.of(
    starts=[Phase.NODE_PORT, Phase.NODE_PORT_KONNECTIVITY], leaves=[Phase.INGRESS]
)


@pytest.fixture(scope="module")
def ingress_access(tenant: Tenant) -> TenantAccess:
    """The shared tenant, changed to ingress exposure by a `pulumi up` of the new config."""
    infra = tenant.infra
    if tenant.config.get("konnectivity") == "true":  # test_worker_join turned it on
        figure = "konnectivity off"
        with under_load(tenant, figure) as loads:
            tenant.update({**tenant.config, "konnectivity": "false"}, figure=f"pulumi up: {figure}")
        assert_no_failed_requests(loads, figure, tenant.infra)
    # What earlier modules changed for good (the Secrets key rotated) stays.
    config = {**tenant.config, **ingress_config(infra)}
    # The NodePort goes away by design: the client goes through the apiservers' own Service.
    figure = "exposure nodePort to ingress"
    with under_load(tenant, figure, through_endpoint=False) as loads:
        switched = tenant.update(config, figure=f"pulumi up: {figure}")
    assert_no_failed_requests(loads, figure, tenant.infra)
    # The tenant's objects stay: the provider keeps its cluster identity.
    assert f"{CLUSTER}-tenant" not in switched.named("replace")
    assert not {name for name in switched.named("replace") if "node-join" in name}
    cluster = yaml.safe_load(tenant.kubeconfig.read_text())["clusters"][0]["cluster"]
    access = TenantAccess(
        infra=infra,
        settings=parse_settings(config),
        kubeconfig=tenant.kubeconfig,
        ca_pem=base64.b64decode(cluster["certificate-authority-data"]).decode(),
        endpoint=tenant.outputs["endpoint"],
        outputs=dict(tenant.outputs),
    )
    # `pulumi up` waited for the new apiservers (new certificate) to be Ready; the old ones
    # drain (--shutdown-delay-duration) and, until they are gone, may still present the old
    # certificate to a client that reaches them by the new name. Wait for that, as an operator
    # does after a maintenance change, and report how long it took.
    started = time.monotonic()

    def old_apiservers_gone() -> bool:
        return not any(is_terminating(p) for p in component_pods(infra, "kube-apiserver"))

    wait_for("the old apiservers to finish draining", old_apiservers_gone, timeout=120)
    FIGURES["exposure change: old apiservers drained after pulumi up (s)"] = round(
        time.monotonic() - started, 1
    )
    for _ in range(8):
        answer = access.kubectl("get", "--raw", "/readyz", check=False)
        assert answer.stdout == "ok", answer.stderr
    return access


def test_the_api_answers_through_the_ingress_with_its_own_certificate(
    ingress_access: TenantAccess,
) -> None:
    """SNI passthrough: the ingress routes by server name and the apiserver itself terminates
    TLS (so client certificates, such as the admin's, keep working)."""
    host = ingress_access.settings.exposure.host
    assert ingress_access.endpoint == f"https://{host}"
    listed = ingress_access.kubectl("get", "namespace", "kube-system", "-o", "name")
    assert listed.stdout.strip() == "namespace/kube-system"
    who = ingress_access.kubectl_json("auth", "whoami")
    assert who["status"]["userInfo"]["username"] == "kubernetes-admin"

    context = ssl.create_default_context(cadata=ingress_access.ca_pem)  # checks the host name
    address = socket.getaddrinfo(host, 443, socket.AF_INET)[0][4][0]
    assert address == ingress_access.infra.node_ip, "the rig's DNS sends the name to the ingress"
    with (
        socket.create_connection((address, 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    presented = x509.load_der_x509_certificate(der)
    common_name = presented.subject.rfc4514_string()
    assert common_name == "CN=kube-apiserver", common_name
    # The NodePort Service left the program and is gone, as `pulumi up` deletes it.
    services = ingress_access.infra.kubectl_json(
        "get", "services", "-n", ingress_access.infra.namespace, tenant=True
    )["items"]
    assert not [s for s in services if s["spec"].get("type") == "NodePort"]


def test_with_ingress_only_the_ingress_path_reaches_the_apiservers(
    ingress_access: TenantAccess,
) -> None:
    """The apiservers' policy now admits the exposure path only (here Traefik on the node, which
    the NetworkPolicy API always lets through), no longer anyone: a pod of another namespace
    that reached 6443 under nodePort (test_network_policies.py) is blocked now."""
    infra = ingress_access.infra
    ensure_probe_namespace(infra)
    for pod in component_pods(infra, "kube-apiserver"):
        if is_terminating(pod):
            continue
        reach = probe(infra, f"https://{pod['status']['podIP']}:6443")
        assert reach is Reach.BLOCKED, f"{pod['metadata']['name']}: {reach}"
    assert ingress_access.kubectl("get", "--raw", "/readyz").stdout == "ok"


@pytest.fixture(scope="module")
def ingress_worker(ingress_access: TenantAccess) -> Iterator[Worker]:
    bootstrap = str(ingress_access.outputs["bootstrapKubeconfig"])
    server = yaml.safe_load(bootstrap)["clusters"][0]["cluster"]["server"]
    assert server == ingress_access.endpoint
    with joined_worker(ingress_access, bootstrap, FIGURES, node_name=NODE_NAME) as node:
        yield node


def _proxy_pod_on(access: TenantAccess, node: str) -> dict[str, Any] | None:
    listed = access.kubectl_json(
        "get",
        "pods",
        "-n",
        in_cluster_api.API_PROXY_NAMESPACE,
        "-l",
        f"k8s-app={in_cluster_api.API_PROXY}",
    )["items"]
    ready = [p for p in listed if p["spec"].get("nodeName") == node and _ready(p)]
    return ready[0] if ready else None


def test_the_node_joins_through_the_ingress_and_runs_the_proxy(
    ingress_access: TenantAccess, ingress_worker: Worker
) -> None:
    access = ingress_access
    kubelet = yaml.safe_load(ingress_worker.settings.kubeconfig.read_text())
    assert kubelet["clusters"][0]["cluster"]["server"] == access.endpoint
    node = access.kubectl_json("get", "node", NODE_NAME)
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True", conditions

    started = time.monotonic()
    try:
        proxy = wait_for(
            "the kubernetes-api-proxy pod Ready on the worker",
            lambda: _proxy_pod_on(access, NODE_NAME),
            timeout=180,
        )
    except AssertionError:
        print(access.kubectl("get", "pods", "-A", "-o", "wide").stdout)
        print(
            access.kubectl(
                "describe",
                "daemonset",
                "-n",
                in_cluster_api.API_PROXY_NAMESPACE,
                in_cluster_api.API_PROXY,
            ).stdout
        )
        raise
    FIGURES["node Ready to the API proxy Ready (s)"] = round(time.monotonic() - started, 1)
    assert proxy["spec"]["containers"][0]["image"] == API_PROXY_IMAGE

    # On the host network: the node's own address, no CNI needed.
    assert proxy["spec"]["hostNetwork"] is True
    internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
    assert proxy["status"]["podIP"] in internal

    # The `kubernetes` Service has no selector; its one endpoint is the node-local address,
    # written by the program (the NodePort endpoint is gone with the NodePort).
    service = access.kubectl_json("get", "service", "kubernetes", "-n", "default")
    assert not service["spec"].get("selector")
    assert service["spec"]["clusterIP"] == access.settings.kubernetes_service_ip
    assert _kubernetes_endpoints(access) == {
        (access.settings.api_proxy_address, in_cluster_api.API_PROXY_PORT)
    }


def _kubernetes_endpoints(access: TenantAccess) -> set[tuple[str, int]]:
    """Every (address, port) the `kubernetes` Service's EndpointSlices list, whoever wrote them."""
    slices = access.kubectl_json(
        "get", "endpointslices", "-n", "default", "-l", "kubernetes.io/service-name=kubernetes"
    )["items"]
    return {
        (address, port["port"])
        for endpoint_slice in slices
        for endpoint in endpoint_slice.get("endpoints") or []
        for address in endpoint["addresses"]
        for port in endpoint_slice.get("ports") or []
    }


@pytest.fixture(scope="module")
def ingress_clients(ingress_access: TenantAccess) -> str:
    """The restricted client namespace (it may remain from test_worker_join.py: applied again)."""
    ingress_access.apply(client_namespace_objects())
    return NAMESPACE


def test_restricted_pod_reaches_kubernetes_default_by_name_and_by_cluster_ip(
    ingress_access: TenantAccess, ingress_worker: Worker, ingress_clients: str
) -> None:
    """Through the worker's proxy, the ingress and the apiserver: by the service name (TLS
    server name kubernetes.default.svc.cluster.local, via CoreDNS) and as client-go's
    in-cluster config dials it (the ClusterIP from KUBERNETES_SERVICE_HOST, no server name)."""
    wait_for(
        "the proxy on the worker",
        lambda: _proxy_pod_on(ingress_access, NODE_NAME),
        timeout=180,
    )
    _in_cluster_clients_list_objects(ingress_access, "ingress-client")


ATTACKER = "mallory"  # a tenant user with the `admin` role in `default`, nothing more
IMPOSTOR = "impostor"


@pytest.fixture(scope="module")
def namespace_admin(ingress_access: TenantAccess) -> Iterator[str]:
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{ATTACKER}-admin", "namespace": "default"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "admin",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ATTACKER}],
    }
    ingress_access.apply([binding])
    yield ATTACKER
    ingress_access.kubectl("delete", "pod", IMPOSTOR, "-n", "default", "--ignore-not-found")
    ingress_access.kubectl("delete", "rolebinding", f"{ATTACKER}-admin", "-n", "default")


def test_an_admin_of_default_cannot_become_kubernetes_default_or_read_the_proxy_key(
    ingress_access: TenantAccess, ingress_worker: Worker, ingress_clients: str, namespace_admin: str
) -> None:
    """Issue 9's attacks, tried by a user with `admin` in `default` (impersonated): wear the
    proxy's labels, add a selector to the Service, write the endpoints, mount or read the
    proxy's key. Each fails; in-cluster clients keep working afterwards."""
    access = ingress_access

    def as_attacker(*args: str, **kwargs: Any) -> Any:
        return access.kubectl(f"--as={namespace_admin}", *args, check=False, **kwargs)

    assert as_attacker("auth", "can-i", "create", "pods", "-n", "default").stdout.strip() == "yes"
    assert as_attacker("auth", "can-i", "update", "services", "-n", "default").stdout.strip() == (
        "yes"
    )
    expected = {(access.settings.api_proxy_address, in_cluster_api.API_PROXY_PORT)}

    # 1. A pod wearing the proxy's labels, Ready on the worker, is no endpoint.
    impostor: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": IMPOSTOR,
            "namespace": "default",
            "labels": in_cluster_api.API_PROXY_LABELS,
        },
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
            "automountServiceAccountToken": False,
            "containers": [{**RESTRICTED_CONTAINER, "name": "listen", "command": ["/pause"]}],
            "volumes": [{"name": "kubeconfig", "emptyDir": {}}],
        },
    }
    created = as_attacker("apply", "-f", "-", input=json.dumps(impostor))
    assert created.returncode == 0, created.stderr
    pod = wait_for(
        "the impostor pod Ready",
        lambda: (
            p if _ready(p := access.kubectl_json("get", "pod", IMPOSTOR, "-n", "default")) else None
        ),
        timeout=120,
    )
    # The endpoints controllers act within a second of a pod turning Ready; watch for longer.
    for _ in range(10):
        listed = _kubernetes_endpoints(access)
        assert listed == expected, f"{pod['status']['podIP']} must not serve the API: {listed}"
        time.sleep(1)

    # 2. A selector on the Service is refused by the admission policy.
    selector = json.dumps({"spec": {"selector": in_cluster_api.API_PROXY_LABELS}})
    patched = as_attacker("patch", "service", "kubernetes", "-n", "default", "-p", selector)
    assert patched.returncode != 0 and "takes no selector" in patched.stderr, patched.stderr
    assert not access.kubectl_json("get", "service", "kubernetes", "-n", "default")["spec"].get(
        "selector"
    )

    # 3. The endpoints themselves are not theirs to write (RBAC).
    for kind in ("endpointslice", "endpoints"):
        written = as_attacker(
            "label", kind, "kubernetes", "-n", "default", "k8s-on-k8s.test/touched=yes"
        )
        assert written.returncode != 0 and "forbidden" in written.stderr, written.stderr

    # 4. The proxy's key: not in `default` (a pod mounts only Secrets of its own namespace), and
    #    neither readable nor mountable in kube-system.
    assert not access.exists("secret", in_cluster_api.API_PROXY, "-n", "default")
    read = as_attacker(
        "get", "secret", in_cluster_api.API_PROXY, "-n", in_cluster_api.API_PROXY_NAMESPACE
    )
    assert read.returncode != 0 and "forbidden" in read.stderr, read.stderr
    thief = {
        **impostor,
        "metadata": {"name": "thief", "namespace": in_cluster_api.API_PROXY_NAMESPACE},
        "spec": {
            **impostor["spec"],
            "volumes": [{"name": "kubeconfig", "secret": {"secretName": in_cluster_api.API_PROXY}}],
        },
    }
    stolen = as_attacker("create", "-f", "-", input=json.dumps(thief))
    assert stolen.returncode != 0 and "forbidden" in stolen.stderr, stolen.stderr

    assert _kubernetes_endpoints(access) == expected
    _in_cluster_clients_list_objects(access, "ingress-client-after-attacks")


def test_renewal_rolls_the_proxy_and_in_cluster_clients_keep_working(
    tenant: Tenant, ingress_access: TenantAccess, ingress_worker: Worker, ingress_clients: str
) -> None:
    """Every leaf due at once (certificateRenewalHours = certificateValidityHours): the proxy's
    certificate is issued anew, its DaemonSet rolls (checksum annotation), and in-cluster
    clients work through the new proxy. The API is measured under load meanwhile."""
    access = ingress_access
    before = _proxy_pod_on(access, NODE_NAME)
    assert before is not None
    secret_before = _proxy_certificate(access)
    validity = tenant.config.get("certificateValidityHours", "8760")
    figure = "every leaf renewed, ingress exposure (node-local proxy)"
    with under_load(tenant, figure) as loads:
        tenant.update({**tenant.config, "certificateRenewalHours": validity})
    assert_no_failed_requests(loads, figure, tenant.infra)
    assert _proxy_certificate(access) != secret_before

    def rolled() -> dict[str, Any] | None:
        pod = _proxy_pod_on(access, NODE_NAME)
        return pod if pod and pod["metadata"]["uid"] != before["metadata"]["uid"] else None

    wait_for("a new proxy pod on the worker", rolled, timeout=180)
    _in_cluster_clients_list_objects(access, "ingress-client-renewed")
    restored = {
        key: value for key, value in tenant.config.items() if key != "certificateRenewalHours"
    }
    tenant.update(restored)


def _proxy_certificate(access: TenantAccess) -> str:
    secret = access.kubectl_json(
        "get", "secret", in_cluster_api.API_PROXY, "-n", in_cluster_api.API_PROXY_NAMESPACE
    )
    return str(secret["data"]["tls.crt"])


def _in_cluster_clients_list_objects(access: TenantAccess, name: str) -> None:
    """A restricted pod on the worker lists objects through `kubernetes.default`, by name and
    by ClusterIP."""
    pod = _client_pod(
        name,
        NODE_NAME,
        [
            {
                "name": "in-cluster-config",
                # No kubeconfig: kubectl falls back to the pod's in-cluster config.
                "args": ["-v=6", "get", "namespaces", "-o", "name"],
            }
        ],
        restartPolicy="Never",
        initContainers=[
            {
                **RESTRICTED_CONTAINER,
                "name": "by-name",
                "args": [
                    "--kubeconfig=/etc/e2e/kubeconfig",
                    "-v=6",
                    "get",
                    "configmaps",
                    "-n",
                    NAMESPACE,
                    "-o",
                    "name",
                ],
            }
        ],
    )
    access.kubectl("delete", "pod", name, "-n", NAMESPACE, "--ignore-not-found")
    created = access.kubectl("apply", "-f", "-", input=json.dumps(pod), check=False)
    assert created.returncode == 0 and "violate" not in created.stderr, created.stderr
    try:
        phase = wait_for(
            "the client pod to finish",
            lambda: p if (p := _pod_phase(access, name)) in ("Succeeded", "Failed") else None,
            timeout=240,
        )
    except AssertionError:
        print(access.kubectl("describe", "pod", name, "-n", NAMESPACE).stdout)
        raise
    by_name = access.kubectl("logs", name, "-n", NAMESPACE, "-c", "by-name")
    in_cluster = access.kubectl("logs", name, "-n", NAMESPACE, "-c", "in-cluster-config")
    print(by_name.stdout[-2000:], in_cluster.stdout[-2000:])
    assert phase == "Succeeded", by_name.stdout + in_cluster.stdout
    assert "https://kubernetes.default.svc.cluster.local:443/api/v1" in by_name.stdout
    assert "configmap/kube-root-ca.crt" in by_name.stdout
    service_ip = access.settings.kubernetes_service_ip
    assert f"https://{service_ip}:443/api/v1/namespaces" in in_cluster.stdout
    assert "200 OK" in in_cluster.stdout
    assert "namespace/kube-system" in in_cluster.stdout
