"""The host side: what one tenant control plane puts in its namespace of the infrastructure
cluster (certificates, etcd, the control-plane Deployments, their exposure, the Konnectivity
server, NetworkPolicies and the kubeconfig Secrets). Everything here goes through the `infra`
provider."""
