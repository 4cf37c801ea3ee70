"""Supported Kubernetes releases and the component versions each one pairs with.

The etcd, pause and CoreDNS versions are kubeadm's defaults for that release
(cmd/kubeadm/app/constants/constants.go), so a control plane built here runs the
same pairing upstream tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class KubernetesRelease:
    version: str  # e.g. "v1.37.2", the tag of the upstream control plane images
    etcd_image_tag: str  # e.g. "3.7.0-0", the tag of the upstream etcd image
    pause_version: str
    coredns_version: str

    @property
    def minor(self) -> str:
        return minor_of(self.version)

    @property
    def etcd_version(self) -> str:
        """The etcd release itself, without the image revision suffix."""
        return self.etcd_image_tag.split("-", 1)[0]


SUPPORTED_RELEASES: tuple[KubernetesRelease, ...] = (
    KubernetesRelease("v1.35.4", "3.6.6-0", "3.10.1", "v1.13.1"),
    KubernetesRelease("v1.36.3", "3.6.8-0", "3.10.2", "v1.14.2"),
    KubernetesRelease("v1.37.2", "3.7.0-0", "3.10.2", "v1.14.6"),
)

DEFAULT_RELEASE = SUPPORTED_RELEASES[-1]

_VERSION_PATTERN = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?$")


def minor_of(version: str) -> str:
    match = _VERSION_PATTERN.match(version)
    if match is None:
        raise ValueError(f"not a Kubernetes version: {version!r}")
    return f"{match.group(1)}.{match.group(2)}"


def supported_versions() -> list[str]:
    return [release.version for release in SUPPORTED_RELEASES]


def find_release(version: str) -> KubernetesRelease | None:
    """The release for "v1.37.2", "1.37.2" or "1.37" (the pinned patch of that minor).

    Any other patch of a supported minor is accepted too: etcd pairs by minor.
    """
    match = _VERSION_PATTERN.match(version.strip())
    if match is None:
        return None
    major, minor, patch = match.groups()
    for release in SUPPORTED_RELEASES:
        if release.minor != f"{major}.{minor}":
            continue
        if patch is None:
            return release
        return KubernetesRelease(
            version=f"v{major}.{minor}.{patch}",
            etcd_image_tag=release.etcd_image_tag,
            pause_version=release.pause_version,
            coredns_version=release.coredns_version,
        )
    return None
