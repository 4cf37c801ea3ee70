"""kubeadm's upload-config phase, inside the tenant cluster: the `kubeadm-config` and
`kubelet-config` ConfigMaps `kubeadm join` reads, and who may read them. Pure functions; the
NodeJoin component (components/tenant/node_join.py) registers what they build.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from components.common import kubelet
from components.common.endpoints import control_plane_endpoint
from components.common.names import KUBE_SYSTEM, ObjectNames
from components.common.podspec import Manifest
from components.config import ControlPlaneSettings
from components.tenant.tenant_objects import (
    BOOTSTRAPPERS_GROUP,
    NODES_GROUP,
    group,
    role,
    role_binding,
    rule,
)

KUBEADM_CONFIG = "kubeadm-config"
KUBEADM_CONFIG_ROLE = "kubeadm:nodes-kubeadm-config"
KUBELET_CONFIG = "kubelet-config"
KUBELET_CONFIG_ROLE = "kubeadm:kubelet-config"
# Where kubeadm puts the PKI and static pods on a node; the kubelet config points there.
CERTIFICATES_DIR = "/etc/kubernetes/pki"
STATIC_POD_PATH = "/etc/kubernetes/manifests"


def upload_config_rbac() -> list[tuple[str, Manifest]]:
    """Joining (bootstrappers) and joined (nodes) kubelets may read the two config ConfigMaps."""
    readers = [group(BOOTSTRAPPERS_GROUP), group(NODES_GROUP)]
    objects: list[tuple[str, Manifest]] = []
    for suffix, role_name, config_map_name in (
        ("kubeadm-config", KUBEADM_CONFIG_ROLE, KUBEADM_CONFIG),
        ("kubelet-config", KUBELET_CONFIG_ROLE, KUBELET_CONFIG),
    ):
        read = rule([""], ["configmaps"], ["get"], [config_map_name])
        objects.append((f"{suffix}-role", role(role_name, KUBE_SYSTEM, [read])))
        objects.append(
            (f"{suffix}-rolebinding", role_binding(role_name, KUBE_SYSTEM, role_name, readers))
        )
    return objects


def cluster_configuration(settings: ControlPlaneSettings, endpoint: str) -> str:
    """kubeadm's ClusterConfiguration (v1beta4) for this control plane, as `kubeadm join` reads it.

    etcd is "external" to the nodes: it runs in the infrastructure cluster, so kubeadm never
    manages a local member. The file paths are kubeadm's conventions; nodes never read them.
    """
    names = ObjectNames(settings.cluster_name, settings.namespace, settings.infra_cluster_domain)
    document = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "ClusterConfiguration",
        "clusterName": settings.cluster_name,
        "kubernetesVersion": settings.release.version,
        "controlPlaneEndpoint": control_plane_endpoint(endpoint),
        "certificatesDir": CERTIFICATES_DIR,
        "imageRepository": settings.image_registry,
        "networking": {
            "dnsDomain": settings.cluster_domain,
            "serviceSubnet": settings.service_cidr,
            "podSubnet": settings.pod_cidr,
        },
        "etcd": {
            "external": {
                "endpoints": names.etcd_client_urls(settings.etcd_replicas),
                "caFile": f"{CERTIFICATES_DIR}/etcd/ca.crt",
                "certFile": f"{CERTIFICATES_DIR}/apiserver-etcd-client.crt",
                "keyFile": f"{CERTIFICATES_DIR}/apiserver-etcd-client.key",
            }
        },
        "dns": {"disabled": not settings.core_dns},
        "proxy": {"disabled": not settings.kube_proxy},
    }
    return yaml.safe_dump(document, sort_keys=False)


def kubelet_configuration(
    settings: ControlPlaneSettings, overrides: Mapping[str, Any] | None = None
) -> str:
    """The KubeletConfiguration every joining node gets, with kubeadm's defaults.

    `overrides` replaces top-level fields, for hosts that differ from kubeadm's assumptions:
    e.g. `{"cgroupDriver": "cgroupfs", "failCgroupV1": False}` where the runtime uses cgroupfs
    on a cgroup v1 host (kubeadm's default driver is systemd).
    """
    document = kubelet.kubelet_configuration(
        cluster_dns=settings.cluster_dns_ip,
        cluster_domain=settings.cluster_domain,
        client_ca_file=f"{CERTIFICATES_DIR}/ca.crt",
        cgroup_driver="systemd",
        webhook_cache_ttl="0s",
        rotate_certificates=True,
        static_pod_path=STATIC_POD_PATH,
        overrides=overrides,
    )
    return yaml.safe_dump(document, sort_keys=False)
