"""Where `kubernetes.default` leads with ingress exposure: the node-local proxy's objects.

The builders are pure; the last tests run the whole program to see the objects wired together.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from components.config import parse_settings
from components.in_cluster_api import (
    PROXY_LABELS,
    PROXY_PORT,
    kubernetes_service_patch,
    proxy_config,
    proxy_daemonset,
)
from tests.harness import ProgramRun, run_program

CONFIG = {"clusterName": "red", "namespace": "tenant-red", "apiHost": "api.red.example.com"}


def config_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_proxy_terminates_tls_and_reoriginates_it_to_the_api_host_by_name() -> None:
    lines = config_lines(proxy_config("api.red.example.com", 443))
    assert "mode tcp" in lines
    assert "bind :6443 ssl crt /etc/kubernetes-api-proxy/serving.pem" in lines, (
        "listens on the kubernetes Service's targetPort with the proxy's certificate"
    )
    (server,) = [line for line in lines if line.startswith("server ")]
    words = server.split()
    assert words[1:3] == ["api", "api.red.example.com:443"]
    # The ingress routes by this name; the apiserver must prove it with the cluster CA.
    assert "sni str(api.red.example.com)" in server
    assert "verify required ca-file /etc/kubernetes-api-proxy/ca.crt" in server
    assert "verifyhost api.red.example.com" in server
    assert "verify none" not in server
    # No ALPN on either leg: HTTP/1.1 both ways, so the byte stream means the same to both ends.
    assert not [line for line in lines if "alpn" in line]


def test_proxy_follows_the_api_port_of_the_exposure() -> None:
    assert "server api api.example.org:8443 " in proxy_config("api.example.org", 8443)


def test_service_patch_selects_the_proxy_pods_and_keeps_traffic_on_the_node() -> None:
    patch = kubernetes_service_patch()
    assert patch["metadata"]["name"] == "kubernetes"
    assert patch["metadata"]["namespace"] == "default"
    # Only the fields the program owns: the apiserver keeps its ports, type and ClusterIP.
    assert patch["spec"] == {"selector": PROXY_LABELS, "trafficDistribution": "PreferSameNode"}


def test_proxy_daemonset_shape() -> None:
    settings = parse_settings({**CONFIG, "apiProxyImage": "mirror.example/haproxy:2.6.12"})
    daemonset = proxy_daemonset(settings, "c0ffee", "beef")
    assert daemonset["metadata"]["namespace"] == "default"
    template = daemonset["spec"]["template"]
    assert template["metadata"]["labels"] == PROXY_LABELS
    assert daemonset["spec"]["selector"]["matchLabels"] == PROXY_LABELS
    assert set(template["metadata"]["annotations"].values()) == {"c0ffee", "beef"}
    pod = template["spec"]
    assert pod["dnsPolicy"] == "Default", "cluster DNS needs the API; the proxy must not need DNS"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    (container,) = pod["containers"]
    assert container["image"] == "mirror.example/haproxy:2.6.12"
    assert container["ports"][0]["containerPort"] == PROXY_PORT
    assert container["readinessProbe"]["tcpSocket"]["port"] == PROXY_PORT
    (tls,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    sources = tls["projected"]["sources"]
    assert [item["path"] for item in sources[0]["secret"]["items"]] == [
        "serving.pem",
        "serving.pem.key",
    ]
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"


@pytest.fixture(scope="module")
def run() -> ProgramRun:
    return run_program(CONFIG)


def tenant_object(run: ProgramRun, kind: str, name: str) -> dict[str, Any]:
    (found,) = [
        o.inputs
        for o in run.objects_through("red-tenant")
        if o.inputs["kind"] == kind and o.inputs["metadata"]["name"] == name
    ]
    return found


def test_program_wires_config_certificate_and_checksums(run: ProgramRun) -> None:
    config_map = tenant_object(run, "ConfigMap", "kubernetes-api-proxy")
    secret = tenant_object(run, "Secret", "kubernetes-api-proxy")
    daemonset = tenant_object(run, "DaemonSet", "kubernetes-api-proxy")
    config = config_map["data"]["haproxy.cfg"]
    assert "sni str(api.red.example.com)" in config
    assert secret["type"] == "kubernetes.io/tls"
    annotations = daemonset["spec"]["template"]["metadata"]["annotations"]
    # A changed config or a renewed certificate rolls the proxies.
    assert annotations["k8s-on-k8s/config-sha256"] == hashlib.sha256(config.encode()).hexdigest()
    assert (
        annotations["k8s-on-k8s/serving-cert-sha256"]
        == hashlib.sha256(secret["stringData"]["tls.crt"].encode()).hexdigest()
    )
    patch = tenant_object(run, "Service", "kubernetes")
    assert patch["spec"]["selector"] == daemonset["spec"]["template"]["metadata"]["labels"]
    (resource,) = [
        r
        for r in run.objects_through("red-tenant")
        if r.inputs["kind"] == "Service" and r.inputs["metadata"]["name"] == "kubernetes"
    ]
    assert resource.type == "kubernetes:core/v1:ServicePatch", "the apiserver owns the Service"


def test_nodes_reaching_the_api_by_address_get_endpoints_and_no_proxy() -> None:
    run = run_program({**CONFIG, "exposure": "nodePort", "apiAdvertiseAddress": "192.0.2.5"})
    tenant = {
        (o.inputs["kind"], o.inputs["metadata"]["name"]) for o in run.objects_through("red-tenant")
    }
    assert ("Endpoints", "kubernetes") in tenant
    assert ("EndpointSlice", "kubernetes") in tenant
    assert not [key for key in tenant if key[1] == "kubernetes-api-proxy"]
    assert ("Service", "kubernetes") not in tenant


def test_the_kubernetes_endpoints_are_let_go_and_the_slice_deleted() -> None:
    """The endpoints controller recreates `default/kubernetes` at once after a switch to
    ingress: deleting it would never finish, so Pulumi lets go of it."""
    import pulumi

    from components.in_cluster_api import handed_over_when_deleted

    base = pulumi.ResourceOptions()
    assert handed_over_when_deleted("endpoints", base).retain_on_delete is True
    assert not handed_over_when_deleted("endpointslice", base).retain_on_delete
    assert not handed_over_when_deleted("proxy-daemonset", base).retain_on_delete
