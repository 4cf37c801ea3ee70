"""Konnectivity, host side: apiserver -> cluster traffic through a reverse tunnel the nodes open.

For tenants whose nodes the apiserver pods cannot route to (nodes behind NAT, in another network,
at the edge). Every request the apiserver sends *into* the cluster (kubelet logs, exec, attach,
port-forward, the apiserver proxy, admission webhooks and aggregated APIs served by pods) goes
through the `cluster` egress selector:

    kube-apiserver --(gRPC over a unix socket in a shared emptyDir)--> proxy-server sidecar
    proxy-server <--(TLS on port 8132, opened by the agent)-- proxy-agent DaemonSet on every node
    proxy-agent --> the kubelet, pod or Service IP the apiserver asked for

Nodes -> apiserver traffic (kubelets, kube-proxy, in-cluster clients) is unchanged.

Pieces (all plain dicts in the Kubernetes API's shape, built by pure functions):

- infrastructure side, in the apiserver Deployment: `with_konnectivity_server` adds the
  proxy-server sidecar (`konnectivity_server_container`), its volumes and mounts, and the
  apiserver's `--egress-selector-config-file` flag; `KonnectivityServerConfig` registers the
  EgressSelectorConfiguration ConfigMap and the sidecar's kubeconfig Secret; the agent port is
  published with the API (`agent_service_port`, `agent_endpoint`).
- tenant side (`KonnectivityAgent`, components/tenant/konnectivity_agent.py): the agents'
  ServiceAccount and DaemonSet, and the binding that lets the server identity
  (`system:konnectivity-server`) review the agents' tokens.
- shared (components/common/konnectivity.py): versions, images, the agent port, identities.

Authentication, as upstream's setup guide: the agent presents a projected service-account token
with audience `system:konnectivity-server`; the server checks it with a TokenReview against the
tenant API (its own kubeconfig, a cluster-CA client certificate, bound to system:auth-delegator)
and accepts only `kube-system/konnectivity-agent`. The agent checks the server's certificate
against the cluster CA it gets with its token (the `kube-root-ca.crt` ConfigMap, i.e. the SA
`ca.crt`); the server serves the apiserver's own certificate on the agent port, whose SANs hold
the API host and the load balancer IP, i.e. the address the agents dial.
"""

from __future__ import annotations

import copy

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.common.endpoints import API_SERVER_PORT
from components.common.konnectivity import (
    AGENT,
    AGENT_PORT,
    AUDIENCE,
    DEFAULT_AGENT_NODE_PORT,
    SERVER_USER,
    server_image,
)
from components.common.kubeconfig import build_kubeconfig
from components.common.names import KUBE_SYSTEM, ObjectNames, labels
from components.common.podspec import (
    SECRET_FILE_MODE,
    Manifest,
    config_map_volume,
    container_security_context,
    http_probe,
    mount,
    pod_env_from_field,
    resources,
)
from components.config import ControlPlaneSettings, ExposureMode, with_extra_args
from components.host.certs import KONNECTIVITY_SERVER_CLIENT

# --- ports, paths and names ----------------------------------------------------------------

ADMIN_PORT = 8133  # the server's admin/metrics endpoint, bound to 127.0.0.1
HEALTH_PORT = 8134  # the server's /healthz (plain HTTP), probed by the kubelet

SOCKET_DIR = "/etc/kubernetes/konnectivity-server"
SOCKET_PATH = f"{SOCKET_DIR}/konnectivity-server.socket"
EGRESS_CONFIG_DIR = "/etc/kubernetes/egress-selector"
EGRESS_CONFIG_FILE = "egress-selector-configuration.yaml"
EGRESS_CONFIG_PATH = f"{EGRESS_CONFIG_DIR}/{EGRESS_CONFIG_FILE}"
SERVER_KUBECONFIG_DIR = "/etc/kubernetes/konnectivity-server-kubeconfig"
SERVER_KUBECONFIG_FILE = "kubeconfig"
SERVER_KUBECONFIG_PATH = f"{SERVER_KUBECONFIG_DIR}/{SERVER_KUBECONFIG_FILE}"
# Only the serving pair of the apiserver's PKI Secret is projected into the sidecar.
SERVER_PKI_DIR = "/etc/kubernetes/konnectivity-server-pki"
SERVING_CERT = "apiserver.crt"
SERVING_KEY = "apiserver.key"

# Volume names in the apiserver pod.
SOCKET_VOLUME = "konnectivity-uds"
EGRESS_CONFIG_VOLUME = "egress-selector"
SERVER_KUBECONFIG_VOLUME = "konnectivity-kubeconfig"
SERVER_PKI_VOLUME = "konnectivity-pki"

SERVER_CONTAINER = "konnectivity-server"
API_SERVER_CONTAINER = "kube-apiserver"


# The server's client certificate for TokenReviews (components/host/certs.py adds it to the plan
# when Konnectivity is on), bound by the agent side's `server_auth_delegator_binding`.
SERVER_CLIENT_CERT = KONNECTIVITY_SERVER_CLIENT

# --- the apiserver side --------------------------------------------------------------------


def egress_selector_configuration() -> str:
    """Send the apiserver's `cluster` egress through the server sidecar's unix socket."""
    document = {
        "apiVersion": "apiserver.k8s.io/v1beta1",
        "kind": "EgressSelectorConfiguration",
        "egressSelections": [
            {
                "name": "cluster",
                "connection": {
                    "proxyProtocol": "GRPC",
                    "transport": {"uds": {"udsName": SOCKET_PATH}},
                },
            }
        ],
    }
    return yaml.safe_dump(document, sort_keys=False)


def egress_selector_flag() -> str:
    """The one flag kube-apiserver needs."""
    return f"--egress-selector-config-file={EGRESS_CONFIG_PATH}"


def egress_selector_config_map_name(names: ObjectNames) -> str:
    return f"{names.api_server}-egress-selector"


def server_kubeconfig_secret_name(names: ObjectNames) -> str:
    return f"{names.cluster}-konnectivity-server-kubeconfig"


def server_kubeconfig(ca_cert_pem: str, client_cert_pem: str, client_key_pem: str) -> str:
    """The sidecar's kubeconfig: its own apiserver on loopback (127.0.0.1 is a SAN of the
    apiserver certificate), as `system:konnectivity-server`."""
    return build_kubeconfig(
        cluster_name="local",
        server=f"https://127.0.0.1:{API_SERVER_PORT}",
        ca_cert_pem=ca_cert_pem,
        user=SERVER_USER,
        client_cert_pem=client_cert_pem,
        client_key_pem=client_key_pem,
    )


def konnectivity_server_args(settings: ControlPlaneSettings) -> list[str]:
    """The managed flags, then konnectivityServerExtraArgs merged over them."""
    managed = [
        "--mode=grpc",
        # The apiserver reaches it on the socket only; no TCP frontend.
        f"--uds-name={SOCKET_PATH}",
        "--delete-existing-uds-file=true",
        "--server-port=0",
        f"--agent-port={AGENT_PORT}",
        f"--admin-port={ADMIN_PORT}",
        f"--health-port={HEALTH_PORT}",
        # Agent-facing TLS: the apiserver's serving certificate (cluster CA, SANs = API host).
        f"--cluster-cert={SERVER_PKI_DIR}/{SERVING_CERT}",
        f"--cluster-key={SERVER_PKI_DIR}/{SERVING_KEY}",
        # Agent authentication: a token for this audience, of kube-system/konnectivity-agent.
        f"--agent-namespace={KUBE_SYSTEM}",
        f"--agent-service-account={AGENT}",
        f"--authentication-audience={AUDIENCE}",
        f"--kubeconfig={SERVER_KUBECONFIG_PATH}",
        # One server per apiserver replica; each agent keeps a tunnel to every one of them.
        "--server-id=$(POD_NAME)",
        f"--server-count={settings.api_server_replicas}",
        # Kubelet traffic to a node goes through that node's agent when it has one.
        "--proxy-strategies=destHost,default",
    ]
    return with_extra_args(managed, settings.konnectivity_server_extra_args)


def konnectivity_server_container(settings: ControlPlaneSettings) -> Manifest:
    """The proxy-server sidecar of each apiserver pod."""
    return {
        "name": SERVER_CONTAINER,
        "image": server_image(settings),
        "imagePullPolicy": "IfNotPresent",
        "command": ["/proxy-server"],
        "args": konnectivity_server_args(settings),
        "env": [pod_env_from_field("POD_NAME", "metadata.name")],
        "ports": [
            {"name": "agent", "containerPort": AGENT_PORT},
            {"name": "konn-health", "containerPort": HEALTH_PORT},
        ],
        "resources": resources("20m", "32Mi"),
        "securityContext": container_security_context(),
        "volumeMounts": [
            mount(SOCKET_VOLUME, SOCKET_DIR, read_only=False),
            mount(SERVER_PKI_VOLUME, SERVER_PKI_DIR),
            mount(SERVER_KUBECONFIG_VOLUME, SERVER_KUBECONFIG_DIR),
        ],
        # /healthz only: /readyz fails until an agent connects, i.e. before any node joins.
        "startupProbe": http_probe("/healthz", HEALTH_PORT, period=2, failures=30, timeout=5),
        "livenessProbe": http_probe("/healthz", HEALTH_PORT, failures=6, timeout=5),
    }


def konnectivity_volumes(names: ObjectNames) -> list[Manifest]:
    """The volumes the apiserver pod gains."""
    return [
        # The socket lives in memory, shared by the two containers.
        {"name": SOCKET_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        config_map_volume(EGRESS_CONFIG_VOLUME, egress_selector_config_map_name(names)),
        {
            "name": SERVER_KUBECONFIG_VOLUME,
            "secret": {
                "secretName": server_kubeconfig_secret_name(names),
                "defaultMode": SECRET_FILE_MODE,
            },
        },
        {
            "name": SERVER_PKI_VOLUME,
            "secret": {
                "secretName": names.api_server_pki,
                "defaultMode": SECRET_FILE_MODE,
                "items": [
                    {"key": SERVING_CERT, "path": SERVING_CERT},
                    {"key": SERVING_KEY, "path": SERVING_KEY},
                ],
            },
        },
    ]


def api_server_volume_mounts() -> list[Manifest]:
    """The mounts the kube-apiserver container gains: the egress config and the socket."""
    return [
        mount(EGRESS_CONFIG_VOLUME, EGRESS_CONFIG_DIR),
        # Connecting to a unix socket needs no write access to the mount.
        mount(SOCKET_VOLUME, SOCKET_DIR),
    ]


def with_konnectivity_server(
    deployment_spec: Manifest, settings: ControlPlaneSettings, names: ObjectNames
) -> Manifest:
    """The apiserver Deployment spec with the sidecar, its volumes, and the apiserver's egress
    flag and mounts. Returns a copy; the input is left as it was."""
    spec = copy.deepcopy(deployment_spec)
    pod = spec["template"]["spec"]
    containers = pod["containers"]
    [api_server] = [c for c in containers if c["name"] == API_SERVER_CONTAINER]
    if any(c["name"] == SERVER_CONTAINER for c in containers):
        raise ValueError("the apiserver pod already has a konnectivity-server container")
    api_server["command"] = [*api_server["command"], egress_selector_flag()]
    api_server["volumeMounts"] = [*api_server.get("volumeMounts", []), *api_server_volume_mounts()]
    containers.append(konnectivity_server_container(settings))
    pod["volumes"] = [*pod.get("volumes", []), *konnectivity_volumes(names)]
    return spec


# --- publishing the agent port -------------------------------------------------------------


def agent_service_port(
    settings: ControlPlaneSettings, node_port: int = DEFAULT_AGENT_NODE_PORT
) -> Manifest:
    """The port to add to the API's external Service (components/host/exposure.py), next to 6443.

    The Service selects the apiserver pods, so agents spread over the sidecars and keep
    reconnecting until they hold a tunnel to `--server-count` distinct servers.
    """
    port: Manifest = {
        "name": "konnectivity",
        "port": AGENT_PORT,
        "targetPort": AGENT_PORT,
        "protocol": "TCP",
    }
    match settings.exposure.mode:
        case ExposureMode.NODE_PORT:
            port["nodePort"] = node_port
        case ExposureMode.LOAD_BALANCER:
            pass  # agents dial the load balancer at AGENT_PORT itself
        case ExposureMode.INGRESS:
            raise ValueError(
                "konnectivity needs the agent port published by a LoadBalancer or NodePort "
                f"Service; exposure {settings.exposure.mode.value!r} routes TLS by SNI on 443 only"
            )
    return port


def agent_endpoint(
    settings: ControlPlaneSettings, node_port: int = DEFAULT_AGENT_NODE_PORT
) -> tuple[str, int]:
    """Where the agents dial: the API's host (a SAN of the serving cert) and the agent port."""
    exposure = settings.exposure
    port = agent_service_port(settings, node_port)
    host = (
        exposure.load_balancer_ip
        if exposure.mode is ExposureMode.LOAD_BALANCER and exposure.load_balancer_ip
        else exposure.host
    )
    return host, int(port.get("nodePort", AGENT_PORT))


# --- Components ----------------------------------------------------------------------------


class KonnectivityServerConfig(pulumi.ComponentResource):
    """The files the apiserver pod mounts for Konnectivity, in the infrastructure namespace:
    the EgressSelectorConfiguration (ConfigMap) and the sidecar's kubeconfig (Secret)."""

    def __init__(
        self,
        name: str,
        settings: ControlPlaneSettings,
        names: ObjectNames,
        ca_cert_pem: pulumi.Input[str],
        client_cert_pem: pulumi.Input[str],
        client_key_pem: pulumi.Input[str],
        provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("k8s-on-k8s:index:KonnectivityServerConfig", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        object_labels = labels(names.cluster, "konnectivity-server")
        self.config_map = k8s.core.v1.ConfigMap(
            f"{name}-egress-selector",
            metadata={
                "name": egress_selector_config_map_name(names),
                "namespace": settings.namespace,
                "labels": object_labels,
            },
            data={EGRESS_CONFIG_FILE: egress_selector_configuration()},
            opts=child,
        )
        kubeconfig: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(ca_cert_pem, client_cert_pem, client_key_pem).apply(
                lambda values: server_kubeconfig(values[0], values[1], values[2])
            )
        )
        self.secret = k8s.core.v1.Secret(
            f"{name}-kubeconfig",
            metadata={
                "name": server_kubeconfig_secret_name(names),
                "namespace": settings.namespace,
                "labels": object_labels,
            },
            type="Opaque",
            string_data={SERVER_KUBECONFIG_FILE: kubeconfig},
            opts=child,
        )
        self.register_outputs({})
