"""What the real engine and pulumi-kubernetes will do with the program's objects.

pulumi-kubernetes replaces a provider (and everything it manages) whose kubeconfig changes or is
unknown unless it has a `clusterIdentifier`; it replaces a Secret or ConfigMap whose data changes
(deleting first, since the names are fixed) unless the provider makes them mutable; and a pod
only picks up a new file when its workload rolls. These tests pin the program's answers.
"""

from __future__ import annotations

from typing import Any

import pytest
from pulumi.output import Unknown

from components.host.workload import (
    FILES_CHECKSUM_ANNOTATION,
    files_checksum,
    with_files_checksum,
)
from tests.harness import MockState, ProgramRun, run_program

CONFIG = {"clusterName": "green", "namespace": "tenant-green", "apiHost": "api.green.example.com"}
PROVIDER = "pulumi:providers:kubernetes"
WORKLOADS = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")


@pytest.fixture(scope="module")
def run() -> ProgramRun:
    return run_program(CONFIG)


def providers(run: ProgramRun) -> dict[str, dict[str, object]]:
    return {r.name: r.inputs for r in run.of_type(PROVIDER)}


def checksums(run: ProgramRun) -> dict[str, str]:
    return {
        r.name: r.inputs["spec"]["template"]["metadata"]["annotations"][FILES_CHECKSUM_ANNOTATION]
        for r in run.objects_through("infra")
        if r.type in WORKLOADS
    }


def test_the_tenant_provider_is_identified_by_its_place_not_its_address(run: ProgramRun) -> None:
    tenant = providers(run)["green-tenant"]
    assert tenant["clusterIdentifier"] == "k8s-on-k8s/tenant-green/green"
    assert tenant["deleteUnreachable"] == "true"


def test_both_providers_update_secrets_and_config_maps_in_place(run: ProgramRun) -> None:
    for name, inputs in providers(run).items():
        assert inputs["enableSecretMutable"] == "true", name
        assert inputs["enableConfigMapMutable"] == "true", name


@pytest.mark.parametrize(
    "change",
    [
        {"apiHost": "api.blue.example.com"},
        {"exposure": "nodePort", "apiHost": "192.0.2.9"},
        {"apiServerReplicas": "3"},
    ],
)
def test_the_tenant_provider_identity_survives_ordinary_changes(change: dict[str, str]) -> None:
    before = providers(run_program(CONFIG))["green-tenant"]
    after = providers(run_program({**CONFIG, **change}))["green-tenant"]
    assert after["clusterIdentifier"] == before["clusterIdentifier"]


def test_every_control_plane_workload_carries_the_checksum_of_its_files(run: ProgramRun) -> None:
    assert set(checksums(run)) == {
        "green-etcd-statefulset",
        "green-apiserver-deployment",
        "green-controller-manager-deployment",
        "green-scheduler-deployment",
    }
    assert all(len(value) == 64 for value in checksums(run).values())


def test_a_checksum_is_a_plain_value_so_diffs_stay_readable(run: ProgramRun) -> None:
    for resource in run.objects_through("infra"):
        if resource.type in WORKLOADS:
            assert not any("annotations" in path for path in resource.secret_paths), resource.name


def test_a_new_api_host_rolls_the_apiservers_only() -> None:
    """The serving certificate names the host: only the apiservers mount it."""
    state = MockState()
    before = checksums(run_program(CONFIG, state=state))
    after = checksums(run_program({**CONFIG, "apiHost": "api.blue.example.com"}, state=state))
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"green-apiserver-deployment"}


def test_an_unchanged_config_rolls_nothing() -> None:
    state = MockState()
    assert checksums(run_program(CONFIG, state=state)) == checksums(
        run_program(CONFIG, state=state)
    )


def test_files_checksum_covers_names_and_contents_in_any_order() -> None:
    base = files_checksum({"a.crt": "A", "b.key": "B"})
    assert files_checksum({"b.key": "B", "a.crt": "A"}) == base
    assert files_checksum({"a.crt": "A", "b.key": "C"}) != base
    assert files_checksum({"a.crt": "A", "c.key": "B"}) != base


def test_with_files_checksum_keeps_the_template_and_its_annotations() -> None:
    spec: dict[str, Any] = {
        "replicas": 2,
        "template": {"metadata": {"labels": {"a": "b"}, "annotations": {"x": "y"}}, "spec": {}},
    }
    annotated = with_files_checksum(spec, "0" * 64)
    assert annotated["template"]["metadata"] == {
        "labels": {"a": "b"},
        "annotations": {"x": "y", FILES_CHECKSUM_ANNOTATION: "0" * 64},
    }
    assert "annotations" in spec["template"]["metadata"]
    assert FILES_CHECKSUM_ANNOTATION not in spec["template"]["metadata"]["annotations"]


# -- previews: what `pulumi preview` sees, with the values providers compute still unknown ------


def test_a_first_preview_has_unknown_keys_but_a_known_tenant_identity() -> None:
    """The kubeconfig of the tenant provider is unknown before the keys exist; its identity is
    known, so pulumi-kubernetes plans no provider replacement on that account."""
    run = run_program(CONFIG, preview=True)
    tenant = providers(run)["green-tenant"]
    assert tenant["clusterIdentifier"] == "k8s-on-k8s/tenant-green/green"
    assert isinstance(tenant["kubeconfig"], Unknown)
    assert run.outputs["kubeconfig"] is None  # unknown until the keys exist
    assert run.outputs["endpoint"] == "https://api.green.example.com"


@pytest.mark.parametrize(
    "change",
    [
        {"apiServerReplicas": "3", "controllerManagerReplicas": "1"},
        {"apiServerCpuRequest": "2", "etcdMemoryRequest": "2Gi"},
        {"kubernetesVersion": "v1.37.9"},
        {"exposure": "nodePort", "apiHost": "192.0.2.9"},
        {"apiHost": "api.blue.example.com"},
        {"certificateRenewalHours": "8760"},
        {"suspended": "true"},
    ],
)
def test_a_preview_of_an_ordinary_change_keeps_cas_keys_etcd_and_the_tenant_provider(
    change: dict[str, str],
) -> None:
    """After an `up`, a preview of the change declares the durable resources with the same
    inputs (so the engine plans no replacement) and the tenant provider with the same identity."""
    state = MockState()
    deployed = run_program(CONFIG, state=state)
    previewed = run_program({**CONFIG, **change}, state=state, preview=True)
    assert durable(previewed) == durable(deployed)
    before, after = providers(deployed)["green-tenant"], providers(previewed)["green-tenant"]
    assert after["clusterIdentifier"] == before["clusterIdentifier"]


def durable(run: ProgramRun) -> dict[str, object]:
    kept: dict[str, object] = {}
    for resource in run.resources:
        is_ca = resource.type == "tls:index/selfSignedCert:SelfSignedCert"
        is_key = resource.type == "tls:index/privateKey:PrivateKey" and resource.name.endswith(
            ("-ca", "-service-account")
        )
        if is_ca or is_key or resource.type.startswith("random:"):
            kept[f"{resource.type}/{resource.name}"] = resource.inputs
        if resource.type == "kubernetes:apps/v1:StatefulSet":
            spec = resource.inputs["spec"]
            kept["etcd"] = (
                spec["volumeClaimTemplates"],
                spec["serviceName"],
                spec["podManagementPolicy"],
            )
    return kept
