"""The tls and random test doubles, called directly (no engine): what the real providers do.

Check fills the schema defaults, Diff compares inputs only and plans a replacement for any
change (and for a certificate due for renewal), Create makes real keys and certificates and
marks the real providers' secrets. tests/doubles/test_with_engine.py runs them under the real
Pulumi engine.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import re
import subprocess
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped]
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import empty_pb2  # type: ignore[import-untyped]
from pulumi.provider.experimental.property_value import PropertyValue
from pulumi.provider.experimental.provider import (
    CheckRequest,
    CreateRequest,
    DiffRequest,
    PropertyDiffKind,
    ReadRequest,
    UpdateRequest,
)
from pulumi.runtime import proto
from pulumi.runtime.proto import provider_pb2_grpc

from tests import harness
from tests.doubles import DOUBLES, REPO_ROOT, crypto, wrapper_script
from tests.doubles.provider import (
    WIRE_UNKNOWN,
    DoubleProvider,
    from_plain,
    property_map,
    to_plain,
)

T = TypeVar("T")

TLS = DoubleProvider("tls", "5.6.2")
RANDOM = DoubleProvider("random", "4.21.4")


def sync(coroutine: Coroutine[Any, Any, T]) -> T:
    # A loop of its own, never the current one: asyncio.run would unset the main thread's
    # loop, which the mock runtime of the other tests needs.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def urn(resource_type: str, name: str = "thing") -> str:
    return f"urn:pulumi:test::project::{resource_type}::{name}"


def props(values: Mapping[str, Any], secret: set[str] | None = None) -> dict[str, PropertyValue]:
    return property_map(values, secret or set())


def plain(values: Mapping[str, PropertyValue]) -> dict[str, Any]:
    return {k: to_plain(v) for k, v in values.items()}


def check(
    provider: DoubleProvider,
    resource_type: str,
    inputs: Mapping[str, Any],
    secret: set[str] | None = None,
) -> dict[str, PropertyValue]:
    response = sync(
        provider.check(CheckRequest(urn(resource_type), {}, props(inputs, secret), b"seed"))
    )
    assert not response.failures, [(f.property, f.reason) for f in response.failures or []]
    assert response.inputs is not None
    return response.inputs


def create(
    provider: DoubleProvider,
    resource_type: str,
    inputs: Mapping[str, Any],
    secret: set[str] | None = None,
) -> tuple[str, dict[str, PropertyValue]]:
    checked = check(provider, resource_type, inputs, secret)
    response = sync(provider.create(CreateRequest(urn(resource_type), checked, 60, False)))
    assert response.resource_id
    return response.resource_id, response.properties


def diff(
    provider: DoubleProvider,
    resource_type: str,
    state: Mapping[str, PropertyValue],
    inputs: Mapping[str, Any],
) -> Any:
    news = check(provider, resource_type, inputs)
    return sync(provider.diff(DiffRequest(urn(resource_type), "id", dict(state), news, [])))


KEY = {"algorithm": "ECDSA", "ecdsaCurve": "P256"}
CA_INPUTS = {
    "subject": {"commonName": "test-ca", "organization": "tests"},
    "isCaCertificate": True,
    "setSubjectKeyId": True,
    "validityPeriodHours": 48,
    "allowedUses": ["cert_signing", "crl_signing", "digital_signature"],
}


def make_key(**overrides: Any) -> dict[str, Any]:
    return plain(create(TLS, crypto.PRIVATE_KEY, {**KEY, **overrides})[1])


@pytest.fixture(scope="module")
def ca() -> dict[str, Any]:
    key = make_key()
    _, state = create(
        TLS, crypto.SELF_SIGNED_CERT, {**CA_INPUTS, "privateKeyPem": key["privateKeyPem"]}
    )
    return {
        "key": key,
        "state": state,
        "cert": x509.load_pem_x509_certificate(plain(state)["certPem"].encode()),
    }


def leaf_inputs(ca: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    key = make_key()
    _, request = create(
        TLS,
        crypto.CERT_REQUEST,
        {
            "privateKeyPem": key["privateKeyPem"],
            "subject": {"commonName": "leaf", "organization": "system:masters"},
            "dnsNames": ["leaf.example.com"],
            "ipAddresses": ["192.0.2.7"],
        },
    )
    return {
        "certRequestPem": plain(request)["certRequestPem"],
        "caCertPem": plain(ca["state"])["certPem"],
        "caPrivateKeyPem": ca["key"]["privateKeyPem"],
        "validityPeriodHours": 24,
        "earlyRenewalHours": 2,
        "allowedUses": ["digital_signature", "server_auth", "client_auth"],
        **overrides,
    }


# --- check --------------------------------------------------------------------------------


def test_check_fills_the_schema_defaults() -> None:
    assert plain(check(TLS, crypto.PRIVATE_KEY, {"algorithm": "RSA"})) == {
        "algorithm": "RSA",
        "ecdsaCurve": "P224",
        "rsaBits": 2048,
    }
    cert = plain(check(TLS, crypto.SELF_SIGNED_CERT, {"validityPeriodHours": 1, "allowedUses": []}))
    assert cert["earlyRenewalHours"] == 0
    assert cert["isCaCertificate"] is False
    assert cert["setSubjectKeyId"] is False
    assert cert["setAuthorityKeyId"] is False
    signed = plain(
        check(
            TLS,
            crypto.LOCALLY_SIGNED_CERT,
            {"validityPeriodHours": 1, "allowedUses": [], "caCertPem": "x", "certRequestPem": "y"},
        )
    )
    assert "setAuthorityKeyId" not in signed  # not an input of tls_locally_signed_cert
    assert (signed["earlyRenewalHours"], signed["isCaCertificate"]) == (0, False)
    for resource_type in (crypto.RANDOM_STRING, crypto.RANDOM_PASSWORD):
        values = plain(check(RANDOM, resource_type, {"length": 8}))
        assert values == {
            "length": 8,
            "lower": True,
            "upper": True,
            "numeric": True,
            "number": True,
            "special": True,
            "minLower": 0,
            "minUpper": 0,
            "minNumeric": 0,
            "minSpecial": 0,
        }


def test_check_keeps_number_and_numeric_together() -> None:
    assert (
        plain(check(RANDOM, crypto.RANDOM_STRING, {"length": 8, "numeric": False}))["number"]
        is False
    )
    assert (
        plain(check(RANDOM, crypto.RANDOM_STRING, {"length": 8, "number": False}))["numeric"]
        is False
    )


def test_check_numbers_go_back_as_floats() -> None:
    checked = check(TLS, crypto.PRIVATE_KEY, {"algorithm": "RSA", "rsaBits": 4096})
    assert checked["rsaBits"] == PropertyValue(4096.0)
    assert checked["ecdsaCurve"] == PropertyValue("P224")


@pytest.mark.parametrize(
    ("provider", "resource_type", "inputs", "bad"),
    [
        (TLS, crypto.PRIVATE_KEY, {}, "algorithm"),
        (TLS, crypto.PRIVATE_KEY, {"algorithm": "DSA"}, "algorithm"),
        (TLS, crypto.PRIVATE_KEY, {"algorithm": "ECDSA", "ecdsaCurve": "P999"}, "ecdsaCurve"),
        (
            TLS,
            crypto.SELF_SIGNED_CERT,
            {"validityPeriodHours": 1, "allowedUses": ["fly"]},
            "allowedUses",
        ),
        (TLS, crypto.SELF_SIGNED_CERT, {"allowedUses": []}, "validityPeriodHours"),
        (RANDOM, crypto.RANDOM_STRING, {"length": 0}, "length"),
        (RANDOM, crypto.RANDOM_STRING, {"length": 2, "minUpper": 2, "minLower": 1}, "length"),
        (RANDOM, crypto.RANDOM_BYTES, {}, "length"),
    ],
)
def test_check_rejects_what_the_provider_rejects(
    provider: DoubleProvider, resource_type: str, inputs: dict[str, Any], bad: str
) -> None:
    response = sync(provider.check(CheckRequest(urn(resource_type), {}, props(inputs), b"")))
    assert response.failures
    assert bad in {failure.property for failure in response.failures}


def test_check_passes_unknown_values() -> None:
    response = sync(
        TLS.check(
            CheckRequest(
                urn(crypto.CERT_REQUEST),
                {},
                {"privateKeyPem": PropertyValue(WIRE_UNKNOWN), "subject": PropertyValue.computed()},
                b"",
            )
        )
    )
    assert not response.failures
    assert response.inputs is not None
    # Both come back as the wire's unknown (the SDK cannot marshal its own Computed).
    assert response.inputs["privateKeyPem"] == PropertyValue(WIRE_UNKNOWN, is_secret=True)
    assert response.inputs["subject"] == PropertyValue(WIRE_UNKNOWN)
    PropertyValue.marshal_map(response.inputs)


def test_a_required_input_still_unknown_passes_check() -> None:
    # A preview: the CA's certificate is being replaced, so the leaf's caCertPem is unknown.
    inputs = {
        "caCertPem": PropertyValue(WIRE_UNKNOWN),
        "certRequestPem": PropertyValue("pem"),
        "validityPeriodHours": PropertyValue(1.0),
        "allowedUses": PropertyValue([]),
    }
    request = CheckRequest(urn(crypto.LOCALLY_SIGNED_CERT), {}, inputs, b"")
    response = sync(TLS.check(request))
    assert not response.failures
    assert response.inputs is not None
    assert response.inputs["caCertPem"] == PropertyValue(WIRE_UNKNOWN)


# --- diff ---------------------------------------------------------------------------------


def test_an_identical_recheck_has_no_changes(ca: dict[str, Any]) -> None:
    inputs = {**CA_INPUTS, "privateKeyPem": ca["key"]["privateKeyPem"]}
    response = diff(TLS, crypto.SELF_SIGNED_CERT, ca["state"], inputs)
    assert response.changes is False
    assert response.replaces == []


def test_numbers_compare_as_numbers_floats_or_ints() -> None:
    # The state holds 2048.0; the program's new inputs say 2048.
    _, state = create(TLS, crypto.PRIVATE_KEY, {"algorithm": "RSA", "rsaBits": 2048})
    assert state["rsaBits"].value == 2048.0
    assert (
        diff(TLS, crypto.PRIVATE_KEY, state, {"algorithm": "RSA", "rsaBits": 2048.0}).changes
        is False
    )
    assert diff(TLS, crypto.PRIVATE_KEY, state, {"algorithm": "RSA"}).changes is False  # default
    response = diff(TLS, crypto.PRIVATE_KEY, state, {"algorithm": "RSA", "rsaBits": 3072})
    assert response.replaces == ["rsaBits"]


def test_output_only_keys_are_not_compared(ca: dict[str, Any]) -> None:
    state = dict(ca["state"])
    for key in ("certPem", "validityStartTime", "keyAlgorithm"):
        state[key] = PropertyValue("something else")
    inputs = {**CA_INPUTS, "privateKeyPem": ca["key"]["privateKeyPem"]}
    assert diff(TLS, crypto.SELF_SIGNED_CERT, state, inputs).changes is False


@pytest.mark.parametrize(
    "change",
    [
        {"subject": {"commonName": "another-ca"}},
        {"validityPeriodHours": 49},
        {"allowedUses": ["cert_signing"]},
        {"isCaCertificate": False},
        {"setSubjectKeyId": False},
        {"setAuthorityKeyId": True},
        {"dnsNames": ["ca.example.com"]},
        {"maxPathLength": 1},
        {"privateKeyPem": "another key"},
    ],
)
def test_any_input_change_replaces(ca: dict[str, Any], change: dict[str, Any]) -> None:
    inputs = {**CA_INPUTS, "privateKeyPem": ca["key"]["privateKeyPem"], **change}
    response = diff(TLS, crypto.SELF_SIGNED_CERT, ca["state"], inputs)
    assert response.changes is True
    assert response.replaces == list(change)
    assert response.detailed_diff[next(iter(change))].kind == PropertyDiffKind.UPDATE_REPLACE


def test_an_unknown_input_replaces(ca: dict[str, Any]) -> None:
    news = check(TLS, crypto.SELF_SIGNED_CERT, {**CA_INPUTS})
    news["privateKeyPem"] = PropertyValue(WIRE_UNKNOWN)
    response = sync(
        TLS.diff(DiffRequest(urn(crypto.SELF_SIGNED_CERT), "id", ca["state"], news, []))
    )
    assert response.replaces == ["privateKeyPem"]


def test_random_inputs_all_replace_keepers_too() -> None:
    inputs = {"length": 16, "special": False, "keepers": {"rotation": "1"}}
    _, state = create(RANDOM, crypto.RANDOM_STRING, inputs)
    assert diff(RANDOM, crypto.RANDOM_STRING, state, inputs).changes is False
    for change in (
        {"length": 17},
        {"keepers": {"rotation": "2"}},
        {"upper": False},
        {"minNumeric": 1},
    ):
        assert diff(RANDOM, crypto.RANDOM_STRING, state, {**inputs, **change}).replaces == list(
            change
        )


def test_ignore_changes_are_not_compared() -> None:
    _, state = create(RANDOM, crypto.RANDOM_BYTES, {"length": 32})
    news = check(RANDOM, crypto.RANDOM_BYTES, {"length": 16})
    request = DiffRequest(urn(crypto.RANDOM_BYTES), "none", state, news, ["length"])
    assert sync(RANDOM.diff(request)).changes is False


def test_early_renewal_hours_change_updates_in_place(ca: dict[str, Any]) -> None:
    inputs = leaf_inputs(ca)
    _, state = create(TLS, crypto.LOCALLY_SIGNED_CERT, inputs)
    response = diff(TLS, crypto.LOCALLY_SIGNED_CERT, state, {**inputs, "earlyRenewalHours": 3})
    assert response.changes is True
    assert response.replaces == []
    assert response.detailed_diff["earlyRenewalHours"].kind == PropertyDiffKind.UPDATE
    news = check(TLS, crypto.LOCALLY_SIGNED_CERT, {**inputs, "earlyRenewalHours": 3})
    updated = sync(
        TLS.update(UpdateRequest(urn(crypto.LOCALLY_SIGNED_CERT), "1", state, news, 60, [], False))
    )
    assert updated.properties["earlyRenewalHours"] == PropertyValue(3.0)
    assert updated.properties["certPem"] == state["certPem"]
    assert updated.properties["caPrivateKeyPem"].is_secret


# --- early renewal ------------------------------------------------------------------------


def at(moment: datetime.datetime) -> Callable[[], datetime.datetime]:
    return lambda: moment


def test_a_certificate_in_its_renewal_window_is_replaced(ca: dict[str, Any]) -> None:
    inputs = leaf_inputs(ca)  # valid 24 h, renewed 2 h early
    _, state = create(TLS, crypto.LOCALLY_SIGNED_CERT, inputs)
    assert state["readyForRenewal"] == PropertyValue(False)
    end = datetime.datetime.fromisoformat(str(state["validityEndTime"].value))

    for hours_before_end, due in ((3, False), (2, True), (1, True), (-1, True)):
        clock = DoubleProvider(
            "tls", "5.6.2", now=at(end - datetime.timedelta(hours=hours_before_end))
        )
        response = sync(
            clock.diff(
                DiffRequest(
                    urn(crypto.LOCALLY_SIGNED_CERT),
                    "1",
                    state,
                    check(clock, crypto.LOCALLY_SIGNED_CERT, inputs),
                    [],
                )
            )
        )
        assert response.replaces == (["readyForRenewal"] if due else []), hours_before_end
        read = sync(clock.read(ReadRequest(urn(crypto.LOCALLY_SIGNED_CERT), "1", state, {})))
        assert read.properties["readyForRenewal"] == PropertyValue(due)
        assert read.properties["caPrivateKeyPem"].is_secret
        assert set(plain(read.inputs)) <= crypto.RESOURCES[crypto.LOCALLY_SIGNED_CERT].inputs


def test_early_renewal_longer_than_the_validity_replaces_now(ca: dict[str, Any]) -> None:
    inputs = leaf_inputs(ca)
    _, state = create(TLS, crypto.LOCALLY_SIGNED_CERT, inputs)
    response = diff(TLS, crypto.LOCALLY_SIGNED_CERT, state, {**inputs, "earlyRenewalHours": 25})
    assert response.replaces == ["readyForRenewal"]
    assert response.detailed_diff["earlyRenewalHours"].kind == PropertyDiffKind.UPDATE
    # Created like that, it is due at once: ready for renewal from the start.
    _, due = create(TLS, crypto.LOCALLY_SIGNED_CERT, {**inputs, "earlyRenewalHours": 25})
    assert due["readyForRenewal"] == PropertyValue(True)


def test_ready_for_renewal_boundaries() -> None:
    now = datetime.datetime(2030, 1, 1, 12, tzinfo=datetime.UTC)
    assert crypto.ready_for_renewal("2030-01-01T14:00:00Z", 2, now)
    assert not crypto.ready_for_renewal("2030-01-01T14:00:01Z", 2, now)
    assert crypto.ready_for_renewal("2030-01-01T12:00:00Z", 0, now)  # expired
    assert not crypto.ready_for_renewal(
        "2030-01-01T12:00:00+00:00", 0, now - datetime.timedelta(seconds=1)
    )


# --- secrets ------------------------------------------------------------------------------


def test_private_key_secrets() -> None:
    _, state = create(TLS, crypto.PRIVATE_KEY, {"algorithm": "ECDSA", "ecdsaCurve": "P256"})
    secret = {k for k, v in state.items() if v.is_secret}
    assert secret == {"privateKeyPem", "privateKeyPemPkcs8", "privateKeyOpenssh"}
    values = plain(state)
    assert values["privateKeyPem"].startswith("-----BEGIN EC PRIVATE KEY-----")
    assert values["privateKeyPemPkcs8"].startswith("-----BEGIN PRIVATE KEY-----")
    assert values["privateKeyOpenssh"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert values["publicKeyOpenssh"].startswith("ecdsa-sha2-nistp256 ")
    assert values["publicKeyOpenssh"].endswith("\n")
    assert re.fullmatch(r"([0-9a-f]{2}:){15}[0-9a-f]{2}", values["publicKeyFingerprintMd5"])
    assert re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}", values["publicKeyFingerprintSha256"])
    key = serialization.load_pem_private_key(values["privateKeyPem"].encode(), None)
    public = serialization.load_pem_public_key(values["publicKeyPem"].encode())
    assert key.public_key() == public


def test_rsa_and_p224_keys() -> None:
    values = make_key(algorithm="RSA", rsaBits=2048)
    assert values["privateKeyPem"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    p224 = make_key(algorithm="ECDSA", ecdsaCurve="P224")
    assert p224["privateKeyOpenssh"] == p224["publicKeyOpenssh"] == ""  # OpenSSH has no P224
    key = serialization.load_pem_private_key(p224["privateKeyPem"].encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp224r1"


def test_secret_inputs_stay_secret(ca: dict[str, Any]) -> None:
    # A sensitive input is secret even when it arrives plain; any input that arrives secret
    # stays secret.
    _, request = create(
        TLS,
        crypto.CERT_REQUEST,
        {"privateKeyPem": ca["key"]["privateKeyPem"], "subject": {"commonName": "x"}},
        secret={"subject"},
    )
    assert request["privateKeyPem"].is_secret
    assert request["subject"].is_secret
    assert not request["certRequestPem"].is_secret
    _, leaf = create(TLS, crypto.LOCALLY_SIGNED_CERT, leaf_inputs(ca), secret={"caPrivateKeyPem"})
    assert {k for k, v in leaf.items() if v.is_secret} == {"caPrivateKeyPem"}
    assert not ca["state"]["certPem"].is_secret
    assert ca["state"]["privateKeyPem"].is_secret


def test_random_secrets() -> None:
    _, password = create(RANDOM, crypto.RANDOM_PASSWORD, {"length": 20})
    assert password["result"].is_secret
    assert password["bcryptHash"].is_secret
    _, random_bytes = create(RANDOM, crypto.RANDOM_BYTES, {"length": 32})
    assert random_bytes["base64"].is_secret
    assert random_bytes["hex"].is_secret
    assert not random_bytes["length"].is_secret
    result_id, string_state = create(RANDOM, crypto.RANDOM_STRING, {"length": 20})
    assert not string_state["result"].is_secret
    assert result_id == string_state["result"].value  # random_string's id is its result


# --- certificates -------------------------------------------------------------------------


def extension(
    certificate: x509.Certificate | x509.CertificateSigningRequest, kind: type[x509.ExtensionType]
) -> Any:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def test_a_ca_certificate(ca: dict[str, Any]) -> None:
    certificate = ca["cert"]
    certificate.verify_directly_issued_by(certificate)
    assert certificate.subject.rfc4514_string() == "CN=test-ca,O=tests"
    assert extension(certificate, x509.BasicConstraints).ca is True
    usage = extension(certificate, x509.KeyUsage)
    assert usage.key_cert_sign and usage.crl_sign and usage.digital_signature
    assert extension(certificate, x509.SubjectKeyIdentifier) is not None
    assert extension(certificate, x509.AuthorityKeyIdentifier) is None  # setAuthorityKeyId false
    values = plain(ca["state"])
    assert values["keyAlgorithm"] == "ECDSA"
    assert values["readyForRenewal"] is False
    start = datetime.datetime.fromisoformat(values["validityStartTime"])
    end = datetime.datetime.fromisoformat(values["validityEndTime"])
    assert end - start == datetime.timedelta(hours=48)
    # The certificate holds whole seconds, the validity times Go's nanoseconds.
    assert certificate.not_valid_before_utc == start.replace(microsecond=0)
    assert certificate.not_valid_after_utc == end.replace(microsecond=0)


def test_validity_times_as_terraform_provider_tls_writes_them() -> None:
    """Go's time.Time.MarshalText: RFC 3339, nanoseconds without trailing zeros, local zone."""
    moment = 1_800_000_000 * 10**9  # 2027-01-15T08:00:00Z
    assert crypto.go_time_text(moment + 123_456_789) == "2027-01-15T08:00:00.123456789Z"
    assert crypto.go_time_text(moment + 120_000_000) == "2027-01-15T08:00:00.12Z"
    assert crypto.go_time_text(moment) == "2027-01-15T08:00:00Z"
    berlin = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from tests.doubles import crypto; print(crypto.go_time_text({moment}))",
        ],
        env={"TZ": "Europe/Berlin", "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert berlin.stdout.strip() == "2027-01-15T09:00:00+01:00"


def test_authority_key_id_only_with_set_authority_key_id(ca: dict[str, Any]) -> None:
    inputs = {**CA_INPUTS, "privateKeyPem": ca["key"]["privateKeyPem"], "setAuthorityKeyId": True}
    _, state = create(TLS, crypto.SELF_SIGNED_CERT, inputs)
    certificate = x509.load_pem_x509_certificate(plain(state)["certPem"].encode())
    aki = extension(certificate, x509.AuthorityKeyIdentifier)
    assert aki.key_identifier == extension(certificate, x509.SubjectKeyIdentifier).digest
    # A plain self-signed leaf: neither identifier unless asked for.
    _, leaf = create(
        TLS,
        crypto.SELF_SIGNED_CERT,
        {
            "privateKeyPem": ca["key"]["privateKeyPem"],
            "subject": {"commonName": "self"},
            "validityPeriodHours": 1,
            "allowedUses": ["server_auth"],
        },
    )
    certificate = x509.load_pem_x509_certificate(plain(leaf)["certPem"].encode())
    assert extension(certificate, x509.AuthorityKeyIdentifier) is None
    assert extension(certificate, x509.SubjectKeyIdentifier) is None
    assert extension(certificate, x509.KeyUsage) is None  # no key usage allowed: no extension
    assert extension(certificate, x509.BasicConstraints).ca is False
    # setAuthorityKeyId without a subject key id: the provider's error.
    with pytest.raises(crypto.CheckError, match="Authority Key Identifier"):
        crypto.self_signed_cert_outputs(
            {
                "privateKeyPem": ca["key"]["privateKeyPem"],
                "validityPeriodHours": 1,
                "allowedUses": [],
                "setAuthorityKeyId": True,
            }
        )


def test_a_locally_signed_certificate_verifies_against_its_ca(ca: dict[str, Any]) -> None:
    resource_id, state = create(TLS, crypto.LOCALLY_SIGNED_CERT, leaf_inputs(ca))
    values = plain(state)
    leaf = x509.load_pem_x509_certificate(values["certPem"].encode())
    leaf.verify_directly_issued_by(ca["cert"])
    assert leaf.subject.rfc4514_string() == "CN=leaf,O=system:masters"
    assert leaf.issuer == ca["cert"].subject
    sans = extension(leaf, x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.DNSName) == ["leaf.example.com"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]
    assert list(extension(leaf, x509.ExtendedKeyUsage)) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    assert extension(leaf, x509.BasicConstraints).ca is False
    # Go's x509.CreateCertificate: the CA's subject key id is the leaf's authority key id.
    aki = extension(leaf, x509.AuthorityKeyIdentifier)
    assert aki.key_identifier == extension(ca["cert"], x509.SubjectKeyIdentifier).digest
    assert extension(leaf, x509.SubjectKeyIdentifier) is None
    assert values["caKeyAlgorithm"] == "ECDSA"
    assert resource_id == str(leaf.serial_number)  # the provider's id: the serial number


def test_no_authority_key_id_from_a_ca_without_subject_key_id(ca: dict[str, Any]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bare-ca")])
    now = datetime.datetime.now(datetime.UTC)
    bare = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    inputs = leaf_inputs(
        ca,
        caCertPem=bare.public_bytes(serialization.Encoding.PEM).decode(),
        caPrivateKeyPem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    )
    leaf = x509.load_pem_x509_certificate(
        crypto.locally_signed_cert_outputs(inputs)[1]["certPem"].encode()
    )
    leaf.verify_directly_issued_by(bare)
    assert extension(leaf, x509.AuthorityKeyIdentifier) is None


def test_a_cert_request() -> None:
    key = make_key()
    _, state = create(
        TLS,
        crypto.CERT_REQUEST,
        {
            "privateKeyPem": key["privateKeyPem"],
            "subject": {"commonName": "c", "organization": "o", "streetAddresses": ["a", "b"]},
            "uris": ["spiffe://cluster/ns/x"],
        },
    )
    values = plain(state)
    request = x509.load_pem_x509_csr(values["certRequestPem"].encode())
    assert request.is_signature_valid
    assert request.subject.rfc4514_string() == "CN=c,STREET=a+STREET=b,O=o"
    sans = extension(request, x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster/ns/x"]
    assert values["keyAlgorithm"] == "ECDSA"


def test_create_in_a_preview_leaves_outputs_unknown() -> None:
    checked = check(TLS, crypto.PRIVATE_KEY, KEY)
    response = sync(TLS.create(CreateRequest(urn(crypto.PRIVATE_KEY), checked, 60, True)))
    assert response.properties["privateKeyPem"].value == WIRE_UNKNOWN
    PropertyValue.marshal_map(response.properties)
    assert response.properties["privateKeyPem"].is_secret
    assert response.properties["algorithm"] == PropertyValue("ECDSA")


# --- random -------------------------------------------------------------------------------


def test_random_string_lengths_and_alphabets() -> None:
    for _ in range(20):
        value = crypto.random_string(
            crypto.with_defaults(
                crypto.RESOURCES[crypto.RANDOM_STRING],
                {"length": 16, "upper": False, "special": False},
            )
        )
        assert re.fullmatch(r"[a-z0-9]{16}", value)
    value = crypto.random_string(
        crypto.with_defaults(
            crypto.RESOURCES[crypto.RANDOM_STRING],
            {"length": 12, "minUpper": 3, "minNumeric": 3, "minSpecial": 3, "overrideSpecial": "+"},
        )
    )
    assert len(value) == 12
    assert sum(c.isupper() for c in value) >= 3
    assert sum(c.isdigit() for c in value) >= 3
    assert value.count("+") >= 3
    assert set(value) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+")
    assert len(set(crypto.random_string({"length": 32}) for _ in range(5))) == 5


def test_random_password_hash_and_bytes() -> None:
    _, state = create(RANDOM, crypto.RANDOM_PASSWORD, {"length": 24, "special": False})
    values = plain(state)
    assert re.fullmatch(r"[A-Za-z0-9]{24}", values["result"])
    assert values["bcryptHash"].startswith("$2a$10$")
    assert crypto.bcrypt_matches(values["result"], values["bcryptHash"])
    assert not crypto.bcrypt_matches(values["result"] + "x", values["bcryptHash"])
    _, random_bytes = create(RANDOM, crypto.RANDOM_BYTES, {"length": 32})
    data = plain(random_bytes)
    assert len(bytes.fromhex(data["hex"])) == 32
    assert base64.b64decode(data["base64"]).hex() == data["hex"]


def test_a_package_serves_only_its_types() -> None:
    with pytest.raises(ValueError, match="no resource type"):
        sync(TLS.check(CheckRequest(urn(crypto.RANDOM_BYTES), {}, props({"length": 1}), b"")))


# --- plumbing -----------------------------------------------------------------------------


def test_plain_values_round_trip() -> None:
    value = {"a": [1, 2.5, True, None, "x"], "b": {"c": 3}}
    assert to_plain(from_plain(value)) == value
    assert from_plain(3) == PropertyValue(3.0)
    assert from_plain("s", secret=True).is_secret


def test_the_harness_uses_the_same_crypto() -> None:
    assert harness.provider_outputs is crypto.provider_outputs
    outputs = crypto.provider_outputs(crypto.PRIVATE_KEY, {"algorithm": "ECDSA"})
    assert outputs["ecdsaCurve"] == "P224"
    assert outputs["privateKeyPem"].startswith("-----BEGIN EC PRIVATE KEY-----")
    assert crypto.provider_outputs("kubernetes:core/v1:Secret", {"a": 1}) == {"a": 1}


def test_wrapper_script() -> None:
    script = wrapper_script(REPO_ROOT / ".venv/bin/python", DOUBLES["tls"][1])
    assert script.startswith("#!/bin/sh\n")
    assert f"PYTHONPATH={REPO_ROOT}\n" in script
    assert script.endswith(
        f'exec {REPO_ROOT}/.venv/bin/python -m tests.doubles.tls_provider "$@"\n'
    )


def test_the_plugin_speaks_grpc_and_prints_only_its_port() -> None:
    """The served plugin as the engine starts it: its port alone on stdout, then gRPC."""
    plugin = subprocess.Popen(
        [sys.executable, "-m", "tests.doubles.tls_provider", "127.0.0.1:1"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert plugin.stdout is not None
        port = plugin.stdout.readline().strip()
        assert re.fullmatch(r"\d+", port), port
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = provider_pb2_grpc.ResourceProviderStub(channel)
            info = stub.GetPluginInfo(empty_pb2.Empty())
            assert info.version == "5.6.2"
            configured = stub.Configure(proto.ConfigureRequest(acceptSecrets=True))
            assert configured.acceptSecrets and configured.supportsPreview
            key_urn = urn(crypto.PRIVATE_KEY)
            checked = stub.Check(
                proto.CheckRequest(urn=key_urn, news=PropertyValue.marshal_map(props(KEY)))
            )
            created = stub.Create(proto.CreateRequest(urn=key_urn, properties=checked.inputs))
            outputs = PropertyValue.unmarshal_map(created.properties)
            assert outputs["privateKeyPem"].is_secret
            assert created.id
            same = stub.Diff(
                proto.DiffRequest(
                    urn=key_urn, id=created.id, olds=created.properties, news=checked.inputs
                )
            )
            assert same.changes == proto.DiffResponse.DIFF_NONE
            other = stub.Check(
                proto.CheckRequest(
                    urn=key_urn,
                    news=PropertyValue.marshal_map(props({**KEY, "ecdsaCurve": "P384"})),
                )
            )
            changed = stub.Diff(
                proto.DiffRequest(
                    urn=key_urn, id=created.id, olds=created.properties, news=other.inputs
                )
            )
            assert changed.changes == proto.DiffResponse.DIFF_SOME
            assert list(changed.replaces) == ["ecdsaCurve"]
            stub.Delete(
                proto.DeleteRequest(urn=key_urn, id=created.id, properties=created.properties)
            )
        assert plugin.poll() is None
    finally:
        plugin.kill()
        plugin.communicate(timeout=10)


def test_a_preview_knows_a_certificate_due_from_its_start(ca: dict[str, Any]) -> None:
    for early, due in ((2, False), (24, True), (25, True)):
        checked = check(TLS, crypto.LOCALLY_SIGNED_CERT, leaf_inputs(ca, earlyRenewalHours=early))
        request = CreateRequest(urn(crypto.LOCALLY_SIGNED_CERT), checked, 60, True)
        response = sync(TLS.create(request))
        assert response.properties["readyForRenewal"] == PropertyValue(due)
        assert response.properties["certPem"].value == WIRE_UNKNOWN


def test_a_resource_inside_components_is_found_by_its_own_type() -> None:
    """The engine names a resource's type with its parents' (the URN's qualified type)."""
    from tests.doubles import crypto
    from tests.doubles.provider import DoubleProvider

    provider = DoubleProvider("tls", "5.6.2")
    nested = "k8s-on-k8s:index:ControlPlane$k8s-on-k8s:index:Pki$" + crypto.PRIVATE_KEY
    assert provider._spec(nested).token == crypto.PRIVATE_KEY
