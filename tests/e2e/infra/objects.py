"""The Kubernetes objects the rig creates after the node is Ready, as plain dicts."""

from __future__ import annotations

from pathlib import Path

DEFAULT_STORAGE_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


def tenant_namespace(name: str) -> dict:
    """The namespace the tenant control plane goes into, held to the `restricted` standard."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }


def storage_class(name: str) -> dict:
    """Static local volumes only: binding waits for the pod so the node affinity is honoured."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name, "annotations": {DEFAULT_STORAGE_CLASS_ANNOTATION: "true"}},
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Retain",
    }


def host_path_volume(
    *, name: str, path: Path, size: str, storage_class_name: str, node_name: str
) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"k8s-on-k8s-rig/volume": "host-path"}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": storage_class_name,
            "hostPath": {"path": str(path), "type": "Directory"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node_name],
                                }
                            ]
                        }
                    ]
                }
            },
        },
    }


def namespace_admin_binding(*, namespace: str, user: str) -> dict:
    """The tenant user's only right: the built-in `admin` ClusterRole inside its namespace."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{user}-admin", "namespace": namespace},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "admin",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def kubelet_api_admin_binding(user: str) -> dict:
    """kubeadm's `kubeadm:apiserver-kubelet-client`: the apiserver's client certificate for the
    kubelets (a user without a group) gets the built-in system:kubelet-api-admin role."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "kubeadm:apiserver-kubelet-client"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:kubelet-api-admin",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def ingress_class(*, name: str, controller: str) -> dict:
    """The class the program's Ingress names (`nginx`), served by the rig's Traefik, whose
    ingress-nginx provider claims the classes of ingress-nginx's controller value."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": name},
        "spec": {"controller": controller},
    }


def object_list(items: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "List", "items": items}


NETWORK_POLICY_NAME = "kube-router"
# kube-router's own health endpoint (its default port), on the node's loopback only.
NETWORK_POLICY_HEALTH_PORT = 20244
# The iptables chain kube-router hooks into FORWARD, OUTPUT and INPUT once it enforces.
NETWORK_POLICY_CHAIN = "KUBE-ROUTER-FORWARD"


def network_policy_implementation(image: str) -> list[dict]:
    """kube-router's firewall alone, as its kube-router-firewall-daemonset.yaml deploys it: a
    privileged host-network DaemonSet in kube-system (`--run-router=false`,
    `--run-service-proxy=false`: the rig keeps its CNI and kube-proxy), with the RBAC of its
    generic manifests.

    It turns the policies into iptables chains and ipsets; a pod that a policy selects gets a
    chain that REJECTs what no policy allows. Not its proxy: that module is where v2.1.0's
    reported flaws are, and it is off.
    """
    name = NETWORK_POLICY_NAME
    selector = {"k8s-app": name}
    rbac = "rbac.authorization.k8s.io/v1"
    read = ["get", "list", "watch"]
    return [
        {
            "apiVersion": rbac,
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
                    "verbs": read,
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["networkpolicies"],
                    "verbs": read,
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": read,
                },
            ],
        },
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "kube-system"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": "kube-system"},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": "kube-system", "labels": selector},
            "spec": {
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": selector},
                    "spec": {
                        "hostNetwork": True,
                        "serviceAccountName": name,
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [
                            {
                                "name": name,
                                "image": image,
                                "imagePullPolicy": "Never",
                                "command": ["/usr/local/bin/kube-router"],
                                "args": [
                                    "--run-router=false",
                                    "--run-firewall=true",
                                    "--run-service-proxy=false",
                                    f"--health-port={NETWORK_POLICY_HEALTH_PORT}",
                                    "--metrics-port=0",
                                    "--v=2",
                                ],
                                "env": [
                                    {
                                        "name": "NODE_NAME",
                                        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                                    }
                                ],
                                "readinessProbe": {
                                    "httpGet": {
                                        "host": "127.0.0.1",
                                        "path": "/healthz",
                                        "port": NETWORK_POLICY_HEALTH_PORT,
                                    },
                                    "periodSeconds": 2,
                                },
                                "securityContext": {"privileged": True},
                                "volumeMounts": [
                                    {"name": "xtables-lock", "mountPath": "/run/xtables.lock"}
                                ],
                            }
                        ],
                        "volumes": [
                            {
                                "name": "xtables-lock",
                                "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"},
                            }
                        ],
                    },
                },
            },
        },
    ]
