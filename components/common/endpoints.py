"""Every port of the control plane and its nodes, and the one parser of an endpoint URL.

One place for these numbers: the program, its NetworkPolicies and the e2e rig
(tests/e2e/infra) all read them from here.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"  # where node-local probes and the rig's own clients listen
HTTPS_PORT = 443  # what an https URL without a port means (the ingress exposure's port)
DNS_PORT = 53

# In the host namespace.
API_SERVER_PORT = 6443  # kube-apiserver's --secure-port, in its pods and on its Service
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
ETCD_HEALTH_PORT = 2381  # etcd's --listen-metrics-urls (/livez, /readyz), plain HTTP
CONTROLLER_MANAGER_PORT = 10257  # kube-controller-manager's --secure-port
SCHEDULER_PORT = 10259  # kube-scheduler's --secure-port
KONNECTIVITY_AGENT_PORT = 8132  # the proxy-server's agent port (TLS), dialled by the agents

# On the nodes.
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248  # the kubelet's /healthz, on 127.0.0.1
KUBE_PROXY_METRICS_PORT = 10249
KUBE_PROXY_HEALTHZ_PORT = 10256


def host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets."""
    return f"{_bracketed(host)}:{port}"


def _bracketed(host: str) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass  # a DNS name
    return host


def https_url(host: str, port: int) -> str:
    """`https://host:port`, without the port when it is 443 and with an IPv6 address in
    brackets."""
    if port == HTTPS_PORT:
        return f"https://{_bracketed(host)}"
    return f"https://{host_port(host, port)}"


def http_url(host: str, port: int) -> str:
    """`http://host:port`, with an IPv6 address in brackets."""
    return f"http://{host_port(host, port)}"


def control_plane_endpoint(endpoint: str) -> str:
    """`host:port` of an https URL (port 443 when the URL has none), as kubeadm writes it."""
    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"not an https URL: {endpoint!r}")
    return host_port(parts.hostname, parts.port or HTTPS_PORT)
