"""Etcd: the control plane's datastore as a StatefulSet with mutual TLS for clients and peers.

Members find each other through a headless Service that publishes not-ready addresses, so a
new cluster can bootstrap before any member is Ready. All members share one serving and one
peer certificate (components/host/certs.py says why).
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.common.endpoints import ETCD_CLIENT_PORT, ETCD_HEALTH_PORT, ETCD_PEER_PORT
from components.common.names import ObjectNames, labels
from components.common.podspec import (
    Manifest,
    container_security_context,
    empty_dir_volume,
    http_probe,
    mount,
    pod_env_from_field,
    pod_security_context,
    resources,
    secret_volume,
    spread_over_nodes,
    with_rollout_wait,
)
from components.config import ControlPlaneSettings, with_extra_args
from components.host.certs import ETCD_CA, ETCD_PEER, ETCD_SERVER, Pki
from components.host.workload import disruption_budget, rolled_on_change, secret_of_files

CLIENT_PORT = ETCD_CLIENT_PORT
PEER_PORT = ETCD_PEER_PORT
HEALTH_PORT = ETCD_HEALTH_PORT
PKI_DIR = "/etc/etcd/pki"
DATA_MOUNT = "/var/lib/etcd"
# Characters of the data generation: a random name given once per stack, never replaced.
DATA_GENERATION_LENGTH = 8
COMPONENT = "etcd"


def etcd_labels(names: ObjectNames) -> dict[str, str]:
    return labels(names.cluster, COMPONENT)


def etcd_secret_name(names: ObjectNames) -> str:
    return f"{names.etcd}-pki"


# The pod's env var holding the data generation; the kubelet expands $(DATA_GENERATION) in the
# flags, so the flags stay plain strings and only the env value is computed.
DATA_GENERATION_ENV = "DATA_GENERATION"


def etcd_data_dir(generation: str = f"$({DATA_GENERATION_ENV})") -> str:
    """A sub-directory of the volume, named after the stack's data generation.

    etcd creates it with mode 0700 and owns it, whatever the volume's root looks like. `pulumi
    destroy` keeps the volumes but loses the keys that decrypt their Secrets; a new stack has a
    new generation, so it starts a fresh cluster beside the old data instead of on data it could
    not decrypt (the old directory stays for an operator to recover or delete).
    """
    return f"{DATA_MOUNT}/data-{generation}"


def etcd_command(settings: ControlPlaneSettings, names: ObjectNames) -> list[str]:
    """etcd's flags; $(POD_NAME) and $(DATA_GENERATION) are expanded by the kubelet from the
    pod's env. etcdExtraArgs are merged over the managed flags."""
    own_fqdn = names.etcd_member_fqdn("$(POD_NAME)")
    initial_cluster = ",".join(
        f"{member}=https://{names.etcd_member_fqdn(member)}:{PEER_PORT}"
        for member in names.etcd_members(settings.etcd_replicas)
    )
    managed = [
        "etcd",
        "--name=$(POD_NAME)",
        f"--data-dir={etcd_data_dir()}",
        f"--listen-client-urls=https://0.0.0.0:{CLIENT_PORT}",
        f"--advertise-client-urls=https://{own_fqdn}:{CLIENT_PORT}",
        f"--listen-peer-urls=https://0.0.0.0:{PEER_PORT}",
        f"--initial-advertise-peer-urls=https://{own_fqdn}:{PEER_PORT}",
        f"--initial-cluster={initial_cluster}",
        "--initial-cluster-state=new",
        f"--initial-cluster-token={names.cluster}-{names.namespace}-$({DATA_GENERATION_ENV})",
        f"--cert-file={PKI_DIR}/server.crt",
        f"--key-file={PKI_DIR}/server.key",
        "--client-cert-auth=true",
        f"--trusted-ca-file={PKI_DIR}/ca.crt",
        f"--peer-cert-file={PKI_DIR}/peer.crt",
        f"--peer-key-file={PKI_DIR}/peer.key",
        "--peer-client-cert-auth=true",
        f"--peer-trusted-ca-file={PKI_DIR}/ca.crt",
        "--snapshot-count=10000",
        # Plain-HTTP health and metrics for the kubelet's probes; no data is served there.
        f"--listen-metrics-urls=http://0.0.0.0:{HEALTH_PORT}",
        "--feature-gates=InitialCorruptCheck=true",
    ]
    return with_extra_args(managed, settings.etcd_extra_args)


def etcd_statefulset_spec(
    settings: ControlPlaneSettings, names: ObjectNames, generation: pulumi.Input[str]
) -> Manifest:
    selector = etcd_labels(names)
    volume_claim: Manifest = {
        "metadata": {"name": "data", "labels": selector},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": settings.etcd_storage_size}},
        },
    }
    if settings.etcd_storage_class:
        volume_claim["spec"]["storageClassName"] = settings.etcd_storage_class
    container = {
        "name": "etcd",
        "image": settings.image("etcd", settings.release.etcd_image_tag),
        "imagePullPolicy": "IfNotPresent",
        "command": etcd_command(settings, names),
        "env": [
            pod_env_from_field("POD_NAME", "metadata.name"),
            {"name": DATA_GENERATION_ENV, "value": generation},
        ],
        "ports": [
            {"name": "client", "containerPort": CLIENT_PORT},
            {"name": "peer", "containerPort": PEER_PORT},
            {"name": "health", "containerPort": HEALTH_PORT},
        ],
        "resources": resources(settings.etcd_resources.cpu, settings.etcd_resources.memory),
        "securityContext": container_security_context(),
        "volumeMounts": [
            mount("pki", PKI_DIR),
            mount("data", DATA_MOUNT, read_only=False),
            mount("tmp", "/tmp", read_only=False),
        ],
        # kubeadm's probes: /livez for liveness, /readyz once the member serves.
        "livenessProbe": http_probe("/livez", HEALTH_PORT, failures=8),
        "readinessProbe": http_probe("/readyz", HEALTH_PORT, period=5),
        "startupProbe": http_probe("/readyz", HEALTH_PORT, period=5, failures=60),
    }
    return {
        "serviceName": names.etcd_peer,
        "replicas": settings.running(settings.etcd_replicas),
        # Members must start together to form the initial quorum.
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": selector},
        # Deleting or scaling the StatefulSet keeps the data; see the README on how to remove it.
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        "template": {
            "metadata": {"labels": selector},
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": pod_security_context(),
                "affinity": spread_over_nodes(selector),
                "terminationGracePeriodSeconds": 30,
                "containers": [container],
                "volumes": [
                    secret_volume("pki", etcd_secret_name(names)),
                    empty_dir_volume("tmp", "16Mi"),
                ],
            },
        },
        "volumeClaimTemplates": [volume_claim],
    }


def etcd_peer_service_spec(names: ObjectNames) -> Manifest:
    return {
        "clusterIP": "None",
        # DNS names must resolve before a member is Ready, or the first quorum never forms.
        "publishNotReadyAddresses": True,
        "selector": etcd_labels(names),
        "ports": [
            {"name": "client", "port": CLIENT_PORT, "targetPort": CLIENT_PORT},
            {"name": "peer", "port": PEER_PORT, "targetPort": PEER_PORT},
        ],
    }


def etcd_client_service_spec(names: ObjectNames) -> Manifest:
    return {
        "type": "ClusterIP",
        "selector": etcd_labels(names),
        "ports": [{"name": "client", "port": CLIENT_PORT, "targetPort": CLIENT_PORT}],
    }


class Etcd(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        settings: ControlPlaneSettings,
        names: ObjectNames,
        pki: Pki,
        provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("k8s-on-k8s:index:Etcd", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        namespace = settings.namespace

        def metadata(object_name: str) -> Manifest:
            return {"name": object_name, "namespace": namespace, "labels": etcd_labels(names)}

        files: dict[str, pulumi.Input[str]] = {"ca.crt": pki.cas[ETCD_CA].cert_pem}
        for stem, leaf in (("server", ETCD_SERVER), ("peer", ETCD_PEER)):
            files[f"{stem}.crt"] = pki.leaves[leaf].cert_pem
            files[f"{stem}.key"] = pki.leaves[leaf].key_pem
        secret = secret_of_files(f"{name}-pki", metadata(etcd_secret_name(names)), files, child)
        # Given once per stack and never replaced (random resources replace only when their
        # inputs change): see etcd_data_dir.
        generation = random.RandomString(
            f"{name}-data-generation",
            length=DATA_GENERATION_LENGTH,
            upper=False,
            special=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        peer_service = k8s.core.v1.Service(
            f"{name}-peer",
            metadata=metadata(names.etcd_peer),
            spec=etcd_peer_service_spec(names),
            opts=child,
        )
        self.client_service = k8s.core.v1.Service(
            f"{name}-client",
            metadata=metadata(names.etcd),
            spec=etcd_client_service_spec(names),
            opts=child,
        )
        disruption_budget(
            f"{name}-pdb", metadata(names.etcd), etcd_labels(names), settings.etcd_replicas, child
        )
        self.statefulset = k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata=with_rollout_wait(
                metadata(names.etcd), settings.running(settings.etcd_replicas)
            ),
            spec=rolled_on_change(etcd_statefulset_spec(settings, names, generation.result), files),
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[secret, peer_service])
            ),
        )
        self.register_outputs({"clientService": names.etcd})
