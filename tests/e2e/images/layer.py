"""The filesystem of an image: one uncompressed, reproducible layer tar (standard library).

crane (tests/e2e/images/build.py) makes the image of it: config, manifest, the tarball that
`ctr images import` reads. This part stays ours because it decides what crane cannot be told: the
mode, owner and extended attributes (file capabilities) of every entry. Fixed mtimes, uid/gid 0
and sorted entries: the same inputs always give the same layer.
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

# Every tar entry gets this mtime (the Unix epoch) so that layers are reproducible.
FIXED_MTIME = 0

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NONROOT_UID = 65532


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
