"""Every file the e2e rig writes from its pure builders, for a fixed settings and a fake PKI.

tests/unit/test_rig_outputs.py compares them with tests/unit/testdata/rig_outputs.json, recorded
from the rig before it used the program's builders (components/common): the rig's files are
byte for byte what they were. Re-recorded once, deliberately, when the rig's certificates and
kubeconfigs became kubeadm's (tests/e2e/infra/pki.py: its kubeconfigs are no longer the rig's
own, its kubeadm configuration is) and the rig node got settings.NodeLayout and a kubelet that
makes its own serving certificate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from components.config import parse_settings
from components.tenant.upload_config import kubelet_configuration
from tests.e2e.infra import worker
from tests.e2e.infra.cluster import write_config_files
from tests.e2e.infra.pki import Pki, kubeadm_config_file, kubeadm_config_text
from tests.e2e.infra.settings import RigSettings

GOLDEN = Path(__file__).parent / "testdata" / "rig_outputs.json"
# kubeadm's CA; the rig's own files name no other certificate.
PKI_STEMS = ("ca",)


@dataclass(frozen=True)
class _OffHostSettings(RigSettings):
    """The rig's settings with every file under the state directory: the netns resolv.conf
    would go to /etc/netns."""

    @property
    def netns_resolv_conf(self) -> Path:
        return self.state_dir / "netns-resolv.conf"


def rig_outputs(tmp_path: Path) -> dict[str, str]:
    """Path under tmp_path (shown as <TMP> in contents) -> content."""
    settings = _OffHostSettings(state_dir=tmp_path / "state")
    pki = Pki(tmp_path / "pki")
    pki.directory.mkdir(parents=True)
    for stem in PKI_STEMS:
        (pki.directory / f"{stem}.crt").write_text(f"-----CERT {stem}-----\n")
        (pki.directory / f"{stem}.key").write_text(f"-----KEY {stem}-----\n")
    write_config_files(settings, pki)
    # What create_pki gives kubeadm (which then writes the certificates and kubeconfigs).
    kubeadm_config_file(settings).write_text(kubeadm_config_text(settings))
    outputs = {
        str(path.relative_to(tmp_path)): path.read_text()
        for path in sorted(tmp_path.rglob("*"))
        if path.is_file() and not path.is_relative_to(pki.directory)
    }
    tenant = worker.WorkerSettings.for_tenant(settings, "10.112.0.0/16")
    program = parse_settings({"clusterName": "c", "namespace": "n", "apiHost": "api.example.com"})
    cluster_config = yaml.safe_load(kubelet_configuration(program))
    for name, config in (
        ("worker/kubelet.json", worker.kubelet_config(tenant)),
        ("worker/kubelet-from-cluster.json", worker.kubelet_config(tenant, cluster_config)),
        ("worker/cni.json", worker.worker_cni_conflist(tenant, "10.244.1.0/24")),
    ):
        outputs[name] = json.dumps(config, indent=2) + "\n"
    return {name: content.replace(str(tmp_path), "<TMP>") for name, content in outputs.items()}
