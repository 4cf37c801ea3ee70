"""A one-node infrastructure cluster made of host processes inside the rig network namespace.

InfraCluster(settings).start() runs etcd .. CoreDNS and Traefik until the node is Ready, then
creates the tenant namespace, storage, user and the ingress class; .kubectl() runs kubectl;
.stop() stops, unmounts and removes everything and raises if anything is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from components.common.endpoints import (
    API_SERVER_PORT,
    ETCD_CLIENT_PORT,
    ETCD_HEALTH_PORT,
    ETCD_PEER_PORT,
    LOOPBACK,
    http_url,
    https_url,
)

from . import configs, host, objects
from .pki import APISERVER_KUBELET_CLIENT, Pki, create_pki
from .processes import ManagedProcess, RigState, log, stop_pid
from .settings import RIG_BINARIES, NodeLayout, RigSettings

T = TypeVar("T")

# Global (not per-namespace) sysctls the kubelet sets at start; restored at teardown.
KUBELET_KERNEL_SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
HOST_TOOLS = ("containerd", "ctr", "runc", "ip", "iptables", "ipset", "mount", "umount", "pgrep")


class RigStartError(RuntimeError):
    pass


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message carries kubectl's own words."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{(self.stderr or '').strip()}"


class RigTeardownError(RuntimeError):
    pass


def missing_prerequisites(settings: RigSettings) -> list[str]:
    """Everything that stops the rig from starting here, as readable sentences."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not running as root")
    try:
        host.check_isolated(settings)
    except host.RigEnvironmentError as error:
        problems.append(str(error))
    except FileNotFoundError as error:
        problems.append(f"cannot inspect the network namespace: {error}")
    missing = [name for name in RIG_BINARIES if not settings.binary(name).is_file()]
    if missing:
        problems.append(
            f"binaries missing from {settings.bin_dir}: {', '.join(missing)} "
            "(build them with hack/build-binaries.sh)"
        )
    tools = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if tools:
        problems.append(
            f"host tools missing: {', '.join(tools)} (apt-get install containerd runc iptables "
            "ipset iproute2 procps)"
        )
    nameservers = _nameservers(Path("/etc/resolv.conf"))
    if nameservers != [settings.dns_ip]:
        problems.append(
            f"/etc/resolv.conf names {nameservers}, not only the rig DNS {settings.dns_ip}: "
            f"run through hack/e2e.sh (it provides {settings.netns_resolv_conf})"
        )
    plugins = [name for name in CNI_PLUGINS if not (settings.cni_bin_dir / name).is_file()]
    if plugins:
        problems.append(
            f"CNI plugins missing from {settings.cni_bin_dir}: {', '.join(plugins)} "
            "(apt-get install containernetworking-plugins)"
        )
    return problems


def _nameservers(resolv_conf: Path) -> list[str]:
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return []
    return [line.split()[1] for line in lines if line.startswith("nameserver ")]


def node_kubelet_configuration(
    node: NodeLayout,
    *,
    node_ip: str,
    client_ca_file: str,
    cluster_dns: str,
    cluster_domain: str,
    cgroup_root: str,
) -> dict:
    """The kubelet's configuration on a node of the rig (the rig node, a tenant worker): its
    files in the node's layout, and no serving certificate: the kubelet makes a self-signed one
    in its --cert-dir, as on a kubeadm node."""
    return configs.kubelet_configuration(
        node_ip=node_ip,
        client_ca_file=client_ca_file,
        cluster_dns=cluster_dns,
        cluster_domain=cluster_domain,
        resolv_conf=str(node.resolv_conf),
        container_runtime_endpoint=f"unix://{node.containerd_socket}",
        cgroup_root=cgroup_root,
        pod_logs_dir=str(node.pod_logs_dir),
    )


def node_containerd_config(node: NodeLayout, *, sandbox_image: str, cni_bin_dir: Path) -> str:
    """A node's private containerd: root, state, socket, runc and CNI files in its layout."""
    return configs.containerd_config(
        root=str(node.containerd_root),
        state=str(node.containerd_state),
        socket=str(node.containerd_socket),
        sandbox_image=sandbox_image,
        cni_bin_dir=str(cni_bin_dir),
        cni_conf_dir=str(node.cni_conf_dir),
        runc_root=str(node.runc_root),
    )


def node_kubelet_command(
    kubelet: Path, node: NodeLayout, *, node_name: str, node_ip: str, kubeconfig_flags: list[str]
) -> list[str]:
    """A node's kubelet: its configuration, root and certificate directories in its layout."""
    return [
        str(kubelet),
        *kubeconfig_flags,
        f"--config={node.kubelet_config}",
        f"--root-dir={node.kubelet_root_dir}",
        # Default /var/lib/kubelet/pki whatever --root-dir says: keep it ours.
        f"--cert-dir={node.kubelet_pki_dir}",
        f"--hostname-override={node_name}",
        f"--node-ip={node_ip}",
        "--v=1",
    ]


def node_containerd_command(node: NodeLayout) -> list[str]:
    return [shutil.which("containerd") or "containerd", "--config", str(node.containerd_config)]


def component_commands(settings: RigSettings, pki: Pki) -> dict[str, list[str]]:
    """The command line of every rig process, in start order."""
    s = settings
    config = s.config_dir
    # kubeadm's kubeconfig phase names them (pki.py).
    controller_manager_kubeconfig = config / "controller-manager.conf"
    scheduler_kubeconfig = config / "scheduler.conf"
    etcd = http_url(LOOPBACK, ETCD_CLIENT_PORT)
    peer = http_url(LOOPBACK, ETCD_PEER_PORT)
    return {
        "etcd": [
            str(s.binary("etcd")),
            "--name=rig",
            f"--data-dir={s.etcd_data_dir}",
            f"--listen-client-urls={etcd}",
            f"--advertise-client-urls={etcd}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=rig={peer}",
            f"--listen-metrics-urls={http_url(LOOPBACK, ETCD_HEALTH_PORT)}",
            "--snapshot-count=10000",
            # Throwaway data on a shared test VM: do not let fsync latency slow the apiserver.
            "--unsafe-no-fsync",
        ],
        "kube-apiserver": [
            str(s.binary("kube-apiserver")),
            f"--advertise-address={s.node_ip}",
            "--bind-address=0.0.0.0",
            f"--secure-port={API_SERVER_PORT}",
            f"--etcd-servers={etcd}",
            f"--service-cluster-ip-range={s.service_cidr}",
            f"--client-ca-file={pki.ca_cert}",
            f"--tls-cert-file={pki.cert('apiserver')}",
            f"--tls-private-key-file={pki.key('apiserver')}",
            f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
            f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
            "--kubelet-preferred-address-types=InternalIP",
            "--authorization-mode=Node,RBAC",
            # PodSecurity is on by default; NodeRestriction as kubeadm enables it.
            "--enable-admission-plugins=NodeRestriction",
            # As kubeadm sets it: node agents (the NetworkPolicy implementation) run privileged
            # in kube-system; the tenant namespace is held to "restricted" by Pod Security.
            "--allow-privileged=true",
            f"--service-account-issuer=https://kubernetes.default.svc.{s.cluster_domain}",
            f"--service-account-key-file={pki.service_account_public_key}",
            f"--service-account-signing-key-file={pki.service_account_private_key}",
            f"--requestheader-client-ca-file={pki.cert('front-proxy-ca')}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.cert('front-proxy-client')}",
            f"--proxy-client-key-file={pki.key('front-proxy-client')}",
            "--profiling=false",
        ],
        "kube-controller-manager": [
            str(s.binary("kube-controller-manager")),
            f"--kubeconfig={controller_manager_kubeconfig}",
            f"--authentication-kubeconfig={controller_manager_kubeconfig}",
            f"--authorization-kubeconfig={controller_manager_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--client-ca-file={pki.ca_cert}",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-account-private-key-file={pki.service_account_private_key}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            "--use-service-account-credentials=true",
            "--allocate-node-cidrs=true",
            f"--cluster-cidr={s.cluster_cidr}",
            "--node-cidr-mask-size=24",
            f"--service-cluster-ip-range={s.service_cidr}",
            "--cluster-name=k8s-on-k8s-rig",
            # One instance: skip the leader election wait.
            "--leader-elect=false",
            "--profiling=false",
        ],
        "kube-scheduler": [
            str(s.binary("kube-scheduler")),
            f"--kubeconfig={scheduler_kubeconfig}",
            f"--authentication-kubeconfig={scheduler_kubeconfig}",
            f"--authorization-kubeconfig={scheduler_kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--profiling=false",
        ],
        "containerd": node_containerd_command(s.node),
        "kubelet": node_kubelet_command(
            s.binary("kubelet"),
            s.node,
            node_name=s.node_name,
            node_ip=s.node_ip,
            kubeconfig_flags=[f"--kubeconfig={s.node.kubelet_kubeconfig}"],
        ),
        "kube-proxy": [
            str(s.binary("kube-proxy")),
            f"--config={config / 'kube-proxy.json'}",
        ],
        "coredns": [
            str(s.binary("coredns")),
            "-conf",
            str(config / "Corefile"),
        ],
        # An explicit file: without one Traefik would read /etc/traefik/traefik.* or
        # ./traefik.* if present, and ignore its flags.
        "traefik": [
            str(s.binary("traefik")),
            f"--configFile={config / 'traefik.yaml'}",
        ],
    }


def traefik_environment(environ: Mapping[str, str], kubeconfig: Path) -> dict[str, str]:
    """Traefik's provider reads its kubeconfig from KUBECONFIG; it would use an in-cluster
    config instead if KUBERNETES_SERVICE_HOST were set (say, CI running in a pod)."""
    inherited = {
        name: value
        for name, value in environ.items()
        if name not in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
    }
    return {**inherited, "KUBECONFIG": str(kubeconfig)}


def write_json(path: Path, data: dict, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as file:
        json.dump(data, file, indent=2)
        file.write("\n")


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def write_config_files(settings: RigSettings, pki: Pki) -> None:
    """Component configs and resolv.conf files, derived from settings + PKI (the kubeconfigs
    are kubeadm's: pki.create_pki)."""
    s = settings
    write_json(
        s.node.kubelet_config,
        node_kubelet_configuration(
            s.node,
            node_ip=s.node_ip,
            client_ca_file=str(pki.ca_cert),
            cluster_dns=s.dns_ip,
            cluster_domain=s.cluster_domain,
            cgroup_root=s.cgroup_root,
        ),
    )
    write_json(
        s.config_dir / "kube-proxy.json",
        configs.kube_proxy_configuration(
            kubeconfig_path=str(s.kube_proxy_kubeconfig),
            node_name=s.node_name,
            cluster_cidr=s.cluster_cidr,
        ),
    )
    write_text(
        s.config_dir / "Corefile",
        configs.corefile(
            bind_ip=s.dns_ip,
            cluster_domain=s.cluster_domain,
            kubeconfig_path=str(s.admin_kubeconfig),
            ingress_domain=s.ingress_domain,
            ingress_ip=s.ingress_ip,
        ),
    )
    # JSON is YAML; Traefik picks the format by the extension.
    write_json(
        s.config_dir / "traefik.yaml",
        configs.traefik_configuration(
            http_address=f"{s.ingress_ip}:{s.ingress_http_port}",
            https_address=f"{s.ingress_ip}:{s.ingress_https_port}",
            ping_address=f"127.0.0.1:{s.ingress_ping_port}",
            ingress_class=s.ingress_class,
            controller_class=s.ingress_controller,
            status_address=s.ingress_ip,
        ),
    )
    write_text(
        s.node.containerd_config,
        node_containerd_config(s.node, sandbox_image=s.pause_image, cni_bin_dir=s.cni_bin_dir),
    )
    # Pods with dnsPolicy Default get this; ClusterFirst pods get clusterDNS + search paths.
    write_text(s.pod_resolv_conf, configs.resolv_conf(nameserver=s.dns_ip))
    # Everything run in the netns (tests, kubectl, getent) resolves through the rig DNS only.
    write_text(
        s.netns_resolv_conf,
        configs.resolv_conf(
            nameserver=s.dns_ip,
            search=(f"svc.{s.cluster_domain}", s.cluster_domain),
        ),
    )


def wait_until(
    description: str,
    check: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.5,
    watch: Sequence[ManagedProcess] = (),
) -> T:
    """Polls check() until it returns something truthy; fails early if a watched process exits."""
    deadline = time.monotonic() + timeout
    while True:
        for process in watch:
            if not process.is_running():
                raise RigStartError(
                    f"{process.name} exited (code {process.exit_code()}) while waiting for "
                    f"{description}; end of {process.log_path}:\n{process.log_tail()}"
                )
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}: {p.log_path}\n{p.log_tail(15)}" for p in watch)
            raise RigStartError(
                f"timed out after {timeout:.0f}s waiting for {description}\n{tails}"
            )
        time.sleep(interval)


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.status == 200
    except OSError:
        return False


def _listens(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


def ctr(socket_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`ctr` against one containerd, in the namespace the kubelet's CRI uses."""
    argv = ["ctr", "--address", str(socket_path), "-n", "k8s.io", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=300)


def wait_for_containerd(socket_path: Path, process: ManagedProcess, what: str) -> None:
    wait_until(
        f"{what} socket",
        lambda: ctr(socket_path, "version", check=False).returncode == 0,
        timeout=60,
        watch=[process],
    )


def import_images(socket_path: Path, images: Sequence[tuple[str, Path]], what: str) -> None:
    """Imports the image tars into containerd and checks every reference arrived."""
    for _reference, tar_path in images:
        ctr(socket_path, "images", "import", str(tar_path))
    present = ctr(socket_path, "images", "list", "-q").stdout.split()
    missing = [reference for reference, _ in images if reference not in present]
    if missing:
        raise RigStartError(f"images not present in {what} after import: {missing}")
    log(f"imported {len(images)} images into {what}")


class InfraCluster:
    """The running rig, as handed to tests."""

    def __init__(self, settings: RigSettings | None = None) -> None:
        self.settings = settings or RigSettings.from_env()
        self.pki = Pki(self.settings.pki_dir)
        self.processes: dict[str, ManagedProcess] = {}
        self.timings: dict[str, float] = {}
        self.owner = ""

    # What tests use.
    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir

    @property
    def node_ip(self) -> str:
        return self.settings.node_ip

    @property
    def node_name(self) -> str:
        return self.settings.node_name

    @property
    def dns_ip(self) -> str:
        return self.settings.dns_ip

    @property
    def admin_kubeconfig(self) -> Path:
        return self.settings.admin_kubeconfig

    @property
    def tenant_kubeconfig(self) -> Path:
        return self.settings.tenant_kubeconfig

    @property
    def namespace(self) -> str:
        return self.settings.tenant_namespace

    @property
    def kubectl_path(self) -> Path:
        return self.settings.kubectl

    @property
    def bin_dir(self) -> Path:
        return self.settings.bin_dir

    @property
    def ca_cert(self) -> Path:
        return self.pki.ca_cert

    def kubectl(
        self,
        *args: str,
        tenant: bool = False,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess:
        """Runs kubectl as the cluster admin, or as the tenant user with tenant=True."""
        kubeconfig = self.tenant_kubeconfig if tenant else self.admin_kubeconfig
        argv = [str(self.kubectl_path), f"--kubeconfig={kubeconfig}", *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, argv, output=result.stdout, stderr=result.stderr)
        return result

    def kubectl_json(self, *args: str, tenant: bool = False) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json", tenant=tenant).stdout)

    def wait_for_default_service_account(self, namespace: str) -> None:
        """Pods are admitted only once their namespace's default ServiceAccount exists."""
        wait_until(
            f"the default ServiceAccount in {namespace}",
            lambda: (
                self.kubectl(
                    "-n", namespace, "get", "serviceaccount", "default", check=False
                ).returncode
                == 0
            ),
            timeout=60,
        )

    def apply(self, manifest: dict, *, tenant: bool = False) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest), tenant=tenant)

    def admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.cert("admin")), str(self.pki.key("admin")))
        return context

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each rig process (pod containers not included)."""
        pids = {name: p.pid for name, p in self.processes.items() if p.pid is not None}
        if not pids and (state := RigState.load(self.settings.state_file)):
            pids = state.running_processes()
        sizes = {}
        for name, pid in pids.items():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    sizes[name] = int(line.split()[1]) * 1024
        return sizes

    # -- Start --------------------------------------------------------------------------------

    def attach(self) -> bool:
        """Uses a rig left running by `python -m tests.e2e.infra up`; False if there is none."""
        state = RigState.load(self.settings.state_file)
        if (
            state is None
            or state.owner != "cli"
            or "kube-apiserver" not in state.running_processes()
        ):
            return False
        for name, entry in state.processes.items():
            process = ManagedProcess(name, [entry["argv0"]], self.settings.logs_dir / f"{name}.log")
            process.pid = entry["pid"]
            self.processes[name] = process
        self.owner = "cli"
        return True

    def start(self, *, owner: str = "fixture") -> None:
        """owner="fixture": every process dies with this Python process; "cli": they outlive it."""
        s = self.settings
        problems = missing_prerequisites(s)
        if problems:
            raise host.RigEnvironmentError("cannot start the rig:\n  - " + "\n  - ".join(problems))
        self._refuse_if_in_use()
        self.owner = owner
        started = time.monotonic()
        log(f"starting the infra cluster in {s.state_dir} (netns {s.netns_name})")
        host.ensure_cgroup_mounts()
        self._clean_leftovers()
        for directory in (s.state_dir, s.run_dir):
            _wipe_rig_directory(directory)
        for directory in (s.logs_dir, s.cni_conf_dir, s.pod_logs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        os.chmod(s.state_dir, 0o711)
        host.setup_node_network(s)
        host.create_cgroup_root(s.cgroup_root)

        write_json(s.state_dir / "kernel-sysctls.json", _read_sysctls(KUBELET_KERNEL_SYSCTLS))
        create_pki(s)
        write_config_files(s, self.pki)
        commands = component_commands(s, self.pki)
        try:
            self._start_control_plane(commands)
            self._start_node(commands)
            self.timings["node_ready_seconds"] = time.monotonic() - started
            self._bootstrap_objects()
            self._verify_tenant_permissions()
        except BaseException:
            log("start failed; stopping what was started")
            self.stop(verify=False)
            raise
        self.timings["ready_seconds"] = time.monotonic() - started
        log(
            f"infra cluster ready in {self.timings['ready_seconds']:.1f}s "
            f"(node Ready after {self.timings['node_ready_seconds']:.1f}s)"
        )

    def _refuse_if_in_use(self) -> None:
        state = RigState.load(self.settings.state_file)
        if state is None:
            return
        running = state.running_processes()
        if running and (state.owner == "cli" or state.owner_is_alive()):
            raise host.RigEnvironmentError(
                f"a rig ({state.owner}, pid {state.owner_pid}) is already running: "
                f"{sorted(running)}; stop it with `hack/infra.sh down`"
            )

    def _launch(
        self, name: str, argv: list[str], env: Mapping[str, str] | None = None
    ) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.settings.logs_dir / f"{name}.log", env=env)
        process.start(die_with_parent=self.owner == "fixture")
        self.processes[name] = process
        self._save_state()
        log(f"started {name} (pid {process.pid})")
        return process

    def _save_state(self) -> None:
        RigState(
            owner=self.owner,
            owner_pid=os.getpid(),
            processes={
                name: {"pid": process.pid, "argv0": process.argv[0]}
                for name, process in self.processes.items()
            },
        ).save(self.settings.state_file)

    def _start_control_plane(self, commands: dict[str, list[str]]) -> None:
        etcd = self._launch("etcd", commands["etcd"])
        wait_until(
            "etcd /health",
            lambda: _http_ok(f"{http_url(LOOPBACK, ETCD_CLIENT_PORT)}/health"),
            timeout=60,
            watch=[etcd],
        )
        apiserver = self._launch("kube-apiserver", commands["kube-apiserver"])
        context = self.admin_ssl_context()
        wait_until(
            "kube-apiserver /readyz",
            lambda: _http_ok(f"{https_url(LOOPBACK, API_SERVER_PORT)}/readyz", context),
            timeout=120,
            watch=[etcd, apiserver],
        )
        log("kube-apiserver is ready")
        # kubeadm's binding: the apiserver's kubelet client (no group) may use the kubelet API.
        self.apply(objects.kubelet_api_admin_binding(APISERVER_KUBELET_CLIENT))
        self._launch("kube-controller-manager", commands["kube-controller-manager"])
        self._launch("kube-scheduler", commands["kube-scheduler"])

    def _start_node(self, commands: dict[str, list[str]]) -> None:
        s = self.settings
        containerd = self._launch("containerd", commands["containerd"])
        wait_for_containerd(s.containerd_socket, containerd, "the containerd")
        self._import_images()
        kubelet = self._launch("kubelet", commands["kubelet"])
        watch = [self.processes[name] for name in self.processes]
        pod_cidr: str = wait_until(
            f"node {s.node_name} to register and get a pod CIDR",
            lambda: ((self._node() or {}).get("spec") or {}).get("podCIDR"),
            timeout=120,
            watch=watch,
        )
        log(f"node {s.node_name} registered, pod CIDR {pod_cidr}")
        write_json(
            s.cni_conf_dir / "10-rig.conflist",
            configs.cni_conflist(
                name="rig",
                bridge=s.pod_bridge,
                pod_subnet=pod_cidr,
                ipam_data_dir=str(s.cni_ipam_dir),
            ),
        )
        self._launch("kube-proxy", commands["kube-proxy"])
        coredns = self._launch("coredns", commands["coredns"])
        watch = [self.processes[name] for name in self.processes]
        self._wait_node_ready(watch)
        wait_until(
            "CoreDNS /ready",
            lambda: _http_ok("http://127.0.0.1:8181/ready"),
            timeout=60,
            watch=[coredns],
        )
        self._start_network_policy_implementation([kubelet, containerd])
        self._start_ingress_controller(commands)
        assert kubelet.is_running()

    def _start_network_policy_implementation(self, watch: list[ManagedProcess]) -> None:
        """kube-router's firewall, deployed as its users do, enforcing before any tenant pod
        starts; ready once its pod is ready (healthz) and its chain hooks FORWARD."""
        from tests.e2e.images.build import KUBE_ROUTER

        started = time.monotonic()
        self.apply(
            objects.object_list(objects.network_policy_implementation(KUBE_ROUTER.reference))
        )

        def enforcing() -> bool:
            pods = self.kubectl_json(
                "-n", "kube-system", "get", "pods", "-l", f"k8s-app={objects.NETWORK_POLICY_NAME}"
            )["items"]
            ready = any(
                status.get("ready")
                for pod in pods
                for status in pod.get("status", {}).get("containerStatuses", [])
            )
            return ready and objects.NETWORK_POLICY_CHAIN in host.iptables_chains("filter")

        wait_until("kube-router to enforce", enforcing, timeout=120, watch=watch)
        self.timings["network_policies_seconds"] = time.monotonic() - started
        log(f"kube-router enforces NetworkPolicies (chain {objects.NETWORK_POLICY_CHAIN})")

    def _start_ingress_controller(self, commands: dict[str, list[str]]) -> None:
        s = self.settings
        traefik = self._launch(
            "traefik", commands["traefik"], traefik_environment(os.environ, s.admin_kubeconfig)
        )
        # /ping answers once the entrypoints are open; 443 is checked as well, being the point.
        wait_until(
            "Traefik /ping and its HTTPS entrypoint",
            lambda: (
                _http_ok(f"http://127.0.0.1:{s.ingress_ping_port}/ping")
                and _listens(s.ingress_ip, s.ingress_https_port)
            ),
            timeout=60,
            watch=[traefik],
        )
        log(f"Traefik serves ingress class {s.ingress_class} on {s.ingress_ip}")

    def _wait_node_ready(self, watch: list[ManagedProcess]) -> None:
        last_reason = None

        def ready() -> bool:
            nonlocal last_reason
            node = self._node()
            conditions = {
                c["type"]: c for c in (node or {}).get("status", {}).get("conditions", [])
            }
            condition = conditions.get("Ready", {})
            reason = f"{condition.get('status', '?')} {condition.get('message', '')}".strip()
            if reason != last_reason:
                log(f"node Ready={reason}")
                last_reason = reason
            return condition.get("status") == "True"

        wait_until(f"node {self.settings.node_name} Ready", ready, timeout=180, watch=watch)

    def _node(self) -> dict | None:
        result = self.kubectl("get", "node", self.settings.node_name, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def _import_images(self) -> None:
        # Imported here so the rig's other parts work without the images package.
        from tests.e2e.images.build import E2E_CLIENT, KUBE_ROUTER, build_all, build_image

        from .worker import kube_router_image_files

        s = self.settings
        images = build_all(s.bin_dir, s.images_dir)
        # Client pods that probe the host namespace's NetworkPolicies from inside the rig.
        images.append((E2E_CLIENT.reference, build_image(E2E_CLIENT, s.bin_dir, s.images_dir)))
        router = build_image(KUBE_ROUTER, s.bin_dir, s.images_dir, kube_router_image_files())
        images.append((KUBE_ROUTER.reference, router))
        import_images(s.containerd_socket, images, "containerd")

    def import_release_images(self, version: str) -> None:
        """Another release's control plane and etcd images (built from its binaries if needed),
        for a tenant at that release; the binaries come from hack/build-binaries.sh VERSION."""
        from tests.e2e.images.build import build_image, crane_path, release_images

        s = self.settings
        crane = crane_path(s.bin_dir)
        bin_dir, images_dir = s.release_bin_dir(version), s.release_images_dir(version)
        images = [
            (spec.reference, build_image(spec, bin_dir, images_dir, crane=crane))
            for spec in release_images(version)
        ]
        import_images(s.containerd_socket, images, f"containerd (release {version})")

    # -- Objects ------------------------------------------------------------------------------

    def _bootstrap_objects(self) -> None:
        s = self.settings
        volumes = []
        for index in range(1, s.persistent_volume_count + 1):
            path = s.persistent_volumes_dir / f"pv-{index:02d}"
            path.mkdir(parents=True, exist_ok=True)
            # hostPath ignores fsGroup: world-writable so any non-root UID can use it.
            os.chmod(path, 0o777)
            volumes.append(
                objects.host_path_volume(
                    name=f"rig-pv-{index:02d}",
                    path=path,
                    size=s.persistent_volume_size,
                    storage_class_name=s.storage_class,
                    node_name=s.node_name,
                )
            )
        self.apply(
            objects.object_list(
                [
                    objects.tenant_namespace(s.tenant_namespace),
                    objects.storage_class(s.storage_class),
                    *volumes,
                    objects.namespace_admin_binding(
                        namespace=s.tenant_namespace, user=s.tenant_user
                    ),
                    objects.ingress_class(name=s.ingress_class, controller=s.ingress_controller),
                ]
            )
        )
        self.wait_for_default_service_account(s.tenant_namespace)
        log(
            f"namespace {s.tenant_namespace} (restricted), StorageClass {s.storage_class}, "
            f"{len(volumes)} PVs, user {s.tenant_user} bound to admin, "
            f"IngressClass {s.ingress_class}"
        )

    def recycle_released_volumes(self) -> list[str]:
        """Makes Released rig volumes (their claim was deleted) Available again, emptied.

        Their reclaim policy is Retain, so without this a long-lived rig (hack/infra.sh up)
        runs out of volumes; returns the names of the recycled volumes.
        """
        volumes = self.kubectl_json("get", "pv", "-l", "k8s-on-k8s-rig/volume=host-path")
        recycled = []
        for volume in volumes["items"]:
            if volume.get("status", {}).get("phase") != "Released":
                continue
            path = Path(volume["spec"]["hostPath"]["path"])
            if path.is_relative_to(self.settings.persistent_volumes_dir):
                for entry in path.iterdir():
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
            name = volume["metadata"]["name"]
            self.kubectl(
                "patch",
                "pv",
                name,
                "--type=json",
                "-p",
                '[{"op":"remove","path":"/spec/claimRef"}]',
            )
            recycled.append(name)
        return recycled

    def can_i(self, *args: str, tenant: bool = True) -> bool:
        result = self.kubectl("auth", "can-i", *args, tenant=tenant, check=False)
        return result.stdout.strip() == "yes"

    def _verify_tenant_permissions(self) -> None:
        ns = self.settings.tenant_namespace
        expected = {
            ("create", "deployments.apps", "-n", ns): True,
            ("create", "secrets", "-n", ns): True,
            ("create", "namespaces"): False,
            ("create", "clusterroles.rbac.authorization.k8s.io"): False,
            ("create", "persistentvolumes"): False,
            ("create", "deployments.apps", "-n", "default"): False,
        }
        wrong = {
            args: allowed for args, allowed in expected.items() if self.can_i(*args) != allowed
        }
        if wrong:
            raise RigStartError(f"tenant user permissions differ from expected: {wrong}")
        log(f"verified {self.settings.tenant_user}'s permissions with kubectl auth can-i")

    # -- Stop ---------------------------------------------------------------------------------

    def stop(self, *, verify: bool = True) -> list[str]:
        """Stops everything and cleans up; with verify, raises if anything is left behind."""
        log("stopping the infra cluster")
        if host.in_netns(self.settings.netns_name):
            host.ensure_cgroup_mounts()  # a fresh `ip netns exec` hides them
        rss = self.rss_bytes()
        if rss:
            log(
                f"resident memory of the rig processes: {sum(rss.values()) / 2**20:.0f} MiB ("
                + ", ".join(f"{name} {size / 2**20:.0f}" for name, size in rss.items())
                + ")"
            )
        state = RigState.load(self.settings.state_file)
        pids = {name: (p.pid, p.argv[0], p.popen) for name, p in self.processes.items()}
        if state is not None:
            for name, entry in state.processes.items():
                pids.setdefault(name, (entry["pid"], entry["argv0"], None))
        self._stop_all(pids)
        self.processes.clear()
        leftovers = self.leftovers()
        if verify and leftovers:
            raise RigTeardownError("the rig left things behind:\n  - " + "\n  - ".join(leftovers))
        log("infra cluster stopped" + (f"; left behind: {leftovers}" if leftovers else ", clean"))
        return leftovers

    def _stop_all(self, pids: dict[str, tuple[int | None, str, subprocess.Popen | None]]) -> None:
        s = self.settings

        def stop(name: str) -> None:
            pid, argv0, popen = pids.get(name, (None, "", None))
            if pid is not None:
                stop_pid(pid, popen=popen, expected_exe=argv0, timeout=10)

        # The kubelet first so it does not restart the containers we kill next.
        stop("kubelet")
        host.kill_cgroup_processes(s.cgroup_root)
        for shim in host.processes_with_argument(str(s.containerd_socket)):
            stop_pid(shim, timeout=2)
        stop("containerd")
        for name in (
            "traefik",
            "kube-proxy",
            "coredns",
            "kube-scheduler",
            "kube-controller-manager",
        ):
            stop(name)
        stop("kube-apiserver")
        stop("etcd")
        for name in pids:  # anything not named above
            stop(name)
        if host.in_netns(s.netns_name):
            host.teardown_node_network(s)
        host.unmount_under([s.state_dir, s.run_dir])
        time.sleep(0.2)  # let killed container processes leave their cgroups
        host.kill_cgroup_processes(s.cgroup_root)
        host.remove_cgroup_root(s.cgroup_root)
        self._restore_kernel_sysctls()
        s.state_file.unlink(missing_ok=True)
        if not host.mounts_under([s.run_dir]):
            shutil.rmtree(s.run_dir, ignore_errors=True)  # sockets and runtime state only

    def _restore_kernel_sysctls(self) -> None:
        saved = self.settings.state_dir / "kernel-sysctls.json"
        try:
            values = json.loads(saved.read_text())
        except FileNotFoundError:
            return
        for name, value in values.items():
            try:
                Path("/proc/sys", *name.split(".")).write_text(value)
            except OSError as error:
                log(f"could not restore {name}={value}: {error}")

    def _clean_leftovers(self) -> None:
        """Cleans up after a rig that died without teardown (e.g. a killed test run)."""
        state = RigState.load(self.settings.state_file)
        has_mounts = bool(host.mounts_under([self.settings.state_dir, self.settings.run_dir]))
        if state is None and not has_mounts and not host.cgroup_pids(self.settings.cgroup_root):
            return
        log("cleaning up leftovers of a previous rig")
        self.stop(verify=False)

    def leftovers(self) -> list[str]:
        """What of the rig still exists: processes (by pgrep), mounts, interfaces, cgroups."""
        s = self.settings
        found = []
        patterns = [f"^{s.binary(name)}( |$)" for name in RIG_BINARIES]
        patterns += [
            f"containerd --config {s.config_dir / 'containerd.toml'}",
            f"-address {s.containerd_socket}",
        ]
        for pattern in patterns:
            # The rig runs in its own network namespace: what runs a cached binary elsewhere
            # (a worker, another rig, a user's kubectl) is not the rig's.
            pids = host.pgrep(pattern, same_netns=host.in_netns(s.netns_name))
            if pids:
                found.append(f"processes matching {pattern!r}: {pids}")
        mounts = host.mounts_under([s.state_dir, s.run_dir])
        if mounts:
            found.append(f"mounts: {mounts}")
        if host.in_netns(s.netns_name):
            links = host.remaining_links(s)
            if links:
                found.append(f"interfaces: {links}")
            sets = host.ipsets()
            if sets:
                found.append(f"ipsets: {sets}")
        cgroup_pids = host.cgroup_pids(s.cgroup_root)
        if cgroup_pids:
            found.append(f"processes in cgroup {s.cgroup_root}: {sorted(cgroup_pids)}")
        return found

    def status(self) -> dict:
        state = RigState.load(self.settings.state_file)
        running = state.running_processes() if state else {}
        node = self._node() if "kube-apiserver" in running else None
        ready = None
        if node:
            conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            ready = conditions.get("Ready")
        return {
            "owner": state.owner if state else None,
            "owner_pid": state.owner_pid if state else None,
            "processes": {
                name: {"pid": entry["pid"], "running": name in running}
                for name, entry in (state.processes.items() if state else [])
            },
            "node_ready": ready,
            "admin_kubeconfig": str(self.admin_kubeconfig),
            "tenant_kubeconfig": str(self.tenant_kubeconfig),
        }


RIG_DIRECTORY_MARKER = ".k8s-on-k8s-rig"


def _wipe_rig_directory(directory: Path) -> None:
    """Empties a directory for a fresh rig, refusing any that the rig did not create."""
    if directory.exists() and any(directory.iterdir()):
        if not (directory / RIG_DIRECTORY_MARKER).exists():
            raise host.RigEnvironmentError(
                f"{directory} is not empty and was not made by the rig; refusing to wipe it"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RIG_DIRECTORY_MARKER).touch()


def _read_sysctls(names: Sequence[str]) -> dict[str, str]:
    return {name: Path("/proc/sys", *name.split(".")).read_text().strip() for name in names}
