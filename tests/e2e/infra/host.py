"""The node's side of the rig network namespace: interfaces, routes, sysctls, cgroups, mounts.

Everything here acts on the namespace the caller runs in; check_isolated() refuses to run
anywhere but inside the rig's own network namespace with no default route.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .processes import log
from .settings import RigSettings

CGROUP_MOUNT_ROOT = Path("/sys/fs/cgroup")


class RigEnvironmentError(RuntimeError):
    """A prerequisite of the rig is missing or the environment is unsafe."""


def run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


# -- Network namespace -------------------------------------------------------------------------


def _ns_identity(path: str | Path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


def in_netns(name: str) -> bool:
    """True if this process's network namespace is /run/netns/NAME."""
    try:
        return _ns_identity("/proc/self/ns/net") == _ns_identity(Path("/run/netns") / name)
    except FileNotFoundError:
        return False


def default_routes() -> list[str]:
    routes = []
    for family in ("-4", "-6"):
        output = run(["ip", family, "route", "show", "default"], check=False).stdout.strip()
        routes += [line for line in output.splitlines() if line]
    return routes


def check_isolated(settings: RigSettings) -> None:
    """The hard rule: the rig runs only in its own netns, from which no packet can leave."""
    if not in_netns(settings.netns_name):
        raise RigEnvironmentError(
            f"not inside the rig network namespace {settings.netns_name!r}: "
            f"run through hack/e2e.sh (or `ip netns exec {settings.netns_name} ...`)"
        )
    try:
        if _ns_identity("/proc/self/ns/net") == _ns_identity("/proc/1/ns/net"):
            raise RigEnvironmentError("the rig network namespace is the host's: refusing")
    except PermissionError:
        pass  # PID 1's namespaces may be hidden (e.g. on a microVM); the route check remains
    routes = default_routes()
    if routes:
        raise RigEnvironmentError(f"the rig network namespace has a default route: {routes}")


def _write_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value)


def setup_node_network(settings: RigSettings) -> None:
    """lo up; the node IP on a port-less bridge; a route that lets host-local traffic to
    Service IPs leave the routing decision so kube-proxy's OUTPUT DNAT can apply."""
    run(["ip", "link", "set", "lo", "up"])
    if run(["ip", "link", "show", settings.node_bridge], check=False).returncode != 0:
        # A bridge because this kernel has no dummy interfaces; with no ports it stays up.
        run(["ip", "link", "add", settings.node_bridge, "type", "bridge"])
    node_cidr = f"{settings.node_ip}/{settings.node_prefix_length}"
    addresses = run(["ip", "-4", "-o", "addr", "show", "dev", settings.node_bridge]).stdout
    if node_cidr not in addresses:
        run(["ip", "addr", "add", node_cidr, "dev", settings.node_bridge])
    run(["ip", "link", "set", settings.node_bridge, "up"])
    run(["ip", "route", "replace", settings.service_cidr, "dev", settings.node_bridge])
    # Namespace-local sysctls: forwarding between pods via Service DNAT, and bridged pod
    # traffic through iptables so replies of pod -> Service -> pod on one bridge get un-DNATed.
    _write_sysctl("net.ipv4.ip_forward", "1")
    _write_sysctl("net.bridge.bridge-nf-call-iptables", "1")
    check_isolated(settings)


def teardown_node_network(settings: RigSettings) -> None:
    """Removes the CNI bridge, leftover veths, the node bridge and every iptables rule.

    Flushing all rules is safe because check_isolated() proved this namespace is the rig's own.
    """
    for link in _links():
        if link.startswith("veth") or link in (settings.pod_bridge, settings.node_bridge):
            run(["ip", "link", "delete", link], check=False)
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle", "raw"):
            run([tool, "-t", table, "-F"], check=False)
            run([tool, "-t", table, "-X"], check=False)
    # The NetworkPolicy implementation, killed with its pod, leaves its sets behind (once no
    # rule refers to them they can go).
    run(["ipset", "destroy"], check=False)


def iptables_chains(table: str) -> set[str]:
    """The chains of an iptables table in this namespace."""
    listing = run(["iptables", "-t", table, "-S"], check=False).stdout.splitlines()
    return {line.split()[1] for line in listing if line.startswith(("-N ", "-P "))}


def ipsets() -> list[str]:
    """The names of the ipsets of this namespace."""
    return run(["ipset", "list", "-n"], check=False).stdout.split()


def _links() -> list[str]:
    output = run(["ip", "-o", "link", "show"], check=False).stdout
    # "3: veth1234@if2: <...>" -> "veth1234"
    return [line.split(":")[1].strip().split("@")[0] for line in output.splitlines()]


def remaining_links(settings: RigSettings) -> list[str]:
    return [
        link
        for link in _links()
        if link.startswith("veth") or link in (settings.pod_bridge, settings.node_bridge)
    ]


# -- Cgroups -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CgroupMount:
    mount_point: Path
    filesystem: str  # "cgroup" or "cgroup2"
    options: str


def cgroup_mounts(mounts_file: str = "/proc/self/mounts") -> list[CgroupMount]:
    mounts = []
    for line in Path(mounts_file).read_text().splitlines():
        _, mount_point, filesystem, options, *_ = line.split()
        if filesystem in ("cgroup", "cgroup2") and mount_point.startswith(str(CGROUP_MOUNT_ROOT)):
            mounts.append(CgroupMount(Path(mount_point), filesystem, options))
    return mounts


def _cgroup_options(options: str) -> str:
    """Keeps the controller / name= options of a mount, drops rw/relatime and the like."""
    generic = {"rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "seclabel"}
    return ",".join(option for option in options.split(",") if option not in generic)


def ensure_cgroup_mounts() -> None:
    """`ip netns exec` remounts /sys for the namespace, which hides the host's cgroup mounts.

    Mirrors PID 1's cgroup mounts into our mount namespace (a private one: the host's has
    cgroup mounts); mounting a v1 hierarchy with the same options attaches to the same
    hierarchy, so nothing new is created.
    """
    if cgroup_mounts():
        return
    host_mounts = cgroup_mounts("/proc/1/mounts")
    if not host_mounts:
        raise RigEnvironmentError("the host has no cgroup mounts under /sys/fs/cgroup")
    run(["mount", "-t", "tmpfs", "-o", "mode=755", "cgroup-root", str(CGROUP_MOUNT_ROOT)])
    for mount in host_mounts:
        mount.mount_point.mkdir(parents=True, exist_ok=True)
        argv = ["mount", "-t", mount.filesystem]
        options = _cgroup_options(mount.options)
        if options:
            argv += ["-o", options]
        run([*argv, mount.filesystem, str(mount.mount_point)])
    log(f"mirrored {len(host_mounts)} host cgroup mounts into this mount namespace")


def _hierarchies() -> list[Path]:
    return [mount.mount_point for mount in cgroup_mounts()]


def create_cgroup_root(cgroup_root: str) -> None:
    """The kubelet requires its cgroupRoot to exist in every hierarchy."""
    relative = cgroup_root.strip("/")
    for hierarchy in _hierarchies():
        path = hierarchy / relative
        path.mkdir(exist_ok=True)
        # A new v1 cpuset starts empty and would refuse tasks: inherit the parent's sets.
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (path / name).exists() and not (path / name).read_text().strip():
                (path / name).write_text((hierarchy / name).read_text())


def cgroup_pids(cgroup_root: str) -> set[int]:
    pids: set[int] = set()
    for hierarchy in _hierarchies():
        top = hierarchy / cgroup_root.strip("/")
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(pid) for pid in procs.read_text().split())
    return pids


def kill_cgroup_processes(cgroup_root: str) -> int:
    """SIGKILLs every process in the rig's cgroups (all pod containers); returns how many."""
    pids = cgroup_pids(cgroup_root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def remove_cgroup_root(cgroup_root: str) -> list[Path]:
    """rmdir's the rig's cgroup trees, deepest first; returns what could not be removed."""
    left: list[Path] = []
    for hierarchy in _hierarchies():
        top = hierarchy / cgroup_root.strip("/")
        if not top.is_dir():
            continue
        directories = sorted(
            (path for path in top.rglob("*") if path.is_dir()),
            key=lambda path: len(path.parts),
            reverse=True,
        )
        for directory in [*directories, top]:
            try:
                directory.rmdir()
            except OSError:
                left.append(directory)
    return left


# -- Mounts ------------------------------------------------------------------------------------


def _unescape_mount_path(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")


def mounts_under(prefixes: Iterable[Path]) -> list[str]:
    """Mount points (of this mount namespace) at or below any prefix, deepest first."""
    roots = [str(prefix).rstrip("/") for prefix in prefixes]
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = _unescape_mount_path(line.split()[4])
        if any(mount_point == root or mount_point.startswith(root + "/") for root in roots):
            found.append(mount_point)
    return sorted(set(found), key=lambda path: path.count("/"), reverse=True)


def unmount_under(prefixes: Iterable[Path]) -> list[str]:
    """Lazily unmounts everything below the prefixes; returns what is still mounted."""
    prefixes = list(prefixes)
    for mount_point in mounts_under(prefixes):
        run(["umount", "-l", mount_point], check=False)
    return mounts_under(prefixes)


# -- Processes that are not our children ------------------------------------------------------


def processes_with_argument(argument: str) -> list[int]:
    """Pids whose command line has `argument` as one of its words (e.g. a socket path)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argument.encode() in words:
            pids.append(int(entry.name))
    return pids


def pgrep(pattern: str, *, same_netns: bool = False) -> list[int]:
    """`pgrep -f PATTERN` (full command line); used to prove nothing of the rig is left.

    same_netns: only processes in this process's network namespace (the rig's own, when run
    through hack/e2e.sh), so a process of another rig, a worker or a user is not the rig's."""
    scope = ["--ns", str(os.getpid()), "--nslist", "net"] if same_netns else []
    output = run(["pgrep", "-f", *scope, "--", pattern], check=False).stdout
    return [int(pid) for pid in output.split()]
