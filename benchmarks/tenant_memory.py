"""Benchmark: memory of a tenant control plane on the local rig, beside a reference.

The figure the e2e suite used to print from a test that asserted nothing. Run it against a rig
and a tenant that `make up` left running, inside the rig's network namespace:

    make bench-memory        # hack/e2e.sh .venv/bin/python -m benchmarks.tenant_memory

It reads the working set of every pod in the tenant namespace from the rig kubelet's
stats/summary and prints it beside references measured in the same run: the node's whole
working set (the same kubelet, the same moment) and the resident memory of the rig's own
kube-apiserver and etcd, the same binaries serving the infrastructure cluster.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

MIB = 2**20
# The rig processes that run the same binaries as the tenant's pods.
REFERENCE_PROCESSES = ("kube-apiserver", "etcd")


def pod_working_sets(summary: dict[str, Any], namespace: str) -> dict[str, int]:
    """Working set (bytes) of each pod of `namespace` in a kubelet stats/summary; a pod the
    kubelet has no figure for yet counts 0."""
    return {
        pod["podRef"]["name"]: int(pod.get("memory", {}).get("workingSetBytes", 0))
        for pod in summary.get("pods", [])
        if pod["podRef"]["namespace"] == namespace
    }


def report(
    summary: dict[str, Any], namespace: str, rig_rss: dict[str, int]
) -> list[tuple[str, float]]:
    """(label, MiB) rows: each tenant pod, their total, then the references."""
    pods = pod_working_sets(summary, namespace)
    rows = [(f"tenant pod {name}", value / MIB) for name, value in sorted(pods.items())]
    rows.append((f"tenant pods total ({len(pods)} pods)", sum(pods.values()) / MIB))
    node = summary.get("node", {}).get("memory", {}).get("workingSetBytes")
    if node is not None:
        rows.append(("reference: the node's working set", int(node) / MIB))
    for name in REFERENCE_PROCESSES:
        if name in rig_rss:
            rows.append((f"reference: the rig's {name} (RSS)", rig_rss[name] / MIB))
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tenant_memory")
    parser.add_argument("--namespace", help="tenant namespace (default: the rig's)")
    parser.add_argument("--pods", type=int, default=0, help="wait until this many have figures")
    parser.add_argument("--timeout", type=float, default=90)
    args = parser.parse_args(argv)

    from tests.e2e.infra import InfraCluster, RigSettings

    settings = RigSettings.from_env()
    cluster = InfraCluster(settings)
    if not cluster.attach():
        print("no rig is running: start one with `make up`", file=sys.stderr)
        return 1
    namespace = args.namespace or settings.tenant_namespace
    deadline = time.monotonic() + args.timeout
    while True:
        summary = json.loads(
            cluster.kubectl(
                "get", "--raw", f"/api/v1/nodes/{cluster.node_name}/proxy/stats/summary"
            ).stdout
        )
        pods = pod_working_sets(summary, namespace)
        # The kubelet reports a new pod's memory only after its first stats pass.
        if len(pods) >= max(args.pods, 1) and all(pods.values()):
            break
        if time.monotonic() > deadline:
            print(f"figures of {namespace}'s pods not complete: {pods}", file=sys.stderr)
            return 1
        time.sleep(5)
    for label, mib in report(summary, namespace, cluster.rss_bytes()):
        print(f"{label:<60} {mib:>8.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
