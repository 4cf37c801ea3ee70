"""Scheduler: kube-scheduler as a Deployment with leader election."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.common.endpoints import SCHEDULER_PORT
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
from components.config import ControlPlaneSettings, ExtraArgs, with_extra_args
from components.host.certs import Pki
from components.host.workload import (
    disruption_budget,
    in_namespace_kubeconfig,
    rolled_on_change,
    secret_of_files,
)

SECURE_PORT = SCHEDULER_PORT
CONFIG_DIR = "/etc/kubernetes/scheduler"
COMPONENT = "kube-scheduler"
USER = "system:kube-scheduler"


def scheduler_labels(names: ObjectNames) -> dict[str, str]:
    return labels(names.cluster, COMPONENT)


def scheduler_secret_name(names: ObjectNames) -> str:
    return f"{names.scheduler}-config"


def scheduler_command(extra_args: ExtraArgs = ()) -> list[str]:
    """The managed flags, then schedulerExtraArgs merged over them."""
    kubeconfig = f"{CONFIG_DIR}/kubeconfig"
    managed = [
        "kube-scheduler",
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        # Probed on the pod IP, so not kubeadm's 127.0.0.1.
        "--bind-address=0.0.0.0",
        f"--secure-port={SECURE_PORT}",
        "--cert-dir=/tmp/serving-certs",
        "--leader-elect=true",
        "--profiling=false",
    ]
    return with_extra_args(managed, extra_args)


def scheduler_deployment_spec(settings: ControlPlaneSettings, names: ObjectNames) -> Manifest:
    container = {
        "name": "kube-scheduler",
        "image": settings.image("kube-scheduler"),
        "imagePullPolicy": "IfNotPresent",
        "command": scheduler_command(settings.scheduler_extra_args),
        "ports": [{"name": "https", "containerPort": SECURE_PORT}],
        "resources": resources(
            settings.scheduler_resources.cpu, settings.scheduler_resources.memory
        ),
        "securityContext": container_security_context(),
        "volumeMounts": [mount("config", CONFIG_DIR), mount("tmp", "/tmp", read_only=False)],
        "startupProbe": https_probe("/livez", SECURE_PORT, failures=24),
        "livenessProbe": https_probe("/livez", SECURE_PORT, failures=8),
        "readinessProbe": https_probe("/readyz", SECURE_PORT, period=5),
    }
    volumes = [
        secret_volume("config", scheduler_secret_name(names)),
        empty_dir_volume("tmp", "16Mi"),
    ]
    return deployment_spec(
        scheduler_labels(names), settings.running(settings.scheduler_replicas), container, volumes
    )


class Scheduler(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        settings: ControlPlaneSettings,
        names: ObjectNames,
        pki: Pki,
        provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("k8s-on-k8s:index:Scheduler", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        metadata = {
            "name": names.scheduler,
            "namespace": settings.namespace,
            "labels": scheduler_labels(names),
        }
        files: dict[str, pulumi.Input[str]] = {
            "kubeconfig": in_namespace_kubeconfig(names, pki, "scheduler", USER)
        }
        secret = secret_of_files(
            f"{name}-config",
            {**metadata, "name": scheduler_secret_name(names)},
            files,
            child,
        )
        disruption_budget(
            f"{name}-pdb", metadata, scheduler_labels(names), settings.scheduler_replicas, child
        )
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=with_rollout_wait(metadata, settings.running(settings.scheduler_replicas)),
            spec=rolled_on_change(scheduler_deployment_spec(settings, names), files),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[secret])),
        )
        self.register_outputs({"deployment": names.scheduler})
