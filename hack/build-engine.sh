#!/usr/bin/env bash
# Builds the real Pulumi engine from the Go module proxy only (no GitHub, no pulumi.com):
#   pulumi                      the CLI, v3.274.1, through the wrapper module hack/build/pulumi
#   pulumi-resource-kubernetes  the kubernetes provider plugin, v4.25.0, in a copy of its module
# into ${K8S_ON_K8S_CACHE:-/var/cache/k8s-on-k8s}/pulumi-v3.274.1/bin and
# .../pulumi-kubernetes-v4.25.0/bin (outside the work tree). See hack/build/README.md.
#
# Usage: hack/build-engine.sh   (the versions are pinned: hack/build/pulumi/go.mod, this script)
#
# A binary that is already present and reports its version is reused, so a warm run takes
# seconds. Set FORCE=1 to rebuild both.
set -euo pipefail

readonly PULUMI_VERSION="v3.274.1"
readonly PULUMI_MODULE="github.com/pulumi/pulumi/pkg/v3"
# The kubernetes provider: the module proxy serves exactly one version of its module, a
# pseudo-version whose commit is the repository tag v4.25.0 (the PyPI SDK pulumi-kubernetes
# 4.25.0 asks the engine for plugin 4.25.0, and the engine matches plugin versions exactly).
readonly KUBERNETES_PROVIDER_VERSION="v4.25.0"
readonly KUBERNETES_PROVIDER_MODULE="github.com/pulumi/pulumi-kubernetes/provider/v4"
readonly KUBERNETES_PROVIDER_MODULE_VERSION="v4.0.0-20260115033456-f47bc2d6f199"
# Its checksum (go.sum "h1:" of the module zip), so a different download fails the build.
readonly KUBERNETES_PROVIDER_MODULE_SUM="h1:j2bphCf7c2YhnBrhwht2f3TNRRgcMImltUlAgzxr9H4="
# Its go.mod replaces the SDK with ../sdk; the published SDK of the same tag is used instead
# (hack/build/pulumi-kubernetes/sdk-v4.25.0.go.sum holds its two go.sum lines).
readonly KUBERNETES_SDK_MODULE="github.com/pulumi/pulumi-kubernetes/sdk/v4"

if [[ $# -ne 0 ]]; then
  echo "usage: $0   (versions are pinned; FORCE=1 rebuilds)" >&2
  exit 2
fi

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${repo_root}/hack/build"
cache_dir="${K8S_ON_K8S_CACHE:-/var/cache/k8s-on-k8s}"
pulumi_bin_dir="${cache_dir}/pulumi-${PULUMI_VERSION}/bin"
provider_bin_dir="${cache_dir}/pulumi-kubernetes-${KUBERNETES_PROVIDER_VERSION}/bin"
mkdir -p "${pulumi_bin_dir}" "${provider_bin_dir}"

if ! grep -q "^[[:space:]]*${PULUMI_MODULE} ${PULUMI_VERSION}\$" "${build_dir}/pulumi/go.mod"; then
  echo "error: hack/build/pulumi/go.mod does not require ${PULUMI_MODULE} ${PULUMI_VERSION}" >&2
  exit 1
fi

# Static binaries, no local paths embedded, symbols stripped to keep them small; -p 2 matches CI's
# 2 cores. -buildvcs=false because the wrapper module sits inside this repository's git tree.
# -mod=readonly (whatever GOFLAGS says): go.mod and go.sum are used as they are, a missing entry
# fails the build instead of upgrading a dependency.
export CGO_ENABLED=0
go_build_flags=(-p 2 -trimpath -buildvcs=false -mod=readonly)

log() { echo "[$(date -u +%H:%M:%S)] $*"; }

work_dir="$(mktemp -d)"
trap 'rm -rf "${work_dir}"' EXIT

# Runs the CLI without touching ~/.pulumi or the network, for at most a minute (a wrong binary in
# its place, a plugin for example, could wait for minutes).
offline_pulumi() { # binary args...
  local binary="$1"
  shift
  PULUMI_HOME="${work_dir}/pulumi-home" PULUMI_SKIP_UPDATE_CHECK=true \
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true timeout 60 "${binary}" "$@"
}

# True when the CLI exists and `pulumi version` prints exactly the expected version (an unstamped
# build prints nothing).
pulumi_is_usable() { # binary
  [[ -x "$1" ]] || return 1
  [[ "$(offline_pulumi "$1" version 2>/dev/null)" == "${PULUMI_VERSION}" ]]
}

# Prints the version the provider plugin answers to GetPluginInfo (its stamped version). The plugin
# is started without an engine address ("attach" mode): it prints the port it serves gRPC on,
# on 127.0.0.1, and the call is a gRPC request over HTTP/2 made with curl. Without curl, prints
# the expected version once the plugin has started (then only `go version -m` checks the build).
plugin_info_version() { # binary
  local binary="$1" out="${work_dir}/plugin.out" port="" pid answer="" _
  "${binary}" >"${out}" 2>/dev/null &
  pid=$!
  for _ in $(seq 600); do # 60 s: a 300 MB binary, maybe while another build runs
    if [[ "$(wc -l <"${out}")" -ge 1 ]]; then
      port="$(head -n1 "${out}")"
      break
    fi
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.1
  done
  if [[ "${port}" =~ ^[0-9]+$ ]]; then
    if command -v curl >/dev/null; then
      # An empty protobuf message: no compression, length 0. The answer is a PluginInfo message,
      # field 1 (version) a string: the version appears as plain bytes.
      answer="$(printf '\0\0\0\0\0' | curl --silent --max-time 20 --http2-prior-knowledge \
        -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @- --output - \
        "http://127.0.0.1:${port}/pulumirpc.ResourceProvider/GetPluginInfo" | tr -c '0-9.' ' ')" ||
        true
    else
      answer="${KUBERNETES_PROVIDER_VERSION#v}"
    fi
  fi
  kill "${pid}" 2>/dev/null || true
  wait "${pid}" 2>/dev/null || true
  rm -f "${out}"
  echo "${answer}"
}

# True when the plugin exists, Go's build information names this command built against the
# published SDK v4.25.0, and the plugin answers GetPluginInfo with 4.25.0. (The main module's own
# version reads "(devel)": it is built as the main module of a copy, where Go has no VCS to read.)
provider_is_usable() { # binary
  local binary="$1" build_info
  [[ -x "${binary}" ]] || return 1
  build_info="$(go version -m "${binary}")" || return 1
  [[ "${build_info}" == *$'\tpath\t'"${KUBERNETES_PROVIDER_MODULE}/cmd/pulumi-resource-kubernetes"* ]] ||
    return 1
  [[ "${build_info}" == *$'\tdep\t'"${KUBERNETES_SDK_MODULE}"$'\t'"${KUBERNETES_PROVIDER_VERSION}"* ]] ||
    return 1
  [[ " $(plugin_info_version "${binary}") " == *" ${KUBERNETES_PROVIDER_VERSION#v} "* ]]
}

# build NAME BIN_DIR CHECK MODULE_DIR PACKAGE LDFLAGS [PREPARE]: builds one binary unless CHECK
# (a function, given the binary's path) accepts it. PREPARE, a function, is called with
# MODULE_DIR first to fill it (only when building).
build() {
  local name="$1" bin_dir="$2" check="$3" module_dir="$4" package="$5" ldflags="$6" prepare="${7:-}"
  if [[ "${FORCE:-0}" != 1 ]] && "${check}" "${bin_dir}/${name}"; then
    log "reusing ${bin_dir}/${name}"
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
  if ! "${check}" "${bin_dir}/${name}"; then
    echo "error: ${bin_dir}/${name} does not report the expected version" >&2
    exit 1
  fi
  log "building ${name} ... done in $((SECONDS - started))s ($(du -h "${bin_dir}/${name}" | cut -f1))"
}

total_started=${SECONDS}
log "Go: $(go version); output: ${pulumi_bin_dir}, ${provider_bin_dir}"

# --- Pulumi CLI ---------------------------------------------------------------------------------
build pulumi "${pulumi_bin_dir}" pulumi_is_usable "${build_dir}/pulumi" \
  "${PULUMI_MODULE}/cmd/pulumi" \
  "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=${PULUMI_VERSION}"

# --- pulumi-kubernetes provider -----------------------------------------------------------------
# Not buildable from a wrapper module: cmd/pulumi-resource-kubernetes/main.go embeds
# schema-embed.json and terraform-mapping-embed.json, which upstream's Makefile copies from
# schema.json and terraform-mapping.json and the module zip does not hold. So the provider's own
# go.mod and go.sum drive the build, in a writable copy of the downloaded module, with those two
# copies made and the SDK's ../sdk replace swapped for the published SDK v4.25.0.

# Fills work_dir/provider (the main module of the build).
prepare_provider() { # work_dir/provider
  local download source_dir sum
  download="$(cd "${work_dir}" &&
    go mod download -json "${KUBERNETES_PROVIDER_MODULE}@${KUBERNETES_PROVIDER_MODULE_VERSION}")"
  source_dir="$(sed -n 's/.*"Dir": "\(.*\)".*/\1/p' <<<"${download}")"
  sum="$(sed -n 's/.*"Sum": "\(.*\)".*/\1/p' <<<"${download}")"
  if [[ -z "${source_dir}" || "${sum}" != "${KUBERNETES_PROVIDER_MODULE_SUM}" ]]; then
    echo "error: ${KUBERNETES_PROVIDER_MODULE}@${KUBERNETES_PROVIDER_MODULE_VERSION}:" \
      "download failed or its checksum is not ${KUBERNETES_PROVIDER_MODULE_SUM}:" >&2
    echo "${download}" >&2
    exit 1
  fi
  rm -rf "$1"
  cp -R "${source_dir}" "$1"
  chmod -R u+w "$1"
  local cmd_dir="$1/cmd/pulumi-resource-kubernetes"
  cp "${cmd_dir}/schema.json" "${cmd_dir}/schema-embed.json"
  cp "${cmd_dir}/terraform-mapping.json" "${cmd_dir}/terraform-mapping-embed.json"
  (cd "$1" &&
    go mod edit -dropreplace="${KUBERNETES_SDK_MODULE}" \
      -require="${KUBERNETES_SDK_MODULE}@${KUBERNETES_PROVIDER_VERSION}")
  cat "${build_dir}/pulumi-kubernetes/sdk-${KUBERNETES_PROVIDER_VERSION}.go.sum" >>"$1/go.sum"
}

build pulumi-resource-kubernetes "${provider_bin_dir}" provider_is_usable \
  "${work_dir}/provider" ./cmd/pulumi-resource-kubernetes \
  "-X ${KUBERNETES_PROVIDER_MODULE}/pkg/version.Version=${KUBERNETES_PROVIDER_VERSION#v}" \
  prepare_provider

log "engine ready (total $((SECONDS - total_started))s)"
ls -l "${pulumi_bin_dir}/pulumi" "${provider_bin_dir}/pulumi-resource-kubernetes"
