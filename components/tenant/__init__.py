"""The tenant side: objects inside the tenant cluster, registered through the tenant provider
(node join, the add-ons, the `kubernetes.default` path, the Konnectivity agent, admin access)."""
