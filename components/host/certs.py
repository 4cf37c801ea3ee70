"""Pki: the control plane's certificate authorities, leaf certificates and service-account key.

The set mirrors kubeadm's certs phase (cmd/kubeadm/app/phases/certs): three CAs, the apiserver
serving and client certificates, one etcd server and one peer certificate for all members, and
the client identities of the admins, the controller-manager and the scheduler.
`certificate_plan` says what each certificate holds and `certificate_expiry` what the
`certificateExpiry` output says; both are tested directly, and the component only turns the plan
into pulumi-tls resources.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_tls as tls

from components.common.identities import (
    ADMIN_GROUP,
    ADMIN_USER,
    SUPER_ADMIN_GROUP,
    SUPER_ADMIN_USER,
    KeyPair,
)
from components.common.names import ObjectNames
from components.config import ControlPlaneSettings, ExposureMode, is_ip

CA_VALIDITY_HOURS = 10 * 365 * 24

CLUSTER_CA = "ca"
FRONT_PROXY_CA = "front-proxy-ca"
ETCD_CA = "etcd-ca"

# kubeadm's CA common names.
CA_COMMON_NAMES = {CLUSTER_CA: "kubernetes", FRONT_PROXY_CA: "front-proxy-ca", ETCD_CA: "etcd-ca"}

SERVER = ("digital_signature", "server_auth")
CLIENT = ("digital_signature", "client_auth")
SERVER_AND_CLIENT = ("digital_signature", "server_auth", "client_auth")
CA_USES = ("cert_signing", "crl_signing", "digital_signature")


@dataclass(frozen=True)
class CertificateSpec:
    name: str  # file stem, e.g. "apiserver-etcd-client"
    ca: str  # CLUSTER_CA, FRONT_PROXY_CA or ETCD_CA
    common_name: str
    uses: tuple[str, ...]
    organization: str | None = None
    dns_names: tuple[str, ...] = field(default=())
    ip_addresses: tuple[str, ...] = field(default=())


# The konnectivity proxy-server's identity for TokenReviews of its agents (no group: RBAC in the
# tenant binds this user to system:auth-delegator).
KONNECTIVITY_SERVER_CLIENT = CertificateSpec(
    "konnectivity-server-client", CLUSTER_CA, "system:konnectivity-server", CLIENT
)


# The serving certificate of the API proxy behind `kubernetes.default` (exposure ingress,
# components/tenant/in_cluster_api): it answers in-cluster clients by the names and the IPs
# they dial (the ClusterIP, or the proxy's own node-local address from the host network). Its
# name and common name stay as deployed: a new name would replace the certificate.
API_PROXY_CERT = "kubernetes-service-proxy"


def api_proxy_cert(settings: ControlPlaneSettings) -> CertificateSpec:
    return CertificateSpec(
        API_PROXY_CERT,
        CLUSTER_CA,
        "kubernetes-api-proxy",
        SERVER,
        None,
        tuple(kubernetes_service_dns_names(settings)),
        (settings.kubernetes_service_ip, settings.api_proxy_address),
    )


def kubernetes_service_dns_names(settings: ControlPlaneSettings) -> list[str]:
    return [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{settings.cluster_domain}",
    ]


# One serving and one peer certificate shared by every etcd member (as Kamaji does), not one
# per member: a StatefulSet has one pod template, so per-member keys would sit in every member's
# Secret anyway, and members accept any peer certificate of the etcd CA, so separate keys would
# isolate nothing. Each names every member explicitly (etcd checks a peer's address against
# the DNS names of its certificate by forward lookup; wildcards would need reverse DNS).
ETCD_SERVER = "etcd-server"
ETCD_PEER = "etcd-peer"


def api_server_sans(
    settings: ControlPlaneSettings, names: ObjectNames
) -> tuple[list[str], list[str]]:
    """DNS names and IPs of the apiserver serving certificate."""
    host = settings.exposure.host
    dns = [
        *kubernetes_service_dns_names(settings),
        *names.service_dns_names(names.api_server),
        *names.service_dns_names(names.exposure),
        "localhost",
    ]
    ips = [settings.kubernetes_service_ip, "127.0.0.1"]
    (ips if is_ip(host) else dns).append(host)
    if settings.exposure.load_balancer_ip:
        ips.append(settings.exposure.load_balancer_ip)
    return _unique(dns), _unique(ips)


def certificate_plan(settings: ControlPlaneSettings, names: ObjectNames) -> list[CertificateSpec]:
    api_dns, api_ips = api_server_sans(settings, names)
    plan = [
        CertificateSpec(
            "apiserver", CLUSTER_CA, "kube-apiserver", SERVER, None, tuple(api_dns), tuple(api_ips)
        ),
        CertificateSpec(
            "apiserver-kubelet-client",
            CLUSTER_CA,
            "kube-apiserver-kubelet-client",
            CLIENT,
            "system:masters",
        ),
        CertificateSpec("apiserver-etcd-client", ETCD_CA, "kube-apiserver-etcd-client", CLIENT),
        CertificateSpec("front-proxy-client", FRONT_PROXY_CA, "front-proxy-client", CLIENT),
        CertificateSpec("admin", CLUSTER_CA, ADMIN_USER, CLIENT, ADMIN_GROUP),
        CertificateSpec("super-admin", CLUSTER_CA, SUPER_ADMIN_USER, CLIENT, SUPER_ADMIN_GROUP),
        CertificateSpec("controller-manager", CLUSTER_CA, "system:kube-controller-manager", CLIENT),
        CertificateSpec("scheduler", CLUSTER_CA, "system:kube-scheduler", CLIENT),
    ]
    if settings.konnectivity:
        plan.append(KONNECTIVITY_SERVER_CLIENT)
    if settings.exposure.mode is ExposureMode.INGRESS:
        plan.append(api_proxy_cert(settings))
    local_dns, local_ips = ("localhost",), ("127.0.0.1", "::1")
    client_service_dns = tuple(names.service_dns_names(names.etcd))
    members_dns = tuple(
        dns
        for member in names.etcd_members(settings.etcd_replicas)
        for dns in names.etcd_member_dns_names(member)
    )
    plan.append(
        CertificateSpec(
            ETCD_SERVER,
            ETCD_CA,
            names.etcd,
            SERVER_AND_CLIENT,
            None,
            (*members_dns, *client_service_dns, *local_dns),
            local_ips,
        )
    )
    plan.append(
        CertificateSpec(
            ETCD_PEER,
            ETCD_CA,
            names.etcd,
            SERVER_AND_CLIENT,
            None,
            (*members_dns, *local_dns),
            local_ips,
        )
    )
    return plan


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def not_after(validity_end_time: str) -> datetime.datetime:
    """A certificate's notAfter from pulumi-tls' `validity_end_time`.

    terraform-provider-tls writes Go's RFC 3339 with nanoseconds in the provider's local zone
    (2027-12-02T10:00:00.123456789Z); the certificate itself holds whole seconds (Go truncates),
    so this is that time in UTC without the fraction.
    """
    moment = datetime.datetime.fromisoformat(validity_end_time)
    if moment.tzinfo is None:
        raise ValueError(f"{validity_end_time!r} has no time zone (RFC 3339 has one)")
    return moment.astimezone(datetime.UTC).replace(microsecond=0)


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _earliest(validity_end_times: Mapping[str, str]) -> tuple[datetime.datetime, list[str]]:
    """The earliest notAfter and every certificate that ends then (sorted names)."""
    if not validity_end_times:
        raise ValueError("no certificates")
    ends = {name: not_after(end) for name, end in validity_end_times.items()}
    first = min(ends.values())
    return first, sorted(name for name, end in ends.items() if end == first)


def certificate_expiry(
    leaves: Mapping[str, str], cas: Mapping[str, str], leaf_renewal_hours: int
) -> dict[str, Any]:
    """The `certificateExpiry` output, from `validity_end_time` by certificate name (the names of
    `kubeadm certs check-expiration`: leaves as in `certificate_plan`, CAs as CA_COMMON_NAMES).

    Each group names every certificate that ends at its earliest notAfter (leaves issued by one
    `pulumi up` end in the same second). A `pulumi up` from `renewalWindowStart` on issues
    the leaf anew (the provider counts from its sub-second end: at most a second later); CAs
    have no renewal window.
    """
    leaf_end, leaf_names = _earliest(leaves)
    ca_end, ca_names = _earliest(cas)
    return {
        "earliestLeaf": {
            "certificates": leaf_names,
            "notAfter": _rfc3339(leaf_end),
            "renewalWindowStart": _rfc3339(leaf_end - datetime.timedelta(hours=leaf_renewal_hours)),
        },
        "earliestCa": {"certificates": ca_names, "notAfter": _rfc3339(ca_end)},
        "leafRenewalWindowHours": leaf_renewal_hours,
    }


class Pki(pulumi.ComponentResource):
    """Every certificate and key of one control plane; keys never leave as plain outputs."""

    def __init__(
        self,
        name: str,
        settings: ControlPlaneSettings,
        names: ObjectNames,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("k8s-on-k8s:index:Pki", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.cas: dict[str, KeyPair] = {}
        # validity_end_time by certificate name: plain outputs of pulumi-tls (only the keys are
        # secret), so certificateExpiry is plain too.
        ca_ends: dict[str, pulumi.Output[str]] = {}
        self._leaf_ends: dict[str, pulumi.Output[str]] = {}
        for ca, common_name in CA_COMMON_NAMES.items():
            key = _private_key(f"{name}-{ca}", child)
            cert = tls.SelfSignedCert(
                f"{name}-{ca}",
                private_key_pem=key.private_key_pem,
                subject=tls.SelfSignedCertSubjectArgs(common_name=common_name),
                is_ca_certificate=True,
                set_subject_key_id=True,
                validity_period_hours=CA_VALIDITY_HOURS,
                allowed_uses=list(CA_USES),
                opts=child,
            )
            self.cas[ca] = KeyPair(cert.cert_pem, pulumi.Output.secret(key.private_key_pem))
            ca_ends[ca] = cert.validity_end_time

        self.leaves: dict[str, KeyPair] = {}
        for spec in certificate_plan(settings, names):
            self.leaves[spec.name] = self._leaf(name, spec, settings, child)

        # RSA, like kubeadm's sa.key: every token reviewer understands RS256.
        service_account_key = tls.PrivateKey(
            f"{name}-service-account", algorithm="RSA", rsa_bits=2048, opts=child
        )
        self.service_account_private_key_pem: pulumi.Output[str] = pulumi.Output.secret(
            service_account_key.private_key_pem
        )
        self.service_account_public_key_pem = service_account_key.public_key_pem

        self.ca_cert_pem = self.cas[CLUSTER_CA].cert_pem
        renewal_hours = settings.certificate_renewal_hours
        self.certificate_expiry: pulumi.Output[dict[str, Any]] = pulumi.Output.all(
            leaves=pulumi.Output.all(**self._leaf_ends), cas=pulumi.Output.all(**ca_ends)
        ).apply(lambda ends: certificate_expiry(ends["leaves"], ends["cas"], renewal_hours))
        self.register_outputs(
            {"caCertPem": self.ca_cert_pem, "certificateExpiry": self.certificate_expiry}
        )

    def _leaf(
        self,
        name: str,
        spec: CertificateSpec,
        settings: ControlPlaneSettings,
        child: pulumi.ResourceOptions,
    ) -> KeyPair:
        key = _private_key(f"{name}-{spec.name}", child)
        request = tls.CertRequest(
            f"{name}-{spec.name}",
            private_key_pem=key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(
                common_name=spec.common_name, organization=spec.organization
            ),
            dns_names=list(spec.dns_names),
            ip_addresses=list(spec.ip_addresses),
            opts=child,
        )
        ca = self.cas[spec.ca]
        cert = tls.LocallySignedCert(
            f"{name}-{spec.name}",
            cert_request_pem=request.cert_request_pem,
            ca_cert_pem=ca.cert_pem,
            ca_private_key_pem=ca.key_pem,
            validity_period_hours=settings.certificate_validity_hours,
            # A `pulumi up` inside this window before the end issues a new certificate.
            early_renewal_hours=settings.certificate_renewal_hours,
            allowed_uses=list(spec.uses),
            opts=child,
        )
        self._leaf_ends[spec.name] = cert.validity_end_time
        return KeyPair(cert.cert_pem, pulumi.Output.secret(key.private_key_pem))


def _private_key(name: str, opts: pulumi.ResourceOptions) -> tls.PrivateKey:
    # ECDSA P-256 (kubeadm's ECDSA-P256 option): much faster to create than RSA, same security.
    return tls.PrivateKey(name, algorithm="ECDSA", ecdsa_curve="P256", opts=opts)
