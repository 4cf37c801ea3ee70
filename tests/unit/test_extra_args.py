"""extraArgs, kubeadm-style: merged over the managed flags, protected flags refused, validated."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from components.config import (
    PROTECTED_FLAGS,
    ConfigError,
    ControlPlaneSettings,
    parse_settings,
    with_extra_args,
)
from tests.harness import REPO_ROOT, MockState, ProgramRun, RealCryptoMocks, run_program

CONFIG = {"clusterName": "green", "namespace": "tenant-green", "apiHost": "api.green.example.com"}
KONNECTIVITY_KEY = "konnectivityServerExtraArgs"
KEYS = (
    "apiServerExtraArgs",
    "controllerManagerExtraArgs",
    "schedulerExtraArgs",
    "etcdExtraArgs",
    KONNECTIVITY_KEY,
)
KONNECTIVITY = {"exposure": "nodePort", "apiHost": "192.0.2.9", "konnectivity": "true"}
# The workload of each key, and its only container.
WORKLOADS = {
    "apiServerExtraArgs": "green-apiserver-deployment",
    "controllerManagerExtraArgs": "green-controller-manager-deployment",
    "schedulerExtraArgs": "green-scheduler-deployment",
    "etcdExtraArgs": "green-etcd-statefulset",
}
FIELDS = {
    "apiServerExtraArgs": "api_server_extra_args",
    "controllerManagerExtraArgs": "controller_manager_extra_args",
    "schedulerExtraArgs": "scheduler_extra_args",
    "etcdExtraArgs": "etcd_extra_args",
    KONNECTIVITY_KEY: "konnectivity_server_extra_args",
}


def base(key: str) -> dict[str, str]:
    """What lets `key` take effect: the Konnectivity server's flags need Konnectivity on."""
    return dict(KONNECTIVITY) if key == KONNECTIVITY_KEY else {}


def extra_args(settings: ControlPlaneSettings, key: str) -> Any:
    return getattr(settings, FIELDS[key])


def refusal(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_settings(raw)
    return str(raised.value)


# --- the merge -----------------------------------------------------------------------------


def test_a_user_value_replaces_the_managed_one_in_place_and_new_flags_follow_by_name() -> None:
    managed = ["etcd", "--name=$(POD_NAME)", "--snapshot-count=10000", "--quota-backend-bytes=1"]
    merged = with_extra_args(
        managed, (("log-level", "debug"), ("quota-backend-bytes", "8589934592"), ("a", "1"))
    )
    assert merged == [
        "etcd",
        "--name=$(POD_NAME)",
        "--snapshot-count=10000",
        "--quota-backend-bytes=8589934592",
        "--a=1",
        "--log-level=debug",
    ]


def test_no_extra_args_leave_the_command_as_it_is() -> None:
    managed = ["kube-scheduler", "--leader-elect=true"]
    assert with_extra_args(managed, ()) == managed
    assert with_extra_args(managed, ()) is not managed


def test_an_empty_value_is_a_value() -> None:
    assert with_extra_args(["x", "--a=1"], (("a", ""),)) == ["x", "--a="]


@pytest.mark.parametrize("key", KEYS)
def test_parsed_flags_are_sorted_by_name_whatever_the_order_given(key: str) -> None:
    settings = parse_settings(
        {**base(key), key: '{"v": "2", "log-flush-frequency": "10s", "a": ""}'}
    )
    assert extra_args(settings, key) == (("a", ""), ("log-flush-frequency", "10s"), ("v", "2"))


@pytest.mark.parametrize("key", KEYS)
def test_empty_means_none_and_a_structured_map_is_taken_too(key: str) -> None:
    assert extra_args(parse_settings(base(key)), key) == ()
    assert extra_args(parse_settings({**base(key), key: "{}"}), key) == ()
    assert extra_args(parse_settings({**base(key), key: {"v": "3"}}), key) == (("v", "3"),)


def test_konnectivity_server_flags_need_konnectivity() -> None:
    message = refusal({KONNECTIVITY_KEY: '{"v": "2"}'})
    assert f"k8s-on-k8s:{KONNECTIVITY_KEY} = " in message
    assert "empty while konnectivity is false" in message


# --- refusals ------------------------------------------------------------------------------


def concrete(pattern: str) -> str:
    """A flag name a pattern matches: `etcd-*` -> `etcd-x`, `initial-cluster*` -> itself + x."""
    return pattern.replace("*", "x")


PROTECTED_CASES = [(key, pattern) for key, flags in PROTECTED_FLAGS.items() for pattern in flags]


@pytest.mark.parametrize(("key", "pattern"), PROTECTED_CASES)
def test_a_protected_flag_is_refused_with_the_key_the_flag_and_why(key: str, pattern: str) -> None:
    name = concrete(pattern)
    message = refusal({key: json.dumps({name: "/tmp/mine"})})
    assert f"k8s-on-k8s:{key} cannot set --{name}=/tmp/mine" in message
    assert PROTECTED_FLAGS[key][pattern] in message


# The flags the issue names, spelt out: the table must cover each of them.
NAMED_FLAGS = {
    "apiServerExtraArgs": [
        "client-ca-file",
        "tls-cert-file",
        "tls-private-key-file",
        "service-account-issuer",
        "service-account-key-file",
        "service-account-signing-key-file",
        "etcd-servers",
        "etcd-cafile",
        "etcd-certfile",
        "etcd-keyfile",
        "encryption-provider-config",
        "authorization-mode",
        "anonymous-auth",
        "kubelet-client-certificate",
        "kubelet-client-key",
        "requestheader-client-ca-file",
        "requestheader-allowed-names",
        "proxy-client-cert-file",
        "proxy-client-key-file",
    ],
    "etcdExtraArgs": [
        "cert-file",
        "key-file",
        "trusted-ca-file",
        "peer-cert-file",
        "peer-key-file",
        "peer-trusted-ca-file",
        "peer-client-cert-auth",
        "client-cert-auth",
        "data-dir",
        "initial-cluster",
        "initial-cluster-state",
        "initial-cluster-token",
    ],
    "controllerManagerExtraArgs": [
        "kubeconfig",
        "authentication-kubeconfig",
        "authorization-kubeconfig",
        "service-account-private-key-file",
        "root-ca-file",
        "cluster-signing-cert-file",
        "cluster-signing-key-file",
        "cluster-signing-duration",
        "use-service-account-credentials",
    ],
    "schedulerExtraArgs": ["kubeconfig", "authentication-kubeconfig", "authorization-kubeconfig"],
}


@pytest.mark.parametrize(
    ("key", "name"), [(key, name) for key, names in NAMED_FLAGS.items() for name in names]
)
def test_every_security_flag_the_issue_names_is_protected(key: str, name: str) -> None:
    assert f"k8s-on-k8s:{key} cannot set --{name}=" in refusal({key: json.dumps({name: "x"})})


def test_admission_plugins_may_grow_but_keep_node_restriction() -> None:
    key = "apiServerExtraArgs"
    kept = parse_settings({key: '{"enable-admission-plugins": "NodeRestriction,AlwaysPullImages"}'})
    assert kept.api_server_extra_args == (
        ("enable-admission-plugins", "NodeRestriction,AlwaysPullImages"),
    )
    dropped = refusal({key: '{"enable-admission-plugins": "AlwaysPullImages"}'})
    assert "cannot set --enable-admission-plugins=AlwaysPullImages" in dropped
    assert "must keep NodeRestriction enabled" in dropped
    disabled = refusal(
        {key: '{"disable-admission-plugins": "DefaultStorageClass,NodeRestriction"}'}
    )
    assert "cannot set --disable-admission-plugins=" in disabled
    other = parse_settings({key: '{"disable-admission-plugins": "DefaultStorageClass"}'})
    assert other.api_server_extra_args == (("disable-admission-plugins", "DefaultStorageClass"),)


def test_a_flag_protected_for_one_component_is_free_for_another() -> None:
    """The scheduler sets no --client-ca-file; the apiserver's is protected."""
    settings = parse_settings({"schedulerExtraArgs": '{"client-ca-file": "/x"}'})
    assert settings.scheduler_extra_args == (("client-ca-file", "/x"),)


@pytest.mark.parametrize("name", ["--v", "-v", "V", "log_dir", "a--b", "trailing-", "", "a=b"])
@pytest.mark.parametrize("key", KEYS)
def test_bad_flag_names_are_refused(key: str, name: str) -> None:
    message = refusal({key: json.dumps({name: "1"})})
    assert f"k8s-on-k8s:{key} flag {name!r} is invalid" in message
    assert "without leading dashes, of lowercase letters, digits and '-'" in message


@pytest.mark.parametrize("value", [2, True, None, ["a"], {"x": "y"}, 1.5])
@pytest.mark.parametrize("key", KEYS)
def test_values_that_are_not_strings_are_refused(key: str, value: Any) -> None:
    message = refusal({key: json.dumps({"v": value})})
    assert f"k8s-on-k8s:{key} flag 'v' = {json.dumps(value)} is invalid" in message
    assert "a string" in message and "quote numbers and booleans" in message


@pytest.mark.parametrize("text", ["v=2", "[]", '"v"', "{not json", "2"])
@pytest.mark.parametrize("key", KEYS)
def test_anything_but_a_json_object_is_refused(key: str, text: str) -> None:
    message = refusal({key: text})
    assert f"k8s-on-k8s:{key} = {text!r} is invalid" in message
    assert "a JSON object of flag names to string values" in message


def test_every_bad_entry_is_reported_at_once() -> None:
    message = refusal(
        {
            "apiServerExtraArgs": '{"tls-cert-file": "/x", "V": "1"}',
            "etcdExtraArgs": '{"data-dir": "/y", "v": 2}',
        }
    )
    for part in ("--tls-cert-file", "'V'", "--data-dir", "'v' = 2"):
        assert part in message


@pytest.mark.parametrize("key", KEYS)
def test_a_refusal_registers_no_resource(key: str) -> None:
    mocks = RealCryptoMocks()
    protected = next(iter(PROTECTED_FLAGS[key]))
    config = {**CONFIG, **base(key), key: json.dumps({concrete(protected): "x"})}
    with pytest.raises(ConfigError, match=key):
        run_program(config, mocks=mocks)
    assert mocks.resources == []


# --- the rendered pods ---------------------------------------------------------------------


def command(run: ProgramRun, key: str) -> list[str]:
    spec = run.named(WORKLOADS[key]).inputs["spec"]["template"]["spec"]
    result: list[str] = spec["containers"][0]["command"]
    return result


EXTRAS = {
    "apiServerExtraArgs": {"profiling": "true", "audit-log-maxage": "30", "v": "2"},
    "controllerManagerExtraArgs": {"profiling": "true", "node-monitor-grace-period": "50s"},
    "schedulerExtraArgs": {"profiling": "true", "v": "4"},
    "etcdExtraArgs": {"snapshot-count": "5000", "quota-backend-bytes": "8589934592"},
}


@pytest.fixture(scope="module")
def plain() -> ProgramRun:
    return run_program(CONFIG)


@pytest.fixture(scope="module")
def extended() -> ProgramRun:
    return run_program({**CONFIG, **{key: json.dumps(value) for key, value in EXTRAS.items()}})


@pytest.mark.parametrize("key", KEYS[:4])
def test_the_pod_runs_the_managed_flags_then_the_extras(
    plain: ProgramRun, extended: ProgramRun, key: str
) -> None:
    before, after = command(plain, key), command(extended, key)
    extras = EXTRAS[key]
    replaced = {name for name in extras if any(a.startswith(f"--{name}=") for a in before)}
    assert replaced, "each case replaces a managed flag"
    # The managed flags keep their places; the replaced ones take the new value there.
    expected = [
        next((f"--{n}={v}" for n, v in extras.items() if a.startswith(f"--{n}=")), a)
        for a in before
    ]
    added = sorted(name for name in extras if name not in replaced)
    assert after == expected + [f"--{name}={extras[name]}" for name in added]


def test_with_konnectivity_the_egress_flag_comes_after_the_extras() -> None:
    run = run_program(
        {
            **CONFIG,
            "exposure": "nodePort",
            "apiAdvertiseAddress": "192.0.2.9",
            "konnectivity": "true",
            "apiServerExtraArgs": '{"v": "2"}',
        }
    )
    flags = command(run, "apiServerExtraArgs")
    assert flags[-2] == "--v=2"
    assert flags[-1].startswith("--egress-selector-config-file=")


def test_the_konnectivity_sidecar_runs_its_managed_flags_then_the_extras() -> None:
    config = {**CONFIG, **KONNECTIVITY}
    extras = {"proxy-strategies": "default", "keepalive-time": "30s"}

    def sidecar_args(run: ProgramRun) -> list[str]:
        pod = run.named("green-apiserver-deployment").inputs["spec"]["template"]["spec"]
        [sidecar] = [c for c in pod["containers"] if c["name"] == "konnectivity-server"]
        args: list[str] = sidecar["args"]
        return args

    before = sidecar_args(run_program(config))
    after = sidecar_args(run_program({**config, KONNECTIVITY_KEY: json.dumps(extras)}))
    assert "--proxy-strategies=destHost,default" in before
    replaced = [
        a if a != "--proxy-strategies=destHost,default" else "--proxy-strategies=default"
        for a in before
    ]
    assert after == [*replaced, "--keepalive-time=30s"]


def without_commands(inputs: dict[str, Any]) -> dict[str, Any]:
    copied = json.loads(json.dumps(inputs))
    for container in copied["spec"]["template"]["spec"]["containers"]:
        container.pop("command")
    return copied


def test_extra_args_change_only_the_commands_of_the_pods() -> None:
    """Same state, extras added: every CA, key, certificate, Secret and the etcd volume claims
    stay as they were; the four workloads differ in their containers' commands only, so the
    pods roll and nothing else is replaced."""
    state = MockState()
    first = run_program(CONFIG, state=state)
    second = run_program(
        {**CONFIG, **{key: json.dumps(value) for key, value in EXTRAS.items()}}, state=state
    )
    before = {(r.type, r.name): r.inputs for r in first.resources}
    after = {(r.type, r.name): r.inputs for r in second.resources}
    assert before.keys() == after.keys()
    changed = {resource for resource, inputs in after.items() if inputs != before[resource]}
    assert {name for _, name in changed} == set(WORKLOADS.values())
    for resource in changed:
        assert without_commands(after[resource]) == without_commands(before[resource]), resource
    claims = "volumeClaimTemplates"
    etcd = ("kubernetes:apps/v1:StatefulSet", "green-etcd-statefulset")
    assert after[etcd]["spec"][claims] == before[etcd]["spec"][claims]
    # The CAs and keys are the very same (their outputs too, not only their inputs).
    assert first.outputs["clusterCaCertificate"] == second.outputs["clusterCaCertificate"]


def test_readme_names_every_protected_flag() -> None:
    readme = (pathlib.Path(REPO_ROOT) / "README.md").read_text()
    missing = [
        f"{key} --{pattern}"
        for key, flags in PROTECTED_FLAGS.items()
        for pattern in flags
        if f"`--{pattern}`" not in readme
    ]
    assert missing == []
