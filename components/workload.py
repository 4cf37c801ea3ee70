"""Resources every control plane component declares the same way: its files as a Secret, its
PodDisruptionBudget, and the kubeconfig that reaches the apiserver through its Service."""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_kubernetes as k8s

from components.kubeconfig import client_certificate_kubeconfig
from components.names import ObjectNames
from components.pki import Pki
from components.podspec import Manifest, pod_disruption_budget_spec


def secret_of_files(
    resource_name: str,
    metadata: Manifest,
    files: Mapping[str, pulumi.Input[str]],
    opts: pulumi.ResourceOptions,
) -> k8s.core.v1.Secret:
    """An Opaque Secret of files (certificates, keys, kubeconfigs); every value is a secret."""
    return k8s.core.v1.Secret(
        resource_name,
        metadata=metadata,
        type="Opaque",
        string_data={key: pulumi.Output.secret(value) for key, value in files.items()},
        opts=opts,
    )


def disruption_budget(
    resource_name: str,
    metadata: Manifest,
    selector_labels: dict[str, str],
    replicas: int,
    opts: pulumi.ResourceOptions,
) -> k8s.policy.v1.PodDisruptionBudget:
    return k8s.policy.v1.PodDisruptionBudget(
        resource_name,
        metadata=metadata,
        spec=pod_disruption_budget_spec(selector_labels, replicas),
        opts=opts,
    )


def in_namespace_kubeconfig(
    names: ObjectNames, pki: Pki, client_leaf: str, user: str
) -> pulumi.Output[str]:
    """A component's kubeconfig: its client certificate, the apiserver's in-namespace Service."""
    client = pki.leaves[client_leaf]
    return client_certificate_kubeconfig(
        cluster_name=names.cluster,
        server=names.api_server_internal_url,
        ca_cert_pem=pki.ca_cert_pem,
        user=user,
        client_cert_pem=client.cert_pem,
        client_key_pem=client.key_pem,
    )
