"""Offline checks of the e2e suite's own parts: no rig, root, built binaries or tenant needed.

`make unit` runs them (pyproject.toml's testpaths), and so does the e2e run (MODULE_ORDER).
"""

from __future__ import annotations

import base64
import datetime
import importlib
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from components.config import parse_settings
from components.tenant import upload_config
from tests.e2e import timeline
from tests.e2e.conftest import MODULE_ORDER
from tests.e2e.images import build
from tests.e2e.infra import RigSettings
from tests.e2e.infra.worker import (
    API_PROXY_IMAGE,
    WorkerSettings,
    masquerade_rule,
    worker_cni_conflist,
)
from tests.e2e.infra.worker import kubelet_config as kubelet_config_for
from tests.e2e.kubeadm import in_private_mounts, kubeadm_join_argv
from tests.e2e.load import wall_clock
from tests.e2e.tenant import (
    CLUSTER,
    FIRST_PHASE,
    Phase,
    TenantPhases,
    check_phase_plan,
    ingress_config,
    stack_config,
)
from tests.e2e.tokens import verified_claims

HERE = Path(__file__).parent

# -- The shared tenant's phases -----------------------------------------------------------------


class _Rig:
    """What stack_config and ingress_config read of the rig, without a running one."""

    settings = RigSettings()
    node_ip = settings.node_ip
    namespace = settings.tenant_namespace


def _tenant_modules() -> list[tuple[str, TenantPhases]]:
    """Every module of MODULE_ORDER that declares TENANT_PHASES, in that order (read from the
    source first: the others may need built binaries to import)."""
    found = []
    for relative in MODULE_ORDER:
        if not re.search(r"^TENANT_PHASES = ", (HERE / relative).read_text(), re.MULTILINE):
            continue
        name = "tests.e2e." + relative.removesuffix(".py").replace("/", ".")
        declared = importlib.import_module(name).TENANT_PHASES
        assert isinstance(declared, TenantPhases), relative
        found.append((relative, declared))
    return found


def test_module_order_starts_every_module_in_a_phase_it_accepts() -> None:
    modules = _tenant_modules()
    assert [name for name, _ in modules] == [
        "test_tenant_control_plane.py",
        "test_network_policies.py",
        "test_updates.py",
        "test_worker_join.py",
        "test_worker_join_ingress.py",
        "test_worker_join_kubeadm.py",
        "test_destroy.py",
    ]
    check_phase_plan(modules)
    # Each module also runs alone, on a fresh tenant.
    for module in modules:
        check_phase_plan([module])


def test_a_module_after_one_that_leaves_another_phase_is_refused() -> None:
    modules = dict(_tenant_modules())
    with pytest.raises(ValueError, match=r"test_updates.py starts from NODE_PORT .* at INGRESS"):
        check_phase_plan(
            [
                ("test_worker_join_ingress.py", modules["test_worker_join_ingress.py"]),
                ("test_updates.py", modules["test_updates.py"]),
            ]
        )
    # test_worker_join.py may leave konnectivity on: test_updates.py cannot follow it.
    with pytest.raises(ValueError, match="NODE_PORT_KONNECTIVITY"):
        check_phase_plan(
            [
                ("test_worker_join.py", modules["test_worker_join.py"]),
                ("test_updates.py", modules["test_updates.py"]),
            ]
        )
    # Nothing follows the destroy.
    with pytest.raises(ValueError, match="at DESTROYED"):
        check_phase_plan(
            [
                ("test_destroy.py", modules["test_destroy.py"]),
                ("test_worker_join_kubeadm.py", modules["test_worker_join_kubeadm.py"]),
            ]
        )


def test_the_phase_follows_the_stack_config() -> None:
    config = stack_config(_Rig())  # type: ignore[arg-type]
    assert Phase.of(config) is FIRST_PHASE is Phase.NODE_PORT
    assert Phase.of({**config, "konnectivity": "true"}) is Phase.NODE_PORT_KONNECTIVITY
    assert Phase.of({**config, "konnectivity": "false"}) is Phase.NODE_PORT
    ingress = {**config, "konnectivity": "true", **ingress_config(_Rig())}  # type: ignore[arg-type]
    assert Phase.of(ingress) is Phase.INGRESS
    assert Phase.of(ingress, destroyed=True) is Phase.DESTROYED
    unchanged = TenantPhases.of(starts=[Phase.NODE_PORT, Phase.INGRESS])
    assert unchanged.left_from(Phase.INGRESS) == {Phase.INGRESS}


# -- Service-account tokens ---------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _sign(key: rsa.RSAPrivateKey, claims: dict[str, object], alg: str = "RS256") -> str:
    header = _b64url(json.dumps({"alg": alg, "kid": "k"}).encode())
    payload = _b64url(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64url(signature)}"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_a_token_signed_with_the_key_verifies_and_gives_its_claims(
    signing_key: rsa.RSAPrivateKey,
) -> None:
    now = int(datetime.datetime.now(datetime.UTC).timestamp())
    claims = {"iss": "https://kubernetes.default.svc.cluster.local", "sub": "x", "exp": now}
    assert verified_claims(_sign(signing_key, claims), _public_pem(signing_key)) == claims


def test_a_changed_claim_another_key_or_algorithm_is_refused(
    signing_key: rsa.RSAPrivateKey,
) -> None:
    token = _sign(signing_key, {"sub": "system:serviceaccount:a:default"})
    header, _, signature = token.split(".")
    forged = f"{header}.{_b64url(json.dumps({'sub': 'system:admin'}).encode())}.{signature}"
    with pytest.raises(InvalidSignature):
        verified_claims(forged, _public_pem(signing_key))
    with pytest.raises(InvalidSignature):
        verified_claims(token, _public_pem(rsa.generate_private_key(65537, 2048)))
    with pytest.raises(ValueError, match="RS256"):
        verified_claims(_sign(signing_key, {}, alg="none"), _public_pem(signing_key))
    with pytest.raises(ValueError, match="three parts"):
        verified_claims(f"{header}.{signature}", _public_pem(signing_key))


# -- The worker's pure parts --------------------------------------------------------------------


def _worker_settings() -> WorkerSettings:
    return WorkerSettings.for_tenant(RigSettings(), service_cidr="10.96.0.0/12")


def test_worker_settings_follow_kubeadm_conventions() -> None:
    s = _worker_settings()
    assert s.cluster_dns == "10.96.0.10"
    assert s.state_dir.is_relative_to(s.rig.state_dir)
    assert s.cgroup_root != s.rig.cgroup_root
    assert s.node_ip != s.rig.node_ip


def test_kubelet_config_keeps_the_clusters_settings_and_patches_the_host() -> None:
    s = _worker_settings()
    cluster = yaml.safe_load(
        upload_config.kubelet_configuration(parse_settings(_program_like_config()))
    )
    config = kubelet_config_for(s, cluster)
    # The cluster's: authentication, authorization, DNS, certificate rotation.
    for key in ("authorization", "clusterDNS", "clusterDomain", "rotateCertificates"):
        assert config[key] == cluster[key]
    assert config["authentication"]["webhook"] == cluster["authentication"]["webhook"]
    # This host's: cgroupfs and cgroup v1, our CA path, our directories, no /etc static pods.
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["failCgroupV1"] is False
    assert config["cgroupRoot"] == s.cgroup_root
    assert config["authentication"]["x509"]["clientCAFile"] == str(s.ca_file)
    assert config["containerRuntimeEndpoint"] == f"unix://{s.containerd_socket}"
    assert "staticPodPath" not in config
    assert "tlsCertFile" not in config and "tlsPrivateKeyFile" not in config


def _program_like_config() -> dict[str, str]:
    return {"clusterName": CLUSTER, "exposure": "nodePort", "apiHost": "10.250.0.1"}


def test_the_worker_cni_network_masquerades_and_the_rig_masquerades_towards_it() -> None:
    s = _worker_settings()
    conflist = worker_cni_conflist(s, "10.244.1.0/24")
    bridge = conflist["plugins"][0]
    assert (bridge["bridge"], bridge["ipMasq"]) == ("cni1", True)
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]
    rule = masquerade_rule(s)
    assert rule[rule.index("-s") + 1] == s.rig.cluster_cidr
    assert rule[rule.index("-d") + 1] == "10.250.0.2/32"


# -- The ingress stack ----------------------------------------------------------------------------


def test_the_ingress_stack_is_the_shared_tenant_with_ingress_exposure() -> None:
    config = ingress_config(_Rig())  # type: ignore[arg-type]
    settings = parse_settings(config)
    assert settings.exposure.mode == "ingress"
    assert settings.exposure.host.endswith("." + RigSettings().ingress_domain)
    assert settings.node_api_address is None
    assert settings.api_proxy_image == API_PROXY_IMAGE
    assert settings.api_proxy_address == "172.20.0.1"


# -- kubeadm join ---------------------------------------------------------------------------------


def test_the_join_command_gets_only_host_specific_flags_added() -> None:
    argv = kubeadm_join_argv(
        "kubeadm join api.example.com:443 --token abcdef.0123456789abcdef "
        "--discovery-token-ca-cert-hash sha256:" + "0" * 64,
        Path("/bin/kubeadm"),
        "n1",
        Path("/run/c.sock"),
    )
    assert argv[:3] == ["/bin/kubeadm", "join", "api.example.com:443"]
    assert "--discovery-token-unsafe-skip-ca-verification" not in argv
    assert "--cri-socket=unix:///run/c.sock" in argv
    with pytest.raises(ValueError, match="not a kubeadm join"):
        kubeadm_join_argv("kubectl get nodes", Path("/bin/kubeadm"), "n1", Path("/c.sock"))
    wrapped = in_private_mounts(["true"], {Path("/etc/kubernetes"): Path("/tmp/x")})
    assert wrapped[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert "mount --bind /tmp/x /etc/kubernetes" in wrapped[6]


NO_ENDPOINTS_RULE = (
    '-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "ns/svc:https has no endpoints" '
    "-m tcp --dport 31443 -j REJECT --reject-with icmp-port-unreachable"
)
IPTABLES_SAVE_BEFORE = "\n".join(
    [
        "# Generated by iptables-save",
        "*filter",
        ":KUBE-EXTERNAL-SERVICES - [0:0]",
        f"[0:0] {NO_ENDPOINTS_RULE}",
        '[7:420] -A KUBE-POD-FW-ABC -m comment --comment "default deny" -j REJECT',
        "[90:5400] -A KUBE-POD-FW-ABC -j ACCEPT",
        "COMMIT",
        "",
    ]
)


def test_reject_counters_keep_only_reject_rules_with_their_packet_counts() -> None:
    counters = timeline.reject_counters(IPTABLES_SAVE_BEFORE, "filter")
    assert list(counters.values()) == [0, 7]
    assert all(rule.startswith("filter -A KUBE-") for rule in counters)


def test_counter_increases_name_the_rules_that_fired_and_count_new_rules_from_zero() -> None:
    before = timeline.reject_counters(IPTABLES_SAVE_BEFORE, "filter")
    after_text = IPTABLES_SAVE_BEFORE.replace("[0:0] -A KUBE-EXTERNAL", "[1:60] -A KUBE-EXTERNAL")
    after_text += "[2:120] -A KUBE-NEW -j REJECT\n"
    after = timeline.reject_counters(after_text, "filter")
    increases = timeline.counter_increases(before, after)
    assert sorted(increases.values()) == [1, 2]
    assert any("has no endpoints" in rule for rule in increases)
    assert timeline.counter_increases(before, before) == {}


def test_wall_clock_has_milliseconds() -> None:
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", wall_clock())


def test_a_tenant_release_brings_its_control_plane_and_its_paired_etcd_only() -> None:
    references = [spec.reference for spec in build.release_images("v1.36.3")]
    assert references == [
        "registry.k8s.io/kube-apiserver:v1.36.3",
        "registry.k8s.io/kube-controller-manager:v1.36.3",
        "registry.k8s.io/kube-scheduler:v1.36.3",
        "registry.k8s.io/etcd:3.6.8-0",
    ]
    assert build.release_images("v1.35.4")[-1].binaries == {
        "/usr/local/bin/etcd": "etcd",
        "/usr/local/bin/etcdctl": "etcdctl",
    }
    with pytest.raises(ValueError, match=re.escape("v1.40.0")):
        build.release_images("v1.40.0")


def test_a_release_s_binaries_sit_beside_the_rig_s_in_the_cache() -> None:
    rig = RigSettings(bin_dir=Path("/cache/v1.37.2/bin"))
    assert rig.release_bin_dir("v1.36.3") == Path("/cache/v1.36.3/bin")
    assert rig.release_images_dir("v1.36.3") == Path("/cache/v1.36.3/images")
    worker = WorkerSettings.for_tenant(rig, "10.96.0.0/16", release="v1.36.3")
    assert worker.node_bin_dir == Path("/cache/v1.36.3/bin")
    assert worker.kubernetes_version == "v1.36.3"
    assert WorkerSettings.for_tenant(rig, "10.96.0.0/16").node_bin_dir == rig.bin_dir


def test_watch_events_become_one_line_each_even_without_endpoints_or_statuses() -> None:
    pending = {"type": "ADDED", "object": {"kind": "Pod", "metadata": {"name": "p"}}}
    assert timeline.describe_event(pending) == "ADDED pod p None deleting=None "
    empty: dict[str, Any] = {"kind": "EndpointSlice", "metadata": {"name": "s"}}
    assert timeline.describe_event({"type": "MODIFIED", "object": empty}) == (
        "MODIFIED slice s: no endpoints"
    )
    endpoint = {"addresses": ["10.0.0.1"], "conditions": {"ready": False, "serving": True}}
    sliced = {"type": "MODIFIED", "object": {**empty, "endpoints": [endpoint]}}
    assert timeline.describe_event(sliced) == "MODIFIED slice s: 10.0.0.1=False/True/None"


KUBE_PROXY_METRICS = """# HELP kubeproxy_network_programming_duration_seconds ...
kubeproxy_network_programming_duration_seconds_bucket{ip_family="IPv4",le="1"} 3
kubeproxy_network_programming_duration_seconds_bucket{ip_family="IPv4",le="2"} 4
kubeproxy_network_programming_duration_seconds_bucket{ip_family="IPv4",le="+Inf"} 4
kubeproxy_sync_full_proxy_rules_duration_seconds_bucket{le="0.5"} 1
kubeproxy_sync_partial_proxy_rules_duration_seconds_bucket{le="0.5"} 9
kubeproxy_sync_partial_proxy_rules_duration_seconds_bucket{le="+Inf"} 9
other_bucket{le="1"} 7
"""


def test_the_slowest_kube_proxy_observation_between_two_readings_is_bounded_by_its_bucket() -> None:
    before = timeline.histogram_buckets(KUBE_PROXY_METRICS)
    assert set(before) == set(timeline.KUBE_PROXY_HISTOGRAMS)
    name = "kubeproxy_network_programming_duration_seconds"
    assert before[name] == {1.0: 3, 2.0: 4, math.inf: 4}
    slower = {1.0: 4, 2.0: 5, math.inf: 7}  # one at most 1 s, one more under 2 s, two beyond
    assert timeline.slowest_since(before[name], slower) == math.inf
    assert timeline.slowest_since(before[name], {1.0: 3, 2.0: 6, math.inf: 6}) == 2.0
    assert timeline.slowest_since(before[name], before[name]) is None


CONNTRACK_EVENTS = [
    "[1796660487.612091]\t    [NEW] tcp      6 120 SYN_SENT src=10.250.0.1 dst=10.250.0.1"
    " sport=34000 dport=31443 [UNREPLIED] src=10.244.0.7 dst=10.244.0.1 sport=6443 dport=34000",
    "[1796660488.500000]\t[DESTROY] tcp      6 CLOSE src=10.250.0.1 dst=10.250.0.1 sport=34002"
    " dport=31443 [UNREPLIED] src=10.250.0.1 dst=10.250.0.1 sport=31443 dport=34002",
    "[1796660490.000000]\t    [NEW] tcp      6 120 SYN_SENT src=10.250.0.1 ...",
    "conntrack v1.4.7 (conntrack-tools): 3 flow events have been shown.",
]


def test_conntrack_events_are_kept_from_a_second_before_a_failure_to_just_after() -> None:
    assert timeline.conntrack_events_near(CONNTRACK_EVENTS, [1796660488.6]) == CONNTRACK_EVENTS[:2]
    assert timeline.conntrack_events_near(CONNTRACK_EVENTS, [1796660488.7]) == CONNTRACK_EVENTS[1:2]
    # Each event once, however many failures it is near; nothing without a failure.
    both = timeline.conntrack_events_near(CONNTRACK_EVENTS, [1796660488.7, 1796660488.8])
    assert both == CONNTRACK_EVENTS[1:2]
    assert timeline.conntrack_events_near(CONNTRACK_EVENTS, []) == []
