"""The tls and random test doubles under the real Pulumi engine (CLI v3.274.1).

An inline Automation API program with pulumi_tls and pulumi_random (a CA, a key, a certificate
request, a locally signed certificate, a password, a string and random bytes) against a file
backend in a temporary directory, with the doubles installed as the plugins the SDKs ask for
(tls 5.6.2, random 4.21.4) and plugin downloads off. It checks what the project relies on:
`up` works with real certificates, a second preview changes nothing, secrets stay secret in
the outputs and in the state, a subject change replaces only the chain below it, and a
certificate inside its early-renewal window is replaced by the next `up`.

Needs the CLI that `make engine` builds (tests/e2e/engine.py says where); fails without it.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_random as random
import pulumi_tls as tls
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pulumi import automation as auto

from tests.doubles import install_doubles
from tests.e2e.engine import EngineBinaries, engine_environment

BINARIES = EngineBinaries.from_cache()
PULUMI = BINARIES.cli
SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"

BASELINE = {"caCommonName": "doubles-ca", "leafCommonName": "leaf", "leafHours": 24, "leafEarly": 2}
SETTINGS: dict[str, Any] = dict(BASELINE)  # what the program builds; tests change it
STATE: dict[str, Path] = {}  # where the file backend keeps the stack


def program() -> None:
    ca_key = tls.PrivateKey("ca", algorithm="ECDSA", ecdsa_curve="P256")
    ca = tls.SelfSignedCert(
        "ca",
        private_key_pem=ca_key.private_key_pem,
        subject=tls.SelfSignedCertSubjectArgs(common_name=SETTINGS["caCommonName"]),
        is_ca_certificate=True,
        set_subject_key_id=True,
        validity_period_hours=48,
        allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
    )
    leaf_key = tls.PrivateKey("leaf", algorithm="ECDSA", ecdsa_curve="P256")
    request = tls.CertRequest(
        "leaf",
        private_key_pem=leaf_key.private_key_pem,
        subject=tls.CertRequestSubjectArgs(
            common_name=SETTINGS["leafCommonName"], organization="tests"
        ),
        dns_names=["leaf.example.com"],
        ip_addresses=["192.0.2.7"],
    )
    leaf = tls.LocallySignedCert(
        "leaf",
        cert_request_pem=request.cert_request_pem,
        ca_cert_pem=ca.cert_pem,
        ca_private_key_pem=ca_key.private_key_pem,
        validity_period_hours=SETTINGS["leafHours"],
        early_renewal_hours=SETTINGS["leafEarly"],
        allowed_uses=["digital_signature", "server_auth", "client_auth"],
    )
    password = random.RandomPassword("password", length=24)
    token = random.RandomString("token", length=16, upper=False, special=False)
    key_bytes = random.RandomBytes("key", length=32)
    pulumi.export("caCert", ca.cert_pem)
    pulumi.export("leafCert", leaf.cert_pem)
    pulumi.export("leafKey", leaf_key.private_key_pem)
    pulumi.export("leafReadyForRenewal", leaf.ready_for_renewal)
    pulumi.export("password", password.result)
    pulumi.export("token", token.result)
    pulumi.export("keyBytes", key_bytes.base64)


@dataclass
class Steps:
    """The engine's steps of one operation, by resource (type::name)."""

    ops: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def __call__(self, event: auto.EngineEvent) -> None:
        pre = event.resource_pre_event
        if pre is not None:
            name = "::".join(pre.metadata.urn.split("::")[-2:])
            self.ops[name].add(str(pre.metadata.op.value))

    def replaced(self) -> set[str]:
        return {name for name, ops in self.ops.items() if "replace" in ops}

    def changed(self) -> set[str]:
        return {name for name, ops in self.ops.items() if ops != {"same"}}


LEAF_CERT = "tls:index/locallySignedCert:LocallySignedCert::leaf"
CA_CERT = "tls:index/selfSignedCert:SelfSignedCert::ca"
LEAF_REQUEST = "tls:index/certRequest:CertRequest::leaf"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[auto.Stack]:
    root = tmp_path_factory.mktemp("engine")
    home, state, work = root / "home", root / "state", root / "work"
    for directory in (home, state, work):
        directory.mkdir()
    missing = BINARIES.missing()
    assert not missing, f"the Pulumi engine is not built: {missing}"
    env = engine_environment(home, state)
    install_doubles(PULUMI, home, Path(sys.executable), {**os.environ, **env})
    STATE["dir"] = state
    created = auto.create_or_select_stack(
        "test",
        project_name="doubles",
        program=program,
        opts=auto.LocalWorkspaceOptions(
            work_dir=str(work),
            pulumi_home=str(home),
            env_vars=env,
            project_settings=auto.ProjectSettings(name="doubles", runtime="python"),
            pulumi_command=auto.PulumiCommand(root=str(BINARIES.cli_root)),
        ),
    )
    SETTINGS.update(BASELINE)
    yield created
    created.destroy()
    created.workspace.remove_stack("test")


def up(stack: auto.Stack) -> tuple[auto.UpResult, Steps]:
    steps = Steps()
    return stack.up(on_event=steps), steps


def preview(stack: auto.Stack) -> tuple[auto.PreviewResult, Steps]:
    steps = Steps()
    return stack.preview(on_event=steps), steps


def at_baseline(stack: auto.Stack) -> None:
    SETTINGS.clear()
    SETTINGS.update(BASELINE)
    up(stack)


def test_up_makes_real_certificates_and_keeps_secrets(stack: auto.Stack) -> None:
    result, _ = up(stack)
    assert result.summary.result == "succeeded"
    outputs = result.outputs
    ca = x509.load_pem_x509_certificate(outputs["caCert"].value.encode())
    leaf = x509.load_pem_x509_certificate(outputs["leafCert"].value.encode())
    leaf.verify_directly_issued_by(ca)
    assert leaf.subject.rfc4514_string() == "CN=leaf,O=tests"
    key = serialization.load_pem_private_key(outputs["leafKey"].value.encode(), None)
    assert key.public_key() == leaf.public_key()
    assert outputs["leafReadyForRenewal"].value is False
    assert len(outputs["password"].value) == 24
    assert len(outputs["token"].value) == 16
    # Secret as in the real providers; the rest in the clear.
    secret = {name for name, value in outputs.items() if value.secret}
    assert secret == {"leafKey", "password", "keyBytes"}
    # In the state too: the keys' outputs and the inputs that carried them.
    deployment = stack.export_stack().deployment
    assert deployment is not None
    resources = {"::".join(r["urn"].split("::")[-2:]): r for r in deployment["resources"]}

    def is_encrypted(value: Any) -> bool:  # shown as {sig, plaintext}, stored as {sig, ciphertext}
        return isinstance(value, dict) and SECRET_SIGNATURE in value

    key_state = resources["tls:index/privateKey:PrivateKey::leaf"]
    assert is_encrypted(key_state["outputs"]["privateKeyPem"])
    assert is_encrypted(key_state["outputs"]["privateKeyPemPkcs8"])
    assert not is_encrypted(key_state["outputs"]["publicKeyPem"])
    request_state = resources[LEAF_REQUEST]
    assert is_encrypted(request_state["inputs"]["privateKeyPem"])
    assert is_encrypted(request_state["outputs"]["privateKeyPem"])
    leaf_state = resources[LEAF_CERT]
    assert is_encrypted(leaf_state["inputs"]["caPrivateKeyPem"])
    assert is_encrypted(leaf_state["outputs"]["caPrivateKeyPem"])
    assert not is_encrypted(leaf_state["outputs"]["certPem"])
    assert leaf_state["outputs"]["earlyRenewalHours"] == 2
    assert leaf_state["id"] == str(leaf.serial_number)
    assert is_encrypted(
        resources["random:index/randomPassword:RandomPassword::password"]["outputs"]["result"]
    )
    assert not is_encrypted(
        resources["random:index/randomString:RandomString::token"]["outputs"]["result"]
    )


def test_a_second_preview_changes_nothing(stack: auto.Stack) -> None:
    at_baseline(stack)
    result, steps = preview(stack)
    assert set(result.change_summary) == {auto.OpType.SAME}, result.change_summary
    assert steps.changed() == set()


def test_a_subject_change_replaces_only_the_chain_below_it(stack: auto.Stack) -> None:
    at_baseline(stack)
    before = stack.outputs()
    SETTINGS["caCommonName"] = "another-ca"
    _, planned_steps = preview(stack)
    assert planned_steps.replaced() == {CA_CERT, LEAF_CERT}, planned_steps.ops
    result, steps = up(stack)
    assert steps.replaced() == {CA_CERT, LEAF_CERT}, steps.ops
    assert steps.changed() == {CA_CERT, LEAF_CERT}
    after = result.outputs
    assert after["leafKey"].value == before["leafKey"].value
    assert after["password"].value == before["password"].value
    ca = x509.load_pem_x509_certificate(after["caCert"].value.encode())
    assert ca.subject.rfc4514_string() == "CN=another-ca"
    x509.load_pem_x509_certificate(after["leafCert"].value.encode()).verify_directly_issued_by(ca)
    # The leaf's own subject: its request and certificate, nothing above.
    SETTINGS["leafCommonName"] = "another-leaf"
    _, steps = up(stack)
    assert steps.replaced() == {LEAF_REQUEST, LEAF_CERT}, steps.ops
    _, steps = preview(stack)
    assert steps.changed() == set(), steps.ops


def test_a_certificate_due_for_renewal_is_replaced(stack: auto.Stack) -> None:
    at_baseline(stack)
    old_leaf = stack.outputs()["leafCert"].value
    # A smaller early renewal: an update in place, the certificate stays.
    SETTINGS["leafEarly"] = 1
    _, steps = up(stack)
    assert steps.ops[LEAF_CERT] == {"update"}, steps.ops
    assert stack.outputs()["leafCert"].value == old_leaf
    # Longer than the validity: due now, the next up replaces it...
    SETTINGS["leafEarly"] = SETTINGS["leafHours"] + 1
    result, steps = up(stack)
    assert steps.replaced() == {LEAF_CERT}, steps.ops
    assert result.outputs["leafCert"].value != old_leaf
    # ... and the new one is due from the start: every plan replaces it again, inputs unchanged.
    assert result.outputs["leafReadyForRenewal"].value is True
    _, steps = preview(stack)
    assert steps.replaced() == {LEAF_CERT}, steps.ops
    at_baseline(stack)
    _, steps = preview(stack)
    assert steps.changed() == set(), steps.ops
