"""Where the rig keeps things and which addresses it uses; every value can be set by environment.

The defaults describe one node, `rig-node`, whose IP lives on a port-less bridge `rig0` inside
the network namespace `k8sonk8s-rig` (made by hack/e2e.sh or hack/infra.sh).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from components.common.endpoints import API_SERVER_PORT, https_url

KUBERNETES_VERSION = "v1.37.2"
DEFAULT_CACHE_DIR = Path("/var/cache/k8s-on-k8s") / KUBERNETES_VERSION


@dataclass(frozen=True)
class NodeLayout:
    """Where one node keeps its kubelet, containerd and CNI files: the rig node and every
    tenant worker alike, each under its own state (disk) and run (tmpfs) directory."""

    state_dir: Path
    run_dir: Path

    @property
    def config_dir(self) -> Path:
        return self.state_dir / "config"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def kubelet_root_dir(self) -> Path:
        return self.state_dir / "kubelet"

    @property
    def kubelet_pki_dir(self) -> Path:
        """The kubelet's --cert-dir: its self-signed serving certificate, rotated client certs.
        (Its default is /var/lib/kubelet/pki whatever --root-dir says.)"""
        return self.kubelet_root_dir / "pki"

    @property
    def kubelet_config(self) -> Path:
        return self.config_dir / "kubelet.json"

    @property
    def kubelet_kubeconfig(self) -> Path:
        """kubeadm's name: written by kubeadm on the rig node, by the kubelet on a worker."""
        return self.config_dir / "kubelet.conf"

    @property
    def pod_logs_dir(self) -> Path:
        return self.state_dir / "pod-logs"

    @property
    def resolv_conf(self) -> Path:
        """The kubelet's resolvConf: the base for pods' /etc/resolv.conf."""
        return self.config_dir / "resolv.conf"

    @property
    def containerd_config(self) -> Path:
        return self.config_dir / "containerd.toml"

    @property
    def containerd_root(self) -> Path:
        return self.state_dir / "containerd"

    @property
    def containerd_state(self) -> Path:
        return self.run_dir / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        return self.run_dir / "runc"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state_dir / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.state_dir / "cni" / "ipam"


@dataclass(frozen=True)
class RigSettings:
    state_dir: Path = Path("/var/lib/k8s-on-k8s-rig")
    # Sockets and containerd's state go to tmpfs-backed /run, kept short for unix socket paths.
    run_dir: Path = Path("/run/k8s-on-k8s-rig")
    bin_dir: Path = DEFAULT_CACHE_DIR / "bin"
    images_dir: Path = DEFAULT_CACHE_DIR / "images"
    cni_bin_dir: Path = Path("/usr/lib/cni")
    netns_name: str = "k8sonk8s-rig"
    node_name: str = "rig-node"
    node_ip: str = "10.250.0.1"
    node_prefix_length: int = 24
    node_bridge: str = "rig0"
    pod_bridge: str = "cni0"
    cluster_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/16"
    cluster_domain: str = "cluster.local"
    # The kubelet puts pod cgroups under this parent in every hierarchy, so teardown finds them.
    cgroup_root: str = "/k8sonk8s-rig"
    tenant_namespace: str = "tenant-e2e"
    tenant_user: str = "tenant-admin"
    persistent_volume_count: int = 6
    persistent_volume_size: str = "2Gi"
    storage_class: str = "rig-local"
    pause_image: str = "registry.k8s.io/pause:3.10.2"
    # Ingress: Traefik with its ingress-nginx provider on the node IP serves the class that the
    # program's Ingress names, and the rig DNS answers every name under ingress_domain with
    # ingress_ip, like a wildcard record pointing at an ingress controller.
    ingress_domain: str = "k8sonk8s.test"
    ingress_class: str = "nginx"
    ingress_controller: str = "k8s.io/ingress-nginx"
    ingress_https_port: int = 443
    ingress_http_port: int = 80
    # Traefik's /ping, on loopback only: the rig's readiness check.
    ingress_ping_port: int = 8082

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> RigSettings:
        """Defaults, then RIG_* environment variables, then explicit overrides."""
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, object] = {}
        for name, variable in _ENVIRONMENT_VARIABLES.items():
            if variable in environ:
                values[name] = environ[variable]
        values.update({name: value for name, value in overrides.items() if value is not None})
        for name in ("state_dir", "run_dir", "bin_dir", "images_dir", "cni_bin_dir"):
            if name in values:
                values[name] = Path(str(values[name]))
        if "persistent_volume_count" in values:
            values["persistent_volume_count"] = int(str(values["persistent_volume_count"]))
        return cls(**values)  # type: ignore[arg-type]

    # Addresses derived from the CIDRs.
    @property
    def kubernetes_service_ip(self) -> str:
        """The first address of the service range: the `kubernetes` Service's ClusterIP."""
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))

    @property
    def dns_ip(self) -> str:
        """CoreDNS runs as a host process on the node IP; pods reach it through the bridge."""
        return self.node_ip

    @property
    def apiserver_url(self) -> str:
        return https_url(self.node_ip, API_SERVER_PORT)

    @property
    def ingress_ip(self) -> str:
        """Traefik listens on the node IP, reachable from the rig netns and the worker's."""
        return self.node_ip

    def ingress_host(self, name: str) -> str:
        """A name the rig DNS resolves to the ingress controller, e.g. e2e.k8sonk8s.test."""
        return f"{name}.{self.ingress_domain}"

    @property
    def kubernetes_version(self) -> str:
        return KUBERNETES_VERSION

    # Files and directories: the node's (shared with the tenant workers), then the cluster's.
    @property
    def node(self) -> NodeLayout:
        return NodeLayout(self.state_dir, self.run_dir)

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def logs_dir(self) -> Path:
        return self.node.logs_dir

    @property
    def config_dir(self) -> Path:
        return self.node.config_dir

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def tenant_kubeconfig(self) -> Path:
        return self.state_dir / "tenant.kubeconfig"

    @property
    def state_file(self) -> Path:
        """Records the pids of the running rig (see processes.RigState)."""
        return self.state_dir / "rig-state.json"

    @property
    def etcd_data_dir(self) -> Path:
        return self.state_dir / "etcd"

    @property
    def kube_proxy_kubeconfig(self) -> Path:
        return self.config_dir / "kube-proxy.conf"

    @property
    def kubelet_root_dir(self) -> Path:
        return self.node.kubelet_root_dir

    @property
    def pod_logs_dir(self) -> Path:
        return self.node.pod_logs_dir

    @property
    def containerd_root(self) -> Path:
        return self.node.containerd_root

    @property
    def containerd_state(self) -> Path:
        return self.node.containerd_state

    @property
    def containerd_socket(self) -> Path:
        return self.node.containerd_socket

    @property
    def cni_conf_dir(self) -> Path:
        return self.node.cni_conf_dir

    @property
    def cni_ipam_dir(self) -> Path:
        return self.node.cni_ipam_dir

    @property
    def persistent_volumes_dir(self) -> Path:
        return self.state_dir / "persistent-volumes"

    @property
    def pod_resolv_conf(self) -> Path:
        return self.node.resolv_conf

    @property
    def netns_resolv_conf(self) -> Path:
        """`ip netns exec` bind-mounts this over /etc/resolv.conf for everything in the netns."""
        return Path("/etc/netns") / self.netns_name / "resolv.conf"

    def binary(self, name: str) -> Path:
        return self.bin_dir / name

    def release_bin_dir(self, version: str) -> Path:
        """The binaries hack/build-binaries.sh builds for another release, beside the rig's:
        <cache>/<version>/bin next to <cache>/<rig version>/bin."""
        return self.bin_dir.parent.parent / version / "bin"

    def release_images_dir(self, version: str) -> Path:
        """That release's images (tests.e2e.images.build --release), beside its binaries."""
        return self.release_bin_dir(version).parent / "images"

    @property
    def kubectl(self) -> Path:
        return self.binary("kubectl")


_ENVIRONMENT_VARIABLES = {
    "state_dir": "RIG_STATE_DIR",
    "run_dir": "RIG_RUN_DIR",
    "bin_dir": "RIG_BIN_DIR",
    "images_dir": "RIG_IMAGES_DIR",
    "netns_name": "RIG_NETNS",
    "tenant_namespace": "RIG_TENANT_NAMESPACE",
    "persistent_volume_count": "RIG_PERSISTENT_VOLUMES",
}

# The binaries the rig runs from the bin dir, in start order (containerd and runc come from the OS),
# and crane, which writes the images.
RIG_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "coredns",
    "traefik",
    "kubectl",
    "crane",
)
