"""Names of the objects a control plane puts in its namespace, and their DNS names.

Every object name derives from the cluster name, so one namespace could hold several
control planes and a name never depends on a value that is only known after `pulumi up`.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.common.endpoints import API_SERVER_PORT, ETCD_CLIENT_PORT

PART_OF = "k8s-on-k8s"

# Namespaces and objects of the tenant cluster that Kubernetes itself defines.
KUBE_SYSTEM = "kube-system"
KUBE_PUBLIC = "kube-public"
# The cluster CA, as the controller-manager publishes it in every namespace (the SA ca.crt).
ROOT_CA_CONFIG_MAP = "kube-root-ca.crt"


@dataclass(frozen=True)
class ObjectNames:
    cluster: str
    namespace: str
    infra_cluster_domain: str

    @property
    def etcd(self) -> str:
        """StatefulSet, client Service, PodDisruptionBudget and NetworkPolicy of etcd."""
        return f"{self.cluster}-etcd"

    @property
    def etcd_peer(self) -> str:
        """Headless Service that gives each etcd member a stable DNS name."""
        return f"{self.cluster}-etcd-peer"

    @property
    def api_server(self) -> str:
        return f"{self.cluster}-apiserver"

    @property
    def api_server_pki(self) -> str:
        """Secret with the apiserver's certificates, keys and encryption configuration."""
        return f"{self.api_server}-pki"

    @property
    def controller_manager(self) -> str:
        return f"{self.cluster}-controller-manager"

    @property
    def scheduler(self) -> str:
        return f"{self.cluster}-scheduler"

    @property
    def exposure(self) -> str:
        return f"{self.cluster}-apiserver-external"

    @property
    def admin_kubeconfig(self) -> str:
        return f"{self.cluster}-admin-kubeconfig"

    @property
    def super_admin_kubeconfig(self) -> str:
        return f"{self.cluster}-super-admin-kubeconfig"

    def etcd_member(self, index: int) -> str:
        return f"{self.etcd}-{index}"

    def etcd_members(self, count: int) -> list[str]:
        return [self.etcd_member(index) for index in range(count)]

    def service_dns_names(self, service: str) -> list[str]:
        """Every name a pod of the infrastructure cluster may use for an in-namespace Service."""
        return [
            service,
            f"{service}.{self.namespace}",
            f"{service}.{self.namespace}.svc",
            self.service_fqdn(service),
        ]

    def service_fqdn(self, service: str) -> str:
        return f"{service}.{self.namespace}.svc.{self.infra_cluster_domain}"

    def etcd_member_dns_names(self, member: str) -> list[str]:
        """The names a member is reached by through the headless peer Service."""
        return [f"{member}.{name}" for name in self.service_dns_names(self.etcd_peer)]

    def etcd_member_fqdn(self, member: str) -> str:
        return f"{member}.{self.service_fqdn(self.etcd_peer)}"

    def etcd_client_urls(self, replicas: int) -> list[str]:
        """Every member's client URL, the way the apiserver lists them in --etcd-servers and
        kubeadm's ClusterConfiguration records them."""
        return [
            f"https://{self.etcd_member_fqdn(member)}:{ETCD_CLIENT_PORT}"
            for member in self.etcd_members(replicas)
        ]

    @property
    def api_server_internal_url(self) -> str:
        """How the controller-manager and scheduler reach the apiserver: its Service."""
        return f"https://{self.service_fqdn(self.api_server)}:{API_SERVER_PORT}"


def labels(cluster: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/instance": cluster,
        "app.kubernetes.io/part-of": PART_OF,
    }
