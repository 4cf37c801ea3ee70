"""An offline one-node infrastructure cluster for the e2e tests, built from host processes.

Runs only inside the rig network namespace (hack/e2e.sh, hack/infra.sh), as root.
"""

from .cluster import InfraCluster, RigStartError, RigTeardownError, missing_prerequisites
from .host import RigEnvironmentError
from .settings import RigSettings

__all__ = [
    "InfraCluster",
    "RigEnvironmentError",
    "RigSettings",
    "RigStartError",
    "RigTeardownError",
    "missing_prerequisites",
]
