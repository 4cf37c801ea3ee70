"""Sleep and wake: `suspended` scales every control-plane workload to zero and keeps the rest."""

from __future__ import annotations

from typing import Any

import pytest

from components.common.podspec import WAIT_FOR_ANNOTATION
from components.config import ConfigError, parse_settings
from tests.harness import MockState, ProgramRun, run_program

CONFIG = {
    "clusterName": "green",
    "namespace": "tenant-green",
    "apiHost": "api.green.example.com",
    "etcdReplicas": "3",
    "apiServerReplicas": "2",
    "controllerManagerReplicas": "2",
    "schedulerReplicas": "2",
}
WORKLOADS = {
    "green-etcd-statefulset": 3,
    "green-apiserver-deployment": 2,
    "green-controller-manager-deployment": 2,
    "green-scheduler-deployment": 2,
}
WORKLOAD_TYPES = ("kubernetes:apps/v1:StatefulSet", "kubernetes:apps/v1:Deployment")


def replicas(run: ProgramRun) -> dict[str, int]:
    """The host namespace's workloads (CoreDNS, inside the tenant, is not one of them)."""
    return {
        r.name: r.inputs["spec"]["replicas"]
        for r in run.resources
        if r.type in WORKLOAD_TYPES and r.inputs["metadata"].get("namespace") == "tenant-green"
    }


def everything_but_replicas(run: ProgramRun) -> dict[str, Any]:
    """Every resource's inputs, with the workloads' replica counts (and the rollout wait that
    follows them) left out."""
    kept: dict[str, Any] = {}
    for r in run.resources:
        inputs = dict(r.inputs)
        if r.name in WORKLOADS:
            inputs["spec"] = {k: v for k, v in inputs["spec"].items() if k != "replicas"}
            annotations = dict(inputs["metadata"].get("annotations", {}))
            annotations.pop(WAIT_FOR_ANNOTATION)
            inputs["metadata"] = {**inputs["metadata"], "annotations": annotations}
        kept[f"{r.type}/{r.name}"] = inputs
    return kept


def test_suspended_scales_every_control_plane_workload_to_zero_and_changes_nothing_else() -> None:
    state = MockState()
    awake = run_program(CONFIG, state=state)
    assert replicas(awake) == WORKLOADS
    asleep = run_program({**CONFIG, "suspended": "true"}, state=state)
    assert replicas(asleep) == dict.fromkeys(WORKLOADS, 0)
    # The same objects, the same certificates, keys, tokens and tenant-side objects: a wake
    # finds everything as it was, and nothing inside the (unreachable) tenant is written.
    assert everything_but_replicas(asleep) == everything_but_replicas(awake)
    assert asleep.outputs["fixedSettings"]["suspended"] == "true"
    # The disruption budgets keep the awake figures, so a wake is never blocked by them.
    budgets = {
        r.name: r.inputs["spec"] for r in asleep.of_type("kubernetes:policy/v1:PodDisruptionBudget")
    }
    assert budgets == {
        r.name: r.inputs["spec"] for r in awake.of_type("kubernetes:policy/v1:PodDisruptionBudget")
    }
    woken = run_program({**CONFIG, "suspended": "false"}, state=state)
    assert replicas(woken) == WORKLOADS
    assert everything_but_replicas(woken) == everything_but_replicas(awake)


@pytest.mark.parametrize("value", ["yes", "1", "on", ""])
def test_suspended_takes_only_true_or_false(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings({**CONFIG, "suspended": value})
    assert f"k8s-on-k8s:suspended = {value!r} is invalid; allowed: true or false" in str(
        raised.value
    )


def test_running_replicas() -> None:
    assert parse_settings(CONFIG).running(3) == 3
    assert parse_settings({**CONFIG, "suspended": "TRUE"}).running(3) == 0
