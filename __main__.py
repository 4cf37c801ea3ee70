"""k8s-on-k8s: a Kubernetes control plane in one namespace of an infrastructure cluster."""

import pulumi
import pulumi_kubernetes as k8s

from components.config import load_settings
from components.controlplane import ControlPlane
from components.fixed_settings import OUTPUT_NAME as FIXED_SETTINGS_OUTPUT
from components.fixed_settings import check_fixed_settings

# Validation happens here, before the first resource is registered: the config itself, then
# what may not change against this stack's last deployment.
settings, infra = load_settings()
fixed_settings = check_fixed_settings(settings)

# One explicit provider for the infrastructure cluster, chosen the standard pulumi-kubernetes
# way (kubernetes:kubeconfig / kubernetes:context, else the ambient kubeconfig).
infra_provider = k8s.Provider(
    "infra",
    kubeconfig=infra.kubeconfig,
    context=infra.context,
    namespace=settings.namespace,
    # A renewed certificate or a new config updates its Secret or ConfigMap in place; the
    # workloads that mount it roll through their checksum annotation. (The default would replace
    # it, deleting first since its name is fixed.)
    enable_secret_mutable=True,
    enable_config_map_mutable=True,
)
control_plane = ControlPlane(settings.cluster_name, settings, infra_provider)

pulumi.export("endpoint", control_plane.endpoint)
pulumi.export("kubeconfig", control_plane.kubeconfig)
pulumi.export("clusterCaCertificate", control_plane.cluster_ca_certificate)
pulumi.export("namespace", control_plane.namespace)
pulumi.export("kubernetesVersion", control_plane.kubernetes_version)
pulumi.export("joinCommand", control_plane.join_command)
pulumi.export("bootstrapKubeconfig", control_plane.bootstrap_kubeconfig)
# Read back by the next `pulumi up` (components/fixed_settings.py).
pulumi.export(FIXED_SETTINGS_OUTPUT, fixed_settings)
