"""CoreDns and KubeProxy: kubeadm's essential add-ons in the tenant cluster's kube-system."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config import ControlPlaneSettings, parse_settings
from components.tenant.addons import (
    coredns_deployment,
    coredns_objects,
    corefile,
    dns_service,
    kube_proxy_config_map,
    kube_proxy_configuration,
    kube_proxy_daemonset,
    kube_proxy_kubeconfig,
    kube_proxy_rbac,
)
from tests.harness import ProgramRun
from tests.unit.tenant_program import TENANT_PROVIDER, by_name, make_ca_pem, run_tenant_program

CONFIG = {
    "clusterName": "amber",
    "namespace": "tenant-amber",
    "apiHost": "api.amber.example.com",
    "serviceCidr": "10.112.0.0/16",
    "podCidr": "10.244.0.0/16",
    "clusterDomain": "amber.local",
}
ENDPOINT = "https://api.amber.example.com"
PROGRAM = """
from components.tenant.addons import CoreDns, KubeProxy

CoreDns("dns", settings, tenant)
KubeProxy("proxy", settings, ENDPOINT, tenant)
"""
SKIP_AWAIT = ("pulumi.com/skipAwait", "true")


@pytest.fixture(scope="module")
def settings() -> ControlPlaneSettings:
    return parse_settings(CONFIG)


def corefile_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def only_container(pod_manifest: dict[str, Any]) -> dict[str, Any]:
    [container] = pod_manifest["spec"]["template"]["spec"]["containers"]
    return container


# --- CoreDNS -------------------------------------------------------------------------------


def test_corefile_serves_the_cluster_domain_and_forwards_the_rest() -> None:
    lines = corefile_lines(corefile("amber.local"))
    assert lines[0] == ".:53 {"
    assert lines[-1] == "}"
    for plugin in ("errors", "ready", "prometheus :9153", "loop", "reload", "loadbalance"):
        assert plugin in lines, plugin
    assert "health {" in lines
    assert "kubernetes amber.local in-addr.arpa ip6.arpa {" in lines
    kubernetes = lines.index("kubernetes amber.local in-addr.arpa ip6.arpa {")
    assert lines[kubernetes + 1 : kubernetes + 3] == [
        "pods insecure",
        "fallthrough in-addr.arpa ip6.arpa",
    ]
    assert "forward . /etc/resolv.conf {" in lines
    assert any(re.fullmatch(r"cache 30( \{)?", line) for line in lines)
    assert "cluster.local" not in corefile("amber.local")


def test_corefile_braces_balance() -> None:
    text = corefile("cluster.local")
    depth = 0
    for char in text:
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0
    assert depth == 0


def test_coredns_deployment(settings: ControlPlaneSettings) -> None:
    deployment = coredns_deployment(settings)
    assert deployment["metadata"]["name"] == "coredns"
    assert deployment["metadata"]["namespace"] == "kube-system"
    assert SKIP_AWAIT in deployment["metadata"]["annotations"].items()
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"] == {"k8s-app": "kube-dns"}
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["serviceAccountName"] == "coredns"
    assert pod["dnsPolicy"] == "Default"
    assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = only_container(deployment)
    assert container["image"] == "registry.k8s.io/coredns/coredns:v1.14.6"
    assert container["args"] == ["-conf", "/etc/coredns/Corefile"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    liveness = container["livenessProbe"]["httpGet"]
    readiness = container["readinessProbe"]["httpGet"]
    assert (liveness["path"], liveness["port"], liveness["scheme"]) == ("/health", 8080, "HTTP")
    assert (readiness["path"], readiness["port"], readiness["scheme"]) == ("/ready", 8181, "HTTP")
    [volume] = pod["volumes"]
    assert volume["configMap"]["name"] == "coredns"
    [mount] = container["volumeMounts"]
    assert mount["name"] == volume["name"] and mount["mountPath"] == "/etc/coredns"


def test_coredns_image_follows_the_registry_and_release() -> None:
    settings = parse_settings(
        {**CONFIG, "imageRegistry": "mirror.example.com/k8s", "kubernetesVersion": "1.35"}
    )
    image = only_container(coredns_deployment(settings))["image"]
    assert image == "mirror.example.com/k8s/coredns/coredns:v1.13.1"


def test_dns_service_is_at_the_tenth_service_address(settings: ControlPlaneSettings) -> None:
    service = dns_service(settings)
    assert service["metadata"]["name"] == "kube-dns"
    assert service["metadata"]["namespace"] == "kube-system"
    assert service["metadata"]["labels"]["k8s-app"] == "kube-dns"
    assert SKIP_AWAIT in service["metadata"]["annotations"].items()
    assert service["spec"]["clusterIP"] == "10.112.0.10"
    assert service["spec"]["selector"] == {"k8s-app": "kube-dns"}
    ports = {(p["port"], p["protocol"]) for p in service["spec"]["ports"]}
    assert ports == {(53, "UDP"), (53, "TCP"), (9153, "TCP")}


def test_coredns_rbac_and_config_map(settings: ControlPlaneSettings) -> None:
    objects = dict(coredns_objects(settings))
    assert set(objects) == {
        "serviceaccount",
        "clusterrole",
        "clusterrolebinding",
        "configmap",
        "deployment",
        "service",
    }
    role = objects["clusterrole"]
    assert role["metadata"]["name"] == "system:coredns"
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["endpoints", "services", "pods", "namespaces"],
            "verbs": ["list", "watch"],
        },
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["list", "watch"],
        },
    ]
    binding = objects["clusterrolebinding"]
    assert binding["roleRef"]["name"] == "system:coredns"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}
    ]
    assert objects["serviceaccount"]["metadata"] == {"name": "coredns", "namespace": "kube-system"}
    assert objects["configmap"]["data"] == {"Corefile": corefile("amber.local")}


# --- kube-proxy ----------------------------------------------------------------------------


def test_kube_proxy_configuration(settings: ControlPlaneSettings) -> None:
    document = yaml.safe_load(kube_proxy_configuration(settings))
    assert document["apiVersion"] == "kubeproxy.config.k8s.io/v1alpha1"
    assert document["kind"] == "KubeProxyConfiguration"
    assert document["mode"] == "iptables"
    assert document["clusterCIDR"] == "10.244.0.0/16"
    assert document["bindAddress"] == "0.0.0.0"
    assert document["clientConnection"]["kubeconfig"] == "/var/lib/kube-proxy/kubeconfig.conf"


def test_kube_proxy_binds_ipv6_on_an_ipv6_pod_range() -> None:
    settings = parse_settings({**CONFIG, "serviceCidr": "fd00:10::/108", "podCidr": "fd00:20::/64"})
    document = yaml.safe_load(kube_proxy_configuration(settings))
    assert document["bindAddress"] == "::"
    assert document["clusterCIDR"] == "fd00:20::/64"


def test_kube_proxy_kubeconfig_uses_its_service_account() -> None:
    config = yaml.safe_load(kube_proxy_kubeconfig("https://api.example.com:6443"))
    [cluster] = config["clusters"]
    assert cluster["cluster"] == {
        "certificate-authority": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        "server": "https://api.example.com:6443",
    }
    [user] = config["users"]
    assert user["user"] == {"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}
    [context] = config["contexts"]
    assert config["current-context"] == context["name"]
    assert context["context"]["cluster"] == cluster["name"]
    assert context["context"]["user"] == user["name"]


def test_kube_proxy_daemonset(settings: ControlPlaneSettings) -> None:
    daemonset = kube_proxy_daemonset(settings)
    assert daemonset["kind"] == "DaemonSet"
    assert daemonset["metadata"]["name"] == "kube-proxy"
    assert daemonset["metadata"]["namespace"] == "kube-system"
    assert SKIP_AWAIT in daemonset["metadata"]["annotations"].items()
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["serviceAccountName"] == "kube-proxy"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    container = only_container(daemonset)
    assert container["image"] == "registry.k8s.io/kube-proxy:v1.37.2"
    assert container["securityContext"]["privileged"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["/lib/modules"]["readOnly"] is True
    assert volumes[mounts["/lib/modules"]["name"]]["hostPath"]["path"] == "/lib/modules"
    xtables = volumes[mounts["/run/xtables.lock"]["name"]]["hostPath"]
    assert xtables == {"path": "/run/xtables.lock", "type": "FileOrCreate"}
    # --config points into the ConfigMap's mount, at a key the ConfigMap has.
    config_flag = next(a for a in container["command"] if a.startswith("--config="))
    config_path = Path(config_flag.removeprefix("--config="))
    config_mount = mounts[str(config_path.parent)]
    config_map = kube_proxy_config_map(settings, "kubeconfig")
    assert volumes[config_mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_path.name in config_map["data"]
    assert "kubeconfig.conf" in config_map["data"]


def test_kube_proxy_rbac() -> None:
    objects = dict(kube_proxy_rbac())
    binding = objects["clusterrolebinding"]
    assert binding["metadata"]["name"] == "kubeadm:node-proxier"
    assert binding["roleRef"]["name"] == "system:node-proxier"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kube-proxy", "namespace": "kube-system"}
    ]
    assert objects["role"]["rules"][0]["resourceNames"] == ["kube-proxy"]
    assert objects["rolebinding"]["subjects"][0]["name"] == (
        "system:bootstrappers:kubeadm:default-node-token"
    )


# --- the components under the mock runtime -------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> ProgramRun:
    return run_tenant_program(
        tmp_path_factory.mktemp("addons"), PROGRAM, CONFIG, make_ca_pem(), ENDPOINT
    )


def test_components_register_in_the_tenants_kube_system(run: ProgramRun) -> None:
    objects = run.kubernetes_objects()
    kinds = sorted((r.name, r.type.split(":")[-1]) for r in objects)
    assert kinds == sorted(
        [
            ("dns-serviceaccount", "ServiceAccount"),
            ("dns-clusterrole", "ClusterRole"),
            ("dns-clusterrolebinding", "ClusterRoleBinding"),
            ("dns-configmap", "ConfigMap"),
            ("dns-deployment", "Deployment"),
            ("dns-service", "Service"),
            ("proxy-serviceaccount", "ServiceAccount"),
            ("proxy-clusterrolebinding", "ClusterRoleBinding"),
            ("proxy-role", "Role"),
            ("proxy-rolebinding", "RoleBinding"),
            ("proxy-configmap", "ConfigMap"),
            ("proxy-daemonset", "DaemonSet"),
        ]
    )
    for obj in objects:
        assert obj.provider and TENANT_PROVIDER in obj.provider, obj.name
        if not obj.type.split(":")[-1].startswith("Cluster"):
            assert obj.inputs["metadata"]["namespace"] == "kube-system", obj.name
    components = {r.type for r in run.resources if r.type.startswith("k8s-on-k8s:")}
    assert components == {"k8s-on-k8s:index:CoreDns", "k8s-on-k8s:index:KubeProxy"}
    assert len(by_name(run)) == len(run.resources)


def test_registered_workloads_are_the_pure_manifests(
    run: ProgramRun, settings: ControlPlaneSettings
) -> None:
    named = by_name(run)
    # Numbers come back as floats from the mock runtime; == treats 2 and 2.0 alike.
    assert named["dns-deployment"].inputs["spec"] == coredns_deployment(settings)["spec"]
    assert named["dns-service"].inputs["spec"] == dns_service(settings)["spec"]
    assert named["proxy-daemonset"].inputs["spec"] == kube_proxy_daemonset(settings)["spec"]
    assert named["dns-configmap"].inputs["data"] == {"Corefile": corefile("amber.local")}


def test_registered_kube_proxy_config_map_points_at_the_endpoint(
    run: ProgramRun, settings: ControlPlaneSettings
) -> None:
    data = by_name(run)["proxy-configmap"].inputs["data"]
    assert data["config.conf"] == kube_proxy_configuration(settings)
    assert data["kubeconfig.conf"] == kube_proxy_kubeconfig(ENDPOINT)
    assert yaml.safe_load(data["kubeconfig.conf"])["clusters"][0]["cluster"]["server"] == ENDPOINT
