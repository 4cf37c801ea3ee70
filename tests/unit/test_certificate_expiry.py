"""The `certificateExpiry` output (issue 12, item 5): the earliest end among the leaves and
among the CAs, plain (not secret), as the certificates themselves say."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Iterable, Iterator

import pytest
import yaml
from cryptography import x509

from components.common.names import ObjectNames
from components.config import parse_settings
from components.host.certs import CA_COMMON_NAMES, certificate_expiry, certificate_plan, not_after
from tests.harness import ProgramRun, run_program

CONFIG = {"clusterName": "amber", "namespace": "tenant-amber", "apiHost": "api.amber.example.com"}


def test_the_earliest_leaf_and_the_earliest_ca() -> None:
    expiry = certificate_expiry(
        {
            "apiserver": "2027-06-01T10:00:00Z",
            "admin": "2027-05-01T10:00:00Z",
            "scheduler": "2027-07-01T10:00:00Z",
        },
        {"ca": "2036-01-01T00:00:00Z", "etcd-ca": "2035-12-31T23:59:59Z"},
        720,
    )
    assert expiry == {
        "earliestLeaf": {
            "certificates": ["admin"],
            "notAfter": "2027-05-01T10:00:00Z",
            "renewalWindowStart": "2027-04-01T10:00:00Z",
        },
        "earliestCa": {"certificates": ["etcd-ca"], "notAfter": "2035-12-31T23:59:59Z"},
        "leafRenewalWindowHours": 720,
    }


def test_ties_name_every_certificate_ending_then_sorted() -> None:
    # One `pulumi up` issues every leaf within a second: they share the certificate's notAfter
    # (whole seconds), whatever the nanoseconds of the provider's validity_end_time.
    expiry = certificate_expiry(
        {
            "scheduler": "2027-05-01T10:00:00.9Z",
            "admin": "2027-05-01T10:00:00.000000001Z",
            "apiserver": "2027-05-01T10:00:00Z",
            "etcd-peer": "2027-05-01T10:00:01Z",
        },
        {"front-proxy-ca": "2036-01-01T00:00:00Z", "ca": "2036-01-01T00:00:00.5Z"},
        48,
    )
    assert expiry["earliestLeaf"]["certificates"] == ["admin", "apiserver", "scheduler"]
    assert expiry["earliestLeaf"]["notAfter"] == "2027-05-01T10:00:00Z"
    assert expiry["earliestCa"]["certificates"] == ["ca", "front-proxy-ca"]


def test_cas_and_leaves_are_kept_apart() -> None:
    # A CA that ends before every leaf is still only the earliest CA, and the other way round.
    expiry = certificate_expiry(
        {"apiserver": "2030-01-01T00:00:00Z"}, {"ca": "2029-01-01T00:00:00Z"}, 0
    )
    assert expiry["earliestLeaf"]["certificates"] == ["apiserver"]
    assert expiry["earliestLeaf"]["notAfter"] == "2030-01-01T00:00:00Z"
    assert expiry["earliestLeaf"]["renewalWindowStart"] == "2030-01-01T00:00:00Z"
    assert expiry["earliestCa"] == {"certificates": ["ca"], "notAfter": "2029-01-01T00:00:00Z"}


def test_go_time_text_in_any_zone_becomes_the_certificates_utc_second() -> None:
    """terraform-provider-tls writes Go's MarshalText of time.Now(): nanoseconds, local zone."""
    assert not_after("2027-12-02T11:00:00.123456789+01:00") == datetime.datetime(
        2027, 12, 2, 10, 0, 0, tzinfo=datetime.UTC
    )
    expiry = certificate_expiry(
        {"admin": "2027-12-02T05:30:00.5-05:00", "apiserver": "2027-12-02T10:30:00.2Z"},
        {"ca": "2036-12-02T10:30:00Z"},
        1,
    )
    assert expiry["earliestLeaf"] == {
        "certificates": ["admin", "apiserver"],
        "notAfter": "2027-12-02T10:30:00Z",
        "renewalWindowStart": "2027-12-02T09:30:00Z",
    }


@pytest.mark.parametrize("end", ["2027-12-02T10:00:00", "next year"])
def test_a_time_that_is_not_rfc_3339_is_refused(end: str) -> None:
    with pytest.raises(ValueError):
        not_after(end)


def test_no_certificates_is_refused() -> None:
    with pytest.raises(ValueError, match="no certificates"):
        certificate_expiry({}, {"ca": "2036-01-01T00:00:00Z"}, 1)


# --- the program ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run() -> ProgramRun:
    return run_program(CONFIG)


def certificates_in(values: Iterable[str]) -> Iterator[x509.Certificate]:
    """Every certificate in these Secret values: PEM files and kubeconfigs' embedded data."""
    for value in values:
        if "BEGIN CERTIFICATE" in value:
            yield from x509.load_pem_x509_certificates(value.encode())
        elif "client-certificate-data" in value:
            document = yaml.safe_load(value)
            for entry in document["users"]:
                data = entry["user"]["client-certificate-data"]
                yield from x509.load_pem_x509_certificates(base64.b64decode(data))


def is_ca(certificate: x509.Certificate) -> bool:
    return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)


def test_the_program_exports_it_plain(run: ProgramRun) -> None:
    assert "certificateExpiry" not in run.secret_outputs
    assert "PRIVATE KEY" not in json.dumps(run.outputs["certificateExpiry"])
    assert "CERTIFICATE" not in json.dumps(run.outputs["certificateExpiry"])


def test_it_says_what_the_stored_certificates_say(run: ProgramRun) -> None:
    stored = list(
        certificates_in(
            value
            for secret in run.of_type("kubernetes:core/v1:Secret")
            for value in secret.inputs.get("stringData", {}).values()
        )
    )
    expiry = run.outputs["certificateExpiry"]
    earliest_leaf = min(c.not_valid_after_utc for c in stored if not is_ca(c))
    earliest_ca = min(c.not_valid_after_utc for c in stored if is_ca(c))
    assert expiry["earliestLeaf"]["notAfter"] == earliest_leaf.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert expiry["earliestCa"]["notAfter"] == earliest_ca.strftime("%Y-%m-%dT%H:%M:%SZ")
    # Named as kubeadm names them; every leaf and every CA was issued by this one run.
    settings = parse_settings(CONFIG)
    names = ObjectNames(
        cluster=settings.cluster_name,
        namespace=settings.namespace,
        infra_cluster_domain=settings.infra_cluster_domain,
    )
    plan = {spec.name for spec in certificate_plan(settings, names)}
    assert set(expiry["earliestLeaf"]["certificates"]) <= plan
    assert set(expiry["earliestCa"]["certificates"]) <= set(CA_COMMON_NAMES)
    assert expiry["leafRenewalWindowHours"] == settings.certificate_renewal_hours == 720
    window = datetime.timedelta(hours=720)
    assert expiry["earliestLeaf"]["renewalWindowStart"] == (earliest_leaf - window).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def test_the_renewal_window_is_the_configured_one() -> None:
    expiry = run_program(
        {**CONFIG, "certificateValidityHours": "100", "certificateRenewalHours": "40"}
    ).outputs["certificateExpiry"]
    assert expiry["leafRenewalWindowHours"] == 40
    end = datetime.datetime.fromisoformat(expiry["earliestLeaf"]["notAfter"])
    start = datetime.datetime.fromisoformat(expiry["earliestLeaf"]["renewalWindowStart"])
    assert end - start == datetime.timedelta(hours=40)
    now = datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(hours=99) < end - now <= datetime.timedelta(hours=100)


def test_unknown_in_a_preview_of_a_new_stack() -> None:
    """New certificates' ends are known only once created: a preview shows no times."""
    preview = run_program(CONFIG, preview=True)
    assert preview.outputs.get("certificateExpiry") is None
    assert "certificateExpiry" not in preview.secret_outputs
