"""python -m tests.e2e.infra up|down|status  (inside the rig netns: use hack/infra.sh)."""

from __future__ import annotations

import argparse
import json
import sys

from .cluster import InfraCluster, RigStartError, RigTeardownError
from .host import RigEnvironmentError
from .processes import RigState, log
from .settings import RigSettings
from .worker import clean_up_stale_worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.infra", description=__doc__)
    parser.add_argument("--namespace", help="tenant namespace (default: tenant-e2e)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start the rig and leave it running")
    down = commands.add_parser("down", help="stop the rig and clean up")
    down.add_argument(
        "--stale-only",
        action="store_true",
        help="only clean up after a test run that died; leave a rig started by `up` alone",
    )
    commands.add_parser("status", help="print what runs, as JSON")
    args = parser.parse_args(argv)

    settings = RigSettings.from_env(tenant_namespace=args.namespace)
    cluster = InfraCluster(settings)
    try:
        if args.command == "up":
            cluster.start(owner="cli")
            print(f"export KUBECONFIG={settings.admin_kubeconfig}")
            print(f"# tenant user: --kubeconfig={settings.tenant_kubeconfig}")
            print(f"# kubectl: {settings.kubectl}")
            return 0
        if args.command == "down":
            state = RigState.load(settings.state_file)
            if args.stale_only:
                if state is None or state.owner != "fixture" or state.owner_is_alive():
                    return 0
                log(f"the test run (pid {state.owner_pid}) died without teardown: cleaning up")
            # A worker node of test_worker_join may be left too (its shims, pods and netns).
            leftovers = clean_up_stale_worker(settings) + cluster.stop(verify=False)
            for leftover in leftovers:
                print(f"left behind: {leftover}", file=sys.stderr)
            return 1 if leftovers else 0
        print(json.dumps(cluster.status(), indent=2))
        return 0
    except (RigEnvironmentError, RigStartError, RigTeardownError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
