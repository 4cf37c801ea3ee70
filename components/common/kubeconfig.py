"""Kubeconfig files, every one of them built by `kubeconfig_document`.

The program's (components, admin, node bootstrap, `cluster-info`, kube-proxy) and the e2e rig's
(tests/e2e/infra) kubeconfigs are all this one document. Two key orders exist because the
files are deployed as they were always written: a changed order would change the bytes of a
ConfigMap or Secret in every stack. `CLIENT_LAYOUT` is the order of the client kubeconfigs;
`KUBEADM_LAYOUT` the order kubeadm's files have (clientcmd's sorted keys): that of
`cluster-info` and kube-proxy's kubeconfig.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import yaml

Layout = Literal["client", "kubeadm"]
CLIENT_LAYOUT: Layout = "client"
KUBEADM_LAYOUT: Layout = "kubeadm"


def _b64(pem: str | bytes) -> str:
    return base64.b64encode(pem.encode() if isinstance(pem, str) else pem).decode()


def kubeconfig_document(
    *,
    cluster_name: str,
    server: str,
    ca_cert_pem: str | bytes | None = None,
    ca_file: str | None = None,
    user: str | None = None,
    client_cert_pem: str | bytes | None = None,
    client_key_pem: str | bytes | None = None,
    token: str | None = None,
    token_file: str | None = None,
    context: str | None = None,
    namespace: str | None = None,
    preferences: bool = True,
    layout: Layout = CLIENT_LAYOUT,
) -> dict[str, Any]:
    """A kubeconfig with one cluster and, when `user` is given, one user and its context.

    The CA is embedded (`ca_cert_pem`) or a file (`ca_file`); the user authenticates with a
    client certificate and its key, a bearer token, or a token file. The context is called
    `context`, by default `user@cluster_name`. Without a user (`cluster-info`) the document has
    no users and no contexts, as kubeadm writes it.
    """
    if (ca_cert_pem is None) == (ca_file is None):
        raise ValueError("give either the CA certificate or the CA file")
    if (client_cert_pem is None) != (client_key_pem is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    ways = [client_cert_pem is not None, token is not None, token_file is not None]
    if user is not None and sum(ways) != 1:
        raise ValueError("give either a client certificate with its key or a token")
    if user is None and any(ways):
        raise ValueError("credentials need a user")
    ca = (
        {"certificate-authority-data": _b64(ca_cert_pem)}
        if ca_cert_pem is not None
        else {"certificate-authority": ca_file}
    )
    cluster = {"server": server, **ca} if layout == CLIENT_LAYOUT else {**ca, "server": server}
    users: list[dict[str, Any]] | None = None
    contexts: list[dict[str, Any]] | None = None
    current = ""
    if user is not None:
        credentials: dict[str, str]
        if client_cert_pem is not None and client_key_pem is not None:
            credentials = {
                "client-certificate-data": _b64(client_cert_pem),
                "client-key-data": _b64(client_key_pem),
            }
        elif token is not None:
            credentials = {"token": token}
        else:
            credentials = {"tokenFile": token_file or ""}
        users = [{"name": user, "user": credentials}]
        current = context if context is not None else f"{user}@{cluster_name}"
        entry: dict[str, str] = {"cluster": cluster_name, "user": user}
        if namespace:
            entry = (
                {**entry, "namespace": namespace}
                if layout == CLIENT_LAYOUT
                else {"cluster": cluster_name, "namespace": namespace, "user": user}
            )
        contexts = [{"name": current, "context": entry}]
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster}],
    }
    if layout == CLIENT_LAYOUT:
        document |= {"users": users, "contexts": contexts, "current-context": current}
    else:
        document |= {"contexts": contexts, "current-context": current, "users": users}
    if preferences:
        document["preferences"] = {}
    return document


def dump(document: dict[str, Any]) -> str:
    """The YAML text of a kubeconfig document, keys in the document's order."""
    return yaml.safe_dump(document, sort_keys=False)


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
    """A client kubeconfig (one cluster, one user, one current context) as YAML text.

    The user authenticates with a client certificate, or with a bearer token (bootstrap tokens).
    """
    if (client_cert_pem is None) != (client_key_pem is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    if (client_cert_pem is None) == (token is None):
        raise ValueError("give either a client certificate with its key or a token")
    return dump(
        kubeconfig_document(
            cluster_name=cluster_name,
            server=server,
            ca_cert_pem=ca_cert_pem,
            user=user,
            client_cert_pem=client_cert_pem,
            client_key_pem=client_key_pem,
            token=token,
        )
    )
