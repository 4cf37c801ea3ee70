"""NetworkPolicies: who may talk to whom in the host namespace, ingress and egress alike.

Every control-plane pod is isolated in both directions and gets exactly the traffic it needs:

    etcd                <- apiservers (2379), etcd members (2380)       -> etcd members (2380), DNS
    kube-apiserver      <- controller-manager, scheduler (6443)
                        <- the exposure path (6443; konnectivity agents 8132)
                                                                          -> etcd (2379), DNS,
                                                                             apiServerEgressCidrs
    controller-manager  <- nobody                                        -> apiservers (6443), DNS
    scheduler           <- nobody                                        -> apiservers (6443), DNS

So a pod elsewhere in the infrastructure cluster (or the tenant's own, below the namespace admin
who could edit these objects) cannot reach etcd on any port, the metrics port 2381 included, and
a tenant cannot make its apiservers open connections into the infrastructure network (webhooks,
aggregated APIs, node addresses) beyond the CIDRs the operator allows. Traffic between a pod
and its own node is always allowed by NetworkPolicy semantics, so the kubelet's probes need no
rule. The specs are pure and tested directly; `NetworkPolicies` only registers them.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.common.endpoints import DNS_PORT
from components.common.konnectivity import AGENT_PORT
from components.common.names import ObjectNames, labels
from components.common.podspec import Manifest
from components.config import ControlPlaneSettings, ExposureMode
from components.host.control_plane.apiserver import SECURE_PORT as API_SERVER_PORT
from components.host.control_plane.apiserver import api_server_labels
from components.host.control_plane.controller_manager import controller_manager_labels
from components.host.control_plane.scheduler import scheduler_labels
from components.host.etcd import CLIENT_PORT, PEER_PORT, etcd_labels

COMPONENT = "network-policy"
# Where a namespace's name is, on every namespace (set by the apiserver since 1.22).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def _pods(selector_labels: dict[str, str]) -> Manifest:
    return {"podSelector": {"matchLabels": selector_labels}}


def _tcp(*ports: int) -> list[Manifest]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def dns_egress() -> Manifest:
    """Name lookups, to whichever resolver the pod uses (cluster DNS, a node-local cache)."""
    return {"ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]}


def _isolated(
    selector_labels: dict[str, str], ingress: list[Manifest], egress: list[Manifest]
) -> Manifest:
    """Isolated both ways: only what `ingress` and `egress` list gets through."""
    return {
        "podSelector": {"matchLabels": selector_labels},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": ingress,
        "egress": egress,
    }


def etcd_policy_spec(names: ObjectNames) -> Manifest:
    """Clients are the apiservers only; members talk to each other on the peer port."""
    members = _pods(etcd_labels(names))
    return _isolated(
        etcd_labels(names),
        ingress=[
            {"from": [_pods(api_server_labels(names))], "ports": _tcp(CLIENT_PORT)},
            {"from": [members], "ports": _tcp(PEER_PORT)},
        ],
        egress=[{"to": [members], "ports": _tcp(PEER_PORT)}, dns_egress()],
    )


def api_server_sources(settings: ControlPlaneSettings) -> list[Manifest] | None:
    """Who reaches the apiservers from outside the namespace, by exposure mode.

    None: anyone (nodePort and loadBalancer clients come from anywhere, and through a node's
    kube-proxy from any node). With ingress, the ingress controller only: its pods (by
    namespace) and, for a controller on the host network of other nodes, the node CIDRs.
    """
    if settings.exposure.mode is not ExposureMode.INGRESS:
        return None
    peers: list[Manifest] = []
    if settings.ingress_controller_namespaces:
        peers.append(
            {
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": NAMESPACE_NAME_LABEL,
                            "operator": "In",
                            "values": list(settings.ingress_controller_namespaces),
                        }
                    ]
                }
            }
        )
    peers.extend({"ipBlock": {"cidr": cidr}} for cidr in settings.ingress_controller_cidrs)
    return peers


def api_server_policy_spec(settings: ControlPlaneSettings, names: ObjectNames) -> Manifest:
    in_namespace_clients = [
        _pods(controller_manager_labels(names)),
        _pods(scheduler_labels(names)),
    ]
    ingress: list[Manifest] = [{"from": in_namespace_clients, "ports": _tcp(API_SERVER_PORT)}]
    sources = api_server_sources(settings)
    if sources is None:
        ingress.append({"ports": _tcp(API_SERVER_PORT)})
    elif sources:
        ingress.append({"from": sources, "ports": _tcp(API_SERVER_PORT)})
    if settings.konnectivity:
        # Agents dial in from the tenant's nodes, through the NodePort or LoadBalancer.
        ingress.append({"ports": _tcp(AGENT_PORT)})
    egress: list[Manifest] = [
        {"to": [_pods(etcd_labels(names))], "ports": _tcp(CLIENT_PORT)},
        dns_egress(),
    ]
    if settings.api_server_egress_cidrs:
        # Every port: kubelets (10250), webhooks and aggregated APIs listen where they like.
        egress.append({"to": [{"ipBlock": {"cidr": c}} for c in settings.api_server_egress_cidrs]})
    return _isolated(api_server_labels(names), ingress, egress)


def api_client_policy_spec(names: ObjectNames, selector_labels: dict[str, str]) -> Manifest:
    """The controller-manager and the scheduler: they serve nobody but their own kubelet's
    probes, and talk to the apiservers only."""
    return _isolated(
        selector_labels,
        ingress=[],
        egress=[
            {"to": [_pods(api_server_labels(names))], "ports": _tcp(API_SERVER_PORT)},
            dns_egress(),
        ],
    )


def network_policy_specs(settings: ControlPlaneSettings, names: ObjectNames) -> dict[str, Manifest]:
    """Every policy of the namespace by object name."""
    return {
        names.etcd: etcd_policy_spec(names),
        names.api_server: api_server_policy_spec(settings, names),
        names.controller_manager: api_client_policy_spec(names, controller_manager_labels(names)),
        names.scheduler: api_client_policy_spec(names, scheduler_labels(names)),
    }


class NetworkPolicies(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        settings: ControlPlaneSettings,
        names: ObjectNames,
        provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
        *,
        etcd_policy_alias: pulumi.Alias | None = None,
    ) -> None:
        """`etcd_policy_alias`: where etcd's policy was registered before this component
        existed, so a stack of that time updates the object instead of re-creating it."""
        super().__init__("k8s-on-k8s:index:NetworkPolicies", name, None, opts)
        specs = network_policy_specs(settings, names)
        for object_name, spec in specs.items():
            aliases = [etcd_policy_alias] if etcd_policy_alias and object_name == names.etcd else []
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{object_name.removeprefix(names.cluster + '-')}",
                metadata={
                    "name": object_name,
                    "namespace": settings.namespace,
                    "labels": labels(names.cluster, COMPONENT),
                },
                spec=spec,
                opts=pulumi.ResourceOptions(parent=self, provider=provider, aliases=aliases),
            )
        self.register_outputs({"policies": sorted(specs)})
