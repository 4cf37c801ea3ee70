"""Settings that are fixed once the cluster exists, and the refusal of a change to them.

The current values come from the stack's own last outputs (`fixedSettings`, exported by every
`pulumi up`, read by components/last_deployment.py): what this stack last deployed, read before
anything is registered. A stack that has never been deployed, or has been destroyed, has none,
so anything goes. Refusals name the key, the current and the requested value, and the safe path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.common.versions import minor_of
from components.config import PROJECT, ControlPlaneSettings

OUTPUT_NAME = "fixedSettings"

# Why each setting cannot change in place, and what to do instead.
FIXED: dict[str, str] = {
    "clusterName": (
        "every object is named after it, so another name is another cluster; deploy that as a "
        "new stack"
    ),
    "namespace": "the control plane lives there; deploy a new stack in the other namespace",
    "etcdReplicas": (
        "etcd members are not added or removed by an update; take a backup and restore it "
        "into a new stack with the other member count"
    ),
    "etcdStorageSize": (
        "a StatefulSet's volume claims cannot change (pulumi-kubernetes would replace etcd); "
        "to grow the volumes, expand each claim where its StorageClass allows it (kubectl -n "
        "<namespace> patch pvc data-<clusterName>-etcd-<n> -p "
        '\'{"spec":{"resources":{"requests":{"storage":"<size>"}}}}\') and keep this value'
    ),
    "etcdStorageClass": (
        "a StatefulSet's volume claims cannot change (pulumi-kubernetes would replace etcd); "
        "to move the data to another class, take a backup and restore it into a new stack"
    ),
    "serviceCidr": (
        "Services keep the addresses they were given and the certificates name the first one; "
        "build a new cluster with the new range"
    ),
    "podCidr": "nodes keep the pod ranges they were given; build a new cluster with the new range",
    "clusterDomain": (
        "service-account tokens, certificates and every pod's DNS search path name it; build a "
        "new cluster with the new domain"
    ),
}


def fixed_settings(settings: ControlPlaneSettings) -> dict[str, str]:
    """What this deployment fixes, as the stack output that the next `pulumi up` reads."""
    return {
        "clusterName": settings.cluster_name,
        "namespace": settings.namespace,
        "etcdReplicas": str(settings.etcd_replicas),
        "etcdStorageSize": settings.etcd_storage_size,
        "etcdStorageClass": settings.etcd_storage_class or "",
        "serviceCidr": settings.service_cidr,
        "podCidr": settings.pod_cidr,
        "clusterDomain": settings.cluster_domain,
        "kubernetesVersion": settings.release.version,
        # Not fixed: recorded so that a first deployment can be told apart.
        "suspended": str(settings.suspended).lower(),
    }


def _minor_number(version: str) -> int:
    return int(minor_of(version).split(".")[1])


def refused_changes(previous: Mapping[str, str] | None, requested: Mapping[str, str]) -> list[str]:
    """Every change from `previous` (the last deployment) to `requested` that is not allowed."""
    if not previous:
        if requested.get("suspended") == "true":
            # The objects inside the tenant cluster are written through its API, which a
            # suspended control plane does not serve.
            return [
                f"{PROJECT}:suspended cannot be true on the first deployment: it is not "
                "deployed, 'true' was requested; deploy with suspended false, then suspend"
            ]
        return []
    refusals = [
        f"{PROJECT}:{key} cannot change once the cluster exists: it is {previous[key]!r}, "
        f"{requested[key]!r} was requested; {why}"
        for key, why in FIXED.items()
        if key in previous and previous[key] != requested[key]
    ]
    current = previous.get("kubernetesVersion")
    wanted = requested["kubernetesVersion"]
    if current:
        step = _minor_number(wanted) - _minor_number(current)
        if step > 1:
            next_minor = f"v1.{_minor_number(current) + 1}.x"
            refusals.append(
                f"{PROJECT}:kubernetesVersion cannot skip a minor release: it is {current!r}, "
                f"{wanted!r} was requested; upgrade one minor at a time ({next_minor} first), "
                "as Kubernetes' version skew policy requires"
            )
        elif step < 0:
            refusals.append(
                f"{PROJECT}:kubernetesVersion cannot go back a minor release: it is {current!r}, "
                f"{wanted!r} was requested; etcd's data may already use the newer release's "
                "schema, so restore a backup taken before the upgrade into a new stack instead"
            )
    return refusals


ENCRYPTION_KEYS_OUTPUT = "secretsEncryptionKeys"


def refused_key_changes(previous: object, requested: tuple[str, ...]) -> list[str]:
    """The Secrets-at-rest keys change in steps, because the apiservers roll one by one and an
    old one must read what a new one writes, and the other way round: a key reads in one
    deployment before it writes in the next, and the key that wrote keeps reading for one more."""
    if not isinstance(previous, list) or not previous:
        return []
    before = [str(name) for name in previous]
    key = f"{PROJECT}:secretsEncryptionKeys"
    current, wanted = ",".join(before), ",".join(requested)
    refusals = []
    if requested[0] not in before:
        refusals.append(
            f"{key} cannot start writing with a key the apiservers cannot read yet: it is "
            f"{current!r}, {wanted!r} was requested; add {requested[0]!r} after the others "
            f"first ({current},{requested[0]}), pulumi up, then move it to the front"
        )
    if before[0] not in requested:
        refusals.append(
            f"{key} cannot drop the key that writes now: it is {current!r}, {wanted!r} was "
            f"requested; keep {before[0]!r} as a read key ({','.join([*requested, before[0]])}) "
            "for this pulumi up, rewrite every Secret (kubectl get secrets -A -o json | kubectl "
            "replace -f -), then drop it"
        )
    return refusals


def check_fixed_settings(
    settings: ControlPlaneSettings, last_deployed: Mapping[str, Any]
) -> dict[str, str]:
    """Raise ConfigError for every refused change against `last_deployed` (this stack's last
    outputs, empty before the first deployment); return the `fixedSettings` to export for the
    next run."""
    from components.config import ConfigError

    requested = fixed_settings(settings)
    previous = last_deployed.get(OUTPUT_NAME)
    refusals = refused_changes(
        {str(k): str(v) for k, v in previous.items()} if isinstance(previous, Mapping) else None,
        requested,
    )
    refusals += refused_key_changes(
        last_deployed.get(ENCRYPTION_KEYS_OUTPUT), settings.encryption_keys
    )
    if refusals:
        raise ConfigError("refused configuration change:\n  " + "\n  ".join(refusals))
    return requested
