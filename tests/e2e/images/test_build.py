"""build_all with fake binaries: one tar per image, up-to-date tars are kept, extra files land."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from . import build, oci

BINARIES = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "etcd",
    "etcdctl",
    "pause",
    "coredns",
    "proxy-server",
    "proxy-agent",
]
KUBE_PROXY = "registry.k8s.io/kube-proxy:v1.37.2"


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in BINARIES:
        (directory / name).write_bytes(f"fake {name}\n".encode())
    return directory


def _layer_names(tar_path: Path) -> list[str]:
    with tarfile.open(tar_path) as archive:
        members = {m.name: archive.extractfile(m) for m in archive.getmembers() if m.isfile()}
        blobs = {name: stream.read() for name, stream in members.items() if stream is not None}
    index = json.loads(blobs["index.json"])
    manifest_digest = index["manifests"][0]["digest"].removeprefix("sha256:")
    manifest = json.loads(blobs[f"blobs/sha256/{manifest_digest}"])
    layer_digest = manifest["layers"][0]["digest"].removeprefix("sha256:")
    with tarfile.open(fileobj=io.BytesIO(blobs[f"blobs/sha256/{layer_digest}"])) as layer:
        return layer.getnames()


def test_builds_every_image_once(bin_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    images = build.build_all(bin_dir, out_dir)
    assert [reference for reference, _ in images] == [spec.reference for spec in build.IMAGES]
    assert len({tar for _, tar in images}) == len(images)
    assert "usr/local/bin/etcdctl" in _layer_names(out_dir / "etcd_3.7.0-0.tar")
    assert "coredns" in _layer_names(out_dir / "coredns_coredns_v1.14.6.tar")

    modified = {tar: tar.stat().st_mtime_ns for _, tar in images}
    build.build_all(bin_dir, out_dir)
    assert {tar: tar.stat().st_mtime_ns for _, tar in images} == modified


def test_extra_files_are_added(bin_dir: Path, tmp_path: Path) -> None:
    iptables = tmp_path / "iptables"
    iptables.write_bytes(b"fake iptables\n")
    extra = {KUBE_PROXY: [oci.ImageFile.from_host("/usr/sbin/iptables", iptables)]}
    images = dict(build.build_all(bin_dir, tmp_path / "out", extra_files=extra))
    assert "usr/sbin/iptables" in _layer_names(images[KUBE_PROXY])


def test_missing_binary_is_reported(bin_dir: Path, tmp_path: Path) -> None:
    (bin_dir / "etcd").unlink()
    with pytest.raises(FileNotFoundError, match=r"build-binaries\.sh"):
        build.build_all(bin_dir, tmp_path / "out")
