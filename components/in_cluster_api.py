"""InClusterApi: where `kubernetes.default` leads on the tenant's nodes.

The apiserver pods live in the infrastructure cluster; their pod IPs mean nothing on the
tenant's nodes. So the apiserver's endpoint reconciler is off (`--endpoint-reconciler-type=none`)
and this component decides where the tenant's `default/kubernetes` Service leads:

- nodePort and loadBalancer exposure: the program writes the Service's Endpoints and
  EndpointSlice itself, with the address and port nodes reach the API at (the NodePort on a node
  address, or the load balancer). kube-proxy on every node sends ClusterIP traffic there.
- ingress exposure: the ingress routes by TLS server name, and an in-cluster client dials the
  ClusterIP with no server name (or `kubernetes.default.svc`), so no address of the infrastructure
  cluster can answer it. A node-local proxy does: a DaemonSet in `default` that terminates TLS
  with a certificate for `kubernetes.default.svc` (cluster CA) and opens TLS to the API host with
  its server name set, verifying the apiserver against the cluster CA. The program gives the
  `kubernetes` Service a selector for those pods and `trafficDistribution: PreferSameNode`, so
  the endpoints controller lists the proxies and kube-proxy keeps each client on its own node.
  Bearer tokens (what in-cluster clients use) pass through; client certificates cannot.
"""

from __future__ import annotations

import hashlib

import pulumi

from components.config import ControlPlaneSettings
from components.names import API_SERVER_PORT
from components.pki import KeyPair
from components.podspec import (
    SECRET_FILE_MODE,
    Manifest,
    config_map_volume,
    container_security_context,
    mount,
    pod_security_context,
)
from components.tenant_objects import (
    SKIP_AWAIT,
    config_map,
    create_object,
    create_patch,
    metadata,
    node_daemonset,
)

SERVICE = "kubernetes"
NAMESPACE = "default"
MANAGED_BY = "k8s-on-k8s"

# The node-local proxy (exposure ingress).
PROXY = "kubernetes-api-proxy"
PROXY_LABELS = {"k8s-app": PROXY}
# The `kubernetes` Service's targetPort is the apiserver's secure port; the proxy listens there.
PROXY_PORT = API_SERVER_PORT
PROXY_CONFIG_DIR = "/usr/local/etc/haproxy"  # where the HAProxy image looks for its config
PROXY_TLS_DIR = "/etc/kubernetes-api-proxy"
# HAProxy loads `<crt>.key` next to a certificate file that holds no key.
PROXY_CERT_FILE = "serving.pem"
PROXY_KEY_FILE = f"{PROXY_CERT_FILE}.key"
PROXY_CA_FILE = "ca.crt"
# Published in every namespace by the controller-manager from the cluster CA.
ROOT_CA_CONFIG_MAP = "kube-root-ca.crt"
CONFIG_CHECKSUM = "k8s-on-k8s/config-sha256"
CERT_CHECKSUM = "k8s-on-k8s/serving-cert-sha256"


# --- nodePort and loadBalancer: endpoints written by the program -----------------------------


def kubernetes_endpoints(address: str, port: int) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": SERVICE,
            "namespace": NAMESPACE,
            # The slice below is written directly; the mirroring controller must not add one.
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
        },
        "subsets": [
            {
                "addresses": [{"ip": address}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            }
        ],
    }


def kubernetes_endpoint_slice(address: str, port: int) -> Manifest:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": SERVICE,
            "namespace": NAMESPACE,
            "labels": {
                "kubernetes.io/service-name": SERVICE,
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "addressType": "IPv6" if ":" in address else "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }


# --- ingress: the node-local proxy -----------------------------------------------------------


def proxy_config(api_host: str, api_port: int) -> str:
    """HAProxy in TCP mode: TLS in from the pods, TLS out to the API host, bytes in between.

    TCP mode keeps upgrades (exec, port-forward) and long watches working untouched; neither
    side offers ALPN, so both legs speak HTTP/1.1 and always agree.
    """
    pki = PROXY_TLS_DIR
    server = " ".join(
        [
            f"server api {api_host}:{api_port}",
            f"ssl verify required ca-file {pki}/{PROXY_CA_FILE}",
            f"sni str({api_host}) verifyhost {api_host}",
            # Start even while the name does not resolve yet; the resolver retries.
            "resolvers node init-addr libc,none",
        ]
    )
    return f"""\
global
    log stdout format raw local0 info
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.2
    ssl-default-server-options ssl-min-ver TLSv1.2

# The node's resolver (dnsPolicy Default), re-read at run time so a moved API host is followed.
resolvers node
    parse-resolv-conf
    hold valid 10s

defaults
    mode tcp
    log global
    option tcplog
    option dontlognull
    timeout connect 10s
    # Watches and exec sessions are long-lived; these are idle timeouts.
    timeout client 1h
    timeout server 1h

frontend kubernetes-default
    bind :{PROXY_PORT} ssl crt {pki}/{PROXY_CERT_FILE}
    default_backend apiserver

backend apiserver
    {server}
"""


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def proxy_tls_secret(cert_pem: pulumi.Input[str], key_pem: pulumi.Input[str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(PROXY, NAMESPACE, **PROXY_LABELS),
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert_pem, "tls.key": pulumi.Output.secret(key_pem)},
    }


def proxy_daemonset(
    settings: ControlPlaneSettings, config_sha256: str, cert_sha256: pulumi.Input[str]
) -> Manifest:
    """One proxy per node; a new config or certificate rolls the pods (HAProxy reads both once).

    Pod Security `restricted`: an ordinary pod on the pod network, no host access, no token.
    """
    container: Manifest = {
        "name": "haproxy",
        "image": settings.api_proxy_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/local/sbin/haproxy", "-db", "-f", f"{PROXY_CONFIG_DIR}/haproxy.cfg"],
        "ports": [{"name": "https", "containerPort": PROXY_PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": PROXY_PORT}, "periodSeconds": 5},
        "livenessProbe": {
            "tcpSocket": {"port": PROXY_PORT},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": container_security_context(),
        "volumeMounts": [
            mount("config", PROXY_CONFIG_DIR),
            mount("tls", PROXY_TLS_DIR),
        ],
    }
    tls_volume: Manifest = {
        "name": "tls",
        "projected": {
            "defaultMode": SECRET_FILE_MODE,  # group-readable through fsGroup
            "sources": [
                {
                    "secret": {
                        "name": PROXY,
                        "items": [
                            {"key": "tls.crt", "path": PROXY_CERT_FILE},
                            {"key": "tls.key", "path": PROXY_KEY_FILE},
                        ],
                    }
                },
                {
                    "configMap": {
                        "name": ROOT_CA_CONFIG_MAP,
                        "items": [{"key": "ca.crt", "path": PROXY_CA_FILE}],
                    }
                },
            ],
        },
    }
    pod_spec: Manifest = {
        "priorityClassName": "system-node-critical",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # The API host is resolved by the node's resolver: cluster DNS itself needs the API.
        "dnsPolicy": "Default",
        "securityContext": pod_security_context(),
        "nodeSelector": {"kubernetes.io/os": "linux"},  # HAProxy's images are Linux only
        # Every node's pods need the API, whatever its taints.
        "tolerations": [{"operator": "Exists"}],
        "containers": [container],
        "volumes": [config_map_volume("config", PROXY), tls_volume],
    }
    manifest = node_daemonset(PROXY, PROXY_LABELS, pod_spec, namespace=NAMESPACE)
    manifest["spec"]["template"]["metadata"]["annotations"] = {
        CONFIG_CHECKSUM: config_sha256,
        CERT_CHECKSUM: cert_sha256,
    }
    return manifest


def kubernetes_service_patch() -> Manifest:
    """The fields the program owns on the apiserver-made `kubernetes` Service.

    The apiserver resets only its ports and type, so a selector set here stays.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": SERVICE,
            "namespace": NAMESPACE,
            "annotations": dict(SKIP_AWAIT),
        },
        "spec": {"selector": dict(PROXY_LABELS), "trafficDistribution": "PreferSameNode"},
    }


def handed_over_when_deleted(suffix: str, opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
    """The `kubernetes` Endpoints object is let go, not deleted, when it leaves the program.

    On a switch to ingress exposure the Service gets a selector, and the endpoints controller
    takes over the object of that fixed name and recreates it the moment it is deleted, so a
    delete would never finish (pulumi-kubernetes waits for the object to be gone). The
    EndpointSlice is deleted as usual: the controller keeps its own slices under other names.
    """
    if suffix != "endpoints":
        return opts
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(retain_on_delete=True))


class InClusterApi(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        settings: ControlPlaneSettings,
        proxy_serving_cert: KeyPair | None,
        tenant_provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("k8s-on-k8s:index:InClusterApi", name, None, opts)
        tenant = pulumi.ResourceOptions(parent=self, provider=tenant_provider)
        if settings.node_api_address is not None:
            address, port = settings.node_api_address, settings.node_api_port
            objects = [
                ("endpoints", kubernetes_endpoints(address, port)),
                ("endpointslice", kubernetes_endpoint_slice(address, port)),
            ]
            outputs: dict[str, object] = {"address": address, "port": port}
        else:
            if proxy_serving_cert is None:
                raise ValueError("exposure ingress needs the proxy's serving certificate")
            exposure = settings.exposure
            config = proxy_config(exposure.host, exposure.port)
            cert_sha256 = proxy_serving_cert.cert_pem.apply(checksum)
            objects = [
                (
                    "proxy-secret",
                    proxy_tls_secret(proxy_serving_cert.cert_pem, proxy_serving_cert.key_pem),
                ),
                ("proxy-config", config_map(PROXY, NAMESPACE, {"haproxy.cfg": config})),
                ("proxy-daemonset", proxy_daemonset(settings, checksum(config), cert_sha256)),
            ]
            outputs = {"proxy": f"{NAMESPACE}/{PROXY}"}
        for suffix, manifest in objects:
            create_object(f"{name}-{suffix}", manifest, handed_over_when_deleted(suffix, tenant))
        if settings.node_api_address is None:
            create_patch(f"{name}-service-patch", kubernetes_service_patch(), tenant)
        self.register_outputs(outputs)
