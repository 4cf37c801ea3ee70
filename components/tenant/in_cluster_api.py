"""InClusterApi: where `kubernetes.default` leads on the tenant's nodes.

The apiserver pods live in the infrastructure cluster; their pod IPs mean nothing on the
tenant's nodes. So the apiserver's endpoint reconciler is off (`--endpoint-reconciler-type=none`)
and the program writes the `default/kubernetes` Service's Endpoints and EndpointSlice itself, in
every exposure mode. The Service never gets a selector, so no pod, whatever its labels, becomes
an endpoint of `kubernetes.default`; a ValidatingAdmissionPolicy refuses a selector on it even
from a user allowed to edit Services in `default`.

- nodePort and loadBalancer exposure: the endpoint is the address and port nodes reach the API
  at (the NodePort on a node address, or the load balancer).
- ingress exposure: the ingress routes by TLS server name, and an in-cluster client dials the
  ClusterIP with no server name (or `kubernetes.default.svc`), so no address of the infrastructure
  cluster can answer it. The API proxy does, as HyperShift's kube-apiserver-proxy: a
  DaemonSet in `kube-system` on the host network puts `apiProxyAddress` on every node's loopback
  interface and listens there; the endpoint is that address, which is local on every node, so
  kube-proxy hands each client to its own node's proxy. The proxy terminates TLS with a
  certificate for `kubernetes.default.svc` (cluster CA) and opens TLS to the API host with its
  server name set, verifying the apiserver against the cluster CA. Its key lives in
  `kube-system`, which only cluster administrators can run pods in; the host network keeps it
  independent of the tenant's CNI (a CNI that reaches the API through the ClusterIP would
  otherwise wait for itself). Bearer tokens (what in-cluster clients use) pass through; client
  certificates cannot.
"""

from __future__ import annotations

import hashlib
import ipaddress

import pulumi

from components.common.endpoints import API_SERVER_PORT
from components.common.identities import KeyPair
from components.common.names import KUBE_SYSTEM, ROOT_CA_CONFIG_MAP
from components.common.podspec import (
    SECRET_FILE_MODE,
    Manifest,
    config_map_volume,
    container_security_context,
    mount,
    pod_security_context,
)
from components.config import ControlPlaneSettings, ExposureMode
from components.tenant.tenant_objects import (
    config_map,
    create_object,
    metadata,
    node_daemonset,
)

SERVICE = "kubernetes"
NAMESPACE = "default"
MANAGED_BY = "k8s-on-k8s"

# The API proxy (exposure ingress). Object names stay as deployed: a new one replaces the object.
API_PROXY = "kubernetes-api-proxy"
API_PROXY_NAMESPACE = KUBE_SYSTEM
API_PROXY_LABELS = {"k8s-app": API_PROXY}
# The endpoint's port: the apiserver's secure port, as in a kubeadm cluster.
API_PROXY_PORT = API_SERVER_PORT
API_PROXY_CONFIG_DIR = "/usr/local/etc/haproxy"  # where the HAProxy image looks for its config
API_PROXY_TLS_DIR = "/etc/kubernetes-api-proxy"
# HAProxy loads `<crt>.key` next to a certificate file that holds no key.
API_PROXY_CERT_FILE = "serving.pem"
API_PROXY_KEY_FILE = f"{API_PROXY_CERT_FILE}.key"
API_PROXY_CA_FILE = "ca.crt"
CONFIG_CHECKSUM = "k8s-on-k8s/config-sha256"
CERT_CHECKSUM = "k8s-on-k8s/serving-cert-sha256"

# The admission policy that keeps the `kubernetes` Service without a selector.
NO_SELECTOR_POLICY = "k8s-on-k8s-kubernetes-service-without-selector"


def kubernetes_endpoint(settings: ControlPlaneSettings) -> tuple[str, int]:
    """Where the `kubernetes` Service leads: the API's node-facing address, or the API proxy."""
    if settings.exposure.mode is ExposureMode.INGRESS:
        return settings.api_proxy_address, API_PROXY_PORT
    # parse_settings refuses nodePort and loadBalancer exposure without this address.
    assert settings.node_api_address is not None
    return settings.node_api_address, settings.node_api_port


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


def no_selector_policy() -> Manifest:
    """Refuse a selector on `default/kubernetes`: with one, the endpoints controllers would list
    any pod wearing its labels beside the program's endpoint. The `admin` and `edit` roles may
    update Services, so RBAC alone does not stop it. The apiserver's own updates of the Service
    (ports, type) carry no selector and pass."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": metadata(NO_SELECTOR_POLICY),
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["services"],
                    }
                ]
            },
            "matchConditions": [
                {
                    "name": "the-kubernetes-service",
                    "expression": (
                        f'request.namespace == "{NAMESPACE}" && object.metadata.name == "{SERVICE}"'
                    ),
                }
            ],
            "validations": [
                {
                    "expression": "!has(object.spec.selector) || size(object.spec.selector) == 0",
                    "message": (
                        f"{NAMESPACE}/{SERVICE} takes no selector: its endpoints are written by "
                        "k8s-on-k8s, so that no pod can become an endpoint of the API"
                    ),
                    "reason": "Forbidden",
                }
            ],
        },
    }


def no_selector_policy_binding() -> Manifest:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": metadata(NO_SELECTOR_POLICY),
        "spec": {"policyName": NO_SELECTOR_POLICY, "validationActions": ["Deny"]},
    }


# --- ingress: the API proxy -----------------------------------------------------------------


def host_prefix(address: str) -> str:
    """`address` as a single-address prefix (what goes on the loopback interface)."""
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def api_proxy_bind(address: str) -> str:
    """HAProxy's listening address: the family prefix keeps an IPv6 address unambiguous."""
    family = "ipv6" if ipaddress.ip_address(address).version == 6 else "ipv4"
    return f"{family}@{address}:{API_PROXY_PORT}"


def api_proxy_config(listen_address: str, api_host: str, api_port: int) -> str:
    """HAProxy in TCP mode: TLS in from the pods, TLS out to the API host, bytes in between.

    TCP mode keeps upgrades (exec, port-forward) and long watches working untouched; neither
    side offers ALPN, so both legs speak HTTP/1.1 and always agree. It listens on the node-local
    address only: on the host network, nothing else of the node's is opened.
    """
    pki = API_PROXY_TLS_DIR
    server = " ".join(
        [
            f"server api {api_host}:{api_port}",
            f"ssl verify required ca-file {pki}/{API_PROXY_CA_FILE}",
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
    bind {api_proxy_bind(listen_address)} ssl crt {pki}/{API_PROXY_CERT_FILE}
    default_backend apiserver

backend apiserver
    {server}
"""


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def api_proxy_tls_secret(cert_pem: pulumi.Input[str], key_pem: pulumi.Input[str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(API_PROXY, API_PROXY_NAMESPACE, **API_PROXY_LABELS),
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert_pem, "tls.key": pulumi.Output.secret(key_pem)},
    }


def loopback_address_container(settings: ControlPlaneSettings) -> Manifest:
    """Puts the API proxy's address on the node's loopback interface (idempotent: `replace`).

    The one step that needs root and NET_ADMIN, so it runs alone and exits; HAProxy itself runs
    unprivileged. The address stays when the proxy goes: harmless, nothing else listens on it.
    """
    prefix = host_prefix(settings.api_proxy_address)
    return {
        "name": "node-local-address",
        "image": settings.api_proxy_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["ip", "address", "replace", prefix, "dev", "lo"],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
        "securityContext": {
            **container_security_context(),
            "runAsNonRoot": False,
            "runAsUser": 0,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
        },
    }


def api_proxy_daemonset(
    settings: ControlPlaneSettings, config_sha256: str, cert_sha256: pulumi.Input[str]
) -> Manifest:
    """One proxy per node on the host network; a new config or certificate rolls the pods
    (HAProxy reads both once)."""
    address = settings.api_proxy_address
    probe = {"tcpSocket": {"host": address, "port": API_PROXY_PORT}}
    container: Manifest = {
        "name": "haproxy",
        "image": settings.api_proxy_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/local/sbin/haproxy", "-db", "-f", f"{API_PROXY_CONFIG_DIR}/haproxy.cfg"],
        # No `ports`: on the host network they would become host ports, and the scheduler would
        # keep any other pod with a 6443 host port off the node, whatever its address.
        "readinessProbe": {**probe, "periodSeconds": 5},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 6},
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": container_security_context(),
        "volumeMounts": [
            mount("config", API_PROXY_CONFIG_DIR),
            mount("tls", API_PROXY_TLS_DIR),
        ],
    }
    tls_volume: Manifest = {
        "name": "tls",
        "projected": {
            "defaultMode": SECRET_FILE_MODE,  # group-readable through fsGroup
            "sources": [
                {
                    "secret": {
                        "name": API_PROXY,
                        "items": [
                            {"key": "tls.crt", "path": API_PROXY_CERT_FILE},
                            {"key": "tls.key", "path": API_PROXY_KEY_FILE},
                        ],
                    }
                },
                {
                    "configMap": {
                        "name": ROOT_CA_CONFIG_MAP,
                        "items": [{"key": "ca.crt", "path": API_PROXY_CA_FILE}],
                    }
                },
            ],
        },
    }
    pod_spec: Manifest = {
        "priorityClassName": "system-node-critical",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # No pod network: the proxy must work before (and without) the tenant's CNI.
        "hostNetwork": True,
        # The API host is resolved by the node's resolver: cluster DNS itself needs the API.
        "dnsPolicy": "Default",
        "securityContext": pod_security_context(),
        "nodeSelector": {"kubernetes.io/os": "linux"},  # HAProxy's images are Linux only
        # Every node's pods need the API, whatever its taints.
        "tolerations": [{"operator": "Exists"}],
        "initContainers": [loopback_address_container(settings)],
        "containers": [container],
        "volumes": [config_map_volume("config", API_PROXY), tls_volume],
    }
    manifest = node_daemonset(API_PROXY, API_PROXY_LABELS, pod_spec, namespace=API_PROXY_NAMESPACE)
    # The new proxy starts beside the old one on each node (HAProxy listens with SO_REUSEPORT,
    # as the same user), so a node is never without one during a rollout.
    manifest["spec"]["updateStrategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    manifest["spec"]["template"]["metadata"]["annotations"] = {
        CONFIG_CHECKSUM: config_sha256,
        CERT_CHECKSUM: cert_sha256,
    }
    return manifest


class InClusterApi(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        settings: ControlPlaneSettings,
        api_proxy_serving_cert: KeyPair | None,
        tenant_provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("k8s-on-k8s:index:InClusterApi", name, None, opts)
        tenant = pulumi.ResourceOptions(parent=self, provider=tenant_provider)
        create_object(f"{name}-no-selector-policy", no_selector_policy(), tenant)
        create_object(f"{name}-no-selector-policy-binding", no_selector_policy_binding(), tenant)
        endpoint_opts = tenant
        outputs: dict[str, object] = {}
        if settings.exposure.mode is ExposureMode.INGRESS:
            if api_proxy_serving_cert is None:
                raise ValueError("exposure ingress needs the proxy's serving certificate")
            exposure = settings.exposure
            config = api_proxy_config(settings.api_proxy_address, exposure.host, exposure.port)
            cert_sha256 = api_proxy_serving_cert.cert_pem.apply(checksum)
            secret = create_object(
                f"{name}-proxy-secret",
                api_proxy_tls_secret(
                    api_proxy_serving_cert.cert_pem, api_proxy_serving_cert.key_pem
                ),
                tenant,
            )
            api_proxy_config_map = create_object(
                f"{name}-proxy-config",
                config_map(API_PROXY, API_PROXY_NAMESPACE, {"haproxy.cfg": config}),
                tenant,
            )
            daemonset = create_object(
                f"{name}-proxy-daemonset",
                api_proxy_daemonset(settings, checksum(config), cert_sha256),
                pulumi.ResourceOptions.merge(
                    tenant, pulumi.ResourceOptions(depends_on=[secret, api_proxy_config_map])
                ),
            )
            # On a switch to ingress, the endpoint moves once the proxies have been asked for.
            endpoint_opts = pulumi.ResourceOptions.merge(
                tenant, pulumi.ResourceOptions(depends_on=[daemonset])
            )
            outputs["proxy"] = f"{API_PROXY_NAMESPACE}/{API_PROXY}"
        address, port = kubernetes_endpoint(settings)
        create_object(f"{name}-endpoints", kubernetes_endpoints(address, port), endpoint_opts)
        create_object(
            f"{name}-endpointslice", kubernetes_endpoint_slice(address, port), endpoint_opts
        )
        outputs.update({"address": address, "port": port})
        self.register_outputs(outputs)
