#!/usr/bin/env bash
# Installs what the e2e rig needs from Debian on a fresh machine (root): containerd, runc, the CNI
# plugins, iptables, ipset (kube-router, the rig's NetworkPolicy implementation, runs it from its
# image; the rig cleans its sets up) and iproute2, and HAProxy (only its binary is used: the image of the tenant's
# node-local API proxy is built from it). Go comes with the machine; the Kubernetes binaries are built
# from the Go module proxy by hack/build-binaries.sh.
set -euo pipefail

packages=(containerd runc containernetworking-plugins iptables ipset iproute2 conntrack haproxy)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  # Packages must not start their services (haproxy, containerd): the rig runs its own.
  policy=/usr/sbin/policy-rc.d
  added_policy=false
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added_policy=true
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [[ "$added_policy" == true ]]; then rm -f "$policy"; fi
fi
command -v go >/dev/null || { echo "error: Go is needed to build the Kubernetes binaries" >&2; exit 1; }
echo "e2e prerequisites present: ${packages[*]}, $(go version)"
