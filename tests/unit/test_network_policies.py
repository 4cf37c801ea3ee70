"""The namespace's NetworkPolicies as a traffic matrix: every allowed and every denied path.

`allowed` evaluates the rendered policies the way the NetworkPolicy API defines them (a pod
selected for a direction accepts only what some rule of that direction lists); the e2e rig
proves the same paths against a real implementation (kube-router).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import pytest

from components.common.names import ObjectNames
from components.config import parse_settings
from components.host.network_policies import network_policy_specs
from tests.harness import run_program

NAMESPACE = "ns1"


@dataclass(frozen=True)
class Peer:
    """A pod (labels, namespace) or an address outside any pod (labels None)."""

    ip: str
    namespace: str = NAMESPACE
    pod_labels: dict[str, str] | None = field(default=None, hash=False)


def _pod_template_labels() -> dict[str, dict[str, str]]:
    """The labels the program's pods really wear, by workload name: the peers below wear
    them, so a selector that misses its pods fails here."""
    run = run_program({"clusterName": "red", "namespace": NAMESPACE, "apiHost": "api.example.com"})
    return {
        r.inputs["metadata"]["name"]: r.inputs["spec"]["template"]["metadata"]["labels"]
        for r in run.objects_through("infra")
        if r.type in ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")
    }


POD_LABELS = _pod_template_labels()


def component(workload: str, ip: str) -> Peer:
    return Peer(ip, NAMESPACE, POD_LABELS[workload])


ETCD = component("red-etcd", "10.0.0.10")
APISERVER = component("red-apiserver", "10.0.0.20")
CONTROLLER_MANAGER = component("red-controller-manager", "10.0.0.30")
SCHEDULER = component("red-scheduler", "10.0.0.40")
# A pod of the tenant's namespace wearing no control-plane labels, and pods elsewhere.
NEIGHBOUR = Peer("10.0.0.50", NAMESPACE, {"app": "anything"})
OTHER_NAMESPACE = Peer("10.0.1.60", "other", {"app": "anything"})
INGRESS_CONTROLLER = Peer("10.0.2.70", "ingress-nginx", {"app.kubernetes.io/name": "ingress"})
NODE_OUTSIDE = Peer("192.0.2.80")  # a tenant node, or anything outside the cluster
DNS = Peer("10.0.3.53", "kube-system", {"k8s-app": "kube-dns"})


def _selects(selector: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    if any(pod_labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if pod_labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _peer_matches(rule_peer: dict[str, Any], peer: Peer) -> bool:
    if "ipBlock" in rule_peer:
        return ipaddress.ip_address(peer.ip) in ipaddress.ip_network(rule_peer["ipBlock"]["cidr"])
    if peer.pod_labels is None:
        return False
    if "namespaceSelector" in rule_peer:
        namespace_labels = {"kubernetes.io/metadata.name": peer.namespace}
        if not _selects(rule_peer["namespaceSelector"], namespace_labels):
            return False
    elif peer.namespace != NAMESPACE:
        return False
    return _selects(rule_peer.get("podSelector", {}), peer.pod_labels)


def _rule_allows(rule: dict[str, Any], key: str, peer: Peer, port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    if ports is not None and not any(
        p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports
    ):
        return False
    peers = rule.get(key)
    return peers is None or any(_peer_matches(p, peer) for p in peers)


def _direction_allows(
    specs: list[dict[str, Any]], pod: Peer, direction: str, peer: Peer, port: int, protocol: str
) -> bool:
    if pod.pod_labels is None or pod.namespace != NAMESPACE:
        return True  # outside this namespace's policies
    key, rules_key = ("from", "ingress") if direction == "Ingress" else ("to", "egress")
    selecting = [
        s
        for s in specs
        if direction in s["policyTypes"] and _selects(s["podSelector"], pod.pod_labels)
    ]
    if not selecting:
        return True
    return any(
        _rule_allows(rule, key, peer, port, protocol)
        for spec in selecting
        for rule in spec.get(rules_key, [])
    )


def allowed(
    specs: dict[str, dict[str, Any]], source: Peer, target: Peer, port: int, protocol: str = "TCP"
) -> bool:
    policies = list(specs.values())
    return _direction_allows(
        policies, source, "Egress", target, port, protocol
    ) and _direction_allows(policies, target, "Ingress", source, port, protocol)


def specs_for(**raw: str) -> dict[str, dict[str, Any]]:
    config = {"clusterName": "red", "namespace": NAMESPACE, **raw}
    settings = parse_settings(config)
    return network_policy_specs(settings, ObjectNames("red", NAMESPACE, "cluster.local"))


NODE_PORT = {"exposure": "nodePort", "apiAdvertiseAddress": "192.0.2.1"}


@pytest.mark.parametrize("port", [2379, 2380, 2381])
@pytest.mark.parametrize("source", [NEIGHBOUR, OTHER_NAMESPACE, NODE_OUTSIDE, CONTROLLER_MANAGER])
def test_nobody_but_the_apiservers_and_members_reaches_etcd_on_any_port(
    source: Peer, port: int
) -> None:
    assert not allowed(specs_for(), source, ETCD, port)


def test_apiservers_reach_the_client_port_and_members_the_peer_port_only() -> None:
    specs = specs_for()
    other_member = component("red-etcd", "10.0.0.11")
    assert allowed(specs, APISERVER, ETCD, 2379)
    assert not allowed(specs, APISERVER, ETCD, 2380)
    assert allowed(specs, other_member, ETCD, 2380)
    assert not allowed(specs, other_member, ETCD, 2379)
    assert not allowed(specs, other_member, ETCD, 2381)


@pytest.mark.parametrize("client", [CONTROLLER_MANAGER, SCHEDULER])
def test_the_controller_manager_and_scheduler_reach_the_apiservers_and_nothing_else(
    client: Peer,
) -> None:
    specs = specs_for()
    assert allowed(specs, client, APISERVER, 6443)
    assert allowed(specs, client, DNS, 53, "UDP") and allowed(specs, client, DNS, 53, "TCP")
    for target, port in ((ETCD, 2379), (NODE_OUTSIDE, 443), (OTHER_NAMESPACE, 8080)):
        assert not allowed(specs, client, target, port)


@pytest.mark.parametrize("target", [CONTROLLER_MANAGER, SCHEDULER])
@pytest.mark.parametrize("port", [10257, 10259])
def test_the_controller_manager_and_scheduler_serve_nobody(target: Peer, port: int) -> None:
    for source in (NEIGHBOUR, OTHER_NAMESPACE, NODE_OUTSIDE, APISERVER):
        assert not allowed(specs_for(), source, target, port)


def test_with_node_port_anyone_reaches_the_apiservers_on_6443_only() -> None:
    specs = specs_for(**NODE_PORT)
    for source in (NODE_OUTSIDE, OTHER_NAMESPACE, NEIGHBOUR, INGRESS_CONTROLLER):
        assert allowed(specs, source, APISERVER, 6443)
        assert not allowed(specs, source, APISERVER, 8132)
        assert not allowed(specs, source, APISERVER, 8133)


def test_konnectivity_agents_reach_the_agent_port_from_anywhere() -> None:
    specs = specs_for(**NODE_PORT, konnectivity="true")
    assert allowed(specs, NODE_OUTSIDE, APISERVER, 8132)
    assert not allowed(specs, NODE_OUTSIDE, APISERVER, 8133)  # the admin port stays closed


def test_with_ingress_only_the_ingress_controller_reaches_the_apiservers() -> None:
    specs = specs_for(apiHost="api.red.example.com")
    assert allowed(specs, INGRESS_CONTROLLER, APISERVER, 6443)
    for source in (NODE_OUTSIDE, OTHER_NAMESPACE, NEIGHBOUR):
        assert not allowed(specs, source, APISERVER, 6443)


def test_ingress_controller_sources_follow_config() -> None:
    specs = specs_for(
        apiHost="api.red.example.com",
        ingressControllerNamespaces="traefik,other",
        ingressControllerCidrs="192.0.2.0/24",
    )
    assert not allowed(specs, INGRESS_CONTROLLER, APISERVER, 6443)  # ingress-nginx: not listed
    assert allowed(specs, OTHER_NAMESPACE, APISERVER, 6443)
    assert allowed(specs, NODE_OUTSIDE, APISERVER, 6443)
    none = specs_for(apiHost="api.red.example.com", ingressControllerNamespaces="")
    assert not allowed(none, INGRESS_CONTROLLER, APISERVER, 6443)
    assert allowed(none, CONTROLLER_MANAGER, APISERVER, 6443)


def test_apiserver_egress_is_etcd_and_dns_unless_cidrs_are_given() -> None:
    specs = specs_for(**NODE_PORT)
    assert allowed(specs, APISERVER, ETCD, 2379)
    assert allowed(specs, APISERVER, DNS, 53, "UDP")
    for target, port in (
        (NODE_OUTSIDE, 10250),  # a tenant node's kubelet
        (OTHER_NAMESPACE, 8443),  # a webhook into the infrastructure network
        (NEIGHBOUR, 80),
        (CONTROLLER_MANAGER, 10257),
        (ETCD, 2380),
    ):
        assert not allowed(specs, APISERVER, target, port)


def test_apiserver_egress_cidrs_open_every_port_there_and_nowhere_else() -> None:
    specs = specs_for(**NODE_PORT, apiServerEgressCidrs="192.0.2.0/25,2001:db8::/64")
    assert allowed(specs, APISERVER, NODE_OUTSIDE, 10250)
    assert allowed(specs, APISERVER, NODE_OUTSIDE, 8443)
    assert allowed(specs, APISERVER, Peer("2001:db8::5"), 443)
    assert not allowed(specs, APISERVER, Peer("192.0.2.200"), 10250)
    assert not allowed(specs, APISERVER, OTHER_NAMESPACE, 8443)


def test_every_control_plane_pod_is_isolated_both_ways() -> None:
    for name, spec in specs_for().items():
        assert spec["policyTypes"] == ["Ingress", "Egress"], name


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("apiServerEgressCidrs", "10.0.0.1/8"),
        ("apiServerEgressCidrs", "10.0.0.0/8,10.0.0.0/8"),
        ("apiServerEgressCidrs", "nodes"),
        ("ingressControllerCidrs", "192.0.2.0/33"),
        ("ingressControllerNamespaces", "Ingress_Nginx"),
        ("ingressControllerNamespaces", "a,,b"),
    ],
)
def test_bad_network_policy_settings_are_refused_with_key_and_value(key: str, value: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_settings({key: value})
    assert f"k8s-on-k8s:{key} = {value!r} is invalid" in str(error.value)


def test_the_program_registers_one_policy_per_component_in_the_namespace() -> None:
    run = run_program({"clusterName": "red", "namespace": NAMESPACE, "apiHost": "api.example.com"})
    policies = [r for r in run.objects_through("infra") if r.type.endswith("NetworkPolicy")]
    assert sorted(p.inputs["metadata"]["name"] for p in policies) == [
        "red-apiserver",
        "red-controller-manager",
        "red-etcd",
        "red-scheduler",
    ]
    assert {p.inputs["metadata"]["namespace"] for p in policies} == {NAMESPACE}
