"""NodeJoin: what the tenant cluster must hold before a worker can run `kubeadm join`.

It is kubeadm's `bootstrap-token` and `upload-config` phases, done by Pulumi through a provider
for the tenant cluster: a bootstrap token, the public `cluster-info` ConfigMap the joining node
discovers the cluster from, the RBAC that lets the token post and auto-approve a CSR, and the
`kubeadm-config` / `kubelet-config` ConfigMaps `kubeadm join` reads. Every object is built by a
pure function of components/tenant/bootstrap_token.py (kubeadm's bootstrap-token phase) or
components/tenant/upload_config.py (upload-config); the component only registers them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_random as random

from components.common.kubeconfig import build_kubeconfig
from components.common.names import KUBE_PUBLIC, KUBE_SYSTEM
from components.config import ControlPlaneSettings
from components.tenant.bootstrap_token import (
    BOOTSTRAP_TOKEN_TYPE,
    CLUSTER_INFO,
    TOKEN_ID_LENGTH,
    TOKEN_SECRET_LENGTH,
    TOKEN_USER,
    bootstrap_token_secret,
    cluster_info_kubeconfig,
    cluster_info_rbac,
    join_command,
    node_bootstrap_rbac,
)
from components.tenant.tenant_objects import (
    config_map,
    create_object,
)
from components.tenant.upload_config import (
    KUBEADM_CONFIG,
    KUBELET_CONFIG,
    cluster_configuration,
    kubelet_configuration,
    upload_config_rbac,
)


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
