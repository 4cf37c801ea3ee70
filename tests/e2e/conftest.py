"""Session fixture `infra_cluster`: the offline one-node infrastructure cluster (tests/e2e/infra).

Run the e2e tests through hack/e2e.sh, which puts them in the rig's network namespace:

    hack/e2e.sh .venv/bin/pytest tests/e2e -x -s

Outside CI a missing prerequisite skips the e2e tests; with CI=true it fails them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# This process runs the Pulumi engine's gRPC (the Automation API) and also starts the rig's
# processes with a pre-exec hook. With gRPC's fork support on, its event engine restarts its
# poller threads in the forked child, which the child's closing of file descriptors then kills
# (seen: "epoll_wait error: Bad file descriptor", SIGABRT before coredns could exec). Set before
# gRPC is first imported; hack/e2e.sh sets it too.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"

# tests/e2e has no __init__.py, so pytest puts only this directory on sys.path; the rig is
# imported as tests.e2e.infra from the repository root.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.infra import InfraCluster, RigSettings, missing_prerequisites  # noqa: E402
from tests.e2e.infra.processes import log  # noqa: E402
from tests.e2e.tenant import (  # noqa: E402
    FIGURES,
    Tenant,
    TenantPhases,
    check_phase_plan,
    deploy_tenant,
)

# The run order. The shared tenant goes through the modules that use it in this order: each
# declares the phases it starts from and leaves (TENANT_PHASES, tests/e2e/tenant.py), and
# collection fails unless this order starts each in a phase it accepts (nodePort, then
# konnectivity on, then ingress; test_destroy destroys it, and test_releases runs tenants of its
# own in the emptied namespace after it). The pure modules come first; they
# also run in `make unit` (pyproject.toml's testpaths). images/test_build.py runs the real crane
# (RIG_BIN_DIR's, built by `make binaries`): e2e only, where a missing crane fails it.
MODULE_ORDER = (
    "images/test_layer.py",
    "images/test_build.py",
    "infra/test_rig_units.py",
    "test_e2e_units.py",
    "test_doubles_engine.py",
    "test_infra_smoke.py",
    "test_tenant_control_plane.py",
    "test_network_policies.py",
    "test_updates.py",
    "test_worker_join.py",
    "test_worker_join_ingress.py",
    "test_worker_join_kubeadm.py",
    "test_destroy.py",
    "test_releases.py",
)


HERE = Path(__file__).parent


def _relative(item: pytest.Item) -> str | None:
    """The item's module under tests/e2e, None for a test elsewhere (`make unit` collects
    tests/unit beside this directory's pure modules)."""
    return item.path.relative_to(HERE).as_posix() if item.path.is_relative_to(HERE) else None


def tenant_phases(module: Any) -> TenantPhases:
    declared = getattr(module, "TENANT_PHASES", None)
    if not isinstance(declared, TenantPhases):
        raise pytest.UsageError(
            f"{module.__file__} uses the shared tenant but declares no TENANT_PHASES "
            "(tests/e2e/tenant.py: the phases it starts from and leaves)"
        )
    return declared


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def position(item: pytest.Item) -> int:
        relative = _relative(item)
        if relative is None:
            return -1
        if relative not in MODULE_ORDER:
            raise pytest.UsageError(f"{relative} is not in MODULE_ORDER (tests/e2e/conftest.py)")
        return MODULE_ORDER.index(relative)

    items.sort(key=position)  # stable: tests keep their order inside a module
    plan: dict[str, TenantPhases] = {}
    for item in items:
        relative = _relative(item)
        if relative is None or relative in plan:
            continue
        if "tenant" in getattr(item, "fixturenames", ()):
            plan[relative] = tenant_phases(getattr(item, "module", None))
    try:
        check_phase_plan(list(plan.items()))
    except ValueError as error:
        raise pytest.UsageError(f"MODULE_ORDER (tests/e2e/conftest.py): {error}") from None


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def infra_cluster() -> Iterator[InfraCluster]:
    """The running infra cluster: node Ready, tenant namespace, storage and tenant user made.

    Reuses a rig started by `hack/infra.sh up` (and leaves it running); otherwise starts one and,
    at the end of the session, stops it and fails if any process, mount or interface is left.
    """
    settings = RigSettings.from_env()
    problems = missing_prerequisites(settings)
    if problems:
        message = "the e2e infra rig cannot run here:\n  - " + "\n  - ".join(problems)
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

    cluster = InfraCluster(settings)
    if cluster.attach():
        log("reusing the rig started by `hack/infra.sh up`; it stays up after the tests")
        yield cluster
        return
    cluster.start(owner="fixture")
    try:
        yield cluster
    finally:
        cluster.stop(verify=True)


@pytest.fixture(scope="session")
def shared_tenant(infra_cluster: InfraCluster) -> Iterator[Tenant]:
    """One tenant control plane, deployed by the program onto the rig, for every test module.
    Tests take it as `tenant`, which checks the phases their module declares."""
    deployed = deploy_tenant(infra_cluster)
    yield deployed
    print("\nfigures: " + json.dumps(FIGURES, indent=2))


@pytest.fixture(scope="module")
def tenant(request: pytest.FixtureRequest, shared_tenant: Tenant) -> Iterator[Tenant]:
    """The shared tenant, in a phase the module's TENANT_PHASES accepts; after the module's
    last test, in a phase it said it leaves the tenant in."""
    module = request.module
    needs = tenant_phases(module)
    name = Path(module.__file__).name
    start = shared_tenant.phase
    if start not in needs.starts:
        pytest.fail(
            f"{name} needs the shared tenant at {sorted(p.name for p in needs.starts)}; it is "
            f"at {start.name} ({start.value}): a module before it did not finish its changes",
            pytrace=False,
        )
    yield shared_tenant
    end = shared_tenant.phase
    if end not in needs.left_from(start):
        pytest.fail(
            f"{name} declares it leaves the shared tenant at "
            f"{sorted(p.name for p in needs.left_from(start))}; it left it at {end.name}",
            pytrace=False,
        )
