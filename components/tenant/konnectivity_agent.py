"""KonnectivityAgent (inside the tenant cluster): the proxy-agent DaemonSet on every node.

The tenant side of Konnectivity (the server sidecar and the egress selector are in
components/host/konnectivity_server.py): the agents' ServiceAccount and DaemonSet, and the
binding that lets the server identity (`system:konnectivity-server`) review the agents' tokens.
Each agent dials the server at the API's host and the agent port, presents a projected
service-account token with audience `system:konnectivity-server`, and checks the server's
certificate against the cluster CA of the `kube-root-ca.crt` ConfigMap.
"""

from __future__ import annotations

import ipaddress

import pulumi

from components.common.konnectivity import AGENT, AUDIENCE, SERVER_USER, agent_image
from components.common.names import KUBE_SYSTEM, ROOT_CA_CONFIG_MAP
from components.common.podspec import (
    NON_ROOT_ID,
    Manifest,
    container_security_context,
    http_probe,
    mount,
    pod_env_from_field,
    resources,
)
from components.config import ControlPlaneSettings
from components.tenant.tenant_objects import (
    cluster_role_binding,
    create_object,
    metadata,
    node_daemonset,
    user,
)

AGENT_HEALTH_PORT = 8093  # the agent's /healthz and /readyz (its default)
AGENT_ADMIN_PORT = 8094  # the agent's admin endpoint (its default)
AUTH_DELEGATOR_ROLE = "system:auth-delegator"  # lets it create TokenReviews
AGENT_LABELS = {"k8s-app": AGENT}
AGENT_TOKEN_DIR = "/var/run/secrets/tokens"
AGENT_TOKEN_FILE = "konnectivity-agent-token"
AGENT_TOKEN_SECONDS = 3600

# --- the tenant side -----------------------------------------------------------------------


def server_auth_delegator_binding() -> Manifest:
    """Lets the server identity create TokenReviews (upstream's konnectivity-rbac.yaml)."""
    return cluster_role_binding(SERVER_USER, AUTH_DELEGATOR_ROLE, [user(SERVER_USER)])


def agent_service_account() -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(AGENT, KUBE_SYSTEM, **AGENT_LABELS),
    }


def agent_args(settings: ControlPlaneSettings, host: str, port: int) -> list[str]:
    family = "ipv6" if ipaddress.ip_network(settings.pod_cidr).version == 6 else "ipv4"
    return [
        f"--ca-cert={AGENT_TOKEN_DIR}/ca.crt",
        f"--proxy-server-host={host}",
        f"--proxy-server-port={port}",
        f"--service-account-token-path={AGENT_TOKEN_DIR}/{AGENT_TOKEN_FILE}",
        f"--health-server-port={AGENT_HEALTH_PORT}",
        f"--admin-server-port={AGENT_ADMIN_PORT}",
        "--admin-bind-address=127.0.0.1",
        # The server's destHost strategy sends traffic for this node's IP to this agent.
        f"--agent-identifiers={family}=$(HOST_IP)",
        # Keep looking for servers: the count changes with apiserver rollouts and scaling.
        "--sync-forever=true",
    ]


def agent_daemonset(settings: ControlPlaneSettings, host: str, port: int) -> Manifest:
    container = {
        "name": AGENT,
        "image": agent_image(settings),
        "imagePullPolicy": "IfNotPresent",
        "command": ["/proxy-agent"],
        "args": agent_args(settings, host, port),
        "env": [pod_env_from_field("HOST_IP", "status.hostIP")],
        "resources": resources("10m", "32Mi"),
        "securityContext": container_security_context(),
        "volumeMounts": [mount(AGENT_TOKEN_FILE, AGENT_TOKEN_DIR)],
        "livenessProbe": {
            **http_probe("/healthz", AGENT_HEALTH_PORT, failures=6, timeout=5),
            "initialDelaySeconds": 15,
        },
        # Ready once it holds a tunnel to at least one server.
        "readinessProbe": http_probe("/readyz", AGENT_HEALTH_PORT, period=5, timeout=5),
    }
    token_volume = {
        "name": AGENT_TOKEN_FILE,
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": AUDIENCE,
                        "expirationSeconds": AGENT_TOKEN_SECONDS,
                        "path": AGENT_TOKEN_FILE,
                    }
                },
                {
                    "configMap": {
                        "name": ROOT_CA_CONFIG_MAP,
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
            ],
        },
    }
    pod_spec: Manifest = {
        "priorityClassName": "system-cluster-critical",
        "serviceAccountName": AGENT,
        # Its only credential is the audience-bound token below, which the tenant
        # API itself does not accept.
        "automountServiceAccountToken": False,
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [
            {"key": "CriticalAddonsOnly", "operator": "Exists"},
            {"operator": "Exists", "effect": "NoSchedule"},
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_ID,
            "runAsGroup": NON_ROOT_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [token_volume],
    }
    return node_daemonset(AGENT, AGENT_LABELS, pod_spec)


def agent_objects(
    settings: ControlPlaneSettings, host: str, port: int
) -> list[tuple[str, Manifest]]:
    """Every tenant object of Konnectivity, with the suffix of its Pulumi resource name."""
    return [
        ("serviceaccount", agent_service_account()),
        ("server-clusterrolebinding", server_auth_delegator_binding()),
        ("daemonset", agent_daemonset(settings, host, port)),
    ]


class KonnectivityAgent(pulumi.ComponentResource):
    """The agents on every tenant node, and the server identity's right to review tokens."""

    def __init__(
        self,
        name: str,
        settings: ControlPlaneSettings,
        endpoint_host: str,
        agent_port: int,
        tenant_provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("k8s-on-k8s:index:KonnectivityAgent", name, None, opts)
        tenant = pulumi.ResourceOptions(parent=self, provider=tenant_provider)
        for suffix, manifest in agent_objects(settings, endpoint_host, agent_port):
            create_object(f"{name}-{suffix}", manifest, tenant)
        self.register_outputs({"proxyServer": f"{endpoint_host}:{agent_port}"})
