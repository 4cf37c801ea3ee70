"""The whole program under the mock runtime: namespace-only, secret-safe, restricted, stable."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.harness import MockState, ProgramRun, run_program

CONFIG = {"clusterName": "green", "namespace": "tenant-green", "apiHost": "api.green.example.com"}

# Kinds a tenant admin (the built-in `admin` role in one namespace) may create.
NAMESPACED_KINDS = {
    "kubernetes:core/v1:Secret",
    "kubernetes:core/v1:ConfigMap",
    "kubernetes:core/v1:Service",
    "kubernetes:apps/v1:Deployment",
    "kubernetes:apps/v1:StatefulSet",
    "kubernetes:policy/v1:PodDisruptionBudget",
    "kubernetes:networking.k8s.io/v1:NetworkPolicy",
    "kubernetes:networking.k8s.io/v1:Ingress",
}
ALLOWED_VOLUME_KEYS = {
    "secret",
    "configMap",
    "emptyDir",
    "persistentVolumeClaim",
    "projected",
    "downwardAPI",
}


@pytest.fixture(scope="module")
def run() -> ProgramRun:
    return run_program(CONFIG)


def pod_specs(run: ProgramRun) -> list[tuple[str, dict[str, Any]]]:
    """Pod templates, with a StatefulSet's claim templates listed as PVC volumes."""
    specs = []
    for r in run.kubernetes_objects():
        if r.type not in ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet"):
            continue
        pod = dict(r.inputs["spec"]["template"]["spec"])
        claims = [
            {"name": claim["metadata"]["name"], "persistentVolumeClaim": {}}
            for claim in r.inputs["spec"].get("volumeClaimTemplates", [])
        ]
        pod["volumes"] = [*pod["volumes"], *claims]
        specs.append((r.name, pod))
    return specs


@pytest.mark.parametrize("exposure", ["ingress", "loadBalancer", "nodePort"])
def test_every_object_is_namespaced_in_the_configured_namespace(exposure: str) -> None:
    run = run_program({**CONFIG, "exposure": exposure, "apiAdvertiseAddress": "192.0.2.9"})
    objects = run.kubernetes_objects()
    assert len(objects) >= 15
    for obj in objects:
        assert obj.type in NAMESPACED_KINDS, obj.type
        assert obj.inputs["metadata"]["namespace"] == "tenant-green", obj.name


def test_every_object_goes_through_the_one_explicit_provider(run: ProgramRun) -> None:
    providers = run.of_type("pulumi:providers:kubernetes")
    assert [p.name for p in providers] == ["infra"]
    for obj in run.kubernetes_objects():
        assert obj.provider and "pulumi:providers:kubernetes::infra::" in obj.provider, obj.name


def test_outputs(run: ProgramRun) -> None:
    assert run.outputs["endpoint"] == "https://api.green.example.com"
    assert run.outputs["namespace"] == "tenant-green"
    assert run.outputs["kubernetesVersion"] == "v1.37.2"
    assert run.outputs["clusterCaCertificate"].startswith("-----BEGIN CERTIFICATE-----")


def test_no_secret_in_a_plain_output(run: ProgramRun) -> None:
    assert run.secret_outputs == {"kubeconfig"}
    for name, value in run.outputs.items():
        if name not in run.secret_outputs:
            assert "PRIVATE KEY" not in json.dumps(value), name


def test_every_key_reaches_kubernetes_only_as_secret_data(run: ProgramRun) -> None:
    for obj in run.kubernetes_objects():
        text = json.dumps(obj.inputs)
        has_key = "PRIVATE KEY" in text or "client-key-data" in text
        if obj.type != "kubernetes:core/v1:Secret":
            assert not has_key, f"{obj.name} carries key material"
            continue
        for file_name in obj.inputs["stringData"]:
            path = f"stringData.{file_name}"
            secret = any(path == p or path.startswith(f"{p}.") for p in obj.secret_paths)
            assert secret, f"{obj.name}/{file_name} is plain"


def test_pods_meet_pod_security_restricted(run: ProgramRun) -> None:
    specs = pod_specs(run)
    assert len(specs) == 4
    for name, pod in specs:
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(forbidden), name
        for volume in pod["volumes"]:
            assert set(volume) - {"name"} <= ALLOWED_VOLUME_KEYS, (name, volume)
            if "secret" in volume:
                assert volume["secret"]["defaultMode"] == 0o400, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert not any("hostPort" in port for port in container.get("ports", [])), name
            for volume_mount in container["volumeMounts"]:
                volume = next(v for v in pod["volumes"] if v["name"] == volume_mount["name"])
                if "secret" in volume or "configMap" in volume:
                    assert volume_mount["readOnly"] is True, (name, volume_mount)


def inputs_by_name(run: ProgramRun) -> dict[tuple[str, str], str]:
    return {(r.type, r.name): json.dumps(r.inputs, sort_keys=True) for r in run.resources}


def test_second_run_with_unchanged_config_declares_the_same_resources_and_inputs() -> None:
    state = MockState()
    first = inputs_by_name(run_program(CONFIG, state=state))
    second = inputs_by_name(run_program(CONFIG, state=state))
    assert first.keys() == second.keys()
    changed = [key for key in first if first[key] != second[key]]
    assert changed == []


def durable(run: ProgramRun) -> dict[str, Any]:
    """What must never be replaced: CA keys and certs, the SA key, the etcd volumes, the
    encryption key."""
    kept: dict[str, Any] = {}
    for resource in run.resources:
        is_ca = resource.type == "tls:index/selfSignedCert:SelfSignedCert"
        is_key = resource.type == "tls:index/privateKey:PrivateKey" and (
            resource.name.endswith("-ca") or resource.name.endswith("-service-account")
        )
        if is_ca or is_key or resource.type == "random:index/randomBytes:RandomBytes":
            kept[f"{resource.type}/{resource.name}"] = resource.inputs
        if resource.type == "kubernetes:apps/v1:StatefulSet":
            spec = resource.inputs["spec"]
            kept["etcd-volumes"] = (
                resource.name,
                spec["volumeClaimTemplates"],
                spec["serviceName"],
            )
    return kept


@pytest.mark.parametrize(
    "change",
    [
        {"apiServerReplicas": "5", "schedulerReplicas": "1", "controllerManagerReplicas": "3"},
        {"apiServerCpuRequest": "2", "etcdMemoryRequest": "2Gi"},
        {"kubernetesVersion": "v1.36.3"},
        {"exposure": "nodePort", "apiAdvertiseAddress": "192.0.2.9"},
    ],
)
def test_ordinary_changes_never_replace_cas_keys_or_etcd_volumes(change: dict[str, str]) -> None:
    state = MockState()
    before = run_program(CONFIG, state=state)
    after = run_program({**CONFIG, **change}, state=state)
    assert durable(before) == durable(after)
    # 3 CA certificates, their 3 keys, the SA key, the encryption key, the etcd volumes.
    assert len(durable(before)) == 9
    assert before.outputs["clusterCaCertificate"] == after.outputs["clusterCaCertificate"]


def test_a_change_does_show_up_where_it_should() -> None:
    """The counterpart: the harness does see a changed input."""
    before = {r.name: r for r in run_program(CONFIG).resources}
    after = {r.name: r for r in run_program({**CONFIG, "apiServerReplicas": "4"}).resources}
    deployment = "green-apiserver-deployment"
    assert before[deployment].inputs["spec"]["replicas"] == 2
    assert after[deployment].inputs["spec"]["replicas"] == 4


def test_children_are_parented_to_their_component(run: ProgramRun) -> None:
    components = {r.name: r for r in run.resources if r.type.startswith("k8s-on-k8s:index:")}
    assert set(components) == {
        "green",
        "green-pki",
        "green-etcd",
        "green-apiserver",
        "green-controller-manager",
        "green-scheduler",
        "green-exposure",
    }
    for resource in run.resources:
        if resource.type == "pulumi:providers:kubernetes":
            continue
        assert resource.name.startswith("green"), resource.name
