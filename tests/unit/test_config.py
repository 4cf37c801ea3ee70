"""Config validation: defaults, Pulumi.yaml in sync, and one test per kind of bad input."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from components.common.versions import supported_versions
from components.config import DEFAULTS, ConfigError, parse_settings
from tests.harness import REPO_ROOT, RealCryptoMocks, run_program

ROOT = pathlib.Path(REPO_ROOT)


def test_defaults_give_the_newest_release_and_ingress() -> None:
    settings = parse_settings({})
    assert settings.release.version == supported_versions()[-1]
    assert settings.exposure.mode == "ingress"
    assert settings.etcd_replicas == 3
    assert settings.api_server_replicas == 2
    assert settings.kubernetes_service_ip == "10.96.0.1"
    assert settings.image("kube-apiserver") == "registry.k8s.io/kube-apiserver:v1.37.2"


def test_pulumi_yaml_declares_every_key_with_the_code_default_and_a_description() -> None:
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    declared = project["config"]
    assert set(declared) == set(DEFAULTS)
    for key, entry in declared.items():
        default = entry["default"]
        text = str(default).lower() if isinstance(default, bool) else str(default)
        assert text == DEFAULTS[key], key
        assert entry["description"].strip(), key
        assert entry["type"] in ("string", "integer", "boolean")


def test_the_dev_stack_example_is_valid() -> None:
    stack = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    raw = {key.split(":", 1)[1]: value for key, value in stack.items()}
    settings = parse_settings(raw)
    assert settings.namespace == "team-a"
    assert settings.exposure.endpoint == "https://api.team-a.example.com"


@pytest.mark.parametrize(
    ("version", "expected"),
    [("v1.35.4", "v1.35.4"), ("1.36", "v1.36.3"), ("v1.37.9", "v1.37.9"), ("1.37.2", "v1.37.2")],
)
def test_versions_accept_supported_minors(version: str, expected: str) -> None:
    assert parse_settings({"kubernetesVersion": version}).release.version == expected


def test_etcd_version_follows_the_kubernetes_minor() -> None:
    tags = {
        v: parse_settings({"kubernetesVersion": v}).release.etcd_image_tag
        for v in ("1.35", "1.36", "1.37")
    }
    assert tags == {"1.35": "3.6.6-0", "1.36": "3.6.8-0", "1.37": "3.7.0-0"}


@pytest.mark.parametrize(
    "image",
    ["haproxy:2.6", "mirror.example:5000/library/haproxy:2.6.12", f"haproxy@sha256:{'a' * 64}"],
)
def test_proxy_image_accepts_tags_digests_and_mirrors(image: str) -> None:
    assert parse_settings({"apiProxyImage": image}).api_proxy_image == image


def test_endpoint_per_exposure_mode() -> None:
    def endpoint(**raw: str) -> str:
        config = {"apiHost": "api.example.org", "apiAdvertiseAddress": "198.51.100.1", **raw}
        return parse_settings(config).exposure.endpoint

    assert endpoint(exposure="ingress") == "https://api.example.org"
    assert endpoint(exposure="nodePort", nodePort="30443") == "https://api.example.org:30443"
    assert endpoint(exposure="loadBalancer") == "https://api.example.org:6443"
    assert (
        endpoint(exposure="loadBalancer", loadBalancerIP="192.0.2.10") == "https://192.0.2.10:6443"
    )
    assert endpoint(exposure="nodePort", apiHost="2001:db8::1") == "https://[2001:db8::1]:31443"


# One case per kind of bad input: (config, key that must be named, text of what is allowed).
BAD_INPUTS = {
    "host name with scheme": ({"apiHost": "https://api.example.com"}, "apiHost", "DNS name"),
    "host name uppercase": ({"apiHost": "API.Example.com"}, "apiHost", "DNS name"),
    "host name wildcard": ({"apiHost": "*.example.com"}, "apiHost", "DNS name"),
    "IP host behind an ingress": (
        {"exposure": "ingress", "apiHost": "192.0.2.7"},
        "apiHost",
        "a DNS name when exposure is ingress",
    ),
    "proxy image without tag": ({"apiProxyImage": "haproxy"}, "apiProxyImage", "tag or digest"),
    "proxy image with a port but no tag": (
        {"apiProxyImage": "mirror.example:5000/haproxy"},
        "apiProxyImage",
        "tag or digest",
    ),
    "proxy image with spaces": (
        {"apiProxyImage": "haproxy 3.2-alpine"},
        "apiProxyImage",
        "haproxy:3.2-alpine",
    ),
    "unknown exposure mode": (
        {"exposure": "gateway"},
        "exposure",
        "ingress | loadBalancer | nodePort",
    ),
    "even etcd members": ({"etcdReplicas": "2"}, "etcdReplicas", "1 or 3"),
    "zero etcd members": ({"etcdReplicas": "0"}, "etcdReplicas", "1 or 3"),
    "service CIDR unparsable": ({"serviceCidr": "10.96.0.0/33"}, "serviceCidr", "CIDR"),
    "pod CIDR with host bits": ({"podCidr": "10.244.0.1/16"}, "podCidr", "CIDR"),
    "CIDRs overlap": ({"podCidr": "10.96.0.0/16"}, "podCidr", "does not overlap serviceCidr"),
    "service CIDR too large": ({"serviceCidr": "10.0.0.0/8"}, "serviceCidr", "at most 2^20"),
    "unsupported version": (
        {"kubernetesVersion": "v1.30.0"},
        "kubernetesVersion",
        "v1.35.4, v1.36.3, v1.37.2",
    ),
    "version not a version": ({"kubernetesVersion": "latest"}, "kubernetesVersion", "v1.37.2"),
    "zero apiserver replicas": ({"apiServerReplicas": "0"}, "apiServerReplicas", "at least 1"),
    "negative scheduler replicas": ({"schedulerReplicas": "-1"}, "schedulerReplicas", "at least 1"),
    "non-integer controller-manager replicas": (
        {"controllerManagerReplicas": "two"},
        "controllerManagerReplicas",
        "at least 1",
    ),
    "zero storage": ({"etcdStorageSize": "0Gi"}, "etcdStorageSize", "positive"),
    "negative storage": ({"etcdStorageSize": "-4Gi"}, "etcdStorageSize", "positive"),
    "zero cpu request": ({"apiServerCpuRequest": "0"}, "apiServerCpuRequest", "positive"),
    "garbage memory request": ({"etcdMemoryRequest": "lots"}, "etcdMemoryRequest", "positive"),
    "node port out of range": (
        {"exposure": "nodePort", "nodePort": "8443"},
        "nodePort",
        "30000 to 32767",
    ),
    "bad load balancer IP": ({"loadBalancerIP": "300.1.1.1"}, "loadBalancerIP", "IPv4/IPv6"),
    "bad namespace": ({"namespace": "Team_A"}, "namespace", "DNS label"),
    "cluster name too long": ({"clusterName": "c" * 31}, "clusterName", "at most 30"),
    "bad cluster domain": ({"clusterDomain": "cluster..local"}, "clusterDomain", "DNS domain"),
    "registry with scheme": (
        {"imageRegistry": "https://mirror.example"},
        "imageRegistry",
        "without tag",
    ),
    "misspelt key": ({"etcdReplica": "3"}, "etcdReplica", "known keys"),
    "bad token lifetime": (
        {"bootstrapTokenTtl": "tomorrow"},
        "bootstrapTokenTtl",
        "a duration such as 24h",
    ),
    "token lifetime in days": (
        {"bootstrapTokenTtl": "2d"},
        "bootstrapTokenTtl",
        "0 for tokens that never expire",
    ),
    "zero token lifetime spelt as a duration": (
        {"bootstrapTokenTtl": "0h"},
        "bootstrapTokenTtl",
        "a duration such as 24h",
    ),
    "add-on switch not boolean": ({"coreDns": "maybe"}, "coreDns", "true or false"),
    "konnectivity behind ingress": (
        {"konnectivity": "true"},
        "konnectivity",
        "loadBalancer or nodePort",
    ),
    "konnectivity port equal to the API node port": (
        {"exposure": "nodePort", "apiHost": "192.0.2.1", "konnectivityNodePort": "31443"},
        "konnectivityNodePort",
        "other than nodePort",
    ),
    "node port with no address nodes can reach": (
        {"exposure": "nodePort", "apiHost": "api.example.com"},
        "apiAdvertiseAddress",
        "an IP when exposure is nodePort",
    ),
    "zero certificate validity": (
        {"certificateValidityHours": "0"},
        "certificateValidityHours",
        "at least 1",
    ),
    "renewal window longer than the validity": (
        {"certificateValidityHours": "48", "certificateRenewalHours": "49"},
        "certificateRenewalHours",
        "from 0 to certificateValidityHours (48)",
    ),
    "advertise address not an IP": (
        {"apiAdvertiseAddress": "api.example.com"},
        "apiAdvertiseAddress",
        "the IP nodes reach",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_named_with_key_value_and_what_is_allowed(case: str) -> None:
    raw, key, allowed = BAD_INPUTS[case]
    with pytest.raises(ConfigError) as raised:
        parse_settings(raw)
    message = str(raised.value)
    assert f"k8s-on-k8s:{key}" in message
    assert repr(str(raw.get(key, DEFAULTS.get(key, "")))) in message or key not in DEFAULTS
    assert allowed in message


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_registers_no_resource(case: str) -> None:
    raw, key, _ = BAD_INPUTS[case]
    mocks = RealCryptoMocks()
    with pytest.raises(ConfigError, match=key):
        run_program(raw, mocks=mocks)
    assert mocks.resources == []


def test_good_input_does_register_resources() -> None:
    """The counterpart of the test above: the same harness does see resources."""
    mocks = RealCryptoMocks()
    run_program({"etcdReplicas": "1"}, mocks=mocks)
    assert len(mocks.resources) > 20


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings({"etcdReplicas": "2", "exposure": "ftp", "apiServerReplicas": "0"})
    message = str(raised.value)
    for key in ("etcdReplicas", "exposure", "apiServerReplicas"):
        assert f"k8s-on-k8s:{key}" in message


def test_readme_documents_every_key() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [key for key in DEFAULTS if f"`{key}`" not in readme]
    assert missing == []


@pytest.mark.parametrize(
    ("raw", "address", "port"),
    [
        ({"exposure": "nodePort", "apiHost": "192.0.2.1", "nodePort": "30001"}, "192.0.2.1", 30001),
        ({"exposure": "loadBalancer", "loadBalancerIP": "192.0.2.2"}, "192.0.2.2", 6443),
        ({"exposure": "nodePort", "apiAdvertiseAddress": "192.0.2.3"}, "192.0.2.3", 31443),
        ({"exposure": "ingress"}, None, 443),
    ],
)
def test_address_nodes_use_for_kubernetes_default(
    raw: dict[str, str], address: str | None, port: int
) -> None:
    settings = parse_settings(raw)
    assert (settings.node_api_address, settings.node_api_port) == (address, port)


def test_certificate_lifetime_and_renewal_window_reach_every_leaf() -> None:
    config = {"certificateValidityHours": "48", "certificateRenewalHours": "48"}
    run = run_program(config)
    leaves = run.of_type("tls:index/locallySignedCert:LocallySignedCert")
    assert leaves
    for leaf in leaves:
        assert (leaf.inputs["validityPeriodHours"], leaf.inputs["earlyRenewalHours"]) == (48, 48)
    # The CAs keep their ten years whatever the leaves do.
    for ca in run.of_type("tls:index/selfSignedCert:SelfSignedCert"):
        assert ca.inputs["validityPeriodHours"] == 10 * 365 * 24


@pytest.mark.parametrize(
    ("value", "seconds"), [("24h", 86400), ("1h30m", 5400), ("90s", 90), ("0", 0)]
)
def test_bootstrap_token_lifetime_is_a_duration_or_zero(value: str, seconds: int) -> None:
    assert parse_settings({"bootstrapTokenTtl": value}).bootstrap_token_ttl_seconds == seconds
    assert parse_settings({}).bootstrap_token_ttl_seconds == 24 * 3600, "kubeadm's default"


@pytest.mark.parametrize(
    "value",
    [
        "etcd=sha256:abc",  # too short
        "etcd:sha256:" + "a" * 64,  # no '='
        "nginx=sha256:" + "a" * 64,  # not one of the program's images
        f"etcd=sha256:{'a' * 64},etcd=sha256:{'b' * 64}",  # named twice
    ],
)
def test_image_digests_are_refused_unless_well_formed(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings({"imageDigests": value})
    assert "k8s-on-k8s:imageDigests" in str(raised.value)
    assert "kube-apiserver" in str(raised.value), "the message lists the names allowed"


def test_an_explicit_proxy_image_is_used_as_given() -> None:
    image = "mirror.example/haproxy@sha256:" + "c" * 64
    settings = parse_settings({"imageRegistry": "other.example/k8s", "apiProxyImage": image})
    assert settings.api_proxy_image == image
