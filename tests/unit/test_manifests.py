"""Flags, manifests and config files, from the pure functions that build them."""

from __future__ import annotations

import base64

import pytest
import yaml

from components.common.kubeconfig import build_kubeconfig
from components.common.names import ObjectNames
from components.common.podspec import pod_disruption_budget_spec
from components.config import ControlPlaneSettings, parse_settings
from components.host.control_plane.apiserver import (
    api_server_command,
    api_server_deployment_spec,
    audit_policy,
    encryption_configuration,
)
from components.host.control_plane.controller_manager import controller_manager_command
from components.host.control_plane.scheduler import scheduler_command
from components.host.etcd import etcd_command, etcd_statefulset_spec
from components.host.exposure import external_service_spec, ingress_spec


def setup(**raw: str) -> tuple[ControlPlaneSettings, ObjectNames]:
    config = {"clusterName": "red", "namespace": "ns1", "apiAdvertiseAddress": "192.0.2.1", **raw}
    settings = parse_settings(config)
    return settings, ObjectNames("red", "ns1", settings.infra_cluster_domain)


def flags(command: list[str]) -> dict[str, str]:
    parsed = {}
    for arg in command[1:]:
        assert arg.startswith("--"), arg
        name, _, value = arg[2:].partition("=")
        assert name not in parsed, f"--{name} given twice"
        parsed[name] = value
    return parsed


def test_apiserver_flags() -> None:
    settings, names = setup(
        etcdReplicas="3", serviceCidr="10.100.0.0/16", clusterDomain="tenant.local"
    )
    f = flags(api_server_command(settings, names))
    assert f["authorization-mode"] == "Node,RBAC"
    assert f["enable-admission-plugins"] == "NodeRestriction"
    assert f["enable-bootstrap-token-auth"] == "true"
    assert f["service-account-issuer"] == "https://kubernetes.default.svc.tenant.local"
    assert f["service-cluster-ip-range"] == "10.100.0.0/16"
    assert f["requestheader-allowed-names"] == "front-proxy-client"
    assert f["etcd-servers"].split(",") == [
        f"https://red-etcd-{i}.red-etcd-peer.ns1.svc.cluster.local:2379" for i in range(3)
    ]
    for required in (
        "kubelet-client-certificate",
        "kubelet-client-key",
        "proxy-client-cert-file",
        "proxy-client-key-file",
        "requestheader-client-ca-file",
        "service-account-key-file",
        "service-account-signing-key-file",
        "encryption-provider-config",
        "audit-policy-file",
        "audit-log-path",
        "tls-cert-file",
        "tls-private-key-file",
        "client-ca-file",
    ):
        assert f[required], required
    # The audit log goes to stdout, where `kubectl logs` reads it (not an unreadable emptyDir).
    assert f["audit-log-path"] == "-"
    # Every mode: the pod IPs mean nothing on tenant nodes (components/tenant/in_cluster_api).
    assert f["endpoint-reconciler-type"] == "none"
    # Rollouts: keep serving while Services and the ingress drop the pod, then ask to retry.
    assert f["shutdown-delay-duration"] == "15s"
    assert f["shutdown-send-retry-after"] == "true"
    # Removed from kube-apiserver in 1.33: passing them makes it exit.
    assert "cloud-provider" not in f and "cloud-config" not in f


def test_apiserver_probes_and_pod_ip() -> None:
    settings, names = setup()
    container = api_server_deployment_spec(settings, names)["template"]["spec"]["containers"][0]
    assert container["startupProbe"]["httpGet"] == {
        "path": "/livez",
        "port": 6443,
        "scheme": "HTTPS",
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    # Ready means this apiserver is: not the etcd all of them share (a leader election would
    # take every replica out at once).
    assert container["readinessProbe"]["httpGet"]["path"] == (
        "/readyz?exclude=etcd&exclude=etcd-readiness"
    )
    assert "host" not in container["readinessProbe"]["httpGet"]  # the pod IP
    assert container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert container["image"] == "registry.k8s.io/kube-apiserver:v1.37.2"


def test_controller_manager_flags() -> None:
    settings, names = setup(podCidr="10.200.0.0/16")
    f = flags(controller_manager_command(settings, names))
    assert f["controllers"] == "*,bootstrapsigner,tokencleaner"
    assert f["leader-elect"] == "true"
    assert f["bind-address"] == "0.0.0.0"  # probed on the pod IP
    assert f["cluster-signing-cert-file"].endswith("/ca.crt")
    assert f["cluster-signing-key-file"].endswith("/ca.key")
    assert f["service-account-private-key-file"].endswith("/sa.key")
    assert f["root-ca-file"].endswith("/ca.crt")
    assert f["cluster-cidr"] == "10.200.0.0/16"
    assert f["use-service-account-credentials"] == "true"


def test_scheduler_flags() -> None:
    f = flags(scheduler_command())
    assert f["leader-elect"] == "true"
    assert f["bind-address"] == "0.0.0.0"
    assert f["kubeconfig"] == f["authentication-kubeconfig"] == f["authorization-kubeconfig"]


def test_etcd_flags_form_one_cluster_with_mutual_tls() -> None:
    settings, names = setup(etcdReplicas="3")
    f = flags(etcd_command(settings, names))
    members = dict(entry.split("=", 1) for entry in f["initial-cluster"].split(","))
    assert members == {
        f"red-etcd-{i}": f"https://red-etcd-{i}.red-etcd-peer.ns1.svc.cluster.local:2380"
        for i in range(3)
    }
    assert f["client-cert-auth"] == f["peer-client-cert-auth"] == "true"
    assert f["name"] == "$(POD_NAME)"
    assert f["cert-file"] == "/etc/etcd/pki/server.crt"
    assert f["peer-cert-file"] == "/etc/etcd/pki/peer.crt"
    # A directory of this stack's own on the volume, and a token no other generation shares.
    assert f["data-dir"] == "/var/lib/etcd/data-$(DATA_GENERATION)"
    assert f["initial-cluster-token"] == "red-ns1-$(DATA_GENERATION)"


def test_etcd_statefulset_keeps_its_volumes() -> None:
    settings, names = setup(etcdStorageSize="9Gi", etcdStorageClass="fast-ssd", etcdReplicas="3")
    spec = etcd_statefulset_spec(settings, names, "g3n3r4t1")
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    claim = spec["volumeClaimTemplates"][0]["spec"]
    assert claim["resources"]["requests"]["storage"] == "9Gi"
    assert claim["storageClassName"] == "fast-ssd"
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert spec["template"]["spec"]["containers"][0]["image"] == "registry.k8s.io/etcd:3.7.0-0"
    # The kubelet expands $(DATA_GENERATION) in the flags from this env var.
    env = {e["name"]: e.get("value") for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["DATA_GENERATION"] == "g3n3r4t1"


def test_etcd_default_storage_class_is_left_to_the_cluster() -> None:
    settings, names = setup()
    claim = etcd_statefulset_spec(settings, names, "g3n3r4t1")["volumeClaimTemplates"][0]["spec"]
    assert "storageClassName" not in claim


@pytest.mark.parametrize(("replicas", "max_unavailable"), [(1, 1), (2, 1), (3, 1), (5, 2)])
def test_pdb_keeps_quorum(replicas: int, max_unavailable: int) -> None:
    assert pod_disruption_budget_spec({"a": "b"}, replicas)["maxUnavailable"] == max_unavailable


def test_ingress_exposure_uses_tls_passthrough() -> None:
    settings, names = setup(apiHost="api.red.example.com", ingressClassName="public")
    spec = ingress_spec(settings, names)
    assert spec["ingressClassName"] == "public"
    rule = spec["rules"][0]
    assert rule["host"] == "api.red.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": "red-apiserver",
        "port": {"number": 6443},
    }


def test_service_exposures() -> None:
    settings, names = setup(exposure="nodePort", nodePort="30999")
    spec = external_service_spec(settings, names)
    assert spec["type"] == "NodePort" and spec["ports"][0]["nodePort"] == 30999
    settings, names = setup(exposure="loadBalancer", loadBalancerIP="192.0.2.5")
    spec = external_service_spec(settings, names)
    assert spec["type"] == "LoadBalancer" and spec["loadBalancerIP"] == "192.0.2.5"
    settings, names = setup(exposure="loadBalancer")
    assert "loadBalancerIP" not in external_service_spec(settings, names)


def test_encryption_configuration_writes_secretbox_with_the_first_key() -> None:
    key1 = base64.b64encode(bytes(range(32))).decode()
    key2 = base64.b64encode(bytes(range(32, 64))).decode()
    document = yaml.safe_load(encryption_configuration([("key2", key2), ("key1", key1)]))
    assert document["kind"] == "EncryptionConfiguration"
    entry = document["resources"][0]
    assert entry["resources"] == ["secrets"]
    # The first provider writes, with its first key; every key of every provider reads.
    keys = [{"name": "key2", "secret": key2}, {"name": "key1", "secret": key1}]
    assert entry["providers"] == [
        {"secretbox": {"keys": keys}},
        {"aescbc": {"keys": keys}},  # what earlier versions wrote: read only
        {"identity": {}},
    ]


def test_audit_policy_never_logs_request_bodies() -> None:
    document = yaml.safe_load(audit_policy())
    assert document["kind"] == "Policy"
    levels = {rule["level"] for rule in document["rules"]}
    assert levels <= {"None", "Metadata"}
    assert document["rules"][-1] == {"level": "Metadata"}


def test_kubeconfig_builder() -> None:
    text = build_kubeconfig(
        cluster_name="c",
        server="https://x:6443",
        ca_cert_pem="CA",
        user="u",
        client_cert_pem="CERT",
        client_key_pem="KEY",
    )
    document = yaml.safe_load(text)
    assert document["clusters"][0]["cluster"]["server"] == "https://x:6443"
    assert base64.b64decode(document["users"][0]["user"]["client-key-data"]) == b"KEY"
    token = yaml.safe_load(
        build_kubeconfig(
            cluster_name="c", server="https://x", ca_cert_pem="CA", user="t", token="abc.def"
        )
    )
    assert token["users"][0]["user"] == {"token": "abc.def"}
    with pytest.raises(ValueError, match="either"):
        build_kubeconfig(cluster_name="c", server="https://x", ca_cert_pem="CA", user="u")
    with pytest.raises(ValueError, match="key"):
        build_kubeconfig(
            cluster_name="c", server="s", ca_cert_pem="CA", user="u", client_cert_pem="C"
        )


def test_a_terminating_apiserver_leaves_load_balancers_before_it_stops_listening() -> None:
    """Ingress controllers route to a terminating pod while it is still `serving`: readiness
    must fail well inside --shutdown-delay-duration (with time for a controller to reload)."""
    from components.host.control_plane import apiserver

    settings, names = setup()
    spec = apiserver.api_server_deployment_spec(settings, names)
    container = spec["template"]["spec"]["containers"][0]
    probe = container["readinessProbe"]
    detection = probe["periodSeconds"] * probe["failureThreshold"]
    delay = int(flags(container["command"])["shutdown-delay-duration"].removesuffix("s"))
    assert detection + 10 <= delay
    assert delay < spec["template"]["spec"].get("terminationGracePeriodSeconds", 30)


def test_a_stack_written_with_aescbc_keeps_it_as_the_writer_for_one_deployment() -> None:
    from components.host.control_plane.apiserver import SecretsWriter

    key = base64.b64encode(bytes(range(32))).decode()
    document = yaml.safe_load(encryption_configuration([("key1", key)], SecretsWriter.AESCBC))
    providers = [next(iter(p)) for p in document["resources"][0]["providers"]]
    assert providers == ["aescbc", "secretbox", "identity"], "secretbox already reads"
