"""Run the real Pulumi program under Pulumi's mock runtime, with real keys and certificates.

The mocks stand in for the Pulumi engine and the providers only:
- pulumi-tls: keys, CSRs and certificates are made with `cryptography`, with the inputs the
  provider would use (subject, SANs, usages, validity), so tests check real chains.
- pulumi-random: real random bytes and strings.
- pulumi-kubernetes: an object's outputs are its inputs (what the API server would store).

Like the engine's state, a `MockState` shared between runs keeps a resource's outputs while
its inputs stay the same, so a second run sees the keys of the first.
"""

from __future__ import annotations

import base64
import copy
import datetime
import ipaddress
import json
import os
import runpy
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

PROJECT = "k8s-on-k8s"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = os.path.join(REPO_ROOT, "__main__.py")

_EXTENDED_USES = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
}
_KEY_USES = {
    "digital_signature": "digital_signature",
    "key_encipherment": "key_encipherment",
    "cert_signing": "key_cert_sign",
    "crl_signing": "crl_sign",
}


SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"  # Pulumi's wire marker of a secret


@dataclass
class RegisteredResource:
    type: str
    name: str
    inputs: dict[str, Any]  # with secrets unwrapped
    provider: str | None
    secret_paths: set[str]  # dotted paths of the inputs that arrived as secrets


def unwrap_secrets(value: Any, path: str = "", found: set[str] | None = None) -> Any:
    """Plain values from Pulumi's wire form, noting where secrets were."""
    found = found if found is not None else set()
    if isinstance(value, dict):
        if value.get(SECRET_SIGNATURE) == "1b47061264138c4ac30d75fd1eb44270":
            found.add(path)
            return unwrap_secrets(value.get("value"), path, found)
        return {k: unwrap_secrets(v, f"{path}.{k}" if path else k, found) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    return value


@dataclass
class MockState:
    """What the engine would keep between two `pulumi up` runs: outputs by resource."""

    outputs: dict[tuple[str, str], tuple[str, dict[str, Any]]] = field(default_factory=dict)


def _load_key(pem: str) -> Any:
    return serialization.load_pem_private_key(pem.encode(), password=None)


def _pem_private_key(key: Any, fmt: serialization.PrivateFormat) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def _private_key_outputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    algorithm = inputs.get("algorithm", "RSA")
    if algorithm == "RSA":
        key: Any = rsa.generate_private_key(65537, int(inputs.get("rsaBits", 2048)))
        legacy = serialization.PrivateFormat.TraditionalOpenSSL  # "RSA PRIVATE KEY"
    elif algorithm == "ECDSA":
        curves: dict[str, ec.EllipticCurve] = {
            "P224": ec.SECP224R1(),
            "P256": ec.SECP256R1(),
            "P384": ec.SECP384R1(),
        }
        key = ec.generate_private_key(curves[inputs.get("ecdsaCurve", "P224")])
        legacy = serialization.PrivateFormat.TraditionalOpenSSL  # "EC PRIVATE KEY"
    else:
        raise ValueError(f"the tls mock does not support algorithm {algorithm!r}")
    public = key.public_key()
    return {
        "algorithm": algorithm,
        "privateKeyPem": _pem_private_key(key, legacy),
        "privateKeyPemPkcs8": _pem_private_key(key, serialization.PrivateFormat.PKCS8),
        "publicKeyPem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
    }


def _subject(subject: Mapping[str, Any] | None) -> x509.Name:
    subject = subject or {}
    attributes = []
    if subject.get("organization"):
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject["organization"]))
    if subject.get("commonName"):
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, subject["commonName"]))
    return x509.Name(attributes)


def _sans(inputs: Mapping[str, Any]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in inputs.get("dnsNames") or []]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in inputs.get("ipAddresses") or []]
    return names


def _build_certificate(
    *,
    subject: x509.Name,
    public_key: Any,
    issuer: x509.Name,
    signing_key: Any,
    inputs: Mapping[str, Any],
    sans: list[x509.GeneralName],
    issuer_public_key: Any,
) -> tuple[x509.Certificate, dict[str, Any]]:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    hours = int(inputs["validityPeriodHours"])
    uses = list(inputs.get("allowedUses") or [])
    is_ca = bool(inputs.get("isCaCertificate", False))
    key_usage = {
        flag: False
        for flag in (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        )
    }
    for use in uses:
        if use in _KEY_USES:
            key_usage[_KEY_USES[use]] = True
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=hours))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**key_usage), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), critical=False
        )
    )
    extended = [_EXTENDED_USES[use] for use in uses if use in _EXTENDED_USES]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if is_ca or inputs.get("setSubjectKeyId"):
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        )
    certificate = builder.sign(signing_key, hashes.SHA256())
    outputs = {
        "certPem": certificate.public_bytes(serialization.Encoding.PEM).decode(),
        "validityStartTime": now.isoformat(),
        "validityEndTime": (now + datetime.timedelta(hours=hours)).isoformat(),
        "readyForRenewal": False,
    }
    return certificate, outputs


def _self_signed_cert_outputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    key = _load_key(inputs["privateKeyPem"])
    subject = _subject(inputs.get("subject"))
    _, outputs = _build_certificate(
        subject=subject,
        public_key=key.public_key(),
        issuer=subject,
        signing_key=key,
        inputs=inputs,
        sans=_sans(inputs),
        issuer_public_key=key.public_key(),
    )
    return outputs


def _cert_request_outputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    key = _load_key(inputs["privateKeyPem"])
    builder = x509.CertificateSigningRequestBuilder().subject_name(_subject(inputs.get("subject")))
    sans = _sans(inputs)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    request = builder.sign(key, hashes.SHA256())
    return {"certRequestPem": request.public_bytes(serialization.Encoding.PEM).decode()}


def _locally_signed_cert_outputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    request = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
    ca_cert = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
    ca_key = _load_key(inputs["caPrivateKeyPem"])
    try:
        sans = list(request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    _, outputs = _build_certificate(
        subject=request.subject,
        public_key=request.public_key(),
        issuer=ca_cert.subject,
        signing_key=ca_key,
        inputs=inputs,
        sans=sans,
        issuer_public_key=ca_key.public_key(),
    )
    return outputs


def _random_string(inputs: Mapping[str, Any]) -> str:
    alphabet = ""
    if inputs.get("lower", True):
        alphabet += string.ascii_lowercase
    if inputs.get("upper", True):
        alphabet += string.ascii_uppercase
    if inputs.get("numeric", inputs.get("number", True)):
        alphabet += string.digits
    if inputs.get("special", True):
        alphabet += inputs.get("overrideSpecial") or "!@#$%&*()-_=+[]{}<>:?"
    return "".join(secrets.choice(alphabet) for _ in range(int(inputs["length"])))


def provider_outputs(resource_type: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """What the provider would return for a new resource of this type."""
    if resource_type == "tls:index/privateKey:PrivateKey":
        return {**inputs, **_private_key_outputs(inputs)}
    if resource_type == "tls:index/selfSignedCert:SelfSignedCert":
        return {**inputs, **_self_signed_cert_outputs(inputs)}
    if resource_type == "tls:index/certRequest:CertRequest":
        return {**inputs, **_cert_request_outputs(inputs)}
    if resource_type == "tls:index/locallySignedCert:LocallySignedCert":
        return {**inputs, **_locally_signed_cert_outputs(inputs)}
    if resource_type == "random:index/randomBytes:RandomBytes":
        data = secrets.token_bytes(int(inputs["length"]))
        return {**inputs, "base64": base64.b64encode(data).decode(), "hex": data.hex()}
    if resource_type in (
        "random:index/randomString:RandomString",
        "random:index/randomPassword:RandomPassword",
    ):
        return {**inputs, "result": _random_string(inputs)}
    return dict(inputs)


class RealCryptoMocks(pulumi.runtime.Mocks):
    """Records every registered resource; answers like the engine with the given state."""

    def __init__(self, state: MockState | None = None) -> None:
        self.state = state if state is not None else MockState()
        self.resources: list[RegisteredResource] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        secret_paths: set[str] = set()
        inputs = unwrap_secrets(copy.deepcopy(dict(args.inputs)), found=secret_paths)
        self.resources.append(
            RegisteredResource(args.typ, args.name, inputs, args.provider, secret_paths)
        )
        key = (args.typ, args.name)
        fingerprint = json.dumps(inputs, sort_keys=True, default=str)
        known = self.state.outputs.get(key)
        if known is not None and known[0] == fingerprint:
            return f"{args.name}-id", copy.deepcopy(known[1])
        outputs = provider_outputs(args.typ, inputs)
        self.state.outputs[key] = (fingerprint, copy.deepcopy(outputs))
        return f"{args.name}-id", outputs

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


@dataclass
class ProgramRun:
    resources: list[RegisteredResource]
    outputs: dict[str, Any]
    secret_outputs: set[str]

    def of_type(self, resource_type: str) -> list[RegisteredResource]:
        return [r for r in self.resources if r.type == resource_type]

    def named(self, name: str) -> RegisteredResource:
        matches = [r for r in self.resources if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources named {name!r}")
        return matches[0]

    def objects_through(self, provider_name: str) -> list[RegisteredResource]:
        """Kubernetes objects sent through the provider of that name."""
        marker = f"pulumi:providers:kubernetes::{provider_name}::"
        return [r for r in self.kubernetes_objects() if r.provider and marker in r.provider]

    def kubernetes_objects(self) -> list[RegisteredResource]:
        return [
            r
            for r in self.resources
            if r.type.startswith("kubernetes:") and "providers" not in r.type
        ]


def run_program(
    config: Mapping[str, Any] | None = None,
    *,
    state: MockState | None = None,
    mocks: RealCryptoMocks | None = None,
    stack: str = "test",
    program: str = PROGRAM,
) -> ProgramRun:
    """Run __main__.py once under the mocks with `config` (keys without the project prefix).

    Pass `mocks` to look at what was registered even when the program fails.
    """
    mocks = mocks if mocks is not None else RealCryptoMocks(state)
    runtime_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False)
    pulumi.runtime.set_all_config({f"{PROJECT}:{k}": str(v) for k, v in (config or {}).items()})
    resolved: dict[str, Any] = {}
    secret_outputs: set[str] = set()

    async def resolve_exports() -> None:
        root = runtime_settings.get_root_resource()
        exports = getattr(root, "outputs", {})
        for name, value in exports.items():
            output = pulumi.Output.from_input(value)
            resolved[name] = await output.future()
            if await output.is_secret():
                secret_outputs.add(name)

    def program_then_exports() -> Any:
        runpy.run_path(program, run_name="__main__")
        return resolve_exports()

    _sync_await(run_pulumi_func(program_then_exports))
    return ProgramRun(mocks.resources, resolved, secret_outputs)
