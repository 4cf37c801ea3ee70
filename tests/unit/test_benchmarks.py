"""The benchmarks' arithmetic: figures beside the reference measured in the same run."""

from __future__ import annotations

from benchmarks.evaluate import per_plane
from benchmarks.tenant_memory import MIB, pod_working_sets, report

SUMMARY = {
    "node": {"memory": {"workingSetBytes": 2048 * MIB}},
    "pods": [
        {
            "podRef": {"name": "e2e-etcd-0", "namespace": "tenant-e2e"},
            "memory": {"workingSetBytes": 40 * MIB},
        },
        {
            "podRef": {"name": "e2e-apiserver-a", "namespace": "tenant-e2e"},
            "memory": {"workingSetBytes": 300 * MIB},
        },
        {"podRef": {"name": "e2e-scheduler-a", "namespace": "tenant-e2e"}},
        {
            "podRef": {"name": "coredns", "namespace": "kube-system"},
            "memory": {"workingSetBytes": 20 * MIB},
        },
    ],
}


def test_only_the_tenant_namespace_counts_and_a_pod_without_figures_is_zero() -> None:
    assert pod_working_sets(SUMMARY, "tenant-e2e") == {
        "e2e-etcd-0": 40 * MIB,
        "e2e-apiserver-a": 300 * MIB,
        "e2e-scheduler-a": 0,
    }


def test_the_report_puts_the_tenant_beside_the_node_and_the_rigs_own_binaries() -> None:
    rows = dict(report(SUMMARY, "tenant-e2e", {"kube-apiserver": 250 * MIB, "kubelet": MIB}))
    assert rows == {
        "tenant pod e2e-apiserver-a": 300,
        "tenant pod e2e-etcd-0": 40,
        "tenant pod e2e-scheduler-a": 0,
        "tenant pods total (3 pods)": 340,
        "reference: the node's working set": 2048,
        "reference: the rig's kube-apiserver (RSS)": 250,
    }


def test_per_plane_figures_are_what_each_plane_adds_to_the_reference() -> None:
    reference = {"control_planes": 0, "resources": 1, "seconds": 0.5, "peak_rss_mib": 80.0}
    row = {"control_planes": 10, "resources": 1161, "seconds": 5.5, "peak_rss_mib": 180.0}
    assert per_plane(row, reference) == {"seconds": 0.5, "peak_rss_mib": 10.0}
