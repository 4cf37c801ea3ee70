"""The one KubeProxyConfiguration builder: the program's kube-proxy ConfigMap
(components/tenant/addons.py) and the e2e rig's kube-proxy (tests/e2e/infra) both call it with
their own parameters and serialise the document themselves.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any


def any_address(cidr: str) -> str:
    """The unspecified address of the CIDR's family: `::` or `0.0.0.0`."""
    return "::" if ipaddress.ip_network(cidr).version == 6 else "0.0.0.0"


def kube_proxy_configuration(
    *,
    kubeconfig_path: str,
    cluster_cidr: str,
    mode: str = "iptables",
    bind_address: str | None = None,
    hostname_override: str | None = None,
    healthz_bind_address: str | None = None,
    metrics_bind_address: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A KubeProxyConfiguration (v1alpha1): the API through `kubeconfig_path`; traffic from
    outside `cluster_cidr` (the pod range) to a ClusterIP is masqueraded.

    A field given None is left out (kube-proxy's default); `overrides` replaces or adds
    top-level fields, last. The keys come in a fixed order (kubeadm's), so a serialisation that
    keeps it is stable.
    """
    document: dict[str, Any] = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
    }
    if bind_address is not None:
        document["bindAddress"] = bind_address
    document |= {
        "clientConnection": {"kubeconfig": kubeconfig_path},
        "clusterCIDR": cluster_cidr,
        "mode": mode,
    }
    optional = {
        "hostnameOverride": hostname_override,
        "healthzBindAddress": healthz_bind_address,
        "metricsBindAddress": metrics_bind_address,
    }
    document |= {key: value for key, value in optional.items() if value is not None}
    document |= overrides or {}
    return document
