"""ControllerManager: kube-controller-manager as a Deployment with leader election.

It reaches the apiserver through the in-namespace Service, signs the cluster's certificates
with the cluster CA, and runs the bootstrap-token controllers that joining nodes need.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.common.endpoints import CONTROLLER_MANAGER_PORT
from components.common.names import ObjectNames, labels
from components.common.podspec import (
    Manifest,
    container_security_context,
    deployment_spec,
    empty_dir_volume,
    https_probe,
    mount,
    resources,
    secret_volume,
    with_rollout_wait,
)
from components.config import ControlPlaneSettings, with_extra_args
from components.host.certs import CLUSTER_CA, FRONT_PROXY_CA, Pki
from components.host.workload import (
    disruption_budget,
    in_namespace_kubeconfig,
    rolled_on_change,
    secret_of_files,
)

SECURE_PORT = CONTROLLER_MANAGER_PORT
CONFIG_DIR = "/etc/kubernetes/controller-manager"
COMPONENT = "kube-controller-manager"
USER = "system:kube-controller-manager"


def controller_manager_labels(names: ObjectNames) -> dict[str, str]:
    return labels(names.cluster, COMPONENT)


def controller_manager_secret_name(names: ObjectNames) -> str:
    return f"{names.controller_manager}-config"


def controller_manager_command(settings: ControlPlaneSettings, names: ObjectNames) -> list[str]:
    """The managed flags, then controllerManagerExtraArgs merged over them."""
    kubeconfig = f"{CONFIG_DIR}/kubeconfig"
    managed = [
        "kube-controller-manager",
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        # Probed on the pod IP, so not kubeadm's 127.0.0.1.
        "--bind-address=0.0.0.0",
        f"--secure-port={SECURE_PORT}",
        # The self-signed serving certificate goes to a writable emptyDir.
        "--cert-dir=/tmp/serving-certs",
        f"--client-ca-file={CONFIG_DIR}/ca.crt",
        f"--requestheader-client-ca-file={CONFIG_DIR}/front-proxy-ca.crt",
        f"--root-ca-file={CONFIG_DIR}/ca.crt",
        f"--service-account-private-key-file={CONFIG_DIR}/sa.key",
        f"--cluster-signing-cert-file={CONFIG_DIR}/ca.crt",
        f"--cluster-signing-key-file={CONFIG_DIR}/ca.key",
        "--use-service-account-credentials=true",
        "--controllers=*,bootstrapsigner,tokencleaner",
        "--leader-elect=true",
        f"--cluster-name={names.cluster}",
        "--allocate-node-cidrs=true",
        f"--cluster-cidr={settings.pod_cidr}",
        f"--service-cluster-ip-range={settings.service_cidr}",
        "--profiling=false",
    ]
    return with_extra_args(managed, settings.controller_manager_extra_args)


def controller_manager_deployment_spec(
    settings: ControlPlaneSettings, names: ObjectNames
) -> Manifest:
    container = {
        "name": "kube-controller-manager",
        "image": settings.image("kube-controller-manager"),
        "imagePullPolicy": "IfNotPresent",
        "command": controller_manager_command(settings, names),
        "ports": [{"name": "https", "containerPort": SECURE_PORT}],
        "resources": resources(
            settings.controller_manager_resources.cpu,
            settings.controller_manager_resources.memory,
        ),
        "securityContext": container_security_context(),
        "volumeMounts": [mount("config", CONFIG_DIR), mount("tmp", "/tmp", read_only=False)],
        "startupProbe": https_probe("/healthz", SECURE_PORT, failures=24),
        "livenessProbe": https_probe("/healthz", SECURE_PORT, failures=8),
    }
    volumes = [
        secret_volume("config", controller_manager_secret_name(names)),
        empty_dir_volume("tmp", "16Mi"),
    ]
    return deployment_spec(
        controller_manager_labels(names),
        settings.running(settings.controller_manager_replicas),
        container,
        volumes,
    )


class ControllerManager(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        settings: ControlPlaneSettings,
        names: ObjectNames,
        pki: Pki,
        provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("k8s-on-k8s:index:ControllerManager", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        metadata = {
            "name": names.controller_manager,
            "namespace": settings.namespace,
            "labels": controller_manager_labels(names),
        }
        kubeconfig = in_namespace_kubeconfig(names, pki, "controller-manager", USER)
        files: dict[str, pulumi.Input[str]] = {
            "kubeconfig": kubeconfig,
            "ca.crt": pki.ca_cert_pem,
            "ca.key": pki.cas[CLUSTER_CA].key_pem,
            "front-proxy-ca.crt": pki.cas[FRONT_PROXY_CA].cert_pem,
            "sa.key": pki.service_account_private_key_pem,
        }
        secret = secret_of_files(
            f"{name}-config",
            {**metadata, "name": controller_manager_secret_name(names)},
            files,
            child,
        )
        disruption_budget(
            f"{name}-pdb",
            metadata,
            controller_manager_labels(names),
            settings.controller_manager_replicas,
            child,
        )
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=with_rollout_wait(
                metadata, settings.running(settings.controller_manager_replicas)
            ),
            spec=rolled_on_change(controller_manager_deployment_spec(settings, names), files),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[secret])),
        )
        self.register_outputs({"deployment": names.controller_manager})
