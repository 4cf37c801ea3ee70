"""kubeadm's bootstrap-token phase, inside the tenant cluster: the node bootstrap token, the
public `cluster-info` ConfigMap a joining node discovers the cluster from, the RBAC that lets
the token post and auto-approve a CSR, and the join command. Pure functions; the NodeJoin
component (components/tenant/node_join.py) registers what they build.
"""

from __future__ import annotations

import datetime
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from components.common.endpoints import control_plane_endpoint
from components.common.kubeconfig import KUBEADM_LAYOUT, dump, kubeconfig_document
from components.common.names import KUBE_PUBLIC, KUBE_SYSTEM
from components.common.podspec import Manifest
from components.tenant.tenant_objects import (
    ANONYMOUS_USER,
    BOOTSTRAPPERS_GROUP,
    NODES_GROUP,
    cluster_role,
    cluster_role_binding,
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
    return dump(
        kubeconfig_document(
            cluster_name="", server=server, ca_cert_pem=ca_cert_pem, layout=KUBEADM_LAYOUT
        )
    )


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
