"""ApiServer: kube-apiserver as a Deployment behind an in-namespace Service.

Flags follow kubeadm's controlplane phase (cmd/kubeadm/app/phases/controlplane) for the
supported releases, plus what a hosted control plane needs: Secrets encrypted at rest with a
key from pulumi-random, and an audit log.
"""

from __future__ import annotations

import enum

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import yaml

from components.common.endpoints import API_SERVER_PORT
from components.common.names import ObjectNames, labels
from components.common.podspec import (
    Manifest,
    config_map_volume,
    container_security_context,
    deployment_spec,
    empty_dir_volume,
    https_probe,
    mount,
    pod_env_from_field,
    resources,
    secret_volume,
    with_rollout_wait,
)
from components.config import ControlPlaneSettings, with_extra_args
from components.host.certs import (
    CLUSTER_CA,
    ETCD_CA,
    FRONT_PROXY_CA,
    KONNECTIVITY_SERVER_CLIENT,
    Pki,
)
from components.host.konnectivity_server import KonnectivityServerConfig, with_konnectivity_server
from components.host.workload import disruption_budget, rolled_on_change, secret_of_files

SECURE_PORT = API_SERVER_PORT
PKI_DIR = "/etc/kubernetes/pki"
AUDIT_POLICY_DIR = "/etc/kubernetes/audit"
COMPONENT = "kube-apiserver"
ENCRYPTION_CONFIG_FILE = "encryption-config.yaml"
# The first key's name (secretsEncryptionKeys' default); a rotation adds keys under new names.
FIRST_ENCRYPTION_KEY = "key1"


def api_server_labels(names: ObjectNames) -> dict[str, str]:
    return labels(names.cluster, COMPONENT)


def api_server_secret_name(names: ObjectNames) -> str:
    return names.api_server_pki


def audit_policy_config_map_name(names: ObjectNames) -> str:
    return f"{names.api_server}-audit-policy"


class SecretsWriter(enum.Enum):
    """Which provider writes Secrets at rest; the other one only reads."""

    SECRETBOX = "secretbox"
    # Earlier versions of this program wrote with aescbc. A stack they deployed keeps aescbc as
    # the writer for one more deployment, with secretbox already reading: while the apiservers
    # roll, old and new ones then read each other's writes.
    AESCBC = "aescbc"


def encryption_configuration(
    keys: list[tuple[str, str]], writer: SecretsWriter = SecretsWriter.SECRETBOX
) -> str:
    """Secrets at rest: secretbox (XSalsa20-Poly1305) writes with the first key and reads with
    every key; aescbc with the same keys only reads (what earlier versions of this program
    wrote); `identity` last, so data from before encryption still reads."""
    entries = [{"name": name, "secret": key_base64} for name, key_base64 in keys]
    ordered = [writer, *[provider for provider in SecretsWriter if provider is not writer]]
    document = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [
            {
                "resources": ["secrets"],
                "providers": [
                    *[{provider.value: {"keys": entries}} for provider in ordered],
                    {"identity": {}},
                ],
            }
        ],
    }
    return yaml.safe_dump(document, sort_keys=False)


def encryption_key_resource_name(component: str, key_name: str) -> str:
    """The first key keeps the resource name it always had, so it is never replaced."""
    suffix = "" if key_name == FIRST_ENCRYPTION_KEY else f"-{key_name}"
    return f"{component}-encryption-key{suffix}"


def audit_policy() -> str:
    """Who did what, never the payload: request bodies could carry Secret values."""
    document = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            # Health checks and the controllers' own lease renewals are noise.
            {"level": "None", "nonResourceURLs": ["/healthz*", "/livez*", "/readyz*", "/version"]},
            {
                "level": "None",
                "users": ["system:kube-controller-manager", "system:kube-scheduler"],
                "verbs": ["get", "update"],
                "namespaces": ["kube-system"],
                "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}],
            },
            {"level": "Metadata"},
        ],
    }
    return yaml.safe_dump(document, sort_keys=False)


# How soon a terminating apiserver leaves every load-balancing path, and how long it keeps
# serving after SIGTERM (the pod's default grace period, 30 s, covers the delay and the drain).
READINESS_PERIOD_SECONDS = 2
READINESS_FAILURES = 2
SHUTDOWN_DELAY_SECONDS = 15
# The apiserver's own readiness, without the checks of the etcd every replica shares.
READINESS_PATH = "/readyz?exclude=etcd&exclude=etcd-readiness"


def api_server_command(settings: ControlPlaneSettings, names: ObjectNames) -> list[str]:
    """The managed flags, then apiServerExtraArgs merged over them."""
    pki = PKI_DIR
    managed = [
        "kube-apiserver",
        "--advertise-address=$(POD_IP)",
        f"--secure-port={SECURE_PORT}",
        "--allow-privileged=true",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--enable-bootstrap-token-auth=true",
        f"--client-ca-file={pki}/ca.crt",
        f"--tls-cert-file={pki}/apiserver.crt",
        f"--tls-private-key-file={pki}/apiserver.key",
        f"--etcd-servers={','.join(names.etcd_client_urls(settings.etcd_replicas))}",
        f"--etcd-cafile={pki}/etcd-ca.crt",
        f"--etcd-certfile={pki}/apiserver-etcd-client.crt",
        f"--etcd-keyfile={pki}/apiserver-etcd-client.key",
        f"--kubelet-client-certificate={pki}/apiserver-kubelet-client.crt",
        f"--kubelet-client-key={pki}/apiserver-kubelet-client.key",
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        f"--proxy-client-cert-file={pki}/front-proxy-client.crt",
        f"--proxy-client-key-file={pki}/front-proxy-client.key",
        "--requestheader-allowed-names=front-proxy-client",
        f"--requestheader-client-ca-file={pki}/front-proxy-ca.crt",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--service-account-issuer=https://kubernetes.default.svc.{settings.cluster_domain}",
        f"--service-account-key-file={pki}/sa.pub",
        f"--service-account-signing-key-file={pki}/sa.key",
        f"--service-cluster-ip-range={settings.service_cidr}",
        f"--encryption-provider-config={pki}/{ENCRYPTION_CONFIG_FILE}",
        f"--audit-policy-file={AUDIT_POLICY_DIR}/policy.yaml",
        # To the container's stdout: the operator reads it with `kubectl logs` (and whatever
        # collects the infrastructure cluster's logs); the kubelet rotates it.
        "--audit-log-path=-",
        "--profiling=false",
        # A rollout drops no request: a terminating apiserver keeps serving while the Service,
        # NodePort and ingress drop it, then answers 429 with Retry-After (client-go retries).
        # The delay outlasts the readiness probe's detection (period x failures) plus
        # the time an ingress controller takes to reload: ingress controllers still route new
        # connections to a terminating pod until its readiness fails (endpoint `serving`).
        f"--shutdown-delay-duration={SHUTDOWN_DELAY_SECONDS}s",
        "--shutdown-send-retry-after=true",
        # The pods' IPs mean nothing on tenant nodes; components/tenant/in_cluster_api decides where
        # kubernetes.default leads.
        "--endpoint-reconciler-type=none",
    ]
    return with_extra_args(managed, settings.api_server_extra_args)


def api_server_deployment_spec(settings: ControlPlaneSettings, names: ObjectNames) -> Manifest:
    selector = api_server_labels(names)
    container = {
        "name": "kube-apiserver",
        "image": settings.image("kube-apiserver"),
        "imagePullPolicy": "IfNotPresent",
        "command": api_server_command(settings, names),
        "env": [pod_env_from_field("POD_IP", "status.podIP")],
        "ports": [{"name": "https", "containerPort": SECURE_PORT}],
        "resources": resources(
            settings.api_server_resources.cpu, settings.api_server_resources.memory
        ),
        "securityContext": container_security_context(),
        "volumeMounts": [
            mount("pki", PKI_DIR),
            mount("audit-policy", AUDIT_POLICY_DIR),
            mount("tmp", "/tmp", read_only=False),
        ],
        "startupProbe": https_probe("/livez", SECURE_PORT, failures=30),
        "livenessProbe": https_probe("/livez", SECURE_PORT, failures=8),
        # /readyz fails at once on SIGTERM; two quick failures take the pod out of every
        # Service, NodePort and ingress well before it stops listening. etcd's checks stay out:
        # every apiserver shares the one etcd, so a leader election (a member rolled) would fail
        # them all at once and leave no endpoint at all, while they could still serve reads.
        "readinessProbe": https_probe(
            READINESS_PATH,
            SECURE_PORT,
            period=READINESS_PERIOD_SECONDS,
            failures=READINESS_FAILURES,
            timeout=READINESS_PERIOD_SECONDS,
        ),
    }
    volumes = [
        secret_volume("pki", api_server_secret_name(names)),
        config_map_volume("audit-policy", audit_policy_config_map_name(names)),
        empty_dir_volume("tmp", "16Mi"),
    ]
    return deployment_spec(
        selector, settings.running(settings.api_server_replicas), container, volumes
    )


def api_server_service_spec(names: ObjectNames) -> Manifest:
    return {
        "type": "ClusterIP",
        "selector": api_server_labels(names),
        "ports": [{"name": "https", "port": SECURE_PORT, "targetPort": SECURE_PORT}],
    }


class ApiServer(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        settings: ControlPlaneSettings,
        names: ObjectNames,
        pki: Pki,
        provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
        *,
        secrets_writer: SecretsWriter = SecretsWriter.SECRETBOX,
    ) -> None:
        super().__init__("k8s-on-k8s:index:ApiServer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        namespace = settings.namespace

        def metadata(object_name: str) -> Manifest:
            return {"name": object_name, "namespace": namespace, "labels": api_server_labels(names)}

        # 32 random bytes per key of the Secrets at rest. Never replaced by an update (a new key
        # would leave every stored Secret unreadable); a rotation adds one under a new name.
        encryption_keys = [
            random.RandomBytes(
                encryption_key_resource_name(name, key_name),
                length=32,
                opts=pulumi.ResourceOptions(parent=self),
            ).base64
            for key_name in settings.encryption_keys
        ]
        files: dict[str, pulumi.Input[str]] = {
            "ca.crt": pki.cas[CLUSTER_CA].cert_pem,
            "etcd-ca.crt": pki.cas[ETCD_CA].cert_pem,
            "front-proxy-ca.crt": pki.cas[FRONT_PROXY_CA].cert_pem,
            "sa.pub": pki.service_account_public_key_pem,
            "sa.key": pki.service_account_private_key_pem,
            ENCRYPTION_CONFIG_FILE: pulumi.Output.all(*encryption_keys).apply(
                lambda keys: encryption_configuration(
                    list(zip(settings.encryption_keys, keys, strict=True)), secrets_writer
                )
            ),
        }
        for leaf in (
            "apiserver",
            "apiserver-kubelet-client",
            "apiserver-etcd-client",
            "front-proxy-client",
        ):
            files[f"{leaf}.crt"] = pki.leaves[leaf].cert_pem
            files[f"{leaf}.key"] = pki.leaves[leaf].key_pem
        secret = secret_of_files(
            f"{name}-pki", metadata(api_server_secret_name(names)), files, child
        )
        policy = k8s.core.v1.ConfigMap(
            f"{name}-audit-policy",
            metadata=metadata(audit_policy_config_map_name(names)),
            data={"policy.yaml": audit_policy()},
            opts=child,
        )
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=metadata(names.api_server),
            spec=api_server_service_spec(names),
            opts=child,
        )
        disruption_budget(
            f"{name}-pdb",
            metadata(names.api_server),
            api_server_labels(names),
            settings.api_server_replicas,
            child,
        )
        spec = api_server_deployment_spec(settings, names)
        mounted: list[pulumi.Resource] = [secret, policy]
        rolled_by = {**files, "audit-policy.yaml": audit_policy()}
        if settings.konnectivity:
            client = pki.leaves[KONNECTIVITY_SERVER_CLIENT.name]
            konnectivity = KonnectivityServerConfig(
                f"{name}-konnectivity",
                settings,
                names,
                pki.ca_cert_pem,
                client.cert_pem,
                client.key_pem,
                provider,
                opts=pulumi.ResourceOptions(parent=self),
            )
            spec = with_konnectivity_server(spec, settings, names)
            mounted.append(konnectivity)
            rolled_by["konnectivity-server-client.crt"] = client.cert_pem
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=with_rollout_wait(
                metadata(names.api_server), settings.running(settings.api_server_replicas)
            ),
            spec=rolled_on_change(spec, rolled_by),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=mounted)),
        )
        self.register_outputs({"service": names.api_server})
