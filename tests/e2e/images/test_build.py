"""The images as crane builds them, from fake binaries: what `ctr images import` reads (the
tarball's manifest), each image's config, and its one layer (modes, owners, capabilities).

Needs the real `crane`: RIG_BIN_DIR's (the e2e run builds it first), else the default cache's,
else one on PATH; skipped without any, unless RIG_BIN_DIR is set (then a missing crane fails).
Not in `make unit` (pyproject.toml's testpaths), which runs before the binaries are built; the
crane-free tests are in test_layer.py.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.infra.settings import DEFAULT_CACHE_DIR

from . import build, layer

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
    "kubectl",
    "kube-router",
]
KUBE_PROXY = "registry.k8s.io/kube-proxy:v1.37.2"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _crane() -> Path:
    rig_bin_dir = os.environ.get("RIG_BIN_DIR")
    if rig_bin_dir:
        crane = Path(rig_bin_dir) / "crane"
        assert crane.is_file(), f"{crane} is missing: run hack/build-binaries.sh"
        return crane
    for candidate in (DEFAULT_CACHE_DIR / "bin" / "crane", shutil.which("crane")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.skip("no crane binary: run hack/build-binaries.sh (or put crane on PATH)")


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in BINARIES:
        (directory / name).write_bytes(f"fake {name}\n".encode())
        (directory / name).chmod(0o600)  # the image mode must not depend on the host file's
    (directory / "crane").symlink_to(_crane().resolve())
    return directory


@dataclass(frozen=True)
class Image:
    """An image tarball (`docker save` format) as `ctr images import` reads it."""

    repo_tags: list[str]
    config: dict
    layer: tarfile.TarFile

    @classmethod
    def read(cls, tar_path: Path) -> Image:
        with tarfile.open(tar_path) as archive:
            blobs = {}
            for member in archive.getmembers():
                stream = archive.extractfile(member)
                if stream is not None:
                    blobs[member.name] = stream.read()
        (manifest,) = json.loads(blobs["manifest.json"])
        (layer_name,) = manifest["Layers"]
        config = json.loads(blobs[manifest["Config"]])
        layer_bytes = gzip.decompress(blobs[layer_name])
        return cls(manifest["RepoTags"], config, tarfile.open(fileobj=io.BytesIO(layer_bytes)))

    def file(self, name: str) -> bytes:
        stream = self.layer.extractfile(name)
        assert stream is not None, f"{name} is not a regular file"
        return stream.read()


def test_builds_every_image_once(bin_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    images = build.build_all(bin_dir, out_dir)
    assert [reference for reference, _ in images] == [spec.reference for spec in build.IMAGES]
    assert len({tar for _, tar in images}) == len(images)
    for reference, tar_path in images:
        # ctr names the imported image after the tarball's tag.
        assert Image.read(tar_path).repo_tags == [reference]
    assert "usr/local/bin/etcdctl" in Image.read(out_dir / "etcd_3.7.0-0.tar").layer.getnames()

    modified = {tar: tar.stat().st_mtime_ns for _, tar in images}
    build.build_all(bin_dir, out_dir)
    assert {tar: tar.stat().st_mtime_ns for _, tar in images} == modified


def test_image_config_is_the_specs(bin_dir: Path, tmp_path: Path) -> None:
    by_reference = {spec.reference: spec for spec in build.IMAGES}
    coredns = build.build_image(
        by_reference["registry.k8s.io/coredns/coredns:v1.14.6"], bin_dir, tmp_path
    )
    config = Image.read(coredns).config
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["config"] == {
        "Entrypoint": ["/coredns"],
        "Env": [DEFAULT_PATH],
        "User": "65532:65532",
        "WorkingDir": "/",
    }
    assert len(config["rootfs"]["diff_ids"]) == 1

    # As upstream: root, no entrypoint, the binary on PATH.
    apiserver = build.build_image(
        by_reference["registry.k8s.io/kube-apiserver:v1.37.2"], bin_dir, tmp_path
    )
    assert Image.read(apiserver).config["config"] == {"Env": [DEFAULT_PATH], "WorkingDir": "/"}

    client = Image.read(build.build_image(build.E2E_CLIENT, bin_dir, tmp_path))
    assert client.config["config"]["Entrypoint"] == ["/usr/local/bin/kubectl"]
    assert client.repo_tags == ["localhost/k8s-on-k8s/e2e-client:v1.37.2"]


def test_layer_modes_owners_and_base_files(bin_dir: Path, tmp_path: Path) -> None:
    by_reference = {spec.reference: spec for spec in build.IMAGES}
    image = Image.read(
        build.build_image(by_reference["registry.k8s.io/etcd:3.7.0-0"], bin_dir, tmp_path)
    )
    names = image.layer.getnames()
    assert names == sorted(names)
    etcd = image.layer.getmember("usr/local/bin/etcd")
    assert stat.S_IMODE(etcd.mode) == 0o755
    assert image.file("usr/local/bin/etcd") == b"fake etcd\n"
    assert image.layer.getmember("usr/local/bin").isdir()
    assert stat.S_IMODE(image.layer.getmember("tmp").mode) == 0o1777
    assert stat.S_IMODE(image.layer.getmember("root").mode) == 0o700
    assert b"nonroot:x:65532:65532:" in image.file("etc/passwd")
    assert b"nonroot:x:65532:" in image.file("etc/group")
    for member in image.layer.getmembers():
        assert (member.uid, member.gid, member.mtime) == (0, 0, layer.FIXED_MTIME)


def test_coredns_keeps_its_file_capability(bin_dir: Path, tmp_path: Path) -> None:
    by_reference = {spec.reference: spec for spec in build.IMAGES}
    spec = by_reference["registry.k8s.io/coredns/coredns:v1.14.6"]
    image = Image.read(build.build_image(spec, bin_dir, tmp_path))
    pax = image.layer.getmember("coredns").pax_headers["SCHILY.xattr.security.capability"]
    # VFS_CAP_REVISION_2 | effective, permitted CAP_NET_BIND_SERVICE (10): `setcap ...=+ep`.
    assert pax.encode("utf-8", "surrogateescape") == bytes.fromhex(
        "0100000200040000000000000000000000000000"
    )


def test_same_input_gives_the_same_tarball(bin_dir: Path, tmp_path: Path) -> None:
    first = build.build_image(build.E2E_CLIENT, bin_dir, tmp_path / "first")
    (bin_dir / "kubectl").touch()  # a newer host mtime must not leak into the image
    second = build.build_image(build.E2E_CLIENT, bin_dir, tmp_path / "second")
    assert first.read_bytes() == second.read_bytes()


def test_extra_files_are_added(bin_dir: Path, tmp_path: Path) -> None:
    iptables = tmp_path / "iptables"
    iptables.write_bytes(b"fake iptables\n")
    extra = {
        KUBE_PROXY: [
            layer.ImageFile.from_host("/usr/sbin/xtables-nft-multi", iptables),
            layer.ImageFile.symlink("/usr/sbin/iptables", "xtables-nft-multi"),
        ]
    }
    images = dict(build.build_all(bin_dir, tmp_path / "out", extra_files=extra))
    image = Image.read(images[KUBE_PROXY])
    assert image.file("usr/sbin/xtables-nft-multi") == b"fake iptables\n"
    assert image.layer.getmember("usr/sbin/iptables").linkname == "xtables-nft-multi"


def test_missing_binary_is_reported(bin_dir: Path, tmp_path: Path) -> None:
    (bin_dir / "etcd").unlink()
    with pytest.raises(FileNotFoundError, match=r"build-binaries\.sh"):
        build.build_all(bin_dir, tmp_path / "out")


def test_missing_crane_is_reported(bin_dir: Path, tmp_path: Path) -> None:
    (bin_dir / "crane").unlink()
    with pytest.raises(FileNotFoundError, match=r"crane is missing: run hack/build-binaries\.sh"):
        build.build_all(bin_dir, tmp_path / "out")


def test_the_kube_router_image_gets_the_rigs_extra_files(bin_dir: Path, tmp_path: Path) -> None:
    # As cluster._import_images builds it, with worker.kube_router_image_files()'s kind of files.
    ipset = tmp_path / "ipset"
    ipset.write_bytes(b"fake ipset\n")
    extra = [
        layer.ImageFile.from_host("/usr/sbin/ipset", ipset),
        layer.ImageFile.symlink("/usr/sbin/iptables-save", "xtables-nft-multi"),
    ]
    image = Image.read(build.build_image(build.KUBE_ROUTER, bin_dir, tmp_path / "out", extra))
    assert image.repo_tags == [build.KUBE_ROUTER.reference]
    assert image.config["config"]["Entrypoint"] == ["/usr/local/bin/kube-router"]
    assert image.file("usr/local/bin/kube-router") == b"fake kube-router\n"
    assert image.file("usr/sbin/ipset") == b"fake ipset\n"
    assert image.layer.getmember("usr/sbin/iptables-save").linkname == "xtables-nft-multi"
