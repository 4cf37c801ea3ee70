"""Offline checks of the rig's pure parts (no root, no binaries, no namespace needed)."""

from __future__ import annotations

import ipaddress
import struct
import subprocess
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e.infra import configs, dns, host, objects, pki
from tests.e2e.infra.cluster import (
    component_commands,
    missing_prerequisites,
    traefik_environment,
)
from tests.e2e.infra.settings import RIG_BINARIES, RigSettings


def _subject(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(attribute.value) for attribute in certificate.subject.get_attributes_for_oid(oid)]


def test_settings_derive_addresses_and_read_environment(tmp_path: Path) -> None:
    settings = RigSettings.from_env(
        {"RIG_STATE_DIR": str(tmp_path), "RIG_TENANT_NAMESPACE": "other"}
    )
    assert settings.kubernetes_service_ip == "10.96.0.1"
    assert settings.state_dir == tmp_path
    assert settings.tenant_namespace == "other"
    assert settings.admin_kubeconfig.parent == tmp_path


def test_pki_has_the_identities_kubernetes_expects(tmp_path: Path) -> None:
    settings = RigSettings(state_dir=tmp_path)
    files = pki.create_pki(settings)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())

    apiserver = x509.load_pem_x509_certificate(files.cert("apiserver").read_bytes())
    names = apiserver.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.96.0.1") in names.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address(settings.node_ip) in names.get_values_for_type(x509.IPAddress)
    assert "kubernetes.default.svc.cluster.local" in names.get_values_for_type(x509.DNSName)
    usages = apiserver.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    apiserver.verify_directly_issued_by(ca)

    kubelet = x509.load_pem_x509_certificate(files.cert("kubelet").read_bytes())
    assert _subject(kubelet, NameOID.COMMON_NAME) == ["system:node:rig-node"]
    assert _subject(kubelet, NameOID.ORGANIZATION_NAME) == ["system:nodes"]
    admin = x509.load_pem_x509_certificate(files.cert("admin").read_bytes())
    assert _subject(admin, NameOID.ORGANIZATION_NAME) == ["system:masters"]
    tenant = x509.load_pem_x509_certificate(files.cert("tenant-admin").read_bytes())
    assert _subject(tenant, NameOID.ORGANIZATION_NAME) == []

    assert files.key("admin").stat().st_mode & 0o777 == 0o600
    assert files.service_account_private_key.stat().st_mode & 0o777 == 0o600


def test_kubeconfig_embeds_credentials() -> None:
    config = configs.kubeconfig(
        cluster_name="c",
        server="https://10.250.0.1:6443",
        ca_pem=b"ca",
        user_name="u",
        client_cert_pem=b"cert",
        client_key_pem=b"key",
        namespace="ns",
    )
    assert config["current-context"] == "u"
    assert config["contexts"][0]["context"] == {"cluster": "c", "user": "u", "namespace": "ns"}
    assert config["users"][0]["user"]["client-key-data"] == "a2V5"


def test_kubelet_configuration_fits_this_host() -> None:
    config = configs.kubelet_configuration(
        node_ip="10.250.0.1",
        client_ca_file="/ca.crt",
        tls_cert_file="/k.crt",
        tls_key_file="/k.key",
        cluster_dns="10.250.0.1",
        cluster_domain="cluster.local",
        resolv_conf="/resolv.conf",
        container_runtime_endpoint="unix:///c.sock",
        cgroup_root="/rig",
        pod_logs_dir="/logs",
    )
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["failCgroupV1"] is False
    assert config["failSwapOn"] is False
    assert config["authorization"]["mode"] == "Webhook"
    assert config["imageGCHighThresholdPercent"] == 100
    assert "staticPodPath" not in config


def _corefile() -> str:
    return configs.corefile(
        bind_ip="10.250.0.1",
        cluster_domain="cluster.local",
        kubeconfig_path="/a",
        ingress_domain="k8sonk8s.test",
        ingress_ip="10.250.0.9",
    )


def test_corefile_has_no_forwarding() -> None:
    corefile = _corefile()
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa" in corefile
    assert "forward" not in corefile
    assert "bind 10.250.0.1" in corefile
    assert corefile.count("{") == corefile.count("}")


def test_corefile_answers_the_ingress_domain_like_a_wildcard_record() -> None:
    corefile = _corefile()
    block = corefile[corefile.index("k8sonk8s.test:53 {") :]
    block = block[: block.index("\n}\n")]
    lines = [line.strip() for line in block.splitlines()]
    # The A template first: templates are tried in order.
    assert lines.index("template IN A k8sonk8s.test {") < lines.index(
        "template ANY ANY k8sonk8s.test {"
    )
    assert 'answer "{{ .Name }} 5 IN A 10.250.0.9"' in lines
    assert "bind 10.250.0.1" in lines


def test_traefik_runs_only_the_ingress_nginx_provider() -> None:
    config = configs.traefik_configuration(
        http_address="10.250.0.1:80",
        https_address="10.250.0.1:443",
        ping_address="127.0.0.1:8082",
        ingress_class="nginx",
        controller_class="k8s.io/ingress-nginx",
        status_address="10.250.0.1",
    )
    assert list(config["providers"]) == ["kubernetesIngressNGINX"]
    provider = config["providers"]["kubernetesIngressNGINX"]
    assert provider["ingressClass"] == "nginx"
    assert provider["controllerClass"] == "k8s.io/ingress-nginx"
    assert provider["httpsEntryPoint"] == "websecure"
    assert config["entryPoints"]["websecure"] == {"address": "10.250.0.1:443"}
    assert config["ping"] == {"entryPoint": "ping"}
    assert config["entryPoints"]["ping"]["address"].startswith("127.0.0.1:")
    assert config["global"] == {"checkNewVersion": False, "sendAnonymousUsage": False}
    assert "api" not in config


def test_traefik_reads_the_kubeconfig_never_an_in_cluster_config() -> None:
    environment = traefik_environment(
        {"PATH": "/bin", "KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"},
        Path("/rig/admin.kubeconfig"),
    )
    assert environment == {"PATH": "/bin", "KUBECONFIG": "/rig/admin.kubeconfig"}


def test_containerd_config_is_private_and_cgroupfs() -> None:
    toml = configs.containerd_config(
        root="/r",
        state="/s",
        socket="/s.sock",
        sandbox_image="registry.k8s.io/pause:3.10.2",
        cni_bin_dir="/usr/lib/cni",
        cni_conf_dir="/net.d",
        runc_root="/s/runc",
    )
    assert 'address = "/s.sock"' in toml
    assert "SystemdCgroup = false" in toml
    assert "restrict_oom_score_adj = true" in toml
    assert 'sandbox_image = "registry.k8s.io/pause:3.10.2"' in toml


def test_commands_bind_control_plane_ports_as_expected(tmp_path: Path) -> None:
    settings = RigSettings(state_dir=tmp_path)
    commands = component_commands(settings, pki.Pki(settings.pki_dir))
    assert "--listen-client-urls=http://127.0.0.1:2379" in commands["etcd"]
    assert "--authorization-mode=Node,RBAC" in commands["kube-apiserver"]
    assert "--allow-privileged=true" in commands["kube-apiserver"]
    assert "--allocate-node-cidrs=true" in commands["kube-controller-manager"]
    assert f"--cluster-cidr={settings.cluster_cidr}" in commands["kube-controller-manager"]
    assert commands["traefik"] == [
        str(settings.binary("traefik")),
        f"--configFile={settings.config_dir / 'traefik.yaml'}",
    ]


def test_a_missing_traefik_is_a_missing_prerequisite(tmp_path: Path) -> None:
    for name in RIG_BINARIES:
        if name != "traefik":
            (tmp_path / name).touch()
    problems = missing_prerequisites(RigSettings(bin_dir=tmp_path))
    assert f"binaries missing from {tmp_path}: traefik (build them with" in "\n".join(problems)


def test_ingress_names_resolve_to_the_node() -> None:
    settings = RigSettings()
    assert settings.ingress_host("e2e") == "e2e.k8sonk8s.test"
    assert settings.ingress_ip == settings.node_ip == "10.250.0.1"


def test_ingress_class_names_the_ingress_nginx_controller() -> None:
    ingress_class = objects.ingress_class(name="nginx", controller="k8s.io/ingress-nginx")
    assert ingress_class["metadata"] == {"name": "nginx"}
    assert ingress_class["spec"] == {"controller": "k8s.io/ingress-nginx"}


def test_host_path_volume_is_pinned_to_the_node() -> None:
    volume = objects.host_path_volume(
        name="pv", path=Path("/x"), size="2Gi", storage_class_name="rig-local", node_name="n"
    )
    term = volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]
    assert term["matchExpressions"][0]["values"] == ["n"]
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"


def test_cgroup_options_keep_controllers_only() -> None:
    assert host._cgroup_options("rw,relatime,cpu") == "cpu"
    assert host._cgroup_options("rw,nosuid,name=systemd") == "name=systemd"
    assert host._cgroup_options("rw,relatime") == ""


def test_dns_response_parsing() -> None:
    query = dns.build_query("a.b.svc", 7)
    answer_record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + bytes([10, 96, 0, 9])
    header = struct.pack("!HHHHHH", 7, 0x8180, 1, 1, 0, 0)
    response = header + query[12:] + answer_record
    assert dns.parse_response(response, 7) == dns.Answer("NOERROR", ("10.96.0.9",))


def test_the_network_policy_implementation_is_deployed_as_upstream_does() -> None:
    manifests = {m["kind"]: m for m in objects.network_policy_implementation("img:v1")}
    assert set(manifests) == {"ClusterRole", "ClusterRoleBinding", "ServiceAccount", "DaemonSet"}
    rules = manifests["ClusterRole"]["rules"]
    assert "networkpolicies" in {r for rule in rules for r in rule["resources"]}
    # Read-only: its firewall writes nothing to the API.
    assert all(set(rule["verbs"]) <= {"get", "list", "watch"} for rule in rules)
    pod = manifests["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    container = pod["containers"][0]
    assert container["securityContext"] == {"privileged": True}
    # Its firewall only: the rig keeps its own CNI, routes and kube-proxy.
    args = container["args"]
    assert {"--run-firewall=true", "--run-router=false", "--run-service-proxy=false"} <= set(args)
    probe = container["readinessProbe"]["httpGet"]
    assert probe["port"] == objects.NETWORK_POLICY_HEALTH_PORT
    assert f"--health-port={objects.NETWORK_POLICY_HEALTH_PORT}" in args


def test_iptables_chains_and_ipsets_are_read_from_the_tools(monkeypatch: Any) -> None:
    outputs = {
        "iptables": "-P INPUT ACCEPT\n-N KUBE-ROUTER-FORWARD\n-A FORWARD -j KUBE-ROUTER-FORWARD\n",
        "ipset": "KUBE-DST-ABC\nKUBE-SRC-DEF\n",
    }
    monkeypatch.setattr(
        host,
        "run",
        lambda argv, check=True: subprocess.CompletedProcess(argv, 0, outputs[argv[0]], ""),
    )
    assert host.iptables_chains("filter") == {"INPUT", "KUBE-ROUTER-FORWARD"}
    assert host.ipsets() == ["KUBE-DST-ABC", "KUBE-SRC-DEF"]


def test_a_probe_tells_a_blocked_connection_from_a_reached_port() -> None:
    from tests.e2e.probes import Reach, classify

    dropped = "Unable to connect to the server: dial tcp 10.244.0.9:2379: i/o timeout"
    assert classify(dropped) is Reach.BLOCKED
    webhook = 'failed calling webhook "x": Post "https://10.244.0.9/": context deadline exceeded'
    assert classify(webhook) is Reach.BLOCKED
    rejected = "dial tcp 10.244.0.9:8443: connect: connection refused"
    assert classify(rejected) is Reach.BLOCKED
    kubectl_refused = "The connection to the server 10.244.0.9:2379 was refused - did you specify"
    assert classify(kubectl_refused) is Reach.BLOCKED
    assert classify("error: You must be logged in to the server (Unauthorized)") is Reach.ANSWERED
    assert classify("Unable to connect to the server: remote error: tls: certificate required") is (
        Reach.ANSWERED
    )
    assert classify("Error from server (Forbidden): Forbidden") is Reach.ANSWERED
    webhook_reached = 'failed calling webhook "x": http: server gave HTTP response to HTTPS client'
    assert classify(webhook_reached) is Reach.ANSWERED
