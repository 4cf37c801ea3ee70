"""The tenant control plane on a real infrastructure cluster, deployed as the tenant user.

The program is deployed by the real `pulumi up` as a user that holds only the `admin` role in
the tenant namespace, and then used through its own `kubeconfig` output, read with
`pulumi stack output kubeconfig --show-secrets`.
"""

from __future__ import annotations

import base64
import datetime
import json
import ssl
import time
import urllib.request
from typing import Any

import pytest
import yaml
from cryptography import x509

from components.common.names import ObjectNames
from components.config import parse_settings
from components.host.certs import (
    API_PROXY_CERT,
    CA_COMMON_NAMES,
    ETCD_PEER,
    ETCD_SERVER,
    certificate_plan,
)
from components.host.control_plane.apiserver import api_server_secret_name
from components.host.control_plane.controller_manager import controller_manager_secret_name
from components.host.control_plane.scheduler import scheduler_secret_name
from components.host.etcd import etcd_secret_name
from tests.e2e.infra import InfraCluster
from tests.e2e.tenant import (
    CLUSTER,
    FIGURES,
    NODE_PORT,
    Phase,
    Tenant,
    TenantPhases,
    all_pods_ready,
    component_pods,
    expected_pod_count,
    is_ready,
    pods,
    wait_for,
)
from tests.e2e.tokens import verified_claims

# The tenant as first deployed: its endpoint and `kubernetes.default` are the NodePort.
TENANT_PHASES = TenantPhases.of(starts=[Phase.NODE_PORT])


def client_context(tenant: Tenant) -> ssl.SSLContext:
    return tenant.admin_ssl_context()


def get(url: str, context: ssl.SSLContext) -> tuple[int, str]:
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return response.status, response.read().decode()


def test_every_pod_is_ready_and_runs_restricted(tenant: Tenant) -> None:
    namespace = tenant.infra.kubectl_json("get", "namespace", tenant.infra.namespace)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    names = sorted(p["metadata"]["name"] for p in pods(tenant.infra))
    assert [n for n in names if n.startswith("e2e-etcd-")] == [
        "e2e-etcd-0",
        "e2e-etcd-1",
        "e2e-etcd-2",
    ]
    for prefix in ("e2e-apiserver-", "e2e-controller-manager-", "e2e-scheduler-"):
        assert sum(n.startswith(prefix) for n in names) == 2, names


def test_readyz_through_the_node_port(tenant: Tenant) -> None:
    endpoint = tenant.outputs["endpoint"]
    assert endpoint == f"https://{tenant.infra.node_ip}:{NODE_PORT}"
    status, body = get(f"{endpoint}/readyz", client_context(tenant))
    assert (status, body) == (200, "ok")


def test_readyz_through_the_service_inside_the_infrastructure_cluster(tenant: Tenant) -> None:
    service = tenant.infra.kubectl_json(
        "get", "service", "-n", tenant.infra.namespace, f"{CLUSTER}-apiserver", tenant=True
    )
    cluster_ip = service["spec"]["clusterIP"]
    # The serving cert names the Service, not its IP: verify the name, dial the IP.
    context = client_context(tenant)
    context.check_hostname = False
    status, body = get(f"https://{cluster_ip}:6443/readyz", context)
    assert (status, body) == (200, "ok")


def test_kubeconfig_output_lists_creates_and_reads(tenant: Tenant) -> None:
    namespaces = json.loads(tenant.kubectl("get", "namespaces", "-o", "json").stdout)["items"]
    assert {"default", "kube-system", "kube-public"} <= {n["metadata"]["name"] for n in namespaces}
    tenant.kubectl(
        "create",
        "configmap",
        "e2e-proof",
        "-n",
        "default",
        "--from-literal=written=before-etcd-restart",
    )
    read = json.loads(
        tenant.kubectl("get", "configmap", "e2e-proof", "-n", "default", "-o", "json").stdout
    )
    assert read["data"] == {"written": "before-etcd-restart"}


def audit_events(infra: InfraCluster) -> list[dict[str, Any]]:
    """The audit events on the apiservers' stdout, as the operator reads them."""
    events = []
    for pod in component_pods(infra, "kube-apiserver"):
        logs = infra.kubectl(
            "logs",
            "-n",
            infra.namespace,
            pod["metadata"]["name"],
            "-c",
            "kube-apiserver",
            tenant=True,
        ).stdout
        for line in logs.splitlines():
            if '"audit.k8s.io/v1"' in line:
                events.append(json.loads(line))
    return events


def test_the_audit_log_is_readable_with_kubectl_logs(tenant: Tenant) -> None:
    """Issue 9: the audit log goes to the apiserver container's stdout, at Metadata level."""

    def creation_of_the_proof() -> list[dict[str, Any]]:
        return [
            event
            for event in audit_events(tenant.infra)
            if event.get("verb") == "create"
            and event.get("objectRef", {}).get("name") == "e2e-proof"
            and event.get("stage") == "ResponseComplete"
        ]

    (event, *_) = wait_for("the ConfigMap's creation in the audit log", creation_of_the_proof, 30)
    assert event["user"]["username"] == "kubernetes-admin"
    assert event["level"] == "Metadata"
    assert "requestObject" not in event and "responseObject" not in event


def test_controller_manager_and_scheduler_hold_their_leases(tenant: Tenant) -> None:
    def holders() -> dict[str, str] | None:
        found = {}
        for lease in ("kube-controller-manager", "kube-scheduler"):
            result = tenant.kubectl(
                "get", "lease", "-n", "kube-system", lease, "-o", "json", check=False
            )
            if result.returncode != 0:
                return None
            found[lease] = json.loads(result.stdout)["spec"].get("holderIdentity", "")
        return found if all(found.values()) else None

    found = wait_for("both leader leases", holders, timeout=120)
    assert found["kube-controller-manager"].startswith(f"{CLUSTER}-controller-manager-")
    assert found["kube-scheduler"].startswith(f"{CLUSTER}-scheduler-")


SA_PROOF_NAMESPACE = "e2e-sa-proof"


def _service_account_public_key(tenant: Tenant) -> bytes:
    """`sa.pub` of the apiservers' Secret: the key the program made for the tenant."""
    secret = tenant.infra.kubectl_json(
        "get", "secret", "-n", tenant.infra.namespace, f"{CLUSTER}-apiserver-pki", tenant=True
    )
    return base64.b64decode(secret["data"]["sa.pub"])


@pytest.fixture(scope="module")
def sa_proof_namespace(tenant: Tenant) -> str:
    """A new namespace and its `default` ServiceAccount, which the controller-manager's
    service-account controller makes."""
    tenant.kubectl("create", "namespace", SA_PROOF_NAMESPACE)
    wait_for(
        "the default service account",
        lambda: (
            tenant.kubectl("get", "sa", "default", "-n", SA_PROOF_NAMESPACE, check=False).returncode
            == 0
        ),
        timeout=60,
    )
    return SA_PROOF_NAMESPACE


def test_apiserver_issues_service_account_tokens_signed_with_the_programs_key(
    tenant: Tenant, sa_proof_namespace: str
) -> None:
    """A TokenRequest token (what a pod's projected token is): signed by the apiservers with
    `sa.key`, it verifies with the program's `sa.pub` and names the account and the issuer."""
    before = time.time()
    token = tenant.kubectl("create", "token", "default", "-n", sa_proof_namespace).stdout.strip()
    claims = verified_claims(token, _service_account_public_key(tenant))
    issuer = f"https://kubernetes.default.svc.{parse_settings(tenant.config).cluster_domain}"
    assert claims["iss"] == issuer
    assert claims["aud"] == [issuer]  # no --api-audiences: the issuer is the audience
    assert claims["sub"] == f"system:serviceaccount:{sa_proof_namespace}:default"
    assert claims["kubernetes.io"]["namespace"] == sa_proof_namespace
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == "default"
    # `kubectl create token` asks for an hour by default.
    assert before - 60 <= claims["iat"] <= time.time() + 60
    assert claims["exp"] - claims["iat"] == 3600


def test_controller_manager_signs_service_account_tokens(
    tenant: Tenant, sa_proof_namespace: str
) -> None:
    """A legacy token Secret, filled in by the controller-manager's token controller with its
    `--service-account-private-key-file`: it verifies with the same `sa.pub`."""
    secret_name = "e2e-legacy-token"
    tenant.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/service-account-token",
                "metadata": {
                    "name": secret_name,
                    "namespace": sa_proof_namespace,
                    "annotations": {"kubernetes.io/service-account.name": "default"},
                },
            }
        ),
    )

    def filled_in() -> str | None:
        secret = json.loads(
            tenant.kubectl(
                "get", "secret", secret_name, "-n", sa_proof_namespace, "-o", "json"
            ).stdout
        )
        token = secret.get("data", {}).get("token")
        return base64.b64decode(token).decode() if token else None

    token = wait_for("the token controller to fill in the Secret", filled_in, timeout=60)
    claims = verified_claims(token, _service_account_public_key(tenant))
    assert claims["iss"] == "kubernetes/serviceaccount"
    assert claims["sub"] == f"system:serviceaccount:{sa_proof_namespace}:default"
    assert claims["kubernetes.io/serviceaccount/namespace"] == sa_proof_namespace
    assert claims["kubernetes.io/serviceaccount/secret.name"] == secret_name


def test_etcd_data_survives_deleting_every_etcd_pod(tenant: Tenant) -> None:
    infra = tenant.infra
    before = {
        p["metadata"]["name"]: p["metadata"]["uid"]
        for p in pods(infra)
        if p["metadata"]["name"].startswith("e2e-etcd-")
    }
    infra.kubectl("delete", "pod", "-n", infra.namespace, *before, "--wait=true", tenant=True)

    def members_back() -> bool:
        current = {
            p["metadata"]["name"]: p
            for p in pods(infra)
            if p["metadata"]["name"].startswith("e2e-etcd-")
        }
        return set(current) == set(before) and all(
            is_ready(p) and p["metadata"]["uid"] != before[name] for name, p in current.items()
        )

    started = time.monotonic()
    wait_for("the etcd members to come back", members_back, timeout=300)
    # The apiservers may have restarted while etcd was gone (their liveness checks etcd): wait
    # until every control plane pod is Ready again, then until reads keep working.
    wait_for(
        "every tenant control plane pod to be Ready again",
        lambda: all_pods_ready(infra, expected_pod_count(tenant.config)),
        timeout=300,
    )
    read_streak = {"count": 0}

    def reads_keep_working() -> bool:
        result = tenant.kubectl(
            "get", "configmap", "e2e-proof", "-n", "default", "-o", "json", check=False
        )
        read_streak["count"] = read_streak["count"] + 1 if result.returncode == 0 else 0
        return read_streak["count"] >= 5

    wait_for(
        "five reads in a row through the tenant API", reads_keep_working, timeout=180, interval=1
    )
    FIGURES["etcd pods deleted to data readable (s)"] = round(time.monotonic() - started, 1)
    read = json.loads(
        tenant.kubectl("get", "configmap", "e2e-proof", "-n", "default", "-o", "json").stdout
    )
    assert read["data"] == {"written": "before-etcd-restart"}


def test_kubernetes_default_leads_to_the_node_port(tenant: Tenant) -> None:
    """In-cluster clients on tenant nodes reach the API where the nodes can: the NodePort."""
    slices = json.loads(
        tenant.kubectl(
            "get",
            "endpointslices",
            "-n",
            "default",
            "-l",
            "kubernetes.io/service-name=kubernetes",
            "-o",
            "json",
        ).stdout
    )["items"]
    assert len(slices) == 1, [s["metadata"]["name"] for s in slices]
    assert slices[0]["endpoints"][0]["addresses"] == [tenant.infra.node_ip]
    assert slices[0]["ports"][0]["port"] == NODE_PORT
    service = json.loads(
        tenant.kubectl("get", "service", "kubernetes", "-n", "default", "-o", "json").stdout
    )
    assert service["spec"]["ports"][0]["name"] == slices[0]["ports"][0]["name"] == "https"


def generations(infra: InfraCluster) -> dict[str, Any]:
    kinds = (
        "secrets,configmaps,services,deployments,statefulsets,poddisruptionbudgets,networkpolicies"
    )
    listed = infra.kubectl_json("get", kinds, "-n", infra.namespace, tenant=True)["items"]
    return {
        f"{item['kind']}/{item['metadata']['name']}": (
            item["metadata"].get("generation")
            if item["kind"] in ("Deployment", "StatefulSet", "PodDisruptionBudget")
            else item["metadata"]["resourceVersion"]
        )
        for item in listed
        if item["kind"] != "ConfigMap" or item["metadata"]["name"] != "kube-root-ca.crt"
    }


def test_preview_and_up_of_the_same_program_change_nothing(tenant: Tenant) -> None:
    infra = tenant.infra
    before = generations(infra)
    preview = tenant.stack.preview(expect_no_changes=True)
    FIGURES["pulumi preview, unchanged (s)"] = round(preview.seconds, 1)
    assert preview.changed == {}, preview.changes
    again = tenant.stack.up()
    assert again.changed == {}, again.changes
    assert generations(infra) == before


def test_certificate_expiry_output_is_plain_and_what_the_stored_certificates_say(
    tenant: Tenant,
) -> None:
    """Issue 12, item 5: `pulumi stack output certificateExpiry --json`, as the README shows it
    (no --show-secrets), names the leaves and the CAs that end first, at the notAfter of the
    certificates that the host namespace's Secrets hold."""
    stack = tenant.stack
    shown = json.loads(
        stack.cli("stack", "output", "certificateExpiry", "--json", "--stack", stack.name).stdout
    )
    every_output = json.loads(stack.cli("stack", "output", "--json", "--stack", stack.name).stdout)
    assert every_output["kubeconfig"] == "[secret]"  # what a secret output looks like here
    assert every_output["certificateExpiry"] == shown == tenant.outputs["certificateExpiry"]

    settings = parse_settings(tenant.config)
    names = ObjectNames(
        cluster=settings.cluster_name,
        namespace=settings.namespace,
        infra_cluster_domain=settings.infra_cluster_domain,
    )

    def files(secret_name: str) -> dict[str, str]:
        secret = tenant.infra.kubectl_json(
            "get", "secret", "-n", tenant.infra.namespace, secret_name, tenant=True
        )
        return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}

    def certificate(pem: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate(pem.encode())

    def kubeconfig_client(secret_name: str) -> x509.Certificate:
        user = yaml.safe_load(files(secret_name)["kubeconfig"])["users"][0]["user"]
        return certificate(base64.b64decode(user["client-certificate-data"]).decode())

    # Where each certificate lives, by the name certificateExpiry gives it (kubeadm's).
    stored = {
        file_name.removesuffix(".crt"): certificate(pem)
        for file_name, pem in files(api_server_secret_name(names)).items()
        if file_name.endswith(".crt")
    }
    etcd = files(etcd_secret_name(names))
    stored[ETCD_SERVER] = certificate(etcd["server.crt"])
    stored[ETCD_PEER] = certificate(etcd["peer.crt"])
    stored["admin"] = kubeconfig_client(names.admin_kubeconfig)
    stored["super-admin"] = kubeconfig_client(names.super_admin_kubeconfig)
    stored["controller-manager"] = kubeconfig_client(controller_manager_secret_name(names))
    stored["scheduler"] = kubeconfig_client(scheduler_secret_name(names))

    def is_ca(cert: x509.Certificate) -> bool:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)

    leaves = {name: cert for name, cert in stored.items() if not is_ca(cert)}
    cas = {name: cert for name, cert in stored.items() if is_ca(cert)}
    assert set(cas) == set(CA_COMMON_NAMES)
    # Every leaf of the plan is in the host namespace (the API proxy's only with ingress).
    assert set(leaves) == {s.name for s in certificate_plan(settings, names)} - {API_PROXY_CERT}

    def earliest(certs: dict[str, x509.Certificate]) -> tuple[datetime.datetime, list[str]]:
        end = min(cert.not_valid_after_utc for cert in certs.values())
        return end, sorted(name for name, cert in certs.items() if cert.not_valid_after_utc == end)

    def rfc3339(moment: datetime.datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    leaf_end, leaf_names = earliest(leaves)
    ca_end, ca_names = earliest(cas)
    window = datetime.timedelta(hours=settings.certificate_renewal_hours)
    assert shown == {
        "earliestLeaf": {
            "certificates": leaf_names,
            "notAfter": rfc3339(leaf_end),
            "renewalWindowStart": rfc3339(leaf_end - window),
        },
        "earliestCa": {"certificates": ca_names, "notAfter": rfc3339(ca_end)},
        "leafRenewalWindowHours": settings.certificate_renewal_hours,
    }
