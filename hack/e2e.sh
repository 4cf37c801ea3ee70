#!/usr/bin/env bash
# Runs a command inside the e2e rig's network namespace, as root:
#
#   hack/e2e.sh .venv/bin/pytest tests/e2e -x
#
# The namespace has loopback and whatever the rig adds (its node bridge, the pod bridge), and no
# default route: nothing started by the command can send a packet to an address outside this
# machine. /etc/netns/<name>/resolv.conf (bind-mounted over /etc/resolv.conf by `ip netns exec`)
# points at the rig's CoreDNS, so nothing queries the host's resolver either.
#
# The namespace is created if missing and deleted on exit if this script created it.
#   RIG_NETNS         namespace name (default k8sonk8s-rig)
#   RIG_KEEP_NETNS=1  keep a namespace this script created (hack/infra.sh up)
#   RIG_DELETE_NETNS=1  delete the namespace on exit even if it existed (hack/infra.sh down)
#   RIG_PYTHON        interpreter for the post-run cleanup (default: the venv's python)
set -euo pipefail

NETNS="${RIG_NETNS:-k8sonk8s-rig}"
RIG_DNS_IP="10.250.0.1"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ $# -eq 0 ]]; then
  echo "usage: $0 COMMAND [ARG...]   (runs COMMAND in netns $NETNS, from $REPO)" >&2
  exit 2
fi
if [[ $EUID -ne 0 ]]; then
  echo "$0: must run as root (it creates a network namespace)" >&2
  exit 1
fi

pick_python() {
  local candidate
  for candidate in "${RIG_PYTHON:-}" "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" \
    "$REPO/.venv/bin/python" "$(command -v python3 || true)"; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then
      echo "$candidate"
      return 0
    fi
  done
}

created=false
if [[ ! -e "/run/netns/$NETNS" ]]; then
  ip netns add "$NETNS"
  created=true
fi
# `ip netns exec` bind-mounts files from here over /etc; the file must exist before it runs.
mkdir -p "/etc/netns/$NETNS"
if [[ ! -s "/etc/netns/$NETNS/resolv.conf" ]]; then
  printf 'nameserver %s\nsearch svc.cluster.local cluster.local\noptions ndots:5\n' \
    "$RIG_DNS_IP" >"/etc/netns/$NETNS/resolv.conf"
fi
ip netns exec "$NETNS" ip link set lo up

if [[ -n "$(ip netns exec "$NETNS" ip route show default)" ]]; then
  echo "$0: netns $NETNS has a default route; refusing to run in it" >&2
  exit 1
fi

cleanup() {
  local python
  python="$(pick_python)"
  # A test run killed before its fixture teardown leaves processes (containerd shims, pods):
  # clean them up. A rig started by `hack/infra.sh up` is left alone.
  if [[ -n "$python" && -e "/run/netns/$NETNS" ]]; then
    (cd "$REPO" && ip netns exec "$NETNS" env RIG_NETNS="$NETNS" \
      "$python" -m tests.e2e.infra down --stale-only) || true
  fi
  if [[ "${RIG_DELETE_NETNS:-}" == 1 || ($created == true && "${RIG_KEEP_NETNS:-}" != 1) ]]; then
    ip netns delete "$NETNS" 2>/dev/null || true
    rm -rf "/etc/netns/$NETNS"
  fi
}
trap cleanup EXIT

cd "$REPO"
status=0
# GRPC_ENABLE_FORK_SUPPORT=false: the test process runs the Pulumi engine's gRPC and forks the
# rig's processes (see tests/e2e/conftest.py).
ip netns exec "$NETNS" env RIG_NETNS="$NETNS" GRPC_ENABLE_FORK_SUPPORT=false "$@" || status=$?
exit "$status"
