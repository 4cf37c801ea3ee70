"""A tenant worker node: a second containerd and kubelet in their own network namespace.

The node lives in the network namespace `k8sonk8s-worker`, joined to the rig's node bridge `rig0`
by a veth pair (worker IP 10.250.0.2/24, no default route), with its own containerd (root, state,
socket, cgroup root), its own CNI bridge (`cni1`, host-local IPAM on the pod CIDR the tenant's
controller-manager assigns, masquerading) and its own kubelet. The kubelet gets no client
certificate: it starts with a bootstrap-token kubeconfig only and obtains its certificate through
a CertificateSigningRequest that the tenant's controller-manager approves and signs (TLS
bootstrap), exactly as a node joined with `kubeadm join` does.

Everything runs as children of the calling process (which must be in the rig's network namespace)
and dies with it; the worker's processes enter the worker's network namespace but share the
caller's mount namespace, so the kubelet's volume mounts are visible to containerd and runc.

    worker = Worker(WorkerSettings.for_tenant(rig_settings, service_cidr="10.96.0.0/12"))
    worker.start(
        bootstrap_kubeconfig=token_kubeconfig,  # the program's `bootstrapKubeconfig`
        ca_pem=ca_pem,
        tenant_kubectl=admin_kubectl,  # watches the Node
        cluster_kubelet_config=kubelet_config,  # the tenant's kube-system/kubelet-config
    )
    worker.timings["ready_seconds"]  # kubelet start to node Ready
    worker.stop()  # raises if any process, mount, interface, cgroup or the netns is left

After a test run that was killed, `clean_up_stale_worker(rig_settings)` removes what is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from components.common.endpoints import KUBELET_PORT
from tests.e2e.images.build import E2E_CLIENT

from . import configs, host
from .cluster import (
    RigStartError,
    RigTeardownError,
    import_images,
    node_containerd_command,
    node_containerd_config,
    node_kubelet_command,
    node_kubelet_configuration,
    wait_for_containerd,
    wait_until,
    write_json,
    write_text,
)
from .processes import PR_SET_PDEATHSIG, ManagedProcess, log, stop_pid
from .settings import NodeLayout, RigSettings

if TYPE_CHECKING:
    from tests.e2e.images.layer import ImageFile

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")

# The images a tenant worker runs: the sandbox, the two add-ons and a client for the tests.
E2E_CLIENT_IMAGE = E2E_CLIENT.reference
# The node-local proxy behind kubernetes.default (exposure ingress): Debian's HAProxy at the
# official image's path, under a local name (the stack's `apiProxyImage` in the ingress test).
HAPROXY = Path("/usr/sbin/haproxy")
HAPROXY_IMAGE_PATH = "/usr/local/sbin/haproxy"
# iproute2's `ip`, which the proxy's init container runs (on PATH in the image).
IP_COMMAND = Path("/usr/bin/ip")
IP_COMMAND_IMAGE_PATH = "/usr/local/sbin/ip"
API_PROXY_IMAGE = "localhost/k8s-on-k8s/haproxy:2.6"

# iptables for the kube-proxy image: the nf_tables backend, like the host's `iptables` (Debian
# 12's default alternative) and the rig's own kube-proxy. This kernel also accepts the legacy
# backend, but mixing backends in one namespace hides rules from one of them.
IPTABLES_MULTI = Path("/usr/sbin/xtables-nft-multi")
IPTABLES_COMMANDS = (
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
)
XTABLES_MODULES_DIR = Path("/usr/lib/x86_64-linux-gnu/xtables")

# Host paths the worker's pods may create: containerd makes a missing hostPath source (kube-proxy
# mounts /lib/modules, absent on this kernel without modules). Removed at stop if they were
# absent at start and are still empty.
HOST_PATHS_PODS_MAY_CREATE = (Path("/lib/modules"),)


@dataclass(frozen=True)
class WorkerSettings:
    """Where the worker lives and what it is called; the tenant's DNS and Service addresses."""

    rig: RigSettings
    cluster_dns: str  # the tenant's kube-dns ClusterIP (tenth address of its serviceCidr)
    service_cidr: str  # the tenant's Service range (routed to the node's interface)
    cluster_domain: str = "cluster.local"
    node_name: str = "tenant-worker-1"
    netns_name: str = "k8sonk8s-worker"
    node_ip: str = "10.250.0.2"
    prefix_length: int = 24
    # The veth pair: one end a port of the rig's bridge, the other the worker's only interface.
    rig_link: str = "rigworker0"
    node_link: str = "eth0"
    pod_bridge: str = "cni1"
    cgroup_root: str = "/k8sonk8s-worker"
    kubelet_port: int = KUBELET_PORT
    # The Kubernetes release of the worker's kubelet and kube-proxy: the rig's unless given (a
    # tenant release built by hack/build-binaries.sh, under the same cache).
    release: str | None = None

    @classmethod
    def for_tenant(
        cls, rig: RigSettings, service_cidr: str, cluster_domain: str = "cluster.local", **kw
    ) -> WorkerSettings:
        """kubeadm's conventions: kube-dns at the tenth address of the Service range."""
        dns = str(ipaddress.ip_network(service_cidr)[10])
        return cls(rig, dns, service_cidr, cluster_domain, **kw)

    # The rig node's layout, under the rig's own directories, so the rig's teardown sweeps
    # anything the worker leaves.
    @property
    def node(self) -> NodeLayout:
        return NodeLayout(self.rig.state_dir / "worker", self.rig.run_dir / "worker")

    @property
    def state_dir(self) -> Path:
        return self.node.state_dir

    @property
    def run_dir(self) -> Path:
        return self.node.run_dir

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns_name

    @property
    def config_dir(self) -> Path:
        return self.node.config_dir

    @property
    def logs_dir(self) -> Path:
        return self.node.logs_dir

    @property
    def kubelet_root_dir(self) -> Path:
        return self.node.kubelet_root_dir

    @property
    def kubelet_pki_dir(self) -> Path:
        return self.node.kubelet_pki_dir

    @property
    def bootstrap_kubeconfig(self) -> Path:
        """kubeadm's name, next to the kubeconfig the kubelet writes."""
        return self.config_dir / "bootstrap-kubelet.conf"

    @property
    def kubeconfig(self) -> Path:
        """Written by the kubelet once its CSR is signed; must not exist at start."""
        return self.node.kubelet_kubeconfig

    @property
    def ca_file(self) -> Path:
        return self.config_dir / "ca.crt"

    @property
    def resolv_conf(self) -> Path:
        return self.node.resolv_conf

    @property
    def containerd_socket(self) -> Path:
        return self.node.containerd_socket

    @property
    def cni_conf_dir(self) -> Path:
        return self.node.cni_conf_dir

    @property
    def kubernetes_version(self) -> str:
        return self.release or self.rig.kubernetes_version

    @property
    def node_bin_dir(self) -> Path:
        """Where the worker's kubelet and kube-proxy come from."""
        return self.rig.release_bin_dir(self.release) if self.release else self.rig.bin_dir

    @property
    def images_dir(self) -> Path:
        """The worker's image tars (kube-proxy with iptables differs from the rig's)."""
        return self.rig.images_dir / "worker"


# -- Images ------------------------------------------------------------------------------------


def shared_libraries(binary: Path) -> list[Path]:
    """Every shared library `ldd` lists for binary (with the dynamic loader), as listed."""
    output = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libraries = []
    for line in output.splitlines():
        words = line.split()
        # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
        path = words[2] if "=>" in words and len(words) > 2 else words[0]
        if path.startswith("/"):
            libraries.append(Path(path))
    return libraries


def _add_with_libraries(files: dict[str, ImageFile], path: str, binary: Path) -> None:
    """`binary` at `path` in the image, and every library it links at the host's paths."""
    from tests.e2e.images.layer import ImageFile

    files[path] = ImageFile.from_host(path, binary.resolve())
    for library in shared_libraries(binary):
        if str(library) not in files:
            files[str(library)] = ImageFile.from_host(str(library), library.resolve())


def haproxy_image_files() -> list[ImageFile]:
    """HAProxy and `ip` for the proxy image, with every library they link."""
    files: dict[str, ImageFile] = {}
    _add_with_libraries(files, HAPROXY_IMAGE_PATH, HAPROXY)
    _add_with_libraries(files, IP_COMMAND_IMAGE_PATH, IP_COMMAND)
    return [files[path] for path in sorted(files)]


def iptables_image_files() -> list[ImageFile]:
    """iptables (nf_tables backend) for the kube-proxy image, at the host's paths: the multi
    binary and its command links, every library it and the xtables modules link, and the
    modules themselves (`XTABLES_LIBDIR`, compiled into libxtables)."""
    from tests.e2e.images.layer import ImageFile

    files: dict[str, ImageFile] = {}
    for binary in [IPTABLES_MULTI, *sorted(XTABLES_MODULES_DIR.glob("*.so"))]:
        _add_with_libraries(files, str(binary), binary)
    for command in IPTABLES_COMMANDS:
        path = f"/usr/sbin/{command}"
        files[path] = ImageFile.symlink(path, IPTABLES_MULTI.name)
    return [files[path] for path in sorted(files)]


IPSET = Path("/usr/sbin/ipset")


def kube_router_image_files() -> list[ImageFile]:
    """iptables and ipset, with every library they link, for the rig's kube-router image: its
    firewall runs iptables-save/-restore and ipset."""
    files = {file.path: file for file in iptables_image_files()}
    _add_with_libraries(files, str(IPSET), IPSET)
    return [files[path] for path in sorted(files)]


def build_worker_images(
    bin_dir: Path, out_dir: Path, node_bin_dir: Path | None = None, release: str | None = None
) -> list[tuple[str, Path]]:
    """pause, kube-proxy (with iptables), CoreDNS, the konnectivity agent, the API proxy
    (HAProxy) and the e2e client (kubectl + pause), from the rig's bin_dir. A worker of another
    `release` also gets kube-proxy at that release, from node_bin_dir: the tenant runs that one
    until its control plane moves to the rig's release, and the rig's after."""
    from tests.e2e.images import build

    by_reference = {spec.reference: spec for spec in build.IMAGES}
    pause = f"{build.REGISTRY}/pause:{build.PAUSE_VERSION}"
    coredns = f"{build.REGISTRY}/coredns/coredns:{build.COREDNS_VERSION}"
    konnectivity_agent = (
        f"{build.REGISTRY}/kas-network-proxy/proxy-agent:{build.KONNECTIVITY_VERSION}"
    )
    client = build.E2E_CLIENT
    images = [
        (pause, build.build_image(by_reference[pause], bin_dir, out_dir)),
        (coredns, build.build_image(by_reference[coredns], bin_dir, out_dir)),
        (
            konnectivity_agent,
            build.build_image(by_reference[konnectivity_agent], bin_dir, out_dir),
        ),
        (client.reference, build.build_image(client, bin_dir, out_dir)),
        (
            API_PROXY_IMAGE,
            build.build_image(
                build.ImageSpec(reference=API_PROXY_IMAGE, binaries={}, user="65532:65532"),
                bin_dir,
                out_dir,
                haproxy_image_files(),
            ),
        ),
    ]
    kube_proxy_sources = {build.KUBERNETES_VERSION: bin_dir}
    if release:
        kube_proxy_sources[release] = node_bin_dir or bin_dir
    crane = build.crane_path(bin_dir)
    for version, source in kube_proxy_sources.items():
        spec = build.kubernetes_image("kube-proxy", version)
        tar = build.build_image(spec, source, out_dir, iptables_image_files(), crane=crane)
        images.append((spec.reference, tar))
    return images


# -- Processes in the worker's network namespace ----------------------------------------------


def _enter_netns_and_die_with_parent(netns_path: str, parent_pid: int) -> None:
    """Runs in the child before exec: enter the worker's netns only (not its mounts)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns_path, os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        os._exit(126)
    os.close(fd)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def start_in_netns(name: str, argv: Sequence[str], log_path: Path, netns: Path) -> ManagedProcess:
    """A ManagedProcess (same stop/log helpers as the rig) started inside netns."""
    process = ManagedProcess(name, list(argv), log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    parent_pid = os.getpid()
    with open(log_path, "ab") as log_file:
        log_file.write(f"\n==== {time.ctime()}: {' '.join(argv)}\n".encode())
        log_file.flush()
        process.popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: _enter_netns_and_die_with_parent(str(netns), parent_pid),
        )
    process.pid = process.popen.pid
    return process


def run_in_netns(
    netns: Path, argv: Sequence[str], check: bool = True
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["nsenter", f"--net={netns}", "--", *argv], capture_output=True, text=True, check=check
    )


# -- Configs -----------------------------------------------------------------------------------


# What `kubeadm join --patches` would change in the cluster's KubeletConfiguration on this host:
# the runtime, cgroups (v1, cgroupfs, our own root), swap, files under our directories, and the
# rig's thresholds (imported images only, a test VM's disk).
HOST_KUBELET_KEYS = (
    "cgroupDriver",
    "cgroupRoot",
    "failCgroupV1",
    "failSwapOn",
    "resolvConf",
    "containerRuntimeEndpoint",
    "podLogsDir",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "imageMaximumGCAge",
    "evictionHard",
    "serializeImagePulls",
    "nodeStatusUpdateFrequency",
    "address",
    "port",
    "readOnlyPort",
    "healthzBindAddress",
    "healthzPort",
    "maxPods",
    "registerNode",
)


def kubelet_config(settings: WorkerSettings, cluster_config: dict | None = None) -> dict:
    """The kubelet's configuration.

    With cluster_config (the tenant's `kube-system/kubelet-config`, what `kubeadm join` writes
    to /var/lib/kubelet/config.yaml), that document with this host's settings patched in, its
    CA file at our path and no static pod directory (kubeadm's lives in /etc). Without it, the
    rig kubelet's settings with the worker's DNS. Either way no serving certificate is given:
    the kubelet makes a self-signed one, as on a kubeadm node (and on the rig node).
    """
    s = settings
    host_config = node_kubelet_configuration(
        s.node,
        node_ip=s.node_ip,
        client_ca_file=str(s.ca_file),
        cluster_dns=s.cluster_dns,
        cluster_domain=s.cluster_domain,
        cgroup_root=s.cgroup_root,
    )
    host_config["port"] = s.kubelet_port
    if cluster_config is None:
        config = dict(host_config)
        config["rotateCertificates"] = True
        return config
    config = json.loads(json.dumps(cluster_config))
    config.pop("staticPodPath", None)
    config.setdefault("authentication", {}).setdefault("x509", {})["clientCAFile"] = str(s.ca_file)
    for key in HOST_KUBELET_KEYS:
        config[key] = host_config[key]
    return config


def worker_cni_conflist(settings: WorkerSettings, pod_cidr: str) -> dict:
    """The rig's bridge network, on the worker's bridge and with masquerading: pods reach the
    API (NodePort on 10.250.0.1) from the node's address, since nothing routes pod CIDRs."""
    conflist = configs.cni_conflist(
        name="tenant-worker",
        bridge=settings.pod_bridge,
        pod_subnet=pod_cidr,
        ipam_data_dir=str(settings.node.cni_ipam_dir),
    )
    conflist["plugins"][0]["ipMasq"] = True
    return conflist


def masquerade_rule(settings: WorkerSettings) -> list[str]:
    """In the rig's netns: pods of the infrastructure cluster (the tenant's apiservers) reach
    the worker's kubelet from the node's address. Needed because the worker's pod CIDR is
    allocated by the tenant from its own range, which may equal the rig's: the worker would
    answer a pod address of the rig through its own bridge."""
    return [
        "POSTROUTING",
        "-s",
        settings.rig.cluster_cidr,
        "-d",
        f"{settings.node_ip}/32",
        "-m",
        "comment",
        "--comment",
        "k8s-on-k8s e2e: rig pods to the tenant worker",
        "-j",
        "MASQUERADE",
    ]


# -- The worker --------------------------------------------------------------------------------


@dataclass
class Worker:
    settings: WorkerSettings
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def start(
        self,
        *,
        bootstrap_kubeconfig: str,
        ca_pem: str,
        tenant_kubectl: Callable[..., subprocess.CompletedProcess],
        cluster_kubelet_config: dict | None = None,
    ) -> None:
        """Network, containerd with the images, the kubelet; returns when the node is Ready.

        tenant_kubectl(*args, check=...) runs kubectl as the tenant's admin (to watch the Node).
        cluster_kubelet_config: the tenant's KubeletConfiguration to start from (kubeadm's
        `kubelet-config` ConfigMap), patched for this host; None: the rig kubelet's settings.
        """
        s = self.settings
        begun = time.monotonic()
        host.check_isolated(s.rig)
        host.ensure_cgroup_mounts()
        self._clean_leftovers()
        for directory in (s.state_dir, s.run_dir):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        absent = [str(path) for path in HOST_PATHS_PODS_MAY_CREATE if not path.exists()]
        write_json(s.state_dir / "absent-host-paths.json", {"paths": absent})
        for directory in (s.config_dir, s.logs_dir, s.cni_conf_dir):
            directory.mkdir(parents=True, exist_ok=True)
        log(f"starting tenant worker {s.node_name} ({s.node_ip}, netns {s.netns_name})")
        try:
            self._write_configs(bootstrap_kubeconfig, ca_pem, cluster_kubelet_config)
            self._setup_network()
            host.create_cgroup_root(s.cgroup_root)
            containerd = self._launch("containerd", node_containerd_command(s.node))
            wait_for_containerd(s.containerd_socket, containerd, "the worker's containerd")
            self._import_images()
            if s.kubeconfig.exists() or any(s.kubelet_pki_dir.glob("kubelet-client*")):
                raise RigStartError("the kubelet must start without client credentials")
            started = time.monotonic()
            kubelet = self._launch(
                "kubelet",
                node_kubelet_command(
                    s.node_bin_dir / "kubelet",
                    s.node,
                    node_name=s.node_name,
                    node_ip=s.node_ip,
                    kubeconfig_flags=[
                        f"--bootstrap-kubeconfig={s.bootstrap_kubeconfig}",
                        f"--kubeconfig={s.kubeconfig}",
                    ],
                ),
            )
            watch = [containerd, kubelet]
            pod_cidr = wait_until(
                f"node {s.node_name} to register and get a pod CIDR",
                lambda: ((self._node(tenant_kubectl) or {}).get("spec") or {}).get("podCIDR"),
                timeout=120,
                watch=watch,
            )
            self.timings["registered_seconds"] = time.monotonic() - started
            log(f"node {s.node_name} registered, pod CIDR {pod_cidr}")
            write_json(
                s.cni_conf_dir / "10-tenant-worker.conflist", worker_cni_conflist(s, pod_cidr)
            )
            wait_until(
                f"node {s.node_name} Ready",
                lambda: _is_ready(self._node(tenant_kubectl)),
                timeout=180,
                watch=watch,
            )
            self.timings["ready_seconds"] = time.monotonic() - started
            self.timings["start_to_ready_seconds"] = time.monotonic() - begun
            log(
                f"node {s.node_name} Ready {self.timings['ready_seconds']:.1f}s after the kubelet "
                f"started (registered after {self.timings['registered_seconds']:.1f}s)"
            )
        except BaseException:
            log("worker start failed; stopping what was started")
            self.stop(verify=False)
            raise

    def _write_configs(
        self, bootstrap_kubeconfig: str, ca_pem: str, cluster_kubelet_config: dict | None
    ) -> None:
        s = self.settings
        write_text(s.bootstrap_kubeconfig, bootstrap_kubeconfig, 0o600)
        write_text(s.ca_file, ca_pem)
        write_json(s.node.kubelet_config, kubelet_config(s, cluster_kubelet_config))
        # Pods with dnsPolicy Default (CoreDNS's upstream) get the rig's DNS, which answers only
        # the infrastructure cluster's names: nothing here may ask an outside resolver.
        write_text(s.resolv_conf, configs.resolv_conf(nameserver=s.rig.dns_ip))
        write_text(
            s.node.containerd_config,
            node_containerd_config(
                s.node, sandbox_image=s.rig.pause_image, cni_bin_dir=s.rig.cni_bin_dir
            ),
        )

    def _setup_network(self) -> None:
        s = self.settings
        host.run(["ip", "netns", "add", s.netns_name])
        host.run(
            [
                "ip",
                "link",
                "add",
                s.rig_link,
                "type",
                "veth",
                "peer",
                "name",
                s.node_link,
                "netns",
                s.netns_name,
            ]
        )
        host.run(["ip", "link", "set", s.rig_link, "master", s.rig.node_bridge])
        host.run(["ip", "link", "set", s.rig_link, "up"])
        host.run(["iptables", "-t", "nat", "-A", *masquerade_rule(s)])
        inside = s.netns_path
        for argv in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", f"{s.node_ip}/{s.prefix_length}", "dev", s.node_link],
            ["ip", "link", "set", s.node_link, "up"],
            # Host-local traffic to Service IPs must leave the routing decision to meet
            # kube-proxy's OUTPUT DNAT (as in the rig).
            ["ip", "route", "add", s.service_cidr, "dev", s.node_link],
            ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
            ["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"],
        ):
            run_in_netns(inside, argv)
        routes = run_in_netns(inside, ["ip", "-4", "route", "show", "default"]).stdout.strip()
        routes += run_in_netns(inside, ["ip", "-6", "route", "show", "default"]).stdout.strip()
        if routes:
            raise host.RigEnvironmentError(f"the worker netns has a default route: {routes}")

    def _launch(self, name: str, argv: list[str]) -> ManagedProcess:
        s = self.settings
        process = start_in_netns(name, argv, s.logs_dir / f"{name}.log", s.netns_path)
        self.processes[name] = process
        log(f"started worker {name} (pid {process.pid})")
        return process

    def _import_images(self) -> None:
        s = self.settings
        import_images(
            s.containerd_socket,
            build_worker_images(s.rig.bin_dir, s.images_dir, s.node_bin_dir, s.release),
            "the worker's containerd",
        )

    def _node(self, tenant_kubectl: Callable[..., subprocess.CompletedProcess]) -> dict | None:
        result = tenant_kubectl("get", "node", self.settings.node_name, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    # -- Stop -----------------------------------------------------------------------------------

    def stop(self, *, verify: bool = True) -> list[str]:
        """Stops every process, unmounts, removes the interfaces, cgroups, rules and the netns."""
        s = self.settings
        log(f"stopping tenant worker {s.node_name}")
        if "kubelet" in self.processes:
            self.processes["kubelet"].stop()
        host.kill_cgroup_processes(s.cgroup_root)
        for shim in host.processes_with_argument(str(s.containerd_socket)):
            stop_pid(shim, timeout=2)
        for name, process in self.processes.items():
            if name != "kubelet":
                process.stop()
        self.processes.clear()
        self._clean_system()
        leftovers = self.leftovers()
        if verify and leftovers:
            raise RigTeardownError(
                "the tenant worker left things behind:\n  - " + "\n  - ".join(leftovers)
            )
        log("tenant worker stopped" + (f"; left behind: {leftovers}" if leftovers else ", clean"))
        return leftovers

    def _clean_system(self) -> None:
        """Everything but our own child processes: also cleans up after a worker whose test
        run was killed (its kubelet and containerd died with it; shims and pods did not)."""
        s = self.settings
        host.kill_cgroup_processes(s.cgroup_root)
        for shim in host.processes_with_argument(str(s.containerd_socket)):
            stop_pid(shim, timeout=2)
        host.unmount_under([s.state_dir, s.run_dir])
        time.sleep(0.2)  # let killed container processes leave their cgroups
        host.kill_cgroup_processes(s.cgroup_root)
        host.remove_cgroup_root(s.cgroup_root)
        # The rule and the veth end live in the rig's netns: never touch any other's.
        if host.in_netns(s.rig.netns_name):
            delete_rule = ["iptables", "-t", "nat", "-D", *masquerade_rule(s)]
            while host.run(delete_rule, check=False).returncode == 0:
                pass
            host.run(["ip", "link", "delete", s.rig_link], check=False)
        for path in self._absent_host_paths():
            with contextlib.suppress(OSError):  # not empty: something else uses it now
                path.rmdir()
        if s.netns_path.exists():
            host.run(["ip", "netns", "delete", s.netns_name], check=False)
        if not host.mounts_under([s.run_dir]):
            shutil.rmtree(s.run_dir, ignore_errors=True)

    def _absent_host_paths(self) -> list[Path]:
        try:
            recorded = json.loads((self.settings.state_dir / "absent-host-paths.json").read_text())
        except (OSError, ValueError):
            return []
        return [Path(path) for path in recorded["paths"]]

    def _clean_leftovers(self) -> None:
        s = self.settings
        if (
            s.netns_path.exists()
            or host.mounts_under([s.state_dir, s.run_dir])
            or host.cgroup_pids(s.cgroup_root)
        ):
            log("cleaning up leftovers of a previous tenant worker")
            self._clean_system()

    def leftovers(self) -> list[str]:
        s = self.settings
        found = []
        for pattern in (
            f"--root-dir={s.kubelet_root_dir}",
            f"containerd --config {s.node.containerd_config}",
            f"-address {s.containerd_socket}",
        ):
            pids = host.pgrep(pattern)
            if pids:
                found.append(f"processes matching {pattern!r}: {pids}")
        mounts = host.mounts_under([s.state_dir, s.run_dir])
        if mounts:
            found.append(f"mounts: {mounts}")
        in_rig = host.in_netns(s.rig.netns_name)
        if in_rig and host.run(["ip", "link", "show", s.rig_link], check=False).returncode == 0:
            found.append(f"interface {s.rig_link}")
        if s.netns_path.exists():
            found.append(f"network namespace {s.netns_path}")
        for path in self._absent_host_paths():
            if path.exists():
                found.append(f"host path {path} (absent before the worker started)")
        if Path("/var/lib/kubelet/pki").exists():
            found.append("/var/lib/kubelet/pki (the kubelet's default --cert-dir)")
        in_cgroup = host.cgroup_pids(s.cgroup_root)
        if in_cgroup:
            found.append(f"processes in cgroup {s.cgroup_root}: {sorted(in_cgroup)}")
        for hierarchy in host.cgroup_mounts():
            if (hierarchy.mount_point / s.cgroup_root.strip("/")).exists():
                found.append(f"cgroup {hierarchy.mount_point / s.cgroup_root.strip('/')}")
        rules = ""
        if in_rig:
            rules = host.run(["iptables", "-t", "nat", "-S", "POSTROUTING"], check=False).stdout
        if s.node_ip in rules and "tenant worker" in rules:
            found.append("the rig's masquerade rule for the worker")
        return found


def _is_ready(node: dict | None) -> bool:
    conditions = (node or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def clean_up_stale_worker(rig: RigSettings) -> list[str]:
    """After a test run that died before the worker's teardown (its kubelet and containerd died
    with it; containerd's shims, the pods and the netns did not): stop and remove the rest.
    Returns what is still left. For the rig's `down` (hack/e2e.sh's exit trap)."""
    worker = Worker(WorkerSettings.for_tenant(rig, service_cidr="10.96.0.0/12"))
    host.ensure_cgroup_mounts()  # a fresh `ip netns exec` hides them
    worker._clean_system()
    return worker.leftovers()
