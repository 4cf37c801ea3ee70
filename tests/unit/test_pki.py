"""The PKI for real: every certificate chains to the right CA with kubeadm's subjects and usages.

The mocks issue real certificates from the program's inputs, so a wrong SAN, CA or usage in the
program shows up here as it would in the apiserver's TLS handshake.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress

import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components.common.names import ObjectNames
from components.config import parse_settings
from components.host.certs import api_server_sans, certificate_plan
from tests.harness import ProgramRun, run_program

CONFIG = {
    "clusterName": "blue",
    "namespace": "tenant-blue",
    "apiHost": "api.blue.example.com",
    "etcdReplicas": "3",
}


@pytest.fixture(scope="module")
def run() -> ProgramRun:
    return run_program(CONFIG)


@pytest.fixture(scope="module")
def certificates(run: ProgramRun) -> dict[str, x509.Certificate]:
    """Every certificate the program's Secrets carry, by file name in the Secret."""
    found: dict[str, x509.Certificate] = {}
    for secret in run.of_type("kubernetes:core/v1:Secret"):
        for file_name, value in secret.inputs.get("stringData", {}).items():
            if "BEGIN CERTIFICATE" in value:
                found[f"{secret.inputs['metadata']['name']}/{file_name}"] = (
                    x509.load_pem_x509_certificate(value.encode())
                )
    return found


def cert(
    certificates: dict[str, x509.Certificate], secret: str, file_name: str
) -> x509.Certificate:
    return certificates[f"{secret}/{file_name}"]


def common_name(certificate: x509.Certificate) -> str:
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def organizations(certificate: x509.Certificate) -> list[str]:
    return [
        str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    ]


def extended_usages(certificate: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def sans(certificate: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)
    }


def validity_days(certificate: x509.Certificate) -> float:
    span = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    return span / datetime.timedelta(days=1)


def is_ca(certificate: x509.Certificate) -> bool:
    return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


APISERVER = "blue-apiserver-pki"
ETCD = "blue-etcd-pki"


def test_three_distinct_ten_year_cas(certificates: dict[str, x509.Certificate]) -> None:
    cluster_ca = cert(certificates, APISERVER, "ca.crt")
    front_proxy_ca = cert(certificates, APISERVER, "front-proxy-ca.crt")
    etcd_ca = cert(certificates, APISERVER, "etcd-ca.crt")
    assert [common_name(c) for c in (cluster_ca, front_proxy_ca, etcd_ca)] == [
        "kubernetes",
        "front-proxy-ca",
        "etcd-ca",
    ]
    for ca in (cluster_ca, front_proxy_ca, etcd_ca):
        assert is_ca(ca)
        assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
        assert 3649 <= validity_days(ca) <= 3651
        ca.verify_directly_issued_by(ca)
    assert (
        len(
            {
                c.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                for c in (cluster_ca, front_proxy_ca, etcd_ca)
            }
        )
        == 3
    )
    # The etcd Secret carries the same etcd CA the apiserver trusts.
    assert cert(certificates, ETCD, "ca.crt") == etcd_ca


# (secret, file, issuing CA file in the apiserver Secret, CN, O, extended usages)
LEAVES = [
    (APISERVER, "apiserver.crt", "ca.crt", "kube-apiserver", [], {ExtendedKeyUsageOID.SERVER_AUTH}),
    (
        APISERVER,
        "apiserver-kubelet-client.crt",
        "ca.crt",
        "kube-apiserver-kubelet-client",
        ["system:masters"],
        {ExtendedKeyUsageOID.CLIENT_AUTH},
    ),
    (
        APISERVER,
        "apiserver-etcd-client.crt",
        "etcd-ca.crt",
        "kube-apiserver-etcd-client",
        [],
        {ExtendedKeyUsageOID.CLIENT_AUTH},
    ),
    (
        APISERVER,
        "front-proxy-client.crt",
        "front-proxy-ca.crt",
        "front-proxy-client",
        [],
        {ExtendedKeyUsageOID.CLIENT_AUTH},
    ),
    (
        "kubernetes-api-proxy",  # in the tenant cluster: the node-local proxy (exposure ingress)
        "tls.crt",
        "ca.crt",
        "kubernetes-api-proxy",
        [],
        {ExtendedKeyUsageOID.SERVER_AUTH},
    ),
    *[
        (
            ETCD,
            f"{kind}.crt",
            "etcd-ca.crt",
            "blue-etcd",
            [],
            {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH},
        )
        for kind in ("server", "peer")
    ],
]


@pytest.mark.parametrize(("secret", "file_name", "ca_file", "cn", "orgs", "usages"), LEAVES)
def test_leaf_chains_to_its_ca_with_kubeadm_subject_and_usages(
    certificates: dict[str, x509.Certificate],
    secret: str,
    file_name: str,
    ca_file: str,
    cn: str,
    orgs: list[str],
    usages: set[x509.ObjectIdentifier],
) -> None:
    leaf = cert(certificates, secret, file_name)
    ca = cert(certificates, APISERVER, ca_file)
    leaf.verify_directly_issued_by(ca)  # raises on a wrong issuer or signature
    assert common_name(leaf) == cn
    assert organizations(leaf) == orgs
    assert extended_usages(leaf) == usages
    assert not is_ca(leaf)
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert 364 <= validity_days(leaf) <= 366


def test_leaves_do_not_chain_to_the_wrong_ca(certificates: dict[str, x509.Certificate]) -> None:
    with pytest.raises((ValueError, InvalidSignature)):
        cert(certificates, APISERVER, "apiserver-etcd-client.crt").verify_directly_issued_by(
            cert(certificates, APISERVER, "ca.crt")
        )


def test_apiserver_serving_cert_names(certificates: dict[str, x509.Certificate]) -> None:
    dns, ips = sans(cert(certificates, APISERVER, "apiserver.crt"))
    assert {
        "api.blue.example.com",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "blue-apiserver",
        "blue-apiserver.tenant-blue",
        "blue-apiserver.tenant-blue.svc",
        "blue-apiserver.tenant-blue.svc.cluster.local",
        "localhost",
    } <= dns
    assert {"10.96.0.1", "127.0.0.1"} <= ips


def test_kubernetes_service_proxy_cert_names_what_in_cluster_clients_dial(
    run: ProgramRun, certificates: dict[str, x509.Certificate]
) -> None:
    leaf = cert(certificates, "kubernetes-api-proxy", "tls.crt")
    assert sans(leaf) == (
        {
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        },
        # The ClusterIP, and the proxy's node-local address (host-network clients may dial it).
        {"10.96.0.1", "172.20.0.1"},
    )
    (secret,) = [
        r
        for r in run.of_type("kubernetes:core/v1:Secret")
        if r.inputs["metadata"]["name"] == "kubernetes-api-proxy"
    ]
    key = serialization.load_pem_private_key(secret.inputs["stringData"]["tls.key"].encode(), None)
    assert key.public_key() == leaf.public_key()
    assert {"stringData", "stringData.tls.key"} & secret.secret_paths


def test_no_proxy_cert_when_nodes_reach_the_api_by_address() -> None:
    settings = parse_settings(
        {**CONFIG, "exposure": "nodePort", "apiAdvertiseAddress": "192.0.2.10"}
    )
    names = ObjectNames("blue", "tenant-blue", "cluster.local")
    assert "kubernetes-service-proxy" not in {s.name for s in certificate_plan(settings, names)}


def test_etcd_members_share_one_server_and_one_peer_cert_naming_each_member(
    certificates: dict[str, x509.Certificate],
) -> None:
    peer_dns, peer_ips = sans(cert(certificates, ETCD, "peer.crt"))
    server_dns, server_ips = sans(cert(certificates, ETCD, "server.crt"))
    for i in range(3):
        for dns in (peer_dns, server_dns):
            assert f"blue-etcd-{i}.blue-etcd-peer.tenant-blue.svc.cluster.local" in dns
            assert f"blue-etcd-{i}.blue-etcd-peer" in dns
    assert not [name for name in peer_dns | server_dns if "*" in name], "etcd checks by lookup"
    assert {"127.0.0.1", "::1"} <= peer_ips & server_ips
    assert "blue-etcd.tenant-blue.svc.cluster.local" in server_dns  # the client Service
    assert "blue-etcd.tenant-blue.svc.cluster.local" not in peer_dns


def test_the_etcd_secret_holds_two_key_pairs_and_no_unused_client(run: ProgramRun) -> None:
    (secret,) = [
        r.inputs
        for r in run.of_type("kubernetes:core/v1:Secret")
        if r.inputs["metadata"]["name"] == ETCD
    ]
    assert set(secret["stringData"]) == {
        "ca.crt",
        "server.crt",
        "server.key",
        "peer.crt",
        "peer.key",
    }


def test_controller_manager_and_scheduler_identities(run: ProgramRun) -> None:
    expected = {
        "blue-controller-manager-config": "system:kube-controller-manager",
        "blue-scheduler-config": "system:kube-scheduler",
    }
    ca = None
    for secret in run.of_type("kubernetes:core/v1:Secret"):
        if secret.inputs["metadata"]["name"] == APISERVER:
            ca = x509.load_pem_x509_certificate(secret.inputs["stringData"]["ca.crt"].encode())
    assert ca is not None
    for secret in run.of_type("kubernetes:core/v1:Secret"):
        name = secret.inputs["metadata"]["name"]
        if name not in expected:
            continue
        kubeconfig = yaml.safe_load(secret.inputs["stringData"]["kubeconfig"])
        user = kubeconfig["users"][0]
        client = x509.load_pem_x509_certificate(
            base64.b64decode(user["user"]["client-certificate-data"])
        )
        client.verify_directly_issued_by(ca)
        assert common_name(client) == expected[name] == user["name"]
        assert kubeconfig["clusters"][0]["cluster"]["server"] == (
            "https://blue-apiserver.tenant-blue.svc.cluster.local:6443"
        )
        expected.pop(name)
    assert expected == {}


def test_kubeconfig_output_parses_and_its_client_is_signed_by_the_cluster_ca(
    run: ProgramRun,
) -> None:
    kubeconfig = yaml.safe_load(run.outputs["kubeconfig"])
    cluster = kubeconfig["clusters"][0]["cluster"]
    assert cluster["server"] == run.outputs["endpoint"] == "https://api.blue.example.com"
    ca = x509.load_pem_x509_certificate(base64.b64decode(cluster["certificate-authority-data"]))
    assert (
        ca.public_bytes(serialization.Encoding.PEM).decode() == run.outputs["clusterCaCertificate"]
    )
    user = kubeconfig["users"][0]["user"]
    client = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    client.verify_directly_issued_by(ca)
    assert common_name(client) == "kubernetes-admin"
    # kubeadm's revocable admin: cluster-admin only through a binding in the tenant.
    assert organizations(client) == ["kubeadm:cluster-admins"]
    key = serialization.load_pem_private_key(base64.b64decode(user["client-key-data"]), None)
    assert key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == client.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert kubeconfig["current-context"] == kubeconfig["contexts"][0]["name"]


def test_service_account_key_pair_matches(run: ProgramRun) -> None:
    secret = next(
        s
        for s in run.of_type("kubernetes:core/v1:Secret")
        if s.inputs["metadata"]["name"] == APISERVER
    )
    private = serialization.load_pem_private_key(
        secret.inputs["stringData"]["sa.key"].encode(), None
    )
    public = serialization.load_pem_public_key(secret.inputs["stringData"]["sa.pub"].encode())
    assert private.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]


def test_leaves_renew_in_their_last_30_days_and_cas_never_early(run: ProgramRun) -> None:
    for resource in run.of_type("tls:index/locallySignedCert:LocallySignedCert"):
        assert resource.inputs["earlyRenewalHours"] == 30 * 24
        assert resource.inputs["validityPeriodHours"] == 365 * 24
    for resource in run.of_type("tls:index/selfSignedCert:SelfSignedCert"):
        assert (
            "earlyRenewalHours" not in resource.inputs or resource.inputs["earlyRenewalHours"] == 0
        )
        assert resource.inputs["validityPeriodHours"] == 10 * 365 * 24


def test_plan_uses_an_ip_host_as_ip_san() -> None:
    settings = parse_settings({"apiHost": "198.51.100.7", "exposure": "nodePort"})
    names = ObjectNames(settings.cluster_name, settings.namespace, settings.infra_cluster_domain)
    dns, ips = api_server_sans(settings, names)
    assert "198.51.100.7" in ips and "198.51.100.7" not in dns
    assert all(ipaddress.ip_address(ip) for ip in ips)


def test_plan_has_one_server_and_one_peer_cert_whatever_the_member_count() -> None:
    for members in (1, 3):
        settings = parse_settings({"etcdReplicas": str(members)})
        names = ObjectNames(
            settings.cluster_name, settings.namespace, settings.infra_cluster_domain
        )
        plan = [spec.name for spec in certificate_plan(settings, names)]
        assert [name for name in plan if name.startswith("etcd-")] == ["etcd-server", "etcd-peer"]
        assert "etcd-healthcheck-client" not in plan, "issued only if something used it"
        assert len(plan) == len(set(plan))
