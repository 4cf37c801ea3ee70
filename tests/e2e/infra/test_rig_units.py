"""Offline checks of the rig's pure parts (no root, no binaries, no namespace needed)."""

from __future__ import annotations

import base64
import ipaddress
import os
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e.infra import configs, dns, host, objects, pki
from tests.e2e.infra.cluster import (
    component_commands,
    missing_prerequisites,
    node_containerd_config,
    node_kubelet_configuration,
    traefik_environment,
)
from tests.e2e.infra.settings import RIG_BINARIES, NodeLayout, RigSettings
from tests.e2e.infra.worker import WorkerSettings


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


def test_kubeadm_configuration_names_the_rigs_pki(tmp_path: Path) -> None:
    settings = RigSettings(state_dir=tmp_path)
    init, cluster = pki.kubeadm_configuration(settings)
    assert init["kind"] == "InitConfiguration"
    assert init["localAPIEndpoint"] == {"advertiseAddress": "10.250.0.1", "bindPort": 6443}
    assert init["nodeRegistration"] == {"name": "rig-node"}
    assert cluster["kind"] == "ClusterConfiguration"
    assert cluster["certificatesDir"] == str(tmp_path / "pki")
    assert cluster["encryptionAlgorithm"] == "ECDSA-P256"
    assert cluster["networking"] == {"dnsDomain": "cluster.local", "serviceSubnet": "10.96.0.0/16"}
    # kubeadm adds the kubernetes… names, the node name, the Service IP and the node IP.
    assert cluster["apiServer"]["certSANs"] == ["localhost", "127.0.0.1"]
    assert cluster["kubernetesVersion"] == "v1.37.2"


def test_kubeadm_issues_the_extra_users_with_their_groups(tmp_path: Path) -> None:
    settings = RigSettings(state_dir=tmp_path)
    users = pki.kubeconfig_users(settings)
    assert users[settings.admin_kubeconfig] == pki.KubeconfigUser("rig-admin", ("system:masters",))
    assert users[settings.kube_proxy_kubeconfig] == pki.KubeconfigUser("system:kube-proxy")
    tenant = users[settings.tenant_kubeconfig]
    assert (tenant.client_name, tenant.organizations) == ("tenant-admin", ())
    assert tenant.namespace == "tenant-e2e"
    argv = users[settings.admin_kubeconfig].argv(Path("/bin/kubeadm"), Path("/c.json"))
    assert argv == [
        "/bin/kubeadm",
        "kubeconfig",
        "user",
        "--config=/c.json",
        "--client-name=rig-admin",
        "--org=system:masters",
        "--validity-period=720h",
    ]


def test_kubeconfig_gets_the_namespace_of_its_current_context() -> None:
    kubeconfig = yaml.safe_dump(
        {
            "contexts": [
                {"name": "a@c", "context": {"cluster": "c", "user": "a"}},
                {"name": "b@c", "context": {"cluster": "c", "user": "b"}},
            ],
            "current-context": "b@c",
        }
    )
    contexts = yaml.safe_load(pki.with_namespace(kubeconfig, "ns"))["contexts"]
    assert [context["context"].get("namespace") for context in contexts] == [None, "ns"]


def _kubeadm() -> Path:
    kubeadm = RigSettings.from_env().binary("kubeadm")
    # Under `make e2e` (RIG_BIN_DIR set, the binaries built) a missing kubeadm fails; `make unit`
    # runs before the builds on a fresh machine, and the e2e run repeats this test.
    if os.environ.get("RIG_BIN_DIR"):
        assert kubeadm.is_file(), f"{kubeadm} is missing: run hack/build-binaries.sh"
    elif not kubeadm.is_file():
        pytest.skip(f"{kubeadm} is missing: run hack/build-binaries.sh")
    return kubeadm


def _kubeconfig_certificate(path: Path) -> x509.Certificate:
    user = yaml.safe_load(path.read_text())["users"][0]["user"]
    return x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))


def test_kubeadm_makes_the_identities_kubernetes_expects(tmp_path: Path) -> None:
    settings = RigSettings(state_dir=tmp_path, bin_dir=_kubeadm().parent)
    files = pki.create_pki(settings)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())

    apiserver = x509.load_pem_x509_certificate(files.cert("apiserver").read_bytes())
    names = apiserver.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(address) for address in ("10.96.0.1", settings.node_ip, "127.0.0.1")
    }
    assert set(names.get_values_for_type(x509.DNSName)) == {
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "localhost",
        "rig-node",
    }
    usages = apiserver.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    apiserver.verify_directly_issued_by(ca)

    kubelet_client = x509.load_pem_x509_certificate(
        files.cert("apiserver-kubelet-client").read_bytes()
    )
    assert _subject(kubelet_client, NameOID.COMMON_NAME) == [pki.APISERVER_KUBELET_CLIENT]
    front_proxy_ca = x509.load_pem_x509_certificate(files.cert("front-proxy-ca").read_bytes())
    front_proxy = x509.load_pem_x509_certificate(files.cert("front-proxy-client").read_bytes())
    assert _subject(front_proxy, NameOID.COMMON_NAME) == ["front-proxy-client"]
    front_proxy.verify_directly_issued_by(front_proxy_ca)

    expected = {
        settings.config_dir / "kubelet.conf": ("system:node:rig-node", ["system:nodes"]),
        settings.config_dir / "controller-manager.conf": ("system:kube-controller-manager", []),
        settings.config_dir / "scheduler.conf": ("system:kube-scheduler", []),
        settings.kube_proxy_kubeconfig: ("system:kube-proxy", []),
        settings.admin_kubeconfig: ("rig-admin", ["system:masters"]),
        settings.tenant_kubeconfig: ("tenant-admin", []),
    }
    for path, (common_name, organizations) in expected.items():
        certificate = _kubeconfig_certificate(path)
        assert _subject(certificate, NameOID.COMMON_NAME) == [common_name], path
        assert _subject(certificate, NameOID.ORGANIZATION_NAME) == organizations, path
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH], path
        certificate.verify_directly_issued_by(ca)
        assert yaml.safe_load(path.read_text())["clusters"][0]["cluster"]["server"] == (
            settings.apiserver_url
        )
        assert path.stat().st_mode & 0o777 == 0o600, path
    tenant = yaml.safe_load(settings.tenant_kubeconfig.read_text())
    assert tenant["contexts"][0]["context"]["namespace"] == "tenant-e2e"

    admin = x509.load_pem_x509_certificate(files.cert("admin").read_bytes())
    assert admin == _kubeconfig_certificate(settings.admin_kubeconfig)
    assert files.key("admin").stat().st_mode & 0o777 == 0o600
    assert files.service_account_private_key.stat().st_mode & 0o777 == 0o600
    assert files.service_account_public_key.is_file()


def test_the_apiservers_kubelet_client_gets_kubeadms_binding() -> None:
    binding = objects.kubelet_api_admin_binding(pki.APISERVER_KUBELET_CLIENT)
    assert binding["metadata"] == {"name": "kubeadm:apiserver-kubelet-client"}
    assert binding["roleRef"]["name"] == "system:kubelet-api-admin"
    assert binding["subjects"] == [
        {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "User",
            "name": "kube-apiserver-kubelet-client",
        }
    ]


def test_the_rig_node_and_a_worker_share_one_layout(tmp_path: Path) -> None:
    rig = RigSettings(state_dir=tmp_path / "state", run_dir=tmp_path / "run")
    worker = WorkerSettings.for_tenant(rig, service_cidr="10.96.0.0/12")
    assert rig.node == NodeLayout(tmp_path / "state", tmp_path / "run")
    assert worker.node == NodeLayout(tmp_path / "state/worker", tmp_path / "run/worker")
    for node in (rig.node, worker.node):
        assert node.kubelet_pki_dir == node.state_dir / "kubelet/pki"
        assert node.containerd_socket == node.run_dir / "containerd.sock"
    assert worker.kubeconfig == worker.node.kubelet_kubeconfig
    assert rig.containerd_socket == rig.node.containerd_socket

    commands = component_commands(rig, pki.Pki(rig.pki_dir))
    rig_kubelet = commands["kubelet"]
    assert f"--cert-dir={rig.node.kubelet_pki_dir}" in rig_kubelet
    assert f"--kubeconfig={rig.config_dir / 'kubelet.conf'}" in rig_kubelet
    assert commands["containerd"][1:] == ["--config", str(rig.node.containerd_config)]
    for settings, node_ip in ((rig, rig.node_ip), (worker, worker.node_ip)):
        kubelet = node_kubelet_configuration(
            settings.node,
            node_ip=node_ip,
            client_ca_file="/ca.crt",
            cluster_dns="10.96.0.10",
            cluster_domain="cluster.local",
            cgroup_root="/x",
        )
        # No serving certificate: the kubelet makes its own, as on a kubeadm node.
        assert "tlsCertFile" not in kubelet and "tlsPrivateKeyFile" not in kubelet
        assert kubelet["containerRuntimeEndpoint"] == f"unix://{settings.node.containerd_socket}"
        assert kubelet["resolvConf"] == str(settings.node.resolv_conf)
    toml = node_containerd_config(
        worker.node, sandbox_image="registry.k8s.io/pause:3.10.2", cni_bin_dir=Path("/cni")
    )
    assert f'address = "{worker.node.containerd_socket}"' in toml


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
    assert (
        f"--kubeconfig={settings.config_dir / 'controller-manager.conf'}"
        in commands["kube-controller-manager"]
    )
    assert f"--kubeconfig={settings.config_dir / 'scheduler.conf'}" in commands["kube-scheduler"]
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
