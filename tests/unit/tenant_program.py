"""Run a tiny program that builds tenant-cluster components, under the mock runtime.

The components take a CA certificate and a provider for the tenant cluster; here the CA is a real
one made with `cryptography` and the provider a placeholder, so the tests need no Pki.
"""

from __future__ import annotations

import datetime
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.harness import ProgramRun, RegisteredResource, run_program

TENANT_PROVIDER = "pulumi:providers:kubernetes::tenant::"


def make_ca_pem(algorithm: str = "ecdsa") -> str:
    """A self-signed CA certificate, like the cluster CA (CN kubernetes)."""
    key: Any = (
        ec.generate_private_key(ec.SECP256R1())
        if algorithm == "ecdsa"
        else rsa.generate_private_key(65537, 2048)
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def run_tenant_program(
    tmp_path: Path, body: str, config: Mapping[str, str], ca_pem: str, endpoint: str
) -> ProgramRun:
    """Run `body` with `settings`, `tenant` (provider), `CA_PEM` and `ENDPOINT` defined."""
    program = tmp_path / "__main__.py"
    program.write_text(
        textwrap.dedent(
            f"""\
            import pulumi
            import pulumi_kubernetes as k8s

            from components.config import parse_settings

            CA_PEM = {ca_pem!r}
            ENDPOINT = {endpoint!r}
            settings = parse_settings({dict(config)!r})
            tenant = k8s.Provider("tenant", kubeconfig="x")
            """
        )
        + textwrap.dedent(body)
    )
    return run_program(program=str(program))


def by_name(run: ProgramRun) -> dict[str, RegisteredResource]:
    """Every registered resource by name; names must be unique across types too."""
    named = {resource.name: resource for resource in run.resources}
    assert len(named) == len(run.resources), sorted(r.name for r in run.resources)
    return named
