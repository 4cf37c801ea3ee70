"""Changes refused against the stack's last deployment, and the changes that go through.

The program reads its own stack's last `fixedSettings` output (a stack reference to itself);
the mock runtime answers that read with the outputs of the previous run on the same MockState.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from components.config import ConfigError, parse_settings
from components.fixed_settings import FIXED, fixed_settings, refused_changes, refused_key_changes
from tests.harness import MockState, RealCryptoMocks, run_program

CONFIG = {
    "clusterName": "green",
    "namespace": "tenant-green",
    "apiHost": "api.green.example.com",
    "kubernetesVersion": "v1.36.3",
}

# (change, key named, text of the safe path)
REFUSED = {
    "etcd members": ({"etcdReplicas": "1"}, "etcdReplicas", "restore it into a new stack"),
    "storage size": ({"etcdStorageSize": "8Gi"}, "etcdStorageSize", "patch pvc"),
    "storage class": ({"etcdStorageClass": "fast"}, "etcdStorageClass", "new stack"),
    "service range": ({"serviceCidr": "10.100.0.0/16"}, "serviceCidr", "new cluster"),
    "pod range": ({"podCidr": "10.250.0.0/16"}, "podCidr", "new cluster"),
    "cluster domain": ({"clusterDomain": "tenant.local"}, "clusterDomain", "new cluster"),
    "cluster name": ({"clusterName": "blue"}, "clusterName", "new stack"),
    "namespace": ({"namespace": "tenant-blue"}, "namespace", "new stack"),
    "minor skipped": (
        {"kubernetesVersion": "v1.38.0"},
        "kubernetesVersion",
        "unsupported",  # 1.38 is not supported at all: the config check refuses it first
    ),
    "minor downgrade": ({"kubernetesVersion": "v1.35.4"}, "kubernetesVersion", "go back"),
}


def deployed(config: dict[str, str]) -> MockState:
    state = MockState()
    run_program(config, state=state)
    return state


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_fixed_setting_change_is_refused_with_both_values_and_the_safe_path(case: str) -> None:
    change, key, safe_path = REFUSED[case]
    state = deployed(CONFIG)
    mocks = RealCryptoMocks(state)
    with pytest.raises(ConfigError) as raised:
        run_program({**CONFIG, **change}, mocks=mocks)
    message = str(raised.value)
    assert f"k8s-on-k8s:{key}" in message
    if safe_path != "unsupported":
        assert repr(parse_settings_value(CONFIG, key)) in message
        assert repr(parse_settings_value({**CONFIG, **change}, key)) in message
    else:
        safe_path = "v1.35.4, v1.36.3, v1.37.2"
    assert safe_path in message
    # Nothing was registered but the read of the stack's own outputs.
    assert {r.type for r in mocks.resources} <= {"pulumi:pulumi:StackReference"}


def parse_settings_value(config: dict[str, str], key: str) -> str:
    return fixed_settings(parse_settings(config))[key]


def test_skipping_a_minor_is_refused_and_one_step_goes_through() -> None:
    previous = fixed_settings(parse_settings({**CONFIG, "kubernetesVersion": "v1.35.4"}))
    skipped = fixed_settings(parse_settings({**CONFIG, "kubernetesVersion": "v1.37.2"}))
    (refusal,) = refused_changes(previous, skipped)
    assert "'v1.35.4'" in refusal and "'v1.37.2'" in refusal
    assert "one minor at a time (v1.36.x first)" in refusal
    one_step = fixed_settings(parse_settings({**CONFIG, "kubernetesVersion": "v1.36.3"}))
    assert refused_changes(previous, one_step) == []


@pytest.mark.parametrize(
    "change",
    [
        {"kubernetesVersion": "v1.37.2"},  # one minor up
        {"kubernetesVersion": "v1.36.9"},  # a patch up
        {"kubernetesVersion": "v1.36.1"},  # a patch back (rollback within the minor)
        {"apiServerReplicas": "5", "schedulerReplicas": "1"},
        {"exposure": "nodePort", "apiHost": "192.0.2.9"},
        {"apiHost": "api.blue.example.com"},
        {"konnectivity": "false", "coreDns": "false"},
        {"certificateRenewalHours": "8760"},
        {"suspended": "true"},
    ],
)
def test_ordinary_changes_go_through(change: dict[str, str]) -> None:
    state = deployed(CONFIG)
    after = run_program({**CONFIG, **change}, state=state)
    assert after.outputs["fixedSettings"]["etcdStorageSize"] == "4Gi"


def test_every_refusal_is_reported_at_once() -> None:
    state = deployed(CONFIG)
    change = {"etcdStorageSize": "8Gi", "podCidr": "10.250.0.0/16"}
    with pytest.raises(ConfigError) as raised:
        run_program({**CONFIG, **change}, state=state)
    assert "etcdStorageSize" in str(raised.value) and "podCidr" in str(raised.value)


def test_a_new_or_destroyed_stack_has_nothing_to_compare() -> None:
    assert refused_changes(None, fixed_settings(parse_settings(CONFIG))) == []
    assert refused_changes({}, fixed_settings(parse_settings(CONFIG))) == []


def test_every_fixed_key_is_exported() -> None:
    exported = fixed_settings(parse_settings(CONFIG))
    assert set(FIXED) | {"kubernetesVersion", "suspended"} == set(exported)


def test_a_first_deployment_cannot_be_suspended() -> None:
    """The objects inside the tenant are written through its API: it must serve once."""
    mocks = RealCryptoMocks(MockState())
    with pytest.raises(ConfigError) as raised:
        run_program({**CONFIG, "suspended": "true"}, mocks=mocks)
    message = str(raised.value)
    assert "k8s-on-k8s:suspended cannot be true on the first deployment" in message
    assert "deploy with suspended false, then suspend" in message
    assert {r.type for r in mocks.resources} <= {"pulumi:pulumi:StackReference"}


@pytest.mark.parametrize(
    ("before", "after", "refused"),
    [
        (["key1"], ("key1", "key2"), []),  # a new key reads first
        (["key1", "key2"], ("key2", "key1"), []),  # then writes; the old one still reads
        (["key2", "key1"], ("key2",), []),  # after the rewrite, the old one goes
        (["key1"], ("key2",), ["add 'key2' after the others first (key1,key2)", "keep 'key1'"]),
        (["key1"], ("key2", "key1"), ["add 'key2' after the others first (key1,key2)"]),
        (["key1", "key2"], ("key2",), ["keep 'key1' as a read key (key2,key1)"]),
        (None, ("key7",), []),  # a first deployment starts with any key
    ],
)
def test_encryption_keys_change_one_safe_step_at_a_time(
    before: list[str] | None, after: tuple[str, ...], refused: list[str]
) -> None:
    refusals = refused_key_changes(before, after)
    assert len(refusals) == len(refused), refusals
    for refusal, safe_path in zip(refusals, refused, strict=True):
        assert "k8s-on-k8s:secretsEncryptionKeys" in refusal and safe_path in refusal


def test_a_key_rotation_step_too_far_is_refused_before_anything_is_registered() -> None:
    state = deployed(CONFIG)
    assert state.stack_outputs["secretsEncryptionKeys"] == ["key1"]
    mocks = RealCryptoMocks(state)
    with pytest.raises(ConfigError, match="cannot start writing with a key"):
        run_program({**CONFIG, "secretsEncryptionKeys": "key2"}, mocks=mocks)
    assert {r.type for r in mocks.resources} <= {"pulumi:pulumi:StackReference"}
    rotated = run_program({**CONFIG, "secretsEncryptionKeys": "key1,key2"}, state=state)
    keys = {r.name for r in rotated.of_type("random:index/randomBytes:RandomBytes")}
    # The first key keeps its resource (never replaced); the new one comes beside it.
    assert keys == {"green-apiserver-encryption-key", "green-apiserver-encryption-key-key2"}


def test_a_stack_deployed_before_secretbox_moves_to_it_in_two_deployments() -> None:
    """The previous program version exported fixedSettings but no secretsEncryptionKeys and
    wrote with aescbc: the first `pulumi up` keeps aescbc writing (secretbox reads), the next
    one writes with secretbox."""
    state = deployed(CONFIG)
    del state.stack_outputs["secretsEncryptionKeys"]

    def providers(run: Any) -> list[str]:
        (secret,) = [
            r.inputs
            for r in run.of_type("kubernetes:core/v1:Secret")
            if r.inputs["metadata"]["name"] == "green-apiserver-pki"
        ]
        document = yaml.safe_load(secret["stringData"]["encryption-config.yaml"])
        return [next(iter(p)) for p in document["resources"][0]["providers"]]

    assert providers(run_program(CONFIG, state=state)) == ["aescbc", "secretbox", "identity"]
    assert providers(run_program(CONFIG, state=state)) == ["secretbox", "aescbc", "identity"]
