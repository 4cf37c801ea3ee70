"""The rig's files stay byte for byte what they were while its builders are shared with the
program (components/common): kubelet and kube-proxy configurations, Corefile; and the kubeadm
configuration the rig's PKI and kubeconfigs are made from."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.unit.rig_outputs import GOLDEN, rig_outputs


def test_the_rig_writes_the_recorded_files(tmp_path: Path) -> None:
    outputs = rig_outputs(tmp_path)
    if os.environ.get("RECORD_RIG_OUTPUTS"):  # only to record a deliberate change
        GOLDEN.write_text(json.dumps(outputs, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(GOLDEN.read_text())
    assert sorted(outputs) == sorted(recorded)
    for name, content in recorded.items():
        assert outputs[name] == content, name
