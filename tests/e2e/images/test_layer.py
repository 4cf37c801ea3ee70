"""The image layer and references without crane: what layer.py writes (modes, owners, parents,
capabilities, reproducibility) and build.py's pure helpers. Runs in `make unit` (pyproject.toml's
testpaths); test_build.py, which needs the real crane, runs in the e2e run only.
"""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path

import pytest

from . import build, layer


def _layer(files: list[layer.ImageFile]) -> tarfile.TarFile:
    out = io.BytesIO()
    layer.write_layer(files, out)
    out.seek(0)
    return tarfile.open(fileobj=out)


def test_a_layer_has_sorted_entries_with_parents_and_fixed_owners(tmp_path: Path) -> None:
    binary = tmp_path / "etcd"
    binary.write_bytes(b"fake etcd\n")
    binary.chmod(0o600)  # the image mode must not depend on the host file's
    tar = _layer(
        [
            layer.ImageFile.from_host("/usr/local/bin/etcd", binary),
            layer.ImageFile.symlink("/usr/sbin/iptables", "xtables-nft-multi"),
            *layer.base_files(),
        ]
    )
    names = tar.getnames()
    assert names == sorted(names)
    assert {"usr", "usr/local", "usr/local/bin", "usr/sbin", "etc", "tmp"} <= set(names)
    assert stat.S_IMODE(tar.getmember("usr/local/bin/etcd").mode) == 0o755
    assert tar.getmember("usr/local/bin").isdir()
    assert stat.S_IMODE(tar.getmember("tmp").mode) == 0o1777
    assert stat.S_IMODE(tar.getmember("root").mode) == 0o700
    assert tar.getmember("usr/sbin/iptables").linkname == "xtables-nft-multi"
    stream = tar.extractfile("usr/local/bin/etcd")
    assert stream is not None and stream.read() == b"fake etcd\n"
    for member in tar.getmembers():
        assert (member.uid, member.gid, member.mtime) == (0, 0, layer.FIXED_MTIME)


def test_a_layer_is_reproducible(tmp_path: Path) -> None:
    binary = tmp_path / "kubectl"
    binary.write_bytes(b"fake kubectl\n")
    files = [layer.ImageFile.from_host("/usr/local/bin/kubectl", binary), *layer.base_files()]
    first = io.BytesIO()
    layer.write_layer(files, first)
    binary.touch()  # a newer host mtime must not leak into the layer
    second = io.BytesIO()
    layer.write_layer(files, second)
    assert first.getvalue() == second.getvalue()


def test_a_file_capability_travels_as_a_pax_xattr(tmp_path: Path) -> None:
    binary = tmp_path / "coredns"
    binary.write_bytes(b"fake coredns\n")
    capability = layer.file_capability(10)
    tar = _layer([layer.ImageFile.from_host("/coredns", binary, xattrs=(capability,))])
    pax = tar.getmember("coredns").pax_headers["SCHILY.xattr.security.capability"]
    # VFS_CAP_REVISION_2 | effective, permitted CAP_NET_BIND_SERVICE (10): `setcap ...=+ep`.
    assert pax.encode("utf-8", "surrogateescape") == bytes.fromhex(
        "0100000200040000000000000000000000000000"
    )


def test_image_paths_are_absolute_and_unique() -> None:
    with pytest.raises(ValueError, match="absolute"):
        _layer([layer.ImageFile.text("etc/passwd", "")])
    with pytest.raises(ValueError, match="absolute"):
        _layer([layer.ImageFile.text("/etc/../passwd", "")])
    with pytest.raises(ValueError, match="duplicate"):
        _layer([layer.ImageFile.text("/a", ""), layer.ImageFile.text("/a", "")])


def test_reference_needs_a_tag() -> None:
    assert build.split_reference("registry.k8s.io/etcd:3.7.0-0") == (
        "registry.k8s.io/etcd",
        "3.7.0-0",
    )
    with pytest.raises(ValueError):
        build.split_reference("registry.k8s.io/pause")
    with pytest.raises(ValueError):
        build.split_reference("localhost:5000/pause")


def test_the_kube_router_image_is_not_a_program_image() -> None:
    # The rig builds it itself, with iptables and ipset from the host (cluster._import_images).
    assert build.KUBE_ROUTER not in build.IMAGES
    assert build.KUBE_ROUTER.binaries == {"/usr/local/bin/kube-router": "kube-router"}
