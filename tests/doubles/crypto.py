"""What pulumi-tls 5.6.2 and pulumi-random 4.21.4 compute, with `cryptography` and `secrets`.

One implementation for both test doubles of the providers: the mock runtime of tests/harness.py
and the provider plugins that the real Pulumi engine launches (tls_provider.py,
random_provider.py). Values are plain Python in the providers' wire names (camelCase).

Where the real providers' behaviour is not obvious, it is that of terraform-provider-tls and
terraform-provider-random (which they bridge) and of Go's crypto/x509 underneath:
- every input forces a replacement, except `earlyRenewalHours` of a certificate (updated in
  place, unless the new value makes the certificate ready for renewal);
- a certificate is ready for renewal from `validityEndTime - earlyRenewalHours` on: `read`
  reports it in `readyForRenewal` and the next plan replaces it;
- the SubjectKeyIdentifier is set for a CA or with `setSubjectKeyId`; a self-signed certificate
  has an AuthorityKeyIdentifier only with `setAuthorityKeyId`; a locally signed one has the
  CA's subject key id as its AuthorityKeyIdentifier whenever the CA certificate has one (Go's
  x509.CreateCertificate does that by itself);
- no KeyUsage extension when no key usage is allowed; SANs are critical in a certificate
  without subject.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import secrets
import string
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
SELF_SIGNED_CERT = "tls:index/selfSignedCert:SelfSignedCert"
CERT_REQUEST = "tls:index/certRequest:CertRequest"
LOCALLY_SIGNED_CERT = "tls:index/locallySignedCert:LocallySignedCert"
RANDOM_BYTES = "random:index/randomBytes:RandomBytes"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"
RANDOM_STRING = "random:index/randomString:RandomString"


class CheckError(ValueError):
    """An input the real provider would reject in its Check."""

    def __init__(self, property_name: str, reason: str) -> None:
        super().__init__(f"{property_name}: {reason}")
        self.property = property_name
        self.reason = reason


# --- keys ---------------------------------------------------------------------------------

_CURVES: dict[str, Callable[[], ec.EllipticCurve]] = {
    "P224": ec.SECP224R1,
    "P256": ec.SECP256R1,
    "P384": ec.SECP384R1,
    "P521": ec.SECP521R1,
}

PrivateKeyType = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKeyType = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def load_private_key(pem: str) -> PrivateKeyType:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return key


def key_algorithm(key: PrivateKeyType | PublicKeyType) -> str:
    """The provider's name of a key's algorithm (its `keyAlgorithm` outputs)."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ECDSA"
    return "ED25519"


def _pem_private_key(key: PrivateKeyType, fmt: serialization.PrivateFormat) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def _hash_for_state(value: str) -> str:
    """terraform-provider-tls' resource ids: the hex SHA-1 of a PEM."""
    return hashlib.sha1(value.encode()).hexdigest()  # an id, as the provider's


def private_key_outputs(inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A new key: its id and the PrivateKey's computed outputs."""
    algorithm = inputs["algorithm"]
    key: PrivateKeyType
    if algorithm == "RSA":
        key = rsa.generate_private_key(65537, int(inputs.get("rsaBits") or 2048))
        legacy = serialization.PrivateFormat.TraditionalOpenSSL  # "RSA PRIVATE KEY"
    elif algorithm == "ECDSA":
        key = ec.generate_private_key(_CURVES[inputs.get("ecdsaCurve") or "P224"]())
        legacy = serialization.PrivateFormat.TraditionalOpenSSL  # "EC PRIVATE KEY"
    elif algorithm == "ED25519":
        key = ed25519.Ed25519PrivateKey.generate()
        legacy = serialization.PrivateFormat.PKCS8  # Go writes ED25519 keys as "PRIVATE KEY"
    else:
        raise CheckError("algorithm", f"unsupported algorithm {algorithm!r}")
    public = key.public_key()
    public_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    # OpenSSH has no P224: the provider leaves those outputs empty.
    openssh_private = openssh_public = md5 = sha256 = ""
    if not (isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp224r1"):
        openssh_private = _pem_private_key(key, serialization.PrivateFormat.OpenSSH)
        authorized = public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode()
        openssh_public = authorized + "\n"  # Go's ssh.MarshalAuthorizedKey ends with a newline
        wire = base64.b64decode(authorized.split()[1])
        md5 = ":".join(f"{b:02x}" for b in hashlib.md5(wire).digest())
        sha256 = "SHA256:" + base64.b64encode(hashlib.sha256(wire).digest()).decode().rstrip("=")
    return _hash_for_state(public_pem), {
        "privateKeyPem": _pem_private_key(key, legacy),
        "privateKeyPemPkcs8": _pem_private_key(key, serialization.PrivateFormat.PKCS8),
        "privateKeyOpenssh": openssh_private,
        "publicKeyPem": public_pem,
        "publicKeyOpenssh": openssh_public,
        "publicKeyFingerprintMd5": md5,
        "publicKeyFingerprintSha256": sha256,
    }


# --- certificates -------------------------------------------------------------------------

_KEY_USES = {
    "digital_signature": "digital_signature",
    "content_commitment": "content_commitment",
    "key_encipherment": "key_encipherment",
    "data_encipherment": "data_encipherment",
    "key_agreement": "key_agreement",
    "cert_signing": "key_cert_sign",
    "crl_signing": "crl_sign",
    "encipher_only": "encipher_only",
    "decipher_only": "decipher_only",
}
_EXTENDED_USES = {
    "any_extended": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "ipsec_end_system": ObjectIdentifier("1.3.6.1.5.5.7.3.5"),
    "ipsec_tunnel": ObjectIdentifier("1.3.6.1.5.5.7.3.6"),
    "ipsec_user": ObjectIdentifier("1.3.6.1.5.5.7.3.7"),
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "microsoft_server_gated_crypto": ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"),
    "netscape_server_gated_crypto": ObjectIdentifier("2.16.840.1.113730.4.1"),
    "microsoft_commercial_code_signing": ObjectIdentifier("1.3.6.1.4.1.311.2.1.22"),
    "microsoft_kernel_code_signing": ObjectIdentifier("1.3.6.1.4.1.311.61.1.1"),
}
ALLOWED_USES = frozenset(_KEY_USES) | frozenset(_EXTENDED_USES)

# Go's pkix.Name order (C, O, OU, L, ST, STREET, POSTALCODE, SERIALNUMBER, CN), then the email.
_SUBJECT_FIELDS = (
    ("country", NameOID.COUNTRY_NAME),
    ("organization", NameOID.ORGANIZATION_NAME),
    ("organizationalUnit", NameOID.ORGANIZATIONAL_UNIT_NAME),
    ("locality", NameOID.LOCALITY_NAME),
    ("province", NameOID.STATE_OR_PROVINCE_NAME),
    ("streetAddresses", NameOID.STREET_ADDRESS),
    ("postalCode", NameOID.POSTAL_CODE),
    ("serialNumber", NameOID.SERIAL_NUMBER),
    ("commonName", NameOID.COMMON_NAME),
    ("emailAddress", NameOID.EMAIL_ADDRESS),
)


def subject_name(subject: Mapping[str, Any] | None) -> x509.Name:
    """The distinguished name of a `subject` input (empty fields left out)."""
    subject = subject or {}
    rdns = []
    for key, oid in _SUBJECT_FIELDS:
        value = subject.get(key)
        values = [v for v in (value if isinstance(value, list) else [value]) if v]
        if values:
            rdns.append(x509.RelativeDistinguishedName(x509.NameAttribute(oid, v) for v in values))
    return x509.Name(rdns)


def _sans(inputs: Mapping[str, Any]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in inputs.get("dnsNames") or []]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in inputs.get("ipAddresses") or []]
    names += [x509.UniformResourceIdentifier(uri) for uri in inputs.get("uris") or []]
    return names


def _signature_hash(key: PrivateKeyType) -> hashes.HashAlgorithm | None:
    """Go's choice of signature hash for a signing key."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name == "secp384r1":
            return hashes.SHA384()
        if key.curve.name == "secp521r1":
            return hashes.SHA512()
    return hashes.SHA256()


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_SECOND_NS = 10**9


def _nanoseconds(moment: datetime.datetime) -> int:
    return (moment.astimezone(datetime.UTC) - _EPOCH) // datetime.timedelta(microseconds=1) * 1000


def go_time_text(nanoseconds: int) -> str:
    """Go's `time.Time.MarshalText` of a `time.Now()`, as terraform-provider-tls writes
    `validity_start_time` and `validity_end_time`: RFC 3339 with nanoseconds, trailing zeros
    dropped, in the process's local zone ("Z" when it is UTC), e.g. 2027-12-02T10:00:00.12345Z.
    """
    seconds, fraction = divmod(nanoseconds, _SECOND_NS)
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC).astimezone()
    digits = f"{fraction:09d}".rstrip("0")
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{digits}" if digits else "")
    offset = moment.utcoffset() or datetime.timedelta()
    if not offset:
        return f"{text}Z"
    sign, minutes = ("-", -offset) if offset < datetime.timedelta() else ("+", offset)
    hours, rest = divmod(int(minutes.total_seconds()) // 60, 60)
    return f"{text}{sign}{hours:02d}:{rest:02d}"


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def ready_for_renewal(
    validity_end_time: str, early_renewal_hours: float, now: datetime.datetime | None = None
) -> bool:
    """Whether a certificate ending then is due (terraform-provider-tls' ModifyPlan and Read)."""
    end = datetime.datetime.fromisoformat(validity_end_time)
    if end.tzinfo is None:
        end = end.replace(tzinfo=datetime.UTC)
    renew_from = end - datetime.timedelta(hours=float(early_renewal_hours or 0))
    return (now or utcnow()) >= renew_from


def _key_identifier(certificate: x509.Certificate) -> bytes | None:
    try:
        return certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest
    except x509.ExtensionNotFound:
        return None


def build_certificate(
    *,
    subject: x509.Name,
    public_key: Any,
    issuer: x509.Name,
    signing_key: PrivateKeyType,
    inputs: Mapping[str, Any],
    sans: list[x509.GeneralName],
    authority_key_id: bytes | None,
    now: datetime.datetime | None = None,
) -> tuple[x509.Certificate, str, dict[str, Any]]:
    """A certificate as terraform-provider-tls' createCertificate makes it: (it, id, outputs).

    `authority_key_id` is the AuthorityKeyIdentifier to set, if any (the callers decide it, as
    Go's x509.CreateCertificate and the provider do).
    """
    # Go's time.Now() to the nanosecond; the certificate holds whole seconds (x509 encodes
    # UTCTime and GeneralizedTime without fractions, Go truncates).
    start_ns = time.time_ns() if now is None else _nanoseconds(now)
    end_ns = start_ns + int(inputs["validityPeriodHours"]) * 3600 * _SECOND_NS
    start, end = (
        datetime.datetime.fromtimestamp(ns // _SECOND_NS, datetime.UTC) for ns in (start_ns, end_ns)
    )
    uses = list(inputs.get("allowedUses") or [])
    is_ca = bool(inputs.get("isCaCertificate"))
    max_path = inputs.get("maxPathLength")
    serial = secrets.randbits(128) or 1
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.BasicConstraints(
                ca=is_ca,
                # Go: a MaxPathLen of 0 (without MaxPathLenZero) means no limit.
                path_length=int(max_path) if is_ca and max_path and max_path > 0 else None,
            ),
            critical=True,
        )
    )
    key_usage = dict.fromkeys(_KEY_USES.values(), False)
    for use in uses:
        if use in _KEY_USES:
            key_usage[_KEY_USES[use]] = True
    if any(key_usage.values()):
        builder = builder.add_extension(x509.KeyUsage(**key_usage), critical=True)
    extended = [_EXTENDED_USES[use] for use in uses if use in _EXTENDED_USES]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(sans), critical=len(subject) == 0
        )
    if is_ca or inputs.get("setSubjectKeyId"):
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        )
    if authority_key_id is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier(authority_key_id, None, None), critical=False
        )
    certificate = builder.sign(signing_key, _signature_hash(signing_key))  # type: ignore[arg-type]
    outputs = {
        "certPem": certificate.public_bytes(serialization.Encoding.PEM).decode(),
        "validityStartTime": go_time_text(start_ns),
        "validityEndTime": go_time_text(end_ns),
        "readyForRenewal": ready_for_renewal(
            go_time_text(end_ns), inputs.get("earlyRenewalHours") or 0, now
        ),
    }
    return certificate, str(serial), outputs


def _private_key_input(inputs: Mapping[str, Any], name: str) -> PrivateKeyType:
    pem = inputs.get(name) or inputs.get(f"{name}Wo")
    if not pem:
        raise CheckError(name, f"one of `{name}` or `{name}Wo` must be set")
    return load_private_key(pem)


def self_signed_cert_outputs(
    inputs: Mapping[str, Any], now: datetime.datetime | None = None
) -> tuple[str, dict[str, Any]]:
    key = _private_key_input(inputs, "privateKeyPem")
    subject = subject_name(inputs.get("subject"))
    if inputs.get("isCaCertificate") and len(subject) == 0:
        raise CheckError("subject", "a CA certificate needs at least one distinguished name")
    public_key = key.public_key()
    authority_key_id = None
    if inputs.get("setAuthorityKeyId"):
        # Self-signed: the parent is the certificate itself, so its own subject key id.
        if not (inputs.get("isCaCertificate") or inputs.get("setSubjectKeyId")):
            raise CheckError("setAuthorityKeyId", "Could not determine Authority Key Identifier")
        authority_key_id = x509.SubjectKeyIdentifier.from_public_key(public_key).digest
    _, serial, outputs = build_certificate(
        subject=subject,
        public_key=public_key,
        issuer=subject,
        signing_key=key,
        inputs=inputs,
        sans=_sans(inputs),
        authority_key_id=authority_key_id,
        now=now,
    )
    return serial, {**outputs, "keyAlgorithm": key_algorithm(key)}


def cert_request_outputs(inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    key = _private_key_input(inputs, "privateKeyPem")
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        subject_name(inputs.get("subject"))
    )
    sans = _sans(inputs)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    request = builder.sign(key, _signature_hash(key))  # type: ignore[arg-type]
    pem = request.public_bytes(serialization.Encoding.PEM).decode()
    return _hash_for_state(pem), {"certRequestPem": pem, "keyAlgorithm": key_algorithm(key)}


def locally_signed_cert_outputs(
    inputs: Mapping[str, Any], now: datetime.datetime | None = None
) -> tuple[str, dict[str, Any]]:
    request = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
    ca_cert = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
    ca_key = _private_key_input(inputs, "caPrivateKeyPem")
    try:
        requested = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        requested = x509.SubjectAlternativeName([])
    # The provider copies the request's DNS names, IPs and URIs (nothing else) and its subject.
    sans: list[x509.GeneralName] = [
        name
        for name in requested
        if isinstance(name, x509.DNSName | x509.IPAddress | x509.UniformResourceIdentifier)
    ]
    # Go's x509.CreateCertificate: the parent's subject key id becomes the authority key id of
    # any certificate that is not self-issued.
    authority_key_id = None
    if ca_cert.subject.public_bytes() != request.subject.public_bytes():
        authority_key_id = _key_identifier(ca_cert)
    _, serial, outputs = build_certificate(
        subject=request.subject,
        public_key=request.public_key(),
        issuer=ca_cert.subject,
        signing_key=ca_key,
        inputs=inputs,
        sans=sans,
        authority_key_id=authority_key_id,
        now=now,
    )
    return serial, {**outputs, "caKeyAlgorithm": key_algorithm(ca_key)}


# --- random -------------------------------------------------------------------------------

DEFAULT_SPECIAL = "!@#$%&*()-_=+[]{}<>:?"


def random_string(inputs: Mapping[str, Any]) -> str:
    """terraform-provider-random's CreateString: the minimums first, then any, shuffled."""
    special = inputs.get("overrideSpecial") or DEFAULT_SPECIAL
    numeric = inputs.get("numeric", inputs.get("number", True))
    classes = [
        (string.ascii_uppercase, inputs.get("upper", True), inputs.get("minUpper") or 0),
        (string.ascii_lowercase, inputs.get("lower", True), inputs.get("minLower") or 0),
        (string.digits, numeric, inputs.get("minNumeric") or 0),
        (special, inputs.get("special", True), inputs.get("minSpecial") or 0),
    ]
    alphabet = "".join(chars for chars, enabled, _ in classes if enabled)
    result = [secrets.choice(chars) for chars, _, minimum in classes for _ in range(int(minimum))]
    rest = int(inputs["length"]) - len(result)
    if rest > 0 and not alphabet:
        raise CheckError("length", "no characters to choose from")
    result += [secrets.choice(alphabet) for _ in range(max(rest, 0))]
    secrets.SystemRandom().shuffle(result)
    return "".join(result)


def _crypt() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # deprecated, still in Python 3.11: glibc's libxcrypt does bcrypt
    return crypt


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash of cost 10 ("$2a$10$…", as Go's bcrypt.GenerateFromPassword), by libcrypt."""
    crypt = _crypt()
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 10))
    if not hashed or not hashed.startswith("$2"):
        raise RuntimeError("this system's crypt(3) has no bcrypt")
    return "$2a$" + hashed[4:]


def bcrypt_matches(password: str, hashed: str) -> bool:
    return bool(_crypt().crypt(password, hashed) == hashed)


def random_bytes_outputs(inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    data = secrets.token_bytes(int(inputs["length"]))
    return "none", {"base64": base64.b64encode(data).decode(), "hex": data.hex()}


def random_string_outputs(inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    result = random_string(inputs)
    return result, {"result": result}  # the provider's id of a random_string is its result


def random_password_outputs(inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    result = random_string(inputs)
    return "none", {"result": result, "bcryptHash": bcrypt_hash(result)}


# --- the resource types -------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceSpec:
    """One resource type of a provider: its inputs, defaults, outputs and how to make one."""

    token: str
    inputs: frozenset[str]  # every input, as in the SDK's ...Args
    required: frozenset[str]
    defaults: Mapping[str, Any]
    outputs: frozenset[str]  # the computed outputs (not inputs)
    secrets: frozenset[str]  # inputs and outputs the provider marks secret
    create: Callable[[Mapping[str, Any]], tuple[str, dict[str, Any]]]
    # Inputs a change of which is an update in place (the rest force a replacement).
    updatable: frozenset[str] = frozenset()
    # Write-only inputs: used on create, never stored.
    write_only: frozenset[str] = frozenset()
    renews: bool = False  # a certificate: readyForRenewal and early renewal
    validate: Callable[[Mapping[str, Any]], None] | None = None
    enums: Mapping[str, frozenset[str]] = field(default_factory=dict)


def _validate_random(inputs: Mapping[str, Any]) -> None:
    length = inputs.get("length")
    if isinstance(length, int | float) and length < 1:
        raise CheckError("length", "the minimum value for length is 1")
    minimums = [inputs.get(k) for k in ("minUpper", "minLower", "minNumeric", "minSpecial")]
    numbers = [m for m in minimums if isinstance(m, int | float)]
    if isinstance(length, int | float) and len(numbers) == len(minimums) and length < sum(numbers):
        raise CheckError(
            "length", "length must be >= minUpper + minLower + minNumeric + minSpecial"
        )
    switches = [inputs.get(k) for k in ("upper", "lower", "numeric", "special")]
    if all(s is False for s in switches):
        raise CheckError("upper", "one of upper, lower, numeric or special must be true")


def _validate_bytes(inputs: Mapping[str, Any]) -> None:
    length = inputs.get("length")
    if isinstance(length, int | float) and length < 1:
        raise CheckError("length", "the minimum value for length is 1")


def _validate_cert(inputs: Mapping[str, Any]) -> None:
    for use in inputs.get("allowedUses") or []:
        if isinstance(use, str) and use not in ALLOWED_USES:
            raise CheckError("allowedUses", f"{use!r} is not an accepted key usage")
    for name in ("validityPeriodHours", "earlyRenewalHours"):
        value = inputs.get(name)
        if isinstance(value, int | float) and value < 0:
            raise CheckError(name, "must be at least 0")


_SUBJECT_CERT_INPUTS = frozenset({"dnsNames", "ipAddresses", "subject", "uris"})
_CERT_OUTPUTS = frozenset({"certPem", "readyForRenewal", "validityEndTime", "validityStartTime"})
_CERT_DEFAULTS = {"earlyRenewalHours": 0, "isCaCertificate": False, "setSubjectKeyId": False}
_RANDOM_STRING_INPUTS = frozenset(
    {
        "keepers",
        "length",
        "lower",
        "minLower",
        "minNumeric",
        "minSpecial",
        "minUpper",
        "number",
        "numeric",
        "overrideSpecial",
        "special",
        "upper",
    }
)
_RANDOM_STRING_DEFAULTS = {
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

RESOURCES: dict[str, ResourceSpec] = {
    spec.token: spec
    for spec in (
        ResourceSpec(
            token=PRIVATE_KEY,
            inputs=frozenset({"algorithm", "ecdsaCurve", "rsaBits"}),
            required=frozenset({"algorithm"}),
            defaults={"ecdsaCurve": "P224", "rsaBits": 2048},
            outputs=frozenset(
                {
                    "privateKeyOpenssh",
                    "privateKeyPem",
                    "privateKeyPemPkcs8",
                    "publicKeyFingerprintMd5",
                    "publicKeyFingerprintSha256",
                    "publicKeyOpenssh",
                    "publicKeyPem",
                }
            ),
            secrets=frozenset({"privateKeyOpenssh", "privateKeyPem", "privateKeyPemPkcs8"}),
            create=private_key_outputs,
            enums={
                "algorithm": frozenset({"RSA", "ECDSA", "ED25519"}),
                "ecdsaCurve": frozenset(_CURVES),
            },
        ),
        ResourceSpec(
            token=SELF_SIGNED_CERT,
            inputs=_SUBJECT_CERT_INPUTS
            | {
                "allowedUses",
                "earlyRenewalHours",
                "isCaCertificate",
                "maxPathLength",
                "privateKeyPem",
                "privateKeyPemWo",
                "privateKeyPemWoVersion",
                "setAuthorityKeyId",
                "setSubjectKeyId",
                "validityPeriodHours",
            },
            required=frozenset({"allowedUses", "validityPeriodHours"}),
            defaults={**_CERT_DEFAULTS, "setAuthorityKeyId": False},
            outputs=_CERT_OUTPUTS | {"keyAlgorithm"},
            secrets=frozenset({"privateKeyPem", "privateKeyPemWo"}),
            create=self_signed_cert_outputs,
            updatable=frozenset({"earlyRenewalHours"}),
            write_only=frozenset({"privateKeyPemWo"}),
            renews=True,
            validate=_validate_cert,
        ),
        ResourceSpec(
            token=CERT_REQUEST,
            inputs=_SUBJECT_CERT_INPUTS
            | {"privateKeyPem", "privateKeyPemWo", "privateKeyPemWoVersion"},
            required=frozenset(),
            defaults={},
            outputs=frozenset({"certRequestPem", "keyAlgorithm"}),
            secrets=frozenset({"privateKeyPem", "privateKeyPemWo"}),
            create=cert_request_outputs,
            write_only=frozenset({"privateKeyPemWo"}),
        ),
        ResourceSpec(
            token=LOCALLY_SIGNED_CERT,
            inputs=frozenset(
                {
                    "allowedUses",
                    "caCertPem",
                    "caPrivateKeyPem",
                    "caPrivateKeyPemWo",
                    "caPrivateKeyPemWoVersion",
                    "certRequestPem",
                    "earlyRenewalHours",
                    "isCaCertificate",
                    "maxPathLength",
                    "setSubjectKeyId",
                    "validityPeriodHours",
                }
            ),
            required=frozenset(
                {"allowedUses", "caCertPem", "certRequestPem", "validityPeriodHours"}
            ),
            defaults=_CERT_DEFAULTS,
            outputs=_CERT_OUTPUTS | {"caKeyAlgorithm"},
            secrets=frozenset({"caPrivateKeyPem", "caPrivateKeyPemWo"}),
            create=locally_signed_cert_outputs,
            updatable=frozenset({"earlyRenewalHours"}),
            write_only=frozenset({"caPrivateKeyPemWo"}),
            renews=True,
            validate=_validate_cert,
        ),
        ResourceSpec(
            token=RANDOM_BYTES,
            inputs=frozenset({"keepers", "length"}),
            required=frozenset({"length"}),
            defaults={},
            outputs=frozenset({"base64", "hex"}),
            secrets=frozenset({"base64", "hex"}),
            create=random_bytes_outputs,
            validate=_validate_bytes,
        ),
        ResourceSpec(
            token=RANDOM_PASSWORD,
            inputs=_RANDOM_STRING_INPUTS,
            required=frozenset({"length"}),
            defaults=_RANDOM_STRING_DEFAULTS,
            outputs=frozenset({"result", "bcryptHash"}),
            secrets=frozenset({"result", "bcryptHash"}),
            create=random_password_outputs,
            validate=_validate_random,
        ),
        ResourceSpec(
            token=RANDOM_STRING,
            inputs=_RANDOM_STRING_INPUTS,
            required=frozenset({"length"}),
            defaults=_RANDOM_STRING_DEFAULTS,
            outputs=frozenset({"result"}),
            secrets=frozenset(),
            create=random_string_outputs,
            validate=_validate_random,
        ),
    )
}


def with_defaults(spec: ResourceSpec, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs with the schema's defaults for what is missing (the provider's Check)."""
    checked = dict(inputs)
    if spec.token in (RANDOM_PASSWORD, RANDOM_STRING):
        # `number` is the deprecated twin of `numeric`: either one sets both.
        if checked.get("numeric") is None and checked.get("number") is not None:
            checked["numeric"] = checked["number"]
        if checked.get("number") is None and checked.get("numeric") is not None:
            checked["number"] = checked["numeric"]
    for key, value in spec.defaults.items():
        if checked.get(key) is None:
            checked[key] = value
    return checked


def validate(spec: ResourceSpec, inputs: Mapping[str, Any]) -> list[CheckError]:
    """What the provider's Check would reject (unknown values pass)."""
    failures = [
        CheckError(k, "a value is required")
        for k in sorted(spec.required)
        if k not in inputs or inputs[k] is None
    ]
    for key, allowed in spec.enums.items():
        value = inputs.get(key)
        if isinstance(value, str) and value not in allowed:
            failures.append(CheckError(key, f"{value!r} is not one of {sorted(allowed)}"))
    if spec.validate is not None:
        try:
            spec.validate(inputs)
        except CheckError as error:
            failures.append(error)
    return failures


def provider_outputs(resource_type: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """What the provider would return for a new resource of this type: inputs and outputs.

    Any other type (pulumi-kubernetes') returns its inputs, as the API server would store them.
    """
    spec = RESOURCES.get(resource_type)
    if spec is None:
        return dict(inputs)
    checked = with_defaults(spec, inputs)
    failures = validate(spec, checked)
    if failures:
        raise failures[0]
    _, computed = spec.create(checked)
    outputs = {k: v for k, v in checked.items() if k not in spec.write_only}
    return {**outputs, **computed}
