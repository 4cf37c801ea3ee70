"""What both sides share: names, ports, versions, pod-spec pieces and pure renderers of
configuration files (kubeconfig, kubelet, kube-proxy, Corefile). No Pulumi resources here."""
