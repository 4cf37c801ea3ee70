"""Kubeconfig files, built as plain text by one pure function."""

from __future__ import annotations

import base64

import yaml


def _b64(pem: str) -> str:
    return base64.b64encode(pem.encode()).decode()


def build_kubeconfig(
    *,
    cluster_name: str,
    server: str,
    ca_cert_pem: str,
    user: str,
    client_cert_pem: str | None = None,
    client_key_pem: str | None = None,
    token: str | None = None,
) -> str:
    """A kubeconfig with one cluster, one user and one current context.

    The user authenticates with a client certificate, or with a bearer token (bootstrap tokens).
    """
    if (client_cert_pem is None) != (client_key_pem is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    if (client_cert_pem is None) == (token is None):
        raise ValueError("give either a client certificate with its key or a token")
    credentials: dict[str, str] = (
        {"token": token}
        if token is not None
        else {
            "client-certificate-data": _b64(client_cert_pem or ""),
            "client-key-data": _b64(client_key_pem or ""),
        }
    )
    context = f"{user}@{cluster_name}"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert_pem)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    return yaml.safe_dump(document, sort_keys=False)
