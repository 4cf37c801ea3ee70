"""The README's first run: a tenant control plane on the local rig, by the real engine.

    make up     # the rig (hack/infra.sh up), then `pulumi up` of this project on it
    make down   # `pulumi destroy`, then the rig stops

Run inside the rig's network namespace (the Makefile does it through hack/e2e.sh). The stack is
deployed as the rig's tenant user, who holds only the `admin` role in the tenant namespace.
`python -m tests.e2e.local pulumi ARGS...` runs the real CLI on that stack (hack/pulumi.sh), for
commands that do not run the program: `pulumi-language-python` cannot be built here, so the
program runs only inline (`make up`, `make down`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.e2e.engine import ProjectStack
from tests.e2e.infra import RigSettings

WORK_DIR = Path("/var/lib/k8s-on-k8s-local")
STACK = "local"
CLUSTER = "local"
NODE_PORT = 31444  # beside the e2e tests' tenant (31443), should both run on one rig


def local_config(settings: RigSettings) -> dict[str, str]:
    """The dev profile (one of each) on the rig node's address, through a NodePort."""
    return {
        "clusterName": CLUSTER,
        "namespace": settings.tenant_namespace,
        "apiHost": settings.node_ip,
        "exposure": "nodePort",
        "nodePort": str(NODE_PORT),
        "etcdReplicas": "1",
        "apiServerReplicas": "1",
        "controllerManagerReplicas": "1",
        "schedulerReplicas": "1",
        "etcdStorageSize": "1Gi",
        "etcdStorageClass": settings.storage_class,
    }


def local_stack(settings: RigSettings) -> ProjectStack:
    return ProjectStack(STACK, WORK_DIR, extra_env={"KUBECONFIG": str(settings.tenant_kubeconfig)})


def up(settings: RigSettings) -> None:
    stack = local_stack(settings)
    stack.write_config(local_config(settings))
    operation = stack.up()
    print(
        f"""
Tenant control plane {CLUSTER!r} is up: {operation.outputs["endpoint"]}
The rig runs in its own network namespace, so reach it from there:

  hack/pulumi.sh stack output kubeconfig --show-secrets > kubeconfig
  hack/infra.sh exec kubectl --kubeconfig kubeconfig get namespaces

hack/pulumi.sh is the real Pulumi CLI on this stack ({stack.project_dir}), for what does not
run the program (stack output, stack history, config); `make up` again runs `pulumi up`,
`make down` runs `pulumi destroy` and stops the rig."""
    )


def down(settings: RigSettings) -> None:
    if not (WORK_DIR / "state").exists():
        print("no local stack to destroy")
        return
    stack = local_stack(settings)
    stack.destroy()
    shutil.rmtree(WORK_DIR)


def pulumi(settings: RigSettings, args: list[str]) -> int:
    stack = local_stack(settings)
    stack.prepare()
    result = subprocess.run(
        [str(stack.binaries.cli), *args],
        cwd=stack.project_dir,
        env=stack.process_env(),
        check=False,
    )
    return result.returncode


def main(argv: list[str]) -> int:
    settings = RigSettings.from_env()
    if argv[:1] == ["up"]:
        up(settings)
    elif argv[:1] == ["down"]:
        down(settings)
    elif argv[:1] == ["pulumi"]:
        return pulumi(settings, argv[1:])
    else:
        print("usage: python -m tests.e2e.local up|down|pulumi ARGS...", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
