"""AdminAccess (inside the tenant cluster): what makes the admin kubeconfig an administrator.

kubeadm's `kubeadm:cluster-admins` ClusterRoleBinding (cmd/kubeadm/app/phases/kubeconfig): the
`admin` identity's group gets `cluster-admin`. With `adminAccess: false` the binding goes away
and the `kubeconfig` output is revoked: it still authenticates, but may do no more than any
authenticated user. The program itself reaches the tenant as the super-admin, which needs no
binding.
"""

from __future__ import annotations

import pulumi

from components.common.identities import ADMIN_GROUP
from components.common.podspec import Manifest
from components.tenant.tenant_objects import cluster_role_binding, create_object, group

CLUSTER_ADMINS_BINDING = "kubeadm:cluster-admins"


def cluster_admins_binding() -> Manifest:
    return cluster_role_binding(CLUSTER_ADMINS_BINDING, "cluster-admin", [group(ADMIN_GROUP)])


class AdminAccess(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        granted: bool,
        tenant_provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("k8s-on-k8s:index:AdminAccess", name, None, opts)
        if granted:
            create_object(
                f"{name}-cluster-admins",
                cluster_admins_binding(),
                pulumi.ResourceOptions(parent=self, provider=tenant_provider),
            )
        self.register_outputs({"granted": granted})
