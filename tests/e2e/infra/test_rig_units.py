"""Offline checks of the rig's pure parts (no root, no binaries, no namespace needed)."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e.infra import configs, dns, host, objects, pki
from tests.e2e.infra.cluster import component_commands
from tests.e2e.infra.settings import RigSettings


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


def test_corefile_has_no_forwarding() -> None:
    corefile = configs.corefile(
        bind_ip="10.250.0.1", cluster_domain="cluster.local", kubeconfig_path="/a"
    )
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa" in corefile
    assert "forward" not in corefile
    assert "bind 10.250.0.1" in corefile


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
    assert "--allocate-node-cidrs=true" in commands["kube-controller-manager"]
    assert f"--cluster-cidr={settings.cluster_cidr}" in commands["kube-controller-manager"]


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
