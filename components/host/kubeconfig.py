"""kubeadm's kubeconfig phase, in the host namespace: kubeconfigs of the control plane's own
identities, built by components/common/kubeconfig.py over Pulumi outputs."""

from __future__ import annotations

import pulumi

from components.common.kubeconfig import build_kubeconfig


def client_certificate_kubeconfig(
    *,
    cluster_name: str,
    server: pulumi.Input[str],
    ca_cert_pem: pulumi.Input[str],
    user: str,
    client_cert_pem: pulumi.Input[str],
    client_key_pem: pulumi.Input[str],
) -> pulumi.Output[str]:
    """`build_kubeconfig` over Pulumi outputs; the result is a secret (it holds a key)."""
    kubeconfig = pulumi.Output.all(server, ca_cert_pem, client_cert_pem, client_key_pem).apply(
        lambda values: build_kubeconfig(
            cluster_name=cluster_name,
            server=values[0],
            ca_cert_pem=values[1],
            user=user,
            client_cert_pem=values[2],
            client_key_pem=values[3],
        )
    )
    return pulumi.Output.secret(kubeconfig)
