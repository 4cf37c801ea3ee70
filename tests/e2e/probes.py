"""Connection probes from pods of the infrastructure cluster, to check its NetworkPolicies.

A probe is one kubectl request from inside a pod (the e2e client image) with a short timeout,
always to a port where something listens. What it prints says whether the connection got
there: the rig's implementation (kube-router) REJECTs what no policy allows, which the caller
sees as a refused connection (a drop would be a dial timeout; both count as blocked), while a
port that was reached answers with anything else (an HTTP status, a TLS alert).
"""

from __future__ import annotations

import enum
import subprocess
from typing import Any

from tests.e2e.images.build import E2E_CLIENT
from tests.e2e.infra import InfraCluster

PROBE_NAMESPACE = "netpol-probe"
PROBER = "prober"
# A pod of another namespace that answers every HTTP request with 403 on VICTIM_PORT.
VICTIM = "victim"
VICTIM_PORT = 8443
TIMEOUT_SECONDS = 3
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}


class Reach(enum.Enum):
    BLOCKED = "blocked"  # rejected (refused) or dropped (no answer) on the way to a listener
    ANSWERED = "answered"  # the listener spoke (HTTP, TLS)


# kubectl words a refused dial "The connection to the server HOST:PORT was refused".
BLOCKED_SIGNS = (
    "connection refused",
    "was refused",
    "i/o timeout",
    "deadline exceeded",
    "Client.Timeout",
)


def classify(output: str) -> Reach:
    """What a failed or successful request's output says about the connection."""
    return Reach.BLOCKED if any(sign in output for sign in BLOCKED_SIGNS) else Reach.ANSWERED


def idle_pod(name: str, namespace: str, pod_labels: dict[str, str] | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": pod_labels or {"app": name}},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "client",
                    "image": E2E_CLIENT.reference,
                    "imagePullPolicy": "Never",
                    "command": ["/pause"],
                    "env": [{"name": "HOME", "value": "/tmp"}],
                    "securityContext": RESTRICTED,
                }
            ],
        },
    }


def probe_namespace_objects() -> list[dict[str, Any]]:
    """A namespace of another team in the infrastructure cluster, with a prober and a victim."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": PROBE_NAMESPACE,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            },
        },
        idle_pod(PROBER, PROBE_NAMESPACE),
        listening_pod(VICTIM, PROBE_NAMESPACE),
    ]


def listening_pod(name: str, namespace: str) -> dict:
    """A pod that answers every HTTP request on VICTIM_PORT with 403 (a `kubectl proxy` that
    rejects every path, so it never dials anywhere), ready once it listens."""
    pod = idle_pod(name, namespace)
    container = pod["spec"]["containers"][0]
    container["command"] = [
        "/usr/local/bin/kubectl",
        "proxy",
        "--address=0.0.0.0",
        f"--port={VICTIM_PORT}",
        "--accept-hosts=.*",
        "--reject-paths=.*",
        "--server=http://127.0.0.1:1",
    ]
    container["readinessProbe"] = {"tcpSocket": {"port": VICTIM_PORT}, "periodSeconds": 1}
    return pod


def wait_ready(infra: InfraCluster, namespace: str, *names: str, tenant: bool = False) -> None:
    for name in names:
        infra.kubectl(
            "-n",
            namespace,
            "wait",
            "--for=condition=Ready",
            f"pod/{name}",
            "--timeout=120s",
            tenant=tenant,
        )


def pod_ip(infra: InfraCluster, namespace: str, name: str, *, tenant: bool = False) -> str:
    pod = infra.kubectl_json("-n", namespace, "get", "pod", name, tenant=tenant)
    return str(pod["status"]["podIP"])


def ensure_probe_namespace(infra: InfraCluster) -> None:
    namespace, *pods = probe_namespace_objects()
    infra.apply(namespace)
    infra.wait_for_default_service_account(PROBE_NAMESPACE)
    for pod in pods:
        infra.apply(pod)
    wait_ready(infra, PROBE_NAMESPACE, PROBER, VICTIM)


def probe(
    infra: InfraCluster,
    target: str,
    *,
    pod: str = PROBER,
    namespace: str = PROBE_NAMESPACE,
    tenant: bool = False,
) -> Reach:
    """One request from `pod` to `target` (`https://ip:port` or `http://ip:port`)."""
    request = [
        "/usr/local/bin/kubectl",
        f"--server={target}",
        # Some credential: without one, kubectl asks for a user name on stdin (and fails on
        # EOF) before it dials an https server at all.
        "--token=probe",
        "--insecure-skip-tls-verify",
        f"--request-timeout={TIMEOUT_SECONDS}s",
        "get",
        "--raw",
        "/healthz",
    ]
    result = infra.kubectl(
        "-n", namespace, "exec", pod, "--", *request, tenant=tenant, check=False, timeout=60
    )
    if result.returncode == 0:
        return Reach.ANSWERED
    # kubectl exec passes the request's own failure on and adds this line; without it, the
    # exec itself failed and says nothing about the connection.
    if "command terminated with exit code" not in result.stderr:
        raise subprocess.CalledProcessError(
            result.returncode, request, output=result.stdout, stderr=result.stderr
        )
    return classify(result.stdout + result.stderr)
