"""NodeJoin: what the tenant cluster must hold before a worker can run `kubeadm join`.

It is kubeadm's `bootstrap-token` and `upload-config` phases, done by Pulumi through a provider
for the tenant cluster: a bootstrap token, the public `cluster-info` ConfigMap the joining node
discovers the cluster from, the RBAC that lets the token post and auto-approve a CSR, and the
`kubeadm-config` / `kubelet-config` ConfigMaps `kubeadm join` reads. Every object is built by a
pure function below; the component only registers them.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_random as random
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from components.common.kubeconfig import build_kubeconfig
from components.common.names import KUBE_PUBLIC, KUBE_SYSTEM, ObjectNames
from components.common.podspec import Manifest
from components.config import ControlPlaneSettings
from components.host.etcd import etcd_client_urls
from components.tenant.tenant_objects import (
    ANONYMOUS_USER,
    BOOTSTRAPPERS_GROUP,
    NODES_GROUP,
    cluster_role,
    cluster_role_binding,
    config_map,
    create_object,
    group,
    metadata,
    role,
    role_binding,
    rule,
    user,
)

BOOTSTRAP_TOKEN_TYPE = "bootstrap.kubernetes.io/token"
TOKEN_ID_LENGTH = 6
TOKEN_SECRET_LENGTH = 16
# The user name kubeadm gives the token in a node's bootstrap kubeconfig.
TOKEN_USER = "tls-bootstrap-token-user"
CLUSTER_INFO = "cluster-info"
CLUSTER_INFO_ROLE = "kubeadm:bootstrap-signer-clusterinfo"
KUBEADM_CONFIG = "kubeadm-config"
KUBEADM_CONFIG_ROLE = "kubeadm:nodes-kubeadm-config"
KUBELET_CONFIG = "kubelet-config"
KUBELET_CONFIG_ROLE = "kubeadm:kubelet-config"
# Where kubeadm puts the PKI and static pods on a node; the kubelet config points there.
CERTIFICATES_DIR = "/etc/kubernetes/pki"
STATIC_POD_PATH = "/etc/kubernetes/manifests"


# Exported by every `pulumi up`, read back by the next (components/last_deployment.py).
TOKEN_EXPIRATION_OUTPUT = "bootstrapTokenExpiration"


def bootstrap_token_expiration(
    last_deployed: object, now: datetime.datetime, ttl_seconds: int
) -> str | None:
    """When the node bootstrap token expires (RFC 3339, UTC), or None if it never does.

    The last deployment's expiry stands while more than half the lifetime is left, so a re-run
    changes nothing and a `joinCommand` read after any `pulumi up` works for at least half the
    lifetime. Otherwise (expired, nearly so, or the lifetime changed) a new token is due from
    now; the token's random parts are kept by this value, so they are issued anew with it.
    """
    if ttl_seconds == 0:
        return None
    lifetime = datetime.timedelta(seconds=ttl_seconds)
    if isinstance(last_deployed, str) and last_deployed:
        try:
            previous = datetime.datetime.fromisoformat(last_deployed.replace("Z", "+00:00"))
        except ValueError:
            previous = None
        if previous is not None and lifetime / 2 < previous - now <= lifetime:
            return last_deployed
    return (now + lifetime).astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bootstrap_token_name(token_id: str) -> str:
    return f"bootstrap-token-{token_id}"


def bootstrap_token_secret(token_id: str, token_secret: str, expiration: str | None) -> Manifest:
    """The token Secret the apiserver's bootstrap authenticator and the bootstrapsigner read."""
    data = {
        "token-id": token_id,
        "token-secret": token_secret,
        "usage-bootstrap-authentication": "true",
        # The bootstrapsigner signs cluster-info with tokens that allow signing: the JWS a
        # joining node checks before it trusts the CA it downloaded.
        "usage-bootstrap-signing": "true",
        "auth-extra-groups": BOOTSTRAPPERS_GROUP,
    }
    if expiration is not None:
        # The tokencleaner controller deletes the Secret once this time has passed.
        data["expiration"] = expiration
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(bootstrap_token_name(token_id), KUBE_SYSTEM),
        "type": BOOTSTRAP_TOKEN_TYPE,
        "stringData": data,
    }


def discovery_token_ca_cert_hash(ca_cert_pem: str) -> str:
    """`sha256:` + the SHA-256 of the CA's DER SubjectPublicKeyInfo, as kubeadm pins the CA."""
    certificate = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    # Re-encoding the key gives the certificate's own SPKI bytes for RSA and named-curve keys.
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def control_plane_endpoint(endpoint: str) -> str:
    """`host:port` of an https URL (port 443 when the URL has none), as kubeadm writes it."""
    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"not an https URL: {endpoint!r}")
    host = parts.hostname
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a DNS name
    return f"{host}:{parts.port or 443}"


def join_command(endpoint: str, token_id: str, token_secret: str, ca_cert_pem: str) -> str:
    return (
        f"kubeadm join {control_plane_endpoint(endpoint)} --token {token_id}.{token_secret} "
        f"--discovery-token-ca-cert-hash {discovery_token_ca_cert_hash(ca_cert_pem)}"
    )


def cluster_info_kubeconfig(server: str, ca_cert_pem: str) -> str:
    """The public kubeconfig in `cluster-info`: one cluster and no user.

    The cluster's name is empty, as kubeadm writes it: with no context, `kubeadm join` finds the
    cluster under that name only.
    """
    document: Manifest = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "",
                "cluster": {
                    "certificate-authority-data": base64.b64encode(ca_cert_pem.encode()).decode(),
                    "server": server,
                },
            }
        ],
        "contexts": None,
        "current-context": "",
        "users": None,
        "preferences": {},
    }
    return yaml.safe_dump(document, sort_keys=False)


def cluster_info_rbac() -> list[tuple[str, Manifest]]:
    """Anyone may read `cluster-info`: a joining node has no credentials yet."""
    get_cluster_info = rule([""], ["configmaps"], ["get"], [CLUSTER_INFO])
    return [
        ("cluster-info-role", role(CLUSTER_INFO_ROLE, KUBE_PUBLIC, [get_cluster_info])),
        (
            "cluster-info-rolebinding",
            role_binding(CLUSTER_INFO_ROLE, KUBE_PUBLIC, CLUSTER_INFO_ROLE, [user(ANONYMOUS_USER)]),
        ),
    ]


def node_bootstrap_rbac() -> list[tuple[str, Manifest]]:
    """kubeadm's bootstrap-token node phase: post CSRs, have them approved, look up nodes."""
    bootstrappers = [group(BOOTSTRAPPERS_GROUP)]
    return [
        (
            "kubelet-bootstrap",
            cluster_role_binding(
                "kubeadm:kubelet-bootstrap", "system:node-bootstrapper", bootstrappers
            ),
        ),
        (
            "node-autoapprove-bootstrap",
            cluster_role_binding(
                "kubeadm:node-autoapprove-bootstrap",
                "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                bootstrappers,
            ),
        ),
        (
            # Joined kubelets renew their own client certificates without an admin.
            "node-autoapprove-certificate-rotation",
            cluster_role_binding(
                "kubeadm:node-autoapprove-certificate-rotation",
                "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                [group(NODES_GROUP)],
            ),
        ),
        # `kubeadm join` checks whether a Node of its name already exists.
        ("get-nodes-role", cluster_role("kubeadm:get-nodes", [rule([""], ["nodes"], ["get"])])),
        (
            "get-nodes-binding",
            cluster_role_binding("kubeadm:get-nodes", "kubeadm:get-nodes", bootstrappers),
        ),
    ]


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
                "endpoints": etcd_client_urls(settings, names),
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
    document: Manifest = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True, "cacheTTL": "0s"},
            "x509": {"clientCAFile": f"{CERTIFICATES_DIR}/ca.crt"},
        },
        "authorization": {
            "mode": "Webhook",
            "webhook": {"cacheAuthorizedTTL": "0s", "cacheUnauthorizedTTL": "0s"},
        },
        "cgroupDriver": "systemd",
        "clusterDNS": [settings.cluster_dns_ip],
        "clusterDomain": settings.cluster_domain,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "readOnlyPort": 0,
        # The client certificate from the TLS bootstrap is renewed before it expires.
        "rotateCertificates": True,
        "staticPodPath": STATIC_POD_PATH,
        **(overrides or {}),
    }
    return yaml.safe_dump(document, sort_keys=False)


class NodeJoin(pulumi.ComponentResource):
    """The token, discovery data, RBAC and config that let a plain `kubeadm join` work."""

    def __init__(
        self,
        name: str,
        settings: ControlPlaneSettings,
        ca_cert_pem: pulumi.Input[str],
        endpoint: pulumi.Input[str],
        tenant_provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
        *,
        token_expiration: str | None = None,
        kubelet_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__("k8s-on-k8s:index:NodeJoin", name, None, opts)
        tenant = pulumi.ResourceOptions(parent=self, provider=tenant_provider)
        ca = pulumi.Output.from_input(ca_cert_pem)
        server = pulumi.Output.from_input(endpoint)

        # A new expiry issues a new token (bootstrap_token_expiration decides when).
        keepers = {"expiration": token_expiration or "never"}
        # Lowercase letters and digits only: the token format is [a-z0-9]{6}.[a-z0-9]{16}.
        token_id = random.RandomString(
            f"{name}-token-id",
            length=TOKEN_ID_LENGTH,
            keepers=keepers,
            lower=True,
            upper=False,
            numeric=True,
            special=False,
            opts=pulumi.ResourceOptions(parent=self),
        ).result
        token_secret: pulumi.Output[str] = pulumi.Output.secret(
            random.RandomString(
                f"{name}-token-secret",
                length=TOKEN_SECRET_LENGTH,
                keepers=keepers,
                lower=True,
                upper=False,
                numeric=True,
                special=False,
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["result"]),
            ).result
        )
        token = pulumi.Output.all(token_id, token_secret).apply(
            lambda values: bootstrap_token_secret(values[0], values[1], token_expiration)
        )
        objects = [
            create_object(
                f"{name}-bootstrap-token",
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    # The name holds only the public token id: no reason to hide it in the diff.
                    "metadata": pulumi.Output.unsecret(token["metadata"]),
                    "type": BOOTSTRAP_TOKEN_TYPE,
                    "stringData": token["stringData"],
                },
                tenant,
            ),
            create_object(
                f"{name}-cluster-info",
                config_map(
                    CLUSTER_INFO,
                    KUBE_PUBLIC,
                    {
                        "kubeconfig": pulumi.Output.all(server, ca).apply(
                            lambda values: cluster_info_kubeconfig(values[0], values[1])
                        )
                    },
                ),
                tenant,
            ),
            create_object(
                f"{name}-kubeadm-config",
                config_map(
                    KUBEADM_CONFIG,
                    KUBE_SYSTEM,
                    {
                        "ClusterConfiguration": server.apply(
                            lambda url: cluster_configuration(settings, url)
                        )
                    },
                ),
                tenant,
            ),
            create_object(
                f"{name}-kubelet-config",
                config_map(
                    KUBELET_CONFIG,
                    KUBE_SYSTEM,
                    {"kubelet": kubelet_configuration(settings, kubelet_overrides)},
                ),
                tenant,
            ),
        ]
        for suffix, manifest in [
            *cluster_info_rbac(),
            *node_bootstrap_rbac(),
            *upload_config_rbac(),
        ]:
            objects.append(create_object(f"{name}-{suffix}", manifest, tenant))

        # The join data resolves only once every object exists, so whatever consumes it (a
        # node's cloud-init, a test) never runs `kubeadm join` against a half-prepared cluster.
        created = pulumi.Output.all(*[obj.id for obj in objects])
        self.join_command: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(server, token_id, token_secret, ca, created).apply(
                lambda values: join_command(values[0], values[1], values[2], values[3])
            )
        )
        self.bootstrap_kubeconfig: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(server, ca, token_id, token_secret, created).apply(
                lambda values: build_kubeconfig(
                    cluster_name=settings.cluster_name,
                    server=values[0],
                    ca_cert_pem=values[1],
                    user=TOKEN_USER,
                    token=f"{values[2]}.{values[3]}",
                )
            )
        )
        self.token_expiration = token_expiration
        self.register_outputs(
            {
                "joinCommand": self.join_command,
                "bootstrapKubeconfig": self.bootstrap_kubeconfig,
                "tokenExpiration": token_expiration or "",
            }
        )
