"""Konnectivity facts both sides share: the release per Kubernetes minor, the images, the
agent port and the identities the server and the agents check each other by.

The server sidecar lives with the apiserver in the host namespace
(components/host/konnectivity_server.py); the agents run on the tenant's nodes
(components/tenant/konnectivity_agent.py).
"""

from __future__ import annotations

from components.common.endpoints import KONNECTIVITY_AGENT_PORT
from components.config import ControlPlaneSettings

# --- versions and images -------------------------------------------------------------------

# apiserver-network-proxy release per Kubernetes minor: the one whose konnectivity-client that
# Kubernetes release links (its go.mod), so the apiserver and the server speak the same client
# library version. Upstream tags its images with the module version.
# For 1.35 (client v0.31.2) the newest v0.31 patch the Go module proxy serves: v0.31.2 itself
# is not served there, so it could not be built and checked here.
KONNECTIVITY_VERSIONS = {"1.35": "v0.31.4", "1.36": "v0.34.0", "1.37": "v0.36.0"}
SERVER_IMAGE = "kas-network-proxy/proxy-server"
AGENT_IMAGE = "kas-network-proxy/proxy-agent"

AGENT_PORT = KONNECTIVITY_AGENT_PORT  # agents connect here (TLS); published outside the host
# The NodePort suggested for the agent port when the API is exposed by NodePort.
DEFAULT_AGENT_NODE_PORT = 31132

# Identities.
AUDIENCE = "system:konnectivity-server"  # of the agents' tokens, checked by the server
SERVER_USER = "system:konnectivity-server"  # CN of the server's client certificate
AGENT = "konnectivity-agent"  # ServiceAccount, DaemonSet and container of the agents


def konnectivity_version(settings: ControlPlaneSettings) -> str:
    return KONNECTIVITY_VERSIONS[settings.release.minor]


def server_image(settings: ControlPlaneSettings) -> str:
    return settings.image(SERVER_IMAGE, konnectivity_version(settings))


def agent_image(settings: ControlPlaneSettings) -> str:
    return settings.image(AGENT_IMAGE, konnectivity_version(settings))
