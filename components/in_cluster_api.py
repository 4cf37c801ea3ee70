"""InClusterApi: where `kubernetes.default` leads on the tenant's nodes.

The apiserver pods live in the infrastructure cluster; their pod IPs mean nothing on the
tenant's nodes. So the apiserver's endpoint reconciler is off (`--endpoint-reconciler-type=none`)
and this component writes the `default/kubernetes` Endpoints and EndpointSlice itself, with the
address and port nodes reach the API at (the NodePort on a node address, or the load balancer).
kube-proxy on every node then sends ClusterIP traffic for `kubernetes.default` there.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.podspec import Manifest

SERVICE = "kubernetes"
NAMESPACE = "default"
MANAGED_BY = "k8s-on-k8s"


def kubernetes_endpoints(address: str, port: int) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": SERVICE,
            "namespace": NAMESPACE,
            # The slice below is written directly; the mirroring controller must not add one.
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
        },
        "subsets": [
            {
                "addresses": [{"ip": address}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            }
        ],
    }


def kubernetes_endpoint_slice(address: str, port: int) -> Manifest:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": SERVICE,
            "namespace": NAMESPACE,
            "labels": {
                "kubernetes.io/service-name": SERVICE,
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "addressType": "IPv6" if ":" in address else "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }


class InClusterApi(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        address: str,
        port: int,
        tenant_provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("k8s-on-k8s:index:InClusterApi", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=tenant_provider)
        endpoints = kubernetes_endpoints(address, port)
        k8s.core.v1.Endpoints(
            f"{name}-endpoints",
            metadata=endpoints["metadata"],
            subsets=endpoints["subsets"],
            opts=child,
        )
        endpoint_slice = kubernetes_endpoint_slice(address, port)
        k8s.discovery.v1.EndpointSlice(
            f"{name}-endpointslice",
            metadata=endpoint_slice["metadata"],
            address_type=endpoint_slice["addressType"],
            endpoints=endpoint_slice["endpoints"],
            ports=endpoint_slice["ports"],
            opts=child,
        )
        self.register_outputs({"address": address, "port": port})
