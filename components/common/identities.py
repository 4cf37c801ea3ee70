"""Identities both sides name: the admin users and groups (issued by the host-side PKI, bound
inside the tenant) and the certificate-and-key pair every issued credential is."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

# kubeadm's two admin identities (since 1.29). The admin (the `kubeconfig` output) is in a group
# that a ClusterRoleBinding inside the tenant makes cluster-admin, so deleting the binding
# revokes it. The super-admin is in system:masters, which needs no binding: the program uses it
# to reach the tenant (it must work before any binding exists and after one is revoked), and it
# is kept as the break-glass credential in a Secret of the host namespace, never an output.
ADMIN_USER = "kubernetes-admin"
ADMIN_GROUP = "kubeadm:cluster-admins"
SUPER_ADMIN_USER = "kubernetes-super-admin"
SUPER_ADMIN_GROUP = "system:masters"


@dataclass(frozen=True)
class KeyPair:
    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]
