"""How the e2e suite runs `kubeadm join`: the program's `joinCommand` plus what only the host
knows, in a private mount namespace (used by test_worker_join_kubeadm.py)."""

from __future__ import annotations

import shlex
from pathlib import Path

# kubeadm's fixed directories on a node, bound to the test's own in kubeadm's mount namespace.
KUBEADM_DIRS = (Path("/etc/kubernetes"), Path("/var/lib/kubelet"))


def kubeadm_join_argv(
    join_command: str, kubeadm: Path, node_name: str, cri_socket: Path
) -> list[str]:
    """The `joinCommand` output as given, plus what only this host knows (its name and
    container runtime); preflight checks that assume a systemd host are reported, not fatal."""
    words = shlex.split(join_command)
    if words[:2] != ["kubeadm", "join"]:
        raise ValueError(f"not a kubeadm join command: {join_command!r}")
    return [
        str(kubeadm),
        *words[1:],
        f"--node-name={node_name}",
        f"--cri-socket=unix://{cri_socket}",
        "--ignore-preflight-errors=all",
        "--skip-phases=kubelet-wait-bootstrap",
        "--v=1",
    ]


def in_private_mounts(argv: list[str], binds: dict[Path, Path]) -> list[str]:
    """`argv` in a new mount namespace where each key directory shows the value directory."""
    mounts = " && ".join(
        f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(target))}"
        for target, source in binds.items()
    )
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'{mounts} && exec "$@"',
        "kubeadm-join",
        *argv,
    ]
