#!/usr/bin/env bash
# Smoke test for the local images: starts a private containerd (its own root, state and socket
# under a temporary directory), imports every image tar and runs `--version` in some of them.
#
# Usage: hack/smoke-test-images.sh IMAGE_TAR_DIR
#   (build the tars first: python -m tests.e2e.images.build --bin-dir ... --out-dir IMAGE_TAR_DIR)
# Needs root, containerd and runc (apt-get install -y containerd runc).
set -euo pipefail

image_dir="$(cd "${1:?usage: $0 IMAGE_TAR_DIR}" && pwd)"
work_dir="$(mktemp -d /tmp/k8s-on-k8s-smoke.XXXXXX)"
socket="${work_dir}/containerd.sock"
ctr_cmd=(ctr --address "${socket}" --namespace k8s.io)

# Minimal config: private paths only, so it never touches a system containerd.
cat >"${work_dir}/config.toml" <<EOF
version = 2
root = "${work_dir}/root"
state = "${work_dir}/state"
[grpc]
  address = "${socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10.2"
EOF

containerd --config "${work_dir}/config.toml" >"${work_dir}/containerd.log" 2>&1 &
containerd_pid=$!
cleanup() {
  kill "${containerd_pid}" 2>/dev/null || true
  wait "${containerd_pid}" 2>/dev/null || true
  # Snapshots may still be mounted if a container was left behind.
  grep -o "${work_dir}/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount 2>/dev/null || true
  rm -rf "${work_dir}"
}
trap cleanup EXIT

for _ in $(seq 50); do
  "${ctr_cmd[@]}" version >/dev/null 2>&1 && break
  sleep 0.2
done
"${ctr_cmd[@]}" version >/dev/null

for tar in "${image_dir}"/*.tar; do
  echo "importing ${tar}"
  "${ctr_cmd[@]}" images import "${tar}"
done
"${ctr_cmd[@]}" images ls

failures=0
run_in_image() { # reference command...
  local reference="$1"
  shift
  echo "--- ${reference}: $*"
  if ! "${ctr_cmd[@]}" run --rm "${reference}" "smoke-$RANDOM" "$@"; then
    echo "FAILED: ${reference}: $*" >&2
    failures=$((failures + 1))
  fi
}
run_in_image registry.k8s.io/etcd:3.7.0-0 /usr/local/bin/etcd --version
run_in_image registry.k8s.io/etcd:3.7.0-0 /usr/local/bin/etcdctl version
run_in_image registry.k8s.io/kube-apiserver:v1.37.2 /usr/local/bin/kube-apiserver --version
run_in_image registry.k8s.io/kube-controller-manager:v1.37.2 kube-controller-manager --version
run_in_image registry.k8s.io/kube-scheduler:v1.37.2 kube-scheduler --version
run_in_image registry.k8s.io/kube-proxy:v1.37.2 kube-proxy --version
run_in_image registry.k8s.io/pause:3.10.2 /pause --version
run_in_image registry.k8s.io/coredns/coredns:v1.14.6 /coredns -version
# No version flag upstream: --help parses every flag and exits 0.
run_in_image registry.k8s.io/kas-network-proxy/proxy-server:v0.36.0 /proxy-server --help
run_in_image registry.k8s.io/kas-network-proxy/proxy-agent:v0.36.0 /proxy-agent --help

if ((failures > 0)); then
  echo "${failures} smoke test(s) failed; containerd log:" >&2
  tail -n 30 "${work_dir}/containerd.log" >&2
  exit 1
fi
echo "all images imported and ran"
