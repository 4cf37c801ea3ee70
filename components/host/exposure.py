"""Exposure: how clients outside the infrastructure cluster reach the tenant API.

- ingress: an Ingress for the API host with ingress-nginx TLS passthrough (the proof of
  concept's way); the apiserver itself terminates TLS, so client certificates keep working.
- loadBalancer: a LoadBalancer Service on 6443, optionally with a fixed IP.
- nodePort: a NodePort Service on a fixed port, so the endpoint is known before `pulumi up`.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.common.names import ObjectNames, labels
from components.common.podspec import Manifest
from components.config import ControlPlaneSettings, ExposureMode
from components.host.control_plane.apiserver import SECURE_PORT, api_server_labels
from components.host.konnectivity_server import agent_service_port

COMPONENT = "apiserver-exposure"

PASSTHROUGH_ANNOTATIONS = {
    "nginx.ingress.kubernetes.io/ssl-passthrough": "true",
    "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
}


def ingress_spec(settings: ControlPlaneSettings, names: ObjectNames) -> Manifest:
    backend = {"service": {"name": names.api_server, "port": {"number": SECURE_PORT}}}
    return {
        "ingressClassName": settings.exposure.ingress_class_name,
        "rules": [
            {
                "host": settings.exposure.host,
                "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
            }
        ],
    }


def external_service_spec(settings: ControlPlaneSettings, names: ObjectNames) -> Manifest:
    exposure = settings.exposure
    port: Manifest = {"name": "https", "port": SECURE_PORT, "targetPort": SECURE_PORT}
    spec: Manifest = {"selector": api_server_labels(names), "ports": [port]}
    match exposure.mode:
        case ExposureMode.NODE_PORT:
            spec["type"] = "NodePort"
            port["nodePort"] = exposure.node_port
        case ExposureMode.LOAD_BALANCER:
            spec["type"] = "LoadBalancer"
            if exposure.load_balancer_ip:
                spec["loadBalancerIP"] = exposure.load_balancer_ip
        case ExposureMode.INGRESS:
            raise ValueError(
                f"exposure mode {exposure.mode.value!r} uses an Ingress, not a Service"
            )
    if settings.konnectivity:
        # Agents on the tenant's nodes dial the proxy-server sidecars on the same address.
        spec["ports"].append(agent_service_port(settings, settings.konnectivity_node_port))
    return spec


class Exposure(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        settings: ControlPlaneSettings,
        names: ObjectNames,
        provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("k8s-on-k8s:index:Exposure", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        metadata: Manifest = {
            "name": names.exposure,
            "namespace": settings.namespace,
            "labels": labels(names.cluster, COMPONENT),
        }
        if settings.exposure.mode is ExposureMode.INGRESS:
            k8s.networking.v1.Ingress(
                f"{name}-ingress",
                metadata={**metadata, "annotations": PASSTHROUGH_ANNOTATIONS},
                spec=ingress_spec(settings, names),
                opts=child,
            )
        else:
            k8s.core.v1.Service(
                f"{name}-service",
                metadata=metadata,
                spec=external_service_spec(settings, names),
                opts=child,
            )
        self.endpoint = settings.exposure.endpoint
        self.register_outputs({"endpoint": self.endpoint})
