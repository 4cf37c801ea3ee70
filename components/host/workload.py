"""Resources every control plane component declares the same way: its files as a Secret, its
PodDisruptionBudget, and the kubeconfig that reaches the apiserver through its Service."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import pulumi
import pulumi_kubernetes as k8s

from components.common.names import ObjectNames
from components.common.podspec import Manifest, pod_disruption_budget_spec
from components.host.certs import Pki
from components.host.kubeconfig import client_certificate_kubeconfig


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


# Pod template annotation: the digest of every file a pod mounts. A renewed certificate or a new
# config changes it, so the workload rolls and pulumi-kubernetes waits for the rollout.
FILES_CHECKSUM_ANNOTATION = "k8s-on-k8s.io/files-sha256"


def files_checksum(files: Mapping[str, str]) -> str:
    """SHA-256 over the files' names and contents, independent of their order."""
    return hashlib.sha256(json.dumps(dict(files), sort_keys=True).encode()).hexdigest()


def with_files_checksum(spec: Manifest, checksum: pulumi.Input[str]) -> Manifest:
    """A copy of a workload spec whose pod template carries the checksum annotation."""
    template = spec["template"]
    metadata = template.get("metadata", {})
    annotations = {**metadata.get("annotations", {}), FILES_CHECKSUM_ANNOTATION: checksum}
    return {**spec, "template": {**template, "metadata": {**metadata, "annotations": annotations}}}


def rolled_on_change(spec: Manifest, files: Mapping[str, pulumi.Input[str]]) -> Manifest:
    """The spec with the checksum of `files` as its only computed value: while a renewed
    certificate is unknown in a preview, only the annotation is, and pulumi-kubernetes still
    sees that no field that forces a replacement changes. A digest reveals nothing of the keys
    it covers, so it is not a secret: diffs of the workload stay readable."""
    checksum = pulumi.Output.unsecret(pulumi.Output.all(**files).apply(files_checksum))
    return with_files_checksum(spec, checksum)


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
