#!/usr/bin/env bash
# The real Pulumi CLI on the stack of `make up`, inside the rig's network namespace:
#
#   hack/pulumi.sh stack output kubeconfig --show-secrets > kubeconfig
#   hack/pulumi.sh stack history
# Only for commands that do not run the program (no pulumi-language-python here): `make up`
# and `make down` run it.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$REPO/hack/e2e.sh" "${RIG_PYTHON:-$REPO/.venv/bin/python}" -m tests.e2e.local pulumi "$@"
