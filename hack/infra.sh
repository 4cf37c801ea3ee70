#!/usr/bin/env bash
# Starts or stops the e2e infrastructure cluster outside of pytest, inside the rig netns:
#
#   hack/infra.sh up       start it and leave it running (prints the admin KUBECONFIG)
#   hack/infra.sh status   what runs
#   hack/infra.sh exec CMD run CMD in the rig netns, e.g. `hack/infra.sh exec kubectl get pods -A`
#   hack/infra.sh down     stop it, clean up, delete the netns
#
# While a rig started by `up` runs, the pytest fixture reuses it (and leaves it running).
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${RIG_PYTHON:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/python}"
STATE_DIR="${RIG_STATE_DIR:-/var/lib/k8s-on-k8s-rig}"
BIN_DIR="${RIG_BIN_DIR:-/var/cache/k8s-on-k8s/v1.37.2/bin}"

command="${1:-}"
shift || true
case "$command" in
  up)
    RIG_KEEP_NETNS=1 exec "$HACK/e2e.sh" "$PYTHON" -m tests.e2e.infra "$@" up
    ;;
  down)
    RIG_DELETE_NETNS=1 exec "$HACK/e2e.sh" "$PYTHON" -m tests.e2e.infra "$@" down
    ;;
  status)
    exec "$HACK/e2e.sh" "$PYTHON" -m tests.e2e.infra "$@" status
    ;;
  exec)
    export KUBECONFIG="$STATE_DIR/admin.kubeconfig" PATH="$BIN_DIR:$PATH"
    exec "$HACK/e2e.sh" "$@"
    ;;
  *)
    echo "usage: $0 up|down|status|exec CMD..." >&2
    exit 2
    ;;
esac
