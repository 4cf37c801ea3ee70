"""Builds a tiny image and checks the OCI layout for real: digests, sizes, references, layer."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import tarfile
from pathlib import Path

import pytest

from . import oci

REFERENCE = "registry.k8s.io/hello:v1.0.0"


@pytest.fixture
def hello_binary(tmp_path: Path) -> Path:
    binary = tmp_path / "hello"
    binary.write_bytes(b"#!/bin/sh\necho hello\n")
    binary.chmod(0o600)  # the image mode must not depend on the host file's mode
    return binary


def _build(binary: Path, out: Path) -> str:
    files = [*oci.base_files(), oci.ImageFile.from_host("/usr/local/bin/hello", binary)]
    return oci.write_image(out, REFERENCE, files, entrypoint=["/usr/local/bin/hello"])


def _read(archive: tarfile.TarFile, member: str | tarfile.TarInfo) -> bytes:
    stream = archive.extractfile(member)
    assert stream is not None, f"{member} is not a regular file"
    return stream.read()


def _read_members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as archive:
        return {
            member.name: _read(archive, member)
            for member in archive.getmembers()
            if member.isfile()
        }


def _blob(members: dict[str, bytes], digest: str) -> bytes:
    algorithm, hex_digest = digest.split(":")
    assert algorithm == "sha256"
    return members[f"blobs/sha256/{hex_digest}"]


def test_layout_is_valid(hello_binary: Path, tmp_path: Path) -> None:
    tar_path = tmp_path / "hello.tar"
    manifest_digest = _build(hello_binary, tar_path)
    members = _read_members(tar_path)

    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    blob_names = [name for name in members if name.startswith("blobs/")]
    assert len(blob_names) == 3  # layer, config, manifest
    for name in blob_names:
        assert hashlib.sha256(members[name]).hexdigest() == name.rsplit("/", 1)[1]

    index = json.loads(members["index.json"])
    (entry,) = index["manifests"]
    assert entry["digest"] == manifest_digest
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    assert entry["annotations"] == {
        "io.containerd.image.name": REFERENCE,
        "org.opencontainers.image.ref.name": "v1.0.0",
    }
    manifest_bytes = _blob(members, entry["digest"])
    assert entry["size"] == len(manifest_bytes)

    manifest = json.loads(manifest_bytes)
    assert manifest["mediaType"] == oci.MEDIA_TYPE_MANIFEST
    config_bytes = _blob(members, manifest["config"]["digest"])
    assert manifest["config"]["size"] == len(config_bytes)
    (layer_descriptor,) = manifest["layers"]
    assert layer_descriptor["mediaType"] == oci.MEDIA_TYPE_LAYER
    layer_bytes = _blob(members, layer_descriptor["digest"])
    assert layer_descriptor["size"] == len(layer_bytes)

    config = json.loads(config_bytes)
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["rootfs"]["diff_ids"] == [layer_descriptor["digest"]]
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/hello"]

    with tarfile.open(fileobj=io.BytesIO(layer_bytes)) as layer:
        names = layer.getnames()
        assert names == sorted(names)
        hello = layer.getmember("usr/local/bin/hello")
        assert stat.S_IMODE(hello.mode) == 0o755
        assert _read(layer, hello) == hello_binary.read_bytes()
        assert layer.getmember("usr/local/bin").isdir()
        assert stat.S_IMODE(layer.getmember("tmp").mode) == 0o1777
        assert b"nonroot:x:65532:65532:" in _read(layer, "etc/passwd")
        assert b"nonroot:x:65532:" in _read(layer, "etc/group")
        for member in layer.getmembers():
            assert (member.uid, member.gid, member.mtime) == (0, 0, oci.FIXED_MTIME)


def test_same_input_gives_same_digest(hello_binary: Path, tmp_path: Path) -> None:
    first = _build(hello_binary, tmp_path / "first.tar")
    hello_binary.touch()  # a newer host mtime must not leak into the image
    second = _build(hello_binary, tmp_path / "second.tar")
    assert first == second
    assert (tmp_path / "first.tar").read_bytes() == (tmp_path / "second.tar").read_bytes()


def test_file_capability_travels_as_pax_xattr(hello_binary: Path, tmp_path: Path) -> None:
    capability = oci.file_capability(10)  # CAP_NET_BIND_SERVICE
    files = [oci.ImageFile.from_host("/hello", hello_binary, xattrs=(capability,))]
    tar_path = tmp_path / "cap.tar"
    oci.write_image(tar_path, REFERENCE, files)
    members = _read_members(tar_path)
    manifest = json.loads(
        _blob(members, json.loads(members["index.json"])["manifests"][0]["digest"])
    )
    with tarfile.open(fileobj=io.BytesIO(_blob(members, manifest["layers"][0]["digest"]))) as layer:
        pax = layer.getmember("hello").pax_headers["SCHILY.xattr.security.capability"]
    assert pax.encode("utf-8", "surrogateescape") == bytes.fromhex(
        "0100000200040000000000000000000000000000"
    )


def test_reference_needs_a_tag() -> None:
    with pytest.raises(ValueError):
        oci.split_reference("registry.k8s.io/pause")
