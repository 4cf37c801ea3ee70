"""k8s-on-k8s: a Kubernetes control plane in one namespace of an infrastructure cluster."""

import datetime

import pulumi
import pulumi_kubernetes as k8s

from components.config import load_settings
from components.controlplane import ControlPlane
from components.fixed_settings import ENCRYPTION_KEYS_OUTPUT, check_fixed_settings
from components.fixed_settings import OUTPUT_NAME as FIXED_SETTINGS_OUTPUT
from components.host.control_plane.apiserver import SecretsWriter
from components.last_deployment import last_deployed_outputs
from components.tenant.bootstrap_token import TOKEN_EXPIRATION_OUTPUT, bootstrap_token_expiration

# Validation happens here, before the first resource is registered: the config itself, then
# what may not change against this stack's last deployment.
settings, infra = load_settings()
last_deployed = last_deployed_outputs(
    FIXED_SETTINGS_OUTPUT, ENCRYPTION_KEYS_OUTPUT, TOKEN_EXPIRATION_OUTPUT
)
fixed_settings = check_fixed_settings(settings, last_deployed)
# The node bootstrap token: kept while more than half its lifetime is left, else issued anew.
token_expiration = bootstrap_token_expiration(
    last_deployed.get(TOKEN_EXPIRATION_OUTPUT),
    datetime.datetime.now(datetime.UTC),
    settings.bootstrap_token_ttl_seconds,
)
# A stack last deployed by a version that wrote Secrets with aescbc (it exported fixedSettings
# but no secretsEncryptionKeys) moves to secretbox in two deployments (apiserver.SecretsWriter).
secrets_writer = (
    SecretsWriter.AESCBC
    if FIXED_SETTINGS_OUTPUT in last_deployed and ENCRYPTION_KEYS_OUTPUT not in last_deployed
    else SecretsWriter.SECRETBOX
)

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
control_plane = ControlPlane(
    settings.cluster_name,
    settings,
    infra_provider,
    token_expiration=token_expiration,
    secrets_writer=secrets_writer,
)

pulumi.export("endpoint", control_plane.endpoint)
pulumi.export("kubeconfig", control_plane.kubeconfig)
pulumi.export("clusterCaCertificate", control_plane.cluster_ca_certificate)
pulumi.export("namespace", control_plane.namespace)
pulumi.export("kubernetesVersion", control_plane.kubernetes_version)
pulumi.export("joinCommand", control_plane.join_command)
pulumi.export("bootstrapKubeconfig", control_plane.bootstrap_kubeconfig)
# Not secret: names and times only (components/host/certs.py certificate_expiry).
pulumi.export("certificateExpiry", control_plane.certificate_expiry)
# Read back by the next `pulumi up` (components/last_deployment.py). The expiry is empty when
# tokens never expire.
pulumi.export(FIXED_SETTINGS_OUTPUT, fixed_settings)
pulumi.export(ENCRYPTION_KEYS_OUTPUT, list(settings.encryption_keys))
pulumi.export(TOKEN_EXPIRATION_OUTPUT, token_expiration or "")
