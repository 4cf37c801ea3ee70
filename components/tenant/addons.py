"""CoreDns and KubeProxy: kubeadm's two essential add-ons, in the tenant cluster's kube-system.

They run on the tenant's worker nodes, not in the infrastructure namespace: kube-proxy needs the
host network and privileges there, which is normal for a cluster's own kube-system.

Nodes join after `pulumi up`, so the workloads and the DNS Service carry `pulumi.com/skipAwait`:
waiting for Ready pods or Service endpoints would fail every run that precedes the first node.
"""

from __future__ import annotations

import pulumi
import yaml

from components.common import kube_proxy
from components.common.corefile import corefile as shared_corefile
from components.common.kubeconfig import KUBEADM_LAYOUT, dump, kubeconfig_document
from components.common.names import KUBE_SYSTEM
from components.common.podspec import NON_ROOT_ID, Manifest, http_probe
from components.config import ControlPlaneSettings
from components.tenant.tenant_objects import (
    BOOTSTRAPPERS_GROUP,
    SKIP_AWAIT,
    cluster_role,
    cluster_role_binding,
    config_map,
    create_object,
    group,
    metadata,
    node_daemonset,
    role,
    role_binding,
    rule,
    service_account,
)

CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"
LINUX_NODES = {"kubernetes.io/os": "linux"}

COREDNS = "coredns"
COREDNS_ROLE = "system:coredns"
DNS_SERVICE = "kube-dns"
DNS_LABELS = {"k8s-app": "kube-dns"}
COREDNS_REPLICAS = 2
COREDNS_CONFIG_DIR = "/etc/coredns"

KUBE_PROXY = "kube-proxy"
KUBE_PROXY_LABELS = {"k8s-app": "kube-proxy"}
KUBE_PROXY_CONFIG_DIR = "/var/lib/kube-proxy"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


# --- CoreDNS -------------------------------------------------------------------------------


def corefile(cluster_domain: str) -> str:
    """CoreDNS's configuration, as kubeadm's dns addon writes it: other names go to the node's
    resolver (the pods' dnsPolicy is Default)."""
    return shared_corefile(cluster_domain=cluster_domain, upstream="/etc/resolv.conf", ttl=30)


def coredns_container(settings: ControlPlaneSettings) -> Manifest:
    return {
        "name": COREDNS,
        "image": settings.image("coredns/coredns", settings.release.coredns_version),
        "imagePullPolicy": "IfNotPresent",
        "args": ["-conf", f"{COREDNS_CONFIG_DIR}/Corefile"],
        "resources": {
            "limits": {"memory": "170Mi"},
            "requests": {"cpu": "100m", "memory": "70Mi"},
        },
        "ports": [
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
            {"name": "liveness-probe", "containerPort": 8080, "protocol": "TCP"},
            {"name": "readiness-probe", "containerPort": 8181, "protocol": "TCP"},
        ],
        "livenessProbe": {
            **http_probe("/health", 8080, failures=5, timeout=5),
            "initialDelaySeconds": 60,
            "successThreshold": 1,
        },
        "readinessProbe": http_probe("/ready", 8181, timeout=1),
        "volumeMounts": [
            {"name": "config-volume", "mountPath": COREDNS_CONFIG_DIR, "readOnly": True}
        ],
        # Pod Security "restricted"; port 53 through the one capability it allows (the image's
        # binary carries the matching file capability, as upstream's does).
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def coredns_deployment(settings: ControlPlaneSettings) -> Manifest:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            **metadata(COREDNS, KUBE_SYSTEM, **DNS_LABELS),
            "annotations": dict(SKIP_AWAIT),
        },
        "spec": {
            "replicas": COREDNS_REPLICAS,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "selector": {"matchLabels": dict(DNS_LABELS)},
            "template": {
                "metadata": {"labels": dict(DNS_LABELS)},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": COREDNS,
                    # The node's resolver, not CoreDNS itself, is where `forward .` goes.
                    "dnsPolicy": "Default",
                    "nodeSelector": dict(LINUX_NODES),
                    "tolerations": [
                        {"key": "CriticalAddonsOnly", "operator": "Exists"},
                        {"key": CONTROL_PLANE_TAINT, "effect": "NoSchedule"},
                    ],
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "labelSelector": {"matchLabels": dict(DNS_LABELS)},
                                        "topologyKey": "kubernetes.io/hostname",
                                    },
                                }
                            ]
                        }
                    },
                    # A numeric user, so the kubelet can check runAsNonRoot whatever the image's
                    # USER line says (upstream's is the distroless nonroot user, 65532).
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": NON_ROOT_ID,
                        "runAsGroup": NON_ROOT_ID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [coredns_container(settings)],
                    "volumes": [
                        {
                            "name": "config-volume",
                            "configMap": {
                                "name": COREDNS,
                                "items": [{"key": "Corefile", "path": "Corefile"}],
                            },
                        }
                    ],
                },
            },
        },
    }


def dns_service(settings: ControlPlaneSettings) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            **metadata(
                DNS_SERVICE,
                KUBE_SYSTEM,
                **DNS_LABELS,
                **{"kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"},
            ),
            "annotations": {
                "prometheus.io/port": "9153",
                "prometheus.io/scrape": "true",
                **SKIP_AWAIT,
            },
        },
        "spec": {
            # The address every kubelet hands its pods as nameserver (clusterDNS).
            "clusterIP": settings.cluster_dns_ip,
            "selector": dict(DNS_LABELS),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
            ],
        },
    }


def coredns_objects(settings: ControlPlaneSettings) -> list[tuple[str, Manifest]]:
    """Every object of the CoreDNS add-on, with the suffix of its Pulumi resource name."""
    return [
        (
            "serviceaccount",
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": metadata(COREDNS, KUBE_SYSTEM),
            },
        ),
        (
            "clusterrole",
            cluster_role(
                COREDNS_ROLE,
                [
                    rule([""], ["endpoints", "services", "pods", "namespaces"], ["list", "watch"]),
                    rule(["discovery.k8s.io"], ["endpointslices"], ["list", "watch"]),
                ],
            ),
        ),
        (
            "clusterrolebinding",
            cluster_role_binding(
                COREDNS_ROLE, COREDNS_ROLE, [service_account(COREDNS, KUBE_SYSTEM)]
            ),
        ),
        (
            "configmap",
            config_map(COREDNS, KUBE_SYSTEM, {"Corefile": corefile(settings.cluster_domain)}),
        ),
        ("deployment", coredns_deployment(settings)),
        ("service", dns_service(settings)),
    ]


# --- kube-proxy ----------------------------------------------------------------------------


def kube_proxy_configuration(settings: ControlPlaneSettings) -> str:
    """KubeProxyConfiguration with kubeadm's defaults and the iptables mode."""
    document = kube_proxy.kube_proxy_configuration(
        kubeconfig_path=f"{KUBE_PROXY_CONFIG_DIR}/kubeconfig.conf",
        cluster_cidr=settings.pod_cidr,
        mode="iptables",
        bind_address=kube_proxy.any_address(settings.pod_cidr),
    )
    return yaml.safe_dump(document, sort_keys=False)


def kube_proxy_kubeconfig(server: str) -> str:
    """kube-proxy's kubeconfig: its service-account token and the CA mounted with it.

    The server is the API's external endpoint: kube-proxy is what makes `kubernetes.default`
    work, so it cannot depend on it.
    """
    return dump(
        kubeconfig_document(
            cluster_name="default",
            server=server,
            ca_file=f"{SERVICE_ACCOUNT_DIR}/ca.crt",
            user="default",
            token_file=f"{SERVICE_ACCOUNT_DIR}/token",
            context="default",
            namespace="default",
            preferences=False,
            layout=KUBEADM_LAYOUT,
        )
    )


def kube_proxy_daemonset(settings: ControlPlaneSettings) -> Manifest:
    container = {
        "name": KUBE_PROXY,
        "image": settings.image(KUBE_PROXY),
        "imagePullPolicy": "IfNotPresent",
        "command": [
            "/usr/local/bin/kube-proxy",
            f"--config={KUBE_PROXY_CONFIG_DIR}/config.conf",
            "--hostname-override=$(NODE_NAME)",
        ],
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        # It programs the node's iptables: privileged by nature.
        "securityContext": {"privileged": True},
        "volumeMounts": [
            {"name": KUBE_PROXY, "mountPath": KUBE_PROXY_CONFIG_DIR, "readOnly": True},
            {"name": "xtables-lock", "mountPath": "/run/xtables.lock", "readOnly": False},
            {"name": "lib-modules", "mountPath": "/lib/modules", "readOnly": True},
        ],
    }
    pod_spec: Manifest = {
        "priorityClassName": "system-node-critical",
        "serviceAccountName": KUBE_PROXY,
        "hostNetwork": True,
        "nodeSelector": dict(LINUX_NODES),
        # Every node needs Service routing, whatever its taints.
        "tolerations": [{"operator": "Exists"}],
        "containers": [container],
        "volumes": [
            {"name": KUBE_PROXY, "configMap": {"name": KUBE_PROXY}},
            {
                "name": "xtables-lock",
                "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"},
            },
            {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}},
        ],
    }
    return node_daemonset(KUBE_PROXY, KUBE_PROXY_LABELS, pod_spec)


def kube_proxy_config_map(settings: ControlPlaneSettings, kubeconfig: object) -> Manifest:
    """The ConfigMap the DaemonSet mounts; `kubeconfig` may be a Pulumi output."""
    manifest = config_map(
        KUBE_PROXY,
        KUBE_SYSTEM,
        {"config.conf": kube_proxy_configuration(settings), "kubeconfig.conf": kubeconfig},
    )
    manifest["metadata"]["labels"] = {"app": KUBE_PROXY}
    return manifest


def kube_proxy_rbac() -> list[tuple[str, Manifest]]:
    """kube-proxy's own rights, and read access to its config for joining nodes (kubeadm reads
    it during `kubeadm join`)."""
    return [
        (
            "clusterrolebinding",
            cluster_role_binding(
                "kubeadm:node-proxier",
                "system:node-proxier",
                [service_account(KUBE_PROXY, KUBE_SYSTEM)],
            ),
        ),
        (
            "role",
            role(KUBE_PROXY, KUBE_SYSTEM, [rule([""], ["configmaps"], ["get"], [KUBE_PROXY])]),
        ),
        (
            "rolebinding",
            role_binding(KUBE_PROXY, KUBE_SYSTEM, KUBE_PROXY, [group(BOOTSTRAPPERS_GROUP)]),
        ),
    ]


# --- Components ----------------------------------------------------------------------------


class CoreDns(pulumi.ComponentResource):
    """Cluster DNS at the tenth address of the service range."""

    def __init__(
        self,
        name: str,
        settings: ControlPlaneSettings,
        tenant_provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("k8s-on-k8s:index:CoreDns", name, None, opts)
        tenant = pulumi.ResourceOptions(parent=self, provider=tenant_provider)
        for suffix, manifest in coredns_objects(settings):
            create_object(f"{name}-{suffix}", manifest, tenant)
        self.cluster_dns_ip = settings.cluster_dns_ip
        self.register_outputs({"clusterDnsIp": self.cluster_dns_ip})


class KubeProxy(pulumi.ComponentResource):
    """Service routing on every node (iptables mode)."""

    def __init__(
        self,
        name: str,
        settings: ControlPlaneSettings,
        endpoint: pulumi.Input[str],
        tenant_provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("k8s-on-k8s:index:KubeProxy", name, None, opts)
        # kube-proxy trusts the CA mounted with its service-account token, which the
        # controller-manager publishes from the cluster CA.
        tenant = pulumi.ResourceOptions(parent=self, provider=tenant_provider)
        kubeconfig = pulumi.Output.from_input(endpoint).apply(kube_proxy_kubeconfig)
        objects: list[tuple[str, Manifest]] = [
            (
                "serviceaccount",
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": metadata(KUBE_PROXY, KUBE_SYSTEM),
                },
            ),
            *kube_proxy_rbac(),
            ("configmap", kube_proxy_config_map(settings, kubeconfig)),
            ("daemonset", kube_proxy_daemonset(settings)),
        ]
        for suffix, manifest in objects:
            create_object(f"{name}-{suffix}", manifest, tenant)
        self.register_outputs({})
