"""Where `kubernetes.default` leads: the program's endpoints, the policy that keeps the Service
without a selector, and the node-local proxy's objects (exposure ingress).

The builders are pure; the last tests run the whole program to see the objects wired together.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest

from components.config import ConfigError, parse_settings
from components.tenant.in_cluster_api import (
    API_PROXY_LABELS,
    API_PROXY_PORT,
    api_proxy_config,
    api_proxy_daemonset,
    host_prefix,
    kubernetes_endpoint,
    no_selector_policy,
    no_selector_policy_binding,
)
from tests.harness import ProgramRun, run_program

CONFIG = {"clusterName": "red", "namespace": "tenant-red", "apiHost": "api.red.example.com"}


def config_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_proxy_terminates_tls_and_reoriginates_it_to_the_api_host_by_name() -> None:
    lines = config_lines(api_proxy_config("172.20.0.1", "api.red.example.com", 443))
    assert "mode tcp" in lines
    assert "bind ipv4@172.20.0.1:6443 ssl crt /etc/kubernetes-api-proxy/serving.pem" in lines, (
        "listens on the node-local address only, at the endpoint's port, with its certificate"
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


def test_proxy_follows_the_api_port_of_the_exposure_and_the_address_family() -> None:
    config = api_proxy_config("fd00:20::1", "api.example.org", 8443)
    assert "server api api.example.org:8443 " in config
    assert "bind ipv6@fd00:20::1:6443 " in config
    assert host_prefix("fd00:20::1") == "fd00:20::1/128"
    assert host_prefix("172.20.0.1") == "172.20.0.1/32"


@pytest.mark.parametrize(
    ("extra", "endpoint"),
    [
        ({}, ("172.20.0.1", API_PROXY_PORT)),
        ({"apiProxyAddress": "192.0.2.77"}, ("192.0.2.77", API_PROXY_PORT)),
        ({"exposure": "nodePort", "apiAdvertiseAddress": "192.0.2.5"}, ("192.0.2.5", 31443)),
        ({"exposure": "loadBalancer", "loadBalancerIP": "192.0.2.6"}, ("192.0.2.6", 6443)),
    ],
    ids=["ingress", "ingress-own-address", "nodePort", "loadBalancer"],
)
def test_every_mode_has_one_program_written_endpoint(
    extra: dict[str, str], endpoint: tuple[str, int]
) -> None:
    assert kubernetes_endpoint(parse_settings({**CONFIG, **extra})) == endpoint


@pytest.mark.parametrize(
    "address", ["169.254.20.10", "127.0.0.2", "0.0.0.0", "fe80::1", "224.0.0.5", "10.96.0.7"]
)
def test_a_proxy_address_kubernetes_would_refuse_or_that_collides_is_refused(address: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"k8s-on-k8s:apiProxyAddress = '{address}'")):
        parse_settings({**CONFIG, "apiProxyAddress": address})


def test_a_proxy_address_inside_the_pod_range_is_refused_with_the_range() -> None:
    with pytest.raises(ConfigError, match=re.escape("outside podCidr 10.244.0.0/16")):
        parse_settings({**CONFIG, "apiProxyAddress": "10.244.3.3"})


def test_the_policy_refuses_a_selector_on_the_kubernetes_service_only() -> None:
    policy = no_selector_policy()
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    (rules,) = spec["matchConstraints"]["resourceRules"]
    assert rules["resources"] == ["services"] and set(rules["operations"]) == {"CREATE", "UPDATE"}
    (condition,) = spec["matchConditions"]
    assert 'request.namespace == "default"' in condition["expression"]
    assert 'object.metadata.name == "kubernetes"' in condition["expression"]
    (validation,) = spec["validations"]
    assert validation["expression"] == (
        "!has(object.spec.selector) || size(object.spec.selector) == 0"
    )
    binding = no_selector_policy_binding()
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }


def test_proxy_daemonset_shape() -> None:
    settings = parse_settings({**CONFIG, "apiProxyImage": "mirror.example/haproxy:2.6.12"})
    daemonset = api_proxy_daemonset(settings, "c0ffee", "beef")
    assert daemonset["metadata"]["namespace"] == "kube-system"
    rolling = daemonset["spec"]["updateStrategy"]["rollingUpdate"]
    assert rolling == {"maxSurge": 1, "maxUnavailable": 0}, "never a node without a proxy"
    template = daemonset["spec"]["template"]
    assert template["metadata"]["labels"] == API_PROXY_LABELS
    assert daemonset["spec"]["selector"]["matchLabels"] == API_PROXY_LABELS
    assert set(template["metadata"]["annotations"].values()) == {"c0ffee", "beef"}
    pod = template["spec"]
    assert pod["hostNetwork"] is True, "the proxy must not wait for the tenant's CNI"
    assert pod["dnsPolicy"] == "Default", "cluster DNS needs the API; the proxy must not need DNS"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    (init,) = pod["initContainers"]
    assert init["image"] == "mirror.example/haproxy:2.6.12"
    assert init["command"] == ["ip", "address", "replace", "172.20.0.1/32", "dev", "lo"]
    (container,) = pod["containers"]
    assert container["image"] == "mirror.example/haproxy:2.6.12"
    assert "ports" not in container, "host ports would block other pods' 6443 on the node"
    probe = {"host": "172.20.0.1", "port": API_PROXY_PORT}
    assert container["readinessProbe"]["tcpSocket"] == probe
    assert container["livenessProbe"]["tcpSocket"] == probe
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
    # The key lives where only cluster administrators run pods.
    assert {o["metadata"]["namespace"] for o in (config_map, secret, daemonset)} == {"kube-system"}
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


@pytest.mark.parametrize(
    "extra",
    [{}, {"exposure": "nodePort", "apiAdvertiseAddress": "192.0.2.5"}],
    ids=["ingress", "nodePort"],
)
def test_the_kubernetes_service_is_never_given_a_selector(extra: dict[str, str]) -> None:
    """No object of the program touches the Service: its endpoints are the program's own
    Endpoints and EndpointSlice, and the admission policy keeps selectors out."""
    run = run_program({**CONFIG, **extra})
    tenant = {
        (o.inputs["kind"], o.inputs["metadata"]["name"]): o.inputs
        for o in run.objects_through("red-tenant")
    }
    assert ("Service", "kubernetes") not in tenant
    address, port = kubernetes_endpoint(parse_settings({**CONFIG, **extra}))
    endpoints = tenant[("Endpoints", "kubernetes")]
    assert endpoints["subsets"][0]["addresses"] == [{"ip": address}]
    endpoint_slice = tenant[("EndpointSlice", "kubernetes")]
    assert endpoint_slice["endpoints"][0]["addresses"] == [address]
    assert endpoint_slice["ports"][0]["port"] == port
    assert endpoint_slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == (
        "k8s-on-k8s"
    )
    assert ("ValidatingAdmissionPolicy", no_selector_policy()["metadata"]["name"]) in tenant
    has_proxy = ("DaemonSet", "kubernetes-api-proxy") in tenant
    assert has_proxy == ("exposure" not in extra)
