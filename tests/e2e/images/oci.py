"""Writes OCI image-layout tars (one uncompressed layer, linux/amd64) with the standard library.

The e2e rig has no registry and no Docker daemon, so images are built locally from binaries and
imported with `ctr images import`. Everything is deterministic: fixed mtimes, uid/gid 0, sorted
entries and canonical JSON, so the same inputs always give the same digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

# Every tar entry gets this mtime (the Unix epoch) so that layers are reproducible.
FIXED_MTIME = 0
CREATED = "1970-01-01T00:00:00Z"

MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NONROOT_UID = 65532

_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageFile:
    """One entry of the image's filesystem: a host file, literal content, a directory or a link.

    Build them with the class methods rather than the constructor.
    """

    path: str  # absolute path inside the image, e.g. "/usr/local/bin/etcd"
    kind: str  # "file", "dir" or "symlink"
    mode: int = 0o644
    source: Path | None = None  # host file to copy (kind "file")
    content: bytes | None = None  # literal content (kind "file" without source)
    link_target: str = ""  # kind "symlink"
    # Extended attributes, e.g. file capabilities ("security.capability").
    xattrs: tuple[tuple[str, bytes], ...] = field(default=())

    @classmethod
    def from_host(cls, path: str, source: str | os.PathLike, mode: int = 0o755, **kw) -> ImageFile:
        return cls(path=path, kind="file", mode=mode, source=Path(source), **kw)

    @classmethod
    def text(cls, path: str, text: str, mode: int = 0o644) -> ImageFile:
        return cls(path=path, kind="file", mode=mode, content=text.encode())

    @classmethod
    def directory(cls, path: str, mode: int = 0o755) -> ImageFile:
        return cls(path=path, kind="dir", mode=mode)

    @classmethod
    def symlink(cls, path: str, target: str) -> ImageFile:
        return cls(path=path, kind="symlink", mode=0o777, link_target=target)

    @property
    def tar_name(self) -> str:
        """The entry's name inside the layer tar: relative, no leading slash."""
        name = PurePosixPath(self.path)
        if not name.is_absolute() or ".." in name.parts:
            raise ValueError(f"image paths must be absolute and normalised: {self.path!r}")
        return str(name.relative_to("/"))


def base_files() -> list[ImageFile]:
    """Files every image gets: users root and nonroot (65532, like distroless), and /tmp."""
    return [
        ImageFile.text(
            "/etc/passwd",
            "root:x:0:0:root:/root:/sbin/nologin\n"
            f"nonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/home/nonroot:/sbin/nologin\n",
        ),
        ImageFile.text("/etc/group", f"root:x:0:\nnonroot:x:{NONROOT_UID}:\n"),
        ImageFile.directory("/tmp", mode=0o1777),
        ImageFile.directory("/root", mode=0o700),
        ImageFile.directory("/home/nonroot", mode=0o700),
    ]


def file_capability(*capability_numbers: int) -> tuple[str, bytes]:
    """The `security.capability` xattr granting capabilities as permitted+effective (`+ep`).

    Lets a non-root process gain e.g. CAP_NET_BIND_SERVICE (10) on exec, as `setcap` does.
    """
    permitted = 0
    for number in capability_numbers:
        permitted |= 1 << number
    vfs_cap_revision_2, vfs_cap_flags_effective = 0x02000000, 0x000001
    value = struct.pack(
        "<IIIII",
        vfs_cap_revision_2 | vfs_cap_flags_effective,
        permitted & 0xFFFFFFFF,
        0,  # inheritable, low word
        permitted >> 32,
        0,  # inheritable, high word
    )
    return ("security.capability", value)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str  # "sha256:<hex>"
    size: int

    def to_json(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def _canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _tar_info(name: str, kind: str, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}[kind]
    info.mode = mode
    info.size = size
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _with_parent_directories(files: Iterable[ImageFile]) -> list[ImageFile]:
    """Adds a 0755 directory entry for every missing parent, then sorts by path."""
    by_name: dict[str, ImageFile] = {}
    for image_file in files:
        name = image_file.tar_name
        if name in by_name:
            raise ValueError(f"duplicate image path: {image_file.path}")
        by_name[name] = image_file
    for name in list(by_name):
        for parent in PurePosixPath(name).parents:
            if str(parent) != "." and str(parent) not in by_name:
                by_name[str(parent)] = ImageFile.directory("/" + str(parent))
    return [by_name[name] for name in sorted(by_name)]


def write_layer(files: Iterable[ImageFile], out: BinaryIO) -> None:
    """Writes an uncompressed, reproducible layer tar of `files` to `out`."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for image_file in _with_parent_directories(files):
            name = image_file.tar_name
            if image_file.kind == "dir":
                layer.addfile(_tar_info(name, "dir", image_file.mode))
                continue
            if image_file.kind == "symlink":
                info = _tar_info(name, "symlink", image_file.mode)
                info.linkname = image_file.link_target
                layer.addfile(info)
                continue
            if image_file.source is not None:
                size = image_file.source.stat().st_size
                content_stream: BinaryIO = image_file.source.open("rb")
            else:
                content = image_file.content or b""
                size = len(content)
                content_stream = io.BytesIO(content)
            info = _tar_info(name, "file", image_file.mode, size)
            # Binary xattr values travel as PAX records; surrogateescape keeps the raw bytes.
            info.pax_headers = {
                f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape")
                for key, value in image_file.xattrs
            }
            with content_stream:
                layer.addfile(info, content_stream)


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def image_config(
    layer_digest: str,
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    user: str = "",
    env: Sequence[str] = (f"PATH={DEFAULT_PATH}",),
    working_dir: str = "/",
) -> dict:
    """The OCI image config for a single uncompressed layer (its diff_id is its digest)."""
    config: dict = {"Env": list(env), "WorkingDir": working_dir}
    if entrypoint:
        config["Entrypoint"] = list(entrypoint)
    if cmd:
        config["Cmd"] = list(cmd)
    if user:
        config["User"] = user
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": CREATED, "created_by": "k8s-on-k8s tests/e2e/images/oci.py"}],
    }


def split_reference(reference: str) -> tuple[str, str]:
    """'registry.k8s.io/etcd:3.7.0-0' -> ('registry.k8s.io/etcd', '3.7.0-0')."""
    repository, separator, tag = reference.rpartition(":")
    if not separator or "/" in tag:
        raise ValueError(f"image reference needs an explicit tag: {reference!r}")
    return repository, tag


def write_image(
    out_path: str | os.PathLike,
    reference: str,
    files: Iterable[ImageFile],
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    user: str = "",
) -> str:
    """Writes an OCI image-layout tar for `reference` and returns the manifest digest.

    `files` is the whole filesystem (add base_files() yourself). The tar is written next to
    `out_path` and renamed into place, so readers never see a half-written image.
    """
    _, tag = split_reference(reference)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".oci-") as scratch:
        layer_path = Path(scratch) / "layer.tar"
        with layer_path.open("wb") as layer_stream:
            write_layer(files, layer_stream)
        layer = Descriptor(
            MEDIA_TYPE_LAYER, "sha256:" + _sha256_of_file(layer_path), layer_path.stat().st_size
        )

        config_json = _canonical_json(image_config(layer.digest, entrypoint, cmd, user))
        config = Descriptor(
            MEDIA_TYPE_CONFIG, "sha256:" + hashlib.sha256(config_json).hexdigest(), len(config_json)
        )
        manifest_json = _canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_MANIFEST,
                "config": config.to_json(),
                "layers": [layer.to_json()],
            }
        )
        manifest = Descriptor(
            MEDIA_TYPE_MANIFEST,
            "sha256:" + hashlib.sha256(manifest_json).hexdigest(),
            len(manifest_json),
        )
        index_json = _canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_INDEX,
                "manifests": [
                    {
                        **manifest.to_json(),
                        "platform": {"architecture": "amd64", "os": "linux"},
                        # containerd names the image after the first; OCI tools use the tag.
                        "annotations": {
                            ANNOTATION_CONTAINERD_NAME: reference,
                            ANNOTATION_REF_NAME: tag,
                        },
                    }
                ],
            }
        )

        # The layout's files: a host file (the layer, possibly large) or in-memory content.
        layout_files: dict[str, Path | bytes] = {
            _blob_name(layer.digest): layer_path,
            _blob_name(config.digest): config_json,
            _blob_name(manifest.digest): manifest_json,
            "index.json": index_json,
            "oci-layout": _canonical_json({"imageLayoutVersion": "1.0.0"}),
        }
        partial_path = Path(scratch) / "image.tar"
        with tarfile.open(partial_path, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for directory in ("blobs", "blobs/sha256"):
                archive.addfile(_tar_info(directory, "dir", 0o755))
            for name, content in sorted(layout_files.items()):
                if isinstance(content, Path):
                    with content.open("rb") as stream:
                        size = content.stat().st_size
                        archive.addfile(_tar_info(name, "file", 0o644, size), stream)
                else:
                    info = _tar_info(name, "file", 0o644, len(content))
                    archive.addfile(info, io.BytesIO(content))
        os.replace(partial_path, out_path)
    return manifest.digest
