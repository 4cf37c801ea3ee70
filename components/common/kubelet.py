"""The one KubeletConfiguration builder: the program's `kubelet-config` ConfigMap
(components/tenant/upload_config.py) and the e2e rig's kubelets (tests/e2e/infra) both call it
with their own parameters and serialise the document themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.common.endpoints import KUBELET_HEALTHZ_PORT, KUBELET_PORT, LOOPBACK


def kubelet_configuration(
    *,
    cluster_dns: str,
    cluster_domain: str,
    client_ca_file: str,
    cgroup_driver: str = "systemd",
    webhook_cache_ttl: str | None = None,
    rotate_certificates: bool = True,
    static_pod_path: str | None = None,
    address: str | None = None,
    port: int = KUBELET_PORT,
    tls_cert_file: str | None = None,
    tls_key_file: str = "",
    cgroup_root: str | None = None,
    resolv_conf: str | None = None,
    container_runtime_endpoint: str | None = None,
    pod_logs_dir: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A KubeletConfiguration (v1beta1): webhook authentication and authorization, client
    certificates from `client_ca_file`, no anonymous or read-only access, /healthz on loopback.

    `webhook_cache_ttl` caches the webhooks' answers for that long ("0s": never); None leaves
    the kubelet's defaults. A field given None is left out (the kubelet's default); `address`
    brings `port`, `tls_cert_file` brings `tls_key_file`. `overrides` replaces or adds top-level
    fields, last. The keys come in a fixed order (kubeadm's), so a serialisation that keeps it
    is stable.
    """
    webhook: dict[str, Any] = {"enabled": True}
    authorization: dict[str, Any] = {"mode": "Webhook"}
    if webhook_cache_ttl is not None:
        webhook["cacheTTL"] = webhook_cache_ttl
        authorization["webhook"] = {
            "cacheAuthorizedTTL": webhook_cache_ttl,
            "cacheUnauthorizedTTL": webhook_cache_ttl,
        }
    document: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
    }
    if address is not None:
        document |= {"address": address, "port": port}
    document |= {
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": webhook,
            "x509": {"clientCAFile": client_ca_file},
        },
        "authorization": authorization,
    }
    if tls_cert_file is not None:
        document |= {"tlsCertFile": tls_cert_file, "tlsPrivateKeyFile": tls_key_file}
    document["cgroupDriver"] = cgroup_driver
    optional = {
        "cgroupRoot": cgroup_root,
        "resolvConf": resolv_conf,
        "containerRuntimeEndpoint": container_runtime_endpoint,
        "podLogsDir": pod_logs_dir,
    }
    document |= {
        "clusterDNS": [cluster_dns],
        "clusterDomain": cluster_domain,
        "healthzBindAddress": LOOPBACK,
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "readOnlyPort": 0,
        # The client certificate (from the TLS bootstrap) is renewed before it expires.
        "rotateCertificates": rotate_certificates,
    }
    if static_pod_path is not None:
        document["staticPodPath"] = static_pod_path
    document |= {key: value for key, value in optional.items() if value is not None}
    document |= overrides or {}
    return document
