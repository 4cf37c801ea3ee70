"""The tenant control plane of the e2e tests: its stack, deployment and helpers.

`deploy_tenant` runs the real `pulumi up` of this project (tests/e2e/engine.py) as the tenant
user, who holds only the `admin` role in the tenant namespace (the engine's ambient
KUBECONFIG), and reads the admin kubeconfig with `pulumi stack output kubeconfig
--show-secrets`. Every later change of the tenant goes through `Tenant.update`, a new stack
config and another `pulumi up`, and its end through `Tenant.destroy`.

conftest.py shares one such tenant across test modules. What state it is in is explicit: its
`phase` (derived from its stack config, never tracked beside it). Every module that uses it
declares `TENANT_PHASES`, the phases it can start from and the ones it leaves the tenant in;
conftest checks at collection that MODULE_ORDER takes the tenant through phases each module
accepts (`check_phase_plan`), before each module that the tenant is in a phase it accepts, and
after it that it left the tenant where it said.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import json
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from components.config import DEFAULTS
from tests.e2e.engine import Operation, ProjectStack
from tests.e2e.infra import InfraCluster
from tests.e2e.infra.processes import log
from tests.e2e.infra.worker import API_PROXY_IMAGE, WorkerSettings
from tests.e2e.load import FirstAnswer, RequestLoad
from tests.e2e.timeline import UpdateTimeline

NODE_PORT = 31443
CLUSTER = "e2e"
FIGURES: dict[str, Any] = {}
# What the infrastructure cluster did during each update under load, by figure (printed when a
# request of that update failed).
TIMELINES: dict[str, UpdateTimeline] = {}
# Every e2e worker takes this address, one after the other.
WORKER_EGRESS_CIDR = f"{WorkerSettings.node_ip}/32"


def stack_config(infra: InfraCluster) -> dict[str, str]:
    return {
        "clusterName": CLUSTER,
        "namespace": infra.namespace,
        # Nodes and clients reach the API on the rig node's address, so that is the API host.
        "apiHost": infra.node_ip,
        "exposure": "nodePort",
        "nodePort": str(NODE_PORT),
        "etcdReplicas": "3",
        "etcdStorageSize": "1Gi",
        "etcdStorageClass": infra.settings.storage_class,
        # The apiservers reach the worker's kubelet (logs, exec) and nothing else outside.
        "apiServerEgressCidrs": WORKER_EGRESS_CIDR,
    }


def ingress_config(infra: InfraCluster) -> dict[str, str]:
    """What test_worker_join_ingress.py changes in the stack config: exposure ingress."""
    return {
        **stack_config(infra),
        "exposure": "ingress",
        "apiHost": infra.settings.ingress_host(CLUSTER),
        "apiProxyImage": API_PROXY_IMAGE,
    }


STACK = "e2e"


class Phase(enum.Enum):
    """The states the shared tenant goes through in one e2e session."""

    NODE_PORT = "exposure nodePort, konnectivity off (as first deployed)"
    NODE_PORT_KONNECTIVITY = "exposure nodePort, konnectivity on"
    INGRESS = "exposure ingress"
    DESTROYED = "destroyed"

    @classmethod
    def of(cls, config: dict[str, str], *, destroyed: bool = False) -> Phase:
        if destroyed:
            return cls.DESTROYED
        if config.get("exposure") == "ingress":
            return cls.INGRESS
        if config.get("konnectivity") == "true":
            return cls.NODE_PORT_KONNECTIVITY
        return cls.NODE_PORT


# Where the session fixture `tenant` starts: `deploy_tenant`'s stack_config.
FIRST_PHASE = Phase.NODE_PORT


@dataclass(frozen=True)
class TenantPhases:
    """What a module that uses the shared tenant declares as `TENANT_PHASES`: the phases it
    can start from, and the ones it may leave the tenant in (None: the phase it found)."""

    starts: frozenset[Phase]
    leaves: frozenset[Phase] | None = None

    @classmethod
    def of(cls, starts: Iterable[Phase], leaves: Iterable[Phase] | None = None) -> TenantPhases:
        return cls(frozenset(starts), None if leaves is None else frozenset(leaves))

    def left_from(self, start: Phase) -> frozenset[Phase]:
        return frozenset({start}) if self.leaves is None else self.leaves


def _names(phases: Iterable[Phase]) -> str:
    return ", ".join(sorted(phase.name for phase in phases))


def check_phase_plan(modules: Sequence[tuple[str, TenantPhases]]) -> None:
    """Raises ValueError unless running `modules` in this order, from a fresh tenant, starts
    each in a phase it accepts (whichever phase each allowed earlier ones to leave)."""
    possible = frozenset({FIRST_PHASE})
    for name, needs in modules:
        if not possible <= needs.starts:
            raise ValueError(
                f"{name} starts from {_names(needs.starts)} but the modules before it may leave "
                f"the shared tenant at {_names(possible - needs.starts)}"
            )
        possible = frozenset().union(*(needs.left_from(phase) for phase in possible))


@dataclass
class Tenant:
    infra: InfraCluster
    stack: ProjectStack
    config: dict[str, str]
    outputs: dict[str, Any] = field(repr=False)  # holds secrets: never in a test report
    kubeconfig: Path  # `pulumi stack output kubeconfig --show-secrets`
    ca_file: Path
    destroyed: bool = False  # by `destroy`, until the next `update`

    @property
    def phase(self) -> Phase:
        return Phase.of(self.config, destroyed=self.destroyed)

    def admin_ssl_context(self) -> ssl.SSLContext:
        """TLS as the admin kubeconfig's user, trusting the cluster CA."""
        user = yaml.safe_load(self.kubeconfig.read_text())["users"][0]["user"]
        workdir = self.kubeconfig.parent
        (workdir / "admin.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
        (workdir / "admin.key").write_bytes(base64.b64decode(user["client-key-data"]))
        (workdir / "admin.key").chmod(0o600)
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(workdir / "admin.crt"), str(workdir / "admin.key"))
        return context

    def api_service_url(self, path: str) -> str:
        """The apiservers' Service inside the infrastructure cluster: the same address whatever
        the exposure (dial it with check_hostname off: the certificate names the Service)."""
        service = self.infra.kubectl_json(
            "get", "service", "-n", self.infra.namespace, f"{CLUSTER}-apiserver", tenant=True
        )
        return f"https://{service['spec']['clusterIP']}:6443{path}"

    def read_outputs(self, outputs: dict[str, Any]) -> None:
        """The outputs of the last `up`; the kubeconfig as a user reads it, with the CLI."""
        self.outputs = dict(outputs)
        self.kubeconfig.write_text(self.stack.output("kubeconfig"))
        self.kubeconfig.chmod(0o600)
        self.ca_file.write_text(str(outputs["clusterCaCertificate"]))

    def update(self, config: dict[str, str], figure: str | None = None) -> Operation:
        """A new stack config and `pulumi up`, as a user changes the tenant."""
        self.stack.write_config(config)
        operation = self.stack.up()
        self.config = dict(config)
        self.destroyed = False
        self.read_outputs(operation.outputs)
        if figure:
            FIGURES[figure] = {"seconds": round(operation.seconds, 1), **operation.changes}
        return operation

    def destroy(self, figure: str) -> Operation:
        """`pulumi destroy` of the stack; the config stays for a later `update`."""
        operation = self.stack.destroy()
        self.destroyed = True
        FIGURES[figure] = {"seconds": round(operation.seconds, 1), **operation.changes}
        return operation

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """kubectl as the tenant's admin; a failure with check=True says what kubectl said."""
        result = subprocess.run(
            [str(self.infra.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result


def pods(infra: InfraCluster) -> list[dict[str, Any]]:
    return infra.kubectl_json("get", "pods", "-n", infra.namespace, tenant=True)["items"]


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_for(description: str, check: Any, timeout: float, interval: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {description}; last: {last}")


def expected_pod_count(config: dict[str, str]) -> int:
    """etcd members, apiservers, controller-managers and schedulers the config asks for."""
    keys = ("etcdReplicas", "apiServerReplicas", "controllerManagerReplicas", "schedulerReplicas")
    return sum(int(config.get(key, DEFAULTS[key])) for key in keys)


def component_pods(infra: InfraCluster, component: str) -> list[dict[str, Any]]:
    """The tenant's pods of one component (its app.kubernetes.io/name), terminating ones too."""
    return infra.kubectl_json(
        "get",
        "pods",
        "-n",
        infra.namespace,
        "-l",
        f"app.kubernetes.io/name={component}",
        tenant=True,
    )["items"]


def is_terminating(pod: dict[str, Any]) -> bool:
    return pod["metadata"].get("deletionTimestamp") is not None


def delete_etcd_claims(infra: InfraCluster) -> None:
    """The README's way to remove a destroyed tenant's data too: its etcd volumes' claims."""
    infra.kubectl(
        "delete",
        "pvc",
        "-n",
        infra.namespace,
        "-l",
        f"app.kubernetes.io/instance={CLUSTER},app.kubernetes.io/name=etcd",
        tenant=True,
    )


def all_pods_ready(infra: InfraCluster, count: int) -> bool:
    """`count` pods, all Ready; pods on their way out (scaled down, rolled) are not counted."""
    current = [p for p in pods(infra) if p["metadata"].get("deletionTimestamp") is None]
    return len(current) == count and all(is_ready(p) for p in current)


def describe_pods(infra: InfraCluster) -> str:
    lines = []
    for pod in pods(infra):
        statuses = pod.get("status", {}).get("containerStatuses", [])
        states = [
            json.dumps(s.get("state")) + f" restarts={s.get('restartCount')}" for s in statuses
        ]
        lines.append(f"{pod['metadata']['name']}: ready={is_ready(pod)} {' '.join(states)}")
    return "\n".join(lines)


def deploy_tenant(
    infra: InfraCluster, config: dict[str, str] | None = None, *, label: str = ""
) -> Tenant:
    """A new stack of the project and its first `pulumi up`: the shared tenant's stack_config
    unless `config` is given (its figures then carry `label`)."""
    work_dir = Path(tempfile.mkdtemp(prefix="tenant-"))
    stack = ProjectStack(
        STACK,
        work_dir / "engine",
        extra_env={"KUBECONFIG": str(infra.tenant_kubeconfig)},
        log=log,
    )
    tenant = Tenant(
        infra=infra,
        stack=stack,
        config={},
        outputs={},
        kubeconfig=work_dir / "kubeconfig",
        ca_file=work_dir / "ca.crt",
    )
    config = config or stack_config(infra)
    suffix = f" ({label})" if label else ""
    readyz = f"https://{infra.node_ip}:{config.get('nodePort', NODE_PORT)}/readyz"
    try:
        with FirstAnswer(readyz) as first_answer:
            tenant.update(config, figure=f"pulumi up: create{suffix}")
    except AssertionError:
        print(describe_pods(infra))
        raise
    FIGURES[f"pulumi up start to the tenant API answering /readyz{suffix} (s)"] = (
        round(first_answer.seconds, 1) if first_answer.seconds is not None else None
    )
    # pulumi-kubernetes waited for every workload to be available; nothing is left to wait for.
    assert all_pods_ready(infra, expected_pod_count(config)), describe_pods(infra)
    return tenant


# A read every apiserver answers from its watch cache: what a client polling the API sends.
LOAD_REQUEST_PATH = "/api/v1/namespaces/kube-system"


@contextlib.contextmanager
def under_load(
    tenant: Tenant, figure: str, *, through_endpoint: bool = True
) -> Iterator[dict[str, RequestLoad]]:
    """Clients sending requests back to back while the block runs, one through the apiservers'
    Service in the infrastructure cluster and (unless the change moves it) one through the
    `endpoint` output; their reports go to FIGURES["update paths"][figure]."""
    service_context = tenant.admin_ssl_context()
    service_context.check_hostname = False
    loads = {
        "through the infrastructure Service": RequestLoad(
            tenant.api_service_url(LOAD_REQUEST_PATH), service_context
        )
    }
    if through_endpoint:
        loads["through the endpoint"] = RequestLoad(
            tenant.outputs["endpoint"] + LOAD_REQUEST_PATH, tenant.admin_ssl_context()
        )
    ports = {urlsplit(load.url).port or 443 for load in loads.values()}
    timeline = UpdateTimeline(
        tenant.infra.kubectl_path, tenant.infra.admin_kubeconfig, tenant.infra.namespace, ports
    )
    TIMELINES[figure] = timeline
    with contextlib.ExitStack() as stack:
        stack.enter_context(timeline)
        for load in loads.values():
            stack.enter_context(load)
        yield loads
    entry = FIGURES.setdefault("update paths", {}).setdefault(figure, {})
    entry.update({name: load.report.as_figure() for name, load in loads.items()})


def assert_no_failed_requests(
    loads: dict[str, RequestLoad], figure: str, infra: InfraCluster | None = None
) -> None:
    failed = {name: load.report.as_figure() for name, load in loads.items() if load.report.failed}
    moments = [at for load in loads.values() for at in load.report.failure_moments]
    timeline = TIMELINES.get(figure)
    # In the assertion itself, so that a CI log's tail keeps where the failed connections went.
    tracked = (
        timeline.conntrack_near(moments, before=0.2, after=0.05) if failed and timeline else []
    )
    if failed and infra is not None:
        # What the kubelet saw meanwhile: readiness changes explain most refused connections.
        kubelet_log = infra.settings.logs_dir / "kubelet.log"
        probes = [
            line for line in kubelet_log.read_text().splitlines() if "SyncLoop (probe)" in line
        ]
        print("\n".join(probes[-40:]))
        print(describe_pods(infra))
        if timeline is not None:
            print(timeline.report(moments))
    assert not failed, f"{figure}: {failed}; conntrack near the failures: {tracked}"
