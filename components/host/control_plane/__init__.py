"""kubeadm's control-plane phase: kube-apiserver, kube-controller-manager and kube-scheduler,
as Deployments in the host namespace."""
