"""NodeJoin: the token, discovery data, RBAC and config that a plain `kubeadm join` needs."""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pulumi
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from components.common.endpoints import control_plane_endpoint
from components.config import parse_settings
from components.tenant.bootstrap_token import (
    BOOTSTRAP_TOKEN_TYPE,
    bootstrap_token_expiration,
    bootstrap_token_secret,
    cluster_info_kubeconfig,
    cluster_info_rbac,
    discovery_token_ca_cert_hash,
    join_command,
    node_bootstrap_rbac,
)
from components.tenant.tenant_objects import create_object
from components.tenant.upload_config import (
    cluster_configuration,
    kubelet_configuration,
    upload_config_rbac,
)
from tests.harness import ProgramRun
from tests.unit.tenant_program import TENANT_PROVIDER, by_name, make_ca_pem, run_tenant_program

JOIN_COMMAND = re.compile(
    r"^kubeadm join [^ ]+:\d+ --token [a-z0-9]{6}\.[a-z0-9]{16} "
    r"--discovery-token-ca-cert-hash sha256:[0-9a-f]{64}$"
)
BOOTSTRAPPERS = "system:bootstrappers:kubeadm:default-node-token"
CONFIG = {
    "clusterName": "violet",
    "namespace": "tenant-violet",
    "apiHost": "api.violet.example.com",
    "exposure": "nodePort",
    "nodePort": "31443",
    "apiAdvertiseAddress": "192.0.2.7",
    "serviceCidr": "10.100.0.0/16",
    "podCidr": "10.200.0.0/16",
    "clusterDomain": "violet.local",
}
ENDPOINT = "https://api.violet.example.com:31443"
PROGRAM = """
from components.tenant.node_join import NodeJoin

join = NodeJoin("join", settings, CA_PEM, ENDPOINT, tenant)
pulumi.export("joinCommand", join.join_command)
pulumi.export("bootstrapKubeconfig", join.bootstrap_kubeconfig)
"""


def spki_sha256(ca_pem: str) -> str:
    """The CA's SubjectPublicKeyInfo hashed with hashlib, independently of the component."""
    public_key = x509.load_pem_x509_certificate(ca_pem.encode()).public_key()
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def subjects(manifest: dict) -> list[tuple[str, str]]:
    return [(s["kind"], s["name"]) for s in manifest["subjects"]]


# --- pure functions ------------------------------------------------------------------------


def test_token_secret_shape_without_expiration() -> None:
    secret = bootstrap_token_secret("abc123", "0123456789abcdef", None)
    assert secret["kind"] == "Secret"
    assert secret["type"] == BOOTSTRAP_TOKEN_TYPE == "bootstrap.kubernetes.io/token"
    assert secret["metadata"] == {"name": "bootstrap-token-abc123", "namespace": "kube-system"}
    assert secret["stringData"] == {
        "token-id": "abc123",
        "token-secret": "0123456789abcdef",
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        "auth-extra-groups": BOOTSTRAPPERS,
    }


def test_token_secret_carries_the_expiration_when_set() -> None:
    secret = bootstrap_token_secret("abc123", "0123456789abcdef", "2030-01-31T00:00:00Z")
    assert secret["stringData"]["expiration"] == "2030-01-31T00:00:00Z"


@pytest.mark.parametrize("algorithm", ["ecdsa", "rsa"])
def test_discovery_hash_is_the_sha256_of_the_ca_public_key_info(algorithm: str) -> None:
    ca_pem = make_ca_pem(algorithm)
    assert discovery_token_ca_cert_hash(ca_pem) == f"sha256:{spki_sha256(ca_pem)}"
    assert discovery_token_ca_cert_hash(ca_pem) != discovery_token_ca_cert_hash(make_ca_pem())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_discovery_hash_matches_kubeadms_documented_openssl_recipe(tmp_path: Path) -> None:
    ca_pem = make_ca_pem("rsa")
    (tmp_path / "ca.crt").write_text(ca_pem)
    public_key = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout", "-in", str(tmp_path / "ca.crt")],
        check=True,
        capture_output=True,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"],
        input=public_key,
        check=True,
        capture_output=True,
    ).stdout
    assert discovery_token_ca_cert_hash(ca_pem) == "sha256:" + hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("https://api.example.com", "api.example.com:443"),
        ("https://api.example.com:6443", "api.example.com:6443"),
        ("https://192.0.2.1:31443", "192.0.2.1:31443"),
        ("https://[2001:db8::1]:6443", "[2001:db8::1]:6443"),
    ],
)
def test_control_plane_endpoint_is_host_and_port(endpoint: str, expected: str) -> None:
    assert control_plane_endpoint(endpoint) == expected


@pytest.mark.parametrize("endpoint", ["http://api.example.com", "api.example.com:6443", ""])
def test_control_plane_endpoint_rejects_what_is_not_an_https_url(endpoint: str) -> None:
    with pytest.raises(ValueError, match="https URL"):
        control_plane_endpoint(endpoint)


def test_join_command_format() -> None:
    ca_pem = make_ca_pem()
    command = join_command("https://api.example.com", "abc123", "0123456789abcdef", ca_pem)
    assert JOIN_COMMAND.match(command), command
    assert command == (
        "kubeadm join api.example.com:443 --token abc123.0123456789abcdef "
        f"--discovery-token-ca-cert-hash sha256:{spki_sha256(ca_pem)}"
    )


def test_cluster_info_kubeconfig_has_one_unnamed_cluster_and_no_user() -> None:
    ca_pem = make_ca_pem()
    config = yaml.safe_load(cluster_info_kubeconfig("https://api.example.com:31443", ca_pem))
    assert config["kind"] == "Config"
    [cluster] = config["clusters"]
    # kubeadm join looks the cluster up under the empty name when there is no context.
    assert cluster["name"] == ""
    assert cluster["cluster"]["server"] == "https://api.example.com:31443"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]).decode() == ca_pem
    assert not config.get("users")
    assert not config.get("contexts")


def test_cluster_info_is_readable_by_anonymous_only_by_name() -> None:
    objects = dict(cluster_info_rbac())
    role = objects["cluster-info-role"]
    assert role["kind"] == "Role"
    assert role["metadata"] == {
        "name": "kubeadm:bootstrap-signer-clusterinfo",
        "namespace": "kube-public",
    }
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["get"],
            "resourceNames": ["cluster-info"],
        }
    ]
    binding = objects["cluster-info-rolebinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["roleRef"]["kind"] == "Role"
    assert subjects(binding) == [("User", "system:anonymous")]


def test_node_bootstrap_rbac_is_kubeadms() -> None:
    by_object = {m["metadata"]["name"] + "/" + m["kind"]: m for _, m in node_bootstrap_rbac()}
    expected = {
        "kubeadm:kubelet-bootstrap/ClusterRoleBinding": (
            "system:node-bootstrapper",
            [("Group", BOOTSTRAPPERS)],
        ),
        "kubeadm:node-autoapprove-bootstrap/ClusterRoleBinding": (
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            [("Group", BOOTSTRAPPERS)],
        ),
        "kubeadm:node-autoapprove-certificate-rotation/ClusterRoleBinding": (
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            [("Group", "system:nodes")],
        ),
        "kubeadm:get-nodes/ClusterRoleBinding": ("kubeadm:get-nodes", [("Group", BOOTSTRAPPERS)]),
    }
    assert set(by_object) == {*expected, "kubeadm:get-nodes/ClusterRole"}
    for key, (role_name, expected_subjects) in expected.items():
        binding = by_object[key]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role_name,
        }, key
        assert subjects(binding) == expected_subjects, key
    assert by_object["kubeadm:get-nodes/ClusterRole"]["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}
    ]


def test_config_maps_are_readable_by_joining_and_joined_nodes() -> None:
    objects = dict(upload_config_rbac())
    for suffix, role_name, config_map in (
        ("kubeadm-config", "kubeadm:nodes-kubeadm-config", "kubeadm-config"),
        ("kubelet-config", "kubeadm:kubelet-config", "kubelet-config"),
    ):
        role = objects[f"{suffix}-role"]
        binding = objects[f"{suffix}-rolebinding"]
        assert role["metadata"] == {"name": role_name, "namespace": "kube-system"}
        assert role["rules"][0]["resourceNames"] == [config_map]
        assert role["rules"][0]["verbs"] == ["get"]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role_name,
        }
        assert sorted(subjects(binding)) == [("Group", BOOTSTRAPPERS), ("Group", "system:nodes")]


def test_cluster_configuration_parses_with_the_clusters_fields() -> None:
    settings = parse_settings(CONFIG)
    document = yaml.safe_load(cluster_configuration(settings, ENDPOINT))
    assert document["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert document["kind"] == "ClusterConfiguration"
    assert document["clusterName"] == "violet"
    assert document["kubernetesVersion"] == "v1.37.2"
    assert document["controlPlaneEndpoint"] == "api.violet.example.com:31443"
    assert document["certificatesDir"] == "/etc/kubernetes/pki"
    assert document["imageRepository"] == "registry.k8s.io"
    assert document["networking"] == {
        "dnsDomain": "violet.local",
        "serviceSubnet": "10.100.0.0/16",
        "podSubnet": "10.200.0.0/16",
    }
    external = document["etcd"]["external"]
    assert "local" not in document["etcd"]
    assert external["endpoints"] == [
        f"https://violet-etcd-{i}.violet-etcd-peer.tenant-violet.svc.cluster.local:2379"
        for i in range(3)
    ]
    for key in ("caFile", "certFile", "keyFile"):
        assert external[key].startswith("/etc/kubernetes/pki/"), key
    assert document["dns"] == {"disabled": False}
    assert document["proxy"] == {"disabled": False}


def test_cluster_configuration_tells_kubeadm_which_addons_are_off() -> None:
    settings = parse_settings({**CONFIG, "coreDns": "false", "kubeProxy": "false"})
    document = yaml.safe_load(cluster_configuration(settings, ENDPOINT))
    assert document["dns"] == {"disabled": True}
    assert document["proxy"] == {"disabled": True}


def test_kubelet_configuration() -> None:
    settings = parse_settings(CONFIG)
    document = yaml.safe_load(kubelet_configuration(settings))
    assert document["apiVersion"] == "kubelet.config.k8s.io/v1beta1"
    assert document["kind"] == "KubeletConfiguration"
    assert document["clusterDNS"] == ["10.100.0.10"]
    assert document["clusterDomain"] == "violet.local"
    assert document["authentication"]["webhook"]["enabled"] is True
    assert document["authentication"]["anonymous"]["enabled"] is False
    assert document["authentication"]["x509"]["clientCAFile"] == "/etc/kubernetes/pki/ca.crt"
    assert document["authorization"]["mode"] == "Webhook"
    assert document["rotateCertificates"] is True
    assert document["cgroupDriver"] == "systemd"
    assert document["readOnlyPort"] == 0
    assert document["staticPodPath"] == "/etc/kubernetes/manifests"


def test_kubelet_configuration_overrides_replace_top_level_fields() -> None:
    settings = parse_settings(CONFIG)
    overrides = {"cgroupDriver": "cgroupfs", "failCgroupV1": False}
    document = yaml.safe_load(kubelet_configuration(settings, overrides))
    assert document["cgroupDriver"] == "cgroupfs"
    assert document["failCgroupV1"] is False
    assert document["clusterDNS"] == ["10.100.0.10"]


# --- the component under the mock runtime --------------------------------------------------


@pytest.fixture(scope="module")
def ca_pem() -> str:
    return make_ca_pem()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, ca_pem: str) -> ProgramRun:
    return run_tenant_program(
        tmp_path_factory.mktemp("node-join"), PROGRAM, CONFIG, ca_pem, ENDPOINT
    )


def token_of(run: ProgramRun) -> tuple[str, str]:
    data = by_name(run)["join-bootstrap-token"].inputs["stringData"]
    return data["token-id"], data["token-secret"]


def test_component_registers_every_object_through_the_tenant_provider(run: ProgramRun) -> None:
    objects = run.kubernetes_objects()
    registered = {(r.inputs["metadata"]["name"], r.type.split(":")[-1]) for r in objects}
    token_id, _ = token_of(run)
    assert registered == {
        (f"bootstrap-token-{token_id}", "Secret"),
        ("cluster-info", "ConfigMap"),
        ("kubeadm-config", "ConfigMap"),
        ("kubelet-config", "ConfigMap"),
        ("kubeadm:bootstrap-signer-clusterinfo", "Role"),
        ("kubeadm:bootstrap-signer-clusterinfo", "RoleBinding"),
        ("kubeadm:kubelet-bootstrap", "ClusterRoleBinding"),
        ("kubeadm:node-autoapprove-bootstrap", "ClusterRoleBinding"),
        ("kubeadm:node-autoapprove-certificate-rotation", "ClusterRoleBinding"),
        ("kubeadm:get-nodes", "ClusterRole"),
        ("kubeadm:get-nodes", "ClusterRoleBinding"),
        ("kubeadm:nodes-kubeadm-config", "Role"),
        ("kubeadm:nodes-kubeadm-config", "RoleBinding"),
        ("kubeadm:kubelet-config", "Role"),
        ("kubeadm:kubelet-config", "RoleBinding"),
    }
    for obj in objects:
        assert obj.name.startswith("join-"), obj.name
        assert obj.provider and TENANT_PROVIDER in obj.provider, obj.name
    assert len(by_name(run)) == len(run.resources)


def test_token_parts_are_lowercase_alphanumeric_random_strings(run: ProgramRun) -> None:
    named = by_name(run)
    for resource_name, length in (("join-token-id", 6), ("join-token-secret", 16)):
        inputs = named[resource_name].inputs
        assert named[resource_name].type == "random:index/randomString:RandomString"
        assert inputs["length"] == length
        assert inputs["lower"] is True and inputs["numeric"] is True
        assert inputs["upper"] is False and inputs["special"] is False
    token_id, token_secret = token_of(run)
    assert re.fullmatch(r"[a-z0-9]{6}", token_id)
    assert re.fullmatch(r"[a-z0-9]{16}", token_secret)


def test_token_secret_is_secret_but_its_name_is_not(run: ProgramRun) -> None:
    secret = by_name(run)["join-bootstrap-token"]
    token_id, token_secret = token_of(run)
    assert secret.inputs["type"] == "bootstrap.kubernetes.io/token"
    assert secret.inputs == {
        "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": bootstrap_token_secret(token_id, token_secret, None)["stringData"],
        # pulumi-kubernetes adds its own kind/apiVersion inputs
        **{k: v for k, v in secret.inputs.items() if k in ("kind", "apiVersion")},
    }
    assert any(path.startswith("stringData") for path in secret.secret_paths)
    assert not any(path.startswith("metadata") for path in secret.secret_paths)


def test_join_command_output_is_secret_and_names_the_token_and_the_ca(
    run: ProgramRun, ca_pem: str
) -> None:
    command = run.outputs["joinCommand"]
    assert "joinCommand" in run.secret_outputs
    assert JOIN_COMMAND.match(command), command
    token_id, token_secret = token_of(run)
    assert command == (
        f"kubeadm join api.violet.example.com:31443 --token {token_id}.{token_secret} "
        f"--discovery-token-ca-cert-hash sha256:{spki_sha256(ca_pem)}"
    )


def test_bootstrap_kubeconfig_output_is_secret_with_the_token_user(
    run: ProgramRun, ca_pem: str
) -> None:
    assert "bootstrapKubeconfig" in run.secret_outputs
    config = yaml.safe_load(run.outputs["bootstrapKubeconfig"])
    token_id, token_secret = token_of(run)
    [user] = config["users"]
    assert user == {
        "name": "tls-bootstrap-token-user",
        "user": {"token": f"{token_id}.{token_secret}"},
    }
    [cluster] = config["clusters"]
    assert cluster["cluster"]["server"] == ENDPOINT
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]).decode() == ca_pem
    assert config["current-context"] == config["contexts"][0]["name"]


def test_registered_config_maps_hold_the_pure_functions_output(
    run: ProgramRun, ca_pem: str
) -> None:
    named = by_name(run)
    settings = parse_settings(CONFIG)
    cluster_info = named["join-cluster-info"].inputs
    assert cluster_info["metadata"] == {"name": "cluster-info", "namespace": "kube-public"}
    assert cluster_info["data"] == {"kubeconfig": cluster_info_kubeconfig(ENDPOINT, ca_pem)}
    kubeadm_config = named["join-kubeadm-config"].inputs
    assert kubeadm_config["metadata"] == {"name": "kubeadm-config", "namespace": "kube-system"}
    assert kubeadm_config["data"] == {
        "ClusterConfiguration": cluster_configuration(settings, ENDPOINT)
    }
    kubelet_config = named["join-kubelet-config"].inputs
    assert kubelet_config["metadata"] == {"name": "kubelet-config", "namespace": "kube-system"}
    assert kubelet_config["data"] == {"kubelet": kubelet_configuration(settings)}


def test_registered_rbac_matches_the_pure_functions(run: ProgramRun) -> None:
    named = by_name(run)
    for suffix, manifest in [*cluster_info_rbac(), *node_bootstrap_rbac(), *upload_config_rbac()]:
        inputs = named[f"join-{suffix}"].inputs
        for field in ("metadata", "rules", "roleRef", "subjects"):
            assert inputs.get(field) == manifest.get(field), (suffix, field)


def test_kubelet_overrides_reach_the_kubelet_config_map(tmp_path: Path) -> None:
    program = PROGRAM.replace("tenant)", "tenant, kubelet_overrides={'cgroupDriver': 'cgroupfs'})")
    run = run_tenant_program(tmp_path, program, CONFIG, make_ca_pem(), ENDPOINT)
    kubelet = yaml.safe_load(by_name(run)["join-kubelet-config"].inputs["data"]["kubelet"])
    assert kubelet["cgroupDriver"] == "cgroupfs"


def test_expiration_reaches_the_token_secret_and_keeps_the_random_parts(tmp_path: Path) -> None:
    program = PROGRAM.replace("tenant)", "tenant, token_expiration='2031-02-03T04:05:06Z')")
    run = run_tenant_program(tmp_path, program, CONFIG, make_ca_pem(), ENDPOINT)
    data = by_name(run)["join-bootstrap-token"].inputs["stringData"]
    assert data["expiration"] == "2031-02-03T04:05:06Z"
    # A new expiry replaces both random parts: a new token, not the old one made longer.
    for part in ("join-token-id", "join-token-secret"):
        assert by_name(run)[part].inputs["keepers"] == {"expiration": "2031-02-03T04:05:06Z"}


NOW = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.UTC)
DAY = 24 * 3600


@pytest.mark.parametrize(
    ("last_deployed", "now", "expected"),
    [
        (None, NOW, "2030-06-02T12:00:00Z"),  # first deployment: kubeadm's 24 hours
        ("", NOW, "2030-06-02T12:00:00Z"),  # tokens never expired before
        ("2030-06-02T11:00:00Z", NOW, "2030-06-02T11:00:00Z"),  # 23 h left: kept
        ("2030-06-02T00:00:01Z", NOW, "2030-06-02T00:00:01Z"),  # just over half left: kept
        ("2030-06-02T00:00:00Z", NOW, "2030-06-02T12:00:00Z"),  # half left: renewed
        ("2030-06-01T11:00:00Z", NOW, "2030-06-02T12:00:00Z"),  # expired: renewed
        ("2030-06-09T12:00:00Z", NOW, "2030-06-02T12:00:00Z"),  # the lifetime was shortened
        ("not a time", NOW, "2030-06-02T12:00:00Z"),
    ],
)
def test_a_token_is_kept_while_more_than_half_its_lifetime_is_left(
    last_deployed: str | None, now: datetime.datetime, expected: str
) -> None:
    assert bootstrap_token_expiration(last_deployed, now, DAY) == expected


def test_tokens_that_never_expire_have_no_expiry() -> None:
    assert bootstrap_token_expiration("2030-06-02T11:00:00Z", NOW, 0) is None


def test_create_object_refuses_a_kind_it_does_not_know() -> None:
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}}
    with pytest.raises(ValueError, match="batch/v1 Job"):
        create_object("x", manifest, pulumi.ResourceOptions())
