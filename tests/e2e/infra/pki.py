"""The infra cluster's certificates and kubeconfigs, made by the kubeadm the rig already builds.

    kubeadm init phase certs {ca,apiserver,apiserver-kubelet-client,front-proxy-ca,
                              front-proxy-client,sa} --config kubeadm.json
    kubeadm init phase kubeconfig {controller-manager,scheduler,kubelet} --config kubeadm.json
    kubeadm kubeconfig user --client-name … [--org …]   (the rig admin, kube-proxy, the tenant user)

ECDSA P-256 (kubeadm's `ECDSA-P256`), 30 days for CAs and leaves. kubeadm's file names
(`apiserver.crt`, `controller-manager.conf`, …); no etcd certificates (the rig's etcd listens on
loopback over plain HTTP). As on a kubeadm node, the kubelet makes its own serving certificate.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from components.common.endpoints import API_SERVER_PORT, LOOPBACK

from .settings import RigSettings

CLUSTER_NAME = "k8s-on-k8s-rig"
VALIDITY = "720h"
CERTIFICATE_PHASES = (
    "ca",
    "apiserver",
    "apiserver-kubelet-client",
    "front-proxy-ca",
    "front-proxy-client",
    "sa",
)
KUBECONFIG_PHASES = ("controller-manager", "scheduler", "kubelet")
# kubeadm's name for the user its apiserver-kubelet-client certificate names (no group): the
# rig binds it to system:kubelet-api-admin as kubeadm does (objects.apiserver_kubelet_client).
APISERVER_KUBELET_CLIENT = "kube-apiserver-kubelet-client"
ADMIN_USER = "rig-admin"
KUBE_PROXY_USER = "system:kube-proxy"


@dataclass(frozen=True)
class KubeconfigUser:
    """A kubeconfig with a client certificate that `kubeadm kubeconfig user` issues."""

    client_name: str
    organizations: tuple[str, ...] = ()
    namespace: str | None = None

    def argv(self, kubeadm: Path, config: Path) -> list[str]:
        return [
            str(kubeadm),
            "kubeconfig",
            "user",
            f"--config={config}",
            f"--client-name={self.client_name}",
            *(f"--org={organization}" for organization in self.organizations),
            f"--validity-period={VALIDITY}",
        ]


def kubeadm_configuration(settings: RigSettings) -> list[dict]:
    """kubeadm's InitConfiguration and ClusterConfiguration for the rig's PKI.

    The apiserver certificate gets kubeadm's names (kubernetes…, the node name; the Service IP
    and the advertise address) plus loopback, where the rig's health checks connect.
    """
    s = settings
    return [
        {
            "apiVersion": "kubeadm.k8s.io/v1beta4",
            "kind": "InitConfiguration",
            "localAPIEndpoint": {"advertiseAddress": s.node_ip, "bindPort": API_SERVER_PORT},
            "nodeRegistration": {"name": s.node_name},
        },
        {
            "apiVersion": "kubeadm.k8s.io/v1beta4",
            "kind": "ClusterConfiguration",
            "kubernetesVersion": s.kubernetes_version,
            "clusterName": CLUSTER_NAME,
            "certificatesDir": str(s.pki_dir),
            "encryptionAlgorithm": "ECDSA-P256",
            "certificateValidityPeriod": VALIDITY,
            "caCertificateValidityPeriod": VALIDITY,
            "networking": {"dnsDomain": s.cluster_domain, "serviceSubnet": s.service_cidr},
            "apiServer": {"certSANs": ["localhost", LOOPBACK]},
        },
    ]


def kubeadm_config_file(settings: RigSettings) -> Path:
    return settings.config_dir / "kubeadm.json"


def kubeadm_config_text(settings: RigSettings) -> str:
    """kubeadm_configuration as kubeadm reads it: JSON documents (valid YAML) in one
    multi-document stream."""
    return "\n---\n".join(json.dumps(d, indent=2) for d in kubeadm_configuration(settings))


def kubeconfig_users(settings: RigSettings) -> dict[Path, KubeconfigUser]:
    """The kubeconfigs that kubeadm's kubeconfig phase has no name for, by path."""
    s = settings
    return {
        s.admin_kubeconfig: KubeconfigUser(ADMIN_USER, ("system:masters",)),
        s.kube_proxy_kubeconfig: KubeconfigUser(KUBE_PROXY_USER),
        # A client-cert user with no group: its only rights come from a RoleBinding.
        s.tenant_kubeconfig: KubeconfigUser(s.tenant_user, namespace=s.tenant_namespace),
    }


@dataclass(frozen=True)
class Pki:
    """The files of the PKI on disk (kubeadm's names)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    def cert(self, stem: str) -> Path:
        return self.directory / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.directory / f"{stem}.key"

    @property
    def service_account_public_key(self) -> Path:
        return self.directory / "sa.pub"

    @property
    def service_account_private_key(self) -> Path:
        return self.directory / "sa.key"


def _kubeadm(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stderr.strip()}")
    return result.stdout


def _write_private(path: Path, data: bytes) -> None:
    """Created 0600 so a key is never readable by others, not even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(path, 0o600)


def with_namespace(kubeconfig: str, namespace: str) -> str:
    """The kubeconfig with `namespace` as its current context's default namespace."""
    config = yaml.safe_load(kubeconfig)
    for context in config["contexts"]:
        if context["name"] == config["current-context"]:
            context["context"]["namespace"] = namespace
    return yaml.safe_dump(config, sort_keys=False)


def create_pki(settings: RigSettings) -> Pki:
    """Writes a fresh PKI to settings.pki_dir and the kubeconfigs next to the configs."""
    s = settings
    pki = Pki(s.pki_dir)
    s.pki_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(s.pki_dir, 0o700)
    config = kubeadm_config_file(s)
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(kubeadm_config_text(s))
    kubeadm = s.binary("kubeadm")
    for phase in CERTIFICATE_PHASES:
        _kubeadm([str(kubeadm), "init", "phase", "certs", phase, f"--config={config}"])
    for phase in KUBECONFIG_PHASES:
        _kubeadm(
            [
                str(kubeadm),
                "init",
                "phase",
                "kubeconfig",
                phase,
                f"--config={config}",
                f"--kubeconfig-dir={s.config_dir}",
            ]
        )
    for path, user in kubeconfig_users(s).items():
        kubeconfig = _kubeadm(user.argv(kubeadm, config))
        if user.namespace is not None:
            kubeconfig = with_namespace(kubeconfig, user.namespace)
        _write_private(path, kubeconfig.encode())
    # The admin's certificate as files too, for TLS clients that are not kubectl.
    admin = yaml.safe_load(s.admin_kubeconfig.read_text())["users"][0]["user"]
    pki.cert("admin").write_bytes(base64.b64decode(admin["client-certificate-data"]))
    _write_private(pki.key("admin"), base64.b64decode(admin["client-key-data"]))
    return pki
