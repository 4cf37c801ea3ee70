"""k8s-on-k8s: a Kubernetes control plane in one namespace of an infrastructure cluster."""

import pulumi
import pulumi_kubernetes as k8s

from components.config import load_settings
from components.controlplane import ControlPlane

# Validation happens here, before the first resource is registered.
settings, infra = load_settings()

# One explicit provider for the infrastructure cluster, chosen the standard pulumi-kubernetes
# way (kubernetes:kubeconfig / kubernetes:context, else the ambient kubeconfig).
infra_provider = k8s.Provider(
    "infra",
    kubeconfig=infra.kubeconfig,
    context=infra.context,
    namespace=settings.namespace,
)
control_plane = ControlPlane(settings.cluster_name, settings, infra_provider)

pulumi.export("endpoint", control_plane.endpoint)
pulumi.export("kubeconfig", control_plane.kubeconfig)
pulumi.export("clusterCaCertificate", control_plane.cluster_ca_certificate)
pulumi.export("namespace", control_plane.namespace)
pulumi.export("kubernetesVersion", control_plane.kubernetes_version)
pulumi.export("joinCommand", control_plane.join_command)
pulumi.export("bootstrapKubeconfig", control_plane.bootstrap_kubeconfig)
