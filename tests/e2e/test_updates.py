"""Update paths of the shared tenant through the real engine, each measured under load.

While each `pulumi up` runs, two clients send requests back to back (no retries): one through
the `endpoint` output (the NodePort), one through the apiservers' Service inside the
infrastructure cluster. Every update must finish with zero failed requests, replace no CA, key
or etcd StatefulSet, and leave a preview with nothing to do.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import socket
import ssl
import subprocess
import time
from typing import Any

import pytest
from cryptography import x509

from tests.e2e.engine import EngineError, Operation
from tests.e2e.load import RequestLoad
from tests.e2e.tenant import (
    CLUSTER,
    FIGURES,
    Phase,
    Tenant,
    TenantPhases,
    all_pods_ready,
    assert_no_failed_requests,
    component_pods,
    expected_pod_count,
    is_terminating,
    pods,
    under_load,
    wait_for,
)

# Each update is undone (or, the Secrets key, kept) within the phase: one client goes through
# the `endpoint` output, the NodePort.
TENANT_PHASES = TenantPhases.of(starts=[Phase.NODE_PORT])

# What no ordinary update may replace: the CAs and their keys, the service-account key, the
# encryption key, etcd and the provider of the tenant cluster (which would take every object
# inside the tenant with it).
DURABLE = {
    f"{CLUSTER}-pki-ca",
    f"{CLUSTER}-pki-front-proxy-ca",
    f"{CLUSTER}-pki-etcd-ca",
    f"{CLUSTER}-pki-service-account",
    f"{CLUSTER}-apiserver-encryption-key",
    f"{CLUSTER}-etcd-statefulset",
    f"{CLUSTER}-tenant",
}


def measured_update(
    tenant: Tenant, change: dict[str, str], figure: str, *, settles: bool = True
) -> Operation:
    """`pulumi up` of the changed config under load; with `settles`, a preview afterwards has
    nothing to do."""
    config = {**tenant.config, **change}
    with under_load(tenant, figure) as loads:
        operation = tenant.update(config)
        # pulumi-kubernetes 4.25 may report a replicas-only change of a Deployment done before
        # the controller has scaled its ReplicaSet (it compares that ReplicaSet's own spec and
        # status): wait, as a user would with `kubectl rollout status`, and under load.
        started = time.monotonic()
        wait_for(
            "every control plane pod Ready",
            lambda: all_pods_ready(tenant.infra, expected_pod_count(config)),
            timeout=180,
        )
        waited = time.monotonic() - started
    FIGURES["update paths"][figure]["pulumi up"] = {
        "seconds": round(operation.seconds, 1),
        "then until every pod Ready (s)": round(waited, 1),
        **operation.changes,
    }
    replaced = operation.named("replace") & DURABLE
    assert not replaced, f"{figure} replaced {sorted(replaced)}"
    assert_no_failed_requests(loads, figure, tenant.infra)
    if settles:
        preview = tenant.stack.preview()
        assert preview.changed == {}, f"after {figure}: {preview.steps}"
    return operation


def _count(tenant: Tenant, component: str) -> int:
    return sum(1 for pod in component_pods(tenant.infra, component) if not is_terminating(pod))


def test_replicas_up_and_down(tenant: Tenant) -> None:
    up = measured_update(
        tenant,
        {"apiServerReplicas": "3", "controllerManagerReplicas": "3", "schedulerReplicas": "1"},
        "replicas up (apiserver 3, controller-manager 3, scheduler 1)",
    )
    assert up.named("replace") == set()
    assert _count(tenant, "kube-apiserver") == 3
    assert _count(tenant, "kube-controller-manager") == 3
    assert _count(tenant, "kube-scheduler") == 1
    down = measured_update(
        tenant,
        {"apiServerReplicas": "2", "controllerManagerReplicas": "2", "schedulerReplicas": "2"},
        "replicas down (2, 2, 2)",
    )
    assert down.named("replace") == set()
    assert _count(tenant, "kube-apiserver") == 2


def _serving_certificate(tenant: Tenant) -> x509.Certificate:
    host, port = tenant.outputs["endpoint"].removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(tenant.ca_file))
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _pod_uids(tenant: Tenant) -> dict[str, Any]:
    return {pod["metadata"]["uid"]: pod["metadata"]["name"] for pod in pods(tenant.infra)}


def test_renewal_issues_every_leaf_and_rolls_every_pod(tenant: Tenant) -> None:
    """certificateRenewalHours = certificateValidityHours makes every leaf due: `pulumi up`
    issues each anew, updates the Secrets in place and rolls every pod that mounts them."""
    before_cert = _serving_certificate(tenant)
    before_pods = _pod_uids(tenant)
    validity = tenant.config.get("certificateValidityHours", "8760")
    # Every new leaf is due at once again: each plan would renew them all (the real provider
    # does the same), so this update does not settle.
    renewal = measured_update(
        tenant,
        {"certificateRenewalHours": validity},
        "every leaf certificate renewed",
        settles=False,
    )
    renewed = {name for name in renewal.named("replace") if name.startswith(f"{CLUSTER}-pki-")}
    certificates = [name for name, op in renewal.steps.items() if op == "replace"]
    assert renewed, certificates
    # Secrets and ConfigMaps are updated in place, never deleted and created again.
    assert not any(name.endswith(("-pki", "-config")) for name in renewal.named("replace"))
    after_cert = _serving_certificate(tenant)
    assert after_cert.serial_number != before_cert.serial_number
    assert after_cert.not_valid_before_utc > before_cert.not_valid_before_utc
    # A rolled pod may still be terminating when every new one is Ready (a controller-manager
    # or scheduler gives up its lease on the way out): every old pod must be on its way out,
    # and then gone.
    not_rolled = {
        pod["metadata"]["name"]
        for pod in pods(tenant.infra)
        if pod["metadata"]["uid"] in before_pods and not is_terminating(pod)
    }
    assert not not_rolled, f"pods not rolled: {sorted(not_rolled)}"
    wait_for(
        "every rolled pod gone",
        lambda: not set(before_pods) & set(_pod_uids(tenant)),
        timeout=120,
    )
    # Back to the default window: an update in place of the certificates (as the real tls
    # provider does), after which nothing is due and a preview has nothing to do.
    restored = {**tenant.config}
    restored.pop("certificateRenewalHours")
    figure = "renewal window back to the default"
    with under_load(tenant, figure) as loads:
        operation = tenant.update(restored)
    assert_no_failed_requests(loads, figure, tenant.infra)
    assert not operation.named("replace") & DURABLE
    assert tenant.stack.preview().changed == {}


def test_a_storage_change_is_refused_before_anything_changes(tenant: Tenant) -> None:
    """etcd's volume claims cannot change in place: `pulumi up` stops with the reason and the
    safe path, and the cluster is left exactly as it was."""
    before = _pod_uids(tenant)
    refused = {**tenant.config, "etcdStorageSize": "2Gi"}
    tenant.stack.write_config(refused)
    try:
        with pytest.raises(EngineError) as raised:
            tenant.stack.up()
    finally:
        tenant.stack.write_config(tenant.config)
    message = str(raised.value)
    assert "k8s-on-k8s:etcdStorageSize cannot change once the cluster exists" in message
    assert "'1Gi'" in message and "'2Gi'" in message and "patch pvc" in message
    assert _pod_uids(tenant) == before
    assert tenant.stack.preview().changed == {}


def _token_identity(tenant: Tenant, bootstrap_kubeconfig: str) -> subprocess.CompletedProcess[str]:
    """`kubectl auth whoami` with the bootstrap kubeconfig output, as a joining node would."""
    path = tenant.kubeconfig.parent / "bootstrap-kubeconfig"
    path.write_text(bootstrap_kubeconfig)
    path.chmod(0o600)
    return subprocess.run(
        [str(tenant.infra.kubectl_path), f"--kubeconfig={path}", "auth", "whoami", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_pulumi_up_after_the_token_expired_issues_a_fresh_one(tenant: Tenant) -> None:
    """Issue 9: a bootstrap token expires, and the next `pulumi up` replaces it: new random
    parts, a new expiry, new outputs. A 60-second lifetime stands in for kubeadm's 24 hours."""
    lifetime = 60
    short = {**tenant.config, "bootstrapTokenTtl": f"{lifetime}s"}
    tenant.update(short)  # a shortened lifetime is due at once
    first_expiry = str(tenant.outputs["bootstrapTokenExpiration"])
    first_command = str(tenant.outputs["joinCommand"])
    first_kubeconfig = str(tenant.outputs["bootstrapKubeconfig"])
    token_id = first_command.split("--token ")[1].split(".")[0]
    who = _token_identity(tenant, first_kubeconfig)
    assert who.returncode == 0, who.stderr
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == (
        f"system:bootstrap:{token_id}"
    )
    expires = datetime.datetime.fromisoformat(first_expiry.replace("Z", "+00:00"))
    remaining = (expires - datetime.datetime.now(datetime.UTC)).total_seconds()
    assert 0 < remaining <= lifetime, first_expiry

    # The apiserver refuses the token once its expiry has passed (the tokencleaner then
    # deletes its Secret).
    time.sleep(max(0.0, remaining) + 1)
    refused = wait_for(
        "the expired token to be refused",
        lambda: r if (r := _token_identity(tenant, first_kubeconfig)).returncode != 0 else None,
        timeout=60,
    )
    assert "Unauthorized" in refused.stderr or "401" in refused.stderr, refused.stderr

    renewed = tenant.update(short)
    second_expiry = str(tenant.outputs["bootstrapTokenExpiration"])
    second_command = str(tenant.outputs["joinCommand"])
    assert second_expiry > first_expiry
    assert second_command != first_command
    assert f"{CLUSTER}-node-join-token-id" in renewed.named("replace")
    new_id = second_command.split("--token ")[1].split(".")[0]
    who = _token_identity(tenant, str(tenant.outputs["bootstrapKubeconfig"]))
    assert who.returncode == 0, who.stderr
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == f"system:bootstrap:{new_id}"
    FIGURES["bootstrap token renewed after expiry"] = {"lifetime (s)": lifetime}

    # Back to kubeadm's 24 hours (a lengthened lifetime issues a token that lives that long).
    restored = {key: value for key, value in tenant.config.items() if key != "bootstrapTokenTtl"}
    tenant.update(restored)
    expires = datetime.datetime.fromisoformat(
        str(tenant.outputs["bootstrapTokenExpiration"]).replace("Z", "+00:00")
    )
    assert (expires - datetime.datetime.now(datetime.UTC)).total_seconds() > 23 * 3600


def test_the_admin_kubeconfig_is_revoked_and_restored_while_the_break_glass_works(
    tenant: Tenant,
) -> None:
    """Issue 9: the `kubeconfig` output is kubeadm's revocable admin. `adminAccess: false`
    takes its rights through `pulumi up`; the super-admin kubeconfig, kept only in the host
    namespace's Secret, still works; `adminAccess` back on restores the output's rights."""
    who = json.loads(tenant.kubectl("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    assert who["username"] == "kubernetes-admin"
    assert "kubeadm:cluster-admins" in who["groups"] and "system:masters" not in who["groups"]

    secret = tenant.infra.kubectl_json(
        "get",
        "secret",
        "-n",
        tenant.infra.namespace,
        f"{CLUSTER}-super-admin-kubeconfig",
        tenant=True,
    )
    break_glass = tenant.kubeconfig.parent / "super-admin-kubeconfig"
    break_glass.write_bytes(base64.b64decode(secret["data"]["kubeconfig"]))
    break_glass.chmod(0o600)
    assert "super-admin" not in json.dumps(
        {k: v for k, v in tenant.outputs.items() if isinstance(v, str)}
    ), "no output carries the super-admin"

    def as_super_admin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(tenant.infra.kubectl_path), f"--kubeconfig={break_glass}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    revoked = tenant.update({**tenant.config, "adminAccess": "false"})
    assert f"{CLUSTER}-admin-access-cluster-admins" in revoked.named("delete")
    denied = tenant.kubectl("get", "namespaces", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr, denied.stderr
    listed = as_super_admin("get", "namespace", "kube-system", "-o", "name")
    assert listed.stdout.strip() == "namespace/kube-system", listed.stderr
    gone = as_super_admin("get", "clusterrolebinding", "kubeadm:cluster-admins")
    assert gone.returncode != 0 and "NotFound" in gone.stderr, gone.stderr

    restored = {key: value for key, value in tenant.config.items() if key != "adminAccess"}
    tenant.update(restored)
    listed = tenant.kubectl("get", "namespace", "kube-system", "-o", "name")
    assert listed.stdout.strip() == "namespace/kube-system"


ROTATION_SECRET = "e2e-rotation"


def stored_prefix(tenant: Tenant, secret: str) -> str:
    """How etcd holds the Secret: the envelope prefix names the provider and key that wrote it."""
    listed = tenant.infra.kubectl(
        "exec",
        "-n",
        tenant.infra.namespace,
        f"{CLUSTER}-etcd-0",
        "-c",
        "etcd",
        "--",
        "etcdctl",
        "--endpoints=https://127.0.0.1:2379",
        "--cacert=/etc/etcd/pki/ca.crt",
        "--cert=/etc/etcd/pki/server.crt",
        "--key=/etc/etcd/pki/server.key",
        "-w",
        "json",
        "get",
        f"/registry/secrets/default/{secret}",
        tenant=True,
    )
    (kv,) = json.loads(listed.stdout)["kvs"]
    value = base64.b64decode(kv["value"])
    return value[: value.index(b":", len(b"k8s:enc:secretbox:v1:")) + 1].decode()


def test_the_secrets_key_rotates_in_three_steps_and_secrets_stay_readable(tenant: Tenant) -> None:
    """Issue 9: secretbox at rest, and a key rotation through config (a new key reads, then
    writes, every Secret is rewritten, the old key goes) while two clients read a Secret back
    to back (each read decrypts: a GET without resourceVersion comes from etcd)."""
    tenant.kubectl(
        "create",
        "secret",
        "generic",
        ROTATION_SECRET,
        "-n",
        "default",
        "--from-literal=value=written-before-the-rotation",
    )
    assert stored_prefix(tenant, ROTATION_SECRET) == "k8s:enc:secretbox:v1:key1:"
    path = f"/api/v1/namespaces/default/secrets/{ROTATION_SECRET}"
    service_context = tenant.admin_ssl_context()
    service_context.check_hostname = False
    loads = {
        "through the infrastructure Service": RequestLoad(
            tenant.api_service_url(path), service_context
        ),
        "through the endpoint": RequestLoad(
            tenant.outputs["endpoint"] + path, tenant.admin_ssl_context()
        ),
    }
    figure = "Secrets key rotated (3 pulumi up and a rewrite), reading a Secret"
    steps: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        for load in loads.values():
            stack.enter_context(load)
        for keys in ("key1,key2", "key2,key1"):
            steps[f"pulumi up: {keys} (s)"] = tenant.update(
                {**tenant.config, "secretsEncryptionKeys": keys}
            ).seconds
        # `pulumi up` returns once the new apiservers are ready; an old one may still serve
        # through its graceful termination and would rewrite with the old key. As an operator
        # would: rewrite once every apiserver runs the configuration where key2 writes.
        wait_for(
            "no apiserver left with the configuration where key1 writes",
            lambda: (
                not any(
                    is_terminating(pod) for pod in component_pods(tenant.infra, "kube-apiserver")
                )
            ),
            timeout=120,
        )
        started = time.monotonic()
        secrets = tenant.kubectl("get", "secrets", "-A", "-o", "json").stdout
        replaced = subprocess.run(
            [
                str(tenant.infra.kubectl_path),
                f"--kubeconfig={tenant.kubeconfig}",
                "replace",
                "-f",
                "-",
            ],
            input=secrets,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert replaced.returncode == 0, replaced.stderr
        steps["rewrite of every Secret (s)"] = time.monotonic() - started
        assert stored_prefix(tenant, ROTATION_SECRET) == "k8s:enc:secretbox:v1:key2:"
        steps["pulumi up: key2 (s)"] = tenant.update(
            {**tenant.config, "secretsEncryptionKeys": "key2"}
        ).seconds
    entry = FIGURES.setdefault("update paths", {}).setdefault(figure, {})
    entry.update({name: load.report.as_figure() for name, load in loads.items()})
    entry.update({step: round(seconds, 1) for step, seconds in steps.items()})
    assert_no_failed_requests(loads, figure, tenant.infra)
    assert all(load.report.sent > 50 for load in loads.values()), entry
    value = json.loads(
        tenant.kubectl("get", "secret", ROTATION_SECRET, "-n", "default", "-o", "json").stdout
    )["data"]["value"]
    assert base64.b64decode(value) == b"written-before-the-rotation"
    assert stored_prefix(tenant, ROTATION_SECRET) == "k8s:enc:secretbox:v1:key2:"
