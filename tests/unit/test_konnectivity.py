"""Konnectivity: the server sidecar of the apiserver pod, the egress selector and the agents."""

from __future__ import annotations

import base64
from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components.common.konnectivity import AGENT_PORT, AUDIENCE, KONNECTIVITY_VERSIONS, SERVER_USER
from components.common.names import ObjectNames
from components.config import ControlPlaneSettings, parse_settings
from components.host.certs import api_server_sans
from components.host.control_plane.apiserver import (
    api_server_deployment_spec,
    api_server_secret_name,
)
from components.host.konnectivity_server import (
    EGRESS_CONFIG_FILE,
    HEALTH_PORT,
    SOCKET_PATH,
    agent_endpoint,
    agent_service_port,
    egress_selector_config_map_name,
    egress_selector_configuration,
    egress_selector_flag,
    konnectivity_server_args,
    konnectivity_server_container,
    server_kubeconfig,
    server_kubeconfig_secret_name,
    with_konnectivity_server,
)
from components.tenant.konnectivity_agent import (
    AGENT_HEALTH_PORT,
    agent_daemonset,
    agent_objects,
    server_auth_delegator_binding,
)
from tests.harness import ProgramRun, run_program
from tests.unit.tenant_program import TENANT_PROVIDER, by_name, make_ca_pem, run_tenant_program

CONFIG = {
    "clusterName": "amber",
    "namespace": "tenant-amber",
    "apiHost": "api.amber.example.com",
    "exposure": "loadBalancer",
    "loadBalancerIP": "192.0.2.10",
    "apiServerReplicas": "3",
}
ENDPOINT = "https://192.0.2.10:6443"
AGENT_HOST = "192.0.2.10"
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.fixture(scope="module")
def settings() -> ControlPlaneSettings:
    return parse_settings(CONFIG)


@pytest.fixture(scope="module")
def names(settings: ControlPlaneSettings) -> ObjectNames:
    return ObjectNames(settings.cluster_name, settings.namespace, settings.infra_cluster_domain)


@pytest.fixture(scope="module")
def pod(settings: ControlPlaneSettings, names: ObjectNames) -> dict[str, Any]:
    """The apiserver pod spec with Konnectivity added."""
    spec = with_konnectivity_server(api_server_deployment_spec(settings, names), settings, names)
    pod_spec: dict[str, Any] = spec["template"]["spec"]
    return pod_spec


def flags(args: list[str]) -> dict[str, str]:
    """`--name=value` arguments as a dict; every flag appears once."""
    result: dict[str, str] = {}
    for arg in args:
        assert arg.startswith("--") and "=" in arg, arg
        key, value = arg[2:].split("=", 1)
        assert key not in result, f"--{key} given twice"
        result[key] = value
    return result


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    [match] = [c for c in pod_spec["containers"] if c["name"] == name]
    return match


def volume_at(pod_spec: dict[str, Any], container_name: str, path: str) -> dict[str, Any]:
    """The volume mounted at the directory holding `path` in that container."""
    mounts = {m["mountPath"]: m for m in container(pod_spec, container_name)["volumeMounts"]}
    mount = mounts[str(PurePosixPath(path).parent)]
    [volume] = [v for v in pod_spec["volumes"] if v["name"] == mount["name"]]
    return volume


# --- the egress selector -------------------------------------------------------------------


def test_egress_selector_configuration_sends_cluster_traffic_over_the_socket() -> None:
    document = yaml.safe_load(egress_selector_configuration())
    assert document["apiVersion"] == "apiserver.k8s.io/v1beta1"
    assert document["kind"] == "EgressSelectorConfiguration"
    [selection] = document["egressSelections"]
    assert selection["name"] == "cluster"
    assert selection["connection"] == {
        "proxyProtocol": "GRPC",
        "transport": {"uds": {"udsName": SOCKET_PATH}},
    }


def test_egress_selector_flag_points_at_the_mounted_config_map(
    pod: dict[str, Any], names: ObjectNames
) -> None:
    api_server = container(pod, "kube-apiserver")
    assert api_server["command"].count(egress_selector_flag()) == 1
    path = egress_selector_flag().split("=", 1)[1]
    assert PurePosixPath(path).name == EGRESS_CONFIG_FILE
    volume = volume_at(pod, "kube-apiserver", path)
    assert volume["configMap"]["name"] == egress_selector_config_map_name(names)


# --- the server sidecar --------------------------------------------------------------------


def test_server_flags(settings: ControlPlaneSettings) -> None:
    args = flags(konnectivity_server_args(settings))
    assert args["mode"] == "grpc"
    assert args["uds-name"] == SOCKET_PATH
    assert args["delete-existing-uds-file"] == "true"
    assert args["server-port"] == "0"
    assert (args["agent-port"], args["admin-port"], args["health-port"]) == (
        str(AGENT_PORT),
        "8133",
        str(HEALTH_PORT),
    )
    assert args["agent-namespace"] == "kube-system"
    assert args["agent-service-account"] == "konnectivity-agent"
    assert args["authentication-audience"] == "system:konnectivity-server"
    assert args["server-count"] == "3"
    assert args["server-id"] == "$(POD_NAME)"
    # Server-side agent auth excludes a client CA (the server refuses both together).
    assert "cluster-ca-cert" not in args
    assert "server-cert" not in args and "server-ca-cert" not in args


def test_server_count_follows_the_apiserver_replicas() -> None:
    one = parse_settings({**CONFIG, "apiServerReplicas": "1"})
    assert flags(konnectivity_server_args(one))["server-count"] == "1"


def test_socket_path_is_shared_by_server_flag_egress_config_and_mounts(
    pod: dict[str, Any],
) -> None:
    server_socket = flags(container(pod, "konnectivity-server")["args"])["uds-name"]
    egress = yaml.safe_load(egress_selector_configuration())
    egress_socket = egress["egressSelections"][0]["connection"]["transport"]["uds"]["udsName"]
    assert server_socket == egress_socket == SOCKET_PATH
    server_volume = volume_at(pod, "konnectivity-server", server_socket)
    api_volume = volume_at(pod, "kube-apiserver", egress_socket)
    assert server_volume is api_volume
    assert "emptyDir" in server_volume
    socket_dir = str(PurePosixPath(SOCKET_PATH).parent)
    server_mount = next(
        m
        for m in container(pod, "konnectivity-server")["volumeMounts"]
        if m["mountPath"] == socket_dir
    )
    assert server_mount["readOnly"] is False  # the server creates the socket


def test_server_container_is_restricted_and_probed_on_healthz(
    settings: ControlPlaneSettings,
) -> None:
    server = konnectivity_server_container(settings)
    assert server["image"] == "registry.k8s.io/kas-network-proxy/proxy-server:v0.36.0"
    assert server["command"] == ["/proxy-server"]
    assert server["securityContext"] == RESTRICTED
    for probe in ("startupProbe", "livenessProbe"):
        get = server[probe]["httpGet"]
        assert (get["path"], get["port"], get["scheme"]) == ("/healthz", HEALTH_PORT, "HTTP")
    # /readyz needs a connected agent: it would keep the apiserver pod out of its Service.
    assert "readinessProbe" not in server
    assert {p["containerPort"] for p in server["ports"]} == {AGENT_PORT, HEALTH_PORT}
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in server["env"]}
    assert env == {"POD_NAME": "metadata.name"}


def test_server_serves_the_apiserver_certificate_from_its_secret(
    pod: dict[str, Any], names: ObjectNames
) -> None:
    args = flags(container(pod, "konnectivity-server")["args"])
    for flag, key in (("cluster-cert", "apiserver.crt"), ("cluster-key", "apiserver.key")):
        assert PurePosixPath(args[flag]).name == key
        secret = volume_at(pod, "konnectivity-server", args[flag])["secret"]
        assert secret["secretName"] == api_server_secret_name(names)
        # Only the serving pair reaches the sidecar, not the service-account or CA keys.
        assert {item["key"] for item in secret["items"]} == {"apiserver.crt", "apiserver.key"}


def test_server_kubeconfig_comes_from_its_own_secret(
    pod: dict[str, Any], names: ObjectNames
) -> None:
    path = flags(container(pod, "konnectivity-server")["args"])["kubeconfig"]
    secret = volume_at(pod, "konnectivity-server", path)["secret"]
    assert secret["secretName"] == server_kubeconfig_secret_name(names)
    assert "kube-apiserver" not in {
        c["name"]
        for c in pod["containers"]
        if any(
            m["name"] == volume_at(pod, "konnectivity-server", path)["name"]
            for m in c["volumeMounts"]
        )
    }


def test_server_kubeconfig_talks_to_the_local_apiserver(
    settings: ControlPlaneSettings, names: ObjectNames
) -> None:
    config = yaml.safe_load(server_kubeconfig("CA", "CERT", "KEY"))
    [cluster] = config["clusters"]
    assert cluster["cluster"]["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == b"CA"
    [user] = config["users"]
    assert user["name"] == SERVER_USER == "system:konnectivity-server"
    assert base64.b64decode(user["user"]["client-certificate-data"]) == b"CERT"
    # The apiserver's serving certificate is valid for the loopback address.
    _, ips = api_server_sans(settings, names)
    assert "127.0.0.1" in ips


def test_with_konnectivity_server_adds_to_a_copy(
    settings: ControlPlaneSettings, names: ObjectNames, pod: dict[str, Any]
) -> None:
    original = api_server_deployment_spec(settings, names)
    before = yaml.safe_dump(original)
    changed = with_konnectivity_server(original, settings, names)
    assert yaml.safe_dump(original) == before
    assert [c["name"] for c in pod["containers"]] == ["kube-apiserver", "konnectivity-server"]
    volume_names = [v["name"] for v in pod["volumes"]]
    assert len(volume_names) == len(set(volume_names))
    for each in pod["containers"]:
        for mount in each["volumeMounts"]:
            assert mount["name"] in volume_names, (each["name"], mount)
    # The rest of the pod (restricted security context, replicas, selector) is as it was.
    assert pod["securityContext"] == original["template"]["spec"]["securityContext"]
    assert changed["replicas"] == original["replicas"] == 3
    old_command = original["template"]["spec"]["containers"][0]["command"]
    assert container(pod, "kube-apiserver")["command"] == [*old_command, egress_selector_flag()]
    with pytest.raises(ValueError, match="already"):
        with_konnectivity_server(changed, settings, names)


# --- publishing the agent port -------------------------------------------------------------


def test_agent_port_on_a_load_balancer(settings: ControlPlaneSettings) -> None:
    port = agent_service_port(settings)
    assert (port["port"], port["targetPort"]) == (AGENT_PORT, AGENT_PORT)
    assert "nodePort" not in port
    # Agents dial the load balancer IP, which is a SAN of the certificate the server serves.
    assert agent_endpoint(settings) == ("192.0.2.10", AGENT_PORT)


def test_agent_port_on_a_node_port() -> None:
    settings = parse_settings(
        {**CONFIG, "exposure": "nodePort", "loadBalancerIP": "", "apiHost": "198.51.100.7"}
    )
    assert agent_service_port(settings, node_port=31999)["nodePort"] == 31999
    assert agent_endpoint(settings) == ("198.51.100.7", 31132)
    names = ObjectNames(settings.cluster_name, settings.namespace, settings.infra_cluster_domain)
    _, ips = api_server_sans(settings, names)
    assert "198.51.100.7" in ips


def test_agent_port_needs_a_service_not_an_ingress() -> None:
    settings = parse_settings({**CONFIG, "exposure": "ingress", "loadBalancerIP": ""})
    with pytest.raises(ValueError, match="LoadBalancer or NodePort"):
        agent_endpoint(settings)


# --- the agents ----------------------------------------------------------------------------


def test_agent_token_audience_matches_the_server(settings: ControlPlaneSettings) -> None:
    server = flags(konnectivity_server_args(settings))
    daemonset = agent_daemonset(settings, AGENT_HOST, AGENT_PORT)
    pod_spec = daemonset["spec"]["template"]["spec"]
    [agent] = pod_spec["containers"]
    args = flags(agent["args"])
    [volume] = pod_spec["volumes"]
    sources = volume["projected"]["sources"]
    [token] = [s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s]
    assert token["audience"] == server["authentication-audience"] == AUDIENCE
    # The token file the agent reads is the projected one.
    [mount] = agent["volumeMounts"]
    assert mount["name"] == volume["name"]
    assert args["service-account-token-path"] == f"{mount['mountPath']}/{token['path']}"
    # ... of the service account the server expects.
    assert daemonset["metadata"]["namespace"] == server["agent-namespace"]
    assert pod_spec["serviceAccountName"] == server["agent-service-account"]


def test_agent_trusts_the_cluster_ca_it_gets_with_its_token(
    settings: ControlPlaneSettings,
) -> None:
    pod_spec = agent_daemonset(settings, AGENT_HOST, AGENT_PORT)["spec"]["template"]["spec"]
    [agent] = pod_spec["containers"]
    [volume] = pod_spec["volumes"]
    [config_map] = [s["configMap"] for s in volume["projected"]["sources"] if "configMap" in s]
    assert config_map["name"] == "kube-root-ca.crt"
    assert config_map["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    [mount] = agent["volumeMounts"]
    assert flags(agent["args"])["ca-cert"] == f"{mount['mountPath']}/ca.crt"
    # No tenant API token: the audience-bound one is its only credential.
    assert pod_spec["automountServiceAccountToken"] is False


def test_agent_daemonset(settings: ControlPlaneSettings) -> None:
    daemonset = agent_daemonset(settings, AGENT_HOST, AGENT_PORT)
    assert daemonset["kind"] == "DaemonSet"
    assert daemonset["metadata"]["name"] == "konnectivity-agent"
    assert daemonset["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}
    pod_spec = daemonset["spec"]["template"]["spec"]
    assert (
        daemonset["spec"]["selector"]["matchLabels"]
        == daemonset["spec"]["template"]["metadata"]["labels"]
        == {"k8s-app": "konnectivity-agent"}
    )
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert "hostNetwork" not in pod_spec
    [agent] = pod_spec["containers"]
    assert agent["image"] == "registry.k8s.io/kas-network-proxy/proxy-agent:v0.36.0"
    assert agent["command"] == ["/proxy-agent"]
    assert agent["securityContext"] == RESTRICTED
    args = flags(agent["args"])
    assert (args["proxy-server-host"], args["proxy-server-port"]) == (AGENT_HOST, "8132")
    assert args["health-server-port"] == str(AGENT_HEALTH_PORT) == "8093"
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = agent[probe]["httpGet"]
        assert (get["path"], get["port"], get["scheme"]) == (path, AGENT_HEALTH_PORT, "HTTP")
    # destHost: the agent names its node's IP, from the downward API.
    assert args["agent-identifiers"] == "ipv4=$(HOST_IP)"
    assert agent["env"] == [
        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}
    ]


def test_agent_identifies_by_ipv6_on_an_ipv6_cluster() -> None:
    settings = parse_settings({**CONFIG, "serviceCidr": "fd00:10::/108", "podCidr": "fd00:20::/64"})
    [agent] = agent_daemonset(settings, AGENT_HOST, AGENT_PORT)["spec"]["template"]["spec"][
        "containers"
    ]
    assert flags(agent["args"])["agent-identifiers"] == "ipv6=$(HOST_IP)"


def test_server_identity_may_review_tokens() -> None:
    binding = server_auth_delegator_binding()
    assert binding["kind"] == "ClusterRoleBinding"
    assert binding["roleRef"]["name"] == "system:auth-delegator"
    assert binding["subjects"] == [
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": SERVER_USER}
    ]


def test_the_issued_server_client_certificate_is_the_bound_user() -> None:
    """The certificate the program issues and mounts (not its spec): a client certificate of
    the cluster CA for exactly the user the tenant's ClusterRoleBinding names, in no group."""
    run = run_program({**CONFIG, "konnectivity": "true"})
    infra = {o.inputs["metadata"]["name"]: o.inputs for o in run.objects_through("infra")}
    ca = x509.load_pem_x509_certificate(
        infra["amber-apiserver-pki"]["stringData"]["ca.crt"].encode()
    )
    kubeconfig = yaml.safe_load(
        infra["amber-konnectivity-server-kubeconfig"]["stringData"]["kubeconfig"]
    )
    user = kubeconfig["users"][0]["user"]
    client = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    key = serialization.load_pem_private_key(base64.b64decode(user["client-key-data"]), None)
    client.verify_directly_issued_by(ca)  # raises on another issuer or a bad signature
    assert client.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    [binding] = [
        o.inputs
        for o in run.objects_through("amber-tenant")
        if o.inputs["kind"] == "ClusterRoleBinding"
        and o.inputs["roleRef"]["name"] == "system:auth-delegator"
    ]
    [subject] = binding["subjects"]
    assert subject == {
        "kind": "User",
        "apiGroup": "rbac.authorization.k8s.io",
        "name": "system:konnectivity-server",
    }
    names = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in names] == [subject["name"]]
    assert not client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)  # no group
    usages = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_images_follow_the_release_and_registry() -> None:
    settings = parse_settings(
        {**CONFIG, "imageRegistry": "mirror.example.com/k8s", "kubernetesVersion": "1.36"}
    )
    assert konnectivity_server_container(settings)["image"] == (
        "mirror.example.com/k8s/kas-network-proxy/proxy-server:v0.34.0"
    )
    from components.common.versions import SUPPORTED_RELEASES

    assert {release.minor for release in SUPPORTED_RELEASES} == set(KONNECTIVITY_VERSIONS)


def test_e2e_images_carry_the_tag_the_default_release_uses(settings: ControlPlaneSettings) -> None:
    from tests.e2e.images.build import IMAGES

    references = {spec.reference for spec in IMAGES}
    assert konnectivity_server_container(settings)["image"] in references
    [agent] = agent_daemonset(settings, AGENT_HOST, AGENT_PORT)["spec"]["template"]["spec"][
        "containers"
    ]
    assert agent["image"] in references


# --- the components under the mock runtime -------------------------------------------------

PROGRAM = """
from components.host.konnectivity_server import KonnectivityServerConfig
from components.tenant.konnectivity_agent import KonnectivityAgent
from components.common.names import ObjectNames

names = ObjectNames(settings.cluster_name, settings.namespace, settings.infra_cluster_domain)
KonnectivityServerConfig(
    "konn-server", settings, names, CA_PEM, "CLIENT CERT", "CLIENT KEY", tenant
)
KonnectivityAgent("konn", settings, "192.0.2.10", 8132, tenant)
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> ProgramRun:
    return run_tenant_program(
        tmp_path_factory.mktemp("konnectivity"), PROGRAM, CONFIG, make_ca_pem(), ENDPOINT
    )


def test_components_register_their_objects(run: ProgramRun) -> None:
    kinds = sorted((r.name, r.type.split(":")[-1]) for r in run.kubernetes_objects())
    assert kinds == sorted(
        [
            ("konn-serviceaccount", "ServiceAccount"),
            ("konn-server-clusterrolebinding", "ClusterRoleBinding"),
            ("konn-daemonset", "DaemonSet"),
            ("konn-server-egress-selector", "ConfigMap"),
            ("konn-server-kubeconfig", "Secret"),
        ]
    )
    for obj in run.kubernetes_objects():
        assert obj.provider and TENANT_PROVIDER in obj.provider, obj.name
    components = {r.type for r in run.resources if r.type.startswith("k8s-on-k8s:")}
    assert components == {
        "k8s-on-k8s:index:KonnectivityAgent",
        "k8s-on-k8s:index:KonnectivityServerConfig",
    }
    assert len(by_name(run)) == len(run.resources)


def test_registered_agent_objects_are_the_pure_manifests(
    run: ProgramRun, settings: ControlPlaneSettings
) -> None:
    named = by_name(run)
    expected = dict(agent_objects(settings, AGENT_HOST, AGENT_PORT))
    # Numbers come back as floats from the mock runtime; == treats 2 and 2.0 alike.
    assert named["konn-daemonset"].inputs["spec"] == expected["daemonset"]["spec"]
    assert named["konn-daemonset"].inputs["metadata"] == expected["daemonset"]["metadata"]
    assert named["konn-serviceaccount"].inputs["metadata"] == {
        "name": "konnectivity-agent",
        "namespace": "kube-system",
        "labels": {"k8s-app": "konnectivity-agent"},
    }
    binding = named["konn-server-clusterrolebinding"].inputs
    assert binding["roleRef"] == expected["server-clusterrolebinding"]["roleRef"]
    assert binding["subjects"] == expected["server-clusterrolebinding"]["subjects"]


def test_registered_server_config(run: ProgramRun, names: ObjectNames) -> None:
    named = by_name(run)
    config_map = named["konn-server-egress-selector"]
    assert config_map.inputs["metadata"]["name"] == egress_selector_config_map_name(names)
    assert config_map.inputs["metadata"]["namespace"] == "tenant-amber"
    assert config_map.inputs["data"] == {EGRESS_CONFIG_FILE: egress_selector_configuration()}
    secret = named["konn-server-kubeconfig"]
    assert secret.inputs["metadata"]["name"] == server_kubeconfig_secret_name(names)
    assert any(path.startswith("stringData") for path in secret.secret_paths), secret.secret_paths
    kubeconfig = yaml.safe_load(secret.inputs["stringData"]["kubeconfig"])
    assert kubeconfig["users"][0]["name"] == SERVER_USER
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
