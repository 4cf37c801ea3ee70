#!/usr/bin/env bash
# Builds the binaries the e2e rig and the tenant images need, from the Go module proxy only,
# into ${K8S_ON_K8S_CACHE:-/var/cache/k8s-on-k8s}/<version>/bin (outside the work tree):
#
#   hack/build-binaries.sh [v1.37.2]  the rig's release: everything the rig and its tenants run
#     kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl kubeadm
#     etcd etcdctl pause coredns proxy-server proxy-agent traefik kube-router crane
#   hack/build-binaries.sh v1.36.3    another release a tenant runs at (tests/e2e/test_releases.py):
#     its control plane, the node binaries of its workers and its paired etcd only
#     kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy etcd etcdctl
#
# Each release has its wrapper module in hack/build/kubernetes/<version>, each etcd release in
# hack/build/etcd/<version>; the etcd a release pairs with is components/common/versions.py's.
# A binary that is already present and answers --version is reused, so a warm run takes seconds.
# Set FORCE=1 to rebuild everything.
set -euo pipefail

readonly RIG_K8S_VERSION="v1.37.2"
readonly PAUSE_VERSION="3.10.2"
readonly COREDNS_VERSION="v1.14.6"
# Konnectivity (apiserver-network-proxy): v0.36.0 is the release whose konnectivity-client
# Kubernetes v1.37.2 links (hack/build/kubernetes/v1.37.2/go.mod); hack/build/konnectivity/go.mod
# pins it.
readonly KONNECTIVITY_VERSION="v0.36.0"
readonly KONNECTIVITY_MODULE="sigs.k8s.io/apiserver-network-proxy"
# Traefik, the rig's ingress controller (its kubernetesIngressNGINX provider does SSL passthrough),
# built in writable copies of the downloaded modules (see hack/build/README.md, "traefik/").
readonly TRAEFIK_VERSION="v3.7.13"
readonly TRAEFIK_MODULE="github.com/traefik/traefik/v3"
# The rig's NetworkPolicy implementation (its firewall only), pinned by its wrapper go.mod.
# v2.1.0 is the one release the module proxy serves; the flaws reported against it are in its
# service proxy, which the rig does not run.
readonly KUBE_ROUTER_VERSION="v2.1.0"
readonly KUBE_ROUTER_MODULE="github.com/cloudnativelabs/kube-router/v2"
# go-containerregistry's crane, which writes the e2e images (tests/e2e/images/build.py); pinned
# by its wrapper go.mod.
readonly CRANE_VERSION="v0.22.1"
readonly CRANE_MODULE="github.com/google/go-containerregistry"
# Stands in for the fork of it that Traefik's go.mod names and the module proxy refuses.
readonly GO_HTTP_AUTH="github.com/abbot/go-http-auth@v0.4.0"

k8s_version="${1:-${RIG_K8S_VERSION}}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${repo_root}/hack/build"
cache_dir="${K8S_ON_K8S_CACHE:-/var/cache/k8s-on-k8s}"
bin_dir="${cache_dir}/${k8s_version}/bin"
k8s_module_dir="${build_dir}/kubernetes/${k8s_version}"
if [[ ! -f "${k8s_module_dir}/go.mod" ]]; then
  echo "error: no wrapper module for Kubernetes ${k8s_version} in hack/build/kubernetes" \
    "(there are: $(ls "${build_dir}/kubernetes" | tr '\n' ' ')); hack/build/README.md says how" \
    "to add one" >&2
  exit 2
fi
# The etcd release kubeadm pairs with this one, as the program deploys it.
etcd_version="v$(cd "${repo_root}" && python3 -c '
import sys
from components.common.versions import find_release
release = find_release(sys.argv[1])
if release is None:
    sys.exit(f"error: {sys.argv[1]} is not a release components/common/versions.py supports")
print(release.etcd_version)' "${k8s_version}")"
etcd_module_dir="${build_dir}/etcd/${etcd_version}"
if [[ ! -f "${etcd_module_dir}/go.mod" ]]; then
  echo "error: no wrapper module for etcd ${etcd_version} (paired with ${k8s_version})" \
    "in hack/build/etcd" >&2
  exit 2
fi
mkdir -p "${bin_dir}"

# Static binaries, no local paths embedded, symbols stripped to keep them small; -p 2 matches CI's
# 2 cores. -buildvcs=false because the wrapper modules sit inside this repository's git tree.
export CGO_ENABLED=0
go_build_flags=(-p 2 -trimpath -buildvcs=false)

log() { echo "[$(date -u +%H:%M:%S)] $*"; }

# Release time of a module version, from the module proxy's .info file (deterministic buildDate).
module_time() { # module_dir module@version
  local info_file
  info_file="$(cd "$1" && go mod download -json "$2" | sed -n 's/.*"Info": "\(.*\)".*/\1/p')"
  sed -n 's/.*"Time": *"\([^"]*\)".*/\1/p' "${info_file}"
}

# Prints the command that shows a binary's version (each tool spells it differently).
version_command() { # name
  case "$1" in
    kubectl) echo "version --client" ;;
    kubeadm) echo "version -o short" ;;
    etcdctl) echo "version" ;;
    coredns) echo "-version" ;;
    traefik) echo "version" ;;
    *) echo "--version" ;;
  esac
}

# Prints what identifies a binary's version. proxy-server and proxy-agent have no version flag,
# and crane's prints the module version only:
# check that they run (--help) and print the module versions Go embeds in every binary.
version_output() { # name
  local binary="${bin_dir}/$1"
  case "$1" in
    proxy-server | proxy-agent | crane)
      "${binary}" --help >/dev/null 2>&1 && go version -m "${binary}"
      ;;
    *)
      # shellcheck disable=SC2046 # the version command is meant to split into words
      "${binary}" $(version_command "$1") 2>&1
      ;;
  esac
}

# True when the binary exists and its version output mentions the expected version.
is_usable() { # name expected_version
  local binary="${bin_dir}/$1" output
  [[ -x "${binary}" ]] || return 1
  output="$(version_output "$1")" || return 1
  [[ "${output}" == *"$2"* ]]
}

# build NAME EXPECTED_VERSION MODULE_DIR PACKAGE LDFLAGS [PREPARE]: builds one binary unless it is
# usable. PREPARE, a function, is called with MODULE_DIR first to fill it (only when building).
build() {
  local name="$1" expected_version="$2" module_dir="$3" package="$4" ldflags="$5" prepare="${6:-}"
  if [[ "${FORCE:-0}" != 1 ]] && is_usable "${name}" "${expected_version}"; then
    log "reusing ${name} (${expected_version})"
    return
  fi
  log "building ${name} ..."
  local started=${SECONDS}
  if [[ -n "${prepare}" ]]; then
    "${prepare}" "${module_dir}"
  fi
  # Build next to the target and rename, so an interrupted build never leaves a broken binary.
  (cd "${module_dir}" &&
    go build "${go_build_flags[@]}" -ldflags "-s -w ${ldflags}" \
      -o "${bin_dir}/.${name}.tmp" "${package}")
  mv -f "${bin_dir}/.${name}.tmp" "${bin_dir}/${name}"
  if ! is_usable "${name}" "${expected_version}"; then
    echo "error: ${bin_dir}/${name} does not report version ${expected_version}" >&2
    exit 1
  fi
  log "building ${name} ... done in $((SECONDS - started))s ($(du -h "${bin_dir}/${name}" | cut -f1))"
}

total_started=${SECONDS}
log "Go: $(go version); Kubernetes ${k8s_version} with etcd ${etcd_version}; output: ${bin_dir}"

# --- Kubernetes ---------------------------------------------------------------------------------
k8s_minor="${k8s_version#v1.}"
k8s_minor="${k8s_minor%%.*}"
k8s_build_date="$(module_time "${k8s_module_dir}" "k8s.io/kubernetes@${k8s_version}")"
if [[ -z "${k8s_build_date}" ]]; then
  echo "error: could not read the release time of k8s.io/kubernetes@${k8s_version}" >&2
  exit 1
fi
k8s_ldflags=""
for version_package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  # The module proxy does not carry the git commit; say so instead of inventing one.
  k8s_ldflags+=" -X ${version_package}.gitVersion=${k8s_version}"
  k8s_ldflags+=" -X ${version_package}.gitMajor=1"
  k8s_ldflags+=" -X ${version_package}.gitMinor=${k8s_minor}"
  k8s_ldflags+=" -X ${version_package}.gitCommit=unknown-built-from-go-module"
  k8s_ldflags+=" -X ${version_package}.gitTreeState=clean"
  k8s_ldflags+=" -X ${version_package}.buildDate=${k8s_build_date}"
done
# A tenant release needs no kubectl or kubeadm: the tests run the rig's.
k8s_binaries=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
if [[ "${k8s_version}" == "${RIG_K8S_VERSION}" ]]; then
  k8s_binaries+=(kubectl kubeadm)
fi
for name in "${k8s_binaries[@]}"; do
  build "${name}" "${k8s_version}" "${k8s_module_dir}" "k8s.io/kubernetes/cmd/${name}" \
    "${k8s_ldflags}"
done

# --- etcd ---------------------------------------------------------------------------------------
etcd_ldflags="-X go.etcd.io/etcd/api/v3/version.GitSHA=${etcd_version}"
build etcd "${etcd_version#v}" "${etcd_module_dir}" go.etcd.io/etcd/server/v3 "${etcd_ldflags}"
build etcdctl "${etcd_version#v}" "${etcd_module_dir}" go.etcd.io/etcd/etcdctl/v3 "${etcd_ldflags}"

if [[ "${k8s_version}" != "${RIG_K8S_VERSION}" ]]; then
  log "the binaries of tenant release ${k8s_version} are ready in ${bin_dir}" \
    "(total $((SECONDS - total_started))s)"
  ls -l "${bin_dir}"
  exit 0
fi

# --- pause and CoreDNS --------------------------------------------------------------------------
build pause "${PAUSE_VERSION}" "${build_dir}/pause" . "-X main.version=${PAUSE_VERSION}"
build coredns "${COREDNS_VERSION#v}" "${build_dir}/coredns" github.com/coredns/coredns \
  "-X github.com/coredns/coredns/coremain.GitCommit=${COREDNS_VERSION}"

# --- Konnectivity (proxy-server, proxy-agent) ---------------------------------------------------
# `go version -m` prints "mod<TAB>sigs.k8s.io/apiserver-network-proxy<TAB>v0.36.0<TAB>h1:…" (the
# module of the main package); a binary from another release or a broken one is rebuilt.
konnectivity_expected="${KONNECTIVITY_MODULE}"$'\t'"${KONNECTIVITY_VERSION}"
build proxy-server "${konnectivity_expected}" "${build_dir}/konnectivity" \
  "${KONNECTIVITY_MODULE}/cmd/server" ""
build proxy-agent "${konnectivity_expected}" "${build_dir}/konnectivity" \
  "${KONNECTIVITY_MODULE}/cmd/agent" ""

# --- Traefik ------------------------------------------------------------------------------------
# Not buildable from a wrapper module or with `go install`: its go.mod replaces its unpublished
# nested module github.com/traefik/traefik/dynamic/ext with ./pkg/config/dynamic/ext, which the
# module zip leaves out, and the module proxy refuses some of its dependencies.
# So Traefik's own go.mod and go.sum drive the build, in copies of three downloaded modules with
# the files under hack/build/traefik/<copy>/ laid over them:
#   traefik       + pkg/config/dynamic/ext (the two empty extension structs, as upstream)
#   lego          + a providers/dns without lego's DNS-01 providers (some SDKs are refused)
#   go-http-auth  v0.4.0 + the two functions of Traefik's fork of it (the fork is refused)
# The web UI embeds webui/static, which the module zip has (one file), so the build needs no tag.

# Prints the directory of a downloaded module (go mod download verifies it against go.sum / the
# checksum database).
downloaded_dir() { # module_dir module[@version]
  (cd "$1" && go mod download -json "$2") | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'
}

# Copies a downloaded module to work_dir/name, writable, and lays hack/build/traefik/name over it.
copy_module() { # source_dir work_dir name
  cp -R "$1" "$2/$3"
  chmod -R u+w "$2/$3"
  cp -R "${build_dir}/traefik/$3/." "$2/$3/"
}

# Fills work_dir with traefik/ (the main module), lego/ and go-http-auth/ next to it.
prepare_traefik() { # work_dir/traefik
  local work_dir
  work_dir="$(dirname "$1")"
  copy_module "$(downloaded_dir "${build_dir}" "${TRAEFIK_MODULE}@${TRAEFIK_VERSION}")" \
    "${work_dir}" traefik
  # The lego version Traefik's go.mod selects.
  copy_module "$(downloaded_dir "$1" github.com/go-acme/lego/v5)" "${work_dir}" lego
  copy_module "$(downloaded_dir "${build_dir}" "${GO_HTTP_AUTH}")" "${work_dir}" go-http-auth
  (cd "$1" &&
    go mod edit -replace github.com/go-acme/lego/v5=../lego \
      -replace github.com/abbot/go-http-auth=../go-http-auth)
}

traefik_work_dir="$(mktemp -d)"
trap 'rm -rf "${traefik_work_dir}"' EXIT
traefik_build_date="$(module_time "${build_dir}" "${TRAEFIK_MODULE}@${TRAEFIK_VERSION}")"
traefik_ldflags="-X ${TRAEFIK_MODULE}/pkg/version.Version=${TRAEFIK_VERSION#v}"
traefik_ldflags+=" -X ${TRAEFIK_MODULE}/pkg/version.BuildDate=${traefik_build_date}"
build traefik "${TRAEFIK_VERSION#v}" "${traefik_work_dir}/traefik" ./cmd/traefik \
  "${traefik_ldflags}" prepare_traefik

# --- kube-router -------------------------------------------------------------------------------
build kube-router "${KUBE_ROUTER_VERSION}" "${build_dir}/kube-router" \
  "${KUBE_ROUTER_MODULE}/cmd/kube-router" \
  "-X ${KUBE_ROUTER_MODULE}/pkg/version.Version=${KUBE_ROUTER_VERSION}"

# --- crane ------------------------------------------------------------------------------------
build crane "${CRANE_MODULE}"$'\t'"${CRANE_VERSION}" "${build_dir}/crane" \
  "${CRANE_MODULE}/cmd/crane" ""

log "all binaries ready in ${bin_dir} (total $((SECONDS - total_started))s)"
ls -l "${bin_dir}"
