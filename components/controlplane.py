"""ControlPlane: one tenant control plane in one namespace, composed of the other components."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.common.identities import ADMIN_USER, SUPER_ADMIN_USER
from components.common.names import ObjectNames, labels
from components.config import ControlPlaneSettings
from components.host.certs import API_PROXY_CERT, Pki
from components.host.control_plane.apiserver import ApiServer, SecretsWriter
from components.host.control_plane.controller_manager import ControllerManager
from components.host.control_plane.scheduler import Scheduler
from components.host.etcd import Etcd
from components.host.exposure import Exposure
from components.host.konnectivity_server import agent_endpoint
from components.host.kubeconfig import client_certificate_kubeconfig
from components.host.network_policies import NetworkPolicies
from components.host.workload import secret_of_files
from components.tenant.addons import CoreDns, KubeProxy
from components.tenant.admin_access import AdminAccess
from components.tenant.in_cluster_api import InClusterApi
from components.tenant.konnectivity_agent import KonnectivityAgent
from components.tenant.node_join import NodeJoin


def tenant_cluster_identifier(settings: ControlPlaneSettings) -> str:
    """What identifies the tenant cluster for pulumi-kubernetes: its place, never its address."""
    return f"k8s-on-k8s/{settings.namespace}/{settings.cluster_name}"


class ControlPlane(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        settings: ControlPlaneSettings,
        provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
        *,
        token_expiration: str | None = None,
        secrets_writer: SecretsWriter = SecretsWriter.SECRETBOX,
    ) -> None:
        """Decided at the edge from the last deployment: `token_expiration`, when the node
        bootstrap token expires (RFC 3339; None: never; node_join.bootstrap_token_expiration),
        and `secrets_writer`, the provider that writes Secrets at rest (apiserver)."""
        super().__init__("k8s-on-k8s:index:ControlPlane", name, None, opts)
        names = ObjectNames(
            cluster=settings.cluster_name,
            namespace=settings.namespace,
            infra_cluster_domain=settings.infra_cluster_domain,
        )
        child = pulumi.ResourceOptions(parent=self)

        pki = Pki(f"{name}-pki", settings, names, opts=child)
        etcd = Etcd(f"{name}-etcd", settings, names, pki, provider, opts=child)
        NetworkPolicies(
            f"{name}-network-policies",
            settings,
            names,
            provider,
            opts=child,
            etcd_policy_alias=pulumi.Alias(name=f"{name}-etcd-ingress", parent=etcd),
        )
        api_server = ApiServer(
            f"{name}-apiserver",
            settings,
            names,
            pki,
            provider,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[etcd]),
            secrets_writer=secrets_writer,
        )
        after_api_server = pulumi.ResourceOptions(parent=self, depends_on=[api_server])
        ControllerManager(
            f"{name}-controller-manager", settings, names, pki, provider, opts=after_api_server
        )
        Scheduler(f"{name}-scheduler", settings, names, pki, provider, opts=after_api_server)
        exposure = Exposure(f"{name}-exposure", settings, names, provider, opts=after_api_server)

        self.endpoint: pulumi.Output[str] = pulumi.Output.from_input(exposure.endpoint)

        def admin_kubeconfig(leaf: str, user: str) -> pulumi.Output[str]:
            return client_certificate_kubeconfig(
                cluster_name=names.cluster,
                server=self.endpoint,
                ca_cert_pem=pki.ca_cert_pem,
                user=user,
                client_cert_pem=pki.leaves[leaf].cert_pem,
                client_key_pem=pki.leaves[leaf].key_pem,
            )

        self.kubeconfig = admin_kubeconfig("admin", ADMIN_USER)
        super_admin_kubeconfig = admin_kubeconfig("super-admin", SUPER_ADMIN_USER)
        # Both live in the namespace too: the admin for in-cluster tooling of the tenant, the
        # super-admin as the break-glass credential (no output carries it).
        for secret_name, component, kubeconfig in (
            (names.admin_kubeconfig, "admin-kubeconfig", self.kubeconfig),
            (names.super_admin_kubeconfig, "super-admin-kubeconfig", super_admin_kubeconfig),
        ):
            secret_of_files(
                f"{name}-{component}",
                {
                    "name": secret_name,
                    "namespace": settings.namespace,
                    "labels": labels(names.cluster, component),
                },
                {"kubeconfig": kubeconfig},
                pulumi.ResourceOptions(parent=self, provider=provider),
            )
        # The tenant cluster itself, as its super-admin (which no tenant RBAC change can lock
        # out); used only once the API is up and exposed.
        self.tenant_provider = k8s.Provider(
            f"{name}-tenant",
            kubeconfig=super_admin_kubeconfig,
            # The cluster stays the same when its kubeconfig changes (exposure, apiHost, a
            # renewed admin certificate) or is unknown in a preview: without an identifier,
            # pulumi-kubernetes would replace the provider and every object inside the tenant.
            cluster_identifier=tenant_cluster_identifier(settings),
            enable_secret_mutable=True,
            enable_config_map_mutable=True,
            # `pulumi destroy` still completes when the tenant API is already gone.
            delete_unreachable=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[api_server, exposure]),
        )
        in_tenant = pulumi.ResourceOptions(parent=self)
        AdminAccess(f"{name}-admin-access", settings.admin_access, self.tenant_provider, in_tenant)
        InClusterApi(
            f"{name}-in-cluster-api",
            settings,
            pki.leaves.get(API_PROXY_CERT),
            self.tenant_provider,
            opts=in_tenant,
        )

        # What worker nodes need to join (kubeadm's bootstrap-token and upload-config phases).
        node_join = NodeJoin(
            f"{name}-node-join",
            settings,
            pki.ca_cert_pem,
            self.endpoint,
            self.tenant_provider,
            opts=in_tenant,
            token_expiration=token_expiration,
        )
        self.join_command = node_join.join_command
        self.bootstrap_kubeconfig = node_join.bootstrap_kubeconfig
        if settings.core_dns:
            CoreDns(f"{name}-coredns", settings, self.tenant_provider, opts=in_tenant)
        if settings.kube_proxy:
            KubeProxy(
                f"{name}-kube-proxy", settings, self.endpoint, self.tenant_provider, opts=in_tenant
            )

        if settings.konnectivity:
            host, port = agent_endpoint(settings, settings.konnectivity_node_port)
            KonnectivityAgent(
                f"{name}-konnectivity-agent",
                settings,
                host,
                port,
                self.tenant_provider,
                opts=in_tenant,
            )

        self.cluster_ca_certificate = pki.ca_cert_pem
        self.certificate_expiry = pki.certificate_expiry
        self.namespace = settings.namespace
        self.kubernetes_version = settings.release.version
        self.register_outputs(
            {
                "endpoint": self.endpoint,
                "kubeconfig": self.kubeconfig,
                "clusterCaCertificate": self.cluster_ca_certificate,
                "namespace": self.namespace,
                "kubernetesVersion": self.kubernetes_version,
                "joinCommand": self.join_command,
                "bootstrapKubeconfig": self.bootstrap_kubeconfig,
                "certificateExpiry": self.certificate_expiry,
            }
        )
