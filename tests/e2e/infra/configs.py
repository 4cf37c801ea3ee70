"""Config files of the rig's components, each built by a small pure function.

The kubelet and kube-proxy configurations and the Corefile come from the program's builders
(components/common) with the rig's parameters, in the key order of the recorded files
(tests/unit/test_rig_outputs.py); the kubeconfigs are kubeadm's (pki.py). Structured configs are
returned as dicts and written as JSON (valid YAML for every consumer); Corefile, containerd's
TOML and resolv.conf are returned as text.
"""

from __future__ import annotations

from collections.abc import Sequence

from components.common import kube_proxy, kubelet
from components.common.corefile import IngressWildcard
from components.common.corefile import corefile as shared_corefile
from components.common.endpoints import (
    KUBE_PROXY_HEALTHZ_PORT,
    KUBE_PROXY_METRICS_PORT,
    KUBELET_PORT,
    LOOPBACK,
    host_port,
)

# This host: cgroup v1 (deprecated, refused by default since 1.35) and no swap (but do not
# insist on it); no serving certificate bootstrap (without tls_cert_file, the kubelet makes a
# self-signed one, as on a kubeadm node).
KUBELET_HOST_POLICY = {
    "serverTLSBootstrap": False,
    "failCgroupV1": False,
    "failSwapOn": False,
    # Nothing can be pulled here: never garbage-collect the imported images.
    "imageGCHighThresholdPercent": 100,
    "imageGCLowThresholdPercent": 99,
    "imageMaximumGCAge": "0s",
    # A busy or full-ish disk on a test VM must not evict the control plane under test.
    "evictionHard": {
        "memory.available": "100Mi",
        "nodefs.available": "1%",
        "nodefs.inodesFree": "1%",
        "imagefs.available": "1%",
        "imagefs.inodesFree": "1%",
    },
    "serializeImagePulls": False,
    "nodeStatusUpdateFrequency": "5s",
    "registerNode": True,
    "maxPods": 110,
}
# The key order of the rig's kubelet files (they were recorded so: tests/unit/test_rig_outputs.py).
KUBELET_KEY_ORDER = (
    *("apiVersion", "kind", "address", "port", "readOnlyPort", "healthzBindAddress"),
    *("healthzPort", "authentication", "authorization", "tlsCertFile", "tlsPrivateKeyFile"),
    *("rotateCertificates", "serverTLSBootstrap", "cgroupDriver", "cgroupRoot", "failCgroupV1"),
    *("failSwapOn", "clusterDNS", "clusterDomain", "resolvConf", "containerRuntimeEndpoint"),
    *("podLogsDir", "imageGCHighThresholdPercent", "imageGCLowThresholdPercent"),
    *("imageMaximumGCAge", "evictionHard", "serializeImagePulls", "nodeStatusUpdateFrequency"),
    *("registerNode", "maxPods"),
)
KUBE_PROXY_KEY_ORDER = (
    *("apiVersion", "kind", "clientConnection", "hostnameOverride", "mode", "clusterCIDR"),
    *("healthzBindAddress", "metricsBindAddress", "nodePortAddresses", "conntrack"),
)


def in_order(document: dict, keys: Sequence[str]) -> dict:
    """The document with `keys` first, in that order (those it has), then its other keys: the
    shared builders fix their own order, the rig's files keep theirs."""
    return {**{key: document[key] for key in keys if key in document}, **document}


def kubelet_configuration(
    *,
    node_ip: str,
    client_ca_file: str,
    cluster_dns: str,
    cluster_domain: str,
    resolv_conf: str,
    container_runtime_endpoint: str,
    cgroup_root: str,
    pod_logs_dir: str,
    tls_cert_file: str | None = None,
    tls_key_file: str = "",
) -> dict:
    """The rig's kubelets: the shared builder with this host's settings, in the order of the
    recorded files. No tls_cert_file (the rig's nodes): no serving certificate keys."""
    document = kubelet.kubelet_configuration(
        cluster_dns=cluster_dns,
        cluster_domain=cluster_domain,
        client_ca_file=client_ca_file,
        # This host: containerd without the systemd cgroup driver.
        cgroup_driver="cgroupfs",
        rotate_certificates=False,
        address=node_ip,
        port=KUBELET_PORT,
        tls_cert_file=tls_cert_file,
        tls_key_file=tls_key_file,
        cgroup_root=cgroup_root,
        resolv_conf=resolv_conf,
        container_runtime_endpoint=container_runtime_endpoint,
        pod_logs_dir=pod_logs_dir,
        overrides=KUBELET_HOST_POLICY,
    )
    return in_order(document, KUBELET_KEY_ORDER)


def kube_proxy_configuration(*, kubeconfig_path: str, node_name: str, cluster_cidr: str) -> dict:
    """The rig's kube-proxy: the shared builder, with its probes on loopback, in the order of
    the recorded file."""
    document = kube_proxy.kube_proxy_configuration(
        kubeconfig_path=kubeconfig_path,
        cluster_cidr=cluster_cidr,
        mode="iptables",
        hostname_override=node_name,
        healthz_bind_address=host_port(LOOPBACK, KUBE_PROXY_HEALTHZ_PORT),
        metrics_bind_address=host_port(LOOPBACK, KUBE_PROXY_METRICS_PORT),
        overrides={
            # NodePorts on the node IP only (not on the pod bridge's gateway address).
            "nodePortAddresses": ["primary"],
            # Zeros mean "leave the sysctl alone": the conntrack table size and timeouts are
            # host-global or not writable from a network namespace.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        },
    )
    return in_order(document, KUBE_PROXY_KEY_ORDER)


def corefile(
    *, bind_ip: str, cluster_domain: str, kubeconfig_path: str, ingress_domain: str, ingress_ip: str
) -> str:
    """Cluster names from the Kubernetes API; every name under ingress_domain is ingress_ip (a
    wildcard A record, as a real ingress set-up would have); every other name is NXDOMAIN.

    There is deliberately no upstream (no `forward` plugin): nothing in the rig may query an
    outside resolver.
    """
    return shared_corefile(
        cluster_domain=cluster_domain,
        upstream=None,
        ttl=5,
        bind=bind_ip,
        kubeconfig=kubeconfig_path,
        health_address=host_port(LOOPBACK, 8080),
        ready_address=host_port(LOOPBACK, 8181),
        ingress=IngressWildcard(domain=ingress_domain, address=ingress_ip),
    )


def traefik_configuration(
    *,
    http_address: str,
    https_address: str,
    ping_address: str,
    ingress_class: str,
    controller_class: str,
    status_address: str,
) -> dict:
    """Traefik's static configuration: the ingress-nginx provider and nothing else.

    Ingresses of `ingress_class` (an IngressClass whose controller is `controller_class`) are
    served on `https_address`, where `ssl-passthrough` routes a TLS connection by its SNI to the
    backend untouched, and `http_address`. No dashboard or API, no telemetry or version check.
    The Kubernetes client comes from the KUBECONFIG variable (the provider has no option for a
    kubeconfig file).
    """
    return {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "log": {"level": "INFO", "noColor": True},
        "entryPoints": {
            "web": {"address": http_address},
            "websecure": {"address": https_address},
            "ping": {"address": ping_address},
        },
        "ping": {"entryPoint": "ping"},
        "providers": {
            "kubernetesIngressNGINX": {
                "ingressClass": ingress_class,
                "controllerClass": controller_class,
                # Without these the provider would put its routers on every entrypoint,
                # the loopback-only ping one included.
                "httpEntryPoint": "web",
                "httpsEntryPoint": "websecure",
                # Ingress status.loadBalancer, as ingress-nginx sets it.
                "publishStatusAddress": [status_address],
            }
        },
    }


def containerd_config(
    *,
    root: str,
    state: str,
    socket: str,
    sandbox_image: str,
    cni_bin_dir: str,
    cni_conf_dir: str,
    runc_root: str,
) -> str:
    """containerd 1.6 (config version 2) private to the rig: own root, state and socket."""
    return f"""\
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # Pod network namespaces under our state dir instead of the host's /run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  # No process here has CAP_SYS_RESOURCE, so none may lower an oom_score_adj below its own:
  # clamp the sandbox's -998 (and Guaranteed pods' -997) to containerd's value instead of
  # failing every sandbox with "failed to update /proc/self/oom_score_adj: Permission denied".
  restrict_oom_score_adj = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state next to ours, not in the host-wide /run/containerd/runc.
        Root = "{runc_root}"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir}"
    conf_dir = "{cni_conf_dir}"
    max_conf_num = 1
"""


def cni_conflist(*, name: str, bridge: str, pod_subnet: str, ipam_data_dir: str) -> dict:
    """A bridge network for the node's pod CIDR (host-local IPAM keeps its leases with us)."""
    return {
        "cniVersion": "0.4.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                # No masquerading: there is no outside to reach.
                "ipMasq": False,
                # A pod must reach itself through its own Service's ClusterIP.
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_data_dir,
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def resolv_conf(*, nameserver: str, search: Sequence[str] = ()) -> str:
    lines = [f"nameserver {nameserver}"]
    if search:
        lines.append("search " + " ".join(search))
    lines.append("options ndots:5")
    return "\n".join(lines) + "\n"
