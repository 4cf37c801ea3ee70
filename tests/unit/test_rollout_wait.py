"""`pulumi up` waits for each host workload's rollout itself (`pulumi.com/waitFor`), not for
pulumi-kubernetes 4.25.0's await, which can read the status of the previous spec and end at once.
"""

from __future__ import annotations

import json

import pytest

from components.common.podspec import WAIT_FOR_ANNOTATION, rollout_wait_for, with_rollout_wait
from tests.harness import MockState, run_program

CONFIG = {
    "clusterName": "green",
    "namespace": "tenant-green",
    "apiHost": "api.green.example.com",
    "etcdReplicas": "3",
    "apiServerReplicas": "2",
    "controllerManagerReplicas": "3",
    "schedulerReplicas": "1",
}
WORKLOADS = {
    ("kubernetes:apps/v1:StatefulSet", "green-etcd-statefulset"): 3,
    ("kubernetes:apps/v1:Deployment", "green-apiserver-deployment"): 2,
    ("kubernetes:apps/v1:Deployment", "green-controller-manager-deployment"): 3,
    ("kubernetes:apps/v1:Deployment", "green-scheduler-deployment"): 1,
}


def test_a_rollout_is_done_when_every_pod_is_of_the_new_spec_ready_and_available() -> None:
    conditions = json.loads(rollout_wait_for(3)[WAIT_FOR_ANNOTATION])
    assert conditions == [
        "jsonpath={.status.replicas}=3",
        "jsonpath={.status.updatedReplicas}=3",
        "jsonpath={.status.readyReplicas}=3",
        "jsonpath={.status.availableReplicas}=3",
    ]


def test_a_scale_to_zero_waits_only_for_the_controller_to_see_it() -> None:
    # The status counts are left out at zero: a condition on them would never match.
    assert json.loads(rollout_wait_for(0)[WAIT_FOR_ANNOTATION]) == ["jsonpath={.spec.replicas}=0"]


def test_the_annotation_joins_the_others() -> None:
    metadata = {"name": "x", "annotations": {"a": "b"}}
    assert with_rollout_wait(metadata, 2)["annotations"] == {"a": "b", **rollout_wait_for(2)}
    assert metadata == {"name": "x", "annotations": {"a": "b"}}


@pytest.mark.parametrize("suspended", ["false", "true"])
def test_every_host_workload_waits_for_its_own_rollout(suspended: str) -> None:
    state = MockState()
    run_program(CONFIG, state=state)  # a cluster is suspended only once it exists
    run = run_program({**CONFIG, "suspended": suspended}, state=state)
    for (kind, name), replicas in WORKLOADS.items():
        (workload,) = [r for r in run.resources if r.type == kind and r.name == name]
        expected = replicas if suspended == "false" else 0
        assert workload.inputs["spec"]["replicas"] == expected
        annotations = workload.inputs["metadata"]["annotations"]
        assert annotations[WAIT_FOR_ANNOTATION] == rollout_wait_for(expected)[WAIT_FOR_ANNOTATION]


def test_workloads_inside_the_tenant_keep_skipping_the_await() -> None:
    """Nodes join after `pulumi up`: waiting there would never end."""
    run = run_program(CONFIG)
    inside = [
        r
        for r in run.resources
        if r.type in ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:DaemonSet")
        and r.inputs["metadata"].get("namespace") == "kube-system"
    ]
    assert inside
    for workload in inside:
        annotations = workload.inputs["metadata"].get("annotations", {})
        assert WAIT_FOR_ANNOTATION not in annotations, workload.name
