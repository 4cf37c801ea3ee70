"""Builds the control-plane and add-on images from locally built binaries.

    python -m tests.e2e.images.build --bin-dir /var/cache/k8s-on-k8s/v1.37.2/bin --out-dir DIR

writes one image tarball per image into DIR (skipping those already up to date) and prints
`reference<TAB>tar path` per image. Import them with `ctr -n k8s.io images import TAR`.

Another release a tenant runs at needs only its control plane and its paired etcd
(`release_images`), built from that release's binaries when the e2e imports them
(tests/e2e/infra/cluster.py, `import_release_images`).

go-containerregistry's `crane` (built into the bin dir by hack/build-binaries.sh) makes each
image from one layer tar (layer.py): `crane append` onto the empty image, `crane mutate` for the
platform, entrypoint, user, environment and working directory, written as a `docker save`
tarball named after the image's reference. crane edits images in a registry only, so it runs
against a registry of its own (`crane registry serve`) on 127.0.0.1, with a random port and its
blobs in a temporary directory, for the time of one build.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from components.common.versions import find_release

from . import layer

REGISTRY = "registry.k8s.io"
KUBERNETES_VERSION = "v1.37.2"
ETCD_IMAGE_TAG = "3.7.0-0"
PAUSE_VERSION = "3.10.2"
COREDNS_VERSION = "v1.14.6"
# apiserver-network-proxy (Konnectivity): the release whose konnectivity-client v1.37.2 links.
# Upstream tags its images with the module version: kas-network-proxy/proxy-server:v0.36.0.
KONNECTIVITY_VERSION = "v0.36.0"
CAP_NET_BIND_SERVICE = 10
PLATFORM = "linux/amd64"


@dataclass(frozen=True)
class ImageSpec:
    """An image: its reference and which binaries from the bin dir go where."""

    reference: str
    binaries: Mapping[str, str]  # path in image -> binary name in the bin dir
    entrypoint: Sequence[str] = ()
    user: str = ""
    # Extended attributes per path in image, e.g. file capabilities.
    xattrs: Mapping[str, tuple[tuple[str, bytes], ...]] = field(default_factory=dict)

    @property
    def tar_name(self) -> str:
        """'registry.k8s.io/coredns/coredns:v1.14.6' -> 'coredns_coredns_v1.14.6.tar'."""
        repository, tag = split_reference(self.reference)
        return f"{repository.removeprefix(REGISTRY + '/').replace('/', '_')}_{tag}.tar"


def split_reference(reference: str) -> tuple[str, str]:
    """'registry.k8s.io/etcd:3.7.0-0' -> ('registry.k8s.io/etcd', '3.7.0-0')."""
    repository, separator, tag = reference.rpartition(":")
    if not separator or "/" in tag:
        raise ValueError(f"image reference needs an explicit tag: {reference!r}")
    return repository, tag


def kubernetes_image(name: str, version: str = KUBERNETES_VERSION) -> ImageSpec:
    # Upstream runs these as root with the binary on PATH (kubeadm's manifests call it by name).
    return ImageSpec(
        reference=f"{REGISTRY}/{name}:{version}",
        binaries={f"/usr/local/bin/{name}": name},
    )


def _etcd_image(tag: str) -> ImageSpec:
    return ImageSpec(
        reference=f"{REGISTRY}/etcd:{tag}",
        binaries={"/usr/local/bin/etcd": "etcd", "/usr/local/bin/etcdctl": "etcdctl"},
    )


IMAGES: tuple[ImageSpec, ...] = (
    kubernetes_image("kube-apiserver"),
    kubernetes_image("kube-controller-manager"),
    kubernetes_image("kube-scheduler"),
    # kube-proxy also needs iptables/nft at runtime: pass them via build_all(extra_files=...).
    kubernetes_image("kube-proxy"),
    _etcd_image(ETCD_IMAGE_TAG),
    ImageSpec(
        reference=f"{REGISTRY}/pause:{PAUSE_VERSION}",
        binaries={"/pause": "pause"},
        entrypoint=["/pause"],
        user="65535:65535",  # as upstream's pause image
    ),
    ImageSpec(
        reference=f"{REGISTRY}/coredns/coredns:{COREDNS_VERSION}",
        binaries={"/coredns": "coredns"},
        entrypoint=["/coredns"],
        # As upstream: non-root, with `setcap cap_net_bind_service=+ep /coredns` so it can
        # listen on port 53.
        user=f"{layer.NONROOT_UID}:{layer.NONROOT_UID}",
        xattrs={"/coredns": (layer.file_capability(CAP_NET_BIND_SERVICE),)},
    ),
    # As upstream (distroless static, nonroot): the binary at the root, run as the entrypoint.
    ImageSpec(
        reference=f"{REGISTRY}/kas-network-proxy/proxy-server:{KONNECTIVITY_VERSION}",
        binaries={"/proxy-server": "proxy-server"},
        entrypoint=["/proxy-server"],
        user=f"{layer.NONROOT_UID}:{layer.NONROOT_UID}",
    ),
    ImageSpec(
        reference=f"{REGISTRY}/kas-network-proxy/proxy-agent:{KONNECTIVITY_VERSION}",
        binaries={"/proxy-agent": "proxy-agent"},
        entrypoint=["/proxy-agent"],
        user=f"{layer.NONROOT_UID}:{layer.NONROOT_UID}",
    ),
)


# What the infrastructure cluster runs of a tenant release: its control plane and its paired
# etcd. Its workers build their kube-proxy image themselves (with iptables, infra/worker.py);
# pause, CoreDNS and Konnectivity are the rig release's.
RELEASE_KUBERNETES_IMAGES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def release_images(version: str) -> tuple[ImageSpec, ...]:
    """The control plane images of `version`, and its paired etcd."""
    release = find_release(version)
    if release is None or release.version != version:
        raise ValueError(f"not a supported Kubernetes release: {version!r}")
    return (
        *(kubernetes_image(name, version) for name in RELEASE_KUBERNETES_IMAGES),
        _etcd_image(release.etcd_image_tag),
    )


# Not a program image: kubectl and a pause for the e2e's client pods (tenant workers and rig).
E2E_CLIENT = ImageSpec(
    reference=f"localhost/k8s-on-k8s/e2e-client:{KUBERNETES_VERSION}",
    binaries={"/usr/local/bin/kubectl": "kubectl", "/pause": "pause"},
    entrypoint=["/usr/local/bin/kubectl"],
    user="65532:65532",
)


# Not a program image: the rig's NetworkPolicy implementation. The rig adds iptables and ipset
# (with their libraries) from the host when it builds it, as the kube-proxy image of a worker.
KUBE_ROUTER = ImageSpec(
    reference="localhost/k8s-on-k8s/kube-router:v2.1.0",
    binaries={"/usr/local/bin/kube-router": "kube-router"},
    entrypoint=["/usr/local/bin/kube-router"],
)


def _is_up_to_date(tar_path: Path, inputs: Sequence[Path]) -> bool:
    """True when the tar is newer than every input (binaries, extra files and this code)."""
    if not tar_path.exists():
        return False
    built_at = tar_path.stat().st_mtime_ns
    return all(path.stat().st_mtime_ns <= built_at for path in inputs)


def crane_path(bin_dir: Path) -> Path:
    crane = bin_dir / "crane"
    if not crane.is_file():
        raise FileNotFoundError(f"{crane} is missing: run hack/build-binaries.sh first")
    return crane


def _crane(crane: Path, *args: str) -> None:
    result = subprocess.run(
        [str(crane), *args], capture_output=True, text=True, check=False, timeout=600
    )
    if result.returncode != 0:
        raise RuntimeError(f"crane {' '.join(args)} failed:\n{result.stderr.strip()}")


@contextlib.contextmanager
def loopback_registry(crane: Path, scratch: Path, timeout: float = 30.0) -> Iterator[str]:
    """`crane registry serve` on 127.0.0.1 (a free port), blobs under scratch; yields host:port.

    Its log (one line per request) goes to a file: a pipe nobody reads would block it.
    """
    log_path = scratch / "registry.log"
    (scratch / "registry").mkdir()
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(
            [
                str(crane),
                "registry",
                "serve",
                "--address=127.0.0.1:0",
                f"--disk={scratch / 'registry'}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + timeout
        while not (port := re.search(rb"serving on port (\d+)", log_path.read_bytes())):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"crane registry did not start: {log_path.read_text()}")
            time.sleep(0.05)
        yield f"127.0.0.1:{int(port.group(1))}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def write_image(
    crane: Path,
    out_path: Path,
    spec: ImageSpec,
    files: Sequence[layer.ImageFile],
) -> None:
    """Writes the image tarball of spec with `files` as its only layer (add base_files()).

    Written next to out_path and renamed into place: readers never see a half-written image.
    """
    _, tag = split_reference(spec.reference)
    if any("," in argument for argument in spec.entrypoint):
        raise ValueError(f"crane takes the entrypoint comma-separated: {spec.entrypoint}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".image-") as scratch_name:
        scratch = Path(scratch_name)
        layer_path = scratch / "layer.tar"
        with layer_path.open("wb") as layer_stream:
            layer.write_layer(files, layer_stream)
        partial_path = scratch / "image.tar"
        with loopback_registry(crane, scratch) as registry:
            staged = f"{registry}/staged:{tag}"
            _crane(crane, "append", "--oci-empty-base", f"--new_layer={layer_path}", "-t", staged)
            mutate = [
                "mutate",
                staged,
                f"--set-platform={PLATFORM}",
                f"--env=PATH={layer.DEFAULT_PATH}",
                "--workdir=/",
                f"--tag={spec.reference}",
                f"--output={partial_path}",
            ]
            if spec.entrypoint:
                mutate.append(f"--entrypoint={','.join(spec.entrypoint)}")
            if spec.user:
                mutate.append(f"--user={spec.user}")
            _crane(crane, *mutate)
        partial_path.replace(out_path)


def build_image(
    spec: ImageSpec,
    bin_dir: Path,
    out_dir: Path,
    extra_files: Sequence[layer.ImageFile] = (),
    crane: Path | None = None,
) -> Path:
    """Builds one image tar unless it is up to date; returns its path. crane is bin_dir's
    unless given (a tenant release's bin dir has none)."""
    crane = crane or crane_path(bin_dir)
    files = layer.base_files()
    inputs = [Path(layer.__file__), Path(__file__), crane]
    for image_path, binary_name in sorted(spec.binaries.items()):
        source = bin_dir / binary_name
        if not source.is_file():
            raise FileNotFoundError(f"{source} is missing: run hack/build-binaries.sh first")
        files.append(
            layer.ImageFile.from_host(image_path, source, xattrs=spec.xattrs.get(image_path, ()))
        )
        inputs.append(source)
    files.extend(extra_files)
    inputs.extend(extra.source for extra in extra_files if extra.source is not None)

    tar_path = out_dir / spec.tar_name
    if not _is_up_to_date(tar_path, inputs):
        write_image(crane, tar_path, spec, files)
    return tar_path


def build_all(
    bin_dir: str | Path,
    out_dir: str | Path,
    extra_files: Mapping[str, Sequence[layer.ImageFile]] | None = None,
) -> list[tuple[str, Path]]:
    """Builds every image; returns [(reference, tar path)].

    `extra_files` adds files to images by reference, e.g. iptables for kube-proxy:
    {"registry.k8s.io/kube-proxy:v1.37.2": [layer.ImageFile.from_host("/usr/sbin/iptables", ...)]}.
    Changing only extra files that have no host source (literal content) needs a rebuild by
    deleting the tar.
    """
    bin_dir, out_dir = Path(bin_dir), Path(out_dir)
    extra_files = extra_files or {}
    unknown = set(extra_files) - {spec.reference for spec in IMAGES}
    if unknown:
        raise ValueError(f"extra_files for unknown images: {sorted(unknown)}")
    return [
        (spec.reference, build_image(spec, bin_dir, out_dir, extra_files.get(spec.reference, ())))
        for spec in IMAGES
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", required=True, type=Path, help="hack/build-binaries.sh output")
    parser.add_argument("--out-dir", required=True, type=Path, help="where to write image tars")
    args = parser.parse_args(argv)
    try:
        images = build_all(args.bin_dir, args.out_dir)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for reference, tar_path in images:
        print(f"{reference}\t{tar_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
