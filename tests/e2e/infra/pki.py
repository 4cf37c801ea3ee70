"""The infra cluster's PKI: one CA, serving certs, client certs and the service-account key pair.

ECDSA P-256 everywhere: every Kubernetes component accepts it and it is fast to generate.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .settings import RigSettings

VALIDITY = datetime.timedelta(days=30)
# Backdated so a cert is valid even if clocks disagree by a few minutes.
BACKDATE = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class KeyPair:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True)
class CertificateRequest:
    """What a leaf certificate says about its holder."""

    common_name: str
    organizations: Sequence[str] = ()
    dns_names: Sequence[str] = ()
    ip_addresses: Sequence[str] = ()
    server: bool = False
    client: bool = True


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def create_ca(common_name: str) -> KeyPair:
    key = new_key()
    now = datetime.datetime.now(datetime.UTC)
    subject = _name(common_name)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(key, certificate)


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """Digital signature for every certificate; certificate and CRL signing for CAs only."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def issue(ca: KeyPair, request: CertificateRequest) -> KeyPair:
    key = new_key()
    now = datetime.datetime.now(datetime.UTC)
    usages = []
    if request.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if request.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(request.common_name, request.organizations))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    alternative_names: list[x509.GeneralName] = [x509.DNSName(n) for n in request.dns_names]
    alternative_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in request.ip_addresses]
    if alternative_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(alternative_names), critical=False
        )
    return KeyPair(key, builder.sign(ca.key, hashes.SHA256()))


def certificate_requests(settings: RigSettings) -> dict[str, CertificateRequest]:
    """Every leaf the rig needs, by file stem, as kubeadm names them where kubeadm has one."""
    domain = settings.cluster_domain
    node = settings.node_name
    return {
        "apiserver": CertificateRequest(
            "kube-apiserver",
            dns_names=(
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                f"kubernetes.default.svc.{domain}",
                "localhost",
                node,
            ),
            ip_addresses=("127.0.0.1", settings.node_ip, settings.kubernetes_service_ip),
            server=True,
            client=False,
        ),
        "apiserver-kubelet-client": CertificateRequest(
            "kube-apiserver-kubelet-client", organizations=("system:masters",)
        ),
        "admin": CertificateRequest("rig-admin", organizations=("system:masters",)),
        "controller-manager": CertificateRequest("system:kube-controller-manager"),
        "scheduler": CertificateRequest("system:kube-scheduler"),
        "kube-proxy": CertificateRequest("system:kube-proxy"),
        "kubelet": CertificateRequest(f"system:node:{node}", organizations=("system:nodes",)),
        # The kubelet's serving cert, signed by the CA so the apiserver can verify it.
        "kubelet-server": CertificateRequest(
            f"system:node:{node}",
            dns_names=(node, "localhost"),
            ip_addresses=(settings.node_ip, "127.0.0.1"),
            server=True,
            client=False,
        ),
        # A client-cert user with no group: its only rights come from a RoleBinding.
        settings.tenant_user: CertificateRequest(settings.tenant_user),
    }


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created with the final mode so a key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(path, mode)


def write_key_pair(directory: Path, stem: str, pair: KeyPair) -> None:
    _write(directory / f"{stem}.crt", pair.certificate_pem, 0o644)
    _write(directory / f"{stem}.key", pair.key_pem, 0o600)


@dataclass(frozen=True)
class Pki:
    """The files of the PKI on disk."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    def cert(self, stem: str) -> Path:
        return self.directory / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.directory / f"{stem}.key"

    @property
    def service_account_public_key(self) -> Path:
        return self.directory / "sa.pub"

    @property
    def service_account_private_key(self) -> Path:
        return self.directory / "sa.key"


def create_pki(settings: RigSettings) -> Pki:
    """Writes a fresh PKI to settings.pki_dir and returns where its files are."""
    pki = Pki(settings.pki_dir)
    settings.pki_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.pki_dir, 0o700)
    ca = create_ca("k8s-on-k8s-rig-ca")
    write_key_pair(pki.directory, "ca", ca)
    for stem, request in certificate_requests(settings).items():
        write_key_pair(pki.directory, stem, issue(ca, request))
    # The aggregation layer's own CA, as kubeadm sets it up (controllers read it at start).
    front_proxy_ca = create_ca("front-proxy-ca")
    write_key_pair(pki.directory, "front-proxy-ca", front_proxy_ca)
    write_key_pair(
        pki.directory,
        "front-proxy-client",
        issue(front_proxy_ca, CertificateRequest("front-proxy-client")),
    )
    service_account_key = new_key()
    _write(
        pki.service_account_private_key,
        service_account_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _write(
        pki.service_account_public_key,
        service_account_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )
    return pki
