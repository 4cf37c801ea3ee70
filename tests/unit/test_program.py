"""The whole program under the mock runtime: namespace-only, secret-safe, restricted, stable."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

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
    for r in run.objects_through("infra"):
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
    objects = run.objects_through("infra")
    assert len(objects) >= 15
    for obj in objects:
        assert obj.type in NAMESPACED_KINDS, obj.type
        assert obj.inputs["metadata"]["namespace"] == "tenant-green", obj.name


def test_every_object_goes_through_one_of_the_two_explicit_providers(run: ProgramRun) -> None:
    providers = run.of_type("pulumi:providers:kubernetes")
    assert sorted(p.name for p in providers) == ["green-tenant", "infra"]
    infra, tenant = run.objects_through("infra"), run.objects_through("green-tenant")
    assert len(infra) + len(tenant) == len(run.kubernetes_objects())
    # The tenant provider is the tenant's own API, reached with the super-admin kubeconfig (kept
    # in the namespace's break-glass Secret), not the revocable admin one of the output.
    tenant_provider = next(p for p in providers if p.name == "green-tenant")
    (break_glass,) = [
        o.inputs
        for o in infra
        if o.inputs["kind"] == "Secret"
        and o.inputs["metadata"]["name"] == "green-super-admin-kubeconfig"
    ]
    assert tenant_provider.inputs["kubeconfig"] == break_glass["stringData"]["kubeconfig"]
    assert tenant_provider.inputs["kubeconfig"] != run.outputs["kubeconfig"]
    assert "kubeconfig" in tenant_provider.secret_paths


def test_the_admin_kubeconfig_is_revocable_and_the_super_admin_is_no_output() -> None:
    """kubeadm's split: the output's identity (group kubeadm:cluster-admins) is cluster-admin
    through a ClusterRoleBinding in the tenant, which adminAccess=false removes; the
    system:masters identity appears in no output."""
    import base64

    from cryptography import x509

    def groups(kubeconfig: str) -> list[str]:
        user = yaml.safe_load(kubeconfig)["users"][0]["user"]
        cert = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
        names = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
        return [str(name.value) for name in names]

    granted = run_program(CONFIG)
    assert groups(granted.outputs["kubeconfig"]) == ["kubeadm:cluster-admins"]
    (binding,) = [
        o.inputs
        for o in granted.objects_through("green-tenant")
        if o.inputs["kind"] == "ClusterRoleBinding"
        and o.inputs["metadata"]["name"] == "kubeadm:cluster-admins"
    ]
    assert binding["roleRef"]["name"] == "cluster-admin"
    assert binding["subjects"] == [
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "kubeadm:cluster-admins"}
    ]
    for name, value in granted.outputs.items():
        if isinstance(value, str) and "client-certificate-data" in value:
            assert "system:masters" not in groups(value), name
    revoked = run_program({**CONFIG, "adminAccess": "false"})
    names = {o.inputs["metadata"]["name"] for o in revoked.objects_through("green-tenant")}
    assert "kubeadm:cluster-admins" not in names


def test_outputs(run: ProgramRun) -> None:
    assert run.outputs["endpoint"] == "https://api.green.example.com"
    assert run.outputs["namespace"] == "tenant-green"
    assert run.outputs["kubernetesVersion"] == "v1.37.2"
    assert run.outputs["clusterCaCertificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert run.outputs["fixedSettings"]["etcdStorageSize"] == "4Gi"


def test_no_secret_in_a_plain_output(run: ProgramRun) -> None:
    assert run.secret_outputs == {"kubeconfig", "joinCommand", "bootstrapKubeconfig"}
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


KONNECTIVITY = {
    **CONFIG,
    "exposure": "nodePort",
    "apiAdvertiseAddress": "192.0.2.9",
    "konnectivity": "true",
}


def assert_restricted(name: str, pod: dict[str, Any]) -> None:
    """Pod Security "restricted" (and our own rules: no token, read-only root and mounts)."""
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
    assert pod["automountServiceAccountToken"] is False, name
    for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(forbidden), name
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= ALLOWED_VOLUME_KEYS, (name, volume)
        if "secret" in volume:
            assert volume["secret"]["defaultMode"] == 0o400, name
        if "projected" in volume:
            assert volume["projected"]["defaultMode"] == 0o400, name
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not any("hostPort" in port for port in container.get("ports", [])), name
        for volume_mount in container["volumeMounts"]:
            volume = next(v for v in pod["volumes"] if v["name"] == volume_mount["name"])
            if {"secret", "configMap", "projected"} & set(volume):
                assert volume_mount["readOnly"] is True, (name, volume_mount)


@pytest.mark.parametrize("config", [CONFIG, KONNECTIVITY], ids=["plain", "konnectivity"])
def test_pods_meet_pod_security_restricted(config: dict[str, str]) -> None:
    run = run_program(config)
    specs = pod_specs(run)
    assert len(specs) == 4
    for name, pod in specs:
        assert_restricted(name, pod)


def test_the_node_local_api_proxy_is_restricted_but_for_its_address_step() -> None:
    """The proxy is a tenant-side kube-system pod on the host network (it must not need the
    CNI); only its init container, which puts the address on loopback, is root with NET_ADMIN.
    HAProxy itself runs as restricted containers do."""
    run = run_program(CONFIG)
    proxy = run.named("green-in-cluster-api-proxy-daemonset")
    assert proxy.inputs["metadata"]["namespace"] == "kube-system"
    pod = proxy.inputs["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["automountServiceAccountToken"] is False
    assert_restricted(proxy.name, {**pod, "hostNetwork": False})
    (init,) = pod["initContainers"]
    context = init["securityContext"]
    assert context["capabilities"] == {"add": ["NET_ADMIN"], "drop": ["ALL"]}
    assert context["runAsUser"] == 0 and context["allowPrivilegeEscalation"] is False
    assert "volumeMounts" not in init, "the root step sees no key"


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
        # The encryption key, etcd's data generation, the bootstrap token's id and secret.
        is_random = resource.type.startswith("random:")
        if is_ca or is_key or is_random:
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
        {"kubernetesVersion": "v1.37.9"},  # a patch; a minor back is refused
        {"exposure": "nodePort", "apiAdvertiseAddress": "192.0.2.9"},
    ],
)
def test_ordinary_changes_never_replace_cas_keys_or_etcd_volumes(change: dict[str, str]) -> None:
    state = MockState()
    before = run_program(CONFIG, state=state)
    after = run_program({**CONFIG, **change}, state=state)
    assert durable(before) == durable(after)
    # 3 CA certificates, their 3 keys, the SA key, the encryption key, etcd's data generation,
    # the bootstrap token's id and secret, the etcd volumes.
    assert len(durable(before)) == 12
    assert before.outputs["clusterCaCertificate"] == after.outputs["clusterCaCertificate"]


def test_a_change_does_show_up_where_it_should() -> None:
    """The counterpart: the harness does see a changed input."""
    before = {r.name: r for r in run_program(CONFIG).resources}
    after = {r.name: r for r in run_program({**CONFIG, "apiServerReplicas": "4"}).resources}
    deployment = "green-apiserver-deployment"
    assert before[deployment].inputs["spec"]["replicas"] == 2
    assert after[deployment].inputs["spec"]["replicas"] == 4


def test_one_component_per_concern_and_names_derived_from_the_cluster(run: ProgramRun) -> None:
    components = {r.name: r.type for r in run.resources if r.type.startswith("k8s-on-k8s:index:")}
    assert components == {
        "green": "k8s-on-k8s:index:ControlPlane",
        "green-pki": "k8s-on-k8s:index:Pki",
        "green-etcd": "k8s-on-k8s:index:Etcd",
        "green-network-policies": "k8s-on-k8s:index:NetworkPolicies",
        "green-apiserver": "k8s-on-k8s:index:ApiServer",
        "green-controller-manager": "k8s-on-k8s:index:ControllerManager",
        "green-scheduler": "k8s-on-k8s:index:Scheduler",
        "green-exposure": "k8s-on-k8s:index:Exposure",
        "green-node-join": "k8s-on-k8s:index:NodeJoin",
        "green-coredns": "k8s-on-k8s:index:CoreDns",
        "green-kube-proxy": "k8s-on-k8s:index:KubeProxy",
        "green-in-cluster-api": "k8s-on-k8s:index:InClusterApi",
        "green-admin-access": "k8s-on-k8s:index:AdminAccess",
    }
    for resource in run.resources:
        if resource.type in ("pulumi:providers:kubernetes", "pulumi:pulumi:StackReference"):
            continue
        assert resource.name.startswith("green"), resource.name


def test_kubernetes_default_leads_to_the_node_port_on_tenant_nodes() -> None:
    run = run_program(
        {**CONFIG, "exposure": "nodePort", "nodePort": "30123", "apiAdvertiseAddress": "192.0.2.9"}
    )
    tenant = {o.inputs["kind"]: o.inputs for o in run.objects_through("green-tenant")}
    assert tenant["Endpoints"]["metadata"] == {
        "name": "kubernetes",
        "namespace": "default",
        "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
    }
    subset = tenant["Endpoints"]["subsets"][0]
    assert subset["addresses"] == [{"ip": "192.0.2.9"}]
    assert subset["ports"][0]["port"] == 30123
    assert tenant["EndpointSlice"]["endpoints"][0]["addresses"] == ["192.0.2.9"]
    assert (
        tenant["EndpointSlice"]["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
    )
    deployment = run.named("green-apiserver-deployment").inputs
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--endpoint-reconciler-type=none" in command


def test_ingress_leads_kubernetes_default_to_the_node_local_proxy() -> None:
    run = run_program(CONFIG)
    tenant = {
        (
            o.type.split(":")[-1],
            o.inputs["metadata"].get("namespace"),
            o.inputs["metadata"]["name"],
        ): (o.inputs)
        for o in run.objects_through("green-tenant")
        if o.inputs["metadata"]["name"] in ("kubernetes-api-proxy", "kubernetes")
    }
    # In `default` only the endpoints: nothing there a pod could mount or wear.
    assert set(tenant) == {
        ("Secret", "kube-system", "kubernetes-api-proxy"),
        ("ConfigMap", "kube-system", "kubernetes-api-proxy"),
        ("DaemonSet", "kube-system", "kubernetes-api-proxy"),
        ("Endpoints", "default", "kubernetes"),
        ("EndpointSlice", "default", "kubernetes"),
    }
    endpoint_slice = tenant["EndpointSlice", "default", "kubernetes"]
    assert endpoint_slice["endpoints"][0]["addresses"] == ["172.20.0.1"]
    assert endpoint_slice["ports"][0]["port"] == 6443
    deployment = run.named("green-apiserver-deployment").inputs
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--endpoint-reconciler-type=none" in command


def test_the_ingress_passes_tls_through_to_the_apiservers(run: ProgramRun) -> None:
    """The Ingress the program creates (not a constant of the code): ingress-nginx passes the
    TLS stream through, so the apiserver terminates it and client certificates keep working."""
    [ingress] = [o.inputs for o in run.objects_through("infra") if o.inputs["kind"] == "Ingress"]
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/ssl-passthrough": "true",
        "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
    }
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "api.green.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    services = {
        o.inputs["metadata"]["name"]: o.inputs["spec"]
        for o in run.objects_through("infra")
        if o.inputs["kind"] == "Service"
    }
    # The backend is the apiservers' Service, on the port the apiserver serves TLS on.
    ports = {port["port"]: port for port in services[backend["name"]]["ports"]}
    assert backend["port"]["number"] in ports
    assert ports[backend["port"]["number"]]["targetPort"] in (6443, "https")
    deployment = run.named("green-apiserver-deployment").inputs["spec"]["template"]["spec"]
    assert "--secure-port=6443" in deployment["containers"][0]["command"]


def test_add_ons_can_be_switched_off() -> None:
    def tenant_workloads(**switches: str) -> set[str]:
        run = run_program({**CONFIG, **switches})
        return {
            o.inputs["metadata"]["name"]
            for o in run.objects_through("green-tenant")
            if o.inputs["kind"] in ("Deployment", "DaemonSet")
        }

    assert tenant_workloads() == {"coredns", "kube-proxy", "kubernetes-api-proxy"}
    assert tenant_workloads(kubeProxy="false") == {"coredns", "kubernetes-api-proxy"}
    assert tenant_workloads(coreDns="false") == {"kube-proxy", "kubernetes-api-proxy"}


def test_join_outputs(run: ProgramRun) -> None:
    command = run.outputs["joinCommand"]
    assert command.startswith("kubeadm join api.green.example.com:443 --token ")
    bootstrap = run.outputs["bootstrapKubeconfig"]
    assert "server: https://api.green.example.com" in bootstrap
    token = command.split("--token ")[1].split()[0]
    assert f"token: {token}" in bootstrap


def test_konnectivity_wiring() -> None:
    run = run_program(KONNECTIVITY)
    api = run.named("green-apiserver-deployment").inputs["spec"]["template"]["spec"]
    assert [c["name"] for c in api["containers"]] == ["kube-apiserver", "konnectivity-server"]
    assert any(
        a.startswith("--egress-selector-config-file=") for a in api["containers"][0]["command"]
    )
    service = run.named("green-exposure-service").inputs["spec"]
    assert {p["name"]: p.get("nodePort") for p in service["ports"]} == {
        "https": 31443,
        "konnectivity": 31132,
    }
    tenant_kinds = {
        (o.inputs["kind"], o.inputs["metadata"]["name"])
        for o in run.objects_through("green-tenant")
    }
    assert ("DaemonSet", "konnectivity-agent") in tenant_kinds
    assert ("ClusterRoleBinding", "system:konnectivity-server") in tenant_kinds
    secret_names = {
        o.inputs["metadata"]["name"]
        for o in run.objects_through("infra")
        if o.inputs["kind"] == "Secret"
    }
    assert "green-konnectivity-server-kubeconfig" in secret_names


def test_konnectivity_is_off_by_default(run: ProgramRun) -> None:
    assert not [r for r in run.resources if "konnectivity" in r.name]


def every_image(value: Any) -> list[str]:
    """Every container image anywhere in a manifest."""
    if isinstance(value, dict):
        found = [value["image"]] if isinstance(value.get("image"), str) else []
        return found + [image for item in value.values() for image in every_image(item)]
    if isinstance(value, list):
        return [image for item in value for image in every_image(item)]
    return []


def images_of(config: dict[str, str]) -> set[str]:
    run = run_program(config)
    return {image for r in run.kubernetes_objects() for image in every_image(r.inputs)}


@pytest.mark.parametrize("config", [CONFIG, KONNECTIVITY], ids=["ingress", "konnectivity"])
def test_every_image_follows_the_registry_and_can_be_pinned_by_digest(
    config: dict[str, str],
) -> None:
    from components.config import REGISTRY_IMAGES

    mirror = "mirror.example.com:5000/k8s"
    digests = {name: "sha256:" + f"{index:x}" * 64 for index, name in enumerate(REGISTRY_IMAGES)}
    pinned = ",".join(f"{name}={digest}" for name, digest in digests.items())
    images = images_of({**config, "imageRegistry": mirror, "imageDigests": pinned})
    assert images, "the program runs containers"
    for image in images:
        assert image.startswith(mirror + "/"), image
        name = image.removeprefix(mirror + "/").split(":")[0]
        if name == "haproxy":  # the node-local proxy: apiProxyImage, pinned there if wanted
            assert image == f"{mirror}/haproxy:3.2-alpine"
            continue
        assert image.endswith("@" + digests[name]), image


def test_images_come_from_their_public_homes_by_default() -> None:
    images = images_of(CONFIG)
    assert "docker.io/library/haproxy:3.2-alpine" in images
    assert {image.split("/")[0] for image in images} == {"registry.k8s.io", "docker.io"}
    assert not [image for image in images if "@" in image]
