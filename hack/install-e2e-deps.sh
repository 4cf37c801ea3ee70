#!/usr/bin/env bash
# Installs what the e2e rig needs from Debian on a fresh machine (root): containerd, runc, the CNI
# plugins, iptables and iproute2. Go comes with the machine; the Kubernetes binaries are built
# from the Go module proxy by hack/build-binaries.sh.
set -euo pipefail

packages=(containerd runc containernetworking-plugins iptables iproute2 conntrack)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "error: Go is needed to build the Kubernetes binaries" >&2; exit 1; }
echo "e2e prerequisites present: ${packages[*]}, $(go version)"
